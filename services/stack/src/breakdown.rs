//! Where the time of an answer goes under load: each step of a turn, from the caller's end
//! of speech to the first bot audio it hears, with the stand-in's configured delay for
//! that step removed, so what is left is Switchboard's (and the box's) share.
//!
//! Consumes the callers' reports (wall-clock anchored by `started_at_us`) and each call's
//! events read back from JetStream ([`CallLog::load_turns`]: control events and bot audio,
//! no caller frames); produces one list of samples per step. State: none.

use sb_replay::{CallLog, latency};
use sb_schemas::CallSid;
use sb_sim::caller::CallReport;

use crate::stack::Delays;

/// The steps, in the order a turn passes them.
pub const STEPS: [&str; 6] = [
    "caller end of speech → stt's (VAD, transport)",
    "→ transcript, −endpointing −stt final",
    "→ first LLM token, −first-token delay",
    "→ first sentence, −token pacing",
    "→ first audio chunk stored, −TTS first byte",
    "→ first bot frame at the caller",
];

/// Samples (ms) of each of [`STEPS`], in the same order.
pub type Samples = [Vec<f64>; 6];

/// The configured delays a turn's steps contain (ms).
#[derive(Debug, Clone, Copy)]
pub struct Expected {
    pub delays: Delays,
    pub endpointing_ms: u64,
}

impl Expected {
    /// The configured delay of each step, for a first sentence of `tokens` tokens (the
    /// first comes after the first-token delay, each later one `llm_token_ms` after it).
    fn per_step(&self, tokens: u64) -> [f64; 6] {
        let d = &self.delays;
        [
            0,
            self.endpointing_ms + d.stt_final_ms,
            d.llm_ttft_ms,
            tokens.saturating_sub(1) * d.llm_token_ms,
            d.tts_first_byte_ms,
            0,
        ]
        .map(|ms| ms as f64)
    }

    /// Every configured delay of a turn together.
    pub fn total_ms(&self, tokens: u64) -> f64 {
        self.per_step(tokens).iter().sum()
    }
}

/// Adds the steps of every answered caller turn of `report` to `samples`; `tokens(i)` is
/// the stand-in token count of the first sentence answering caller turn `i` (1-based).
pub async fn add_call(
    js: &async_nats::jetstream::Context,
    report: &CallReport,
    expected: &Expected,
    tokens: impl Fn(usize) -> u64,
    samples: &mut Samples,
) -> anyhow::Result<()> {
    let sid = CallSid::parse(&report.call_sid)?;
    let log = CallLog::load_turns(js, &sid).await?;
    let answered = latency::turns(&log)
        .into_iter()
        .filter(|t| t.transcript.is_some());
    for (heard, (i, caller)) in answered.zip(report.turns.iter().enumerate().skip(1)) {
        let Some(first_heard_ms) = caller.first_bot_audio_ms else {
            continue;
        };
        let caller_us = |ms: u64| report.started_at_us + ms * 1_000;
        let points = [
            Some(caller_us(caller.speech_end_ms)),
            heard.speech_end,
            heard.transcript,
            heard.first_token,
            heard.first_sentence,
            heard.first_audio,
            Some(caller_us(first_heard_ms)),
        ];
        let Some(points) = points.into_iter().collect::<Option<Vec<u64>>>() else {
            continue;
        };
        let configured = expected.per_step(tokens(i));
        for (step, pair) in points.windows(2).enumerate() {
            let ms = (pair[1] as f64 - pair[0] as f64) / 1e3;
            samples[step].push(ms - configured[step]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_carries_only_its_own_configured_delay() {
        let expected = Expected {
            delays: Delays {
                stt_final_ms: 150,
                llm_ttft_ms: 200,
                llm_token_ms: 2,
                tts_first_byte_ms: 150,
            },
            endpointing_ms: 300,
        };
        assert_eq!(expected.per_step(14), [0.0, 450.0, 200.0, 26.0, 150.0, 0.0]);
        assert_eq!(expected.per_step(1)[3], 0.0);
        assert_eq!(expected.per_step(0)[3], 0.0);
    }
}
