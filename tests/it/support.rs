//! Shared pieces of the integration tests: a scriptable stage, event builders (the caller's
//! `transcript`, a `sentence`; the ids come from `sb_schemas::testing`) and stream
//! inspection. State: none beyond what each test's stage records.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, consumer::pull};
use futures::{TryStreamExt, future::BoxFuture};
use sb_runtime::{Emitter, Stage, StageError, Topology, topology::ConsumerDef};
use sb_schemas::{Body, CallSid, Envelope, Sentence, Transcript};
use uuid::Uuid;

// The agent/tts tests take the id builders from here.
pub(crate) use sb_schemas::testing::{sid, tenant};
/// The consumer the test stage reads: transcripts on CALLS, settings per test.
pub(crate) const CONSUMER: &str = "itest";

/// The shipped topology plus the `itest` consumer.
pub(crate) fn topology(max_deliver: i64, ack_wait: Duration) -> Topology {
    let mut topology = Topology::embedded().expect("nats/ parses");
    topology.consumers.push(ConsumerDef {
        stream: "CALLS".into(),
        config: pull::Config {
            durable_name: Some(CONSUMER.into()),
            filter_subject: "call.*.*.transcript".into(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait,
            max_deliver,
            max_ack_pending: 10_000,
            ..Default::default()
        },
    });
    topology
}

/// One delivery the stage saw.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) input: Uuid,
    pub(crate) delivered: u64,
    pub(crate) at: Instant,
}

/// What the scripted handler does with one delivery: emit `.0`, then end with `.1`.
pub(crate) type Script = (Vec<Body>, Result<(), StageError>);

pub(crate) type Handler = Arc<dyn Fn(Envelope, u64) -> BoxFuture<'static, Script> + Send + Sync>;

/// A stage whose behaviour each test scripts; it records every delivery.
#[derive(Clone)]
pub(crate) struct TestStage {
    pub(crate) handler: Handler,
    pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
}

impl TestStage {
    pub(crate) fn new<F, Fut>(f: F) -> Self
    where
        F: Fn(Envelope, u64) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Script> + Send + 'static,
    {
        Self {
            handler: Arc::new(move |e, d| Box::pin(f(e, d))),
            seen: Arc::default(),
        }
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Stage for TestStage {
    const CONSUMER: &'static str = CONSUMER;

    async fn handle(&self, input: Envelope, out: &mut Emitter) -> Result<(), StageError> {
        self.seen.lock().unwrap().push(Seen {
            input: input.id,
            delivered: out.delivered(),
            at: Instant::now(),
        });
        let (bodies, result) = (self.handler)(input, out.delivered()).await;
        for body in bodies {
            let event = out.event(body);
            out.emit(event).await?;
        }
        result
    }
}

/// The caller's words on `call` as the stt publishes them: a `transcript` of `turn` (epoch 1,
/// confidence 0.9, covering frame 10).
pub(crate) fn transcript(call: &CallSid, turn: u32, text: &str) -> Envelope {
    Envelope::new(
        tenant(),
        call.clone(),
        turn,
        Body::Transcript(Transcript {
            epoch: 1,
            text: text.into(),
            confidence: 0.9,
            audio_seq: 10,
            speech_ended_at: 0,
        }),
    )
}

pub(crate) fn sentence(text: &str) -> Body {
    Body::Sentence(Sentence {
        index: 0,
        text: text.into(),
        last: true,
        fallback: false,
    })
}

/// Messages stored per subject matching `filter` in `stream`.
pub(crate) async fn subject_counts(
    js: &jetstream::Context,
    stream: &str,
    filter: &str,
) -> HashMap<String, usize> {
    let stream = js.get_stream(stream).await.unwrap();
    stream
        .info_with_subjects(filter)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// Total messages stored on subjects matching `filter`.
pub(crate) async fn stored(js: &jetstream::Context, stream: &str, filter: &str) -> usize {
    subject_counts(js, stream, filter).await.values().sum()
}

/// Every payload stored on subjects matching `filter`, oldest first.
pub(crate) async fn payloads(
    js: &jetstream::Context,
    stream: &str,
    filter: &str,
) -> Vec<bytes::Bytes> {
    let expected = stored(js, stream, filter).await;
    if expected == 0 {
        return Vec::new();
    }
    let stream = js.get_stream(stream).await.unwrap();
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    while out.len() < expected {
        let message = messages
            .try_next()
            .await
            .unwrap()
            .expect("the ordered consumer ended");
        out.push(message.payload.clone());
    }
    out
}

/// `(num_pending, num_ack_pending)` of the test consumer.
pub(crate) async fn consumer_backlog(js: &jetstream::Context) -> (u64, usize) {
    let mut consumer: jetstream::consumer::PullConsumer = js
        .get_consumer_from_stream(CONSUMER, "CALLS")
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    (info.num_pending, info.num_ack_pending)
}
