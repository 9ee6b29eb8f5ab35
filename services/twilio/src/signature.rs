//! `X-Twilio-Signature`: computing it (the stand-in signs what it sends) and validating it
//! the way Twilio's official SDKs do (the ingress checks what it receives).
//!
//! Consumes a URL as Twilio requested it, the request's form parameters (or raw JSON body)
//! and the auth token; produces a base64 HMAC-SHA1 signature or a validation verdict.
//! Stateless: a [`RequestValidator`] only holds the auth token. PROTOCOLS §2.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No URL variant the SDKs try produced the received signature.
    #[error("signature does not match any accepted form of the URL")]
    Mismatch,
    /// A JSON body arrived but the URL carries no `bodySHA256` query parameter.
    #[error("JSON request without a bodySHA256 query parameter")]
    MissingBodyHash,
    /// The SHA-256 of the raw body differs from the URL's `bodySHA256`.
    #[error("bodySHA256 does not match the request body")]
    BodyHashMismatch,
    /// The URL has no `scheme://` prefix, so no variant can be built.
    #[error("not an absolute URL: {0}")]
    InvalidUrl(String),
}

impl SignatureError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Mismatch => "mismatch",
            Self::MissingBodyHash => "missing_body_hash",
            Self::BodyHashMismatch => "body_hash_mismatch",
            Self::InvalidUrl(_) => "invalid_url",
        }
    }
}

/// The exact string Twilio signs: the URL (fragment removed) followed by every parameter
/// name and value, names sorted bytewise, each name's values sorted and de-duplicated.
pub fn string_to_sign<K: AsRef<str>, V: AsRef<str>>(url: &str, params: &[(K, V)]) -> String {
    let mut sorted: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, value) in params {
        sorted
            .entry(name.as_ref())
            .or_default()
            .insert(value.as_ref());
    }
    let mut out = strip_fragment(url).to_owned();
    for (name, values) in sorted {
        for value in values {
            out.push_str(name);
            out.push_str(value);
        }
    }
    out
}

/// `X-Twilio-Signature` for a form request to `url` with `params`.
pub fn sign<K: AsRef<str>, V: AsRef<str>>(
    auth_token: &str,
    url: &str,
    params: &[(K, V)],
) -> String {
    hmac_base64(auth_token, &string_to_sign(url, params))
}

/// `X-Twilio-Signature` for a request without parameters: a GET, a JSON webhook (the URL
/// carries `bodySHA256`) or a Media Streams WebSocket upgrade (sign the `wss://` URL).
pub fn sign_url(auth_token: &str, url: &str) -> String {
    hmac_base64(auth_token, strip_fragment(url))
}

/// The URL Twilio signs for a WebSocket upgrade: `https` becomes `wss`, `http` becomes `ws`.
pub fn websocket_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        url.to_owned()
    }
}

/// Lowercase hex SHA-256 of a raw body, as Twilio puts it in `bodySHA256`.
pub fn body_sha256(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

fn hmac_base64(auth_token: &str, message: &str) -> String {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC accepts keys of any size");
    mac.update(message.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn strip_fragment(url: &str) -> &str {
    url.split_once('#').map_or(url, |(before, _)| before)
}

/// Validates `X-Twilio-Signature` with one auth token, accepting every URL variant the
/// official SDKs accept (with and without the port, with and without userinfo).
#[derive(Clone)]
pub struct RequestValidator {
    auth_token: String,
}

impl std::fmt::Debug for RequestValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestValidator")
            .field("auth_token", &"<redacted>")
            .finish()
    }
}

impl RequestValidator {
    /// A validator for the account's primary auth token.
    pub fn new(auth_token: impl Into<String>) -> Self {
        Self {
            auth_token: auth_token.into(),
        }
    }

    /// Signs like Twilio does (see [`sign`]).
    pub fn sign<K: AsRef<str>, V: AsRef<str>>(&self, url: &str, params: &[(K, V)]) -> String {
        sign(&self.auth_token, url, params)
    }

    /// Validates a form request (or a GET with `params` empty). `url` is the public URL
    /// Twilio requested, e.g. rebuilt from a configured public base URL.
    pub fn validate<K: AsRef<str>, V: AsRef<str>>(
        &self,
        url: &str,
        params: &[(K, V)],
        signature: &str,
    ) -> Result<(), SignatureError> {
        let candidates = url_variants(url, false)?;
        let mut matched = subtle::Choice::from(0);
        for candidate in &candidates {
            matched |= ct_eq(&self.sign(candidate, params), signature);
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }

    /// Validates a JSON webhook: the URL (with its `bodySHA256` query parameter) is signed
    /// without parameters, and the raw body must hash to `bodySHA256`.
    pub fn validate_json(
        &self,
        url: &str,
        body: &[u8],
        signature: &str,
    ) -> Result<(), SignatureError> {
        let expected = query_param(strip_fragment(url), "bodySHA256")
            .ok_or(SignatureError::MissingBodyHash)?;
        let no_params: &[(&str, &str)] = &[];
        self.validate(url, no_params, signature)?;
        if bool::from(ct_eq(&body_sha256(body), &expected.to_ascii_lowercase())) {
            Ok(())
        } else {
            Err(SignatureError::BodyHashMismatch)
        }
    }

    /// Validates a Media Streams WebSocket upgrade. `url` may be given as `https://` or
    /// `wss://` (Twilio signs `wss://`); with and without a trailing `/` are both tried.
    pub fn validate_websocket(&self, url: &str, signature: &str) -> Result<(), SignatureError> {
        let candidates = url_variants(&websocket_url(url), true)?;
        let mut matched = subtle::Choice::from(0);
        for candidate in &candidates {
            matched |= ct_eq(&sign_url(&self.auth_token, candidate), signature);
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

fn ct_eq(a: &str, b: &str) -> subtle::Choice {
    a.as_bytes().ct_eq(b.as_bytes())
}

fn query_param<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    let (_, query) = url.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// An absolute URL cut into the pieces the SDK variants change, without re-encoding
/// anything (the signature is over the exact text).
struct UrlParts<'a> {
    scheme: &'a str,
    userinfo: Option<&'a str>,
    host: &'a str,
    port: Option<&'a str>,
    path: &'a str,
    query: Option<&'a str>,
}

impl<'a> UrlParts<'a> {
    fn parse(url: &'a str) -> Result<Self, SignatureError> {
        let url = strip_fragment(url);
        let (scheme, after) = url
            .split_once("://")
            .ok_or_else(|| SignatureError::InvalidUrl(url.to_owned()))?;
        let authority_end = after.find(['/', '?']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(authority_end);
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        let port_start = match host_port.rfind(']') {
            Some(bracket) => host_port[bracket..].find(':').map(|i| bracket + i),
            None => host_port.rfind(':'),
        };
        let (host, port) = match port_start {
            Some(colon) => (&host_port[..colon], Some(&host_port[colon + 1..])),
            None => (host_port, None),
        };
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        Ok(Self {
            scheme,
            userinfo,
            host,
            port,
            path,
            query,
        })
    }

    fn default_port(&self) -> Option<&'static str> {
        match self.scheme.to_ascii_lowercase().as_str() {
            "https" | "wss" => Some("443"),
            "http" | "ws" => Some("80"),
            _ => None,
        }
    }

    fn render(&self, userinfo: Option<&str>, port: Option<&str>, path: &str) -> String {
        let mut out = format!("{}://", self.scheme);
        if let Some(userinfo) = userinfo {
            out.push_str(userinfo);
            out.push('@');
        }
        out.push_str(self.host);
        if let Some(port) = port {
            out.push(':');
            out.push_str(port);
        }
        out.push_str(path);
        if let Some(query) = self.query {
            out.push('?');
            out.push_str(query);
        }
        out
    }
}

/// Every URL the SDK validators would sign-check: {port removed, port present (the
/// standard one added when absent)} × {userinfo as given, userinfo dropped}, and for
/// WebSocket upgrades also × {path as given, trailing `/` toggled}.
fn url_variants(url: &str, toggle_slash: bool) -> Result<Vec<String>, SignatureError> {
    let parts = UrlParts::parse(url)?;
    let ports = [None, parts.port.or(parts.default_port())];
    let userinfos = [parts.userinfo, None];
    let toggled = match parts.path {
        "" => "/".to_owned(),
        path if path.ends_with('/') => path[..path.len() - 1].to_owned(),
        path => format!("{path}/"),
    };
    let mut paths = vec![parts.path.to_owned()];
    if toggle_slash {
        paths.push(toggled);
    }
    let mut out = Vec::new();
    for userinfo in userinfos {
        for port in ports {
            for path in &paths {
                let candidate = parts.render(userinfo, port, path);
                if !out.contains(&candidate) {
                    out.push(candidate);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "signature_tests.rs"]
mod tests;
