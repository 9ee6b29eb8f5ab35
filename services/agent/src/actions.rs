//! The tools the model may call (`end_call`, `transfer_call`) and carrying them out once
//! the caller has heard the last sentence.
//!
//! Consumes the model's tool calls and `played` events; produces the phrase to say, a
//! pending [`Action`] in the session (`action` field: JSON, the turn and the sentence it
//! waits for) and, when Twilio reports that sentence played, the REST update through
//! [`crate::telephony::Telephony`]. Waiting for `played` means the goodbye is heard before
//! the line drops, across replicas. State: the pending action, in Redis only.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::openai::ToolSpec;

/// What the agent does to the call once a sentence was played.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Action {
    HangUp {
        turn: u32,
        sentence: u32,
    },
    Transfer {
        turn: u32,
        sentence: u32,
        to: String,
    },
}

impl Action {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("an action serialises")
    }

    /// `None` for anything unreadable (an old or foreign value): dropped, never fatal.
    pub fn decode(raw: &str) -> Option<Self> {
        serde_json::from_str(raw).ok()
    }

    /// Whether hearing `sentence` of `turn` completes what this action waits for.
    pub fn due(&self, turn: u32, sentence: u32) -> bool {
        let (t, s) = match self {
            Action::HangUp { turn, sentence } | Action::Transfer { turn, sentence, .. } => {
                (*turn, *sentence)
            }
        };
        turn == t && sentence >= s
    }

    /// The metric label.
    pub fn name(&self) -> &'static str {
        match self {
            Action::HangUp { .. } => "hang_up",
            Action::Transfer { .. } => "transfer",
        }
    }
}

/// What the model asked for at the end of its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    EndCall,
    Transfer { to: String },
}

/// The tools offered for a tenant: none without telephony; `transfer_call` only when the
/// tenant has a transfer number.
pub fn tools(telephony: bool, transfer_number: Option<&str>) -> Vec<ToolSpec> {
    if !telephony {
        return Vec::new();
    }
    let mut tools = vec![ToolSpec {
        name: "end_call",
        description: "End the phone call after saying goodbye. Use when the caller is done or asks to hang up.",
        parameters: json!({
            "type": "object",
            "properties": { "reason": { "type": "string", "description": "Why the call ends." } },
        }),
    }];
    if transfer_number.is_some() {
        tools.push(ToolSpec {
            name: "transfer_call",
            description: "Transfer the caller to a human colleague. Use when the caller asks for a person or you cannot help.",
            parameters: json!({
                "type": "object",
                "properties": { "reason": { "type": "string", "description": "Why the caller is transferred." } },
            }),
        });
    }
    tools
}

/// The first usable tool call, given what this tenant allows. Unknown tools and a transfer
/// without a configured number are ignored (logged).
pub fn requested(
    calls: &[(String, String)],
    telephony: bool,
    transfer_number: Option<&str>,
) -> Option<Requested> {
    calls.iter().find_map(|(name, _arguments)| {
        match (name.as_str(), telephony, transfer_number) {
            ("end_call", true, _) => Some(Requested::EndCall),
            ("transfer_call", true, Some(to)) => Some(Requested::Transfer { to: to.to_owned() }),
            _ => {
                tracing::warn!(tool = %name.chars().take(64).collect::<String>(), "ignoring tool call");
                None
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_and_fall_due() {
        let hang = Action::HangUp {
            turn: 3,
            sentence: 1,
        };
        assert_eq!(Action::decode(&hang.encode()), Some(hang.clone()));
        assert!(hang.encode().contains("\"do\":\"hang_up\""));
        assert!(!hang.due(3, 0));
        assert!(hang.due(3, 1));
        assert!(!hang.due(4, 1));
        let transfer = Action::Transfer {
            turn: 2,
            sentence: 0,
            to: "+15005550010".into(),
        };
        assert_eq!(Action::decode(&transfer.encode()), Some(transfer));
        assert_eq!(Action::decode("garbage"), None);
    }

    #[test]
    fn tools_follow_the_tenant() {
        assert!(tools(false, Some("+1")).is_empty());
        let names = |t: Vec<ToolSpec>| t.iter().map(|t| t.name).collect::<Vec<_>>();
        assert_eq!(names(tools(true, None)), ["end_call"]);
        assert_eq!(
            names(tools(true, Some("+1"))),
            ["end_call", "transfer_call"]
        );
        let calls = |n: &str| vec![(n.to_owned(), "{}".to_owned())];
        assert_eq!(
            requested(&calls("end_call"), true, None),
            Some(Requested::EndCall)
        );
        assert_eq!(requested(&calls("end_call"), false, None), None);
        assert_eq!(requested(&calls("transfer_call"), true, None), None);
        assert_eq!(
            requested(&calls("transfer_call"), true, Some("+15005550010")),
            Some(Requested::Transfer {
                to: "+15005550010".into()
            })
        );
        assert_eq!(requested(&calls("launch_rockets"), true, Some("+1")), None);
    }
}
