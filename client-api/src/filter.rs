//! Sync filters.

use hearth_core::{Error, Homeserver};
use ruma::api::client::filter::{create_filter, get_filter};

use crate::{extract::Ruma, response::ApiResult};

/// `POST /_matrix/client/v3/user/{userId}/filter`
pub async fn create_filter(
    hs: Homeserver,
    req: Ruma<create_filter::v3::Request>,
) -> ApiResult<create_filter::v3::Response> {
    if req.session()?.user_id != req.body.user_id {
        return Err(Error::forbidden("Cannot create filters for other users").into());
    }
    let filter = serde_json::to_value(&req.body.filter).map_err(Error::internal)?;
    let filter_id = hs.account_data.create_filter(&req.body.user_id, filter).await?;
    Ok(create_filter::v3::Response::new(filter_id))
}

/// `GET /_matrix/client/v3/user/{userId}/filter/{filterId}`
pub async fn get_filter(
    hs: Homeserver,
    req: Ruma<get_filter::v3::Request>,
) -> ApiResult<get_filter::v3::Response> {
    if req.session()?.user_id != req.body.user_id {
        return Err(Error::forbidden("Cannot read other users' filters").into());
    }
    let stored = hs
        .account_data
        .filter(&req.body.user_id, &req.body.filter_id)?
        .ok_or_else(|| Error::not_found("No such filter"))?;
    let filter = serde_json::from_value(stored).map_err(Error::internal)?;
    Ok(get_filter::v3::Response::new(filter))
}
