//! `just bench-replay`: replay on this machine (ARCHITECTURE §9), against a real
//! nats-server with the production topology.
//!
//! Stores a synthetic `--minutes`-minute call (caller audio every 20 ms, the bot speaking
//! `--bot-share` of the time in 20 ms chunks, a turn every 10 s with its transcript,
//! tokens, sentences and `played` marks: about 60,000 events for 10 minutes) and
//! `--calls` summaries in the call index (a tenant of their own holding one in ten). Then
//! per run it times, as the `replay` command does them:
//! - **show**: the call read back (`CallLog::load`) and its timeline rendered;
//! - **export**: every event read and the `.sbcall` file encoded and written;
//! - **wav**: the call read back and its stereo WAV rendered and written;
//! - **calls**: the last 50 calls of the index, and the last 50 of the small tenant;
//! - **console page**: the console's call page of the 10-minute call (`GET
//!   /console/calls/{sid}` over loopback HTTP, the console logged in as its own NATS user),
//!   and its JSON twin `GET /v1/calls/{sid}`.
//!
//! Each figure is the median of `--runs` runs (the wall clock, `Instant`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures::{StreamExt as _, TryStreamExt as _};
use sb_replay::index::{Filter, recent, record};
use sb_replay::summary::CallSummary;
use sb_replay::{CallLog, Streams, timeline, transfer, wav};
use sb_schemas::{
    Audio, Body, CallSid, End, EndReason, Envelope, Mulaw, Played, Sentence, Start, TenantId,
    Token, Transcript, TtsChunk, encode, subject,
};
use sb_tests::TestEnv;

/// Replay benchmark (real nats-server).
#[derive(Debug, Parser)]
struct Args {
    /// Length of the synthetic call.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Share of the call the bot speaks.
    #[arg(long, default_value_t = 0.8)]
    bot_share: f64,
    /// Calls in the index.
    #[arg(long, default_value_t = 100_000)]
    calls: usize,
    /// Repetitions; medians are printed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

const T0: u64 = 1_796_378_400_000_000;
const FRAME_US: u64 = 20_000;
const TURN_US: u64 = 10_000_000;

/// The call's events in time order.
fn synthetic_call(tenant: &TenantId, sid: &CallSid, args: &Args) -> Vec<Envelope> {
    let at = |us: u64, turn: u32, body: Body| {
        let mut e = Envelope::new(tenant.clone(), sid.clone(), turn, body);
        e.at = T0 + us;
        e
    };
    let frame = || Mulaw(Bytes::from(vec![0xFF_u8; 160]));
    let total = args.minutes * 60_000_000;
    let mut out = vec![at(
        0,
        0,
        Body::Start(Start {
            stream_sid: "MZ0".into(),
            account_sid: "AC0".into(),
            from: "+14155551234".into(),
            to: "+15005550006".into(),
            custom_parameters: Default::default(),
        }),
    )];
    for (seq, us) in (0..total).step_by(FRAME_US as usize).enumerate() {
        let turn = (us / TURN_US) as u32;
        let body = Body::Audio(Audio {
            seq: seq as u64,
            timestamp_ms: us / 1_000,
            payload: frame(),
        });
        out.push(at(us, turn, body));
        let in_turn = us % TURN_US;
        if in_turn == 0 && turn > 0 {
            let words = "what are your opening hours on a sunday afternoon".to_owned();
            out.push(at(
                us,
                turn,
                Body::Transcript(Transcript {
                    epoch: 1,
                    text: words,
                    confidence: 0.9,
                    audio_seq: seq as u64,
                    speech_ended_at: T0 + us,
                }),
            ));
            for i in 0..30 {
                out.push(at(
                    us + 200_000 + i * 2_000,
                    turn,
                    Body::Token(Token {
                        index: i as u32,
                        text: " word".into(),
                    }),
                ));
            }
            for i in 0..3 {
                let body = Body::Sentence(Sentence {
                    index: i,
                    text: "We are open nine to five.".into(),
                    last: i == 2,
                    fallback: false,
                });
                out.push(at(us + 210_000 + u64::from(i) * 20_000, turn, body));
                out.push(at(
                    us + 3_000_000 * u64::from(i + 1),
                    turn,
                    Body::Played(Played {
                        sentence: i,
                        mark: format!("{turn}:{i}"),
                    }),
                ));
            }
        }
        if (in_turn as f64) < TURN_US as f64 * args.bot_share {
            let chunk = (in_turn / FRAME_US) as u32;
            let body = Body::TtsChunk(TtsChunk {
                sentence: 0,
                chunk,
                last: false,
                turn_last: false,
                payload: frame(),
            });
            out.push(at(us + 5_000, turn, body));
        }
    }
    out.push(at(
        total,
        (total / TURN_US) as u32,
        Body::End(End {
            reason: EndReason::Stop,
        }),
    ));
    out
}

async fn store(js: &async_nats::jetstream::Context, events: &[Envelope]) -> anyhow::Result<()> {
    for batch in events.chunks(2_000) {
        let acks = futures::future::try_join_all(
            batch
                .iter()
                .map(|e| js.publish(subject::for_envelope(e), encode(e).into())),
        )
        .await?;
        futures::future::try_join_all(acks.into_iter().map(|ack| ack.into_future())).await?;
    }
    Ok(())
}

fn summary(n: usize) -> CallSummary {
    CallSummary {
        call_sid: format!("CA{n:032x}"),
        tenant: if n.is_multiple_of(10) { "small" } else { "big" }.into(),
        direction: "inbound".into(),
        from: Some("+14155551234".into()),
        to: Some("+15005550006".into()),
        started_at: T0 + n as u64 * 1_000_000,
        ended_at: T0 + n as u64 * 1_000_000 + 60_000_000,
        turns: 5,
        barge_ins: (n % 3) as u32,
        fallback: false,
        outcome: "completed".into(),
        end_reason: "stop".into(),
        latency_ms: None,
    }
}

const OPERATOR: &str = "bench-operator-token";

/// The console's routes on a loopback port.
struct Console {
    base: String,
    http: reqwest::Client,
}

impl Console {
    async fn get(&self, path: &str, page: bool) -> anyhow::Result<String> {
        let request = self.http.get(format!("{}{path}", self.base));
        let request = match page {
            true => request.header(
                reqwest::header::COOKIE,
                format!(
                    "{}={}",
                    sb_console::web::session::COOKIE,
                    hex::encode(OPERATOR)
                ),
            ),
            false => request.bearer_auth(OPERATOR),
        };
        let response = request.send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        Ok(response.text().await?)
    }
}

async fn console(env: &TestEnv) -> anyhow::Result<Console> {
    let runtime = env.runtime("console").await?;
    let file = std::fs::read_to_string(&runtime.config.tenants_file)?;
    let state =
        sb_console::ConsoleState::open(&runtime, sb_runtime::Secret::new(OPERATOR), file).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(axum::serve(listener, sb_console::router(state)).into_future());
    Ok(Console {
        base,
        http: reqwest::Client::new(),
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
    let env = TestEnv::start().await?;
    let js = env.js.clone();
    let tenant = TenantId::parse("acme")?;
    let sid = CallSid::parse("CA0123456789abcdef0123456789abcdef")?;
    let events = synthetic_call(&tenant, &sid, &args);
    let started = Instant::now();
    store(&js, &events).await?;
    println!(
        "bench-replay: a {}-minute call, {} events stored in {:.1} s",
        args.minutes,
        events.len(),
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    futures::stream::iter(0..args.calls)
        .map(|n| {
            let js = js.clone();
            async move { record(&js, &summary(n)).await }
        })
        .buffer_unordered(256)
        .try_collect::<Vec<_>>()
        .await?;
    println!(
        "bench-replay: {} calls indexed in {:.1} s",
        args.calls,
        started.elapsed().as_secs_f64()
    );

    let console = console(&env).await?;
    let dir = tempfile::tempdir()?;
    let (mut show, mut export, mut wavs, mut last50, mut small50) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut page, mut api) = (vec![], vec![]);
    for _ in 0..args.runs {
        let t = Instant::now();
        let log = CallLog::load(&js, &sid).await?;
        let text = timeline::render(&log, timeline::Detail::Summary);
        show.push(ms(t.elapsed()));
        anyhow::ensure!(log.events.len() == events.len() && !text.is_empty());

        let t = Instant::now();
        let (file, _) = transfer::export(&js, &Streams::live(), &sid).await?;
        std::fs::write(dir.path().join("call.sbcall"), file.encode())?;
        export.push(ms(t.elapsed()));

        let t = Instant::now();
        let log = CallLog::load(&js, &sid).await?;
        std::fs::write(dir.path().join("call.wav"), wav::render(&log))?;
        wavs.push(ms(t.elapsed()));

        let t = Instant::now();
        let calls = recent(
            &js,
            &Filter {
                limit: 50,
                ..Default::default()
            },
        )
        .await?;
        last50.push(ms(t.elapsed()));
        anyhow::ensure!(calls.len() == 50.min(args.calls));
        let t = Instant::now();
        let filter = Filter {
            tenant: Some("small".into()),
            limit: 50,
            ..Default::default()
        };
        let calls = recent(&js, &filter).await?;
        small50.push(ms(t.elapsed()));
        anyhow::ensure!(calls.iter().all(|c| c.tenant == "small"));

        let t = Instant::now();
        let html = console.get(&format!("/console/calls/{sid}"), true).await?;
        page.push(ms(t.elapsed()));
        anyhow::ensure!(html.contains(sid.as_str()));
        let t = Instant::now();
        console.get(&format!("/v1/calls/{sid}"), false).await?;
        api.push(ms(t.elapsed()));
    }
    let size = std::fs::metadata(dir.path().join("call.sbcall"))?.len();
    println!("bench-replay: medians of {} runs", args.runs);
    println!(
        "  show    {:>8.1} ms   (read {} events + timeline)",
        median(show),
        events.len()
    );
    println!(
        "  export  {:>8.1} ms   ({:.1} MB file)",
        median(export),
        size as f64 / 1e6
    );
    println!("  wav     {:>8.1} ms", median(wavs));
    println!(
        "  calls   {:>8.1} ms   (last 50 of {})",
        median(last50),
        args.calls
    );
    println!(
        "  calls   {:>8.1} ms   (last 50 of one tenant holding 1 in 10)",
        median(small50)
    );
    println!(
        "  console {:>8.1} ms   (the call page of the 10-minute call)",
        median(page)
    );
    println!(
        "  console {:>8.1} ms   (GET /v1/calls/{{sid}}, its JSON)",
        median(api)
    );
    Ok(())
}
