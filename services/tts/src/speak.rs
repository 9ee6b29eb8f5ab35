//! One sentence → its audio chunks, from the cache or the engine.
//!
//! Consumes a `sentence` event; produces `TtsChunk`s of its turn, numbered from 0, the
//! last `last: true` (and `turn_last` when the sentence is the turn's last), each only
//! after the barge-in token said the turn is still wanted. A cache hit is cut and sent at
//! once (the first check runs alongside the cache read); a miss streams from the engine
//! and is stored in the cache when complete. State: the chunk counter and the audio so
//! far, for one delivery.

use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use sb_runtime::metrics::Metric;
use sb_runtime::redis::keys::normalise_tts_text;
use sb_runtime::redis::tts_cache::TTS_CACHE_TTL;
use sb_runtime::{Emitter, StageError, Tenant};
use sb_schemas::{Body, Envelope, Mulaw, Sentence, TtsChunk, now_micros};

use crate::chunker::Chunker;
use crate::provider::AudioStream;
use crate::{Tts, provider_error};

/// Publishes one sentence's chunks, checking the barge-in token before each.
struct Sink<'a> {
    tts: &'a Tts,
    input: &'a Envelope,
    sentence: u32,
    turn_last: bool,
    next: u32,
    /// The token was checked just now: the next chunk need not check again.
    checked: bool,
    stopped: bool,
}

impl Sink<'_> {
    /// Sends one chunk unless the turn went stale; returns whether it was sent.
    async fn send(
        &mut self,
        out: &mut Emitter,
        payload: Bytes,
        last: bool,
    ) -> Result<bool, StageError> {
        if self.stopped {
            return Ok(false);
        }
        if !std::mem::take(&mut self.checked) && self.tts.stale(self.input).await {
            self.stopped = true;
            return Ok(false);
        }
        let event = out.event(Body::TtsChunk(TtsChunk {
            sentence: self.sentence,
            chunk: self.next,
            last,
            turn_last: self.turn_last && last,
            payload: Mulaw(payload),
        }));
        out.emit(event).await?;
        if self.next == 0 {
            let latency = now_micros().saturating_sub(self.input.at) as f64 / 1e6;
            metrics::histogram!(Metric::StageLatencySeconds.name(), "stage" => "tts")
                .record(latency);
        }
        self.next += 1;
        Ok(true)
    }

    /// Sends audio that is all here (a cache hit, the fallback phrase).
    async fn send_whole(
        &mut self,
        out: &mut Emitter,
        audio: &[u8],
        chunk_bytes: usize,
    ) -> Result<(), StageError> {
        let mut chunker = Chunker::new(chunk_bytes);
        for chunk in chunker.push(audio) {
            if !self.send(out, chunk, false).await? {
                return Ok(());
            }
        }
        self.send(out, chunker.finish(), true).await.map(|_| ())
    }
}

impl Tts {
    /// Whether the input's turn was interrupted (a failed check counts as not stale: a
    /// Redis hiccup must not silence the caller). Counts the cancellation.
    async fn stale(&self, input: &Envelope) -> bool {
        match self
            .redis
            .session_is_stale(&input.call_sid, input.turn)
            .await
        {
            Ok(true) => {
                metrics::counter!(Metric::BargeInCancellations.name(), "stage" => "tts")
                    .increment(1);
                true
            }
            Ok(false) => false,
            Err(error) => {
                tracing::warn!(%error, "barge-in check failed; continuing");
                false
            }
        }
    }

    pub(crate) async fn speak(
        &self,
        input: &Envelope,
        sentence: &Sentence,
        tenant: &Tenant,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        let mut sink = Sink {
            tts: self,
            input,
            sentence: sentence.index,
            turn_last: sentence.last,
            next: 0,
            checked: false,
            stopped: false,
        };
        let text = sentence.text.trim();
        if normalise_tts_text(text).is_empty() {
            // Nothing to say (the closing marker of a turn): one empty last chunk.
            return sink.send(out, Bytes::new(), true).await.map(|_| ());
        }
        let voice = tenant.voice.as_str();
        let (stale, cached) = tokio::join!(self.stale(input), self.redis.tts_get(voice, text));
        if stale {
            skipped("interrupted");
            return Ok(());
        }
        let cached = cached.unwrap_or_else(|error| {
            tracing::warn!(%error, "tts cache read failed");
            cache("error");
            None
        });
        if let Some(audio) = cached {
            cache("hit");
            sink.checked = true;
            return sink.send_whole(out, &audio, self.chunk_bytes).await;
        }
        cache("miss");
        let Some(stream) = self.open(text, voice).await else {
            return self.fall_back(&mut sink, tenant, out).await;
        };
        self.stream(&mut sink, stream, text, voice, out).await
    }

    /// Starts synthesis with the primary engine, else the backup.
    async fn open(&self, text: &str, voice: &str) -> Option<AudioStream> {
        for engine in std::iter::once(&self.primary).chain(self.backup.as_ref()) {
            match engine.synthesize(text, voice).await {
                Ok(stream) => return Some(stream),
                Err(error) => {
                    provider_error(engine.name(), &error);
                    tracing::warn!(engine = engine.name(), %error, "tts engine failed");
                }
            }
        }
        None
    }

    /// Sends the engine's audio as it arrives, then stores it in the cache.
    async fn stream(
        &self,
        sink: &mut Sink<'_>,
        mut stream: AudioStream,
        text: &str,
        voice: &str,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        let mut chunker = Chunker::new(self.chunk_bytes);
        let mut whole = BytesMut::new();
        let mut complete = true;
        while let Some(piece) = stream.next().await {
            let piece = match piece {
                Ok(piece) => piece,
                Err(error) => {
                    // Keep what was said; the sentence still ends with its last chunk.
                    provider_error(self.primary.name(), &error);
                    tracing::warn!(%error, "tts stream broke off");
                    complete = false;
                    break;
                }
            };
            whole.extend_from_slice(&piece);
            for chunk in chunker.push(&piece) {
                if !sink.send(out, chunk, false).await? {
                    skipped("interrupted");
                    return Ok(());
                }
            }
        }
        let tail = chunker.finish();
        if !sink.send(out, tail, true).await? {
            skipped("interrupted");
            return Ok(());
        }
        if complete {
            let padding = (sb_audio::FRAME_BYTES - whole.len() % sb_audio::FRAME_BYTES)
                % sb_audio::FRAME_BYTES;
            whole.resize(whole.len() + padding, 0xFF);
            if let Err(error) = self.redis.tts_put(voice, text, &whole, TTS_CACHE_TTL).await {
                tracing::warn!(%error, "tts cache write failed");
            }
        }
        Ok(())
    }

    /// No engine could speak: the tenant's fallback phrase from the cache, else a retry.
    async fn fall_back(
        &self,
        sink: &mut Sink<'_>,
        tenant: &Tenant,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        let phrase = self
            .redis
            .tts_get(&tenant.voice, &tenant.fallback_phrase)
            .await;
        match phrase {
            Ok(Some(audio)) => {
                metrics::counter!(Metric::Fallbacks.name(), "stage" => "tts", "reason" => "engines_failed")
                    .increment(1);
                sink.send_whole(out, &audio, self.chunk_bytes).await
            }
            _ => Err(StageError::retry(
                "tts_provider",
                "no engine could speak and the fallback phrase is not cached",
            )),
        }
    }
}

fn cache(result: &'static str) {
    metrics::counter!(Metric::TtsCacheRequests.name(), "result" => result).increment(1);
}

fn skipped(reason: &'static str) {
    metrics::counter!(Metric::StageSkipped.name(), "stage" => "tts", "reason" => reason)
        .increment(1);
}
