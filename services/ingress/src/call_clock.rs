//! One call's clock: the caller's silence after the bot finished, and the call's length,
//! by the tenant's `[tenant.turn_taking]` (`silence_secs`, `silence_prompts`,
//! `max_call_secs`; ARCHITECTURE §2e).
//!
//! Consumes what the socket sees happen (the bot's audio starting, the bot's turn finished
//! playing, the caller's voice or a key) and the clock; produces the bodies of the
//! `silence` and `max_duration` events (the caller publishes each on a new turn). Silence
//! is timed only from the moment the bot finished: caller activity or bot audio stops the
//! timer until the bot finishes again, so a silence fires at most once per bot-finished
//! and the count only rises once its prompt has played and the silence passed again.
//! After the call's last word is due (`max_duration`, or a silence past the prompts,
//! which the agent answers with the goodbye) the clock says nothing more. State: the
//! timers of one call, in the socket's task.

use std::time::Duration;

use sb_runtime::tenants::TurnTaking;
use sb_schemas::{Body, MaxDuration, Silence};
use tokio::time::Instant;

/// The silence and max-duration timers of one call.
#[derive(Debug, Clone)]
pub struct CallClock {
    /// `None`: the tenant never prompts (`silence_secs` 0).
    silence: Option<Duration>,
    /// Silences after which the agent says goodbye: one per prompt, then one more.
    last_silence: u32,
    /// When the call reaches `max_call_secs`; `None`: no limit, or already reported.
    max_at: Option<Instant>,
    limit_secs: u32,
    /// When the bot last finished, while nothing happened since (the silence timer runs).
    finished_at: Option<Instant>,
    /// Silences in a row so far.
    count: u32,
    /// The call's last event is out: nothing more is reported.
    ending: bool,
}

impl CallClock {
    /// The clock of a call that began at `began` (its `start`).
    pub fn new(turns: &TurnTaking, began: Instant) -> Self {
        let secs = |s: u32| Duration::from_secs(u64::from(s));
        Self {
            silence: (turns.silence_secs > 0).then(|| secs(turns.silence_secs)),
            last_silence: u32::try_from(turns.silence_prompts.len())
                .unwrap_or(u32::MAX)
                .saturating_add(1),
            max_at: (turns.max_call_secs > 0).then(|| began + secs(turns.max_call_secs)),
            limit_secs: turns.max_call_secs,
            finished_at: None,
            count: 0,
            ending: false,
        }
    }

    /// The bot's turn finished playing (its last sentence's mark came back): the silence
    /// timer starts.
    pub fn bot_finished(&mut self, now: Instant) {
        self.finished_at = Some(now);
    }

    /// Bot audio started playing: no silence until the bot finishes again.
    pub fn bot_started(&mut self, _now: Instant) {
        self.finished_at = None;
    }

    /// The caller spoke or pressed a key: the silences in a row start again from 0, and
    /// no silence until the bot (answering) finishes again.
    pub fn caller_active(&mut self, _now: Instant) {
        self.finished_at = None;
        self.count = 0;
    }

    /// When [`CallClock::due`] has something next; `None`: nothing is pending.
    pub fn deadline(&self) -> Option<Instant> {
        if self.ending {
            return None;
        }
        let silence = self.silence.zip(self.finished_at).map(|(s, at)| at + s);
        match (silence, self.max_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The `silence` or `max_duration` body due at `now`, if any (the call's length
    /// first when both are).
    pub fn due(&mut self, now: Instant) -> Option<Body> {
        if self.ending {
            return None;
        }
        if self.max_at.is_some_and(|at| now >= at) {
            self.max_at = None;
            self.ending = true;
            return Some(Body::MaxDuration(MaxDuration {
                limit_secs: self.limit_secs,
            }));
        }
        let silence = self.silence?;
        let finished = self.finished_at?;
        if now < finished + silence {
            return None;
        }
        self.finished_at = None;
        self.count = self.count.saturating_add(1);
        self.ending = self.count >= self.last_silence;
        Some(Body::Silence(Silence {
            count: self.count,
            after_ms: u32::try_from(silence.as_millis()).unwrap_or(u32::MAX),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SILENCE: Duration = Duration::from_secs(8);

    fn turns(silence_secs: u32, prompts: usize, max_call_secs: u32) -> TurnTaking {
        TurnTaking {
            silence_secs,
            silence_prompts: (1..=prompts).map(|n| format!("Prompt {n}")).collect(),
            max_call_secs,
            ..TurnTaking::default()
        }
    }

    fn silence(count: u32) -> Option<Body> {
        Some(Body::Silence(Silence {
            count,
            after_ms: 8000,
        }))
    }

    /// Sleeps (paused time) until the clock's deadline and returns what is due then.
    async fn next(clock: &mut CallClock) -> Option<Body> {
        tokio::time::sleep_until(clock.deadline()?).await;
        clock.due(Instant::now())
    }

    /// The silence fires `silence_secs` after the bot finished, not a millisecond before,
    /// once; a prompt that plays and is followed by silence again counts 2.
    #[tokio::test(start_paused = true)]
    async fn silence_fires_once_per_bot_finished_and_counts_up() {
        let mut clock = CallClock::new(&turns(8, 2, 0), Instant::now());
        assert_eq!(clock.deadline(), None, "nothing before the bot finished");
        let finished = Instant::now();
        clock.bot_finished(finished);
        assert_eq!(clock.deadline(), Some(finished + SILENCE));
        assert_eq!(
            clock.due(finished + SILENCE - Duration::from_millis(1)),
            None
        );
        assert_eq!(next(&mut clock).await, silence(1));
        assert_eq!(clock.deadline(), None, "once per bot-finished");
        assert_eq!(clock.due(Instant::now() + SILENCE * 10), None);

        // The prompt plays: nothing while it plays, then the silence again.
        clock.bot_started(Instant::now());
        tokio::time::sleep(SILENCE * 2).await;
        assert_eq!(clock.due(Instant::now()), None);
        clock.bot_finished(Instant::now());
        assert_eq!(next(&mut clock).await, silence(2));
    }

    /// Caller activity resets the count and stops the timer until the bot finishes again;
    /// bot audio stops it without resetting the count.
    #[tokio::test(start_paused = true)]
    async fn caller_activity_resets_and_bot_audio_pauses() {
        let mut clock = CallClock::new(&turns(8, 3, 0), Instant::now());
        clock.bot_finished(Instant::now());
        assert_eq!(next(&mut clock).await, silence(1));
        clock.bot_finished(Instant::now());
        tokio::time::sleep(SILENCE / 2).await;
        clock.caller_active(Instant::now());
        assert_eq!(clock.deadline(), None, "the caller spoke");
        clock.bot_finished(Instant::now());
        assert_eq!(next(&mut clock).await, silence(1), "counted from 1 again");

        clock.bot_finished(Instant::now());
        tokio::time::sleep(SILENCE / 2).await;
        clock.bot_started(Instant::now());
        assert_eq!(clock.deadline(), None, "the bot speaks");
        clock.bot_finished(Instant::now());
        assert_eq!(next(&mut clock).await, silence(2), "not reset by the bot");
    }

    /// One silence per prompt, then one more (the agent's goodbye), then nothing: the
    /// goodbye's own end starts no timer.
    #[tokio::test(start_paused = true)]
    async fn nothing_after_the_silence_past_the_prompts() {
        let mut clock = CallClock::new(&turns(8, 1, 0), Instant::now());
        clock.bot_finished(Instant::now());
        assert_eq!(next(&mut clock).await, silence(1));
        clock.bot_finished(Instant::now());
        assert_eq!(next(&mut clock).await, silence(2));
        clock.bot_finished(Instant::now());
        assert_eq!(clock.deadline(), None);
        assert_eq!(clock.due(Instant::now() + SILENCE * 2), None);
    }

    /// `silence_secs` 0: never a silence, however long the caller is quiet.
    #[tokio::test(start_paused = true)]
    async fn no_silence_timeout_no_silence() {
        let mut clock = CallClock::new(&turns(0, 1, 0), Instant::now());
        clock.bot_finished(Instant::now());
        assert_eq!(clock.deadline(), None);
        assert_eq!(clock.due(Instant::now() + Duration::from_secs(3600)), None);
    }

    /// `max_call_secs` after the call began, once, whatever happens meanwhile; first when
    /// a silence falls due at the same moment; and nothing afterwards.
    #[tokio::test(start_paused = true)]
    async fn max_duration_fires_once_after_the_limit() {
        let began = Instant::now();
        let mut clock = CallClock::new(&turns(8, 1, 60), began);
        assert_eq!(clock.deadline(), Some(began + Duration::from_secs(60)));
        tokio::time::sleep(Duration::from_secs(52)).await;
        clock.bot_finished(Instant::now());
        clock.caller_active(Instant::now());
        clock.bot_finished(Instant::now());
        assert_eq!(clock.deadline(), Some(began + Duration::from_secs(60)));
        assert_eq!(clock.due(began + Duration::from_secs(59)), None);
        assert_eq!(
            next(&mut clock).await,
            Some(Body::MaxDuration(MaxDuration { limit_secs: 60 }))
        );
        assert_eq!(clock.deadline(), None);
        clock.bot_finished(Instant::now());
        assert_eq!(clock.due(Instant::now() + Duration::from_secs(3600)), None);

        let mut unlimited = CallClock::new(&turns(0, 1, 0), began);
        assert_eq!(unlimited.due(began + Duration::from_secs(86_400)), None);
    }
}
