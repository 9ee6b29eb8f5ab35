//! Updating a live call (PROTOCOLS §4): `POST …/Calls/{CallSid}.json` with
//! `Status=completed|canceled` (hang up) or `Url`/`Twiml` (redirect).
//!
//! Consumes form pairs or a typed update; produces a validated [`UpdateCall`] (400 / 21218
//! otherwise) and its form body. Stateless.

use crate::form::{encode_form, first};
use crate::rest::{ApiError, CallStatus};

/// `POST …/Calls/{CallSid}.json`: hang up (`Status=completed|canceled`) or redirect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateCall {
    pub status: Option<CallStatus>,
    pub url: Option<String>,
    pub method: Option<String>,
    pub twiml: Option<String>,
}

impl UpdateCall {
    /// Hang up an answered call.
    pub fn hang_up() -> Self {
        Self {
            status: Some(CallStatus::Completed),
            ..Self::default()
        }
    }

    /// The form pairs.
    pub fn to_params(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(status) = self.status {
            out.push(("Status".to_owned(), status.as_str().to_owned()));
        }
        for (name, value) in [
            ("Url", &self.url),
            ("Method", &self.method),
            ("Twiml", &self.twiml),
        ] {
            if let Some(value) = value {
                out.push((name.to_owned(), value.clone()));
            }
        }
        out
    }

    /// The form body.
    pub fn to_form(&self) -> String {
        encode_form(&self.to_params())
    }

    /// Reads an update; `Status` may only be `completed` or `canceled`.
    pub fn from_params(params: &[(String, String)]) -> Result<Self, ApiError> {
        let status = match first(params, "Status") {
            Some(value) => match CallStatus::parse(value) {
                Some(status @ (CallStatus::Completed | CallStatus::Canceled)) => Some(status),
                _ => return Err(ApiError::invalid(21218, format!("Invalid Status: {value}"))),
            },
            None => None,
        };
        let update = Self {
            status,
            url: first(params, "Url").map(str::to_owned),
            method: first(params, "Method").map(str::to_owned),
            twiml: first(params, "Twiml").map(str::to_owned),
        };
        if update == Self::default() {
            return Err(ApiError::invalid(
                21218,
                "One of Status, Url or Twiml is required",
            ));
        }
        Ok(update)
    }
}
