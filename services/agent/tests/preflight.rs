//! Ring 2: answers started on a preflight (a stable interim transcript), with the agent's
//! real `handle`, a scripted LLM that records its requests, and
//! `sb_runtime::testing::MemorySessions` for Redis (its preflight records keep the
//! semantics of `sb_runtime::redis::preflight`'s scripts, which ring 3 runs on Redis). A
//! confirmed preflight is the turn's only answer; a discarded one never reaches the
//! conversation; one superseded while it speaks stops.

#![allow(clippy::unwrap_used)] // a test file: helpers panic on failure by design

use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use sb_agent::openai::{ChatRequest, Llm, LlmError, LlmEvent, LlmStream};
use sb_agent::{Agent, AgentConfig};
use sb_runtime::redis::preflight::Confirmation;
use sb_runtime::redis::session::{Role, Turn};
use sb_runtime::state::Sessions as _;
use sb_runtime::testing::{Driven, MemorySessions, drive, drive_delivery};
use sb_runtime::{LiveTenants, Tenants};
use sb_schemas::{Body, CallSid, Envelope, Kind, Preflight, TenantId, Transcript};

const ANSWER: &str = "We open at nine on weekdays. On Saturdays we open at ten.";

/// What the scripted LLM does mid-answer, between its two sentences.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Meanwhile {
    Nothing,
    /// The turn's transcript arrives (confirming the preflight) while it speaks.
    Confirm,
    /// The stt starts a newer turn (the final differed): the preflight is superseded.
    NewTurn,
}

/// An LLM that answers every request with [`ANSWER`] and records what it was asked.
struct Scripted {
    sessions: Arc<MemorySessions>,
    meanwhile: Meanwhile,
    asked: Mutex<Vec<Vec<(String, String)>>>,
}

impl Llm for Scripted {
    fn stream<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<LlmStream, LlmError>> {
        let messages = request
            .messages
            .iter()
            .map(|m| (m.role.to_owned(), m.content.clone()))
            .collect();
        self.asked.lock().unwrap().push(messages);
        let (sessions, meanwhile) = (self.sessions.clone(), self.meanwhile);
        Box::pin(async move {
            let (first, second) = ANSWER.split_at(ANSWER.find(" On").unwrap() + 1);
            let middle = futures::stream::once(async move {
                let turn = sessions.session(&sid()).unwrap().turn;
                match meanwhile {
                    Meanwhile::Nothing => {}
                    Meanwhile::Confirm => {
                        let found = sessions.preflight_confirm(&sid(), turn, SAID).await;
                        assert_eq!(found.unwrap(), Confirmation::Pending);
                        // The caller's words are in the conversation at once, for a turn
                        // that follows while this answer still runs.
                        let stored = sessions.session(&sid()).unwrap().turns;
                        let stored: Vec<_> =
                            stored.iter().map(|t| (t.role, t.turn, &*t.text)).collect();
                        assert_eq!(stored, [(Role::User, turn, SAID)]);
                    }
                    Meanwhile::NewTurn => {
                        sessions.next_turn(&sid());
                    }
                }
                Ok(LlmEvent::Text(String::new()))
            });
            let events = futures::stream::iter([Ok(LlmEvent::Text(first.into()))])
                .chain(middle)
                .chain(futures::stream::iter([
                    Ok(LlmEvent::Text(second.into())),
                    Ok(LlmEvent::Finished {
                        reason: Some("stop".into()),
                    }),
                ]));
            Ok(Box::pin(events) as LlmStream)
        })
    }
}

use futures::StreamExt as _;

/// What the stt heard: the interim, then the final with the same words.
const HEARD: &str = "when are you open";
const SAID: &str = "When are you open?";

fn sid() -> CallSid {
    CallSid::parse("CA00000000000000000000000000000001").unwrap()
}

fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

/// An agent on in-memory sessions; the call has started.
struct Rig {
    agent: Agent,
    sessions: Arc<MemorySessions>,
    llm: Arc<Scripted>,
}

impl Rig {
    fn new(meanwhile: Meanwhile) -> Self {
        let sessions = Arc::new(MemorySessions::default());
        sessions.start(&sid(), &acme());
        let llm = Arc::new(Scripted {
            sessions: sessions.clone(),
            meanwhile,
            asked: Mutex::new(Vec::new()),
        });
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/base/tenants.toml");
        let tenants = LiveTenants::fixed(Tenants::load(&path).unwrap());
        let mut config = AgentConfig::for_llm("http://127.0.0.1:9/openai/v1");
        config.llm_max_retries = 0;
        let agent = Agent::with_providers(sessions.clone(), tenants, llm.clone(), None, config);
        Self {
            agent,
            sessions,
            llm,
        }
    }

    /// The user messages of each LLM request, in order.
    fn asked(&self) -> Vec<Vec<String>> {
        let asked = self.llm.asked.lock().unwrap();
        asked
            .iter()
            .map(|messages| {
                messages
                    .iter()
                    .filter(|(role, _)| role != "system")
                    .map(|(role, text)| format!("{role}: {text}"))
                    .collect()
            })
            .collect()
    }

    fn turns(&self) -> Vec<Turn> {
        self.sessions.session(&sid()).unwrap().turns
    }
}

fn preflight(turn: u32, text: &str) -> Envelope {
    let body = Body::Preflight(Preflight {
        epoch: 0,
        text: text.into(),
    });
    Envelope::new(acme(), sid(), turn, body)
}

fn transcript(turn: u32, text: &str) -> Envelope {
    let body = Body::Transcript(Transcript {
        epoch: 0,
        text: text.into(),
        confidence: 0.9,
        audio_seq: 100,
        speech_ended_at: 0,
    });
    Envelope::new(acme(), sid(), turn, body)
}

fn turn(role: Role, turn: u32, text: &str) -> Turn {
    Turn {
        role,
        text: text.into(),
        turn,
        interrupted: false,
    }
}

fn sentences(outputs: &[Envelope]) -> Vec<(u32, String)> {
    outputs
        .iter()
        .filter_map(|e| match &e.body {
            Body::Sentence(s) => Some((e.turn, s.text.clone())),
            _ => None,
        })
        .collect()
}

/// The answer is said on the preflight's turn and kept out of the conversation; the
/// transcript with the same words says nothing more and puts both turns in the session
/// (the user's as the final words): one LLM request.
#[tokio::test]
async fn a_confirmed_preflight_is_the_answer() {
    let rig = Rig::new(Meanwhile::Nothing);
    let turn_1 = rig.sessions.next_turn(&sid());
    let input = preflight(turn_1, HEARD);
    let early = drive(&rig.agent, input.clone()).await;
    early.result.as_ref().unwrap();
    // Redelivered (its acks lost): the same sentences under the same ids, no new request.
    let redelivered = drive_delivery(&rig.agent, input, 2).await;
    let ids = |driven: &Driven| {
        let sentences = driven.of(Kind::Sentence);
        sentences.iter().map(|e| e.id).collect::<Vec<_>>()
    };
    assert_eq!(ids(&redelivered), ids(&early));
    assert_eq!(redelivered.outputs.len(), 2);
    assert_eq!(rig.llm.asked.lock().unwrap().len(), 1);
    assert_eq!(
        sentences(&early.outputs),
        [
            (1, "We open at nine on weekdays.".to_owned()),
            (1, "On Saturdays we open at ten.".to_owned())
        ]
    );
    assert!(rig.turns().is_empty(), "{:?}", rig.turns());

    let confirmed = drive(&rig.agent, transcript(turn_1, SAID)).await;
    confirmed.result.as_ref().unwrap();
    assert!(confirmed.outputs.is_empty(), "{:?}", confirmed.outputs);
    assert_eq!(rig.asked(), [vec![format!("user: {HEARD}")]]);
    let answer = "We open at nine on weekdays.\nOn Saturdays we open at ten.";
    assert_eq!(
        rig.turns(),
        [turn(Role::User, 1, SAID), turn(Role::Assistant, 1, answer)]
    );
    // A redelivered transcript changes nothing.
    let again = drive(&rig.agent, transcript(turn_1, SAID)).await;
    again.result.as_ref().unwrap();
    assert!(again.outputs.is_empty());
    assert_eq!(rig.turns().len(), 2);
}

/// The transcript confirms the preflight while it is still speaking: the confirmation
/// stores the user turn, the end of the answer the assistant's, each once.
#[tokio::test]
async fn a_transcript_during_the_answer_settles_it_at_its_end() {
    let rig = Rig::new(Meanwhile::Confirm);
    let turn_1 = rig.sessions.next_turn(&sid());
    let early = drive(&rig.agent, preflight(turn_1, HEARD)).await;
    early.result.as_ref().unwrap();
    assert_eq!(sentences(&early.outputs).len(), 2);
    assert_eq!(rig.turns().len(), 2, "{:?}", rig.turns());
    let late = drive(&rig.agent, transcript(turn_1, SAID)).await;
    late.result.as_ref().unwrap();
    assert!(late.outputs.is_empty());
    assert_eq!(rig.turns().len(), 2, "{:?}", rig.turns());
    assert_eq!(rig.llm.asked.lock().unwrap().len(), 1);
}

/// The final differed, so the stt put it on a newer turn: that transcript is answered
/// as always (a second request), the model never sees the discarded preflight's words,
/// and the session holds only the final's turn.
#[tokio::test]
async fn a_differing_final_discards_the_preflight() {
    let rig = Rig::new(Meanwhile::Nothing);
    let turn_1 = rig.sessions.next_turn(&sid());
    drive(&rig.agent, preflight(turn_1, "when are you"))
        .await
        .result
        .unwrap();
    let turn_2 = rig.sessions.next_turn(&sid());
    let final_words = "When are you open on Sundays?";
    let answered = drive(&rig.agent, transcript(turn_2, final_words)).await;
    answered.result.as_ref().unwrap();
    assert_eq!(sentences(&answered.outputs).len(), 2);
    assert!(sentences(&answered.outputs).iter().all(|(t, _)| *t == 2));
    assert_eq!(
        rig.asked(),
        [
            vec!["user: when are you".to_owned()],
            vec![format!("user: {final_words}")]
        ]
    );
    let turns = rig.turns();
    assert_eq!(
        turns.iter().map(|t| (t.role, t.turn)).collect::<Vec<_>>(),
        [(Role::User, 2), (Role::Assistant, 2)]
    );
    // A late transcript of the discarded turn (it cannot come: the stt moved on) would
    // find it stale, not confirm it.
    let stale = drive(&rig.agent, transcript(turn_1, "when are you")).await;
    stale.result.as_ref().unwrap();
    assert!(stale.outputs.is_empty());
    assert_eq!(rig.turns().len(), 2);
}

/// The newer turn starts while the preflight speaks: it stops at the next staleness
/// check (no second sentence) and the session stays untouched.
#[tokio::test]
async fn a_preflight_superseded_mid_answer_stops() {
    let rig = Rig::new(Meanwhile::NewTurn);
    let turn_1 = rig.sessions.next_turn(&sid());
    let early = drive(&rig.agent, preflight(turn_1, HEARD)).await;
    early.result.as_ref().unwrap();
    assert!(sentences(&early.outputs).len() < 2, "{:?}", early.outputs);
    assert!(early.of(Kind::Sentence).iter().all(|e| e.turn == 1));
    assert!(rig.turns().is_empty(), "{:?}", rig.turns());
}

/// A transcript that arrives first (no preflight yet) claims its turn and is answered;
/// the preflight delivered after it does not answer the turn again.
#[tokio::test]
async fn a_preflight_after_its_transcript_stands_aside() {
    let rig = Rig::new(Meanwhile::Nothing);
    let turn_1 = rig.sessions.next_turn(&sid());
    let answered = drive(&rig.agent, transcript(turn_1, SAID)).await;
    assert_eq!(sentences(&answered.outputs).len(), 2);
    let late = drive(&rig.agent, preflight(turn_1, HEARD)).await;
    late.result.as_ref().unwrap();
    assert!(late.outputs.is_empty(), "{:?}", late.outputs);
    assert_eq!(rig.llm.asked.lock().unwrap().len(), 1);
}
