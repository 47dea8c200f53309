//! The media service on an in-memory database and a temporary media directory.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::{ServerName, UserId, owned_server_name, user_id};
use tokio::io::AsyncReadExt;

use super::*;
use crate::{config::HomeserverConfig, ephemeral::LocalEphemeral};

/// A media service whose directory is removed when the test is done with it.
struct TestMedia(Media);

impl std::ops::Deref for TestMedia {
    type Target = Media;

    fn deref(&self) -> &Media {
        &self.0
    }
}

impl Drop for TestMedia {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.store.root());
    }
}

fn media_with(backends: MediaBackends, tweak: impl FnOnce(&mut MediaConfig)) -> TestMedia {
    let mut config = HomeserverConfig::for_tests().media;
    tweak(&mut config);
    TestMedia(
        Media::new(
            Db::in_memory(),
            owned_server_name!("localhost"),
            config,
            Arc::new(LocalEphemeral::new()),
            backends,
        )
        .unwrap(),
    )
}

fn media() -> TestMedia {
    media_with(MediaBackends::default(), |_| {})
}

fn alice() -> &'static UserId {
    user_id!("@alice:localhost")
}

async fn upload(media: &Media, bytes: &[u8], content_type: &str) -> OwnedMxcUri {
    let mut file = media.begin_upload().await.unwrap();
    file.write(bytes).await.unwrap();
    media.create_content(alice(), file, Some(content_type), Some("f.bin")).await.unwrap()
}

async fn read_all(mut served: Served) -> Vec<u8> {
    let mut out = Vec::new();
    served.file.read_to_end(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn upload_then_download() {
    let media = media();
    let uri = upload(&media, b"\x00\x01binary", "application/x-test").await;
    let (server, id) = uri.parts().unwrap();
    let served = media.content(server, id, Duration::ZERO).await.unwrap();
    assert_eq!((served.size, served.content_type.as_str()), (8, "application/x-test"));
    assert_eq!(served.filename.as_deref(), Some("f.bin"));
    assert_eq!(read_all(served).await, b"\x00\x01binary");
    let err = media.content(server, "nope", Duration::ZERO).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
}

#[tokio::test]
async fn bad_headers_are_not_stored() {
    let media = media();
    let mut file = media.begin_upload().await.unwrap();
    file.write(b"x").await.unwrap();
    let uri =
        media.create_content(alice(), file, Some("text/plain\r\nX-Evil: 1"), Some("a\nb")).await.unwrap();
    let (server, id) = uri.parts().unwrap();
    let served = media.content(server, id, Duration::ZERO).await.unwrap();
    assert_eq!(served.content_type, "application/octet-stream");
    assert_eq!(served.filename, None);
}

#[tokio::test]
async fn asynchronous_upload() {
    let media = Arc::new(media());
    let (uri, _) = media.reserve(alice()).await.unwrap();
    let (server, id) = uri.parts().unwrap();
    let (server, id) = (server.to_owned(), id.to_owned());

    let err = media.content(&server, &id, Duration::ZERO).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotYetUploaded);
    let bob = user_id!("@bob:localhost");
    assert_eq!(media.check_reservation(bob, &server, &id).unwrap_err().code(), ErrorCode::Forbidden);

    // A download waiting for the content gets it when it arrives.
    let waiting = {
        let media = media.clone();
        let (server, id) = (server.clone(), id.clone());
        tokio::spawn(async move {
            read_all(media.content(&server, &id, Duration::from_secs(60)).await.unwrap()).await
        })
    };
    let mut file = media.begin_upload().await.unwrap();
    file.write(b"later").await.unwrap();
    media.upload_reserved(alice(), &server, &id, file, Some("text/plain"), None).await.unwrap();
    assert_eq!(waiting.await.unwrap(), b"later");

    let file = media.begin_upload().await.unwrap();
    let err = media.upload_reserved(alice(), &server, &id, file, None, None).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::CannotOverwriteMedia);
}

#[tokio::test]
async fn pending_uploads_are_limited() {
    let media = media_with(MediaBackends::default(), |c| c.max_pending_uploads = 2);
    media.reserve(alice()).await.unwrap();
    media.reserve(alice()).await.unwrap();
    assert_eq!(media.reserve(alice()).await.unwrap_err().code(), ErrorCode::LimitExceeded);
    media.reserve(user_id!("@bob:localhost")).await.unwrap();
}

#[tokio::test]
async fn remote_media_is_not_found_without_federation() {
    let media = media();
    let err =
        media.content(&ServerName::parse("other.example").unwrap(), "abc", Duration::ZERO).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
}

/// Stands in for federation: serves fixed bytes for one server, counting requests.
struct OneRemote(Mutex<usize>);

impl RemoteMediaFetcher for OneRemote {
    fn fetch<'a>(
        &'a self,
        _server: &'a ServerName,
        _media_id: &'a str,
        _timeout: Duration,
        into: &'a mut PendingFile,
    ) -> BoxFuture<'a, Result<RemoteMediaInfo>> {
        *self.0.lock().unwrap() += 1;
        Box::pin(async move {
            into.write(b"remote bytes").await?;
            Ok(RemoteMediaInfo { content_type: Some("text/plain".to_owned()), filename: None })
        })
    }
}

#[tokio::test]
async fn remote_media_is_fetched_once_and_cached() {
    let remote = Arc::new(OneRemote(Mutex::new(0)));
    let media = media_with(MediaBackends { remote: remote.clone(), urls: Arc::new(NoUrlFetcher) }, |_| {});
    let server = &ServerName::parse("other.example").unwrap();
    for _ in 0..2 {
        let served = media.content(server, "abc", Duration::ZERO).await.unwrap();
        assert_eq!(read_all(served).await, b"remote bytes");
    }
    assert_eq!(*remote.0.lock().unwrap(), 1);
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbaImage::from_pixel(w, h, image::Rgba([200, 10, 10, 255]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[tokio::test]
async fn thumbnails_are_made_once() {
    let media = media();
    let uri = upload(&media, &png(400, 300), "image/png").await;
    let (server, id) = uri.parts().unwrap();
    let first =
        media.thumbnail(server, id, (64, 64), ThumbnailMethod::Crop, false, Duration::ZERO).await.unwrap();
    assert_eq!(first.content_type, "image/png");
    let bytes = read_all(first).await;
    assert_eq!(thumbnail::dimensions(&bytes).unwrap(), (96, 96));
    let again =
        media.thumbnail(server, id, (96, 96), ThumbnailMethod::Crop, false, Duration::ZERO).await.unwrap();
    assert_eq!(read_all(again).await, bytes);
    assert_eq!(media.db.scan_prefix_all::<MediaThumbnails>().unwrap().count(), 1);

    let text = upload(&media, b"hello", "text/plain").await;
    let (server, id) = text.parts().unwrap();
    let err = media
        .thumbnail(server, id, (32, 32), ThumbnailMethod::Crop, false, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::BadRequest);
}

/// Stands in for the web: fixed responses by URL.
struct Pages(HashMap<String, (String, Vec<u8>)>);

impl UrlFetcher for Pages {
    fn fetch<'a>(
        &'a self,
        url: &'a url::Url,
        max_bytes: u64,
        _timeout: Duration,
    ) -> BoxFuture<'a, std::result::Result<FetchedUrl, FetchError>> {
        Box::pin(async move {
            let (content_type, body) =
                self.0.get(url.as_str()).ok_or(FetchError::Failed("404".to_owned()))?;
            if body.len() as u64 > max_bytes {
                return Err(FetchError::TooLarge);
            }
            Ok(FetchedUrl { url: url.clone(), content_type: Some(content_type.clone()), body: body.clone() })
        })
    }
}

#[tokio::test]
async fn previews_read_open_graph_and_store_the_image() {
    let html = r#"<html><head><meta property="og:title" content="Hello"><meta property="og:image" content="/i.png"></head></html>"#;
    let pages = Pages(HashMap::from([
        (
            "https://example.com/page".to_owned(),
            ("text/html; charset=utf-8".to_owned(), html.as_bytes().to_vec()),
        ),
        ("https://example.com/i.png".to_owned(), ("image/png".to_owned(), png(20, 10))),
        ("https://example.com/big".to_owned(), ("text/html".to_owned(), vec![b' '; 2000])),
    ]));
    let media = media_with(MediaBackends { remote: Arc::new(NoFederation), urls: Arc::new(pages) }, |c| {
        c.url_preview_max_bytes = 1000;
    });
    let og = media.preview_url(alice(), "https://example.com/page").await.unwrap();
    assert_eq!(og["og:title"], "Hello");
    assert_eq!((og["og:image:width"].as_u64(), og["og:image:height"].as_u64()), (Some(20), Some(10)));
    let image: OwnedMxcUri = og["og:image"].as_str().unwrap().into();
    let (server, id) = image.parts().unwrap();
    assert_eq!(read_all(media.content(server, id, Duration::ZERO).await.unwrap()).await, png(20, 10));

    let err = media.preview_url(alice(), "https://example.com/big").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Upstream);
    let err = media.preview_url(alice(), "ftp://example.com/").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidParam);
}

#[tokio::test]
async fn previews_of_denied_addresses_and_disabled_previews_are_refused() {
    let media = media();
    for url in ["http://127.0.0.1:8008/", "http://[::1]/", "http://10.0.0.1/", "http://[::ffff:192.168.0.1]/"]
    {
        let err = media.preview_url(alice(), url).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Forbidden, "{url}");
    }
    let media = media_with(MediaBackends::default(), |c| c.url_preview_enabled = false);
    let err = media.preview_url(alice(), "https://example.com/").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Forbidden);
}
