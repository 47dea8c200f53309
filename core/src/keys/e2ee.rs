//! End-to-end encryption support: device keys, one-time and fallback keys, cross-signing keys
//! and signatures, and to-device messages. The server never sees plaintext; it stores keys and
//! hands each one-time key out exactly once.

use ruma::events::room::member::MembershipState;
use std::{
    collections::{BTreeMap, BTreeSet},
    ops::Bound,
    sync::Mutex,
};

use hearth_storage::{
    Batch, Direction,
    records::{FallbackKeyRecord, StreamEntry, ToDeviceRecord},
    schema::{
        CrossSigningKeys, DeviceKeys, FallbackKeys, OneTimeKeyOrder, OneTimeKeys, StreamLog, ToDeviceInbox,
        ToDeviceTxns,
    },
};
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use serde_json::{Value, json};

use crate::{Error, Homeserver, Result, users::blocking};

/// Serializes one-time key claims, so that concurrent claims never hand out one key twice.
#[derive(Debug, Default)]
pub struct ClaimLock(Mutex<()>);

/// To-device messages returned per sync at most; the rest follow in the next one.
const TO_DEVICE_PER_SYNC: usize = 100;

/// What a key upload asks for.
#[derive(Debug, Default)]
pub struct KeyUpload {
    pub device_keys: Option<Value>,
    /// `"<algorithm>:<key id>" -> key`
    pub one_time_keys: BTreeMap<String, Value>,
    pub fallback_keys: BTreeMap<String, Value>,
}

fn split_key_id(id: &str) -> Result<(String, String)> {
    id.split_once(':')
        .map(|(alg, key)| (alg.to_owned(), key.to_owned()))
        .ok_or_else(|| Error::invalid_param(format!("Key ID {id} is not <algorithm>:<id>")))
}

impl Homeserver {
    /// Writes `batch` with a stream entry for `entry` and wakes `wake` once it is published.
    /// Returns the position written at.
    async fn key_stream_write(
        &self,
        batch: Batch,
        entry: StreamEntry,
        wake: Vec<OwnedUserId>,
    ) -> Result<u64> {
        self.streams
            .write(&self.db, wake, move |b, _| {
                *b = batch;
                Ok(entry)
            })
            .await
    }

    /// A local user's device list changed (a device renamed or deleted): users sharing a room
    /// are told, here through the stream and elsewhere through their servers.
    pub async fn device_list_changed(&self, user: &UserId, device: &DeviceId, deleted: bool) -> Result<()> {
        let wake = self.users_sharing_rooms(user)?.into_iter().collect();
        let entry = StreamEntry::DeviceKeys { user_id: user.to_owned() };
        let pos = self.key_stream_write(Batch::new(), entry, wake).await?;
        self.send_device_list_update(user, device, deleted, pos).await
    }

    /// Deletes a local user's devices and announces each one that existed.
    pub async fn delete_devices(&self, user: &UserId, device_ids: &[OwnedDeviceId]) -> Result<()> {
        let mut existing = Vec::new();
        for device in device_ids {
            if self.users.device(user, device)?.is_some() {
                existing.push(device.clone());
            }
        }
        self.users.delete_devices(user, device_ids).await?;
        for device in existing {
            self.device_list_changed(user, &device, true).await?;
        }
        Ok(())
    }

    /// Renames a local user's device; its new name is part of what others see of its keys.
    pub async fn set_device_display_name(
        &self,
        user: &UserId,
        device: &DeviceId,
        display_name: Option<String>,
    ) -> Result<()> {
        self.users.set_device_display_name(user, device, display_name).await?;
        self.device_list_changed(user, device, false).await
    }

    /// Everyone who shares a room with `user`, and `user`.
    pub fn users_sharing_rooms(&self, user: &UserId) -> Result<BTreeSet<OwnedUserId>> {
        let mut out = BTreeSet::from([user.to_owned()]);
        for room in self.rooms.joined_rooms(user)? {
            out.extend(self.rooms.members_with(&room, &MembershipState::Join)?);
        }
        Ok(out)
    }

    pub async fn upload_keys(
        &self,
        user: &UserId,
        device: &DeviceId,
        upload: KeyUpload,
    ) -> Result<BTreeMap<String, u64>> {
        let mut batch = Batch::new();
        let mut keys_changed = false;
        if let Some(keys) = &upload.device_keys {
            // Other devices verify these fields before trusting the keys: a set without them
            // would be served to every client and refused by each.
            let has = |field: &str, ok: fn(&Value) -> bool| keys.get(field).is_some_and(ok);
            if !(has("algorithms", |v| v.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
                && has("keys", Value::is_object)
                && has("signatures", Value::is_object))
            {
                return Err(Error::bad_json("device_keys need algorithms, keys and signatures"));
            }
            if keys.get("user_id").and_then(Value::as_str) != Some(user.as_str())
                || keys.get("device_id").and_then(Value::as_str) != Some(device.as_str())
            {
                return Err(Error::invalid_param("device_keys must be for the uploading user and device"));
            }
            let key = (user.to_owned(), device.to_owned());
            if self.db.get::<DeviceKeys>(&key)?.as_ref() != Some(keys) {
                batch.put::<DeviceKeys>(&key, keys)?;
                keys_changed = true;
            }
        }
        let mut upload_number = None;
        for (position, (id, key)) in upload.one_time_keys.iter().enumerate() {
            let (algorithm, key_id) = split_key_id(id)?;
            let db_key = (user.to_owned(), device.to_owned(), algorithm.clone(), key_id.clone());
            match self.db.get::<OneTimeKeys>(&db_key)? {
                Some(existing) if &existing != key => {
                    return Err(Error::invalid_param(format!(
                        "One time key {id} already exists with other content"
                    )));
                }
                Some(_) => {}
                None => {
                    let number = match upload_number {
                        Some(n) => n,
                        None => *upload_number.insert(self.db.next_id("one_time_key_upload")?),
                    };
                    let position = u16::try_from(position)
                        .map_err(|_| Error::bad_request("Too many one-time keys in one upload"))?;
                    let order =
                        number.checked_shl(16).ok_or_else(|| Error::internal("upload number overflow"))?
                            | u64::from(position);
                    batch.put::<OneTimeKeys>(&db_key, key)?;
                    batch.put::<OneTimeKeyOrder>(
                        &(user.to_owned(), device.to_owned(), algorithm, order),
                        &key_id,
                    )?;
                }
            }
        }
        for (id, key) in &upload.fallback_keys {
            let (algorithm, key_id) = split_key_id(id)?;
            let record = FallbackKeyRecord { key_id, key: key.clone(), used: false };
            batch.put::<FallbackKeys>(&(user.to_owned(), device.to_owned(), algorithm), &record)?;
        }
        if keys_changed {
            let wake = self.users_sharing_rooms(user)?.into_iter().collect();
            let entry = StreamEntry::DeviceKeys { user_id: user.to_owned() };
            let pos = self.key_stream_write(batch, entry, wake).await?;
            self.send_device_list_update(user, device, false, pos).await?;
        } else if !batch.is_empty() {
            let db = self.db.clone();
            blocking(move || Ok(db.write(batch)?)).await?;
        }
        self.one_time_key_counts(user, device)
    }

    /// Unclaimed one-time keys per algorithm; `signed_curve25519` always, 0 when none are left,
    /// as Synapse reports it: clients upload more when they see a count they know go low, and
    /// some read a missing count as "unchanged".
    pub fn one_time_key_counts(&self, user: &UserId, device: &DeviceId) -> Result<BTreeMap<String, u64>> {
        let mut counts = BTreeMap::from([("signed_curve25519".to_owned(), 0)]);
        for entry in self.db.scan_prefix::<OneTimeKeys, _>(&(user.to_owned(), device.to_owned()))? {
            let ((_, _, algorithm, _), _) = entry?;
            *counts.entry(algorithm).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// Algorithms with a fallback key that has not been handed out.
    pub fn unused_fallback_key_types(&self, user: &UserId, device: &DeviceId) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in self.db.scan_prefix::<FallbackKeys, _>(&(user.to_owned(), device.to_owned()))? {
            let ((_, _, algorithm), record) = entry?;
            if !record.used {
                out.push(algorithm);
            }
        }
        Ok(out)
    }

    /// Device and cross-signing keys of local users. `user_signing` keys are only shown to their
    /// owner (never to another server, which asks with no requester). Unknown users are simply
    /// absent.
    pub fn query_keys(
        &self,
        requester: Option<&UserId>,
        wanted: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> Result<Value> {
        let (mut devices, mut masters, mut self_signing, mut user_signing) =
            (serde_json::Map::new(), serde_json::Map::new(), serde_json::Map::new(), serde_json::Map::new());
        for (user, device_ids) in wanted {
            if !self.users.is_local(user) {
                continue;
            }
            let mut user_devices = serde_json::Map::new();
            for entry in self.db.scan_prefix::<DeviceKeys, _>(user)? {
                let ((_, device_id), mut keys) = entry?;
                if !device_ids.is_empty() && !device_ids.contains(&device_id) {
                    continue;
                }
                if let Some(device) = self.users.device(user, &device_id)? {
                    // Synapse omits the name of a device that has none; a null here makes
                    // matrix-nio refuse the whole answer.
                    let mut unsigned = serde_json::Map::new();
                    if let Some(name) = device.display_name {
                        unsigned.insert("device_display_name".to_owned(), Value::String(name));
                    }
                    keys["unsigned"] = Value::Object(unsigned);
                } else {
                    // A deleted device's keys are no longer served.
                    continue;
                }
                user_devices.insert(device_id.to_string(), keys);
            }
            devices.insert(user.to_string(), Value::Object(user_devices));
            for (usage, map) in [("master", &mut masters), ("self_signing", &mut self_signing)] {
                if let Some(key) = self.db.get::<CrossSigningKeys>(&(user.clone(), usage.to_owned()))? {
                    map.insert(user.to_string(), key);
                }
            }
            if requester == Some(user.as_ref())
                && let Some(key) =
                    self.db.get::<CrossSigningKeys>(&(user.clone(), "user_signing".to_owned()))?
            {
                user_signing.insert(user.to_string(), key);
            }
        }
        Ok(json!({
            "device_keys": devices,
            "master_keys": masters,
            "self_signing_keys": self_signing,
            "user_signing_keys": user_signing,
            "failures": {},
        }))
    }

    /// Hands out one one-time key per requested device and algorithm, or else its fallback key.
    pub async fn claim_keys(
        &self,
        wanted: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>>,
    ) -> Result<Value> {
        let this = self.clone();
        blocking(move || {
            let _guard = this.claim_lock.0.lock().map_err(|_| Error::internal("claim lock poisoned"))?;
            // A one-time key is handed out once, whichever process is asked.
            let _shared = this.db.shared_lock(hearth_storage::engine::LockKind::Create, "one_time_keys")?;
            let mut out = serde_json::Map::new();
            let mut batch = Batch::new();
            for (user, devices) in wanted {
                if !this.users.is_local(&user) {
                    continue;
                }
                let mut user_out = serde_json::Map::new();
                for (device, algorithm) in devices {
                    let prefix = (user.clone(), device.clone(), algorithm.clone());
                    let key = match this.oldest_one_time_key(&prefix, &mut batch)? {
                        Some(key) => Some(key),
                        None => {
                            let fb_key = (user.clone(), device.clone(), algorithm.clone());
                            this.db.get::<FallbackKeys>(&fb_key)?.map(|mut record| {
                                let key = (record.key_id.clone(), record.key.clone());
                                record.used = true;
                                let _ = batch.put::<FallbackKeys>(&fb_key, &record);
                                key
                            })
                        }
                    };
                    if let Some((key_id, key)) = key {
                        user_out.insert(device.to_string(), json!({ format!("{algorithm}:{key_id}"): key }));
                    }
                }
                // A user none of whose devices had a key left is not named at all (as Synapse):
                // clients read an empty entry as "claimed nothing" only by accident.
                if !user_out.is_empty() {
                    out.insert(user.to_string(), Value::Object(user_out));
                }
            }
            // Written while the lock is held: a second claim sees the first one's deletions.
            this.db.write(batch)?;
            Ok(json!({"one_time_keys": out, "failures": {}}))
        })
        .await
    }

    /// The oldest unclaimed one-time key of a device and algorithm, deleted in `batch`: in
    /// upload order, then (keys from before the order was kept) by key ID.
    fn oldest_one_time_key(
        &self,
        prefix: &(OwnedUserId, OwnedDeviceId, String),
        batch: &mut Batch,
    ) -> Result<Option<(String, Value)>> {
        if let Some(entry) = self.db.scan_prefix::<OneTimeKeyOrder, _>(prefix)?.next() {
            let (order_key, key_id) = entry?;
            batch.delete::<OneTimeKeyOrder>(&order_key);
            let key_ref = (prefix.0.clone(), prefix.1.clone(), prefix.2.clone(), key_id.clone());
            // Both are written and deleted together, so the key is there; a missing one is
            // skipped like any unreadable record rather than failing the claim.
            if let Some(key) = self.db.get::<OneTimeKeys>(&key_ref)? {
                batch.delete::<OneTimeKeys>(&key_ref);
                return Ok(Some((key_id, key)));
            }
            tracing::warn!(key_id, "one-time key order entry without its key");
        }
        let Some(entry) = self.db.scan_prefix::<OneTimeKeys, _>(prefix)?.next() else { return Ok(None) };
        let (db_key, key) = entry?;
        batch.delete::<OneTimeKeys>(&db_key);
        Ok(Some((db_key.3, key)))
    }

    /// Users whose keys changed in `(from, to]` and who share a room with `user`.
    pub fn key_changes(&self, user: &UserId, from: u64, to: u64) -> Result<Vec<OwnedUserId>> {
        let sharing = self.users_sharing_rooms(user)?;
        let mut changed = BTreeSet::new();
        if to > from {
            for entry in self.db.range::<StreamLog>(
                Bound::Excluded(&from),
                Bound::Included(&to),
                Direction::Forward,
            )? {
                if let (_, StreamEntry::DeviceKeys { user_id }) = entry?
                    && sharing.contains(&user_id)
                {
                    changed.insert(user_id);
                }
            }
        }
        Ok(changed.into_iter().collect())
    }

    /// Stores cross-signing keys. The caller has done user-interactive auth when it is needed.
    pub async fn upload_signing_keys(&self, user: &UserId, keys: Vec<(&'static str, Value)>) -> Result<()> {
        let mut batch = Batch::new();
        for (usage, key) in keys {
            if key.get("user_id").and_then(Value::as_str) != Some(user.as_str()) {
                return Err(Error::invalid_param(format!("{usage} key must be for the uploading user")));
            }
            batch.put::<CrossSigningKeys>(&(user.to_owned(), usage.to_owned()), &key)?;
        }
        let wake = self.users_sharing_rooms(user)?.into_iter().collect();
        self.key_stream_write(batch, StreamEntry::DeviceKeys { user_id: user.to_owned() }, wake).await?;
        self.send_signing_key_update(user).await
    }

    pub fn cross_signing_key(&self, user: &UserId, usage: &str) -> Result<Option<Value>> {
        Ok(self.db.get::<CrossSigningKeys>(&(user.to_owned(), usage.to_owned()))?)
    }

    /// Merges uploaded signatures into the signed device or cross-signing keys. Returns failures
    /// per user and key ID.
    pub async fn upload_signatures(
        &self,
        signer: &UserId,
        signed: BTreeMap<OwnedUserId, BTreeMap<String, Value>>,
    ) -> Result<Value> {
        let mut failures = serde_json::Map::new();
        let mut batch = Batch::new();
        // Per user whose keys gained signatures: the devices among them, and whether a
        // cross-signing key did, for what other servers must be told.
        let mut changed_users: BTreeMap<OwnedUserId, (BTreeSet<OwnedDeviceId>, bool)> = BTreeMap::new();
        for (user, keys) in signed {
            for (key_id, object) in keys {
                let Some(new_sigs) = object.get("signatures").and_then(|s| s.get(signer.as_str())).cloned()
                else {
                    continue;
                };
                let device_key = (user.clone(), OwnedDeviceId::from(key_id.as_str()));
                let target = if let Some(keys) = self.db.get::<DeviceKeys>(&device_key)? {
                    Some((None, keys))
                } else {
                    let mut found = None;
                    for usage in ["master", "self_signing", "user_signing"] {
                        if let Some(key) = self.cross_signing_key(&user, usage)?
                            && key["keys"].as_object().is_some_and(|k| {
                                k.values().any(|v| v.as_str() == Some(key_id.as_str()))
                                    || k.contains_key(&key_id)
                            })
                        {
                            found = Some((Some(usage), key));
                            break;
                        }
                    }
                    found
                };
                let Some((usage, mut stored)) = target else {
                    let entry = failures.entry(user.to_string()).or_insert_with(|| json!({}));
                    entry[key_id.as_str()] = json!({"errcode": "M_NOT_FOUND", "error": "Unknown key"});
                    continue;
                };
                let sigs = stored["signatures"][signer.as_str()].as_object().cloned().unwrap_or_default();
                let mut merged = sigs;
                if let Some(new) = new_sigs.as_object() {
                    merged.extend(new.clone());
                }
                stored["signatures"][signer.as_str()] = Value::Object(merged);
                let changed = changed_users.entry(user.clone()).or_default();
                match usage {
                    None => {
                        batch.put::<DeviceKeys>(&device_key, &stored)?;
                        changed.0.insert(device_key.1);
                    }
                    Some(usage) => {
                        batch.put::<CrossSigningKeys>(&(user.clone(), usage.to_owned()), &stored)?;
                        changed.1 = true;
                    }
                }
            }
        }
        for (user, (devices, cross_signing)) in changed_users {
            let wake = self.users_sharing_rooms(&user)?.into_iter().collect();
            let pos = self
                .key_stream_write(
                    std::mem::take(&mut batch),
                    StreamEntry::DeviceKeys { user_id: user.clone() },
                    wake,
                )
                .await?;
            if !self.users.is_local(&user) {
                continue;
            }
            for device in devices {
                self.send_device_list_update(&user, &device, false, pos).await?;
            }
            if cross_signing {
                self.send_signing_key_update(&user).await?;
            }
        }
        Ok(json!({"failures": failures}))
    }

    /// Queues to-device messages; `*` addresses every device of a user. Idempotent per sending
    /// device and transaction ID.
    pub async fn send_to_device(
        &self,
        sender: &UserId,
        sender_device: &DeviceId,
        event_type: &str,
        txn_id: &str,
        messages: BTreeMap<OwnedUserId, BTreeMap<String, Value>>,
    ) -> Result<()> {
        // Scoped to the endpoint's path, event type included, like room events' transactions.
        let txn_id = &format!("{event_type}/{txn_id}");
        let txn_key = (sender.to_owned(), sender_device.to_owned(), txn_id.clone());
        if self.db.contains::<ToDeviceTxns>(&txn_key)? {
            return Ok(());
        }
        let (local, remote): (BTreeMap<_, _>, BTreeMap<_, _>) =
            messages.into_iter().partition(|(user, _)| self.users.is_local(user));
        // Queued before the transaction is marked done: a retry after a crash in between sends
        // them again under the same message ID, which the receiving server deduplicates.
        let message_id = crate::federation::edus::to_device_message_id(sender, sender_device, txn_id);
        self.send_to_device_remote(sender, (event_type, message_id), remote).await?;
        let mark = move |batch: &mut Batch| -> Result<()> { Ok(batch.put::<ToDeviceTxns>(&txn_key, &())?) };
        self.deliver_to_device(sender, event_type, local, mark).await
    }

    /// Puts to-device messages into local devices' inboxes, one stream position per recipient;
    /// `mark` adds the sender's idempotency record to the first write (or to a write of its own
    /// when there is no recipient), so the messages and the record land together.
    pub(crate) async fn deliver_to_device(
        &self,
        sender: &UserId,
        event_type: &str,
        messages: BTreeMap<OwnedUserId, BTreeMap<String, Value>>,
        mark: impl Fn(&mut Batch) -> Result<()>,
    ) -> Result<()> {
        let mut first = true;
        for (user, by_device) in messages {
            let streams = self.streams.clone();
            let ticket = blocking(move || streams.allocate()).await?;
            let pos = ticket.pos;
            let mut batch = Batch::new();
            for (device, content) in by_device {
                let targets: Vec<OwnedDeviceId> = if device == "*" {
                    self.users.devices(&user)?.into_iter().map(|d| d.device_id).collect()
                } else {
                    vec![OwnedDeviceId::from(device.as_str())]
                };
                for target in targets {
                    let record = ToDeviceRecord {
                        sender: sender.to_owned(),
                        event_type: event_type.to_owned(),
                        content: content.clone(),
                    };
                    batch.put::<ToDeviceInbox>(&(user.clone(), target, pos), &record)?;
                }
            }
            if first {
                mark(&mut batch)?;
                first = false;
            }
            batch.stream_entry(pos, &StreamEntry::ToDevice { user_id: user.clone() })?;
            let db = self.db.clone();
            blocking(move || Ok(db.write(batch)?)).await?;
            self.streams.finish(ticket, vec![user]);
        }
        if first {
            let mut batch = Batch::new();
            mark(&mut batch)?;
            let db = self.db.clone();
            blocking(move || Ok(db.write(batch)?)).await?;
        }
        Ok(())
    }

    /// The to-device messages for a device in `(since, now]` (one sync's share of them), after
    /// deleting those at or below `since`, which the client acknowledged by syncing from it;
    /// with the position through which the device then has them all (`now`, unless some were
    /// left for the next sync).
    pub fn to_device_messages(
        &self,
        user: &UserId,
        device: &DeviceId,
        since: Option<u64>,
        now: u64,
    ) -> Result<(Vec<Value>, u64)> {
        self.to_device_batch(user, device, since, now, TO_DEVICE_PER_SYNC)
    }

    /// [`Self::to_device_messages`], at most `limit` of them.
    pub fn to_device_batch(
        &self,
        user: &UserId,
        device: &DeviceId,
        since: Option<u64>,
        now: u64,
        limit: usize,
    ) -> Result<(Vec<Value>, u64)> {
        let prefix = (user.to_owned(), device.to_owned());
        let mut acknowledged = Batch::new();
        let mut out = Vec::new();
        let mut through = now;
        for entry in self.db.scan_prefix::<ToDeviceInbox, _>(&prefix)?.lenient() {
            let (key, record) = entry?;
            let Some(record) = record else {
                // Logged by `lenient`; it can never be delivered.
                acknowledged.delete::<ToDeviceInbox>(&key);
                continue;
            };
            let pos = key.2;
            if since.is_some_and(|s| pos <= s) {
                acknowledged.delete::<ToDeviceInbox>(&key);
            } else if pos <= now && out.len() < limit {
                out.push(
                    json!({"sender": record.sender, "type": record.event_type, "content": record.content}),
                );
            } else if pos <= now {
                // Full: the rest waits for the next batch, from just before this one.
                through = through.min(pos - 1);
            }
        }
        self.db.write(acknowledged)?;
        Ok((out, through))
    }
}
