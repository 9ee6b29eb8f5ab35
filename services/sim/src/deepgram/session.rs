//! One `/v1/listen` stream as a pure state machine: audio and control frames in, Deepgram
//! messages out.
//!
//! Consumes binary audio (µ-law, linear16, or a WAV stream when no `encoding` was given) and
//! text control frames; produces [`Outgoing`] JSON messages. Everything is timed on the
//! audio timeline (ms of audio received), never the wall clock, so results are the same
//! however fast a client sends. The energy VAD (`sb_audio::vad`) finds speech; each
//! utterance takes the next line of the transcript script; interims are prefixes of that
//! line proportional to the speech heard, and once the voice has paused for
//! `pause_interim_ms` an interim holds the whole line, its last word ending where the
//! voice stopped (a provider's interim after the speaker paused; a line `interim|final`
//! makes those interims differ from the final). State: this value, owned by the socket
//! task.

use sb_audio::vad::{self, Vad, VadEvent};
use sb_audio::{FRAME_MS, samples_for_ms};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::input::Decoder;
pub(crate) use super::input::{Script, UndecodableAudio};
use super::params::ListenParams;
use super::protocol::{self, Heard, Span, StreamInfo, Summary};

/// Speech heard per word when estimating how much of a line an interim has reached.
const MS_PER_WORD: u64 = 350;
/// Speech between two interim results.
const INTERIM_EVERY_MS: u64 = 1_000;

/// Server-side knobs a session needs (from the server's `Config`).
#[derive(Debug, Clone)]
pub(crate) struct Tuning {
    pub(crate) vad: vad::Config,
    /// VAD hangover used to close an utterance when `endpointing=false` (no `speech_final`).
    pub(crate) segment_hangover_ms: u32,
    /// Send an empty final after this much audio without speech (0 = never).
    pub(crate) silence_final_ms: u64,
    /// Once the voice has paused this long inside an utterance, an interim with the whole
    /// line (0 = never).
    pub(crate) pause_interim_ms: u64,
}

/// A message for the client; finals are flagged so the socket can delay them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outgoing {
    pub(crate) json: Value,
    pub(crate) is_final: bool,
}

/// What a text frame asks of the socket.
#[derive(Debug, PartialEq)]
pub(crate) enum Control {
    /// Send these and keep going.
    Reply(Vec<Outgoing>),
    /// Send these, then close with 1000.
    Close(Vec<Outgoing>),
}

/// The utterance being heard.
#[derive(Debug)]
struct Utterance {
    start_ms: u64,
    /// What the final says.
    text: String,
    /// What the interims say (the script line's part before `|`; else `text`).
    interim: String,
    last_interim_ms: u64,
    /// A `Finalize` already sent its words; what remains of the utterance is empty.
    finalized: bool,
    /// The current pause of the voice has had its interim.
    pause_heard: bool,
}

impl Utterance {
    fn new(start_ms: u64, line: &str, finalized: bool) -> Self {
        let (interim, text) = line.split_once('|').unwrap_or((line, line));
        Self {
            start_ms,
            text: text.trim().to_owned(),
            interim: interim.trim().to_owned(),
            last_interim_ms: start_ms,
            finalized,
            pause_heard: false,
        }
    }
}

/// The state of one stream.
pub(crate) struct Session {
    info: StreamInfo,
    params: ListenParams,
    tuning: Tuning,
    script: Script,
    /// `None` until a containerised stream's WAV header has been read.
    vad: Option<Vad>,
    frame_len: usize,
    decoder: Decoder,
    /// End of the audio covered by the last final, ms.
    cursor_ms: u64,
    utterance: Option<Utterance>,
    /// End of the last word sent in a final; `UtteranceEnd` pending while `Some`.
    pending_utterance_end: Option<u64>,
    hasher: Sha256,
    samples: u64,
    created: String,
    closed: bool,
}

impl Session {
    pub(crate) fn new(
        info: StreamInfo,
        params: ListenParams,
        tuning: Tuning,
        script: Script,
        created: String,
    ) -> Self {
        let mut session = Self {
            info,
            tuning,
            script,
            vad: None,
            frame_len: 1,
            decoder: Decoder::new(&params),
            cursor_ms: 0,
            utterance: None,
            pending_utterance_end: None,
            hasher: Sha256::new(),
            samples: 0,
            created,
            closed: false,
            params,
        };
        if let Some((rate, _)) = session.decoder.format() {
            session.start_vad(rate);
        }
        session
    }

    fn start_vad(&mut self, rate: u32) {
        let hangover_ms = self
            .params
            .endpointing_ms
            .unwrap_or(self.tuning.segment_hangover_ms);
        let config = vad::Config {
            hangover_ms,
            ..self.tuning.vad
        };
        self.vad = Some(Vad::with_rate(config, rate));
        self.frame_len = samples_for_ms(FRAME_MS, rate).max(1);
    }

    fn now_ms(&self) -> u64 {
        self.vad.as_ref().map_or(0, Vad::position_ms)
    }

    fn speaking(&self) -> bool {
        self.vad.as_ref().is_some_and(Vad::is_speaking)
    }

    /// Whether the stream has been closed (by `CloseStream` or an empty frame).
    #[cfg(test)]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// A binary frame. An empty one closes the stream (Deepgram's deprecated signal).
    pub(crate) fn on_audio(&mut self, bytes: &[u8]) -> Result<Control, UndecodableAudio> {
        if self.closed {
            return Ok(Control::Reply(Vec::new()));
        }
        if bytes.is_empty() {
            return Ok(Control::Close(self.close()));
        }
        self.hasher.update(bytes);
        let mono = self.decoder.push(bytes)?;
        if self.vad.is_none() {
            match self.decoder.format() {
                Some((rate, _)) => self.start_vad(rate),
                None => return Ok(Control::Reply(Vec::new())),
            }
        }
        self.samples += mono.len() as u64;
        let mut out = Vec::new();
        for piece in mono.chunks(self.frame_len) {
            let events = self
                .vad
                .as_mut()
                .map(|vad| vad.push_pcm(piece))
                .unwrap_or_default();
            for event in events {
                self.on_vad(event, &mut out);
            }
            self.on_tick(&mut out);
        }
        Ok(Control::Reply(out))
    }

    fn on_vad(&mut self, event: VadEvent, out: &mut Vec<Outgoing>) {
        match event {
            VadEvent::SpeechStart { at_ms } => {
                let line = self.script.next_line();
                self.utterance = Some(Utterance::new(at_ms, &line, false));
                self.pending_utterance_end = None;
                if self.params.vad_events {
                    out.push(Outgoing {
                        json: protocol::speech_started(at_ms),
                        is_final: false,
                    });
                }
            }
            VadEvent::SpeechEnd { at_ms } => {
                let speech_final = self.params.endpointing_ms.is_some();
                self.emit_final(at_ms, speech_final, false, out);
            }
        }
    }

    /// Sends the final for the current utterance (or an empty one) and moves the cursor.
    fn emit_final(
        &mut self,
        words_end_ms: u64,
        speech_final: bool,
        from_finalize: bool,
        out: &mut Vec<Outgoing>,
    ) {
        let now = self.now_ms();
        let span = Span {
            start_ms: self.cursor_ms,
            end_ms: now,
            is_final: true,
            speech_final,
            from_finalize,
        };
        let heard = match self.utterance.take() {
            Some(utterance) if !utterance.finalized => Some((utterance.start_ms, utterance.text)),
            _ => None,
        };
        let json = match &heard {
            Some((start_ms, text)) => {
                let heard = Heard {
                    text,
                    words: usize::MAX,
                    from_ms: *start_ms,
                    to_ms: words_end_ms,
                };
                if !protocol::tokens(text).is_empty() {
                    self.pending_utterance_end = Some(words_end_ms);
                }
                protocol::results(&self.info, span, Some(heard))
            }
            None => protocol::results(&self.info, span, None),
        };
        out.push(Outgoing {
            json,
            is_final: true,
        });
        self.cursor_ms = now;
    }

    fn on_tick(&mut self, out: &mut Vec<Outgoing>) {
        let now = self.now_ms();
        let speaking = self.speaking();
        let silent_ms = self.vad.as_ref().map_or(0, Vad::trailing_silence_ms);
        let pause_ms = self.tuning.pause_interim_ms;
        let pausing = pause_ms > 0 && silent_ms >= pause_ms;
        if self.params.interim_results
            && speaking
            && let Some(utterance) = self.utterance.as_mut().filter(|u| !u.finalized)
        {
            if !pausing {
                utterance.pause_heard = false;
            }
            let tick = now >= utterance.last_interim_ms + INTERIM_EVERY_MS;
            let pause = pausing && !utterance.pause_heard;
            if tick || pause {
                utterance.last_interim_ms = now;
                utterance.pause_heard |= pausing;
                let total = protocol::tokens(&utterance.interim).len() as u64;
                // In a pause every word has been heard, and the last one ended with the voice.
                let (words, to_ms) = if pausing {
                    (total, now.saturating_sub(silent_ms))
                } else {
                    let expected_ms = (total * MS_PER_WORD).max(1);
                    let heard_ms = now - utterance.start_ms;
                    ((total * heard_ms).div_ceil(expected_ms).min(total), now)
                };
                let span = Span {
                    start_ms: self.cursor_ms,
                    end_ms: now,
                    is_final: false,
                    speech_final: false,
                    from_finalize: false,
                };
                let heard = Heard {
                    text: &utterance.interim,
                    words: words as usize,
                    from_ms: utterance.start_ms,
                    to_ms,
                };
                out.push(Outgoing {
                    json: protocol::results(&self.info, span, Some(heard)),
                    is_final: false,
                });
            }
        }
        if let (Some(last_word_end), Some(gap)) =
            (self.pending_utterance_end, self.params.utterance_end_ms)
            && self.params.interim_results
            && !speaking
            && now >= last_word_end + u64::from(gap)
        {
            self.pending_utterance_end = None;
            out.push(Outgoing {
                json: protocol::utterance_end(last_word_end),
                is_final: false,
            });
        }
        if self.tuning.silence_final_ms > 0
            && !speaking
            && self.utterance.is_none()
            && now >= self.cursor_ms + self.tuning.silence_final_ms
        {
            self.emit_final(now, false, false, out);
        }
    }

    /// A text frame: `KeepAlive`, `Finalize`, `CloseStream`, `Configure`, or garbage.
    pub(crate) fn on_text(&mut self, text: &str) -> Control {
        let parsed: Option<Value> = serde_json::from_str(text).ok();
        let kind = parsed
            .as_ref()
            .and_then(|v| v.get("type"))
            .and_then(Value::as_str);
        match kind {
            Some("KeepAlive") => Control::Reply(Vec::new()),
            Some("Finalize") => Control::Reply(self.finalize()),
            Some("CloseStream") => Control::Close(self.close()),
            Some("Configure") => {
                let keyterms = parsed.as_ref().and_then(|v| v.get("keyterms"));
                let json = protocol::configure_success(&self.info.request_id, keyterms);
                Control::Reply(vec![Outgoing {
                    json,
                    is_final: false,
                }])
            }
            _ => {
                tracing::warn!(request_id = %self.info.request_id, frame = %text, "unparseable control frame");
                let json = protocol::schema_error("Could not parse the client message.", text);
                Control::Reply(vec![Outgoing {
                    json,
                    is_final: false,
                }])
            }
        }
    }

    /// `Finalize`: finalize what has been heard now, marked `from_finalize`.
    fn finalize(&mut self) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let now = self.now_ms();
        let open = self.utterance.as_ref().is_some_and(|u| !u.finalized);
        if open {
            self.emit_final(now, false, true, &mut out);
            if self.speaking() {
                // The speech goes on; its end will send an empty speech_final.
                self.utterance = Some(Utterance::new(now, "", true));
            }
        } else if now > self.cursor_ms {
            let keep = self.utterance.take();
            self.emit_final(now, false, true, &mut out);
            self.utterance = keep;
        }
        out
    }

    /// `CloseStream` (or an empty binary frame): flush, then `Metadata`.
    fn close(&mut self) -> Vec<Outgoing> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        self.closed = true;
        if let Some(VadEvent::SpeechEnd { at_ms }) = self.vad.as_mut().and_then(Vad::force_end) {
            let open = self.utterance.as_ref().is_some_and(|u| !u.finalized);
            if open || self.now_ms() > self.cursor_ms {
                self.emit_final(at_ms, self.params.endpointing_ms.is_some(), false, &mut out);
            }
            self.utterance = None;
        }
        let (rate, channels) = self.decoder.format().unwrap_or((1, 0));
        let summary = Summary {
            info: &self.info,
            sha256: hex(&self.hasher.clone().finalize()),
            created: &self.created,
            duration_ms: self.samples * 1_000 / u64::from(rate.max(1)),
            channels,
        };
        out.push(Outgoing {
            json: protocol::metadata(&summary),
            is_final: false,
        });
        out
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
