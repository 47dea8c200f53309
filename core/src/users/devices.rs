//! Devices and the sessions (access tokens) bound to them.

use std::time::Duration;

use hearth_storage::{
    Batch,
    records::{AccessTokenRecord, DeviceRecord, RefreshTokenRecord},
    schema::{AccessTokens, Devices, RefreshTokens},
};
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};

use super::{Users, blocking, tokens};
use crate::{Error, Result, util::now_ms};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub device_id: OwnedDeviceId,
    pub display_name: Option<String>,
    pub last_seen_ip: Option<String>,
    pub last_seen_ts: Option<u64>,
    pub last_seen_user_agent: Option<String>,
}

impl Device {
    fn from_record(device_id: OwnedDeviceId, r: DeviceRecord) -> Self {
        Self {
            device_id,
            display_name: r.display_name,
            last_seen_ip: r.last_seen_ip,
            last_seen_user_agent: r.last_seen_user_agent,
            // A device that was never seen since its creation was last seen when created.
            last_seen_ts: Some(r.last_seen_ts.unwrap_or(r.created_ts)),
        }
    }
}

/// Device IDs are ten upper-case letters, as Synapse makes them.
fn new_device_id() -> OwnedDeviceId {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let id: String = (0..10).map(|_| char::from(rng.gen_range(b'A'..=b'Z'))).collect();
    OwnedDeviceId::from(id)
}

const MAX_DEVICE_DISPLAY_NAME: usize = 100;

/// A session just started (or refreshed): what the client is told once.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub device_id: OwnedDeviceId,
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// How long the access token works, when it expires.
    pub expires_in: Option<Duration>,
}

/// Adds the removal of a device's current tokens to `batch`.
pub(super) fn end_tokens(batch: &mut Batch, record: &DeviceRecord) {
    if let Some(hash) = &record.token_hash {
        batch.delete::<AccessTokens>(hash);
    }
    if let Some(hash) = &record.refresh_token_hash {
        batch.delete::<RefreshTokens>(hash);
    }
}

fn check_display_name(name: Option<&String>) -> Result<()> {
    if name.is_some_and(|n| n.chars().count() > MAX_DEVICE_DISPLAY_NAME) {
        return Err(Error::invalid_param(format!(
            "Device display name is too long (max {MAX_DEVICE_DISPLAY_NAME})"
        )));
    }
    Ok(())
}

/// A device seen first now, with no name and no tokens yet.
fn fresh_device(now: u64) -> DeviceRecord {
    DeviceRecord {
        display_name: None,
        created_ts: now,
        last_seen_ts: Some(now),
        last_seen_ip: None,
        token_hash: None,
        refresh_token_hash: None,
        last_seen_user_agent: None,
    }
}

impl Users {
    /// Starts a session: creates the device (or reuses one the client names, ending its old
    /// session) and issues a new access token for it. A `refreshable` session gets a refresh
    /// token and an access token that expires.
    pub async fn create_session(
        &self,
        user_id: &UserId,
        device_id: Option<OwnedDeviceId>,
        display_name: Option<String>,
        is_guest: bool,
        refreshable: bool,
    ) -> Result<NewSession> {
        check_display_name(display_name.as_ref())?;
        // An empty ID stands for "no device" where an application service acts without one.
        if device_id.as_ref().is_some_and(|d| d.as_str().is_empty()) {
            return Err(Error::invalid_param("device_id must not be empty"));
        }
        let users = self.clone();
        let user_id = user_id.to_owned();
        blocking(move || {
            let device_id = device_id.unwrap_or_else(new_device_id);
            let key = (user_id.clone(), device_id.clone());
            let now = now_ms();
            let mut batch = Batch::new();
            let mut record = match users.db.get::<Devices>(&key)? {
                Some(existing) => {
                    end_tokens(&mut batch, &existing);
                    existing
                }
                None => fresh_device(now),
            };
            if display_name.is_some() {
                record.display_name = display_name;
            }
            let session =
                users.issue_tokens(&mut batch, &mut record, &user_id, &device_id, is_guest, refreshable)?;
            batch.put::<Devices>(&key, &record)?;
            users.db.write(batch)?;
            tracing::debug!(%user_id, %device_id, refreshable, "started a session");
            Ok(session)
        })
        .await
    }

    /// Adds a new access token (and refresh token) for a device to `batch` and points the
    /// device record at them.
    pub(super) fn issue_tokens(
        &self,
        batch: &mut Batch,
        record: &mut DeviceRecord,
        user_id: &UserId,
        device_id: &DeviceId,
        is_guest: bool,
        refreshable: bool,
    ) -> Result<NewSession> {
        let now = now_ms();
        let access_token = tokens::new_access_token();
        let hash = tokens::hash_token(&access_token);
        let lifetime = refreshable.then_some(self.refreshable_lifetime);
        let expires_ts =
            lifetime.map(|l| now.saturating_add(u64::try_from(l.as_millis()).unwrap_or(u64::MAX)));
        batch.put::<AccessTokens>(
            &hash,
            &AccessTokenRecord {
                user_id: user_id.to_owned(),
                device_id: device_id.to_owned(),
                created_ts: now,
                is_guest,
                expires_ts,
            },
        )?;
        record.token_hash = Some(hash);
        let refresh_token = if refreshable {
            let token = tokens::new_refresh_token();
            let hash = tokens::hash_token(&token);
            batch.put::<RefreshTokens>(
                &hash,
                &RefreshTokenRecord {
                    user_id: user_id.to_owned(),
                    device_id: device_id.to_owned(),
                    created_ts: now,
                },
            )?;
            record.refresh_token_hash = Some(hash);
            Some(token)
        } else {
            record.refresh_token_hash = None;
            None
        };
        Ok(NewSession { device_id: device_id.to_owned(), access_token, refresh_token, expires_in: lifetime })
    }

    pub fn devices(&self, user_id: &UserId) -> Result<Vec<Device>> {
        self.db
            .scan_prefix::<Devices, _>(&user_id.to_owned())?
            .map(|entry| {
                let ((_, device_id), record) = entry?;
                Ok(Device::from_record(device_id, record))
            })
            .collect()
    }

    pub fn device(&self, user_id: &UserId, device_id: &DeviceId) -> Result<Option<Device>> {
        let key = (user_id.to_owned(), device_id.to_owned());
        Ok(self.db.get::<Devices>(&key)?.map(|r| Device::from_record(device_id.to_owned(), r)))
    }

    /// Creates a device with no access token, for an application service that manages its
    /// users' devices itself (MSC4190) and acts on them with `?device_id=`. Returns whether it
    /// was created (an existing one only gets the display name).
    pub async fn ensure_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        display_name: Option<String>,
    ) -> Result<bool> {
        check_display_name(display_name.as_ref())?;
        let users = self.clone();
        let key = (user_id.to_owned(), device_id.to_owned());
        blocking(move || {
            let now = now_ms();
            let (mut record, created) = match users.db.get::<Devices>(&key)? {
                Some(existing) => (existing, false),
                None => (fresh_device(now), true),
            };
            if display_name.is_some() || created {
                record.display_name = display_name.or(record.display_name);
                users.db.put::<Devices>(&key, &record)?;
            }
            Ok(created)
        })
        .await
    }

    pub async fn set_device_display_name(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        display_name: Option<String>,
    ) -> Result<()> {
        check_display_name(display_name.as_ref())?;
        let users = self.clone();
        let key = (user_id.to_owned(), device_id.to_owned());
        blocking(move || {
            let mut record =
                users.db.get::<Devices>(&key)?.ok_or_else(|| Error::not_found("Device not found"))?;
            record.display_name = display_name;
            users.db.put::<Devices>(&key, &record)?;
            Ok(())
        })
        .await
    }

    /// Deletes devices and ends their sessions; devices that do not exist are skipped.
    pub async fn delete_devices(&self, user_id: &UserId, device_ids: &[OwnedDeviceId]) -> Result<()> {
        if device_ids.is_empty() {
            return Ok(());
        }
        let users = self.clone();
        let user_id: OwnedUserId = user_id.to_owned();
        let device_ids = device_ids.to_vec();
        blocking(move || {
            let mut batch = Batch::new();
            for device_id in &device_ids {
                let key = (user_id.clone(), device_id.clone());
                if let Some(record) = users.db.get::<Devices>(&key)? {
                    end_tokens(&mut batch, &record);
                    batch.delete::<Devices>(&key);
                }
            }
            // Pushers belong to the session that set them: a device that is gone gets nothing.
            crate::push::pushers::delete_for_devices(&users.db, &mut batch, &user_id, Some(&device_ids))?;
            users.db.write(batch)?;
            Ok(())
        })
        .await
    }

    /// Records that a device was used, at most once per interval so that requests do not each
    /// cost a write.
    pub async fn touch_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        ip: Option<String>,
        user_agent: Option<String>,
    ) -> Result<()> {
        const INTERVAL_MS: u64 = 5 * 60 * 1000;
        let key = (user_id.to_owned(), device_id.to_owned());
        let Some(mut record) = self.db.get::<Devices>(&key)? else { return Ok(()) };
        let now = now_ms();
        let stale = record.last_seen_ts.is_none_or(|ts| now.saturating_sub(ts) >= INTERVAL_MS);
        let moved = ip.is_some() && record.last_seen_ip != ip;
        // The user agent rides along with the periodic write: alone it never causes one.
        if !stale && !moved {
            return Ok(());
        }
        record.last_seen_ts = Some(now);
        if ip.is_some() {
            record.last_seen_ip = ip;
        }
        if user_agent.is_some() {
            record.last_seen_user_agent = user_agent;
        }
        let users = self.clone();
        blocking(move || Ok(users.db.put::<Devices>(&key, &record)?)).await
    }
}

#[cfg(test)]
mod tests {
    use crate::users::{NewAccount, test_users};

    #[tokio::test]
    async fn sessions_and_devices() {
        let users = test_users();
        let reg = users
            .register(NewAccount { localpart: Some("dee".into()), inhibit_login: true, ..Default::default() })
            .await
            .unwrap();
        let uid = reg.user_id;
        let s1 = users.create_session(&uid, None, Some("phone".into()), false, false).await.unwrap();
        let (d1, t1) = (s1.device_id, s1.access_token);
        let s2 = users.create_session(&uid, None, None, false, false).await.unwrap();
        let (d2, t2) = (s2.device_id, s2.access_token);
        assert_eq!(d1.as_str().len(), 10);
        assert_eq!(users.devices(&uid).unwrap().len(), 2);
        assert_eq!(users.device(&uid, &d1).unwrap().unwrap().display_name.as_deref(), Some("phone"));
        assert!(users.device(&uid, &d2).unwrap().unwrap().last_seen_ts.is_some());

        // Logging in again on a named device replaces its token and keeps its name.
        let s1b = users.create_session(&uid, Some(d1.clone()), None, false, false).await.unwrap();
        let (d1b, t1b) = (s1b.device_id, s1b.access_token);
        assert_eq!(d1b, d1);
        assert!(users.authenticate(&t1).is_err(), "old token still works");
        assert_eq!(users.authenticate(&t1b).unwrap().device_id.as_ref(), Some(&d1));
        assert_eq!(users.device(&uid, &d1).unwrap().unwrap().display_name.as_deref(), Some("phone"));

        users.set_device_display_name(&uid, &d2, Some("laptop".into())).await.unwrap();
        assert!(users.set_device_display_name(&uid, "NOPE".into(), None).await.is_err());
        assert!(users.set_device_display_name(&uid, &d2, Some("x".repeat(101))).await.is_err());

        users.delete_devices(&uid, &[d2.clone(), "MISSING".into()]).await.unwrap();
        assert!(users.authenticate(&t2).is_err());
        assert_eq!(users.devices(&uid).unwrap().len(), 1);
    }
}
