//! Answering Machine Detection on created calls (Twilio's AMD docs, PROTOCOLS §4): the
//! create parameters (`MachineDetection`, `AsyncAmd`, `AsyncAmdStatusCallback`,
//! `AsyncAmdStatusCallbackMethod`, `MachineDetectionTimeout`), the `AnsweredBy` values and
//! the asynchronous AMD callback Twilio POSTs (`CallSid`, `AccountSid`, `AnsweredBy`,
//! `MachineDetectionDuration` in milliseconds).
//!
//! Consumes form pairs; produces typed values (validated with Twilio's error 21234) and the
//! callback's form pairs. Stateless.

use crate::form::{FormError, first, number, required};
use crate::rest::ApiError;

/// `MachineDetection`: what the detector waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MachineDetection {
    /// Report as soon as the callee is classified (`human`, `machine_start`, `fax`, `unknown`).
    Enable,
    /// For a machine, wait for the end of its greeting (`machine_end_beep`,
    /// `machine_end_silence`, `machine_end_other`), so a message can be left after it.
    DetectMessageEnd,
}

impl MachineDetection {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enable => "Enable",
            Self::DetectMessageEnd => "DetectMessageEnd",
        }
    }

    /// Parses a wire value (exact case, as Twilio documents it).
    pub fn parse(value: &str) -> Option<Self> {
        [Self::Enable, Self::DetectMessageEnd]
            .into_iter()
            .find(|m| m.as_str() == value)
    }
}

/// `MachineDetectionTimeout` must lie in this range (seconds), else 21234.
pub const MACHINE_DETECTION_TIMEOUT_SECS: std::ops::RangeInclusive<u32> = 3..=59;

/// The AMD fields of a create request, as [`crate::CreateCall`] carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AmdRequest {
    pub machine_detection: Option<MachineDetection>,
    pub async_amd: bool,
    pub async_amd_status_callback: Option<String>,
    pub async_amd_status_callback_method: Option<String>,
    pub machine_detection_timeout_secs: Option<u32>,
}

/// The create fields [`AmdRequest`] reads (so they are not kept as untyped extras).
pub(crate) const AMD_FIELDS: &[&str] = &[
    "MachineDetection",
    "AsyncAmd",
    "AsyncAmdStatusCallback",
    "AsyncAmdStatusCallbackMethod",
    "MachineDetectionTimeout",
];

impl AmdRequest {
    /// Reads and validates the AMD fields: a `MachineDetection` other than `Enable` /
    /// `DetectMessageEnd` or a `MachineDetectionTimeout` outside 3–59 is 400 / 21234;
    /// `AsyncAmd` is `true` or `false`; the callback method `GET` or `POST`.
    pub(crate) fn from_params(params: &[(String, String)]) -> Result<Self, ApiError> {
        let invalid = |message: String| ApiError::invalid(21234, message);
        let machine_detection = first(params, "MachineDetection")
            .map(|v| {
                MachineDetection::parse(v)
                    .ok_or_else(|| invalid(format!("Invalid MachineDetection value: {v}")))
            })
            .transpose()?;
        let async_amd = match first(params, "AsyncAmd") {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(v) => return Err(ApiError::invalid(21234, format!("Invalid AsyncAmd: {v}"))),
        };
        let timeout = first(params, "MachineDetectionTimeout")
            .map(|v| {
                v.parse::<u32>()
                    .ok()
                    .filter(|t| MACHINE_DETECTION_TIMEOUT_SECS.contains(t))
                    .ok_or_else(|| invalid(format!("Invalid MachineDetectionTimeout: {v}")))
            })
            .transpose()?;
        let method = first(params, "AsyncAmdStatusCallbackMethod");
        if let Some(m) = method
            && !["GET", "POST"].contains(&m)
        {
            return Err(ApiError::invalid(
                21234,
                format!("Invalid AsyncAmdStatusCallbackMethod: {m}"),
            ));
        }
        Ok(Self {
            machine_detection,
            async_amd,
            async_amd_status_callback: first(params, "AsyncAmdStatusCallback").map(str::to_owned),
            async_amd_status_callback_method: method.map(str::to_owned),
            machine_detection_timeout_secs: timeout,
        })
    }

    /// The form pairs (only what is set; `AsyncAmd` only when true).
    pub(crate) fn to_params(&self, out: &mut Vec<(String, String)>) {
        let mut push = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                out.push((name.to_owned(), value));
            }
        };
        push(
            "MachineDetection",
            self.machine_detection.map(|m| m.as_str().to_owned()),
        );
        push("AsyncAmd", self.async_amd.then(|| "true".to_owned()));
        push(
            "AsyncAmdStatusCallback",
            self.async_amd_status_callback.clone(),
        );
        push(
            "AsyncAmdStatusCallbackMethod",
            self.async_amd_status_callback_method.clone(),
        );
        push(
            "MachineDetectionTimeout",
            self.machine_detection_timeout_secs.map(|t| t.to_string()),
        );
    }
}

/// `AnsweredBy`: who or what the detector says picked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnsweredBy {
    Human,
    /// `Enable`: a machine, reported as soon as recognised.
    MachineStart,
    /// `DetectMessageEnd`: the greeting ended with a beep.
    MachineEndBeep,
    MachineEndSilence,
    MachineEndOther,
    Fax,
    Unknown,
}

impl AnsweredBy {
    const ALL: [Self; 7] = [
        Self::Human,
        Self::MachineStart,
        Self::MachineEndBeep,
        Self::MachineEndSilence,
        Self::MachineEndOther,
        Self::Fax,
        Self::Unknown,
    ];

    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Human => "human",
            Self::MachineStart => "machine_start",
            Self::MachineEndBeep => "machine_end_beep",
            Self::MachineEndSilence => "machine_end_silence",
            Self::MachineEndOther => "machine_end_other",
            Self::Fax => "fax",
            Self::Unknown => "unknown",
        }
    }

    /// Parses a wire value.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == value)
    }

    /// Whether a machine answered (any `machine_*` or `fax`).
    pub fn is_machine(self) -> bool {
        !matches!(self, Self::Human | Self::Unknown)
    }
}

/// The POST to `AsyncAmdStatusCallback` when detection finishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmdCallback {
    pub call_sid: String,
    pub account_sid: String,
    pub answered_by: AnsweredBy,
    /// How long detection took, milliseconds.
    pub machine_detection_duration_ms: Option<u64>,
    /// Every field as received, in order: what the signature covers.
    pub params: Vec<(String, String)>,
}

impl AmdCallback {
    /// The callback Twilio sends for `call_sid` after `duration_ms` of detection.
    pub fn new(
        account_sid: &str,
        call_sid: &str,
        answered_by: AnsweredBy,
        duration_ms: u64,
    ) -> Self {
        let params = [
            ("AccountSid", account_sid.to_owned()),
            ("AnsweredBy", answered_by.as_str().to_owned()),
            ("CallSid", call_sid.to_owned()),
            ("MachineDetectionDuration", duration_ms.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Self {
            call_sid: call_sid.to_owned(),
            account_sid: account_sid.to_owned(),
            answered_by,
            machine_detection_duration_ms: Some(duration_ms),
            params,
        }
    }

    /// Reads callback fields.
    pub fn from_params(params: Vec<(String, String)>) -> Result<Self, FormError> {
        let answered = required(&params, "AnsweredBy")?;
        let answered_by = AnsweredBy::parse(&answered).ok_or(FormError::Invalid {
            field: "AnsweredBy",
            value: answered,
        })?;
        Ok(Self {
            call_sid: required(&params, "CallSid")?,
            account_sid: required(&params, "AccountSid")?,
            answered_by,
            machine_detection_duration_ms: number(&params, "MachineDetectionDuration")?,
            params,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::form::{encode_form, parse_form};

    fn amd(body: &str) -> Result<AmdRequest, ApiError> {
        AmdRequest::from_params(&parse_form(body.as_bytes()).expect("form"))
    }

    /// The documented values parse and re-encode; anything else is 400 / 21234.
    #[test]
    fn amd_fields() {
        let full = "MachineDetection=DetectMessageEnd&AsyncAmd=true\
            &AsyncAmdStatusCallback=https%3A%2F%2Fa.example%2Famd&AsyncAmdStatusCallbackMethod=POST\
            &MachineDetectionTimeout=30";
        let parsed = amd(full).expect("valid");
        assert_eq!(
            parsed.machine_detection,
            Some(MachineDetection::DetectMessageEnd)
        );
        assert!(parsed.async_amd);
        assert_eq!(parsed.machine_detection_timeout_secs, Some(30));
        let mut back = Vec::new();
        parsed.to_params(&mut back);
        assert_eq!(encode_form(&back), full);
        assert_eq!(amd("").expect("empty"), AmdRequest::default());
        for bad in [
            "MachineDetection=enable",
            "MachineDetection=Detect",
            "MachineDetectionTimeout=2",
            "MachineDetectionTimeout=60",
            "MachineDetectionTimeout=x",
            "AsyncAmd=yes",
            "AsyncAmdStatusCallbackMethod=PUT",
        ] {
            let error = amd(bad).expect_err(bad);
            assert_eq!((error.status, error.code), (400, 21234), "{bad}");
        }
    }

    /// The async callback round-trips; an unknown `AnsweredBy` is refused.
    #[test]
    fn amd_callback() {
        let built = AmdCallback::new("AC1", "CA1", AnsweredBy::MachineEndBeep, 4200);
        let parsed = AmdCallback::from_params(built.params.clone()).expect("valid");
        assert_eq!(parsed, built);
        assert!(parsed.answered_by.is_machine() && !AnsweredBy::Human.is_machine());
        let bad = parse_form(b"CallSid=CA1&AccountSid=AC1&AnsweredBy=robot").expect("form");
        assert_eq!(
            AmdCallback::from_params(bad).expect_err("robot").kind(),
            "invalid"
        );
    }
}
