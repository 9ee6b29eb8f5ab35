//! The media phase: concurrent Media Streams sockets at 50 frames/s each; latency from a
//! frame's send to a core subscriber seeing it on `audio.{t}.{sid}.in`. Each call is
//! admitted first, as its webhook would (not measured), and its `start` brings the
//! credential that webhook would have put in the TwiML.

use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use futures::StreamExt as _;
use sb_ingress::{Backend as _, IngressConfig, Live, Settings};
use sb_schemas::{Body, CallSid, decode};
use sb_twilio::media::{InboundMedia, InboundMessage, MediaFormat, StartMeta, StopMeta};
use sb_twilio::{CallBinding, credential};

use crate::clients::Ws;
use crate::stack::{Cpu, Stack};
use crate::webhooks::call_sid;
use crate::{
    ACCOUNT, Args, CALLER, NUMBER, PUBLIC, RunResult, SOCKETS_PER_CLOCK, TOKEN, percentiles,
};

/// Admits call `sid` as its webhook would; the credential its TwiML would carry.
async fn admit(
    backend: &Live,
    settings: &Settings,
    tenant: &sb_runtime::Tenant,
    sid: &str,
) -> anyhow::Result<String> {
    backend
        .admit(&CallSid::parse(sid)?, tenant, SystemTime::now())
        .await?;
    let binding = CallBinding {
        call_sid: sid,
        tenant: tenant.id.as_str(),
        stream_url: &settings.stream_url,
    };
    Ok(settings.credentials.issue(&binding, SystemTime::now()))
}

/// `--sockets` sockets streaming 50 frames/s each; frame → `audio.in` latency.
pub(crate) async fn media(
    stack: &Stack,
    args: &Args,
    run: u128,
    result: &mut RunResult,
) -> anyhow::Result<()> {
    // A sample of the calls is observed (a subscriber on every call would add a delivery
    // per frame to nats-server and this process, both on the machine under test).
    let client = sb_runtime::nats::connect(&stack.nats.login(sb_schemas::roles::Role::Ops)).await?;
    let mut subscribers = Vec::new();
    for k in (0..args.sockets).step_by(args.sample_every.max(1)) {
        let subject = format!("audio.acme.{}.in", call_sid(run, 3, k));
        subscribers.push(client.subscribe(subject).await?);
    }
    let sampled = subscribers.len();
    let mut subscriber = futures::stream::select_all(subscribers);
    let epoch = Instant::now();
    let warm_up = Duration::from_secs(1).as_nanos() as u64;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let collector = tokio::spawn(async move {
        let mut latencies = Vec::new();
        let mut frames = 0usize;
        loop {
            let message = tokio::select! {
                message = subscriber.next() => match message {
                    Some(message) => message,
                    None => break,
                },
                _ = &mut stopped => break,
            };
            let now = epoch.elapsed().as_nanos() as u64;
            let Ok(event) = decode(&message.payload) else {
                continue;
            };
            let Body::Audio(audio) = event.body else {
                continue;
            };
            let Some(sent) = audio.payload.0.get(..8) else {
                continue;
            };
            let sent = u64::from_le_bytes(sent.try_into().unwrap_or_default());
            frames += 1;
            if sent >= warm_up {
                latencies.push(Duration::from_nanos(now.saturating_sub(sent)));
            }
        }
        (frames, latencies)
    });

    let frames_per_socket = args.media_seconds as usize * 50;
    let backend = Live::connect(&stack.runtime).await?;
    let settings = Settings::from_config(&IngressConfig::for_tests(TOKEN, PUBLIC))?;
    let tenant = stack
        .runtime
        .tenants
        .by_number(NUMBER)
        .context("bench tenant")?
        .clone();
    let mut sockets = Vec::new();
    for k in 0..args.sockets {
        let credential = admit(&backend, &settings, &tenant, &call_sid(run, 3, k)).await?;
        sockets.push((k, credential, Ws::connect(stack.addr).await?));
    }
    let cpu = Cpu::now(stack);
    let begin = tokio::time::Instant::now() + Duration::from_millis(200);
    // Sockets in small groups sharing one 20 ms clock, the groups spread over the period,
    // so Twilio's evenly spread frames are modelled without a timer per socket.
    let group_size = SOCKETS_PER_CLOCK;
    let groups = args.sockets.div_ceil(group_size);
    let mut tasks = Vec::new();
    let mut sockets = sockets.into_iter();
    for g in 0..groups {
        let mut group: Vec<(usize, String, Ws)> = sockets.by_ref().take(group_size).collect();
        let offset = Duration::from_micros(20_000 * g as u64 / groups as u64);
        tasks.push(tokio::spawn(async move {
            let mut streams = Vec::new();
            for (k, credential, ws) in &mut group {
                let sid = call_sid(run, 3, *k);
                let stream_sid = format!("MZ{k:032x}");
                ws.send(&start_message(&sid, &stream_sid, credential))
                    .await?;
                streams.push((sid, stream_sid));
            }
            let mut tick = tokio::time::interval_at(begin + offset, Duration::from_millis(20));
            let mut payload = vec![0x55u8; 160];
            for i in 0..frames_per_socket {
                tick.tick().await;
                for ((_, _, ws), (_, stream_sid)) in group.iter_mut().zip(&streams) {
                    let sent = epoch.elapsed().as_nanos() as u64;
                    payload[..8].copy_from_slice(&sent.to_le_bytes());
                    ws.send(&media_message(stream_sid, i as u64, &payload))
                        .await?;
                }
            }
            for ((_, _, mut ws), (sid, stream_sid)) in group.into_iter().zip(streams) {
                let stop = stop_message(&sid, &stream_sid, frames_per_socket as u64 + 2);
                ws.send(&stop).await?;
                let _ = tokio::time::timeout(Duration::from_secs(5), ws.reader).await;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    // Everything sent; let the last frames land, then end the subscription.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop.send(());
    let (frames, latencies) = collector.await?;
    result.frame_cpu = Cpu::now(stack).per_item(cpu, frames_per_socket * args.sockets);
    result.media_frames = frames;
    result.media_lost = (frames_per_socket * sampled).saturating_sub(frames);
    let (p50, p99, max) = percentiles(latencies);
    (
        result.media_p50_ms,
        result.media_p99_ms,
        result.media_max_ms,
    ) = (p50, p99, max);
    Ok(())
}

fn start_message(sid: &str, stream_sid: &str, credential: &str) -> String {
    let parameters = [
        ("tenant", "acme"),
        ("from", CALLER),
        ("to", NUMBER),
        (credential::PARAMETER, credential),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    InboundMessage::Start {
        sequence_number: 1,
        start: StartMeta {
            account_sid: ACCOUNT.into(),
            stream_sid: stream_sid.into(),
            call_sid: sid.into(),
            tracks: vec!["inbound".into()],
            media_format: MediaFormat::default(),
            custom_parameters: parameters,
        },
        stream_sid: stream_sid.into(),
    }
    .to_json()
}

fn media_message(stream_sid: &str, i: u64, payload: &[u8]) -> String {
    InboundMessage::Media {
        sequence_number: i + 2,
        media: InboundMedia {
            track: "inbound".into(),
            chunk: i + 1,
            timestamp: i * 20,
            payload: sb_twilio::media::encode_payload(payload),
        },
        stream_sid: stream_sid.into(),
    }
    .to_json()
}

fn stop_message(sid: &str, stream_sid: &str, sequence_number: u64) -> String {
    InboundMessage::Stop {
        sequence_number,
        stop: StopMeta {
            account_sid: ACCOUNT.into(),
            call_sid: sid.into(),
        },
        stream_sid: stream_sid.into(),
    }
    .to_json()
}
