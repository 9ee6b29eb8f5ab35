//! How a chaos run is shown: one row per fault, then what went wrong in each failed round.
//!
//! Consumes [`ChaosResult`] and [`RoundResult`]s; produces text. State: none.

use std::fmt::Write as _;

use super::{ChaosResult, RoundResult};

/// Examples printed per kind of problem.
const EXAMPLES: usize = 3;

/// The header the rows line up under.
pub fn header() -> String {
    format!(
        "{:<20} {:>11} {:>15} {:>13} {:>11} {:>7} {:>13} {:>9} {:>8}",
        "fault",
        "calls ok",
        "turns answered",
        "longest gap",
        "max v2v",
        "events",
        "caller frames",
        "sessions",
        "fault"
    ) + &format!(
        "\n{:<20} {:>11} {:>15} {:>13} {:>11} {:>7} {:>13} {:>9} {:>8}",
        "",
        "/ placed",
        "/ asked",
        "heard (ms)",
        "(ms)",
        "lost",
        "lost / sent",
        "rebuilt",
        "took (s)"
    )
}

/// One round's figures on one line.
pub fn row(r: &RoundResult) -> String {
    format!(
        "{:<20} {:>11} {:>15} {:>13} {:>11} {:>7} {:>13} {:>9} {:>8.1}",
        r.fault.name(),
        format!("{}/{}", r.completed, r.placed),
        format!("{}/{}", r.answered, r.asked),
        r.longest_gap_ms,
        r.max_voice_to_voice_ms,
        r.events_lost.len(),
        format!("{}/{}", r.frames_lost, r.frames_sent),
        r.sessions_rebuilt,
        r.fault_secs
    )
}

/// The whole run: settings, the table, and the details of every round that failed.
pub fn render(result: &ChaosResult) -> String {
    let o = &result.options;
    let mut out = format!(
        "chaos: {} calls in flight per round, {} questions each, 2 replicas of every service, \
         typical stand-in delays; {:.0} s in all\n{}\n",
        o.calls,
        o.questions,
        result.wall.as_secs_f64(),
        header()
    );
    for round in &result.rounds {
        let _ = writeln!(out, "{}", row(round));
    }
    for round in &result.rounds {
        let problems = round.problems();
        if problems.is_empty() && round.notes.is_empty() {
            continue;
        }
        let verdict = if problems.is_empty() {
            "passed".to_owned()
        } else {
            format!("FAILED: {}", problems.join(", "))
        };
        let _ = writeln!(out, "{}: {verdict}", round.fault.name());
        let details = [
            ("dropped", &round.dropped),
            ("unanswered", &round.unanswered),
            ("lost", &round.events_lost),
            ("note", &round.notes),
        ];
        for (label, lines) in details {
            for line in lines.iter().take(EXAMPLES) {
                let line: String = line.chars().take(200).collect();
                let _ = writeln!(out, "  {label}: {line}");
            }
            if lines.len() > EXAMPLES {
                let _ = writeln!(out, "  {label}: … and {} more", lines.len() - EXAMPLES);
            }
        }
    }
    let failed = result.failed().len();
    let _ = writeln!(
        out,
        "chaos: {} of {} rounds passed",
        result.rounds.len() - failed,
        result.rounds.len()
    );
    out
}
