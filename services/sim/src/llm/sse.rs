//! Chat-completion JSON as Groq frames it: streamed `chat.completion.chunk` events over SSE
//! (PROTOCOLS §6.2) and the non-streaming `chat.completion` object.
//!
//! Consumes one completion's identity (ids, model, creation time) and its pieces; produces
//! JSON values and `data: …\n\n` event bytes. Every chunk of a stream shares `id`, `created`,
//! `model` and `system_fingerprint`; `x_groq.id` rides on the first and the finish chunk,
//! Groq's `x_groq.usage` on the finish chunk, and an OpenAI usage-only chunk (`choices: []`)
//! follows when the client asked for `stream_options.include_usage`. State: none.

use bytes::Bytes;
use serde_json::{Value, json};

use super::reply::Reply;

/// The stream terminator.
pub(crate) const DONE: &[u8] = b"data: [DONE]\n\n";

/// Fingerprint reported for every completion.
const FINGERPRINT: &str = "fp_5a7b1e9c3d";

/// Token counts and Groq timings of one completion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Usage {
    pub(crate) prompt_tokens: u64,
    pub(crate) completion_tokens: u64,
    /// Seconds to first token (Groq's `prompt_time`).
    pub(crate) prompt_time: f64,
    /// Seconds generating (Groq's `completion_time`).
    pub(crate) completion_time: f64,
}

impl Usage {
    fn openai(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }

    fn groq(&self) -> Value {
        let mut usage = self.openai();
        usage["queue_time"] = json!(0.0001);
        usage["prompt_time"] = json!(self.prompt_time);
        usage["completion_time"] = json!(self.completion_time);
        usage["total_time"] = json!(self.prompt_time + self.completion_time);
        usage
    }
}

/// The identity every chunk of one completion repeats.
#[derive(Debug, Clone)]
pub(crate) struct Completion {
    pub(crate) id: String,
    /// Groq's request id (`req_…`).
    pub(crate) request_id: String,
    pub(crate) created: u64,
    pub(crate) model: String,
    /// The client set `stream_options.include_usage`: other chunks carry `usage: null`.
    pub(crate) include_usage: bool,
}

impl Completion {
    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason }],
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    /// First chunk: the assistant role, empty content, and `x_groq.id`.
    pub(crate) fn role(&self) -> Value {
        let mut chunk = self.chunk(json!({ "role": "assistant", "content": "" }), None);
        chunk["x_groq"] = json!({ "id": self.request_id });
        chunk
    }

    /// A content delta.
    pub(crate) fn content(&self, token: &str) -> Value {
        self.chunk(json!({ "content": token }), None)
    }

    /// A tool call's opening delta: id, type and name, empty arguments.
    pub(crate) fn tool_start(&self, index: usize, call_id: &str, name: &str) -> Value {
        let call = json!({ "index": index, "id": call_id, "type": "function", "function": { "name": name, "arguments": "" } });
        self.chunk(json!({ "tool_calls": [call] }), None)
    }

    /// A piece of tool call `index`'s arguments.
    pub(crate) fn tool_arguments(&self, index: usize, piece: &str) -> Value {
        self.chunk(
            json!({ "tool_calls": [{ "index": index, "function": { "arguments": piece } }] }),
            None,
        )
    }

    /// The finish chunk: empty delta, the reason, and Groq's `x_groq` with usage.
    pub(crate) fn finish(&self, reason: &str, usage: &Usage) -> Value {
        let mut chunk = self.chunk(json!({}), Some(reason));
        chunk["x_groq"] = json!({ "id": self.request_id, "usage": usage.groq() });
        chunk
    }

    /// The OpenAI usage-only chunk (`choices: []`), sent when `include_usage` was asked.
    pub(crate) fn usage(&self, usage: &Usage) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": [],
            "usage": usage.openai(),
        })
    }

    /// A chunk reporting, in `x_groq.error`, why the stream stopped early.
    pub(crate) fn groq_error(&self, message: &str) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": [],
            "x_groq": { "id": self.request_id, "error": message },
        })
    }

    /// The non-streaming `chat.completion` object.
    pub(crate) fn whole(
        &self,
        reply: &Reply,
        text: &str,
        finish_reason: &str,
        call_id: &str,
        usage: &Usage,
    ) -> Value {
        let message = match reply {
            Reply::Text(_) => json!({ "role": "assistant", "content": text }),
            Reply::Tools { calls, .. } => json!({
                "role": "assistant",
                "content": null,
                "tool_calls": calls.iter().enumerate().map(|(i, c)| json!({
                    "id": format!("{call_id}_{i}"),
                    "type": "function",
                    "function": { "name": c.name, "arguments": c.arguments },
                })).collect::<Vec<_>>(),
            }),
        };
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason }],
            "usage": usage.groq(),
            "x_groq": { "id": self.request_id },
        })
    }
}

/// One SSE event: `data: <json>\n\n`.
pub(crate) fn event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(include_usage: bool) -> Completion {
        Completion {
            id: "chatcmpl-1".into(),
            request_id: "req_1".into(),
            created: 1_716_131_679,
            model: "llama-3.1-8b-instant".into(),
            include_usage,
        }
    }

    const USAGE: Usage = Usage {
        prompt_tokens: 23,
        completion_tokens: 19,
        prompt_time: 0.5,
        completion_time: 0.25,
    };

    /// The role, content and finish chunks match the Groq capture of §6.2 field for field.
    #[test]
    fn groq_chunk_shapes() {
        let c = completion(false);
        let role = c.role();
        assert_eq!(
            role["choices"][0]["delta"],
            json!({ "role": "assistant", "content": "" })
        );
        assert_eq!(role["x_groq"]["id"], "req_1");
        assert_eq!(role["choices"][0]["logprobs"], Value::Null);
        assert!(role.get("usage").is_none());
        let content = c.content(" open");
        assert_eq!(
            content["choices"][0],
            json!({ "index": 0, "delta": { "content": " open" }, "logprobs": null, "finish_reason": null })
        );
        assert!(content.get("x_groq").is_none());
        for key in ["id", "created", "model", "system_fingerprint"] {
            assert_eq!(role[key], content[key], "{key}");
        }
        let finish = c.finish("stop", &USAGE);
        assert_eq!(finish["choices"][0]["delta"], json!({}));
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        assert_eq!(finish["x_groq"]["usage"]["total_tokens"], 42);
        assert_eq!(finish["x_groq"]["usage"]["total_time"], 0.75);
    }

    /// With include_usage, chunks carry `usage: null` and the usage chunk has `choices: []`.
    #[test]
    fn include_usage_chunks() {
        let c = completion(true);
        assert_eq!(c.content("x")["usage"], Value::Null);
        let usage = c.usage(&USAGE);
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(
            usage["usage"],
            json!({ "prompt_tokens": 23, "completion_tokens": 19, "total_tokens": 42 })
        );
    }

    /// Events are `data: <json>` plus a blank line; tool-call chunks follow OpenAI's
    /// streaming format; the whole completion carries the message and usage.
    #[test]
    fn framing_tools_and_whole() {
        assert_eq!(
            event(&json!({ "a": 1 })),
            Bytes::from_static(b"data: {\"a\":1}\n\n")
        );
        let c = completion(false);
        let start = c.tool_start(0, "call_1", "end_call");
        assert_eq!(
            start["choices"][0]["delta"]["tool_calls"][0]["function"],
            json!({ "name": "end_call", "arguments": "" })
        );
        assert_eq!(
            c.tool_arguments(1, "{\"a\"")["choices"][0]["delta"]["tool_calls"][0]["index"],
            1
        );
        let text = Reply::Text("Hi.".into());
        let whole = c.whole(&text, "Hi.", "stop", "", &USAGE);
        assert_eq!(whole["object"], "chat.completion");
        assert_eq!(
            whole["choices"][0]["message"],
            json!({ "role": "assistant", "content": "Hi." })
        );
        let tool = Reply::from_script("tool:end_call {}");
        let whole = c.whole(&tool, "", "tool_calls", "call_1", &USAGE);
        assert_eq!(
            whole["choices"][0]["message"]["tool_calls"][0]["id"],
            "call_1_0"
        );
        assert_eq!(c.groq_error("overloaded")["x_groq"]["error"], "overloaded");
    }
}
