//! Twilio's side of one media socket, driven by a test through channels (paused time). The
//! call is admitted in the backend as its webhook would have, and `start` brings the
//! credential that webhook would have issued.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use futures::channel::mpsc;
use sb_ingress::testing::MemoryBackend;
use sb_ingress::{Incoming, IngressConfig, IngressState, Outgoing, media::serve};
use sb_runtime::redis::idempotency::AdmissionRecord;
use sb_schemas::testing::tenant_id;
use sb_schemas::{Body, CallSid, Envelope, Kind, Mulaw, TtsChunk};
use sb_twilio::media::{
    InboundMedia, InboundMessage, Mark, MediaFormat, StartMeta, StopMeta, encode_payload,
};
use sb_twilio::{CallBinding, OutboundMessage, credential, parse_outbound};
use tokio::time::Instant;

use super::*;

pub const STREAM: &str = "MZ00000000000000000000000000000001";

/// Twilio's side of one socket, driven by the test.
pub struct Line {
    pub to_ingress: mpsc::UnboundedSender<Incoming>,
    pub from_ingress: mpsc::UnboundedReceiver<Outgoing>,
    pub task: tokio::task::JoinHandle<()>,
    pub backend: MemoryBackend,
    pub state: IngressState<MemoryBackend>,
    pub sid: CallSid,
    pub tenant: &'static str,
    pub sequence: u64,
    pub chunk: u64,
}

impl Line {
    /// A socket for call `n`, admitted for `tenant` (as its webhook would have).
    pub fn open_with(config: &IngressConfig, n: u128, tenant: &'static str) -> Self {
        let line = Self::unadmitted(config, n, tenant);
        if let Ok(id) = sb_schemas::TenantId::parse(tenant) {
            line.backend
                .record_admission(&line.sid, AdmissionRecord::Admitted(id));
        }
        line
    }

    /// A socket for call `n` on a fresh ingress where no webhook admitted it.
    pub fn unadmitted(config: &IngressConfig, n: u128, tenant: &'static str) -> Self {
        let (state, _) = state_with(config);
        Self::on(state, sid(n), tenant)
    }

    /// A socket for the same call on another replica: its own ingress state, the same
    /// Redis and NATS (backend).
    pub fn on_another_replica(&self) -> Self {
        let settings = sb_ingress::Settings::from_config(&config()).expect("valid");
        let state = IngressState::new(
            self.backend.clone(),
            tenants(),
            settings,
            sb_runtime::Shutdown::new(Duration::from_secs(5)),
        );
        Self::on(state, self.sid.clone(), self.tenant)
    }

    /// Another socket for the same call on the same ingress (and backend).
    pub fn another(&self) -> Self {
        Self::on(self.state.clone(), self.sid.clone(), self.tenant)
    }

    fn on(state: IngressState<MemoryBackend>, sid: CallSid, tenant: &'static str) -> Self {
        let (to_ingress, incoming) = mpsc::unbounded();
        let (outgoing, from_ingress) = mpsc::unbounded();
        let task = tokio::spawn(serve(state.clone(), outgoing, incoming));
        Self {
            to_ingress,
            from_ingress,
            task,
            backend: state.backend.clone(),
            state,
            sid,
            tenant,
            sequence: 0,
            chunk: 0,
        }
    }

    pub fn open(n: u128, tenant: &'static str) -> Self {
        Self::open_with(&config(), n, tenant)
    }

    pub fn raw(&self, frame: Incoming) {
        self.to_ingress.unbounded_send(frame).unwrap();
    }

    pub fn send(&mut self, message: InboundMessage) {
        self.raw(Incoming::Text(message.to_json().into()));
    }

    pub fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    /// `connected` + `start`, then waits until the call is live (`start` published).
    pub async fn start(&mut self) {
        self.send(InboundMessage::Connected {
            protocol: "Call".into(),
            version: "1.0.0".into(),
        });
        let start = self.start_message(self.tenant);
        self.send(start);
        let backend = self.backend.clone();
        until(|| !backend.of_kind(Kind::Start).is_empty()).await;
    }

    /// The credential the webhook issues for this call and `tenant`, valid from now.
    pub fn credential(&self, tenant: &str) -> String {
        let binding = CallBinding {
            call_sid: self.sid.as_str(),
            tenant,
            stream_url: &self.state.settings.stream_url,
        };
        self.state
            .settings
            .credentials
            .issue(&binding, std::time::SystemTime::now())
    }

    /// `start` as Twilio sends it for TwiML naming `tenant`, with its credential.
    pub fn start_message(&mut self, tenant: &str) -> InboundMessage {
        let credential = self.credential(tenant);
        self.start_with(tenant, Some(&credential))
    }

    /// `start` with the `tenant` parameter and this `credential` (or none).
    pub fn start_with(&mut self, tenant: &str, credential: Option<&str>) -> InboundMessage {
        let to = match tenant {
            "globex" => GLOBEX,
            "acme" => ACME,
            _ => "+19999999999",
        };
        let mut parameters: BTreeMap<String, String> =
            [("tenant", tenant), ("from", CALLER), ("to", to)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        if let Some(credential) = credential {
            parameters.insert(credential::PARAMETER.to_owned(), credential.to_owned());
        }
        InboundMessage::Start {
            sequence_number: self.next_sequence(),
            start: StartMeta {
                account_sid: "AC0123456789abcdef0123456789abcdef".into(),
                stream_sid: STREAM.into(),
                call_sid: self.sid.as_str().into(),
                tracks: vec!["inbound".into()],
                media_format: MediaFormat::default(),
                custom_parameters: parameters,
            },
            stream_sid: STREAM.into(),
        }
    }

    pub fn media_message(&mut self, payload: &[u8]) -> InboundMessage {
        self.chunk += 1;
        InboundMessage::Media {
            sequence_number: self.next_sequence(),
            media: InboundMedia {
                track: "inbound".into(),
                chunk: self.chunk,
                timestamp: (self.chunk - 1) * 20,
                payload: encode_payload(payload),
            },
            stream_sid: STREAM.into(),
        }
    }

    pub fn media(&mut self, payload: &[u8]) {
        let message = self.media_message(payload);
        self.send(message);
    }

    pub fn echo(&mut self, name: &str) {
        let message = InboundMessage::Mark {
            sequence_number: self.next_sequence(),
            stream_sid: STREAM.into(),
            mark: Mark { name: name.into() },
        };
        self.send(message);
    }

    pub fn stop(&mut self) {
        let message = InboundMessage::Stop {
            sequence_number: self.next_sequence(),
            stop: StopMeta {
                account_sid: "AC0123456789abcdef0123456789abcdef".into(),
                call_sid: self.sid.as_str().into(),
            },
            stream_sid: STREAM.into(),
        };
        self.send(message);
    }

    pub fn deliver(&self, turn: u32, body: Body) {
        let event = Envelope::new(tenant_id(self.tenant), self.sid.clone(), turn, body);
        assert!(self.backend.deliver(event), "the call is subscribed");
    }

    /// Bot audio, delivered live: every byte of the chunk is `byte`.
    /// `at` = (sentence, chunk), `ends` = (last, turn_last).
    pub fn chunk(&self, turn: u32, at: (u32, u32), frames: usize, ends: (bool, bool), byte: u8) {
        let event = self.chunk_event(turn, at, frames, ends, byte);
        assert!(self.backend.deliver(event), "the call is subscribed");
    }

    /// The event of [`Line::chunk`], not delivered (to store it "in the stream" instead).
    pub fn chunk_event(
        &self,
        turn: u32,
        (sentence, chunk): (u32, u32),
        frames: usize,
        (last, turn_last): (bool, bool),
        byte: u8,
    ) -> Envelope {
        let body = Body::TtsChunk(TtsChunk {
            sentence,
            chunk,
            last,
            turn_last,
            payload: Mulaw(Bytes::from(vec![byte; frames * 160])),
        });
        Envelope::new(tenant_id(self.tenant), self.sid.clone(), turn, body)
    }

    /// The next message to Twilio and when it came; `None` when the socket closed (with or
    /// without a close frame).
    pub async fn next(&mut self) -> Option<(Instant, OutboundMessage)> {
        let out = tokio::time::timeout(Duration::from_secs(30), self.from_ingress.next())
            .await
            .expect("the ingress said something within 30 s")?;
        let Outgoing::Text(text) = out else {
            return None;
        };
        let message = parse_outbound(&text).expect("the ingress sends valid messages");
        assert_eq!(message.stream_sid(), STREAM);
        Some((Instant::now(), message))
    }

    /// Messages up to and including the mark `name`.
    pub async fn until_mark(&mut self, name: &str) -> Vec<(Instant, OutboundMessage)> {
        let mut out = Vec::new();
        loop {
            let (at, message) = self.next().await.expect("socket open");
            let done = matches!(&message, OutboundMessage::Mark { mark, .. } if mark.name == name);
            out.push((at, message));
            if done {
                return out;
            }
        }
    }

    /// The close code the ingress ended the socket with (`None`: closed without one), once
    /// the socket has closed (within 30 s); text messages before it are skipped.
    pub async fn closed_with(&mut self) -> Option<u16> {
        let mut code = None;
        let drained = async {
            while let Some(out) = self.from_ingress.next().await {
                if let Outgoing::Close { code: sent, .. } = out {
                    code = Some(sent);
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), drained)
            .await
            .expect("the ingress closed the socket within 30 s");
        code
    }

    pub async fn close(mut self) -> MemoryBackend {
        self.stop();
        self.task.await.unwrap();
        self.backend
    }
}

/// Waits (virtual time) until `check` holds.
pub async fn until(check: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("condition never held");
}

pub fn media_bytes(messages: &[(Instant, OutboundMessage)]) -> Vec<u8> {
    messages
        .iter()
        .filter_map(|(_, m)| match m {
            OutboundMessage::Media { media, .. } => {
                Some(sb_twilio::media::decode_payload(&media.payload).unwrap())
            }
            _ => None,
        })
        .flatten()
        .collect()
}

pub fn is_clear(message: &OutboundMessage) -> bool {
    matches!(message, OutboundMessage::Clear { .. })
}
