//! The global AIMD limit on concurrent LLM requests (ARCHITECTURE §7).
//!
//! Consumes request outcomes; produces permits. The limit grows by one per successful
//! request and halves on a 429 (once per congestion event: a 429 from a request that
//! started before the last decrease does not halve again), always within `[min, max]`. A
//! 429's `retry-after` also closes the gate for everyone until it passes: a request that
//! cannot start before its deadline fails at once instead of waiting (the caller hears the
//! fallback now, not silence). Exported as the `switchboard_llm_concurrency_limit` gauge.
//! State: the limit, the requests in flight and the gate, in this process (each replica
//! adapts on its own).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sb_runtime::metrics::Metric;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Bounds and starting point of the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AimdBounds {
    pub initial: u32,
    pub min: u32,
    pub max: u32,
}

/// The pure arithmetic, separate from waiting so it can be tested as a table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Window {
    limit: u32,
    min: u32,
    max: u32,
    /// Bumped on every decrease; a permit remembers the epoch it started in.
    epoch: u64,
}

impl Window {
    fn new(bounds: AimdBounds) -> Self {
        let min = bounds.min.max(1);
        let max = bounds.max.max(min);
        Self {
            limit: bounds.initial.clamp(min, max),
            min,
            max,
            epoch: 0,
        }
    }

    fn success(&mut self) {
        self.limit = (self.limit + 1).min(self.max);
    }

    /// Halves unless this congestion event was already answered.
    fn rate_limited(&mut self, started_epoch: u64) {
        if started_epoch == self.epoch {
            self.limit = (self.limit / 2).max(self.min);
            self.epoch += 1;
        }
    }
}

struct State {
    window: Window,
    in_flight: u32,
    /// No request starts before this instant (a 429's `retry-after`).
    gate: Option<Instant>,
}

/// Why no permit was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AimdWait {
    #[error("the llm concurrency limit stayed full until the deadline")]
    Full,
    #[error("the llm provider asked to retry after the deadline")]
    Gated,
}

impl AimdWait {
    pub fn kind(self) -> &'static str {
        match self {
            AimdWait::Full => "queue_timeout",
            AimdWait::Gated => "rate_limited",
        }
    }
}

/// The shared limiter. Clone the `Arc`.
pub struct Aimd {
    state: Mutex<State>,
    released: Notify,
}

impl std::fmt::Debug for Aimd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aimd")
            .field("limit", &self.limit())
            .finish_non_exhaustive()
    }
}

impl Aimd {
    pub fn new(bounds: AimdBounds) -> Arc<Self> {
        let aimd = Arc::new(Self {
            state: Mutex::new(State {
                window: Window::new(bounds),
                in_flight: 0,
                gate: None,
            }),
            released: Notify::new(),
        });
        aimd.publish(&aimd.lock());
        aimd
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish(&self, state: &State) {
        metrics::gauge!(Metric::LlmConcurrencyLimit.name()).set(f64::from(state.window.limit));
    }

    /// The current limit.
    pub fn limit(&self) -> u32 {
        self.lock().window.limit
    }

    /// Requests holding a permit.
    pub fn in_flight(&self) -> u32 {
        self.lock().in_flight
    }

    /// Waits for a permit until `deadline`.
    pub async fn acquire(self: &Arc<Self>, deadline: Instant) -> Result<AimdPermit, AimdWait> {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let wake = {
                let mut state = self.lock();
                let now = Instant::now();
                match state.gate {
                    Some(gate) if gate > now => {
                        if gate > deadline {
                            return Err(AimdWait::Gated);
                        }
                        Some(gate)
                    }
                    _ => {
                        state.gate = None;
                        if state.in_flight < state.window.limit {
                            state.in_flight += 1;
                            return Ok(AimdPermit {
                                aimd: Arc::clone(self),
                                epoch: state.window.epoch,
                                done: false,
                            });
                        }
                        None
                    }
                }
            };
            match wake {
                Some(gate) => tokio::time::sleep_until(gate).await,
                None => {
                    if tokio::time::timeout_at(deadline, released).await.is_err() {
                        return Err(AimdWait::Full);
                    }
                }
            }
        }
    }

    fn release(&self, outcome: Outcome) {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        match outcome {
            Outcome::Success => state.window.success(),
            Outcome::Neutral => {}
        }
        self.publish(&state);
        drop(state);
        self.released.notify_waiters();
    }
}

enum Outcome {
    Success,
    Neutral,
}

/// One LLM request's place under the limit. Report how it went; dropping it without a
/// report counts as neither success nor 429.
pub struct AimdPermit {
    aimd: Arc<Aimd>,
    epoch: u64,
    done: bool,
}

impl AimdPermit {
    /// The request succeeded: the limit grows by one.
    pub fn success(mut self) {
        self.done = true;
        self.aimd.release(Outcome::Success);
    }

    /// The provider answered 429: the limit halves and new requests wait `retry_after`.
    /// Keeps the permit (a retry of the same request reuses it); it is released on drop.
    pub fn rate_limited(&mut self, retry_after: Option<Duration>) {
        let mut state = self.aimd.lock();
        state.window.rate_limited(self.epoch);
        self.epoch = state.window.epoch;
        if let Some(after) = retry_after {
            let until = Instant::now() + after;
            state.gate = Some(state.gate.map_or(until, |g| g.max(until)));
        }
        self.aimd.publish(&state);
    }
}

impl Drop for AimdPermit {
    fn drop(&mut self) {
        if !self.done {
            self.aimd.release(Outcome::Neutral);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy)]
    enum Ev {
        /// A success.
        Ok,
        /// A 429 from a request that started in the current epoch.
        Limited,
        /// A 429 from a request that started before the last decrease.
        LateLimited,
    }

    /// (bounds, events, expected limit): additive increase, multiplicative decrease, bounds,
    /// and one decrease per congestion event.
    #[test]
    fn window_table() {
        let b = |initial, min, max| AimdBounds { initial, min, max };
        let cases: &[(AimdBounds, &[Ev], u32)] = &[
            (b(10, 1, 100), &[], 10),
            (b(10, 1, 100), &[Ev::Ok, Ev::Ok, Ev::Ok], 13),
            (b(10, 1, 100), &[Ev::Limited], 5),
            (b(10, 1, 100), &[Ev::Limited, Ev::Limited], 2),
            (
                b(10, 1, 100),
                &[Ev::Limited, Ev::LateLimited, Ev::LateLimited],
                5,
            ),
            (b(10, 4, 100), &[Ev::Limited, Ev::Limited, Ev::Limited], 4),
            (b(99, 1, 100), &[Ev::Ok, Ev::Ok, Ev::Ok], 100),
            (b(10, 1, 100), &[Ev::Limited, Ev::Ok, Ev::Ok], 7),
            (b(500, 2, 64), &[], 64),
            (b(0, 0, 0), &[Ev::Ok], 1),
            (b(7, 1, 100), &[Ev::Limited], 3),
        ];
        for (bounds, events, expected) in cases {
            let mut w = Window::new(*bounds);
            for ev in *events {
                match ev {
                    Ev::Ok => w.success(),
                    Ev::Limited => w.rate_limited(w.epoch),
                    Ev::LateLimited => w.rate_limited(w.epoch.wrapping_sub(1)),
                }
            }
            assert_eq!(w.limit, *expected, "{bounds:?} {events:?}");
        }
    }

    /// Permits are limited; a release wakes a waiter; a full limit times out at the deadline.
    #[tokio::test(start_paused = true)]
    async fn permits_wait_and_time_out() {
        let aimd = Aimd::new(AimdBounds {
            initial: 2,
            min: 1,
            max: 4,
        });
        let soon = || Instant::now() + Duration::from_millis(100);
        let a = aimd.acquire(soon()).await.unwrap();
        let _b = aimd.acquire(soon()).await.unwrap();
        assert_eq!(aimd.acquire(soon()).await.err(), Some(AimdWait::Full));
        let waiter = {
            let aimd = Arc::clone(&aimd);
            tokio::spawn(async move { aimd.acquire(Instant::now() + Duration::from_secs(1)).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        a.success();
        let c = waiter.await.unwrap().expect("woken by the release");
        assert_eq!(aimd.limit(), 3);
        assert_eq!(aimd.in_flight(), 2);
        drop(c);
        assert_eq!(aimd.in_flight(), 1);
        assert_eq!(aimd.limit(), 3, "a dropped permit is neutral");
    }

    /// A 429 halves the limit once for the requests in flight, and its retry-after gates new
    /// requests: those whose deadline is earlier fail at once, later ones wait it out.
    #[tokio::test(start_paused = true)]
    async fn rate_limit_halves_once_and_gates() {
        let aimd = Aimd::new(AimdBounds {
            initial: 8,
            min: 1,
            max: 8,
        });
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut first = aimd.acquire(deadline).await.unwrap();
        let mut second = aimd.acquire(deadline).await.unwrap();
        first.rate_limited(Some(Duration::from_secs(2)));
        second.rate_limited(Some(Duration::from_secs(2)));
        assert_eq!(
            aimd.limit(),
            4,
            "two 429s of one congestion event halve once"
        );
        drop((first, second));
        let started = Instant::now();
        assert_eq!(
            aimd.acquire(started + Duration::from_millis(500))
                .await
                .err(),
            Some(AimdWait::Gated)
        );
        assert_eq!(started.elapsed(), Duration::ZERO, "fails fast, no waiting");
        let permit = aimd
            .acquire(started + Duration::from_secs(3))
            .await
            .unwrap();
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "waited out retry-after"
        );
        let mut permit = permit;
        permit.rate_limited(None);
        drop(permit);
        assert_eq!(aimd.limit(), 2);
    }
}
