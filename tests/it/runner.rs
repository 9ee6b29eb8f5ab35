//! The stage runner against real NATS: retries with backoff, dead letters, exactly-once
//! storage of outputs across redeliveries.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use sb_runtime::{Publisher, RunnerConfig, Shutdown, StageError, run_stage};
use sb_schemas::testing::sid;
use sb_schemas::{decode, decode_dead_letter, encode, subject};
use sb_tests::{TestEnv, eventually};

use crate::support::{self, CONSUMER, TestStage};

fn runner(base_ms: u64) -> RunnerConfig {
    RunnerConfig {
        concurrency: 8,
        retry_base_ms: base_ms,
        retry_max_ms: 2_000,
    }
}

/// Runs `stage` in the background until the returned shutdown is triggered.
fn spawn(
    env: &TestEnv,
    stage: TestStage,
    config: RunnerConfig,
) -> (Shutdown, tokio::task::JoinHandle<()>) {
    let shutdown = Shutdown::new(Duration::from_secs(5));
    let (js, topology, s) = (env.js.clone(), env.topology.clone(), shutdown.clone());
    let task = tokio::spawn(async move {
        run_stage(Arc::new(stage), &js, &topology, &s, config)
            .await
            .expect("runner failed");
    });
    (shutdown, task)
}

/// A handler that keeps failing with a retryable error is redelivered with growing
/// delays, and after `max_deliver` deliveries its input lands in the DLQ with the original
/// subject, payload, consumer, delivery count and reason.
#[tokio::test]
async fn retryable_errors_back_off_then_dead_letter() {
    let env = TestEnv::with_topology(support::topology(4, Duration::from_secs(30)))
        .await
        .unwrap();
    let stage = TestStage::new(|_, _| async {
        (
            vec![],
            Err(StageError::retry("provider", "llm answered 503")),
        )
    });
    let (shutdown, task) = spawn(&env, stage.clone(), runner(100));

    let input = support::transcript(&sid(1), 1, "hello");
    let input_subject = subject::for_envelope(&input);
    Publisher::new(env.js.clone())
        .publish(&input)
        .await
        .unwrap();

    let dlq = subject::dlq("CALLS", CONSUMER);
    eventually("a dead letter", Duration::from_secs(20), || async {
        (support::stored(&env.js, "DLQ", &dlq).await == 1).then_some(())
    })
    .await
    .unwrap();

    let seen = stage.seen();
    let deliveries: Vec<u64> = seen.iter().map(|s| s.delivered).collect();
    assert_eq!(
        deliveries,
        [1, 2, 3, 4],
        "redelivered until max_deliver, then stopped"
    );
    // NAK delays of ~100, ~200, ~400 ms (±20 % jitter): each gap is at least the backoff.
    for (i, pair) in seen.windows(2).enumerate() {
        let gap = pair[1].at - pair[0].at;
        let min = Duration::from_millis(80 << i);
        assert!(gap >= min, "gap {i} was {gap:?}, expected at least {min:?}");
    }

    let record = decode_dead_letter(&support::payloads(&env.js, "DLQ", &dlq).await[0]).unwrap();
    assert_eq!(record.subject, input_subject);
    assert_eq!(
        (record.stream.as_str(), record.consumer.as_str()),
        ("CALLS", CONSUMER)
    );
    assert_eq!(record.deliveries, 4);
    assert_eq!(record.reason_kind, "provider");
    assert!(
        record
            .reason
            .contains("gave up after 4 deliveries: llm answered 503"),
        "{}",
        record.reason
    );
    assert_eq!(decode(&record.payload).unwrap(), input);

    eventually("the consumer to settle", Duration::from_secs(5), || async {
        (support::consumer_backlog(&env.js).await == (0, 0)).then_some(())
    })
    .await
    .unwrap();
    shutdown.trigger();
    task.await.unwrap();
}

/// Undecodable bytes and inputs the stage rejects are dead-lettered on their first
/// delivery, each with its reason; the stage never sees the undecodable one.
#[tokio::test]
async fn poison_input_is_dead_lettered_at_once() {
    let env = TestEnv::with_topology(support::topology(5, Duration::from_secs(30)))
        .await
        .unwrap();
    let stage = TestStage::new(|_, _| async {
        (
            vec![],
            Err(StageError::reject("empty_transcript", "nothing to answer")),
        )
    });
    let (shutdown, task) = spawn(&env, stage.clone(), runner(100));

    let good = support::transcript(&sid(2), 1, "");
    let garbage_subject = subject::for_envelope(&support::transcript(&sid(3), 1, "x"));
    env.js
        .publish(
            garbage_subject.clone(),
            Bytes::from_static(b"\x93not an event"),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    Publisher::new(env.js.clone()).publish(&good).await.unwrap();

    let dlq = subject::dlq("CALLS", CONSUMER);
    let records = eventually("two dead letters", Duration::from_secs(10), || async {
        let payloads = support::payloads(&env.js, "DLQ", &dlq).await;
        (payloads.len() == 2).then_some(payloads)
    })
    .await
    .unwrap();
    let mut records: Vec<_> = records
        .iter()
        .map(|p| decode_dead_letter(p).unwrap())
        .collect();
    records.sort_by_key(|r| r.reason_kind.clone());
    assert_eq!(records[0].reason_kind, "empty_transcript");
    assert_eq!(records[0].deliveries, 1);
    assert_eq!(records[1].reason_kind, "malformed");
    assert_eq!(records[1].subject, garbage_subject);
    assert!(
        records[1].reason.starts_with("malformed event"),
        "{}",
        records[1].reason
    );
    assert_eq!(records[1].payload, b"\x93not an event");
    assert_eq!(
        stage.seen().len(),
        1,
        "the stage saw only the decodable input, once"
    );
    shutdown.trigger();
    task.await.unwrap();
}

/// Outputs carry ids derived from the input, so an input that emitted, failed and was
/// redelivered stores each output once; and a plain repeated publish is stored once.
#[tokio::test]
async fn outputs_are_stored_once_across_redeliveries() {
    let env = TestEnv::with_topology(support::topology(5, Duration::from_secs(30)))
        .await
        .unwrap();
    // Every delivery emits the answer; the first then fails, so the runner NAKs it.
    let stage = TestStage::new(|input, delivered| async move {
        let answer = vec![support::sentence(&format!("answer to {}", input.id))];
        if delivered == 1 {
            let retry =
                StageError::retry_after("flaky", "first try fails", Duration::from_millis(10));
            (answer, Err(retry))
        } else {
            (answer, Ok(()))
        }
    });
    let (shutdown, task) = spawn(&env, stage.clone(), runner(10));
    let input = support::transcript(&sid(4), 1, "what time is it");
    Publisher::new(env.js.clone())
        .publish(&input)
        .await
        .unwrap();

    let filter = "call.*.*.sentence";
    eventually("the input to be acked", Duration::from_secs(10), || async {
        (stage.seen().len() == 2 && support::consumer_backlog(&env.js).await == (0, 0))
            .then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        stage.seen().iter().map(|s| s.delivered).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(
        support::stored(&env.js, "CALLS", filter).await,
        1,
        "emitted twice, stored once"
    );

    // A repeated publish of one event is acked as a duplicate and stored once.
    let publisher = Publisher::new(env.js.clone());
    let event = support::transcript(&sid(5), 1, "again");
    assert!(!publisher.publish(&event).await.unwrap().duplicate);
    assert!(publisher.publish(&event).await.unwrap().duplicate);
    let subject = subject::for_envelope(&event);
    assert_eq!(support::stored(&env.js, "CALLS", &subject).await, 1);
    let stored = support::payloads(&env.js, "CALLS", &subject).await;
    assert_eq!(stored[0], Bytes::from(encode(&event)));
    shutdown.trigger();
    task.await.unwrap();
}

/// A delivery worked on for several times the consumer's `ack_wait` is kept alive with
/// in-progress acks: it is handled once and never redelivered to another handler while
/// the first one still works.
#[tokio::test]
async fn slow_work_is_kept_alive_past_ack_wait() {
    let ack_wait = Duration::from_secs(1);
    let env = TestEnv::with_topology(support::topology(5, ack_wait))
        .await
        .unwrap();
    // The work (an answer that takes long) outlasts ack_wait three and a half times.
    let stage = TestStage::new(move |_, _| async move {
        tokio::time::sleep(ack_wait * 7 / 2).await;
        (vec![], Ok(()))
    });
    let (shutdown, task) = spawn(&env, stage.clone(), runner(10));
    let input = support::transcript(&sid(6), 1, "a slow question");
    Publisher::new(env.js.clone())
        .publish(&input)
        .await
        .unwrap();

    eventually("the input to be acked", Duration::from_secs(15), || async {
        (!stage.seen().is_empty() && support::consumer_backlog(&env.js).await == (0, 0))
            .then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        stage.seen().iter().map(|s| s.delivered).collect::<Vec<_>>(),
        [1],
        "handled once, never redelivered while it was worked on"
    );
    shutdown.trigger();
    task.await.unwrap();
}
