//! Single sign-on in the browser: the redirect to the identity provider, the confirmation page
//! for redirect URLs outside the allowlist, the provider's callback, and the `m.login.sso` UIA
//! fallback page. These answer with redirects and HTML, not JSON; their errors are still
//! Matrix errors, so a client that opened the page can tell what went wrong.
//!
//! The confirmation page and the callback are Hearth's own endpoints (like Synapse's
//! `/_synapse/client/oidc/callback`): `hearth_core::auth::sso::{CONFIRM_PATH, CALLBACK_PATH}`.

use hearth_core::{
    Error, Homeserver,
    auth::sso::{COOKIE_NAME, Callback, Finished},
};
use ruma::api::client::{
    session::{sso_login, sso_login_with_provider},
    uiaa::{AuthType, get_uiaa_fallback_page},
};

use crate::{extract::Ruma, response::ApiResult};

/// The endpoints only Hearth has, declared against ruma's endpoint traits by hand like the
/// admin endpoints, so the route table treats them like any other.
mod endpoint {
    use axum::http::{self, HeaderValue, Method, StatusCode, header};
    use hearth_core::auth::sso::{CALLBACK_PATH, CONFIRM_PATH};
    use ruma::api::{
        IncomingRequest, Metadata, OutgoingResponse,
        auth_scheme::NoAuthentication,
        error::{DeserializationError, Error as MatrixError, IntoHttpError},
        path_builder::SinglePath,
    };

    use super::COOKIE_NAME;

    /// The query parameters of a request, decoded.
    pub(crate) fn query(request: &http::Request<&[u8]>) -> Vec<(String, String)> {
        let raw = request.uri().query().unwrap_or("");
        url::form_urlencoded::parse(raw.as_bytes()).into_owned().collect()
    }

    pub(crate) fn param(pairs: &[(String, String)], name: &str) -> Option<String> {
        pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    /// The sign-in cookie the browser sent, if any.
    fn browser_secret(request: &http::Request<&[u8]>) -> Option<String> {
        request
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix(COOKIE_NAME).and_then(|rest| rest.strip_prefix('=')))
            .map(ToOwned::to_owned)
    }

    /// `GET /_matrix/client/unstable/io.hearth/sso/confirm?state=...`
    pub struct Confirm {
        pub state: Option<String>,
        pub browser_secret: Option<String>,
    }

    impl Metadata for Confirm {
        const METHOD: Method = Method::GET;
        const RATE_LIMITED: bool = false;
        type Authentication = NoAuthentication;
        type PathBuilder = SinglePath;
        const PATH_BUILDER: SinglePath = SinglePath::new(CONFIRM_PATH);
    }

    impl IncomingRequest for Confirm {
        type EndpointError = MatrixError;
        type OutgoingResponse = Page;

        fn try_from_http_request_inner(
            request: http::Request<&[u8]>,
            _path_args: &[&str],
        ) -> Result<Self, DeserializationError> {
            Ok(Self { state: param(&query(&request), "state"), browser_secret: browser_secret(&request) })
        }
    }

    /// `GET /_matrix/client/unstable/io.hearth/sso/callback/{idp_id}?code=...&state=...`
    pub struct ProviderCallback(pub super::Callback);

    impl Metadata for ProviderCallback {
        const METHOD: Method = Method::GET;
        const RATE_LIMITED: bool = false;
        type Authentication = NoAuthentication;
        type PathBuilder = SinglePath;
        const PATH_BUILDER: SinglePath = SinglePath::new(CALLBACK_PATH);
    }

    impl IncomingRequest for ProviderCallback {
        type EndpointError = MatrixError;
        type OutgoingResponse = Page;

        fn try_from_http_request_inner(
            request: http::Request<&[u8]>,
            path_args: &[&str],
        ) -> Result<Self, DeserializationError> {
            let pairs = query(&request);
            Ok(Self(super::Callback {
                idp_id: path_args.first().map(|s| (*s).to_owned()).unwrap_or_default(),
                state: param(&pairs, "state"),
                code: param(&pairs, "code"),
                error: param(&pairs, "error"),
                error_description: param(&pairs, "error_description"),
                browser_secret: browser_secret(&request),
            }))
        }
    }

    /// A browser page: a redirect or HTML, optionally setting the sign-in cookie.
    pub enum Page {
        Redirect { location: String, cookie: Option<String> },
        Html { body: String },
    }

    pub struct PageBody(Vec<u8>);

    impl ruma::api::OutgoingBody for PageBody {
        type Error = std::convert::Infallible;

        fn content_type(&self) -> Option<HeaderValue> {
            None
        }

        fn try_into_buf<T: Default + bytes::BufMut + AsRef<[u8]>>(
            self,
        ) -> Result<T, std::convert::Infallible> {
            let mut buf = T::default();
            buf.put_slice(&self.0);
            Ok(buf)
        }
    }

    impl OutgoingResponse for Page {
        type Body = PageBody;

        fn try_into_http_response_inner(self) -> Result<http::Response<PageBody>, IntoHttpError> {
            // Sign-in pages carry one-time secrets in their URLs: never cached, framed or
            // named in a Referer.
            let builder = http::Response::builder()
                .header(header::CACHE_CONTROL, "no-store")
                .header(header::REFERRER_POLICY, "no-referrer")
                .header(header::X_FRAME_OPTIONS, "DENY")
                .header(header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'");
            Ok(match self {
                Self::Redirect { location, cookie } => {
                    let mut builder = builder.status(StatusCode::FOUND).header(header::LOCATION, location);
                    if let Some(cookie) = cookie {
                        builder = builder.header(header::SET_COOKIE, cookie);
                    }
                    builder.body(PageBody(Vec::new()))?
                }
                Self::Html { body } => builder
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
                    .body(PageBody(body.into_bytes()))?,
            })
        }
    }
}

pub use endpoint::{Confirm, ProviderCallback};
pub(crate) use endpoint::{Page, param, query};

pub(crate) use hearth_core::util::html_escape as esc;

pub(crate) fn page(title: &str, content: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title></head>\n<body>\n<h1>{}</h1>\n{content}\n</body></html>\n",
        esc(title),
        esc(title)
    )
}

/// The cookie that binds a sign-in to this browser, readable only by the sign-in pages.
fn cookie(hs: &Homeserver, value: &str, max_age: u64) -> String {
    let secure = if hs.config.public_baseurl.starts_with("https://") { "; Secure" } else { "" };
    format!(
        "{COOKIE_NAME}={value}; Path=/_matrix/client/unstable/io.hearth/sso/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    )
}

async fn start(hs: &Homeserver, idp_id: Option<&str>, redirect_url: &str) -> Result<(String, String), Error> {
    let started = hs.sso.start_login(idp_id, redirect_url).await?;
    Ok((started.location, cookie(hs, &started.browser_secret, 600)))
}

/// `GET /_matrix/client/v3/login/sso/redirect`
pub async fn sso_login(
    hs: Homeserver,
    req: Ruma<sso_login::v3::Request>,
) -> ApiResult<sso_login::v3::Response> {
    let (location, cookie) = start(&hs, None, &req.body.redirect_url).await?;
    let mut response = sso_login::v3::Response::new(location);
    response.cookie = Some(cookie);
    Ok(response)
}

/// `GET /_matrix/client/v3/login/sso/redirect/{idpId}`
pub async fn sso_login_with_provider(
    hs: Homeserver,
    req: Ruma<sso_login_with_provider::v3::Request>,
) -> ApiResult<sso_login_with_provider::v3::Response> {
    let (location, cookie) = start(&hs, Some(&req.body.idp_id), &req.body.redirect_url).await?;
    let mut response = sso_login_with_provider::v3::Response::new(location);
    response.cookie = Some(cookie);
    Ok(response)
}

/// `GET /_matrix/client/unstable/io.hearth/sso/confirm?state=...`: shown instead of going
/// straight to the provider when the client's redirect URL is not on the allowlist, so a link
/// from a stranger cannot quietly send a login token to the stranger's site.
pub async fn confirm(hs: Homeserver, req: Ruma<Confirm>) -> ApiResult<Page> {
    let state = req.body.state.ok_or_else(|| Error::missing_param("Missing state"))?;
    let c = hs.sso.confirmation(&state, req.body.browser_secret.as_deref()).await?;
    let content = format!(
        "<p>An application at <code id=\"redirect-url\">{url}</code> asks to sign in to your account on \
         <strong>{server}</strong> with {provider}.</p>\n\
         <p>Continue only if you trust it and started this sign-in yourself: it will have full access to \
         your account.</p>\n<p><a id=\"continue\" href=\"{link}\">Continue with {provider}</a></p>",
        url = esc(&c.redirect_url),
        server = esc(hs.server_name().as_str()),
        provider = esc(&c.provider_name),
        link = esc(&c.authorize_url),
    );
    Ok(Page::Html { body: page("Sign in to another application?", &content) })
}

/// `GET /_matrix/client/unstable/io.hearth/sso/callback/{idpId}`
pub async fn callback(hs: Homeserver, req: Ruma<ProviderCallback>) -> ApiResult<Page> {
    let finished = hs.sso.finish(req.body.0).await.inspect_err(|error| {
        if !error.is_internal() {
            tracing::info!(%error, "refused a single sign-on callback");
        }
    })?;
    Ok(match finished {
        // The sign-in cookie has served its purpose.
        Finished::Login { location, .. } => Page::Redirect { location, cookie: Some(cookie(&hs, "", 0)) },
        Finished::Uia { .. } => Page::Html {
            body: page(
                "Confirmed",
                "<p>You have confirmed your identity. Return to the application to continue.</p>\n\
                 <script>\nif (window.onAuthDone) { window.onAuthDone(); }\n\
                 else if (window.opener && window.opener.postMessage) { window.opener.postMessage(\"authDone\", \"*\"); }\n\
                 </script>",
            ),
        },
    })
}

/// `GET /_matrix/client/v3/auth/{authType}/fallback/web?session=...`: for `m.login.sso`, a
/// page saying what is being confirmed, with a link to each provider the account is linked to.
pub async fn get_uiaa_fallback_page(
    hs: Homeserver,
    req: Ruma<get_uiaa_fallback_page::v3::Request>,
) -> ApiResult<get_uiaa_fallback_page::v3::Response> {
    if req.body.auth_type != AuthType::Sso {
        return Err(Error::not_found(format!("No fallback page for {}", req.body.auth_type)).into());
    }
    let (operation, links) = hs.sso.start_uia(&req.body.session).await?;
    let buttons: String = links
        .iter()
        .map(|(p, url)| {
            format!("<p><a class=\"provider\" href=\"{}\">Continue with {}</a></p>\n", esc(url), esc(&p.name))
        })
        .collect();
    let content = format!(
        "<p>To continue, confirm your identity for this operation: <code>{}</code>.</p>\n{buttons}",
        esc(&operation)
    );
    Ok(get_uiaa_fallback_page::v3::Response::html(page("Confirm your identity", &content).into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn html_is_escaped() {
        assert_eq!(esc(r#"<a href="x">&'"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
