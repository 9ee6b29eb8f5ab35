//! Ring 2: the agent's tenant tools. The real agent `handle`, its real OpenAI client
//! against the LLM stand-in (which streams the scripted `tool_calls` and answers the tool
//! results), its real tool client against the tenant-server stand-in (which checks the
//! signature and answers from a script), and in-memory sessions for Redis.

#![allow(clippy::unwrap_used)] // a test file: helpers panic on failure by design

use std::sync::Arc;
use std::time::Duration;

use sb_agent::openai::{OpenAi, Timeouts};
use sb_agent::tool_round::FILLER_AFTER;
use sb_agent::tools::TenantTools;
use sb_agent::{Agent, AgentConfig};
use sb_runtime::redis::session::{OutboundSession, Parties};
use sb_runtime::tenants::testing::{TenantToml, secret_env};
use sb_runtime::testing::{Driven, MemorySessions, drive};
use sb_runtime::{LiveTenants, Secret};
use sb_schemas::{Body, CallSid, Envelope, Kind, TenantId, ToolOutcome, ToolResult, Transcript};
use sb_sim::tenant::{self, ToolScript};
use sb_sim::{SimServer, llm};
use serde_json::{Value, json};

const SECRET: &str = "tenant-secret-for-tests";
const FILLER: &str = "One moment while I check that.";
const FALLBACK: &str = "Sorry, could you say that again?";
const BOOKED: &str = "Your table is booked for Friday at 7 pm.";

fn sid() -> CallSid {
    CallSid::parse("CA00000000000000000000000000000001").unwrap()
}

/// The LLM and tenant stand-ins, and an agent whose tenant `acme` has the tool
/// `book_table` (with a filler, `timeout_ms`, `wait`) served by the tenant stand-in.
struct Rig {
    agent: Agent,
    sessions: Arc<MemorySessions>,
    llm: SimServer,
    tenant: SimServer,
}

impl Rig {
    async fn new(llm_reply: &str, script: ToolScript, timeout_ms: u64, wait: bool) -> Self {
        let llm = llm::spawn(llm::Config {
            replies: vec![llm_reply.to_owned()],
            ..llm::Config::default()
        })
        .await
        .unwrap();
        let tenant = tenant::spawn(tenant::Config {
            secret: Some(SECRET.into()),
            tools: [("book_table".to_owned(), script)].into(),
            ..tenant::Config::default()
        })
        .await
        .unwrap();
        let tenants = TenantToml::new()
            .tier("t", 4, 60)
            .tenant("acme", "+15005550006", "t")
            .set("fallback_phrase", FALLBACK)
            .tool(
                "book_table",
                &format!("{}/tools/book_table", tenant.http_url()),
            )
            .tool_set("filler", FILLER)
            .tool_set("timeout_ms", i64::try_from(timeout_ms).unwrap())
            .tool_set("wait", wait)
            .parse()
            .unwrap();
        let tools = TenantTools::new(&tenants, |var| {
            (var == secret_env("acme")).then(|| SECRET.to_owned())
        })
        .unwrap();
        let timeouts = Timeouts {
            connect: Duration::from_secs(1),
            first_token: Duration::from_secs(2),
            idle: Duration::from_secs(2),
        };
        let client = OpenAi::new(
            &format!("{}/openai/v1", llm.http_url()),
            Some(Secret::new("key")),
            timeouts,
        )
        .unwrap();
        let sessions = Arc::new(MemorySessions::default());
        let acme = TenantId::parse("acme").unwrap();
        sessions.start(&sid(), &acme);
        sessions.next_turn(&sid());
        let mut config = AgentConfig::for_llm(format!("{}/openai/v1", llm.http_url()));
        config.llm_max_retries = 0;
        let agent = Agent::with_providers(
            sessions.clone(),
            LiveTenants::fixed(tenants),
            Arc::new(client),
            None,
            config,
        )
        .with_tools(tools);
        Self {
            agent,
            sessions,
            llm,
            tenant,
        }
    }

    async fn ask(&self, text: &str) -> Driven {
        let input = Envelope::new(
            TenantId::parse("acme").unwrap(),
            sid(),
            1,
            Body::Transcript(Transcript {
                epoch: 0,
                text: text.into(),
                confidence: 0.9,
                audio_seq: 10,
                speech_ended_at: 0,
            }),
        );
        drive(&self.agent, input).await
    }

    async fn received(&self) -> Vec<Value> {
        tenant::fetch_received(&self.tenant.http_url())
            .await
            .unwrap()
    }

    async fn completions(&self) -> u64 {
        let stats: Value = reqwest::get(format!("{}/sim/stats", self.llm.http_url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        stats["completions"].as_u64().unwrap()
    }
}

fn tool_request_schema() -> jsonschema::Validator {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/schemas/tool-request.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

/// The schema refuses what the tenant must never be sent: it is not a schema that
/// accepts anything.
#[test]
fn the_tool_request_schema_refuses_a_wrong_body() {
    let schema = tool_request_schema();
    let good = json!({
        "id": "01938f2c-5a3e-7c41-9a0b-6f1d2e3c4b5a", "tool": "book_visit", "arguments": {},
        "call": {"tenant": "acme", "call_sid": "CA0123456789abcdef0123456789abcdef", "turn": 1,
                 "direction": "inbound", "from": null, "to": null, "campaign": null,
                 "contact": null, "variables": {}},
    });
    assert!(schema.is_valid(&good));
    for (pointer, bad) in [
        ("/arguments", json!("text")),
        ("/call/direction", json!("sideways")),
        ("/id", json!("not-a-uuid")),
        ("/call/call_sid", json!("CA12")),
    ] {
        let mut body = good.clone();
        *body.pointer_mut(pointer).unwrap() = bad;
        assert!(!schema.is_valid(&body), "{pointer}");
    }
}

const BOOK: &str = r#"tool:book_table {"day":"friday","people":2}"#;

fn booked() -> ToolScript {
    ToolScript {
        answer: json!({ "say": BOOKED, "slot": "2026-12-04T19:00" }),
        ..ToolScript::default()
    }
}

/// (text, last, fallback) of every sentence.
fn sentences(driven: &Driven) -> Vec<(String, bool, bool)> {
    driven
        .outputs
        .iter()
        .filter_map(|e| match &e.body {
            Body::Sentence(s) => Some((s.text.clone(), s.last, s.fallback)),
            _ => None,
        })
        .collect()
}

fn results(driven: &Driven) -> Vec<ToolResult> {
    driven
        .outputs
        .iter()
        .filter_map(|e| match &e.body {
            Body::ToolResult(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

/// The model's call reaches the tenant signed, with the tool call event's id as its
/// idempotency key and the call's context; the result goes back to the model and its
/// answer is spoken (after the filler only if the machine made the tool slow: that is
/// timing, not checked here).
#[tokio::test]
async fn a_tool_call_is_signed_and_its_result_spoken() {
    let rig = Rig::new(BOOK, booked(), 2_000, true).await;
    let driven = rig.ask("Book a table for two on Friday.").await;
    driven.result.as_ref().unwrap();

    let calls = driven.of(Kind::ToolCall);
    assert_eq!(calls.len(), 1);
    let Body::ToolCall(call) = &calls[0].body else {
        unreachable!()
    };
    assert_eq!(call.name, "book_table");
    assert_eq!(call.round, 0);
    let received = rig.received().await;
    assert_eq!(received.len(), 1, "{received:?}");
    let request = &received[0];
    assert_eq!(request["signature"], "valid");
    assert_eq!(request["status"], 200);
    assert_eq!(request["idempotency_key"], calls[0].id.to_string());
    assert_eq!(request["body"]["id"], calls[0].id.to_string());
    assert_eq!(request["body"]["tool"], "book_table");
    assert_eq!(
        request["body"]["arguments"],
        json!({"day": "friday", "people": 2})
    );
    assert_eq!(request["body"]["call"]["tenant"], "acme");
    assert_eq!(request["body"]["call"]["call_sid"], sid().as_str());
    assert_eq!(request["body"]["call"]["direction"], "inbound");
    assert_eq!(request["body"]["call"]["turn"], 1);

    let results = results(&driven);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].outcome, ToolOutcome::Ok);
    assert_eq!((results[0].status, results[0].attempts), (200, 1));
    assert_eq!(results[0].id, call.id);
    let result: Value = serde_json::from_str(&results[0].result).unwrap();
    assert_eq!(result["slot"], "2026-12-04T19:00");

    let said: Vec<_> = sentences(&driven)
        .into_iter()
        .filter(|s| s.0 != FILLER)
        .collect();
    assert_eq!(said, [(BOOKED.to_owned(), true, false)]);
    assert_eq!(rig.completions().await, 2, "the call, then the answer");
    let session = rig.sessions.session(&sid()).unwrap();
    let answer = session
        .turns
        .iter()
        .find(|t| t.turn == 1 && t.text == BOOKED);
    assert!(answer.is_some(), "{:?}", session.turns);
}

/// An outbound campaign call: the tool is told the call's numbers, the campaign, the
/// contact and the contact's variables.
#[tokio::test]
async fn an_outbound_call_tells_the_tool_its_campaign_and_contact() {
    let rig = Rig::new(BOOK, booked(), 2_000, true).await;
    let acme = TenantId::parse("acme").unwrap();
    rig.sessions.outbound(
        &sid(),
        &acme,
        OutboundSession {
            campaign: Some("spring".into()),
            contact: Some("c-42".into()),
            vars: Some(r#"{"name":"Ann","plan":"gold"}"#.into()),
            ..OutboundSession::default()
        },
    );
    rig.sessions.parties(
        &sid(),
        Parties {
            from: "+15005550006".into(),
            to: "+14155551234".into(),
        },
    );
    rig.ask("Book Friday.").await.result.unwrap();
    let call = &rig.received().await[0]["body"]["call"];
    assert_eq!(call["direction"], "outbound");
    assert_eq!(call["from"], "+15005550006");
    assert_eq!(call["to"], "+14155551234");
    assert_eq!(call["campaign"], "spring");
    assert_eq!(call["contact"], "c-42");
    assert_eq!(call["variables"], json!({"name": "Ann", "plan": "gold"}));
}

/// A tool slower than the filler's threshold: the filler is said first (not last), then
/// the answer.
#[tokio::test]
async fn a_slow_tool_speaks_the_filler_then_the_answer() {
    let slow = ToolScript {
        delay: FILLER_AFTER * 3,
        ..booked()
    };
    let rig = Rig::new(BOOK, slow, 5_000, true).await;
    let driven = rig.ask("Book Friday.").await;
    driven.result.as_ref().unwrap();
    assert_eq!(
        sentences(&driven),
        [
            (FILLER.to_owned(), false, false),
            (BOOKED.to_owned(), true, false)
        ]
    );
    let index = |kind: Kind| {
        driven
            .outputs
            .iter()
            .position(|e| e.kind() == kind)
            .unwrap()
    };
    assert!(
        index(Kind::Sentence) < index(Kind::ToolResult),
        "the filler comes while waiting"
    );
}

/// Each way a tool fails is retried once; a success on the retry is spoken, a second
/// failure ends in the tenant's fallback phrase (the call goes on, nothing is silent).
#[tokio::test]
async fn a_failing_tool_is_retried_once_then_the_fallback_is_spoken() {
    let cases = [
        (
            ToolScript {
                fail: 1,
                ..booked()
            },
            2_000,
            ToolOutcome::Ok,
            200,
            2,
        ),
        (
            ToolScript {
                fail: 2,
                ..booked()
            },
            2_000,
            ToolOutcome::Status,
            500,
            2,
        ),
        (
            ToolScript {
                invalid: 2,
                ..booked()
            },
            2_000,
            ToolOutcome::Invalid,
            200,
            2,
        ),
        (
            ToolScript {
                delay: Duration::from_millis(1_500),
                ..booked()
            },
            300,
            ToolOutcome::Timeout,
            0,
            2,
        ),
    ];
    for (script, timeout_ms, outcome, status, attempts) in cases {
        let label = format!("{script:?} timeout {timeout_ms}");
        let rig = Rig::new(BOOK, script, timeout_ms, true).await;
        let driven = rig.ask("Book Friday.").await;
        driven.result.as_ref().unwrap();
        let results = results(&driven);
        assert_eq!(results.len(), 1, "{label}");
        assert_eq!(
            (results[0].outcome, results[0].status, results[0].attempts),
            (outcome, status, attempts),
            "{label}"
        );
        assert_eq!(rig.received().await.len(), 2, "{label}");
        let said = sentences(&driven);
        let last = said.last().unwrap();
        if outcome == ToolOutcome::Ok {
            assert_eq!(last, &(BOOKED.to_owned(), true, false), "{label}");
        } else {
            assert_eq!(last, &(FALLBACK.to_owned(), true, true), "{label}");
            assert_eq!(rig.completions().await, 1, "{label}: no answer asked for");
        }
    }
}

/// Arguments that are not a JSON object are refused without a request; the caller hears
/// the fallback.
#[tokio::test]
async fn arguments_that_are_not_an_object_are_refused() {
    let rig = Rig::new("tool:book_table [1,2]", booked(), 2_000, true).await;
    let driven = rig.ask("Book Friday.").await;
    driven.result.as_ref().unwrap();
    assert_eq!(results(&driven)[0].outcome, ToolOutcome::Refused);
    assert!(rig.received().await.is_empty());
    assert_eq!(sentences(&driven), [(FALLBACK.to_owned(), true, true)]);
}

/// A barge-in while the tool runs: its result is still recorded, but nothing more is
/// said and the model is not asked for the answer.
#[tokio::test]
async fn a_barge_in_during_a_tool_call_drops_its_answer() {
    let slow = ToolScript {
        delay: Duration::from_millis(800),
        ..booked()
    };
    let rig = Arc::new(Rig::new(BOOK, slow, 5_000, true).await);
    let barge = {
        let rig = rig.clone();
        tokio::spawn(async move {
            // The request is recorded when it arrives, before the scripted delay.
            while rig.received().await.is_empty() {
                tokio::task::yield_now().await;
            }
            rig.sessions.interrupt(&sid(), 1);
        })
    };
    let driven = rig.ask("Book Friday.").await;
    barge.await.unwrap();
    driven.result.as_ref().unwrap();
    assert_eq!(
        results(&driven).len(),
        1,
        "the result is kept for the record"
    );
    let said = sentences(&driven);
    assert!(
        said.iter().all(|s| s.0 != BOOKED && !s.2),
        "nothing after the barge-in: {said:?}"
    );
    assert_eq!(rig.completions().await, 1);
}

/// A tool that does not wait: the model hears at once that it was sent and answers; the
/// request still reaches the tenant.
#[tokio::test]
async fn a_tool_that_does_not_wait_is_sent_in_the_background() {
    let slow = ToolScript {
        delay: Duration::from_millis(500),
        ..booked()
    };
    let rig = Rig::new(BOOK, slow, 5_000, false).await;
    let driven = rig.ask("Email me the offers.").await;
    driven.result.as_ref().unwrap();
    let results = results(&driven);
    assert_eq!(results[0].outcome, ToolOutcome::Sent);
    assert_eq!(
        sentences(&driven),
        [(
            r#"The tool answered {"status":"sent"}."#.to_owned(),
            true,
            false
        )]
    );
    while rig.received().await.is_empty() {
        tokio::task::yield_now().await;
    }
    assert_eq!(rig.received().await[0]["signature"], "valid");
}

fn preflight_of(text: &str) -> Envelope {
    let body = Body::Preflight(sb_schemas::Preflight {
        epoch: 0,
        text: text.into(),
    });
    Envelope::new(TenantId::parse("acme").unwrap(), sid(), 1, body)
}

/// A preflight's tool call waits for the turn's transcript: confirmed meanwhile, the tool
/// runs (the tenant is called once) and the answer goes on; superseded meanwhile (the
/// final differed), the tenant is never called and nothing more is said.
#[tokio::test]
async fn a_preflight_tool_waits_for_the_transcript() {
    use sb_runtime::state::Sessions as _;
    let text = "Book a table for two on Friday.";
    let rig = Rig::new(BOOK, booked(), 2_000, true).await;
    let confirm = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            rig.received().await.is_empty(),
            "called before the transcript"
        );
        rig.sessions
            .preflight_confirm(&sid(), 1, text)
            .await
            .unwrap()
    };
    let (driven, _) = tokio::join!(drive(&rig.agent, preflight_of(text)), confirm);
    driven.result.as_ref().unwrap();
    assert_eq!(driven.of(Kind::ToolCall).len(), 1);
    assert_eq!(rig.received().await.len(), 1);
    let session = rig.sessions.session(&sid()).unwrap();
    assert!(
        session.turns.iter().any(|t| t.text == BOOKED),
        "{session:?}"
    );

    let rig = Rig::new(BOOK, booked(), 2_000, true).await;
    let supersede = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        rig.sessions.next_turn(&sid())
    };
    let (driven, _) = tokio::join!(drive(&rig.agent, preflight_of(text)), supersede);
    driven.result.as_ref().unwrap();
    assert!(driven.of(Kind::ToolCall).is_empty(), "{:?}", driven.outputs);
    assert!(rig.received().await.is_empty());
    assert!(rig.sessions.session(&sid()).unwrap().turns.is_empty());
}
