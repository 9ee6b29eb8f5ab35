//! `replay dlq` and `replay delete` against real servers. Dead letters come from the real
//! stage runner rejecting inputs, advisories from nats-server giving up on a delivery; a
//! deleted call is one recorded through the real ingress. Delete: `replay_dlq/erase.rs`.

mod erase;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::StreamExt as _;
use sb_replay::dlq;
use sb_runtime::{Publisher, RunnerConfig, Shutdown, Topology, run_stage};
use sb_schemas::roles::Role;
use sb_schemas::testing::sid;
use sb_schemas::{Body, CallSid, Dtmf, Envelope, subject};
use sb_tests::{TestEnv, eventually};
use serde_json::Value;

use crate::replay::rig::{Output, json_lines, replay_into};
use crate::support::{self, CONSUMER, TestStage};

/// `replay {args}` as `role`: what it printed, and its error (`None`: it succeeded).
pub(crate) async fn run(env: &TestEnv, role: Role, args: &[&str]) -> (String, Option<String>) {
    let out = Output::default();
    let result = replay_into(env, role, args, out.clone()).await;
    (out.text(), result.err().map(|e| format!("{e:#}")))
}

/// The shipped topology and the `itest` consumer (transcripts), `CALLS` deduplicating for
/// `window`.
fn topology(window: Duration) -> Topology {
    let mut topology = support::topology(5, Duration::from_secs(30));
    for stream in &mut topology.streams {
        if stream.name == "CALLS" {
            stream.duplicate_window = window;
        }
    }
    topology
}

/// Runs a stage on `itest` that rejects transcripts saying "bad", and those saying
/// "poison" until `fixed`; it accepts the rest.
pub(crate) fn rejecting_stage(env: &TestEnv, fixed: Arc<AtomicBool>) -> (TestStage, Shutdown) {
    let stage = TestStage::new(move |input, _| {
        let fixed = fixed.load(Ordering::SeqCst);
        async move {
            let text = match &input.body {
                Body::Transcript(t) => t.text.clone(),
                _ => String::new(),
            };
            let verdict = match (text.as_str(), fixed) {
                ("bad", _) | ("poison", false) => Err(sb_runtime::StageError::reject(
                    "unanswerable",
                    format!("cannot answer {text:?}"),
                )),
                _ => Ok(()),
            };
            (vec![], verdict)
        }
    });
    let shutdown = Shutdown::new(Duration::from_secs(5));
    let (js, topology, s, runner) = (
        env.js.clone(),
        env.topology.clone(),
        shutdown.clone(),
        stage.clone(),
    );
    tokio::spawn(async move {
        let config = RunnerConfig {
            concurrency: 4,
            retry_base_ms: 50,
            retry_max_ms: 500,
        };
        run_stage(Arc::new(runner), &js, &topology, &s, config)
            .await
            .expect("runner failed");
    });
    (stage, shutdown)
}

/// Publishes `event` and waits until the stage dead-lettered it: its DLQ sequence.
pub(crate) async fn dead_lettered(env: &TestEnv, event: &Envelope) -> u64 {
    Publisher::new(env.js.clone()).publish(event).await.unwrap();
    eventually("the dead letter", Duration::from_secs(10), || async {
        let letters = dlq::list(&env.js, &dlq::Filter::default()).await.ok()?;
        letters.iter().find_map(|l| match &l.content {
            dlq::Content::Dead(d) if sb_schemas::decode(&d.payload).ok()?.id == event.id => {
                Some(l.seq)
            }
            _ => None,
        })
    })
    .await
    .unwrap()
}

/// A real max-deliveries advisory: a consumer that delivers `event` at most once, its one
/// delivery NAKed, then pulled again so the server gives up. Returns the event's CALLS seq.
async fn advisory(env: &TestEnv, event: &Envelope) -> u64 {
    let calls = env.js.get_stream("CALLS").await.unwrap();
    let consumer: jetstream::consumer::PullConsumer = calls
        .create_consumer(pull::Config {
            durable_name: Some("once".into()),
            filter_subject: subject::for_envelope(event),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_deliver: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let stored = Publisher::new(env.js.clone()).publish(event).await.unwrap();
    let mut first = consumer.fetch().max_messages(1).messages().await.unwrap();
    let message = first.next().await.unwrap().unwrap();
    message.ack_with(AckKind::Nak(None)).await.unwrap();
    let advisories = subject::max_deliveries_advisory("CALLS", "once");
    eventually("the advisory", Duration::from_secs(10), || async {
        // A pull makes the server try the redelivery, past max_deliver.
        let mut again = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_millis(50))
            .messages()
            .await
            .ok()?;
        while again.next().await.is_some() {}
        (support::stored(&env.js, "DLQ", &advisories).await == 1).then_some(())
    })
    .await
    .unwrap();
    stored.sequence
}

fn dtmf(call: &CallSid) -> Envelope {
    Envelope::new(
        support::tenant(),
        call.clone(),
        1,
        Body::Dtmf(Dtmf { digit: "5".into() }),
    )
}

/// Messages `CALLS` stores on `event`'s subject.
async fn on_subject(env: &TestEnv, event: &Envelope) -> usize {
    support::stored(&env.js, "CALLS", &subject::for_envelope(event)).await
}

/// A dead letter and an advisory are listed (newest first, the advisory marked) and shown
/// (the record, the decoded event, who a redrive reaches; the advisory's original message).
/// The advisory cannot be redriven. Once the stage is fixed and `CALLS`' duplicate window
/// has passed, the dead letter is redriven: stored on its subject exactly once more, handled
/// by the stage, gone from DLQ; a second redrive reports it gone and stores nothing.
/// Purging one, all of a consumer, or only the older ones deletes just those.
#[tokio::test]
async fn dead_letters_are_listed_shown_redriven_once_and_purged() {
    let env = TestEnv::with_topology(topology(Duration::from_millis(500)))
        .await
        .unwrap();
    let fixed = Arc::new(AtomicBool::new(false));
    let (stage, shutdown) = rejecting_stage(&env, fixed.clone());
    let poison = support::transcript(&sid(1), 1, "poison");
    let letter = dead_lettered(&env, &poison).await;
    let dtmf = dtmf(&sid(2));
    let dtmf_seq = advisory(&env, &dtmf).await;

    let (text, err) = run(&env, Role::Replay, &["dlq", "list"]).await;
    assert_eq!(err, None);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two: {text}");
    assert!(lines[1].contains("[advisory]"), "newest first: {text}");
    assert!(
        lines[1].contains(&format!("(CALLS seq {dtmf_seq})")),
        "{text}"
    );
    let poison_subject = subject::for_envelope(&poison);
    for part in [
        letter.to_string(),
        format!("CALLS/{CONSUMER}"),
        poison_subject.clone(),
        "unanswerable: cannot answer \"poison\"".to_owned(),
    ] {
        assert!(lines[2].contains(&part), "{part}: {text}");
    }
    let (text, _) = run(&env, Role::Replay, &["dlq", "list", "--json"]).await;
    let listed = json_lines(&text);
    let advisory_seq = listed[0]["seq"].as_u64().unwrap();
    assert_eq!(
        (listed[0]["type"].as_str(), listed[1]["type"].as_str()),
        (Some("advisory"), Some("dead_letter"))
    );
    assert_eq!(listed[1]["deliveries"], 1);
    let (text, _) = run(&env, Role::Replay, &["dlq", "list", "--consumer", "once"]).await;
    assert_eq!(
        text.lines().count(),
        2,
        "the filter keeps the advisory: {text}"
    );

    let (text, err) = run(&env, Role::Replay, &["dlq", "show", &letter.to_string()]).await;
    assert_eq!(err, None);
    assert!(text.contains(&poison.id.to_string()), "the event: {text}");
    assert!(text.contains("seen by: agent"), "{text}");
    let (text, _) = run(
        &env,
        Role::Replay,
        &["dlq", "show", &letter.to_string(), "--json"],
    )
    .await;
    let shown: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(shown["event"]["id"], poison.id.to_string());
    assert_eq!(shown["event"]["kind"], "transcript");
    assert_eq!(shown["reason_kind"], "unanswerable");
    let (text, _) = run(
        &env,
        Role::Replay,
        &["dlq", "show", &advisory_seq.to_string()],
    )
    .await;
    assert!(text.contains("nothing to redrive"), "{text}");
    assert!(text.contains(&dtmf.id.to_string()), "its original: {text}");
    let (_, err) = run(
        &env,
        Role::Ops,
        &["dlq", "redrive", &advisory_seq.to_string()],
    )
    .await;
    assert!(err.unwrap().contains("not redriven"));

    // Fixed; once CALLS forgets the original's id (500 ms here, 2 min in production) the
    // redrive goes through.
    fixed.store(true, Ordering::SeqCst);
    let redriven = eventually("the redrive", Duration::from_secs(20), || async {
        match run(&env, Role::Ops, &["dlq", "redrive", &letter.to_string()]).await {
            (text, None) => Some(text),
            (text, Some(_)) => {
                assert!(text.contains(&format!("kept {letter}")), "{text}");
                None
            }
        }
    })
    .await
    .unwrap();
    assert!(redriven.contains(&format!("redriven {letter}: {poison_subject} stored again")));
    eventually("the stage to take it", Duration::from_secs(10), || async {
        let seen = stage.seen().iter().filter(|s| s.input == poison.id).count();
        (seen == 2 && support::consumer_backlog(&env.js).await == (0, 0)).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(on_subject(&env, &poison).await, 2, "stored once more");
    let (text, err) = run(&env, Role::Ops, &["dlq", "redrive", &letter.to_string()]).await;
    assert!(text.contains("is gone"), "{text}");
    assert!(err.is_some());
    assert_eq!(
        on_subject(&env, &poison).await,
        2,
        "the second redrive stored nothing"
    );
    assert!(matches!(
        dlq::get(&env.js, letter).await,
        Err(dlq::DlqError::Gone(_))
    ));

    // Purge one; then all of a consumer, or only those older than a time.
    let (text, err) = run(
        &env,
        Role::Ops,
        &["dlq", "purge", &advisory_seq.to_string()],
    )
    .await;
    assert_eq!(
        (text.trim(), err),
        (format!("purged {advisory_seq}").as_str(), None)
    );
    let (text, _) = run(
        &env,
        Role::Ops,
        &["dlq", "purge", &advisory_seq.to_string()],
    )
    .await;
    assert!(text.contains("is gone"), "{text}");
    let older = dead_lettered(&env, &support::transcript(&sid(3), 1, "bad")).await;
    let newer = dead_lettered(&env, &support::transcript(&sid(4), 1, "bad")).await;
    let (text, _) = run(
        &env,
        Role::Ops,
        &["dlq", "purge", "--all", "--older-than", "1h"],
    )
    .await;
    assert_eq!(text.trim(), "purged 0 messages from DLQ");
    let newer_at = dlq::get(&env.js, newer).await.unwrap().stored_at;
    let cut = std::time::UNIX_EPOCH + Duration::from_micros(newer_at);
    assert_eq!(
        dlq::purge(&env.js, &dlq::Filter::default(), Some(cut))
            .await
            .unwrap(),
        1
    );
    assert!(dlq::get(&env.js, older).await.is_err() && dlq::get(&env.js, newer).await.is_ok());
    let args = [
        "dlq",
        "purge",
        "--all",
        "--stream",
        "CALLS",
        "--consumer",
        CONSUMER,
    ];
    let (text, _) = run(&env, Role::Ops, &args).await;
    assert_eq!(text.trim(), "purged 1 messages from DLQ");
    let (text, _) = run(&env, Role::Replay, &["dlq", "list"]).await;
    assert_eq!(text.lines().count(), 1, "only the header: {text}");
    shutdown.trigger();
}

/// Inside `CALLS`' duplicate window (2 minutes) a redrive is dropped as a duplicate of the
/// original, which no consumer sees again: the dead letter is kept, and the command says so
/// and fails.
#[tokio::test]
async fn a_redrive_inside_the_duplicate_window_is_kept() {
    let env = TestEnv::with_topology(support::topology(5, Duration::from_secs(30)))
        .await
        .unwrap();
    let (stage, shutdown) = rejecting_stage(&env, Arc::new(AtomicBool::new(false)));
    let poison = support::transcript(&sid(5), 1, "poison");
    let letter = dead_lettered(&env, &poison).await;
    let (text, err) = run(&env, Role::Ops, &["dlq", "redrive", &letter.to_string()]).await;
    assert!(
        text.contains(&format!("kept {letter}: CALLS still holds")),
        "{text}"
    );
    assert!(text.contains("2m duplicate window"), "{text}");
    assert!(err.unwrap().contains("1 dead letters not redriven"));
    assert!(dlq::get(&env.js, letter).await.is_ok(), "still in DLQ");
    assert_eq!(on_subject(&env, &poison).await, 1, "not stored again");
    assert_eq!(stage.seen().len(), 1);
    shutdown.trigger();
}

/// Clear errors: a sequence DLQ does not hold; NATS unreachable.
#[tokio::test]
async fn dlq_errors_name_the_problem() {
    let env = TestEnv::start().await.unwrap();
    let (_, err) = run(&env, Role::Replay, &["dlq", "show", "42"]).await;
    assert!(err.unwrap().contains("DLQ message 42 is gone"));
    let (_, err) = run(&env, Role::Ops, &["dlq", "purge", "42"]).await;
    assert!(err.unwrap().contains("not purged"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let call = sid(1);
    for command in [
        &["dlq", "list"][..],
        &["delete", call.as_str(), "--by", "x"],
    ] {
        let url = format!("nats://127.0.0.1:{port}");
        let mut argv = vec!["replay", "--nats-url", &url];
        argv.extend_from_slice(command);
        let cli = <sb_replay::cli::Cli as clap::Parser>::try_parse_from(argv).unwrap();
        let mut out = Vec::new();
        let err = tokio::time::timeout(Duration::from_secs(20), sb_replay::cli::run(cli, &mut out))
            .await
            .expect("an unreachable NATS is an error, not a wait")
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot connect to NATS"),
            "{err:#}"
        );
    }
}
