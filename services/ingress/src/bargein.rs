//! The barge-in policy of one tenant: does this `speech` or `partial` event interrupt the bot?
//!
//! Consumes the tenant's [`BargeInPolicy`] and the STT events of a call; produces a trigger
//! (or nothing). Mode `speech`: the provider's VAD `speech` event interrupts. Mode `words`:
//! a partial transcript with at least `min_words` words that are not backchannel ("uh-huh",
//! "okay", …, single words or phrases, compared case-insensitively without punctuation)
//! interrupts. Whether bot audio is playing is the playback's business, not this one's.
//! State: the normalised policy, immutable.

use sb_runtime::tenants::backchannel::Backchannel;
use sb_runtime::tenants::{BargeInMode, BargeInPolicy};
use sb_schemas::BargeInTrigger;

/// A tenant's policy, ready to apply.
#[derive(Debug, Clone)]
pub struct Detector {
    mode: BargeInMode,
    min_words: usize,
    backchannel: Backchannel,
}

impl Detector {
    pub fn new(policy: &BargeInPolicy) -> Self {
        Self {
            mode: policy.mode,
            min_words: policy.min_words.max(1) as usize,
            backchannel: Backchannel::new(&policy.backchannel),
        }
    }

    /// A VAD `speech` event.
    pub fn on_speech(&self) -> Option<BargeInTrigger> {
        (self.mode == BargeInMode::Speech).then_some(BargeInTrigger::Speech)
    }

    /// A `partial` transcript (the utterance so far).
    pub fn on_partial(&self, text: &str) -> Option<BargeInTrigger> {
        (self.mode == BargeInMode::Words && self.counted_words(text) >= self.min_words)
            .then_some(BargeInTrigger::Words)
    }

    /// Words of `text` that are not backchannel.
    pub fn counted_words(&self, text: &str) -> usize {
        self.backchannel.counted_words(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: BargeInMode, min_words: u32, backchannel: &[&str]) -> BargeInPolicy {
        BargeInPolicy {
            mode,
            min_words,
            backchannel: backchannel.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// Words mode: backchannel never counts, real words do, punctuation and case ignored.
    #[test]
    fn words_mode_table() {
        let detector = Detector::new(&policy(
            BargeInMode::Words,
            2,
            &["uh-huh", "okay", "Mm-hmm", "got it"],
        ));
        for (text, interrupts) in [
            ("", false),
            ("uh-huh", false),
            ("Uh-huh. Okay!", false),
            ("okay okay okay mm-hmm", false),
            ("Got it, okay.", false),
            ("wait", false),
            ("wait, stop", true),
            ("uh-huh wait stop", true),
            ("Okay, but WHAT about Saturday?", true),
            ("got", false),
            ("got milk", true),
            ("...  ,", false),
        ] {
            assert_eq!(
                detector.on_partial(text).is_some(),
                interrupts,
                "{text:?} counted {}",
                detector.counted_words(text)
            );
        }
        assert_eq!(detector.on_speech(), None, "words mode ignores VAD");
        assert_eq!(
            detector.on_partial("stop it now"),
            Some(BargeInTrigger::Words)
        );
    }

    /// Speech mode: the VAD event interrupts, partials do not.
    #[test]
    fn speech_mode() {
        let detector = Detector::new(&policy(BargeInMode::Speech, 2, &[]));
        assert_eq!(detector.on_speech(), Some(BargeInTrigger::Speech));
        assert_eq!(detector.on_partial("stop talking right now"), None);
    }

    /// `min_words = 0` behaves as 1: an empty partial never interrupts.
    #[test]
    fn zero_min_words_is_one() {
        let detector = Detector::new(&policy(BargeInMode::Words, 0, &["ok"]));
        assert!(detector.on_partial("").is_none());
        assert!(detector.on_partial("ok").is_none());
        assert!(detector.on_partial("no").is_some());
    }
}
