//! The `/v1/listen` query string, parsed as Deepgram does.
//!
//! Consumes the raw query; produces [`ListenParams`] or a [`ParamError`] whose text goes into
//! the `dg-error` header of a 400. Booleans are the literal strings `true`/`false`;
//! `sample_rate` is required when `encoding` is given; `endpointing` is milliseconds, `true`
//! (the default, 10 ms) or `false`; `language` is a BCP-47 tag (default `en`) that the
//! English-only models (`nova-2-phonecall` and the other domain models) refuse unless it is
//! English; parameters this stand-in does not model are ignored.
//! One extension the real service does not know: `sim_script` (repeatable, `|`-separated)
//! replaces the server's transcript script for this connection. State: none.

use thiserror::Error;

/// Highest `sample_rate` accepted (keeps a session's 20 ms frame buffer small).
const MAX_SAMPLE_RATE: u32 = 192_000;

/// Deepgram's default endpointing silence.
pub(crate) const DEFAULT_ENDPOINTING_MS: u32 = 10;

/// Audio encodings this stand-in decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioEncoding {
    /// 8-bit G.711 µ-law.
    Mulaw,
    /// 16-bit signed little-endian PCM.
    Linear16,
    /// No `encoding` given: containerised audio; the stand-in reads a WAV header.
    Container,
}

/// Encodings Deepgram accepts that this stand-in cannot decode (answered with 400).
const UNDECODED: &[&str] = &[
    "linear32", "flac", "alaw", "amr-nb", "amr-wb", "opus", "ogg-opus", "speex", "g729",
];

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenParams {
    /// Model name as sent (`nova-3` when absent).
    pub model: String,
    /// Language tag as sent (`en` when absent), e.g. `hi` or `pt-BR`.
    pub language: String,
    /// How the binary frames are encoded.
    pub encoding: AudioEncoding,
    /// Samples per second (0 for containerised audio until its header is read).
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u16,
    /// Send `is_final:false` results while speech goes on.
    pub interim_results: bool,
    /// Silence that ends an utterance with `speech_final:true`; `None` = `endpointing=false`.
    pub endpointing_ms: Option<u32>,
    /// Send `SpeechStarted`.
    pub vad_events: bool,
    /// Word gap before an `UtteranceEnd` (only honoured with interim results, as Deepgram).
    pub utterance_end_ms: Option<u32>,
    /// Keep casing and punctuation, and add `punctuated_word` (`punctuate` or `smart_format`).
    pub punctuate: bool,
    /// Per-connection transcript script (`sim_script`), replacing the server's.
    pub script: Vec<String>,
}

/// A query Deepgram would refuse; the text is the `dg-error` header.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParamError {
    /// The query string is not `application/x-www-form-urlencoded`.
    #[error("Invalid query string.")]
    Malformed,
    /// A value of the wrong type.
    #[error("Invalid value for query parameter `{name}`: {value:?}.")]
    InvalidValue {
        /// Parameter name.
        name: String,
        /// What was sent.
        value: String,
    },
    /// `encoding` without `sample_rate`.
    #[error("Query parameter `sample_rate` is required when `encoding` is specified.")]
    MissingSampleRate,
    /// An encoding Deepgram knows but this stand-in does not decode.
    #[error("Encoding {0:?} is not supported by this stand-in (it decodes mulaw and linear16).")]
    UndecodedEncoding(String),
    /// An encoding Deepgram does not know.
    #[error("Invalid value for query parameter `encoding`: {0:?}.")]
    UnknownEncoding(String),
    /// A model that does not speak the language asked for.
    #[error("No such model/language/tier combination found.")]
    NoSuchModel,
}

/// Suffixes of Deepgram's English-only domain models (`nova-2-phonecall`, `nova-3-medical`, …).
const ENGLISH_ONLY: &[&str] = &[
    "phonecall",
    "meeting",
    "finance",
    "conversationalai",
    "voicemail",
    "video",
    "medical",
    "drivethru",
    "automotive",
    "atc",
];

/// A BCP-47-shaped tag: subtags of 1-8 letters or digits, the first 2-8 letters (`multi` too).
fn is_language_tag(tag: &str) -> bool {
    let mut subtags = tag.split('-');
    let first = subtags.next().unwrap_or_default();
    (2..=8).contains(&first.len())
        && first.bytes().all(|b| b.is_ascii_alphabetic())
        && subtags
            .all(|s| (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Whether `model` can transcribe `language`: the domain models are English only.
fn model_speaks(model: &str, language: &str) -> bool {
    let english = language
        .split('-')
        .next()
        .is_some_and(|primary| primary.eq_ignore_ascii_case("en"));
    let domain = model.rsplit('-').next().unwrap_or_default();
    english || !ENGLISH_ONLY.contains(&domain)
}

impl ListenParams {
    /// Parses a raw query string (without the `?`).
    pub fn parse(query: &str) -> Result<Self, ParamError> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(query).map_err(|_| ParamError::Malformed)?;
        let get = |name: &str| {
            pairs
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let encoding = match get("encoding") {
            None => AudioEncoding::Container,
            Some("mulaw") => AudioEncoding::Mulaw,
            Some("linear16") => AudioEncoding::Linear16,
            Some(other) if UNDECODED.contains(&other) => {
                return Err(ParamError::UndecodedEncoding(other.into()));
            }
            Some(other) => return Err(ParamError::UnknownEncoding(other.into())),
        };
        let sample_rate = match (encoding, get("sample_rate")) {
            (AudioEncoding::Container, _) => 0,
            (_, None) => return Err(ParamError::MissingSampleRate),
            (_, Some(value)) => number::<u32>(value)
                .filter(|rate| (1..=MAX_SAMPLE_RATE).contains(rate))
                .ok_or_else(|| invalid("sample_rate", value))?,
        };
        let channels = match get("channels") {
            None => 1,
            Some(value) => number::<u16>(value)
                .filter(|&c| c > 0)
                .ok_or_else(|| invalid("channels", value))?,
        };
        let endpointing_ms = match get("endpointing") {
            None | Some("true") => Some(DEFAULT_ENDPOINTING_MS),
            Some("false") => None,
            Some(value) => Some(number::<u32>(value).ok_or_else(|| invalid("endpointing", value))?),
        };
        let utterance_end_ms = match get("utterance_end_ms") {
            None => None,
            Some(value) => {
                Some(number::<u32>(value).ok_or_else(|| invalid("utterance_end_ms", value))?)
            }
        };
        let model = get("model").unwrap_or("nova-3");
        let language = get("language").unwrap_or("en");
        if !is_language_tag(language) {
            return Err(invalid("language", language));
        }
        if !model_speaks(model, language) {
            return Err(ParamError::NoSuchModel);
        }
        let script = pairs
            .iter()
            .filter(|(k, _)| k == "sim_script")
            .flat_map(|(_, v)| v.split('|'))
            .map(|line| line.trim().to_owned())
            .filter(|line| !line.is_empty())
            .collect();
        Ok(Self {
            model: model.to_owned(),
            language: language.to_owned(),
            encoding,
            sample_rate,
            channels,
            interim_results: boolean(get("interim_results"), "interim_results")?,
            endpointing_ms,
            vad_events: boolean(get("vad_events"), "vad_events")?,
            utterance_end_ms,
            punctuate: boolean(get("punctuate"), "punctuate")?
                || boolean(get("smart_format"), "smart_format")?,
            script,
        })
    }
}

fn invalid(name: &str, value: &str) -> ParamError {
    ParamError::InvalidValue {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

fn number<T: std::str::FromStr>(value: &str) -> Option<T> {
    value.parse().ok()
}

fn boolean(value: Option<&str>, name: &str) -> Result<bool, ParamError> {
    match value {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(invalid(name, other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Switchboard's production query parses to what it asks for.
    #[test]
    fn production_query() {
        let params = ListenParams::parse(
            "model=nova-3&encoding=mulaw&sample_rate=8000&channels=1&interim_results=true&endpointing=300\
             &vad_events=true&utterance_end_ms=1000&smart_format=true&punctuate=true&language=en&tag=a&tag=b",
        )
        .expect("valid");
        assert_eq!(
            params,
            ListenParams {
                model: "nova-3".into(),
                language: "en".into(),
                encoding: AudioEncoding::Mulaw,
                sample_rate: 8_000,
                channels: 1,
                interim_results: true,
                endpointing_ms: Some(300),
                vad_events: true,
                utterance_end_ms: Some(1_000),
                punctuate: true,
                script: vec![],
            }
        );
    }

    /// Defaults follow Deepgram: endpointing 10 ms, booleans false, channels 1, and no
    /// sample rate needed without an encoding.
    #[test]
    fn defaults() {
        let params = ListenParams::parse("").expect("valid");
        assert_eq!(params.encoding, AudioEncoding::Container);
        assert_eq!(params.endpointing_ms, Some(10));
        assert!(!params.interim_results && !params.vad_events && !params.punctuate);
        assert_eq!(
            ListenParams::parse("endpointing=false")
                .expect("valid")
                .endpointing_ms,
            None
        );
        assert_eq!(
            ListenParams::parse("endpointing=true")
                .expect("valid")
                .endpointing_ms,
            Some(10)
        );
        let linear =
            ListenParams::parse("encoding=linear16&sample_rate=16000&channels=2").expect("valid");
        assert_eq!(
            (linear.encoding, linear.sample_rate, linear.channels),
            (AudioEncoding::Linear16, 16_000, 2)
        );
    }

    /// Everything Deepgram refuses is a ParamError with a useful message.
    #[test]
    fn refusals() {
        let cases = [
            ("encoding=mulaw", ParamError::MissingSampleRate),
            (
                "encoding=opus&sample_rate=48000",
                ParamError::UndecodedEncoding("opus".into()),
            ),
            (
                "encoding=wav&sample_rate=8000",
                ParamError::UnknownEncoding("wav".into()),
            ),
            (
                "encoding=mulaw&sample_rate=fast",
                invalid("sample_rate", "fast"),
            ),
            ("encoding=mulaw&sample_rate=0", invalid("sample_rate", "0")),
            (
                "encoding=linear16&sample_rate=4000000000",
                invalid("sample_rate", "4000000000"),
            ),
            ("interim_results=yes", invalid("interim_results", "yes")),
            ("endpointing=-5", invalid("endpointing", "-5")),
            ("utterance_end_ms=soon", invalid("utterance_end_ms", "soon")),
            ("channels=0", invalid("channels", "0")),
            ("language=", invalid("language", "")),
            ("language=hi_IN", invalid("language", "hi_IN")),
            ("language=%E0%A4%B9%E0%A4%BF", invalid("language", "हि")),
            (
                "model=nova-2-phonecall&language=hi",
                ParamError::NoSuchModel,
            ),
        ];
        for (query, expected) in cases {
            assert_eq!(ListenParams::parse(query), Err(expected), "{query}");
        }
        assert!(
            ParamError::MissingSampleRate
                .to_string()
                .contains("sample_rate")
        );
    }

    /// `language` defaults to English; any well-formed tag goes with the general models,
    /// only English with the domain ones.
    #[test]
    fn languages() {
        assert_eq!(ListenParams::parse("").expect("valid").language, "en");
        for query in [
            "model=nova-3&language=hi",
            "model=nova-2&language=hi-IN",
            "language=multi",
            "model=nova-2-phonecall&language=en-US",
            "model=nova-3-medical&language=en",
        ] {
            let params = ListenParams::parse(query).expect(query);
            assert!(query.ends_with(&params.language), "{query}");
        }
    }

    /// sim_script gives a per-connection script; `|` separates utterances.
    #[test]
    fn sim_script() {
        let params =
            ListenParams::parse("sim_script=Hello%20there.%7CBook%20a%20table&sim_script=Bye")
                .expect("valid");
        assert_eq!(params.script, vec!["Hello there.", "Book a table", "Bye"]);
    }
}
