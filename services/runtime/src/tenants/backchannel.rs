//! Backchannel words ("uh-huh", "okay", "got it"): what a caller says over the bot to show
//! they are listening, which neither interrupts the bot nor starts a turn.
//!
//! Consumes a tenant's backchannel phrases and transcripts; produces the count of words
//! of a transcript that are not backchannel (single words or phrases, compared
//! case-insensitively without surrounding punctuation, longest phrase first). No I/O;
//! state: the normalised phrases, immutable.

/// A tenant's backchannel phrases, ready to match.
#[derive(Debug, Clone, Default)]
pub struct Backchannel {
    /// Phrases as normalised words, longest first (greedy matching).
    phrases: Vec<Vec<String>>,
}

impl Backchannel {
    pub fn new(phrases: &[String]) -> Self {
        let mut phrases: Vec<Vec<String>> = phrases
            .iter()
            .map(|phrase| words(phrase).collect::<Vec<_>>())
            .filter(|phrase| !phrase.is_empty())
            .collect();
        phrases.sort_by_key(|phrase| std::cmp::Reverse(phrase.len()));
        Self { phrases }
    }

    /// Words of `text` that are not backchannel.
    pub fn counted_words(&self, text: &str) -> usize {
        let words: Vec<String> = words(text).collect();
        let mut counted = 0;
        let mut i = 0;
        while i < words.len() {
            let skip = self
                .phrases
                .iter()
                .find(|phrase| words[i..].starts_with(phrase))
                .map_or(0, Vec::len);
            if skip > 0 {
                i += skip;
            } else {
                counted += 1;
                i += 1;
            }
        }
        counted
    }

    /// `text` holds only backchannel (or no words at all).
    pub fn only_backchannel(&self, text: &str) -> bool {
        self.counted_words(text) == 0
    }
}

/// Lowercase words without surrounding punctuation ("Okay," → "okay", "uh-huh." → "uh-huh");
/// letters of any script (Devanagari's "हाँ" keeps its marks).
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !(c.is_alphanumeric() || is_mark(c)))
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
}

/// Combining marks `char::is_alphanumeric` does not count as letters: Devanagari's vowel
/// signs and nasalisation (its dandas `।` `॥` are punctuation), and Latin accents.
fn is_mark(c: char) -> bool {
    matches!(c, '\u{0300}'..='\u{036F}' | '\u{0900}'..='\u{0963}' | '\u{0966}'..='\u{097F}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases_and_punctuation() {
        let b = Backchannel::new(&["uh-huh".into(), "Got it".into(), "हाँ".into()]);
        for (text, counted) in [
            ("", 0),
            ("Uh-huh.", 0),
            ("got it, uh-huh", 0),
            ("got milk", 2),
            ("uh-huh wait", 1),
            ("हाँ।", 0),
            ("हाँ रुको", 1),
            ("“Uh-huh…”", 0),
        ] {
            assert_eq!(b.counted_words(text), counted, "{text:?}");
        }
        assert!(b.only_backchannel("UH-HUH!"));
        assert!(!b.only_backchannel("stop"));
    }
}
