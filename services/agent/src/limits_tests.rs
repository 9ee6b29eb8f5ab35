//! Ring 1 for [`Limits`]: waiting, deadlines, the 429 gate, two replicas sharing one store,
//! the fall-back when the store fails, and a shared permit's renewals and release. The
//! shared store here is [`Memory`]: the in-process limits behind the [`SharedLimits`]
//! seam, with a switch that makes it fail like Redis down; what needs Redis itself (Lua,
//! lease expiry) is tested in ring 3 (`tests/it/llm_limits.rs`). Time is tokio's paused
//! clock.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use futures::future::BoxFuture;
use sb_runtime::redis::RedisError;
use sb_runtime::redis::llm_limits::AimdState;
use sb_runtime::tenants::testing::TenantToml;

use super::*;

/// Tenants `a` and `b` on a tier of one concurrent LLM request, `c` on a tier of ten.
fn tenants() -> Tenants {
    TenantToml::new()
        .tier("small", 1, 10)
        .tier("large", 10, 10)
        .tenant("a", "+15005550001", "small")
        .tenant("b", "+15005550002", "small")
        .tenant("c", "+15005550003", "large")
        .parse()
        .unwrap()
}

fn id(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn bounds(initial: u32, min: u32, max: u32) -> AimdBounds {
    AimdBounds { initial, min, max }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_millis(50)
}

/// The shared limits in memory: [`LocalLimits`]' verdicts, a Redis outage switch, and
/// counters of renewals and releases.
struct Memory {
    inner: LocalLimits,
    failing: AtomicBool,
    renewals: AtomicU32,
    released: Notify,
}

impl Memory {
    fn new(bounds: AimdBounds) -> Arc<Self> {
        Arc::new(Self {
            inner: LocalLimits::new(bounds),
            failing: AtomicBool::new(false),
            renewals: AtomicU32::new(0),
            released: Notify::new(),
        })
    }

    fn check(&self) -> Result<(), RedisError> {
        match self.failing.load(Ordering::SeqCst) {
            true => Err(RedisError::Corrupt {
                what: "memory limits",
                reason: "failing on purpose (redis down)".into(),
            }),
            false => Ok(()),
        }
    }
}

impl SharedLimits for Memory {
    fn try_acquire<'a>(
        &'a self,
        claim: &'a LlmClaim,
    ) -> BoxFuture<'a, Result<Attempt, RedisError>> {
        let attempt = self.check().map(|()| self.inner.try_acquire(claim));
        Box::pin(async move { attempt })
    }

    fn renew<'a>(&'a self, _claim: &'a LlmClaim) -> BoxFuture<'a, Result<bool, RedisError>> {
        let renewed = self.check().map(|()| {
            self.renewals.fetch_add(1, Ordering::SeqCst);
            true
        });
        Box::pin(async move { renewed })
    }

    fn release<'a>(
        &'a self,
        claim: &'a LlmClaim,
        success: bool,
    ) -> BoxFuture<'a, Result<AimdState, RedisError>> {
        let state = self.check().map(|()| self.inner.release(claim, success));
        self.released.notify_waiters();
        Box::pin(async move { state })
    }

    fn rate_limited(
        &self,
        _bounds: AimdBounds,
        started_epoch: u64,
        retry_after: Option<Duration>,
    ) -> BoxFuture<'_, Result<AimdState, RedisError>> {
        let state = self
            .check()
            .map(|()| self.inner.rate_limited(started_epoch, retry_after));
        Box::pin(async move { state })
    }
}

fn replica(store: &Arc<Memory>, bounds: AimdBounds) -> Limits {
    let config = SharedConfig {
        lease: Duration::from_secs(3),
        poll: Duration::from_millis(50),
    };
    Limits::shared(&tenants(), bounds, store.clone(), config)
}

/// A tenant at its tier's limit waits (and times out) without blocking another tenant;
/// an unknown tenant gets no permit.
#[tokio::test(start_paused = true)]
async fn tenants_are_limited_separately() {
    let limits = Limits::new(&tenants(), bounds(10, 1, 10));
    let held = limits.acquire(&id("a"), soon()).await.unwrap();
    assert_eq!(
        limits.acquire(&id("a"), soon()).await.err(),
        Some(LimitError::TenantFull)
    );
    let other = limits.acquire(&id("b"), soon()).await.unwrap();
    assert_eq!(limits.aimd().in_flight(), 2);
    drop((held, other));
    assert!(limits.acquire(&id("a"), soon()).await.is_ok());
    assert_eq!(
        limits.acquire(&id("zz"), soon()).await.err(),
        Some(LimitError::UnknownTenant)
    );
}

/// Permits are limited; a release wakes a waiter; a full limit times out at the deadline.
#[tokio::test(start_paused = true)]
async fn permits_wait_and_time_out() {
    let limits = Arc::new(Limits::new(&tenants(), bounds(2, 1, 4)));
    let c = id("c");
    let a = limits.acquire(&c, soon()).await.unwrap();
    let _b = limits.acquire(&c, soon()).await.unwrap();
    let started = Instant::now();
    assert_eq!(
        limits.acquire(&c, soon()).await.err(),
        Some(LimitError::Global(AimdWait::Full))
    );
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(50),
        "waited out the deadline"
    );
    let waiter = {
        let (limits, c) = (limits.clone(), c.clone());
        tokio::spawn(async move {
            let permit = limits
                .acquire(&c, Instant::now() + Duration::from_secs(1))
                .await;
            (permit, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let released_at = Instant::now();
    a.success();
    let (permit, woken_at) = waiter.await.unwrap();
    let permit = permit.expect("woken by the release");
    assert_eq!(
        woken_at, released_at,
        "a local release wakes the waiter at once"
    );
    assert_eq!(limits.aimd().limit(), 3);
    assert_eq!(limits.aimd().in_flight(), 2);
    drop(permit);
    assert_eq!(limits.aimd().in_flight(), 1);
    assert_eq!(limits.aimd().limit(), 3, "a dropped permit is neutral");
}

/// A 429 halves the limit once for the requests in flight, and its retry-after gates new
/// requests: those whose deadline is earlier fail at once, later ones wait it out.
#[tokio::test(start_paused = true)]
async fn rate_limit_halves_once_and_gates() {
    let limits = Limits::new(&tenants(), bounds(8, 1, 8));
    let c = id("c");
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut first = limits.acquire(&c, deadline).await.unwrap();
    let mut second = limits.acquire(&c, deadline).await.unwrap();
    first.rate_limited(Some(Duration::from_secs(2))).await;
    second.rate_limited(Some(Duration::from_secs(2))).await;
    assert_eq!(
        limits.aimd().limit(),
        4,
        "two 429s of one congestion event halve once"
    );
    drop((first, second));
    let started = Instant::now();
    let gated = limits
        .acquire(&c, started + Duration::from_millis(500))
        .await;
    assert_eq!(gated.err(), Some(LimitError::Global(AimdWait::Gated)));
    assert_eq!(started.elapsed(), Duration::ZERO, "fails fast, no waiting");
    let mut permit = limits
        .acquire(&c, started + Duration::from_secs(3))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited out retry-after"
    );
    permit.rate_limited(None).await;
    drop(permit);
    assert_eq!(
        limits.aimd().limit(),
        2,
        "a retried request's 429 is a new event"
    );
}

/// Two replicas on one store hold a tenant to its tier together: while one holds the
/// tenant's only place the other times out, and once it is released the other's
/// waiter gets it by polling (no wake-up crosses replicas). Another tenant is not held up.
#[tokio::test(start_paused = true)]
async fn replicas_sharing_a_store_hold_a_tenant_to_its_tier() {
    let store = Memory::new(bounds(10, 1, 10));
    let (one, two) = (
        replica(&store, bounds(10, 1, 10)),
        replica(&store, bounds(10, 1, 10)),
    );
    let held = one.acquire(&id("a"), soon()).await.unwrap();
    assert!(held.is_shared());
    assert_eq!(
        two.acquire(&id("a"), soon()).await.err(),
        Some(LimitError::TenantFull)
    );
    let other = two.acquire(&id("b"), soon()).await.unwrap();
    assert_eq!(store.inner.in_flight(), 2);
    let waiting = async {
        let got = two
            .acquire(&id("a"), Instant::now() + Duration::from_secs(1))
            .await;
        (got, Instant::now())
    };
    let release = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let at = Instant::now();
        drop(held);
        at
    };
    let ((got, got_at), released_at) = tokio::join!(waiting, release);
    assert!(got.unwrap().is_shared());
    assert!(got_at >= released_at, "not before the release");
    assert!(
        got_at <= released_at + Duration::from_millis(50),
        "within one poll"
    );
    assert_eq!(
        one.aimd().in_flight() + two.aimd().in_flight(),
        0,
        "nothing local"
    );
    drop(other);
}

/// While the store fails, permits come from the replica's own limits (counted, with the
/// reason); Redis is tried again once a second, and when it answers permits are shared
/// again. A local permit is released locally even after the store is back.
#[tokio::test(start_paused = true)]
async fn a_failing_store_falls_back_to_local_limits_and_back() {
    let metrics = sb_runtime::metrics::install();
    let series = "switchboard_llm_limits_degraded_total{reason=\"corrupt\"}";
    let before = value(&metrics.render(), series);
    let store = Memory::new(bounds(10, 1, 10));
    let limits = replica(&store, bounds(10, 1, 10));
    store.failing.store(true, Ordering::SeqCst);
    let local = limits.acquire(&id("a"), soon()).await.unwrap();
    assert!(!local.is_shared());
    assert_eq!(limits.degraded(), Some("corrupt"));
    assert_eq!(
        limits.acquire(&id("a"), soon()).await.err(),
        Some(LimitError::TenantFull),
        "the local limits still hold the tier"
    );
    assert_eq!(value(&metrics.render(), series) - before, 1.0);
    store.failing.store(false, Ordering::SeqCst);
    let c = limits.acquire(&id("c"), soon()).await.unwrap();
    assert!(!c.is_shared(), "no second try within a second");
    tokio::time::advance(PROBE_EVERY).await;
    let shared = limits.acquire(&id("b"), soon()).await.unwrap();
    assert!(shared.is_shared());
    assert_eq!(limits.degraded(), None);
    assert_eq!((limits.aimd().in_flight(), store.inner.in_flight()), (2, 1));
    drop((local, c));
    assert_eq!(limits.aimd().in_flight(), 0);
    drop(shared);
}

/// A shared permit renews its lease every third of it while held, and its drop gives the
/// places back to the store (a success grows the shared limit, which the replica mirrors).
#[tokio::test(start_paused = true)]
async fn a_shared_permit_renews_until_released() {
    let store = Memory::new(bounds(4, 1, 8));
    let limits = replica(&store, bounds(4, 1, 8));
    let permit = limits.acquire(&id("a"), soon()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert_eq!(
        store.renewals.load(Ordering::SeqCst),
        3,
        "every second of a 3 s lease"
    );
    let released = store.released.notified();
    permit.success();
    released.await;
    assert_eq!(store.inner.in_flight(), 0);
    assert_eq!(store.inner.limit(), 5);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        store.renewals.load(Ordering::SeqCst),
        3,
        "no renewal after the release"
    );
    assert_eq!(
        limits.aimd().limit(),
        5,
        "the replica mirrors the shared limit"
    );
}

/// The value of one series in a Prometheus rendering (0 when absent).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
