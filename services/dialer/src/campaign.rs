//! A campaign as the tenant defines it: who calls, when, how often, with what words.
//!
//! Consumes the campaigns API's JSON ([`CampaignSpec`]); produces a validated
//! [`Campaign`] (stored as JSON in `cq:{tenant}:defs`), the queue's [`RetryPolicy`], the
//! next opening of the calling hours for an instant and a time zone, and the greeting,
//! prompt and voicemail with a contact's `{{variables}}` filled in. Pure: no I/O, no
//! clock (every function takes `now`), tested in-file.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Datelike as _, NaiveTime, TimeZone as _, Utc, Weekday};
use chrono_tz::Tz;
use sb_runtime::redis::campaigns::{CampaignId, Outcome, RetryPolicy};
use serde::{Deserialize, Serialize};

/// The contact variable naming the callee's own IANA time zone (overrides the campaign's).
pub const TIMEZONE_VARIABLE: &str = "timezone";
/// The voicemail message when the campaign sets none.
pub const DEFAULT_VOICEMAIL: &str =
    "Hello, this is an automated call. Sorry we missed you. We will try again later. Goodbye.";
const MAX_TEXT: usize = 4000;

/// Why a campaign definition was refused: the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    pub field: String,
    pub reason: String,
}

fn bad(field: &str, reason: impl Into<String>) -> SpecError {
    SpecError {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// When calls may be placed: on these days, from–to (local time, `HH:MM`, `from` before
/// `to`), in `time_zone`; with `callee_time_zone`, in each contact's own `timezone`
/// variable where it has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallingHours {
    /// `mon` … `sun`.
    pub days: Vec<String>,
    pub from: String,
    pub to: String,
    /// IANA name, e.g. `America/New_York`.
    pub time_zone: String,
    /// Use a contact's `timezone` variable (IANA) when it has one. Outside its hours such a
    /// contact alone waits; without this the whole campaign waits for its hours to open.
    #[serde(default)]
    pub callee_time_zone: bool,
}

/// Which outcomes are tried again, how many attempts in all, how far apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    #[serde(default = "default_retry_on")]
    pub on: Vec<Outcome>,
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_spacing")]
    pub spacing_secs: u64,
}

fn default_retry_on() -> Vec<Outcome> {
    RetryPolicy::default().retry_on
}
fn default_attempts() -> u32 {
    RetryPolicy::default().max_attempts
}
fn default_spacing() -> u64 {
    RetryPolicy::default().spacing.as_secs()
}
fn default_true() -> bool {
    true
}

impl Default for RetrySpec {
    fn default() -> Self {
        Self {
            on: default_retry_on(),
            max_attempts: default_attempts(),
            spacing_secs: default_spacing(),
        }
    }
}

/// What `POST /v1/tenants/{tenant}/campaigns` takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    pub name: String,
    /// The number calls come from: one of the tenant's numbers (E.164).
    pub caller_id: String,
    pub calling_hours: CallingHours,
    /// Calls of this campaign in flight at once.
    pub max_concurrent_calls: u32,
    #[serde(default)]
    pub retry: RetrySpec,
    /// 0–65535; higher is called first, FIFO within one.
    #[serde(default)]
    pub priority: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<DateTime<Utc>>,
    /// Replaces the tenant's greeting; `{{variable}}` placeholders are filled per contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greeting: Option<String>,
    /// Replaces the tenant's system prompt; placeholders as in `greeting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Left on an answering machine; placeholders as in `greeting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voicemail: Option<String>,
    /// Run Twilio's answering-machine detection (then the greeting waits for its verdict).
    #[serde(default = "default_true")]
    pub machine_detection: bool,
}

/// Where a campaign is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignState {
    Active,
    Paused,
    Canceled,
}

/// A stored campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    pub id: String,
    pub state: CampaignState,
    pub created_at: DateTime<Utc>,
    #[serde(flatten)]
    pub spec: CampaignSpec,
}

/// Whether a campaign may call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Open,
    /// Not before this time: the calling hours' next opening, or the start time.
    Opens(DateTime<Utc>),
    /// Past the campaign's end time.
    Ended,
}

/// A parsed `HH:MM`.
fn clock(field: &str, raw: &str) -> Result<NaiveTime, SpecError> {
    NaiveTime::parse_from_str(raw, "%H:%M")
        .map_err(|_| bad(field, format!("{raw:?} is not a time of day as HH:MM")))
}

fn weekday(raw: &str) -> Option<Weekday> {
    Some(match raw {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    })
}

/// Whether `raw` is an E.164 number: `+`, then 2 to 15 digits, the first not 0.
pub fn is_e164(raw: &str) -> bool {
    raw.strip_prefix('+').is_some_and(|d| {
        (2..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    })
}

impl CallingHours {
    fn check(&self) -> Result<(), SpecError> {
        if self.days.is_empty() {
            return Err(bad("calling_hours.days", "at least one day is required"));
        }
        for day in &self.days {
            if weekday(day).is_none() {
                return Err(bad(
                    "calling_hours.days",
                    format!("{day:?} is not one of mon, tue, wed, thu, fri, sat, sun"),
                ));
            }
        }
        let (from, to) = (
            clock("calling_hours.from", &self.from)?,
            clock("calling_hours.to", &self.to)?,
        );
        if from >= to {
            return Err(bad("calling_hours.to", "must be later than `from`"));
        }
        parse_zone("calling_hours.time_zone", &self.time_zone)?;
        Ok(())
    }

    /// Hours open all day, every day (00:00–23:59) in a fixed-offset zone where it is
    /// about noon at `now`: for demos and tests on the real clock, which then never meet a
    /// closing time.
    pub fn around_the_clock(now: DateTime<Utc>) -> Self {
        use chrono::Timelike as _;
        // Local = UTC + ahead, in -11..=12. `Etc/GMT-3` is UTC+3: the sign is POSIX's.
        let ahead = 12 - i64::from(now.hour());
        let time_zone = match ahead {
            0 => "Etc/GMT".to_owned(),
            a if a > 0 => format!("Etc/GMT-{a}"),
            a => format!("Etc/GMT+{}", -a),
        };
        Self {
            days: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
                .map(String::from)
                .to_vec(),
            from: "00:00".into(),
            to: "23:59".into(),
            time_zone,
            callee_time_zone: false,
        }
    }

    /// `None` when `now` is inside the hours in `zone`; otherwise when they next open.
    /// Validated hours always open within a week.
    pub fn next_open(&self, now: DateTime<Utc>, zone: Tz) -> Option<DateTime<Utc>> {
        let from = NaiveTime::parse_from_str(&self.from, "%H:%M").ok()?;
        let to = NaiveTime::parse_from_str(&self.to, "%H:%M").ok()?;
        let days: Vec<Weekday> = self.days.iter().filter_map(|d| weekday(d)).collect();
        let local = now.with_timezone(&zone);
        let open_today = days.contains(&local.weekday());
        if open_today && local.time() >= from && local.time() < to {
            return None;
        }
        for ahead in 0..=7 {
            let date = local.date_naive() + chrono::Days::new(ahead);
            if !days.contains(&date.weekday()) {
                continue;
            }
            // A gap (spring forward) skips the day's opening to the next valid instant.
            let start = zone
                .from_local_datetime(&date.and_time(from))
                .earliest()
                .or_else(|| {
                    zone.from_local_datetime(&(date.and_time(from) + chrono::Duration::hours(1)))
                        .earliest()
                })?;
            if start > local {
                return Some(start.with_timezone(&Utc));
            }
        }
        None
    }
}

/// An IANA time zone by name.
pub fn parse_zone(field: &str, raw: &str) -> Result<Tz, SpecError> {
    raw.parse::<Tz>()
        .map_err(|_| bad(field, format!("{raw:?} is not an IANA time zone")))
}

impl CampaignSpec {
    /// Checks every field; `tenant_numbers` are the numbers the caller id may be.
    pub fn validate(&self, tenant_numbers: &[String]) -> Result<(), SpecError> {
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return Err(bad("name", "must be 1-200 characters"));
        }
        if !tenant_numbers.contains(&self.caller_id) {
            return Err(bad("caller_id", "must be one of the tenant's numbers"));
        }
        self.calling_hours.check()?;
        if !(1..=1000).contains(&self.max_concurrent_calls) {
            return Err(bad("max_concurrent_calls", "must be 1-1000"));
        }
        if !(1..=20).contains(&self.retry.max_attempts) {
            return Err(bad("retry.max_attempts", "must be 1-20"));
        }
        if self.retry.on.iter().any(|o| o.is_success()) {
            return Err(bad(
                "retry.on",
                "completed and voicemail calls are never retried",
            ));
        }
        if self.retry.spacing_secs > 30 * 24 * 3600 {
            return Err(bad("retry.spacing_secs", "must be at most 30 days"));
        }
        if let (Some(start), Some(end)) = (self.starts_at, self.ends_at)
            && end <= start
        {
            return Err(bad("ends_at", "must be later than starts_at"));
        }
        for (field, text) in [
            ("greeting", &self.greeting),
            ("prompt", &self.prompt),
            ("voicemail", &self.voicemail),
        ] {
            if let Some(text) = text
                && (text.trim().is_empty() || text.len() > MAX_TEXT)
            {
                return Err(bad(field, format!("must be 1-{MAX_TEXT} characters")));
            }
        }
        Ok(())
    }

    /// The queue's retry policy for this campaign.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            retry_on: self.retry.on.clone(),
            max_attempts: self.retry.max_attempts,
            spacing: Duration::from_secs(self.retry.spacing_secs),
        }
    }
}

impl Campaign {
    pub fn new(id: CampaignId, spec: CampaignSpec, now: DateTime<Utc>) -> Self {
        Self {
            id: id.to_string(),
            state: CampaignState::Active,
            created_at: now,
            spec,
        }
    }

    /// A contact's own time zone, when the campaign uses callees' zones and the contact's
    /// `timezone` variable names one.
    pub fn callee_zone(&self, vars: &BTreeMap<String, String>) -> Option<Tz> {
        self.spec
            .calling_hours
            .callee_time_zone
            .then(|| vars.get(TIMEZONE_VARIABLE)?.parse::<Tz>().ok())
            .flatten()
    }

    /// The time zone whose hours apply to a contact: its own (see [`Self::callee_zone`]),
    /// else the campaign's.
    pub fn zone_for(&self, vars: &BTreeMap<String, String>) -> Tz {
        self.callee_zone(vars)
            .or_else(|| self.spec.calling_hours.time_zone.parse::<Tz>().ok())
            .unwrap_or(Tz::UTC)
    }

    /// Whether a call to a contact in `zone` may be placed at `now`.
    pub fn window(&self, now: DateTime<Utc>, zone: Tz) -> Window {
        if self.spec.ends_at.is_some_and(|end| now >= end) {
            return Window::Ended;
        }
        if let Some(start) = self.spec.starts_at
            && now < start
        {
            return Window::Opens(start);
        }
        match self.spec.calling_hours.next_open(now, zone) {
            None => Window::Open,
            Some(at) => Window::Opens(at),
        }
    }
}

/// Fills `{{name}}` placeholders from `vars`; an unknown name becomes empty text.
/// Whitespace inside the braces is ignored (`{{ name }}`).
pub fn render(template: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            return out;
        };
        let name = after[..close].trim();
        out.push_str(vars.get(name).map_or("", String::as_str));
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours() -> CallingHours {
        CallingHours {
            days: ["mon", "tue", "wed", "thu", "fri"]
                .map(String::from)
                .to_vec(),
            from: "09:00".into(),
            to: "17:00".into(),
            time_zone: "America/New_York".into(),
            callee_time_zone: false,
        }
    }

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .with_timezone(&Utc)
    }

    /// Thursday 2026-12-03 in New York (UTC-5): inside, before, after, and the weekend.
    #[test]
    fn calling_hours_open_and_next_opening() {
        let h = hours();
        let ny: Tz = "America/New_York".parse().unwrap();
        assert_eq!(
            h.next_open(at("2026-12-03T15:00:00Z"), ny),
            None,
            "10:00 local"
        );
        assert_eq!(
            h.next_open(at("2026-12-03T12:00:00Z"), ny),
            Some(at("2026-12-03T14:00:00Z")),
            "07:00 local opens at 09:00 local"
        );
        assert_eq!(
            h.next_open(at("2026-12-03T22:00:00Z"), ny),
            Some(at("2026-12-04T14:00:00Z")),
            "17:00 local is closed: Friday 09:00"
        );
        assert_eq!(
            h.next_open(at("2026-12-05T15:00:00Z"), ny),
            Some(at("2026-12-07T14:00:00Z")),
            "Saturday: Monday 09:00"
        );
        let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
        assert_eq!(
            h.next_open(at("2026-12-03T15:00:00Z"), tokyo),
            Some(at("2026-12-04T00:00:00Z")),
            "the callee's zone decides: 00:00 Friday in Tokyo opens at 09:00"
        );
    }

    #[test]
    fn around_the_clock_is_open_now_and_for_hours() {
        for hour in 0..24 {
            let now = at(&format!("2026-12-03T{hour:02}:30:00Z"));
            let h = CallingHours::around_the_clock(now);
            h.check().unwrap();
            let zone = parse_zone("z", &h.time_zone).unwrap();
            for later in [0, 3, 6, 10] {
                let t = now + chrono::Duration::hours(later);
                assert_eq!(
                    h.next_open(t, zone),
                    None,
                    "{hour}h + {later}h in {}",
                    h.time_zone
                );
            }
        }
    }

    #[test]
    fn templates_fill_variables() {
        let vars: BTreeMap<String, String> = [("name".into(), "Ann".into())].into();
        assert_eq!(render("Hi {{name}}!", &vars), "Hi Ann!");
        assert_eq!(render("Hi {{ name }}, {{missing}}.", &vars), "Hi Ann, .");
        assert_eq!(render("no {{close", &vars), "no {{close");
        assert_eq!(render("", &vars), "");
    }

    fn spec() -> CampaignSpec {
        CampaignSpec {
            name: "reminders".into(),
            caller_id: "+15005550006".into(),
            calling_hours: hours(),
            max_concurrent_calls: 5,
            retry: RetrySpec::default(),
            priority: 3,
            starts_at: None,
            ends_at: None,
            greeting: Some("Hi {{name}}".into()),
            prompt: None,
            voicemail: None,
            machine_detection: true,
        }
    }

    #[test]
    fn specs_validate_each_field() {
        let numbers = vec!["+15005550006".to_owned()];
        assert_eq!(spec().validate(&numbers), Ok(()));
        type Change = Box<dyn Fn(&mut CampaignSpec)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "caller_id",
                Box::new(|s| s.caller_id = "+15550000000".into()),
            ),
            (
                "calling_hours.days",
                Box::new(|s| s.calling_hours.days = vec!["moon".into()]),
            ),
            (
                "calling_hours.from",
                Box::new(|s| s.calling_hours.from = "9am".into()),
            ),
            (
                "calling_hours.to",
                Box::new(|s| s.calling_hours.to = "08:00".into()),
            ),
            (
                "calling_hours.time_zone",
                Box::new(|s| s.calling_hours.time_zone = "Mars/Base".into()),
            ),
            (
                "max_concurrent_calls",
                Box::new(|s| s.max_concurrent_calls = 0),
            ),
            ("retry.max_attempts", Box::new(|s| s.retry.max_attempts = 0)),
            (
                "retry.on",
                Box::new(|s| s.retry.on = vec![Outcome::Completed]),
            ),
            ("greeting", Box::new(|s| s.greeting = Some(" ".into()))),
            (
                "ends_at",
                Box::new(|s| {
                    s.starts_at = Some(at("2026-12-03T10:00:00Z"));
                    s.ends_at = Some(at("2026-12-03T09:00:00Z"));
                }),
            ),
        ];
        for (field, change) in cases {
            let mut s = spec();
            change(&mut s);
            assert_eq!(
                s.validate(&numbers).map_err(|e| e.field),
                Err(field.to_owned())
            );
        }
    }

    #[test]
    fn start_and_end_times_bound_the_hours() {
        let mut s = spec();
        s.starts_at = Some(at("2026-12-08T16:00:00Z"));
        s.ends_at = Some(at("2026-12-10T00:00:00Z"));
        let c = Campaign::new(
            CampaignId::parse("c1").unwrap(),
            s,
            at("2026-12-03T00:00:00Z"),
        );
        let ny = c.zone_for(&BTreeMap::new());
        assert_eq!(
            c.window(at("2026-12-03T15:00:00Z"), ny),
            Window::Opens(at("2026-12-08T16:00:00Z"))
        );
        assert_eq!(c.window(at("2026-12-08T16:30:00Z"), ny), Window::Open);
        assert_eq!(c.window(at("2026-12-10T00:00:00Z"), ny), Window::Ended);
        let vars = [(TIMEZONE_VARIABLE.into(), "Asia/Tokyo".into())].into();
        assert_eq!(
            c.zone_for(&vars),
            ny,
            "the campaign's zone unless callees' are used"
        );
        let mut c = c;
        c.spec.calling_hours.callee_time_zone = true;
        assert_eq!(c.zone_for(&vars), "Asia/Tokyo".parse::<Tz>().unwrap());
        assert!(is_e164("+15005550006") && !is_e164("15005550006") && !is_e164("+0123"));
    }
}
