//! What a tenant's webhook endpoint receives (PROTOCOLS §10.3): the envelope and the data
//! of `call.started`, `call.ended` (the post-call report) and `contact.completed`.
//!
//! Consumes the triggering event and, for `call.ended`, the call's log ([`CallLog`]:
//! its control events and bot audio); produces the JSON body. Pure: no I/O, no clock but
//! the events' own times. The report's transcript is the call as heard: what the caller
//! said (final transcripts) and the agent's sentences Twilio reported played.

use std::collections::BTreeMap;

use sb_replay::CallLog;
use sb_replay::summary::{LatencySummary, Parties, outcome};
use sb_schemas::{Body, DialResult, End, Envelope};
use serde_json::{Value, json};

/// The body every webhook shares: a stable id (the triggering event's, so a retry or a
/// redelivery repeats it), the type, when the event happened, the tenant and call, `data`.
pub fn envelope(event_type: &str, input: &Envelope, data: Value) -> Value {
    json!({
        "id": input.id.to_string(),
        "type": event_type,
        "created_at_ms": input.at / 1_000,
        "tenant": input.tenant.as_str(),
        "call_sid": input.call_sid.as_str(),
        "data": data,
    })
}

/// `call.started`: the media stream started (its numbers and direction from the log so far).
pub fn call_started(input: &Envelope, log: &CallLog) -> Value {
    let parties = Parties::of(log);
    envelope(
        "call.started",
        input,
        json!({
            "direction": parties.direction(),
            "from": parties.from,
            "to": parties.to,
            "campaign": parties.campaign,
        }),
    )
}

/// `contact.completed`: a campaign contact is done (or failed for good); `None` while the
/// contact will be called again.
pub fn contact_completed(input: &Envelope, result: &DialResult) -> Option<Value> {
    if result.decision == "retry" {
        return None;
    }
    Some(envelope(
        "contact.completed",
        input,
        json!({
            "campaign": result.campaign,
            "contact": result.contact,
            "outcome": result.outcome,
            "attempts": result.attempts,
            "decision": result.decision,
        }),
    ))
}

/// `call.ended`: the post-call report, from the call's log.
pub fn call_ended(input: &Envelope, end: &End, log: &CallLog) -> Value {
    let parties = Parties::of(log);
    let mut caller: BTreeMap<u32, String> = BTreeMap::new();
    let mut sentences: BTreeMap<(u32, u32), String> = BTreeMap::new();
    let mut played: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let mut interrupted: BTreeMap<u32, bool> = BTreeMap::new();
    // Where a barge-in cut a sentence: (its index, how much of it was heard).
    let mut cuts: BTreeMap<u32, (u32, sb_schemas::CutSentence)> = BTreeMap::new();
    let mut tools = Vec::new();
    let mut barge_ins = 0;
    for e in log.envelopes() {
        match &e.body {
            Body::Transcript(t) => {
                caller.entry(e.turn).or_insert_with(|| t.text.clone());
            }
            Body::Sentence(s) => {
                sentences.insert((e.turn, s.index), s.text.clone());
            }
            Body::Played(p) => played.entry(e.turn).or_default().push(p.sentence),
            Body::BargeIn(b) => {
                barge_ins += 1;
                interrupted.insert(e.turn, true);
                if let Some(cut) = b.cut {
                    cuts.insert(e.turn, (b.sentences_heard, cut));
                }
            }
            Body::ToolResult(r) => tools.push(json!({
                "turn": e.turn,
                "name": r.name,
                "outcome": r.outcome.as_str(),
                "status": r.status,
                "attempts": r.attempts,
                "elapsed_ms": r.elapsed_ms,
            })),
            _ => {}
        }
    }
    let mut transcript = Vec::new();
    let turns: std::collections::BTreeSet<u32> =
        caller.keys().chain(played.keys()).copied().collect();
    for turn in turns {
        if let Some(text) = caller.get(&turn) {
            transcript.push(json!({ "turn": turn, "speaker": "caller", "text": text }));
        }
        let mut heard: Vec<u32> = played.get(&turn).cloned().unwrap_or_default();
        heard.sort_unstable();
        heard.dedup();
        let mut said: Vec<&str> = heard
            .iter()
            .filter_map(|i| sentences.get(&(turn, *i)).map(String::as_str))
            .filter(|t| !t.trim().is_empty())
            .collect();
        // The words heard of the sentence a barge-in cut.
        if let Some((index, cut)) = cuts.get(&turn)
            && let Some(sentence) = sentences.get(&(turn, *index))
        {
            let words = sb_runtime::heard::heard_words(sentence, *cut);
            if !words.is_empty() {
                said.push(words);
            }
        }
        if !said.is_empty() {
            transcript.push(json!({
                "turn": turn,
                "speaker": "agent",
                "text": said.join(" "),
                "interrupted": interrupted.get(&turn).copied().unwrap_or(false),
            }));
        }
    }
    let ended_ms = input.at / 1_000;
    let started_ms = parties.started_ms.unwrap_or(ended_ms);
    envelope(
        "call.ended",
        input,
        json!({
            "direction": parties.direction(),
            "from": parties.from,
            "to": parties.to,
            "started_at_ms": started_ms,
            "ended_at_ms": ended_ms,
            "duration_secs": ended_ms.saturating_sub(started_ms) as f64 / 1e3,
            "end_reason": serde_json::to_value(end.reason).unwrap_or(Value::Null),
            "outcome": outcome(end.reason),
            "turns": caller.len(),
            "transcript": transcript,
            "latency_ms": LatencySummary::of(log),
            "barge_ins": barge_ins,
            "tool_calls": tools,
            "campaign": parties.campaign,
            "replay": { "call_sid": input.call_sid.as_str(), "command": format!("replay show {}", input.call_sid.as_str()) },
        }),
    )
}

#[cfg(test)]
mod tests {
    use sb_replay::Stored;
    use sb_schemas::testing::{sid, tenant_id};
    use sb_schemas::{
        BargeIn, BargeInTrigger, EndReason, Played, Sentence, Start, Transcript, Webhook,
    };

    use super::*;

    fn at(turn: u32, ms: u64, body: Body) -> Stored {
        let mut event = Envelope::new(tenant_id("acme"), sid(7), turn, body);
        event.at = ms * 1_000;
        Stored {
            stream: "CALLS",
            seq: ms,
            event,
        }
    }

    fn sentence(index: u32, text: &str) -> Body {
        Body::Sentence(Sentence {
            index,
            text: text.into(),
            last: false,
            fallback: false,
        })
    }

    fn played(sentence: u32) -> Body {
        Body::Played(Played {
            sentence,
            mark: String::new(),
        })
    }

    /// The transcript is the call as heard: the caller's words, then the agent's sentences
    /// that were played, then the words heard of the one a barge-in cut (an interrupted
    /// answer keeps only what was heard and says so).
    #[test]
    fn the_report_is_the_call_as_heard() {
        let events = vec![
            at(
                0,
                1_000,
                Body::Webhook(Webhook {
                    account_sid: "AC1".into(),
                    from: "+14155551234".into(),
                    to: "+15005550006".into(),
                    direction: "inbound".into(),
                    call_status: "ringing".into(),
                    attempt: None,
                }),
            ),
            at(
                0,
                1_100,
                Body::Start(Start {
                    stream_sid: "MZ1".into(),
                    account_sid: "AC1".into(),
                    from: String::new(),
                    to: String::new(),
                    custom_parameters: Default::default(),
                }),
            ),
            at(0, 1_200, sentence(0, "Hello, Acme here.")),
            at(0, 2_000, played(0)),
            at(
                1,
                3_000,
                Body::Transcript(Transcript {
                    epoch: 1,
                    text: "Any offers?".into(),
                    confidence: 0.9,
                    audio_seq: 10,
                    speech_ended_at: 2_900_000,
                }),
            ),
            at(1, 3_200, sentence(0, "Yes, half price.")),
            at(1, 3_210, sentence(1, "And free delivery.")),
            at(1, 4_000, played(0)),
            at(
                1,
                4_100,
                Body::BargeIn(BargeIn {
                    token: 2,
                    trigger: BargeInTrigger::Words,
                    sentences_heard: 1,
                    // Half of "And free delivery." heard: "And free".
                    cut: Some(sb_schemas::CutSentence {
                        heard_ms: 500,
                        sentence_ms: 1000,
                    }),
                }),
            ),
        ];
        let log = CallLog {
            events,
            undecodable: 0,
        };
        let mut end = Envelope::new(
            tenant_id("acme"),
            sid(7),
            1,
            Body::End(End {
                reason: EndReason::Stop,
            }),
        );
        end.at = 11_100_000;
        let Body::End(ended) = &end.body else {
            unreachable!()
        };
        let report = call_ended(&end, ended, &log);
        assert_eq!(report["type"], "call.ended");
        assert_eq!(report["id"], end.id.to_string());
        let data = &report["data"];
        assert_eq!(data["direction"], "inbound");
        assert_eq!(data["from"], "+14155551234");
        assert_eq!(data["outcome"], "completed");
        assert_eq!(data["end_reason"], "stop");
        assert_eq!(data["duration_secs"], 10.0);
        assert_eq!(data["barge_ins"], 1);
        assert_eq!(
            data["transcript"],
            json!([
                {"turn": 0, "speaker": "agent", "text": "Hello, Acme here.", "interrupted": false},
                {"turn": 1, "speaker": "caller", "text": "Any offers?"},
                {"turn": 1, "speaker": "agent", "text": "Yes, half price. And free", "interrupted": true},
            ])
        );
    }

    #[test]
    fn outcomes_and_contacts() {
        assert_eq!(outcome(EndReason::Transferred), "transferred");
        assert_eq!(outcome(EndReason::Closed), "dropped");
        let input = Envelope::new(
            tenant_id("acme"),
            sid(8),
            0,
            Body::End(End {
                reason: EndReason::Stop,
            }),
        );
        let result = |decision: &str| DialResult {
            attempt: "a".into(),
            campaign: "spring".into(),
            contact: "c1".into(),
            outcome: "busy".into(),
            attempts: 3,
            decision: decision.into(),
            retry_at_ms: 0,
        };
        assert!(contact_completed(&input, &result("retry")).is_none());
        let done = contact_completed(&input, &result("failed")).unwrap();
        assert_eq!(done["data"]["decision"], "failed");
        assert_eq!(done["type"], "contact.completed");
    }
}
