//! Graceful shutdown under load: nothing is lost. Every input is either acked with its
//! outputs stored, or handed back and processed by the next replica.

use std::{collections::HashSet, sync::Arc, time::Duration};

use futures::future::join_all;
use sb_runtime::{Publisher, RunnerConfig, Shutdown, run_stage};
use sb_schemas::testing::sid;
use sb_schemas::{Body, decode};
use sb_tests::{TestEnv, eventually};
use uuid::Uuid;

use crate::support::{self, TestStage};

const INPUTS: u32 = 300;

/// Publishes `INPUTS` transcripts; returns their ids.
async fn publish_load(env: &TestEnv) -> HashSet<Uuid> {
    let publisher = Publisher::new(env.js.clone());
    let events: Vec<_> = (0..INPUTS)
        .map(|i| support::transcript(&sid(i.into()), 1, &format!("utterance {i}")))
        .collect();
    let pending = join_all(events.iter().map(|e| publisher.send(e))).await;
    for ack in pending {
        ack.unwrap().stored().await.unwrap();
    }
    events.iter().map(|e| e.id).collect()
}

/// A stage that answers each input with one sentence naming the input id, after `work`.
fn answering(work: impl Fn(&Uuid) -> Duration + Send + Sync + 'static) -> TestStage {
    let work = Arc::new(work);
    TestStage::new(move |input, _| {
        let delay = work(&input.id);
        async move {
            tokio::time::sleep(delay).await; // simulated provider time, not synchronisation
            (vec![support::sentence(&input.id.to_string())], Ok(()))
        }
    })
}

/// The set of input ids named by stored answers, and how many answers are stored.
async fn answers(env: &TestEnv) -> (HashSet<Uuid>, usize) {
    let payloads = support::payloads(&env.js, "CALLS", "call.*.*.sentence").await;
    let ids = payloads
        .iter()
        .map(|p| match decode(p).unwrap().body {
            Body::Sentence(s) => s.text.parse().unwrap(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    (ids, payloads.len())
}

async fn run(env: &TestEnv, stage: TestStage, shutdown: &Shutdown) {
    let config = RunnerConfig {
        concurrency: 16,
        retry_base_ms: 50,
        retry_max_ms: 500,
    };
    run_stage(Arc::new(stage), &env.js, &env.topology, shutdown, config)
        .await
        .unwrap();
}

/// SIGTERM in the middle of a load: the first replica finishes its in-flight work and
/// hands back what it prefetched; a second replica processes the rest. Every input ends
/// up answered exactly once and the consumer is empty.
#[tokio::test]
async fn shutdown_during_load_loses_nothing() {
    let env = TestEnv::with_topology(support::topology(10, Duration::from_secs(3)))
        .await
        .unwrap();
    let ids = publish_load(&env).await;

    let first = answering(|id| Duration::from_millis(u64::from(id.as_bytes()[15]) % 20));
    let shutdown = Shutdown::new(Duration::from_secs(10));
    let trigger = {
        let (first, shutdown) = (first.clone(), shutdown.clone());
        tokio::spawn(async move {
            eventually("a third of the load", Duration::from_secs(30), || async {
                (first.seen().len() >= INPUTS as usize / 3).then_some(())
            })
            .await
            .unwrap();
            shutdown.trigger();
        })
    };
    run(&env, first.clone(), &shutdown).await;
    trigger.await.unwrap();
    let handled_by_first = first.seen().len();
    assert!(
        handled_by_first < INPUTS as usize,
        "shutdown came too late to test anything"
    );

    let second = answering(|_| Duration::ZERO);
    let shutdown2 = Shutdown::new(Duration::from_secs(10));
    let waiter = {
        let (js, s) = (env.js.clone(), shutdown2.clone());
        tokio::spawn(async move {
            eventually("the consumer to drain", Duration::from_secs(30), || async {
                (support::consumer_backlog(&js).await == (0, 0)).then_some(())
            })
            .await
            .unwrap();
            s.trigger();
        })
    };
    run(&env, second, &shutdown2).await;
    waiter.await.unwrap();

    let (answered, stored) = answers(&env).await;
    assert_eq!(answered, ids, "every input answered");
    assert_eq!(stored, INPUTS as usize, "each answer stored exactly once");
}

/// Work still running when the drain deadline passes is handed back at once (NAK), not
/// left to expire: with ack_wait at 30 s, the next replica still gets it within seconds.
#[tokio::test]
async fn drain_deadline_hands_back_slow_work() {
    let env = TestEnv::with_topology(support::topology(10, Duration::from_secs(30)))
        .await
        .unwrap();
    let ids = publish_load(&env).await;

    let stuck = answering(|_| Duration::from_secs(3600));
    let shutdown = Shutdown::new(Duration::from_millis(300));
    let trigger = {
        let (stuck, shutdown) = (stuck.clone(), shutdown.clone());
        tokio::spawn(async move {
            eventually("work in flight", Duration::from_secs(30), || async {
                (stuck.seen().len() >= 16).then_some(())
            })
            .await
            .unwrap();
            shutdown.trigger();
        })
    };
    run(&env, stuck.clone(), &shutdown).await;
    trigger.await.unwrap();
    assert!(
        shutdown.abort().is_cancelled(),
        "the deadline should have passed"
    );

    let second = answering(|_| Duration::ZERO);
    let shutdown2 = Shutdown::new(Duration::from_secs(10));
    let waiter = {
        let (js, s) = (env.js.clone(), shutdown2.clone());
        tokio::spawn(async move {
            // Less than ack_wait (30 s): only a NAK brings the inputs back before it. (15 s
            // was too tight for a loaded box: all of the suite on 2 busy cores.)
            eventually("the handed-back work", Duration::from_secs(25), || async {
                (support::consumer_backlog(&js).await == (0, 0)).then_some(())
            })
            .await
            .unwrap();
            s.trigger();
        })
    };
    run(&env, second.clone(), &shutdown2).await;
    waiter.await.unwrap();

    let (answered, stored) = answers(&env).await;
    assert_eq!(answered, ids);
    assert_eq!(stored, INPUTS as usize);
    let stuck_ids: HashSet<Uuid> = stuck.seen().iter().map(|s| s.input).collect();
    let redelivered: HashSet<Uuid> = second
        .seen()
        .iter()
        .filter(|s| s.delivered >= 2)
        .map(|s| s.input)
        .collect();
    assert!(
        stuck_ids.is_subset(&redelivered),
        "every stuck input came back as a redelivery"
    );
}
