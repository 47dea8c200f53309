//! Keys across servers: what we answer other servers about local users' devices and keys
//! (`user/devices`, `user/keys/query`, `user/keys/claim`), and the client's `/keys/query` and
//! `/keys/claim` for users of other servers, asked of their servers in parallel and merged.

use std::{collections::BTreeMap, time::Duration};

use hearth_storage::schema::{DeviceKeys, DeviceListStreamIds};
use ruma::{
    OwnedDeviceId, OwnedServerName, OwnedUserId, UInt, UserId,
    api::{
        OutgoingRequest,
        auth_scheme::AuthScheme,
        federation::{
            authentication::XMatrixSigningInput,
            device::get_devices,
            keys::{claim_keys, get_keys},
        },
        path_builder::PathBuilder,
    },
    serde::Raw,
};
use serde_json::{Map, Value, json};
use tokio::task::JoinSet;

use crate::{Error, Homeserver, Result};

/// How long a client's key request waits for other servers unless it says otherwise, and the
/// most it may ask for.
pub const DEFAULT_REMOTE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REMOTE_TIMEOUT: Duration = Duration::from_secs(30);

/// A JSON field of core's answers as the ruma type of a response field.
fn typed<T: serde::de::DeserializeOwned>(value: &Value, name: &str) -> Result<T> {
    serde_json::from_value(value.get(name).cloned().unwrap_or_else(|| Value::Object(Map::new())))
        .map_err(Error::internal)
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Value> {
    serde_json::to_value(value).map_err(Error::internal)
}

/// Splits the users of a request by server: this server's, and each other server's.
fn by_server<T>(
    local: &dyn Fn(&UserId) -> bool,
    wanted: BTreeMap<OwnedUserId, T>,
) -> (BTreeMap<OwnedUserId, T>, BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, T>>) {
    let mut mine = BTreeMap::new();
    let mut others: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, T>> = BTreeMap::new();
    for (user, value) in wanted {
        if local(&user) {
            mine.insert(user, value);
        } else {
            others.entry(user.server_name().to_owned()).or_default().insert(user, value);
        }
    }
    (mine, others)
}

impl Homeserver {
    /// `GET /_matrix/federation/v1/user/devices/{userId}`: a local user's devices that have
    /// keys, and their public cross-signing keys.
    pub fn user_devices_for_server(&self, user: &UserId) -> Result<get_devices::v1::Response> {
        if !self.users.is_local(user) {
            return Err(Error::not_found(format!("{user} is not a user of this server")));
        }
        let stream_id = self.db.get::<DeviceListStreamIds>(&user.to_owned())?.unwrap_or(0);
        let mut response = get_devices::v1::Response::new(user.to_owned(), UInt::new_saturating(stream_id));
        for device in self.users.devices(user)? {
            let Some(keys) = self.db.get::<DeviceKeys>(&(user.to_owned(), device.device_id.clone()))? else {
                continue;
            };
            let keys = Raw::from_json(serde_json::value::to_raw_value(&keys).map_err(Error::internal)?);
            let mut entry = get_devices::v1::UserDevice::new(device.device_id, keys);
            entry.device_display_name = device.display_name;
            response.devices.push(entry);
        }
        let answer = self.query_keys(None, &BTreeMap::from([(user.to_owned(), Vec::new())]))?;
        let user_key = user.as_str();
        for (name, slot) in
            [("master_keys", &mut response.master_key), ("self_signing_keys", &mut response.self_signing_key)]
        {
            if let Some(key) = answer[name].get(user_key) {
                *slot = Some(serde_json::from_value(key.clone()).map_err(Error::internal)?);
            }
        }
        Ok(response)
    }

    /// `POST /_matrix/federation/v1/user/keys/query`: keys of the local users asked for.
    pub fn query_keys_for_server(
        &self,
        wanted: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> Result<get_keys::v1::Response> {
        let (local, _) = by_server(&|u| self.users.is_local(u), wanted);
        let answer = self.query_keys(None, &local)?;
        let mut response = get_keys::v1::Response::new(typed(&answer, "device_keys")?);
        response.master_keys = typed(&answer, "master_keys")?;
        response.self_signing_keys = typed(&answer, "self_signing_keys")?;
        Ok(response)
    }

    /// `POST /_matrix/federation/v1/user/keys/claim`: one-time keys of local users' devices.
    pub async fn claim_keys_for_server(
        &self,
        wanted: claim_keys::v1::OneTimeKeyClaims,
    ) -> Result<claim_keys::v1::Response> {
        let wanted = wanted
            .into_iter()
            .map(|(user, devices)| (user, devices.into_iter().map(|(d, alg)| (d, alg.to_string())).collect()))
            .collect();
        let answer = self.claim_keys(wanted).await?;
        Ok(claim_keys::v1::Response::new(typed(&answer, "one_time_keys")?))
    }

    /// Sends each server its request, all at once, and merges each answer's `fields` (about
    /// that server's users only) into `out`; a server that fails or does not answer within
    /// `timeout` is listed in `out["failures"]`.
    async fn ask_each_server<R>(
        &self,
        requests: Vec<(OwnedServerName, R)>,
        timeout: Option<Duration>,
        fields: fn(R::IncomingResponse) -> Result<Value>,
        out: &mut Value,
    ) where
        R: OutgoingRequest + Send + 'static,
        for<'a> R::Authentication: AuthScheme<Input<'a> = XMatrixSigningInput<'a>>,
        for<'a> R::PathBuilder: PathBuilder<Input<'a> = ()>,
        R::IncomingResponse: Send,
    {
        let timeout = timeout.unwrap_or(DEFAULT_REMOTE_TIMEOUT).min(MAX_REMOTE_TIMEOUT);
        let mut tasks = JoinSet::new();
        for (server, request) in requests {
            let hs = self.clone();
            tasks.spawn(async move {
                let answer = tokio::time::timeout(timeout, hs.federation_request(&server, request)).await;
                (server, answer)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let Ok((server, answer)) = joined else { continue };
            let failure = match answer.map(|a| a.and_then(fields)) {
                Ok(Ok(answer)) => {
                    for (name, entries) in answer.as_object().into_iter().flatten() {
                        for (user, value) in entries.as_object().into_iter().flatten() {
                            if UserId::parse(user.as_str()).is_ok_and(|u| u.server_name() == server) {
                                out[name][user] = value.clone();
                            }
                        }
                    }
                    continue;
                }
                Ok(Err(error)) => {
                    tracing::info!(%server, %error, "a server did not answer a key request");
                    json!({"status": 503, "message": error.to_string()})
                }
                Err(_) => json!({"status": 504, "message": format!("{server} did not answer in time")}),
            };
            out["failures"][server.as_str()] = failure;
        }
    }

    /// A client's `/keys/query`: local users answered here, other servers' users by their
    /// servers, all at once and within `timeout`.
    pub async fn query_keys_everywhere(
        &self,
        requester: &UserId,
        wanted: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
        timeout: Option<Duration>,
    ) -> Result<Value> {
        let (local, remote) = by_server(&|u| self.users.is_local(u), wanted);
        let mut out = self.query_keys(Some(requester), &local)?;
        let requests = remote.into_iter().map(|(s, users)| (s, get_keys::v1::Request::new(users))).collect();
        let fields = |r: get_keys::v1::Response| {
            Ok(json!({
                "device_keys": to_json(&r.device_keys)?,
                "master_keys": to_json(&r.master_keys)?,
                "self_signing_keys": to_json(&r.self_signing_keys)?,
            }))
        };
        self.ask_each_server(requests, timeout, fields, &mut out).await;
        Ok(out)
    }

    /// A client's `/keys/claim`: like [`Self::query_keys_everywhere`], for one-time keys.
    pub async fn claim_keys_everywhere(
        &self,
        wanted: claim_keys::v1::OneTimeKeyClaims,
        timeout: Option<Duration>,
    ) -> Result<Value> {
        let (local, remote) = by_server(&|u| self.users.is_local(u), wanted);
        let local = local
            .into_iter()
            .map(|(user, devices)| (user, devices.into_iter().map(|(d, alg)| (d, alg.to_string())).collect()))
            .collect();
        let mut out = self.claim_keys(local).await?;
        let requests =
            remote.into_iter().map(|(s, claims)| (s, claim_keys::v1::Request::new(claims))).collect();
        let fields = |r: claim_keys::v1::Response| Ok(json!({"one_time_keys": to_json(&r.one_time_keys)?}));
        self.ask_each_server(requests, timeout, fields, &mut out).await;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use ruma::{OneTimeKeyAlgorithm, device_id, user_id};
    use serde_json::json;

    use crate::{ErrorCode, Homeserver, config::HomeserverConfig, keys::e2ee::KeyUpload, users::NewAccount};

    async fn alice_with_keys(hs: &Homeserver) -> ruma::OwnedUserId {
        let new = NewAccount {
            localpart: Some("alice".into()),
            device_id: Some("DEV1".into()),
            device_display_name: Some("phone".into()),
            ..Default::default()
        };
        let alice = hs.users.register(new).await.unwrap().user_id;
        let upload = KeyUpload {
            device_keys: Some(json!({
                "user_id": alice, "device_id": "DEV1", "algorithms": ["m.megolm.v1.aes-sha2"],
                "keys": {"ed25519:DEV1": "ed"}, "signatures": {},
            })),
            one_time_keys: [("signed_curve25519:k1".to_owned(), json!({"key": "one"}))].into(),
            ..Default::default()
        };
        hs.upload_keys(&alice, device_id!("DEV1"), upload).await.unwrap();
        let key = |usage: &str| json!({"user_id": alice, "usage": [usage], "keys": {format!("ed25519:{usage}"): usage}});
        let keys = vec![
            ("master", key("master")),
            ("self_signing", key("self_signing")),
            ("user_signing", key("user_signing")),
        ];
        hs.upload_signing_keys(&alice, keys).await.unwrap();
        alice
    }

    #[tokio::test]
    async fn other_servers_get_local_devices_and_public_keys_only() {
        let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
        let alice = alice_with_keys(&hs).await;
        let remote = user_id!("@bob:elsewhere.test").to_owned();

        let devices = hs.user_devices_for_server(&alice).unwrap();
        assert_eq!(devices.devices.len(), 1);
        assert_eq!(devices.devices[0].device_display_name.as_deref(), Some("phone"));
        assert!(devices.devices[0].keys.json().get().contains("ed25519:DEV1"));
        assert!(devices.master_key.is_some() && devices.self_signing_key.is_some());
        let not_ours = hs.user_devices_for_server(&remote).unwrap_err();
        assert_eq!(not_ours.code(), ErrorCode::NotFound);

        let wanted = [(alice.clone(), vec![]), (remote.clone(), vec![])].into();
        let query = hs.query_keys_for_server(wanted).unwrap();
        assert!(query.device_keys[&alice].contains_key(device_id!("DEV1")));
        assert!(query.master_keys.contains_key(&alice));
        assert!(!query.device_keys.contains_key(&remote), "a server answers for its own users only");
        let serialized = serde_json::to_string(&query.device_keys).unwrap();
        assert!(!serialized.contains("user_signing"), "user-signing keys never leave: {serialized}");

        let claims = [
            (alice.clone(), [(device_id!("DEV1").to_owned(), OneTimeKeyAlgorithm::SignedCurve25519)].into()),
            (remote.clone(), [(device_id!("X").to_owned(), OneTimeKeyAlgorithm::SignedCurve25519)].into()),
        ]
        .into();
        let claimed = hs.claim_keys_for_server(claims).await.unwrap();
        assert_eq!(claimed.one_time_keys[&alice][device_id!("DEV1")].len(), 1);
        assert!(!claimed.one_time_keys.contains_key(&remote));
    }

    #[tokio::test]
    async fn inbound_edus_speak_only_for_the_origins_users_and_to_device_arrives_once() {
        let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
        let alice = alice_with_keys(&hs).await;
        let origin = ruma::server_name!("other.test");
        let edu = |sender: &str, message_id: &str, text: &str| {
            let edu = json!({"edu_type": "m.direct_to_device", "content": {
                "sender": sender, "type": "m.test", "message_id": message_id,
                "messages": {alice.as_str(): {"DEV1": {"text": text}}},
            }});
            ruma::serde::Raw::from_json(serde_json::value::to_raw_value(&edu).unwrap())
        };
        let txn = |id: &'static str, edus| hs.receive_transaction(origin, id, Vec::new(), edus);
        txn("t1", vec![edu("@eve:other.test", "m1", "hello")]).await.unwrap();
        // The same message in a retried EDU, and one claiming a user of a third server.
        txn("t2", vec![edu("@eve:other.test", "m1", "hello"), edu("@mallory:third.test", "m2", "forged")])
            .await
            .unwrap();
        let now = hs.streams.published();
        let (inbox, _) = hs.to_device_messages(&alice, device_id!("DEV1"), None, now).unwrap();
        assert_eq!(
            inbox,
            vec![json!({"sender": "@eve:other.test", "type": "m.test", "content": {"text": "hello"}})]
        );
    }
}
