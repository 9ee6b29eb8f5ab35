//! Ring 2: the agent's real `handle` with no servers. A scripted LLM stands in for the
//! provider, `sb_runtime::testing::MemorySessions` for the Redis session, and
//! `sb_runtime::testing::drive` runs each input through the in-memory outbox. Covers the
//! barge-in paths (mid-answer, before the answer, a `bargein` input) and the fallback
//! paths (the LLM refuses, breaks off, says nothing). Redis' own semantics (Lua, TTLs)
//! are ring 3 (`tests/it/agent_tts.rs`).

#![allow(clippy::unwrap_used)] // a test file: helpers panic on failure by design

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt as _;
use futures::future::BoxFuture;
use sb_agent::openai::{ChatRequest, Llm, LlmError, LlmEvent, LlmStream};
use sb_agent::{Agent, AgentConfig};
use sb_runtime::redis::session::{OutboundSession, Role, Turn};
use sb_runtime::state::Sessions as _;
use sb_runtime::testing::{MemorySessions, drive, drive_delivery};
use sb_runtime::{LiveTenants, Tenants};
use sb_runtime::{StageError, Tenant};
use sb_schemas::{
    AnsweredBy, BargeIn, BargeInTrigger, Body, CallSid, End, EndReason, Envelope, Kind, Start,
    TenantId, Transcript,
};

/// One step of a scripted answer.
#[derive(Debug, Clone)]
enum Step {
    Text(&'static str),
    /// Lets the agent speak what arrived so far before the script goes on.
    Pause,
    /// The caller barges in on the call's current turn (as the ingress would).
    BargeIn,
    Fail(LlmError),
    Finish,
}

/// An LLM that answers every request with the same script (or refuses with `refuse`), and
/// counts the requests.
struct Scripted {
    steps: Vec<Step>,
    refuse: Option<LlmError>,
    sessions: Arc<MemorySessions>,
    requests: AtomicUsize,
}

impl Llm for Scripted {
    fn stream<'a>(
        &'a self,
        _request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<LlmStream, LlmError>> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let refuse = self.refuse.clone();
        let sessions = self.sessions.clone();
        let steps = self.steps.clone();
        Box::pin(async move {
            if let Some(error) = refuse {
                return Err(error);
            }
            let stream = futures::stream::iter(steps).filter_map(move |step| {
                let sessions = sessions.clone();
                async move {
                    match step {
                        Step::Text(text) => Some(Ok(LlmEvent::Text(text.into()))),
                        Step::Pause => {
                            tokio::task::yield_now().await;
                            None
                        }
                        Step::BargeIn => {
                            let turn = sessions.session(&sid()).unwrap().turn;
                            sessions.interrupt(&sid(), turn);
                            None
                        }
                        Step::Fail(error) => Some(Err(error)),
                        Step::Finish => Some(Ok(LlmEvent::Finished {
                            reason: Some("stop".into()),
                        })),
                    }
                }
            });
            Ok(Box::pin(stream) as LlmStream)
        })
    }
}

fn sid() -> CallSid {
    CallSid::parse("CA00000000000000000000000000000001").unwrap()
}

fn acme() -> Arc<Tenant> {
    tenants()
        .by_id(&TenantId::parse("acme").unwrap())
        .unwrap()
        .clone()
}

fn tenants() -> Arc<LiveTenants> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/base/tenants.toml");
    LiveTenants::fixed(Tenants::load(&path).unwrap())
}

/// An agent on in-memory sessions and a scripted LLM; the call has started and the
/// caller's first turn is open.
struct Rig {
    agent: Agent,
    sessions: Arc<MemorySessions>,
    llm: Arc<Scripted>,
}

impl Rig {
    fn new(steps: Vec<Step>, refuse: Option<LlmError>) -> Self {
        let rig = Self::at_start(steps, refuse);
        rig.sessions.next_turn(&sid());
        rig
    }

    /// The call has started; the caller has not said anything yet.
    fn at_start(steps: Vec<Step>, refuse: Option<LlmError>) -> Self {
        let sessions = Arc::new(MemorySessions::default());
        sessions.start(&sid(), &acme().id);
        let llm = Arc::new(Scripted {
            steps,
            refuse,
            sessions: sessions.clone(),
            requests: AtomicUsize::new(0),
        });
        let mut config = AgentConfig::for_llm("http://127.0.0.1:9/openai/v1");
        config.llm_max_retries = 0;
        let agent = Agent::with_providers(sessions.clone(), tenants(), llm.clone(), None, config);
        Self {
            agent,
            sessions,
            llm,
        }
    }

    fn requests(&self) -> usize {
        self.llm.requests.load(Ordering::SeqCst)
    }

    /// The stored assistant turn `turn`, if any.
    fn answer(&self, turn: u32) -> Option<Turn> {
        let session = self.sessions.session(&sid()).unwrap();
        session
            .turns
            .into_iter()
            .find(|t| t.role == Role::Assistant && t.turn == turn)
    }
}

fn event(turn: u32, body: Body) -> Envelope {
    Envelope::new(acme().id.clone(), sid(), turn, body)
}

fn transcript(turn: u32, text: &str) -> Envelope {
    event(
        turn,
        Body::Transcript(Transcript {
            epoch: 0,
            text: text.into(),
            confidence: 0.9,
            audio_seq: 100,
            speech_ended_at: 0,
        }),
    )
}

/// (text, last, fallback) of every sentence emitted.
fn sentences(outputs: &[Envelope]) -> Vec<(String, bool, bool)> {
    outputs
        .iter()
        .filter_map(|e| match &e.body {
            Body::Sentence(s) => Some((s.text.clone(), s.last, s.fallback)),
            _ => None,
        })
        .collect()
}

const FIRST: &str = "Sure thing, we open at nine on weekdays. ";
const SECOND: &str = "On Saturdays we open at ten. ";
const THIRD: &str = "Sundays we are closed.";

/// The whole answer when nobody interrupts: three sentences in order, the last `last`,
/// tokens before them, every output of the transcript's turn; the session keeps the user
/// turn and the answer one line per sentence.
#[tokio::test]
async fn an_answer_is_spoken_sentence_by_sentence() {
    let steps = vec![
        Step::Text(FIRST),
        Step::Pause,
        Step::Text(SECOND),
        Step::Text(THIRD),
        Step::Finish,
    ];
    let rig = Rig::new(steps, None);
    let driven = drive(&rig.agent, transcript(1, "When are you open?")).await;
    driven.result.as_ref().unwrap();
    let said = sentences(&driven.outputs);
    let texts: Vec<&str> = said.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        texts,
        [FIRST.trim(), SECOND.trim(), THIRD.trim()],
        "{said:?}"
    );
    assert_eq!(
        said.iter().map(|s| s.1).collect::<Vec<_>>(),
        [false, false, true]
    );
    assert!(said.iter().all(|s| !s.2), "no fallback");
    assert!(!driven.of(Kind::Token).is_empty());
    assert!(driven.outputs.iter().all(|e| e.turn == 1));
    let answer = rig.answer(1).unwrap();
    assert_eq!(answer.text.lines().count(), 3);
    assert!(!answer.interrupted);
}

/// A barge-in while the answer streams: the sentence already said stays, nothing after the
/// barge-in is emitted (no sentence, no token), the LLM is not asked again, and the stored
/// answer is the one sentence, marked interrupted.
#[tokio::test]
async fn a_barge_in_mid_answer_stops_every_later_output() {
    // The splitter completes a sentence when the next one starts.
    let steps = vec![
        Step::Text(FIRST),
        Step::Text("On"),
        Step::Pause,
        Step::BargeIn,
        Step::Text(" Saturdays we open at ten. "),
        Step::Text(THIRD),
        Step::Finish,
    ];
    let rig = Rig::new(steps, None);
    let driven = drive(&rig.agent, transcript(1, "When are you open?")).await;
    driven.result.as_ref().unwrap();
    let said = sentences(&driven.outputs);
    assert_eq!(said.len(), 1, "{said:?}");
    assert_eq!(said[0].0, FIRST.trim());
    let last = driven.outputs.last().unwrap();
    assert_eq!(last.kind(), Kind::Sentence, "nothing after the barge-in");
    let tokens: String = driven
        .of(Kind::Token)
        .iter()
        .map(|e| match &e.body {
            Body::Token(t) => t.text.clone(),
            _ => unreachable!(),
        })
        .collect();
    assert!(!tokens.contains("Saturdays"), "{tokens:?}");
    assert_eq!(rig.requests(), 1);
    let answer = rig.answer(1).unwrap();
    assert_eq!(answer.text, FIRST.trim());
    assert!(answer.interrupted);
}

/// A transcript of a turn the caller already interrupted, or one a newer turn superseded,
/// is skipped before the LLM is asked: no output, no request.
#[tokio::test]
async fn a_stale_turn_is_never_answered() {
    let rig = Rig::new(vec![Step::Text(FIRST), Step::Finish], None);
    rig.sessions.interrupt(&sid(), 1);
    let driven = drive(&rig.agent, transcript(1, "When are you open?")).await;
    driven.result.as_ref().unwrap();
    assert!(driven.outputs.is_empty());

    let rig = Rig::new(vec![Step::Text(FIRST), Step::Finish], None);
    rig.sessions.next_turn(&sid());
    let driven = drive(&rig.agent, transcript(1, "When are you open?")).await;
    driven.result.as_ref().unwrap();
    assert!(driven.outputs.is_empty());
    assert_eq!(rig.requests(), 0);
}

/// A `bargein` input keeps only the sentences the caller heard; when the answer is not
/// stored yet it is retried (the answer's handler is still speaking), and after the
/// retries it is skipped rather than dead-lettered.
#[tokio::test]
async fn a_bargein_keeps_what_was_heard() {
    let steps = vec![
        Step::Text(FIRST),
        Step::Text(SECOND),
        Step::Text(THIRD),
        Step::Finish,
    ];
    let rig = Rig::new(steps, None);
    let bargein = event(
        1,
        Body::BargeIn(BargeIn {
            token: 2,
            trigger: BargeInTrigger::Words,
            sentences_heard: 1,
            cut: None,
        }),
    );
    let early = drive(&rig.agent, bargein.clone()).await;
    assert!(
        matches!(
            early.result,
            Err(StageError::Retry {
                kind: "answer_pending",
                ..
            })
        ),
        "{:?}",
        early.result
    );
    let late = drive_delivery(&rig.agent, bargein.clone(), 4).await;
    late.result.unwrap();

    drive(&rig.agent, transcript(1, "When are you open?"))
        .await
        .result
        .unwrap();
    assert_eq!(rig.answer(1).unwrap().text.lines().count(), 3);
    let driven = drive(&rig.agent, bargein).await;
    driven.result.as_ref().unwrap();
    assert!(driven.outputs.is_empty());
    let answer = rig.answer(1).unwrap();
    assert_eq!(answer.text, FIRST.trim());
    assert!(answer.interrupted);
}

/// A barge-in cut inside a sentence keeps its words the caller heard too (their middle
/// played, by proportional alignment), after the whole sentences heard.
#[tokio::test]
async fn a_bargein_inside_a_sentence_keeps_the_words_heard() {
    let steps = vec![
        Step::Text(FIRST),
        Step::Text(SECOND),
        Step::Text(THIRD),
        Step::Finish,
    ];
    let rig = Rig::new(steps, None);
    drive(&rig.agent, transcript(1, "When are you open?"))
        .await
        .result
        .unwrap();
    let second = rig
        .answer(1)
        .unwrap()
        .text
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    let cut = sb_schemas::CutSentence {
        heard_ms: 500,
        sentence_ms: 1000,
    };
    let bargein = event(
        1,
        Body::BargeIn(BargeIn {
            token: 2,
            trigger: BargeInTrigger::Words,
            sentences_heard: 1,
            cut: Some(cut),
        }),
    );
    drive(&rig.agent, bargein).await.result.unwrap();
    let answer = rig.answer(1).unwrap();
    let words = sb_runtime::heard::heard_words(&second, cut);
    assert!(
        !words.is_empty() && words.len() < second.len(),
        "{words:?} of {second:?}"
    );
    assert_eq!(answer.text, format!("{}\n{words}", FIRST.trim()));
    assert!(answer.interrupted);
}

/// The LLM refuses (a non-retryable 500): the caller hears the tenant's fallback phrase,
/// as the turn's one and last sentence, marked `fallback`.
#[tokio::test]
async fn a_refused_request_is_answered_with_the_fallback() {
    let refuse = LlmError::Status {
        status: 500,
        message: "boom".into(),
        retryable: false,
    };
    let rig = Rig::new(Vec::new(), Some(refuse));
    let driven = drive(&rig.agent, transcript(1, "When are you open?")).await;
    driven.result.as_ref().unwrap();
    let fallback = acme().fallback_phrase.clone();
    assert_eq!(sentences(&driven.outputs), [(fallback.clone(), true, true)]);
    assert_eq!(rig.answer(1).unwrap().text, fallback);
}

/// The stream breaks off after a sentence: that sentence stays, the unsaid rest is
/// dropped and the fallback phrase ends the turn. An answer with no text at all also ends
/// in the fallback: never silence.
#[tokio::test]
async fn a_broken_or_empty_answer_ends_in_the_fallback() {
    let fallback = acme().fallback_phrase.clone();
    let steps = vec![
        Step::Text(FIRST),
        Step::Text("And"),
        Step::Pause,
        Step::Text(" on Satur"),
        Step::Fail(LlmError::Cut),
    ];
    let rig = Rig::new(steps, None);
    let driven = drive(&rig.agent, transcript(1, "When are you open?")).await;
    driven.result.as_ref().unwrap();
    assert_eq!(
        sentences(&driven.outputs),
        [
            (FIRST.trim().to_owned(), false, false),
            (fallback.clone(), true, true)
        ]
    );

    let rig = Rig::new(vec![Step::Finish], None);
    let driven = drive(&rig.agent, transcript(1, "When are you open?")).await;
    driven.result.as_ref().unwrap();
    assert_eq!(sentences(&driven.outputs), [(fallback, true, true)]);
}

/// `start` is answered with the tenant's greeting as turn 0's only sentence, once: a
/// redelivered `start` says nothing again, and a greeting the caller already interrupted,
/// or talked past (a turn of their own started), is not said at all.
#[tokio::test]
async fn the_greeting_is_said_once_unless_interrupted() {
    let start = event(
        0,
        Body::Start(Start {
            stream_sid: "MZ00000000000000000000000000000001".into(),
            account_sid: "AC00000000000000000000000000000001".into(),
            from: "+15005550100".into(),
            to: "+15005550006".into(),
            custom_parameters: Default::default(),
        }),
    );
    let rig = Rig::at_start(Vec::new(), None);
    let driven = drive(&rig.agent, start.clone()).await;
    driven.result.as_ref().unwrap();
    assert_eq!(
        sentences(&driven.outputs),
        [(acme().greeting.clone(), true, false)]
    );
    assert_eq!(driven.outputs[0].turn, 0);
    assert!(drive(&rig.agent, start.clone()).await.outputs.is_empty());

    let rig = Rig::at_start(Vec::new(), None);
    rig.sessions.interrupt(&sid(), 0);
    assert!(drive(&rig.agent, start.clone()).await.outputs.is_empty());

    let rig = Rig::new(Vec::new(), None);
    assert!(drive(&rig.agent, start).await.outputs.is_empty());
}

/// `end` says nothing and shortens the session to the configured keep time (60 s), so late
/// events still find it and it then expires.
#[tokio::test]
async fn the_end_shortens_the_session() {
    let rig = Rig::new(Vec::new(), None);
    assert_eq!(rig.sessions.ended(&sid()), None);
    let end = event(
        1,
        Body::End(End {
            reason: EndReason::Stop,
        }),
    );
    let driven = drive(&rig.agent, end).await;
    driven.result.as_ref().unwrap();
    assert!(driven.outputs.is_empty());
    assert_eq!(
        rig.sessions.ended(&sid()),
        Some(std::time::Duration::from_secs(60))
    );
}

/// A redelivery after the answer was stored in the session (its publish acks timed out,
/// e.g. while JetStream elected a new leader) says the same sentences again under the same
/// event ids, so JetStream stores the lost ones and keeps one copy of the rest; the LLM is
/// not asked again.
#[tokio::test]
async fn a_redelivered_answered_turn_repeats_its_sentences_under_the_same_ids() {
    let steps = vec![Step::Text(FIRST), Step::Text(SECOND), Step::Finish];
    let rig = Rig::new(steps, None);
    let input = transcript(1, "When are you open?");
    let first = drive(&rig.agent, input.clone()).await;
    first.result.as_ref().unwrap();
    let again = drive_delivery(&rig.agent, input, 2).await;
    again.result.as_ref().unwrap();
    assert_eq!(rig.requests(), 1, "the LLM is asked once");
    let ids = |d: &[Envelope]| -> Vec<_> {
        d.iter()
            .filter(|e| e.kind() == Kind::Sentence)
            .map(|e| (e.id, e.body.clone()))
            .collect()
    };
    assert_eq!(ids(&again.outputs), ids(&first.outputs));
    assert_eq!(sentences(&again.outputs).len(), 2);
}

/// An outbound campaign call with machine detection: `start` says nothing (the greeting
/// waits for the verdict); a person gets the campaign's greeting with the contact's
/// variables filled in; the verdict again (a repeated callback) says nothing twice.
#[tokio::test]
async fn an_outbound_call_greets_a_person_once_the_verdict_is_in() {
    let rig = Rig::at_start(Vec::new(), None);
    let campaign = OutboundSession {
        greeting: Some("Hi Ann, this is Acme about your appointment.".into()),
        prompt: Some("You remind Ann of her appointment.".into()),
        amd: true,
        ..OutboundSession::default()
    };
    rig.sessions.outbound(&sid(), &acme().id, campaign);
    let start = drive(&rig.agent, event(0, Body::Start(start_body()))).await;
    start.result.as_ref().unwrap();
    assert!(
        sentences(&start.outputs).is_empty(),
        "no greeting before the verdict"
    );
    let human = event(0, Body::AnsweredBy(answered("human", false, "")));
    let greeted = drive(&rig.agent, human.clone()).await;
    greeted.result.as_ref().unwrap();
    assert_eq!(
        sentences(&greeted.outputs),
        [(
            "Hi Ann, this is Acme about your appointment.".to_owned(),
            true,
            false
        )]
    );
    let again = drive(&rig.agent, human).await;
    again.result.as_ref().unwrap();
    assert!(sentences(&again.outputs).is_empty(), "greeted once");
    assert_eq!(rig.sessions.action(&sid()).await.unwrap(), None);
}

/// A machine gets the voicemail message as turn 0, with a hang-up waiting for it to play.
#[tokio::test]
async fn a_machine_gets_the_voicemail_then_a_hang_up() {
    let rig = Rig::at_start(Vec::new(), None);
    let campaign = OutboundSession {
        greeting: Some("Hi Ann.".into()),
        prompt: None,
        amd: true,
        ..OutboundSession::default()
    };
    rig.sessions.outbound(&sid(), &acme().id, campaign);
    let machine = event(
        0,
        Body::AnsweredBy(answered(
            "machine_end_beep",
            true,
            "Hi Ann, please call Acme back.",
        )),
    );
    let driven = drive(&rig.agent, machine).await;
    driven.result.as_ref().unwrap();
    assert_eq!(
        sentences(&driven.outputs),
        [("Hi Ann, please call Acme back.".to_owned(), true, false)]
    );
    let action = rig.sessions.action(&sid()).await.unwrap().unwrap();
    assert!(action.contains("hang_up"), "{action}");
    assert_eq!(
        rig.answer(0).unwrap().text,
        "Hi Ann, please call Acme back."
    );
}

fn start_body() -> Start {
    Start {
        stream_sid: "MZ00000000000000000000000000000001".into(),
        account_sid: "AC00000000000000000000000000000000".into(),
        from: "+15005550006".into(),
        to: "+15005550123".into(),
        custom_parameters: Default::default(),
    }
}

fn answered(by: &str, machine: bool, voicemail: &str) -> AnsweredBy {
    AnsweredBy {
        attempt: "0123456789abcdef0123456789abcdef".into(),
        answered_by: by.into(),
        machine,
        voicemail: voicemail.into(),
    }
}
