//! The demo: one phone call through the whole pipeline on this machine, explained.
//!
//! Starts the [`Stack`] (with realistic stand-in delays and real espeak-ng speech), places
//! the scripted call of `services/sim/scenarios/demo.toml` (greeting, two questions, a
//! backchannel the bot survives, a barge-in, hang-up), prints the call's timeline and latency waterfall from JetStream,
//! writes a stereo WAV of the call as the caller heard it, runs a tiny outbound campaign
//! ([`crate::demo_campaign`]), and stops everything.
//! State: the stack's processes and the run directory (`.run/demo`).

use std::{path::PathBuf, time::Instant};

use anyhow::Context as _;
use sb_replay::{CallLog, latency, timeline};
use sb_schemas::CallSid;
use sb_sim::caller::{CallReport, CallerConfig, Scenario, place_call};

use crate::{
    servers::workspace_root,
    stack::{AUTH_TOKEN, Delays, PUBLIC_URL, Stack, StackConfig},
};

/// What the Deepgram stand-in "hears", in the order the caller says it.
pub const CALLER_LINES: [&str; 4] = [
    "What are your opening hours?",
    "Do you have any offers at the moment?",
    "Sorry, could you just email them to me?",
    "Can I book a visit on Friday afternoon?",
];

/// What the demo's caller says: [`CALLER_LINES`] with "Uh-huh." over the first answer (a
/// backchannel: no turn, so the LLM is not asked and [`BOT_REPLIES`] stay in step).
pub const DEMO_CALLER_LINES: [&str; 5] = [
    CALLER_LINES[0],
    "Uh-huh.",
    CALLER_LINES[1],
    CALLER_LINES[2],
    CALLER_LINES[3],
];

/// The LLM stand-in's answers: reply n answers the caller's n-th line. The last two call
/// `acme`'s own tools (served by the tenant-server stand-in): the email is sent without
/// waiting, the booking is waited for and its answer spoken.
pub const BOT_REPLIES: [&str; 4] = [
    "We're open from nine to five, Monday to Friday, and ten to two on Saturdays.",
    "Yes! This month every second item is half price. Members also get free delivery on \
     orders over fifty dollars. And if you sign up today, you get an extra ten percent off \
     your first order. Would you like me to tell you more about membership?",
    r#"tool:email_offers {"topic":"this month's offers"} => Of course, the offers are on their way to your inbox. Anything else?"#,
    r#"tool:book_visit {"day":"friday","time":"afternoon"}"#,
];

/// Runs the demo; returns the caller's report.
pub async fn run(run_dir: PathBuf) -> anyhow::Result<CallReport> {
    println!("Switchboard demo: one phone call through the whole pipeline, on this machine.");
    let started = Instant::now();
    let mut config = StackConfig::new(&run_dir);
    config.delays = Delays::TYPICAL;
    config.stt_script = DEMO_CALLER_LINES.map(String::from).to_vec();
    config.llm_replies = BOT_REPLIES.map(String::from).to_vec();
    config.tts_speech = true;
    config.callees = Some(workspace_root().join("services/sim/examples/campaign_callees.toml"));
    let stack = Stack::start(config)
        .await
        .context("the stack did not start")?;
    println!(
        "  started nats-server, redis-server, stand-ins for Twilio, Deepgram, the LLM and Azure TTS,\n  \
         and the ingress, stt, agent, tts and dialer services ({:.1} s; logs in {})",
        started.elapsed().as_secs_f64(),
        run_dir.display()
    );

    let mut result = call(&stack, &run_dir).await;
    if result.is_ok()
        && let Err(error) = crate::demo_campaign::run(&stack).await
    {
        result = Err(error.context("the campaign failed"));
    }
    stack.stop().await;
    println!("  stopped everything it started");
    result
}

async fn call(stack: &Stack, run_dir: &std::path::Path) -> anyhow::Result<CallReport> {
    let scenario = Scenario::load(&workspace_root().join("services/sim/scenarios/demo.toml"))?;
    println!(
        "  a caller dials {} (tenant acme) from {}: asks two questions, says “uh-huh” over the\n  \
         first answer (the bot pauses, then goes on), interrupts the second, has the offers\n  \
         emailed and books a visit (acme's own tools, on its tenant server)",
        scenario.to, scenario.from
    );
    let caller = CallerConfig::new(stack.ingress_url(), PUBLIC_URL, AUTH_TOKEN);
    let report = place_call(caller, &scenario)
        .await
        .context("the call failed")?;

    let js = stack.jetstream().await?;
    let sid = CallSid::parse(&report.call_sid)?;
    // The stages finish their last events just after the hang-up; wait for `end`.
    let log = wait_for_end(&js, &sid).await?;
    println!("\nTimeline of call {sid} (from JetStream; `replay show {sid}` prints it too):");
    print!(
        "{}",
        indent(&timeline::render(&log, timeline::Detail::Summary))
    );
    println!("\nLatency per turn:");
    print!("{}", indent(&latency::render(&latency::turns(&log))));

    println!("\nWhat the caller measured:");
    let mut resumed = log.envelopes().filter_map(|e| match &e.body {
        sb_schemas::Body::Resumed(r) => Some(r.clone()),
        _ => None,
    });
    let backchannel = sb_runtime::tenants::backchannel::Backchannel::new(
        &sb_runtime::tenants::BargeInPolicy::default().backchannel,
    );
    for turn in &report.turns {
        let said = turn.caller_text.as_deref().unwrap_or("(greeting)");
        match (turn.voice_to_voice_ms, &turn.barge_in) {
            (_, Some(b)) if backchannel.only_backchannel(said) => {
                println!(
                    "  “{said}”, said over the bot → it paused {} ms after the caller started; no words that interrupt,",
                    b.latency_ms.map_or("-".into(), |ms| ms.to_string())
                );
                match resumed.next() {
                    Some(r) => println!(
                        "    so it resumed sentence #{} from {} ms (the cut word's start) after a {} ms pause: the caller heard every word",
                        r.sentence, r.offset_ms, r.paused_ms
                    ),
                    None => println!("    but it did not resume (no `resumed` event)"),
                }
            }
            (_, Some(b)) => println!(
                "  “{said}”, said over the bot → its audio was cleared {} ms after the caller started",
                b.latency_ms.map_or("-".into(), |ms| ms.to_string())
            ),
            (Some(ms), None) => {
                println!("  “{said}” → first bot audio {ms} ms after the caller stopped")
            }
            (None, None) => println!("  “{said}” → no bot audio"),
        }
    }
    println!(
        "  {} frames sent, {:.1} s of bot audio played, {} late frames, {} protocol errors",
        report.frames_sent,
        report.bot_bytes_played as f64 / 8000.0,
        report.late_frames,
        report.protocol_errors.len()
    );
    tenant_server(stack, &sid).await?;
    let wav = run_dir.join("call.wav");
    std::fs::write(&wav, report.to_wav())?;
    println!(
        "  wrote {} (stereo: caller left, bot right, as heard)",
        wav.display()
    );
    // The console's call page as a file: open it in a browser after the demo.
    let page = run_dir.join("call.html");
    std::fs::write(&page, sb_console::web::report(&sid, &log, "call.wav"))?;
    println!(
        "  wrote {} (the console's call page: transcript as heard, latency waterfall, the audio with its events)",
        page.display()
    );
    Ok(report)
}

/// What acme's tenant server received: the tool requests and the call webhooks (waiting
/// a little for `call.ended`, sent once the call's end is stored), and the report.
async fn tenant_server(stack: &Stack, sid: &CallSid) -> anyhow::Result<()> {
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let received = loop {
        let received = sb_sim::tenant::fetch_received(&stack.tenant_server.url()).await?;
        let ended = received.iter().any(|r| {
            r["event"] == "call.ended"
                && r["body"]["call_sid"] == sid.as_str()
                && r["status"] == 200
        });
        if ended || Instant::now() > deadline {
            break received;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    println!("\nWhat acme's tenant server received (signed by Switchboard, signatures checked):");
    for request in &received {
        let what = match request["event"].as_str() {
            Some(event) => format!("webhook {event}"),
            None => format!("tool {}", request["body"]["arguments"]),
        };
        println!(
            "  POST {} {what} (signature {}, answered {})",
            request["path"].as_str().unwrap_or("?"),
            request["signature"].as_str().unwrap_or("?"),
            request["status"]
        );
    }
    if let Some(ended) = received
        .iter()
        .find(|r| r["event"] == "call.ended" && r["status"] == 200)
    {
        let data = &ended["body"]["data"];
        println!(
            "  call.ended: {} after {} s, {} turns, {} barge-in(s), {} tool call(s), voice-to-voice p50 {} ms; as heard:",
            data["outcome"].as_str().unwrap_or("?"),
            data["duration_secs"],
            data["turns"],
            data["barge_ins"],
            data["tool_calls"].as_array().map_or(0, Vec::len),
            data["latency_ms"]["p50"]
                .as_f64()
                .map_or("-".into(), |ms| format!("{ms:.0}")),
        );
        for line in data["transcript"].as_array().into_iter().flatten() {
            println!(
                "    {:>6}: {}",
                line["speaker"].as_str().unwrap_or("?"),
                line["text"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

async fn wait_for_end(
    js: &async_nats::jetstream::Context,
    sid: &CallSid,
) -> anyhow::Result<CallLog> {
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = CallLog::load(js, sid).await?;
        let ended = log
            .envelopes()
            .any(|e| matches!(e.body, sb_schemas::Body::End(_)));
        if ended || Instant::now() > deadline {
            return Ok(log);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}
