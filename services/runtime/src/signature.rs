//! Signatures on what Switchboard sends to a tenant's servers (tool calls; webhooks use
//! the same scheme), so the tenant can tell Switchboard from anyone else (PROTOCOLS §10).
//!
//! Consumes the tenant's secret, the Unix time and the exact body bytes; produces the
//! `X-Switchboard-Signature` value `t={unix seconds},v1={hex HMAC-SHA256(secret,
//! "{t}.{body}")}` (the scheme Stripe's and Twilio's users already verify), and checks one
//! with a tolerance on its age so a captured request cannot be replayed later. State: none.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use sb_schemas::TenantId;
use sha2::Sha256;

use crate::{Secret, Tenant, Tenants};

/// Each tenant's signing secret that `needs` one, read through `env` (the process
/// environment in production) from the variable its `signing_secret_env` names. The error
/// names the tenant and the variable that is not set.
pub fn tenant_secrets(
    tenants: &Tenants,
    needs: impl Fn(&Tenant) -> bool,
    env: impl Fn(&str) -> Option<String>,
) -> Result<HashMap<TenantId, Secret>, String> {
    let mut secrets = HashMap::new();
    for tenant in tenants.iter().filter(|t| needs(t)) {
        let var = tenant.signing_secret_env.clone().unwrap_or_default();
        let Some(secret) = env(&var).filter(|v| !v.is_empty()) else {
            return Err(format!(
                "tenant {:?} signs its requests but ${var} (its signing secret) is not set",
                tenant.id.as_str()
            ));
        };
        secrets.insert(tenant.id.clone(), Secret::new(secret));
    }
    Ok(secrets)
}

/// The tenant's signing secret: the one read at start-up, else (a tenant given tools or
/// webhooks by a live configuration change) its variable read from the process now.
pub fn secret_for(known: &HashMap<TenantId, Secret>, tenant: &Tenant) -> Option<Secret> {
    if let Some(secret) = known.get(&tenant.id) {
        return Some(secret.clone());
    }
    let var = tenant.signing_secret_env.as_deref()?;
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .map(Secret::new)
}

/// The request header carrying the signature.
pub const HEADER: &str = "x-switchboard-signature";

/// How old a signature may be when checked, unless the checker says otherwise.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// Why a signature does not check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is not `t=…,v1=…`")]
    Malformed,
    #[error("the signature is {0} s away from now")]
    Stale(u64),
    #[error("the signature does not match the body")]
    Mismatch,
}

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value for `body` sent at `timestamp` (Unix seconds).
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(digest))
}

/// Checks `header` against `body` at `now` (Unix seconds), in constant time.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: u64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut digest = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<u64>().ok(),
            Some(("v1", value)) => digest = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (Some(timestamp), Some(digest)) = (timestamp, digest) else {
        return Err(SignatureError::Malformed);
    };
    let age = now.abs_diff(timestamp);
    if age > tolerance_secs {
        return Err(SignatureError::Stale(age));
    }
    mac(secret, timestamp, body)
        .verify_slice(&digest)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed vector (computed independently with Python's `hmac` module, PROTOCOLS §10),
    /// so the scheme the docs describe is the one the code signs with.
    #[test]
    fn signs_the_documented_vector() {
        let header = sign(b"whsec_test", 1_764_806_400, br#"{"id":"evt_1"}"#);
        assert_eq!(
            header,
            "t=1764806400,v1=65a8a4115cda0d1fceef9dfbb65319161a7fc0687d08d8e6dc9a082cf36582a9"
        );
    }

    #[test]
    fn verifies_its_own_and_refuses_the_rest() {
        let body = br#"{"tool":"book_table"}"#;
        let header = sign(b"s3cret", 1000, body);
        assert_eq!(verify(b"s3cret", &header, body, 1010, 300), Ok(()));
        assert_eq!(
            verify(b"s3cret", &header, b"{}", 1010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", &header, body, 1010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", &header, body, 2000, 300),
            Err(SignatureError::Stale(1000))
        );
        for malformed in ["", "t=1000", "v1=00", "t=x,v1=00", "t=1000,v1=zz"] {
            assert_eq!(
                verify(b"s3cret", malformed, body, 1000, 300),
                Err(SignatureError::Malformed),
                "{malformed:?}"
            );
        }
    }
}
