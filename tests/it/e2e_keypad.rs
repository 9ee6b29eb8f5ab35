//! Keypad, silence and the call's length end to end (ring 3, issue 18): the sim caller
//! presses keys and stays silent on a real stack. Digits ended by `#` reach the model as
//! the caller's words, `0` says the transfer phrase and transfers the call (Twilio's REST
//! stand-in runs the `<Dial>`: the media line ends); silence after the bot finished brings
//! acme's two prompts, then its goodbye and a hang-up.

use sb_schemas::{Body, CallSid, Keypad, KeypadEnd, Kind, Silence};
use sb_sim::caller::EndedBy;

use crate::e2e::{call, log_after_end, stack};

/// The bot's sentences of `turn`, in order.
fn said(log: &sb_replay::CallLog, turn: u32) -> Vec<String> {
    log.envelopes()
        .filter(|e| e.turn == turn)
        .filter_map(|e| match &e.body {
            Body::Sentence(s) => Some(s.text.clone()),
            _ => None,
        })
        .collect()
}

fn bodies(log: &sb_replay::CallLog, kind: Kind) -> Vec<(u32, Body)> {
    log.envelopes()
        .filter(|e| e.kind() == kind)
        .map(|e| (e.turn, e.body.clone()))
        .collect()
}

#[tokio::test]
async fn keys_reach_the_model_and_zero_transfers() {
    let (stack, _dir) = stack(|config| {
        config.llm_replies = vec!["You said: {user}".into()];
    })
    .await;
    let report = call(
        &stack,
        r#"
to = "+15005550006"
tones = true
[[steps]]
wait_for_bot = 20000
[[steps]]
dtmf = "4417#"
[[steps]]
wait_for_bot = 20000
[[steps]]
dtmf = "0"
[[steps]]
wait_for_bot = 20000
[[steps]]
pause_ms = 5000
[[steps]]
hangup = true
"#,
    )
    .await;
    let sid = CallSid::parse(&report.call_sid).unwrap();
    let log = log_after_end(&stack, &sid).await;
    assert_eq!(
        bodies(&log, Kind::Keypad),
        [
            (
                1,
                Body::Keypad(Keypad {
                    digits: "4417".into(),
                    ended_by: KeypadEnd::Terminator
                })
            ),
            (
                2,
                Body::Keypad(Keypad {
                    digits: "0".into(),
                    ended_by: KeypadEnd::Action
                })
            )
        ]
    );
    assert_eq!(
        bodies(&log, Kind::Dtmf).len(),
        6,
        "every key is its own dtmf too"
    );
    // The model got the digits as the caller's words (the stand-in repeats them).
    assert_eq!(
        said(&log, 1),
        ["You said: The caller pressed the keys: 4417"]
    );
    assert_eq!(said(&log, 2), ["Please hold while I transfer your call."]);
    assert_eq!(report.ended_by, EndedBy::Api, "transferred away: {report}");
    stack.stop().await;
}

#[tokio::test]
async fn silence_brings_the_prompts_then_goodbye_and_a_hang_up() {
    let (stack, _dir) = stack(|_| {}).await;
    // acme: 8 s of silence after the bot finished, two prompts (deploy/base/tenants.toml).
    let report = call(
        &stack,
        r#"
to = "+15005550006"
tones = true
[[steps]]
wait_for_bot = 20000
[[steps]]
pause_ms = 60000
[[steps]]
hangup = true
"#,
    )
    .await;
    let sid = CallSid::parse(&report.call_sid).unwrap();
    let log = log_after_end(&stack, &sid).await;
    let silences: Vec<(u32, u32)> = bodies(&log, Kind::Silence)
        .into_iter()
        .filter_map(|(turn, body)| match body {
            Body::Silence(Silence { count, .. }) => Some((turn, count)),
            _ => None,
        })
        .collect();
    assert_eq!(silences, [(1, 1), (2, 2), (3, 3)]);
    assert_eq!(said(&log, 1), ["Are you still there?"]);
    assert_eq!(said(&log, 2), ["I'm still here if you need anything."]);
    assert_eq!(said(&log, 3), ["Thanks for calling Acme. Goodbye!"]);
    assert_eq!(report.ended_by, EndedBy::Api, "the agent hung up: {report}");
    stack.stop().await;
}
