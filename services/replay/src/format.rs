//! The `.sbcall` file: one call, every event of it, as `replay export` writes it and
//! `replay import` reads it. Consumes and produces bytes; no I/O. State: none.
//!
//! Layout (integers big-endian), version 1:
//!
//! ```text
//! magic            8 bytes  AB 53 42 43 41 4C 4C 0A  ("\xabSBCALL\n")
//! format version   u16      1
//! header length    u32      then the header: JSON {switchboard_version, call_sid, tenant,
//!                           events, calls_events, audio_events, exported_at (µs)}
//! events           header.events records, each:
//!                    stream   u8   0 = CALLS, 1 = AUDIO
//!                    subject  u16 length + UTF-8 (the original subject, no prefix)
//!                    msg id   u16 length + UTF-8 (its Nats-Msg-Id; length 0: none)
//!                    payload  u32 length + the stored MessagePack bytes, untouched
//! checksum         32 bytes SHA-256 of every byte before it
//! ```
//!
//! Uncompressed: µ-law audio barely compresses, and a 10-minute call (~30 000 messages,
//! ~15 MB) is still one file. [`Export::parse`] checks everything (magic, version,
//! checksum, structure, counts, and that every event decodes and belongs to the call)
//! and says what is wrong: not an export, a newer version, truncated, or corrupted.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use sb_schemas::{
    CallSid, Envelope, TenantId, decode,
    subject::{self, AUDIO_STREAM, CALLS_STREAM},
};

/// The first bytes of every export (a non-ASCII first byte: no text file starts so).
pub const MAGIC: [u8; 8] = *b"\xabSBCALL\n";
/// The layout version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
const CHECKSUM_LEN: usize = 32;

/// What the file says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The workspace version of the `replay` that wrote it.
    pub switchboard_version: String,
    pub call_sid: CallSid,
    pub tenant: TenantId,
    pub events: u64,
    pub calls_events: u64,
    pub audio_events: u64,
    /// When it was written, µs since the Unix epoch.
    pub exported_at: u64,
}

/// One stored event, as it was published.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// `CALLS` or `AUDIO`.
    pub stream: &'static str,
    /// The subject it was published on (no prefix).
    pub subject: String,
    pub msg_id: Option<String>,
    /// The stored MessagePack bytes.
    pub payload: Bytes,
    /// `payload`, decoded.
    pub event: Envelope,
}

/// A whole export.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub header: Header,
    pub records: Vec<Record>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not a Switchboard call export: it does not start with the .sbcall magic bytes")]
    NotAnExport,
    #[error(
        "unsupported export format version {found}: this replay reads version {FORMAT_VERSION}"
    )]
    UnsupportedVersion { found: u16 },
    #[error("truncated: the file ends {within} ({len} bytes)")]
    Truncated { within: String, len: usize },
    #[error("corrupted: {0} bytes follow the checksum")]
    TrailingBytes(usize),
    #[error("corrupted: the SHA-256 checksum does not match the content")]
    Checksum,
    #[error("invalid header: {0}")]
    Header(String),
    #[error("the header announces {announced} {what} but the file holds {found}")]
    Count {
        what: &'static str,
        announced: u64,
        found: u64,
    },
    #[error("event {index}: {reason}")]
    Event { index: usize, reason: String },
}

impl Export {
    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&self.header).expect("the header is plain JSON");
        let size: usize = self
            .records
            .iter()
            .map(|r| 9 + r.subject.len() + r.msg_id.as_ref().map_or(0, String::len))
            .sum::<usize>()
            + self.records.iter().map(|r| r.payload.len()).sum::<usize>();
        let mut out = Vec::with_capacity(14 + header.len() + size + CHECKSUM_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&(header.len() as u32).to_be_bytes());
        out.extend_from_slice(&header);
        for r in &self.records {
            out.push(u8::from(r.stream == AUDIO_STREAM));
            let msg_id = r.msg_id.as_deref().unwrap_or_default();
            for field in [r.subject.as_bytes(), msg_id.as_bytes()] {
                out.extend_from_slice(&(field.len() as u16).to_be_bytes());
                out.extend_from_slice(field);
            }
            out.extend_from_slice(&(r.payload.len() as u32).to_be_bytes());
            out.extend_from_slice(&r.payload);
        }
        let checksum = Sha256::digest(&out);
        out.extend_from_slice(&checksum);
        out
    }

    /// Reads and checks a whole file; nothing is trusted before the checksum matches.
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        let len = bytes.len();
        if len < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
            return match len < MAGIC.len() && MAGIC.starts_with(bytes) && len > 0 {
                true => Err(truncated("inside the magic bytes", len)),
                false => Err(FormatError::NotAnExport),
            };
        }
        let version = bytes
            .get(8..10)
            .ok_or_else(|| truncated("inside the format version", len))?;
        let found = u16::from_be_bytes([version[0], version[1]]);
        if found != FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion { found });
        }
        let structure = structure(bytes);
        let intact = len >= 10 + CHECKSUM_LEN && {
            let (content, checksum) = bytes.split_at(len - CHECKSUM_LEN);
            Sha256::digest(content).as_slice() == checksum
        };
        if !intact {
            return Err(match structure {
                Err(e @ FormatError::Truncated { .. }) => e,
                Ok((_, _, end)) if end + CHECKSUM_LEN > len => {
                    truncated("inside the checksum", len)
                }
                Ok((_, _, end)) if end + CHECKSUM_LEN < len => {
                    FormatError::TrailingBytes(len - end - CHECKSUM_LEN)
                }
                _ => FormatError::Checksum,
            });
        }
        let (header, raw, _) = structure?;
        let records = raw
            .into_iter()
            .enumerate()
            .map(|(index, r)| check(&header, index, r))
            .collect::<Result<Vec<_>, _>>()?;
        let audio = records.iter().filter(|r| r.stream == AUDIO_STREAM).count() as u64;
        let total = records.len() as u64;
        for (what, announced, found) in [
            ("events", header.events, total),
            ("CALLS events", header.calls_events, total - audio),
            ("AUDIO events", header.audio_events, audio),
        ] {
            if announced != found {
                return Err(FormatError::Count {
                    what,
                    announced,
                    found,
                });
            }
        }
        if total == 0 {
            return Err(FormatError::Header("the export holds no events".into()));
        }
        Ok(Self { header, records })
    }
}

/// A record as read, before any check: (stream tag, subject, msg id, payload).
type RawRecord<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

/// The header and the records, and where the last record ends.
fn structure(bytes: &[u8]) -> Result<(Header, Vec<RawRecord<'_>>, usize), FormatError> {
    let mut r = Reader { bytes, at: 10 };
    let header_len = r.u32("inside the header length")? as usize;
    let header = r.take(header_len, "inside the header")?;
    let header: Header =
        serde_json::from_slice(header).map_err(|e| FormatError::Header(e.to_string()))?;
    // Never trust a count for an allocation: each record takes at least 9 bytes.
    let mut records = Vec::with_capacity((header.events as usize).min(bytes.len() / 9));
    for i in 0..header.events {
        let within = format!("inside event {} of {}", i + 1, header.events);
        let tag = r.take(1, &within)?[0];
        let subject_len = r.u16(&within)? as usize;
        let subject = r.take(subject_len, &within)?;
        let id_len = r.u16(&within)? as usize;
        let msg_id = r.take(id_len, &within)?;
        let payload_len = r.u32(&within)? as usize;
        let payload = r.take(payload_len, &within)?;
        records.push((tag, subject, msg_id, payload));
    }
    Ok((header, records, r.at))
}

/// Checks one record against the header and decodes it.
fn check(header: &Header, index: usize, raw: RawRecord<'_>) -> Result<Record, FormatError> {
    let bad = |reason: String| FormatError::Event { index, reason };
    let (tag, subject, msg_id, payload) = raw;
    let stream = match tag {
        0 => CALLS_STREAM,
        1 => AUDIO_STREAM,
        other => return Err(bad(format!("unknown stream tag {other}"))),
    };
    let subject = std::str::from_utf8(subject).map_err(|_| bad("subject is not UTF-8".into()))?;
    let msg_id = std::str::from_utf8(msg_id).map_err(|_| bad("Nats-Msg-Id is not UTF-8".into()))?;
    let (tenant, call_sid, kind) = match subject::parse(subject) {
        Ok(subject::Parsed::Event {
            tenant,
            call_sid,
            kind,
        }) => (tenant, call_sid, kind),
        _ => return Err(bad(format!("{subject:?} is not an event subject"))),
    };
    if kind.is_audio() != (stream == AUDIO_STREAM) {
        return Err(bad(format!("{subject} does not belong in {stream}")));
    }
    if call_sid != header.call_sid || tenant != header.tenant {
        return Err(bad(format!(
            "{subject} is not call {} of {}",
            header.call_sid, header.tenant
        )));
    }
    let event = decode(payload).map_err(|e| bad(format!("does not decode: {e}")))?;
    if event.call_sid != call_sid || event.tenant != tenant || event.kind() != kind {
        return Err(bad(format!(
            "the event ({} {} of {}) does not match its subject {subject}",
            event.kind().as_str(),
            event.call_sid,
            event.tenant
        )));
    }
    Ok(Record {
        stream,
        subject: subject.to_owned(),
        msg_id: (!msg_id.is_empty()).then(|| msg_id.to_owned()),
        payload: Bytes::copy_from_slice(payload),
        event,
    })
}

fn truncated(within: &str, len: usize) -> FormatError {
    FormatError::Truncated {
        within: within.to_owned(),
        len,
    }
}

/// A cursor that reports running out of bytes as truncation.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, within: &str) -> Result<&'a [u8], FormatError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| truncated(within, self.bytes.len()))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u16(&mut self, within: &str) -> Result<u16, FormatError> {
        let b = self.take(2, within)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, within: &str) -> Result<u32, FormatError> {
        let b = self.take(4, within)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sb_schemas::{Audio, Body, Dtmf, End, EndReason, Mulaw, encode, subject::for_envelope};

    fn record(body: Body) -> Record {
        let event = Envelope::new(
            TenantId::parse("acme").unwrap(),
            CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap(),
            1,
            body,
        );
        let audio = event.kind().is_audio();
        Record {
            stream: if audio { AUDIO_STREAM } else { CALLS_STREAM },
            subject: for_envelope(&event),
            msg_id: (!audio).then(|| event.id.to_string()),
            payload: encode(&event).into(),
            event,
        }
    }

    fn sample() -> Export {
        let records = vec![
            record(Body::Dtmf(Dtmf { digit: "5".into() })),
            record(Body::Audio(Audio {
                seq: 0,
                timestamp_ms: 0,
                payload: Mulaw(Bytes::from_static(&[0xff; 160])),
            })),
            record(Body::End(End {
                reason: EndReason::Stop,
            })),
        ];
        Export {
            header: Header {
                switchboard_version: "0.1.0".into(),
                call_sid: records[0].event.call_sid.clone(),
                tenant: records[0].event.tenant.clone(),
                events: 3,
                calls_events: 2,
                audio_events: 1,
                exported_at: 1,
            },
            records,
        }
    }

    #[test]
    fn round_trips_with_raw_bytes_and_ids() {
        let export = sample();
        let bytes = export.encode();
        assert_eq!(bytes[..8], MAGIC);
        assert_eq!(Export::parse(&bytes).unwrap(), export);
    }

    #[test]
    fn other_files_and_versions_are_named_as_such() {
        for other in [&b"RIFF....WAVEfmt "[..], b"{\"call_sid\": 1}", b"\0"] {
            assert_eq!(Export::parse(other), Err(FormatError::NotAnExport));
        }
        let mut bytes = sample().encode();
        bytes[9] = 2;
        assert_eq!(
            Export::parse(&bytes),
            Err(FormatError::UnsupportedVersion { found: 2 })
        );
    }

    #[test]
    fn every_truncation_is_refused_as_truncated() {
        let bytes = sample().encode();
        for cut in 1..bytes.len() {
            match Export::parse(&bytes[..cut]) {
                Err(FormatError::Truncated { len, .. }) => assert_eq!(len, cut),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn every_flipped_byte_and_any_appended_byte_is_refused() {
        let bytes = sample().encode();
        for i in 10..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(Export::parse(&b).is_err(), "flip at {i} accepted");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Export::parse(&longer), Err(FormatError::TrailingBytes(1)));
        let mut flipped = bytes.clone();
        let middle = bytes.len() - 100;
        flipped[middle] ^= 0x01;
        assert_eq!(Export::parse(&flipped), Err(FormatError::Checksum));
    }

    #[test]
    fn counts_and_events_are_checked_under_a_valid_checksum() {
        let mut export = sample();
        export.header.audio_events = 2;
        let err = Export::parse(&export.encode()).unwrap_err();
        assert!(matches!(err, FormatError::Count { .. }), "{err}");

        let mut export = sample();
        export.records[0].payload = Bytes::from_static(b"not msgpack");
        let err = Export::parse(&export.encode()).unwrap_err();
        assert!(
            err.to_string().starts_with("event 0: does not decode"),
            "{err}"
        );

        let mut export = sample();
        export.records[2].subject = "call.acme.CA0123456789abcdef0123456789abcdef.dtmf".into();
        let err = Export::parse(&export.encode()).unwrap_err();
        assert!(
            err.to_string().contains("does not match its subject"),
            "{err}"
        );

        let mut export = sample();
        export.records[1].stream = CALLS_STREAM;
        let err = Export::parse(&export.encode()).unwrap_err();
        assert!(
            err.to_string().contains("does not belong in CALLS"),
            "{err}"
        );
    }
}
