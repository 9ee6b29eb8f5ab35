//! `just bench-runtime`: the stage runner's throughput and hop latency on this machine.
//!
//! Starts a real nats-server (file storage, the production topology plus a `bench`
//! consumer), runs a pass-through stage on the production runner in this process, and
//! measures publish → handled → output stored, where "stored" is the moment a core
//! subscriber on the output subject sees the output (JetStream stores it as it routes it).
//! Two phases per run: throughput with pipelined publishes, then latency at a steady rate.
//! Modes: `audio` (AUDIO stream, no Nats-Msg-Id, like caller frames) and `control` (CALLS
//! stream with Nats-Msg-Id dedup, like transcripts and sentences).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull};
use bytes::Bytes;
use clap::Parser;
use futures::{StreamExt, stream::FuturesUnordered};
use sb_runtime::{
    Emitter, Publisher, RunnerConfig, Shutdown, Stage, StageError, Topology, run_stage,
    topology::ConsumerDef,
};
use sb_schemas::{
    Audio, Body, CallSid, Envelope, Mulaw, Sentence, TenantId, Transcript, TtsChunk, decode,
};
use sb_tests::{NatsServer, cpu_time, eventually};

/// Stage-runner benchmark (real nats-server, pass-through stage).
#[derive(Debug, Parser)]
struct Args {
    /// Which stream the events travel on: audio, control, or both.
    #[arg(long, default_value = "both")]
    mode: String,
    /// Events pushed in the throughput phase.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Steady rate (events/s) of the latency phase.
    #[arg(long, default_value_t = 5_000)]
    rate: u64,
    /// Length of the latency phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Deliveries the stage handles at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Publishes in flight in the throughput phase.
    #[arg(long, default_value_t = 2048)]
    window: usize,
    /// Repetitions (each on a fresh server); medians are printed at the end.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Audio,
    Control,
}

struct PassThrough;

impl Stage for PassThrough {
    const CONSUMER: &'static str = "bench";

    async fn handle(&self, input: Envelope, out: &mut Emitter) -> Result<(), StageError> {
        let body = match input.body {
            Body::Audio(a) => Body::TtsChunk(TtsChunk {
                sentence: 0,
                chunk: a.seq as u32,
                last: false,
                turn_last: false,
                payload: a.payload,
            }),
            Body::Transcript(t) => Body::Sentence(Sentence {
                index: t.audio_seq as u32,
                text: t.text,
                last: true,
                fallback: false,
            }),
            _ => return Err(StageError::reject("unexpected", "bench input")),
        };
        let event = out.event(body);
        out.emit(event).await
    }
}

fn sequence_of(event: &Envelope) -> Option<u64> {
    match &event.body {
        Body::TtsChunk(c) => Some(u64::from(c.chunk)),
        Body::Sentence(s) => Some(u64::from(s.index)),
        _ => None,
    }
}

/// A 200-byte-class event: 160 B of µ-law (20 ms) or a 160-character transcript.
fn input(mode: Mode, seq: u64, calls: &[CallSid], tenant: &TenantId) -> Envelope {
    let sid = calls[(seq % calls.len() as u64) as usize].clone();
    let body = match mode {
        Mode::Audio => Body::Audio(Audio {
            seq,
            timestamp_ms: seq * 20,
            payload: Mulaw(Bytes::from_static(&[0xFF; 160])),
        }),
        Mode::Control => Body::Transcript(Transcript {
            epoch: 1,
            text: "x".repeat(160),
            confidence: 0.9,
            audio_seq: seq,
            speech_ended_at: 0,
        }),
    };
    Envelope::new(tenant.clone(), sid, 1, body)
}

fn stream_and_filter(mode: Mode) -> (&'static str, &'static str) {
    match mode {
        Mode::Audio => ("AUDIO", "audio.*.*.in"),
        Mode::Control => ("CALLS", "call.*.*.transcript"),
    }
}

fn topology(mode: Mode) -> anyhow::Result<Topology> {
    let mut topology = Topology::embedded()?;
    let (stream, filter) = stream_and_filter(mode);
    topology.consumers.push(ConsumerDef {
        stream: stream.into(),
        config: pull::Config {
            durable_name: Some("bench".into()),
            filter_subject: filter.into(),
            ack_wait: Duration::from_secs(30),
            max_deliver: 3,
            max_ack_pending: 50_000,
            ..Default::default()
        },
    });
    Ok(topology)
}

struct RunResult {
    throughput: f64,
    /// CPU time per event in the throughput phase: this process (publisher + stage) and nats-server.
    client_us: f64,
    server_us: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
    achieved_rate: f64,
}

async fn run_once(mode: Mode, args: &Args) -> anyhow::Result<RunResult> {
    let server = NatsServer::start().await?;
    let client = server.ops().await?;
    let js = jetstream::new(client.clone());
    let topology = topology(mode)?;
    topology.apply(&js).await?;
    let tenant = TenantId::parse("bench")?;
    let calls: Vec<CallSid> = (0..100)
        .map(|i| CallSid::parse(&format!("CA{i:032x}")))
        .collect::<Result<_, _>>()?;

    // Phase 2's publish instants and measured latencies, by sequence.
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let shutdown = Shutdown::new(Duration::from_secs(5));
    let runner = {
        let (js, topology, shutdown) = (js.clone(), topology.clone(), shutdown.clone());
        let config = RunnerConfig {
            concurrency: args.concurrency,
            ..RunnerConfig::default()
        };
        tokio::spawn(async move {
            run_stage(Arc::new(PassThrough), &js, &topology, &shutdown, config).await
        })
    };
    let publisher = Publisher::new(js.clone());

    // Phase 1: throughput with pipelined publishes. Completion is read from the server
    // (every input acked, every output stored), so no subscriber adds fan-out here.
    let server_pid = server.pid().to_string();
    let (client_cpu0, server_cpu0) = (cpu_time("self"), cpu_time(&server_pid));
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    for seq in 0..args.events {
        let event = input(mode, seq, &calls, &tenant);
        pending.push(publisher.send(&event).await?.stored());
        while pending.len() >= args.window {
            pending.next().await.context("pending")??;
        }
    }
    while let Some(ack) = pending.next().await {
        ack?;
    }
    let (stream_name, _) = stream_and_filter(mode);
    let consumer: jetstream::consumer::PullConsumer =
        js.get_consumer_from_stream("bench", stream_name).await?;
    eventually("the throughput phase", Duration::from_secs(120), || async {
        let info = consumer.get_info().await.ok()?;
        (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
    })
    .await?;
    let throughput = args.events as f64 / started.elapsed().as_secs_f64();
    let per_event = |d: Duration| d.as_secs_f64() * 1e6 / args.events as f64;
    let client_us = per_event(cpu_time("self") - client_cpu0);
    let server_us = per_event(cpu_time(&server_pid) - server_cpu0);
    let mut stream = js.get_stream(stream_name).await?;
    let stored = stream.info().await?.state.messages;
    anyhow::ensure!(
        stored >= 2 * args.events,
        "only {stored} messages stored for {} inputs",
        args.events
    );

    // Output watcher for phase 2: sequence -> when seen.
    let out_subject = match mode {
        Mode::Audio => "audio.bench.*.out",
        Mode::Control => "call.bench.*.sentence",
    };
    let mut outputs = client.subscribe(out_subject).await?;
    client.flush().await?;
    let seen = Arc::new(tokio::sync::Notify::new());
    let seen_count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watcher = {
        let (sent, latencies, seen, seen_count) = (
            sent.clone(),
            latencies.clone(),
            seen.clone(),
            seen_count.clone(),
        );
        tokio::spawn(async move {
            while let Some(message) = outputs.next().await {
                let now = Instant::now();
                let Ok(event) = decode(&message.payload) else {
                    continue;
                };
                let Some(seq) = sequence_of(&event) else {
                    continue;
                };
                if let Some(at) = sent.lock().expect("not poisoned").remove(&seq) {
                    latencies.lock().expect("not poisoned").push(now - at);
                }
                seen_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                seen.notify_one();
            }
        })
    };

    let wait_for = |target: u64| {
        let (seen, seen_count) = (seen.clone(), seen_count.clone());
        async move {
            while seen_count.load(std::sync::atomic::Ordering::Relaxed) < target {
                let _ = tokio::time::timeout(Duration::from_millis(100), seen.notified()).await;
            }
        }
    };

    // Phase 2: latency at a steady rate (sent in 1 ms ticks).
    latencies.lock().expect("not poisoned").clear();
    let total = args.rate * args.seconds;
    let per_tick = (args.rate / 1000).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (acks_tx, mut acks_rx) = tokio::sync::mpsc::unbounded_channel();
    let acker = tokio::spawn(async move {
        while let Some(ack) = acks_rx.recv().await {
            let ack: sb_runtime::publisher::PendingAck = ack;
            ack.stored().await?;
        }
        anyhow::Ok(())
    });
    let phase2 = Instant::now();
    let mut seq = args.events;
    while seq < args.events + total {
        tick.tick().await;
        for _ in 0..per_tick {
            let event = input(mode, seq, &calls, &tenant);
            sent.lock()
                .expect("not poisoned")
                .insert(seq, Instant::now());
            acks_tx.send(publisher.send(&event).await?)?;
            seq += 1;
        }
    }
    let achieved_rate = total as f64 / phase2.elapsed().as_secs_f64();
    drop(acks_tx);
    acker.await??;
    tokio::time::timeout(Duration::from_secs(60), wait_for(total))
        .await
        .context("outputs of the latency phase did not all arrive")?;

    shutdown.trigger();
    runner.await??;
    watcher.abort();
    let mut lat = latencies.lock().expect("not poisoned").clone();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    Ok(RunResult {
        throughput,
        client_us,
        server_us,
        p50: pct(0.50),
        p99: pct(0.99),
        p999: pct(0.999),
        max: *lat.last().context("no latencies")?,
        achieved_rate,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let modes = match args.mode.as_str() {
        "audio" => vec![Mode::Audio],
        "control" => vec![Mode::Control],
        _ => vec![Mode::Audio, Mode::Control],
    };
    println!(
        "bench-runtime: pass-through stage, {} events pipelined (window {}), then {} events/s for {} s; \
         concurrency {}; {} runs; {} cores",
        args.events,
        args.window,
        args.rate,
        args.seconds,
        args.concurrency,
        args.runs,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    for mode in modes {
        let mut results = Vec::new();
        for run in 1..=args.runs {
            let r = run_once(mode, &args).await?;
            println!(
                "  {mode:?} run {run}: {:>8.0} events/s (cpu/event: client {:.1} µs, nats-server {:.1} µs) | at {:.0}/s: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
                r.throughput,
                r.client_us,
                r.server_us,
                r.achieved_rate,
                ms(r.p50),
                ms(r.p99),
                ms(r.p999),
                ms(r.max)
            );
            results.push(r);
        }
        let client = median(results.iter().map(|r| r.client_us).collect());
        let server = median(results.iter().map(|r| r.server_us).collect());
        println!(
            "{mode:?} median: {:.0} events/s; cpu/event client {client:.1} µs + nats-server {server:.1} µs \
             (a dedicated 2-core box could do ~{:.0} events/s); hop latency p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms",
            median(results.iter().map(|r| r.throughput).collect()),
            2e6 / (client + server),
            median(results.iter().map(|r| ms(r.p50)).collect()),
            median(results.iter().map(|r| ms(r.p99)).collect()),
            median(results.iter().map(|r| ms(r.p999)).collect()),
        );
    }
    Ok(())
}
