//! End-to-end encryption endpoints: keys and to-device messages.

use std::collections::BTreeMap;

use hearth_core::{Error, Homeserver, keys::e2ee::KeyUpload};
use ruma::{
    OwnedUserId, UInt,
    api::client::{
        keys::{claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys},
        to_device::send_event_to_device,
    },
};
use serde_json::Value;

use crate::{extract::Ruma, response::ApiResult, room::json_of};

/// Moves a part of a JSON value into the ruma type of a response field.
fn field<T: serde::de::DeserializeOwned>(value: &Value, name: &str) -> Result<T, Error> {
    serde_json::from_value(value.get(name).cloned().unwrap_or_else(|| Value::Object(Default::default())))
        .map_err(Error::internal)
}

/// `POST /_matrix/client/v3/keys/upload`
pub async fn upload_keys(
    hs: Homeserver,
    req: Ruma<upload_keys::v3::Request>,
) -> ApiResult<upload_keys::v3::Response> {
    let session = req.session()?.clone();
    let b = req.body;
    let mut upload =
        KeyUpload { device_keys: b.device_keys.as_ref().map(json_of).transpose()?, ..Default::default() };
    for (id, key) in &b.one_time_keys {
        upload.one_time_keys.insert(id.to_string(), json_of(key)?);
    }
    for (id, key) in &b.fallback_keys {
        upload.fallback_keys.insert(id.to_string(), json_of(key)?);
    }
    let counts = hs.upload_keys(&session.user_id, session.device()?, upload).await?;
    let counts = counts.into_iter().map(|(alg, n)| (alg.as_str().into(), UInt::new_saturating(n))).collect();
    Ok(upload_keys::v3::Response::new(counts))
}

/// `POST /_matrix/client/v3/keys/query`
pub async fn get_keys(hs: Homeserver, req: Ruma<get_keys::v3::Request>) -> ApiResult<get_keys::v3::Response> {
    let session = req.session()?.clone();
    let b = req.body;
    let result = hs.query_keys_everywhere(&session.user_id, b.device_keys, b.timeout).await?;
    let mut response = get_keys::v3::Response::new();
    response.device_keys = field(&result, "device_keys")?;
    response.master_keys = field(&result, "master_keys")?;
    response.self_signing_keys = field(&result, "self_signing_keys")?;
    response.user_signing_keys = field(&result, "user_signing_keys")?;
    response.failures = field(&result, "failures")?;
    Ok(response)
}

/// `POST /_matrix/client/v3/keys/claim`
pub async fn claim_keys(
    hs: Homeserver,
    req: Ruma<claim_keys::v3::Request>,
) -> ApiResult<claim_keys::v3::Response> {
    req.session()?;
    let b = req.body;
    let result = hs.claim_keys_everywhere(b.one_time_keys, b.timeout).await?;
    let mut response = claim_keys::v3::Response::new(field(&result, "one_time_keys")?);
    response.failures = field(&result, "failures")?;
    Ok(response)
}

/// `GET /_matrix/client/v3/keys/changes`
pub async fn get_key_changes(
    hs: Homeserver,
    req: Ruma<get_key_changes::v3::Request>,
) -> ApiResult<get_key_changes::v3::Response> {
    let session = req.session()?;
    let parse = |t: &str| {
        hearth_core::rooms::view::parse_position_token(t)
            .ok_or_else(|| Error::invalid_param(format!("Unknown token {t}")))
    };
    let (from, to) = (parse(&req.body.from)?, parse(&req.body.to)?);
    let changed = hs.key_changes(&session.user_id, from, to)?;
    Ok(get_key_changes::v3::Response::new(changed, Vec::new()))
}

/// `POST /_matrix/client/v3/keys/device_signing/upload`
pub async fn upload_signing_keys(
    hs: Homeserver,
    req: Ruma<upload_signing_keys::v3::Request>,
) -> ApiResult<upload_signing_keys::v3::Response> {
    let session = req.session()?.clone();
    let b = req.body;
    let mut keys = Vec::new();
    for (usage, key) in [
        ("master", &b.master_key),
        ("self_signing", &b.self_signing_key),
        ("user_signing", &b.user_signing_key),
    ] {
        if let Some(key) = key {
            keys.push((usage, json_of(key)?));
        }
    }
    // Uploading the first master key needs no extra auth (the access token suffices, as the
    // spec allows since v1.11); replacing an existing one does.
    let replacing = match (
        hs.cross_signing_key(&session.user_id, "master")?,
        keys.iter().find(|(u, _)| *u == "master"),
    ) {
        (Some(existing), Some((_, new))) => &existing != new,
        _ => false,
    };
    if replacing {
        hs.uiaa
            .authenticate(
                b.auth.as_ref(),
                &hs.reauth_flows(&session.user_id)?,
                "device_signing_upload",
                Some(&session.user_id),
            )
            .await?;
    }
    hs.upload_signing_keys(&session.user_id, keys).await?;
    Ok(upload_signing_keys::v3::Response::new())
}

/// `POST /_matrix/client/v3/keys/signatures/upload`
pub async fn upload_signatures(
    hs: Homeserver,
    req: Ruma<upload_signatures::v3::Request>,
) -> ApiResult<upload_signatures::v3::Response> {
    let session = req.session()?.clone();
    let mut signed: BTreeMap<OwnedUserId, BTreeMap<String, Value>> = BTreeMap::new();
    for (user, keys) in &req.body.signed_keys {
        let entry = signed.entry(user.clone()).or_default();
        for (key_id, object) in keys {
            let value = serde_json::from_str(object.get()).map_err(|e| Error::bad_json(e.to_string()))?;
            entry.insert(key_id.to_owned(), value);
        }
    }
    let result = hs.upload_signatures(&session.user_id, signed).await?;
    let mut response = upload_signatures::v3::Response::new();
    response.failures = field(&result, "failures")?;
    Ok(response)
}

/// `PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}`
pub async fn send_event_to_device(
    hs: Homeserver,
    req: Ruma<send_event_to_device::v3::Request>,
) -> ApiResult<send_event_to_device::v3::Response> {
    let session = req.session()?.clone();
    let b = req.body;
    let mut messages = BTreeMap::new();
    for (user, devices) in &b.messages {
        let mut by_device = BTreeMap::new();
        for (device, content) in devices {
            by_device.insert(device.to_string(), json_of(content)?);
        }
        messages.insert(user.clone(), by_device);
    }
    hs.send_to_device(
        &session.user_id,
        &session.txn_device(),
        &b.event_type.to_string(),
        b.txn_id.as_str(),
        messages,
    )
    .await?;
    Ok(send_event_to_device::v3::Response::new())
}
