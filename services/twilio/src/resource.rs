//! The call resource JSON returned by create, update and fetch (PROTOCOLS §4).
//!
//! Consumes call facts (sids, numbers, status, times); produces the resource exactly as the
//! 2010 API renders it: every field present, numeric-looking values (`duration`,
//! `queue_time`, `price`) as strings, absent values as `null`. Stateless.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::rest::{API_VERSION, CallStatus, call_path};

/// A call resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallResource {
    pub sid: String,
    pub date_created: Option<String>,
    pub date_updated: Option<String>,
    pub parent_call_sid: Option<String>,
    pub account_sid: String,
    pub to: String,
    pub to_formatted: String,
    pub from: String,
    pub from_formatted: String,
    pub phone_number_sid: Option<String>,
    pub status: CallStatus,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    /// Seconds, as a string.
    pub duration: Option<String>,
    pub price: Option<String>,
    pub price_unit: String,
    /// `inbound`, `outbound-api` or `outbound-dial`.
    pub direction: String,
    pub answered_by: Option<String>,
    pub api_version: String,
    pub forwarded_from: Option<String>,
    pub group_sid: Option<String>,
    pub caller_name: Option<String>,
    /// Milliseconds, as a string.
    pub queue_time: Option<String>,
    pub trunk_sid: Option<String>,
    pub uri: String,
    pub subresource_uris: SubresourceUris,
}

/// Links to a call's sub-resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubresourceUris {
    pub notifications: String,
    pub recordings: String,
    pub payments: String,
    pub events: String,
    pub siprec: String,
    pub streams: String,
    pub transcriptions: String,
    pub user_defined_message_subscriptions: String,
    pub user_defined_messages: String,
}

impl SubresourceUris {
    fn for_call(account_sid: &str, call_sid: &str) -> Self {
        let base = format!("/{API_VERSION}/Accounts/{account_sid}/Calls/{call_sid}");
        let link = |name: &str| format!("{base}/{name}.json");
        Self {
            notifications: link("Notifications"),
            recordings: link("Recordings"),
            payments: link("Payments"),
            events: link("Events"),
            siprec: link("Siprec"),
            streams: link("Streams"),
            transcriptions: link("Transcriptions"),
            user_defined_message_subscriptions: link("UserDefinedMessageSubscriptions"),
            user_defined_messages: link("UserDefinedMessages"),
        }
    }
}

impl CallResource {
    /// A just-created outbound call: `queued`, `outbound-api`, no timings yet. `now` is an
    /// RFC 2822 date (see [`rfc2822`]).
    pub fn queued_outbound(
        account_sid: &str,
        call_sid: &str,
        to: &str,
        from: &str,
        now: &str,
    ) -> Self {
        Self {
            sid: call_sid.to_owned(),
            date_created: Some(now.to_owned()),
            date_updated: Some(now.to_owned()),
            parent_call_sid: None,
            account_sid: account_sid.to_owned(),
            to: to.to_owned(),
            to_formatted: format_number(to),
            from: from.to_owned(),
            from_formatted: format_number(from),
            phone_number_sid: None,
            status: CallStatus::Queued,
            start_time: None,
            end_time: None,
            duration: None,
            price: None,
            price_unit: "USD".to_owned(),
            direction: "outbound-api".to_owned(),
            answered_by: None,
            api_version: API_VERSION.to_owned(),
            forwarded_from: None,
            group_sid: None,
            caller_name: None,
            queue_time: Some("0".to_owned()),
            trunk_sid: None,
            uri: call_path(account_sid, call_sid),
            subresource_uris: SubresourceUris::for_call(account_sid, call_sid),
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain struct always serialises")
    }
}

/// North American numbers as `(415) 555-1234`; anything else unchanged.
pub fn format_number(number: &str) -> String {
    match number.strip_prefix("+1") {
        Some(d) if d.len() == 10 && d.bytes().all(|b| b.is_ascii_digit()) => {
            format!("({}) {}-{}", &d[..3], &d[3..6], &d[6..])
        }
        _ => number.to_owned(),
    }
}

/// `Tue, 31 Aug 2010 20:36:28 +0000` (RFC 2822, GMT), as in every Twilio date field.
pub fn rfc2822(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let (hour, minute, second) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let weekday = WEEKDAYS[days.rem_euclid(7) as usize];
    let month_name = MONTHS[(month - 1) as usize];
    format!("{weekday}, {day:02} {month_name} {year} {hour:02}:{minute:02}:{second:02} +0000")
}
