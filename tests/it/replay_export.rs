//! `replay export` / `replay import` against real servers: a call recorded through the
//! ingress goes to a `.sbcall` file and back under a prefix, into streams of its own; the
//! file is checked whole before anything is written; errors say what is wrong.

use std::{collections::BTreeMap, time::Duration};

use sb_replay::{Prefix, RawEvent, Streams, streams::read_raw};
use sb_schemas::roles::Role;
use sb_schemas::subject::{self, AUDIO_STREAM, CALLS_STREAM};
use sb_tests::TestEnv;
use serde_json::Value;

use crate::replay::rig::{json_lines, new_call, record_call, replay};

/// A recorded call exported to `dir/call.sbcall`: (sid, path, events in the file).
async fn exported(env: &TestEnv, dir: &tempfile::TempDir) -> (String, String, usize) {
    let call = record_call(env, &new_call(), async {}).await;
    let sid = call.sid.as_str().to_owned();
    let path = dir.path().join("call.sbcall").display().to_string();
    // The read-only `replay` user can export.
    let said = replay(env, Role::Replay, &["export", &sid, "-o", &path])
        .await
        .unwrap();
    let events = replay(env, Role::Replay, &["show", &sid, "--json"])
        .await
        .unwrap()
        .lines()
        .count();
    assert!(
        said.contains(&format!("{events} events")),
        "{said} ({events} events stored)"
    );
    (sid, path, events)
}

/// The call's messages in `streams`, by logical stream.
async fn raw(env: &TestEnv, streams: &Streams, sid: &str) -> (Vec<RawEvent>, Vec<RawEvent>) {
    let sid = sb_schemas::CallSid::parse(sid).unwrap();
    let (calls_filter, audio_filter) = (
        subject::call_events_filter(&sid),
        subject::call_audio_filter(&sid),
    );
    let calls = read_raw(&env.js, streams, CALLS_STREAM, &calls_filter);
    let audio = read_raw(&env.js, streams, AUDIO_STREAM, &audio_filter);
    let (calls, audio) = tokio::join!(calls, audio);
    (calls.unwrap(), audio.unwrap())
}

/// Messages stored in stream `name` (`None`: the stream does not exist).
async fn stream_messages(env: &TestEnv, name: &str) -> Option<u64> {
    let mut stream = env.js.get_stream(name).await.ok()?;
    Some(stream.info().await.unwrap().state.messages)
}

/// `show --json` lines without `seq` (a copy has sequences of its own).
fn without_seq(text: &str) -> Vec<Value> {
    json_lines(text)
        .into_iter()
        .map(|mut l| {
            l.as_object_mut().unwrap().remove("seq");
            l
        })
        .collect()
}

/// Export from one deployment, import under a prefix into another: the copy lands in
/// `imp_CALLS` / `imp_AUDIO` (created by the import) on `imp.`-prefixed subjects, each
/// message with its original subject, `Nats-Msg-Id` and payload bytes; the live streams
/// there gain nothing (the call is unknown to them); `show --prefix` prints the same
/// timeline and the same JSON lines (but for sequences) as the original.
#[tokio::test]
async fn export_then_import_under_a_prefix_shows_the_same_call() {
    let (source, target) = tokio::join!(TestEnv::start(), TestEnv::start());
    let (source, target) = (source.unwrap(), target.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (sid, path, events) = exported(&source, &dir).await;

    let said = replay(&target, Role::Ops, &["import", &path, "--prefix", "imp"])
        .await
        .unwrap();
    assert!(
        said.contains(&format!("{events} events stored, 0 already there")),
        "{said}"
    );
    assert_eq!(
        (
            stream_messages(&target, "CALLS").await,
            stream_messages(&target, "AUDIO").await
        ),
        (Some(0), Some(0)),
        "the live streams are untouched"
    );
    let err = replay(&target, Role::Replay, &["show", &sid])
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("no events stored"), "{err:#}");

    let (live_calls, live_audio) = raw(&source, &Streams::live(), &sid).await;
    let copy = Streams::prefixed(Prefix::parse("imp").unwrap());
    let (copy_calls, copy_audio) = raw(&target, &copy, &sid).await;
    assert_eq!(copy_calls.len() + copy_audio.len(), events);
    assert_eq!(
        stream_messages(&target, "imp_CALLS").await,
        Some(copy_calls.len() as u64)
    );
    assert_eq!(
        stream_messages(&target, "imp_AUDIO").await,
        Some(copy_audio.len() as u64)
    );
    let strip = |r: &[RawEvent]| -> Vec<(String, Option<String>, bytes::Bytes)> {
        r.iter()
            .map(|r| (r.subject.clone(), r.msg_id.clone(), r.payload.clone()))
            .collect()
    };
    assert_eq!(
        strip(&copy_calls),
        strip(&live_calls),
        "control events as stored"
    );
    assert!(live_calls.iter().all(|r| r.msg_id.is_some()));
    let payloads = |r: &[RawEvent]| r.iter().map(|r| r.payload.clone()).collect::<Vec<_>>();
    assert_eq!(
        payloads(&copy_audio),
        payloads(&live_audio),
        "audio as stored"
    );
    assert!(
        copy_audio.iter().all(|r| r.msg_id.is_some()),
        "imported audio carries an id (its event id), so a second import is deduplicated"
    );

    let original = replay(&source, Role::Replay, &["show", &sid, "--json"])
        .await
        .unwrap();
    let imported = replay(
        &target,
        Role::Ops,
        &["show", &sid, "--json", "--prefix", "imp"],
    )
    .await
    .unwrap();
    assert_eq!(without_seq(&imported), without_seq(&original));
    // An imported call is over: following it prints it whole and stops at its `end`.
    let follow = [
        "show", &sid, "--follow", "--json", "--audio", "--prefix", "imp",
    ];
    let followed =
        tokio::time::timeout(Duration::from_secs(20), replay(&target, Role::Ops, &follow))
            .await
            .expect("following an ended call stops")
            .unwrap();
    let mut followed = without_seq(&followed);
    let mut imported = without_seq(&imported);
    let by_id = |v: &Value| v["id"].as_str().unwrap().to_owned();
    followed.sort_by_key(by_id);
    imported.sort_by_key(by_id);
    assert_eq!(followed, imported);
    let original = replay(&source, Role::Replay, &["show", &sid, "--full"])
        .await
        .unwrap();
    let imported = replay(
        &target,
        Role::Ops,
        &["show", &sid, "--full", "--prefix", "imp"],
    )
    .await
    .unwrap();
    assert_eq!(imported, original);
}

/// Importing a file twice, one import after the other or two at once, stores each event
/// once: the second import finds the events already stored (or the streams' duplicate
/// window drops them, when both publish at the same time).
#[tokio::test]
async fn importing_twice_stores_each_event_once() {
    let env = TestEnv::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_sid, path, events) = exported(&env, &dir).await;
    let stored = |prefix: &'static str| {
        let env = &env;
        async move {
            stream_messages(env, &format!("{prefix}_CALLS"))
                .await
                .unwrap()
                + stream_messages(env, &format!("{prefix}_AUDIO"))
                    .await
                    .unwrap()
        }
    };

    replay(&env, Role::Ops, &["import", &path, "--prefix", "once"])
        .await
        .unwrap();
    let again = replay(&env, Role::Ops, &["import", &path, "--prefix", "once"])
        .await
        .unwrap();
    assert!(
        again.contains(&format!("0 events stored, {events} already there")),
        "{again}"
    );
    assert_eq!(stored("once").await, events as u64);

    let args = ["import", &path, "--prefix", "twice"];
    let (a, b) = tokio::join!(
        replay(&env, Role::Ops, &args),
        replay(&env, Role::Ops, &args)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(stored("twice").await, events as u64, "{a}\n{b}");
}

/// A corrupted file, a truncated file and a file that is no export are each refused with a
/// message naming the problem, and nothing is written: the prefix's streams do not exist.
#[tokio::test]
async fn a_corrupted_or_truncated_file_is_refused_and_writes_nothing() {
    let env = TestEnv::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (sid, path, _) = exported(&env, &dir).await;
    let bytes = std::fs::read(&path).unwrap();
    let mut corrupted = bytes.clone();
    let middle = bytes.len() / 2;
    corrupted[middle] ^= 0x40;
    let wav = dir.path().join("call.wav").display().to_string();
    replay(&env, Role::Replay, &["wav", &sid, &wav])
        .await
        .unwrap();
    let cases = BTreeMap::from([
        ("corrupted", (corrupted, "corrupted")),
        (
            "truncated",
            (bytes[..bytes.len() * 2 / 3].to_vec(), "truncated"),
        ),
        ("tail", (bytes[..bytes.len() - 1].to_vec(), "truncated")),
        (
            "a wav",
            (
                std::fs::read(&wav).unwrap(),
                "not a Switchboard call export",
            ),
        ),
        ("empty", (Vec::new(), "not a Switchboard call export")),
    ]);
    for (name, (content, expected)) in cases {
        let bad = dir
            .path()
            .join(format!("{}.sbcall", name.replace(' ', "_")));
        std::fs::write(&bad, content).unwrap();
        let err = replay(
            &env,
            Role::Ops,
            &["import", bad.to_str().unwrap(), "--prefix", "bad"],
        )
        .await
        .expect_err(name);
        let message = format!("{err:#}");
        assert!(message.contains(expected), "{name}: {message}");
        assert_eq!(stream_messages(&env, "bad_CALLS").await, None, "{name}");
        assert_eq!(stream_messages(&env, "bad_AUDIO").await, None, "{name}");
    }
}

/// Clear errors: an unknown call (show, export: and no file is written), an import with
/// neither a prefix nor `--live`, NATS unreachable.
#[tokio::test]
async fn errors_name_the_problem() {
    let env = TestEnv::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let unknown = new_call();
    let path = dir.path().join("none.sbcall");
    let err = replay(&env, Role::Replay, &["show", unknown.as_str(), "--json"])
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("no events stored for call"),
        "{err:#}"
    );
    let err = replay(
        &env,
        Role::Replay,
        &["export", unknown.as_str(), "-o", path.to_str().unwrap()],
    )
    .await
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("no events stored for call"),
        "{err:#}"
    );
    assert!(!path.exists(), "no file for an unknown call");
    let err = replay(
        &env,
        Role::Ops,
        &["show", unknown.as_str(), "--prefix", "nothing"],
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("prefix nothing"), "{err:#}");

    std::fs::write(&path, b"x").unwrap();
    let err = replay(&env, Role::Ops, &["import", path.to_str().unwrap()])
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("--prefix"), "{err:#}");

    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let argv = [
        "replay",
        "--nats-url",
        &format!("nats://127.0.0.1:{port}"),
        "show",
        unknown.as_str(),
    ];
    let cli = <sb_replay::cli::Cli as clap::Parser>::try_parse_from(argv).unwrap();
    let mut out = Vec::new();
    let run = sb_replay::cli::run(cli, &mut out);
    let err = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("an unreachable NATS is an error, not a wait")
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("cannot connect to NATS"),
        "{err:#}"
    );
}
