//! The LLM behind a small trait, and its OpenAI-compatible streaming client (PROTOCOLS §6).
//!
//! Consumes a [`ChatRequest`] (model, messages, tools); produces a stream of [`LlmEvent`]s:
//! text deltas as they arrive, assembled tool calls, then the finish. The client speaks
//! `POST {base}/chat/completions` with `stream: true` and `stream_options.include_usage`
//! (Groq, OpenAI, vLLM, llama.cpp's server, Ollama), maps 429 to
//! [`LlmError::RateLimited`] with `retry-after-ms` / `retry-after`, and enforces a connect
//! timeout, a first-token timeout (request sent → first text or tool call) and an idle
//! timeout between chunks. Retrying is the caller's decision (it holds the AIMD permit).
//! Provider time-to-first-token goes to `switchboard_provider_ttfb_seconds{provider="llm"}`,
//! usage to `switchboard_llm_tokens_total`. State: the HTTP connection pool.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, Stream, StreamExt};
use reqwest::header::{HeaderMap, HeaderValue};
use sb_runtime::Secret;
use sb_runtime::metrics::Metric;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::sse::{self, Delta, SseDecoder, ToolCalls};

/// One chat message: `system`, `user`, `assistant` (with the tool calls it made, if any)
/// or `tool` (one call's result).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: &'static str,
    /// Empty is sent as `null` (an assistant message that only calls tools).
    #[serde(serialize_with = "empty_as_null")]
    pub content: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

fn empty_as_null<S: serde::Serializer>(content: &str, s: S) -> Result<S::Ok, S::Error> {
    if content.is_empty() {
        s.serialize_none()
    } else {
        s.serialize_str(content)
    }
}

impl Message {
    pub fn new(role: &'static str, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// The assistant's message that asked for `calls` (after saying `content`).
    pub fn calling(content: impl Into<String>, calls: &[CalledTool]) -> Self {
        let tool_calls = calls
            .iter()
            .map(|c| {
                json!({
                    "id": c.id,
                    "type": "function",
                    "function": { "name": c.name, "arguments": c.arguments },
                })
            })
            .collect();
        Self {
            tool_calls,
            ..Self::new("assistant", content)
        }
    }

    /// One call's result, for the model.
    pub fn tool_result(call_id: &str, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(call_id.to_owned()),
            ..Self::new("tool", content)
        }
    }
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: Value,
}

/// A complete tool call of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalledTool {
    /// The provider's id (`call_…`); `call_{index}` when it sent none.
    pub id: String,
    pub name: String,
    /// JSON text, as streamed.
    pub arguments: String,
}

/// One streamed completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    pub max_completion_tokens: u32,
    pub temperature: f32,
    pub tools: Vec<ToolSpec>,
}

impl ChatRequest {
    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut body = json!({
            "model": self.model,
            "messages": self.messages,
            "stream": true,
            "stream_options": { "include_usage": true },
            "max_completion_tokens": self.max_completion_tokens,
            "temperature": self.temperature,
        });
        if !self.tools.is_empty() {
            let tools: Vec<Value> = self
                .tools
                .iter()
                .map(|t| {
                    json!({
                        "type": "function",
                        "function": { "name": t.name, "description": t.description, "parameters": t.parameters },
                    })
                })
                .collect();
            body["tools"] = Value::Array(tools);
            body["tool_choice"] = json!("auto");
        }
        body
    }
}

/// What the stream says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmEvent {
    /// Assistant text, as streamed.
    Text(String),
    /// A complete tool call (emitted when the stream ends).
    ToolCall(CalledTool),
    /// The stream ended normally.
    Finished { reason: Option<String> },
}

/// Why the LLM gave no (complete) answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    #[error("cannot reach the llm: {0}")]
    Connect(String),
    #[error("no first token within {0:?}")]
    FirstTokenTimeout(Duration),
    #[error("the stream stalled for {0:?}")]
    IdleTimeout(Duration),
    #[error("rate limited (retry after {retry_after:?})")]
    RateLimited { retry_after: Option<Duration> },
    #[error("llm answered {status}: {message}")]
    Status {
        status: u16,
        message: String,
        retryable: bool,
    },
    #[error("the stream reported an error: {0}")]
    Aborted(String),
    #[error("the stream ended without finishing")]
    Cut,
    #[error("malformed stream: {0}")]
    Malformed(String),
}

impl LlmError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            LlmError::Connect(_) => "connect",
            LlmError::FirstTokenTimeout(_) => "first_token_timeout",
            LlmError::IdleTimeout(_) => "idle_timeout",
            LlmError::RateLimited { .. } => "rate_limited",
            LlmError::Status { status, .. } if *status >= 500 => "status_5xx",
            LlmError::Status { .. } => "status_4xx",
            LlmError::Aborted(_) => "aborted",
            LlmError::Cut => "cut",
            LlmError::Malformed(_) => "malformed",
        }
    }

    /// Whether the same request may succeed if sent again soon.
    pub fn retryable(&self) -> bool {
        match self {
            LlmError::Connect(_) | LlmError::RateLimited { .. } => true,
            LlmError::Status { retryable, .. } => *retryable,
            _ => false,
        }
    }
}

pub type LlmStream = Pin<Box<dyn Stream<Item = Result<LlmEvent, LlmError>> + Send>>;

/// A streaming chat model.
pub trait Llm: Send + Sync + 'static {
    /// Sends the request; resolves once the answer starts streaming (or failed).
    fn stream<'a>(&'a self, request: &'a ChatRequest)
    -> BoxFuture<'a, Result<LlmStream, LlmError>>;
}

/// Timeouts of the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_token: Duration,
    pub idle: Duration,
}

/// The OpenAI-compatible client.
#[derive(Clone)]
pub struct OpenAi {
    http: reqwest::Client,
    url: String,
    api_key: Option<Secret>,
    timeouts: Timeouts,
}

impl std::fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAi")
            .field("url", &self.url)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl OpenAi {
    /// A client for `{base_url}/chat/completions`.
    pub fn new(
        base_url: &str,
        api_key: Option<Secret>,
        timeouts: Timeouts,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            http,
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            api_key,
            timeouts,
        })
    }

    async fn start(&self, request: &ChatRequest) -> Result<LlmStream, LlmError> {
        let sent = Instant::now();
        let first_deadline = sent + self.timeouts.first_token;
        let mut builder = self
            .http
            .post(&self.url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&request.body());
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key.expose());
        }
        let response = tokio::time::timeout_at(first_deadline, builder.send())
            .await
            .map_err(|_| LlmError::FirstTokenTimeout(self.timeouts.first_token))?
            .map_err(|e| LlmError::Connect(without_url(e)))?;
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            let body = tokio::time::timeout_at(first_deadline, response.bytes())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            return Err(status_error(status.as_u16(), &headers, &body));
        }
        let body = response.bytes_stream().boxed();
        Ok(event_stream(body, sent, first_deadline, self.timeouts))
    }
}

impl Llm for OpenAi {
    fn stream<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<LlmStream, LlmError>> {
        Box::pin(self.start(request))
    }
}

/// The error of a non-2xx answer.
fn status_error(status: u16, headers: &HeaderMap, body: &[u8]) -> LlmError {
    let should_retry = headers
        .get("x-should-retry")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.eq_ignore_ascii_case("true"));
    if status == 429 && should_retry != Some(false) {
        return LlmError::RateLimited {
            retry_after: retry_after(headers),
        };
    }
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").map(sse::error_message))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
    let retryable = should_retry.unwrap_or(matches!(status, 408 | 409 | 429) || status >= 500);
    LlmError::Status {
        status,
        message,
        retryable,
    }
}

/// `retry-after-ms` (ms), else `retry-after` (seconds, fractions allowed). HTTP dates are
/// not honoured (a phone call cannot wait that long anyway).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    number("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .or_else(|| number("retry-after").map(Duration::from_secs_f64))
        .map(|d| d.min(Duration::from_secs(3600)))
}

/// reqwest errors print the URL; keep logs short and free of query strings.
fn without_url(error: reqwest::Error) -> String {
    let kind = if error.is_connect() {
        "connect"
    } else if error.is_timeout() {
        "timeout"
    } else {
        "request"
    };
    format!("{kind} error: {}", error.without_url())
}

struct Reader {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    sse: SseDecoder,
    pending: VecDeque<Result<LlmEvent, LlmError>>,
    tools: ToolCalls,
    finish: Option<String>,
    usage: Option<(u64, u64)>,
    sent: Instant,
    first_deadline: Instant,
    got_first: bool,
    timeouts: Timeouts,
    ended: bool,
}

fn event_stream(
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    sent: Instant,
    first_deadline: Instant,
    timeouts: Timeouts,
) -> LlmStream {
    let reader = Reader {
        body,
        sse: SseDecoder::new(),
        pending: VecDeque::new(),
        tools: ToolCalls::default(),
        finish: None,
        usage: None,
        sent,
        first_deadline,
        got_first: false,
        timeouts,
        ended: false,
    };
    Box::pin(futures::stream::unfold(reader, |mut r| async move {
        loop {
            if let Some(item) = r.pending.pop_front() {
                return Some((item, r));
            }
            if r.ended {
                return None;
            }
            r.read().await;
        }
    }))
}

impl Reader {
    /// Reads one piece of the body and queues what it says.
    async fn read(&mut self) {
        let (deadline, timeout) = if self.got_first {
            (
                Instant::now() + self.timeouts.idle,
                LlmError::IdleTimeout(self.timeouts.idle),
            )
        } else {
            let t = self.timeouts.first_token;
            (self.first_deadline, LlmError::FirstTokenTimeout(t))
        };
        let next = match tokio::time::timeout_at(deadline, self.body.next()).await {
            Err(_) => return self.fail(timeout),
            Ok(next) => next,
        };
        let data = match next {
            Some(Ok(bytes)) => match self.sse.push(&bytes) {
                Ok(data) => data,
                Err(e) => return self.fail(LlmError::Malformed(e.to_string())),
            },
            Some(Err(_)) => return self.fail(LlmError::Cut),
            None => {
                if let Some(data) = self.sse.finish() {
                    self.interpret(&data);
                }
                if !self.ended {
                    if self.finish.is_some() {
                        // A finish chunk but no `[DONE]`: some servers stop there.
                        self.done();
                    } else {
                        self.fail(LlmError::Cut);
                    }
                }
                return;
            }
        };
        for data in data {
            if self.ended {
                break;
            }
            self.interpret(&data);
        }
    }

    fn interpret(&mut self, data: &str) {
        let deltas = match sse::parse_data(data) {
            Ok(deltas) => deltas,
            Err(e) => return self.fail(LlmError::Malformed(e.to_string())),
        };
        for delta in deltas {
            match delta {
                Delta::Content(text) => {
                    self.first();
                    self.pending.push_back(Ok(LlmEvent::Text(text)));
                }
                Delta::ToolCall {
                    index,
                    id,
                    name,
                    arguments,
                } => {
                    self.first();
                    self.tools.add(index, id, name, &arguments);
                }
                Delta::Finish(reason) => self.finish = Some(reason),
                Delta::Usage { prompt, completion } => self.usage = Some((prompt, completion)),
                Delta::Done => return self.done(),
                Delta::Error(message) => return self.fail(LlmError::Aborted(message)),
            }
        }
    }

    fn first(&mut self) {
        if !self.got_first {
            self.got_first = true;
            metrics::histogram!(Metric::ProviderTtfbSeconds.name(), "provider" => "llm")
                .record(self.sent.elapsed().as_secs_f64());
        }
    }

    fn done(&mut self) {
        for call in std::mem::take(&mut self.tools).finish() {
            self.pending.push_back(Ok(LlmEvent::ToolCall(call)));
        }
        if let Some((prompt, completion)) = self.usage.take() {
            metrics::counter!(Metric::LlmTokens.name(), "kind" => "prompt").increment(prompt);
            metrics::counter!(Metric::LlmTokens.name(), "kind" => "completion")
                .increment(completion);
        }
        self.pending.push_back(Ok(LlmEvent::Finished {
            reason: self.finish.take(),
        }));
        self.ended = true;
    }

    fn fail(&mut self, error: LlmError) {
        self.pending.push_back(Err(error));
        self.ended = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (headers, expected retry-after): milliseconds win, fractions and junk are handled.
    #[test]
    fn retry_after_table() {
        type Headers = &'static [(&'static str, &'static str)];
        let cases: &[(Headers, Option<Duration>)] = &[
            (&[], None),
            (&[("retry-after", "2")], Some(Duration::from_secs(2))),
            (&[("retry-after", "0.5")], Some(Duration::from_millis(500))),
            (
                &[("retry-after-ms", "150"), ("retry-after", "9")],
                Some(Duration::from_millis(150)),
            ),
            (&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")], None),
            (&[("retry-after", "-1")], None),
            (&[("retry-after", "99999")], Some(Duration::from_secs(3600))),
        ];
        for (pairs, expected) in cases {
            let mut headers = HeaderMap::new();
            for (k, v) in *pairs {
                headers.insert(*k, HeaderValue::from_static(v));
            }
            assert_eq!(retry_after(&headers), *expected, "{pairs:?}");
        }
    }

    /// (status, x-should-retry, expected kind, retryable).
    #[test]
    fn status_table() {
        let cases = [
            (429, None, "rate_limited", true),
            (429, Some("false"), "status_4xx", false),
            (500, None, "status_5xx", true),
            (503, None, "status_5xx", true),
            (400, None, "status_4xx", false),
            (413, None, "status_4xx", false),
            (401, None, "status_4xx", false),
            (408, None, "status_4xx", true),
            (400, Some("true"), "status_4xx", true),
        ];
        for (status, should, kind, retryable) in cases {
            let mut headers = HeaderMap::new();
            if let Some(v) = should {
                headers.insert("x-should-retry", HeaderValue::from_static(v));
            }
            let body = br#"{"error":{"message":"nope","type":"x"}}"#;
            let error = status_error(status, &headers, body);
            assert_eq!(
                (error.kind(), error.retryable()),
                (kind, retryable),
                "{status}"
            );
        }
        let error = status_error(
            400,
            &HeaderMap::new(),
            br#"{"error":{"message":"bad model"}}"#,
        );
        assert!(error.to_string().contains("bad model"), "{error}");
    }

    /// The body carries the model, streaming with usage, the token cap, and tools only
    /// when there are some.
    #[test]
    fn request_body() {
        let mut request = ChatRequest {
            model: "llama-3.1-8b-instant".into(),
            messages: vec![Message::new("user", "hi")],
            max_completion_tokens: 128,
            temperature: 0.5,
            tools: Vec::new(),
        };
        let body = request.body();
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["max_completion_tokens"], 128);
        assert_eq!(
            body["messages"][0],
            json!({"role": "user", "content": "hi"})
        );
        assert!(body.get("tools").is_none());
        request.tools.push(ToolSpec {
            name: "end_call".into(),
            description: "d".into(),
            parameters: json!({"type": "object", "properties": {}}),
        });
        let body = request.body();
        assert_eq!(body["tools"][0]["function"]["name"], "end_call");
        assert_eq!(body["tool_choice"], "auto");
    }

    /// A tool round adds the assistant's calls and one `tool` message per result, in
    /// OpenAI's shape (PROTOCOLS §6.4).
    #[test]
    fn tool_messages() {
        let call = CalledTool {
            id: "call_1".into(),
            name: "book_table".into(),
            arguments: r#"{"day":"friday"}"#.into(),
        };
        let calling = serde_json::to_value(Message::calling("Let me check.", &[call])).unwrap();
        assert_eq!(
            calling,
            json!({
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [{
                    "id": "call_1",
                    "type": "function",
                    "function": { "name": "book_table", "arguments": "{\"day\":\"friday\"}" },
                }],
            })
        );
        let silent = serde_json::to_value(Message::calling("", &[])).unwrap();
        assert_eq!(
            silent["content"],
            Value::Null,
            "no text: null, as OpenAI sends it"
        );
        let result = serde_json::to_value(Message::tool_result("call_1", "{}")).unwrap();
        assert_eq!(
            result,
            json!({"role": "tool", "content": "{}", "tool_call_id": "call_1"})
        );
    }
}
