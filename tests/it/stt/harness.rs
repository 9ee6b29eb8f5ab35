//! The stt tests' harness: the Deepgram stand-in, stt workers in this process, a per-call
//! event watch, the caller that plays the ingress (session, `start` and lease, audio
//! frames, `end`), lease and checkpoint inspection, and the crashed-owner scenario.
//!
//! Consumes a [`TestEnv`]; produces the events and state the tests assert on. State: one
//! worker, stand-in and event watch per test.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt as _;
use sb_runtime::{Publisher, Runtime, Topology};
use sb_schemas::testing::{sid, tenant};
use sb_schemas::{
    Audio, Body, CallSid, End, EndReason, Envelope, Mulaw, Start, Transcript, decode, subject,
};
use sb_sim::{SimServer, deepgram};
use sb_stt::{Deepgram, RunError, SttConfig};
use sb_tests::{TestEnv, eventually};

pub(super) const WAIT: Duration = Duration::from_secs(15);

/// A Deepgram stand-in whose connections each hear `script`, then `EXTRA` for any further
/// utterance (so a duplicate is visible).
pub(super) async fn deepgram_sim(script: &[&str]) -> (SimServer, Arc<deepgram::Shared>) {
    deepgram_sim_with(deepgram::Config {
        script: script.iter().map(|s| (*s).to_owned()).collect(),
        fallback_transcript: Some(EXTRA.into()),
        ..Default::default()
    })
    .await
}

pub(super) async fn deepgram_sim_with(
    config: deepgram::Config,
) -> (SimServer, Arc<deepgram::Shared>) {
    let shared = deepgram::Shared::new(config);
    let server = SimServer::spawn(
        "127.0.0.1:0".parse().unwrap(),
        deepgram::router(shared.clone()),
    )
    .await
    .unwrap();
    (server, shared)
}

pub(super) const EXTRA: &str = "an utterance nobody said";

/// A worker running in this process; `task` ends when it stops (or is aborted: a crash).
pub(super) struct Worker {
    pub(super) runtime: Runtime,
    pub(super) task: tokio::task::JoinHandle<Result<(), RunError>>,
}

impl Worker {
    /// Stops it as SIGTERM would; it returns once its calls are handed back.
    pub(super) async fn stop(self) {
        self.runtime.shutdown.trigger();
        self.task.await.unwrap().unwrap();
    }
}

pub(super) fn spawn_worker(runtime: Runtime, sim: &SimServer, max_calls: u32) -> Worker {
    let mut config = SttConfig::for_tests(&sim.ws_url(), Some("test-key"));
    config.max_calls = max_calls;
    spawn_worker_with(runtime, config)
}

pub(super) fn spawn_worker_with(runtime: Runtime, config: SttConfig) -> Worker {
    let client = Deepgram::new(&config.deepgram).unwrap();
    let task = tokio::spawn(sb_stt::run(runtime.clone(), client, config));
    Worker { runtime, task }
}

/// Applies the shipped `stt` lease consumer with another `ack_wait` (after every runtime
/// has started: `Runtime::start` re-applies the shipped definition).
pub(super) async fn set_lease_ack_wait(env: &TestEnv, ack_wait: Duration) {
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
pub(super) struct Events(Arc<Mutex<Vec<Envelope>>>);

impl Events {
    pub(super) async fn watch(env: &TestEnv, sid: &CallSid) -> Self {
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

    pub(super) fn all(&self) -> Vec<Envelope> {
        self.0.lock().unwrap().clone()
    }

    /// `(turn, transcript)` in publish order.
    pub(super) fn transcripts(&self) -> Vec<(u32, Transcript)> {
        self.all()
            .into_iter()
            .filter_map(|e| match e.body {
                Body::Transcript(t) => Some((e.turn, t)),
                _ => None,
            })
            .collect()
    }

    pub(super) async fn transcript_with_epoch(&self, epoch: u64) -> (u32, Transcript) {
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
pub(super) struct Caller {
    pub(super) publisher: Publisher,
    pub(super) sid: CallSid,
    pub(super) next_seq: u64,
}

impl Caller {
    pub(super) async fn start(env: &TestEnv, sid: CallSid) -> Self {
        let redis = env.redis().await.unwrap();
        redis
            .session_start(
                &sid,
                &tenant(),
                &sb_runtime::redis::session::Parties::default(),
                0,
            )
            .await
            .unwrap();
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
    pub(super) async fn say(&mut self, pcm: &[i16]) -> u64 {
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
    pub(super) async fn utterance(&mut self, text: &str) -> u64 {
        self.say(&sb_audio::synth::silence(300)).await;
        let last_speech = self.say(&sb_audio::synth::speechlike(text)).await;
        self.say(&sb_audio::synth::silence(800)).await;
        last_speech
    }

    pub(super) async fn end(&self) {
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
pub(super) async fn leases(env: &TestEnv) -> u64 {
    let mut stream = env.js.get_stream(subject::STT_ASSIGN_STREAM).await.unwrap();
    stream.info().await.unwrap().state.messages
}

pub(super) async fn wait_for_no_leases(env: &TestEnv) {
    eventually("the lease acked", WAIT, || async {
        (leases(env).await == 0).then_some(())
    })
    .await
    .unwrap();
}

/// `(stt_epoch, stt_checkpoint)` of the session.
pub(super) async fn checkpoint(env: &TestEnv, sid: &CallSid) -> (u64, Option<u64>) {
    let session = env.redis().await.unwrap().session_load(sid).await.unwrap();
    session
        .map(|s| (s.stt_epoch, s.stt_checkpoint))
        .unwrap_or_default()
}

/// Waits until the session's `(stt_epoch, stt_checkpoint)` is `expected`. The stt stores a
/// transcript before it moves the checkpoint (a crash in between repeats the utterance
/// rather than losing it), so seeing the transcript does not mean the checkpoint is there.
pub(super) async fn wait_for_checkpoint(
    env: &TestEnv,
    sid: &CallSid,
    expected: (u64, Option<u64>),
) {
    let what = format!("(stt_epoch, stt_checkpoint) == {expected:?}");
    eventually(&what, WAIT, || async {
        (checkpoint(env, sid).await == expected).then_some(())
    })
    .await
    .unwrap();
}

/// A call whose owner (worker A, epoch 1) transcribed and checkpointed "utterance one",
/// then crashed without a word; worker B (a runtime and a Deepgram stand-in that will hear
/// `second_line`) is ready but not started. The lease's `ack_wait` is 2 s.
pub(super) struct Crashed {
    pub(super) env: TestEnv,
    pub(super) sid: CallSid,
    pub(super) events: Events,
    pub(super) caller: Caller,
    pub(super) first: Transcript,
    pub(super) sim_b: SimServer,
    pub(super) runtime_b: Runtime,
}

pub(super) async fn crash_after_utterance_one(n: u128, second_line: &str) -> Crashed {
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
pub(super) fn epochs_turns_texts(events: &Events) -> Vec<(u64, u32, String)> {
    events
        .transcripts()
        .into_iter()
        .map(|(turn, t)| (t.epoch, turn, t.text))
        .collect()
}
