//! The agent + tts test harness: both stages on the production runner against a fresh
//! [`TestEnv`] and the sim stand-ins, a per-call event watch (core subscriptions, as the
//! ingress has), event builders (transcripts come from `crate::support`), stream
//! inspection and small HTTP helpers. State: one pipeline per test.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt as _;
use sb_agent::{Agent, AgentConfig};
use sb_runtime::{Publisher, RunnerConfig, Secret, Shutdown, redis::Redis, run_stage};
use sb_schemas::{Body, CallSid, Envelope, Sentence, Start, TtsChunk, decode, subject};
use sb_sim::{SimServer, llm, tts, twilio};
use sb_tests::{TestEnv, eventually};
use sb_tts::{Tts, TtsConfig};
use serde_json::Value;

use crate::support::{self, tenant};

pub(super) const WAIT: Duration = Duration::from_secs(15);
pub(super) const TTS_KEY: &str = "tts-key";
pub(super) const AC: &str = "AC0123456789abcdef0123456789abcdef";
pub(super) const GREETING: &str = "Thanks for calling Acme. How can I help you today?";
pub(super) const FALLBACK: &str = "Sorry, I didn't catch that. Could you say it again?";

/// Both stages running on one test environment, and the stand-ins they call.
pub(super) struct Pipeline {
    pub(super) env: TestEnv,
    pub(super) redis: Redis,
    pub(super) publisher: Publisher,
    pub(super) agent: Arc<Agent>,
    pub(super) tts: Arc<Tts>,
    pub(super) llm: SimServer,
    pub(super) tts_sim: SimServer,
    pub(super) twilio: Option<(SimServer, twilio::TwilioState)>,
    shutdown: Shutdown,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Pipeline {
    pub(super) async fn start(
        llm_config: llm::Config,
        tts_config: tts::Config,
        with_twilio: bool,
        change: impl FnOnce(&mut AgentConfig),
    ) -> Self {
        let env = TestEnv::start().await.unwrap();
        let llm = llm::spawn(llm_config).await.unwrap();
        let tts_sim = tts::spawn(tts::Config {
            api_key: Some(TTS_KEY.into()),
            ..tts_config
        })
        .await
        .unwrap();
        let twilio = match with_twilio {
            true => Some(twilio::spawn(twilio::Config::new(AC, "tok")).await.unwrap()),
            false => None,
        };
        let mut config = AgentConfig::for_llm(format!("{}/openai/v1", llm.http_url()));
        config.llm_api_key = Some(Secret::new("llm-key"));
        if let Some((server, _)) = &twilio {
            config.twilio_account_sid = Some(AC.into());
            config.twilio_auth_token = Some(Secret::new("tok"));
            config.twilio_api_url = server.http_url();
        }
        change(&mut config);
        let runtime = env.runtime("agent").await.unwrap();
        let agent = Arc::new(Agent::new(&runtime, config).unwrap());
        let tts_url = format!("{}/cognitiveservices/v1", tts_sim.http_url());
        let tts = Arc::new(Tts::new(&runtime, &TtsConfig::azure(tts_url, TTS_KEY)).unwrap());
        let shutdown = Shutdown::new(Duration::from_secs(5));
        let runner = RunnerConfig {
            concurrency: 32,
            retry_base_ms: 50,
            retry_max_ms: 500,
        };
        let mut tasks = Vec::new();
        {
            let (js, topology, s, stage, r) = (
                env.js.clone(),
                env.topology.clone(),
                shutdown.clone(),
                agent.clone(),
                runner.clone(),
            );
            tasks.push(tokio::spawn(async move {
                run_stage(stage, &js, &topology, &s, r).await.unwrap();
            }));
        }
        {
            let (js, topology, s, stage) = (
                env.js.clone(),
                env.topology.clone(),
                shutdown.clone(),
                tts.clone(),
            );
            tasks.push(tokio::spawn(async move {
                run_stage(stage, &js, &topology, &s, runner).await.unwrap();
            }));
        }
        Self {
            redis: env.redis().await.unwrap(),
            publisher: Publisher::new(env.js.clone()),
            env,
            agent,
            tts,
            llm,
            tts_sim,
            twilio,
            shutdown,
            tasks,
        }
    }

    pub(super) async fn stop(self) {
        self.shutdown.trigger();
        for task in self.tasks {
            task.await.unwrap();
        }
    }

    /// Starts a call's session and its first caller turn; returns the turn number.
    pub(super) async fn call(&self, call: &CallSid) -> u32 {
        self.redis
            .session_start(
                call,
                &tenant(),
                &sb_runtime::redis::session::Parties::default(),
                0,
            )
            .await
            .unwrap();
        self.redis
            .session_next_turn(call, 0)
            .await
            .unwrap()
            .unwrap()
    }

    pub(super) async fn publish(&self, event: &Envelope) {
        self.publisher.publish(event).await.unwrap();
    }

    /// Waits until both consumers have nothing pending or unacked.
    pub(super) async fn settled(&self) {
        eventually("agent and tts to settle", WAIT, || async {
            for name in ["agent", "tts"] {
                let mut consumer: async_nats::jetstream::consumer::PullConsumer = self
                    .env
                    .js
                    .get_consumer_from_stream(name, "CALLS")
                    .await
                    .unwrap();
                let info = consumer.info().await.unwrap();
                if info.num_pending > 0 || info.num_ack_pending > 0 {
                    return None;
                }
            }
            Some(())
        })
        .await
        .unwrap();
    }

    /// A stand-in's `/sim/stats`.
    pub(super) async fn stats(server: &SimServer) -> Value {
        let (status, body) = http(server.addr(), "GET /sim/stats HTTP/1.1", "").await;
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    }
}

/// One HTTP exchange through `reqwest`: `head` is the request line and the header lines as
/// on the wire (`"POST /path HTTP/1.1\r\nName: value"`); `(status, body)`.
pub(super) async fn http(addr: std::net::SocketAddr, head: &str, body: &str) -> (u16, String) {
    let mut lines = head.split("\r\n");
    let request_line: Vec<&str> = lines.next().unwrap().split(' ').collect();
    let method = reqwest::Method::from_bytes(request_line[0].as_bytes()).unwrap();
    let mut request = reqwest::Client::new()
        .request(method, format!("http://{addr}{}", request_line[1]))
        .body(body.to_owned());
    for line in lines {
        let (name, value) = line.split_once(": ").unwrap();
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Standard base64 (with padding), for a Basic auth header.
pub(super) fn base64(input: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(input)
}

/// Every event of one call, in arrival order, from core subscriptions opened before the
/// call starts (as the ingress does).
#[derive(Clone, Default)]
pub(super) struct Watch(Arc<Mutex<Vec<Envelope>>>);

impl Watch {
    pub(super) async fn start(env: &TestEnv, call: &CallSid) -> Self {
        let watch = Self::default();
        for filter in [
            subject::call_events_filter(call),
            subject::audio_out(&tenant(), call),
        ] {
            let mut sub = env.client.subscribe(filter).await.unwrap();
            let events = watch.0.clone();
            tokio::spawn(async move {
                while let Some(message) = sub.next().await {
                    if let Ok(event) = decode(&message.payload) {
                        events.lock().unwrap().push(event);
                    }
                }
            });
        }
        env.client.flush().await.unwrap();
        watch
    }

    pub(super) fn sentences(&self, turn: u32) -> Vec<Sentence> {
        self.events(turn, |b| match b {
            Body::Sentence(s) => Some(s.clone()),
            _ => None,
        })
    }

    pub(super) fn chunks(&self, turn: u32) -> Vec<TtsChunk> {
        self.events(turn, |b| match b {
            Body::TtsChunk(c) => Some(c.clone()),
            _ => None,
        })
    }

    pub(super) fn tokens(&self, turn: u32) -> String {
        let mut tokens = self.events(turn, |b| match b {
            Body::Token(t) => Some((t.index, t.text.clone())),
            _ => None,
        });
        tokens.sort_by_key(|t| t.0);
        tokens.into_iter().map(|t| t.1).collect()
    }

    pub(super) fn events<T>(&self, turn: u32, pick: impl Fn(&Body) -> Option<T>) -> Vec<T> {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter(|e| e.turn == turn)
            .filter_map(|e| pick(&e.body))
            .collect()
    }

    /// Waits until the turn's audio is complete: a `turn_last` chunk arrived, and the last
    /// chunk of every sentence before it (sentences are synthesised in parallel).
    pub(super) async fn turn_spoken(&self, turn: u32) {
        eventually("the turn's audio", WAIT, || async {
            let chunks = self.chunks(turn);
            let end = chunks.iter().find(|c| c.turn_last)?.sentence;
            (0..=end)
                .all(|s| chunks.iter().any(|c| c.sentence == s && c.last))
                .then_some(())
        })
        .await
        .unwrap();
    }
}

pub(super) fn start_event(call: &CallSid) -> Envelope {
    Envelope::new(
        tenant(),
        call.clone(),
        0,
        Body::Start(Start {
            stream_sid: "MZ0123456789abcdef0123456789abcdef".into(),
            account_sid: AC.into(),
            from: "+14155551234".into(),
            to: "+15005550006".into(),
            custom_parameters: Default::default(),
        }),
    )
}

pub(super) fn sentence_event(
    call: &CallSid,
    turn: u32,
    index: u32,
    text: &str,
    last: bool,
) -> Envelope {
    Envelope::new(
        tenant(),
        call.clone(),
        turn,
        Body::Sentence(Sentence {
            index,
            text: text.into(),
            last,
            fallback: false,
        }),
    )
}

/// Chunks of one sentence: numbered 0.. without gaps, whole 20 ms frames, exactly one
/// `last` and it comes at the end.
pub(super) fn check_sentence_audio(chunks: &[TtsChunk], sentence: u32) -> usize {
    let mine: Vec<&TtsChunk> = chunks.iter().filter(|c| c.sentence == sentence).collect();
    assert!(!mine.is_empty(), "no audio for sentence {sentence}");
    for (n, chunk) in mine.iter().enumerate() {
        assert_eq!(
            chunk.chunk as usize, n,
            "sentence {sentence}: chunks in order"
        );
        assert_eq!(chunk.payload.0.len() % 160, 0, "whole frames");
        assert_eq!(
            chunk.last,
            n + 1 == mine.len(),
            "sentence {sentence}: last at the end"
        );
    }
    mine.iter().map(|c| c.payload.0.len()).sum()
}

/// A metric's value in the process-wide Prometheus rendering (0 when absent).
pub(super) fn metric(series: &str) -> f64 {
    let text = sb_runtime::metrics::install().render();
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every stored (stream sequence, event) on `filter` with a sequence above `after`.
pub(super) async fn stored_after(
    env: &TestEnv,
    stream: &str,
    filter: &str,
    after: u64,
) -> Vec<Envelope> {
    let total = support::stored(&env.js, stream, filter).await;
    if total == 0 {
        return Vec::new();
    }
    let consumer = env
        .js
        .get_stream(stream)
        .await
        .unwrap()
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter.into(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    for _ in 0..total {
        let message = messages.next().await.unwrap().unwrap();
        let seq = message.info().unwrap().stream_sequence;
        if seq > after {
            out.push(decode(&message.payload).unwrap());
        }
    }
    out
}

pub(super) async fn last_seq(env: &TestEnv, stream: &str) -> u64 {
    let mut stream = env.js.get_stream(stream).await.unwrap();
    stream.info().await.unwrap().state.last_sequence
}

/// Creates a call in the Twilio stand-in (so it can be updated) and returns its sid.
pub(super) async fn twilio_call(p: &Pipeline) -> CallSid {
    let (server, state) = p.twilio.as_ref().unwrap();
    let before = state.calls().len();
    let form = sb_twilio::CreateCall::new(
        "+14155551234",
        "+15005550006",
        sb_twilio::CallTarget::Twiml("<Response/>".into()),
    )
    .to_form();
    let head = format!(
        "POST {} HTTP/1.1\r\nAuthorization: Basic {}\r\nContent-Type: application/x-www-form-urlencoded",
        sb_twilio::rest::calls_path(AC),
        base64(format!("{AC}:tok").as_bytes())
    );
    let (status, _) = http(server.addr(), &head, &form).await;
    assert_eq!(status, 201);
    let calls = state.calls();
    assert_eq!(calls.len(), before + 1);
    CallSid::parse(&calls[before].resource.sid).unwrap()
}
