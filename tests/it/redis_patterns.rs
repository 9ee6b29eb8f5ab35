//! The Redis patterns of ARCHITECTURE §6, and the live-socket claim, against a real
//! redis-server.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures::future::join_all;
use sb_runtime::redis::{
    Redis,
    idempotency::{AdmissionRecord, IDEMPOTENCY_TTL},
    live_socket::LIVE_SOCKET_TTL,
    session::{MAX_TURNS, Role, Turn},
    session_restore::Restore,
    tts_cache::{Speech, TTS_CACHE_TTL},
};
use sb_runtime::state::Stale;
use sb_schemas::CallSid;
use sb_schemas::testing::{sid, tenant};
use sb_tests::TestEnv;

async fn ttl(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("TTL").arg(key).query_async(conn).await.unwrap()
}

fn turn(n: u32) -> Turn {
    Turn {
        role: if n.is_multiple_of(2) {
            Role::Assistant
        } else {
            Role::User
        },
        text: format!("t{n}"),
        turn: n,
        interrupted: false,
    }
}

/// A session gets its TTL on start, every turn refreshes it, it keeps the last 8 turns,
/// and the end of the call shortens it. A missing session reads as `None`.
#[tokio::test]
async fn session_ttl_is_set_refreshed_and_shortened() {
    let env = TestEnv::start().await.unwrap();
    let redis = env.redis().await.unwrap();
    let mut raw = env.redis_raw().await.unwrap();
    let call = sid(1);
    let key = redis.keys().session(&call);

    assert_eq!(
        redis.session_load(&call).await.unwrap(),
        None,
        "no session is not an error"
    );

    redis
        .session_start(
            &call,
            &tenant(),
            &sb_runtime::redis::session::Parties::default(),
            0,
        )
        .await
        .unwrap();
    assert!((1790..=1800).contains(&ttl(&mut raw, &key).await));

    let _: () = redis::cmd("EXPIRE")
        .arg(&key)
        .arg(100)
        .query_async(&mut raw)
        .await
        .unwrap();
    redis.session_push_turn(&call, &turn(1)).await.unwrap();
    assert!(
        (1790..=1800).contains(&ttl(&mut raw, &key).await),
        "a turn refreshes the TTL"
    );

    for n in 2..=12 {
        redis.session_push_turn(&call, &turn(n)).await.unwrap();
    }
    let session = redis.session_load(&call).await.unwrap().unwrap();
    assert_eq!(session.tenant, Some(tenant()));
    let kept: Vec<u32> = session.turns.iter().map(|t| t.turn).collect();
    assert_eq!(
        kept,
        (13 - MAX_TURNS as u32..=12).collect::<Vec<_>>(),
        "the last 8, in order"
    );

    redis
        .session_end(&call, Duration::from_secs(60))
        .await
        .unwrap();
    assert!((50..=60).contains(&ttl(&mut raw, &key).await));
}

/// A session without its tenant (Redis restarted empty, evicted) is lost: it reads as
/// `None` and its counters refuse to move, even after a stage wrote a field of its own;
/// a restore merges the log's view into what is there, counters only up.
#[tokio::test]
async fn a_lost_session_refuses_counters_until_restored() {
    let env = TestEnv::start().await.unwrap();
    let redis = env.redis().await.unwrap();
    let call = sid(3);
    assert_eq!(redis.session_next_turn(&call, 0).await.unwrap(), None);
    assert_eq!(redis.session_interrupt(&call, 1).await.unwrap(), None);
    // The stt checkpoints and the agent stores a turn on the lost session meanwhile.
    assert!(redis.session_checkpoint(&call, 2, 900).await.unwrap());
    redis.session_push_turn(&call, &turn(5)).await.unwrap();
    assert_eq!(redis.session_load(&call).await.unwrap(), None, "still lost");
    assert!(!redis.session_intact(&call).await.unwrap());

    let restore = Restore {
        tenant: Some(tenant()),
        turn: 4,
        bargein: 4,
        stt_epoch: 1,
        stt_checkpoint: Some(600),
        turns: (1..=4).map(turn).collect(),
        outbound: None,
        parties: Some(sb_runtime::redis::session::Parties {
            from: "+14155551234".into(),
            to: "+15005550006".into(),
        }),
    };
    redis
        .session_restore(&call, &tenant(), &restore)
        .await
        .unwrap();
    redis
        .session_restore(&call, &tenant(), &restore)
        .await
        .unwrap();
    let s = redis.session_load(&call).await.unwrap().unwrap();
    assert_eq!(
        (s.turn, s.bargein, s.stt_epoch, s.stt_checkpoint),
        (4, 4, 2, Some(900)),
        "counters up, the newer epoch's checkpoint kept"
    );
    let turns: Vec<u32> = s.turns.iter().map(|t| t.turn).collect();
    assert_eq!(turns, vec![1, 2, 3, 4, 5], "merged once, in order");
    assert_eq!(s.parties, restore.parties, "the numbers are back");
    assert_eq!(redis.session_next_turn(&call, 0).await.unwrap(), Some(5));
    // A counter that lost its last writes (AOF everysec) still goes past the caller's own.
    assert_eq!(redis.session_next_turn(&call, 9).await.unwrap(), Some(10));
    assert_eq!(redis.session_interrupt(&call, 5).await.unwrap(), Some(6));
}

/// Whether the stages' one staleness rule, read from Redis, finds `turn` interrupted.
async fn interrupted(redis: &Redis, call: &CallSid, turn: u32) -> bool {
    let progress = redis.session_progress(call).await.unwrap();
    progress.stale(turn) == Some(Stale::Interrupted)
}

/// Turn numbers, barge-in tokens (never lowered) and the fenced STT checkpoint, read back
/// through the stages' staleness rule.
#[tokio::test]
async fn session_counters_and_checkpoint_fencing() {
    let env = TestEnv::start().await.unwrap();
    let redis = env.redis().await.unwrap();
    let call = sid(2);
    assert_eq!(redis.session_progress(&call).await.unwrap().bargein, 0);
    redis
        .session_start(
            &call,
            &tenant(),
            &sb_runtime::redis::session::Parties::default(),
            0,
        )
        .await
        .unwrap();
    assert_eq!(redis.session_next_turn(&call, 0).await.unwrap().unwrap(), 1);
    assert_eq!(redis.session_next_turn(&call, 0).await.unwrap().unwrap(), 2);
    assert!(
        !interrupted(&redis, &call, 0).await,
        "nothing interrupted yet"
    );
    assert_eq!(
        redis.session_interrupt(&call, 0).await.unwrap().unwrap(),
        1,
        "the greeting interrupted"
    );
    assert!(interrupted(&redis, &call, 0).await);
    assert!(!interrupted(&redis, &call, 1).await);
    assert_eq!(redis.session_interrupt(&call, 2).await.unwrap().unwrap(), 3);
    assert_eq!(
        redis.session_interrupt(&call, 1).await.unwrap().unwrap(),
        3,
        "a late, older barge-in"
    );
    assert!(interrupted(&redis, &call, 2).await);
    assert!(!interrupted(&redis, &call, 3).await);

    assert!(redis.session_checkpoint(&call, 2, 500).await.unwrap());
    assert!(
        !redis.session_checkpoint(&call, 1, 900).await.unwrap(),
        "a stale epoch is fenced off"
    );
    assert!(redis.session_checkpoint(&call, 3, 700).await.unwrap());
    let s = redis.session_load(&call).await.unwrap().unwrap();
    assert_eq!(
        (s.turn, s.bargein, s.stt_epoch, s.stt_checkpoint),
        (2, 3, 3, Some(700))
    );
}

/// SET NX: of 20 concurrent claimers exactly one wins; the key has the TTL.
#[tokio::test]
async fn idempotency_admits_one_caller() {
    let env = TestEnv::start().await.unwrap();
    let redis = env.redis().await.unwrap();
    let call = sid(3);
    let wins = join_all((0..20).map(|_| redis.claim_once(&call, None, IDEMPOTENCY_TTL))).await;
    assert_eq!(wins.into_iter().filter(|w| *w.as_ref().unwrap()).count(), 1);
    assert!(
        !redis
            .claim_once(&call, None, IDEMPOTENCY_TTL)
            .await
            .unwrap()
    );
    assert!(
        redis
            .claim_once(&call, Some("status:completed"), IDEMPOTENCY_TTL)
            .await
            .unwrap()
    );
    let mut raw = env.redis_raw().await.unwrap();
    assert!((290..=300).contains(&ttl(&mut raw, &redis.keys().idempotency(&call, None)).await));
}

/// The live-socket claim: of 20 concurrent claimers exactly one wins and the key expires
/// with `LIVE_SOCKET_TTL`; only the holder refreshes it (which also keeps the admission
/// record alive, re-taking a claim Redis lost) or releases it; then it can be claimed again.
#[tokio::test]
async fn live_socket_has_one_holder() {
    let env = TestEnv::start().await.unwrap();
    let redis = env.redis().await.unwrap();
    let call = sid(5);
    let mut raw = env.redis_raw().await.unwrap();
    let record = AdmissionRecord::Admitted(tenant());
    let idem = redis.keys().idempotency(&call, None);
    let live = redis.keys().live_socket(&call);
    let _: () = redis::cmd("SET")
        .arg(&idem)
        .arg(record.encode())
        .arg("EX")
        .arg(5)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(redis.admission(&call).await.unwrap(), Some(record));
    assert_eq!(redis.admission(&sid(6)).await.unwrap(), None);

    let owners: Vec<String> = (0..20).map(|i| format!("owner-{i}")).collect();
    let wins = join_all(owners.iter().map(|o| redis.live_claim(&call, o))).await;
    let winners: Vec<&String> = owners
        .iter()
        .zip(wins)
        .filter_map(|(o, won)| won.unwrap().then_some(o))
        .collect();
    assert_eq!(winners.len(), 1, "{winners:?}");
    let holder = winners[0].as_str();
    let lease = LIVE_SOCKET_TTL.as_secs() as i64;
    assert!((lease - 2..=lease).contains(&ttl(&mut raw, &live).await));
    assert!(
        ttl(&mut raw, &idem).await > 290,
        "the claim keeps the record alive"
    );

    let other = if holder == "owner-0" {
        "owner-1"
    } else {
        "owner-0"
    };
    assert!(!redis.live_refresh(&call, other).await.unwrap());
    redis.live_release(&call, other).await.unwrap();
    assert!(!redis.live_claim(&call, other).await.unwrap(), "still held");
    let _: () = redis::cmd("DEL")
        .arg(&live)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(redis.live_refresh(&call, holder).await.unwrap(), "re-taken");
    assert!(!redis.live_claim(&call, other).await.unwrap());
    redis.live_release(&call, holder).await.unwrap();
    assert!(redis.live_claim(&call, other).await.unwrap(), "free again");
}

/// 50 concurrent callers making 200 requests in one window against a limit of 120: exactly
/// 120 are admitted; the next window starts from zero; the counter expires with its window.
#[tokio::test]
async fn rate_limit_is_exact_under_concurrency() {
    let env = TestEnv::start().await.unwrap();
    let redis = Arc::new(env.redis().await.unwrap());
    let window = Duration::from_secs(60);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let callers = (0..50).map(|_| {
        let redis = redis.clone();
        tokio::spawn(async move {
            let mut admitted = 0;
            for _ in 0..4 {
                if redis
                    .rate_limit(&tenant(), 120, window, now)
                    .await
                    .unwrap()
                    .admitted
                {
                    admitted += 1;
                }
            }
            admitted
        })
    });
    let admitted: u32 = join_all(callers)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .sum();
    assert_eq!(admitted, 120);

    let next = redis
        .rate_limit(&tenant(), 120, window, now + window)
        .await
        .unwrap();
    assert!(next.admitted);
    assert_eq!(next.count, 1);
    let mut raw = env.redis_raw().await.unwrap();
    let key = redis.keys().rate_limit(&tenant(), 1_800_000_000 / 60);
    assert!((1..=61).contains(&ttl(&mut raw, &key).await));
}

/// The TTS cache stores audio for 24 h under a key that case, spacing and punctuation
/// variants share, and that another voice or another engine never hits.
#[tokio::test]
async fn tts_cache_round_trips_with_ttl() {
    let env = TestEnv::start().await.unwrap();
    let redis = env.redis().await.unwrap();
    let speech = |engine, voice, text| Speech {
        engine,
        format: "raw-8khz-8bit-mono-mulaw",
        voice,
        text,
    };
    let azure = speech("azure", "jenny", "Hello there!");
    assert_eq!(redis.tts_get(&azure).await.unwrap(), None);
    redis
        .tts_put(&azure, &[0xff, 0x7f, 0x00], TTS_CACHE_TTL)
        .await
        .unwrap();
    let variant = speech("azure", "jenny", "  hello THERE. ");
    let hit = redis.tts_get(&variant).await.unwrap().unwrap();
    assert_eq!(&hit[..], &[0xff, 0x7f, 0x00]);
    let other_voice = speech("azure", "guy", "Hello there!");
    assert_eq!(redis.tts_get(&other_voice).await.unwrap(), None);
    let other_engine = speech("espeak", "jenny", "Hello there!");
    assert_eq!(redis.tts_get(&other_engine).await.unwrap(), None);
    let mut raw = env.redis_raw().await.unwrap();
    let t = ttl(&mut raw, &redis.keys().tts(&variant)).await;
    assert!((86_390..=86_400).contains(&t), "{t}");
}

/// A dropped stream's reconnect (`handoff_reconnect`): refused while no socket holds the
/// call; with a (dead) holder, a `lost` handoff whose token moves the live claim to the new
/// socket; at most `MAX_RECONNECTS` within the handoff's life; refused once the call ended.
#[tokio::test]
async fn a_dropped_stream_reconnects_a_held_call_a_bounded_number_of_times() {
    use sb_runtime::redis::handoff::{MAX_RECONNECTS, Reconnect};
    let env = TestEnv::start().await.unwrap();
    let redis = env.redis().await.unwrap();
    let call = sid(77);
    assert_eq!(
        redis.handoff_reconnect(&call).await.unwrap(),
        Reconnect::NotLive
    );
    assert!(redis.live_claim(&call, "dead").await.unwrap());
    for n in 1..=MAX_RECONNECTS {
        let Reconnect::Token(token) = redis.handoff_reconnect(&call).await.unwrap() else {
            panic!("reconnect {n} refused");
        };
        let stored = redis.handoff_read(&call).await.unwrap().unwrap();
        assert!(stored.lost && stored.stopped && stored.token == token);
        let owner = format!("socket-{n}");
        let taken = redis.handoff_take(&call, &token, &owner).await.unwrap();
        assert!(taken.is_some_and(|h| h.lost));
        assert!(
            redis.live_refresh(&call, &owner).await.unwrap(),
            "the new socket holds the call"
        );
    }
    assert_eq!(
        redis.handoff_reconnect(&call).await.unwrap(),
        Reconnect::TooMany
    );
    let other = sid(78);
    assert!(redis.live_claim(&other, "dead").await.unwrap());
    assert!(
        redis
            .claim_once(&other, Some("end"), IDEMPOTENCY_TTL)
            .await
            .unwrap()
    );
    assert_eq!(
        redis.handoff_reconnect(&other).await.unwrap(),
        Reconnect::Ended
    );
}

/// The preflight record (`preflight:{sid}:{turn}`) on Redis: an answer finished before its
/// transcript reaches the session when the transcript confirms it; one confirmed before it
/// finishes has its user turn stored at once and its answer at its end; either way once
/// (the user turn in the final's words),
/// and a redelivery finds the answer to say again. A transcript with no preflight claims
/// its turn, so a later preflight stands aside. Records expire after two minutes.
#[tokio::test]
async fn a_preflight_answer_reaches_the_session_once_confirmed() {
    use sb_runtime::redis::preflight::{Confirmation, PREFLIGHT_TTL, PreflightStart};
    let env = TestEnv::start().await.unwrap();
    let redis = env.redis().await.unwrap();
    let mut raw = env.redis_raw().await.unwrap();
    let call = sid(9);
    let parties = sb_runtime::redis::session::Parties::default();
    redis
        .session_start(&call, &tenant(), &parties, 0)
        .await
        .unwrap();
    let answer = |turn| Turn {
        role: Role::Assistant,
        text: "Nine to five.\nTen to two on Saturdays.".into(),
        turn,
        interrupted: turn == 2,
    };
    let turns = || async {
        let session = redis.session_load(&call).await.unwrap().unwrap();
        session
            .turns
            .into_iter()
            .map(|t| (t.role, t.turn, t.text, t.interrupted))
            .collect::<Vec<_>>()
    };

    // Finished, then confirmed.
    let begun = redis.preflight_begin(&call, 1, "when are you open").await;
    assert_eq!(begun.unwrap(), PreflightStart::Go);
    assert!(!redis.preflight_finish(&call, 1, &answer(1)).await.unwrap());
    assert!(
        turns().await.is_empty(),
        "unconfirmed: not in the conversation"
    );
    assert!(!redis.preflight_confirmed(&call, 1).await.unwrap());
    for _ in 0..2 {
        let confirmed = redis
            .preflight_confirm(&call, 1, "When are you open?")
            .await;
        assert_eq!(confirmed.unwrap(), Confirmation::Settled);
    }
    let said = answer(1).text;
    assert_eq!(
        turns().await,
        [
            (Role::User, 1, "When are you open?".to_owned(), false),
            (Role::Assistant, 1, said.clone(), false)
        ]
    );
    let again = redis.preflight_begin(&call, 1, "when are you open").await;
    assert_eq!(again.unwrap(), PreflightStart::Done(said.clone()));
    let key = redis.keys().preflight(&call, 1);
    let ttl = ttl(&mut raw, &key).await;
    assert!(
        (110..=PREFLIGHT_TTL.as_secs() as i64).contains(&ttl),
        "{ttl}"
    );

    // Confirmed while answering, then finished (cut short by a barge-in).
    redis
        .preflight_begin(&call, 2, "and weekends")
        .await
        .unwrap();
    let pending = redis.preflight_confirm(&call, 2, "And weekends?").await;
    assert_eq!(pending.unwrap(), Confirmation::Pending);
    assert!(redis.preflight_confirmed(&call, 2).await.unwrap());
    assert_eq!(
        turns().await[2],
        (Role::User, 2, "And weekends?".to_owned(), false),
        "confirmed: the caller's words are in the conversation while the answer runs"
    );
    assert_eq!(turns().await.len(), 3);
    assert!(redis.preflight_finish(&call, 2, &answer(2)).await.unwrap());
    assert!(!redis.preflight_finish(&call, 2, &answer(2)).await.unwrap());
    let stored = turns().await;
    assert_eq!(stored.len(), 4, "{stored:?}");
    assert_eq!(stored[3], (Role::Assistant, 2, said, true));

    // The transcript first: it claims the turn.
    let absent = redis.preflight_confirm(&call, 3, "Thanks.").await;
    assert_eq!(absent.unwrap(), Confirmation::Absent);
    let late = redis.preflight_begin(&call, 3, "thanks").await;
    assert_eq!(late.unwrap(), PreflightStart::Claimed);
    assert_eq!(turns().await.len(), 4);
}
