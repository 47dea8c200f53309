//! The web client: the browser app that `web/` builds into `web/dist`, served at `/` of the
//! client listener, from a copy inside the binary or (`web_client.dir`) from a folder on disk.
//!
//! Only `/`, `/assets/...` and the files at the top of the build get routes, so no path of the
//! Matrix APIs can be shadowed; everything else still reaches the client API's fallback.

use std::{
    collections::HashMap,
    io::ErrorKind,
    path::{Component, Path, PathBuf},
    sync::Arc,
};

use axum::{
    Router,
    body::Body,
    extract::{Path as PathParam, rejection::PathRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{MethodRouter, get},
};
use bytes::Bytes;
use hearth_client_api::ApiError;
use hearth_core::ErrorCode;
use include_dir::{Dir, include_dir};

use crate::config::WebClientConfig;

/// The build as it was when the binary was compiled. Immutable data, not state.
static DIST: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/web/dist");

/// The app's policy: its code and styles from this origin only (styles may be inline, as
/// component libraries set them), images and media also from blobs and data URLs (decrypted
/// attachments, thumbnails), connections to this origin only. CSP Level 3 lets `'self'` match
/// `ws:`/`wss:` on the same host, which the WebSocket needs; Chrome and Firefox have done so
/// since 2018, Safari since 15.5/16 (w3c/webappsec-csp#7), so no wider `ws: wss:` is needed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' blob: data:; \
     media-src 'self' blob:; connect-src 'self'; style-src 'self' 'unsafe-inline'; \
     object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// Asset names carry a hash of their content, so a name never changes meaning.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Names that stay the same across builds (`index.html`, a favicon): revalidate every time.
const NO_CACHE: &str = "no-cache";

/// What the app appends to its root as the return address of single sign-on (`web/src/matrix.ts`
/// builds the same URL), which `[sso]` then allowlists.
pub const SSO_RETURN: &str = "?via=sso";

const INDEX: &str = "index.html";
/// The longest file or folder name common file systems allow.
const MAX_NAME_BYTES: usize = 255;
const ASSETS: &str = "assets";

/// Where the files come from.
enum Source {
    /// The build inside the binary, keyed by its path in the build (`assets/index-x.js`), each
    /// with its ETag computed once.
    Embedded(HashMap<String, Embedded>),
    /// A build on disk, read on every request so that a rebuild shows without a restart.
    Disk(PathBuf),
}

struct Embedded {
    bytes: Bytes,
    etag: HeaderValue,
    /// The same file gzipped, with its own ETag, for text that shrinks: the app's script is
    /// about a quarter of its size so, and a copy made once at start-up costs milliseconds.
    gzip: Option<(Bytes, HeaderValue)>,
}

/// The routes of the web client: `/`, `/assets/{*path}` and one per top-level file of the
/// build (except `index.html`, which is served at `/` only).
pub fn router(config: &WebClientConfig) -> Router {
    let (source, top_level) = match &config.dir {
        Some(dir) => {
            tracing::info!(dir = %dir.display(), "serving the web client from a folder");
            if !dir.join(INDEX).is_file() {
                tracing::warn!(
                    dir = %dir.display(),
                    "web_client.dir has no index.html: / answers 404 until it does"
                );
            }
            (Source::Disk(dir.clone()), top_level_on_disk(dir))
        }
        None => {
            let files = embedded_files();
            let mut top_level: Vec<String> =
                files.keys().filter(|name| !name.contains('/')).cloned().collect();
            top_level.sort();
            (Source::Embedded(files), top_level)
        }
    };
    let source = Arc::new(source);
    let mut router = Router::new()
        .route(
            "/",
            only_get({
                let source = source.clone();
                move |headers: HeaderMap| {
                    let source = source.clone();
                    async move { serve(&source, INDEX.to_owned(), NO_CACHE, &headers).await }
                }
            }),
        )
        .route(
            "/assets/{*path}",
            only_get({
                let source = source.clone();
                move |path: Result<PathParam<String>, PathRejection>, headers: HeaderMap| {
                    let source = source.clone();
                    async move {
                        // A path that does not percent-decode to UTF-8 names no file either.
                        let Ok(PathParam(path)) = path else { return not_found() };
                        let Some(relative) = clean_relative_path(&path) else { return not_found() };
                        let cache = match *source {
                            Source::Embedded(_) => IMMUTABLE,
                            // A build made while developing may reuse a name with new content.
                            Source::Disk(_) => NO_CACHE,
                        };
                        serve(&source, format!("{ASSETS}/{relative}"), cache, &headers).await
                    }
                }
            }),
        );
    for name in top_level.into_iter().filter(|name| servable_top_level_name(name)) {
        let source = source.clone();
        let path = format!("/{name}");
        router = router.route(
            &path,
            only_get(move |headers: HeaderMap| {
                let (source, name) = (source.clone(), name.clone());
                async move { serve(&source, name, NO_CACHE, &headers).await }
            }),
        );
    }
    router.layer(axum::middleware::map_response(security_headers))
}

/// A GET (and HEAD) route whose other methods get the client API's Matrix error, as the
/// routes registered before its method fallback was set do.
fn only_get<H, T>(handler: H) -> MethodRouter
where
    H: axum::handler::Handler<T, ()>,
    T: 'static,
{
    get(handler).fallback(|| async {
        ApiError::new(ErrorCode::MethodNotAllowed, "Method not allowed").into_response()
    })
}

/// Every file of the embedded build, by its path inside the build.
fn embedded_files() -> HashMap<String, Embedded> {
    let mut files = HashMap::new();
    let mut dirs = vec![&DIST];
    while let Some(dir) = dirs.pop() {
        dirs.extend(dir.dirs());
        for file in dir.files() {
            // include_dir writes paths with `/` whatever the build host.
            let Some(path) = file.path().to_str() else { continue };
            let bytes = Bytes::from_static(file.contents());
            let etag = etag_of(&bytes);
            let gzip = gzipped(path, &bytes).map(|gz| {
                let etag = etag_of(&gz);
                (gz, etag)
            });
            files.insert(path.to_owned(), Embedded { bytes, etag, gzip });
        }
    }
    files
}

/// The files at the top of `dir` when the server starts: routes are fixed then, and a file
/// added later needs a restart (its content, like every file's, is read per request).
fn top_level_on_disk(dir: &Path) -> Vec<String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "cannot list web_client.dir");
            return Vec::new();
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_file())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Whether a top-level file gets a route of its own. A name must have an extension and must
/// not start with a dot: no path of the APIs at the top level has one (`/health`, `/ws`) and
/// the hidden ones start with `_` or `.`, so a file can never collide with one (which would
/// also make the router panic). Only characters that mean nothing in a route pattern.
fn servable_top_level_name(name: &str) -> bool {
    name != INDEX
        && !name.starts_with(['.', '_'])
        && name.contains('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

/// The path under `assets/` as plain file and folder names joined by `/`, or `None` when any
/// part could lead elsewhere: `..`, `.`, hidden names, empty parts, backslashes, drive
/// letters, NUL. The router has already percent-decoded it, so encoded forms arrive here
/// decoded and are refused the same way.
fn clean_relative_path(path: &str) -> Option<String> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        // Longer than any file system's name limit: no such file (on disk it would be an
        // error of its own, not "not found").
        let plain = !part.is_empty()
            && part.len() <= MAX_NAME_BYTES
            && !part.starts_with('.')
            && !part.contains(['\\', ':', '\0'])
            && matches!(Path::new(part).components().collect::<Vec<_>>().as_slice(), [Component::Normal(_)]);
        if !plain {
            return None;
        }
        parts.push(part);
    }
    Some(parts.join("/"))
}

/// Answers with the file at `key` (a path inside the build that has been checked to hold
/// plain names only), or 304 when the client's copy is current, or 404.
async fn serve(source: &Source, key: String, cache: &'static str, request: &HeaderMap) -> Response {
    // Whether the answer depends on Accept-Encoding, and the encoding it has.
    let mut vary = false;
    let mut encoding = None;
    let (bytes, etag) = match source {
        Source::Embedded(files) => match files.get(&key) {
            Some(file) => match &file.gzip {
                Some((gz, gz_etag)) => {
                    vary = true;
                    if accepts_gzip(request) {
                        encoding = Some(HeaderValue::from_static("gzip"));
                        (gz.clone(), gz_etag.clone())
                    } else {
                        (file.bytes.clone(), file.etag.clone())
                    }
                }
                None => (file.bytes.clone(), file.etag.clone()),
            },
            None => return not_found(),
        },
        Source::Disk(dir) => {
            let path = key.split('/').fold(dir.clone(), |path, part| path.join(part));
            match tokio::fs::read(&path).await {
                Ok(bytes) => {
                    let etag = etag_of(&bytes);
                    (Bytes::from(bytes), etag)
                }
                Err(error)
                    if matches!(
                        error.kind(),
                        ErrorKind::NotFound | ErrorKind::IsADirectory | ErrorKind::NotADirectory
                    ) =>
                {
                    return not_found();
                }
                Err(error) => {
                    return ApiError::from(hearth_core::Error::internal(format!(
                        "reading {} of web_client.dir: {error}",
                        path.display()
                    )))
                    .into_response();
                }
            }
        }
    };
    let cache = HeaderValue::from_static(cache);
    let mut response = if client_has(request, &etag) {
        (StatusCode::NOT_MODIFIED, [(header::ETAG, etag), (header::CACHE_CONTROL, cache)]).into_response()
    } else {
        let content_type = HeaderValue::from_static(content_type(&key));
        let mut response = (
            [(header::CONTENT_TYPE, content_type), (header::ETAG, etag), (header::CACHE_CONTROL, cache)],
            Body::from(bytes),
        )
            .into_response();
        if let Some(encoding) = encoding {
            response.headers_mut().insert(header::CONTENT_ENCODING, encoding);
        }
        response
    };
    if vary {
        response.headers_mut().insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    response
}

/// The gzipped copy of a text file, when it is smaller.
fn gzipped(name: &str, bytes: &[u8]) -> Option<Bytes> {
    use std::io::Write;
    if !content_type(name).starts_with("text/")
        && !matches!(content_type(name), "image/svg+xml" | "application/json" | "application/manifest+json")
    {
        return None;
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).ok()?;
    let gz = encoder.finish().ok()?;
    (gz.len() < bytes.len()).then(|| Bytes::from(gz))
}

/// Whether `Accept-Encoding` allows gzip: named with a non-zero weight, or, when not named,
/// covered by `*` with a non-zero weight (RFC 9110 12.5.3: the named coding's weight wins).
fn accepts_gzip(request: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut any = None;
    for coding in request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
    {
        let mut parts = coding.split(';');
        let name = parts.next().unwrap_or_default().trim();
        let refused = parts
            .any(|p| p.trim().strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()) == Some(0.0));
        if name.eq_ignore_ascii_case("gzip") {
            gzip = Some(!refused);
        } else if name == "*" {
            any = Some(!refused);
        }
    }
    gzip.or(any).unwrap_or(false)
}

fn not_found() -> Response {
    ApiError::new(ErrorCode::NotFound, "No such file in the web client").into_response()
}

/// A strong ETag: the first 128 bits of the content's SHA-256, in hex.
fn etag_of(bytes: &[u8]) -> HeaderValue {
    let digest = hearth_core::util::sha256(bytes);
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

/// Whether `If-None-Match` names `etag` (or is `*`). GET and HEAD compare weakly (RFC 9110
/// 13.1.2), so a `W/` prefix a proxy added still matches.
fn client_has(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(etag) = etag.to_str() else { return false };
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

fn content_type(name: &str) -> &'static str {
    let extension = Path::new(name).extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match extension.as_str() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "txt" => "text/plain; charset=utf-8",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// On every answer of the web client, errors included: a file served here (an SVG, say) may be
/// opened as a document of its own, and then the same policy must hold.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_resolve() {
        assert_eq!(clean_relative_path("index-abc.js").as_deref(), Some("index-abc.js"));
        assert_eq!(clean_relative_path("fonts/a.woff2").as_deref(), Some("fonts/a.woff2"));
        for bad in [
            "",
            "..",
            "../Cargo.toml",
            "a/../../Cargo.toml",
            "./a.js",
            "a//b.js",
            "/etc/passwd",
            "..\\Cargo.toml",
            "a\\..\\b",
            "C:x",
            ".env",
            "a\0b",
            "a/",
            &"x".repeat(256),
        ] {
            assert_eq!(clean_relative_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn top_level_names_never_reach_the_apis() {
        for ok in ["favicon.ico", "robots.txt", "manifest.webmanifest", "sw.js"] {
            assert!(servable_top_level_name(ok), "{ok}");
        }
        for bad in ["index.html", "health", "ws", ".well-known", "_matrix", "a{b}.js", "a*.js", "a b.js"] {
            assert!(!servable_top_level_name(bad), "{bad}");
        }
    }

    #[test]
    fn if_none_match_lists_and_weak_tags_match() {
        let etag = HeaderValue::from_static("\"abc\"");
        let mut request = HeaderMap::new();
        assert!(!client_has(&request, &etag));
        request.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"x\", W/\"abc\""));
        assert!(client_has(&request, &etag));
        request.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"abcd\""));
        assert!(!client_has(&request, &etag));
        request.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(client_has(&request, &etag));
    }

    #[test]
    fn gzip_only_when_accepted() {
        let mut request = HeaderMap::new();
        assert!(!accepts_gzip(&request));
        for (value, ok) in [
            ("gzip, deflate, br", true),
            ("br;q=1.0, GZIP;q=0.5", true),
            ("*", true),
            ("gzip;q=0", false),
            ("gzip; q=0.0, br", false),
            ("gzip;q=0, *", false),
            ("*;q=0, gzip", true),
            ("identity", false),
        ] {
            request.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(value).unwrap());
            assert_eq!(accepts_gzip(&request), ok, "{value}");
        }
    }

    #[test]
    fn text_is_kept_gzipped_and_decodes_to_the_same_bytes() {
        use std::io::Read;
        let files = embedded_files();
        let index = &files[INDEX];
        let (gz, etag) = index.gzip.as_ref().expect("index.html compresses");
        assert_ne!(etag, &index.etag);
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut plain).unwrap();
        assert_eq!(plain, index.bytes);
        assert!(gzipped("a.png", &[0; 1000]).is_none());
    }

    #[test]
    fn the_embedded_build_has_an_index() {
        let files = embedded_files();
        assert!(files.contains_key(INDEX));
        assert!(files.keys().all(|key| !key.contains('\\')));
    }
}
