//! One sentence → its audio chunks, from the cache or the engine.
//!
//! Consumes a `sentence` event; produces `TtsChunk`s of its turn, numbered from 0, the
//! last `last: true` (and `turn_last` when the sentence is the turn's last), each only
//! after the emitter found the turn still wanted. A cache hit is cut and sent at once (the
//! first check runs alongside the cache read); a miss streams from the first engine that
//! starts (the primary, else the backup) and is stored in the cache, under that engine,
//! when complete. [`Tts::open`] is the one place engines are tried in order; the cache
//! pre-warm uses it too. State: the chunk counter and the audio so far, for one delivery.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use sb_runtime::metrics::Metric;
use sb_runtime::redis::keys::normalise_tts_text;
use sb_runtime::redis::tts_cache::TTS_CACHE_TTL;
use sb_runtime::{Emitter, StageError, Tenant};
use sb_schemas::{Body, Sentence, TtsChunk};

use crate::chunker::Chunker;
use crate::provider::{AudioStream, TextToSpeech, TtsError};
use crate::{Tts, provider_error};

/// Publishes one sentence's chunks, asking before each whether the turn is still wanted.
struct Sink {
    sentence: u32,
    turn_last: bool,
    next: u32,
    /// The turn was found wanted just now: the next chunk need not ask again.
    checked: bool,
}

impl Sink {
    /// Sends one chunk unless the turn went stale; returns whether it was sent.
    async fn send(
        &mut self,
        out: &mut Emitter,
        payload: Bytes,
        last: bool,
    ) -> Result<bool, StageError> {
        if !std::mem::take(&mut self.checked) && !out.still_wanted().await {
            return Ok(false);
        }
        let event = out.event(Body::TtsChunk(TtsChunk {
            sentence: self.sentence,
            chunk: self.next,
            last,
            turn_last: self.turn_last && last,
            payload: sb_schemas::Mulaw(payload),
        }));
        out.emit(event).await?;
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
                out.skip("interrupted");
                return Ok(());
            }
        }
        if !self.send(out, chunker.finish(), true).await? {
            out.skip("interrupted");
        }
        Ok(())
    }
}

impl Tts {
    pub(crate) async fn speak(
        &self,
        sentence: &Sentence,
        tenant: &Tenant,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        let mut sink = Sink {
            sentence: sentence.index,
            turn_last: sentence.last,
            next: 0,
            checked: false,
        };
        let text = sentence.text.trim();
        if normalise_tts_text(text).is_empty() {
            // Nothing to say (the closing marker of a turn): one empty last chunk.
            return sink.send(out, Bytes::new(), true).await.map(|_| ());
        }
        let voice = tenant.voice.as_str();
        let engine = self.engine(tenant);
        let wanted = self.speech(engine, voice, text);
        let (still_wanted, cached) = tokio::join!(out.still_wanted(), self.cache.get(&wanted));
        if !still_wanted {
            out.skip("interrupted");
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
        let Some((engine, stream)) = self.open(engine, text, voice).await else {
            return self.fall_back(&mut sink, tenant, out).await;
        };
        self.stream(&mut sink, engine, stream, text, voice, out)
            .await
    }

    /// Starts synthesis with `first` (the tenant's engine), else the backup; returns the
    /// engine that speaks and its audio.
    pub(crate) async fn open<'e>(
        &'e self,
        first: &'e Arc<dyn TextToSpeech>,
        text: &str,
        voice: &str,
    ) -> Option<(&'e Arc<dyn TextToSpeech>, AudioStream)> {
        for engine in std::iter::once(first).chain(self.backup.as_ref()) {
            match engine.synthesize(text, voice).await {
                Ok(stream) => return Some((engine, stream)),
                Err(error) => {
                    provider_error(engine.name(), &error);
                    tracing::warn!(engine = engine.name(), %error, "tts engine failed");
                }
            }
        }
        None
    }

    /// Sends the engine's audio as it arrives, then stores it in the cache under the
    /// engine that spoke it.
    async fn stream(
        &self,
        sink: &mut Sink,
        engine: &Arc<dyn TextToSpeech>,
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
                    provider_error(engine.name(), &error);
                    tracing::warn!(engine = engine.name(), %error, "tts stream broke off");
                    complete = false;
                    break;
                }
            };
            whole.extend_from_slice(&piece);
            for chunk in chunker.push(&piece) {
                if !sink.send(out, chunk, false).await? {
                    out.skip("interrupted");
                    return Ok(());
                }
            }
        }
        if !sink.send(out, chunker.finish(), true).await? {
            out.skip("interrupted");
            return Ok(());
        }
        if complete {
            let spoken = self.speech(engine, voice, text);
            let audio = whole_frames(whole);
            if let Err(error) = self.cache.put(&spoken, &audio, TTS_CACHE_TTL).await {
                tracing::warn!(%error, "tts cache write failed");
            }
        }
        Ok(())
    }

    /// No engine could speak: the tenant's fallback phrase from the cache (as any engine
    /// spoke it), else a retry.
    async fn fall_back(
        &self,
        sink: &mut Sink,
        tenant: &Tenant,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        for engine in std::iter::once(self.engine(tenant)).chain(self.backup.as_ref()) {
            let phrase = self.speech(engine, &tenant.voice, &tenant.fallback_phrase);
            if let Ok(Some(audio)) = self.cache.get(&phrase).await {
                out.fallback("engines_failed");
                return sink.send_whole(out, &audio, self.chunk_bytes).await;
            }
        }
        Err(StageError::retry(
            "tts_provider",
            "no engine could speak and the fallback phrase is not cached",
        ))
    }
}

/// A whole sentence's audio from its stream, padded to whole frames (the cache pre-warm).
pub(crate) async fn whole(mut stream: AudioStream) -> Result<Bytes, TtsError> {
    let mut audio = BytesMut::new();
    while let Some(piece) = stream.next().await {
        audio.extend_from_slice(&piece?);
    }
    Ok(whole_frames(audio))
}

/// Pads audio with µ-law silence to whole 20 ms frames.
fn whole_frames(mut audio: BytesMut) -> Bytes {
    let mut chunker = Chunker::new(usize::MAX);
    let mut whole = BytesMut::with_capacity(audio.len() + sb_audio::FRAME_BYTES);
    for chunk in chunker.push(&audio.split()) {
        whole.extend_from_slice(&chunk);
    }
    whole.extend_from_slice(&chunker.finish());
    whole.freeze()
}

fn cache(result: &'static str) {
    metrics::counter!(Metric::TtsCacheRequests.name(), "result" => result).increment(1);
}
