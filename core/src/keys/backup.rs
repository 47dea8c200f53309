//! Server-side key backup (`/room_keys`): versions, and the encrypted room keys in each. The
//! server cannot read the keys; it keeps, per session, the copy the spec ranks best.

use std::collections::BTreeMap;

use hearth_storage::{
    Batch, Direction,
    records::BackupVersionRecord,
    schema::{BackupKeys, BackupVersions},
};
use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::Value;

use crate::{Error, Homeserver, Result, users::blocking};

/// A version's public view.
#[derive(Debug, Clone)]
pub struct BackupInfo {
    pub version: String,
    pub algorithm: String,
    pub auth_data: Value,
    pub count: u64,
    pub etag: String,
}

/// Keys of a version: room -> session -> key data.
pub type BackupRooms = BTreeMap<OwnedRoomId, BTreeMap<String, Value>>;

fn parse_version(version: &str) -> Result<u64> {
    version.parse().map_err(|_| Error::not_found(format!("Unknown backup version {version}")))
}

/// Whether `new` should replace `old`: verified beats unverified, then the lower first message
/// index, then the lower forwarded count (the spec's order).
fn better(new: &Value, old: &Value) -> bool {
    let key = |v: &Value| {
        (
            !v["is_verified"].as_bool().unwrap_or(false),
            v["first_message_index"].as_u64().unwrap_or(u64::MAX),
            v["forwarded_count"].as_u64().unwrap_or(u64::MAX),
        )
    };
    key(new) < key(old)
}

impl Homeserver {
    /// The newest backup version that is not deleted.
    fn current_backup(&self, user: &UserId) -> Result<Option<(u64, BackupVersionRecord)>> {
        for entry in self.db.scan_prefix_dir::<BackupVersions, _>(&user.to_owned(), Direction::Backward)? {
            let ((_, version), record) = entry?;
            if !record.deleted {
                return Ok(Some((version, record)));
            }
        }
        Ok(None)
    }

    fn backup_record(&self, user: &UserId, version: &str) -> Result<(u64, BackupVersionRecord)> {
        let number = parse_version(version)?;
        match self.db.get::<BackupVersions>(&(user.to_owned(), number))? {
            Some(record) if !record.deleted => Ok((number, record)),
            _ => Err(Error::not_found(format!("Unknown backup version {version}"))),
        }
    }

    /// Checks that `version` is the current one, as writes to keys require.
    fn writable_backup(&self, user: &UserId, version: &str) -> Result<(u64, BackupVersionRecord)> {
        let current = self.current_backup(user)?;
        match current {
            Some((number, record)) if number.to_string() == version => Ok((number, record)),
            Some((number, _)) => Err(Error::WrongRoomKeysVersion(number.to_string())),
            None => Err(Error::not_found("No current backup version")),
        }
    }

    fn backup_count(&self, user: &UserId, version: u64) -> Result<u64> {
        Ok(u64::try_from(self.db.scan_prefix::<BackupKeys, _>(&(user.to_owned(), version))?.count())
            .unwrap_or(0))
    }

    pub fn backup_info(&self, user: &UserId, version: Option<&str>) -> Result<BackupInfo> {
        let (number, record) = match version {
            Some(v) => self.backup_record(user, v)?,
            None => {
                self.current_backup(user)?.ok_or_else(|| Error::not_found("No current backup version"))?
            }
        };
        Ok(BackupInfo {
            version: number.to_string(),
            algorithm: record.algorithm,
            auth_data: record.auth_data,
            count: self.backup_count(user, number)?,
            etag: record.etag.to_string(),
        })
    }

    pub async fn create_backup(&self, user: &UserId, algorithm: String, auth_data: Value) -> Result<String> {
        let this = self.clone();
        let user = user.to_owned();
        blocking(move || {
            let last = this
                .db
                .scan_prefix_dir::<BackupVersions, _>(&user, Direction::Backward)?
                .next()
                .transpose()?
                .map_or(0, |((_, v), _)| v);
            let version = last + 1;
            let record = BackupVersionRecord { algorithm, auth_data, etag: 0, deleted: false };
            this.db.put::<BackupVersions>(&(user, version), &record)?;
            Ok(version.to_string())
        })
        .await
    }

    pub async fn update_backup(
        &self,
        user: &UserId,
        version: &str,
        algorithm: String,
        auth_data: Value,
    ) -> Result<()> {
        let (number, mut record) = self.backup_record(user, version)?;
        if record.algorithm != algorithm {
            return Err(Error::invalid_param("The algorithm of a backup version cannot change"));
        }
        record.auth_data = auth_data;
        let db = self.db.clone();
        let user = user.to_owned();
        blocking(move || Ok(db.put::<BackupVersions>(&(user, number), &record)?)).await
    }

    pub async fn delete_backup(&self, user: &UserId, version: &str) -> Result<()> {
        let (number, mut record) = self.backup_record(user, version)?;
        record.deleted = true;
        let this = self.clone();
        let user = user.to_owned();
        blocking(move || {
            let mut batch = Batch::new();
            for entry in this.db.scan_prefix::<BackupKeys, _>(&(user.clone(), number))? {
                batch.delete::<BackupKeys>(&entry?.0);
            }
            batch.put::<BackupVersions>(&(user, number), &record)?;
            this.db.write(batch)?;
            Ok(())
        })
        .await
    }

    /// Stores keys into the current version, keeping the better copy per session. Returns the
    /// new count and etag.
    pub async fn put_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        rooms: BackupRooms,
    ) -> Result<(u64, String)> {
        let (number, mut record) = self.writable_backup(user, version)?;
        let this = self.clone();
        let user = user.to_owned();
        blocking(move || {
            let mut batch = Batch::new();
            let mut changed = false;
            for (room, sessions) in rooms {
                for (session, data) in sessions {
                    let key = (user.clone(), number, room.clone(), session);
                    let replace = match this.db.get::<BackupKeys>(&key)? {
                        Some(old) => better(&data, &old),
                        None => true,
                    };
                    if replace {
                        batch.put::<BackupKeys>(&key, &data)?;
                        changed = true;
                    }
                }
            }
            if changed {
                record.etag += 1;
                batch.put::<BackupVersions>(&(user.clone(), number), &record)?;
            }
            this.db.write(batch)?;
            Ok((this.backup_count(&user, number)?, record.etag.to_string()))
        })
        .await
    }

    /// Keys of a version, optionally of one room and session.
    pub fn get_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        room: Option<&RoomId>,
        session: Option<&str>,
    ) -> Result<BackupRooms> {
        let (number, _) = self.backup_record(user, version)?;
        let mut out = BackupRooms::new();
        for entry in self.db.scan_prefix::<BackupKeys, _>(&(user.to_owned(), number))? {
            let ((_, _, room_id, session_id), data) = entry?;
            if room.is_some_and(|r| r != room_id) || session.is_some_and(|s| s != session_id) {
                continue;
            }
            out.entry(room_id).or_default().insert(session_id, data);
        }
        Ok(out)
    }

    /// Deletes keys of the current version (all, one room's, or one session's).
    pub async fn delete_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        room: Option<&RoomId>,
        session: Option<&str>,
    ) -> Result<(u64, String)> {
        let (number, mut record) = self.writable_backup(user, version)?;
        let doomed = self.get_backup_keys(user, version, room, session)?;
        let this = self.clone();
        let user = user.to_owned();
        blocking(move || {
            let mut batch = Batch::new();
            for (room_id, sessions) in doomed {
                for session_id in sessions.into_keys() {
                    batch.delete::<BackupKeys>(&(user.clone(), number, room_id.clone(), session_id));
                }
            }
            if !batch.is_empty() {
                record.etag += 1;
                batch.put::<BackupVersions>(&(user.clone(), number), &record)?;
            }
            this.db.write(batch)?;
            Ok((this.backup_count(&user, number)?, record.etag.to_string()))
        })
        .await
    }
}
