//! The stt worker against real NATS + Redis and the Deepgram stand-in: transcription of a
//! call, lease release at the end, crash takeover without losing an utterance, graceful
//! hand-off, and epoch fencing of a stale owner.
//!
//! Each test plays the ingress itself: the session, the `start` event and its lease, then
//! the caller's audio as `Audio` frames (speech-like bursts and silence) and finally `end`.

use std::{
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use futures::StreamExt as _;
use sb_runtime::{Publisher, Runtime, Topology};
use sb_schemas::testing::{sid, tenant, tenant_id};
use sb_schemas::{
    Audio, Body, CallSid, End, EndReason, Envelope, Mulaw, Start, Transcript, decode, subject,
};
use sb_sim::{SimServer, deepgram};
use sb_stt::{Deepgram, RunError, SttConfig};
use sb_tests::{TestEnv, eventually};

const WAIT: Duration = Duration::from_secs(15);

/// A Deepgram stand-in whose connections each hear `script`, then `EXTRA` for any further
/// utterance (so a duplicate is visible).
async fn deepgram_sim(script: &[&str]) -> (SimServer, Arc<deepgram::Shared>) {
    deepgram_sim_with(deepgram::Config {
        script: script.iter().map(|s| (*s).to_owned()).collect(),
        fallback_transcript: Some(EXTRA.into()),
        ..Default::default()
    })
    .await
}

async fn deepgram_sim_with(config: deepgram::Config) -> (SimServer, Arc<deepgram::Shared>) {
    let shared = deepgram::Shared::new(config);
    let server = SimServer::spawn(
        "127.0.0.1:0".parse().unwrap(),
        deepgram::router(shared.clone()),
    )
    .await
    .unwrap();
    (server, shared)
}

const EXTRA: &str = "an utterance nobody said";

/// A worker running in this process; `task` ends when it stops (or is aborted: a crash).
struct Worker {
    runtime: Runtime,
    task: tokio::task::JoinHandle<Result<(), RunError>>,
}

impl Worker {
    /// Stops it as SIGTERM would; it returns once its calls are handed back.
    async fn stop(self) {
        self.runtime.shutdown.trigger();
        self.task.await.unwrap().unwrap();
    }
}

fn spawn_worker(runtime: Runtime, sim: &SimServer, max_calls: u32) -> Worker {
    let mut config = SttConfig::for_tests(&sim.ws_url(), Some("test-key"));
    config.max_calls = max_calls;
    spawn_worker_with(runtime, config)
}

fn spawn_worker_with(runtime: Runtime, config: SttConfig) -> Worker {
    let client = Deepgram::new(&config.deepgram).unwrap();
    let task = tokio::spawn(sb_stt::run(runtime.clone(), client, config));
    Worker { runtime, task }
}

/// Applies the shipped `stt` lease consumer with another `ack_wait` (after every runtime
/// has started: `Runtime::start` re-applies the shipped definition).
async fn set_lease_ack_wait(env: &TestEnv, ack_wait: Duration) {
    let mut config = Topology::embedded()
        .unwrap()
        .consumer("stt")
        .unwrap()
        .config
        .clone();
    config.ack_wait = ack_wait;
    let stream = env.js.get_stream(subject::STT_ASSIGN_STREAM).await.unwrap();
    stream.create_consumer(config).await.unwrap();
}

/// Every control event of one call, as published (a core subscription).
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Envelope>>>);

impl Events {
    async fn watch(env: &TestEnv, sid: &CallSid) -> Self {
        let events = Self::default();
        let mut sub = env
            .client
            .subscribe(subject::call_events_filter(sid))
            .await
            .unwrap();
        env.client.flush().await.unwrap();
        let sink = events.0.clone();
        tokio::spawn(async move {
            while let Some(message) = sub.next().await {
                if let Ok(event) = decode(&message.payload) {
                    sink.lock().unwrap().push(event);
                }
            }
        });
        events
    }

    fn all(&self) -> Vec<Envelope> {
        self.0.lock().unwrap().clone()
    }

    /// `(turn, transcript)` in publish order.
    fn transcripts(&self) -> Vec<(u32, Transcript)> {
        self.all()
            .into_iter()
            .filter_map(|e| match e.body {
                Body::Transcript(t) => Some((e.turn, t)),
                _ => None,
            })
            .collect()
    }

    async fn transcript_with_epoch(&self, epoch: u64) -> (u32, Transcript) {
        eventually("a transcript", WAIT, || async {
            self.transcripts()
                .into_iter()
                .find(|(_, t)| t.epoch == epoch)
        })
        .await
        .unwrap()
    }
}

/// Plays the ingress for one call: session, `start` and lease, audio frames, `end`.
struct Caller {
    publisher: Publisher,
    sid: CallSid,
    next_seq: u64,
}

impl Caller {
    async fn start(env: &TestEnv, sid: CallSid) -> Self {
        let redis = env.redis().await.unwrap();
        redis.session_start(&sid, &tenant()).await.unwrap();
        let publisher = Publisher::new(env.js.clone());
        let start = Envelope::new(
            tenant(),
            sid.clone(),
            0,
            Body::Start(Start {
                stream_sid: "MZ0123".into(),
                account_sid: "AC0123".into(),
                from: "+15005550001".into(),
                to: "+15005550006".into(),
                custom_parameters: Default::default(),
            }),
        );
        publisher.publish(&start).await.unwrap();
        publisher.publish_lease(&start).await.unwrap();
        Self {
            publisher,
            sid,
            next_seq: 0,
        }
    }

    /// Publishes `pcm` as 20 ms frames; returns the seq of its last frame.
    async fn say(&mut self, pcm: &[i16]) -> u64 {
        let bytes = sb_audio::mulaw::encode_slice(pcm);
        let mut pending = Vec::new();
        for frame in bytes.chunks(sb_audio::FRAME_BYTES) {
            let seq = self.next_seq;
            self.next_seq += 1;
            let event = Envelope::new(
                tenant(),
                self.sid.clone(),
                0,
                Body::Audio(Audio {
                    seq,
                    timestamp_ms: seq * 20,
                    payload: Mulaw(bytes::Bytes::copy_from_slice(frame)),
                }),
            );
            pending.push(self.publisher.send(&event).await.unwrap());
        }
        for ack in pending {
            ack.stored().await.unwrap();
        }
        self.next_seq - 1
    }

    /// Silence, speech-like audio of `text`, silence (long enough to end the utterance).
    /// Returns the seq of the last speech frame.
    async fn utterance(&mut self, text: &str) -> u64 {
        self.say(&sb_audio::synth::silence(300)).await;
        let last_speech = self.say(&sb_audio::synth::speechlike(text)).await;
        self.say(&sb_audio::synth::silence(800)).await;
        last_speech
    }

    async fn end(&self) {
        let end = Envelope::new(
            tenant(),
            self.sid.clone(),
            0,
            Body::End(End {
                reason: EndReason::Stop,
            }),
        );
        self.publisher.publish(&end).await.unwrap();
    }
}

/// Messages left in STT_ASSIGN (the work queue removes an acked lease).
async fn leases(env: &TestEnv) -> u64 {
    let mut stream = env.js.get_stream(subject::STT_ASSIGN_STREAM).await.unwrap();
    stream.info().await.unwrap().state.messages
}

async fn wait_for_no_leases(env: &TestEnv) {
    eventually("the lease acked", WAIT, || async {
        (leases(env).await == 0).then_some(())
    })
    .await
    .unwrap();
}

/// `(stt_epoch, stt_checkpoint)` of the session.
async fn checkpoint(env: &TestEnv, sid: &CallSid) -> (u64, Option<u64>) {
    let session = env.redis().await.unwrap().session_load(sid).await.unwrap();
    session
        .map(|s| (s.stt_epoch, s.stt_checkpoint))
        .unwrap_or_default()
}

/// Waits until the session's `(stt_epoch, stt_checkpoint)` is `expected`. The stt stores a
/// transcript before it moves the checkpoint (a crash in between repeats the utterance
/// rather than losing it), so seeing the transcript does not mean the checkpoint is there.
async fn wait_for_checkpoint(env: &TestEnv, sid: &CallSid, expected: (u64, Option<u64>)) {
    let what = format!("(stt_epoch, stt_checkpoint) == {expected:?}");
    eventually(&what, WAIT, || async {
        (checkpoint(env, sid).await == expected).then_some(())
    })
    .await
    .unwrap();
}

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

/// A call whose owner (worker A, epoch 1) transcribed and checkpointed "utterance one",
/// then crashed without a word; worker B (a runtime and a Deepgram stand-in that will hear
/// `second_line`) is ready but not started. The lease's `ack_wait` is 2 s.
struct Crashed {
    env: TestEnv,
    sid: CallSid,
    events: Events,
    caller: Caller,
    first: Transcript,
    sim_b: SimServer,
    runtime_b: Runtime,
}

async fn crash_after_utterance_one(n: u128, second_line: &str) -> Crashed {
    let env = TestEnv::start().await.unwrap();
    let (sim_a, _) = deepgram_sim(&["utterance one"]).await;
    let (sim_b, _) = deepgram_sim(&[second_line]).await;
    let (runtime_a, runtime_b) = (
        env.runtime("stt").await.unwrap(),
        env.runtime("stt").await.unwrap(),
    );
    set_lease_ack_wait(&env, Duration::from_secs(2)).await;
    // One slot: once A owns the call it has no pull in flight that could catch the lease.
    let worker_a = spawn_worker(runtime_a, &sim_a, 1);
    let sid = sid(n);
    let events = Events::watch(&env, &sid).await;
    let mut caller = Caller::start(&env, sid.clone()).await;
    caller.utterance("utterance one").await;
    let (_, first) = events.transcript_with_epoch(1).await;
    wait_for_checkpoint(&env, &sid, (1, Some(first.audio_seq))).await;
    // Crash: no NAK, no goodbye; the lease stays un-acked until ack_wait runs out.
    worker_a.task.abort();
    assert!(worker_a.task.await.unwrap_err().is_cancelled());
    drop(worker_a.runtime);
    Crashed {
        env,
        sid,
        events,
        caller,
        first,
        sim_b,
        runtime_b,
    }
}

/// Every transcript so far as (epoch, turn, text).
fn epochs_turns_texts(events: &Events) -> Vec<(u64, u32, String)> {
    events
        .transcripts()
        .into_iter()
        .map(|(turn, t)| (t.epoch, turn, t.text))
        .collect()
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
