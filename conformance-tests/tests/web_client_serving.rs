//! The web client served at `/`: the app built into the binary with its security and cache
//! headers, revalidation by ETag, Matrix errors for what it does not have, no way out of its
//! folder, the APIs untouched beside it; turned off (also from the environment) `/` answers as
//! before; and a folder on disk read on every request, for developing the app.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use hearth_conformance_tests::{TestServer, binary::HearthProcess};
use reqwest::{StatusCode, header};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const CSP: &str = "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; \
                   connect-src 'self'; style-src 'self' 'unsafe-inline'; object-src 'none'; \
                   base-uri 'none'; frame-ancestors 'none'";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// A client that shows the body as sent: reqwest would decode gzip and drop the header when
/// another crate of the build turns its gzip feature on.
fn undecoding() -> reqwest::Client {
    reqwest::Client::builder().no_gzip().build().unwrap()
}

async fn get(base_url: &str, path: &str) -> reqwest::Response {
    reqwest::Client::new().get(format!("{base_url}{path}")).send().await.unwrap()
}

/// Status and errcode of a Matrix error answer.
async fn matrix_error(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let content_type = header_of(&response, &header::CONTENT_TYPE);
    assert_eq!(content_type, "application/json", "a Matrix error is JSON");
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    (status, body["errcode"].as_str().unwrap_or("").to_owned())
}

fn header_of(response: &reqwest::Response, name: &header::HeaderName) -> String {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

#[track_caller]
fn assert_security_headers(response: &reqwest::Response) {
    assert_eq!(header_of(response, &header::CONTENT_SECURITY_POLICY), CSP);
    assert_eq!(header_of(response, &header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert_eq!(header_of(response, &header::REFERRER_POLICY), "no-referrer");
    assert_eq!(header_of(response, &header::X_FRAME_OPTIONS), "DENY");
}

/// The `src` of the first `<script>` of the page, as a path.
fn first_script(html: &str) -> String {
    let tag = &html[html.find("<script").expect("index.html loads a script")..];
    let tag = &tag[..tag.find('>').unwrap()];
    let src = &tag[tag.find("src=\"").expect("the script has a src") + 5..];
    let src = &src[..src.find('"').unwrap()];
    let path = src.trim_start_matches('.');
    assert!(path.starts_with("/assets/"), "{src}");
    path.to_owned()
}

/// Sends `path` exactly as written (reqwest would normalize `..` and its encodings away) and
/// returns the whole answer.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("the server answered")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Ways to say "the folder above" in the path under `/assets/`.
fn traversals(target: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for depth in 1..=4 {
        for (up, sep) in
            [("..", "/"), ("..", "%2F"), ("..", "%2f"), ("%2e%2e", "/"), ("%2E%2E", "%2F"), ("..", "%5C")]
        {
            let prefix: String = std::iter::repeat_n(format!("{up}{sep}"), depth).collect();
            paths.push(format!("/assets/{prefix}{target}"));
        }
        let backslashes: String = std::iter::repeat_n("..\\", depth).collect();
        paths.push(format!("/assets/{backslashes}{target}"));
    }
    paths.push("/assets/%2Fetc%2Fpasswd".to_owned());
    paths.push("/assets//etc/passwd".to_owned());
    paths
}

#[tokio::test]
async fn the_built_in_app_is_served_at_the_root_with_its_headers() {
    let server = TestServer::start().await;
    let response = get(&server.base_url, "/").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_of(&response, &header::CONTENT_TYPE), "text/html; charset=utf-8");
    assert_eq!(header_of(&response, &header::CACHE_CONTROL), "no-cache");
    assert_security_headers(&response);
    let html = response.text().await.unwrap();
    assert!(html.contains("<div id=\"root\">"), "{html}");

    // HEAD answers the same headers without the page.
    let head = reqwest::Client::new().head(format!("{}/", server.base_url)).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header_of(&head, &header::CONTENT_TYPE), "text/html; charset=utf-8");
    assert!(head.bytes().await.unwrap().is_empty());

    // The page's script: immutable, revalidated by its ETag.
    let script = first_script(&html);
    let response = get(&server.base_url, &script).await;
    assert_eq!(response.status(), StatusCode::OK, "{script}");
    assert_eq!(header_of(&response, &header::CONTENT_TYPE), "text/javascript; charset=utf-8");
    assert_eq!(header_of(&response, &header::CACHE_CONTROL), IMMUTABLE);
    assert_eq!(header_of(&response, &header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    let etag = header_of(&response, &header::ETAG);
    assert!(etag.starts_with('"') && etag.len() > 2, "{etag:?}");
    assert!(!response.bytes().await.unwrap().is_empty());
    let again = reqwest::Client::new()
        .get(format!("{}{script}", server.base_url))
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header_of(&again, &header::ETAG), etag);
    assert!(again.bytes().await.unwrap().is_empty());
    // Another tag is not a match: the file again.
    let other = reqwest::Client::new()
        .get(format!("{}{script}", server.base_url))
        .header(header::IF_NONE_MATCH, "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    // Browsers ask for gzip and get it, under a tag of its own; the plain copy says it varies.
    assert_eq!(header_of(&other, &header::VARY), "accept-encoding");
    let gzipped = undecoding()
        .get(format!("{}{script}", server.base_url))
        .header(header::ACCEPT_ENCODING, "gzip, deflate, br")
        .send()
        .await
        .unwrap();
    assert_eq!(gzipped.status(), StatusCode::OK);
    assert_eq!(header_of(&gzipped, &header::CONTENT_ENCODING), "gzip");
    assert_eq!(header_of(&gzipped, &header::VARY), "accept-encoding");
    let plain = undecoding().get(format!("{}{script}", server.base_url)).send().await.unwrap();
    assert_eq!(header_of(&plain, &header::CONTENT_ENCODING), "");
    assert_ne!(header_of(&gzipped, &header::ETAG), header_of(&plain, &header::ETAG));
    let body = gzipped.bytes().await.unwrap();
    assert_eq!(&body[..2], &[0x1f, 0x8b], "a gzip stream");

    // What the build does not have is a Matrix 404.
    assert_eq!(
        matrix_error(get(&server.base_url, "/assets/nope.js").await).await,
        (404, "M_NOT_FOUND".into())
    );
    // Only GET and HEAD.
    let post = reqwest::Client::new().post(format!("{}/", server.base_url)).send().await.unwrap();
    assert_eq!(matrix_error(post).await, (405, "M_UNRECOGNIZED".into()));
}

#[tokio::test]
async fn no_path_under_assets_leaves_the_build() {
    let server = TestServer::start().await;
    for path in traversals("Cargo.toml") {
        let answer = raw_get(server.addr, &path).await;
        assert!(!answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        for leaked in ["[workspace]", "[package]", "root:"] {
            assert!(!answer.contains(leaked), "{path}: {answer}");
        }
    }
    // reqwest's own spelling of the same requests lands on paths outside /assets/.
    for path in ["/assets/..%2F..%2FCargo.toml", "/assets/../Cargo.toml"] {
        let response = get(&server.base_url, path).await;
        assert_ne!(response.status(), StatusCode::OK, "{path}");
        assert!(!response.text().await.unwrap().contains("[workspace]"), "{path}");
    }
}

#[tokio::test]
async fn the_apis_are_untouched_beside_the_app() {
    let server = TestServer::start().await;
    let versions = get(&server.base_url, "/_matrix/client/versions").await;
    assert_eq!(versions.status(), StatusCode::OK);
    assert_eq!(header_of(&versions, &header::CONTENT_SECURITY_POLICY), "", "API answers keep their headers");
    let body: Value = versions.json().await.unwrap();
    assert!(body["versions"].is_array(), "{body}");
    let well_known = get(&server.base_url, "/.well-known/matrix/client").await;
    assert_eq!(well_known.status(), StatusCode::OK);
    let health = get(&server.base_url, "/health").await;
    assert_eq!(health.text().await.unwrap(), "OK");
    server.client().get("/_matrix/client/v3/account/whoami").await.assert_error(401, "M_MISSING_TOKEN");
    // Paths the build does not name still reach the client API's fallback.
    assert_eq!(matrix_error(get(&server.base_url, "/nothing").await).await, (404, "M_UNRECOGNIZED".into()));
    assert_eq!(
        matrix_error(get(&server.base_url, "/index.html").await).await,
        (404, "M_UNRECOGNIZED".into())
    );
    // CORS wraps the app as it wraps everything.
    let root = get(&server.base_url, "/").await;
    assert_eq!(header_of(&root, &header::ACCESS_CONTROL_ALLOW_ORIGIN), "*");
    assert!(root.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn turned_off_the_root_answers_as_before() {
    let server = TestServer::start_with(|config| config.web_client.enabled = false).await;
    for path in ["/", "/assets/nope.js"] {
        let response = get(&server.base_url, path).await;
        assert_eq!(header_of(&response, &header::CONTENT_SECURITY_POLICY), "", "{path}");
        assert_eq!(matrix_error(response).await, (404, "M_UNRECOGNIZED".into()), "{path}");
    }
    let script = first_script(include_str!("../../web/dist/index.html"));
    assert_eq!(matrix_error(get(&server.base_url, &script).await).await, (404, "M_UNRECOGNIZED".into()));
    let post = reqwest::Client::new().post(format!("{}/", server.base_url)).send().await.unwrap();
    assert_eq!(matrix_error(post).await, (404, "M_UNRECOGNIZED".into()));
    let versions = get(&server.base_url, "/_matrix/client/versions").await;
    assert_eq!(versions.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_folder_on_disk_is_read_on_every_request_and_never_left() {
    let root = tempfile::tempdir().unwrap();
    let app = root.path().join("app");
    std::fs::create_dir_all(app.join("assets")).unwrap();
    std::fs::write(app.join("index.html"), "<div id=\"root\">first build</div>").unwrap();
    std::fs::write(app.join("assets").join("app-1.js"), "console.log(1)").unwrap();
    std::fs::write(app.join("favicon.ico"), [0u8, 0, 1, 0]).unwrap();
    // Beside the folder, where a way out would lead.
    std::fs::write(root.path().join("secret.txt"), "do not serve me").unwrap();
    std::fs::write(app.join("assets").join(".hidden"), "do not serve me").unwrap();
    let server = TestServer::start_with(|config| config.web_client.dir = Some(app.clone())).await;

    let first = get(&server.base_url, "/").await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(header_of(&first, &header::CONTENT_TYPE), "text/html; charset=utf-8");
    assert_security_headers(&first);
    let first_etag = header_of(&first, &header::ETAG);
    assert!(first.text().await.unwrap().contains("first build"));

    // A rebuild shows at once, under a new ETag.
    std::fs::write(app.join("index.html"), "<div id=\"root\">second build</div>").unwrap();
    let second = reqwest::Client::new()
        .get(format!("{}/", server.base_url))
        .header(header::IF_NONE_MATCH, &first_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    assert_ne!(header_of(&second, &header::ETAG), first_etag);
    assert!(second.text().await.unwrap().contains("second build"));

    let script = get(&server.base_url, "/assets/app-1.js").await;
    assert_eq!(script.status(), StatusCode::OK);
    assert_eq!(header_of(&script, &header::CONTENT_TYPE), "text/javascript; charset=utf-8");
    assert_eq!(script.text().await.unwrap(), "console.log(1)");
    // A file added after start-up under assets/ is found (only top-level names are fixed then).
    std::fs::write(app.join("assets").join("app-2.js"), "console.log(2)").unwrap();
    assert_eq!(get(&server.base_url, "/assets/app-2.js").await.text().await.unwrap(), "console.log(2)");

    let icon = get(&server.base_url, "/favicon.ico").await;
    assert_eq!(icon.status(), StatusCode::OK);
    assert_eq!(header_of(&icon, &header::CONTENT_TYPE), "image/x-icon");
    assert_eq!(header_of(&icon, &header::CACHE_CONTROL), "no-cache");

    for path in traversals("secret.txt").iter().chain(&["/assets/.hidden".to_owned()]) {
        let answer = raw_get(server.addr, path).await;
        assert!(!answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        assert!(!answer.contains("do not serve me"), "{path}: {answer}");
    }
    assert_eq!(
        matrix_error(get(&server.base_url, "/assets/nope.js").await).await,
        (404, "M_NOT_FOUND".into())
    );

    // Without an index.html, / is a Matrix 404 rather than an error page.
    std::fs::remove_file(app.join("index.html")).unwrap();
    assert_eq!(matrix_error(get(&server.base_url, "/").await).await, (404, "M_NOT_FOUND".into()));
}

/// Lines the process logs within `wait`.
fn log_lines(process: &HearthProcess, wait: Duration) -> Vec<String> {
    let mut lines = Vec::new();
    let until = std::time::Instant::now() + wait;
    while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
        match process.output.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    lines
}

#[tokio::test]
async fn the_environment_turns_it_off_or_points_it_at_a_folder() {
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("db");
    let process = HearthProcess::spawn(
        &[],
        &[("HEARTH_STORAGE__PATH", db.to_str().unwrap()), ("HEARTH_WEB_CLIENT__ENABLED", "false")],
    );
    assert_eq!(matrix_error(get(&process.base_url, "/").await).await, (404, "M_UNRECOGNIZED".into()));
    drop(process);

    // A folder without an index.html: a warning at start-up, once, and 404 at /.
    let empty = tempfile::tempdir().unwrap();
    let process = HearthProcess::spawn(
        &[],
        &[
            ("HEARTH_STORAGE__PATH", db.to_str().unwrap()),
            ("HEARTH_WEB_CLIENT__DIR", empty.path().to_str().unwrap()),
        ],
    );
    for _ in 0..2 {
        assert_eq!(matrix_error(get(&process.base_url, "/").await).await, (404, "M_NOT_FOUND".into()));
    }
    let warnings = log_lines(&process, Duration::from_secs(2))
        .into_iter()
        .filter(|line| line.contains("WARN") && line.contains("index.html"))
        .count();
    assert_eq!(warnings, 1);
}
