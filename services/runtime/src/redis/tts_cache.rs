//! The TTS audio cache: `tts:{sha256(voice|normalised text)}` → µ-law bytes, 24 h TTL.
//!
//! Case, whitespace and punctuation variants of a sentence share a key (see
//! [`super::keys::normalise_tts_text`]). A miss (or an eviction) means re-synthesising.

use std::time::Duration;

use bytes::Bytes;

use super::{Redis, RedisError, failed};

/// How long synthesised audio is kept.
pub const TTS_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);

impl Redis {
    /// The cached audio of `text` in `voice`, if any.
    pub async fn tts_get(&self, voice: &str, text: &str) -> Result<Option<Bytes>, RedisError> {
        let audio: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.keys.tts(voice, text))
            .query_async(&mut self.conn())
            .await
            .map_err(failed("tts_get"))?;
        Ok(audio.map(Bytes::from))
    }

    /// Stores the audio of `text` in `voice` for `ttl`.
    pub async fn tts_put(
        &self,
        voice: &str,
        text: &str,
        audio: &[u8],
        ttl: Duration,
    ) -> Result<(), RedisError> {
        redis::cmd("SET")
            .arg(self.keys.tts(voice, text))
            .arg(audio)
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(failed("tts_put"))
    }
}
