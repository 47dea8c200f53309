//! The server's ed25519 signing key: generated on first start, persisted, reused after.

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use hearth_storage::{Db, Direction, records::ServerKeyRecord, schema::ServerSigningKeys};
use rand::{Rng, distributions::Alphanumeric};
use ruma::signatures::Ed25519KeyPair;

use sha2::Digest;

use crate::{Error, Result, util::now_ms};

/// The active signing key.
pub struct SigningKey {
    pub key_id: String,
    pub pair: Ed25519KeyPair,
    /// A secret for the server's own short-lived MACs (WebSocket tickets), derived from the
    /// private key, so that every process sharing the store has the same one.
    pub(crate) mac_secret: [u8; 32],
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private half never reaches a log.
        f.debug_struct("SigningKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads the newest unexpired key, or generates and stores one.
    pub fn load_or_generate(db: &Db) -> Result<Self> {
        // Processes starting together on one store must not each make a key of their own.
        let _shared = db.shared_lock(hearth_storage::engine::LockKind::Create, "signing_key")?;
        for entry in db.range::<ServerSigningKeys>(
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            Direction::Forward,
        )? {
            let (key_id, record) = entry?;
            if record.expired_ts.is_none() {
                return Self::from_record(key_id, &record);
            }
        }
        let version: String = rand::thread_rng().sample_iter(&Alphanumeric).take(6).map(char::from).collect();
        let key_id = format!("ed25519:a_{version}");
        let der = Ed25519KeyPair::generate();
        let record = ServerKeyRecord {
            pkcs8_b64: STANDARD_NO_PAD.encode(&*der),
            created_ts: now_ms(),
            expired_ts: None,
        };
        db.put::<ServerSigningKeys>(&key_id, &record)?;
        tracing::info!(%key_id, "generated a new server signing key");
        Self::from_record(key_id, &record)
    }

    fn from_record(key_id: String, record: &ServerKeyRecord) -> Result<Self> {
        let der = STANDARD_NO_PAD
            .decode(&record.pkcs8_b64)
            .map_err(|e| Error::internal(format!("stored signing key {key_id}: {e}")))?;
        let version = key_id.strip_prefix("ed25519:").unwrap_or(&key_id).to_owned();
        let pair = Ed25519KeyPair::from_der(&der, version)
            .map_err(|e| Error::internal(format!("stored signing key {key_id}: {e}")))?;
        let mac_secret =
            sha2::Sha256::new_with_prefix(b"hearth mac secret\0").chain_update(&der).finalize().into();
        Ok(Self { key_id, pair, mac_secret })
    }

    /// The public half of a stored (possibly retired) key, unpadded base64.
    pub fn public_of(key_id: &str, record: &ServerKeyRecord) -> Result<String> {
        Ok(Self::from_record(key_id.to_owned(), record)?.public_key_base64())
    }

    /// The public key, unpadded base64 as the key APIs publish it.
    pub fn public_key_base64(&self) -> String {
        STANDARD_NO_PAD.encode(self.pair.public_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let db = Db::in_memory();
        let first = SigningKey::load_or_generate(&db).unwrap();
        let second = SigningKey::load_or_generate(&db).unwrap();
        assert_eq!(first.key_id, second.key_id);
        assert_eq!(first.public_key_base64(), second.public_key_base64());
        assert!(first.key_id.starts_with("ed25519:"));
        assert!(!format!("{first:?}").contains(&first.public_key_base64()));
    }
}
