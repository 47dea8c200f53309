//! Room aliases of this server.

use hearth_storage::{
    Batch,
    records::AliasRecord,
    schema::{Aliases, RoomAliases},
};
use ruma::{OwnedRoomAliasId, OwnedRoomId, RoomAliasId, RoomId, UserId, events::TimelineEventType};

use super::Rooms;
use crate::{Error, ErrorCode, Result, events::NewEvent, users::blocking};

impl Rooms {
    pub fn resolve_alias(&self, alias: &RoomAliasId) -> Result<Option<OwnedRoomId>> {
        Ok(self.db().get::<Aliases>(&alias.to_owned())?.map(|r| r.room_id))
    }

    pub fn local_aliases(&self, room_id: &RoomId) -> Result<Vec<OwnedRoomAliasId>> {
        self.db()
            .scan_prefix::<RoomAliases, _>(&room_id.to_owned())?
            .map(|e| e.map(|((_, alias), ())| alias).map_err(Into::into))
            .collect()
    }

    pub async fn create_alias(&self, alias: &RoomAliasId, room_id: &RoomId, creator: &UserId) -> Result<()> {
        if alias.server_name() != self.inner.server_name {
            return Err(Error::invalid_param("Aliases must be on this server"));
        }
        if !self.exists(room_id)? {
            return Err(Error::not_found("Unknown room"));
        }
        let this = self.clone();
        let (alias, room_id, creator) = (alias.to_owned(), room_id.to_owned(), creator.to_owned());
        // Held across the check and the write so two requests cannot both take one alias.
        let _guard = self.lock(&room_id).await?;
        blocking(move || {
            // Two processes sharing the store may be claiming it for two rooms.
            let _claim =
                this.db().shared_lock(hearth_storage::engine::LockKind::Create, &format!("alias:{alias}"))?;
            if this.db().contains::<Aliases>(&alias)? {
                return Err(Error::new(ErrorCode::RoomInUse, "Room alias already taken"));
            }
            let mut batch = Batch::new();
            batch.put::<Aliases>(&alias, &AliasRecord { room_id: room_id.clone(), creator })?;
            batch.put::<RoomAliases>(&(room_id, alias), &())?;
            this.db().write(batch)?;
            Ok(())
        })
        .await
    }

    /// Removes an alias; only its creator or a room moderator may, or (`owner`) the
    /// application service whose namespace holds it.
    pub async fn delete_alias(&self, alias: &RoomAliasId, requester: &UserId, owner: bool) -> Result<()> {
        let record =
            self.db().get::<Aliases>(&alias.to_owned())?.ok_or_else(|| Error::not_found("Unknown alias"))?;
        if !owner
            && record.creator != requester
            && !self.has_power_for_state(&record.room_id, requester, "m.room.canonical_alias")?
        {
            return Err(Error::forbidden("You may not delete this alias"));
        }
        let this = self.clone();
        let room_id = record.room_id.clone();
        let owned = alias.to_owned();
        blocking(move || {
            let mut batch = Batch::new();
            batch.delete::<Aliases>(&owned);
            batch.delete::<RoomAliases>(&(record.room_id, owned));
            this.db().write(batch)?;
            Ok(())
        })
        .await?;
        self.drop_canonical_alias(&room_id, alias, requester).await
    }

    /// After an alias is deleted, takes it out of the room's canonical alias event, as Synapse
    /// does, so that clients stop showing a name that leads nowhere. Sent as the requester;
    /// one without the power to is not refused the deletion itself.
    async fn drop_canonical_alias(
        &self,
        room_id: &RoomId,
        alias: &RoomAliasId,
        requester: &UserId,
    ) -> Result<()> {
        let Some(event) = self.current_state_event(room_id, "m.room.canonical_alias", "")? else {
            return Ok(());
        };
        let mut content = event.content_json();
        let Some(fields) = content.as_object_mut() else { return Ok(()) };
        let mut changed = false;
        if fields.get("alias").and_then(|a| a.as_str()) == Some(alias.as_str()) {
            fields.remove("alias");
            changed = true;
        }
        if let Some(alt) = fields.get_mut("alt_aliases").and_then(|a| a.as_array_mut()) {
            let before = alt.len();
            alt.retain(|a| a.as_str() != Some(alias.as_str()));
            changed |= alt.len() != before;
            if alt.is_empty() {
                fields.remove("alt_aliases");
            }
        }
        if !changed {
            return Ok(());
        }
        let new = NewEvent::state(TimelineEventType::RoomCanonicalAlias, "", content);
        match self.append(room_id, requester, new, None).await {
            Err(e) if e.code() == ErrorCode::Forbidden => {
                tracing::info!(%room_id, "alias deleted; no power to update the canonical alias");
                Ok(())
            }
            other => other.map(drop),
        }
    }
}

impl Rooms {
    /// Publishes a room in (or removes it from) this server's room directory.
    pub async fn set_published(&self, room_id: &RoomId, published: bool) -> Result<()> {
        self.set_listed::<hearth_storage::schema::PublicRooms>(room_id.to_owned(), published).await
    }

    /// Publishes a room in (or removes it from) one network's directory (`instance` is
    /// `<service>|<network>`), for an application service bridging that network.
    pub async fn set_published_in_network(
        &self,
        instance: &str,
        room_id: &RoomId,
        published: bool,
    ) -> Result<()> {
        let key = (instance.to_owned(), room_id.to_owned());
        self.set_listed::<hearth_storage::schema::NetworkRooms>(key, published).await
    }

    /// Adds or removes one row of a directory list.
    async fn set_listed<T>(&self, key: T::Key, listed: bool) -> Result<()>
    where
        T: hearth_storage::schema::Table<Value = ()>,
        T::Key: Send,
    {
        let db = self.db().clone();
        blocking(move || {
            if listed {
                db.put::<T>(&key, &())?;
            } else {
                db.delete::<T>(&key)?;
            }
            Ok(())
        })
        .await
    }

    pub fn is_published(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self.db().contains::<hearth_storage::schema::PublicRooms>(&room_id.to_owned())?)
    }
}

impl Rooms {
    /// Points an alias at another room (a room upgrade moves its aliases).
    pub(super) async fn move_alias(&self, alias: &RoomAliasId, to: &RoomId) -> Result<()> {
        let Some(mut record) = self.db().get::<Aliases>(&alias.to_owned())? else { return Ok(()) };
        let this = self.clone();
        let alias = alias.to_owned();
        let to = to.to_owned();
        blocking(move || {
            let mut batch = Batch::new();
            batch.delete::<RoomAliases>(&(record.room_id.clone(), alias.clone()));
            batch.put::<RoomAliases>(&(to.clone(), alias.clone()), &())?;
            record.room_id = to;
            batch.put::<Aliases>(&alias, &record)?;
            this.db().write(batch)?;
            Ok(())
        })
        .await
    }
}
