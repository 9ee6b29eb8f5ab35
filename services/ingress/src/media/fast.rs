//! A zero-copy reader for Twilio's `media` message, the one that arrives 50 times a second
//! per call: borrowed strings, no intermediate `serde_json::Value`.
//!
//! Consumes a text frame; produces the stream sid, the timestamp and the base64 payload of
//! a well-formed `media` message, or `None` for anything else (which then goes through
//! `sb_twilio::parse_inbound`, the reference parser, for the exact verdict). It accepts
//! only what `parse_inbound` accepts: every required field present, counters as decimal
//! strings. State: none.

use serde::Deserialize;

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(borrow)]
    event: &'a str,
    #[serde(rename = "sequenceNumber", borrow)]
    sequence_number: &'a str,
    #[serde(borrow)]
    media: Body<'a>,
    #[serde(rename = "streamSid", borrow)]
    stream_sid: &'a str,
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    track: &'a str,
    #[serde(borrow)]
    chunk: &'a str,
    #[serde(borrow)]
    timestamp: &'a str,
    #[serde(borrow)]
    payload: &'a str,
}

/// A `media` message, borrowed from its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Media<'a> {
    pub(crate) stream_sid: &'a str,
    pub(crate) timestamp_ms: u64,
    /// Base64 µ-law.
    pub(crate) payload: &'a str,
}

/// The `media` message in `text`, if it is one and needs no unescaping.
pub(crate) fn media(text: &str) -> Option<Media<'_>> {
    let frame: Frame<'_> = serde_json::from_str(text).ok()?;
    if frame.event != "media" {
        return None;
    }
    frame.sequence_number.parse::<u64>().ok()?;
    frame.media.chunk.parse::<u64>().ok()?;
    let _ = frame.media.track;
    Some(Media {
        stream_sid: frame.stream_sid,
        timestamp_ms: frame.media.timestamp.parse().ok()?,
        payload: frame.media.payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sb_twilio::media::{InboundMessage, parse_inbound};

    /// On every input the fast reader either declines or agrees with `parse_inbound`.
    #[test]
    fn agrees_with_the_reference_parser() {
        let good = r#"{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"no+JhoaJjpzS"},"streamSid":"MZ1","extra":1}"#;
        let cases = [
            good,
            r#"{"event":"media","sequenceNumber":4,"media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"AA=="},"streamSid":"MZ1"}"#,
            r#"{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2","timestamp":"x","payload":"AA=="},"streamSid":"MZ1"}"#,
            r#"{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2","timestamp":"5"},"streamSid":"MZ1"}"#,
            r#"{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"a\/b="},"streamSid":"MZ1"}"#,
            r#"{"event":"mark","sequenceNumber":"4","mark":{"name":"x"},"streamSid":"MZ1"}"#,
            r#"{"event":"stop","sequenceNumber":"4","media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"AA=="},"streamSid":"MZ1","stop":{"accountSid":"AC","callSid":"CA"}}"#,
            "not json",
            "",
        ];
        for text in cases {
            let fast = media(text);
            match (fast, parse_inbound(text)) {
                (None, _) => {}
                (
                    Some(fast),
                    Ok(InboundMessage::Media {
                        media, stream_sid, ..
                    }),
                ) => {
                    assert_eq!(fast.stream_sid, stream_sid);
                    assert_eq!(fast.timestamp_ms, media.timestamp);
                    assert_eq!(fast.payload, media.payload);
                }
                (Some(fast), other) => panic!("{text}: fast {fast:?} but reference {other:?}"),
            }
        }
        let parsed = media(good).unwrap();
        assert_eq!(
            (parsed.stream_sid, parsed.timestamp_ms, parsed.payload),
            ("MZ1", 5, "no+JhoaJjpzS")
        );
    }
}
