//! Per-user account data, global and per room, and the user's saved sync filters.

use std::{collections::BTreeSet, sync::Arc};

use hearth_storage::{
    Db,
    records::{AccountDataRecord, StreamEntry},
    schema::{Filters, GlobalAccountData, RoomAccountData},
};
use ruma::{OwnedUserId, RoomId, UserId, events::ignored_user_list::IgnoredUserListEventContent};

use crate::{
    Error, ErrorCode, Result,
    push::{RulesCache, rules::PUSH_RULES},
    sync::stream::Streams,
    users::blocking,
};

/// Event types the server maintains itself; clients change them through their own endpoints.
const SERVER_MANAGED: &[&str] = &["m.fully_read", "m.push_rules"];

/// The room account data type tags live in.
const TAGS: &str = "m.tag";
/// The longest tag name (as Synapse and the spec's grammar for identifiers suggest).
const MAX_TAG_BYTES: usize = 255;

/// Account data events are capped like other events.
const MAX_CONTENT_BYTES: usize = 65_536;

#[derive(Clone)]
pub struct AccountData {
    db: Db,
    streams: Arc<Streams>,
    push_rules: RulesCache,
    /// Serializes tag edits, each a read-modify-write of `m.tag`, so that two at once both land.
    tag_lock: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for AccountData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountData").finish_non_exhaustive()
    }
}

fn check_content(event_type: &str, content: &serde_json::Value) -> Result<()> {
    if SERVER_MANAGED.contains(&event_type) {
        return Err(Error::new(
            ErrorCode::ServerManagedAccountData,
            format!("Cannot set {event_type} through this API."),
        ));
    }
    if !content.is_object() {
        return Err(Error::bad_json("Account data content must be a JSON object"));
    }
    let size = serde_json::to_vec(content).map_or(usize::MAX, |b| b.len());
    if size > MAX_CONTENT_BYTES {
        return Err(Error::too_large("Account data content is too large"));
    }
    Ok(())
}

impl AccountData {
    pub fn new(db: Db, streams: Arc<Streams>, push_rules: RulesCache) -> Self {
        Self { db, streams, push_rules, tag_lock: Arc::default() }
    }

    /// Writes one account data event at a new stream position and wakes the user's syncs.
    async fn write(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        event_type: &str,
        content: serde_json::Value,
    ) -> Result<()> {
        let (user_id, room_id, event_type) =
            (user.to_owned(), room.map(ToOwned::to_owned), event_type.to_owned());
        self.streams
            .write(&self.db, vec![user.to_owned()], move |batch, pos| {
                let record = AccountDataRecord { content, stream_pos: pos };
                match &room_id {
                    Some(room) => batch.put::<RoomAccountData>(
                        &(user_id.clone(), room.clone(), event_type.clone()),
                        &record,
                    )?,
                    None => {
                        batch.put::<GlobalAccountData>(&(user_id.clone(), event_type.clone()), &record)?;
                    }
                }
                Ok(StreamEntry::AccountData { user_id, room_id, event_type })
            })
            .await?;
        Ok(())
    }

    pub fn global(&self, user: &UserId, event_type: &str) -> Result<Option<serde_json::Value>> {
        let key = (user.to_owned(), event_type.to_owned());
        Ok(self.db.get_lenient::<GlobalAccountData>(&key)?.map(|r| r.content))
    }

    /// Whom the user ignores (`m.ignored_user_list`). Content that does not parse ignores
    /// nobody: it is the client's own data, and a bad copy must not break its syncs.
    pub fn ignored_users(&self, user: &UserId) -> Result<BTreeSet<OwnedUserId>> {
        let Some(content) = self.global(user, "m.ignored_user_list")? else { return Ok(BTreeSet::new()) };
        match serde_json::from_value::<IgnoredUserListEventContent>(content) {
            Ok(list) => Ok(list.ignored_users.into_keys().collect()),
            Err(err) => {
                tracing::warn!(%user, %err, "m.ignored_user_list does not parse; ignoring nobody");
                Ok(BTreeSet::new())
            }
        }
    }

    pub fn room(&self, user: &UserId, room: &RoomId, event_type: &str) -> Result<Option<serde_json::Value>> {
        let key = (user.to_owned(), room.to_owned(), event_type.to_owned());
        Ok(self.db.get_lenient::<RoomAccountData>(&key)?.map(|r| r.content))
    }

    pub async fn set_global(
        &self,
        user: &UserId,
        event_type: &str,
        content: serde_json::Value,
    ) -> Result<()> {
        check_content(event_type, &content)?;
        self.write(user, None, event_type, content).await
    }

    pub async fn set_room(
        &self,
        user: &UserId,
        room: &RoomId,
        event_type: &str,
        content: serde_json::Value,
    ) -> Result<()> {
        check_content(event_type, &content)?;
        self.write(user, Some(room), event_type, content).await
    }

    /// Sets per-room account data the server manages itself (`m.fully_read`), which the
    /// general endpoint refuses.
    pub async fn set_room_managed(
        &self,
        user: &UserId,
        room: &RoomId,
        event_type: &str,
        content: serde_json::Value,
    ) -> Result<()> {
        self.write(user, Some(room), event_type, content).await
    }

    /// A user's tags on a room (`m.tag` room account data): tag name → tag info. Content that
    /// does not have the shape shows no tags rather than failing.
    pub fn tags(&self, user: &UserId, room: &RoomId) -> Result<serde_json::Map<String, serde_json::Value>> {
        let content = self.room(user, room, TAGS)?;
        Ok(match content.as_ref().and_then(|c| c.get("tags")) {
            Some(serde_json::Value::Object(tags)) => tags.clone(),
            _ => serde_json::Map::new(),
        })
    }

    /// Adds or replaces one tag (`info`: `{"order": ...}` or `{}`).
    pub async fn set_tag(
        &self,
        user: &UserId,
        room: &RoomId,
        tag: &str,
        info: serde_json::Value,
    ) -> Result<()> {
        if tag.is_empty() || tag.len() > MAX_TAG_BYTES {
            return Err(Error::invalid_param(format!("A tag is 1 to {MAX_TAG_BYTES} bytes")));
        }
        let _guard = self.tag_lock.lock().await;
        // On a shared store, against other processes too (each edit reads, then writes the set).
        let _shared = crate::users::shared_lock(
            &self.db,
            hearth_storage::engine::LockKind::Create,
            format!("tags:{user}"),
        )
        .await?;
        let mut tags = self.tags(user, room)?;
        tags.insert(tag.to_owned(), info);
        let content = serde_json::json!({ "tags": tags });
        if serde_json::to_vec(&content).map_or(usize::MAX, |b| b.len()) > MAX_CONTENT_BYTES {
            return Err(Error::too_large("Too many tags on this room"));
        }
        self.write(user, Some(room), TAGS, content).await
    }

    /// Removes one tag; removing one that is not there is not an error.
    pub async fn delete_tag(&self, user: &UserId, room: &RoomId, tag: &str) -> Result<()> {
        let _guard = self.tag_lock.lock().await;
        // On a shared store, against other processes too (each edit reads, then writes the set).
        let _shared = crate::users::shared_lock(
            &self.db,
            hearth_storage::engine::LockKind::Create,
            format!("tags:{user}"),
        )
        .await?;
        let mut tags = self.tags(user, room)?;
        if tags.remove(tag).is_none() {
            return Ok(());
        }
        self.write(user, Some(room), TAGS, serde_json::json!({ "tags": tags })).await
    }

    /// The user's push rules: the stored set, or the spec's defaults for a user who never
    /// changed them.
    pub fn push_rules(&self, user: &UserId) -> Result<ruma::push::Ruleset> {
        Ok(self.push_rules.get(&self.db, user)?.as_ref().clone())
    }

    /// Stores the user's push rules (server-managed `m.push_rules` account data).
    pub async fn set_push_rules(&self, user: &UserId, rules: &ruma::push::Ruleset) -> Result<()> {
        let content = serde_json::json!({ "global": ruleset_json(rules)? });
        self.write(user, None, PUSH_RULES, content).await?;
        self.push_rules.stored(user, rules.clone());
        Ok(())
    }

    /// Stores a filter and returns its ID. Filters are immutable once created.
    pub async fn create_filter(&self, user: &UserId, filter: serde_json::Value) -> Result<String> {
        let db = self.db.clone();
        let user = user.to_owned();
        blocking(move || {
            let id = db.next_id("filter")?;
            db.put::<Filters>(&(user, id), &filter)?;
            Ok(id.to_string())
        })
        .await
    }

    pub fn filter(&self, user: &UserId, filter_id: &str) -> Result<Option<serde_json::Value>> {
        // IDs we never issued (not a number) simply do not exist.
        let Ok(id) = filter_id.parse::<u64>() else { return Ok(None) };
        Ok(self.db.get::<Filters>(&(user.to_owned(), id))?)
    }
}

/// The push rule kinds every ruleset shows, empty or not: clients (and the spec's examples)
/// index them without checking, and ruma leaves empty ones out.
const RULE_KINDS: [&str; 5] = ["override", "content", "room", "sender", "underride"];

/// A ruleset as clients read it, every kind present.
pub fn ruleset_json(rules: &ruma::push::Ruleset) -> Result<serde_json::Value> {
    let mut value = serde_json::to_value(rules).map_err(Error::internal)?;
    fill_rule_kinds(&mut value);
    Ok(value)
}

/// Adds the missing kinds to a ruleset in JSON (one stored before they were always written).
pub fn fill_rule_kinds(ruleset: &mut serde_json::Value) {
    if let Some(object) = ruleset.as_object_mut() {
        for kind in RULE_KINDS {
            object.entry(kind).or_insert_with(|| serde_json::Value::Array(Vec::new()));
        }
    }
}

/// The `m.push_rules` account data of a user who never changed their rules.
pub fn default_push_rules_content(user: &UserId) -> Result<serde_json::Value> {
    Ok(serde_json::json!({ "global": ruleset_json(&ruma::push::Ruleset::server_default(user))? }))
}

#[cfg(test)]
mod tests {
    use ruma::{room_id, user_id};
    use serde_json::json;

    use super::*;
    use crate::sync::notifier::Notifier;

    #[tokio::test]
    async fn set_get_and_rules() {
        let notifier = Arc::new(Notifier::new(0));
        let data =
            AccountData::new(Db::in_memory(), Streams::new(0, notifier.clone()), RulesCache::default());
        let alice = user_id!("@alice:example.org");
        let mut rx = notifier.subscribe(alice);
        data.set_global(alice, "m.direct", json!({"@b:x": ["!r:x"]})).await.unwrap();
        assert!(rx.has_changed().unwrap(), "a write wakes the user's sync");
        rx.mark_unchanged();
        assert_eq!(data.global(alice, "m.direct").unwrap(), Some(json!({"@b:x": ["!r:x"]})));
        assert_eq!(data.global(alice, "other").unwrap(), None);

        let room = room_id!("!r:example.org");
        data.set_room(alice, room, "m.tag", json!({"tags": {}})).await.unwrap();
        assert_eq!(data.room(alice, room, "m.tag").unwrap(), Some(json!({"tags": {}})));

        let err = data.set_global(alice, "m.fully_read", json!({})).await.unwrap_err();
        assert_eq!(err.code().status_and_kind().0, 405);
        assert!(data.set_global(alice, "x", json!([1])).await.is_err());
        assert!(data.set_global(alice, "x", json!({"a": "b".repeat(70_000)})).await.is_err());
    }

    #[tokio::test]
    async fn filters_are_per_user() {
        let data = AccountData::new(
            Db::in_memory(),
            Streams::new(0, Arc::new(Notifier::new(0))),
            RulesCache::default(),
        );
        let (alice, bob) = (user_id!("@alice:x"), user_id!("@bob:x"));
        let id = data.create_filter(alice, json!({"room": {"timeline": {"limit": 5}}})).await.unwrap();
        assert!(data.filter(alice, &id).unwrap().is_some());
        assert!(data.filter(bob, &id).unwrap().is_none());
        assert!(data.filter(alice, "nonsense").unwrap().is_none());
    }
}
