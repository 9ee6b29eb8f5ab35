//! The one definition of a stale turn: [`Progress::stale`].
//!
//! Consumes a call's progress (its latest turn and its barge-in token, as the session
//! holds them); produces the verdict every stage acts on through
//! [`crate::Emitter::still_wanted`]: the work of turn `t` is unwanted once the caller
//! barged in on it or a newer turn started. State: none.

/// Why a turn's work is no longer wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// The caller barged in on this turn (or a later one).
    Interrupted,
    /// A newer turn started (the caller said something else first).
    Superseded,
}

impl Stale {
    /// The metric label (`interrupted`, `superseded`).
    pub fn as_str(self) -> &'static str {
        match self {
            Stale::Interrupted => "interrupted",
            Stale::Superseded => "superseded",
        }
    }
}

/// A call's latest turn and barge-in token (one past the highest interrupted turn).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub turn: u32,
    pub bargein: u64,
}

impl Progress {
    /// Whether the work of `turn` is stale, and why. The ingress drops the same audio
    /// (barge-in token, newest turn seen), so a stage that stops here loses nothing heard.
    pub fn stale(&self, turn: u32) -> Option<Stale> {
        if u64::from(turn) < self.bargein {
            Some(Stale::Interrupted)
        } else if self.turn > turn {
            Some(Stale::Superseded)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one staleness rule, as a table: (latest turn, barge-in token, turn asked) → verdict.
    #[test]
    fn stale_table() {
        let cases = [
            // Nothing happened: the greeting and the current turn are wanted.
            (0, 0, 0, None),
            (3, 0, 3, None),
            // A barge-in on turn 3 makes 3 and everything before it stale.
            (3, 4, 3, Some(Stale::Interrupted)),
            (3, 4, 0, Some(Stale::Interrupted)),
            // A barge-in on the greeting (token 1) leaves turn 1 wanted.
            (1, 1, 1, None),
            // A newer turn supersedes an older, uninterrupted one.
            (4, 0, 3, Some(Stale::Superseded)),
            // Interrupted wins over superseded when both hold.
            (5, 4, 3, Some(Stale::Interrupted)),
            // A turn ahead of the counter (a stage racing the stt) is wanted.
            (2, 0, 3, None),
        ];
        for (turn, bargein, asked, expected) in cases {
            let progress = Progress { turn, bargein };
            assert_eq!(progress.stale(asked), expected, "{progress:?} turn {asked}");
        }
    }
}
