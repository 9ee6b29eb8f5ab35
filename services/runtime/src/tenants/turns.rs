//! A tenant's turn-taking (`[tenant.turn_taking]`) and keypad (`[tenant.keypad]`)
//! settings: when the caller's voice pauses the bot, when a pause without words resumes it,
//! whether answers start on interim transcripts, what silence and the call's length lead
//! to, and how key presses are read.
//!
//! Consumes the raw TOML tables; produces validated [`TurnTaking`] and [`Keypad`] values
//! (defaults for a tenant that sets nothing). Errors name the field. No I/O, no state.

use std::collections::BTreeMap;

use serde::Deserialize;

/// When the caller and the bot take turns.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnTaking {
    /// Caller voice (by the ingress's voice-activity detector) for this long while the
    /// bot speaks pauses the bot at once (Twilio `clear`), whatever the barge-in mode.
    pub min_interruption_ms: u32,
    /// A pause with no qualifying words ends this long after the caller's voice stopped:
    /// the bot resumes where it was cut (a false interruption).
    pub false_interruption_ms: u32,
    /// The detector's score (0 to 1) from which a 16 ms frame is voice.
    pub vad_threshold: f32,
    /// Start the answer (LLM and first sentence's speech) on a stable interim transcript,
    /// before the final one; discarded when the final differs.
    pub preemptive: bool,
    /// Caller silence after the bot's turn finished before a prompt; 0: never prompt.
    pub silence_secs: u32,
    /// Said after each silence in turn; once they are used up, `goodbye` and a hang-up.
    pub silence_prompts: Vec<String>,
    /// Said before the bot hangs up for silence or for `max_call_secs`.
    pub goodbye: String,
    /// Calls longer than this end politely (`goodbye`, then a hang-up); 0: no limit.
    pub max_call_secs: u32,
}

impl Default for TurnTaking {
    fn default() -> Self {
        Self {
            min_interruption_ms: 250,
            false_interruption_ms: 1500,
            vad_threshold: 0.5,
            preemptive: true,
            silence_secs: 0,
            silence_prompts: vec!["Are you still there?".into()],
            goodbye: "Thank you for calling. Goodbye.".into(),
            max_call_secs: 0,
        }
    }
}

/// What a key bound in `[tenant.keypad.actions]` does when it starts an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyAction {
    /// Transfer the call to the tenant's `transfer_number` (a tenant without one gets the
    /// key as a digit, like any other).
    Transfer,
    /// Say the last answer again.
    Repeat,
}

/// How the caller's key presses are read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Keypad {
    /// Key presses reach the model as caller input; `false`: they are only logged.
    pub enabled: bool,
    /// The key that ends an entry (not part of it); empty: none.
    pub terminator: String,
    /// An entry ends this long after its last key.
    pub timeout_ms: u32,
    /// An entry ends at this many digits.
    pub max_digits: u32,
    /// Keys that do something at once when they start an entry.
    pub actions: BTreeMap<String, KeyAction>,
}

impl Default for Keypad {
    fn default() -> Self {
        Self {
            enabled: true,
            terminator: "#".into(),
            timeout_ms: 3000,
            max_digits: 16,
            actions: BTreeMap::from([
                ("0".into(), KeyAction::Transfer),
                ("*".into(), KeyAction::Repeat),
            ]),
        }
    }
}

/// The keys of a telephone keypad.
pub const KEYS: &str = "0123456789*#ABCD";

fn is_key(key: &str) -> bool {
    key.len() == 1 && KEYS.contains(key)
}

/// Checks both tables; `field(name, why)` names the tenant and field.
pub(super) fn validate(
    turns: &TurnTaking,
    keypad: &Keypad,
    field: &dyn Fn(&str, String) -> String,
) -> Result<(), String> {
    if !(60..=2000).contains(&turns.min_interruption_ms) {
        return Err(field(
            "turn_taking.min_interruption_ms",
            "must be between 60 and 2000".into(),
        ));
    }
    if !(200..=10_000).contains(&turns.false_interruption_ms) {
        return Err(field(
            "turn_taking.false_interruption_ms",
            "must be between 200 and 10000".into(),
        ));
    }
    if !(turns.vad_threshold > 0.0 && turns.vad_threshold < 1.0) {
        return Err(field(
            "turn_taking.vad_threshold",
            "must be above 0 and below 1".into(),
        ));
    }
    if turns.silence_secs > 0 && turns.silence_prompts.iter().any(|p| p.trim().is_empty()) {
        return Err(field(
            "turn_taking.silence_prompts",
            "must not hold an empty phrase".into(),
        ));
    }
    if turns.silence_secs > 3600 {
        return Err(field(
            "turn_taking.silence_secs",
            "must be at most 3600".into(),
        ));
    }
    if (turns.silence_secs > 0 || turns.max_call_secs > 0) && turns.goodbye.trim().is_empty() {
        return Err(field("turn_taking.goodbye", "must not be empty".into()));
    }
    if !keypad.terminator.is_empty() && !is_key(&keypad.terminator) {
        return Err(field(
            "keypad.terminator",
            format!("{:?} is not a key (one of {KEYS})", keypad.terminator),
        ));
    }
    if !(100..=60_000).contains(&keypad.timeout_ms) {
        return Err(field(
            "keypad.timeout_ms",
            "must be between 100 and 60000".into(),
        ));
    }
    if !(1..=64).contains(&keypad.max_digits) {
        return Err(field(
            "keypad.max_digits",
            "must be between 1 and 64".into(),
        ));
    }
    for key in keypad.actions.keys() {
        if !is_key(key) || *key == keypad.terminator {
            return Err(field(
                &format!("keypad.actions.{key:?}"),
                format!("not a key (one of {KEYS}, not the terminator)"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(turns: &TurnTaking, keypad: &Keypad) -> Result<(), String> {
        validate(turns, keypad, &|name, why| format!("{name}: {why}"))
    }

    #[test]
    fn defaults_are_valid_and_bind_zero_and_star() {
        check(&TurnTaking::default(), &Keypad::default()).unwrap();
        let keypad = Keypad::default();
        assert_eq!(keypad.actions.get("0"), Some(&KeyAction::Transfer));
        assert_eq!(keypad.actions.get("*"), Some(&KeyAction::Repeat));
    }

    #[test]
    fn each_bad_field_is_named() {
        let turns = TurnTaking::default;
        let keypad = Keypad::default;
        for (t, k, named) in [
            (
                TurnTaking {
                    min_interruption_ms: 10,
                    ..turns()
                },
                keypad(),
                "turn_taking.min_interruption_ms",
            ),
            (
                TurnTaking {
                    vad_threshold: 1.5,
                    ..turns()
                },
                keypad(),
                "turn_taking.vad_threshold",
            ),
            (
                TurnTaking {
                    silence_secs: 5,
                    silence_prompts: vec![" ".into()],
                    ..turns()
                },
                keypad(),
                "turn_taking.silence_prompts",
            ),
            (
                TurnTaking {
                    max_call_secs: 60,
                    goodbye: String::new(),
                    ..turns()
                },
                keypad(),
                "turn_taking.goodbye",
            ),
            (
                turns(),
                Keypad {
                    terminator: "x".into(),
                    ..keypad()
                },
                "keypad.terminator",
            ),
            (
                turns(),
                Keypad {
                    actions: BTreeMap::from([("#".into(), KeyAction::Repeat)]),
                    ..keypad()
                },
                "keypad.actions",
            ),
        ] {
            let error = check(&t, &k).unwrap_err();
            assert!(error.starts_with(named), "{error} should name {named}");
        }
    }
}
