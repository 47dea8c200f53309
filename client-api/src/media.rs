//! The media repository: uploads (streamed to disk), downloads and thumbnails (streamed from
//! disk, with headers that keep browsers from running what they download), the upload limit
//! and URL previews.

// The unauthenticated paths are deprecated in the spec and still served, behind a config switch.
#![allow(deprecated)]

use axum::{
    body::{Body, Bytes},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use futures_util::{Stream, StreamExt};
use hearth_core::{
    Error, ErrorCode, Homeserver,
    config::ThumbnailMethod,
    media::{Served, store::PendingFile},
    ratelimit::Action,
};
use ruma::{
    MilliSecondsSinceUnixEpoch, ServerName, UInt,
    api::client::{
        authenticated_media as am,
        media::{
            create_content, create_content_async, create_mxc_uri, get_content, get_content_as_filename,
            get_content_thumbnail, get_media_config, get_media_preview,
        },
    },
    http_headers::{ContentDisposition, ContentDispositionType},
    media::Method,
};
use tokio::io::AsyncReadExt;

use crate::{
    extract::{Ruma, Upload},
    response::{ApiResult, Json, RumaResponse},
};

/// After refusing an oversized upload, this much more of its body is read and discarded so
/// that the client, still sending, gets to read the 413 rather than a reset connection.
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

/// Sent with every download: a downloaded HTML or SVG file opened in a browser tab must not
/// run scripts with the homeserver's origin.
const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
     style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

/// Types a browser may show in place (`Content-Disposition: inline`); everything else is an
/// attachment. These cannot run script.
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

fn is_inline(content_type: &str) -> bool {
    let essence = hearth_core::media::thumbnail::essence(content_type);
    INLINE_TYPES.contains(&essence.as_str())
}

/// Reads and discards what is left of a refused body, up to [`DRAIN_LIMIT`].
async fn drain<S, E>(data: &mut S)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let mut drained = 0u64;
    while drained < DRAIN_LIMIT {
        match data.next().await {
            Some(Ok(chunk)) => drained = drained.saturating_add(chunk.len() as u64),
            _ => return,
        }
    }
}

/// Streams an upload's body into a pending file, refusing it as soon as it is known to exceed
/// `media.max_upload_size`. On any error the pending file is dropped, which deletes it.
async fn receive(hs: &Homeserver, body: Body, declared: Option<u64>) -> Result<PendingFile, Error> {
    let mut data = body.into_data_stream();
    let mut file = hs.media.begin_upload().await?;
    if let Some(declared) = declared
        && declared > file.max_size()
    {
        let max = file.max_size();
        drop(file);
        drain(&mut data).await;
        return Err(Error::too_large(format!("The file is larger than the limit of {max} bytes")));
    }
    while let Some(chunk) = data.next().await {
        let chunk = chunk.map_err(|e| Error::bad_request(format!("The upload was interrupted: {e}")))?;
        if let Err(error) = file.write(&chunk).await {
            drop(file);
            if error.code() == ErrorCode::TooLarge {
                drain(&mut data).await;
            }
            return Err(error);
        }
    }
    Ok(file)
}

/// `POST /_matrix/media/v3/upload`
pub async fn create_content(hs: Homeserver, req: Upload<create_content::v3::Request>) -> ApiResult<Response> {
    hs.rate_limits.check_user(Action::MediaUpload, &req.session).await?;
    let file = receive(&hs, req.stream, req.content_length).await?;
    let b = &req.body;
    let uri = hs
        .media
        .create_content(&req.session.user_id, file, b.content_type.as_deref(), b.filename.as_deref())
        .await?;
    Ok(RumaResponse(create_content::v3::Response::new(uri)).into_response())
}

/// `POST /_matrix/media/v1/create`
pub async fn create_mxc_uri(
    hs: Homeserver,
    req: Ruma<create_mxc_uri::v1::Request>,
) -> ApiResult<create_mxc_uri::v1::Response> {
    let session = req.session()?;
    hs.rate_limits.check_user(Action::MediaUpload, session).await?;
    let (uri, expires) = hs.media.reserve(&session.user_id).await?;
    let mut response = create_mxc_uri::v1::Response::new(uri);
    response.unused_expires_at = Some(MilliSecondsSinceUnixEpoch(UInt::new_saturating(expires)));
    Ok(response)
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`
pub async fn create_content_async(
    hs: Homeserver,
    req: Upload<create_content_async::v3::Request>,
) -> ApiResult<Response> {
    let b = &req.body;
    let user = &req.session.user_id;
    // Refused before a byte of the body is read.
    hs.media.check_reservation(user, &b.server_name, &b.media_id)?;
    let file = receive(&hs, req.stream, req.content_length).await?;
    hs.media
        .upload_reserved(
            user,
            &b.server_name,
            &b.media_id,
            file,
            b.content_type.as_deref(),
            b.filename.as_deref(),
        )
        .await?;
    // ruma's response type for this endpoint has no constructor; its body is `{}`.
    Ok(RumaResponse(Json(serde_json::Map::new())).into_response())
}

/// A file as a body, read in chunks as the client takes them.
fn file_stream(file: tokio::fs::File) -> impl Stream<Item = std::io::Result<Bytes>> {
    futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = bytes::BytesMut::with_capacity(64 * 1024);
        match file.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.freeze()), Some(file))),
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// The download response: the stored type, inline only for types that cannot run script, a
/// sandboxing policy, and a body streamed from disk.
fn serve(served: Served, filename: Option<String>) -> ApiResult<Response> {
    let disposition_type = if is_inline(&served.content_type) {
        ContentDispositionType::Inline
    } else {
        ContentDispositionType::Attachment
    };
    let disposition = ContentDisposition::new(disposition_type).with_filename(filename.or(served.filename));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, served.content_type)
        .header(header::CONTENT_LENGTH, served.size)
        .header(header::CONTENT_DISPOSITION, disposition.to_string())
        .header(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header("cross-origin-resource-policy", "cross-origin")
        // Content behind a media ID never changes.
        .header(header::CACHE_CONTROL, "private, max-age=31536000, immutable")
        .body(Body::from_stream(file_stream(served.file)))
        .map_err(|e| Error::internal(format!("building a download response: {e}")).into())
}

/// Both thumbnail endpoints, from their query parameters.
async fn thumbnail(
    hs: &Homeserver,
    server: &ServerName,
    media_id: &str,
    (width, height): (UInt, UInt),
    method: Option<&Method>,
    animated: Option<bool>,
    timeout: std::time::Duration,
) -> ApiResult<Response> {
    let dimension = |value: UInt| u32::try_from(u64::from(value)).unwrap_or(u32::MAX);
    // The spec's default method is scale.
    let method =
        if matches!(method, Some(Method::Crop)) { ThumbnailMethod::Crop } else { ThumbnailMethod::Scale };
    let size = (dimension(width), dimension(height));
    serve(hs.media.thumbnail(server, media_id, size, method, animated.unwrap_or(false), timeout).await?, None)
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`
pub async fn get_content(hs: Homeserver, req: Ruma<am::get_content::v1::Request>) -> ApiResult<Response> {
    let b = req.body;
    serve(hs.media.content(&b.server_name, &b.media_id, b.timeout_ms).await?, None)
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`
pub async fn get_content_as_filename(
    hs: Homeserver,
    req: Ruma<am::get_content_as_filename::v1::Request>,
) -> ApiResult<Response> {
    let b = req.body;
    serve(hs.media.content(&b.server_name, &b.media_id, b.timeout_ms).await?, Some(b.filename))
}

/// `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
pub async fn get_content_thumbnail(
    hs: Homeserver,
    req: Ruma<am::get_content_thumbnail::v1::Request>,
) -> ApiResult<Response> {
    let b = req.body;
    thumbnail(
        &hs,
        &b.server_name,
        &b.media_id,
        (b.width, b.height),
        b.method.as_ref(),
        b.animated,
        b.timeout_ms,
    )
    .await
}

/// `GET /_matrix/client/v1/media/config`
pub async fn get_media_config(
    hs: Homeserver,
    _req: Ruma<am::get_media_config::v1::Request>,
) -> ApiResult<am::get_media_config::v1::Response> {
    Ok(am::get_media_config::v1::Response::new(UInt::new_saturating(hs.media.config().max_upload_size)))
}

/// `GET /_matrix/media/v3/config` (deprecated, but authenticated like its successor)
pub async fn get_media_config_legacy(
    hs: Homeserver,
    _req: Ruma<get_media_config::v3::Request>,
) -> ApiResult<get_media_config::v3::Response> {
    Ok(get_media_config::v3::Response::new(UInt::new_saturating(hs.media.config().max_upload_size)))
}

/// `GET /_matrix/client/v1/media/preview_url`
pub async fn get_media_preview(
    hs: Homeserver,
    req: Ruma<am::get_media_preview::v1::Request>,
) -> ApiResult<am::get_media_preview::v1::Response> {
    let preview = hs.media.preview_url(&req.session()?.user_id, &req.body.url).await?;
    Ok(am::get_media_preview::v1::Response::from_serialize(&preview).map_err(Error::internal)?)
}

/// `GET /_matrix/media/v3/preview_url` (deprecated, but authenticated like its successor)
pub async fn get_media_preview_legacy(
    hs: Homeserver,
    req: Ruma<get_media_preview::v3::Request>,
) -> ApiResult<get_media_preview::v3::Response> {
    let preview = hs.media.preview_url(&req.session()?.user_id, &req.body.url).await?;
    Ok(get_media_preview::v3::Response::from_serialize(&preview).map_err(Error::internal)?)
}

/// The deprecated unauthenticated downloads serve media only when the config allows them, and
/// never fetch remote media for a caller who said not to.
async fn legacy_allowed(
    hs: &Homeserver,
    server: &ServerName,
    media_id: &str,
    allow_remote: bool,
    timeout: std::time::Duration,
) -> Result<(), Error> {
    if !hs.media.config().legacy_unauthenticated_download {
        // As Synapse: local media still being uploaded is waited for (and answered 504
        // M_NOT_YET_UPLOADED if it does not come), so that a client learns the same about an
        // asynchronous upload on either path; only what exists is then withheld.
        if server == hs.server_name() {
            hs.media.await_local_upload(media_id, timeout).await?;
        }
        return Err(Error::not_found(
            "Media is served only through the authenticated /_matrix/client/v1/media endpoints",
        ));
    }
    if !allow_remote && server != hs.server_name() {
        return Err(Error::not_found("Remote media was not requested"));
    }
    Ok(())
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}`
pub async fn get_content_legacy(hs: Homeserver, req: Ruma<get_content::v3::Request>) -> ApiResult<Response> {
    let b = req.body;
    legacy_allowed(&hs, &b.server_name, &b.media_id, b.allow_remote, b.timeout_ms).await?;
    serve(hs.media.content(&b.server_name, &b.media_id, b.timeout_ms).await?, None)
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}`
pub async fn get_content_as_filename_legacy(
    hs: Homeserver,
    req: Ruma<get_content_as_filename::v3::Request>,
) -> ApiResult<Response> {
    let b = req.body;
    legacy_allowed(&hs, &b.server_name, &b.media_id, b.allow_remote, b.timeout_ms).await?;
    serve(hs.media.content(&b.server_name, &b.media_id, b.timeout_ms).await?, Some(b.filename))
}

/// `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}`
pub async fn get_content_thumbnail_legacy(
    hs: Homeserver,
    req: Ruma<get_content_thumbnail::v3::Request>,
) -> ApiResult<Response> {
    let b = req.body;
    legacy_allowed(&hs, &b.server_name, &b.media_id, b.allow_remote, b.timeout_ms).await?;
    thumbnail(
        &hs,
        &b.server_name,
        &b.media_id,
        (b.width, b.height),
        b.method.as_ref(),
        b.animated,
        b.timeout_ms,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_types_are_inline() {
        assert!(is_inline("image/png"));
        assert!(is_inline("text/plain; charset=utf-8"));
        assert!(!is_inline("text/html"));
        assert!(!is_inline("image/svg+xml"));
        assert!(!is_inline("application/octet-stream"));
    }
}
