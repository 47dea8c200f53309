//! The media repository over HTTP: uploads (direct, asynchronous, large, oversized), downloads
//! and their safety headers, thumbnails, authentication, and URL previews of a page served by
//! the test itself.

// Test code: panics are the assertions.
#![allow(clippy::unwrap_used)]

use std::{
    io::Cursor,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use hearth_conformance_tests::{Client, TestServer, client::Reply};
use image::{DynamicImage, ImageBuffer, ImageFormat, Rgb};
use reqwest::Method;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

const UPLOAD: &str = "/_matrix/media/v3/upload";
const V1: &str = "/_matrix/client/v1/media";

/// Uploads bytes and returns the `mxc://` URI.
async fn upload(client: &Client, bytes: Vec<u8>, content_type: &str, filename: &str) -> String {
    let reply = upload_reply(client, bytes, content_type, filename).await;
    reply.assert_ok()["content_uri"].as_str().unwrap().to_owned()
}

async fn upload_reply(client: &Client, bytes: Vec<u8>, content_type: &str, filename: &str) -> Reply {
    let resp = client
        .http
        .post(format!("{}{UPLOAD}?filename={filename}", client.base_url))
        .bearer_auth(client.access_token.as_deref().unwrap())
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .await
        .unwrap();
    Client::reply(resp).await
}

/// `mxc://server/id` → `server/id`
fn mxc_path(uri: &str) -> &str {
    uri.strip_prefix("mxc://").unwrap()
}

/// A GET returning the raw response, authenticated when the client has a token.
async fn get_raw(client: &Client, path: &str) -> reqwest::Response {
    let mut req = client.http.get(format!("{}{path}", client.base_url));
    if let Some(token) = &client.access_token {
        req = req.bearer_auth(token);
    }
    req.send().await.unwrap()
}

async fn download(client: &Client, uri: &str) -> (reqwest::header::HeaderMap, Vec<u8>) {
    let resp = get_raw(client, &format!("{V1}/download/{}", mxc_path(uri))).await;
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    (headers, resp.bytes().await.unwrap().to_vec())
}

/// A picture with detail in it, so that smaller really means fewer bytes.
fn picture(format: ImageFormat, w: u32, h: u32) -> Vec<u8> {
    let img = ImageBuffer::from_fn(w, h, |x, y| {
        let v = (x * 7 + y * 13) ^ (x * y);
        Rgb([(v % 251) as u8, (x % 256) as u8, (y % 256) as u8])
    });
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img).write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(files_under(&path)) } else { out.push(path) }
    }
    out
}

fn media_dir(server: &TestServer) -> std::path::PathBuf {
    server.config.media_path()
}

#[tokio::test]
async fn a_member_downloads_what_another_uploaded_and_gets_a_thumbnail() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "uploader", "pw").await;
    let bob = Client::register(&server.base_url, "viewer", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("/_matrix/client/v3/join/{room}"), json!({})).await.assert_ok();

    let png = picture(ImageFormat::Png, 640, 480);
    let uri = upload(&alice, png.clone(), "image/png", "cat.png").await;
    let send = alice
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/img1"),
            json!({"msgtype": "m.image", "body": "cat.png", "url": uri}),
        )
        .await;
    let event_id = send.assert_ok()["event_id"].as_str().unwrap().to_owned();

    let event = bob.get(&format!("/_matrix/client/v3/rooms/{room}/event/{event_id}")).await;
    let url = event.assert_ok()["content"]["url"].as_str().unwrap().to_owned();
    let (headers, bytes) = download(&bob, &url).await;
    assert_eq!(bytes, png);
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(headers["content-disposition"], "inline; filename=cat.png");
    assert!(headers["content-security-policy"].to_str().unwrap().contains("sandbox"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cross-origin-resource-policy"], "cross-origin");

    let resp =
        get_raw(&bob, &format!("{V1}/thumbnail/{}?width=96&height=96&method=crop", mxc_path(&url))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/png");
    let thumb = resp.bytes().await.unwrap();
    assert_eq!(image::load_from_memory(&thumb).unwrap().to_rgb8().dimensions(), (96, 96));
}

#[tokio::test]
async fn binary_files_round_trip_byte_for_byte() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "bin", "pw").await;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(100_000).chain([0, 0, 13, 10, 26]).collect();
    let uri = upload(&alice, bytes.clone(), "application/octet-stream", "data.bin").await;
    let (headers, got) = download(&alice, &uri).await;
    assert_eq!(got, bytes);
    // Not a type a browser may show in place.
    assert_eq!(headers["content-disposition"], "attachment; filename=data.bin");

    // A name in the path wins over the uploaded one.
    let resp = get_raw(&alice, &format!("{V1}/download/{}/other%20name.txt", mxc_path(&uri))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-disposition"], "attachment; filename=\"other name.txt\"");

    // HTML is never inline, whatever the uploader claims.
    let uri = upload(&alice, b"<script>alert(1)</script>".to_vec(), "text/html", "x.html").await;
    let (headers, _) = download(&alice, &uri).await;
    assert!(headers["content-disposition"].to_str().unwrap().starts_with("attachment"));

    let missing = alice.get(&format!("{V1}/download/localhost/doesnotexist")).await;
    missing.assert_error(404, "M_NOT_FOUND");
    // Media of another server cannot be fetched until federation exists.
    let remote = alice.get(&format!("{V1}/download/other.example/abc?timeout_ms=100")).await;
    remote.assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn a_fifty_megabyte_file_within_the_limit_round_trips() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "big", "pw").await;
    let config = alice.get(&format!("{V1}/config")).await;
    assert_eq!(config.assert_ok()["m.upload.size"], json!(50 * 1024 * 1024));
    let bytes: Vec<u8> = (0..50_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let uri = upload(&alice, bytes.clone(), "application/octet-stream", "big.bin").await;
    let (headers, got) = download(&alice, &uri).await;
    assert_eq!(headers["content-length"], "50000000");
    assert!(got == bytes, "the 50 MB download differs from the upload");
}

#[tokio::test]
async fn an_oversized_upload_is_refused_and_leaves_nothing_behind() {
    let server = TestServer::start_with(|c| c.media.max_upload_size = 1024 * 1024).await;
    let alice = Client::register(&server.base_url, "over", "pw").await;
    assert_eq!(alice.get(&format!("{V1}/config")).await.assert_ok()["m.upload.size"], json!(1024 * 1024));

    // Declared too large up front.
    let reply = upload_reply(&alice, vec![7u8; 3 * 1024 * 1024], "application/octet-stream", "x").await;
    reply.assert_error(413, "M_TOO_LARGE");

    // Not declared (chunked): refused as soon as the limit is crossed.
    let addr = server.addr;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {UPLOAD} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/octet-stream\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        alice.access_token.as_deref().unwrap()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'z'; 64 * 1024];
    for _ in 0..(2 * 1024 * 1024 / chunk.len()) {
        stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.unwrap();
        stream.write_all(&chunk).await.unwrap();
        stream.write_all(b"\r\n").await.unwrap();
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("M_TOO_LARGE"), "{response}");

    assert!(
        files_under(&media_dir(&server)).is_empty(),
        "left behind: {:?}",
        files_under(&media_dir(&server))
    );

    // At the limit is fine.
    upload(&alice, vec![1u8; 1024 * 1024], "application/octet-stream", "max").await;
    assert_eq!(files_under(&media_dir(&server)).len(), 1);
}

/// Polls until `done` holds, for what the server does after a connection closes; fails after
/// a generous bound rather than timing anything.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test]
async fn an_aborted_upload_leaves_nothing_behind() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "aborter", "pw").await;
    let dir = media_dir(&server);
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST {UPLOAD} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Length: 1000000\r\n\r\n",
        server.addr,
        alice.access_token.as_deref().unwrap()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b'a'; 100_000]).await.unwrap();
    eventually("the upload's temporary file appears", || !files_under(&dir).is_empty()).await;
    drop(stream);
    eventually("the temporary file goes away", || files_under(&dir).is_empty()).await;
}

#[tokio::test]
async fn thumbnails_of_png_and_jpeg_are_smaller_and_the_right_size() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "thumbs", "pw").await;
    for (format, content_type) in [(ImageFormat::Png, "image/png"), (ImageFormat::Jpeg, "image/jpeg")] {
        let original = picture(format, 1024, 768);
        let uri = upload(&alice, original.clone(), content_type, "pic").await;
        for (query, expected) in [
            ("width=96&height=96&method=crop", (96, 96)),
            ("width=32&height=32&method=crop", (32, 32)),
            ("width=320&height=240&method=scale", (320, 240)),
            // Scale is the default method.
            ("width=600&height=450", (640, 480)),
        ] {
            let resp = get_raw(&alice, &format!("{V1}/thumbnail/{}?{query}", mxc_path(&uri))).await;
            assert_eq!(resp.status(), 200, "{content_type} {query}");
            assert_eq!(resp.headers()["content-type"], content_type, "{query}");
            let thumb = resp.bytes().await.unwrap();
            assert!(
                thumb.len() < original.len(),
                "{content_type} {query}: {} >= {}",
                thumb.len(),
                original.len()
            );
            let decoded = image::load_from_memory(&thumb).unwrap();
            assert_eq!((decoded.width(), decoded.height()), expected, "{content_type} {query}");
        }
    }

    let text = upload(&alice, b"not a picture".to_vec(), "text/plain", "t.txt").await;
    let reply = alice.get(&format!("{V1}/thumbnail/{}?width=32&height=32", mxc_path(&text))).await;
    reply.assert_error(400, "M_UNKNOWN");
    let png = upload(&alice, picture(ImageFormat::Png, 10, 10), "image/png", "p").await;
    let reply = alice.get(&format!("{V1}/thumbnail/{}?width=0&height=32", mxc_path(&png))).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
}

#[tokio::test]
async fn v1_paths_need_auth_and_legacy_ones_are_off_by_default() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "authed", "pw").await;
    let uri = upload(&alice, b"secret".to_vec(), "text/plain", "s.txt").await;
    let anon = server.client();
    let media = mxc_path(&uri);
    for path in [
        format!("{V1}/download/{media}"),
        format!("{V1}/download/{media}/s.txt"),
        format!("{V1}/thumbnail/{media}?width=32&height=32"),
        format!("{V1}/config"),
        format!("{V1}/preview_url?url=https://example.org/"),
    ] {
        anon.get(&path).await.assert_error(401, "M_MISSING_TOKEN");
    }
    let reply = anon.request_raw(Method::POST, UPLOAD, b"x".to_vec()).await;
    reply.assert_error(401, "M_MISSING_TOKEN");

    for path in
        [format!("/_matrix/media/v3/download/{media}"), format!("/_matrix/media/r0/download/{media}/s.txt")]
    {
        anon.get(&path).await.assert_error(404, "M_NOT_FOUND");
    }

    let server = TestServer::start_with(|c| c.media.legacy_unauthenticated_download = true).await;
    let alice = Client::register(&server.base_url, "legacy", "pw").await;
    let uri = upload(&alice, b"public".to_vec(), "text/plain", "p.txt").await;
    let resp = get_raw(&server.client(), &format!("/_matrix/media/v3/download/{}", mxc_path(&uri))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"public");
}

#[tokio::test]
async fn asynchronous_uploads() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "async", "pw").await;
    let bob = Client::register(&server.base_url, "intruder", "pw").await;
    let created = alice.post("/_matrix/media/v1/create", json!({})).await;
    let uri = created.assert_ok()["content_uri"].as_str().unwrap().to_owned();
    assert!(created.body["unused_expires_at"].is_u64());
    let path = format!("/_matrix/media/v3/upload/{}", mxc_path(&uri));

    let early = alice.get(&format!("{V1}/download/{}?timeout_ms=0", mxc_path(&uri))).await;
    early.assert_error(504, "M_NOT_YET_UPLOADED");
    // The deprecated unauthenticated path (off by default) says the same about media still on
    // its way, and only withholds what exists.
    let legacy = format!("/_matrix/media/v3/download/{}?timeout_ms=0", mxc_path(&uri));
    alice.get(&legacy).await.assert_error(504, "M_NOT_YET_UPLOADED");
    bob.request_raw(Method::PUT, &path, b"mine".to_vec()).await.assert_error(403, "M_FORBIDDEN");
    alice.request_raw(Method::PUT, &path, b"content".to_vec()).await.assert_ok();
    alice
        .request_raw(Method::PUT, &path, b"again".to_vec())
        .await
        .assert_error(409, "M_CANNOT_OVERWRITE_MEDIA");
    assert_eq!(download(&bob, &uri).await.1, b"content");
    alice.get(&legacy).await.assert_error(404, "M_NOT_FOUND");
    let unknown = "/_matrix/media/v3/download/localhost/nothing-here?timeout_ms=0";
    alice.get(unknown).await.assert_error(404, "M_NOT_FOUND");
}

/// A tiny web server for previews: a page with Open Graph tags and the image it names,
/// counting the requests it gets.
async fn web_server() -> (String, Arc<AtomicUsize>, Vec<u8>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let image = picture(ImageFormat::Png, 120, 80);
    let page = "<!doctype html><html><head><title>Ignored title</title>\
        <meta property=\"og:title\" content=\"Hearth &amp; friends\">\
        <meta property=\"og:description\" content=\"A page served by the test\">\
        <meta property=\"og:image\" content=\"/picture.png\"></head><body>hi</body></html>";
    let (counter, img) = (hits.clone(), image.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            let img = img.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&request);
                let (content_type, body) = if request.starts_with("GET /picture.png ") {
                    ("image/png", img)
                } else if request.starts_with("GET /silent ") {
                    // Never answers; the socket stays open until the test ends.
                    std::future::pending::<()>().await;
                    return;
                } else if request.starts_with("GET /redirect ") {
                    let head = "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.2:1/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                    let _ = socket.write_all(head.as_bytes()).await;
                    return;
                } else {
                    ("text/html; charset=utf-8", page.as_bytes().to_vec())
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
            });
        }
    });
    (format!("http://{addr}"), hits, image)
}

#[tokio::test]
async fn preview_of_a_local_page_allowed_by_config_returns_its_open_graph_tags() {
    let (site, _hits, image) = web_server().await;
    let server =
        TestServer::start_with(|c| c.media.url_preview_ip_range_allowlist = vec!["127.0.0.1/32".to_owned()])
            .await;
    let alice = Client::register(&server.base_url, "previewer", "pw").await;
    let reply = alice.get(&format!("{V1}/preview_url?url={site}/article")).await;
    let og = reply.assert_ok();
    assert_eq!(og["og:title"], json!("Hearth & friends"));
    assert_eq!(og["og:description"], json!("A page served by the test"));
    assert_eq!((og["og:image:width"].as_u64(), og["og:image:height"].as_u64()), (Some(120), Some(80)));
    assert_eq!(og["og:image:type"], json!("image/png"));
    let image_uri = og["og:image"].as_str().unwrap();
    assert!(image_uri.starts_with("mxc://localhost/"), "{image_uri}");
    assert_eq!(download(&alice, image_uri).await.1, image);

    // A redirect to an address outside the allowlist is refused at the redirect.
    let reply = alice.get(&format!("{V1}/preview_url?url={site}/redirect")).await;
    reply.assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn previews_stop_at_the_size_and_time_limits() {
    let (site, _hits, _) = web_server().await;
    let server = TestServer::start_with(|c| {
        c.media.url_preview_ip_range_allowlist = vec!["127.0.0.1/32".to_owned()];
        c.media.url_preview_max_bytes = 100;
        c.media.url_preview_timeout_secs = 1;
    })
    .await;
    let alice = Client::register(&server.base_url, "limits", "pw").await;
    // The page is a few hundred bytes.
    let reply = alice.get(&format!("{V1}/preview_url?url={site}/article")).await;
    reply.assert_error(502, "M_UNKNOWN");
    assert!(reply.body["error"].as_str().unwrap().contains("larger than"), "{}", reply.body);
    let reply = alice.get(&format!("{V1}/preview_url?url={site}/silent")).await;
    reply.assert_error(502, "M_UNKNOWN");
}

#[tokio::test]
async fn preview_of_loopback_is_refused_by_default() {
    let (site, hits, _) = web_server().await;
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "careful", "pw").await;
    let port = site.rsplit(':').next().unwrap();
    for url in
        [site.clone(), format!("http://localhost:{port}/"), format!("http://[::ffff:127.0.0.1]:{port}/")]
    {
        let reply = alice.get(&format!("{V1}/preview_url?url={url}")).await;
        reply.assert_error(403, "M_FORBIDDEN");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the server must not have connected");

    let server = TestServer::start_with(|c| c.media.url_preview_enabled = false).await;
    let alice = Client::register(&server.base_url, "nopreview", "pw").await;
    alice.get(&format!("{V1}/preview_url?url=https://example.org/")).await.assert_error(403, "M_FORBIDDEN");
}
