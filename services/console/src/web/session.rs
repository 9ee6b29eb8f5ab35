//! Signing in to the pages: a token (the operator token or a tenant's API key) posted once,
//! then kept in a cookie the browser sends with every page, the call's audio and the live
//! stream.
//!
//! Consumes the login form and the `Cookie` header; produces the cookie (`HttpOnly`, so no
//! script reads it; `SameSite=Strict`, so no other site's page sends it; `Secure` when the
//! request came over https, directly or as `X-Forwarded-Proto`/`Forwarded` say), its
//! removal, and [`PageViewer`]: the viewer of a signed-in request, or a redirect to the
//! login page. The cookie holds the token itself, hex-encoded, checked again on every
//! request against the tenants as they are now: a key removed from the tenants file signs
//! its pages out at once. (Not its hash: `api_key_sha256` is in the tenants file, which is
//! not secret.) State: none on the server.

use axum::Form;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::layout;
use crate::ConsoleState;
use crate::access::Viewer;

/// The cookie's name.
pub const COOKIE: &str = "sb_console";
/// How long a sign-in lasts.
const MAX_AGE_SECS: u64 = 12 * 3600;
/// A longer token is no one's (and would not fit a cookie).
const MAX_TOKEN_BYTES: usize = 1024;
/// Where a sign-in goes when it was not sent from a page.
const HOME: &str = "/console/calls";

/// A page request from a signed-in browser.
#[derive(Debug, Clone)]
pub struct PageViewer(pub Viewer);

impl FromRequestParts<ConsoleState> for PageViewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(viewer) = cookie_token(&parts.headers).and_then(|t| state.viewer(&t)) {
            return Ok(Self(viewer));
        }
        let here = parts
            .uri
            .path_and_query()
            .map_or(HOME, |p| p.as_str())
            .to_owned();
        let query = serde_urlencoded::to_string([("next", here)]).unwrap_or_default();
        Err(Redirect::to(&format!("/console/login?{query}")).into_response())
    }
}

/// The token in the request's cookie, if any.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .and_then(|(_, value)| hex::decode(value).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

/// The `Set-Cookie` value signing in with `token` (`None`: signing out).
pub fn set_cookie(token: Option<&str>, secure: bool) -> HeaderValue {
    let (value, max_age) = match token {
        Some(token) => (hex::encode(token), MAX_AGE_SECS),
        None => (String::new(), 0),
    };
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/console; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .expect("hex and fixed attributes are a valid header value")
}

/// Whether the browser reached us over https (directly, or through a proxy that says so).
pub fn is_https(headers: &HeaderMap) -> bool {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let forwarded_proto = header("x-forwarded-proto")
        .and_then(|v| v.split(',').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    let forwarded = header("forwarded").is_some_and(|v| {
        v.split([';', ','])
            .filter_map(|p| p.trim().split_once('='))
            .any(|(k, v)| k.eq_ignore_ascii_case("proto") && v.trim_matches('"') == "https")
    });
    forwarded_proto || forwarded
}

/// Only a console page is a place to go back to (no other host, no `//`).
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/console/") && !n.starts_with("//") && !n.contains('\\') => n,
        _ => HOME,
    }
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

fn login_page(next: &str, failed: bool) -> axum::response::Html<String> {
    layout(
        "Sign in",
        None,
        html! {
            section.login {
                h1 { "Sign in" }
                p {
                    "The operator token sees every tenant's calls; "
                    "a tenant's API key sees that tenant's."
                }
                @if failed {
                    p.message.error role="alert" {
                        "That token is neither the operator token nor a tenant's API key."
                    }
                }
                form method="post" action="/console/login" {
                    input type="hidden" name="next" value=(next);
                    label for="token" { "Token" }
                    input #token type="password" name="token" autocomplete="current-password"
                        required autofocus;
                    button #signin type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// `GET /console/login`: the form.
pub async fn form(Query(q): Query<NextQuery>) -> Response {
    login_page(safe_next(q.next.as_deref()), false).into_response()
}

/// `POST /console/login`: the cookie and back where the browser came from, or the form
/// again with 401.
pub async fn login(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let token = form.token.trim();
    let viewer = (token.len() <= MAX_TOKEN_BYTES)
        .then(|| state.viewer(token))
        .flatten();
    let Some(viewer) = viewer else {
        tracing::info!("console sign-in refused");
        return (StatusCode::UNAUTHORIZED, login_page(next, true)).into_response();
    };
    tracing::info!(viewer = %viewer.label(), "console sign-in");
    let cookie = set_cookie(Some(token), is_https(&headers));
    ([(header::SET_COOKIE, cookie)], Redirect::to(next)).into_response()
}

/// `GET|POST /console/logout`: the cookie removed.
pub async fn logout(headers: HeaderMap) -> Response {
    let cookie = set_cookie(None, is_https(&headers));
    (
        [(header::SET_COOKIE, cookie)],
        Redirect::to("/console/login"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    /// The token goes out hex-encoded in a cookie scripts cannot read and other sites
    /// cannot send, and comes back whatever other cookies surround it.
    #[test]
    fn the_cookie_carries_the_token_there_and_back() {
        let set = set_cookie(Some("s3cret; x=y"), false);
        let set = set.to_str().unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        assert!(!set.contains("Secure") && !set.contains("s3cret"), "{set}");
        let value = set.split(';').next().unwrap();
        let back = headers(&[("cookie", &format!("a=b; {value}; c=d"))]);
        assert_eq!(cookie_token(&back).as_deref(), Some("s3cret; x=y"));
        assert_eq!(cookie_token(&headers(&[("cookie", "sb_console=zz")])), None);
        assert!(
            set_cookie(Some("t"), true)
                .to_str()
                .unwrap()
                .ends_with("; Secure")
        );
        assert!(
            set_cookie(None, false)
                .to_str()
                .unwrap()
                .contains("Max-Age=0")
        );
    }

    /// https is what the request or its proxy says; plain http otherwise.
    #[test]
    fn https_is_seen_through_proxies() {
        assert!(is_https(&headers(&[("x-forwarded-proto", "https")])));
        assert!(is_https(&headers(&[("x-forwarded-proto", "HTTPS, http")])));
        assert!(is_https(&headers(&[(
            "forwarded",
            "for=1.2.3.4;proto=https"
        )])));
        assert!(!is_https(&headers(&[("x-forwarded-proto", "http")])));
        assert!(!is_https(&HeaderMap::new()));
    }

    /// A sign-in only ever sends the browser to a console page.
    #[test]
    fn next_stays_on_the_console() {
        assert_eq!(safe_next(Some("/console/calls/CA1")), "/console/calls/CA1");
        assert_eq!(safe_next(Some("https://evil.example/")), HOME);
        assert_eq!(safe_next(Some("//evil.example/console/")), HOME);
        assert_eq!(safe_next(Some("/console/\\evil")), HOME);
        assert_eq!(safe_next(None), HOME);
    }
}
