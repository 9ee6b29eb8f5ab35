//! SSML as Azure TTS receives it: the `<voice name>` and the text to speak.
//!
//! Consumes the request body; produces an [`Ssml`] (first voice name, `xml:lang`, and the
//! text with entities resolved and whitespace collapsed) or an [`SsmlError`] that becomes a
//! 400. `<break>`, `<prosody>`, `<emphasis>`, `<mstts:*>` and other markup are tolerated:
//! their text is kept, the markup dropped. State: none.

use quick_xml::Reader;
use quick_xml::events::Event;
use thiserror::Error;

/// What to say, and with which voice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ssml {
    /// `name` of the first `<voice>` element, e.g. `en-US-JennyNeural`.
    pub voice: String,
    /// `xml:lang` of `<speak>`, when given.
    pub lang: Option<String>,
    /// The text, whitespace collapsed.
    pub text: String,
}

/// Why a body is not SSML Azure would accept.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SsmlError {
    /// Not well-formed XML (or not UTF-8).
    #[error("malformed SSML: {0}")]
    Malformed(String),
    /// The root element is not `<speak>`.
    #[error("the root element must be <speak>")]
    NotSpeak,
    /// No `<voice name="…">` element.
    #[error("SSML needs a <voice name=\"...\"> element")]
    NoVoice,
}

impl Ssml {
    /// Parses an SSML document.
    pub fn parse(body: &str) -> Result<Self, SsmlError> {
        let mut reader = Reader::from_str(body);
        let mut depth = 0usize;
        let mut voice: Option<String> = None;
        let mut lang = None;
        let mut text = String::new();
        let malformed = |err: &dyn std::fmt::Display| SsmlError::Malformed(err.to_string());
        loop {
            let event = reader.read_event().map_err(|e| malformed(&e))?;
            match event {
                Event::Start(ref element) | Event::Empty(ref element) => {
                    let is_empty = matches!(event, Event::Empty(_));
                    let name = element.local_name();
                    if depth == 0 {
                        if name.as_ref() != b"speak" {
                            return Err(SsmlError::NotSpeak);
                        }
                        lang = attribute(element, b"xml:lang").map_err(|e| malformed(&e))?;
                    }
                    match name.as_ref() {
                        b"voice" if voice.is_none() => {
                            voice = attribute(element, b"name").map_err(|e| malformed(&e))?
                        }
                        b"break" => text.push(' '),
                        _ => {}
                    }
                    if !is_empty {
                        depth += 1;
                    } else if depth == 0 {
                        break; // `<speak/>`: an empty document.
                    }
                }
                Event::End(_) => {
                    depth = depth.saturating_sub(1);
                    text.push(' ');
                    if depth == 0 {
                        break;
                    }
                }
                Event::Text(content) => {
                    if depth > 0 {
                        text.push_str(&content.decode().map_err(|e| malformed(&e))?);
                    } else if !content
                        .decode()
                        .map_err(|e| malformed(&e))?
                        .trim()
                        .is_empty()
                    {
                        return Err(SsmlError::Malformed("text outside <speak>".into()));
                    }
                }
                Event::CData(content) => {
                    text.push_str(&content.decode().map_err(|e| malformed(&e))?)
                }
                Event::GeneralRef(reference) => {
                    if let Some(c) = reference.resolve_char_ref().map_err(|e| malformed(&e))? {
                        text.push(c);
                    } else {
                        let name = reference.decode().map_err(|e| malformed(&e))?;
                        let resolved = quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| {
                                SsmlError::Malformed(format!("unknown entity &{name};"))
                            })?;
                        text.push_str(resolved);
                    }
                }
                Event::Eof => {
                    return Err(SsmlError::Malformed(
                        if depth == 0 {
                            "no <speak> element"
                        } else {
                            "unclosed element"
                        }
                        .into(),
                    ));
                }
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
            }
        }
        // Anything after the root but whitespace or comments is malformed.
        loop {
            match reader.read_event().map_err(|e| malformed(&e))? {
                Event::Eof => break,
                Event::Text(t) if t.decode().map_err(|e| malformed(&e))?.trim().is_empty() => {}
                Event::Comment(_) | Event::PI(_) => {}
                _ => return Err(SsmlError::Malformed("content after </speak>".into())),
            }
        }
        let voice = voice
            .filter(|v| !v.trim().is_empty())
            .ok_or(SsmlError::NoVoice)?;
        Ok(Self {
            voice,
            lang,
            text: text.split_whitespace().collect::<Vec<_>>().join(" "),
        })
    }
}

fn attribute(
    element: &quick_xml::events::BytesStart<'_>,
    key: &[u8],
) -> Result<Option<String>, quick_xml::Error> {
    match element.try_get_attribute(key)? {
        Some(attr) => Ok(Some(attr.unescape_value()?.into_owned())),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PROTOCOLS §7.1 body parses to its voice, language and text.
    #[test]
    fn azure_body() {
        let body = r#"<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">
  <voice name="en-US-JennyNeural">Thanks for calling. How can I help you today?</voice>
</speak>"#;
        let ssml = Ssml::parse(body).expect("valid");
        assert_eq!(ssml.voice, "en-US-JennyNeural");
        assert_eq!(ssml.lang.as_deref(), Some("en-US"));
        assert_eq!(ssml.text, "Thanks for calling. How can I help you today?");
    }

    /// Entities are unescaped; break/prosody/mstts markup is tolerated and its text kept.
    #[test]
    fn entities_and_markup() {
        let body = r#"<?xml version="1.0"?><speak version="1.0" xmlns:mstts="http://www.w3.org/2001/mstts">
<voice name="en-GB-RyanNeural"><mstts:express-as style="cheerful"><prosody rate="+10%">Fish &amp; chips
&lt;3</prosody><break time="300ms"/>for &#163;5 &quot;today&quot;</mstts:express-as><mstts:silence type="Tailing" value="50ms"/></voice></speak>"#;
        let ssml = Ssml::parse(body).expect("valid");
        assert_eq!(ssml.voice, "en-GB-RyanNeural");
        assert_eq!(ssml.text, "Fish & chips <3 for £5 \"today\"");
    }

    /// Malformed XML, a wrong root, a missing voice, unknown entities and trailing junk are
    /// errors (→ 400), never panics.
    #[test]
    fn bad_bodies() {
        type Check = fn(&SsmlError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("<speak><voice name='a'>hi</speak>", |e| {
                matches!(e, SsmlError::Malformed(_))
            }),
            ("<speak><voice name='a'>hi", |e| {
                matches!(e, SsmlError::Malformed(_))
            }),
            ("just text", |e| matches!(e, SsmlError::Malformed(_))),
            ("", |e| matches!(e, SsmlError::Malformed(_))),
            ("<html><voice name='a'>hi</voice></html>", |e| {
                *e == SsmlError::NotSpeak
            }),
            ("<speak>hi</speak>", |e| *e == SsmlError::NoVoice),
            ("<speak><voice>hi</voice></speak>", |e| {
                *e == SsmlError::NoVoice
            }),
            ("<speak><voice name='a'>&bogus;</voice></speak>", |e| {
                matches!(e, SsmlError::Malformed(_))
            }),
            ("<speak><voice name='a'>hi</voice></speak><x/>", |e| {
                matches!(e, SsmlError::Malformed(_))
            }),
        ];
        for (body, check) in cases {
            let err = Ssml::parse(body).expect_err(body);
            assert!(check(&err), "{body}: {err:?}");
        }
    }
}
