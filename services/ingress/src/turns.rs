//! Turn-taking on the caller's voice: pause the bot at once, decide after.
//!
//! Consumes the voice detector's verdicts on the caller's audio (one per 16 ms, stamped
//! with the time its 20 ms Twilio frame arrived), whether bot audio is playing, the
//! barge-in policy's word triggers and the clock; produces [`Decision`]s for the call:
//! pause the bot (Twilio `clear`, playback held) once the caller's voice has lasted
//! `min_interruption_ms` over the bot; resume it when the voice stopped
//! `false_interruption_ms` ago without qualifying words; in `speech` mode the pause is the
//! barge-in itself. It also remembers when the caller's last voice ended (the start of the
//! voice-to-voice latency) and when a voice began (the start of the onset → `clear`
//! latency). State: one small machine per call, in the socket task's memory; no I/O.

use std::time::Duration;

use sb_runtime::tenants::{BargeInMode, TurnTaking};
use tokio::time::Instant;

/// Unvoiced audio that ends a voice (pauses between syllables and words are shorter).
pub const VOICE_GAP: Duration = Duration::from_millis(150);
/// Unvoiced audio this short right after voiced audio is a dip inside a word (a comma,
/// a consonant): the voice's length still counts through it.
const DIP: Duration = Duration::from_millis(48);
/// One detector frame.
const FRAME: Duration = Duration::from_millis(sb_audio::voice::FRAME_MS as u64);
/// A frame scoring this share of the threshold may be a voice's first: the detector needs
/// a frame of context before its score reaches the threshold, so a voice confirmed by the
/// next frame is dated from this one.
const ONSET_SHARE: f32 = 0.6;

/// What the call should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Pause the bot: send `clear`, hold the playback. `onset`: when the voice began.
    Pause { onset: Instant },
    /// Barge in at once (`speech` mode: any voice that long interrupts).
    BargeIn { onset: Instant },
    /// The pause was a false interruption: play on.
    Resume,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No caller voice.
    Quiet,
    /// The caller's voice, not (or not yet) over the bot; `spent` once it barged in.
    Voice {
        onset: Instant,
        last: Instant,
        spent: bool,
    },
    /// The bot is paused for the caller's voice; `voicing` while it lasts.
    Paused {
        onset: Instant,
        last: Instant,
        voicing: bool,
    },
}

/// One call's turn-taking.
#[derive(Debug, Clone)]
pub struct Turns {
    mode: BargeInMode,
    threshold: f32,
    /// The start of a frame that may begin a voice (see [`ONSET_SHARE`]).
    tentative: Option<Instant>,
    min_interruption: Duration,
    false_interruption: Duration,
    state: State,
    /// When the caller's last voice ended, until bot audio answers it.
    caller_ended: Option<Instant>,
}

impl Turns {
    pub fn new(mode: BargeInMode, settings: &TurnTaking) -> Self {
        Self {
            mode,
            threshold: settings.vad_threshold,
            tentative: None,
            min_interruption: Duration::from_millis(u64::from(settings.min_interruption_ms)),
            false_interruption: Duration::from_millis(u64::from(settings.false_interruption_ms)),
            state: State::Quiet,
            caller_ended: None,
        }
    }

    /// The detector's score for a frame that arrived at `at`; `bot_playing`: bot audio is
    /// pending or playing (a paused bot counts).
    pub fn on_verdict(&mut self, at: Instant, score: f32, bot_playing: bool) -> Option<Decision> {
        let voice = score >= self.threshold;
        let start = at.checked_sub(FRAME).unwrap_or(at);
        let tentative = std::mem::take(&mut self.tentative);
        match (self.state, voice) {
            (State::Quiet, true) => {
                let onset = tentative.unwrap_or(start);
                self.state = State::Voice {
                    onset,
                    last: at,
                    spent: false,
                };
                self.caller_ended = None;
                self.over_bot(at, bot_playing)
            }
            (State::Voice { onset, spent, .. }, true) => {
                self.state = State::Voice {
                    onset,
                    last: at,
                    spent,
                };
                self.over_bot(at, bot_playing)
            }
            (State::Voice { last, .. }, false) => {
                let since = at.duration_since(last);
                if since >= VOICE_GAP {
                    self.state = State::Quiet;
                    self.caller_ended = Some(last);
                    None
                } else if since <= DIP {
                    // A dip inside a word: the voice goes on.
                    self.over_bot(at, bot_playing)
                } else {
                    None
                }
            }
            (State::Paused { onset, .. }, true) => {
                self.state = State::Paused {
                    onset,
                    last: at,
                    voicing: true,
                };
                None
            }
            (
                State::Paused {
                    onset,
                    last,
                    voicing: true,
                },
                false,
            ) => {
                if at.duration_since(last) >= VOICE_GAP {
                    self.state = State::Paused {
                        onset,
                        last,
                        voicing: false,
                    };
                    self.caller_ended = Some(last);
                }
                None
            }
            (State::Quiet, false) => {
                if score >= self.threshold * ONSET_SHARE {
                    self.tentative = Some(start);
                }
                None
            }
            (State::Paused { .. }, false) => None,
        }
    }

    /// The caller's voice has lasted long enough over the bot: pause (or barge in).
    fn over_bot(&mut self, at: Instant, bot_playing: bool) -> Option<Decision> {
        let State::Voice {
            onset,
            last,
            spent: false,
        } = self.state
        else {
            return None;
        };
        if !bot_playing || at.duration_since(onset) < self.min_interruption {
            return None;
        }
        if self.mode == BargeInMode::Speech {
            self.state = State::Voice {
                onset,
                last,
                spent: true,
            };
            return Some(Decision::BargeIn { onset });
        }
        self.state = State::Paused {
            onset,
            last,
            voicing: true,
        };
        Some(Decision::Pause { onset })
    }

    /// When [`Self::poll`] will resume a paused bot, if nothing else happens first.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Paused {
                last,
                voicing: false,
                ..
            } => Some(last + self.false_interruption),
            _ => None,
        }
    }

    /// A due resume.
    pub fn poll(&mut self, now: Instant) -> Option<Decision> {
        let due = self.deadline()?;
        if now < due {
            return None;
        }
        self.state = State::Quiet;
        Some(Decision::Resume)
    }

    /// The pause ended otherwise (qualifying words barged in, a newer turn took over, or
    /// the playback had nothing left to pause): the caller's voice, if any, goes on.
    pub fn pause_over(&mut self) {
        if let State::Paused {
            onset,
            last,
            voicing,
        } = self.state
        {
            self.state = if voicing {
                State::Voice {
                    onset,
                    last,
                    spent: true,
                }
            } else {
                State::Quiet
            };
        }
    }

    /// Whether the bot is paused for the caller.
    pub fn is_paused(&self) -> bool {
        matches!(self.state, State::Paused { .. })
    }

    /// When the caller's current voice began, if it is speaking.
    pub fn onset(&self) -> Option<Instant> {
        match self.state {
            State::Voice { onset, .. } | State::Paused { onset, .. } => Some(onset),
            State::Quiet => None,
        }
    }

    /// When the caller's last voice ended, once: the start of the voice-to-voice latency
    /// the first frame of the next bot turn closes. `None` while the caller speaks.
    pub fn take_caller_ended(&mut self) -> Option<Instant> {
        match self.state {
            State::Quiet | State::Paused { voicing: false, .. } => self.caller_ended.take(),
            _ => None,
        }
    }
}

#[cfg(test)]
#[path = "turns_tests.rs"]
mod tests;
