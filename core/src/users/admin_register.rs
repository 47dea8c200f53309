//! Shared-secret registration, compatible with Synapse's `/_synapse/admin/v1/register`, so that
//! provisioning scripts, bridges and test suites written for Synapse create users here unchanged.

use crate::ephemeral::spaces::RegisterNonces;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::{NewAccount, Registered, Users};
use crate::{Error, Result, util};

pub(crate) const NONCE_TTL: Duration = Duration::from_secs(60);

/// The body of `POST /_synapse/admin/v1/register`.
#[derive(Debug, Clone)]
pub struct SharedSecretRegistration {
    pub nonce: String,
    pub username: String,
    pub displayname: Option<String>,
    pub password: String,
    pub admin: bool,
    pub user_type: Option<String>,
    /// Hex HMAC-SHA1 over the NUL-separated fields, keyed with the shared secret.
    pub mac: String,
}

impl SharedSecretRegistration {
    fn expected_mac(&self, secret: &str) -> Result<Vec<u8>> {
        let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).map_err(Error::internal)?;
        let admin: &[u8] = if self.admin { b"admin" } else { b"notadmin" };
        let mut parts =
            vec![self.nonce.as_bytes(), self.username.as_bytes(), self.password.as_bytes(), admin];
        if let Some(user_type) = &self.user_type {
            parts.push(user_type.as_bytes());
        }
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                mac.update(b"\x00");
            }
            mac.update(part);
        }
        Ok(mac.finalize().into_bytes().to_vec())
    }
}

impl Users {
    /// Issues a single-use nonce, valid for a minute.
    pub async fn new_registration_nonce(&self) -> Result<String> {
        let nonce = util::random_string(32);
        self.ephemeral.put_in::<RegisterNonces>(&nonce, &()).await?;
        Ok(nonce)
    }

    pub async fn register_with_shared_secret(
        &self,
        secret: &str,
        req: SharedSecretRegistration,
    ) -> Result<Registered> {
        if self.ephemeral.take_in::<RegisterNonces>(&req.nonce).await?.is_none() {
            return Err(Error::bad_request("unrecognised nonce"));
        }
        if req.username.contains('\0') || req.password.contains('\0') {
            return Err(Error::invalid_param("Invalid username or password"));
        }
        let given = hex::decode(req.mac.trim()).map_err(|_| Error::forbidden("HMAC incorrect"))?;
        if !util::constant_time_eq(&given, &req.expected_mac(secret)?) {
            return Err(Error::forbidden("HMAC incorrect"));
        }
        if req.user_type.is_some() {
            // Synapse's user types (support, bot) carry no behaviour here yet.
            tracing::debug!(user_type = ?req.user_type, "ignoring user_type on shared-secret registration");
        }
        self.register(NewAccount {
            localpart: Some(req.username),
            password: Some(req.password),
            is_admin: req.admin,
            displayname: req.displayname,
            ..Default::default()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::test_users;

    fn signed(nonce: &str, secret: &str) -> SharedSecretRegistration {
        let mut req = SharedSecretRegistration {
            nonce: nonce.into(),
            username: "admin1".into(),
            displayname: None,
            password: "pw".into(),
            admin: true,
            user_type: None,
            mac: String::new(),
        };
        req.mac = hex::encode(req.expected_mac(secret).unwrap());
        req
    }

    #[test]
    fn mac_matches_synapse_construction() {
        // Python: hmac.new(b"secret", b"abc\0admin1\0pw\0admin", hashlib.sha1).hexdigest()
        assert_eq!(signed("abc", "secret").mac, "3a5be6fa940e51a82cb795993fed0c3f4b08b871");
    }

    #[tokio::test]
    async fn nonce_is_single_use_and_mac_is_checked() {
        let users = test_users();
        let nonce = users.new_registration_nonce().await.unwrap();
        let mut bad = signed(&nonce, "secret");
        bad.mac = hex::encode([0u8; 20]);
        assert!(matches!(
            users.register_with_shared_secret("secret", bad).await,
            Err(Error::Matrix { code: crate::ErrorCode::Forbidden, .. })
        ));
        // The failed attempt used the nonce up.
        let reused = signed(&nonce, "secret");
        assert!(users.register_with_shared_secret("secret", reused).await.is_err());

        let nonce = users.new_registration_nonce().await.unwrap();
        let reg = users.register_with_shared_secret("secret", signed(&nonce, "secret")).await.unwrap();
        assert!(users.account(&reg.user_id).unwrap().unwrap().is_admin);
        assert!(reg.login.is_some());
    }
}
