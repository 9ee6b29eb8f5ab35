//! One call's keypad entry: the caller's single key presses (Twilio `dtmf` messages)
//! assembled into complete entries by the tenant's `[tenant.keypad]` rules (ARCHITECTURE
//! §2e).
//!
//! Consumes key presses and the clock; produces [`sb_schemas::Keypad`] entries (the caller
//! publishes each as a `keypad` event, on a new turn). An entry ends with the terminator
//! key (not part of it; a lone terminator is nothing), at `max_digits` digits, or
//! `timeout_ms` after its last key; a first key bound to an action (`*` → repeat, `0` →
//! transfer when the tenant can transfer) is an entry of its own at once. A disabled
//! keypad produces nothing. State: the digits so far and the time of the last one, in the
//! socket's task; an entry cut short by the socket closing is dropped (the single `dtmf`
//! events are in the log).

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use sb_runtime::tenants::{KEYS, KeyAction, Keypad};
use sb_schemas::KeypadEnd;
use tokio::time::Instant;

/// A key press that is not a key of a telephone keypad (one of [`KEYS`]); ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key:?} is not a keypad key")]
pub struct InvalidKey {
    /// The press as Twilio sent it (at most 8 characters kept).
    pub key: String,
}

/// One call's entry in progress, under one tenant's rules.
#[derive(Debug, Clone)]
pub struct Entry {
    enabled: bool,
    /// `None`: no key ends an entry early.
    terminator: Option<char>,
    timeout: Duration,
    max_digits: usize,
    /// Keys that are an entry of their own when they come first (a transfer key only when
    /// the tenant can transfer: otherwise it is an ordinary digit).
    actions: BTreeSet<char>,
    digits: String,
    /// When the last digit came; `None` while no entry is open.
    last: Option<Instant>,
    /// Entries complete but not yet handed out, oldest first, with when they completed:
    /// one press can end two (a timeout noticed only when the next key came, then that
    /// key's own); [`Entry::due`] hands them out at once.
    ready: VecDeque<(Instant, sb_schemas::Keypad)>,
}

impl Entry {
    /// An empty entry; `transfer_available`: the tenant has a `transfer_number`.
    pub fn new(keypad: &Keypad, transfer_available: bool) -> Self {
        let actions = keypad
            .actions
            .iter()
            .filter(|(_, action)| transfer_available || **action != KeyAction::Transfer)
            .filter_map(|(key, _)| as_key(key))
            .collect();
        Self {
            enabled: keypad.enabled,
            terminator: as_key(&keypad.terminator),
            timeout: Duration::from_millis(u64::from(keypad.timeout_ms)),
            max_digits: usize::try_from(keypad.max_digits.max(1)).unwrap_or(usize::MAX),
            actions,
            digits: String::new(),
            last: None,
            ready: VecDeque::new(),
        }
    }

    /// One key press at `now`: the entry it completes, if any. An entry that timed out
    /// before this key is returned first (this key then starts the next one); should this
    /// key complete an entry too, that one waits for [`Entry::due`], due at once.
    pub fn press(
        &mut self,
        key: &str,
        now: Instant,
    ) -> Result<Option<sb_schemas::Keypad>, InvalidKey> {
        let Some(key) = as_key(key) else {
            return Err(InvalidKey {
                key: key.chars().take(8).collect(),
            });
        };
        if !self.enabled {
            return Ok(None);
        }
        if let Some(timed_out) = self.timed_out(now) {
            self.ready.push_back((now, timed_out));
        }
        if let Some(complete) = self.add(key, now) {
            self.ready.push_back((now, complete));
        }
        Ok(self.ready.pop_front().map(|(_, entry)| entry))
    }

    /// When [`Entry::due`] has something: the open entry's timeout, or now for an entry
    /// already complete. `None` while nothing is pending.
    pub fn deadline(&self) -> Option<Instant> {
        if let Some((at, _)) = self.ready.front() {
            return Some(*at);
        }
        self.last.map(|last| last + self.timeout)
    }

    /// The entry complete at `now`, if any (by timeout, or one [`Entry::press`] held back).
    pub fn due(&mut self, now: Instant) -> Option<sb_schemas::Keypad> {
        if let Some((_, ready)) = self.ready.pop_front() {
            return Some(ready);
        }
        self.timed_out(now)
    }

    /// The open entry, ended by its timeout if that has passed at `now`.
    fn timed_out(&mut self, now: Instant) -> Option<sb_schemas::Keypad> {
        let last = self.last?;
        (now >= last + self.timeout).then(|| self.close(KeypadEnd::Timeout))
    }

    /// Adds `key` to the entry; the entry it completes, if any.
    fn add(&mut self, key: char, now: Instant) -> Option<sb_schemas::Keypad> {
        if self.terminator == Some(key) {
            // A lone terminator ends nothing.
            return (!self.digits.is_empty()).then(|| self.close(KeypadEnd::Terminator));
        }
        self.digits.push(key);
        if self.digits.len() == 1 && self.actions.contains(&key) {
            return Some(self.close(KeypadEnd::Action));
        }
        if self.digits.len() >= self.max_digits {
            return Some(self.close(KeypadEnd::MaxDigits));
        }
        self.last = Some(now);
        None
    }

    fn close(&mut self, ended_by: KeypadEnd) -> sb_schemas::Keypad {
        self.last = None;
        sb_schemas::Keypad {
            digits: std::mem::take(&mut self.digits),
            ended_by,
        }
    }
}

/// `key` as one keypad key, if it is one.
fn as_key(key: &str) -> Option<char> {
    let mut chars = key.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if KEYS.contains(c) => Some(c),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(3000);

    fn keypad() -> Keypad {
        Keypad::default()
    }

    fn done(digits: &str, ended_by: KeypadEnd) -> sb_schemas::Keypad {
        sb_schemas::Keypad {
            digits: digits.into(),
            ended_by,
        }
    }

    fn entry(digits: &str, ended_by: KeypadEnd) -> Option<sb_schemas::Keypad> {
        Some(done(digits, ended_by))
    }

    /// Presses `keys` one after the other, 100 ms apart, from `at`; every entry produced.
    fn press_all(e: &mut Entry, keys: &str, at: Instant) -> Vec<sb_schemas::Keypad> {
        let mut done = Vec::new();
        for (i, key) in keys.chars().enumerate() {
            let now = at + Duration::from_millis(100 * i as u64);
            let pressed = e.press(&key.to_string(), now).expect("a valid key");
            done.extend(pressed);
        }
        done
    }

    /// The terminator ends an entry and is not part of it; nothing is pending afterwards.
    #[test]
    fn the_terminator_ends_an_entry_without_itself() {
        let mut e = Entry::new(&keypad(), true);
        let t0 = Instant::now();
        assert_eq!(
            press_all(&mut e, "4417#", t0),
            [done("4417", KeypadEnd::Terminator)]
        );
        assert_eq!(e.deadline(), None);
        assert_eq!(e.due(t0 + TIMEOUT * 2), None);
    }

    /// A lone terminator produces nothing and opens nothing.
    #[test]
    fn a_lone_terminator_is_nothing() {
        let mut e = Entry::new(&keypad(), true);
        let t0 = Instant::now();
        assert_eq!(e.press("#", t0), Ok(None));
        assert_eq!(e.deadline(), None);
    }

    /// Without a terminator configured, `#` is a digit like any other.
    #[test]
    fn no_terminator_makes_hash_a_digit() {
        let rules = Keypad {
            terminator: String::new(),
            ..keypad()
        };
        let mut e = Entry::new(&rules, true);
        let t0 = Instant::now();
        assert!(press_all(&mut e, "12#", t0).is_empty());
        assert_eq!(e.due(t0 + TIMEOUT * 2), entry("12#", KeypadEnd::Timeout));
    }

    /// `max_digits` ends the entry at its last digit, at once.
    #[test]
    fn max_digits_ends_the_entry() {
        let rules = Keypad {
            max_digits: 4,
            ..keypad()
        };
        let mut e = Entry::new(&rules, true);
        let t0 = Instant::now();
        assert_eq!(
            press_all(&mut e, "123456", t0),
            [done("1234", KeypadEnd::MaxDigits)]
        );
        // The next two digits opened a new entry.
        assert_eq!(e.due(t0 + TIMEOUT * 2), entry("56", KeypadEnd::Timeout));
    }

    /// The timeout runs from the last key: not due one millisecond early, due on time,
    /// and each key pushes it back.
    #[tokio::test(start_paused = true)]
    async fn the_timeout_runs_from_the_last_key() {
        let mut e = Entry::new(&keypad(), true);
        let t0 = Instant::now();
        assert_eq!(e.press("1", t0), Ok(None));
        assert_eq!(e.deadline(), Some(t0 + TIMEOUT));
        let t1 = t0 + Duration::from_millis(2000);
        assert_eq!(e.press("2", t1), Ok(None));
        assert_eq!(e.deadline(), Some(t1 + TIMEOUT));
        tokio::time::sleep_until(t1 + TIMEOUT - Duration::from_millis(1)).await;
        assert_eq!(e.due(Instant::now()), None);
        tokio::time::sleep_until(e.deadline().expect("an open entry")).await;
        assert_eq!(e.due(Instant::now()), entry("12", KeypadEnd::Timeout));
        assert_eq!(e.deadline(), None);
        assert_eq!(e.due(Instant::now() + TIMEOUT), None);
    }

    /// A first key bound to an action is an entry of its own at once (`*` always, `0`
    /// only when the tenant can transfer); later in an entry they are digits.
    #[test]
    fn a_first_action_key_is_an_entry_at_once() {
        let t0 = Instant::now();
        let mut e = Entry::new(&keypad(), true);
        assert_eq!(e.press("*", t0), Ok(entry("*", KeypadEnd::Action)));
        assert_eq!(e.press("0", t0), Ok(entry("0", KeypadEnd::Action)));
        assert_eq!(e.deadline(), None);
        assert_eq!(
            press_all(&mut e, "10*#", t0),
            [done("10*", KeypadEnd::Terminator)]
        );

        let mut e = Entry::new(&keypad(), false);
        assert_eq!(
            e.press("0", t0),
            Ok(None),
            "no transfer number: 0 is a digit"
        );
        assert_eq!(e.press("#", t0), Ok(entry("0", KeypadEnd::Terminator)));
        assert_eq!(e.press("*", t0), Ok(entry("*", KeypadEnd::Action)));

        let rules = Keypad {
            actions: BTreeMap::new(),
            ..keypad()
        };
        let mut e = Entry::new(&rules, true);
        assert_eq!(e.press("*", t0), Ok(None), "no actions: * is a digit");
    }

    /// A disabled keypad never produces an entry, whatever the keys.
    #[test]
    fn a_disabled_keypad_produces_nothing() {
        let rules = Keypad {
            enabled: false,
            ..keypad()
        };
        let mut e = Entry::new(&rules, true);
        let t0 = Instant::now();
        assert!(press_all(&mut e, "*0123456789012345678#", t0).is_empty());
        assert_eq!(e.deadline(), None);
        assert_eq!(e.due(t0 + TIMEOUT * 10), None);
    }

    /// What is not one keypad key is refused (for the caller to count) and changes nothing.
    #[test]
    fn invalid_keys_are_refused_and_ignored() {
        let mut e = Entry::new(&keypad(), true);
        let t0 = Instant::now();
        assert_eq!(e.press("1", t0), Ok(None));
        for bad in ["", "x", "12", "é", "##", " 1"] {
            let error = e.press(bad, t0).expect_err(bad);
            assert_eq!(error.key, bad);
        }
        assert_eq!(
            e.press("x".repeat(100).as_str(), t0)
                .map_err(|e| e.key.len()),
            Err(8)
        );
        assert_eq!(
            e.deadline(),
            Some(t0 + TIMEOUT),
            "the open entry is untouched"
        );
        assert_eq!(e.press("#", t0), Ok(entry("1", KeypadEnd::Terminator)));
    }

    /// A key after the timeout passed unnoticed returns the timed-out entry first and
    /// starts the next one; if it completes an entry too, that one is due at once.
    #[test]
    fn a_late_key_settles_the_timed_out_entry_first() {
        let mut e = Entry::new(&keypad(), true);
        let t0 = Instant::now();
        assert_eq!(e.press("1", t0), Ok(None));
        let late = t0 + TIMEOUT * 2;
        assert_eq!(e.press("2", late), Ok(entry("1", KeypadEnd::Timeout)));
        assert_eq!(e.deadline(), Some(late + TIMEOUT));

        let later = late + TIMEOUT * 2;
        assert_eq!(e.press("*", later), Ok(entry("2", KeypadEnd::Timeout)));
        assert_eq!(e.deadline(), Some(later), "the held-back entry is due now");
        assert_eq!(e.due(later), entry("*", KeypadEnd::Action));
        assert_eq!(e.deadline(), None);
    }
}
