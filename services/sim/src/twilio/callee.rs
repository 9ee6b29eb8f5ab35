//! Who picks up a call the REST stand-in places: a script of [`Callee`] behaviours per
//! number ([`Callees`]): the n-th call to a number gets the n-th entry of its script (the
//! last entry repeats), unknown numbers get the default.
//!
//! Consumes Rust values or a TOML file (`sim twilio --callees FILE`); produces a
//! [`Callee`] per created call. Stateless: how many calls a number already had is counted
//! by [`super::TwilioState`].
//!
//! The file (paths are relative to the file; every key optional except `to`):
//!
//! ```toml
//! default = "human"                 # unknown numbers: human|voicemail|busy|no-answer|failed
//! scenario = "scenarios/callee.toml" # what every "human" plays unless its number says otherwise
//! greeting_ms = 3000                # every "voicemail" greeting unless its number says otherwise
//!
//! [[number]]
//! to = "+15005550001"
//! script = ["busy", "human"]        # 1st call busy, 2nd and later answered by a human
//! scenario = "callee.toml"          # that human's scenario (caller scenario format)
//!
//! [[number]]
//! to = "+15005550002"
//! script = ["voicemail"]
//! greeting_ms = 1500                # silence the machine plays before its beep
//! ```
//!
//! A full example is `services/sim/examples/callees.toml`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::caller::{Scenario, ScenarioError, Step};

/// Default voicemail greeting length.
pub const DEFAULT_GREETING: Duration = Duration::from_millis(1500);

/// What the called party does.
#[derive(Debug, Clone, PartialEq)]
pub enum Callee {
    /// A person answers and plays the scenario (the scripted caller against the ingress;
    /// without an ingress the call just lasts as long as the scenario would).
    Human(Scenario),
    /// An answering machine: answers, plays `greeting` (silence) and then records what
    /// the bot says until the call is hung up.
    Voicemail { greeting: Duration },
    /// Busy signal: the call ends `busy` after ringing.
    Busy,
    /// Rings out: the call ends `no-answer` after the ring time.
    NoAnswer,
    /// The call cannot be connected: it ends `failed`.
    Failed,
}

impl Callee {
    /// A bounded label (`human`, `voicemail`, `busy`, `no-answer`, `failed`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Human(_) => "human",
            Self::Voicemail { .. } => "voicemail",
            Self::Busy => "busy",
            Self::NoAnswer => "no-answer",
            Self::Failed => "failed",
        }
    }
}

/// Callee scripts per number, and the default for the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct Callees {
    numbers: HashMap<String, Vec<Callee>>,
    default: Callee,
}

impl Default for Callees {
    /// Every number answered by a human playing an empty scenario.
    fn default() -> Self {
        Self::new(Callee::Human(empty_scenario()))
    }
}

/// Why a callees file was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum CalleesError {
    #[error("reading callees file: {0}")]
    Io(#[from] std::io::Error),
    #[error("callees TOML: {0}")]
    Toml(String),
    #[error("number {to}: {reason}")]
    Number { to: String, reason: String },
    #[error("scenario {path}: {source}")]
    Scenario {
        path: String,
        #[source]
        source: ScenarioError,
    },
}

impl CalleesError {
    /// A bounded label for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Io(_) => "io",
            Self::Toml(_) => "toml",
            Self::Number { .. } => "number",
            Self::Scenario { .. } => "scenario",
        }
    }
}

impl Callees {
    /// Every number gets `default`.
    pub fn new(default: Callee) -> Self {
        Self {
            numbers: HashMap::new(),
            default,
        }
    }

    /// Calls to `to` follow `script` (an empty script means the default).
    pub fn with_number(mut self, to: impl Into<String>, script: Vec<Callee>) -> Self {
        self.numbers.insert(to.into(), script);
        self
    }

    /// The callee of call number `nth` (0-based) to `to`.
    pub fn pick(&self, to: &str, nth: usize) -> Callee {
        match self.numbers.get(to) {
            Some(script) if !script.is_empty() => script[nth.min(script.len() - 1)].clone(),
            _ => self.default.clone(),
        }
    }

    /// Reads a callees file; `human` entries without a scenario play `fallback`.
    pub fn load(path: &Path, fallback: &Scenario) -> Result<Self, CalleesError> {
        let text = std::fs::read_to_string(path)?;
        Self::from_toml(&text, path.parent().unwrap_or(Path::new(".")), fallback)
    }

    /// Parses a callees file; scenario paths are relative to `base`.
    pub fn from_toml(text: &str, base: &Path, fallback: &Scenario) -> Result<Self, CalleesError> {
        let raw: RawCallees =
            toml::from_str(text).map_err(|e| CalleesError::Toml(e.to_string()))?;
        let load = |path: &Option<String>, or: &Scenario| match path {
            Some(path) => {
                Scenario::load(&base.join(path)).map_err(|source| CalleesError::Scenario {
                    path: path.clone(),
                    source,
                })
            }
            None => Ok(or.clone()),
        };
        let scenario = load(&raw.scenario, fallback)?;
        let greeting = raw
            .greeting_ms
            .map_or(DEFAULT_GREETING, Duration::from_millis);
        let build = |name: &str, scenario: &Scenario, greeting: Duration| match name {
            "human" => Some(Callee::Human(scenario.clone())),
            "voicemail" => Some(Callee::Voicemail { greeting }),
            "busy" => Some(Callee::Busy),
            "no-answer" => Some(Callee::NoAnswer),
            "failed" => Some(Callee::Failed),
            _ => None,
        };
        let default_name = raw.default.as_deref().unwrap_or("human");
        let default = build(default_name, &scenario, greeting).ok_or_else(|| {
            CalleesError::Toml(format!("unknown default callee {default_name:?}"))
        })?;
        let mut callees = Self::new(default);
        for number in raw.number {
            let own = load(&number.scenario, &scenario)?;
            let greeting = number.greeting_ms.map_or(greeting, Duration::from_millis);
            let script = number
                .script
                .iter()
                .map(|name| {
                    build(name, &own, greeting).ok_or_else(|| CalleesError::Number {
                        to: number.to.clone(),
                        reason: format!(
                            "unknown callee {name:?} (human, voicemail, busy, no-answer, failed)"
                        ),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            callees = callees.with_number(number.to, script);
        }
        Ok(callees)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCallees {
    default: Option<String>,
    scenario: Option<String>,
    greeting_ms: Option<u64>,
    #[serde(default)]
    number: Vec<RawNumber>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNumber {
    to: String,
    script: Vec<String>,
    scenario: Option<String>,
    greeting_ms: Option<u64>,
}

/// A scenario with no steps: the callee answers and hangs up at once.
pub fn empty_scenario() -> Scenario {
    Scenario::from_toml("tones = true").expect("an empty scenario is valid")
}

/// How long a human plays `scenario` when no ingress talks back: pauses in full, 300 ms
/// per spoken word, 100 ms per key, waits for the bot take no time (there is no bot).
pub fn spoken_length(scenario: &Scenario) -> Duration {
    let ms: u64 = scenario
        .steps
        .iter()
        .map(|step| match step {
            Step::Pause { ms } => *ms,
            Step::Say(utterance) => 300 * utterance.text.split_whitespace().count() as u64,
            Step::Dtmf { digits } => 100 * digits.chars().count() as u64,
            Step::WaitForBot { .. } | Step::Hangup => 0,
        })
        .sum();
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scripts advance per call and the last entry repeats; unknown numbers get the
    /// default; unknown names are refused.
    #[test]
    fn scripts_per_number() {
        let fallback = empty_scenario();
        let text = r#"
            default = "no-answer"
            greeting_ms = 900
            [[number]]
            to = "+15005550001"
            script = ["busy", "voicemail", "human"]
            [[number]]
            to = "+15005550002"
            script = ["voicemail"]
            greeting_ms = 50
        "#;
        let callees = Callees::from_toml(text, Path::new("."), &fallback).expect("valid");
        let kinds: Vec<_> = (0..5)
            .map(|n| callees.pick("+15005550001", n).kind())
            .collect();
        assert_eq!(kinds, ["busy", "voicemail", "human", "human", "human"]);
        assert_eq!(
            callees.pick("+15005550001", 1),
            Callee::Voicemail {
                greeting: Duration::from_millis(900)
            }
        );
        assert_eq!(
            callees.pick("+15005550002", 7),
            Callee::Voicemail {
                greeting: Duration::from_millis(50)
            }
        );
        assert_eq!(callees.pick("+19995550000", 0), Callee::NoAnswer);
        let bad = "[[number]]\nto = \"+1\"\nscript = [\"robot\"]";
        let error = Callees::from_toml(bad, Path::new("."), &fallback).expect_err("robot");
        assert_eq!(error.kind(), "number");
        assert!(Callees::from_toml("colour = 1", Path::new("."), &fallback).is_err());
    }

    /// The example file under `examples/` parses, scenarios included.
    #[test]
    fn example_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/callees.toml");
        let callees = Callees::load(&path, &empty_scenario()).expect("example is valid");
        assert_eq!(callees.pick("+15005550001", 0), Callee::Busy);
        assert!(matches!(callees.pick("+15005550001", 1), Callee::Human(s) if !s.steps.is_empty()));
    }

    /// Without an ingress a human lasts its pauses, words and keys.
    #[test]
    fn spoken_length_counts_steps() {
        let scenario = Scenario::from_toml(
            "[[steps]]\npause_ms = 200\n[[steps]]\nsay = \"one two\"\n[[steps]]\ndtmf = \"12\"\n[[steps]]\nwait_for_bot = 9000",
        )
        .expect("valid");
        assert_eq!(spoken_length(&scenario), Duration::from_millis(1000));
    }
}
