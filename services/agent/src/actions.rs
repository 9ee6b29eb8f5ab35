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

use sb_runtime::Tenant;

use crate::openai::{CalledTool, ToolSpec};

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

/// The tools offered for a tenant: its own tools, and Switchboard's built-in ones it has
/// on (`end_call`, `transfer_call`; none without telephony, `transfer_call` only with a
/// transfer number).
pub fn tools(tenant: &Tenant, telephony: bool) -> Vec<ToolSpec> {
    let mut tools: Vec<ToolSpec> = tenant
        .tools
        .iter()
        .map(|t| ToolSpec {
            name: t.name.clone(),
            description: t.description.clone(),
            parameters: t.parameters.clone(),
        })
        .collect();
    if !telephony {
        return tools;
    }
    if tenant.builtin_tools.end_call {
        tools.push(ToolSpec {
            name: "end_call".into(),
            description: "End the phone call after saying goodbye. Use when the caller is done or asks to hang up.".into(),
            parameters: json!({
                "type": "object",
                "properties": { "reason": { "type": "string", "description": "Why the call ends." } },
            }),
        });
    }
    if tenant.builtin_tools.transfer_call && tenant.transfer_number.is_some() {
        tools.push(ToolSpec {
            name: "transfer_call".into(),
            description: "Transfer the caller to a human colleague. Use when the caller asks for a person or you cannot help.".into(),
            parameters: json!({
                "type": "object",
                "properties": { "reason": { "type": "string", "description": "Why the caller is transferred." } },
            }),
        });
    }
    tools
}

/// The first usable built-in call, given what this tenant allows. Unknown tools, turned-off
/// ones and a transfer without a configured number are ignored (logged); the tenant's own
/// tools are not built-in and are left to [`crate::tools`].
pub fn requested(calls: &[CalledTool], tenant: &Tenant, telephony: bool) -> Option<Requested> {
    let on = tenant.builtin_tools;
    calls.iter().find_map(|call| {
        match (call.name.as_str(), telephony, tenant.transfer_number.as_deref()) {
            ("end_call", true, _) if on.end_call => Some(Requested::EndCall),
            ("transfer_call", true, Some(to)) if on.transfer_call => {
                Some(Requested::Transfer { to: to.to_owned() })
            }
            (name, ..) if tenant.tools.iter().any(|t| t.name == name) => None,
            (name, ..) => {
                tracing::warn!(tool = %name.chars().take(64).collect::<String>(), "ignoring tool call");
                None
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use sb_runtime::tenants::testing::TenantToml;

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
        let file = TenantToml::new()
            .tier("t", 1, 1)
            .tenant("plain", "+15005550006", "t")
            .tenant("full", "+15005550007", "t")
            .set("transfer_number", "+15005550010")
            .tool("book_table", "https://full.example/book")
            .tenant("quiet", "+15005550008", "t")
            .set("transfer_number", "+15005550010")
            .set("builtin_tools", Vec::<String>::new())
            .parse()
            .unwrap();
        let tenant = |n: &str| file.by_number(n).unwrap().clone();
        let (plain, full, quiet) = (
            tenant("+15005550006"),
            tenant("+15005550007"),
            tenant("+15005550008"),
        );
        let names = |t: Vec<ToolSpec>| t.into_iter().map(|t| t.name).collect::<Vec<_>>();
        assert_eq!(names(tools(&plain, false)), Vec::<String>::new());
        assert_eq!(names(tools(&plain, true)), ["end_call"]);
        assert_eq!(
            names(tools(&full, true)),
            ["book_table", "end_call", "transfer_call"]
        );
        assert_eq!(names(tools(&full, false)), ["book_table"]);
        assert_eq!(names(tools(&quiet, true)), Vec::<String>::new());

        let calls = |n: &str| {
            vec![CalledTool {
                id: "call_1".into(),
                name: n.into(),
                arguments: "{}".into(),
            }]
        };
        assert_eq!(
            requested(&calls("end_call"), &plain, true),
            Some(Requested::EndCall)
        );
        assert_eq!(requested(&calls("end_call"), &plain, false), None);
        assert_eq!(requested(&calls("transfer_call"), &plain, true), None);
        assert_eq!(
            requested(&calls("transfer_call"), &full, true),
            Some(Requested::Transfer {
                to: "+15005550010".into()
            })
        );
        assert_eq!(requested(&calls("end_call"), &quiet, true), None);
        assert_eq!(requested(&calls("book_table"), &full, true), None);
        assert_eq!(requested(&calls("launch_rockets"), &full, true), None);
    }
}
