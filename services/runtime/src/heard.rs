//! What the caller heard of an interrupted answer, to the word.
//!
//! Consumes an answer's sentences (one per line, as the session stores them), the
//! sentences heard in full and, when the cut fell inside the next one, how much of its
//! audio was heard ([`CutSentence`]); produces the text the caller heard: the whole
//! sentences, then the words of the cut sentence whose middle was played, by proportional
//! alignment of characters to audio (speech runs at a near-even rate of characters; the
//! TTS gives no word timings). The agent stores it as the interrupted turn and the session
//! rebuild derives the same from the log. No I/O, no state.

use sb_schemas::CutSentence;

/// The leading words of `sentence` heard in `cut`'s share of its audio.
pub fn heard_words(sentence: &str, cut: CutSentence) -> &str {
    if cut.sentence_ms == 0 {
        return "";
    }
    let share = f64::from(cut.heard_ms.min(cut.sentence_ms)) / f64::from(cut.sentence_ms);
    let total = sentence.chars().count().max(1) as f64;
    let mut end = 0;
    for (start, word) in word_spans(sentence) {
        let at = sentence[..start].chars().count() as f64;
        let middle = (at + word.chars().count() as f64 / 2.0) / total;
        if middle > share {
            break;
        }
        end = start + word.len();
    }
    &sentence[..end]
}

/// Each whitespace-separated word of `text` with its byte offset.
fn word_spans(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split_whitespace()
        .map(move |word| (word.as_ptr() as usize - text.as_ptr() as usize, word))
}

/// The heard part of an answer stored one sentence per line.
pub fn kept_answer(answer: &str, sentences_heard: u32, cut: Option<CutSentence>) -> String {
    let heard = usize::try_from(sentences_heard).unwrap_or(usize::MAX);
    let mut lines: Vec<&str> = answer.split('\n').take(heard).collect();
    if let (Some(cut), Some(next)) = (cut, answer.split('\n').nth(heard)) {
        let words = heard_words(next, cut);
        if !words.is_empty() {
            lines.push(words);
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(heard_ms: u32, sentence_ms: u32) -> CutSentence {
        CutSentence {
            heard_ms,
            sentence_ms,
        }
    }

    #[test]
    fn words_whose_middle_was_heard() {
        let s = "We open at nine tomorrow morning.";
        assert_eq!(heard_words(s, cut(0, 3000)), "");
        assert_eq!(
            heard_words(s, cut(30, 3000)),
            "",
            "not yet the middle of the first word"
        );
        assert_eq!(heard_words(s, cut(300, 3000)), "We");
        assert_eq!(heard_words(s, cut(1500, 3000)), "We open at nine");
        assert_eq!(heard_words(s, cut(3000, 3000)), s);
        assert_eq!(heard_words(s, cut(5000, 3000)), s, "capped at the whole");
        assert_eq!(heard_words(s, cut(10, 0)), "", "unknown length");
        assert_eq!(heard_words("नमस्ते आप कैसे हैं।", cut(900, 1800)), "नमस्ते आप");
    }

    #[test]
    fn kept_answer_is_whole_sentences_then_the_heard_words() {
        let answer = "Hello there.\nWe open at nine tomorrow morning.\nBye.";
        assert_eq!(kept_answer(answer, 1, None), "Hello there.");
        assert_eq!(
            kept_answer(answer, 1, Some(cut(1500, 3000))),
            "Hello there.\nWe open at nine"
        );
        assert_eq!(kept_answer(answer, 0, Some(cut(100, 3000))), "");
        assert_eq!(kept_answer(answer, 3, Some(cut(100, 3000))), answer);
    }
}
