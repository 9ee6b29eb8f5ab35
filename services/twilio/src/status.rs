//! Webhook bodies Twilio POSTs to the application: the incoming-call webhook (PROTOCOLS
//! §1.1) and the call-status callback (§1.3).
//!
//! Consumes form pairs (or raw bodies); produces typed structs that keep the full pair list
//! as received, because the signature covers every field, not just the typed ones. Also
//! builds both bodies the way Twilio does, for the stand-in. Stateless.

use crate::form::{FormError, number, optional, parse_form, required};
use crate::rest::{API_VERSION, CallStatus};

/// `POST` to the number's Voice URL when a call arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingCall {
    /// `CA` + 32 hex.
    pub call_sid: String,
    /// `AC` + 32 hex.
    pub account_sid: String,
    /// E.164, `client:…`, or `anonymous`/`unknown` when withheld.
    pub from: String,
    /// The called number: picks the tenant.
    pub to: String,
    pub call_status: CallStatus,
    pub api_version: String,
    /// `inbound`, `outbound-api`, `outbound-dial` (kept open: Twilio adds values).
    pub direction: String,
    pub forwarded_from: Option<String>,
    pub caller_name: Option<String>,
    pub parent_call_sid: Option<String>,
    pub call_token: Option<String>,
    /// Every field as received, in order: what the signature covers.
    pub params: Vec<(String, String)>,
}

impl IncomingCall {
    /// Reads a webhook body.
    pub fn from_form(body: &[u8]) -> Result<Self, FormError> {
        Self::from_params(parse_form(body)?)
    }

    /// Reads webhook fields.
    pub fn from_params(params: Vec<(String, String)>) -> Result<Self, FormError> {
        Ok(Self {
            call_sid: required(&params, "CallSid")?,
            account_sid: required(&params, "AccountSid")?,
            from: required(&params, "From")?,
            to: required(&params, "To")?,
            call_status: call_status(&params)?,
            api_version: required(&params, "ApiVersion")?,
            direction: required(&params, "Direction")?,
            forwarded_from: optional(&params, "ForwardedFrom")?,
            caller_name: optional(&params, "CallerName")?,
            parent_call_sid: optional(&params, "ParentCallSid")?,
            call_token: optional(&params, "CallToken")?,
            params,
        })
    }

    /// The webhook Twilio sends for a new call, `ringing`, with the legacy `Caller`/`Called`
    /// aliases real requests carry. `direction` is `inbound` or `outbound-api`.
    pub fn ringing(
        account_sid: &str,
        call_sid: &str,
        from: &str,
        to: &str,
        direction: &str,
    ) -> Self {
        let params: Vec<(String, String)> = [
            ("AccountSid", account_sid),
            ("ApiVersion", API_VERSION),
            ("CallSid", call_sid),
            ("CallStatus", "ringing"),
            ("Called", to),
            ("Caller", from),
            ("Direction", direction),
            ("From", from),
            ("FromCountry", "US"),
            ("To", to),
            ("ToCountry", "US"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Self {
            call_sid: call_sid.to_owned(),
            account_sid: account_sid.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
            call_status: CallStatus::Ringing,
            api_version: API_VERSION.to_owned(),
            direction: direction.to_owned(),
            forwarded_from: None,
            caller_name: None,
            parent_call_sid: None,
            call_token: None,
            params,
        }
    }
}

/// `POST` to a `StatusCallback` URL on call progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCallback {
    pub call_sid: String,
    pub account_sid: String,
    pub from: String,
    pub to: String,
    /// `answered` arrives as `in-progress`.
    pub call_status: CallStatus,
    pub api_version: String,
    pub direction: String,
    /// Seconds; only on `completed`.
    pub call_duration_secs: Option<u64>,
    /// Billed minutes; only on `completed`. Not seconds.
    pub duration_mins: Option<u64>,
    pub sip_response_code: Option<u16>,
    /// RFC 2822, UTC.
    pub timestamp: Option<String>,
    /// Always `call-progress-events`.
    pub callback_source: Option<String>,
    /// Event order from 0: callbacks may arrive out of order.
    pub sequence_number: Option<u64>,
    /// `human`, `machine_end_beep`, …: only when AMD was requested on the call.
    pub answered_by: Option<String>,
    /// Every field as received, in order: what the signature covers.
    pub params: Vec<(String, String)>,
}

impl StatusCallback {
    /// Reads a callback body.
    pub fn from_form(body: &[u8]) -> Result<Self, FormError> {
        Self::from_params(parse_form(body)?)
    }

    /// Reads callback fields.
    pub fn from_params(params: Vec<(String, String)>) -> Result<Self, FormError> {
        Ok(Self {
            call_sid: required(&params, "CallSid")?,
            account_sid: required(&params, "AccountSid")?,
            from: required(&params, "From")?,
            to: required(&params, "To")?,
            call_status: call_status(&params)?,
            api_version: required(&params, "ApiVersion")?,
            direction: required(&params, "Direction")?,
            call_duration_secs: number(&params, "CallDuration")?,
            duration_mins: number(&params, "Duration")?,
            sip_response_code: number(&params, "SipResponseCode")?,
            timestamp: optional(&params, "Timestamp")?,
            callback_source: optional(&params, "CallbackSource")?,
            sequence_number: number(&params, "SequenceNumber")?,
            answered_by: optional(&params, "AnsweredBy")?,
            params,
        })
    }

    /// The `completed` callback Twilio sends when a call of `call_duration_secs` ends.
    pub fn completed(
        call: &IncomingCall,
        call_duration_secs: u64,
        sequence_number: u64,
        timestamp: &str,
    ) -> Self {
        let minutes = call_duration_secs.div_ceil(60).max(1);
        let mut params: Vec<(String, String)> = [
            ("AccountSid", call.account_sid.as_str()),
            ("ApiVersion", API_VERSION),
            ("CallSid", call.call_sid.as_str()),
            ("CallStatus", "completed"),
            ("Called", call.to.as_str()),
            ("Caller", call.from.as_str()),
            ("Direction", call.direction.as_str()),
            ("From", call.from.as_str()),
            ("To", call.to.as_str()),
            ("Timestamp", timestamp),
            ("CallbackSource", "call-progress-events"),
            ("SipResponseCode", "200"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        params.push(("CallDuration".to_owned(), call_duration_secs.to_string()));
        params.push(("Duration".to_owned(), minutes.to_string()));
        params.push(("SequenceNumber".to_owned(), sequence_number.to_string()));
        Self {
            call_sid: call.call_sid.clone(),
            account_sid: call.account_sid.clone(),
            from: call.from.clone(),
            to: call.to.clone(),
            call_status: CallStatus::Completed,
            api_version: API_VERSION.to_owned(),
            direction: call.direction.clone(),
            call_duration_secs: Some(call_duration_secs),
            duration_mins: Some(minutes),
            sip_response_code: Some(200),
            timestamp: Some(timestamp.to_owned()),
            callback_source: Some("call-progress-events".to_owned()),
            sequence_number: Some(sequence_number),
            answered_by: None,
            params,
        }
    }
}

fn call_status(params: &[(String, String)]) -> Result<CallStatus, FormError> {
    let value = required(params, "CallStatus")?;
    CallStatus::parse(&value).ok_or(FormError::Invalid {
        field: "CallStatus",
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::form::encode_form;

    /// The documented example webhook parses, and its full field list is kept for signing.
    #[test]
    fn incoming_call_example() {
        let body = "AccountSid=AC0123456789abcdef0123456789abcdef&ApiVersion=2010-04-01\
            &CallSid=CA0123456789abcdef0123456789abcdef&CallStatus=ringing&Called=%2B15005550006\
            &Caller=%2B14155551234&Direction=inbound&From=%2B14155551234&FromCountry=US\
            &To=%2B15005550006&ToCountry=US&StirVerstat=TN-Validation-Passed-A";
        let call = IncomingCall::from_form(body.as_bytes()).unwrap();
        assert_eq!(call.from, "+14155551234");
        assert_eq!(call.to, "+15005550006");
        assert_eq!(call.call_status, CallStatus::Ringing);
        assert_eq!(
            call.params.len(),
            12,
            "unknown fields are kept for the signature"
        );
        let built = IncomingCall::ringing(
            "AC0123456789abcdef0123456789abcdef",
            "CA0123456789abcdef0123456789abcdef",
            "+14155551234",
            "+15005550006",
            "inbound",
        );
        assert_eq!(
            IncomingCall::from_params(built.params.clone()).unwrap(),
            built
        );
        assert_eq!(built.params, call.params[..11].to_vec());
    }

    /// A `completed` callback carries seconds and minutes; missing or bad fields are errors.
    #[test]
    fn status_callback() {
        let call =
            IncomingCall::ringing("AC1", "CA1", "+15005550006", "+14155551234", "outbound-api");
        let done = StatusCallback::completed(&call, 42, 3, "Tue, 31 Aug 2010 20:36:44 +0000");
        let parsed = StatusCallback::from_form(encode_form(&done.params).as_bytes()).unwrap();
        assert_eq!(parsed, done);
        assert_eq!(
            (parsed.call_duration_secs, parsed.duration_mins),
            (Some(42), Some(1))
        );
        assert_eq!(
            StatusCallback::completed(&call, 61, 0, "t").duration_mins,
            Some(2)
        );
        assert_eq!(
            StatusCallback::from_form(b"CallSid=CA1")
                .unwrap_err()
                .kind(),
            "missing"
        );
        let bad_status = encode_form(&[
            ("CallSid", "CA1"),
            ("AccountSid", "AC1"),
            ("From", "a"),
            ("To", "b"),
            ("CallStatus", "gone"),
        ]);
        assert_eq!(
            StatusCallback::from_form(bad_status.as_bytes())
                .unwrap_err()
                .kind(),
            "invalid"
        );
    }
}
