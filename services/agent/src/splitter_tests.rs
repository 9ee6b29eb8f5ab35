//! Tests of [`super`]: the split table (abbreviations, decimals, URLs, scripts), chunking
//! independence, early emission, and a tenant's own sentence ends (Hindi, Armenian).

use super::*;

/// (text, min first-sentence chars, expected sentences).
const CASES: &[(&str, usize, &[&str])] = &[
    (
        "Hello there. How are you?",
        0,
        &["Hello there.", "How are you?"],
    ),
    ("Wait! Really? Yes.", 0, &["Wait!", "Really?", "Yes."]),
    (
        "नमस्ते, आप कैसे हैं। मैं ठीक हूँ।",
        0,
        &["नमस्ते, आप कैसे हैं।", "मैं ठीक हूँ।"],
    ),
    ("आप कैसे हैं।मैं ठीक हूँ॥", 0, &["आप कैसे हैं।", "मैं ठीक हूँ॥"]),
    ("你好。我很好！谢谢？", 0, &["你好。", "我很好！", "谢谢？"]),
    (
        "It costs 3.5 dollars, or 1,000.25 in total. Thanks.",
        0,
        &["It costs 3.5 dollars, or 1,000.25 in total.", "Thanks."],
    ),
    (
        "Dr. Smith sees you at 3 p.m. tomorrow. Bring your I.D. please.",
        0,
        &[
            "Dr. Smith sees you at 3 p.m. tomorrow.",
            "Bring your I.D. please.",
        ],
    ),
    (
        "We ship across the U.S. Orders arrive in two days.",
        0,
        &["We ship across the U.S.", "Orders arrive in two days."],
    ),
    (
        "We open at 9 a.m. and close at 5 p.m. See you!",
        0,
        &["We open at 9 a.m. and close at 5 p.m.", "See you!"],
    ),
    (
        "Bring documents, e.g. a passport, i.e. photo ID. Thanks!",
        0,
        &[
            "Bring documents, e.g. a passport, i.e. photo ID.",
            "Thanks!",
        ],
    ),
    (
        "Ask Mr. Brown or Mrs. Green vs. the team. Done.",
        0,
        &["Ask Mr. Brown or Mrs. Green vs. the team.", "Done."],
    ),
    (
        "The author is J. K. Rowling. Next.",
        0,
        &["The author is J. K. Rowling.", "Next."],
    ),
    (
        "Visit https://example.com/help.html?x=1&y=2 for details. Or call!",
        0,
        &[
            "Visit https://example.com/help.html?x=1&y=2 for details.",
            "Or call!",
        ],
    ),
    (
        "Go to www.acme.io. It has everything.",
        0,
        &["Go to www.acme.io.", "It has everything."],
    ),
    (
        "Write to help.desk@acme.co.uk. We reply fast.",
        0,
        &["Write to help.desk@acme.co.uk.", "We reply fast."],
    ),
    (
        "He said \"stop.\" Then he left (quietly.) The end",
        0,
        &["He said \"stop.\"", "Then he left (quietly.)", "The end"],
    ),
    (
        "Hmm... let me check. Yes... We have it.",
        0,
        &["Hmm... let me check.", "Yes...", "We have it."],
    ),
    (
        "1. Open the app and tap settings.",
        0,
        &["1. Open the app and tap settings."],
    ),
    ("We open at 9. Come by.", 0, &["We open at 9.", "Come by."]),
    (
        "First line\n\nSecond   line\nstill second.",
        0,
        &["First line", "Second line still second."],
    ),
    ("No. I can't do that.", 0, &["No.", "I can't do that."]),
    ("No trailing punctuation", 0, &["No trailing punctuation"]),
    ("  \n ", 0, &[]),
    // The first sentence is at least 16 characters: one short start is merged.
    (
        "Sure. We are open from nine to five. Bye.",
        16,
        &["Sure. We are open from nine to five.", "Bye."],
    ),
    (
        "Sure! Yes. Okay then. Bye.",
        16,
        &["Sure! Yes.", "Okay then.", "Bye."],
    ),
    (
        "Thanks for calling Acme. How can I help?",
        16,
        &["Thanks for calling Acme.", "How can I help?"],
    ),
    ("Yes.", 16, &["Yes."]),
];

/// Every case splits as expected when the text arrives whole.
#[test]
fn split_table() {
    for (text, min, expected) in CASES {
        assert_eq!(split_all(text, *min), *expected, "{text:?}");
    }
}

/// The result does not depend on how the stream was cut: one character at a time,
/// LLM-like word tokens, and awkward 3-byte-ish pieces all give the same sentences.
#[test]
fn chunking_does_not_matter() {
    for (text, min, expected) in CASES {
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let tokens = sb_sim::llm::reply::tokenize(text);
        let triples: Vec<String> = text
            .chars()
            .collect::<Vec<_>>()
            .chunks(3)
            .map(|c| c.iter().collect())
            .collect();
        for pieces in [chars, tokens, triples] {
            let mut splitter = Splitter::new(*min);
            let mut out = Vec::new();
            for piece in &pieces {
                out.extend(splitter.push(piece));
            }
            out.extend(splitter.finish());
            assert_eq!(out, *expected, "{text:?} in pieces {pieces:?}");
        }
    }
}

/// Hindi: the danda ends a sentence with or without a space after it, `?` with one;
/// the first sentence is merged with the next while it is short; a streamed answer
/// splits as a whole one does.
#[test]
fn hindi_sentences() {
    let text = "नमस्ते। आप कैसे हैं? ठीक है।";
    let hindi = || Splitter::new(0).with_ends(&['।', '॥']);
    assert_eq!(
        split_all_with(hindi(), text),
        ["नमस्ते।", "आप कैसे हैं?", "ठीक है।"]
    );
    assert_eq!(
        split_all_with(Splitter::new(16).with_ends(&['।', '॥']), text),
        ["नमस्ते। आप कैसे हैं?", "ठीक है।"]
    );
    assert_eq!(
        split_all_with(hindi(), "ठीक है।हाँ॥ चलिए"),
        ["ठीक है।", "हाँ॥", "चलिए"]
    );
    let mut streamed = hindi();
    let mut out = Vec::new();
    for token in sb_sim::llm::reply::tokenize(text) {
        out.extend(streamed.push(&token));
    }
    out.extend(streamed.finish());
    assert_eq!(out, ["नमस्ते।", "आप कैसे हैं?", "ठीक है।"]);
}

/// A tenant's own end (Armenian's full stop) is a boundary only for that tenant's
/// splitter; the built-in ends stay for everyone.
#[test]
fn a_tenants_own_ends() {
    let text = "Բարեւ։ Ինչպե՞ս ես։";
    assert_eq!(split_all(text, 0), [text]);
    assert_eq!(
        split_all_with(Splitter::new(0).with_ends(&['։']), text),
        ["Բարեւ։", "Ինչպե՞ս ես։"]
    );
    assert_eq!(
        split_all_with(Splitter::new(0).with_ends(&['։']), "Hi there. Bye."),
        ["Hi there.", "Bye."]
    );
}

/// A sentence is produced as soon as the next word starts, not at the end.
#[test]
fn sentences_leave_early() {
    let mut s = Splitter::new(0);
    assert!(s.push("Hello there.").is_empty(), "needs the next word");
    assert!(s.push(" ").is_empty());
    assert_eq!(s.push("How"), ["Hello there."]);
    assert!(s.has_pending());
    assert_eq!(s.push(" are you?"), Vec::<String>::new());
    assert_eq!(s.finish().as_deref(), Some("How are you?"));
    assert!(!s.has_pending());
}
