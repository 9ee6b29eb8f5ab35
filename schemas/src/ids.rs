//! Validated identifiers: tenant ids and Twilio call sids.
//!
//! Both end up as subject tokens and Redis key parts, so anything that is not exactly the
//! documented shape is rejected here, before it can reach a subject (ARCHITECTURE §3).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an identifier was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("invalid tenant id {0:?}: expected 1-32 characters of [a-z0-9-]")]
    Tenant(String),
    #[error("invalid call sid {0:?}: expected \"CA\" followed by 32 hex digits")]
    CallSid(String),
}

/// A tenant id: `[a-z0-9-]{1,32}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    /// Validates `raw` as a tenant id.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let ok = (1..=32).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(IdError::Tenant(clip(raw)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A Twilio call sid: `CA` followed by 32 hex digits (34 characters).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CallSid(String);

impl CallSid {
    /// Validates `raw` as a call sid.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let ok = raw.len() == 34
            && raw.starts_with("CA")
            && raw.bytes().skip(2).all(|b| b.is_ascii_hexdigit());
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(IdError::CallSid(clip(raw)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Keeps error messages bounded when the input is hostile.
fn clip(raw: &str) -> String {
    raw.chars().take(48).collect()
}

macro_rules! string_id {
    ($t:ty) => {
        impl TryFrom<String> for $t {
            type Error = IdError;
            fn try_from(raw: String) -> Result<Self, IdError> {
                Self::parse(&raw)
            }
        }
        impl From<$t> for String {
            fn from(id: $t) -> String {
                id.0
            }
        }
        impl std::str::FromStr for $t {
            type Err = IdError;
            fn from_str(raw: &str) -> Result<Self, IdError> {
                Self::parse(raw)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}
string_id!(TenantId);
string_id!(CallSid);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids() {
        for ok in ["acme", "a", "tenant-42", "0123456789abcdef0123456789abcdef"] {
            assert!(TenantId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Acme",
            "a.b",
            "a*",
            "a>",
            "a b",
            "ümlaut",
            &"x".repeat(33),
        ] {
            assert!(TenantId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn call_sids() {
        assert!(CallSid::parse("CA0123456789abcdef0123456789abcdef").is_ok());
        assert!(CallSid::parse("CA0123456789ABCDEF0123456789ABCDEF").is_ok());
        for bad in [
            "",
            "CA123",
            "XX0123456789abcdef0123456789abcdef",
            "CA0123456789abcdef0123456789abcdeg",
            "CA0123456789abcdef0123456789abcdef0",
            "CA0123456789abcdef.123456789abcdef",
        ] {
            assert!(CallSid::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deserialising_validates() {
        let err = serde_json::from_str::<TenantId>("\"BAD.ID\"").unwrap_err();
        assert!(err.to_string().contains("invalid tenant id"), "{err}");
    }
}
