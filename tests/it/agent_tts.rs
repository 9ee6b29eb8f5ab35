//! The agent and tts stages together against real NATS + Redis and the sim stand-ins (LLM,
//! Azure TTS, Twilio REST), both running in-process on the production runner: answers in
//! order, barge-in, an LLM 429 storm, the TTS cache, the call-control tools, bad input,
//! and the session functions the agent added to the runtime.

mod harness;

use sb_runtime::redis::session::{Role, Turn};
use sb_runtime::redis::tts_cache::Speech;
use sb_runtime::state::Progress;
use sb_schemas::{
    BargeIn, BargeInTrigger, Body, CallSid, Envelope, Played, TenantId, TtsChunk,
    decode_dead_letter, subject,
};
use sb_sim::{llm, tts};
use sb_tests::{TestEnv, eventually};
use serde_json::Value;

use crate::support::{self, sid, tenant, transcript};
use harness::{
    FALLBACK, GREETING, Pipeline, WAIT, Watch, check_sentence_audio, last_seq, metric,
    sentence_event, start_event, stored_after, twilio_call,
};

/// `start` yields the greeting (turn 0) with its audio; a transcript yields the answer's
/// tokens and sentences in order (the first one not cut short, the last `last: true`) and
/// each sentence's audio as ordered whole-frame chunks, `turn_last` on the very end; the
/// session holds both turns, the answer one line per sentence.
#[tokio::test]
async fn transcript_yields_sentences_and_audio_in_order() {
    let reply = "Sure. We are open from nine to five on weekdays. On Saturdays we open at ten, e.g. tomorrow. Anything else I can help with?";
    let llm_config = llm::Config {
        replies: vec![reply.into()],
        ..llm::Config::default()
    };
    let tts_config = tts::Config {
        deterministic: true,
        ..tts::Config::default()
    };
    let p = Pipeline::start(llm_config, tts_config, false, |_| {}).await;
    let call = sid(101);
    let watch = Watch::start(&p.env, &call).await;
    p.redis
        .session_start(
            &call,
            &tenant(),
            &sb_runtime::redis::session::Parties::default(),
            0,
        )
        .await
        .unwrap();

    p.publish(&start_event(&call)).await;
    watch.turn_spoken(0).await;
    let greeting = watch.sentences(0);
    assert_eq!(greeting.len(), 1);
    assert_eq!(
        (greeting[0].text.as_str(), greeting[0].last),
        (GREETING, true)
    );
    check_sentence_audio(&watch.chunks(0), 0);

    let turn = p.redis.session_next_turn(&call, 0).await.unwrap().unwrap();
    p.publish(&transcript(&call, turn, "When are you open?"))
        .await;
    watch.turn_spoken(turn).await;

    let sentences = watch.sentences(turn);
    let texts: Vec<&str> = sentences.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "Sure. We are open from nine to five on weekdays.",
            "On Saturdays we open at ten, e.g. tomorrow.",
            "Anything else I can help with?",
        ]
    );
    let indexes: Vec<u32> = sentences.iter().map(|s| s.index).collect();
    assert_eq!(indexes, [0, 1, 2], "sentences in order");
    let lasts: Vec<bool> = sentences.iter().map(|s| s.last).collect();
    assert_eq!(lasts, [false, false, true]);
    assert!(sentences.iter().all(|s| !s.fallback));
    assert_eq!(watch.tokens(turn), reply, "tokens carry the whole answer");

    let chunks = watch.chunks(turn);
    for index in 0..3 {
        assert!(
            check_sentence_audio(&chunks, index) > 8_000,
            "a second of speech or more"
        );
    }
    let turn_lasts: Vec<&TtsChunk> = chunks.iter().filter(|c| c.turn_last).collect();
    assert_eq!(turn_lasts.len(), 1);
    assert!(turn_lasts[0].sentence == 2 && turn_lasts[0].last);

    p.settled().await;
    let session = p.redis.session_load(&call).await.unwrap().unwrap();
    let turns: Vec<(Role, u32, &str)> = session
        .turns
        .iter()
        .map(|t| (t.role, t.turn, t.text.as_str()))
        .collect();
    assert_eq!(
        turns,
        [
            (Role::Assistant, 0, GREETING),
            (Role::User, turn, "When are you open?"),
            (Role::Assistant, turn, &texts.join("\n")[..]),
        ]
    );
    p.stop().await;
}

/// A barge-in in the middle of a streaming answer, while the second sentence is being
/// synthesised (token bumped, `bargein` published, as the ingress does): after the bump at
/// most one more token group and one more sentence are stored for the turn, at most one
/// more audio chunk per sentence, the second sentence's audio never completes, the answer
/// stops well short of its end, the cancellations are counted, and the session keeps the
/// interrupted answer truncated to the one sentence the caller heard.
#[tokio::test]
async fn barge_in_stops_tokens_and_audio_within_one_chunk() {
    let sentences = [
        "Our store opens at nine in the morning on weekdays.",
        "On weekends we open a little later, at ten.",
        "We close at six every day except Sunday.",
        "On Sunday we close early, at four in the afternoon.",
        "Public holidays may change these hours.",
        "You can always check our website for updates.",
        "Is there anything else you would like to know?",
    ];
    let llm_config = llm::Config {
        replies: vec![sentences.join(" ")],
        inter_token_ms: 25,
        ..llm::Config::default()
    };
    // Paced audio (~0.5 s per sentence), so a sentence is still being synthesised when the
    // caller barges in.
    let tts_config = tts::Config {
        deterministic: true,
        chunk_bytes: 800,
        chunk_interval_ms: 20,
        ..tts::Config::default()
    };
    let p = Pipeline::start(llm_config, tts_config, false, |_| {}).await;
    let call = sid(102);
    let watch = Watch::start(&p.env, &call).await;
    let turn = p.call(&call).await;
    p.publish(&transcript(&call, turn, "What are your hours?"))
        .await;

    // The caller hears the first sentence in full and speaks while the second is being
    // synthesised.
    eventually("the second sentence's audio under way", WAIT, || async {
        let chunks = watch.chunks(turn);
        let first_done = chunks.iter().any(|c| c.sentence == 0 && c.last);
        (first_done && chunks.iter().any(|c| c.sentence == 1)).then_some(())
    })
    .await
    .unwrap();
    let token = p
        .redis
        .session_interrupt(&call, turn)
        .await
        .unwrap()
        .unwrap();
    let (calls_mark, audio_mark) = (
        last_seq(&p.env, "CALLS").await,
        last_seq(&p.env, "AUDIO").await,
    );
    let bargein = Envelope::new(
        tenant(),
        call.clone(),
        turn,
        Body::BargeIn(BargeIn {
            token,
            trigger: BargeInTrigger::Words,
            sentences_heard: 1,
            cut: None,
        }),
    );
    p.publish(&bargein).await;

    eventually("the interrupted answer stored truncated", WAIT, || async {
        let session = p.redis.session_load(&call).await.unwrap()?;
        let answer = session
            .turns
            .iter()
            .find(|t| t.role == Role::Assistant && t.turn == turn)?;
        (answer.interrupted && answer.text == sentences[0]).then_some(())
    })
    .await
    .unwrap();
    p.settled().await;

    let call_filter = subject::call_events_filter(&call);
    let later = stored_after(&p.env, "CALLS", &call_filter, calls_mark).await;
    let count = |pick: fn(&Body) -> bool| {
        later
            .iter()
            .filter(|e| e.turn == turn && pick(&e.body))
            .count()
    };
    assert!(
        count(|b| matches!(b, Body::Token(_))) <= 1,
        "tokens kept coming"
    );
    assert!(
        count(|b| matches!(b, Body::Sentence(_))) <= 1,
        "sentences kept coming"
    );
    let audio_filter = subject::audio_out(&tenant(), &call);
    let later_audio = stored_after(&p.env, "AUDIO", &audio_filter, audio_mark).await;
    for index in 0..sentences.len() as u32 {
        let after = later_audio
            .iter()
            .filter(|e| matches!(&e.body, Body::TtsChunk(c) if c.sentence == index))
            .count();
        assert!(
            after <= 1,
            "sentence {index}: {after} chunks after the barge-in"
        );
    }
    let chunks = watch.chunks(turn);
    assert!(
        !chunks.iter().any(|c| c.sentence == 1 && c.last),
        "the second sentence's audio stopped mid-way"
    );
    let said = watch.sentences(turn).len();
    assert!(
        said < sentences.len() - 1,
        "generation went on: {said} sentences"
    );
    assert!(
        !watch.chunks(turn).iter().any(|c| c.turn_last),
        "the turn's audio did not finish"
    );
    assert!(metric("switchboard_bargein_cancellations_total{stage=\"agent\"}") >= 1.0);
    p.stop().await;
}

/// With every LLM request answered 429 (retry-after 2 s), the AIMD limit halves and every
/// call still hears its tenant's fallback phrase, spoken: never silence.
#[tokio::test]
async fn llm_429_storm_halves_the_limit_and_every_call_hears_the_fallback() {
    let llm_config = llm::Config {
        faults: llm::Faults {
            rate_limit_share: 1.0,
            retry_after_secs: 2,
            ..llm::Faults::default()
        },
        ..llm::Config::default()
    };
    let tts_config = tts::Config {
        deterministic: true,
        ..tts::Config::default()
    };
    let p = Pipeline::start(llm_config, tts_config, false, |_| {}).await;
    let before = p.agent.limits().aimd().limit();
    let calls: Vec<CallSid> = (0..6).map(|n| sid(200 + n)).collect();
    let mut watches = Vec::new();
    for call in &calls {
        watches.push(Watch::start(&p.env, call).await);
    }
    for call in &calls {
        let turn = p.call(call).await;
        p.publish(&transcript(call, turn, "Hello?")).await;
    }
    for watch in &watches {
        watch.turn_spoken(1).await;
        let sentences = watch.sentences(1);
        assert_eq!(sentences.len(), 1, "{sentences:?}");
        assert_eq!(sentences[0].text, FALLBACK);
        assert!(sentences[0].fallback && sentences[0].last);
        check_sentence_audio(&watch.chunks(1), 0);
    }
    let after = p.agent.limits().aimd().limit();
    assert!(after <= before / 2, "limit {before} → {after}");
    let stats = Pipeline::stats(&p.llm).await;
    assert!(stats["rate_limited"].as_u64().unwrap() >= 1);
    assert!(metric("switchboard_llm_rate_limited_total") >= 1.0);
    assert!(metric("switchboard_fallbacks_total{stage=\"agent\"") >= 6.0);
    p.stop().await;
}

/// A sentence already in the cache (here: pre-warmed, and asked for with different case,
/// spacing and punctuation) is served without calling the TTS provider, with exactly the
/// cached audio; a new sentence calls it once and is then cached too.
#[tokio::test]
async fn cache_hit_serves_audio_without_calling_the_provider() {
    let tts_config = tts::Config {
        deterministic: true,
        ..tts::Config::default()
    };
    let p = Pipeline::start(llm::Config::default(), tts_config, false, |_| {}).await;
    let warmed = p.tts.prewarm().await;
    assert_eq!(warmed.failed, 0);
    assert!(warmed.synthesised >= 3, "{warmed:?}");
    let requests = |v: Value| v["requests"].as_u64().unwrap();
    let after_prewarm = requests(Pipeline::stats(&p.tts_sim).await);

    let call = sid(301);
    let watch = Watch::start(&p.env, &call).await;
    let turn = p.call(&call).await;
    let variant = "  thanks for calling ACME -- how can I help you today ";
    p.publish(&sentence_event(&call, turn, 0, variant, true))
        .await;
    watch.turn_spoken(turn).await;
    assert_eq!(
        requests(Pipeline::stats(&p.tts_sim).await),
        after_prewarm,
        "no provider call"
    );
    let audio: Vec<u8> = watch
        .chunks(turn)
        .iter()
        .flat_map(|c| c.payload.0.to_vec())
        .collect();
    let greeting = Speech {
        engine: "azure",
        format: sb_tts::azure::OUTPUT_FORMAT,
        voice: "en-US-JennyNeural",
        text: GREETING,
    };
    let cached = p.redis.tts_get(&greeting).await.unwrap().unwrap();
    assert_eq!(audio, cached.to_vec(), "exactly the cached audio");
    assert!(metric("switchboard_tts_cache_requests_total{result=\"hit\"}") >= 1.0);

    let fresh = "A sentence nobody said before.";
    let turn2 = p.redis.session_next_turn(&call, 0).await.unwrap().unwrap();
    p.publish(&sentence_event(&call, turn2, 0, fresh, true))
        .await;
    watch.turn_spoken(turn2).await;
    assert_eq!(
        requests(Pipeline::stats(&p.tts_sim).await),
        after_prewarm + 1
    );
    let turn3 = p.redis.session_next_turn(&call, 0).await.unwrap().unwrap();
    p.publish(&sentence_event(
        &call,
        turn3,
        0,
        "a sentence NOBODY said before",
        true,
    ))
    .await;
    watch.turn_spoken(turn3).await;
    assert_eq!(
        requests(Pipeline::stats(&p.tts_sim).await),
        after_prewarm + 1
    );
    p.stop().await;
}

/// `end_call` from the model: the goodbye is spoken as the turn's last sentence, nothing
/// happens to the call until Twilio reports it played, then the call is hung up through
/// the REST stand-in (`Status=completed`). `transfer_call` dials the tenant's number.
#[tokio::test]
async fn end_call_and_transfer_go_through_twilio() {
    let llm_config = llm::Config {
        replies: vec![
            r#"tool:end_call {"reason":"caller is done"}"#.into(),
            r#"tool:transfer_call {"reason":"wants a human"}"#.into(),
        ],
        ..llm::Config::default()
    };
    let tts_config = tts::Config {
        deterministic: true,
        ..tts::Config::default()
    };
    let p = Pipeline::start(llm_config, tts_config, true, |_| {}).await;
    let state = p.twilio.as_ref().unwrap().1.clone();

    let hang = twilio_call(&p).await;
    let watch = Watch::start(&p.env, &hang).await;
    let turn = p.call(&hang).await;
    p.publish(&transcript(&hang, turn, "That's all, bye."))
        .await;
    watch.turn_spoken(turn).await;
    let said = watch.sentences(turn);
    assert_eq!(said.len(), 1);
    assert_eq!((said[0].text.as_str(), said[0].last), ("Goodbye!", true));
    p.settled().await;
    assert!(
        state.call(hang.as_str()).unwrap().updates.is_empty(),
        "not before it was heard"
    );

    let played = |call: &CallSid, turn: u32| {
        Envelope::new(
            tenant(),
            call.clone(),
            turn,
            Body::Played(Played {
                sentence: 0,
                mark: format!("{turn}:0"),
            }),
        )
    };
    p.publish(&played(&hang, turn)).await;
    let hung = state
        .wait_until(WAIT, |s| !s.call(hang.as_str()).unwrap().updates.is_empty())
        .await;
    assert!(hung);
    let updates = state.call(hang.as_str()).unwrap().updates;
    assert_eq!(updates[0].status, Some(sb_twilio::CallStatus::Completed));
    eventually("the action cleared once done", WAIT, || async {
        p.redis
            .session_action(&hang)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await
    .unwrap();
    p.settled().await;
    assert_eq!(
        state.call(hang.as_str()).unwrap().updates.len(),
        1,
        "hung up once"
    );

    let transfer = twilio_call(&p).await;
    let watch = Watch::start(&p.env, &transfer).await;
    let turn = p.call(&transfer).await;
    p.publish(&transcript(&transfer, turn, "Can I talk to a person?"))
        .await;
    watch.turn_spoken(turn).await;
    assert_eq!(
        watch.sentences(turn)[0].text,
        "Please hold while I transfer your call."
    );
    p.publish(&played(&transfer, turn)).await;
    let moved = state
        .wait_until(WAIT, |s| {
            !s.call(transfer.as_str()).unwrap().updates.is_empty()
        })
        .await;
    assert!(moved);
    let updates = state.call(transfer.as_str()).unwrap().updates;
    assert_eq!(
        updates[0].twiml.as_deref(),
        Some("<Response><Dial>+15005550010</Dial></Response>")
    );
    p.stop().await;
}

/// Bad input never panics and is never silently dropped: an unknown tenant's transcript
/// and sentence are dead-lettered with their reason; an empty transcript is a counted skip
/// (no answer, no LLM call).
#[tokio::test]
async fn bad_input_is_dead_lettered_or_skipped() {
    let p = Pipeline::start(
        llm::Config::default(),
        tts::Config::default(),
        false,
        |_| {},
    )
    .await;
    let stranger = TenantId::parse("nobody").unwrap();
    let call = sid(401);
    let mut lost = transcript(&call, 1, "hello");
    lost.tenant = stranger.clone();
    let mut orphan = sentence_event(&call, 1, 0, "hello", true);
    orphan.tenant = stranger;
    p.publish(&lost).await;
    p.publish(&orphan).await;
    for consumer in ["agent", "tts"] {
        let dlq = subject::dlq("CALLS", consumer);
        let record = eventually("a dead letter", WAIT, || async {
            let payloads = support::payloads(&p.env.js, "DLQ", &dlq).await;
            payloads.first().map(|p| decode_dead_letter(p).unwrap())
        })
        .await
        .unwrap();
        assert_eq!(record.reason_kind, "unknown_tenant", "{consumer}");
    }

    let quiet = sid(402);
    let watch = Watch::start(&p.env, &quiet).await;
    let turn = p.call(&quiet).await;
    p.publish(&transcript(&quiet, turn, "   ")).await;
    p.settled().await;
    assert!(watch.sentences(turn).is_empty());
    assert_eq!(Pipeline::stats(&p.llm).await["requests"], 0);
    assert!(
        metric("switchboard_stage_skipped_total{reason=\"empty_transcript\",stage=\"agent\"}")
            >= 1.0
            || metric(
                "switchboard_stage_skipped_total{stage=\"agent\",reason=\"empty_transcript\"}"
            ) >= 1.0
    );
    p.stop().await;
}

/// The session functions the agent added: progress reads turn and token in one go; an
/// assistant turn is truncated in place (and marked interrupted) only if it exists; a
/// pending action is stored, read and cleared, and never outlives the session's TTL.
#[tokio::test]
async fn session_truncate_progress_and_action() {
    let env = TestEnv::start().await.unwrap();
    let redis = env.redis().await.unwrap();
    let call = sid(501);
    let progress = |turn, bargein| Progress { turn, bargein };
    assert_eq!(redis.session_progress(&call).await.unwrap(), progress(0, 0));
    redis
        .session_start(
            &call,
            &tenant(),
            &sb_runtime::redis::session::Parties::default(),
            0,
        )
        .await
        .unwrap();
    let turn = redis.session_next_turn(&call, 0).await.unwrap().unwrap();
    redis.session_interrupt(&call, 0).await.unwrap().unwrap();
    assert_eq!(
        redis.session_progress(&call).await.unwrap(),
        progress(turn, 1)
    );

    assert!(
        !redis.session_truncate_turn(&call, turn, "x").await.unwrap(),
        "no turn yet"
    );
    let push = |role, text: &str, turn| Turn {
        role,
        text: text.into(),
        turn,
        interrupted: false,
    };
    redis
        .session_push_turn(&call, &push(Role::User, "hi", turn))
        .await
        .unwrap();
    redis
        .session_push_turn(
            &call,
            &push(Role::Assistant, "One.\nTwo \"q\" / é.\nThree.", turn),
        )
        .await
        .unwrap();
    assert!(
        redis
            .session_truncate_turn(&call, turn, "One.\nTwo \"q\" / é.")
            .await
            .unwrap()
    );
    let turns = redis.session_load(&call).await.unwrap().unwrap().turns;
    assert_eq!(
        turns[0],
        push(Role::User, "hi", turn),
        "other turns untouched"
    );
    assert_eq!(
        turns[1],
        Turn {
            interrupted: true,
            ..push(Role::Assistant, "One.\nTwo \"q\" / é.", turn)
        }
    );
    assert!(
        !redis
            .session_truncate_turn(&call, turn + 1, "")
            .await
            .unwrap()
    );

    assert_eq!(redis.session_action(&call).await.unwrap(), None);
    redis
        .session_set_action(&call, Some("{\"do\":\"hang_up\"}"))
        .await
        .unwrap();
    assert_eq!(
        redis.session_action(&call).await.unwrap().as_deref(),
        Some("{\"do\":\"hang_up\"}")
    );
    redis.session_set_action(&call, None).await.unwrap();
    assert_eq!(redis.session_action(&call).await.unwrap(), None);

    // An action stored for a call without a session still expires with it.
    let gone = sid(502);
    redis.session_set_action(&gone, Some("{}")).await.unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(redis.keys().session(&gone))
        .query_async(&mut env.redis_raw().await.unwrap())
        .await
        .unwrap();
    assert!(ttl > 0, "ttl {ttl}");
}
