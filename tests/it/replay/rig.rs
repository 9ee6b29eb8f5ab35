//! The replay tests' rig: a call recorded through the real ingress (in-process, on the
//! test's NATS and Redis) by the scripted caller, with a test bot answering the greeting;
//! and the `replay` command run in-process (`sb_replay::cli`) with its output captured.
//! State: the output buffers; the call lives in the test's streams.

use std::{
    future::Future,
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use clap::Parser as _;
use futures::StreamExt as _;
use sb_replay::{CallLog, cli::Cli};
use sb_runtime::Publisher;
use sb_schemas::roles::Role;
use sb_schemas::testing::tenant;
use sb_schemas::{Body, CallSid, Envelope, Kind, Mulaw, Sentence, TtsChunk, subject};
use sb_sim::caller::{CallReport, CallerConfig, Scenario, new_sid, place_call};
use sb_tests::{TestEnv, eventually};

use crate::ingress::{PUBLIC, TOKEN};

/// The control events of a recorded call, in order (audio: `audio` and `tts_chunk`).
pub(crate) const CONTROL_KINDS: [&str; 6] =
    ["webhook", "start", "sentence", "played", "dtmf", "end"];
/// The bot's two chunks of five 20 ms frames.
pub(crate) const BOT_CHUNK_BYTES: usize = 800;

/// A fresh call sid.
pub(crate) fn new_call() -> CallSid {
    CallSid::parse(&new_sid("CA")).unwrap()
}

/// One call recorded in `env`'s streams.
pub(crate) struct Recorded {
    pub(crate) sid: CallSid,
    pub(crate) report: CallReport,
}

/// Records a call through the in-process ingress: the webhook, `start`, caller frames, the
/// bot's sentence and two chunks (sent once `before_reply` resolves; the caller waits up
/// to 10 s for them), their `played`, a `dtmf`, and `end` when the caller hangs up. Returns
/// once `end` is stored (after the caller's last audio: the ingress stores it first).
pub(crate) async fn record_call(
    env: &TestEnv,
    sid: &CallSid,
    before_reply: impl Future<Output = ()> + Send + 'static,
) -> Recorded {
    let mut starts = env
        .client
        .subscribe(subject::event(&tenant(), sid, Kind::Start))
        .await
        .unwrap();
    let publisher = Publisher::new(env.js.clone());
    let bot_sid = sid.clone();
    let bot = async move {
        let start = sb_schemas::decode(&starts.next().await.unwrap().payload).unwrap();
        before_reply.await;
        let sentence = start.follow(Body::Sentence(Sentence {
            index: 0,
            text: "Hello, how can I help?".into(),
            last: true,
            fallback: false,
        }));
        publisher.publish(&sentence).await.unwrap();
        publish_chunks(&publisher, &bot_sid, 0).await;
    };
    let scenario = "tones = true\nbot_quiet_ms = 300\n[[steps]]\nwait_for_bot = 10000\n[[steps]]\ndtmf = \"7\"\n";
    record_with(env, sid, scenario, bot).await
}

/// The bot's two chunks of sentence 0 of `turn` (five 20 ms frames each).
pub(crate) async fn publish_chunks(publisher: &Publisher, sid: &CallSid, turn: u32) {
    for chunk in 0..2 {
        let event = Envelope::new(
            tenant(),
            sid.clone(),
            turn,
            Body::TtsChunk(TtsChunk {
                sentence: 0,
                chunk,
                last: chunk == 1,
                turn_last: chunk == 1,
                payload: Mulaw(Bytes::from(vec![0x20; BOT_CHUNK_BYTES])),
            }),
        );
        publisher.publish(&event).await.unwrap();
    }
}

/// Records a call through the in-process ingress: the scripted caller plays `scenario`
/// (TOML) while `bot` stands in for the pipeline (it runs from before the call is placed,
/// and should subscribe to what it answers before it is handed over). Returns once the
/// bot is done and the call's `end` is stored.
pub(crate) async fn record_with(
    env: &TestEnv,
    sid: &CallSid,
    scenario: &str,
    bot: impl Future<Output = ()> + Send + 'static,
) -> Recorded {
    let (_runtime, ingress) = crate::ingress::start(env).await;
    let sid = sid.clone();
    let bot = tokio::spawn(bot);
    let mut caller = CallerConfig::new(format!("http://{}", ingress.addr), PUBLIC, TOKEN);
    caller.call_sid = Some(sid.as_str().to_owned());
    caller.max_call = Duration::from_secs(30);
    // `end` from the media socket only: it is stored after the call's last caller audio.
    caller.send_status_callback = false;
    let scenario = Scenario::from_toml(scenario).unwrap();
    let report = place_call(caller, &scenario).await.unwrap();
    bot.await.unwrap();
    assert!(report.protocol_errors.is_empty(), "{report}");
    assert!(report.bot_bytes_received > 0, "the bot was heard: {report}");
    eventually("the call's end stored", Duration::from_secs(10), || async {
        let log = CallLog::load_events(&env.js, &sid).await.ok()?;
        log.envelopes()
            .any(|e| matches!(e.body, Body::End(_)))
            .then_some(())
    })
    .await
    .unwrap();
    ingress.shutdown().await;
    Recorded { sid, report }
}

/// `replay {args}` on `env`'s NATS as `role`'s user, output as text.
pub(crate) async fn replay(env: &TestEnv, role: Role, args: &[&str]) -> anyhow::Result<String> {
    let out = Output::default();
    replay_into(env, role, args, out.clone()).await?;
    Ok(out.text())
}

/// `replay {args}` writing into `out` as it runs (for `--follow`).
pub(crate) async fn replay_into(
    env: &TestEnv,
    role: Role,
    args: &[&str],
    mut out: Output,
) -> anyhow::Result<()> {
    let login = env.nats.login(role);
    let (user, password) = login.user.clone().expect("test servers have users");
    let mut argv = vec![
        "replay".to_owned(),
        "--nats-url".into(),
        login.url.clone(),
        "--nats-user".into(),
        user,
        "--nats-password".into(),
        password.expose().to_owned(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    sb_replay::cli::run(Cli::try_parse_from(argv)?, &mut out).await
}

/// What a command printed so far, shared with the test while it runs.
#[derive(Clone, Default)]
pub(crate) struct Output(Arc<Mutex<Vec<u8>>>);

impl Output {
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_owned).collect()
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `--json` lines parsed.
pub(crate) fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The `kind` of each JSON line.
pub(crate) fn kinds(lines: &[serde_json::Value]) -> Vec<&str> {
    lines.iter().map(|l| l["kind"].as_str().unwrap()).collect()
}
