//! Azure Speech TTS over REST (PROTOCOLS §7.1), streamed.
//!
//! Consumes a sentence and the tenant's voice; produces the audio body as it arrives,
//! piece by piece: `POST https://{region}.tts.speech.microsoft.com/cognitiveservices/v1`
//! (or the configured URL) with SSML (`<voice name>`, text XML-escaped), and the four
//! required headers: `Ocp-Apim-Subscription-Key`, `Content-Type: application/ssml+xml`,
//! `X-Microsoft-OutputFormat: raw-8khz-8bit-mono-mulaw` (headerless, streamable, what
//! Twilio plays) and `User-Agent`. Timeouts, failures and the time-to-first-byte metric
//! are [`crate::http_audio`]'s. State: the HTTP connection pool.

use futures::future::BoxFuture;
use reqwest::header::HeaderValue;
use sb_runtime::Secret;

use crate::http_audio;
use crate::provider::{AudioStream, TextToSpeech, TtsError};

/// The output format every request asks for.
pub const OUTPUT_FORMAT: &str = "raw-8khz-8bit-mono-mulaw";

pub use crate::http_audio::Timeouts;

/// The Azure TTS client.
#[derive(Clone)]
pub struct Azure {
    http: reqwest::Client,
    url: String,
    key: Secret,
    user_agent: HeaderValue,
    timeouts: Timeouts,
}

impl std::fmt::Debug for Azure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Azure")
            .field("url", &self.url)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

/// The endpoint of a region.
pub fn region_url(region: &str) -> String {
    format!("https://{region}.tts.speech.microsoft.com/cognitiveservices/v1")
}

impl Azure {
    pub fn new(
        url: String,
        key: Secret,
        user_agent: &str,
        timeouts: Timeouts,
    ) -> Result<Self, String> {
        let user_agent = HeaderValue::from_str(user_agent)
            .map_err(|_| format!("SB_TTS_USER_AGENT: {user_agent:?} is not a header value"))?;
        let http = http_audio::client(timeouts)?;
        Ok(Self {
            http,
            url,
            key,
            user_agent,
            timeouts,
        })
    }

    async fn start(&self, text: &str, voice: &str) -> Result<AudioStream, TtsError> {
        let request = self
            .http
            .post(&self.url)
            .header("Ocp-Apim-Subscription-Key", self.key.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/ssml+xml")
            .header("X-Microsoft-OutputFormat", OUTPUT_FORMAT)
            .header(reqwest::header::USER_AGENT, self.user_agent.clone())
            .body(ssml(text, voice));
        http_audio::open(request, "azure", self.timeouts).await
    }
}

impl TextToSpeech for Azure {
    fn name(&self) -> &'static str {
        "azure"
    }

    fn format(&self) -> &'static str {
        OUTPUT_FORMAT
    }

    fn synthesize<'a>(
        &'a self,
        text: &'a str,
        voice: &'a str,
    ) -> BoxFuture<'a, Result<AudioStream, TtsError>> {
        Box::pin(self.start(text, voice))
    }
}

/// The SSML body: one `<voice>` with the text; `xml:lang` from the voice's locale.
pub fn ssml(text: &str, voice: &str) -> String {
    let lang = match voice.split('-').collect::<Vec<_>>().as_slice() {
        [language, region, ..] if language.len() == 2 && region.len() == 2 => {
            format!("{language}-{region}")
        }
        _ => "en-US".to_owned(),
    };
    format!(
        r#"<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="{}"><voice name="{}">{}</voice></speak>"#,
        escape(&lang),
        escape(voice),
        escape(text)
    )
}

/// XML-escapes `& < > " '`; drops control characters XML 1.0 cannot carry.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_table() {
        for (text, escaped) in [
            ("plain", "plain"),
            ("Tom & Jerry", "Tom &amp; Jerry"),
            ("<b>\"hi\"</b>", "&lt;b&gt;&quot;hi&quot;&lt;/b&gt;"),
            ("it's", "it&apos;s"),
            ("a\u{0}b\nc", "ab c"),
            ("नमस्ते।", "नमस्ते।"),
        ] {
            assert_eq!(escape(text), escaped, "{text:?}");
        }
    }

    /// The SSML names the voice and its locale and carries the escaped text; the stand-in's
    /// parser reads back exactly the voice and text.
    #[test]
    fn ssml_round_trips_through_the_stand_in_parser() {
        let body = ssml("Fish & chips <today>?", "en-GB-SoniaNeural");
        assert!(body.contains(r#"xml:lang="en-GB""#), "{body}");
        let parsed = sb_sim::tts::ssml::Ssml::parse(&body).unwrap();
        assert_eq!(parsed.voice, "en-GB-SoniaNeural");
        assert_eq!(parsed.lang.as_deref(), Some("en-GB"));
        assert_eq!(parsed.text, "Fish & chips <today>?");
        assert!(ssml("x", "Jenny").contains(r#"xml:lang="en-US""#));
    }

    /// A Hindi voice's SSML is in Hindi (`xml:lang` from the voice's locale) and carries
    /// the Devanagari text unchanged.
    #[test]
    fn hindi_ssml() {
        let body = ssml("नमस्ते। आप कैसे हैं?", "hi-IN-SwaraNeural");
        assert!(body.contains(r#"xml:lang="hi-IN""#), "{body}");
        let parsed = sb_sim::tts::ssml::Ssml::parse(&body).unwrap();
        assert_eq!(parsed.voice, "hi-IN-SwaraNeural");
        assert_eq!(parsed.lang.as_deref(), Some("hi-IN"));
        assert_eq!(parsed.text, "नमस्ते। आप कैसे हैं?");
    }
}
