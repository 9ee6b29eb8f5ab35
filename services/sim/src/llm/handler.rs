//! `POST /v1/chat/completions` (and Groq's `/openai/v1/...`): checks, faults, then the reply
//! as an SSE stream or a whole `chat.completion`.
//!
//! Consumes the request headers and JSON body; produces OpenAI-envelope errors (401, 400,
//! 429 with `retry-after`, 500, 503) or a completion, with Groq's rate-limit headers on
//! every response. A stream is planned as a list of steps (send, wait, abort) and played by
//! a task into the response body, one flush per event; injected faults change the plan
//! (cut: the connection drops mid-stream without `[DONE]`; stall: a long silence mid-stream;
//! `x_groq.error`: the stream ends early with the error in a chunk). A request counts as
//! in flight ([`super::in_flight`]) from its model on until its answer is generated: the
//! stream's finish chunk, or the response when it is not a stream. State: the server's
//! reply cursor, fault dice and counters in [`Shared`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::SinkExt as _;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use super::in_flight::Generating;
use super::reply::{self, Reply};
use super::sse::{self, Completion, Usage};
use super::{Fault, Shared};
use crate::support::{credential, key_accepted};

/// Groq's published example limits (requests per day, tokens per minute).
const LIMIT_REQUESTS: u64 = 14_400;
const LIMIT_TOKENS: u64 = 18_000;

/// Pause before an injected cut, so the chunks before it reach the client.
const CUT_FLUSH: Duration = Duration::from_millis(50);

/// One step of a planned stream.
enum Step {
    Send(Bytes),
    Wait(Duration),
    /// The answer is generated: the request stops counting as in flight (before its
    /// finish chunk goes out).
    Generated,
    /// Drop the connection (the body ends in an error, so no terminating chunk is sent).
    Abort,
}

/// An error in the OpenAI envelope, with the rate-limit headers.
pub(crate) fn error(
    status: StatusCode,
    message: &str,
    kind: &str,
    code: Option<&str>,
    served: u64,
) -> Response {
    let body = json!({ "error": { "message": message, "type": kind, "code": code } });
    let mut response = (status, axum::Json(body)).into_response();
    rate_limit_headers(
        response.headers_mut(),
        served,
        status == StatusCode::TOO_MANY_REQUESTS,
    );
    response
}

fn rate_limit_headers(headers: &mut HeaderMap, served: u64, limited: bool) {
    let remaining_tokens = if limited { 0 } else { LIMIT_TOKENS - 3 };
    let values = [
        ("x-ratelimit-limit-requests", LIMIT_REQUESTS.to_string()),
        ("x-ratelimit-limit-tokens", LIMIT_TOKENS.to_string()),
        (
            "x-ratelimit-remaining-requests",
            LIMIT_REQUESTS.saturating_sub(served).to_string(),
        ),
        ("x-ratelimit-remaining-tokens", remaining_tokens.to_string()),
        ("x-ratelimit-reset-requests", "2m59.56s".to_owned()),
        ("x-ratelimit-reset-tokens", "7.66s".to_owned()),
    ];
    for (name, value) in values {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}

/// The handler for both chat-completions paths.
pub(crate) async fn chat(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let stats = &shared.stats;
    let served = stats.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let presented = credential(headers.get(header::AUTHORIZATION), &["Bearer"]);
    if !key_accepted(shared.config.api_key.as_ref(), presented) {
        stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::UNAUTHORIZED,
            "Invalid API Key",
            "invalid_request_error",
            Some("invalid_api_key"),
            served,
        );
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(value @ Value::Object(_)) => value,
        _ => {
            return bad_request(
                &shared,
                "We could not parse the JSON body of your request.",
                served,
            );
        }
    };
    let model = match request.get("model").and_then(Value::as_str) {
        Some(model) if !model.is_empty() => model.to_owned(),
        _ => return bad_request(&shared, "'model' : property 'model' is missing", served),
    };
    let messages = match request.get("messages").and_then(Value::as_array) {
        Some(messages) if !messages.is_empty() => messages.clone(),
        _ => {
            return bad_request(
                &shared,
                "'messages' : property 'messages' is missing or empty",
                served,
            );
        }
    };
    if let Err(message) = reply::check_tool_messages(&messages) {
        return bad_request(&shared, &message, served);
    }
    let generating = shared.in_flight.start(&model);
    let fault = shared.pick_fault();
    match fault {
        Some(Fault::RateLimit) => {
            stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            let message = format!(
                "Rate limit reached for model `{model}` in organization `org_sim` service tier `on_demand` on \
                 tokens per minute (TPM): Limit {LIMIT_TOKENS}, Used {LIMIT_TOKENS}, Requested 120. Please try again in \
                 {}s. Visit https://console.groq.com/docs/rate-limits for more information.",
                shared.config.faults.retry_after_secs
            );
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                &message,
                "tokens",
                Some("rate_limit_exceeded"),
                served,
            );
            if let Ok(value) =
                HeaderValue::from_str(&shared.config.faults.retry_after_secs.to_string())
            {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return response;
        }
        Some(Fault::Internal) => {
            stats.server_errors.fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
                "internal_server_error",
                None,
                served,
            );
        }
        Some(Fault::Unavailable) => {
            stats.server_errors.fetch_add(1, Ordering::Relaxed);
            let message = "Service Unavailable: the model is over capacity, please try again.";
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                message,
                "internal_server_error",
                Some("service_unavailable"),
                served,
            );
        }
        _ => {}
    }
    stats.completions.fetch_add(1, Ordering::Relaxed);
    let reply = shared.next_reply(&messages);
    let max_tokens = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| request.get(*k).and_then(Value::as_u64));
    let completion = Completion {
        id: format!("chatcmpl-{}", uuid::Uuid::now_v7()),
        request_id: format!("req_{}", &uuid::Uuid::now_v7().simple().to_string()[..26]),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model,
        include_usage: request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true),
    };
    let plan = Plan::new(&shared, &reply, &messages, max_tokens);
    let streaming = request.get("stream").and_then(Value::as_bool) == Some(true);
    let mut response = if streaming {
        stream_response(plan.steps(&completion, fault, &shared), generating)
    } else {
        let response = whole_response(&plan, &completion, fault, &shared).await;
        drop(generating);
        response
    };
    rate_limit_headers(response.headers_mut(), served, false);
    if let Ok(value) = HeaderValue::from_str(&completion.request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

fn bad_request(shared: &Shared, message: &str, served: u64) -> Response {
    shared.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
    error(
        StatusCode::BAD_REQUEST,
        message,
        "invalid_request_error",
        None,
        served,
    )
}

/// The reply cut into what will be streamed.
struct Plan {
    reply: Reply,
    /// Content tokens (text replies) or argument pieces (tool calls).
    pieces: Vec<String>,
    /// For tool calls: which call each piece belongs to (calls stream one after another).
    owners: Vec<usize>,
    finish_reason: &'static str,
    call_id: String,
    usage: Usage,
    ttft: Duration,
    inter_token: Duration,
}

impl Plan {
    fn new(shared: &Shared, reply: &Reply, messages: &[Value], max_tokens: Option<u64>) -> Self {
        let mut owners = Vec::new();
        let (mut pieces, mut finish_reason) = match reply {
            Reply::Text(text) => (reply::tokenize(text), "stop"),
            Reply::Tools { calls, .. } => {
                let mut pieces = Vec::new();
                for (index, call) in calls.iter().enumerate() {
                    let some = reply::argument_pieces(&call.arguments);
                    owners.extend(std::iter::repeat_n(index, some.len()));
                    pieces.extend(some);
                }
                (pieces, "tool_calls")
            }
        };
        if let (Reply::Text(_), Some(max)) =
            (reply, max_tokens.and_then(|m| usize::try_from(m).ok()))
            && pieces.len() > max
        {
            pieces.truncate(max);
            finish_reason = "length";
        }
        let ttft = Duration::from_millis(shared.config.ttft_ms);
        let inter_token = Duration::from_millis(shared.config.inter_token_ms);
        let usage = Usage {
            prompt_tokens: reply::prompt_tokens(messages),
            completion_tokens: pieces.len() as u64 + 1,
            prompt_time: ttft.as_secs_f64(),
            completion_time: (inter_token * u32::try_from(pieces.len()).unwrap_or(u32::MAX))
                .as_secs_f64(),
        };
        Self {
            reply: reply.clone(),
            pieces,
            owners,
            finish_reason,
            call_id: format!("call_{}", &uuid::Uuid::now_v7().simple().to_string()[8..32]),
            usage,
            ttft,
            inter_token,
        }
    }

    fn text(&self) -> String {
        self.pieces.concat()
    }

    fn steps(&self, completion: &Completion, fault: Option<Fault>, shared: &Shared) -> Vec<Step> {
        let mut steps = vec![
            Step::Wait(self.ttft),
            Step::Send(sse::event(&completion.role())),
        ];
        let fault_at = self.pieces.len() / 2;
        for (index, piece) in self.pieces.iter().enumerate() {
            if index == fault_at {
                match fault {
                    Some(Fault::Cut) => {
                        shared.stats.cut.fetch_add(1, Ordering::Relaxed);
                        // Let the chunks already sent leave the server's write buffer first.
                        steps.push(Step::Wait(CUT_FLUSH));
                        steps.push(Step::Abort);
                        return steps;
                    }
                    Some(Fault::Stall) => {
                        shared.stats.stalled.fetch_add(1, Ordering::Relaxed);
                        steps.push(Step::Wait(Duration::from_millis(
                            shared.config.faults.stall_ms,
                        )));
                    }
                    Some(Fault::GroqError) => {
                        shared.stats.groq_errors.fetch_add(1, Ordering::Relaxed);
                        let message = "Stream stopped early: the model backend failed.";
                        steps.push(Step::Send(sse::event(&completion.groq_error(message))));
                        steps.push(Step::Send(Bytes::from_static(sse::DONE)));
                        return steps;
                    }
                    _ => {}
                }
            }
            if index > 0 {
                steps.push(Step::Wait(self.inter_token));
            }
            let chunk = match &self.reply {
                Reply::Text(_) => completion.content(piece),
                Reply::Tools { calls, .. } => {
                    let owner = self.owners[index];
                    // A call's first piece comes after its id and name.
                    if index == 0 || self.owners[index - 1] != owner {
                        let id = format!("{}_{owner}", self.call_id);
                        let start = completion.tool_start(owner, &id, &calls[owner].name);
                        steps.push(Step::Send(sse::event(&start)));
                    }
                    completion.tool_arguments(owner, piece)
                }
            };
            steps.push(Step::Send(sse::event(&chunk)));
        }
        steps.push(Step::Generated);
        steps.push(Step::Send(sse::event(
            &completion.finish(self.finish_reason, &self.usage),
        )));
        if completion.include_usage {
            steps.push(Step::Send(sse::event(&completion.usage(&self.usage))));
        }
        steps.push(Step::Send(Bytes::from_static(sse::DONE)));
        steps
    }
}

fn stream_response(steps: Vec<Step>, generating: Generating) -> Response {
    let (mut sender, receiver) =
        futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::spawn(async move {
        // Until the plan says the answer is generated, or the stream ends early.
        let mut generating = Some(generating);
        // Waits are kept on one clock from the request, so a vendor's pacing (first token
        // after `ttft`, one token every `inter_token`) does not drift by the timer's
        // rounding on every token.
        let mut clock = tokio::time::Instant::now();
        for step in steps {
            let sent = match step {
                Step::Send(bytes) => sender.send(Ok(bytes)).await,
                Step::Wait(duration) => {
                    if !duration.is_zero() {
                        clock += duration;
                        tokio::time::sleep_until(clock).await;
                    }
                    Ok(())
                }
                Step::Generated => {
                    generating.take();
                    Ok(())
                }
                Step::Abort => {
                    sender
                        .send(Err(std::io::Error::other("injected stream cut")))
                        .await
                }
            };
            if sent.is_err() {
                return; // The client went away.
            }
        }
    });
    let mut response = Response::new(Body::from_stream(receiver));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn whole_response(
    plan: &Plan,
    completion: &Completion,
    fault: Option<Fault>,
    shared: &Shared,
) -> Response {
    let generation = plan.inter_token * u32::try_from(plan.pieces.len()).unwrap_or(u32::MAX);
    tokio::time::sleep(plan.ttft + generation).await;
    match fault {
        Some(Fault::Stall) => {
            shared.stats.stalled.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(shared.config.faults.stall_ms)).await;
        }
        Some(Fault::Cut) => {
            shared.stats.cut.fetch_add(1, Ordering::Relaxed);
            let body = futures::stream::once(async {
                Err::<Bytes, _>(std::io::Error::other("injected cut"))
            });
            return Response::new(Body::from_stream(body));
        }
        _ => {}
    }
    let whole = completion.whole(
        &plan.reply,
        &plan.text(),
        plan.finish_reason,
        &plan.call_id,
        &plan.usage,
    );
    axum::Json(whole).into_response()
}
