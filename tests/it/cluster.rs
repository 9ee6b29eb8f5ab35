//! Streams survive a node: the whole stack on a 3-node nats-server cluster (streams R3),
//! calls in progress, and the node leading `CALLS` killed with SIGKILL mid-call. The calls
//! finish, every question after the kill is answered and every question is transcribed
//! once, and every event JetStream acknowledged (the services' and a probe publisher's)
//! is still stored on the surviving nodes.

use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use futures::StreamExt as _;
use sb_schemas::{Body, CallSid};
use sb_sim::caller::{CallerConfig, Scenario, place_call};
use sb_stack::stack::{AUTH_TOKEN, PUBLIC_URL};
use sb_tests::eventually;

use crate::e2e::{asking, log_after_end, stack, transcript_subjects};

/// Publishes numbered probe events until `stop`, recording the ones JetStream acknowledged
/// (a publish that fails during the election is not acknowledged and not recorded).
fn probe_publisher(
    js: jetstream::Context,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeSet<u64>>>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut sent = 0u64;
        // A steady trickle (a pace, not a synchronisation): ~200 events a second.
        let mut pace = tokio::time::interval(Duration::from_millis(5));
        while !stop.load(Ordering::Relaxed) {
            pace.tick().await;
            sent += 1;
            let publish = jetstream::message::PublishMessage::build()
                .payload(sent.to_string().into())
                .message_id(format!("probe:{sent}"));
            let ack = match js.send_publish("call.probe.cluster.webhook", publish).await {
                Ok(pending) => pending.await,
                Err(error) => Err(error),
            };
            if ack.is_ok() {
                acked.lock().unwrap().insert(sent);
            }
        }
        sent
    })
}

/// Every probe number stored in `CALLS`, read back through the surviving nodes.
async fn stored_probes(js: &jetstream::Context) -> BTreeSet<u64> {
    let stream = js.get_stream("CALLS").await.unwrap();
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: "call.probe.cluster.webhook".into(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let pending = consumer.cached_info().num_pending as usize;
    let mut messages = consumer.messages().await.unwrap().take(pending);
    let mut stored = BTreeSet::new();
    while let Some(message) = messages.next().await {
        let message = message.unwrap();
        stored.insert(
            std::str::from_utf8(&message.payload)
                .unwrap()
                .parse()
                .unwrap(),
        );
    }
    stored
}

#[tokio::test]
async fn calls_finish_and_acked_events_survive_a_killed_node() {
    let (mut stack, dir) = stack(|c| c.nats_nodes = 3).await;
    // The logs outlive a failure (removed at the end of a passing run).
    let logs = dir.keep();
    let js = jetstream::new(stack.nats.ops().await.unwrap());
    let info = js
        .get_stream("CALLS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(
        info.config.num_replicas, 3,
        "streams are R3 on a 3-node cluster"
    );

    let (stop, acked) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(Mutex::new(BTreeSet::new())),
    );
    let probe = probe_publisher(js.clone(), stop.clone(), acked.clone());
    let questions = [
        "What are your opening hours?",
        "Do you have any offers at the moment?",
        "Sorry, could you just email them to me?",
    ];
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let scenario = Scenario::from_toml(&asking(&questions, 30_000)).unwrap();
            let caller = CallerConfig::new(stack.ingress_url(), PUBLIC_URL, AUTH_TOKEN);
            tokio::spawn(async move { place_call(caller, &scenario).await })
        })
        .collect();

    // Once the first question is stored, kill the node that leads CALLS.
    let leader = eventually("a first transcript", Duration::from_secs(60), || async {
        if transcript_subjects(&js).await?.is_empty() {
            return None;
        }
        let mut stream = js.get_stream("CALLS").await.ok()?;
        stream.info().await.ok()?.cluster.as_ref()?.leader.clone()
    })
    .await
    .unwrap();
    let index = stack
        .nats
        .nodes
        .iter()
        .position(|n| n.name == leader)
        .unwrap_or_else(|| panic!("leader {leader} is a node of the stack"));
    eprintln!("cluster: killing {leader} (CALLS leader) mid-call");
    stack.nats.nodes[index].kill();
    let js = jetstream::new(stack.nats.ops().await.unwrap());

    for call in calls {
        let report = call.await.unwrap().expect("the call completes");
        // The turn in flight at the kill (1) is answered once JetStream has a new leader,
        // unless the ingress' live subscription missed its audio while reconnecting (core
        // NATS does not replay; gap repair is issue 15's): reported, not asserted. Every
        // turn after it is answered: the call runs on.
        eprintln!(
            "cluster: {} turn 1 (in flight at the kill) answered: {}",
            report.call_sid,
            report.turns[1].voice_to_voice_ms.is_some()
        );
        for (i, turn) in report.turns.iter().enumerate().skip(2) {
            assert!(
                turn.voice_to_voice_ms.is_some(),
                "turn {i} unanswered: {report}"
            );
        }
        let sid = CallSid::parse(&report.call_sid).unwrap();
        let log = log_after_end(&stack, &sid).await;
        let transcripts = log
            .envelopes()
            .filter(|e| matches!(e.body, Body::Transcript(_)))
            .count();
        assert_eq!(transcripts, questions.len(), "{}", report.call_sid);
    }
    stop.store(true, Ordering::Relaxed);
    let sent = probe.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    let stored = stored_probes(&js).await;
    let lost: Vec<&u64> = acked.difference(&stored).collect();
    eprintln!(
        "cluster: {sent} probes sent, {} acknowledged, {} stored",
        acked.len(),
        stored.len()
    );
    assert!(acked.len() > 10, "the probe publisher ran");
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    stack.stop().await;
    let _ = std::fs::remove_dir_all(logs);
}
