//! What the scripted caller does on a call: a small TOML file of steps.
//!
//! Consumes TOML text (or a file); produces a validated [`Scenario`]. Stateless.
//!
//! ```toml
//! from = "+14155551234"       # caller id (default shown)
//! to = "+15005550006"         # the number dialled: picks the tenant
//! voice = "en-us"             # espeak-ng voice for every `say` without its own
//! tones = false               # true: speech-like tone bursts instead of espeak-ng
//! bot_quiet_ms = 600          # wait_for_bot: the bot's turn ends after this much quiet
//!
//! [[steps]]
//! wait_for_bot = 8000         # wait (at most 8000 ms) for the bot to speak and finish
//! [[steps]]
//! say = "I'd like a table for two."
//! [[steps]]
//! say = "Actually, three."    # barge in: start 500 ms after the bot's audio begins
//! barge_in_after_ms = 500
//! tone = true                 # this utterance as tone bursts
//! [[steps]]
//! pause_ms = 300              # silence
//! [[steps]]
//! dtmf = "1#"                 # key presses
//! [[steps]]
//! hangup = true               # optional: the caller hangs up after the last step anyway
//! ```

use std::path::Path;

use serde::Deserialize;

/// A validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Caller id (`From`).
    pub from: String,
    /// Number called (`To`).
    pub to: String,
    /// Default espeak-ng voice.
    pub voice: String,
    /// Speech-like tone bursts instead of espeak-ng for every utterance.
    pub tones: bool,
    /// How long the bot's playback must stay quiet before its turn counts as finished.
    pub bot_quiet_ms: u64,
    /// What happens, in order.
    pub steps: Vec<Step>,
}

/// One thing the caller does.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Speak an utterance.
    Say(Utterance),
    /// Wait until the bot's audio starts and then finishes, at most `timeout_ms`.
    WaitForBot { timeout_ms: u64 },
    /// Stay silent (silence frames keep flowing).
    Pause { ms: u64 },
    /// Press keys, one `dtmf` message each.
    Dtmf { digits: String },
    /// Hang up now.
    Hangup,
}

/// Something the caller says.
#[derive(Debug, Clone, PartialEq)]
pub struct Utterance {
    pub text: String,
    /// espeak-ng voice; the scenario's when `None`.
    pub voice: Option<String>,
    /// Speech-like tone bursts instead of espeak-ng.
    pub tone: bool,
    /// Barge in: wait for the bot's audio to start playing, then start speaking this
    /// many ms later.
    pub barge_in_after_ms: Option<u64>,
}

/// Why a scenario was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("reading scenario: {0}")]
    Io(#[from] std::io::Error),
    /// Not valid TOML, or an unknown key.
    #[error("scenario TOML: {0}")]
    Toml(String),
    /// A step that does not make sense.
    #[error("step {step}: {reason}")]
    Step { step: usize, reason: String },
}

impl ScenarioError {
    /// A bounded label for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Io(_) => "io",
            Self::Toml(_) => "toml",
            Self::Step { .. } => "step",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    #[serde(default = "default_from")]
    from: String,
    #[serde(default = "default_to")]
    to: String,
    #[serde(default = "default_voice")]
    voice: String,
    #[serde(default)]
    tones: bool,
    #[serde(default = "default_quiet")]
    bot_quiet_ms: u64,
    #[serde(default)]
    steps: Vec<RawStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    say: Option<String>,
    voice: Option<String>,
    tone: Option<bool>,
    barge_in_after_ms: Option<u64>,
    wait_for_bot: Option<u64>,
    pause_ms: Option<u64>,
    dtmf: Option<String>,
    hangup: Option<bool>,
}

fn default_from() -> String {
    "+14155551234".to_owned()
}
fn default_to() -> String {
    "+15005550006".to_owned()
}
fn default_voice() -> String {
    "en-us".to_owned()
}
fn default_quiet() -> u64 {
    600
}

/// Keys a DTMF `digit` can carry.
const DTMF_KEYS: &str = "0123456789*#ABCDabcd";

impl Scenario {
    /// Reads a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        Self::from_toml(&std::fs::read_to_string(path)?)
    }

    /// Parses and validates scenario TOML.
    pub fn from_toml(text: &str) -> Result<Self, ScenarioError> {
        let raw: RawScenario =
            toml::from_str(text).map_err(|e| ScenarioError::Toml(e.to_string()))?;
        let steps = raw
            .steps
            .into_iter()
            .enumerate()
            .map(|(i, step)| {
                step.validate().map_err(|reason| ScenarioError::Step {
                    step: i + 1,
                    reason,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            from: raw.from,
            to: raw.to,
            voice: raw.voice,
            tones: raw.tones,
            bot_quiet_ms: raw.bot_quiet_ms,
            steps,
        })
    }
}

impl RawStep {
    fn validate(self) -> Result<Step, String> {
        let actions = [
            self.say.is_some(),
            self.wait_for_bot.is_some(),
            self.pause_ms.is_some(),
            self.dtmf.is_some(),
            self.hangup.is_some(),
        ];
        if actions.iter().filter(|a| **a).count() != 1 {
            return Err(
                "needs exactly one of say, wait_for_bot, pause_ms, dtmf, hangup".to_owned(),
            );
        }
        let say_options =
            self.voice.is_some() || self.tone.is_some() || self.barge_in_after_ms.is_some();
        if self.say.is_none() && say_options {
            return Err("voice, tone and barge_in_after_ms belong to a say step".to_owned());
        }
        if let Some(text) = self.say {
            if text.trim().is_empty() {
                return Err("say needs some text".to_owned());
            }
            return Ok(Step::Say(Utterance {
                text,
                voice: self.voice,
                tone: self.tone.unwrap_or(false),
                barge_in_after_ms: self.barge_in_after_ms,
            }));
        }
        if let Some(timeout_ms) = self.wait_for_bot {
            return Ok(Step::WaitForBot { timeout_ms });
        }
        if let Some(ms) = self.pause_ms {
            return Ok(Step::Pause { ms });
        }
        if let Some(digits) = self.dtmf {
            if digits.is_empty() || !digits.chars().all(|c| DTMF_KEYS.contains(c)) {
                return Err(format!("dtmf {digits:?}: keys are 0-9 * # A-D"));
            }
            return Ok(Step::Dtmf { digits });
        }
        match self.hangup {
            Some(true) => Ok(Step::Hangup),
            _ => Err("hangup = false does nothing; leave it out".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented example parses into the steps it describes.
    #[test]
    fn parses_documented_example() {
        let text = r#"
            to = "+15005550007"
            tones = true
            [[steps]]
            wait_for_bot = 8000
            [[steps]]
            say = "I'd like a table for two."
            [[steps]]
            say = "Actually, three."
            barge_in_after_ms = 500
            voice = "en-us+f3"
            tone = true
            [[steps]]
            pause_ms = 300
            [[steps]]
            dtmf = "1#"
            [[steps]]
            hangup = true
        "#;
        let scenario = Scenario::from_toml(text).unwrap();
        assert_eq!(
            (scenario.from.as_str(), scenario.to.as_str()),
            ("+14155551234", "+15005550007")
        );
        assert!(scenario.tones);
        assert_eq!(scenario.bot_quiet_ms, 600);
        assert_eq!(scenario.steps.len(), 6);
        assert_eq!(scenario.steps[0], Step::WaitForBot { timeout_ms: 8000 });
        let Step::Say(barge) = &scenario.steps[2] else {
            panic!("{:?}", scenario.steps[2])
        };
        assert_eq!(barge.barge_in_after_ms, Some(500));
        assert_eq!(barge.voice.as_deref(), Some("en-us+f3"));
        assert!(barge.tone);
        assert_eq!(
            scenario.steps[4],
            Step::Dtmf {
                digits: "1#".into()
            }
        );
        assert_eq!(scenario.steps[5], Step::Hangup);
    }

    /// Each shipped example under `scenarios/` is valid.
    #[test]
    fn shipped_examples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut count = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            count += 1;
        }
        assert!(count >= 2);
    }

    /// Mistakes are reported with the step number, never a panic.
    #[test]
    fn rejects_bad_steps() {
        let cases = [
            ("[[steps]]\nsay = \"a\"\npause_ms = 1", "step"),
            ("[[steps]]\nvoice = \"en\"\npause_ms = 1", "step"),
            ("[[steps]]\ndtmf = \"x\"", "step"),
            ("[[steps]]\nsay = \" \"", "step"),
            ("[[steps]]\nhangup = false", "step"),
            ("[[steps]]\nshout = \"a\"", "toml"),
            ("colour = 1", "toml"),
            ("steps = 3", "toml"),
            ("[[steps]]", "step"),
        ];
        for (text, kind) in cases {
            assert_eq!(
                Scenario::from_toml(text).unwrap_err().kind(),
                kind,
                "{text}"
            );
        }
        let error =
            Scenario::from_toml("[[steps]]\npause_ms = 1\n[[steps]]\ndtmf = \"\"").unwrap_err();
        assert!(error.to_string().starts_with("step 2:"), "{error}");
    }
}
