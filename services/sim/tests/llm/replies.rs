//! What the stand-in answers: Groq-framed streams, whole completions, echo, tool calls,
//! reply order, and its auth/validation envelopes.

use sb_sim::llm::Config;
use serde_json::{Value, json};

use super::{KEY, content, json_events, post, read_events, request, start};

/// A stream is framed as Groq's: role chunk with x_groq.id, content deltas that concatenate
/// to the scripted reply, a finish chunk with x_groq.usage, an include_usage chunk with
/// `choices: []`, then `[DONE]`; every chunk shares id/created/model/fingerprint; the
/// response has the rate-limit headers and no retry-after.
#[tokio::test]
async fn stream_is_groq_framed() {
    let server = start(Config {
        replies: vec!["We're open 9 to 5, Monday to Friday.".into()],
        ..Config::default()
    })
    .await;
    let response = post(&server, "/openai/v1/chat/completions", KEY, &request(true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert!(
        response
            .headers()
            .contains_key("x-ratelimit-remaining-requests")
    );
    assert!(!response.headers().contains_key("retry-after"));
    let (events, failed) = read_events(response).await;
    assert!(!failed);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks = json_events(&events);
    let first = &chunks[0];
    assert_eq!(
        first["choices"][0]["delta"],
        json!({ "role": "assistant", "content": "" })
    );
    assert!(
        first["x_groq"]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("req_"))
    );
    assert_eq!(content(&chunks), "We're open 9 to 5, Monday to Friday.");
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["delta"]["content"] == " open"),
        "leading spaces kept"
    );
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert!(finish["x_groq"]["usage"]["total_tokens"].as_u64().is_some());
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    for chunk in &chunks {
        for key in ["id", "created", "model", "system_fingerprint"] {
            assert_eq!(chunk[key], first[key], "{key} shared");
        }
    }
}

/// Without a script the reply echoes the last user message; `stream:false` gives a
/// `chat.completion`; replies are consumed in order and cycle.
#[tokio::test]
async fn echo_and_whole_completion() {
    let server = start(Config::default()).await;
    let response = post(&server, "/v1/chat/completions", KEY, &request(false)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "You said: What are your opening hours."
    );

    let server = start(Config {
        replies: vec!["one".into(), "two".into()],
        ..Config::default()
    })
    .await;
    let mut said = Vec::new();
    for _ in 0..3 {
        let body: Value = post(&server, "/v1/chat/completions", KEY, &request(false))
            .await
            .json()
            .await
            .expect("json");
        said.push(
            body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or("?")
                .to_owned(),
        );
    }
    assert_eq!(said, ["one", "two", "one"]);
}

/// A `tool:` script line streams OpenAI tool-call deltas (id, name, then argument pieces)
/// and finishes with `tool_calls`.
#[tokio::test]
async fn tool_call_stream() {
    let server = start(Config {
        replies: vec![r#"tool:end_call {"reason":"caller said goodbye"}"#.into()],
        ..Config::default()
    })
    .await;
    let (events, _) =
        read_events(post(&server, "/v1/chat/completions", KEY, &request(true)).await).await;
    let chunks = json_events(&events);
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(calls[0]["function"]["name"], "end_call");
    assert!(
        calls[0]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("call_"))
    );
    let arguments: String = calls
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).expect("args JSON"),
        json!({ "reason": "caller said goodbye" })
    );
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls")
    );
}

/// Bad key → 401, bad JSON / missing model or messages → 400, unknown path → 404, all in
/// the OpenAI error envelope with rate-limit headers.
#[tokio::test]
async fn auth_and_validation_envelopes() {
    let server = start(Config::default()).await;
    let no_model = json!({ "messages": [{ "role": "user", "content": "hi" }] });
    let no_messages = json!({ "model": "m", "messages": [] });
    let cases = [
        (
            "/v1/chat/completions",
            "wrong",
            request(true),
            401,
            "invalid_api_key",
        ),
        ("/v1/chat/completions", KEY, no_model, 400, ""),
        ("/v1/chat/completions", KEY, no_messages, 400, ""),
        ("/v1/chat/completions", KEY, json!("just a string"), 400, ""),
        ("/v1/nothing", KEY, request(true), 404, "unknown_url"),
    ];
    for (path, key, body, status, code) in cases {
        let response = post(&server, path, key, &body).await;
        assert_eq!(response.status().as_u16(), status, "{path} {body}");
        assert!(
            response
                .headers()
                .contains_key("x-ratelimit-limit-requests")
                || status == 404
        );
        let envelope: Value = response.json().await.expect("json");
        assert!(
            envelope["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{envelope}"
        );
        if !code.is_empty() {
            assert_eq!(envelope["error"]["code"], code);
        }
    }
}

/// reply_by_turn picks reply n for the caller's n-th utterance (user messages, from 0); max_completion_tokens
/// truncates with finish_reason `length`.
#[tokio::test]
async fn reply_by_turn_and_length() {
    let server = start(Config {
        replies: vec!["Hello!".into(), "Goodbye now.".into()],
        reply_by_turn: true,
        ..Config::default()
    })
    .await;
    let mut second_turn = request(false);
    second_turn["messages"] = json!([
        { "role": "user", "content": "hi" }, { "role": "assistant", "content": "Hello!" }, { "role": "user", "content": "bye" },
    ]);
    for _ in 0..2 {
        let body: Value = post(&server, "/v1/chat/completions", KEY, &second_turn)
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(body["choices"][0]["message"]["content"], "Goodbye now.");
    }
    let mut short = request(false);
    short["max_completion_tokens"] = json!(1);
    let body: Value = post(&server, "/v1/chat/completions", KEY, &short)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (
            body["choices"][0]["message"]["content"].as_str(),
            body["choices"][0]["finish_reason"].as_str()
        ),
        (Some("Hello"), Some("length"))
    );
}

/// `{n}` in a scripted reply becomes a number unique to each request.
#[tokio::test]
async fn placeholders_make_each_reply_unique() {
    let config = Config {
        replies: vec!["Ticket {n} is open.".into()],
        ..Config::default()
    };
    let server = start(config).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..3 {
        let body =
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let reply: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", server.http_url()))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let text = reply["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            text.starts_with("Ticket ") && !text.contains("{n}"),
            "{text}"
        );
        seen.insert(text);
    }
    assert_eq!(seen.len(), 3);
}

/// `{system}` and `{user}` repeat the request's system prompt and the caller's last
/// message, in any script: a Hindi caller's words come back in a Hindi reply, streamed
/// with the danda as its own token.
#[tokio::test]
async fn placeholders_repeat_the_prompt_and_the_caller() {
    let config = Config {
        replies: vec!["आपने कहा: {user} ({system})".into()],
        ..Config::default()
    };
    let server = start(config).await;
    let body = json!({
        "model": "m",
        "stream": true,
        "messages": [
            { "role": "system", "content": "हिंदी में उत्तर दें।" },
            { "role": "user", "content": "आपका दफ़्तर कब खुलता है?" },
        ],
    });
    let response = post(&server, "/v1/chat/completions", KEY, &body).await;
    let (events, failed) = read_events(response).await;
    assert!(!failed);
    let chunks = json_events(&events);
    assert_eq!(
        content(&chunks),
        "आपने कहा: आपका दफ़्तर कब खुलता है? (हिंदी में उत्तर दें।)"
    );
    let pieces: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(pieces.contains(&"।"), "{pieces:?}");
}
