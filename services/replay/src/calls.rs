//! `replay calls`: recent calls, newest first, from the call index ([`crate::index`]).
//!
//! Consumes the command's filters (tenant, direction, time range, outcome, limit) and the
//! index's summaries; produces one line per call (start, tenant, from → to, duration,
//! turns, barge-ins, p95 turn latency, outcome, sid) or, with `--json`, one
//! [`CallSummary`] per line. State: none.

use std::io::Write;

use chrono::{DateTime, Utc};

use crate::index::{DIRECTIONS, Filter, OUTCOMES};
use crate::summary::CallSummary;

/// `replay calls` options.
#[derive(Debug, Clone, clap::Args)]
pub struct CallsArgs {
    /// Only this tenant's calls.
    #[arg(long)]
    pub tenant: Option<String>,
    /// `inbound` or `outbound`.
    #[arg(long, value_parser = DIRECTIONS)]
    pub direction: Option<String>,
    /// Started at or after: RFC 3339 (`2026-12-04T09:00:00Z`) or an age (`90s`, `15m`,
    /// `2h`, `3d`, `1h30m`).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<u64>,
    /// Started before (same forms).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<u64>,
    /// How it went: completed, transferred, ended_by_agent, dropped, not_connected, or
    /// barged_in / fallback (calls with a barge-in / a fallback phrase).
    #[arg(long, value_parser = OUTCOMES)]
    pub outcome: Option<String>,
    /// At most this many calls.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub limit: u16,
    /// One call summary per line as JSON (fields: docs/REPLAY.md).
    #[arg(long)]
    pub json: bool,
}

impl CallsArgs {
    pub fn filter(&self) -> Filter {
        Filter {
            tenant: self.tenant.clone(),
            direction: self.direction.clone(),
            since: self.since,
            until: self.until,
            outcome: self.outcome.clone(),
            limit: usize::from(self.limit),
        }
    }
}

/// RFC 3339, or an age before now (as `replay dlq purge --older-than` takes it: `45s`,
/// `15m`, `2h`, `3d`, `1h30m`), as µs since the epoch.
pub fn parse_time(raw: &str) -> Result<u64, String> {
    parse_time_at(raw, Utc::now())
}

fn parse_time_at(raw: &str, now: DateTime<Utc>) -> Result<u64, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(raw) {
        return u64::try_from(at.timestamp_micros()).map_err(|_| "before 1970".to_owned());
    }
    let age = crate::dlq_cli::parse_age(raw)
        .map_err(|_| format!("{raw:?} is neither RFC 3339 nor an age like 15m or 1h30m"))?;
    let age = chrono::Duration::from_std(age).map_err(|e| e.to_string())?;
    u64::try_from((now - age).timestamp_micros()).map_err(|_| "before 1970".to_owned())
}

/// Writes the calls: a header and one line each, or JSON lines.
pub fn render(calls: &[CallSummary], json: bool, out: &mut impl Write) -> std::io::Result<()> {
    if json {
        for call in calls {
            serde_json::to_writer(&mut *out, call)?;
            writeln!(out)?;
        }
        return Ok(());
    }
    if calls.is_empty() {
        return writeln!(out, "no calls");
    }
    writeln!(
        out,
        "{:<23}  {:<12}  {:<8}  {:<33}  {:>7}  {:>5}  {:>5}  {:>8}  {:<14}  call",
        "started", "tenant", "dir", "from → to", "secs", "turns", "cuts", "p95 ms", "outcome"
    )?;
    for c in calls {
        let parties = format!(
            "{} → {}",
            c.from.as_deref().unwrap_or("?"),
            c.to.as_deref().unwrap_or("?")
        );
        let p95 = c
            .latency_ms
            .map_or_else(|| "-".to_owned(), |l| format!("{:.0}", l.p95));
        let outcome = if c.fallback {
            format!("{}+fallback", c.outcome)
        } else {
            c.outcome.clone()
        };
        writeln!(
            out,
            "{:<23}  {:<12}  {:<8}  {:<33}  {:>7.1}  {:>5}  {:>5}  {:>8}  {:<14}  {}",
            crate::utc(c.started_at),
            c.tenant,
            c.direction,
            parties,
            c.duration_ms() as f64 / 1e3,
            c.turns,
            c.barge_ins,
            p95,
            outcome,
            c.call_sid
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_an_age() {
        let now = DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let ten = 1_796_378_400_000_000;
        assert_eq!(parse_time_at("2026-12-04T10:00:00Z", now), Ok(ten));
        assert_eq!(parse_time_at("15m", now), Ok(ten - 900_000_000));
        assert_eq!(parse_time_at("2d", now), Ok(ten - 172_800_000_000));
        assert!(parse_time_at("yesterday", now).is_err());
        assert_eq!(parse_time_at("5w", now), Ok(ten - 3_024_000_000_000));
        assert_eq!(parse_time_at("1h30m", now), Ok(ten - 5_400_000_000));
        assert!(parse_time_at("5y", now).unwrap_err().contains("RFC 3339"));
        assert!(parse_time_at("", now).is_err());
    }

    #[test]
    fn one_line_per_call_with_its_numbers() {
        let call = CallSummary {
            call_sid: "CA00000000000000000000000000000001".into(),
            tenant: "acme".into(),
            direction: "inbound".into(),
            from: Some("+14155551234".into()),
            to: Some("+15005550006".into()),
            started_at: 1_796_378_400_000_000,
            ended_at: 1_796_378_412_500_000,
            turns: 2,
            barge_ins: 1,
            fallback: false,
            outcome: "completed".into(),
            end_reason: "stop".into(),
            latency_ms: None,
        };
        let mut out = Vec::new();
        render(std::slice::from_ref(&call), false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let line = text.lines().nth(1).unwrap();
        for part in [
            "2026-12-04 10:00:00 UTC",
            "acme",
            "+14155551234 → +15005550006",
            "12.5",
            "completed",
            &call.call_sid,
        ] {
            assert!(line.contains(part), "{part}: {line}");
        }
        let mut json = Vec::new();
        render(std::slice::from_ref(&call), true, &mut json).unwrap();
        let back: CallSummary = serde_json::from_slice(json.trim_ascii_end()).unwrap();
        assert_eq!(back, call);
    }
}
