//! The agent's provider clients over real HTTP against the sim stand-ins: the streaming
//! LLM client (text, tool calls, usage chunks, 429 + retry-after, `x_groq.error`, cut and
//! stalled streams, slow first tokens, bad keys) and the Twilio REST client (hang up,
//! transfer, 429 retried, unknown call).

#![allow(clippy::unwrap_used)] // a test file: helpers panic on failure by design

use std::time::Duration;

use futures::StreamExt as _;
use sb_agent::openai::{ChatRequest, Llm, LlmError, LlmEvent, Message, OpenAi, Timeouts};
use sb_agent::telephony::{Telephony, TelephonyError, TwilioRest};
use sb_runtime::Secret;
use sb_runtime::tenants::testing::TenantToml;
use sb_schemas::CallSid;
use sb_sim::llm::{self, Faults};
use sb_twilio::rest::RestAuth;
use sb_twilio::{CallTarget, CreateCall};

const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(2),
    first_token: Duration::from_secs(2),
    idle: Duration::from_secs(2),
};

fn request(tools: bool) -> ChatRequest {
    ChatRequest {
        model: "llama-3.1-8b-instant".into(),
        messages: vec![
            Message::new("system", "Be brief."),
            Message::new("user", "What are your hours?"),
        ],
        max_completion_tokens: 64,
        temperature: 0.5,
        tools: if tools {
            let tenants = TenantToml::new()
                .tier("t", 1, 1)
                .tenant("acme", "+15005550006", "t")
                .set("transfer_number", "+15005550010")
                .parse()
                .unwrap();
            let acme = tenants.by_number("+15005550006").unwrap();
            sb_agent::actions::tools(acme, true)
        } else {
            Vec::new()
        },
    }
}

async fn llm_with(config: llm::Config, timeouts: Timeouts) -> (sb_sim::SimServer, OpenAi) {
    let server = llm::spawn(config).await.unwrap();
    let client = OpenAi::new(
        &format!("{}/openai/v1", server.http_url()),
        Some(Secret::new("key")),
        timeouts,
    )
    .unwrap();
    (server, client)
}

/// Everything a stream yields: text joined, tool calls, and how it ended.
async fn collect(
    client: &OpenAi,
) -> Result<(String, Vec<(String, String)>, Result<(), LlmError>), LlmError> {
    let request = request(true);
    let mut stream = client.stream(&request).await?;
    let (mut text, mut calls) = (String::new(), Vec::new());
    while let Some(event) = stream.next().await {
        match event {
            Ok(LlmEvent::Text(t)) => text.push_str(&t),
            Ok(LlmEvent::ToolCall(call)) => calls.push((call.name, call.arguments)),
            Ok(LlmEvent::Finished { .. }) => return Ok((text, calls, Ok(()))),
            Err(e) => return Ok((text, calls, Err(e))),
        }
    }
    panic!("the stream ended without Finished or an error");
}

/// A streamed answer arrives whole (deltas, Groq's x_groq chunks and the usage-only chunk
/// with `choices: []` do not disturb it); a scripted tool call arrives assembled.
#[tokio::test]
async fn streams_text_and_tool_calls() {
    let config = llm::Config {
        replies: vec![
            "We're open from nine to five. Anything else?".into(),
            r#"tool:end_call {"reason":"done"}"#.into(),
        ],
        ..llm::Config::default()
    };
    let (_server, client) = llm_with(config, TIMEOUTS).await;
    let (text, calls, end) = collect(&client).await.unwrap();
    assert_eq!(text, "We're open from nine to five. Anything else?");
    assert!(calls.is_empty());
    assert_eq!(end, Ok(()));
    let (text, calls, end) = collect(&client).await.unwrap();
    assert_eq!(text, "");
    assert_eq!(
        calls,
        [("end_call".to_owned(), r#"{"reason":"done"}"#.to_owned())]
    );
    assert_eq!(end, Ok(()));
}

/// (fault, expected error kind): a 429 carries retry-after; a 500 is retryable; a stream
/// ending in x_groq.error is Aborted; a dropped connection is Cut; a stall is an idle
/// timeout; a slow first token is a first-token timeout; a wrong key is a 401.
#[tokio::test]
async fn failures_table() {
    let short = Timeouts {
        connect: Duration::from_secs(1),
        first_token: Duration::from_millis(300),
        idle: Duration::from_millis(300),
    };
    let fault = |f: fn(&mut Faults)| {
        let mut faults = Faults {
            retry_after_secs: 3,
            stall_ms: 2_000,
            ..Faults::default()
        };
        f(&mut faults);
        llm::Config {
            replies: vec!["One two three four five six seven eight.".into()],
            faults,
            ..llm::Config::default()
        }
    };
    let cases: Vec<(&str, llm::Config, &str)> = vec![
        ("429", fault(|f| f.rate_limit_share = 1.0), "rate_limited"),
        ("500", fault(|f| f.internal_error_share = 1.0), "status_5xx"),
        (
            "x_groq.error",
            fault(|f| f.groq_error_share = 1.0),
            "aborted",
        ),
        ("cut", fault(|f| f.cut_share = 1.0), "cut"),
        ("stall", fault(|f| f.stall_share = 1.0), "idle_timeout"),
        (
            "slow first token",
            llm::Config {
                ttft_ms: 2_000,
                ..llm::Config::default()
            },
            "first_token_timeout",
        ),
        (
            "bad key",
            llm::Config {
                api_key: Some("right".into()),
                ..llm::Config::default()
            },
            "status_4xx",
        ),
    ];
    for (name, config, kind) in cases {
        let (_server, client) = llm_with(config, short).await;
        let error = match collect(&client).await {
            Err(error) => error,
            Ok((_, _, Err(error))) => error,
            Ok(other) => panic!("{name}: no error, got {other:?}"),
        };
        assert_eq!(error.kind(), kind, "{name}: {error}");
        if let LlmError::RateLimited { retry_after } = &error {
            assert_eq!(*retry_after, Some(Duration::from_secs(3)), "{name}");
        }
        if name == "500" {
            assert!(error.retryable());
        }
    }
}

/// No server at all: a connect error, retryable.
#[tokio::test]
async fn unreachable_llm() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = OpenAi::new(&format!("http://{addr}/v1"), None, TIMEOUTS).unwrap();
    let error = client.stream(&request(false)).await.err().unwrap();
    assert_eq!(error.kind(), "connect", "{error}");
    assert!(error.retryable());
}

const AC: &str = "AC0123456789abcdef0123456789abcdef";

/// Hang-up and transfer reach Twilio as `Status=completed` and a `<Dial>` TwiML with basic
/// auth; a 429 is retried; an unknown call is a 404 for a transfer but fine for a hang-up.
#[tokio::test]
async fn twilio_hang_up_and_transfer() {
    let (server, state) = sb_sim::twilio::spawn(sb_sim::twilio::Config::new(AC, "tok"))
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let mut sids = Vec::new();
    // Three creates, so the hang-up below is request 3: the one a 50 % share rejects.
    for _ in 0..3 {
        let create = CreateCall::new(
            "+14155551234",
            "+15005550006",
            CallTarget::Twiml("<Response/>".into()),
        );
        let created: serde_json::Value = client
            .post(format!(
                "{}/2010-04-01/Accounts/{AC}/Calls.json",
                server.http_url()
            ))
            .basic_auth(AC, Some("tok"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(create.to_form())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        sids.push(CallSid::parse(created["sid"].as_str().unwrap()).unwrap());
    }
    let rest = TwilioRest::new(
        &server.http_url(),
        AC.into(),
        RestAuth::auth_token(AC, "tok"),
        Duration::from_secs(5),
    )
    .unwrap();

    state.set_rate_limit_share(0.5);
    rest.hang_up(&sids[0]).await.unwrap();
    state.set_rate_limit_share(0.0);
    let statuses: Vec<u16> = state.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [201, 201, 201, 429, 200], "the 429 was retried");
    let updates = state.call(sids[0].as_str()).unwrap().updates;
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].status, Some(sb_twilio::CallStatus::Completed));

    rest.transfer(&sids[1], "+15005550010").await.unwrap();
    let updates = state.call(sids[1].as_str()).unwrap().updates;
    assert_eq!(
        updates[0].twiml.as_deref(),
        Some("<Response><Dial>+15005550010</Dial></Response>")
    );

    let unknown = CallSid::parse("CA00000000000000000000000000000000").unwrap();
    rest.hang_up(&unknown).await.unwrap();
    let error = rest.transfer(&unknown, "+15005550010").await.unwrap_err();
    assert!(
        matches!(error, TelephonyError::Status { status: 404, .. }),
        "{error}"
    );

    let wrong = TwilioRest::new(
        &server.http_url(),
        AC.into(),
        RestAuth::auth_token(AC, "nope"),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(
        wrong.hang_up(&sids[0]).await.unwrap_err().kind(),
        "status_4xx"
    );

    // An API key (SK…) and its secret work in place of the auth token; a wrong secret or
    // an unknown key does not.
    state.add_api_key(KEY_SID, "key-secret");
    let keyed = |secret: &str, sid: &str| {
        TwilioRest::new(
            &server.http_url(),
            AC.into(),
            RestAuth::api_key(sid, secret),
            Duration::from_secs(5),
        )
        .unwrap()
    };
    keyed("key-secret", KEY_SID)
        .hang_up(&sids[2])
        .await
        .unwrap();
    let updates = state.call(sids[2].as_str()).unwrap().updates;
    assert_eq!(updates[0].status, Some(sb_twilio::CallStatus::Completed));
    let other = "SK00000000000000000000000000000002";
    for rest in [keyed("wrong", KEY_SID), keyed("key-secret", other)] {
        assert_eq!(
            rest.hang_up(&sids[1]).await.unwrap_err().kind(),
            "status_4xx"
        );
    }
}

const KEY_SID: &str = "SK00000000000000000000000000000001";
