//! End to end: a tenant spoken by a streaming engine (ring 3, issue 16). The local stack's
//! tenant `initech` has `tts_provider = "openai"`: its sentences go to the TTS stand-in's
//! OpenAI face (24 kHz PCM, resampled to 8 kHz µ-law on the fly), never to Azure's.

use sb_schemas::{Body, CallSid};
use sb_stack::service_env::STREAMING_TENANT_NUMBER;
use serde_json::Value;

use crate::e2e::{call, log_after_end, stack};

const SHORT: &str = "We're open nine to five.";
const LONG: &str = "Saturdays we open at ten and close at two. Sundays we are closed all day long. \
                    On public holidays we keep Sunday hours. Members can call us any time.";

async fn tts_stats(stack: &sb_stack::Stack) -> Value {
    reqwest::get(format!("{}/sim/stats", stack.tts_sim.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn scenario(barge_in: bool) -> String {
    let mut toml = format!(
        "to = \"{STREAMING_TENANT_NUMBER}\"\ntones = true\n[[steps]]\nwait_for_bot = 20000\n\
         [[steps]]\nsay = \"What are your hours?\"\n[[steps]]\nwait_for_bot = 20000\n"
    );
    if barge_in {
        toml += "[[steps]]\nsay = \"And on Saturday?\"\n[[steps]]\nsay = \"Sorry, could you repeat the weekday hours?\"\n\
                 barge_in_after_ms = 1200\n[[steps]]\nwait_for_bot = 20000\n";
    }
    toml + "[[steps]]\nhangup = true\n"
}

/// Two calls to `initech`: the first hears the greeting and its answer from OpenAI's
/// engine; the second hears the same greeting and answer from the cache (no new request
/// to the engine), then interrupts a long answer: the ingress clears it.
#[tokio::test]
async fn a_tenant_on_a_streaming_engine_hears_its_answers() {
    let (stack, _dir) = stack(|c| {
        c.stt_script = [
            "What are your hours?",
            "And on Saturday?",
            "Sorry, could you repeat the weekday hours?",
        ]
        .map(String::from)
        .to_vec();
        c.llm_replies = [SHORT, LONG, SHORT].map(String::from).to_vec();
    })
    .await;
    let before = tts_stats(&stack).await;
    let first = call(&stack, &scenario(false)).await;
    assert!(
        first.turns[0].first_bot_audio_ms.is_some(),
        "greeting: {first}"
    );
    assert!(
        first.turns[1].voice_to_voice_ms.is_some(),
        "answer: {first}"
    );
    let after_first = tts_stats(&stack).await;
    assert!(
        after_first["openai"].as_u64() > before["openai"].as_u64(),
        "spoken by the OpenAI face: {after_first}"
    );
    assert_eq!(
        after_first["azure"], before["azure"],
        "nothing of initech's went to Azure"
    );
    assert!(
        first.protocol_errors.is_empty(),
        "{:?}",
        first.protocol_errors
    );

    let second = call(&stack, &scenario(true)).await;
    assert!(
        second.turns[1].voice_to_voice_ms.is_some(),
        "answer: {second}"
    );
    let barge = second.turns[3]
        .barge_in
        .as_ref()
        .expect("the caller barged in");
    assert!(barge.clear_ms.is_some(), "the ingress cleared: {second}");
    let sid = CallSid::parse(&second.call_sid).unwrap();
    let log = log_after_end(&stack, &sid).await;
    assert!(
        log.envelopes()
            .any(|e| e.turn == 2 && matches!(e.body, Body::BargeIn(_)))
    );
    // The greeting and the first answer came from the cache: only the long answer's
    // sentences (and the last turn's) were synthesised in the second call.
    let after_second = tts_stats(&stack).await;
    let sentences_synthesised =
        after_second["openai"].as_u64().unwrap() - after_first["openai"].as_u64().unwrap();
    let long_sentences = 4;
    assert!(
        sentences_synthesised <= long_sentences + 1,
        "{sentences_synthesised} requests: the repeated greeting and answer were cache hits"
    );
    stack.stop().await;
}
