//! Runs a [`Scenario`]'s steps against the line: what to say and when.
//!
//! Consumes the scenario with its utterances already synthesised (so synthesis time never
//! skews latency), the line's command channel and its status; produces commands (speak,
//! dtmf, notes, hangup). State: none beyond the step being run; it waits on the line's
//! status, never on fixed sleeps, except where the scenario asks for time to pass.

use std::time::Duration;

use sb_audio::FRAME_BYTES;
use sb_audio::mulaw::SILENCE;
use tokio::sync::{mpsc, oneshot, watch};

use super::CallerError;
use super::line::{Command, LineStatus};
use super::scenario::{Scenario, Step, Utterance};

/// Samples quieter than this at the ends of an utterance are trimmed, so "end of speech"
/// is the end of the voice, not of espeak-ng's trailing silence.
const TRIM_BELOW: i16 = 100;

/// An utterance as µ-law frames.
#[derive(Debug, Clone)]
pub(crate) struct Spoken {
    pub(crate) text: String,
    pub(crate) audio: Vec<u8>,
}

/// Synthesises every `say` of the scenario, in step order: espeak-ng, or speech-like tone
/// bursts when the scenario or step asks for tones or espeak-ng is not installed.
pub(crate) async fn synthesise(scenario: &Scenario) -> Result<Vec<Spoken>, CallerError> {
    let mut out = Vec::new();
    for step in &scenario.steps {
        if let Step::Say(utterance) = step {
            out.push(synthesise_one(scenario, utterance).await?);
        }
    }
    Ok(out)
}

async fn synthesise_one(scenario: &Scenario, utterance: &Utterance) -> Result<Spoken, CallerError> {
    let tones = scenario.tones || utterance.tone || !sb_audio::synth::espeak_available();
    let samples = if tones {
        sb_audio::synth::speechlike(&utterance.text)
    } else {
        let voice = utterance.voice.as_deref().unwrap_or(&scenario.voice);
        sb_audio::synth::speak(&utterance.text, voice).await?
    };
    let first = samples
        .iter()
        .position(|s| s.saturating_abs() >= TRIM_BELOW)
        .unwrap_or(0);
    let last = samples
        .iter()
        .rposition(|s| s.saturating_abs() >= TRIM_BELOW)
        .map_or(0, |i| i + 1);
    let mut audio = sb_audio::mulaw::encode_slice(&samples[first..last.max(first)]);
    let whole_frames = audio.len().div_ceil(FRAME_BYTES).max(1) * FRAME_BYTES;
    audio.resize(whole_frames, SILENCE);
    Ok(Spoken {
        text: utterance.text.clone(),
        audio,
    })
}

/// How long a barge-in step waits for the bot to start talking.
const BARGE_IN_WAIT: Duration = Duration::from_secs(30);

/// Runs the steps, then asks the line to hang up. Returns when the line is gone too.
pub(crate) async fn run_script(
    scenario: &Scenario,
    spoken: Vec<Spoken>,
    commands: mpsc::Sender<Command>,
    mut status: watch::Receiver<LineStatus>,
) {
    let mut spoken = spoken.into_iter();
    let quiet = Duration::from_millis(scenario.bot_quiet_ms);
    for (index, step) in scenario.steps.iter().enumerate() {
        let number = index + 1;
        let ok = match step {
            Step::Say(utterance) => {
                let Some(speech) = spoken.next() else { break };
                if let Some(after_ms) = utterance.barge_in_after_ms {
                    let started =
                        tokio::time::timeout(BARGE_IN_WAIT, status.wait_for(|s| s.bot_playing))
                            .await
                            .is_ok_and(|playing| playing.is_ok());
                    if !started {
                        note(
                            &commands,
                            format!("step {number}: bot never spoke; said it anyway"),
                        )
                        .await;
                    }
                    tokio::time::sleep(Duration::from_millis(after_ms)).await;
                }
                speak(&commands, speech).await
            }
            Step::WaitForBot { timeout_ms } => {
                let timeout = Duration::from_millis(*timeout_ms);
                match tokio::time::timeout(timeout, wait_for_bot(&mut status, quiet)).await {
                    Ok(ok) => ok,
                    Err(_) => {
                        note(
                            &commands,
                            format!("step {number}: wait_for_bot timed out after {timeout_ms} ms"),
                        )
                        .await;
                        true
                    }
                }
            }
            Step::Pause { ms } => {
                tokio::time::sleep(Duration::from_millis(*ms)).await;
                true
            }
            Step::Dtmf { digits } => {
                let mut ok = true;
                for digit in digits.chars() {
                    ok &= commands.send(Command::Dtmf { digit }).await.is_ok();
                }
                ok
            }
            Step::Hangup => break,
        };
        if !ok {
            return;
        }
    }
    let _ = commands.send(Command::Hangup).await;
}

async fn note(commands: &mpsc::Sender<Command>, text: String) {
    let _ = commands.send(Command::Note(text)).await;
}

/// Speaks and waits until the last frame went out. `false`: the line is gone.
async fn speak(commands: &mpsc::Sender<Command>, speech: Spoken) -> bool {
    let (done, sent) = oneshot::channel();
    let command = Command::Speak {
        text: speech.text,
        audio: speech.audio,
        done,
    };
    commands.send(command).await.is_ok() && sent.await.is_ok()
}

/// Waits until bot audio has started (since this call) and then stayed quiet for `quiet`:
/// nothing queued and nothing new received. `false`: the line is gone.
async fn wait_for_bot(status: &mut watch::Receiver<LineStatus>, quiet: Duration) -> bool {
    let before = status.borrow().bot_media_received;
    if status
        .wait_for(|s| s.bot_playing || s.bot_media_received > before)
        .await
        .is_err()
    {
        return false;
    }
    loop {
        let received = match status.wait_for(|s| !s.bot_playing).await {
            Ok(current) => current.bot_media_received,
            Err(_) => return false,
        };
        tokio::time::sleep(quiet).await;
        let current = status.borrow().clone();
        if !current.bot_playing && current.bot_media_received == received {
            return true;
        }
    }
}
