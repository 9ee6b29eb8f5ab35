//! The AIMD arithmetic ([`Window`]) and this replica's own LLM limits ([`LocalLimits`]).
//!
//! The global limit on concurrent LLM requests grows by one per successful request and
//! halves on a 429, once per congestion event (a 429 from a request that started before
//! the last decrease does not halve again), always within `[min, max]`; a 429's
//! `retry-after` closes the gate for everyone until it passes (ARCHITECTURE §7). The
//! limits every replica shares keep this state in Redis
//! (`sb_runtime::redis::llm_limits`, whose scripts transcribe [`Window`]); [`LocalLimits`]
//! keeps the same state in process memory: the tenants' requests in flight, the window,
//! the gate. It is what a replica falls back on when Redis fails, and all there is for an
//! agent built without Redis (ring-2 tests); when the shared limits answer it mirrors
//! their limit, so a fall-back starts from the last limit known. Consumes claims and
//! outcomes; produces verdicts and the `switchboard_llm_concurrency_limit` gauge. State:
//! in this process.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use sb_runtime::metrics::Metric;
pub use sb_runtime::redis::llm_limits::AimdBounds;
use sb_runtime::redis::llm_limits::{Admission, AimdState, Attempt, LlmClaim};
use sb_schemas::TenantId;
use tokio::time::Instant;

/// The pure arithmetic, separate from waiting so it can be tested as a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    limit: u32,
    bounds: AimdBounds,
    /// Bumped on every decrease; a permit remembers the epoch it started in.
    epoch: u64,
}

impl Window {
    pub fn new(bounds: AimdBounds) -> Self {
        let bounds = bounds.normalised();
        Self {
            limit: bounds.initial,
            bounds,
            epoch: 0,
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn success(&mut self) {
        self.limit = (self.limit + 1).min(self.bounds.max);
    }

    /// Halves unless this congestion event was already answered.
    pub fn rate_limited(&mut self, started_epoch: u64) {
        if started_epoch == self.epoch {
            self.limit = (self.limit / 2).max(self.bounds.min);
            self.epoch += 1;
        }
    }

    /// Takes the limit another keeper reported (within the bounds); the epoch stays.
    fn observe(&mut self, limit: u32) {
        self.limit = limit.clamp(self.bounds.min, self.bounds.max);
    }
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

struct State {
    window: Window,
    /// Requests holding a local permit, in total and per tenant.
    in_flight: u32,
    tenants: HashMap<TenantId, u32>,
    /// No request starts before this instant (a 429's `retry-after`).
    gate: Option<Instant>,
}

/// The limits of this replica alone: the same verdicts as the shared scripts, from memory.
pub struct LocalLimits {
    state: Mutex<State>,
}

impl std::fmt::Debug for LocalLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLimits")
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl LocalLimits {
    pub fn new(bounds: AimdBounds) -> Self {
        let local = Self {
            state: Mutex::new(State {
                window: Window::new(bounds),
                in_flight: 0,
                tenants: HashMap::new(),
                gate: None,
            }),
        };
        publish(&local.lock().window);
        local
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current limit (in shared mode: the last one the shared limits reported).
    pub fn limit(&self) -> u32 {
        self.lock().window.limit
    }

    /// Requests holding a permit of these limits.
    pub fn in_flight(&self) -> u32 {
        self.lock().in_flight
    }

    /// One try at a tenant place and a global place, both or neither; never waits.
    pub fn try_acquire(&self, claim: &LlmClaim) -> Attempt {
        let mut state = self.lock();
        let now = Instant::now();
        let (limit, epoch) = (state.window.limit, state.window.epoch);
        let verdict = |admission| Attempt {
            admission,
            limit,
            epoch,
        };
        if let Some(gate) = state.gate.filter(|gate| *gate > now) {
            return verdict(Admission::Gated(gate - now));
        }
        state.gate = None;
        let held = state.tenants.get(&claim.tenant).copied().unwrap_or(0);
        if held >= claim.tenant_limit {
            return verdict(Admission::TenantFull);
        }
        if state.in_flight >= limit {
            return verdict(Admission::GlobalFull);
        }
        state.in_flight += 1;
        state.tenants.insert(claim.tenant.clone(), held + 1);
        verdict(Admission::Granted)
    }

    /// Gives back a place [`Self::try_acquire`] granted; a success grows the limit.
    pub fn release(&self, claim: &LlmClaim, success: bool) -> AimdState {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        if let Some(held) = state.tenants.get_mut(&claim.tenant) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                state.tenants.remove(&claim.tenant);
            }
        }
        if success {
            state.window.success();
        }
        publish(&state.window);
        aimd_state(&state.window)
    }

    /// A 429 of a request that started in `started_epoch`: halve once, close the gate.
    pub fn rate_limited(&self, started_epoch: u64, retry_after: Option<Duration>) -> AimdState {
        let mut state = self.lock();
        state.window.rate_limited(started_epoch);
        if let Some(after) = retry_after {
            let until = Instant::now() + after;
            state.gate = Some(state.gate.map_or(until, |g| g.max(until)));
        }
        publish(&state.window);
        aimd_state(&state.window)
    }

    /// Mirrors the shared limit, so the gauge shows it and a fall-back starts from it.
    pub fn observe(&self, limit: u32) {
        let mut state = self.lock();
        state.window.observe(limit);
        publish(&state.window);
    }
}

fn aimd_state(window: &Window) -> AimdState {
    AimdState {
        limit: window.limit,
        epoch: window.epoch,
    }
}

fn publish(window: &Window) {
    metrics::gauge!(Metric::LlmConcurrencyLimit.name()).set(f64::from(window.limit));
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

    fn claim(tenant: &str, tenant_limit: u32) -> LlmClaim {
        LlmClaim {
            tenant: TenantId::parse(tenant).unwrap(),
            holder: sb_runtime::redis::llm_limits::holder_id(),
            tenant_limit,
            lease: Duration::from_secs(10),
            bounds: AimdBounds {
                initial: 2,
                min: 1,
                max: 4,
            },
        }
    }

    /// The verdicts of one try, in order of precedence: the gate, then the tenant's tier,
    /// then the global limit; a release frees both places; an observed limit is kept
    /// within the bounds.
    #[tokio::test(start_paused = true)]
    async fn verdicts_in_order() {
        let local = LocalLimits::new(AimdBounds {
            initial: 2,
            min: 1,
            max: 4,
        });
        let (a, b) = (claim("a", 1), claim("b", 5));
        let admitted = |c: &LlmClaim| local.try_acquire(c).admission;
        assert_eq!(admitted(&a), Admission::Granted);
        assert_eq!(admitted(&a), Admission::TenantFull);
        assert_eq!(admitted(&b), Admission::Granted);
        assert_eq!(admitted(&b), Admission::GlobalFull);
        assert_eq!(local.in_flight(), 2);
        local.release(&a, true);
        assert_eq!((local.in_flight(), local.limit()), (1, 3));
        assert_eq!(admitted(&a), Admission::Granted);
        let epoch = local.try_acquire(&a).epoch;
        local.rate_limited(epoch, Some(Duration::from_secs(2)));
        assert_eq!(admitted(&b), Admission::Gated(Duration::from_secs(2)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(local.limit(), 1, "halved once");
        assert_eq!(
            admitted(&b),
            Admission::GlobalFull,
            "the gate is open again"
        );
        local.observe(1_000);
        assert_eq!(
            local.limit(),
            4,
            "an observed limit stays within the bounds"
        );
    }
}
