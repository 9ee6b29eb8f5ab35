//! How a chaos round is judged: what the callers experienced against what JetStream
//! stored, and the services' own count of sessions they rebuilt.
//!
//! Consumes the round's finished calls, the `CALLS` stream (per call: how many events of
//! each kind are stored), the `AUDIO` stream from the round's first sequence (caller
//! frames) and every replica's `/metrics`; produces a [`RoundResult`]. State: none.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    time::{Duration, Instant},
};

use async_nats::jetstream;
use futures::TryStreamExt as _;
use sb_schemas::{CallSid, Kind, subject};
use sb_sim::caller::{CallReport, EndedBy};

use super::Fault;
use crate::{
    frames,
    pool::Finished,
    stack::{Service, Stack},
};

/// The Prometheus counter a service bumps when it rebuilds a call's session from the log.
pub const SESSIONS_REBUILT: &str = "switchboard_session_rebuilt_total";
/// How long the stored events may take to settle after the last call hung up (the stages
/// finish the last turn, the stt its last transcript).
const SETTLE: Duration = Duration::from_secs(30);
/// An utterance whose line stayed up this long after it ended must have a transcript
/// (endpointing silence, the stand-in's final, the publish).
const TRANSCRIBE_MS: u64 = 1_500;

/// One round's figures.
#[derive(Debug, Clone)]
pub struct RoundResult {
    pub fault: Fault,
    pub placed: usize,
    pub completed: usize,
    /// Calls that did not complete: `sid: why` (the ingress closed the socket, the call
    /// could not be placed, it timed out, the ingress broke the protocol).
    pub dropped: Vec<String>,
    /// Caller questions spoken, and those the bot began to answer.
    pub asked: usize,
    pub answered: usize,
    /// `sid turn i: "question"` of each question with no answer.
    pub unanswered: Vec<String>,
    /// The longest mid-sentence silence any caller heard.
    pub longest_gap_ms: u64,
    /// The slowest answer: end of the question to the first bot audio.
    pub max_voice_to_voice_ms: u64,
    /// `sid: what is missing` for each event a caller's call implies but `CALLS` lacks.
    pub events_lost: Vec<String>,
    /// Caller frames sent, and those `AUDIO` does not have.
    pub frames_sent: u64,
    pub frames_lost: u64,
    /// Sum over the replicas of [`SESSIONS_REBUILT`] during the round.
    pub sessions_rebuilt: u64,
    /// How long injecting the fault took (a roll waits for every replica).
    pub fault_secs: f64,
    pub notes: Vec<String>,
}

impl RoundResult {
    /// Why the round fails: a call dropped, a question unanswered, an event lost.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.completed < self.placed {
            problems.push(format!(
                "{} of {} calls dropped",
                self.placed - self.completed,
                self.placed
            ));
        }
        if self.answered < self.asked {
            problems.push(format!(
                "{} of {} questions unanswered",
                self.asked - self.answered,
                self.asked
            ));
        }
        if !self.events_lost.is_empty() {
            problems.push(format!("{} events lost", self.events_lost.len()));
        }
        problems
    }
}

/// Judges the round's calls once `CALLS` has settled.
pub async fn judge(
    js: &jetstream::Context,
    fault: Fault,
    finished: Vec<Finished>,
    audio_from: u64,
) -> anyhow::Result<RoundResult> {
    let mut result = RoundResult {
        fault,
        placed: finished.len(),
        completed: 0,
        dropped: Vec::new(),
        asked: 0,
        answered: 0,
        unanswered: Vec::new(),
        longest_gap_ms: 0,
        max_voice_to_voice_ms: 0,
        events_lost: Vec::new(),
        frames_sent: 0,
        frames_lost: 0,
        sessions_rebuilt: 0,
        fault_secs: 0.0,
        notes: Vec::new(),
    };
    let mut reports = Vec::new();
    for call in finished {
        match call.result {
            Ok(report) => reports.push(report),
            Err(why) => result.dropped.push(format!("{}: {why}", call.sid)),
        }
    }
    for report in &reports {
        experienced(report, &mut result);
    }
    result.events_lost = settled_missing(js, &reports).await;
    let stored = frames::stored_from(js, audio_from).await?;
    for report in &reports {
        let frames = stored.get(&report.call_sid).map_or(0, |s| s.frames);
        result.frames_sent += report.frames_sent;
        result.frames_lost += report.frames_sent.saturating_sub(frames);
    }
    Ok(result)
}

/// What one caller heard: completed or not, questions answered, silences.
fn experienced(report: &CallReport, result: &mut RoundResult) {
    let sid = &report.call_sid;
    let notes = if report.notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", report.notes.join("; "))
    };
    match (report.ended_by, report.protocol_errors.first()) {
        (EndedBy::Caller, None) => result.completed += 1,
        (_, Some(error)) => result.dropped.push(format!(
            "{sid}: protocol error {}: {}{notes}",
            error.code, error.detail
        )),
        (ended_by, None) => result.dropped.push(format!(
            "{sid}: ended by {ended_by:?} after {} ms{notes}",
            report.duration_ms
        )),
    }
    for turn in report.turns.iter().skip(1) {
        result.asked += 1;
        match turn.voice_to_voice_ms {
            Some(ms) => {
                result.answered += 1;
                result.max_voice_to_voice_ms = result.max_voice_to_voice_ms.max(ms);
            }
            None => result.unanswered.push(format!(
                "{sid} turn {}: {:?}",
                turn.index,
                turn.caller_text.as_deref().unwrap_or("")
            )),
        }
    }
    result.longest_gap_ms = result.longest_gap_ms.max(report.longest_gap_ms);
}

/// Utterances of `report` that must have been transcribed: spoken to the end (longer than
/// the one frame a cut-off utterance shows) with the line up long enough after.
fn utterances_finished(report: &CallReport) -> usize {
    let frame = u64::from(sb_audio::FRAME_MS);
    report
        .turns
        .iter()
        .skip(1)
        .filter(|t| {
            let start = t.speech_start_ms.unwrap_or(t.speech_end_ms);
            t.speech_end_ms > start + frame && t.speech_end_ms + TRANSCRIBE_MS <= report.duration_ms
        })
        .count()
}

/// [`missing`], polled until nothing is missing or [`SETTLE`] has passed.
async fn settled_missing(js: &jetstream::Context, reports: &[CallReport]) -> Vec<String> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let missing = match missing(js, reports).await {
            Ok(missing) => missing,
            Err(error) => vec![format!("CALLS could not be read: {error:#}")],
        };
        if missing.is_empty() || Instant::now() > deadline {
            return missing;
        }
        // Polling JetStream twice a second, not a synchronisation.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every event the calls imply that `CALLS` does not have: per call a `webhook`, a
/// `start`, an `end`, and a `transcript` per utterance the caller finished (counted, not
/// matched: a re-transcription after an stt take-over stores a second copy of one).
async fn missing(js: &jetstream::Context, reports: &[CallReport]) -> anyhow::Result<Vec<String>> {
    let stream = js.get_stream(subject::CALLS_STREAM).await?;
    let mut missing = Vec::new();
    for report in reports {
        let sid = CallSid::parse(&report.call_sid)?;
        let stored: HashMap<String, usize> = stream
            .info_with_subjects(subject::call_events_filter(&sid))
            .await?
            .try_collect()
            .await?;
        let mut kinds: HashMap<Kind, usize> = HashMap::new();
        for (subject, n) in stored {
            if let Ok(subject::Parsed::Event { kind, .. }) = subject::parse(&subject) {
                *kinds.entry(kind).or_default() += n;
            }
        }
        let count = |kind| kinds.get(&kind).copied().unwrap_or(0);
        for kind in [Kind::Webhook, Kind::Start, Kind::End] {
            if count(kind) == 0 {
                missing.push(format!("{sid}: no {}", kind.as_str()));
            }
        }
        let (spoken, transcribed) = (utterances_finished(report), count(Kind::Transcript));
        if transcribed < spoken {
            missing.push(format!(
                "{sid}: {transcribed} transcripts for {spoken} questions"
            ));
        }
    }
    Ok(missing)
}

/// Each live replica's [`SESSIONS_REBUILT`] (summed over its labels; 0 when it does not
/// export the counter or does not answer).
pub async fn sessions_rebuilt(stack: &Stack) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for (name, addr) in stack.service_addrs() {
        counts.insert(name, metric(addr, SESSIONS_REBUILT).await);
    }
    counts
}

/// The replica of `service` with the most calls (media sockets for the ingress, owned
/// calls for the stt), so that killing it hits calls; the oldest for the others.
pub async fn busiest(stack: &Stack, service: Service) -> usize {
    let gauge = match service {
        Service::Ingress => "switchboard_ingress_active_calls",
        Service::Stt => "switchboard_stt_active_calls",
        _ => return 0,
    };
    let mut best = (0, 0);
    for (i, replica) in stack.replicas(service).iter().enumerate() {
        let calls = metric(replica.addr, gauge).await;
        if calls > best.1 {
            best = (i, calls);
        }
    }
    best.0
}

/// Metric `name` of the process serving `/metrics` at `addr` (0 if it does not answer).
async fn metric(addr: SocketAddr, name: &str) -> u64 {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default();
    let text = match http.get(format!("http://{addr}/metrics")).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    counter(&text, name)
}

/// The sum of every sample of metric `name` in a Prometheus text exposition.
fn counter(exposition: &str, name: &str) -> u64 {
    exposition
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_is_summed_over_its_labels_and_nothing_else() {
        let text = "# TYPE switchboard_session_rebuilt_total counter\n\
                    switchboard_session_rebuilt_total{service=\"agent\"} 3\n\
                    switchboard_session_rebuilt_total{service=\"stt\"} 2\n\
                    switchboard_session_rebuilt_total_other 7\n\
                    switchboard_stage_received_total{stage=\"agent\"} 9\n";
        assert_eq!(counter(text, SESSIONS_REBUILT), 5);
        assert_eq!(
            counter("switchboard_session_rebuilt_total 4\n", SESSIONS_REBUILT),
            4
        );
        assert_eq!(counter("", SESSIONS_REBUILT), 0);
    }
}
