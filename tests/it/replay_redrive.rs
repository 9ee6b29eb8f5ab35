//! `replay redrive` against real servers: a call recorded through the ingress has one
//! stage run again on its recorded inputs, in the `replay` process, with a changed prompt
//! (agent) or voice (tts). The new outputs land under the prefix beside nothing else, the
//! recorded ones are printed beside them, and the live pipeline sees nothing: no message on
//! `CALLS` or `AUDIO`, no Redis key written. Bad input is refused with a clear message.

use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
};

use clap::Parser as _;
use futures::StreamExt as _;
use sb_replay::cli::{Cli, Command};
use sb_replay::{Prefix, Streams, streams::read_raw};
use sb_runtime::Publisher;
use sb_schemas::roles::Role;
use sb_schemas::testing::tenant;
use sb_schemas::{CallSid, Kind, decode, subject};
use sb_sim::{SimServer, llm, tts};
use sb_tests::{TestEnv, workspace_root};
use serde_json::Value;

use crate::replay::rig::{
    Output, json_lines, new_call, publish_chunks, record_call, record_with, replay,
};
use crate::support::{sentence, transcript};

const QUESTION: &str = "What time do you open on Sundays?";
const RECORDED_ANSWER: &str = "We open at ten on Sundays.";
const RECORDED_GREETING: &str = "Hello, how can I help?";
const NEW_PROMPT: &str = "You are the redrive test prompt for Acme";
const KEY_VAR: &str = "REDRIVE_TEST_LLM_KEY";

/// A call of two turns recorded through the ingress: the greeting (turn 0, with its
/// audio), the caller's question (turn 1's transcript, as the stt publishes it) and the
/// answer the agent gave then.
async fn two_turn_call(env: &TestEnv) -> CallSid {
    let sid = new_call();
    let mut starts = env
        .client
        .subscribe(subject::event(&tenant(), &sid, Kind::Start))
        .await
        .unwrap();
    let publisher = Publisher::new(env.js.clone());
    let bot_sid = sid.clone();
    let bot = async move {
        let start = decode(&starts.next().await.unwrap().payload).unwrap();
        let greeting = start.follow(sentence(RECORDED_GREETING));
        publisher.publish(&greeting).await.unwrap();
        publish_chunks(&publisher, &bot_sid, 0).await;
        let question = transcript(&bot_sid, 1, QUESTION);
        publisher.publish(&question).await.unwrap();
        publisher
            .publish(&question.follow(sentence(RECORDED_ANSWER)))
            .await
            .unwrap();
    };
    let scenario = "tones = true\nbot_quiet_ms = 300\n[[steps]]\nwait_for_bot = 10000\n[[steps]]\ndtmf = \"7\"\n";
    record_with(env, &sid, scenario, bot).await.sid
}

/// `replay redrive {args}` as `ops`, the LLM key read from `KEY_VAR` (the process'
/// environment is left alone).
async fn redrive(env: &TestEnv, args: &[&str]) -> anyhow::Result<String> {
    let login = env.nats.login(Role::Ops);
    let (user, password) = login.user.clone().expect("test servers have users");
    let mut argv = vec![
        "replay".to_owned(),
        "--nats-url".into(),
        login.url.clone(),
        "--nats-user".into(),
        user,
        "--nats-password".into(),
        password.expose().to_owned(),
        "redrive".into(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    let cli = Cli::try_parse_from(argv)?;
    let Command::Redrive(redrive) = cli.command else {
        panic!("not a redrive: {:?}", cli.command)
    };
    let env_var = |var: &str| (var == KEY_VAR).then(|| "llm-key".to_owned());
    let mut out = Output::default();
    sb_replay::rerun_cli::run_with_env(&cli.nats, *redrive, env_var, &mut out).await?;
    Ok(out.text())
}

/// What the live pipeline holds: messages in `CALLS` and `AUDIO`, and every Redis key with
/// its value (`DUMP`).
async fn live_state(env: &TestEnv) -> (u64, u64, BTreeMap<String, Vec<u8>>) {
    let mut counts = Vec::new();
    for name in [subject::CALLS_STREAM, subject::AUDIO_STREAM] {
        let mut stream = env.js.get_stream(name).await.unwrap();
        counts.push(stream.info().await.unwrap().state.messages);
    }
    let mut redis = env.redis_raw().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut redis)
        .await
        .unwrap();
    let mut dumped = BTreeMap::new();
    for key in keys {
        let value: Vec<u8> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
        dumped.insert(key, value);
    }
    (counts[0], counts[1], dumped)
}

/// `show --prefix P --json` of the call.
async fn under_prefix(env: &TestEnv, sid: &CallSid, prefix: &str) -> Vec<Value> {
    let args = ["show", sid.as_str(), "--prefix", prefix, "--json"];
    json_lines(&replay(env, Role::Ops, &args).await.unwrap())
}

fn texts(lines: &[Value], kind: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["kind"] == kind)
        .map(|l| l["body"]["text"].as_str().unwrap().to_owned())
        .collect()
}

async fn llm_requests(llm: &SimServer) -> u64 {
    let stats: Value = reqwest::get(format!("{}/sim/stats", llm.http_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["requests"].as_u64().unwrap()
}

fn tenants_file() -> String {
    workspace_root()
        .join("deploy/base/tenants.toml")
        .display()
        .to_string()
}

/// The agent re-run with a new prompt: the greeting again on `start` and one LLM answer to
/// the recorded question, whose words carry the new prompt (the stand-in repeats it), are
/// stored under the prefix with the inputs as fed and printed beside the recorded
/// sentences; the live streams and Redis are exactly as before. The same prefix again is
/// refused; an unreachable LLM is named by its URL and stores nothing.
#[tokio::test]
async fn the_agent_redriven_with_a_new_prompt_stays_off_the_live_pipeline() {
    let env = TestEnv::start().await.unwrap();
    let sid = two_turn_call(&env).await;
    let llm = llm::spawn(llm::Config {
        replies: vec!["Under the new prompt: {system}.".into()],
        ..llm::Config::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prompt: PathBuf = dir.path().join("prompt.txt");
    std::fs::write(&prompt, format!("{NEW_PROMPT}\n")).unwrap();
    let (prompt, tenants) = (prompt.display().to_string(), tenants_file());
    let llm_url = format!("{}/openai/v1", llm.http_url());
    let before = live_state(&env).await;

    let args = |prefix: &'static str, url: &str| -> Vec<String> {
        [
            sid.as_str(),
            "--stage",
            "agent",
            "--prompt",
            &prompt,
            "--tenants",
            &tenants,
            "--llm-url",
            url,
            "--llm-key-env",
            KEY_VAR,
            "--prefix",
            prefix,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let run = |args: Vec<String>| {
        let env = &env;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            redrive(env, &args).await
        }
    };
    let printed = run(args("rd1", &llm_url)).await.unwrap();

    let answer = format!("Under the new prompt: {NEW_PROMPT}.");
    let greeting = "Thanks for calling Acme. How can I help you today?";
    for line in [
        format!("turn 1 · the caller: {QUESTION:?} · text changed"),
        format!("  recorded [0] {RECORDED_ANSWER}"),
        format!("  new      [0] {answer}"),
        format!("  recorded [0] {RECORDED_GREETING}"),
        format!("  new      [0] {greeting}"),
        "summary: the text changed in 2 of 2 turns (turns 0, 1)".to_owned(),
    ] {
        assert!(
            printed.lines().any(|l| l == line),
            "{line:?} not in\n{printed}"
        );
    }
    assert!(
        printed.contains("under prefix rd1 (rd1_CALLS, rd1_AUDIO)"),
        "{printed}"
    );
    assert_eq!(
        llm_requests(&llm).await,
        1,
        "one answer, no LLM for the greeting"
    );

    let copy = under_prefix(&env, &sid, "rd1").await;
    assert_eq!(texts(&copy, "sentence"), [greeting, answer.as_str()]);
    assert_eq!(texts(&copy, "transcript"), [QUESTION]);
    assert!(
        texts(&copy, "token").concat().contains(NEW_PROMPT),
        "{copy:?}"
    );
    let show = ["show", sid.as_str(), "--json"];
    let recorded = json_lines(&replay(&env, Role::Replay, &show).await.unwrap());
    let recorded_ids: HashSet<&Value> = recorded.iter().map(|l| &l["id"]).collect();
    assert!(
        copy.iter().all(|l| !recorded_ids.contains(&l["id"])),
        "every event under the prefix has a fresh id"
    );
    assert_eq!(
        live_state(&env).await,
        before,
        "CALLS, AUDIO and Redis untouched"
    );

    let again = run(args("rd1", &llm_url)).await.unwrap_err().to_string();
    assert!(again.contains("prefix rd1 already holds"), "{again}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down = format!("http://{closed}/v1");
    let error = run(args("rd2", &down)).await.unwrap_err().to_string();
    assert!(
        error.contains(&format!("cannot reach the LLM at {down}/chat/completions")),
        "{error}"
    );
    let rd2 = Streams::prefixed(Prefix::parse("rd2").unwrap());
    let filter = subject::call_events_filter(&sid);
    let stored = read_raw(&env.js, &rd2, subject::CALLS_STREAM, &filter).await;
    assert!(stored.unwrap().is_empty(), "nothing stored under rd2");
    assert_eq!(live_state(&env).await, before);
}

/// The tts re-run on the recorded greeting with another voice: the sentence is spoken
/// again (the Azure stand-in), its chunks stored under the prefix, and its duration printed
/// beside the recorded audio's (two chunks of 800 bytes: 0.20 s).
#[tokio::test]
async fn the_tts_redriven_speaks_the_recorded_sentences_again() {
    let env = TestEnv::start().await.unwrap();
    let call = record_call(&env, &new_call(), async {}).await;
    let sim = tts::spawn(tts::Config {
        deterministic: true,
        ..tts::Config::default()
    })
    .await
    .unwrap();
    let url = format!("{}/cognitiveservices/v1", sim.http_url());
    let before = live_state(&env).await;
    let sid = call.sid.as_str();
    let tenants = tenants_file();
    let args = [
        sid,
        "--stage",
        "tts",
        "--voice",
        "en-US-GuyNeural",
        "--tenants",
        &tenants,
        "--tts-provider",
        "azure",
        "--azure-tts-url",
        &url,
        "--azure-tts-key",
        "k",
    ];
    let printed = redrive(&env, &args).await.unwrap();
    assert!(printed.contains("with voice en-US-GuyNeural"), "{printed}");
    let line = printed
        .lines()
        .find(|l| l.starts_with(&format!("  [0] {RECORDED_GREETING}  0.20 s → ")))
        .unwrap_or_else(|| panic!("no audio line in\n{printed}"));
    let prefix = format!("redrive-{}", &sid[..10]);
    let copy = under_prefix(&env, &call.sid, &prefix).await;
    let chunks: Vec<&Value> = copy.iter().filter(|l| l["kind"] == "tts_chunk").collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["stream"] == "AUDIO" && c["turn"] == 0)
    );
    let bytes: u64 = chunks
        .iter()
        .map(|c| c["body"]["payload_bytes"].as_u64().unwrap())
        .sum();
    assert!(bytes > 0, "{copy:?}");
    let stored = format!("{:.2} s", bytes as f64 / 8_000.0);
    assert!(
        line.ends_with(&format!("→ {stored}")),
        "{line}: {stored} stored"
    );

    // The same as JSON, under another prefix: one object for the one turn.
    let json = [&args[..], &["--json", "--prefix", "rt2"]].concat();
    let turns = json_lines(&redrive(&env, &json).await.unwrap());
    assert_eq!(turns.len(), 1, "{turns:?}");
    let turn = &turns[0];
    assert_eq!(
        (&turn["stage"], &turn["turn"]),
        (&Value::from("tts"), &Value::from(0))
    );
    assert_eq!(turn["recorded"]["audio_ms"], 200);
    assert_eq!(turn["new"]["audio_ms"], bytes / 8);
    assert_eq!(turn["new"]["sentences"][0]["text"], RECORDED_GREETING);
    assert_eq!(texts(&copy, "sentence"), [RECORDED_GREETING]);
    assert_eq!(
        live_state(&env).await,
        before,
        "CALLS, AUDIO and Redis untouched"
    );
}

/// An unknown stage is refused by the parser with the stages there are; an unknown call
/// and an unreachable NATS say so.
#[tokio::test]
async fn bad_input_is_refused_clearly() {
    let sid = new_call();
    let error = Cli::try_parse_from(["replay", "redrive", sid.as_str(), "--stage", "stt"])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("invalid value 'stt' for '--stage <STAGE>'"),
        "{error}"
    );
    assert!(error.contains("[possible values: agent, tts]"), "{error}");

    let env = TestEnv::start().await.unwrap();
    let error = redrive(&env, &[sid.as_str(), "--stage", "agent"])
        .await
        .unwrap_err();
    assert!(
        format!("{error:#}").contains(&format!("no events stored for call {sid}")),
        "{error:#}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("nats://{closed}");
    let cli = Cli::try_parse_from([
        "replay",
        "--nats-url",
        &url,
        "redrive",
        sid.as_str(),
        "--stage",
        "tts",
    ])
    .unwrap();
    let error = sb_replay::cli::run(cli, &mut Output::default())
        .await
        .unwrap_err();
    assert!(
        format!("{error:#}").contains(&format!("cannot connect to NATS at {url}")),
        "{error:#}"
    );
}
