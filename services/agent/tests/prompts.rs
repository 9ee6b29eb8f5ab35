//! Ring 2: the turns the ingress starts without words (`keypad`, `silence`,
//! `max_duration`), through the agent's real `handle` with no servers. A recording LLM
//! stands in for the provider (every request kept), a recording telephony for Twilio's
//! REST API (every hang-up and transfer kept), `sb_runtime::testing::MemorySessions` for
//! the Redis session; `sb_runtime::testing::drive` runs each input.

#![allow(clippy::unwrap_used)] // a test file: helpers panic on failure by design

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use sb_agent::openai::{ChatRequest, Llm, LlmError, LlmEvent, LlmStream};
use sb_agent::telephony::{Telephony, TelephonyError};
use sb_agent::{Agent, AgentConfig};
use sb_runtime::LiveTenants;
use sb_runtime::redis::session::{Role, Turn};
use sb_runtime::state::Sessions as _;
use sb_runtime::tenants::testing::TenantToml;
use sb_runtime::testing::{Driven, MemorySessions, drive, drive_delivery};
use sb_schemas::{
    Body, CallSid, Envelope, Keypad, KeypadEnd, MaxDuration, Played, Silence, TenantId,
};

const TRANSFER_TO: &str = "+15005550010";
const PROMPTS: [&str; 2] = ["Are you still there?", "I am still here if you need me."];
const GOODBYE: &str = "Thank you for calling Acme. Goodbye.";
const ANSWER: &str = "Order 4417 ships today.";

fn sid() -> CallSid {
    CallSid::parse("CA00000000000000000000000000000001").unwrap()
}

/// An LLM that answers every request with [`ANSWER`] and keeps the requests.
#[derive(Default)]
struct RecordingLlm {
    requests: Mutex<Vec<ChatRequest>>,
}

impl Llm for RecordingLlm {
    fn stream<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<LlmStream, LlmError>> {
        self.requests.lock().unwrap().push(request.clone());
        let events = vec![
            Ok(LlmEvent::Text(ANSWER.into())),
            Ok(LlmEvent::Finished {
                reason: Some("stop".into()),
            }),
        ];
        Box::pin(async move { Ok(Box::pin(futures::stream::iter(events)) as LlmStream) })
    }
}

/// What the agent did to the call.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Done {
    HangUp(CallSid),
    Transfer(CallSid, String),
}

/// A telephony that succeeds and keeps every action.
#[derive(Default)]
struct RecordingTelephony {
    done: Mutex<Vec<Done>>,
}

impl Telephony for RecordingTelephony {
    fn hang_up<'a>(&'a self, call: &'a CallSid) -> BoxFuture<'a, Result<(), TelephonyError>> {
        self.done.lock().unwrap().push(Done::HangUp(call.clone()));
        Box::pin(async { Ok(()) })
    }

    fn transfer<'a>(
        &'a self,
        call: &'a CallSid,
        number: &'a str,
    ) -> BoxFuture<'a, Result<(), TelephonyError>> {
        let done = Done::Transfer(call.clone(), number.to_owned());
        self.done.lock().unwrap().push(done);
        Box::pin(async { Ok(()) })
    }
}

/// An agent for tenant `acme` (transfer number, two silence prompts, a goodbye, the
/// default keypad: `0` transfers, `*` repeats) or `plain` (no transfer number), on
/// in-memory sessions; the call has started and the caller's turn 1 is open.
struct Rig {
    agent: Agent,
    tenant: TenantId,
    sessions: Arc<MemorySessions>,
    llm: Arc<RecordingLlm>,
    telephony: Arc<RecordingTelephony>,
}

impl Rig {
    fn new(tenant: &str) -> Self {
        let turn_taking: toml::Table = toml::from_str(&format!(
            "silence_secs = 8\nsilence_prompts = {PROMPTS:?}\ngoodbye = {GOODBYE:?}\n\
             max_call_secs = 600\n"
        ))
        .unwrap();
        let tenants = TenantToml::new()
            .tier("t", 4, 60)
            .tenant("acme", "+15005550006", "t")
            .set("transfer_number", TRANSFER_TO)
            .set("turn_taking", turn_taking.clone())
            .tenant("plain", "+15005550007", "t")
            .set("turn_taking", turn_taking)
            .parse()
            .unwrap();
        let tenant = TenantId::parse(tenant).unwrap();
        let sessions = Arc::new(MemorySessions::default());
        sessions.start(&sid(), &tenant);
        sessions.next_turn(&sid());
        let llm = Arc::new(RecordingLlm::default());
        let telephony = Arc::new(RecordingTelephony::default());
        let mut config = AgentConfig::for_llm("http://127.0.0.1:9/openai/v1");
        config.llm_max_retries = 0;
        let agent = Agent::with_providers(
            sessions.clone(),
            LiveTenants::fixed(tenants),
            llm.clone(),
            Some(telephony.clone()),
            config,
        );
        Self {
            agent,
            tenant,
            sessions,
            llm,
            telephony,
        }
    }

    fn event(&self, turn: u32, body: Body) -> Envelope {
        Envelope::new(self.tenant.clone(), sid(), turn, body)
    }

    async fn keys(&self, turn: u32, digits: &str, ended_by: KeypadEnd) -> Driven {
        let keypad = Body::Keypad(Keypad {
            digits: digits.into(),
            ended_by,
        });
        let driven = drive(&self.agent, self.event(turn, keypad)).await;
        driven.result.as_ref().unwrap();
        driven
    }

    async fn silence(&self, turn: u32, count: u32) -> Driven {
        let silence = Body::Silence(Silence {
            count,
            after_ms: 8000,
        });
        let driven = drive(&self.agent, self.event(turn, silence)).await;
        driven.result.as_ref().unwrap();
        driven
    }

    /// Twilio reports sentence `sentence` of `turn` played.
    async fn played(&self, turn: u32, sentence: u32) {
        let played = Body::Played(Played {
            sentence,
            mark: format!("{turn}:{sentence}"),
        });
        let driven = drive(&self.agent, self.event(turn, played)).await;
        driven.result.unwrap();
    }

    /// The user message of every LLM request.
    fn asked(&self) -> Vec<String> {
        let requests = self.llm.requests.lock().unwrap();
        let last_user = |r: &ChatRequest| {
            let user = r.messages.iter().rev().find(|m| m.role == "user");
            user.map(|m| m.content.clone()).unwrap_or_default()
        };
        requests.iter().map(last_user).collect()
    }

    fn done(&self) -> Vec<Done> {
        self.telephony.done.lock().unwrap().clone()
    }

    /// The stored turn of `role` numbered `turn`, if any.
    fn stored(&self, role: Role, turn: u32) -> Option<String> {
        let session = self.sessions.session(&sid()).unwrap();
        let found = session
            .turns
            .into_iter()
            .find(|t| t.role == role && t.turn == turn);
        found.map(|t| t.text)
    }

    async fn pending(&self) -> Option<String> {
        self.sessions.action(&sid()).await.unwrap()
    }
}

/// (text, last) of every sentence emitted.
fn sentences(driven: &Driven) -> Vec<(String, bool)> {
    driven
        .outputs
        .iter()
        .filter_map(|e| match &e.body {
            Body::Sentence(s) => Some((s.text.clone(), s.last)),
            _ => None,
        })
        .collect()
}

fn said(text: &str, last: bool) -> (String, bool) {
    (text.to_owned(), last)
}

/// Digits reach the model as the caller's words, as the last user message; the answer
/// is spoken on the keypad's turn and the session keeps the words as the caller's turn.
#[tokio::test]
async fn keypad_digits_reach_the_model_as_the_callers_words() {
    let rig = Rig::new("acme");
    let driven = rig.keys(1, "4417", KeypadEnd::Terminator).await;
    assert_eq!(rig.asked(), ["The caller pressed the keys: 4417"]);
    assert_eq!(sentences(&driven), [said(ANSWER, true)]);
    assert!(driven.outputs.iter().all(|e| e.turn == 1));
    assert_eq!(
        rig.stored(Role::User, 1).as_deref(),
        Some("The caller pressed the keys: 4417")
    );
    assert_eq!(rig.stored(Role::Assistant, 1).as_deref(), Some(ANSWER));
}

/// `0` (bound to transfer, the tenant has a transfer number) says the transfer phrase
/// without asking the model, and transfers only once that sentence was played.
#[tokio::test]
async fn zero_transfers_once_its_sentence_played() {
    let rig = Rig::new("acme");
    let driven = rig.keys(1, "0", KeypadEnd::Action).await;
    let phrase = AgentConfig::for_llm("http://x").transfer_phrase;
    assert_eq!(sentences(&driven), [said(&phrase, true)]);
    assert!(rig.asked().is_empty(), "the model is not asked");
    assert!(rig.done().is_empty(), "nothing before the sentence played");
    let pending = rig.pending().await.unwrap();
    assert!(pending.contains("transfer"), "{pending}");

    rig.played(0, 0).await;
    assert!(
        rig.done().is_empty(),
        "another turn's sentence is not this one"
    );
    rig.played(1, 0).await;
    assert_eq!(rig.done(), [Done::Transfer(sid(), TRANSFER_TO.into())]);
    assert_eq!(rig.pending().await, None);
}

/// Without a transfer number, `0` is an ordinary key: the model gets it as words and
/// nothing is transferred.
#[tokio::test]
async fn zero_without_a_transfer_number_is_a_digit() {
    let rig = Rig::new("plain");
    let driven = rig.keys(1, "0", KeypadEnd::Action).await;
    assert_eq!(rig.asked(), ["The caller pressed the keys: 0"]);
    assert_eq!(sentences(&driven), [said(ANSWER, true)]);
    assert_eq!(rig.pending().await, None);
}

/// `*` says the last answer again, sentence by sentence, as this turn's answer, without
/// asking the model.
#[tokio::test]
async fn star_repeats_the_last_answer() {
    let rig = Rig::new("acme");
    let earlier = Turn {
        role: Role::Assistant,
        text: "We open at nine.\nWeekends we rest.".into(),
        turn: 1,
        interrupted: false,
    };
    rig.sessions.push_turn(&sid(), &earlier).await.unwrap();
    let turn = rig.sessions.next_turn(&sid());
    let driven = rig.keys(turn, "*", KeypadEnd::Action).await;
    assert_eq!(
        sentences(&driven),
        [
            said("We open at nine.", false),
            said("Weekends we rest.", true)
        ]
    );
    assert!(driven.outputs.iter().all(|e| e.turn == turn));
    assert!(rig.asked().is_empty(), "the model is not asked");
    assert_eq!(
        rig.stored(Role::Assistant, turn).as_deref(),
        Some("We open at nine.\nWeekends we rest.")
    );
}

/// Silences in a row: the first prompt, the second, then (past the prompts) the goodbye,
/// with a hang-up that waits for the goodbye to be played. Prompts hang nothing up.
#[tokio::test]
async fn silence_prompts_then_goodbye_then_hang_up() {
    let rig = Rig::new("acme");
    let first = rig.silence(1, 1).await;
    assert_eq!(sentences(&first), [said(PROMPTS[0], true)]);
    assert_eq!(rig.pending().await, None);
    rig.played(1, 0).await;

    let turn = rig.sessions.next_turn(&sid());
    let second = rig.silence(turn, 2).await;
    assert_eq!(sentences(&second), [said(PROMPTS[1], true)]);
    rig.played(turn, 0).await;
    assert!(rig.done().is_empty());

    let turn = rig.sessions.next_turn(&sid());
    let last = rig.silence(turn, 3).await;
    assert_eq!(sentences(&last), [said(GOODBYE, true)]);
    assert!(rig.done().is_empty(), "not before the goodbye played");
    rig.played(turn, 0).await;
    assert_eq!(rig.done(), [Done::HangUp(sid())]);
    assert!(rig.asked().is_empty(), "the model is never asked");
}

/// The call's length: the goodbye, then a hang-up once it played.
#[tokio::test]
async fn max_duration_says_goodbye_then_hangs_up() {
    let rig = Rig::new("acme");
    let body = Body::MaxDuration(MaxDuration { limit_secs: 600 });
    let driven = drive(&rig.agent, rig.event(1, body)).await;
    driven.result.as_ref().unwrap();
    assert_eq!(sentences(&driven), [said(GOODBYE, true)]);
    assert!(rig.done().is_empty());
    rig.played(1, 0).await;
    assert_eq!(rig.done(), [Done::HangUp(sid())]);
}

/// A keypad turn a newer turn superseded, or the caller interrupted, is skipped: no
/// output, no request, no pending action.
#[tokio::test]
async fn a_stale_keypad_turn_is_skipped() {
    let rig = Rig::new("acme");
    rig.sessions.next_turn(&sid());
    let driven = rig.keys(1, "4417", KeypadEnd::Terminator).await;
    assert!(driven.outputs.is_empty(), "{:?}", driven.outputs);
    let driven = rig.keys(1, "0", KeypadEnd::Action).await;
    assert!(driven.outputs.is_empty(), "{:?}", driven.outputs);
    assert_eq!(rig.pending().await, None);

    let rig = Rig::new("acme");
    rig.sessions.interrupt(&sid(), 1);
    let driven = rig.keys(1, "4417", KeypadEnd::Terminator).await;
    assert!(driven.outputs.is_empty(), "{:?}", driven.outputs);
    assert!(rig.asked().is_empty());
    assert_eq!(rig.stored(Role::User, 1), None);
}

/// A redelivered silence turn says its stored prompt again under the same event ids; it
/// is not answered twice.
#[tokio::test]
async fn a_redelivered_silence_repeats_under_the_same_ids() {
    let rig = Rig::new("acme");
    let silence = rig.event(
        1,
        Body::Silence(Silence {
            count: 1,
            after_ms: 8000,
        }),
    );
    let first = drive(&rig.agent, silence.clone()).await;
    let again = drive_delivery(&rig.agent, silence, 2).await;
    again.result.as_ref().unwrap();
    let ids = |d: &Driven| d.outputs.iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids(&again), ids(&first));
    let session = rig.sessions.session(&sid()).unwrap();
    let answers = session.turns.iter().filter(|t| t.role == Role::Assistant);
    assert_eq!(answers.count(), 1);
}
