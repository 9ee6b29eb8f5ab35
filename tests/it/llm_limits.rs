//! The LLM limits every agent replica shares (ARCHITECTURE §7) against a real Redis: the Lua
//! scripts follow the AIMD arithmetic of `sb_agent::aimd::Window` event by event; places
//! are taken together or not at all, leases run out and a 429's gate closes; and with
//! real `agent` processes ([`replicas`]), three replicas hold a tenant to its tier in
//! total, and a killed replica's place comes back once its lease runs out.

mod replicas;

use std::time::Duration;

use sb_agent::aimd::Window;
use sb_runtime::redis::llm_limits::{Admission, AimdBounds, LlmClaim, holder_id};
use sb_runtime::redis::{Keys, Redis};
use sb_schemas::CallSid;
use sb_schemas::testing::tenant_id;
use sb_sim::llm;
use sb_tests::{TestEnv, eventually};

use crate::support::sid;
use replicas::{Holder, MODEL, Replicas, TIER, WAIT, transcripts_received};

/// A Redis handle whose keys start with `prefix` (one clean set of limits per case).
async fn redis(env: &TestEnv, prefix: &str) -> Redis {
    Redis::connect(&env.redis.url, Keys::new(prefix), Duration::from_secs(60))
        .await
        .unwrap()
}

fn claim(tenant: &str, tenant_limit: u32, lease: Duration, bounds: AimdBounds) -> LlmClaim {
    LlmClaim {
        tenant: tenant_id(tenant),
        holder: holder_id(),
        tenant_limit,
        lease,
        bounds,
    }
}

fn bounds(initial: u32, min: u32, max: u32) -> AimdBounds {
    AimdBounds { initial, min, max }
}

#[derive(Debug, Clone, Copy)]
enum Ev {
    /// A request that succeeds.
    Ok,
    /// A 429 of a request that started in the current epoch.
    Limited,
    /// A 429 of a request that started before the last decrease.
    LateLimited,
}

/// After every event of every sequence, the limit and epoch the scripts keep in Redis are
/// `Window`'s: additive increase, halving once per congestion event, the bounds.
#[tokio::test]
async fn aimd_scripts_follow_the_window() {
    use Ev::{LateLimited as Late, Limited as Lim, Ok};
    let env = TestEnv::start().await.unwrap();
    let cases: &[(AimdBounds, &[Ev])] = &[
        (bounds(10, 1, 100), &[Ok, Ok, Ok, Lim, Ok]),
        (bounds(10, 1, 100), &[Lim, Lim, Late, Late, Ok]),
        (bounds(10, 4, 100), &[Lim, Lim, Lim, Late]),
        (bounds(99, 1, 100), &[Ok, Ok, Ok, Lim, Lim]),
        (bounds(500, 2, 64), &[Ok, Lim]),
        (bounds(0, 0, 0), &[Ok, Lim, Ok]),
        (bounds(7, 1, 100), &[Lim, Late, Ok, Ok, Lim]),
    ];
    for (i, (bounds, events)) in cases.iter().enumerate() {
        let redis = redis(&env, &format!("w{i}:")).await;
        let mut window = Window::new(*bounds);
        for ev in *events {
            let request = claim("acme", 100, Duration::from_secs(10), *bounds);
            let attempt = redis.llm_acquire(&request).await.unwrap();
            assert_eq!(attempt.admission, Admission::Granted, "case {i}");
            assert_eq!(
                (attempt.limit, attempt.epoch),
                (window.limit(), window.epoch()),
                "case {i}: acquire before {ev:?}"
            );
            let state = match ev {
                Ev::Ok => {
                    window.success();
                    redis.llm_release(&request, true).await.unwrap()
                }
                Ev::Limited | Ev::LateLimited => {
                    let started = match ev {
                        Ev::Limited => window.epoch(),
                        _ => window.epoch().wrapping_sub(1),
                    };
                    window.rate_limited(started);
                    let state = redis.llm_rate_limited(*bounds, started, None).await;
                    redis.llm_release(&request, false).await.unwrap();
                    state.unwrap()
                }
            };
            assert_eq!(
                (state.limit, state.epoch),
                (window.limit(), window.epoch()),
                "case {i}: after {ev:?}"
            );
        }
    }
}

/// A tenant place and a global place are taken together or not at all; a release frees
/// both; a lease that is not renewed runs out (and a renewal does not take it back); a
/// 429's `retry-after` closes the gate for every tenant until it passes.
#[tokio::test]
async fn places_are_taken_together_and_leases_run_out() {
    let env = TestEnv::start().await.unwrap();
    let redis = redis(&env, "").await;
    let (b3, long) = (bounds(3, 1, 3), Duration::from_secs(30));
    let admitted = |c: LlmClaim| {
        let redis = redis.clone();
        async move { (redis.llm_acquire(&c).await.unwrap().admission, c) }
    };
    let (granted, a1) = admitted(claim("a", 2, long, b3)).await;
    assert_eq!(granted, Admission::Granted);
    assert_eq!(
        admitted(claim("a", 2, long, b3)).await.0,
        Admission::Granted
    );
    assert_eq!(
        admitted(claim("a", 2, long, b3)).await.0,
        Admission::TenantFull
    );
    assert_eq!(
        admitted(claim("b", 5, long, b3)).await.0,
        Admission::Granted
    );
    let (full, b2) = admitted(claim("b", 5, long, b3)).await;
    assert_eq!(full, Admission::GlobalFull);
    let mut raw = env.redis_raw().await.unwrap();
    let zcard = |key: String| redis::cmd("ZCARD").arg(key).to_owned();
    let keys = Keys::new("");
    let held: (u64, u64) = redis::pipe()
        .add_command(zcard(keys.llm_slots(&tenant_id("b"))))
        .add_command(zcard(keys.llm_aimd_slots()))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(held, (1, 3), "the refused claim took no tenant place");
    assert!(redis.llm_renew(&a1).await.unwrap());
    redis.llm_release(&a1, false).await.unwrap();
    assert_eq!(
        admitted(b2).await.0,
        Admission::Granted,
        "a1's places are free"
    );

    let short = Duration::from_millis(400);
    let (granted, c1) = admitted(claim("c", 1, short, bounds(10, 1, 10))).await;
    assert_eq!(granted, Admission::Granted);
    let c2 = claim("c", 1, long, bounds(10, 1, 10));
    assert_eq!(admitted(c2.clone()).await.0, Admission::TenantFull);
    eventually("c1's lease to run out", WAIT, || async {
        let attempt = redis.llm_acquire(&c2).await.unwrap();
        (attempt.admission == Admission::Granted).then_some(())
    })
    .await
    .unwrap();
    assert!(!redis.llm_renew(&c1).await.unwrap(), "not taken back");

    let gate = Duration::from_millis(800);
    let epoch = redis.llm_acquire(&c2).await.unwrap().epoch;
    redis
        .llm_rate_limited(bounds(10, 1, 10), epoch, Some(gate))
        .await
        .unwrap();
    let other = claim("d", 1, long, bounds(10, 1, 10));
    match redis.llm_acquire(&other).await.unwrap().admission {
        Admission::Gated(left) => assert!(left > Duration::ZERO && left <= gate, "{left:?}"),
        got => panic!("not gated: {got:?}"),
    }
    eventually("the gate to open", WAIT, || async {
        let attempt = redis.llm_acquire(&other).await.unwrap();
        (attempt.admission == Admission::Granted).then_some(())
    })
    .await
    .unwrap();
}

/// Three agent processes serve one tenant whose tier allows two LLM requests at once.
/// Twelve turns arrive together and spread over the replicas (each takes up to four at a
/// time, so each alone would run two at once). The LLM stand-in never generates more than
/// two of the tenant's requests at once, yet does reach two; every turn is answered by the
/// model (no fallback); and every place is given back. Per-process limits fail this: the
/// replicas' shares of the turns would overlap beyond the tier (checked below from each
/// replica's own counters, so the load really was spread).
#[tokio::test]
async fn three_agent_replicas_hold_a_tenant_to_its_tier_in_total() {
    const REPLY: &str = "Sure, we are open from nine in the morning to five.";
    let r = Replicas::start(llm::Config {
        replies: vec![REPLY.into()],
        ttft_ms: 150,
        inter_token_ms: 25,
        ..llm::Config::default()
    })
    .await;
    let (a, b, c) = tokio::join!(
        r.agent("agent-0", &[]),
        r.agent("agent-1", &[]),
        r.agent("agent-2", &[])
    );
    let calls: Vec<CallSid> = (0..12).map(|n| sid(7_000 + n)).collect();
    futures::future::join_all(calls.iter().map(|call| r.turn(call, "When are you open?"))).await;

    let answers = eventually("every turn answered", WAIT, || async {
        let mut answers = Vec::new();
        for call in &calls {
            answers.push(r.answer(call).await?);
        }
        Some(answers)
    })
    .await
    .unwrap();
    assert!(
        answers.iter().all(|a| a == REPLY),
        "no fallback: {answers:?}"
    );
    let stats = r.stats().await;
    let tenant = &stats["models"][MODEL];
    assert_eq!(
        tenant["max_in_flight"], TIER,
        "the tier held in total: {stats}"
    );
    assert_eq!(stats["completions"], 12, "{stats}");

    let mut received = Vec::new();
    for replica in [&a, &b, &c] {
        received.push(transcripts_received(replica).await);
    }
    assert_eq!(received.iter().sum::<u64>(), 12, "{received:?}");
    let per_process: u64 = received.iter().map(|n| (*n).min(TIER)).sum();
    assert!(
        per_process > TIER,
        "the turns must be spread so that per-process limits would allow more than the tier at once: {received:?}"
    );
    eventually("every place given back", WAIT, || async {
        r.holders().await.is_empty().then_some(())
    })
    .await
    .unwrap();
}

/// A replica's LLM requests keep their places while they run (the leases, 1.5 s here,
/// are renewed); killed (SIGKILL: no release) while they hold every place of the tenant's
/// tier, it keeps them until the leases run out, then another replica's turn gets one: the
/// stand-in sees that replica's request, and no dead holder's lease is in force.
#[tokio::test]
async fn a_killed_replicas_places_come_back_after_its_lease() {
    let r = Replicas::start(llm::Config {
        // Requests hang: a place is held until its holder dies.
        ttft_ms: 120_000,
        ..llm::Config::default()
    })
    .await;
    let settings = [
        ("SB_LLM_LEASE_TTL_MS", "1500"),
        ("SB_LLM_FIRST_TOKEN_TIMEOUT_MS", "120000"),
    ];
    let doomed = r.agent("agent-doomed", &settings).await;
    for n in 0..TIER {
        r.turn(&sid(8_000 + u128::from(n)), "Hello?").await;
    }
    r.requests(TIER).await;
    let first = r.holders().await;
    assert_eq!(first.len() as u64, TIER, "the tier is in use");
    let first_expiry = first.iter().map(|h| h.expiry_ms).max().unwrap();
    eventually(
        "the running requests to renew their leases",
        WAIT,
        || async {
            let now = r.holders().await;
            // The same holders (not new requests: a redelivery would make some), later.
            let same =
                now.len() == first.len() && now.iter().all(|h| first.iter().any(|f| f.id == h.id));
            let renewed = same && now.iter().all(|h| h.expiry_ms > first_expiry);
            renewed.then_some(())
        },
    )
    .await
    .unwrap();
    let dead: Vec<String> = first.into_iter().map(|h| h.id).collect();

    let survivor = r.agent("agent-survivor", &settings).await;
    doomed.kill().await;
    let held = r.holders().await;
    assert!(
        held.len() == dead.len() && held.iter().all(|h| h.live && dead.contains(&h.id)),
        "a killed replica releases nothing by itself: {held:?}"
    );
    r.turn(&sid(8_100), "Anyone there?").await;
    r.requests(TIER + 1).await;
    let now = r.holders().await;
    let live: Vec<&Holder> = now.iter().filter(|h| h.live).collect();
    assert_eq!(
        live.len(),
        1,
        "only the survivor's request holds a place: {now:?}"
    );
    assert!(!dead.contains(&live[0].id), "{now:?}");
    drop(survivor);
}
