//! Twilio's playback queue for one stream, as the caller models it (PROTOCOLS §3.3, §3.5
//! item 4): bot audio is queued in arrival order and played at 8000 bytes/s; a mark is
//! echoed once everything queued before it has played (at once if nothing is queued);
//! `clear` drops the queued audio and echoes every pending mark at once.
//!
//! Consumes decoded outbound `media` bytes, `mark` names, `clear`s and "play 20 ms" ticks;
//! produces the audio as heard and the marks to echo. State: the queue, in memory; the
//! caller's line loop owns it and drives it from its 20 ms clock.

use std::collections::VecDeque;

use sb_audio::mulaw::SILENCE;

/// One queued item.
#[derive(Debug)]
enum Item {
    Audio(VecDeque<u8>),
    Mark(String),
}

/// The queue.
#[derive(Debug, Default)]
pub(crate) struct Playback {
    items: VecDeque<Item>,
    /// Audio bytes queued, for cheap `is_playing`.
    queued: usize,
}

/// What one tick of playback produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Played {
    /// Exactly the requested number of bytes: bot audio, then µ-law silence if it ran out.
    pub(crate) audio: Vec<u8>,
    /// How many of those bytes were bot audio.
    pub(crate) audio_bytes: usize,
    /// Marks whose preceding audio has now finished, in order.
    pub(crate) marks: Vec<String>,
}

impl Playback {
    /// Queues audio behind everything already queued.
    pub(crate) fn push_audio(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.queued += bytes.len();
        if let Some(Item::Audio(last)) = self.items.back_mut() {
            last.extend(bytes);
        } else {
            self.items
                .push_back(Item::Audio(bytes.iter().copied().collect()));
        }
    }

    /// Queues a mark. Returns it back when nothing is queued ahead of it: Twilio echoes
    /// such a mark immediately.
    pub(crate) fn push_mark(&mut self, name: String) -> Option<String> {
        if self.items.is_empty() {
            return Some(name);
        }
        self.items.push_back(Item::Mark(name));
        None
    }

    /// Plays `bytes` bytes (one tick of real time) and returns what was heard plus the
    /// marks that playback passed.
    pub(crate) fn play(&mut self, bytes: usize) -> Played {
        let mut played = Played {
            audio: Vec::with_capacity(bytes),
            ..Played::default()
        };
        while let Some(front) = self.items.front_mut() {
            match front {
                Item::Mark(_) => {
                    if let Some(Item::Mark(name)) = self.items.pop_front() {
                        played.marks.push(name);
                    }
                }
                Item::Audio(audio) => {
                    let want = bytes - played.audio.len();
                    if want == 0 {
                        break;
                    }
                    let take = want.min(audio.len());
                    played.audio.extend(audio.drain(..take));
                    self.queued -= take;
                    if audio.is_empty() {
                        self.items.pop_front();
                    }
                }
            }
        }
        played.audio_bytes = played.audio.len();
        played.audio.resize(bytes, SILENCE);
        played
    }

    /// Drops all queued audio; returns the pending marks (to echo now) and the number of
    /// audio bytes discarded.
    pub(crate) fn clear(&mut self) -> (Vec<String>, usize) {
        let dropped = self.queued;
        self.queued = 0;
        let marks = self
            .items
            .drain(..)
            .filter_map(|item| match item {
                Item::Mark(name) => Some(name),
                Item::Audio(_) => None,
            })
            .collect();
        (marks, dropped)
    }

    /// Whether bot audio is waiting to be played.
    pub(crate) fn is_playing(&self) -> bool {
        self.queued > 0
    }

    /// Queued audio bytes.
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mark is echoed on the tick that finishes the audio queued before it, not earlier.
    #[test]
    fn mark_echoes_after_its_audio_played() {
        let mut playback = Playback::default();
        playback.push_audio(&[1; 300]);
        assert_eq!(playback.push_mark("m1".into()), None);
        playback.push_audio(&[2; 100]);
        let first = playback.play(160);
        assert_eq!((first.audio_bytes, first.marks.len()), (160, 0));
        let second = playback.play(160);
        assert_eq!(
            second.marks,
            ["m1"],
            "the 300 bytes before m1 finished in this tick"
        );
        assert_eq!(&second.audio[..140], &[1; 140]);
        assert_eq!(&second.audio[140..], &[2; 20]);
        let third = playback.play(160);
        assert_eq!(third.audio_bytes, 80);
        assert_eq!(&third.audio[80..], &[SILENCE; 80]);
        assert!(!playback.is_playing());
    }

    /// With nothing queued, a mark comes straight back.
    #[test]
    fn mark_on_empty_queue_echoes_at_once() {
        let mut playback = Playback::default();
        assert_eq!(playback.push_mark("now".into()), Some("now".into()));
        assert_eq!(
            playback.play(160),
            Played {
                audio: vec![SILENCE; 160],
                audio_bytes: 0,
                marks: vec![]
            }
        );
    }

    /// `clear` drops the audio and hands back every pending mark immediately, in order.
    #[test]
    fn clear_echoes_pending_marks() {
        let mut playback = Playback::default();
        playback.push_audio(&[1; 1600]);
        playback.push_mark("a".into());
        playback.push_audio(&[2; 1600]);
        playback.push_mark("b".into());
        playback.play(160);
        assert_eq!(playback.queued_bytes(), 3040);
        let (marks, dropped) = playback.clear();
        assert_eq!(
            (marks, dropped),
            (vec!["a".to_owned(), "b".to_owned()], 3040)
        );
        assert!(!playback.is_playing());
        assert_eq!(playback.play(160).audio_bytes, 0);
    }
}
