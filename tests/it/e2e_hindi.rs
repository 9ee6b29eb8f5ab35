//! End to end in Hindi (ring 3, issue "Languages"): the shipped tenant `kirana`
//! (`deploy/base/tenants.toml`, `[tenant.language] stt_language = "hi"`, voice
//! `hi-IN-SwaraNeural`) answers a call in Hindi, from the caller's Devanagari words to the
//! bot's Hindi speech, every hop checked from the call's events and the stand-ins' counters.

use sb_runtime::Tenants;
use sb_schemas::{Body, CallSid};
use sb_stack::Stack;
use sb_tests::workspace_root;
use serde_json::Value;

use crate::e2e::{call, log_after_end, stack};

/// `kirana`'s number in the shipped tenants file.
const HINDI_NUMBER: &str = "+15005550091";
/// What the Deepgram stand-in hears the caller say.
const QUESTION: &str = "आपकी दुकान कब खुलती है?";
/// What the LLM stand-in answers: `{user}` repeats the caller's message as the request
/// carried it.
const REPLY: &str = "आपने पूछा: {user} हमारी दुकान सुबह नौ बजे खुलती है। रात को नौ बजे \
                     बंद होती है। क्या मैं आपकी और कोई मदद कर सकती हूँ?";
/// The answer's sentences: cut after the question mark and at each danda.
const SENTENCES: [&str; 4] = [
    "आपने पूछा: आपकी दुकान कब खुलती है?",
    "हमारी दुकान सुबह नौ बजे खुलती है।",
    "रात को नौ बजे बंद होती है।",
    "क्या मैं आपकी और कोई मदद कर सकती हूँ?",
];
const HINDI_VOICE: &str = "hi-IN-SwaraNeural";

fn scenario() -> String {
    format!(
        "to = \"{HINDI_NUMBER}\"\ntones = true\n[[steps]]\nwait_for_bot = 20000\n\
         [[steps]]\nsay = \"{QUESTION}\"\n[[steps]]\nwait_for_bot = 20000\n\
         [[steps]]\nhangup = true\n"
    )
}

async fn stats(url: String) -> Value {
    reqwest::get(format!("{url}/sim/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn hindi_voice_requests(stack: &Stack) -> u64 {
    let stats = stats(stack.tts_sim.url()).await;
    stats["azure_voices"][HINDI_VOICE].as_u64().unwrap_or(0)
}

/// A call to the Hindi tenant: the greeting is its Hindi greeting; the caller's words are
/// transcribed as Devanagari (the Deepgram stand-in was asked for `language=hi`, and every
/// partial is a prefix of the line); the LLM request carried that text (the stand-in's
/// reply repeats it); the answer's `sentence` events are cut at the danda `।`; Azure's
/// Hindi voice (`xml:lang="hi-IN"`) spoke the answer and its audio reached the caller.
#[tokio::test]
async fn a_hindi_call_is_answered_in_hindi() {
    let (stack, _dir) = stack(|c| {
        c.stt_script = vec![QUESTION.to_owned()];
        c.llm_replies = vec![REPLY.to_owned()];
    })
    .await;
    let tenants = Tenants::load(&workspace_root().join("deploy/base/tenants.toml")).unwrap();
    let kirana = tenants.by_number(HINDI_NUMBER).unwrap().clone();
    assert_eq!(kirana.voice, HINDI_VOICE);
    let spoken_before = hindi_voice_requests(&stack).await;

    let report = call(&stack, &scenario()).await;
    assert!(
        report.turns[0].first_bot_audio_ms.is_some(),
        "greeting heard: {report}"
    );
    assert!(
        report.turns[1].voice_to_voice_ms.is_some(),
        "answer heard: {report}"
    );
    assert!(
        report.protocol_errors.is_empty(),
        "{:?}",
        report.protocol_errors
    );
    let sid = CallSid::parse(&report.call_sid).unwrap();
    let log = log_after_end(&stack, &sid).await;

    // The caller's Devanagari, through the STT stand-in, interim and final.
    let transcripts: Vec<(u32, &str)> = log
        .envelopes()
        .filter_map(|e| match &e.body {
            Body::Transcript(t) => Some((e.turn, t.text.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(transcripts, [(1, QUESTION)]);
    for envelope in log.envelopes() {
        if let Body::Partial(partial) = &envelope.body {
            assert!(QUESTION.starts_with(&partial.text), "{partial:?}");
        }
    }
    let deepgram = stats(stack.deepgram.url()).await;
    assert!(
        deepgram["languages"]["hi"].as_u64() >= Some(1),
        "the stt asked for Hindi: {deepgram}"
    );

    // The greeting, then the answer: the request carried the transcript, the sentences
    // are cut at the danda.
    let sentences = |turn: u32| -> Vec<(String, bool)> {
        log.envelopes()
            .filter(|e| e.turn == turn)
            .filter_map(|e| match &e.body {
                Body::Sentence(s) => Some((s.text.clone(), s.fallback)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(sentences(0), [(kirana.greeting.clone(), false)]);
    let answer: Vec<String> = sentences(1)
        .into_iter()
        .map(|(text, fallback)| {
            assert!(!fallback, "not the fallback phrase: {text}");
            text
        })
        .collect();
    assert_eq!(answer, SENTENCES);
    let tokens: String = log
        .envelopes()
        .filter(|e| e.turn == 1)
        .filter_map(|e| match &e.body {
            Body::Token(t) => Some(t.text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(tokens, REPLY.replace("{user}", QUESTION));

    // Spoken: every sentence of both turns has audio, sent to the caller; the answer's
    // sentences went to Azure's Hindi voice (the greeting may come from the cache: it is
    // pre-warmed with the same voice).
    for (turn, count) in [(0, 1), (1, SENTENCES.len())] {
        for index in 0..count {
            let audio: usize = log
                .envelopes()
                .filter(|e| e.turn == turn)
                .filter_map(|e| match &e.body {
                    Body::TtsChunk(c) if c.sentence as usize == index => Some(c.payload.0.len()),
                    _ => None,
                })
                .sum();
            assert!(audio > 0, "turn {turn} sentence {index} has audio");
        }
    }
    assert!(report.bot_bytes_played > 0, "{report}");
    let spoken_after = hindi_voice_requests(&stack).await;
    assert!(
        spoken_after >= spoken_before + SENTENCES.len() as u64,
        "the answer's {} sentences in {HINDI_VOICE}: {spoken_before} → {spoken_after}",
        SENTENCES.len()
    );
    let tts = stats(stack.tts_sim.url()).await;
    assert!(
        tts["azure_langs"]["hi-IN"].as_u64() >= Some(spoken_after),
        "every Hindi request said xml:lang=\"hi-IN\": {tts}"
    );
    stack.stop().await;
}
