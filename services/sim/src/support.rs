//! Small pieces the Deepgram, LLM and TTS stand-ins share: API keys that never print,
//! deterministic fault dice, counters by name, and running a stand-in from the command
//! line.
//!
//! Consumes configuration values; produces auth decisions, fault picks and the
//! `listening on …` line. State: the dice's request counter and the tallies (per server).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::SimServer;

/// An API key a stand-in expects. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Whether `presented` is this key.
    pub fn matches(&self, presented: &str) -> bool {
        self.0 == presented
    }

    /// The key itself (for tests and clients that must send it).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl From<&str> for ApiKey {
    fn from(key: &str) -> Self {
        Self(key.to_owned())
    }
}

impl FromStr for ApiKey {
    type Err = std::convert::Infallible;
    fn from_str(key: &str) -> Result<Self, Self::Err> {
        Ok(Self(key.to_owned()))
    }
}

/// Whether a presented key is accepted: any non-empty key when none is configured.
pub(crate) fn key_accepted(expected: Option<&ApiKey>, presented: Option<&str>) -> bool {
    match (expected, presented.map(str::trim)) {
        (_, None | Some("")) => false,
        (None, Some(_)) => true,
        (Some(expected), Some(presented)) => expected.matches(presented),
    }
}

/// The credential after `scheme ` in an `Authorization` header (scheme case-insensitive).
pub(crate) fn credential<'a>(
    header: Option<&'a http::HeaderValue>,
    schemes: &[&str],
) -> Option<&'a str> {
    let value = header?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    schemes
        .iter()
        .any(|s| s.eq_ignore_ascii_case(scheme))
        .then_some(rest.trim())
}

/// Deterministic fault selection: request *n* draws `frac(seed·φ + n·φ)` (a Weyl sequence,
/// so over any run of requests each fault's share is met to within one request) and the
/// unit interval is cut into consecutive slices, one per fault, in the order given.
#[derive(Debug, Default)]
pub struct FaultDice {
    seed: u64,
    drawn: AtomicU64,
}

/// The golden ratio's fractional part.
const PHI: f64 = 0.618_033_988_749_894_9;

impl FaultDice {
    /// Dice for a server; the same seed gives the same sequence.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            drawn: AtomicU64::new(0),
        }
    }

    /// The next draw in `[0, 1)`.
    pub fn draw(&self) -> f64 {
        let n = self.drawn.fetch_add(1, Ordering::Relaxed);
        ((self.seed as f64 + n as f64) * PHI + 0.5 * PHI).fract()
    }

    /// Draws once and returns the index of the share the draw fell in (`None`: no fault).
    /// Shares are clamped to `[0, 1]`; a share of 1 always hits.
    pub fn pick(&self, shares: &[f64]) -> Option<usize> {
        let draw = self.draw();
        let mut edge = 0.0;
        for (index, share) in shares.iter().enumerate() {
            edge += share.clamp(0.0, 1.0);
            if draw < edge {
                return Some(index);
            }
        }
        None
    }
}

/// Counts by name (a language asked for, a voice spoken with), for `GET /sim/stats`.
#[derive(Debug, Default)]
pub struct Tally(Mutex<BTreeMap<String, u64>>);

impl Tally {
    /// Counts one more `name`.
    pub fn add(&self, name: &str) {
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *counts.entry(name.to_owned()).or_default() += 1;
    }

    /// The counts so far, by name.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Prints `listening on http://…` as the first line of standard output, then serves until
/// Ctrl-C or SIGTERM.
pub(crate) async fn announce_and_serve(server: SimServer) -> anyhow::Result<()> {
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {}", server.http_url())?;
        stdout.flush()?;
    }
    tracing::info!(addr = %server.addr(), "stand-in listening");
    shutdown_signal().await?;
    tracing::info!("stand-in stopping");
    server.stop().await;
    Ok(())
}

async fn shutdown_signal() -> std::io::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = terminate.recv() => Ok(()),
    }
}

/// Script lines from `--script` options and a `--script-file` (one line each, blanks and
/// `#` comments skipped).
pub(crate) fn script_lines(
    lines: &[String],
    file: Option<&std::path::Path>,
) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = lines.to_vec();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|err| anyhow::anyhow!("reading script file {}: {err}", path.display()))?;
        out.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shares are met over a run: 30 % of 1000 draws hit the first slice (±1), 10 % the
    /// second, and the rest none; share 1.0 always hits, 0.0 never.
    #[test]
    fn dice_meet_their_shares() {
        let dice = FaultDice::new(7);
        let mut counts = [0; 3];
        for _ in 0..1_000 {
            match dice.pick(&[0.3, 0.1]) {
                Some(i) => counts[i] += 1,
                None => counts[2] += 1,
            }
        }
        assert!((299..=301).contains(&counts[0]), "{counts:?}");
        assert!((99..=101).contains(&counts[1]), "{counts:?}");
        let always = FaultDice::new(0);
        assert!((0..100).all(|_| always.pick(&[1.0]) == Some(0)));
        assert!((0..100).all(|_| always.pick(&[0.0, 0.0]).is_none()));
    }

    /// Keys: any non-empty key passes when none is configured; a configured key must match;
    /// Debug never shows the key.
    #[test]
    fn keys() {
        let key = ApiKey::from("sekrit");
        assert!(key_accepted(None, Some("anything")));
        assert!(!key_accepted(None, Some(" ")));
        assert!(!key_accepted(Some(&key), None));
        assert!(key_accepted(Some(&key), Some("sekrit")));
        assert!(!key_accepted(Some(&key), Some("nope")));
        assert!(!format!("{key:?}").contains("sekrit"));
        let header = http::HeaderValue::from_static("token abc");
        assert_eq!(credential(Some(&header), &["Token", "Bearer"]), Some("abc"));
        assert_eq!(credential(Some(&header), &["Bearer"]), None);
    }
}
