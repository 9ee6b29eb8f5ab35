//! `replay redrive`'s engine: one stage's real `handle` run again on a recorded call's
//! inputs, in process, against in-memory call state.
//!
//! Consumes a [`CallLog`] (the recorded call) and a stage built over
//! `sb_runtime::testing`'s in-memory doubles; feeds it, one at a time and in the recorded
//! order, the inputs it took on the call ([`StageName::takes`]): each a copy with a fresh
//! id, stamped when fed, so the outputs' ids (derived from the input's, as the runner
//! derives them) are new too. Produces one [`Fed`] per input: the copy, what the stage
//! emitted (captured by `sb_runtime::testing::drive`, never published) and how `handle`
//! ended. The agent's session is seeded before each input from the recorded call, as
//! `sb_runtime::session_log::fold` rebuilds a lost one: the caller's transcripts and the
//! answers as the caller heard them (cut at a barge-in) of the turns before it, and the
//! turn counter at the input's turn, so each new answer follows the conversation the caller
//! actually had. State: in memory, for one run; nothing here reaches NATS or Redis.

use std::sync::Arc;

use sb_agent::Agent;
use sb_runtime::{
    Stage,
    redis::session::Turn,
    session_log,
    state::Sessions,
    testing::{MemorySessions, drive},
};
use sb_schemas::{Body, Envelope, Kind};
use sb_tts::Tts;

use crate::CallLog;

/// The stages `redrive` can run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StageName {
    /// The agent: the greeting on `start`, an answer per `transcript` and `keypad`, a
    /// prompt or goodbye per `silence` and `max_duration`.
    Agent,
    /// The tts: each `sentence` spoken as audio chunks.
    Tts,
}

impl StageName {
    pub fn as_str(self) -> &'static str {
        match self {
            StageName::Agent => "agent",
            StageName::Tts => "tts",
        }
    }

    /// Whether the stage is run again on `event`: the agent on `start` and the inputs that
    /// start a turn (`transcript`, `keypad`, `silence`, `max_duration`), the tts on
    /// `sentence`.
    pub fn takes(self, event: &Envelope) -> bool {
        match self {
            StageName::Agent => matches!(
                event.body,
                Body::Start(_)
                    | Body::Transcript(_)
                    | Body::Keypad(_)
                    | Body::Silence(_)
                    | Body::MaxDuration(_)
            ),
            StageName::Tts => matches!(event.body, Body::Sentence(_)),
        }
    }

    /// The kinds the stage is run on, for messages.
    pub fn inputs(self) -> &'static str {
        match self {
            StageName::Agent => "start, transcript, keypad, silence or max_duration",
            StageName::Tts => "sentence",
        }
    }
}

/// One recorded input fed to the stage again, and what the stage made of it.
#[derive(Debug, Clone)]
pub struct Fed {
    /// The input as recorded.
    pub recorded: Envelope,
    /// The copy the stage handled: a fresh id, `at` when it was fed.
    pub input: Envelope,
    /// What the stage emitted, in order.
    pub outputs: Vec<Envelope>,
    /// How `handle` failed, if it did (the runner would have retried or dead-lettered).
    pub error: Option<String>,
    /// What went wrong underneath that the stage covered up (the LLM's errors, which the
    /// agent turns into its fallback phrase).
    pub notes: Vec<String>,
}

/// Runs `stage` on a copy of `recorded`.
pub async fn feed<S: Stage>(stage: &S, recorded: &Envelope) -> Fed {
    let input = restamped(recorded);
    let driven = drive(stage, input.clone()).await;
    Fed {
        recorded: recorded.clone(),
        input,
        outputs: driven.outputs,
        error: driven.result.err().map(|e| e.to_string()),
        notes: Vec::new(),
    }
}

/// The agent run on each input of `log` it takes ([`StageName::takes`]), in order: for each, a fresh
/// agent from `agent` over a session seeded from the turns before it. `settle` sees each
/// [`Fed`] as it is made (to add notes) and may stop the run.
pub async fn agent<E>(
    log: &CallLog,
    agent: impl Fn(Arc<dyn Sessions>) -> Agent,
    mut settle: impl FnMut(&mut Fed) -> Result<(), E>,
) -> Result<Vec<Fed>, E> {
    let mut done = Vec::new();
    for recorded in log.envelopes().filter(|e| StageName::Agent.takes(e)) {
        let sessions = seeded(log, recorded).await;
        let mut fed = feed(&agent(sessions), recorded).await;
        settle(&mut fed)?;
        done.push(fed);
    }
    Ok(done)
}

/// The tts run on each `sentence` of `log`, in order (one at a time; the service speaks a
/// turn's sentences in parallel). Its session is empty, so no turn is ever stale.
pub async fn tts(log: &CallLog, tts: &Tts) -> Vec<Fed> {
    let mut done = Vec::new();
    for recorded in log.envelopes().filter(|e| StageName::Tts.takes(e)) {
        done.push(feed(tts, recorded).await);
    }
    done
}

/// The session the agent had when `input` arrived, rebuilt from the recorded call: the
/// conversation of the turns before it (`session_log::fold`), the call's numbers, the
/// barge-in token of those turns, and the turn counter at the input's turn (as the stt
/// sets it before it publishes a transcript).
pub async fn seeded(log: &CallLog, input: &Envelope) -> Arc<dyn Sessions> {
    let before = log
        .envelopes()
        .filter(|e| e.turn < input.turn || e.kind() == Kind::Start);
    let restore = session_log::fold(before).restore;
    let sessions = MemorySessions::default();
    let sid = &input.call_sid;
    sessions.start(sid, &input.tenant);
    if let Some(parties) = restore.parties {
        sessions.parties(sid, parties);
    }
    for turn in &restore.turns {
        push(&sessions, input, turn).await;
    }
    for _ in 0..input.turn {
        sessions.next_turn(sid);
    }
    if let Some(interrupted) = restore.bargein.checked_sub(1) {
        sessions.interrupt(sid, u32::try_from(interrupted).unwrap_or(u32::MAX));
    }
    Arc::new(sessions)
}

async fn push(sessions: &MemorySessions, input: &Envelope, turn: &Turn) {
    // In memory, a push fails only when a test switched failures on; this one never does.
    let pushed = sessions.push_turn(&input.call_sid, turn).await;
    debug_assert!(pushed.is_ok(), "{pushed:?}");
}

/// A copy of `recorded` with a fresh id and the current time. A transcript's end of speech
/// keeps its distance to the transcript, so the copy's latency waterfall reads like the
/// original's.
pub fn restamped(recorded: &Envelope) -> Envelope {
    let mut input = Envelope::new(
        recorded.tenant.clone(),
        recorded.call_sid.clone(),
        recorded.turn,
        recorded.body.clone(),
    );
    if let Body::Transcript(t) = &mut input.body
        && t.speech_ended_at > 0
    {
        let before = recorded.at.saturating_sub(t.speech_ended_at);
        t.speech_ended_at = input.at.saturating_sub(before);
    }
    input
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Stored;
    use sb_runtime::redis::session::Role;
    use sb_schemas::{BargeIn, BargeInTrigger, CallSid, Sentence, Start, TenantId, Transcript};

    fn sid() -> CallSid {
        CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap()
    }

    fn event(turn: u32, at: u64, body: Body) -> Stored {
        let mut event = Envelope::new(TenantId::parse("acme").unwrap(), sid(), turn, body);
        event.at = at;
        Stored {
            stream: "CALLS",
            seq: at,
            event,
        }
    }

    fn said(index: u32, text: &str, last: bool) -> Body {
        Body::Sentence(Sentence {
            index,
            text: text.into(),
            last,
            fallback: false,
        })
    }

    fn heard(text: &str) -> Body {
        Body::Transcript(Transcript {
            epoch: 1,
            text: text.into(),
            confidence: 0.9,
            audio_seq: 1,
            speech_ended_at: 0,
        })
    }

    type History = &'static [(Role, &'static str)];

    /// A call of three turns, the second answer interrupted after its first sentence.
    fn call() -> CallLog {
        let start = Body::Start(Start {
            stream_sid: "MZ1".into(),
            account_sid: "AC1".into(),
            from: "+14155551234".into(),
            to: "+15005550006".into(),
            custom_parameters: Default::default(),
        });
        let bargein = Body::BargeIn(BargeIn {
            token: 2,
            trigger: BargeInTrigger::Speech,
            sentences_heard: 1,
            cut: None,
        });
        CallLog {
            events: vec![
                event(0, 1, start),
                event(0, 2, said(0, "Hello.", true)),
                event(1, 3, heard("Opening hours?")),
                event(1, 4, said(0, "Nine to five.", false)),
                event(1, 5, said(1, "Every day.", true)),
                event(1, 6, bargein),
                event(2, 7, heard("And Sundays?")),
                event(2, 8, said(0, "Closed.", true)),
            ],
            undecodable: 0,
        }
    }

    /// Each input's session holds the turns before it, answers cut to what was heard, the
    /// turn counter at the input's turn and no barge-in that would make the input stale.
    #[tokio::test]
    async fn the_session_is_the_conversation_before_the_input() {
        let log = call();
        let inputs: Vec<&Envelope> = log
            .envelopes()
            .filter(|e| StageName::Agent.takes(e))
            .collect();
        assert_eq!(inputs.len(), 3, "start and two transcripts");
        // (input, the session's turns, its turn counter, its barge-in token)
        let cases: [(usize, History, u32, u64); 3] = [
            (0, &[], 0, 0),
            (1, &[(Role::Assistant, "Hello.")], 1, 0),
            (
                2,
                &[
                    (Role::Assistant, "Hello."),
                    (Role::User, "Opening hours?"),
                    (Role::Assistant, "Nine to five."),
                ],
                2,
                2,
            ),
        ];
        for (i, turns, turn, bargein) in cases {
            let session = seeded(&log, inputs[i]).await.load(&sid()).await.unwrap();
            let session = session.unwrap();
            let got: Vec<(Role, &str)> = session
                .turns
                .iter()
                .map(|t| (t.role, t.text.as_str()))
                .collect();
            assert_eq!(got, turns, "input {i}");
            assert_eq!(session.turn, turn, "input {i}");
            assert_eq!(session.bargein, bargein, "input {i}");
            assert_eq!(session.progress().stale(turn), None, "input {i}");
            assert_eq!(session.parties.unwrap().to, "+15005550006");
        }
    }

    /// The copy is a new event (id, time) with the same call, turn and body, and a
    /// transcript keeps its end of speech as far before it as it was.
    #[test]
    fn a_copy_is_fresh_but_says_the_same() {
        let mut recorded = event(3, 10_000_000, heard("Hi")).event;
        if let Body::Transcript(t) = &mut recorded.body {
            t.speech_ended_at = 9_400_000;
        }
        let copy = restamped(&recorded);
        assert_ne!(copy.id, recorded.id);
        assert!(copy.at > recorded.at);
        assert_eq!(
            (&copy.call_sid, copy.turn, copy.kind()),
            (&recorded.call_sid, 3, Kind::Transcript)
        );
        let Body::Transcript(t) = &copy.body else {
            panic!("{copy:?}")
        };
        assert_eq!(copy.at - t.speech_ended_at, 600_000);
        assert_eq!(t.text, "Hi");
    }
}
