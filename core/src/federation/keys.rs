//! Signing keys across servers: the key response we publish, and other servers' keys, fetched
//! from the server itself, checked against its own signature, and kept until they expire.

use std::{ops::Bound, time::Duration};

use hearth_storage::{
    Direction,
    records::RemoteKeyRecord,
    schema::{RemoteKeyResponses, RemoteServerKeys, ServerSigningKeys},
};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, ServerName,
    api::federation::discovery::get_server_keys,
    serde::{Base64, Raw},
    signatures::{PublicKeyMap, PublicKeySet, sign_json, verify_json},
};
use serde_json::json;

use crate::{Error, ErrorCode, Homeserver, Result, events::pdu::to_json_string, util::now_ms};

/// How long others may cache our keys before asking again.
const OUR_KEYS_VALID: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest we trust a remote key without asking again, whatever it claims.
const MAX_REMOTE_VALIDITY_MS: u64 = 7 * 24 * 3600 * 1000;

impl Homeserver {
    /// `GET /_matrix/key/v2/server`: our verify keys, retired ones and the self-signature.
    pub fn server_keys_response(&self) -> Result<Raw<ruma::serde::JsonObject>> {
        let mut old = serde_json::Map::new();
        for entry in
            self.db.range::<ServerSigningKeys>(Bound::Unbounded, Bound::Unbounded, Direction::Forward)?
        {
            let (key_id, record) = entry?;
            if let Some(expired) = record.expired_ts
                && key_id != self.signing_key.key_id
            {
                // Only the public half of a retired key is published; it is derived on demand.
                if let Ok(key) = crate::keys::signing_key::SigningKey::public_of(&key_id, &record) {
                    old.insert(key_id, json!({"key": key, "expired_ts": expired}));
                }
            }
        }
        let valid_until = now_ms() + u64::try_from(OUR_KEYS_VALID.as_millis()).unwrap_or(u64::MAX);
        let body = json!({
            "server_name": self.server_name(),
            "valid_until_ts": valid_until,
            "verify_keys": { &self.signing_key.key_id: { "key": self.signing_key.public_key_base64() } },
            "old_verify_keys": old,
        });
        let mut object: CanonicalJsonObject = serde_json::from_value(body).map_err(Error::internal)?;
        sign_json(self.server_name().as_str(), &self.signing_key.pair, &mut object)
            .map_err(Error::internal)?;
        let raw = serde_json::value::to_raw_value(&object).map_err(Error::internal)?;
        Ok(Raw::from_json(raw))
    }

    /// Notary answer (`/_matrix/key/v2/query`): the key responses of `server` we hold, valid at
    /// least until `min_valid_until` (fetched again from the server when ours is older), each
    /// with the server's own signature and ours added. Ours too. Empty when we have none.
    pub async fn notary_keys(
        &self,
        server: &ServerName,
        min_valid_until: u64,
    ) -> Result<Vec<Raw<ruma::serde::JsonObject>>> {
        if server == self.server_name() {
            return Ok(vec![self.server_keys_response()?]);
        }
        let valid_until = |json: &str| {
            serde_json::from_str::<serde_json::Value>(json).ok().and_then(|v| v["valid_until_ts"].as_u64())
        };
        let stored = self.db.get::<RemoteKeyResponses>(&server.to_string())?;
        let fresh = stored.as_deref().and_then(valid_until).is_some_and(|t| t >= min_valid_until);
        if !fresh && let Err(error) = self.fetch_server_keys(server).await {
            tracing::info!(%server, %error, "notary query: could not refresh the server's keys");
        }
        let Some(json) = self.db.get::<RemoteKeyResponses>(&server.to_string())? else {
            return Ok(Vec::new());
        };
        let mut object: CanonicalJsonObject = serde_json::from_str(&json).map_err(Error::internal)?;
        sign_json(self.server_name().as_str(), &self.signing_key.pair, &mut object)
            .map_err(Error::internal)?;
        let raw = serde_json::value::to_raw_value(&object).map_err(Error::internal)?;
        Ok(vec![Raw::from_json(raw)])
    }

    /// The keys of `server` we know and still trust, by key ID.
    fn known_keys(&self, server: &ServerName) -> Result<PublicKeySet> {
        let now = now_ms();
        let mut set = PublicKeySet::new();
        for entry in self.db.scan_prefix::<RemoteServerKeys, _>(&server.to_string())? {
            let ((_, key_id), record) = entry?;
            if record.valid_until_ts > now
                && let Ok(key) = Base64::parse(&record.key)
            {
                set.insert(key_id, key);
            }
        }
        if server == self.server_name() {
            set.insert(
                self.signing_key.key_id.clone(),
                Base64::new(self.signing_key.pair.public_key().to_vec()),
            );
        }
        Ok(set)
    }

    /// Verify keys of `server` covering `wanted` key IDs, fetched from the server when we lack
    /// one. A server that cannot prove a key gets `M_UNAUTHORIZED`.
    pub async fn verify_keys(&self, server: &ServerName, wanted: &[String]) -> Result<PublicKeySet> {
        let known = self.known_keys(server)?;
        if wanted.iter().all(|id| known.contains_key(id)) {
            return Ok(known);
        }
        self.fetch_server_keys(server).await?;
        let known = self.known_keys(server)?;
        if let Some(missing) = wanted.iter().find(|id| !known.contains_key(*id)) {
            return Err(Error::new(ErrorCode::Unauthorized, format!("{server} has no valid key {missing}")));
        }
        Ok(known)
    }

    /// Keys for every server that signed `object` (events, key responses).
    pub async fn key_map_for(&self, object: &CanonicalJsonObject) -> Result<PublicKeyMap> {
        let mut map = PublicKeyMap::new();
        if let Some(CanonicalJsonValue::Object(signatures)) = object.get("signatures") {
            for (server, sigs) in signatures {
                let Ok(server) = ServerName::parse(server) else { continue };
                let CanonicalJsonValue::Object(sigs) = sigs else { continue };
                let ids: Vec<String> = sigs.keys().cloned().collect();
                // A signature we cannot check is simply not counted; verify_event then
                // fails if it was a required one.
                if let Ok(keys) = self.verify_keys(&server, &ids).await {
                    map.insert(server.to_string(), keys);
                }
            }
        }
        Ok(map)
    }

    /// The server's keys from the server itself, or else from a trusted notary.
    async fn fetch_server_keys(&self, server: &ServerName) -> Result<()> {
        let direct = async {
            let response = self.unsigned_request(server, get_server_keys::v2::Request::new()).await?;
            let object: CanonicalJsonObject = serde_json::from_str(response.server_key.json().get())
                .map_err(|e| {
                    Error::new(ErrorCode::RemoteUnavailable, format!("{server}: bad key response: {e}"))
                })?;
            self.store_key_response(server, &object)
        };
        let error = match direct.await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        for notary in &self.config.trusted_key_servers {
            match self.keys_from_notary(notary, server).await {
                Ok(()) => {
                    tracing::info!(%server, notary = %notary.server_name, "got server keys from a notary");
                    return Ok(());
                }
                Err(error) => tracing::info!(%server, notary = %notary.server_name, %error, "notary failed"),
            }
        }
        Err(error)
    }

    /// Asks a trusted notary (`POST /_matrix/key/v2/query`) and keeps each answer that both the
    /// notary (with a configured key) and the server itself signed.
    async fn keys_from_notary(
        &self,
        notary: &crate::config::TrustedKeyServer,
        server: &ServerName,
    ) -> Result<()> {
        let notary_name = ServerName::parse(&notary.server_name)
            .map_err(|e| Error::internal(format!("trusted_key_servers: {e}")))?;
        let mut notary_keys = PublicKeySet::new();
        for (id, key) in &notary.verify_keys {
            let key = Base64::parse(key).map_err(|e| Error::internal(format!("trusted_key_servers: {e}")))?;
            notary_keys.insert(id.clone(), key);
        }
        let notary_map = PublicKeyMap::from([(notary.server_name.clone(), notary_keys)]);
        let request = ruma::api::federation::discovery::get_remote_server_keys_batch::v2::Request::new(
            std::collections::BTreeMap::from([(server.to_owned(), std::collections::BTreeMap::new())]),
        );
        let response = self.unsigned_request(&notary_name, request).await?;
        let mut stored = false;
        for raw in response.server_keys {
            let Ok(object) = serde_json::from_str::<CanonicalJsonObject>(raw.json().get()) else { continue };
            if verify_json(&notary_map, &only_signed_by(&object, &notary.server_name)).is_err() {
                continue;
            }
            stored |= self.store_key_response(server, &object).is_ok();
        }
        if stored {
            Ok(())
        } else {
            Err(Error::new(ErrorCode::Unauthorized, "no verifiable keys from the notary"))
        }
    }

    /// Checks a key response (its server, its self-signature) and stores its keys.
    fn store_key_response(&self, server: &ServerName, object: &CanonicalJsonObject) -> Result<()> {
        let bad = |why: &str| Error::new(ErrorCode::Unauthorized, format!("{server}: key response {why}"));
        if object.get("server_name").and_then(CanonicalJsonValue::as_str) != Some(server.as_str()) {
            return Err(bad("is for another server"));
        }
        let keys_of = |field: &str| -> Vec<(String, String, Option<u64>)> {
            let Some(CanonicalJsonValue::Object(keys)) = object.get(field) else { return Vec::new() };
            keys.iter()
                .filter_map(|(id, v)| {
                    let CanonicalJsonValue::Object(v) = v else { return None };
                    let key = v.get("key")?.as_str()?.to_owned();
                    let expired = v.get("expired_ts").and_then(CanonicalJsonValue::as_integer);
                    Some((id.clone(), key, expired.and_then(|e| u64::try_from(i64::from(e)).ok())))
                })
                .collect()
        };
        let current = keys_of("verify_keys");
        let mut own = PublicKeySet::new();
        for (id, key, _) in &current {
            own.insert(id.clone(), Base64::parse(key).map_err(|_| bad("has a malformed key"))?);
        }
        // The response must be signed by the keys it publishes.
        verify_json(
            &PublicKeyMap::from([(server.to_string(), own)]),
            &only_signed_by(object, server.as_str()),
        )
        .map_err(|e| bad(&format!("is not self-signed: {e}")))?;
        let claimed = object
            .get("valid_until_ts")
            .and_then(CanonicalJsonValue::as_integer)
            .and_then(|t| u64::try_from(i64::from(t)).ok())
            .unwrap_or(0);
        let valid_until = claimed.min(now_ms() + MAX_REMOTE_VALIDITY_MS);
        let mut batch = hearth_storage::Batch::new();
        for (id, key, _) in current {
            batch.put::<RemoteServerKeys>(
                &(server.to_string(), id),
                &RemoteKeyRecord { key, valid_until_ts: valid_until },
            )?;
        }
        for (id, key, expired) in keys_of("old_verify_keys") {
            let record = RemoteKeyRecord { key, valid_until_ts: expired.unwrap_or(0) };
            batch.put::<RemoteServerKeys>(&(server.to_string(), id), &record)?;
        }
        // Kept as signed, so notary queries can pass it on for others to check themselves.
        batch.put::<RemoteKeyResponses>(&server.to_string(), &to_json_string(object)?)?;
        self.db.write(batch)?;
        tracing::debug!(%server, "fetched server keys");
        Ok(())
    }
}

/// A copy of a signed object keeping only `entity`'s signatures: ruma checks every signature
/// present, and a notary's answer also carries the notary's (or the other way round).
fn only_signed_by(object: &CanonicalJsonObject, entity: &str) -> CanonicalJsonObject {
    let mut copy = object.clone();
    if let Some(CanonicalJsonValue::Object(signatures)) = copy.get_mut("signatures") {
        signatures.retain(|name, _| name == entity);
    }
    copy
}
