//! Server-sent events of an OpenAI-compatible chat-completions stream (PROTOCOLS §6.2).
//!
//! Consumes the response body as it arrives, in reads cut anywhere (mid-line, mid-UTF-8,
//! between `\r` and `\n`); produces first the `data` payloads of complete events
//! ([`SseDecoder`]), then what each payload means ([`parse_data`]): content deltas, tool-call
//! pieces, the finish reason, usage (the OpenAI usage-only chunk with `choices: []` and
//! Groq's `x_groq.usage`), the `[DONE]` terminator, and errors reported mid-stream (an
//! `error` object, Groq's `x_groq.error`). Never indexes `choices[0]` blindly and never
//! panics on input. State: the decoder's partial line and partial event.

use serde_json::Value;

use crate::openai::CalledTool;

/// The longest line accepted before the stream is called malformed.
const MAX_LINE_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("sse line longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
    #[error("malformed chunk: {0}")]
    Malformed(String),
}

/// Splits a byte stream into SSE events and returns their `data`.
#[derive(Debug, Default)]
pub struct SseDecoder {
    line: Vec<u8>,
    data: Option<String>,
    /// The previous read ended in `\r`: a `\n` at the start of the next one belongs to it.
    after_cr: bool,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one read; returns the `data` of every event it completed.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, SseError> {
        let mut events = Vec::new();
        for &b in bytes {
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                continue;
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&line, &mut events);
                }
                _ => {
                    if self.line.len() >= MAX_LINE_BYTES {
                        return Err(SseError::LineTooLong);
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(events)
    }

    /// The end of the body: an event not followed by a blank line still counts.
    pub fn finish(&mut self) -> Option<String> {
        let line = std::mem::take(&mut self.line);
        let mut events = Vec::new();
        self.line_done(&line, &mut events);
        events.extend(self.data.take());
        events.pop()
    }

    fn line_done(&mut self, line: &[u8], events: &mut Vec<String>) {
        if line.is_empty() {
            events.extend(self.data.take());
            return;
        }
        let line = String::from_utf8_lossy(line);
        if line.starts_with(':') {
            return; // A comment (keep-alive).
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        if field == "data" {
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            }
        }
        // `event`, `id`, `retry` and unknown fields: nothing to do for chat completions.
    }
}

/// What one `data` payload says.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    /// Assistant text.
    Content(String),
    /// A piece of tool call `index`: its id and name come first, arguments in pieces.
    ToolCall {
        index: u64,
        id: Option<String>,
        name: Option<String>,
        arguments: String,
    },
    /// Why the model stopped (`stop`, `length`, `tool_calls`, `content_filter`, …).
    Finish(String),
    /// Token counts (last one wins: Groq sends `x_groq.usage` and the usage chunk).
    Usage { prompt: u64, completion: u64 },
    /// `data: [DONE]`.
    Done,
    /// The server reported an error mid-stream (`error` object or `x_groq.error`).
    Error(String),
}

/// Interprets one event's data.
pub fn parse_data(data: &str) -> Result<Vec<Delta>, SseError> {
    let data = data.trim();
    if data == "[DONE]" {
        return Ok(vec![Delta::Done]);
    }
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let chunk: Value =
        serde_json::from_str(data).map_err(|e| SseError::Malformed(e.to_string()))?;
    if !chunk.is_object() {
        return Err(SseError::Malformed("a chunk is not a JSON object".into()));
    }
    if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
        return Ok(vec![Delta::Error(error_message(error))]);
    }
    if let Some(error) = chunk.pointer("/x_groq/error").filter(|e| !e.is_null()) {
        return Ok(vec![Delta::Error(error_message(error))]);
    }
    let mut out = Vec::new();
    let choices = chunk.get("choices").and_then(Value::as_array);
    for choice in choices.into_iter().flatten() {
        // n = 1: only the first choice is spoken.
        if choice.get("index").and_then(Value::as_u64).unwrap_or(0) != 0 {
            continue;
        }
        let delta = choice.get("delta");
        if let Some(text) = delta.and_then(|d| d.get("content")).and_then(Value::as_str)
            && !text.is_empty()
        {
            out.push(Delta::Content(text.to_owned()));
        }
        let calls = delta
            .and_then(|d| d.get("tool_calls"))
            .and_then(Value::as_array);
        for call in calls.into_iter().flatten() {
            let function = call.get("function");
            let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
            out.push(Delta::ToolCall {
                index: call.get("index").and_then(Value::as_u64).unwrap_or(0),
                id: text(call.get("id")),
                name: text(function.and_then(|f| f.get("name"))),
                arguments: text(function.and_then(|f| f.get("arguments"))).unwrap_or_default(),
            });
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            out.push(Delta::Finish(reason.to_owned()));
        }
    }
    let usage = chunk
        .get("usage")
        .filter(|u| u.is_object())
        .or_else(|| chunk.pointer("/x_groq/usage").filter(|u| u.is_object()));
    if let Some(usage) = usage {
        let count = |name: &str| usage.get(name).and_then(Value::as_u64).unwrap_or(0);
        out.push(Delta::Usage {
            prompt: count("prompt_tokens"),
            completion: count("completion_tokens"),
        });
    }
    Ok(out)
}

/// A readable message from an `error` value: `{"message": …}`, a string, or the JSON.
pub fn error_message(error: &Value) -> String {
    let text = match error {
        Value::String(text) => text.clone(),
        Value::Object(map) => match map.get("message").and_then(Value::as_str) {
            Some(message) => message.to_owned(),
            None => error.to_string(),
        },
        other => other.to_string(),
    };
    text.chars().take(300).collect()
}

/// Tool calls assembled from their streamed pieces, in index order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ToolCalls {
    calls: Vec<(u64, Option<String>, String, String)>,
}

impl ToolCalls {
    /// Adds one piece.
    pub fn add(&mut self, index: u64, id: Option<String>, name: Option<String>, arguments: &str) {
        let slot = match self.calls.iter().position(|c| c.0 == index) {
            Some(slot) => slot,
            None => {
                self.calls.push((index, None, String::new(), String::new()));
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[slot];
        if id.is_some() {
            call.1 = id;
        }
        if let Some(name) = name {
            call.2.push_str(&name);
        }
        call.3.push_str(arguments);
    }

    /// Every call with a name, in index order.
    pub fn finish(mut self) -> Vec<CalledTool> {
        self.calls.sort_by_key(|c| c.0);
        self.calls
            .into_iter()
            .filter(|c| !c.2.is_empty())
            .map(|(index, id, name, arguments)| CalledTool {
                id: id.unwrap_or_else(|| format!("call_{index}")),
                name,
                arguments,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Groq's capture from PROTOCOLS §6.2, with the OpenAI usage chunk.
    const GROQ: &str = concat!(
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],\"x_groq\":{\"id\":\"req_1\"}}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"We're open\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"x_groq\":{\"id\":\"req_1\",\"usage\":{\"queue_time\":0.07,\"prompt_tokens\":23,\"completion_tokens\":19,\"total_tokens\":42}}}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":23,\"completion_tokens\":19,\"total_tokens\":42}}\n\n",
        "data: [DONE]\n\n",
    );

    fn decode_all(pieces: &[&[u8]]) -> Vec<Delta> {
        let mut decoder = SseDecoder::new();
        let mut data = Vec::new();
        for piece in pieces {
            data.extend(decoder.push(piece).unwrap());
        }
        data.extend(decoder.finish());
        data.iter().flat_map(|d| parse_data(d).unwrap()).collect()
    }

    fn groq_deltas() -> Vec<Delta> {
        vec![
            Delta::Content("We're open".into()),
            Delta::Finish("stop".into()),
            Delta::Usage {
                prompt: 23,
                completion: 19,
            },
            Delta::Usage {
                prompt: 23,
                completion: 19,
            },
            Delta::Done,
        ]
    }

    /// The same stream, whole, byte by byte, with CRLF or CR line ends, and cut at every
    /// position, always decodes to the same deltas.
    #[test]
    fn framing_table() {
        let crlf = GROQ.replace('\n', "\r\n");
        let cr = GROQ.replace('\n', "\r");
        let bytes = GROQ.as_bytes();
        let one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
        let cases: Vec<(&str, Vec<&[u8]>)> = vec![
            ("whole", vec![bytes]),
            ("bytewise", one_by_one),
            ("crlf", vec![crlf.as_bytes()]),
            (
                "crlf split between cr and lf",
                crlf.as_bytes().chunks(7).collect(),
            ),
            ("cr only", vec![cr.as_bytes()]),
        ];
        for (name, pieces) in cases {
            assert_eq!(decode_all(&pieces), groq_deltas(), "{name}");
        }
        for cut in 0..bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(decode_all(&[a, b]), groq_deltas(), "cut at {cut}");
        }
    }

    /// A multi-byte character cut between two reads survives.
    #[test]
    fn utf8_split_across_reads() {
        let text = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"मैं ठीक\"}}]}\n\n";
        let bytes = text.as_bytes();
        let at = text.find('म').unwrap() + 1;
        assert_eq!(
            decode_all(&[&bytes[..at], &bytes[at..]]),
            [Delta::Content("मैं ठीक".into())]
        );
    }

    /// (data payload, expected deltas): usage-only chunks, `x_groq`, errors, tool calls,
    /// comments and odd shapes.
    #[test]
    fn payload_table() {
        let cases: Vec<(&str, Vec<Delta>)> = vec![
            ("[DONE]", vec![Delta::Done]),
            (" [DONE] ", vec![Delta::Done]),
            ("", vec![]),
            (
                "{\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}",
                vec![Delta::Usage {
                    prompt: 5,
                    completion: 2,
                }],
            ),
            ("{\"choices\":[],\"usage\":null}", vec![]),
            (
                "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}",
                vec![Delta::Content("Hi".into())],
            ),
            (
                "{\"choices\":[{\"index\":1,\"delta\":{\"content\":\"other choice\"}}]}",
                vec![],
            ),
            ("{\"choices\":[{\"delta\":{\"content\":null}}]}", vec![]),
            ("{\"id\":\"x\"}", vec![]),
            (
                "{\"choices\":[],\"x_groq\":{\"id\":\"req_1\",\"error\":\"Stream stopped early.\"}}",
                vec![Delta::Error("Stream stopped early.".into())],
            ),
            (
                "{\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}",
                vec![Delta::Error("overloaded".into())],
            ),
            ("{\"error\":\"plain\"}", vec![Delta::Error("plain".into())]),
            (
                "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"end_call\",\"arguments\":\"\"}}]}}]}",
                vec![Delta::ToolCall {
                    index: 0,
                    id: Some("call_1".into()),
                    name: Some("end_call".into()),
                    arguments: String::new(),
                }],
            ),
            (
                "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\"\"}}]}}]}",
                vec![Delta::ToolCall {
                    index: 0,
                    id: None,
                    name: None,
                    arguments: "{\"a\"".into(),
                }],
            ),
            (
                "{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}",
                vec![Delta::Finish("tool_calls".into())],
            ),
        ];
        for (data, expected) in cases {
            assert_eq!(parse_data(data).unwrap(), expected, "{data:?}");
        }
        for bad in ["{not json", "[1,2]", "\"text\"", "{\"choices\":"] {
            assert!(parse_data(bad).is_err(), "{bad:?}");
        }
    }

    /// Comments, other fields and multi-line data follow the SSE rules.
    #[test]
    fn sse_fields() {
        let mut d = SseDecoder::new();
        let events = d
            .push(
                b": keep-alive\nevent: message\nid: 7\ndata: a\ndata:b\nretry: 10\n\ndata: [DONE]",
            )
            .unwrap();
        assert_eq!(events, ["a\nb"]);
        assert_eq!(
            d.finish().as_deref(),
            Some("[DONE]"),
            "unterminated last event"
        );
        assert_eq!(d.finish(), None);
        let mut long = SseDecoder::new();
        assert_eq!(
            long.push(&vec![b'x'; MAX_LINE_BYTES + 1]),
            Err(SseError::LineTooLong)
        );
    }

    /// Streamed tool-call pieces assemble by index; nameless calls are dropped.
    #[test]
    fn tool_calls_assemble() {
        let mut calls = ToolCalls::default();
        calls.add(1, Some("c2".into()), Some("transfer_call".into()), "");
        calls.add(0, Some("c1".into()), Some("end_call".into()), "{\"rea");
        calls.add(0, None, None, "son\":\"done\"}");
        calls.add(2, None, None, "{}");
        let call = |id: &str, name: &str, arguments: &str| CalledTool {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        };
        assert_eq!(
            calls.finish(),
            [
                call("c1", "end_call", "{\"reason\":\"done\"}"),
                call("c2", "transfer_call", ""),
            ]
        );
    }
}
