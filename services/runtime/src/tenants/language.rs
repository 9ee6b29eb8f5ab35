//! A tenant's language (`[tenant.language]`): what the STT listens for and where the
//! agent's sentences end. The other per-language texts (greeting, fallback phrase,
//! backchannel words, silence prompts, goodbye) are the tenant's own fields, written in its
//! language; the voice picks the speech's language.
//!
//! Consumes the raw TOML table; produces a validated [`Language`] (English and the
//! deployment's STT model for a tenant that sets nothing; the sentence ends derived from
//! the language unless listed). Errors name the field. No I/O, no state.

use serde::Deserialize;

/// `[tenant.language]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLanguage {
    #[serde(default)]
    stt_language: Option<String>,
    #[serde(default)]
    stt_model: Option<String>,
    #[serde(default)]
    sentence_ends: Option<Vec<String>>,
}

/// The language a tenant's calls are held in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Language {
    /// BCP-47 tag the STT transcribes (`en`, `hi`, `pt-BR`; Deepgram's `language`).
    pub stt_language: String,
    /// The STT model for this tenant (`None`: the deployment's, `SB_DEEPGRAM_MODEL`):
    /// some models speak only some languages (`nova-2-phonecall` is English only).
    pub stt_model: Option<String>,
    /// Characters that end a sentence besides the splitter's own (`. ? ! …` and the
    /// scripts' full stops it knows): a boundary wherever they appear.
    pub sentence_ends: Vec<char>,
}

impl Default for Language {
    fn default() -> Self {
        Self {
            stt_language: DEFAULT_STT_LANGUAGE.to_owned(),
            stt_model: None,
            sentence_ends: Vec::new(),
        }
    }
}

impl Language {
    /// The primary language subtag, lower case (`hi` for `hi-IN`).
    pub fn primary(&self) -> String {
        primary(&self.stt_language)
    }
}

/// What the STT listens for unless a tenant says otherwise.
pub const DEFAULT_STT_LANGUAGE: &str = "en";

fn primary(tag: &str) -> String {
    tag.split('-').next().unwrap_or(tag).to_ascii_lowercase()
}

/// The sentence ends a language gets when the tenant lists none: the danda and double
/// danda of the scripts that use them (Devanagari, Bengali, Gurmukhi, Odia), Armenian's,
/// Ethiopic's and Burmese's full stops, Urdu's.
pub fn default_sentence_ends(tag: &str) -> Vec<char> {
    match primary(tag).as_str() {
        "hi" | "mr" | "ne" | "sa" | "bn" | "as" | "pa" | "or" => vec!['।', '॥'],
        "hy" => vec!['։'],
        "am" | "ti" => vec!['።'],
        "my" => vec!['။'],
        "ur" => vec!['۔'],
        _ => Vec::new(),
    }
}

/// A BCP-47-shaped tag: subtags of 1-8 letters or digits joined by hyphens, the first
/// 2-8 letters (`en`, `hi-IN`, `zh-Hans`, `es-419`, Deepgram's `multi`).
fn is_language_tag(tag: &str) -> bool {
    let mut subtags = tag.split('-');
    let first_ok = subtags
        .next()
        .is_some_and(|s| (2..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphabetic()));
    first_ok
        && subtags
            .all(|s| (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// A model name: letters, digits, `-`, `_` and `.`, at most 64 (`nova-3`, `nova-2-phonecall`).
fn is_model_name(model: &str) -> bool {
    (1..=64).contains(&model.len())
        && model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Checks the table; `field(name, why)` names the tenant and field.
pub(super) fn validate(
    raw: Option<RawLanguage>,
    field: &dyn Fn(&str, String) -> String,
) -> Result<Language, String> {
    let raw = raw.unwrap_or_default();
    let stt_language = raw
        .stt_language
        .unwrap_or_else(|| DEFAULT_STT_LANGUAGE.to_owned());
    if !is_language_tag(&stt_language) {
        return Err(field(
            "language.stt_language",
            format!("{stt_language:?} is not a language tag (e.g. \"en\", \"hi\", \"pt-BR\")"),
        ));
    }
    if let Some(model) = &raw.stt_model
        && !is_model_name(model)
    {
        return Err(field(
            "language.stt_model",
            format!("{model:?} is not a model name (letters, digits, `-`, `_`, `.`)"),
        ));
    }
    let sentence_ends = match raw.sentence_ends {
        None => default_sentence_ends(&stt_language),
        Some(ends) => {
            let mut chars = Vec::with_capacity(ends.len());
            for (i, end) in ends.iter().enumerate() {
                let mut it = end.chars();
                let c = match (it.next(), it.next()) {
                    (Some(c), None) if is_sentence_end(c) => c,
                    _ => {
                        return Err(field(
                            &format!("language.sentence_ends[{i}]"),
                            format!(
                                "{end:?} must be one character that is not a letter, digit, \
                                 space or ASCII (`. ? !` are built in)"
                            ),
                        ));
                    }
                };
                if !chars.contains(&c) {
                    chars.push(c);
                }
            }
            chars
        }
    };
    Ok(Language {
        stt_language,
        stt_model: raw.stt_model,
        sentence_ends,
    })
}

/// One character that may end a sentence wherever it appears. ASCII punctuation is left
/// to the splitter's own rules: `.` `:` `;` also sit inside times, numbers and URLs.
fn is_sentence_end(c: char) -> bool {
    !c.is_alphanumeric() && !c.is_whitespace() && !c.is_control() && !c.is_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml: &str) -> Result<Language, String> {
        let raw: RawLanguage = toml::from_str(toml).map_err(|e| e.to_string())?;
        validate(Some(raw), &|name, why| format!("{name}: {why}"))
    }

    /// Nothing set: English, the deployment's model, no extra ends.
    #[test]
    fn defaults() {
        let none = validate(None, &|n, w| format!("{n}: {w}")).unwrap();
        assert_eq!(none, Language::default());
        assert_eq!(none.stt_language, "en");
        assert_eq!(check("").unwrap(), Language::default());
    }

    /// Hindi gets the danda and double danda unless the tenant lists its own ends; the
    /// region does not matter; a listed end is kept once.
    #[test]
    fn sentence_ends_follow_the_language() {
        let hindi = check("stt_language = \"hi\"").unwrap();
        assert_eq!(hindi.sentence_ends, ['।', '॥']);
        assert_eq!(hindi.primary(), "hi");
        let region = check("stt_language = \"hi-IN\"\nstt_model = \"nova-2\"").unwrap();
        assert_eq!(region.sentence_ends, ['।', '॥']);
        assert_eq!(region.stt_model.as_deref(), Some("nova-2"));
        assert_eq!(region.primary(), "hi");
        let own = check("stt_language = \"hi\"\nsentence_ends = [\"॥\", \"॥\"]").unwrap();
        assert_eq!(own.sentence_ends, ['॥']);
        let none = check("stt_language = \"hi\"\nsentence_ends = []").unwrap();
        assert!(none.sentence_ends.is_empty());
        assert!(
            check("stt_language = \"pt-BR\"")
                .unwrap()
                .sentence_ends
                .is_empty()
        );
        assert_eq!(default_sentence_ends("hy"), ['։']);
    }

    /// Tags and models are checked for shape; each bad field is named.
    #[test]
    fn each_bad_field_is_named() {
        for tag in ["en", "hi", "hi-IN", "zh-Hans", "es-419", "multi", "nl-BE"] {
            assert!(is_language_tag(tag), "{tag}");
        }
        for (toml, named) in [
            ("stt_language = \"\"", "language.stt_language"),
            ("stt_language = \"h\"", "language.stt_language"),
            ("stt_language = \"hi_IN\"", "language.stt_language"),
            ("stt_language = \"hi-\"", "language.stt_language"),
            ("stt_language = \"हिन्दी\"", "language.stt_language"),
            ("stt_language = \"1a\"", "language.stt_language"),
            ("stt_model = \"\"", "language.stt_model"),
            ("stt_model = \"nova 3\"", "language.stt_model"),
            ("sentence_ends = [\"\"]", "language.sentence_ends[0]"),
            ("sentence_ends = [\"।।\"]", "language.sentence_ends[0]"),
            (
                "sentence_ends = [\"।\", \"a\"]",
                "language.sentence_ends[1]",
            ),
            ("sentence_ends = [\".\"]", "language.sentence_ends[0]"),
            (
                "sentence_ends = [\"\u{3000}\"]",
                "language.sentence_ends[0]",
            ),
            ("sentence_ends = [\"५\"]", "language.sentence_ends[0]"),
        ] {
            let error = check(toml).unwrap_err();
            assert!(
                error.starts_with(named),
                "{toml}: {error} should name {named}"
            );
        }
        assert!(
            check("stt_languages = \"hi\"").is_err(),
            "unknown fields refused"
        );
    }

    /// The shipped file's Hindi tenant listens for Hindi, ends sentences at the danda and
    /// speaks with a Hindi voice; the others stay English.
    #[test]
    fn the_shipped_hindi_tenant() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/base/tenants.toml");
        let tenants = crate::Tenants::load(&path).unwrap();
        let kirana = tenants.by_number("+15005550091").unwrap();
        assert_eq!(kirana.language.primary(), "hi");
        assert_eq!(kirana.language.sentence_ends, ['।', '॥']);
        assert!(kirana.voice.starts_with("hi-IN-"), "{}", kirana.voice);
        let acme = tenants.by_number("+15005550006").unwrap();
        assert_eq!(acme.language, Language::default());
    }

    /// Through the whole file: a Hindi tenant and an English one side by side; an error
    /// names the tenant and the field.
    #[test]
    fn per_tenant_in_the_file() {
        use crate::tenants::testing::TenantToml;
        let mut hindi = toml::Table::new();
        hindi.insert("stt_language".into(), "hi".into());
        let file = TenantToml::new()
            .tier("standard", 4, 60)
            .tenant("bharat", "+15005550091", "standard")
            .set("language", hindi)
            .tenant("acme", "+15005550006", "standard");
        let tenants = file.parse().unwrap();
        let bharat = tenants.by_number("+15005550091").unwrap();
        assert_eq!(bharat.language.stt_language, "hi");
        assert_eq!(bharat.language.sentence_ends, ['।', '॥']);
        let acme = tenants.by_number("+15005550006").unwrap();
        assert_eq!(acme.language, Language::default());
        let mut bad = toml::Table::new();
        bad.insert("stt_language".into(), "hindi language".into());
        let error = file
            .tenant_set("acme", "language", bad)
            .parse()
            .unwrap_err();
        assert!(
            error.starts_with("tenant \"acme\": field `language.stt_language`"),
            "{error}"
        );
    }
}
