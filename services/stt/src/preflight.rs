//! Preflights: the answer starts on a stable interim transcript, before the final one
//! (ARCHITECTURE §2g).
//!
//! Consumes the provider's results as the utterance grows (its text so far, and whether the
//! result shows the caller paused) and each final utterance; produces the decision to
//! publish a `preflight` on a turn of its own, and, per final, which turn its transcript
//! takes: the preflight's when the words are the same (case and punctuation aside: the
//! work is under way, `used`), a new one otherwise (the preflight turn is superseded,
//! `discarded`). State: the pending preflight of the utterance being heard (this value,
//! one per owned call); lost with the worker, after which the final simply takes a new
//! turn.

use sb_runtime::tenants::backchannel::{Backchannel, words};

use crate::provider::SttResult;

/// A result whose audio runs on this long past its last word shows the caller paused.
/// Deepgram sends an interim about every second of audio, so "the interim did not change
/// for 120 ms" would hold between any two of them, mid-sentence; the provider's own word
/// timings say whether the caller stopped. 150 ms is longer than the pause between words
/// (and the synthetic voice's comma, 120 ms), and half the shortest endpointing
/// Switchboard asks for by default (300 ms), so the preflight leads the final.
pub const PAUSE_MS: u64 = 150;
/// Preflights of one utterance at most (a caller who pauses, speaks on, pauses again):
/// each replaced one costs an LLM request.
pub const MAX_PER_UTTERANCE: u32 = 3;

/// Whether `result` shows the caller paused after its last word.
pub fn paused(result: &SttResult) -> bool {
    result
        .last_word_end_ms
        .is_some_and(|end| result.end_ms.saturating_sub(end) >= PAUSE_MS)
}

/// The same words, case and surrounding punctuation aside ("what are your hours" and
/// "What are your hours?").
pub fn same_words(a: &str, b: &str) -> bool {
    words(a).eq(words(b))
}

/// A preflight published for the utterance being heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub turn: u32,
    pub text: String,
}

/// What to do with a stable text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing: not worth a preflight, or the one sent has these words.
    Keep,
    /// Publish a preflight on a new turn; `replaces`: the turn of the pending one it
    /// supersedes (counted `discarded`).
    Publish { replaces: Option<u32> },
}

/// Which turn a final utterance's transcript takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// No preflight: a new turn, as always.
    None,
    /// The preflight had the same words: its turn.
    Used(u32),
    /// The preflight differed: a new turn supersedes this one.
    Discarded(u32),
}

/// The preflight state of one call's current utterance.
#[derive(Debug, Default)]
pub struct Preflights {
    pending: Option<Pending>,
    /// Preflights published for the current utterance.
    sent: u32,
}

impl Preflights {
    /// What a stable `text` of the utterance calls for: a preflight when it holds a word
    /// that is not backchannel and differs from the pending one (within the limit).
    pub fn consider(&self, text: &str, backchannel: &Backchannel) -> Plan {
        if backchannel.only_backchannel(text) || self.sent >= MAX_PER_UTTERANCE {
            return Plan::Keep;
        }
        match &self.pending {
            Some(pending) if same_words(&pending.text, text) => Plan::Keep,
            pending => Plan::Publish {
                replaces: pending.as_ref().map(|p| p.turn),
            },
        }
    }

    /// A preflight of `text` was published on `turn`.
    pub fn published(&mut self, turn: u32, text: String) {
        self.pending = Some(Pending { turn, text });
        self.sent += 1;
    }

    /// The pending preflight's turn was superseded (a newer turn was taken for the next
    /// one): the final cannot take it any more.
    pub fn forget(&mut self) {
        self.pending = None;
    }

    /// The pending preflight, if any.
    pub fn pending(&self) -> Option<&Pending> {
        self.pending.as_ref()
    }

    /// The utterance ended in `text`: which turn its transcript takes. The next
    /// utterance starts with no preflight.
    pub fn settle(&mut self, text: &str) -> Settled {
        self.sent = 0;
        match self.pending.take() {
            None => Settled::None,
            Some(pending) if same_words(&pending.text, text) => Settled::Used(pending.turn),
            Some(pending) => Settled::Discarded(pending.turn),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(end_ms: u64, last_word_end_ms: Option<u64>) -> SttResult {
        SttResult {
            end_ms,
            last_word_end_ms,
            transcript: "book a table".into(),
            ..SttResult::default()
        }
    }

    /// Stable once the audio runs PAUSE_MS past the last word; no words, no pause.
    #[test]
    fn a_pause_after_the_last_word_is_stable() {
        for (end, word_end, stable) in [
            (2_000, Some(1_850), true),
            (2_000, Some(1_851), false),
            (2_000, Some(2_000), false),
            (2_000, None, false),
            (100, Some(900), false),
        ] {
            assert_eq!(paused(&result(end, word_end)), stable, "{end} {word_end:?}");
        }
    }

    #[test]
    fn words_match_whatever_the_case_and_punctuation() {
        for (a, b, same) in [
            (
                "what are your opening hours",
                "What are your opening hours?",
                true,
            ),
            (
                "Sorry, could you email them",
                "sorry could you email them",
                true,
            ),
            ("“Yes.”", "yes", true),
            ("don't", "dont", false),
            ("what are your", "What are your opening hours?", false),
            ("आपका दफ़्तर कब खुलता है", "आपका दफ़्तर कब खुलता है?", true),
            ("", "", true),
        ] {
            assert_eq!(same_words(a, b), same, "{a:?} {b:?}");
        }
    }

    /// A preflight per new stable text with a real word; the same words again change
    /// nothing; a different text replaces the pending one, up to the limit; the final
    /// takes the preflight's turn only with the same words, and the next utterance starts
    /// afresh.
    #[test]
    fn preflights_of_an_utterance() {
        let backchannel = Backchannel::new(&["uh-huh".into(), "okay".into()]);
        let mut p = Preflights::default();
        assert_eq!(p.consider("Uh-huh, okay.", &backchannel), Plan::Keep);
        assert_eq!(
            p.consider("okay what are", &backchannel),
            Plan::Publish { replaces: None }
        );
        p.published(4, "okay what are".into());
        assert_eq!(p.consider("Okay, what are?", &backchannel), Plan::Keep);
        assert_eq!(
            p.consider("okay what are your hours", &backchannel),
            Plan::Publish { replaces: Some(4) }
        );
        p.published(5, "okay what are your hours".into());
        p.published(6, "okay what are your hours today".into());
        assert_eq!(p.consider("something else", &backchannel), Plan::Keep);
        assert_eq!(
            p.settle("Okay, what are your hours today?"),
            Settled::Used(6)
        );
        assert_eq!(p.settle("Anything"), Settled::None);
        assert_eq!(
            p.consider("what are", &backchannel),
            Plan::Publish { replaces: None }
        );
        p.published(8, "what are".into());
        assert_eq!(p.settle("What are your hours?"), Settled::Discarded(8));
        assert!(p.pending().is_none());
    }
}
