//! The tool round trip's own overhead: what a tenant tool adds to a turn beyond the
//! tool's own time (issue 16's target: p99 ≤ 10 ms).
//!
//! The LLM stand-in calls the tenant's tool `lookup` on every transcript; the
//! tenant-server stand-in answers at once with a `say` that differs per request (so the
//! answer's TTS misses the cache, as a real answer would). One turn at a time, on the
//! production agent and tts stages over real NATS and Redis. Per turn:
//! - **call → request**: the `tool_call` event's `at` (the model's stream finished and the
//!   call was recorded) → the request's arrival at the tenant server;
//! - **answer → audio**: the tenant's answer ready → the answer's first bot audio chunk
//!   seen on `audio.*.*.out` (this includes the model's second request to the LLM
//!   stand-in and the TTS stand-in's synthesis, both at zero delay);
//! - **overhead**: their sum, everything but the tool's own time.

use anyhow::Context as _;
use sb_runtime::tenants::testing::secret_env;
use sb_schemas::testing::sid;
use sb_schemas::{Body, Envelope, Transcript};
use sb_sim::{llm, tenant};
use serde_json::json;

use crate::{Args, Bench, Setup, median, pct, serve, tenants_toml};

const SECRET: &str = "bench-tenant-secret";

/// One run's figures, ms: [p50, p99] of call → request, answer → audio, overhead.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ToolRow {
    to_request: [f64; 2],
    to_audio: [f64; 2],
    overhead: [f64; 2],
    samples: usize,
}

impl ToolRow {
    pub(crate) fn median(rows: &[ToolRow]) -> Self {
        let m = |f: &dyn Fn(&ToolRow) -> f64| median(rows.iter().map(f).collect());
        let pair = |f: &dyn Fn(&ToolRow) -> [f64; 2]| [m(&|r| f(r)[0]), m(&|r| f(r)[1])];
        Self {
            to_request: pair(&|r| r.to_request),
            to_audio: pair(&|r| r.to_audio),
            overhead: pair(&|r| r.overhead),
            samples: rows.first().map_or(0, |r| r.samples),
        }
    }

    pub(crate) fn print(&self, label: &str) {
        println!(
            "{label}tool round trip ({} turns, one at a time): overhead p50 {:5.2} ms  p99 {:5.2} ms | call → request {:4.2}/{:4.2} | answer → first audio {:5.2}/{:5.2} (incl. the LLM and TTS stand-ins)",
            self.samples,
            self.overhead[0],
            self.overhead[1],
            self.to_request[0],
            self.to_request[1],
            self.to_audio[0],
            self.to_audio[1],
        );
    }
}

/// Runs `args.tool_samples` tool turns on fresh servers.
pub(crate) async fn measure(args: &Args, dir: &std::path::Path) -> anyhow::Result<ToolRow> {
    let server = tenant::Config {
        secret: Some(SECRET.into()),
        tools: [(
            "lookup".to_owned(),
            tenant::ToolScript {
                answer: json!({ "say": "Reference {n} is confirmed for you." }),
                ..tenant::ToolScript::default()
            },
        )]
        .into(),
        ..tenant::Config::default()
    };
    let (tenant_url, tenant_task) = serve(tenant::router(server)).await?;
    let setup = Setup {
        llm: llm::Config {
            replies: vec![r#"tool:lookup {"q":"opening hours"}"#.into()],
            ..llm::Config::default()
        },
        tenants: tenants_toml().tool("lookup", &format!("{tenant_url}/tools/lookup")),
        secrets: vec![(secret_env("bench"), SECRET.into())],
    };
    let bench = Bench::start(args, dir, setup).await?;
    let call = sid(0x7001);
    bench
        .runtime
        .redis
        .session_start(
            &call,
            &bench.tenant,
            &sb_runtime::redis::session::Parties::default(),
            0,
        )
        .await?;
    let mut turns = Vec::with_capacity(args.tool_samples);
    for n in 0..args.tool_samples {
        let turn = bench
            .runtime
            .redis
            .session_next_turn(&call, 0)
            .await?
            .context("the session was started")?;
        let event = Envelope::new(
            bench.tenant.clone(),
            call.clone(),
            turn,
            Body::Transcript(Transcript {
                epoch: 0,
                text: format!("turn {n}: look it up, please"),
                confidence: 0.9,
                audio_seq: 0,
                speech_ended_at: 0,
            }),
        );
        let sample = bench.turn(&event).await?;
        let called = bench
            .seen
            .lock()
            .expect("not poisoned")
            .tool_call
            .remove(&(call.clone(), turn))
            .context("no tool_call event seen")?;
        turns.push((called, sample.seen_at));
    }
    let received = tenant::fetch_received(&tenant_url).await?;
    bench.stop().await;
    tenant_task.abort();
    let mut to_request = Vec::new();
    let mut to_audio = Vec::new();
    let mut overhead = Vec::new();
    for ((id, called_at), seen_at) in turns {
        let request = received
            .iter()
            .find(|r| r["idempotency_key"] == id.as_str())
            .context("the tenant server never got a tool call")?;
        anyhow::ensure!(request["signature"] == "valid", "a bad signature");
        let arrived = request["at_us"].as_u64().context("at_us")?;
        let answered = request["answered_us"].as_u64().context("answered_us")?;
        let ms = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1e3;
        let (a, b) = (ms(called_at, arrived), ms(answered, seen_at));
        to_request.push(a);
        to_audio.push(b);
        overhead.push(a + b);
    }
    let p = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        [pct(&v, 0.5), pct(&v, 0.99)]
    };
    Ok(ToolRow {
        samples: overhead.len(),
        to_request: p(to_request),
        to_audio: p(to_audio),
        overhead: p(overhead),
    })
}
