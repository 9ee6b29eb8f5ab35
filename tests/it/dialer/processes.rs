//! Two real `dialer` processes (ring 3, every part its own process but the Twilio
//! stand-in): they share the account's calls-per-second limit, and when one is SIGKILLed
//! while dialling, the other finishes every contact with exactly one call each (the dead
//! one's leases are reaped, its attempts reconciled with Twilio; its calls' callbacks,
//! sent to the dead process, are lost).

use std::time::Duration;

use sb_runtime::redis::campaigns::ContactState;
use sb_sim::twilio::{self, Callees};
use sb_stack::process::{Process, free_addr};
use sb_stack::service_env::dialer_env;
use sb_stack::stack::{binaries_dir, ensure_built};
use sb_tests::{TestEnv, eventually};

use super::rig::{ACCOUNT, TOKEN, always_open, contact, human, tenant};

async fn dialer(env: &TestEnv, twilio: &str, logs: &std::path::Path, n: usize) -> Process {
    let addr = free_addr().unwrap();
    let extra = [
        ("SB_DIALER_CPS", "5".to_owned()),
        ("SB_DIALER_CPS_BURST", "1".into()),
        ("SB_DIALER_WORKERS", "4".into()),
        ("SB_DIALER_LEASE_SECS", "5".into()),
        ("SB_DIALER_RECONCILE_SECS", "2".into()),
        ("SB_DIALER_ORPHAN_SECS", "2".into()),
        ("SB_DIALER_IDLE_MS", "50".into()),
    ];
    let vars = dialer_env(
        &env.nats,
        &env.redis.url,
        addr,
        twilio,
        (ACCOUNT, TOKEN),
        &extra,
    );
    let bin = binaries_dir().unwrap().join("dialer");
    Process::service(&format!("dialer-{n}"), &bin, &vars, addr, logs)
        .await
        .unwrap()
}

#[tokio::test]
async fn two_dialer_processes_share_the_rate_and_survive_one_being_killed() {
    ensure_built(false).expect("the binaries build");
    let env = TestEnv::start().await.unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut sim = twilio::Config::new(ACCOUNT, TOKEN);
    sim.callees = Some(Callees::new(human()));
    let (server, twilio) = twilio::spawn(sim).await.unwrap();
    let queue = sb_runtime::redis::Redis::connect(
        &env.redis.url,
        sb_runtime::redis::Keys::new(""),
        Duration::from_secs(60),
    )
    .await
    .unwrap()
    .campaign_queue();
    let c = sb_runtime::redis::campaigns::CampaignId::parse("killed").unwrap();
    let def = sb_dialer::campaign::Campaign::new(c.clone(), always_open(), chrono::Utc::now());
    queue
        .create_def(&tenant(), &c, &serde_json::to_string(&def).unwrap())
        .await
        .unwrap();
    let numbers: Vec<String> = (0..20).map(|i| format!("+150055504{i:02}")).collect();
    let contacts: Vec<_> = numbers.iter().map(|n| contact(n, &[])).collect();
    queue.enqueue(&tenant(), &c, &contacts, 0).await.unwrap();

    let url = server.http_url();
    let (one, two) = tokio::join!(
        dialer(&env, &url, logs.path(), 1),
        dialer(&env, &url, logs.path(), 2),
    );
    twilio
        .wait_until(Duration::from_secs(30), |t| t.calls().len() >= 6)
        .await;
    one.kill().await;

    eventually("every contact done", Duration::from_secs(60), || async {
        let counts = queue.counts(&tenant(), &c).await.ok()?;
        (counts["done"] == 20).then_some(())
    })
    .await
    .unwrap();
    for number in &numbers {
        assert_eq!(twilio.calls_to(number), 1, "{number}: exactly one call");
        let id =
            sb_runtime::redis::campaigns::ContactId::parse(number.trim_start_matches('+')).unwrap();
        let r = queue.contact(&tenant(), &c, &id).await.unwrap().unwrap();
        assert_eq!((r.state, r.attempts), (ContactState::Done, 1), "{number}");
    }
    // 5 a second with a burst of 1, over both processes: no second holds more than 6.
    super::rig::assert_rate(twilio.created_at(), 6);
    two.stop(Duration::from_secs(5)).await;
}
