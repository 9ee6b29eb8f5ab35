//! Deepgram live-STT messages as JSON, shaped exactly as PROTOCOLS §5.3 and the official
//! SDK's models (`ListenV1Results`, `SpeechStarted`, `UtteranceEnd`, `Metadata`, `Error`).
//!
//! Consumes plain values (times in ms of audio, a transcript and its word span); produces
//! `serde_json::Value`s. Times go out in seconds; words are spread evenly over the span of
//! audio they were heard in. State: none.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// Confidence reported for every word (the stand-in is always sure).
const WORD_CONFIDENCE: f64 = 0.99;
/// Confidence reported for a whole alternative.
const TRANSCRIPT_CONFIDENCE: f64 = 0.98;

/// What every `Results` message repeats about the stream.
#[derive(Debug, Clone)]
pub(crate) struct StreamInfo {
    pub(crate) request_id: String,
    /// The `model` query parameter, e.g. `nova-3` or `nova-2-phonecall`.
    pub(crate) model: String,
    /// Keep punctuation/casing and send `punctuated_word`.
    pub(crate) punctuate: bool,
}

impl StreamInfo {
    /// `model_info` as Deepgram names it: `nova-2-phonecall` → `phonecall-nova-2`/`nova-2`;
    /// `nova-3` → `general-nova-3`/`nova-3`.
    fn model_info(&self) -> Value {
        let parts: Vec<&str> = self.model.splitn(3, '-').collect();
        let (name, arch) = match parts.as_slice() {
            [family, generation, domain] => (
                format!("{domain}-{family}-{generation}"),
                format!("{family}-{generation}"),
            ),
            _ => (format!("general-{}", self.model), self.model.clone()),
        };
        json!({ "name": name, "version": "2025-01-01.0", "arch": arch })
    }
}

/// Where a result sits and what kind it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    /// Start of the audio this result covers (the end of the previous final), ms.
    pub(crate) start_ms: u64,
    /// End of that audio, ms.
    pub(crate) end_ms: u64,
    pub(crate) is_final: bool,
    pub(crate) speech_final: bool,
    pub(crate) from_finalize: bool,
}

/// The words of a transcript, and the audio they were heard in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Heard<'a> {
    /// The scripted utterance.
    pub(crate) text: &'a str,
    /// How many of its words were heard so far (interims carry a prefix).
    pub(crate) words: usize,
    /// First and last ms of speech the words are spread over.
    pub(crate) from_ms: u64,
    pub(crate) to_ms: u64,
}

/// Tokens of `text` that carry a word: `(word, punctuated_word)`, split on whitespace.
/// `word` is lowercase without punctuation, as Deepgram's `word` field: apostrophes and
/// combining marks stay (Devanagari's vowel signs, virama and nukta are part of the word;
/// its dandas `।` `॥` are punctuation). A piece without a word (a lone `।` or `—`) stays
/// with the word before it (or, first, the one after), so the punctuated words joined by
/// spaces give back every character of the line.
pub(crate) fn tokens(text: &str) -> Vec<(String, &str)> {
    let mut out: Vec<(String, &str)> = Vec::new();
    let mut ends: Vec<usize> = Vec::new();
    let mut unattached: Option<usize> = None;
    for piece in text.split_whitespace() {
        // `split_whitespace` yields sub-slices of `text`: their offsets are exact.
        let start = piece.as_ptr() as usize - text.as_ptr() as usize;
        let end = start + piece.len();
        let word: String = piece
            .chars()
            .filter(|&c| is_word_char(c))
            .flat_map(char::to_lowercase)
            .collect();
        if word.is_empty() {
            match (out.last_mut(), ends.last_mut()) {
                (Some((_, punctuated)), Some(last_end)) => {
                    let from = *last_end - punctuated.len();
                    *punctuated = &text[from..end];
                    *last_end = end;
                }
                _ => {
                    unattached.get_or_insert(start);
                }
            }
            continue;
        }
        let from = unattached.take().unwrap_or(start);
        out.push((word, &text[from..end]));
        ends.push(end);
    }
    out
}

/// A character of a word: letters, digits, apostrophes and the combining marks
/// `char::is_alphanumeric` leaves out (Latin accents; the Indic scripts' signs, all but
/// the dandas and the abbreviation sign).
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric()
        || c == '\''
        || matches!(c, '\u{0300}'..='\u{036F}')
        || (matches!(c, '\u{0900}'..='\u{0DFF}') && !matches!(c, '।' | '॥' | '॰'))
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// A `Results` message.
pub(crate) fn results(info: &StreamInfo, span: Span, heard: Option<Heard<'_>>) -> Value {
    let (transcript, words) = match heard {
        Some(heard) => transcript_and_words(info.punctuate, heard),
        None => (String::new(), Vec::new()),
    };
    let confidence = if words.is_empty() {
        0.0
    } else {
        TRANSCRIPT_CONFIDENCE
    };
    json!({
        "type": "Results",
        "channel_index": [0, 1],
        "duration": seconds(span.end_ms.saturating_sub(span.start_ms)),
        "start": seconds(span.start_ms),
        "is_final": span.is_final,
        "speech_final": span.speech_final,
        "from_finalize": span.from_finalize,
        "channel": { "alternatives": [{ "transcript": transcript, "confidence": confidence, "words": words }] },
        "metadata": {
            "request_id": info.request_id,
            "model_info": info.model_info(),
            "model_uuid": "00000000-0000-0000-0000-000000000000",
        },
    })
}

fn transcript_and_words(punctuate: bool, heard: Heard<'_>) -> (String, Vec<Value>) {
    let all = tokens(heard.text);
    let taken = &all[..heard.words.min(all.len())];
    if taken.is_empty() {
        return (String::new(), Vec::new());
    }
    let step = heard.to_ms.saturating_sub(heard.from_ms) as f64 / taken.len() as f64;
    let words = taken
        .iter()
        .enumerate()
        .map(|(i, (word, punctuated))| {
            let start = (heard.from_ms as f64 + step * i as f64) / 1000.0;
            let end = (heard.from_ms as f64 + step * (i + 1) as f64) / 1000.0;
            let mut entry = json!({
                "word": word,
                "start": (start * 1000.0).round() / 1000.0,
                "end": (end * 1000.0).round() / 1000.0,
                "confidence": WORD_CONFIDENCE,
            });
            if punctuate {
                entry["punctuated_word"] = json!(punctuated);
            }
            entry
        })
        .collect();
    let transcript = if punctuate {
        taken.iter().map(|(_, p)| *p).collect::<Vec<_>>().join(" ")
    } else {
        taken
            .iter()
            .map(|(w, _)| w.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    (transcript, words)
}

/// `SpeechStarted` at `at_ms` of audio.
pub(crate) fn speech_started(at_ms: u64) -> Value {
    json!({ "type": "SpeechStarted", "channel": [0, 1], "timestamp": seconds(at_ms) })
}

/// `UtteranceEnd` after the word ending at `last_word_end_ms`.
pub(crate) fn utterance_end(last_word_end_ms: u64) -> Value {
    json!({ "type": "UtteranceEnd", "channel": [0, 1], "last_word_end": seconds(last_word_end_ms) })
}

/// What the `Metadata` message reports about a finished stream.
#[derive(Debug, Clone)]
pub(crate) struct Summary<'a> {
    pub(crate) info: &'a StreamInfo,
    /// Hex SHA-256 of every audio byte received.
    pub(crate) sha256: String,
    /// When the stream opened (RFC 3339, ms, UTC).
    pub(crate) created: &'a str,
    pub(crate) duration_ms: u64,
    pub(crate) channels: u16,
}

/// `Metadata`, sent after `CloseStream` and before the close frame.
pub(crate) fn metadata(summary: &Summary<'_>) -> Value {
    json!({
        "type": "Metadata",
        "transaction_key": "deprecated",
        "request_id": summary.info.request_id,
        "sha256": summary.sha256,
        "created": summary.created,
        "duration": seconds(summary.duration_ms),
        "channels": summary.channels,
        "models": ["00000000-0000-0000-0000-000000000000"],
        "model_info": { "00000000-0000-0000-0000-000000000000": summary.info.model_info() },
    })
}

/// `Error` with variant `SchemaError`: a client text frame that could not be parsed.
pub(crate) fn schema_error(description: &str, message: &str) -> Value {
    json!({ "type": "Error", "variant": "SchemaError", "description": description, "message": message })
}

/// `ConfigureSuccess` for a `Configure` message (the stand-in applies nothing).
pub(crate) fn configure_success(request_id: &str, keyterms: Option<&Value>) -> Value {
    let mut reply = json!({ "type": "ConfigureSuccess", "request_id": request_id });
    if let Some(keyterms) = keyterms.filter(|k| k.is_array()) {
        reply["keyterms"] = keyterms.clone();
    }
    reply
}

/// `time` as RFC 3339 UTC with milliseconds, e.g. `2024-08-29T22:37:55.202Z`.
pub(crate) fn rfc3339_ms(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn info(punctuate: bool) -> StreamInfo {
        StreamInfo {
            request_id: "req-1".into(),
            model: "nova-3".into(),
            punctuate,
        }
    }

    /// A final result has every field of §5.3, times in seconds on the stream timeline and
    /// words spread over the speech span.
    #[test]
    fn final_result_shape() {
        let span = Span {
            start_ms: 0,
            end_ms: 2_500,
            is_final: true,
            speech_final: true,
            from_finalize: false,
        };
        let heard = Heard {
            text: "Testing. 123.",
            words: 2,
            from_ms: 1_000,
            to_ms: 2_000,
        };
        let value = results(&info(true), span, Some(heard));
        let expected = json!({
            "type": "Results", "channel_index": [0, 1], "duration": 2.5, "start": 0.0,
            "is_final": true, "speech_final": true, "from_finalize": false,
            "channel": { "alternatives": [{ "transcript": "Testing. 123.", "confidence": 0.98, "words": [
                { "word": "testing", "start": 1.0, "end": 1.5, "confidence": 0.99, "punctuated_word": "Testing." },
                { "word": "123", "start": 1.5, "end": 2.0, "confidence": 0.99, "punctuated_word": "123." },
            ]}]},
            "metadata": { "request_id": "req-1",
                "model_info": { "name": "general-nova-3", "version": "2025-01-01.0", "arch": "nova-3" },
                "model_uuid": "00000000-0000-0000-0000-000000000000" },
        });
        assert_eq!(value, expected);
    }

    /// Without punctuate the transcript is lowercase words and there is no punctuated_word;
    /// an interim carries only the words heard so far; no words means an empty transcript.
    #[test]
    fn interim_prefix_and_plain_words() {
        let span = Span {
            start_ms: 500,
            end_ms: 1_500,
            is_final: false,
            speech_final: false,
            from_finalize: false,
        };
        let heard = Heard {
            text: "I'd like a Table, please.",
            words: 2,
            from_ms: 500,
            to_ms: 1_500,
        };
        let value = results(&info(false), span, Some(heard));
        let alternative = &value["channel"]["alternatives"][0];
        assert_eq!(alternative["transcript"], "i'd like");
        assert!(alternative["words"][0].get("punctuated_word").is_none());
        let empty = results(&info(false), span, None);
        assert_eq!(empty["channel"]["alternatives"][0]["transcript"], "");
        assert_eq!(empty["channel"]["alternatives"][0]["confidence"], 0.0);
    }

    /// Devanagari keeps every character: `word` keeps the vowel signs, virama and nukta
    /// and drops the danda; a lone danda stays with the word before it; interims carry
    /// whole words of the line.
    #[test]
    fn devanagari_words() {
        let line = "नमस्ते। आप कैसे हैं? ठीक है ।";
        let words: Vec<(String, &str)> = tokens(line);
        let plain: Vec<&str> = words.iter().map(|(w, _)| w.as_str()).collect();
        assert_eq!(plain, ["नमस्ते", "आप", "कैसे", "हैं", "ठीक", "है"]);
        let punctuated: Vec<&str> = words.iter().map(|(_, p)| *p).collect();
        assert_eq!(punctuated, ["नमस्ते।", "आप", "कैसे", "हैं?", "ठीक", "है ।"]);
        assert_eq!(tokens("— दफ़्तर")[0], ("दफ़्तर".to_owned(), "— दफ़्तर"));
        assert!(tokens("। ॥").is_empty());
        let span = Span {
            start_ms: 0,
            end_ms: 3_000,
            is_final: false,
            speech_final: false,
            from_finalize: false,
        };
        let heard = |words| Heard {
            text: line,
            words,
            from_ms: 0,
            to_ms: 3_000,
        };
        let interim = results(&info(true), span, Some(heard(3)));
        assert_eq!(
            interim["channel"]["alternatives"][0]["transcript"],
            "नमस्ते। आप कैसे"
        );
        let done = results(&info(true), span, Some(heard(6)));
        assert_eq!(done["channel"]["alternatives"][0]["transcript"], line);
        assert_eq!(
            done["channel"]["alternatives"][0]["words"][0]["word"],
            "नमस्ते"
        );
        let plain = results(&info(false), span, Some(heard(6)));
        assert_eq!(
            plain["channel"]["alternatives"][0]["transcript"],
            "नमस्ते आप कैसे हैं ठीक है"
        );
    }

    /// Model names map to Deepgram's model_info naming.
    #[test]
    fn model_info_names() {
        let phone = StreamInfo {
            model: "nova-2-phonecall".into(),
            ..info(true)
        };
        assert_eq!(phone.model_info()["name"], "phonecall-nova-2");
        assert_eq!(phone.model_info()["arch"], "nova-2");
        let base = StreamInfo {
            model: "base".into(),
            ..info(true)
        };
        assert_eq!(base.model_info()["name"], "general-base");
    }

    /// The small messages have the SDK's field names.
    #[test]
    fn small_messages() {
        assert_eq!(
            speech_started(9_540),
            json!({ "type": "SpeechStarted", "channel": [0, 1], "timestamp": 9.54 })
        );
        assert_eq!(utterance_end(2_395)["last_word_end"], 2.395);
        let summary = Summary {
            info: &info(true),
            sha256: "ab".into(),
            created: "x",
            duration_ms: 1_250,
            channels: 1,
        };
        let meta = metadata(&summary);
        assert_eq!(
            (meta["type"].as_str(), meta["duration"].as_f64()),
            (Some("Metadata"), Some(1.25))
        );
        assert_eq!(meta["transaction_key"], "deprecated");
        assert_eq!(schema_error("bad", "{")["variant"], "SchemaError");
        assert_eq!(
            configure_success("r", Some(&json!(["a"])))["keyterms"],
            json!(["a"])
        );
    }

    /// Timestamps format as RFC 3339 with milliseconds.
    #[test]
    fn created_timestamp() {
        let t = UNIX_EPOCH + Duration::from_millis(1_724_971_075_202);
        assert_eq!(rfc3339_ms(t), "2024-08-29T22:37:55.202Z");
        assert_eq!(rfc3339_ms(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
