//! The bot-paused marker: field `paused` of a call's session hash (`session:{sid}`).
//!
//! Consumes the ingress's pauses (the caller's voice held the bot, ARCHITECTURE §2f);
//! produces the marker the stt reads before it commits an utterance of backchannel words
//! only: said while the bot was paused for it, such an utterance is no turn (the bot
//! resumes), so it must not take a turn number and supersede the answer being spoken.
//! The ingress sets the marker when it pauses and removes it when it resumes or the pause
//! becomes a barge-in. State: the one hash field, expiring with the session.

use sb_schemas::CallSid;

use super::{Redis, RedisError, failed};

/// Sets the marker only on a live session (a lost one stays lost).
const SET_PAUSED: &str = r"
if redis.call('HEXISTS', KEYS[1], 'tenant') == 0 then return 0 end
redis.call('HSET', KEYS[1], 'paused', ARGV[1])
return 1
";

impl Redis {
    /// Marks the bot's `turn` paused for the caller (`Some`), or not paused (`None`).
    pub async fn session_set_paused(
        &self,
        sid: &CallSid,
        turn: Option<u32>,
    ) -> Result<(), RedisError> {
        let key = self.keys.session(sid);
        match turn {
            Some(turn) => redis::Script::new(SET_PAUSED)
                .key(key)
                .arg(turn)
                .invoke_async::<i64>(&mut self.conn())
                .await
                .map(drop),
            None => redis::cmd("HDEL")
                .arg(key)
                .arg("paused")
                .query_async::<i64>(&mut self.conn())
                .await
                .map(drop),
        }
        .map_err(failed("session_set_paused"))
    }

    /// The bot's turn paused for the caller, if it is.
    pub async fn session_paused(&self, sid: &CallSid) -> Result<Option<u32>, RedisError> {
        redis::cmd("HGET")
            .arg(self.keys.session(sid))
            .arg("paused")
            .query_async(&mut self.conn())
            .await
            .map_err(failed("session_paused"))
    }
}
