//! The webhook phases: the sequential step breakdown, closed-loop throughput, open-loop
//! latency at fixed rates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use sb_ingress::{Backend as _, IngressConfig, Live, Settings};
use sb_schemas::testing::sid;
use sb_schemas::{Body, CallSid, Envelope, Webhook};
use sb_twilio::IncomingCall;
use sb_twilio::form::encode_form;
use sb_twilio::signature::sign;

use crate::clients::Http;
use crate::stack::{Cpu, Stack};
use crate::{ACCOUNT, Args, CALLER, NUMBER, PUBLIC, RunResult, TOKEN, median, micros, percentiles};

/// A call sid unique per run, phase and index.
pub(crate) fn call_sid(run: u128, phase: u128, i: usize) -> String {
    sid((run << 96) | (phase << 64) | i as u128).to_string()
}

/// A signed incoming-call webhook, as raw HTTP/1.1 request bytes.
fn webhook_request(addr: SocketAddr, sid: &str) -> Vec<u8> {
    let call = IncomingCall::ringing(ACCOUNT, sid, CALLER, NUMBER, "inbound");
    let body = encode_form(&call.params);
    let signature = sign(TOKEN, &format!("{PUBLIC}/twilio/voice"), &call.params);
    format!(
        "POST /twilio/voice HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: {signature}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sequential cost of each step, to see where a webhook's time goes.
pub(crate) async fn breakdown(
    stack: &Stack,
    run: u128,
    result: &mut RunResult,
) -> anyhow::Result<()> {
    let settings = Settings::from_config(&IngressConfig::for_tests(TOKEN, PUBLIC))?;
    let call = IncomingCall::ringing(ACCOUNT, &call_sid(run, 9, 0), CALLER, NUMBER, "inbound");
    let url = format!("{PUBLIC}/twilio/voice");
    let signature = sign(TOKEN, &url, &call.params);
    let n = 20_000;
    let started = Instant::now();
    for _ in 0..n {
        settings
            .validator
            .validate(&url, &call.params, &signature)?;
    }
    result.sig_us = micros(started.elapsed()) / f64::from(n);

    let backend = Live::connect(&stack.runtime).await?;
    let tenant = stack
        .runtime
        .tenants
        .by_number(NUMBER)
        .context("bench tenant")?
        .clone();
    let mut admit = Vec::new();
    let mut publish = Vec::new();
    for i in 0..2000 {
        let sid = CallSid::parse(&call_sid(run, 8, i))?;
        let started = Instant::now();
        backend.admit(&sid, &tenant, SystemTime::now()).await?;
        admit.push(micros(started.elapsed()));
        let event = Envelope::new(
            tenant.id.clone(),
            sid,
            0,
            Body::Webhook(Webhook {
                account_sid: ACCOUNT.into(),
                from: CALLER.into(),
                to: NUMBER.into(),
                direction: "inbound".into(),
                call_status: "ringing".into(),
                attempt: None,
            }),
        );
        let started = Instant::now();
        backend.publish(&event).await?;
        publish.push(micros(started.elapsed()));
    }
    result.admit_us = median(admit);
    result.publish_us = median(publish);

    let mut http = Http::connect(stack.addr).await?;
    let requests: Vec<Vec<u8>> = (0..2000)
        .map(|i| webhook_request(stack.addr, &call_sid(run, 7, i)))
        .collect();
    let mut whole = Vec::new();
    for request in &requests {
        let started = Instant::now();
        let status = http.call(request).await?;
        anyhow::ensure!(status == 200, "webhook answered {status}");
        whole.push(micros(started.elapsed()));
    }
    result.sequential_us = median(whole);
    Ok(())
}

/// `--connections` connections sending back to back until `--webhooks` are answered.
pub(crate) async fn closed_loop(
    stack: &Stack,
    args: &Args,
    run: u128,
    result: &mut RunResult,
) -> anyhow::Result<()> {
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..args.webhooks)
            .map(|i| webhook_request(stack.addr, &call_sid(run, 1, i)))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let mut connections = Vec::new();
    for _ in 0..args.connections {
        connections.push(Http::connect(stack.addr).await?);
    }
    let cpu = Cpu::now(stack);
    let started = Instant::now();
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|mut http| {
            let (requests, next) = (requests.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(request) = requests.get(i) else {
                        return anyhow::Ok(latencies);
                    };
                    let sent = Instant::now();
                    let status = http.call(request).await?;
                    anyhow::ensure!(status == 200, "webhook answered {status}");
                    latencies.push(sent.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(args.webhooks);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    result.webhook_cpu = Cpu::now(stack).per_item(cpu, args.webhooks);
    result.throughput = args.webhooks as f64 / elapsed.as_secs_f64();
    let (p50, p99, _) = percentiles(latencies);
    (result.closed_p50_ms, result.closed_p99_ms) = (p50, p99);
    Ok(())
}

/// Requests scheduled at `rate`, spread over the connections; latency from the schedule.
/// Returns (achieved rate, p50 ms, p99 ms).
pub(crate) async fn open_loop(
    stack: &Stack,
    args: &Args,
    rate: u64,
    (run, phase): (u128, u128),
) -> anyhow::Result<(f64, f64, f64)> {
    let total = (rate * args.seconds) as usize;
    let connections = args.connections.max(1);
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut per_connection: Vec<Vec<(usize, Vec<u8>)>> = vec![Vec::new(); connections];
    for i in 0..total {
        per_connection[i % connections]
            .push((i, webhook_request(stack.addr, &call_sid(run, phase, i))));
    }
    let mut https = Vec::new();
    for _ in 0..connections {
        https.push(Http::connect(stack.addr).await?);
    }
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let tasks: Vec<_> = https
        .into_iter()
        .zip(per_connection)
        .map(|(mut http, requests)| {
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(requests.len());
                for (i, request) in requests {
                    let due = start + interval * i as u32;
                    tokio::time::sleep_until(due).await;
                    let status = http.call(&request).await?;
                    anyhow::ensure!(status == 200, "webhook answered {status}");
                    latencies.push(due.elapsed());
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let achieved = total as f64 / start.elapsed().as_secs_f64();
    let (p50, p99, _) = percentiles(latencies);
    Ok((achieved, p50, p99))
}
