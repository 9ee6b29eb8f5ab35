//! The campaign queue (ARCHITECTURE §6, "The campaign queue") against a real
//! redis-server: order, not-before times, leases and the reaper, caps, the shared
//! calls-per-second bucket, fairness across tenants and campaigns, retries, and a restart
//! of an AOF-persisted Redis. Time is always injected (`now_ms`), never waited for.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::future::join_all;
use sb_runtime::redis::campaigns::cps::{CpsLimit, CpsVerdict};
use sb_runtime::redis::campaigns::{
    AccountSid, CampaignId, CampaignQueue, Completion, ContactId, ContactPayload, ContactState,
    NewContact, Outcome, RetryPolicy,
};
use sb_runtime::redis::{Keys, Redis};
use sb_schemas::TenantId;
use sb_schemas::testing::tenant_id;
use sb_tests::{RedisServer, eventually};

const T0: u64 = 1_800_000_000_000;
const LEASE: Duration = Duration::from_secs(30);

async fn handle(url: &str) -> Redis {
    Redis::connect(url, Keys::new(""), Duration::from_secs(1800))
        .await
        .unwrap()
}

async fn queue(server: &RedisServer) -> CampaignQueue {
    handle(&server.url).await.campaign_queue()
}

fn campaign(id: &str) -> CampaignId {
    CampaignId::parse(id).unwrap()
}

fn contact(id: &str, priority: u16, not_before_ms: u64) -> NewContact {
    NewContact {
        id: ContactId::parse(id).unwrap(),
        priority,
        not_before_ms,
        payload: ContactPayload {
            phone: "+15005550006".into(),
            vars: [("name".into(), "Ann".into()), ("ref".into(), id.into())].into(),
        },
    }
}

fn many(prefix: &str, n: usize) -> Vec<NewContact> {
    (0..n)
        .map(|i| contact(&format!("{prefix}{i}"), 1, 0))
        .collect()
}

/// Pops at `now` until nothing is ready; the contacts in order.
async fn drain(q: &CampaignQueue, now: u64) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(lease) = q.pop(now, LEASE).await.unwrap() {
        out.push(lease.contact.to_string());
    }
    out
}

/// Higher priority pops first and FIFO holds within a priority; the payload comes back;
/// the depth counts what is queued; no queue key has a TTL.
#[tokio::test]
async fn pops_by_priority_then_fifo() {
    let server = RedisServer::start().await.unwrap();
    let q = queue(&server).await;
    let (t, c) = (tenant_id("acme"), campaign("spring"));
    let contacts: Vec<_> = [("a", 1), ("b", 5), ("c", 1), ("d", 5), ("e", 9)]
        .into_iter()
        .map(|(id, p)| contact(id, p, 0))
        .collect();
    assert_eq!(q.enqueue(&t, &c, &contacts, T0).await.unwrap(), 5);
    assert_eq!(
        q.enqueue(&t, &c, &contacts[..1], T0).await.unwrap(),
        0,
        "ids are unique"
    );
    assert_eq!(q.depth(&t).await.unwrap(), 5);
    let first = q.pop(T0, LEASE).await.unwrap().unwrap();
    assert_eq!(
        (first.contact.as_str(), first.token, first.attempts),
        ("e", 1, 0)
    );
    assert_eq!(first.payload, contacts[4].payload);
    assert_eq!(first.deadline_ms, T0 + 30_000);
    assert_eq!(drain(&q, T0).await, ["b", "d", "a", "c"]);
    assert_eq!(q.depth(&t).await.unwrap(), 0);

    let keys = Keys::new("");
    let mut raw = redis::Client::open(server.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for key in [
        keys.cq_contacts(&t, &c),
        keys.cq_leases(),
        keys.cq_seq(&t, &c),
        keys.cq_active(&t),
    ] {
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(ttl, -1, "{key} exists without a TTL");
    }
}

/// A contact is not popped before its not-before time, and is popped at it.
#[tokio::test]
async fn not_before_is_respected_with_an_injected_clock() {
    let server = RedisServer::start().await.unwrap();
    let q = queue(&server).await;
    let (t, c) = (tenant_id("acme"), campaign("spring"));
    let later = contact("later", 9, T0 + 10_000);
    q.enqueue(&t, &c, &[later, contact("now", 1, T0)], T0)
        .await
        .unwrap();
    assert_eq!(q.depth(&t).await.unwrap(), 2);
    assert_eq!(drain(&q, T0).await, ["now"]);
    assert_eq!(drain(&q, T0 + 9_999).await, Vec::<String>::new());
    assert_eq!(drain(&q, T0 + 10_000).await, ["later"]);
}

/// Two dialers (two connections, eight tasks each) drain 2,000 contacts of two tenants
/// and two campaigns: every contact is taken exactly once and none is lost.
#[tokio::test]
async fn two_poppers_never_take_the_same_contact() {
    let server = RedisServer::start().await.unwrap();
    let q = queue(&server).await;
    for (t, c) in [
        ("acme", "a"),
        ("acme", "b"),
        ("globex", "a"),
        ("globex", "b"),
    ] {
        let added = q
            .enqueue(
                &tenant_id(t),
                &campaign(c),
                &many(&format!("{t}{c}-"), 500),
                T0,
            )
            .await
            .unwrap();
        assert_eq!(added, 500);
    }
    let (one, two) = (queue(&server).await, queue(&server).await);
    let tasks = (0..16).map(|i| {
        let q = if i % 2 == 0 { one.clone() } else { two.clone() };
        tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(l) = q.pop(T0, LEASE).await.unwrap() {
                got.push(format!("{}|{}|{}", l.tenant, l.campaign, l.contact));
            }
            got
        })
    });
    let all: Vec<String> = join_all(tasks)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap())
        .collect();
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 2_000, "none lost");
    assert_eq!(unique.len(), 2_000, "none taken twice");
    assert_eq!(q.active(&tenant_id("acme"), None).await.unwrap(), 1_000);
}

/// A lease past its deadline goes back to the queue and is popped again (a new token:
/// the old holder's complete and release are refused); a live or renewed one stays.
#[tokio::test]
async fn an_expired_lease_goes_back_and_a_live_one_does_not() {
    let server = RedisServer::start().await.unwrap();
    let q = queue(&server).await;
    let (t, c) = (tenant_id("acme"), campaign("spring"));
    q.enqueue(&t, &c, &[contact("a", 5, 0), contact("b", 1, 0)], T0)
        .await
        .unwrap();
    let a = q.pop(T0, LEASE).await.unwrap().unwrap();
    let b = q.pop(T0 + 20_000, LEASE).await.unwrap().unwrap();
    assert_eq!((a.contact.as_str(), b.contact.as_str()), ("a", "b"));
    assert_eq!(q.reap(T0 + 29_999, 100).await.unwrap(), 0, "both live");
    assert_eq!(q.reap(T0 + 30_000, 100).await.unwrap(), 1, "a expired");
    assert_eq!(q.active(&t, None).await.unwrap(), 1, "a's slot is free");
    let again = q.pop(T0 + 30_000, LEASE).await.unwrap().unwrap();
    assert_eq!((again.contact.as_str(), again.token), ("a", 2));
    let policy = RetryPolicy::default();
    assert_eq!(
        q.complete(&a, Outcome::Completed, &policy, T0)
            .await
            .unwrap(),
        Completion::Stale
    );
    assert!(!q.release(&a, T0, 0).await.unwrap());
    assert!(q.renew(&b, T0 + 45_000, LEASE).await.unwrap());
    assert_eq!(
        q.reap(T0 + 60_000, 100).await.unwrap(),
        1,
        "only a's second lease"
    );
    assert_eq!(drain(&q, T0 + 60_000).await, ["a"]);
    assert_eq!(
        q.reap(T0 + 75_000, 100).await.unwrap(),
        1,
        "b's renewed lease, now"
    );
}

/// With a tenant cap of 3 and a campaign cap of 2, pops stop at the caps and resume when
/// a call's end frees a slot.
#[tokio::test]
async fn caps_hold_per_campaign_and_per_tenant_and_free_on_complete() {
    let server = RedisServer::start().await.unwrap();
    let q = queue(&server).await;
    let t = tenant_id("acme");
    let (c1, c2) = (campaign("one"), campaign("two"));
    q.enqueue(&t, &c1, &many("x", 5), T0).await.unwrap();
    q.enqueue(&t, &c2, &many("y", 5), T0).await.unwrap();
    q.set_tenant_cap(&t, Some(3)).await.unwrap();
    q.set_campaign_cap(&t, &c1, Some(2)).await.unwrap();
    let mut held = Vec::new();
    while let Some(l) = q.pop(T0, LEASE).await.unwrap() {
        held.push(l);
    }
    assert_eq!(held.len(), 3, "tenant cap");
    assert_eq!(q.active(&t, None).await.unwrap(), 3);
    assert!(q.active(&t, Some(&c1)).await.unwrap() <= 2);
    let policy = RetryPolicy::default();
    let done = held.pop().unwrap();
    q.complete(&done, Outcome::Completed, &policy, T0)
        .await
        .unwrap();
    held.push(
        q.pop(T0, LEASE)
            .await
            .unwrap()
            .expect("a freed tenant slot"),
    );
    assert!(q.pop(T0, LEASE).await.unwrap().is_none());

    q.set_tenant_cap(&t, None).await.unwrap();
    while let Some(l) = q.pop(T0, LEASE).await.unwrap() {
        held.push(l);
    }
    assert_eq!(q.active(&t, Some(&c1)).await.unwrap(), 2, "campaign cap");
    assert_eq!(q.active(&t, Some(&c2)).await.unwrap(), 5, "all of two");
    let one = held.iter().find(|l| l.campaign == c1).unwrap().clone();
    q.complete(&one, Outcome::Completed, &policy, T0)
        .await
        .unwrap();
    let next = q
        .pop(T0, LEASE)
        .await
        .unwrap()
        .expect("a freed campaign slot");
    assert_eq!(next.campaign, c1);
    assert_eq!(q.active(&t, Some(&c1)).await.unwrap(), 2);
}

/// `n` takes at `now`, alternating between the two replicas, all at once; the grants.
async fn race(
    qs: &[CampaignQueue; 2],
    account: &AccountSid,
    limit: CpsLimit,
    now: u64,
    n: usize,
) -> usize {
    let takes = (0..n).map(|i| qs[i % 2].cps_take(account, limit, now));
    join_all(takes)
        .await
        .into_iter()
        .filter(|v| *v.as_ref().unwrap() == CpsVerdict::Go)
        .count()
}

/// Two replicas (two connections) racing for one account's bucket at the same instant
/// get exactly the burst; refill follows the injected clock; a replica whose clock is
/// behind gets nothing extra.
#[tokio::test]
async fn calls_per_second_hold_across_two_replicas() {
    let server = RedisServer::start().await.unwrap();
    let qs = [queue(&server).await, queue(&server).await];
    let account = AccountSid::parse(&format!("AC{}", "ab".repeat(16))).unwrap();
    let limit = CpsLimit {
        per_second: 5.0,
        burst: 5,
    };
    assert_eq!(race(&qs, &account, limit, T0, 40).await, 5, "the burst");
    assert_eq!(
        qs[0].cps_take(&account, limit, T0).await.unwrap(),
        CpsVerdict::Wait(Duration::from_millis(200))
    );
    assert_eq!(
        race(&qs, &account, limit, T0 + 200, 10).await,
        1,
        "one token in 200 ms"
    );
    assert_eq!(
        race(&qs, &account, limit, T0 + 100, 10).await,
        0,
        "a clock behind adds nothing"
    );
    assert_eq!(
        race(&qs, &account, limit, T0 + 10_000, 20).await,
        5,
        "refill stops at the burst"
    );
}

/// A tenant with 100,000 queued contacts does not delay a small tenant's first call:
/// the small tenant's contact is at most the second pop after it arrives (two tenants in
/// the ring).
#[tokio::test]
async fn a_huge_tenant_does_not_delay_a_small_tenants_first_call() {
    let server = RedisServer::start().await.unwrap();
    let q = queue(&server).await;
    let (big, small, c) = (tenant_id("big"), tenant_id("small"), campaign("bulk"));
    assert_eq!(
        q.enqueue(&big, &c, &many("b", 100_000), T0).await.unwrap(),
        100_000
    );
    for _ in 0..10 {
        assert_eq!(q.pop(T0, LEASE).await.unwrap().unwrap().tenant, big);
    }
    q.enqueue(&small, &c, &many("s", 3), T0).await.unwrap();
    let mut pops = 0;
    loop {
        pops += 1;
        if q.pop(T0, LEASE).await.unwrap().unwrap().tenant == small {
            break;
        }
    }
    assert!(pops <= 2, "small tenant served on pop {pops}");
    // And then the two alternate.
    let mut got: Vec<TenantId> = Vec::new();
    for _ in 0..4 {
        got.push(q.pop(T0, LEASE).await.unwrap().unwrap().tenant);
    }
    assert_eq!(got, [big.clone(), small.clone(), big, small]);
}

/// A tenant's campaigns take turns: a campaign enqueued after a large one joins the end
/// of the ring (served on the second pop) and then they alternate.
#[tokio::test]
async fn campaigns_of_a_tenant_take_turns() {
    let server = RedisServer::start().await.unwrap();
    let q = queue(&server).await;
    let t = tenant_id("acme");
    q.enqueue(&t, &campaign("old"), &many("o", 100), T0)
        .await
        .unwrap();
    q.pop(T0, LEASE).await.unwrap().unwrap();
    q.enqueue(&t, &campaign("new"), &many("n", 3), T0)
        .await
        .unwrap();
    let mut order = Vec::new();
    for _ in 0..6 {
        order.push(
            q.pop(T0, LEASE)
                .await
                .unwrap()
                .unwrap()
                .campaign
                .to_string(),
        );
    }
    assert_eq!(order, ["old", "new", "old", "new", "old", "new"]);
}

/// A retried outcome queues the contact again after the spacing; when attempts run out
/// it is failed with its last reason; a completed call is done.
#[tokio::test]
async fn retries_reschedule_and_exhausted_contacts_fail() {
    let server = RedisServer::start().await.unwrap();
    let q = queue(&server).await;
    let (t, c) = (tenant_id("acme"), campaign("spring"));
    q.enqueue(&t, &c, &[contact("a", 1, 0), contact("b", 1, 0)], T0)
        .await
        .unwrap();
    let policy = RetryPolicy {
        retry_on: vec![Outcome::Busy, Outcome::NoAnswer],
        max_attempts: 2,
        spacing: Duration::from_secs(60),
    };
    let a = q.pop(T0, LEASE).await.unwrap().unwrap();
    assert_eq!(
        q.complete(&a, Outcome::Busy, &policy, T0 + 5_000)
            .await
            .unwrap(),
        Completion::Retry {
            attempts: 1,
            not_before_ms: T0 + 65_000
        }
    );
    let b = q.pop(T0 + 5_000, LEASE).await.unwrap().unwrap();
    assert_eq!(b.contact.as_str(), "b");
    assert_eq!(
        q.complete(&b, Outcome::Completed, &policy, T0 + 6_000)
            .await
            .unwrap(),
        Completion::Done { attempts: 1 }
    );
    assert!(
        q.pop(T0 + 64_999, LEASE).await.unwrap().is_none(),
        "spacing"
    );
    let a = q.pop(T0 + 65_000, LEASE).await.unwrap().unwrap();
    assert_eq!((a.contact.as_str(), a.attempts), ("a", 1));
    assert_eq!(
        q.complete(&a, Outcome::NoAnswer, &policy, T0 + 70_000)
            .await
            .unwrap(),
        Completion::Failed { attempts: 2 }
    );
    let rec = q.contact(&t, &c, &a.contact).await.unwrap().unwrap();
    assert_eq!(
        (rec.state, rec.attempts, rec.reason.as_str()),
        (ContactState::Failed, 2, "no-answer")
    );
    let rec = q.contact(&t, &c, &b.contact).await.unwrap().unwrap();
    assert_eq!(rec.state, ContactState::Done);
    assert_eq!(q.active(&t, None).await.unwrap(), 0);
    assert_eq!(q.depth(&t).await.unwrap(), 0);
}

/// A redis-server with AOF on (`appendfsync always`) in a temp dir: `RedisServer`
/// restarts empty, this one reloads its data.
struct AofRedis {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
}

impl AofRedis {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("redis+unix://{}", dir.path().join("redis.sock").display());
        let child = Self::spawn(dir.path());
        let server = Self { child, dir, url };
        server.wait_ready().await;
        server
    }

    fn spawn(dir: &std::path::Path) -> Child {
        let bin = sb_stack::servers::find_binary("redis-server", "REDIS_SERVER_BIN").unwrap();
        Command::new(bin)
            .args(["--port", "0", "--save", "", "--appendonly", "yes"])
            .args([
                "--appendfsync",
                "always",
                "--maxmemory-policy",
                "volatile-lru",
            ])
            .arg("--unixsocket")
            .arg(dir.join("redis.sock"))
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// SIGKILL, as a crash, then a new server on the same directory.
    async fn crash_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.child = Self::spawn(self.dir.path());
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        let client = redis::Client::open(self.url.as_str()).unwrap();
        eventually(
            "redis to load and answer PING",
            Duration::from_secs(10),
            || {
                let client = client.clone();
                async move {
                    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                    redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .ok()
                        .map(drop)
                }
            },
        )
        .await
        .unwrap();
    }
}

impl Drop for AofRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Killed and restarted, an AOF-persisted Redis still has the queue in order and the
/// lease, which the reaper returns after its deadline.
#[tokio::test]
async fn a_restarted_redis_keeps_queue_and_leases() {
    let mut server = AofRedis::start().await;
    let q = handle(&server.url).await.campaign_queue();
    let (t, c) = (tenant_id("acme"), campaign("spring"));
    q.enqueue(
        &t,
        &c,
        &[contact("a", 9, 0), contact("b", 5, 0), contact("c", 1, 0)],
        T0,
    )
    .await
    .unwrap();
    let a = q.pop(T0, LEASE).await.unwrap().unwrap();
    assert_eq!(a.contact.as_str(), "a");
    server.crash_and_restart().await;

    let q = handle(&server.url).await.campaign_queue();
    assert_eq!(q.depth(&t).await.unwrap(), 2);
    assert_eq!(q.active(&t, None).await.unwrap(), 1);
    assert_eq!(q.reap(T0 + 29_999, 100).await.unwrap(), 0);
    assert_eq!(drain(&q, T0 + 1_000).await, ["b", "c"]);
    assert_eq!(q.reap(T0 + 30_000, 100).await.unwrap(), 1, "a's lease only");
    assert_eq!(drain(&q, T0 + 30_000).await, ["a"]);
}
