//! TwiML: building the `<Connect><Stream>` answer and the polite rejection, and parsing a
//! TwiML response back into verbs (the scripted caller does what Twilio would).
//!
//! Consumes stream URLs and parameters (build) or an XML document (parse); produces XML
//! text or a [`Response`]. Stateless. PROTOCOLS §1.2.

use quick_xml::Decoder;
use quick_xml::escape::escape;
use quick_xml::events::{BytesStart, Event};

/// Twilio's limit on one `<Parameter>`: `name` and `value` together under 500 characters.
pub const MAX_PARAMETER_CHARS: usize = 500;

/// Why a TwiML document could not be built or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwimlError {
    /// Media Streams only connect to `wss://` URLs (Twilio error 31922).
    #[error("stream url must be wss://, got {0:?}")]
    NotWss(String),
    /// `<Stream url>` cannot carry a query string; use `<Parameter>`s.
    #[error("stream url must not carry a query string: {0:?}")]
    QueryString(String),
    /// One parameter's name plus value reached 500 characters.
    #[error("parameter {0:?}: name and value must be under 500 characters together")]
    ParameterTooLong(String),
    /// Not well-formed XML, or not a `<Response>` document.
    #[error("malformed TwiML: {0}")]
    Malformed(String),
    /// The document has no `<Connect><Stream>`.
    #[error("TwiML has no <Connect><Stream>")]
    NoConnectStream,
}

impl TwimlError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotWss(_) => "not_wss",
            Self::QueryString(_) => "query_string",
            Self::ParameterTooLong(_) => "parameter_too_long",
            Self::Malformed(_) => "malformed",
            Self::NoConnectStream => "no_connect_stream",
        }
    }
}

/// A bidirectional Media Stream: `<Connect><Stream url statusCallback?><Parameter…/>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectStream {
    /// `wss://host/path`, no query string.
    pub url: String,
    /// Absolute URL for stream-started/stopped/error callbacks.
    pub status_callback: Option<String>,
    /// `<Connect action>`: where Twilio asks what to do next once the stream ends without
    /// the call ending (the socket closed or dropped); without it the call hangs up.
    pub action: Option<String>,
    /// `(name, value)` pairs, delivered in `start.customParameters`.
    pub parameters: Vec<(String, String)>,
}

impl ConnectStream {
    /// A stream to `url` without parameters.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Adds a `<Parameter>`.
    pub fn parameter(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.parameters.push((name.into(), value.into()));
        self
    }

    /// The TwiML document, after checking Twilio's rules (wss, no query, parameter size).
    pub fn to_twiml(&self) -> Result<String, TwimlError> {
        if !self.url.starts_with("wss://") {
            return Err(TwimlError::NotWss(self.url.clone()));
        }
        if self.url.contains('?') {
            return Err(TwimlError::QueryString(self.url.clone()));
        }
        let mut xml = String::from(r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect"#);
        if let Some(action) = &self.action {
            xml.push_str(&format!(r#" action="{}""#, escape(action.as_str())));
        }
        xml.push('>');
        xml.push_str(&format!(r#"<Stream url="{}""#, escape(self.url.as_str())));
        if let Some(callback) = &self.status_callback {
            xml.push_str(&format!(
                r#" statusCallback="{}""#,
                escape(callback.as_str())
            ));
        }
        xml.push('>');
        for (name, value) in &self.parameters {
            if name.chars().count() + value.chars().count() >= MAX_PARAMETER_CHARS {
                return Err(TwimlError::ParameterTooLong(name.clone()));
            }
            xml.push_str(&format!(
                r#"<Parameter name="{}" value="{}"/>"#,
                escape(name.as_str()),
                escape(value.as_str())
            ));
        }
        xml.push_str("</Stream></Connect></Response>");
        Ok(xml)
    }
}

/// A polite rejection: `<Say>text</Say><Hangup/>`.
pub fn say_and_hang_up(text: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say>{}</Say><Hangup/></Response>"#,
        escape(text)
    )
}

/// One top-level verb of a `<Response>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    /// `<Connect><Stream>`.
    ConnectStream(ConnectStream),
    /// `<Say>` with its text.
    Say(String),
    /// `<Hangup/>`.
    Hangup,
    /// Any other verb, by element name (`Play`, `Gather`, `Start`, …).
    Other(String),
}

/// A parsed TwiML `<Response>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    pub verbs: Vec<Verb>,
}

impl Response {
    /// The first `<Connect><Stream>`, if any.
    pub fn connect_stream(&self) -> Result<&ConnectStream, TwimlError> {
        self.verbs
            .iter()
            .find_map(|verb| match verb {
                Verb::ConnectStream(stream) => Some(stream),
                _ => None,
            })
            .ok_or(TwimlError::NoConnectStream)
    }

    /// Everything said by `<Say>` verbs, joined by spaces.
    pub fn said(&self) -> String {
        let said: Vec<&str> = self
            .verbs
            .iter()
            .filter_map(|verb| match verb {
                Verb::Say(text) => Some(text.as_str()),
                _ => None,
            })
            .collect();
        said.join(" ")
    }
}

/// Parses a TwiML document into its top-level verbs. Never panics on bad input.
pub fn parse(xml: &str) -> Result<Response, TwimlError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut response = Response::default();
    let mut action = None;
    let mut seen_root = false;
    loop {
        match reader.read_event().map_err(malformed)? {
            Event::Start(element) => {
                let name = open(
                    &mut response,
                    &mut action,
                    &path,
                    &element,
                    reader.decoder(),
                )?;
                seen_root = true;
                path.push(name);
            }
            Event::Empty(element) => {
                open(
                    &mut response,
                    &mut action,
                    &path,
                    &element,
                    reader.decoder(),
                )?;
                seen_root = true;
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Text(text) => {
                append_text(&mut response, &path, &text.decode().map_err(malformed)?)
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref().map_err(malformed)? {
                    Some(ch) => ch.to_string(),
                    None => {
                        let name = reference.decode().map_err(malformed)?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| {
                                TwimlError::Malformed(format!("unknown entity &{name};"))
                            })?
                            .to_owned()
                    }
                };
                append_text(&mut response, &path, &resolved);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !seen_root {
        return Err(TwimlError::Malformed("no <Response> element".to_owned()));
    }
    if let Some(open) = path.last() {
        return Err(TwimlError::Malformed(format!("<{open}> is never closed")));
    }
    for verb in &mut response.verbs {
        if let Verb::Say(text) = verb {
            *text = text.trim().to_owned();
        }
    }
    Ok(response)
}

fn malformed(error: impl std::fmt::Display) -> TwimlError {
    TwimlError::Malformed(error.to_string())
}

/// Handles an opening (or self-closing) element at `path`; returns its name.
fn open(
    response: &mut Response,
    action: &mut Option<String>,
    path: &[String],
    element: &BytesStart<'_>,
    decoder: Decoder,
) -> Result<String, TwimlError> {
    let name = String::from_utf8_lossy(element.name().as_ref()).into_owned();
    let depth: Vec<&str> = path.iter().map(String::as_str).collect();
    match (depth.as_slice(), name.as_str()) {
        ([], "Response") => {}
        ([], other) => {
            return Err(TwimlError::Malformed(format!(
                "root element is <{other}>, not <Response>"
            )));
        }
        (["Response"], "Say") => response.verbs.push(Verb::Say(String::new())),
        (["Response"], "Hangup") => response.verbs.push(Verb::Hangup),
        (["Response"], "Connect") => {
            *action = attribute(element, "action", decoder)?;
            response.verbs.push(Verb::Other(name.clone()));
        }
        (["Response"], other) => response.verbs.push(Verb::Other(other.to_owned())),
        (["Response", "Connect"], "Stream") => {
            let url = attribute(element, "url", decoder)?
                .ok_or_else(|| TwimlError::Malformed("<Stream> without url".to_owned()))?;
            let status_callback = attribute(element, "statusCallback", decoder)?;
            if let Some(last) = response.verbs.last_mut() {
                *last = Verb::ConnectStream(ConnectStream {
                    url,
                    status_callback,
                    action: action.take(),
                    parameters: Vec::new(),
                });
            }
        }
        (["Response", "Connect", "Stream"], "Parameter") => {
            let name = attribute(element, "name", decoder)?.unwrap_or_default();
            let value = attribute(element, "value", decoder)?.unwrap_or_default();
            if let Some(Verb::ConnectStream(stream)) = response.verbs.last_mut() {
                stream.parameters.push((name, value));
            }
        }
        _ => {}
    }
    Ok(name)
}

fn attribute(
    element: &BytesStart<'_>,
    key: &str,
    decoder: Decoder,
) -> Result<Option<String>, TwimlError> {
    for attribute in element.attributes() {
        let attribute = attribute.map_err(malformed)?;
        if attribute.key.as_ref() == key.as_bytes() {
            let value = attribute
                .decode_and_unescape_value(decoder)
                .map_err(malformed)?;
            return Ok(Some(value.into_owned()));
        }
    }
    Ok(None)
}

fn append_text(response: &mut Response, path: &[String], text: &str) {
    if path.len() == 2
        && path[1] == "Say"
        && let Some(Verb::Say(said)) = response.verbs.last_mut()
    {
        said.push_str(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `<Connect action>` is written and read back; a stream without one has none.
    #[test]
    fn connect_action_roundtrip() {
        let mut stream = ConnectStream::new("wss://h/m").parameter("a", "b");
        stream.action = Some("https://h/twilio/stream-ended?tenant=acme&x=1".to_owned());
        let xml = stream.to_twiml().unwrap();
        assert!(
            xml.contains(r#"<Connect action="https://h/twilio/stream-ended?tenant=acme&amp;x=1">"#),
            "{xml}"
        );
        assert_eq!(parse(&xml).unwrap().connect_stream().unwrap(), &stream);
        let plain =
            parse(r#"<Response><Connect><Stream url="wss://h/m"/></Connect></Response>"#).unwrap();
        assert_eq!(plain.connect_stream().unwrap().action, None);
    }

    /// The built document parses back to the same stream, with escaping intact.
    #[test]
    fn build_and_parse_roundtrip() {
        let stream = ConnectStream::new("wss://agent.example.com/twilio/media")
            .parameter("tenant", "acme")
            .parameter("callerE164", "+14155551234")
            .parameter("quote", r#"a "b" <c> & 'd'"#);
        let xml = stream.to_twiml().unwrap();
        assert!(
            xml.contains(r#"<Stream url="wss://agent.example.com/twilio/media">"#),
            "{xml}"
        );
        assert!(xml.contains("&quot;b&quot; &lt;c&gt; &amp;"), "{xml}");
        let parsed = parse(&xml).unwrap();
        assert_eq!(parsed.connect_stream().unwrap(), &stream);
    }

    /// The documented example (indented, with a statusCallback) parses.
    #[test]
    fn parses_documented_example() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <Connect>
    <Stream url="wss://agent.example.com/twilio/media" statusCallback="https://agent.example.com/twilio/stream-status">
      <Parameter name="tenant" value="acme"/>
      <Parameter name="callerE164" value="+14155551234"/>
    </Stream>
  </Connect>
</Response>"#;
        let stream = parse(xml).unwrap().connect_stream().unwrap().clone();
        assert_eq!(stream.url, "wss://agent.example.com/twilio/media");
        assert_eq!(
            stream.status_callback.as_deref(),
            Some("https://agent.example.com/twilio/stream-status")
        );
        assert_eq!(
            stream.parameters[1],
            ("callerE164".to_owned(), "+14155551234".to_owned())
        );
        let bare =
            parse(r#"<Response><Connect><Stream url="wss://h/m"/></Connect></Response>"#).unwrap();
        assert_eq!(bare.connect_stream().unwrap().url, "wss://h/m");
    }

    /// Twilio's rules are enforced when building.
    #[test]
    fn build_rejects_what_twilio_rejects() {
        let long = "x".repeat(496);
        let cases = [
            (ConnectStream::new("ws://h/media"), "not_wss"),
            (ConnectStream::new("https://h/media"), "not_wss"),
            (
                ConnectStream::new("wss://h/media?tenant=acme"),
                "query_string",
            ),
            (
                ConnectStream::new("wss://h/media").parameter("name", long.clone()),
                "parameter_too_long",
            ),
        ];
        for (stream, kind) in cases {
            assert_eq!(stream.to_twiml().unwrap_err().kind(), kind);
        }
        assert!(
            ConnectStream::new("wss://h/m")
                .parameter("nam", long)
                .to_twiml()
                .is_ok()
        );
    }

    /// The rejection says its text (escaped) and hangs up; it has no stream.
    #[test]
    fn rejection() {
        let xml = say_and_hang_up("Sorry & goodbye <3");
        let parsed = parse(&xml).unwrap();
        assert_eq!(
            parsed.verbs,
            vec![Verb::Say("Sorry & goodbye <3".to_owned()), Verb::Hangup]
        );
        assert_eq!(parsed.said(), "Sorry & goodbye <3");
        assert_eq!(
            parsed.connect_stream().unwrap_err(),
            TwimlError::NoConnectStream
        );
    }

    /// Bad documents are errors, not panics.
    #[test]
    fn bad_documents() {
        for xml in [
            "",
            "not xml",
            "<Html/>",
            "<Response><Connect><Stream/></Connect></Response>",
            "<Response><Say>&bogus;</Say></Response>",
            "<Response></Oops>",
        ] {
            assert_eq!(
                parse(xml).map(|_| ()).unwrap_err().kind(),
                "malformed",
                "{xml}"
            );
        }
        let start =
            parse(r#"<Response><Start><Stream url="wss://h/m"/></Start></Response>"#).unwrap();
        assert_eq!(start.verbs, vec![Verb::Other("Start".to_owned())]);
    }
}
