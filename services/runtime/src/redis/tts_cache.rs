//! The TTS audio cache: `tts:{sha256(engine|format|voice|normalised text)}` → audio bytes,
//! 24 h TTL.
//!
//! The key names the engine and its output format as well as the voice, so audio one
//! engine made (espeak-ng standing in after an Azure failure, say) is never served as
//! another's. Case, whitespace and punctuation variants of a sentence share a key (see
//! [`super::keys::normalise_tts_text`]). A miss (or an eviction) means re-synthesising.

use std::time::Duration;

use bytes::Bytes;

use super::{Redis, RedisError, failed};

/// How long synthesised audio is kept.
pub const TTS_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);

/// What identifies a piece of synthesised speech.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Speech<'a> {
    /// The engine that speaks (`azure`, `espeak`, …).
    pub engine: &'a str,
    /// Its output format (`raw-8khz-8bit-mono-mulaw`, …).
    pub format: &'a str,
    pub voice: &'a str,
    pub text: &'a str,
}

impl Redis {
    /// The cached audio of `speech`, if any.
    pub async fn tts_get(&self, speech: &Speech<'_>) -> Result<Option<Bytes>, RedisError> {
        let audio: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.keys.tts(speech))
            .query_async(&mut self.conn())
            .await
            .map_err(failed("tts_get"))?;
        Ok(audio.map(Bytes::from))
    }

    /// Stores the audio of `speech` for `ttl`.
    pub async fn tts_put(
        &self,
        speech: &Speech<'_>,
        audio: &[u8],
        ttl: Duration,
    ) -> Result<(), RedisError> {
        redis::cmd("SET")
            .arg(self.keys.tts(speech))
            .arg(audio)
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(failed("tts_put"))
    }
}
