//! `just bench-stages`: the agent + tts pipeline's own overhead on this machine.
//!
//! Starts real nats-server and redis-server, the LLM and Azure TTS stand-ins with zero
//! delays (deterministic audio; served on a runtime thread of their own, TCP_NODELAY on),
//! and runs the production `agent` and `tts` stages in this process on the production
//! runner. Measures:
//! - **overhead**: final transcript published → first bot audio chunk stored (seen by a
//!   core subscriber on `audio.*.*.out`), every reply a fresh sentence (a TTS cache miss,
//!   so the stand-in synthesises it), split into agent (→ sentence event made), tts (→
//!   first chunk made) and out (→ chunk seen). N concurrent calls each speak `--turns`
//!   turns with a random think time between them (steady), or all at the same instant
//!   (`--burst`). Also CPU per turn (this process, nats-server, redis-server) and how late
//!   a 1 ms timer fires meanwhile (machine contention);
//! - **cache hit**: a sentence already in the TTS cache published → its first chunk, one at
//!   a time;
//! - **stand-ins alone**: their own time to first token / first audio, which the overhead
//!   includes (the TTS stand-in synthesises the whole sentence before its first byte);
//! - **tool round trip** ([`tools`]): a tenant tool's overhead beyond its own time;
//! - **tts first chunk** ([`voices`]): the streaming engines (OpenAI, Deepgram) against Azure.
//!
//! Each figure is the median of `--runs` runs, each on fresh servers.

mod tools;
mod voices;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use clap::Parser;
use futures::{StreamExt as _, future::join_all};
use rand::Rng as _;
use sb_agent::{Agent, AgentConfig};
use sb_runtime::tenants::testing::TenantToml;
use sb_runtime::{Publisher, RunnerConfig, Runtime, Secret, Shutdown, run_stage};
use sb_schemas::testing::{sid, tenant_id};
use sb_schemas::{Body, CallSid, Envelope, Sentence, TenantId, Transcript, decode, now_micros};
use sb_sim::{llm, tts};
use sb_tests::{TestEnv, cpu_time};
use sb_tts::{Tts, TtsConfig};
use tokio::sync::oneshot;

/// Agent + tts pipeline overhead and TTS cache-hit latency (real NATS + Redis, stand-ins).
#[derive(Debug, Parser)]
struct Args {
    /// Concurrent call counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,100,500")]
    calls: Vec<usize>,
    /// Turns each call speaks.
    #[arg(long, default_value_t = 5)]
    turns: usize,
    /// Mean time from a turn's first bot audio to the call's next transcript (uniform in
    /// 0.5–1.5 ×), in ms. A real call takes ~5–10 s per turn (the bot talks, then the
    /// caller); 3 s makes every call two to three times busier than that.
    #[arg(long, default_value_t = 3_000)]
    think_ms: u64,
    /// Every call's turn at the same instant instead (one turn per call).
    #[arg(long)]
    burst: bool,
    /// Cache-hit samples per run.
    #[arg(long, default_value_t = 1_000)]
    cache_samples: usize,
    /// Bytes per bot audio chunk (SB_TTS_CHUNK_BYTES); the stage's default when unset.
    #[arg(long)]
    chunk_bytes: Option<usize>,
    /// Deliveries each stage handles at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Repetitions (each on fresh servers); medians are printed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Tool round trips per run (one at a time).
    #[arg(long, default_value_t = 300)]
    tool_samples: usize,
}

/// What a bench's agent is set up with: the LLM stand-in's script, the tenants, and the
/// environment the agent reads its tenants' signing secrets from.
struct Setup {
    llm: llm::Config,
    tenants: TenantToml,
    secrets: Vec<(String, String)>,
}

impl Setup {
    /// The plain pipeline: the LLM stand-in echoes, the tenant has no tools.
    fn plain() -> Self {
        Self {
            llm: llm::Config::default(),
            tenants: tenants_toml(),
            secrets: Vec::new(),
        }
    }
}

/// The one tenant every benchmark call belongs to; its greeting is in the TTS cache.
fn tenants_toml() -> TenantToml {
    let greeting = "Thanks for calling. How can I help you today?";
    TenantToml::new()
        .tier("bench", 2000, 100_000)
        .tenant("bench", "+15005550099", "bench")
        .set("system_prompt", "You are a concise phone agent.")
        .set("greeting", greeting)
        .set("fallback_phrase", "Sorry, could you say that again?")
        .set("voice", "en-US-JennyNeural")
        .set("llm_model", "llama-3.1-8b-instant")
        .set("prewarm", vec![greeting])
}

/// The turn's first sentence's `at` (µs) and who waits for its first chunk, by (call, turn).
#[derive(Default)]
struct Seen {
    sentence_at: HashMap<(CallSid, u32), u64>,
    /// The first `tool_call` event of the turn: (its id, its `at` µs).
    tool_call: HashMap<(CallSid, u32), (String, u64)>,
    /// Sent (chunk seen µs, chunk's `at` µs) on the first chunk.
    waiting: HashMap<(CallSid, u32), oneshot::Sender<(u64, u64)>>,
}

/// One measured turn, in ms: total (published → first chunk seen) and its parts: agent
/// (published → the sentence event made), tts (sentence made → first chunk made, incl. the
/// sentence's hop through JetStream), out (chunk made → seen by a subscriber).
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// When the first chunk was seen (µs since the epoch).
    seen_at: u64,
    total: f64,
    agent: f64,
    tts: f64,
    out: f64,
}

struct Bench {
    _env: TestEnv,
    llm_url: String,
    tts_url: String,
    _llm: tokio::task::JoinHandle<()>,
    _tts: tokio::task::JoinHandle<()>,
    runtime: Runtime,
    publisher: Publisher,
    seen: Arc<Mutex<Seen>>,
    shutdown: Shutdown,
    stages: Vec<tokio::task::JoinHandle<()>>,
    watchers: Vec<tokio::task::JoinHandle<()>>,
    tenant: TenantId,
}

impl Bench {
    async fn start(args: &Args, dir: &std::path::Path, setup: Setup) -> anyhow::Result<Self> {
        let env = TestEnv::start().await?;
        let (llm_url, llm) = serve(llm::router(llm::Shared::new(setup.llm))).await?;
        let tts_config = tts::Config {
            deterministic: true,
            ..tts::Config::default()
        };
        let (tts_base, tts_sim) = serve(tts::router(tts::Shared::new(tts_config))).await?;
        let tenants = dir.join("tenants.toml");
        std::fs::write(&tenants, setup.tenants.to_string())?;
        let mut runtime_config = env.runtime_config();
        runtime_config.tenants_file = tenants;
        let runtime = Runtime::start("bench", runtime_config).await?;
        let mut config = AgentConfig::for_llm(format!("{llm_url}/openai/v1"));
        config.llm_api_key = Some(Secret::new("bench"));
        config.llm_aimd_initial = 2_000;
        config.llm_aimd_max = 2_000;
        let secrets = setup.secrets;
        let env_var = |var: &str| {
            secrets
                .iter()
                .find(|(k, _)| k == var)
                .map(|(_, v)| v.clone())
        };
        let agent = Arc::new(Agent::new_with_env(&runtime, config, env_var)?);
        let tts_url = format!("{tts_base}/cognitiveservices/v1");
        let mut tts_config = TtsConfig::azure(tts_url.clone(), "bench");
        if let Some(bytes) = args.chunk_bytes {
            tts_config.tts_chunk_bytes = bytes;
        }
        let tts = Tts::new(&runtime, &tts_config).map_err(anyhow::Error::msg)?;
        let prewarmed = tts.prewarm().await;
        anyhow::ensure!(prewarmed.failed == 0, "prewarm failed");
        let shutdown = Shutdown::new(Duration::from_secs(5));
        let runner = RunnerConfig {
            concurrency: args.concurrency,
            ..RunnerConfig::default()
        };
        let mut stages = Vec::new();
        let (js, topology) = (runtime.js.clone(), runtime.topology.clone());
        {
            let (js, topology, s, r) = (
                js.clone(),
                topology.clone(),
                shutdown.clone(),
                runner.clone(),
            );
            stages.push(tokio::spawn(async move {
                if let Err(error) = run_stage(agent, &js, &topology, &s, r).await {
                    eprintln!("agent stage failed: {error}");
                }
            }));
        }
        {
            let s = shutdown.clone();
            let tts = Arc::new(tts);
            stages.push(tokio::spawn(async move {
                if let Err(error) = run_stage(tts, &js, &topology, &s, runner).await {
                    eprintln!("tts stage failed: {error}");
                }
            }));
        }
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let mut watchers = Vec::new();
        for filter in [
            "call.bench.*.sentence",
            "call.bench.*.tool_call",
            "audio.bench.*.out",
        ] {
            let mut sub = runtime.nats.subscribe(filter).await?;
            let seen = seen.clone();
            watchers.push(tokio::spawn(async move {
                while let Some(message) = sub.next().await {
                    let now = now_micros();
                    let Ok(event) = decode(&message.payload) else {
                        continue;
                    };
                    let key = (event.call_sid.clone(), event.turn);
                    let mut seen = seen.lock().expect("not poisoned");
                    match event.body {
                        Body::Sentence(_) => {
                            seen.sentence_at.entry(key).or_insert(event.at);
                        }
                        Body::ToolCall(_) => {
                            let id = event.id.to_string();
                            seen.tool_call.entry(key).or_insert((id, event.at));
                        }
                        Body::TtsChunk(_) => {
                            if let Some(tx) = seen.waiting.remove(&key) {
                                let _ = tx.send((now, event.at));
                            }
                        }
                        _ => {}
                    }
                }
            }));
        }
        runtime.nats.flush().await?;
        Ok(Self {
            llm_url: format!("{llm_url}/openai/v1"),
            tts_url,
            publisher: Publisher::new(runtime.js.clone()),
            _env: env,
            _llm: llm,
            _tts: tts_sim,
            runtime,
            seen,
            shutdown,
            stages,
            watchers,
            tenant: tenant_id("bench"),
        })
    }

    async fn stop(self) {
        self.shutdown.trigger();
        for task in self.stages {
            let _ = task.await;
        }
        for task in self.watchers {
            task.abort();
        }
        self._llm.abort();
        self._tts.abort();
    }

    /// Publishes `event` and waits for its turn's first audio chunk.
    async fn turn(&self, event: &Envelope) -> anyhow::Result<Sample> {
        let (tx, rx) = oneshot::channel();
        let key = (event.call_sid.clone(), event.turn);
        self.seen
            .lock()
            .expect("not poisoned")
            .waiting
            .insert(key.clone(), tx);
        let published = now_micros();
        self.publisher.publish(event).await?;
        let (seen, chunk_at) = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .context("no audio within 10 s")??;
        let sentence_at = self
            .seen
            .lock()
            .expect("not poisoned")
            .sentence_at
            .remove(&key)
            .unwrap_or(published);
        let ms = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1e3;
        Ok(Sample {
            seen_at: seen,
            total: ms(published, seen),
            agent: ms(published, sentence_at),
            tts: ms(sentence_at, chunk_at),
            out: ms(chunk_at, seen),
        })
    }

    async fn call_turns(&self, n: usize, args: &Args) -> anyhow::Result<Vec<Sample>> {
        let sid = sid(rand::rng().random::<u64>() as u128 * 1_000 + n as u128);
        self.runtime
            .redis
            .session_start(
                &sid,
                &self.tenant,
                &sb_runtime::redis::session::Parties::default(),
                0,
            )
            .await?;
        let think = |scale: f64| Duration::from_secs_f64(args.think_ms as f64 / 1e3 * scale);
        if !args.burst {
            tokio::time::sleep(think(rand::rng().random_range(0.0..1.0))).await;
        }
        let turns = if args.burst { 1 } else { args.turns };
        let mut samples = Vec::new();
        for t in 0..turns {
            let turn = self
                .runtime
                .redis
                .session_next_turn(&sid, 0)
                .await?
                .expect("the session was started");
            let event = Envelope::new(
                self.tenant.clone(),
                sid.clone(),
                turn,
                Body::Transcript(Transcript {
                    epoch: 0,
                    text: format!("call {n} turn {t} asks about the opening hours"),
                    confidence: 0.9,
                    audio_seq: 0,
                    speech_ended_at: 0,
                }),
            );
            samples.push(self.turn(&event).await?);
            if t + 1 < turns {
                tokio::time::sleep(think(rand::rng().random_range(0.5..1.5))).await;
            }
        }
        Ok(samples)
    }

    async fn overhead(&self, calls: usize, args: &Args) -> anyhow::Result<Vec<Sample>> {
        let results = join_all((0..calls).map(|n| self.call_turns(n, args))).await;
        let mut samples = Vec::new();
        for result in results {
            samples.extend(result?);
        }
        Ok(samples)
    }

    /// The stand-ins alone, one request at a time, nothing else running: LLM request →
    /// first token and TTS request → first audio, in ms (p50, p99). Their share of the
    /// overhead figures.
    async fn stand_ins(&self, samples: usize) -> anyhow::Result<[f64; 4]> {
        use sb_tts::provider::TextToSpeech as _;
        let llm = sb_agent::openai::OpenAi::new(
            &self.llm_url,
            Some(Secret::new("bench")),
            sb_agent::openai::Timeouts {
                connect: Duration::from_secs(1),
                first_token: Duration::from_secs(5),
                idle: Duration::from_secs(5),
            },
        )?;
        let azure = sb_tts::azure::Azure::new(
            self.tts_url.clone(),
            Secret::new("bench"),
            "bench",
            sb_tts::azure::Timeouts {
                connect: Duration::from_secs(1),
                first_byte: Duration::from_secs(5),
                idle: Duration::from_secs(5),
            },
        )
        .map_err(anyhow::Error::msg)?;
        let (mut first_token, mut first_audio) = (Vec::new(), Vec::new());
        for n in 0..samples {
            let text = format!("call {n} turn 0 asks about the opening hours");
            let request = sb_agent::openai::ChatRequest {
                model: "llama-3.1-8b-instant".into(),
                messages: vec![sb_agent::openai::Message::new("user", text.clone())],
                max_completion_tokens: 256,
                temperature: 0.6,
                tools: Vec::new(),
            };
            let started = std::time::Instant::now();
            let mut stream = sb_agent::openai::Llm::stream(&llm, &request).await?;
            stream.next().await.context("no token")??;
            first_token.push(started.elapsed().as_secs_f64() * 1e3);
            while stream.next().await.is_some() {}
            let started = std::time::Instant::now();
            let mut audio = azure
                .synthesize(&format!("You said: {text}."), "en-US-JennyNeural")
                .await?;
            audio.next().await.context("no audio")??;
            first_audio.push(started.elapsed().as_secs_f64() * 1e3);
            while audio.next().await.is_some() {}
        }
        first_token.sort_by(f64::total_cmp);
        first_audio.sort_by(f64::total_cmp);
        Ok([
            pct(&first_token, 0.5),
            pct(&first_token, 0.99),
            pct(&first_audio, 0.5),
            pct(&first_audio, 0.99),
        ])
    }

    async fn cache_hits(&self, samples: usize) -> anyhow::Result<Vec<f64>> {
        let sid = sid(0xbeef);
        self.runtime
            .redis
            .session_start(
                &sid,
                &self.tenant,
                &sb_runtime::redis::session::Parties::default(),
                0,
            )
            .await?;
        let mut out = Vec::new();
        for _ in 0..samples {
            let turn = self
                .runtime
                .redis
                .session_next_turn(&sid, 0)
                .await?
                .expect("the session was started");
            let event = Envelope::new(
                self.tenant.clone(),
                sid.clone(),
                turn,
                Body::Sentence(Sentence {
                    index: 0,
                    text: "Thanks for calling. How can I help you today?".into(),
                    last: true,
                    fallback: false,
                }),
            );
            out.push(self.turn(&event).await?.total);
        }
        Ok(out)
    }
}

/// Serves a stand-in's router on loopback, on a runtime of its own (one worker thread):
/// the stand-ins' work (synthesising audio, building SSE) does not queue in front of the
/// stages on their workers, as a remote provider's would not. TCP_NODELAY is set on every
/// accepted connection (`SimServer` leaves Nagle on, which adds ~40 ms stalls to
/// multi-write responses under concurrency — a property of the test server, not of the
/// pipeline).
async fn serve(app: axum::Router) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    static STAND_INS: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    let runtime = STAND_INS.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("stand-ins")
            .enable_all()
            .build()
            .expect("a runtime for the stand-ins")
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let task = runtime.spawn(async move {
        use axum::serve::ListenerExt as _;
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            return;
        };
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}"), task))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).copied().unwrap_or(f64::NAN)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One run's figures for one call count: p50/p99 of total, agent, tts, out; CPU per turn.
#[derive(Debug, Clone, Copy, Default)]
struct Row {
    total: [f64; 2],
    agent: [f64; 2],
    tts: [f64; 2],
    out: [f64; 2],
    /// CPU ms per turn: this process (stages + stand-ins), nats-server, redis-server.
    cpu: [f64; 3],
    /// Turns per second offered.
    rate: f64,
    /// p99 lateness of a 1 ms timer in this process during the run: how much the machine
    /// (CPU contention) alone adds to a tail.
    jitter: f64,
}

impl Row {
    fn new(samples: &[Sample], cpu: [f64; 3], rate: f64, jitter: f64) -> Self {
        let p = |f: fn(&Sample) -> f64| {
            let mut v: Vec<f64> = samples.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            [pct(&v, 0.5), pct(&v, 0.99)]
        };
        Self {
            total: p(|s| s.total),
            agent: p(|s| s.agent),
            tts: p(|s| s.tts),
            out: p(|s| s.out),
            cpu,
            rate,
            jitter,
        }
    }

    fn median(rows: &[Row]) -> Self {
        let m = |f: &dyn Fn(&Row) -> f64| median(rows.iter().map(f).collect());
        let pair = |f: &dyn Fn(&Row) -> [f64; 2]| [m(&|r| f(r)[0]), m(&|r| f(r)[1])];
        Self {
            total: pair(&|r| r.total),
            agent: pair(&|r| r.agent),
            tts: pair(&|r| r.tts),
            out: pair(&|r| r.out),
            cpu: [m(&|r| r.cpu[0]), m(&|r| r.cpu[1]), m(&|r| r.cpu[2])],
            rate: m(&|r| r.rate),
            jitter: m(&|r| r.jitter),
        }
    }

    fn print(&self, label: &str) {
        println!(
            "{label} ({:5.1} turns/s): p50 {:6.2} ms  p99 {:6.2} ms  | agent {:5.2}/{:5.2}  tts {:5.2}/{:5.2}  out {:4.2}/{:4.2} | cpu/turn {:.2} + nats {:.2} + redis {:.2} ms | timer lateness p99 {:.2} ms",
            self.rate,
            self.total[0],
            self.total[1],
            self.agent[0],
            self.agent[1],
            self.tts[0],
            self.tts[1],
            self.out[0],
            self.out[1],
            self.cpu[0],
            self.cpu[1],
            self.cpu[2],
            self.jitter,
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mode = if args.burst {
        "burst: every call's turn at once".to_owned()
    } else {
        format!(
            "steady: {} turns per call, think {} ms ±50 %",
            args.turns, args.think_ms
        )
    };
    println!(
        "bench-stages: agent + tts on the production runner, LLM and TTS stand-ins at zero delay; {mode}; {} runs; load average {}",
        args.runs,
        load_average()
    );
    println!(
        "  (transcript published → first bot chunk stored; parts p50/p99: agent = → sentence made, tts = → first chunk made, out = → chunk seen)"
    );
    let dir = tempfile::tempdir()?;
    let mut overhead: Vec<Vec<Row>> = vec![Vec::new(); args.calls.len()];
    let mut cache: Vec<[f64; 2]> = Vec::new();
    let mut stand_ins: Vec<[f64; 4]> = Vec::new();
    let mut tool_rows: Vec<tools::ToolRow> = Vec::new();
    let mut voice_rows: Vec<voices::VoiceRow> = Vec::new();
    let fallbacks_before = fallbacks();
    for run in 0..args.runs {
        for (i, &calls) in args.calls.iter().enumerate() {
            let bench = Bench::start(&args, dir.path(), Setup::plain()).await?;
            let pids = [
                "self".to_owned(),
                bench._env.nats.pid().to_string(),
                bench._env.redis.pid().to_string(),
            ];
            let before = pids.clone().map(|p| cpu_time(&p));
            let started = std::time::Instant::now();
            let probe = Jitter::start();
            let samples = bench.overhead(calls, &args).await?;
            let jitter = probe.p99().await;
            let rate = samples.len() as f64 / started.elapsed().as_secs_f64();
            let spent = pids.map(|p| cpu_time(&p));
            bench.stop().await;
            let turns = samples.len().max(1) as f64;
            // Per-turn CPU means something only when turns, not idle time, dominate.
            let cpu = [0, 1, 2].map(|k| match turns >= 100.0 {
                true => (spent[k] - before[k]).as_secs_f64() * 1e3 / turns,
                false => f64::NAN,
            });
            let row = Row::new(&samples, cpu, rate, jitter);
            row.print(&format!(
                "run {} {calls:>4} calls {:>5} turns",
                run + 1,
                samples.len()
            ));
            overhead[i].push(row);
        }
        let tool = tools::measure(&args, dir.path()).await?;
        tool.print(&format!("run {} ", run + 1));
        tool_rows.push(tool);
        let voice = voices::measure(200).await?;
        voice.print(&format!("run {} ", run + 1));
        voice_rows.push(voice);
        let bench = Bench::start(&args, dir.path(), Setup::plain()).await?;
        let mut hits = bench.cache_hits(args.cache_samples).await?;
        let alone = bench.stand_ins(100).await?;
        bench.stop().await;
        println!(
            "run {} stand-ins alone (100 sequential requests): llm first token p50 {:.2} p99 {:.2} ms, tts first audio p50 {:.2} p99 {:.2} ms",
            run + 1,
            alone[0],
            alone[1],
            alone[2],
            alone[3]
        );
        stand_ins.push(alone);
        hits.sort_by(f64::total_cmp);
        let row = [pct(&hits, 0.5), pct(&hits, 0.99)];
        println!(
            "run {} cache hit → first chunk ({} samples): p50 {:5.2} ms  p90 {:5.2}  p99 {:5.2} ms  max {:5.2} ms",
            run + 1,
            hits.len(),
            row[0],
            pct(&hits, 0.9),
            row[1],
            pct(&hits, 1.0)
        );
        cache.push(row);
    }
    println!(
        "\nmedians of {} runs (machine load average now: {}):",
        args.runs,
        load_average()
    );
    for (i, &calls) in args.calls.iter().enumerate() {
        Row::median(&overhead[i]).print(&format!("  {calls:>4} calls"));
    }
    let col = |k: usize| median(cache.iter().map(|r| r[k]).collect());
    println!(
        "  cache hit → first chunk: p50 {:5.2} ms  p99 {:5.2} ms",
        col(0),
        col(1)
    );
    let alone = |k: usize| median(stand_ins.iter().map(|r| r[k]).collect());
    println!(
        "  stand-ins alone: llm first token p50 {:.2} p99 {:.2} ms, tts first audio p50 {:.2} p99 {:.2} ms (included in the overhead above)",
        alone(0),
        alone(1),
        alone(2),
        alone(3)
    );
    tools::ToolRow::median(&tool_rows).print("  ");
    voices::VoiceRow::median(&voice_rows).print("  ");
    println!("  fallbacks spoken: {}", fallbacks() - fallbacks_before);
    Ok(())
}

/// Measures how late a 1 ms timer fires, in the background.
struct Jitter {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<f64>>,
}

impl Jitter {
    fn start() -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut late = Vec::new();
            while stopped.try_recv().is_err() {
                let at = std::time::Instant::now();
                tokio::time::sleep(Duration::from_millis(1)).await;
                late.push((at.elapsed().as_secs_f64() - 0.001).max(0.0) * 1e3);
            }
            late
        });
        Self { stop, task }
    }

    async fn p99(self) -> f64 {
        let _ = self.stop.send(());
        let mut late = self.task.await.unwrap_or_default();
        late.sort_by(f64::total_cmp);
        pct(&late, 0.99)
    }
}

/// The 1-minute load average: other work on the machine shows up in the tails.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Fallback phrases spoken so far in this process (should stay 0).
fn fallbacks() -> f64 {
    sb_runtime::metrics::install()
        .render()
        .lines()
        .filter(|l| l.starts_with("switchboard_fallbacks_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
