//! Streaming sentence splitter: LLM text deltas in, complete sentences out.
//!
//! Consumes the text pieces of one answer as they stream; produces each sentence the moment
//! its boundary is confirmed, so TTS can start on it while the LLM is still talking, and the
//! rest at the end ([`Splitter::finish`]). A boundary is `. ? ! …` (and `।` `॥` `؟` `۔`,
//! `。！？`) plus any closing quotes or brackets, confirmed by whitespace and the next
//! word; a tenant's language adds its own ends ([`Splitter::with_ends`], e.g. `।` `॥` for
//! Hindi), boundaries wherever they appear. Decisions never depend on how the text was cut
//! into pieces: a boundary is decided
//! only once the text after it has arrived. Not a boundary: decimals (`3.5`), URLs and
//! e-mail addresses (no whitespace after the dot), titles and Latin abbreviations (`Dr.`,
//! `e.g.`), initials (`J. K.`), list numbers (`1. …`), and dotted abbreviations such as
//! `U.S.` or `p.m.` unless the next word starts a sentence (upper case or a digit). The
//! first sentence of an answer is at least `min_first_chars` long (one boundary is skipped
//! at most), so the first TTS request is not a lone "Sure." but is not delayed for long.
//! State: the unconsumed text of one answer.

/// Words after which a `.` never ends a sentence (compared in lower case, without the dot).
const NEVER_SPLIT: &[&str] = &[
    "mr", "mrs", "ms", "mx", "dr", "prof", "st", "mt", "sr", "sra", "srta", "rev", "hon", "gen",
    "col", "capt", "lt", "sgt", "vs", "e.g", "i.e", "cf", "approx", "fig", "dept", "tel", "ext",
];

/// Words after which a `.` ends a sentence only if the next word starts one.
const MAYBE_SPLIT: &[&str] = &[
    "etc", "inc", "ltd", "co", "corp", "jr", "a.m", "p.m", "u.s", "u.k", "u.s.a", "e.u", "jan",
    "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
];

/// Terminators that need whitespace after them.
fn is_spaced_terminator(c: char) -> bool {
    matches!(c, '.' | '?' | '!' | '…' | '؟' | '۔')
}

/// Terminators of scripts written without spaces between sentences (or usually followed
/// by one, but never inside a word): a boundary on any following character.
fn is_tight_terminator(c: char) -> bool {
    matches!(c, '।' | '॥' | '。' | '！' | '？')
}

fn is_closer(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | '”' | '’' | ')' | ']' | '}' | '»' | '」' | '』' | '）'
    )
}

fn is_opener(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | '“' | '‘' | '(' | '[' | '{' | '«' | '¿' | '¡'
    )
}

/// What the scanner decided at one candidate boundary.
enum Decision {
    /// A sentence ends at byte `end`; the next one starts at byte `rest`.
    Split { end: usize, rest: usize },
    /// Not a boundary: keep scanning at byte `next`.
    No { next: usize },
    /// The text after the candidate has not arrived yet.
    Wait,
}

/// Splits one answer's stream of text into sentences.
#[derive(Debug, Clone)]
pub struct Splitter {
    buf: String,
    /// Byte offset where scanning resumes (everything before it was decided).
    scan: usize,
    /// Byte offset where the current sentence's words begin (after a skipped boundary, the
    /// words after it), for the list-number rule.
    segment: usize,
    min_first_chars: usize,
    emitted: usize,
    skipped_short_first: bool,
    /// The tenant's own sentence ends, as tight as `।` (`Language::sentence_ends`).
    extra_ends: Vec<char>,
}

impl Splitter {
    /// A splitter whose first sentence is at least `min_first_chars` characters long.
    pub fn new(min_first_chars: usize) -> Self {
        Self {
            buf: String::new(),
            scan: 0,
            segment: 0,
            min_first_chars,
            emitted: 0,
            skipped_short_first: false,
            extra_ends: Vec::new(),
        }
    }

    /// This splitter, also ending sentences at `ends` (a tenant's language: `।` `॥` for
    /// Hindi), wherever they appear, like `।`.
    pub fn with_ends(mut self, ends: &[char]) -> Self {
        self.extra_ends = ends.to_vec();
        self
    }

    /// A terminator that ends a sentence on any following character.
    fn is_tight(&self, c: char) -> bool {
        is_tight_terminator(c) || self.extra_ends.contains(&c)
    }

    /// Adds a piece of text; returns the sentences it completed, in order.
    pub fn push(&mut self, piece: &str) -> Vec<String> {
        self.buf.push_str(piece);
        let mut out = Vec::new();
        while let Some((end, rest)) = self.next_boundary() {
            let sentence = tidy(&self.buf[..end]);
            self.buf.drain(..rest);
            self.scan = 0;
            self.segment = 0;
            if !sentence.is_empty() {
                self.emitted += 1;
                out.push(sentence);
            }
        }
        out
    }

    /// The text after the last boundary, if any (the end of the answer).
    pub fn finish(&mut self) -> Option<String> {
        let rest = tidy(&self.buf);
        self.buf.clear();
        self.scan = 0;
        self.segment = 0;
        (!rest.is_empty()).then(|| {
            self.emitted += 1;
            rest
        })
    }

    /// Whether text is waiting for a boundary (or the end).
    pub fn has_pending(&self) -> bool {
        !self.buf.trim().is_empty()
    }

    fn next_boundary(&mut self) -> Option<(usize, usize)> {
        let mut i = self.scan;
        while let Some(c) = self.buf[i..].chars().next() {
            let decision = if is_spaced_terminator(c) || self.is_tight(c) {
                self.at_terminator(i)
            } else if c == '\n' {
                self.at_newline(i)
            } else {
                Decision::No {
                    next: i + c.len_utf8(),
                }
            };
            match decision {
                Decision::Wait => {
                    self.scan = i;
                    return None;
                }
                Decision::No { next } => i = next,
                Decision::Split { end, rest } => {
                    let short = self.emitted == 0
                        && !self.skipped_short_first
                        && tidy(&self.buf[..end]).chars().count() < self.min_first_chars;
                    if short && !tidy(&self.buf[..end]).is_empty() {
                        self.skipped_short_first = true;
                        self.segment = rest;
                        i = rest;
                    } else {
                        return Some((end, rest));
                    }
                }
            }
        }
        self.scan = self.buf.len();
        None
    }

    /// A terminator at byte `i`.
    fn at_terminator(&self, i: usize) -> Decision {
        let text = &self.buf;
        let first = text[i..].chars().next().unwrap_or('.');
        // The cluster: terminators and closing quotes/brackets ("?!", "...", `."`, `.)`).
        let mut j = i;
        let mut dots = 0;
        for c in text[i..].chars() {
            if is_spaced_terminator(c) || self.is_tight(c) || is_closer(c) {
                dots += usize::from(c == '.' || c == '…');
                j += c.len_utf8();
            } else {
                break;
            }
        }
        if j >= text.len() {
            return Decision::Wait;
        }
        let after = skip_whitespace(text, j);
        if self.is_tight(first) {
            return Decision::Split {
                end: j,
                rest: after,
            };
        }
        if after == j {
            // `3.5`, `example.com`, `a@b.co`, `e.g` mid-word: not a boundary.
            return Decision::No { next: j };
        }
        let Some(next) = text[after..].chars().next() else {
            return Decision::Wait;
        };
        let starts_sentence = next.is_uppercase() || next.is_ascii_digit() || is_opener(next);
        if first == '.' || first == '…' {
            let ellipsis = dots >= 2 || first == '…';
            let (word_start, word) = word_before(text, i);
            let word = word.to_lowercase();
            let list_number = !word.is_empty()
                && word.bytes().all(|b| b.is_ascii_digit())
                && text[self.segment..word_start].trim().is_empty();
            let initial = {
                let mut chars = word.chars();
                matches!((chars.next(), chars.next()), (Some(c), None) if c.is_alphabetic())
                    && text[word_start..].starts_with(|c: char| c.is_uppercase())
            };
            let dotted = word.contains('.') && word.chars().any(char::is_alphabetic);
            if !ellipsis && (NEVER_SPLIT.contains(&word.as_str()) || initial || list_number) {
                return Decision::No { next: after };
            }
            if (ellipsis || dotted || MAYBE_SPLIT.contains(&word.as_str())) && !starts_sentence {
                return Decision::No { next: after };
            }
        }
        Decision::Split {
            end: j,
            rest: after,
        }
    }

    /// A newline at byte `i`: a blank line ends a paragraph (and so a sentence).
    fn at_newline(&self, i: usize) -> Decision {
        let after = skip_whitespace(&self.buf, i);
        if after >= self.buf.len() {
            return Decision::Wait;
        }
        let newlines = self.buf[i..after].matches('\n').count();
        if newlines >= 2 {
            Decision::Split {
                end: i,
                rest: after,
            }
        } else {
            Decision::No { next: after }
        }
    }
}

/// The byte offset of the first non-whitespace character at or after `from`.
fn skip_whitespace(text: &str, from: usize) -> usize {
    text[from..]
        .char_indices()
        .find(|(_, c)| !c.is_whitespace())
        .map_or(text.len(), |(k, _)| from + k)
}

/// The word ending just before byte `end` (without leading openers) and where it starts.
fn word_before(text: &str, end: usize) -> (usize, &str) {
    let start = text[..end]
        .char_indices()
        .rev()
        .find(|(_, c)| c.is_whitespace())
        .map_or(0, |(k, c)| k + c.len_utf8());
    let word = &text[start..end];
    let trimmed = word.trim_start_matches(is_opener);
    (end - trimmed.len(), trimmed)
}

/// One line, single spaces: what TTS and the session get.
fn tidy(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Splits a whole text at once (for tests and for text that does not stream).
pub fn split_all(text: &str, min_first_chars: usize) -> Vec<String> {
    split_all_with(Splitter::new(min_first_chars), text)
}

/// Splits a whole text at once with `splitter` (e.g. one with a tenant's ends).
pub fn split_all_with(mut splitter: Splitter, text: &str) -> Vec<String> {
    let mut out = splitter.push(text);
    out.extend(splitter.finish());
    out
}

#[cfg(test)]
#[path = "splitter_tests.rs"]
mod tests;
