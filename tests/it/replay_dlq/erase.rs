//! `replay delete` (right to erasure) against real servers: a call recorded through the
//! ingress, with a dead letter and its STT lease, erased down to its tombstone; another call
//! in the same streams untouched; a call without `end` and an unknown call refused.

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use async_nats::jetstream::stream::DirectGetErrorKind;
use bytes::Bytes;
use sb_replay::{CallLog, dlq};
use sb_runtime::Publisher;
use sb_schemas::roles::Role;
use sb_schemas::{
    Body, CallSid, End, EndReason, Envelope, Kind, Mulaw, Sentence, Start, TtsChunk, subject,
};
use sb_tests::TestEnv;

use super::{dead_lettered, rejecting_stage, run};
use crate::replay::rig::{CONTROL_KINDS, json_lines, kinds, new_call, record_call};
use crate::support::{self, tenant};

/// A short call as its services publish it: `start`, a sentence, a bot audio chunk, and
/// `end` if `ended`.
async fn synthetic_call(env: &TestEnv, sid: &CallSid, ended: bool) {
    let start = Envelope::new(
        tenant(),
        sid.clone(),
        0,
        Body::Start(Start {
            stream_sid: "MZ1".into(),
            account_sid: "AC1".into(),
            from: "+14155551234".into(),
            to: "+15005550006".into(),
            custom_parameters: Default::default(),
        }),
    );
    let mut events = vec![
        start.follow(Body::Sentence(Sentence {
            index: 0,
            text: "Hello.".into(),
            last: true,
            fallback: false,
        })),
        start.follow(Body::TtsChunk(TtsChunk {
            sentence: 0,
            chunk: 0,
            last: true,
            turn_last: true,
            payload: Mulaw(Bytes::from(vec![0x20; 160])),
        })),
    ];
    if ended {
        events.push(start.follow(Body::End(End {
            reason: EndReason::Completed,
        })));
    }
    let publisher = Publisher::new(env.js.clone());
    for event in std::iter::once(&start).chain(&events) {
        publisher.publish(event).await.unwrap();
    }
}

/// Messages stored in `stream` on `filter`.
async fn stored(env: &TestEnv, stream: &str, filter: &str) -> u64 {
    support::stored(&env.js, stream, filter).await as u64
}

/// Erasing a call recorded through the ingress (control events, caller and bot audio, its
/// STT lease) that also has a dead letter removes every message of it and leaves only the
/// tombstone, saying by whom and how many: `CallLog::load` finds the tombstone alone,
/// `show` prints it alone, `wav` and `export` say the call was erased, an export taken
/// before cannot be imported again (not even under a prefix), and direct gets by subject
/// find nothing but the tombstone. Another call in the same streams, with its own dead
/// letter, reads exactly as before. Deleting again says it was done already.
#[tokio::test]
async fn delete_leaves_only_the_tombstone_and_other_calls_intact() {
    let env = TestEnv::with_topology(support::topology(5, Duration::from_secs(30)))
        .await
        .unwrap();
    let (_stage, shutdown) = rejecting_stage(&env, Arc::new(AtomicBool::new(false)));
    let erased = record_call(&env, &new_call(), async {}).await.sid;
    let kept = new_call();
    synthetic_call(&env, &kept, true).await;
    dead_lettered(&env, &support::transcript(&erased, 1, "bad")).await;
    let kept_letter = dead_lettered(&env, &support::transcript(&kept, 1, "bad")).await;
    shutdown.trigger();

    let calls = stored(&env, "CALLS", &subject::call_events_filter(&erased)).await;
    let audio = stored(&env, "AUDIO", &subject::call_audio_filter(&erased)).await;
    let lease = subject::stt_assign(&tenant(), &erased);
    assert_eq!(
        stored(&env, "STT_ASSIGN", &lease).await,
        1,
        "no stt took the lease"
    );
    assert!(
        calls > CONTROL_KINDS.len() as u64 && audio > 2,
        "{calls} {audio}"
    );
    let (kept_before, _) = run(&env, Role::Replay, &["show", kept.as_str(), "--json"]).await;
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("before.sbcall").display().to_string();
    let (_, err) = run(
        &env,
        Role::Replay,
        &["export", erased.as_str(), "-o", &export],
    )
    .await;
    assert_eq!(err, None);

    // The call is in the call index too (its numbers are there).
    let summary =
        sb_replay::summary::CallSummary::of(&CallLog::load(&env.js, &erased).await.unwrap())
            .expect("the call ended");
    sb_replay::index::record(&env.js, &summary).await.unwrap();

    let args = ["delete", erased.as_str(), "--by", "dpo@acme.example"];
    let (text, err) = run(&env, Role::Ops, &args).await;
    assert_eq!(err, None, "{text}");
    let said = format!(
        "removed messages {audio} from AUDIO, {calls} from CALLS, 1 from DLQ, 1 from \
         KV_CALL_INDEX, 1 from STT_ASSIGN;"
    );
    assert!(text.contains(&said), "{text}");
    let everything = sb_replay::index::Filter {
        limit: 100,
        ..Default::default()
    };
    let indexed = sb_replay::index::recent(&env.js, &everything)
        .await
        .unwrap();
    assert!(
        indexed.iter().all(|c| c.call_sid != erased.as_str()),
        "{indexed:?}"
    );

    let log = CallLog::load(&env.js, &erased).await.unwrap();
    assert_eq!(log.events.len(), 1, "{:?}", log.events);
    let Body::Erased(tombstone) = &log.events[0].event.body else {
        panic!("not a tombstone: {:?}", log.events[0]);
    };
    assert_eq!(tombstone.by, "dpo@acme.example");
    let removed: Vec<(&str, u64)> = (tombstone.removed.iter())
        .map(|(s, n)| (s.as_str(), *n))
        .collect();
    let expected = [
        ("AUDIO", audio),
        ("CALLS", calls),
        ("DLQ", 1),
        ("KV_CALL_INDEX", 1),
        ("STT_ASSIGN", 1),
    ];
    assert_eq!(removed, expected);

    let (text, err) = run(&env, Role::Replay, &["show", erased.as_str()]).await;
    assert_eq!(err, None);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("erased") && text.contains("by dpo@acme.example"),
        "{text}"
    );
    let (text, _) = run(&env, Role::Replay, &["show", erased.as_str(), "--json"]).await;
    assert_eq!(kinds(&json_lines(&text)), ["erased"]);
    let wav = dir.path().join("call.wav").display().to_string();
    let (_, err) = run(&env, Role::Replay, &["wav", erased.as_str(), &wav]).await;
    assert!(err.unwrap().contains("was erased at"));
    assert!(!std::path::Path::new(&wav).exists());
    let again = dir.path().join("after.sbcall").display().to_string();
    let (_, err) = run(
        &env,
        Role::Replay,
        &["export", erased.as_str(), "-o", &again],
    )
    .await;
    assert!(err.unwrap().contains("by dpo@acme.example"));
    let (_, err) = run(&env, Role::Ops, &["import", &export, "--prefix", "imp"]).await;
    assert!(err.unwrap().contains("was erased from this deployment"));
    assert!(
        env.js.get_stream("imp_CALLS").await.is_err(),
        "nothing created"
    );

    let calls_stream = env.js.get_stream("CALLS").await.unwrap();
    let audio_stream = env.js.get_stream("AUDIO").await.unwrap();
    let t = tenant();
    let mut gone: Vec<(_, String)> = CONTROL_KINDS
        .iter()
        .chain(&["transcript"])
        .map(|k| {
            (
                &calls_stream,
                subject::event(&t, &erased, Kind::parse(k).unwrap()),
            )
        })
        .collect();
    gone.push((&audio_stream, subject::audio_in(&t, &erased)));
    gone.push((&audio_stream, subject::audio_out(&t, &erased)));
    for (stream, subject) in gone {
        let found = stream.direct_get_last_for_subject(subject.as_str()).await;
        let kind = found.map(|_| ()).map_err(|e| e.kind());
        assert_eq!(kind, Err(DirectGetErrorKind::NotFound), "{subject}");
    }
    let tombstone = subject::event(&t, &erased, Kind::Erased);
    assert!(
        calls_stream
            .direct_get_last_for_subject(tombstone)
            .await
            .is_ok()
    );
    assert_eq!(stored(&env, "STT_ASSIGN", &lease).await, 0);
    let letters = dlq::list(&env.js, &dlq::Filter::default()).await.unwrap();
    assert!(!letters.iter().any(|l| l.is_of_call(&erased)));
    assert_eq!(
        letters.iter().map(|l| l.seq).collect::<Vec<_>>(),
        [kept_letter],
        "the other call's dead letter stays"
    );
    let (kept_after, _) = run(&env, Role::Replay, &["show", kept.as_str(), "--json"]).await;
    assert_eq!(kept_after, kept_before, "the other call is untouched");

    let (text, err) = run(&env, Role::Ops, &args).await;
    assert_eq!(err, None);
    assert!(text.contains("was erased already"), "{text}");
    assert_eq!(
        stored(&env, "CALLS", &subject::call_events_filter(&erased)).await,
        1
    );
}

/// A call without a stored `end` may still be live: refused, and nothing of it removed,
/// unless forced. An unknown call is an error that says so.
#[tokio::test]
async fn delete_refuses_a_live_call_and_an_unknown_one() {
    let env = TestEnv::start().await.unwrap();
    let live = new_call();
    synthetic_call(&env, &live, false).await;
    let filter = subject::call_events_filter(&live);
    let args = ["delete", live.as_str(), "--by", "dpo"];
    let (_, err) = run(&env, Role::Ops, &args).await;
    assert!(err.unwrap().contains("may still be live"));
    assert_eq!(stored(&env, "CALLS", &filter).await, 2, "nothing removed");
    assert_eq!(
        stored(&env, "AUDIO", &subject::call_audio_filter(&live)).await,
        1
    );
    let (text, err) = run(&env, Role::Ops, &[&args[..], &["--force"]].concat()).await;
    assert_eq!(err, None, "{text}");
    assert!(
        text.contains("removed messages 1 from AUDIO, 2 from CALLS,"),
        "{text}"
    );
    assert_eq!(stored(&env, "CALLS", &filter).await, 1, "the tombstone");

    let unknown = new_call();
    let (_, err) = run(
        &env,
        Role::Ops,
        &["delete", unknown.as_str(), "--by", "dpo"],
    )
    .await;
    assert!(err.unwrap().contains("no messages stored for call"));
}
