//! The notary key endpoints: other servers' key responses as we verified them, countersigned
//! by us, for servers that cannot (or would rather not) ask the key's owner directly.

use hearth_core::Homeserver;
use ruma::{
    MilliSecondsSinceUnixEpoch,
    api::federation::discovery::{get_remote_server_keys, get_remote_server_keys_batch},
    serde::Raw,
};

use crate::server::{Fed, FedResult};

fn ms(ts: MilliSecondsSinceUnixEpoch) -> u64 {
    u64::from(ts.get())
}

/// `GET /_matrix/key/v2/query/{serverName}`
pub async fn get_remote_server_keys(
    hs: Homeserver,
    req: Fed<get_remote_server_keys::v2::Request>,
) -> FedResult<get_remote_server_keys::v2::Response> {
    let b = &req.body;
    let keys = hs.notary_keys(&b.server_name, ms(b.minimum_valid_until_ts)).await?;
    Ok(get_remote_server_keys::v2::Response::new(keys.into_iter().map(Raw::cast_unchecked).collect()))
}

/// `POST /_matrix/key/v2/query`
pub async fn get_remote_server_keys_batch(
    hs: Homeserver,
    req: Fed<get_remote_server_keys_batch::v2::Request>,
) -> FedResult<get_remote_server_keys_batch::v2::Response> {
    let mut all = Vec::new();
    for (server, criteria) in &req.body.server_keys {
        // One answer per server covers every key ID asked for: the response lists them all.
        let min = criteria.values().filter_map(|c| c.minimum_valid_until_ts).map(ms).max().unwrap_or(0);
        all.extend(hs.notary_keys(server, min).await?.into_iter().map(Raw::cast_unchecked));
    }
    Ok(get_remote_server_keys_batch::v2::Response::new(all))
}
