//! Access and refresh tokens: random, shown to the client once, stored only as a SHA-256 hash.

use hearth_storage::{
    Batch,
    schema::{AccessTokens, Devices, RefreshTokens},
};

use super::{NewSession, Session, Users, blocking, devices::end_tokens};
use crate::{Error, Result, util};

pub(super) fn new_access_token() -> String {
    format!("hth_{}", util::random_string(40))
}

pub(super) fn new_refresh_token() -> String {
    format!("htr_{}", util::random_string(40))
}

pub(super) fn hash_token(token: &str) -> Vec<u8> {
    util::sha256(token.as_bytes())
}

impl Users {
    /// The session an access token belongs to. An expired refreshable token is a soft logout:
    /// the device stays, and the client refreshes or logs in again on it.
    pub fn authenticate(&self, token: &str) -> Result<Session> {
        let record = self
            .db
            .get::<AccessTokens>(&hash_token(token))?
            .ok_or_else(|| Error::unknown_token("Unrecognised access token"))?;
        if record.expires_ts.is_some_and(|expires| util::now_ms() >= expires) {
            return Err(Error::soft_logout("Access token has expired"));
        }
        Ok(Session {
            user_id: record.user_id,
            device_id: Some(record.device_id),
            is_guest: record.is_guest,
            appservice: None,
        })
    }

    /// Trades a refresh token for a new access token and a new refresh token. Each refresh
    /// token works once: the old pair stops working in the same write.
    pub async fn refresh(&self, refresh_token: &str) -> Result<NewSession> {
        let users = self.clone();
        let hash = hash_token(refresh_token);
        blocking(move || {
            // Two refreshes with one token must not both succeed.
            let _guard = users.refresh_lock.lock().map_err(|_| Error::internal("refresh lock poisoned"))?;
            let _shared = users.db.shared_lock(hearth_storage::engine::LockKind::Create, "refresh")?;
            let unknown = || Error::unknown_token("Unrecognised refresh token");
            let token = users.db.get::<RefreshTokens>(&hash)?.ok_or_else(unknown)?;
            let key = (token.user_id.clone(), token.device_id.clone());
            let mut device = users.db.get::<Devices>(&key)?.ok_or_else(unknown)?;
            if device.refresh_token_hash.as_deref() != Some(hash.as_slice()) {
                return Err(unknown());
            }
            let is_guest = users.account(&token.user_id)?.is_some_and(|a| a.is_guest);
            let mut batch = Batch::new();
            end_tokens(&mut batch, &device);
            let session = users.issue_tokens(
                &mut batch,
                &mut device,
                &token.user_id,
                &token.device_id,
                is_guest,
                true,
            )?;
            batch.put::<Devices>(&key, &device)?;
            users.db.write(batch)?;
            tracing::debug!(user_id = %token.user_id, device_id = %token.device_id, "refreshed a session");
            Ok(session)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        ErrorCode,
        users::{NewAccount, test_users},
    };

    #[test]
    fn tokens_are_unique_and_hashes_stable() {
        let (a, b) = (new_access_token(), new_access_token());
        assert_ne!(a, b);
        assert!(a.starts_with("hth_"));
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
    }

    #[tokio::test]
    async fn refresh_tokens_are_single_use_and_expired_tokens_soft_logout() {
        let mut users = test_users();
        let uid = users
            .register(NewAccount {
                localpart: Some("fresh".into()),
                inhibit_login: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .user_id;
        let first = users.create_session(&uid, None, None, false, true).await.unwrap();
        assert_eq!(first.expires_in, Some(users.refreshable_lifetime));
        let refresh = first.refresh_token.clone().unwrap();
        users.authenticate(&first.access_token).unwrap();

        let second = users.refresh(&refresh).await.unwrap();
        assert_eq!(second.device_id, first.device_id);
        assert!(users.authenticate(&first.access_token).is_err(), "the old access token ends");
        users.authenticate(&second.access_token).unwrap();
        let reused = users.refresh(&refresh).await.unwrap_err();
        assert!(matches!(reused, Error::Matrix { code: ErrorCode::UnknownToken, .. }));

        // A session whose access token lives no time at all is soft-logged-out at once.
        users.refreshable_lifetime = Duration::ZERO;
        let short = users.create_session(&uid, None, None, false, true).await.unwrap();
        let err = users.authenticate(&short.access_token).unwrap_err();
        assert!(matches!(err, Error::Matrix { code: ErrorCode::SoftLogout, .. }));
        let renewed = users.refresh(short.refresh_token.as_deref().unwrap()).await.unwrap();
        assert_eq!(renewed.device_id, short.device_id);

        // Deleting the device ends its refresh token too.
        users.delete_devices(&uid, &[second.device_id]).await.unwrap();
        assert!(users.refresh(second.refresh_token.as_deref().unwrap()).await.is_err());
    }
}
