//! The stt worker against real NATS + Redis and the Deepgram stand-in: transcription of a
//! call, lease release at the end, crash takeover without losing an utterance, graceful
//! hand-off, and epoch fencing of a stale owner.
//!
//! Each test plays the ingress itself ([`harness::Caller`]): the session, the `start` event
//! and its lease, then the caller's audio as `Audio` frames (speech-like bursts and
//! silence) and finally `end`.

mod harness;

use std::{sync::atomic::Ordering, time::Duration};

use sb_runtime::Publisher;
use sb_schemas::testing::{sid, tenant_id};
use sb_schemas::{Body, Envelope, Start, subject};
use sb_sim::deepgram;
use sb_tests::{TestEnv, eventually};

use harness::{
    Caller, Crashed, EXTRA, Events, WAIT, checkpoint, crash_after_utterance_one, deepgram_sim,
    deepgram_sim_with, epochs_turns_texts, leases, set_lease_ack_wait, spawn_worker,
    wait_for_checkpoint, wait_for_no_leases,
};

/// A call's speech yields `speech`, `partial`s and one `transcript` with turn 1, epoch 1,
/// the scripted words and the audio it covers; the session's checkpoint is that frame; the
/// call's `end` acks the lease (STT_ASSIGN is empty) and closes the provider stream.
#[tokio::test]
async fn transcribes_a_call_then_releases_the_lease_at_the_end() {
    let env = TestEnv::start().await.unwrap();
    let line = "I'd like to book a table for two.";
    let (sim, stats) = deepgram_sim(&[line]).await;
    let worker = spawn_worker(env.runtime("stt").await.unwrap(), &sim, 4);
    let sid = sid(1);
    let events = Events::watch(&env, &sid).await;

    let mut caller = Caller::start(&env, sid.clone()).await;
    let last_speech = caller.utterance(line).await;
    let (turn, transcript) = events.transcript_with_epoch(1).await;

    assert_eq!((turn, transcript.epoch), (1, 1));
    assert_eq!(transcript.text, line);
    assert!(transcript.confidence > 0.5, "{}", transcript.confidence);
    assert!(
        (last_speech..caller.next_seq).contains(&transcript.audio_seq),
        "audio_seq {} should cover the speech (last speech frame {last_speech})",
        transcript.audio_seq
    );
    assert!(transcript.speech_ended_at > 0);
    let all = events.all();
    let speech: Vec<_> = all
        .iter()
        .filter_map(|e| match &e.body {
            Body::Speech(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(speech.len(), 1, "{all:?}");
    assert_eq!(speech[0].epoch, 1);
    // 300 ms of silence precede the speech: frame 15 onwards.
    assert!((280..=400).contains(&speech[0].offset_ms), "{speech:?}");
    let partials: Vec<_> = all
        .iter()
        .filter_map(|e| match &e.body {
            Body::Partial(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    assert!(!partials.is_empty(), "{all:?}");
    assert!(
        partials
            .iter()
            .all(|p| p.epoch == 1 && line.starts_with(&p.text)),
        "{partials:?}"
    );
    wait_for_checkpoint(&env, &sid, (1, Some(transcript.audio_seq))).await;
    assert_eq!(
        leases(&env).await,
        1,
        "the lease is held while the call lives"
    );

    caller.end().await;
    wait_for_no_leases(&env).await;
    eventually("the provider stream closed", WAIT, || async {
        (stats.stats().active.load(Ordering::Relaxed) == 0).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(events.transcripts().len(), 1, "{:?}", events.transcripts());

    worker.stop().await;
}

/// A killed stt worker's call is taken over by another replica after `ack_wait`: the new
/// owner (epoch 2) resumes from the checkpoint, publishes the utterance spoken while no one
/// owned the call exactly once, as turn 2, and does not transcribe utterance 1 again.
#[tokio::test]
async fn a_crashed_workers_call_is_taken_over_without_losing_an_utterance() {
    let Crashed {
        env,
        sid,
        events,
        mut caller,
        first,
        sim_b,
        runtime_b,
    } = crash_after_utterance_one(2, "utterance two").await;
    let last_speech = caller.utterance("utterance two").await;

    let worker_b = spawn_worker(runtime_b, &sim_b, 4);
    let (turn, second) = events.transcript_with_epoch(2).await;
    assert_eq!((turn, second.text.as_str()), (2, "utterance two"));
    assert!(
        second.audio_seq > first.audio_seq && second.audio_seq >= last_speech,
        "{second:?} after {first:?}, speech ended at frame {last_speech}"
    );
    wait_for_checkpoint(&env, &sid, (2, Some(second.audio_seq))).await;

    caller.end().await;
    wait_for_no_leases(&env).await;
    assert_eq!(
        epochs_turns_texts(&events),
        [
            (1, 1, "utterance one".to_owned()),
            (2, 2, "utterance two".to_owned())
        ]
    );
    worker_b.stop().await;
}

/// A stopping worker (SIGTERM) NAKs its lease at once: the other replica takes the call
/// over long before `ack_wait` (30 s here) could have returned it, with epoch 2, and
/// transcribes the next utterance.
#[tokio::test]
async fn a_stopping_worker_hands_its_calls_off_at_once() {
    let env = TestEnv::start().await.unwrap();
    let (sim_a, stats_a) = deepgram_sim(&["first words"]).await;
    let (sim_b, _) = deepgram_sim(&["second words"]).await;
    let (runtime_a, runtime_b) = (
        env.runtime("stt").await.unwrap(),
        env.runtime("stt").await.unwrap(),
    );
    set_lease_ack_wait(&env, Duration::from_secs(30)).await;
    let worker_a = spawn_worker(runtime_a, &sim_a, 1);
    let sid = sid(3);
    let events = Events::watch(&env, &sid).await;
    let mut caller = Caller::start(&env, sid.clone()).await;
    caller.utterance("first words").await;
    let (_, first) = events.transcript_with_epoch(1).await;
    assert_eq!(first.text, "first words");

    let worker_b = spawn_worker(runtime_b, &sim_b, 4);
    worker_a.runtime.shutdown.trigger();
    tokio::time::timeout(WAIT, worker_a.task)
        .await
        .expect("a stopping worker returns promptly")
        .unwrap()
        .unwrap();
    eventually("A hung up its provider stream", WAIT, || async {
        (stats_a.stats().active.load(Ordering::Relaxed) == 0).then_some(())
    })
    .await
    .unwrap();

    caller.utterance("second words").await;
    let (turn, second) = eventually(
        "B's transcript, well before ack_wait",
        Duration::from_secs(10),
        || async { events.transcripts().into_iter().find(|(_, t)| t.epoch >= 2) },
    )
    .await
    .unwrap();
    assert_eq!(
        (turn, second.epoch, second.text.as_str()),
        (2, 2, "second words")
    );

    caller.end().await;
    wait_for_no_leases(&env).await;
    assert_eq!(events.transcripts().len(), 2, "{:?}", events.transcripts());
    worker_b.stop().await;
}

/// Fencing: once a newer epoch owns the call in the session, the old owner's next
/// utterance is refused by the checkpoint (the session keeps the newer epoch and its
/// checkpoint), and the old owner stops the call without acking the lease.
#[tokio::test]
async fn a_stale_owners_transcript_is_refused_by_the_checkpoint() {
    let env = TestEnv::start().await.unwrap();
    let (sim, stats) = deepgram_sim(&["hello there", "are you still there"]).await;
    let runtime = env.runtime("stt").await.unwrap();
    // A long ack_wait: the heartbeat's own session check (every ack_wait/3) stays out of
    // the way, so the checkpoint is what refuses the stale owner.
    set_lease_ack_wait(&env, Duration::from_secs(60)).await;
    let worker = spawn_worker(runtime, &sim, 4);
    let sid = sid(4);
    let events = Events::watch(&env, &sid).await;
    let mut caller = Caller::start(&env, sid.clone()).await;
    caller.utterance("hello there").await;
    let (_, first) = events.transcript_with_epoch(1).await;
    wait_for_checkpoint(&env, &sid, (1, Some(first.audio_seq))).await;

    // What a replica that took the lease over (epoch 2) writes first.
    let redis = env.redis().await.unwrap();
    assert!(
        redis
            .session_checkpoint(&sid, 2, first.audio_seq)
            .await
            .unwrap()
    );
    caller.utterance("are you still there").await;

    let stale = eventually("the stale owner's transcript", WAIT, || async {
        events
            .transcripts()
            .into_iter()
            .find(|(_, t)| t.text == "are you still there")
    })
    .await
    .unwrap();
    assert_eq!(
        stale.1.epoch, 1,
        "published under the old epoch: downstream drops it"
    );
    eventually("the stale owner hung up", WAIT, || async {
        (stats.stats().active.load(Ordering::Relaxed) == 0).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        checkpoint(&env, &sid).await,
        (2, Some(first.audio_seq)),
        "the refused checkpoint did not move"
    );
    // The lease is settled (and counted) after the provider stream is dropped.
    eventually("the lease settled as stale", WAIT, || async {
        let render = worker.runtime.metrics.render();
        render
            .contains("switchboard_stt_leases_total{event=\"stale\"}")
            .then_some(())
    })
    .await
    .unwrap();
    assert_eq!(leases(&env).await, 1, "a stale owner never acks the lease");

    worker.stop().await;
}

/// A dropped provider connection (the stand-in closes 1011 `NET-0001` after 500 ms without
/// a frame) is reopened while the call stays owned: the next utterance is transcribed on a
/// new connection, and the audio the checkpoint covers is not sent again (no duplicate).
#[tokio::test]
async fn a_dropped_provider_connection_is_reopened_without_losing_the_call() {
    let env = TestEnv::start().await.unwrap();
    let (sim, stats) = deepgram_sim_with(deepgram::Config {
        script: vec!["same line".into()],
        fallback_transcript: Some(EXTRA.into()),
        idle_timeout_ms: 500,
        ..Default::default()
    })
    .await;
    let worker = spawn_worker(env.runtime("stt").await.unwrap(), &sim, 4);
    let sid = sid(5);
    let events = Events::watch(&env, &sid).await;
    let mut caller = Caller::start(&env, sid.clone()).await;
    caller.utterance("same line").await;
    let (_, first) = events.transcript_with_epoch(1).await;
    eventually("the connection dropped and reopened", WAIT, || async {
        (stats.stats().connections.load(Ordering::Relaxed) >= 2).then_some(())
    })
    .await
    .unwrap();

    let last_speech = caller.utterance("same line").await;
    let second = eventually("the second utterance", WAIT, || async {
        events.transcripts().get(1).cloned()
    })
    .await
    .unwrap();
    assert_eq!(
        (second.0, second.1.epoch, second.1.text.as_str()),
        (2, 1, "same line")
    );
    assert!(
        second.1.audio_seq >= last_speech && first.audio_seq < last_speech,
        "{second:?} should cover the second utterance (ending at frame {last_speech})"
    );
    caller.end().await;
    wait_for_no_leases(&env).await;
    assert_eq!(events.transcripts().len(), 2, "{:?}", events.transcripts());
    worker.stop().await;
}

/// A lease that can never be served (a tenant nobody configured) is dead-lettered with its
/// subject and reason and removed from STT_ASSIGN; the worker goes on serving calls.
#[tokio::test]
async fn a_lease_for_an_unknown_tenant_is_dead_lettered() {
    let env = TestEnv::start().await.unwrap();
    let (sim, _) = deepgram_sim(&["still here"]).await;
    let worker = spawn_worker(env.runtime("stt").await.unwrap(), &sim, 4);
    let stranger = Envelope::new(
        tenant_id("initech"),
        sid(6),
        0,
        Body::Start(Start {
            stream_sid: "MZ0".into(),
            account_sid: "AC0".into(),
            from: "+15005550001".into(),
            to: "+15005550099".into(),
            custom_parameters: Default::default(),
        }),
    );
    Publisher::new(env.js.clone())
        .publish_lease(&stranger)
        .await
        .unwrap();
    let dlq = subject::dlq(subject::STT_ASSIGN_STREAM, sb_stt::CONSUMER);
    let stored = eventually("a dead letter", WAIT, || async {
        let payloads = crate::support::payloads(&env.js, "DLQ", &dlq).await;
        payloads.first().cloned()
    })
    .await
    .unwrap();
    let letter = sb_schemas::decode_dead_letter(&stored).unwrap();
    assert_eq!(letter.reason_kind, "unknown_tenant");
    assert_eq!(
        letter.subject,
        subject::stt_assign(&stranger.tenant, &stranger.call_sid)
    );
    wait_for_no_leases(&env).await;

    let sid = sid(7);
    let events = Events::watch(&env, &sid).await;
    let mut caller = Caller::start(&env, sid.clone()).await;
    caller.utterance("still here").await;
    assert_eq!(events.transcript_with_epoch(1).await.1.text, "still here");
    caller.end().await;
    wait_for_no_leases(&env).await;
    worker.stop().await;
}

/// A call that ends while no one owns it (its worker crashed) is still finished by the
/// replacement: it sees the stored `end`, transcribes the audio after the checkpoint (the
/// caller's last words), then acks the lease.
#[tokio::test]
async fn a_call_that_ended_while_unowned_still_gets_its_last_words() {
    let Crashed {
        env,
        sid: _,
        events,
        mut caller,
        first: _,
        sim_b,
        runtime_b,
    } = crash_after_utterance_one(8, "goodbye then").await;

    caller.utterance("goodbye then").await;
    caller.end().await;
    let worker_b = spawn_worker(runtime_b, &sim_b, 4);
    wait_for_no_leases(&env).await;
    assert_eq!(
        epochs_turns_texts(&events),
        [
            (1, 1, "utterance one".to_owned()),
            (2, 2, "goodbye then".to_owned())
        ]
    );
    worker_b.stop().await;
}
