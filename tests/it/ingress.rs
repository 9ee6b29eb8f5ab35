//! The ingress against real NATS and Redis, called by the scripted caller from `services/sim`
//! (signed webhook, signed Media Streams socket, paced frames, mark echoes, status callback).
//! A test "bot" publishes the call's audio on `audio.{t}.{sid}.out` itself, out of order.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use sb_ingress::{Ingress, IngressConfig};
use sb_runtime::Publisher;
use sb_schemas::testing::{sid, tenant};
use sb_schemas::{
    BargeIn, BargeInTrigger, Body, CallSid, Envelope, Kind, Mulaw, Partial, Played, TtsChunk,
    decode, subject,
};
use sb_sim::caller::{CallReport, CallerConfig, Scenario, new_sid, place_call};
use sb_tests::{TestEnv, eventually};

use crate::support;

pub(crate) const TOKEN: &str = "it-auth-token";
pub(crate) const PUBLIC: &str = "https://agent.example.com";

/// The ingress in-process on `env`'s servers, as in production but for the token and URL.
pub(crate) async fn start(env: &TestEnv) -> (sb_runtime::Runtime, Ingress) {
    let runtime = env.runtime("ingress").await.unwrap();
    let config = IngressConfig::for_tests(TOKEN, PUBLIC);
    let ingress = sb_ingress::start(&runtime, &config).await.unwrap();
    (runtime, ingress)
}

fn caller(addr: SocketAddr, sid: &CallSid) -> CallerConfig {
    let mut config = CallerConfig::new(format!("http://{addr}"), PUBLIC, TOKEN);
    config.call_sid = Some(sid.as_str().to_owned());
    config.max_call = Duration::from_secs(30);
    config
}

/// A bot chunk of turn 0 whose bytes are all `0x10 + 8 * sentence + chunk`.
fn chunk(
    sid: &CallSid,
    sentence: u32,
    index: u32,
    frames: usize,
    last: bool,
    turn_last: bool,
) -> Envelope {
    let byte = 0x10 + 8 * sentence as u8 + index as u8;
    Envelope::new(
        tenant(),
        sid.clone(),
        0,
        Body::TtsChunk(TtsChunk {
            sentence,
            chunk: index,
            last,
            turn_last,
            payload: Mulaw(Bytes::from(vec![byte; frames * 160])),
        }),
    )
}

/// Waits for the call's `start` on CALLS (core subscription), as the agent would.
async fn wait_for_start(client: &async_nats::Client, sid: &CallSid) -> async_nats::Subscriber {
    client
        .subscribe(subject::event(&tenant(), sid, Kind::Start))
        .await
        .unwrap()
}

/// The call's control events as stored in CALLS, in stream order.
pub(crate) async fn call_events(env: &TestEnv, sid: &CallSid) -> Vec<Envelope> {
    support::payloads(&env.js, "CALLS", &subject::call_events_filter(sid))
        .await
        .iter()
        .map(|p| decode(p).unwrap())
        .collect()
}

/// The bot audio the caller heard, without the silence around it.
fn heard(report: &CallReport) -> Vec<u8> {
    report
        .bot_audio
        .iter()
        .copied()
        .filter(|b| *b != sb_audio::mulaw::SILENCE)
        .collect()
}

/// A whole call through the real servers: the webhook, `start` (with the STT lease), caller
/// frames `0..n` on `audio.in` in order, `dtmf`, `played` per sentence and one `end` land on
/// their subjects in order; bot audio published out of order on `audio.out` reaches the
/// caller in order, every 20 ms frame on time (no late frame, no gap), with its marks.
#[tokio::test]
async fn call_events_land_in_order_and_bot_audio_plays_in_order() {
    let env = TestEnv::start().await.unwrap();
    let (_runtime, ingress) = start(&env).await;
    let sid = CallSid::parse(&new_sid("CA")).unwrap();

    let mut starts = wait_for_start(&env.client, &sid).await;
    let publisher = Publisher::new(env.js.clone());
    let bot_sid = sid.clone();
    let bot = tokio::spawn(async move {
        starts.next().await.unwrap();
        // Sentence 0: four 100 ms chunks; sentence 1: two chunks and an empty last one.
        let order = [(1, 1), (0, 2), (1, 0), (0, 0), (1, 2), (0, 3), (0, 1)];
        for (sentence, index) in order {
            let (frames, last) = match (sentence, index) {
                (0, 3) => (5, true),
                (1, 2) => (0, true),
                _ => (5, false),
            };
            let event = chunk(
                &bot_sid,
                sentence,
                index,
                frames,
                last,
                last && sentence == 1,
            );
            publisher.publish(&event).await.unwrap();
        }
    });

    let scenario = Scenario::from_toml(
        "tones = true\nbot_quiet_ms = 300\n[[steps]]\nwait_for_bot = 10000\n[[steps]]\ndtmf = \"7\"\n",
    )
    .unwrap();
    let report = place_call(caller(ingress.addr, &sid), &scenario)
        .await
        .unwrap();
    bot.await.unwrap();

    assert!(report.protocol_errors.is_empty(), "{report}");
    assert_eq!(report.status_callback, Some(204), "{report}");
    let mut expected = Vec::new();
    for (sentence, chunks) in [(0u8, 4u8), (1, 2)] {
        for index in 0..chunks {
            expected.extend([0x10 + 8 * sentence + index; 800]);
        }
    }
    assert_eq!(heard(&report), expected, "in (sentence, chunk) order");
    assert_eq!(report.bot_bytes_received, expected.len() as u64);
    assert_eq!(
        report.bot_media_received,
        expected.len() as u64 / 160,
        "one frame per message"
    );
    assert_eq!((report.late_frames, report.underrun_ms), (0, 0), "{report}");
    let marks: Vec<(&str, bool)> = report
        .marks
        .iter()
        .map(|m| (m.name.as_str(), m.cleared))
        .collect();
    assert_eq!(marks, [("0:0", false), ("0:1", false)]);

    let events = eventually("the call's events", Duration::from_secs(10), || async {
        let events = call_events(&env, &sid).await;
        (events.last().map(Envelope::kind) == Some(Kind::End)).then_some(events)
    })
    .await
    .unwrap();
    let kinds: Vec<Kind> = events.iter().map(Envelope::kind).collect();
    assert_eq!(
        kinds,
        [
            Kind::Webhook,
            Kind::Start,
            Kind::Played,
            Kind::Played,
            Kind::Dtmf,
            Kind::End
        ]
    );
    let played: Vec<(u32, &Body)> = events
        .iter()
        .filter(|e| e.kind() == Kind::Played)
        .map(|e| (e.turn, &e.body))
        .collect();
    assert_eq!(
        played,
        [
            (
                0,
                &Body::Played(Played {
                    sentence: 0,
                    mark: "0:0".into()
                })
            ),
            (
                0,
                &Body::Played(Played {
                    sentence: 1,
                    mark: "0:1".into()
                })
            ),
        ]
    );
    let lease = subject::stt_assign(&tenant(), &sid);
    assert_eq!(
        support::stored(&env.js, "STT_ASSIGN", &lease).await,
        1,
        "one STT lease"
    );

    let frames = eventually(
        "every caller frame stored",
        Duration::from_secs(10),
        || async {
            let audio =
                support::payloads(&env.js, "AUDIO", &subject::audio_in(&tenant(), &sid)).await;
            (audio.len() as u64 == report.frames_sent).then_some(audio)
        },
    )
    .await
    .unwrap();
    for (i, payload) in frames.iter().enumerate() {
        let Body::Audio(audio) = decode(payload).unwrap().body else {
            panic!("not audio")
        };
        assert_eq!((audio.seq, audio.timestamp_ms), (i as u64, i as u64 * 20));
        assert_eq!(audio.payload.0.len(), 160);
    }
    let session = env
        .redis()
        .await
        .unwrap()
        .session_load(&sid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.tenant, Some(tenant()));
    ingress.shutdown().await;
}

/// A barge-in through real NATS and Redis: a `partial` with real words while the bot talks
/// makes the ingress `clear` Twilio, bump the session's token past the turn and publish
/// `bargein` with the sentences heard. Because playback is paced, the clear discards only
/// about the lead (80 ms) of audio, not the seconds still to come.
#[tokio::test]
async fn barge_in_clears_little_because_playback_is_paced() {
    let env = TestEnv::start().await.unwrap();
    let (_runtime, ingress) = start(&env).await;
    let sid = CallSid::parse(&new_sid("CA")).unwrap();

    let mut starts = wait_for_start(&env.client, &sid).await;
    let mut played = env
        .client
        .subscribe(subject::event(&tenant(), &sid, Kind::Played))
        .await
        .unwrap();
    let publisher = Publisher::new(env.js.clone());
    let bot_sid = sid.clone();
    let bot = tokio::spawn(async move {
        starts.next().await.unwrap();
        publisher
            .publish(&chunk(&bot_sid, 0, 0, 10, true, false))
            .await
            .unwrap();
        publisher
            .publish(&chunk(&bot_sid, 1, 0, 150, true, true))
            .await
            .unwrap();
        // Once the caller has heard sentence 0, the STT hears them say something real.
        played.next().await.unwrap();
        let partial = Envelope::new(
            tenant(),
            bot_sid.clone(),
            0,
            Body::Partial(Partial {
                epoch: 1,
                text: "okay wait stop please".into(),
            }),
        );
        publisher.publish(&partial).await.unwrap();
    });

    let scenario =
        Scenario::from_toml("tones = true\nbot_quiet_ms = 300\n[[steps]]\nwait_for_bot = 10000\n")
            .unwrap();
    let report = place_call(caller(ingress.addr, &sid), &scenario)
        .await
        .unwrap();
    bot.await.unwrap();

    assert_eq!(report.clears_ms.len(), 1, "{report}");
    assert!(
        report.bot_bytes_cleared <= 8 * 120,
        "a clear discards about the lead, not {} bytes",
        report.bot_bytes_cleared
    );
    assert!(
        report.bot_bytes_received < 160 * 160,
        "the rest of the turn was never sent"
    );
    let barge = eventually("the bargein event", Duration::from_secs(10), || async {
        call_events(&env, &sid)
            .await
            .into_iter()
            .find(|e| e.kind() == Kind::BargeIn)
    })
    .await
    .unwrap();
    assert_eq!(barge.turn, 0);
    let Body::BargeIn(BargeIn {
        token,
        trigger,
        sentences_heard,
        cut,
    }) = barge.body
    else {
        panic!("{barge:?}")
    };
    assert_eq!(
        (token, trigger, sentences_heard),
        (1, BargeInTrigger::Words, 1)
    );
    // Sentence 1 (3 s) was cut just after it began, by the pacing clock.
    if let Some(cut) = cut {
        assert_eq!(cut.sentence_ms, 3000);
        assert!(cut.heard_ms < 1000, "{cut:?}");
    }
    let redis = env.redis().await.unwrap();
    let progress = redis.session_progress(&sid).await.unwrap();
    assert_eq!(progress.bargein, 1, "the greeting was interrupted");
    ingress.shutdown().await;
}

/// `GET path`; the status code.
async fn http_status(addr: SocketAddr, path: &str) -> u16 {
    let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    response.status().as_u16()
}

/// SIGTERM during a call: `/ready` turns 503 at once, but the live socket keeps playing (bot
/// audio published after the shutdown began still reaches the caller) until the call ends,
/// and only then does the drain finish, inside the deadline.
#[tokio::test]
async fn shutdown_lets_live_calls_finish() {
    let env = TestEnv::start().await.unwrap();
    let (_runtime, ingress) = start(&env).await;
    let addr = ingress.addr;
    assert_eq!(http_status(addr, "/ready").await, 200);
    let sid = CallSid::parse(&new_sid("CA")).unwrap();

    let mut starts = wait_for_start(&env.client, &sid).await;
    let publisher = Publisher::new(env.js.clone());
    let bot_sid = sid.clone();
    // The task hands back the drain's handle, awaited once the call has ended.
    #[allow(clippy::async_yields_async)]
    let bot = tokio::spawn(async move {
        starts.next().await.unwrap();
        let drain = tokio::spawn(ingress.shutdown());
        eventually("/ready to turn 503", Duration::from_secs(5), || async {
            (http_status(addr, "/ready").await == 503).then_some(())
        })
        .await
        .unwrap();
        publisher
            .publish(&chunk(&bot_sid, 0, 0, 25, true, true))
            .await
            .unwrap();
        drain
    });

    let scenario =
        Scenario::from_toml("tones = true\nbot_quiet_ms = 300\n[[steps]]\nwait_for_bot = 10000\n")
            .unwrap();
    let report = place_call(caller(addr, &sid), &scenario).await.unwrap();
    let drain = bot.await.unwrap();
    assert_eq!(report.bot_bytes_received, 25 * 160, "{report}");
    assert!(
        drain.await.unwrap(),
        "the call ended inside the drain deadline"
    );
}

/// The one-round-trip admission pipeline against real Redis: the first webhook of a call is
/// admitted within the tenant's limit, a retry gets the first answer back (admitted or
/// declined), a key claimed by `claim_once` reads as admitted, and the rate-limit window
/// key expires with its window.
#[tokio::test]
async fn admission_in_one_round_trip() {
    use sb_ingress::{Admission, Backend as _, Live};
    use sb_runtime::tenants::testing::TenantToml;
    use std::time::SystemTime;

    let env = TestEnv::start().await.unwrap();
    let runtime = env.runtime("ingress").await.unwrap();
    let live = Live::connect(&runtime).await.unwrap();
    let tenants = TenantToml::new()
        .tier("tiny", 1, 2)
        .tier_set("tiny", "rate_window_secs", 3600)
        .tenant("tiny", "+15005550099", "tiny")
        .parse()
        .unwrap();
    let tiny = tenants.by_number("+15005550099").unwrap();
    let now = SystemTime::now();
    let admit = |n: u128| {
        let live = live.clone();
        async move { live.admit(&sid(n), tiny, now).await.unwrap() }
    };
    assert_eq!(admit(1).await, Admission::Admitted);
    assert_eq!(admit(1).await, Admission::Duplicate { admitted: true });
    assert_eq!(admit(2).await, Admission::Admitted);
    assert_eq!(admit(3).await, Admission::RateLimited);
    assert_eq!(admit(3).await, Admission::Duplicate { admitted: false });
    let redis = env.redis().await.unwrap();
    let claimed = sid(4);
    assert!(
        redis
            .claim_once(
                &claimed,
                None,
                sb_runtime::redis::idempotency::IDEMPOTENCY_TTL
            )
            .await
            .unwrap()
    );
    assert_eq!(admit(4).await, Admission::Duplicate { admitted: true });

    let window = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 3600;
    let mut raw = env.redis_raw().await.unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("rl:tiny:{window}"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!((3500..=3601).contains(&ttl), "rate-limit key ttl {ttl}");
    let idem_ttl: i64 = redis::cmd("TTL")
        .arg(format!("idem:{}", sid(1)))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(
        (290..=300).contains(&idem_ttl),
        "idempotency key ttl {idem_ttl}"
    );
}

/// POSTs a form signed as Twilio signs it (over the public URL); the status code and body.
pub(crate) async fn post_signed(
    addr: SocketAddr,
    path: &str,
    params: &[(String, String)],
) -> (u16, String) {
    let signature = sb_twilio::signature::sign(TOKEN, &format!("{PUBLIC}{path}"), params);
    let response = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", signature)
        .body(sb_twilio::form::encode_form(params))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Redis down: the ingress cannot tell a retried webhook from a new one and admits both
/// (a call is never refused for it), and both status callbacks of a call claim its `end`.
/// The `webhook` and `end` ids are derived from the call, so the stream stores each once.
#[tokio::test]
async fn retries_while_redis_is_down_are_stored_once() {
    let env = TestEnv::start().await.unwrap();
    let (_runtime, ingress) = start(&env).await;
    let sid = CallSid::parse(&new_sid("CA")).unwrap();
    let call = acme_call(&sid);
    let completed =
        sb_twilio::StatusCallback::completed(&call, 3, 0, "Mon, 23 Nov 2026 10:00:00 +0000");
    drop(env.redis);

    for attempt in 1..=2 {
        let (status, body) = post_signed(ingress.addr, "/twilio/voice", &call.params).await;
        assert_eq!(status, 200, "attempt {attempt}: {body}");
        assert!(
            body.contains("<Stream"),
            "attempt {attempt} connects: {body}"
        );
        let (status, _) = post_signed(ingress.addr, "/twilio/status", &completed.params).await;
        assert_eq!(status, 204, "attempt {attempt}");
    }
    for kind in [Kind::Webhook, Kind::End] {
        let subject = format!("call.acme.{sid}.{}", kind.as_str());
        assert_eq!(
            support::stored(&env.js, "CALLS", &subject).await,
            1,
            "{subject}"
        );
    }
    ingress.shutdown().await;
}

/// GETs `path`; the status code and body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// An incoming call to acme's number, as Twilio's webhook describes it.
pub(crate) fn acme_call(sid: &CallSid) -> sb_twilio::IncomingCall {
    sb_twilio::IncomingCall::ringing(
        sb_sim::caller::DEFAULT_ACCOUNT_SID,
        sid.as_str(),
        "+15005550100",
        "+15005550006",
        "inbound",
    )
}

/// A signed incoming call to acme's number, answered: the status and the TwiML.
pub(crate) async fn incoming_call(addr: SocketAddr, sid: &CallSid) -> (u16, String) {
    post_signed(addr, "/twilio/voice", &acme_call(sid).params).await
}

/// Redis restarts under a running ingress, which degrades instead of leaving the Service
/// (ARCHITECTURE §8): while Redis is down, `/ready` stays 200 (degraded, and
/// `switchboard_redis_up` is 0) and a signed incoming call is still answered with TwiML
/// that connects its stream (and its `webhook` event is stored); once Redis is back,
/// `/ready` is plainly ready, the gauge is 1, and a new call is admitted through Redis
/// again (its idempotency key is stored).
#[tokio::test]
async fn stays_ready_and_answers_calls_while_redis_restarts() {
    let mut env = TestEnv::start().await.unwrap();
    let (_runtime, ingress) = start(&env).await;
    assert_eq!(get(ingress.addr, "/ready").await, (200, "ready".into()));

    env.redis.stop();
    let (status, body) = get(ingress.addr, "/ready").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "ready (degraded: redis unreachable)")
    );
    let (_, metrics) = get(ingress.addr, "/metrics").await;
    assert!(metrics.contains("switchboard_redis_up 0"), "{metrics}");
    let during = CallSid::parse(&new_sid("CA")).unwrap();
    let (status, twiml) = incoming_call(ingress.addr, &during).await;
    assert_eq!(status, 200, "{twiml}");
    assert!(twiml.contains("<Stream"), "connects the stream: {twiml}");
    let subject = format!("call.acme.{during}.webhook");
    assert_eq!(support::stored(&env.js, "CALLS", &subject).await, 1);

    env.redis.restart().await.unwrap();
    eventually(
        "/ready without degradation",
        Duration::from_secs(20),
        || async { (get(ingress.addr, "/ready").await == (200, "ready".into())).then_some(()) },
    )
    .await
    .unwrap();
    let (_, metrics) = get(ingress.addr, "/metrics").await;
    assert!(metrics.contains("switchboard_redis_up 1"), "{metrics}");
    let after = CallSid::parse(&new_sid("CA")).unwrap();
    let (status, twiml) = incoming_call(ingress.addr, &after).await;
    assert_eq!(status, 200, "{twiml}");
    assert!(twiml.contains("<Stream"), "connects the stream: {twiml}");
    let mut raw = env.redis_raw().await.unwrap();
    let claimed: i64 = redis::cmd("EXISTS")
        .arg(format!("idem:{after}"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(
        claimed, 1,
        "the call after the restart is admitted through Redis"
    );
    ingress.shutdown().await;
}

/// The value of `name`'s series labelled acme and `direction` in `metrics` (0 when absent).
fn acme_series(metrics: &str, name: &str, direction: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            l.contains("tenant=\"acme\"") && l.contains(&format!("direction=\"{direction}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A call admitted by its webhook counts in `switchboard_calls_started_total{tenant,
/// direction}`; while its media flows it is one of `switchboard_calls_live{tenant,
/// direction}`, and it leaves the gauge when its socket closes.
#[tokio::test]
async fn calls_are_counted_by_tenant_and_direction() {
    let env = TestEnv::start().await.unwrap();
    let (_runtime, ingress) = start(&env).await;
    let metrics = || async { get(ingress.addr, "/metrics").await.1 };
    let sid = CallSid::parse(&new_sid("CA")).unwrap();
    let scenario = Scenario::from_toml("[[steps]]\npause_ms = 60000\n").unwrap();
    let config = caller(ingress.addr, &sid);
    let call = tokio::spawn(async move { place_call(config, &scenario).await });
    eventually("the call live", Duration::from_secs(20), || async {
        let m = metrics().await;
        (acme_series(&m, "switchboard_calls_live", "inbound") == 1.0).then_some(m)
    })
    .await
    .unwrap();
    let m = metrics().await;
    assert_eq!(
        acme_series(&m, "switchboard_calls_started_total", "inbound"),
        1.0,
        "{m}"
    );
    assert_eq!(
        acme_series(&m, "switchboard_calls_live", "outbound"),
        0.0,
        "{m}"
    );
    call.abort();
    eventually("the call gone", Duration::from_secs(20), || async {
        (acme_series(&metrics().await, "switchboard_calls_live", "inbound") == 0.0).then_some(())
    })
    .await
    .unwrap();
}
