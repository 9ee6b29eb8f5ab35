//! What the LLM stand-in answers, and how the answer splits into streamed tokens.
//!
//! Consumes a parsed chat request and the configured reply script; produces a [`Reply`]
//! (text, or tool calls from a script line `tool:<name> <json arguments>`, several joined
//! by ` && `, optionally ending ` => <what to say once they answered>`), its tokens
//! (word-ish pieces with the leading space attached, as real tokenisers emit " world") and
//! rough usage numbers. With no script the reply echoes the caller: `You said: <last user
//! message>.` State: none (the script cursor lives in the server state).

use serde_json::Value;

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Assistant text.
    Text(String),
    /// Function calls the model asks the client to run (more than one: parallel calls).
    Tools {
        calls: Vec<ScriptedCall>,
        /// What the model says once the calls' results come back (`None`: their `say`
        /// fields, see [`Reply::after_tools`]).
        then: Option<String>,
    },
}

/// One scripted tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptedCall {
    /// Function name, e.g. `end_call`.
    pub name: String,
    /// JSON arguments as a string, exactly as OpenAI sends them.
    pub arguments: String,
}

/// The content of the request's first system message (empty without one).
pub fn system_prompt(messages: &[Value]) -> String {
    messages
        .iter()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("system"))
        .map(content_text)
        .unwrap_or_default()
}

impl Reply {
    /// Parses a script line: `tool:<name> <json>` (several joined by ` && tool:`,
    /// optionally ending ` => <text>`) is tool calls, anything else is text.
    pub fn from_script(line: &str) -> Self {
        let Some(rest) = line.strip_prefix("tool:") else {
            return Self::Text(line.to_owned());
        };
        let (calls, then) = match rest.split_once(" => ") {
            Some((calls, then)) => (calls, Some(then.trim().to_owned())),
            None => (rest, None),
        };
        let calls = calls
            .split(" && tool:")
            .map(|call| {
                let call = call.trim();
                let (name, arguments) =
                    call.split_once(char::is_whitespace).unwrap_or((call, "{}"));
                let arguments = arguments.trim();
                ScriptedCall {
                    name: name.to_owned(),
                    arguments: if arguments.is_empty() {
                        "{}".to_owned()
                    } else {
                        arguments.to_owned()
                    },
                }
            })
            .collect();
        Self::Tools { calls, then }
    }

    /// The answer to a request that ends in tool results (the model's second request of a
    /// tool round): each result's `say` field, or `The tool answered <result>.`; `None`
    /// when the last message is not a tool result.
    pub fn after_tools(messages: &[Value]) -> Option<Self> {
        let results: Vec<String> = messages
            .iter()
            .rev()
            .take_while(|m| m.get("role").and_then(Value::as_str) == Some("tool"))
            .map(content_text)
            .collect();
        if results.is_empty() {
            return None;
        }
        let said: Vec<String> = results
            .iter()
            .rev()
            .map(|content| {
                let say = serde_json::from_str::<Value>(content)
                    .ok()
                    .and_then(|v| v.get("say").and_then(Value::as_str).map(str::to_owned));
                say.unwrap_or_else(|| format!("The tool answered {content}."))
            })
            .collect();
        Some(Self::Text(said.join(" ")))
    }

    /// The echo rule used when no replies are configured.
    pub fn echo(messages: &[Value]) -> Self {
        let heard = last_user_text(messages).unwrap_or_default();
        let heard = heard.trim().trim_end_matches(['.', '!', '?']);
        Self::Text(format!("You said: {heard}."))
    }
}

/// Text of a message's `content`: a string, or the `text` parts of a content array.
pub(crate) fn content_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The text of the last `user` message.
pub(crate) fn last_user_text(messages: &[Value]) -> Option<String> {
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(content_text)
}

/// Which caller utterance this request answers, from 0 (the reply index with
/// reply-by-turn, so concurrent conversations each walk the script from the start). User
/// messages are counted, not assistant ones: an assistant turn the caller interrupted
/// before hearing anything may be left out of the history.
pub(crate) fn user_turn(messages: &[Value]) -> usize {
    messages
        .iter()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .count()
        .saturating_sub(1)
}

/// Splits text into streamed tokens: words carry their leading whitespace (" world"),
/// punctuation stands alone ("," "." and Devanagari's "।" "॥"); concatenating the tokens
/// gives the text back.
pub fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let has_word = |s: &str| s.chars().any(|c| !c.is_whitespace());
    for c in text.chars() {
        if c.is_whitespace() {
            if has_word(&current) {
                tokens.push(std::mem::take(&mut current));
            }
            current.push(c);
        } else if (c.is_ascii_punctuation() && c != '\'' && c != '-') || matches!(c, '।' | '॥')
        {
            if has_word(&current) {
                tokens.push(std::mem::take(&mut current));
            }
            current.push(c);
            tokens.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

/// A rough prompt token count (≈ 4 characters per token, plus 4 per message).
pub(crate) fn prompt_tokens(messages: &[Value]) -> u64 {
    messages
        .iter()
        .map(|m| content_text(m).chars().count() as u64 / 4 + 4)
        .sum()
}

/// OpenAI's check of a tool round's messages: every `tool` message answers a call of
/// the assistant message before it. The error is OpenAI's message.
pub(crate) fn check_tool_messages(messages: &[Value]) -> Result<(), String> {
    let mut open: Vec<&str> = Vec::new();
    for message in messages {
        match message.get("role").and_then(Value::as_str) {
            Some("assistant") => {
                open = message
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .map(|calls| calls.iter().filter_map(|c| c.get("id")?.as_str()).collect())
                    .unwrap_or_default();
            }
            Some("tool") => {
                let id = message.get("tool_call_id").and_then(Value::as_str);
                if !id.is_some_and(|id| open.contains(&id)) {
                    return Err("Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.".into());
                }
            }
            _ => open.clear(),
        }
    }
    Ok(())
}

/// Pieces a tool call's arguments stream in (about 8 characters each, on char boundaries).
pub(crate) fn argument_pieces(arguments: &str) -> Vec<String> {
    let chars: Vec<char> = arguments.chars().collect();
    chars
        .chunks(8)
        .map(|piece| piece.iter().collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// After tool results the reply is their `say` fields (or the raw result), and a tool
    /// message must answer a call of the assistant message before it.
    #[test]
    fn tool_rounds() {
        let calling = json!({"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "book", "arguments": "{}"}},
            {"id": "call_2", "type": "function", "function": {"name": "note", "arguments": "{}"}},
        ]});
        let messages = vec![
            json!({"role": "user", "content": "Book Friday."}),
            calling.clone(),
            json!({"role": "tool", "tool_call_id": "call_1", "content": "{\"say\":\"Booked for Friday.\"}"}),
            json!({"role": "tool", "tool_call_id": "call_2", "content": "{\"n\":1}"}),
        ];
        assert_eq!(
            Reply::after_tools(&messages),
            Some(Reply::Text(
                "Booked for Friday. The tool answered {\"n\":1}.".into()
            ))
        );
        assert_eq!(Reply::after_tools(&messages[..1]), None);
        assert_eq!(check_tool_messages(&messages), Ok(()));
        let orphan = vec![
            json!({"role": "user", "content": "hi"}),
            json!({"role": "tool", "tool_call_id": "call_1", "content": "{}"}),
        ];
        assert!(check_tool_messages(&orphan).is_err());
        let wrong_id = vec![
            calling,
            json!({"role": "tool", "tool_call_id": "call_9", "content": "{}"}),
        ];
        assert!(check_tool_messages(&wrong_id).is_err());
    }

    /// Tokens keep their leading space, punctuation stands alone, and the tokens always
    /// concatenate back to the text.
    #[test]
    fn tokens_round_trip() {
        assert_eq!(tokenize("Hello, world."), ["Hello", ",", " world", "."]);
        assert_eq!(tokenize("ठीक है। हाँ"), ["ठीक", " है", "।", " हाँ"]);
        assert_eq!(
            tokenize("We're open  9-5 (daily)!"),
            ["We're", " open", "  9-5", " (", "daily", ")", "!"]
        );
        for text in [
            "",
            " leading",
            "trailing ",
            "a\nb",
            "ünïcödé wörds, ok?",
            "नमस्ते। आप कैसे हैं? ठीक है॥",
            "...",
            "tool: x {\"a\":1}",
        ] {
            assert_eq!(tokenize(text).concat(), text, "{text:?}");
        }
    }

    /// Script lines starting `tool:` are tool calls (arguments default to `{}`).
    #[test]
    fn script_lines() {
        let call = |name: &str, arguments: &str| ScriptedCall {
            name: name.into(),
            arguments: arguments.into(),
        };
        assert_eq!(
            Reply::from_script(r#"tool:end_call {"reason":"done"}"#),
            Reply::Tools {
                calls: vec![call("end_call", r#"{"reason":"done"}"#)],
                then: None
            }
        );
        assert_eq!(
            Reply::from_script("tool:hang_up"),
            Reply::Tools {
                calls: vec![call("hang_up", "{}")],
                then: None
            }
        );
        assert_eq!(
            Reply::from_script(r#"tool:a {"x":1} && tool:b => Both done."#),
            Reply::Tools {
                calls: vec![call("a", r#"{"x":1}"#), call("b", "{}")],
                then: Some("Both done.".into())
            }
        );
        assert_eq!(
            Reply::from_script("Sure thing."),
            Reply::Text("Sure thing.".into())
        );
    }

    /// The echo rule repeats the last user message, whether its content is a string or parts.
    #[test]
    fn echo_rule() {
        let messages = vec![
            json!({"role": "system", "content": "Be brief."}),
            json!({"role": "user", "content": "first"}),
            json!({"role": "assistant", "content": "ok"}),
            json!({"role": "user", "content": [{"type": "text", "text": "What are your hours?"}]}),
        ];
        assert_eq!(
            Reply::echo(&messages),
            Reply::Text("You said: What are your hours.".into())
        );
        assert_eq!(user_turn(&messages), 1);
        assert_eq!(system_prompt(&messages), "Be brief.");
        assert_eq!(system_prompt(&messages[1..]), "");
        assert_eq!(Reply::echo(&[]), Reply::Text("You said: .".into()));
        assert!(prompt_tokens(&messages) >= 16);
        assert_eq!(
            argument_pieces(r#"{"reason":"done"}"#).concat(),
            r#"{"reason":"done"}"#
        );
    }
}
