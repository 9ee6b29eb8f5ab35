//! The per-call media-socket credential: what ties a Media Streams socket to the webhook
//! that admitted its call.
//!
//! The upgrade's `X-Twilio-Signature` covers only the stream URL, the same for every call
//! and never expiring, so it cannot say which call a socket belongs to. Whoever answers a
//! call with `<Connect><Stream>` (the ingress' webhook; the dialer, for calls it places)
//! therefore adds a `<Parameter name="credential">` that Twilio echoes in
//! `start.customParameters`: `v1.{expiry}.{mac}`, where `expiry` is unix seconds and `mac`
//! is base64url (no padding) of HMAC-SHA256, under a server secret, over the call sid, the
//! admitted tenant, the stream URL and the expiry (each length-prefixed, after a domain
//! tag). 57 characters, far under Twilio's 500 per parameter. Only the secret's holders can
//! make one, and one is good for one call, one tenant, one stream URL, until it expires.
//!
//! Consumes the secret, a validity, a [`CallBinding`] and the time; produces credential
//! strings or a verdict. Stateless: [`CallCredentials`] holds only the keyed MAC. Not a
//! Twilio fact but carried by one (a TwiML parameter), so it lives with them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The `<Parameter>` (and `customParameters` key) that carries a call's credential.
pub const PARAMETER: &str = "credential";
/// The format this code issues and accepts.
const VERSION: &str = "v1";
/// Separates this MAC from any other use of the same secret.
const DOMAIN: &[u8] = b"switchboard/call-credential/v1";
/// Bytes of an HMAC-SHA256 tag.
const MAC_BYTES: usize = 32;
/// Longer strings are not looked at (a v1 credential is under 64 characters).
const MAX_CHARS: usize = 128;

/// What a credential is bound to: one call, its admitted tenant, the stream URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallBinding<'a> {
    /// Twilio's CallSid (`CA…`).
    pub call_sid: &'a str,
    /// The tenant the call was admitted for.
    pub tenant: &'a str,
    /// The `<Stream url>` the socket connects to (`wss://…`).
    pub stream_url: &'a str,
}

/// Why a credential was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Not `v{n}.{digits}.{43 base64url characters}`.
    #[error("malformed call credential")]
    Malformed,
    /// A well-formed credential of a format this code does not know.
    #[error("unsupported call credential version")]
    Version,
    /// The MAC does not match this call, tenant, stream URL and expiry under our secret.
    #[error("call credential does not match the call")]
    Mismatch,
    /// Genuine, but its expiry (unix seconds) has passed.
    #[error("call credential expired at {expiry}")]
    Expired { expiry: u64 },
}

impl CredentialError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Version => "version",
            Self::Mismatch => "mismatch",
            Self::Expired { .. } => "expired",
        }
    }
}

/// Issues and verifies call credentials under one secret. Cheap to clone.
#[derive(Clone)]
pub struct CallCredentials {
    /// HMAC-SHA256 keyed once with the secret; cloned per credential.
    mac: Hmac<Sha256>,
    validity: Duration,
}

impl std::fmt::Debug for CallCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallCredentials")
            .field("secret", &"<redacted>")
            .field("validity", &self.validity)
            .finish()
    }
}

impl CallCredentials {
    /// Credentials under `secret`, each valid for `validity` after it is issued.
    pub fn new(secret: &[u8], validity: Duration) -> Self {
        Self {
            mac: Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any size"),
            validity,
        }
    }

    /// How long an issued credential is valid.
    pub fn validity(&self) -> Duration {
        self.validity
    }

    /// A credential for `call`, valid from `now` for [`Self::validity`].
    pub fn issue(&self, call: &CallBinding<'_>, now: SystemTime) -> String {
        self.issue_until(call, unix_secs(now).saturating_add(self.validity.as_secs()))
    }

    /// A credential for `call` that expires at `expiry` (unix seconds).
    pub fn issue_until(&self, call: &CallBinding<'_>, expiry: u64) -> String {
        let tag = self.tag(call, expiry).finalize().into_bytes();
        format!("{VERSION}.{expiry}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Accepts `credential` only if this secret issued it for exactly `call` and its expiry
    /// is not past at `now`. The MAC is compared in constant time, before the expiry, so
    /// [`CredentialError::Expired`] is only ever said of a genuine credential.
    pub fn verify(
        &self,
        credential: &str,
        call: &CallBinding<'_>,
        now: SystemTime,
    ) -> Result<(), CredentialError> {
        let (expiry, tag) = parse(credential)?;
        self.tag(call, expiry)
            .verify_slice(&tag)
            .map_err(|_| CredentialError::Mismatch)?;
        if unix_secs(now) > expiry {
            return Err(CredentialError::Expired { expiry });
        }
        Ok(())
    }

    fn tag(&self, call: &CallBinding<'_>, expiry: u64) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(DOMAIN);
        let expiry = expiry.to_string();
        for field in [call.call_sid, call.tenant, call.stream_url, &expiry] {
            // Length-prefixed, so no two bindings share an input.
            mac.update(&(field.len() as u32).to_be_bytes());
            mac.update(field.as_bytes());
        }
        mac
    }
}

/// `(expiry, tag)` of a `v1` credential.
fn parse(credential: &str) -> Result<(u64, [u8; MAC_BYTES]), CredentialError> {
    if credential.len() > MAX_CHARS {
        return Err(CredentialError::Malformed);
    }
    let mut parts = credential.split('.');
    let (Some(version), Some(expiry), Some(tag), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(CredentialError::Malformed);
    };
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    if version != VERSION {
        return Err(match version.strip_prefix('v') {
            Some(n) if digits(n) => CredentialError::Version,
            _ => CredentialError::Malformed,
        });
    }
    if !digits(expiry) {
        return Err(CredentialError::Malformed);
    }
    let expiry = expiry.parse().map_err(|_| CredentialError::Malformed)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .ok()
        .and_then(|bytes| <[u8; MAC_BYTES]>::try_from(bytes).ok())
        .ok_or(CredentialError::Malformed)?;
    Ok((expiry, tag))
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "CA0123456789abcdef0123456789abcdef";
    const URL: &str = "wss://agent.example.com/twilio/media";

    fn acme() -> CallBinding<'static> {
        CallBinding {
            call_sid: SID,
            tenant: "acme",
            stream_url: URL,
        }
    }

    /// One row of the verdict table: name, credential, binding, now, verdict.
    type Case<'a> = (
        &'a str,
        String,
        CallBinding<'a>,
        u64,
        Result<(), CredentialError>,
    );

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Replaces the last character of the MAC with another base64url one.
    fn tamper(credential: &str) -> String {
        let mut out = credential.to_owned();
        let last = out.pop().unwrap_or('A');
        out.push(if last == 'A' { 'B' } else { 'A' });
        out
    }

    /// Each case gets exactly its verdict: a credential verifies only for the call, tenant
    /// and stream URL it was issued for, with its MAC and expiry untouched, until it
    /// expires; anything not in the v1 shape is malformed, another version is named.
    #[test]
    fn verdict_table() {
        let credentials = CallCredentials::new(
            b"0123456789abcdef0123456789abcdef",
            Duration::from_secs(300),
        );
        let issued = credentials.issue(&acme(), at(1_000_000));
        assert!(issued.starts_with("v1.1000300."), "{issued}");
        let other_sid = CallBinding {
            call_sid: "CAffffffffffffffffffffffffffffffff",
            ..acme()
        };
        let globex = CallBinding {
            tenant: "globex",
            ..acme()
        };
        let other_url = CallBinding {
            stream_url: "wss://other.example.com/twilio/media",
            ..acme()
        };
        let (_, tag) = issued.rsplit_once('.').unwrap();
        let later_expiry = format!("v1.1000301.{tag}");
        let other_secret = CallCredentials::new(b"another secret", Duration::from_secs(300))
            .issue(&acme(), at(1_000_000));
        let cases: Vec<Case<'_>> = vec![
            ("valid", issued.clone(), acme(), 1_000_000, Ok(())),
            (
                "valid at its expiry",
                issued.clone(),
                acme(),
                1_000_300,
                Ok(()),
            ),
            (
                "wrong sid",
                issued.clone(),
                other_sid,
                1_000_000,
                Err(CredentialError::Mismatch),
            ),
            (
                "wrong tenant",
                issued.clone(),
                globex,
                1_000_000,
                Err(CredentialError::Mismatch),
            ),
            (
                "wrong url",
                issued.clone(),
                other_url,
                1_000_000,
                Err(CredentialError::Mismatch),
            ),
            (
                "expired",
                issued.clone(),
                acme(),
                1_000_301,
                Err(CredentialError::Expired { expiry: 1_000_300 }),
            ),
            (
                "tampered mac",
                tamper(&issued),
                acme(),
                1_000_000,
                Err(CredentialError::Mismatch),
            ),
            (
                "tampered expiry",
                later_expiry,
                acme(),
                1_000_000,
                Err(CredentialError::Mismatch),
            ),
            (
                "other secret",
                other_secret,
                acme(),
                1_000_000,
                Err(CredentialError::Mismatch),
            ),
            (
                "wrong version",
                issued.replacen("v1", "v2", 1),
                acme(),
                1_000_000,
                Err(CredentialError::Version),
            ),
        ];
        for (name, credential, call, now, expected) in cases {
            assert_eq!(
                credentials.verify(&credential, &call, at(now)),
                expected,
                "{name}"
            );
        }
        let malformed = [
            "".to_owned(),
            "v1".to_owned(),
            "v1.1000300".to_owned(),
            format!("{issued}.x"),
            issued.replacen("v1", "x1", 1),
            issued.replacen("v1.", "v1.-", 1),
            issued.replacen("1000300", "10003OO", 1),
            issued[..issued.len() - 1].to_owned(),
            format!("{issued}AA"),
            issued.replace('-', "+").replace('_', "/") + "=",
            format!("v1.1.{}", "A".repeat(200)),
        ];
        for credential in malformed {
            if credential == issued {
                continue;
            }
            assert_eq!(
                credentials.verify(&credential, &acme(), at(1_000_000)),
                Err(CredentialError::Malformed),
                "{credential:?}"
            );
        }
    }

    /// The credential is compact (far under Twilio's 500 characters per parameter), is
    /// valid for the configured time, and neither it nor `Debug` shows the secret.
    #[test]
    fn compact_and_secret_free() {
        let credentials =
            CallCredentials::new(b"hunter2-hunter2-hunter2-hunter2!", Duration::from_secs(60));
        let issued = credentials.issue(&acme(), at(1_700_000_000));
        assert_eq!(issued.len(), "v1.1700000060.".len() + 43, "{issued}");
        assert!(issued.len() + PARAMETER.len() < crate::twiml::MAX_PARAMETER_CHARS);
        assert!(!format!("{credentials:?}").contains("hunter2"));
        assert_eq!(credentials.validity(), Duration::from_secs(60));
        assert!(
            credentials
                .verify(&issued, &acme(), at(1_700_000_060))
                .is_ok()
        );
    }
}
