//! The REST stand-in's created calls answered through the fake ingress: a human callee
//! playing its scenario, and a voicemail callee recording the bot until hung up; the
//! webhook, the media stream and the one `completed` callback, all signed.
//! State: one fake ingress and one stand-in per test.

use sb_sim::caller::{CallerConfig, EndedBy, Scenario};
use sb_twilio::InboundMessage;

use crate::fake_ingress::{Mode, Seen, fake_ingress};
use crate::{PUBLIC, TOKEN};

/// The REST stand-in answers a created call with the scripted caller: the webhook goes to
/// the ingress signed over the call's `Url`, with the created CallSid and
/// `Direction=outbound-api`; when the caller is done the call is `completed` with a report.
#[tokio::test]
async fn rest_stand_in_answers_created_calls() {
    use sb_sim::twilio::{Answer, Config, TwilioState};
    use sb_twilio::{CallStatus, CallTarget, CreateCall};

    let (ingress, fake) = fake_ingress(Mode::Converse).await;
    let mut config = Config::new(sb_sim::caller::DEFAULT_ACCOUNT_SID, TOKEN);
    config.answer = Some(Answer {
        caller: CallerConfig::new(ingress.http_url(), ingress.http_url(), TOKEN),
        scenario: Scenario::from_toml(
            "tones = true\nbot_quiet_ms = 200\n[[steps]]\nwait_for_bot = 3000",
        )
        .unwrap(),
    });
    let (twilio, state) = sb_sim::twilio::spawn(config).await.unwrap();
    let mut create = CreateCall::new(
        "+14155551234",
        "+15005550006",
        CallTarget::Url(format!("{PUBLIC}/twilio/voice")),
    );
    create.status_callback = Some(format!("{PUBLIC}/twilio/status"));
    let response = reqwest::Client::new()
        .post(format!(
            "{}{}",
            twilio.http_url(),
            sb_twilio::rest::calls_path(sb_sim::caller::DEFAULT_ACCOUNT_SID)
        ))
        .basic_auth(sb_sim::caller::DEFAULT_ACCOUNT_SID, Some(TOKEN))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(create.to_form())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let done = |s: &TwilioState| {
        s.calls()
            .first()
            .is_some_and(|c| c.caller_report.is_some() || c.caller_error.is_some())
    };
    assert!(
        state
            .wait_until(std::time::Duration::from_secs(10), done)
            .await
    );
    let record = state.calls().remove(0);
    assert_eq!(
        record.resource.status,
        CallStatus::Completed,
        "{:?}",
        record.caller_error
    );
    let report = record.caller_report.unwrap();
    assert_eq!(report.call_sid, record.resource.sid);
    assert!(report.turns[0].voice_to_voice_ms.is_some());
    let Seen::Webhook { valid: true, call } = &fake.seen()[0] else {
        panic!("{:?}", fake.seen()[0])
    };
    assert_eq!(
        (call.call_sid.as_str(), call.direction.as_str()),
        (record.resource.sid.as_str(), "outbound-api")
    );
}

/// A voicemail callee through the ingress: the machine answers the created call, the
/// stream opens and records the bot's audio until the call is hung up through REST; the
/// `completed` callback goes to the `StatusCallback` URL (the public origin, delivered to
/// the ingress), signed over that URL, once, carrying `AnsweredBy` from sync AMD.
#[tokio::test]
async fn voicemail_callee_records_the_bot_until_hung_up() {
    use sb_sim::twilio::{Callee, Callees, Config, TwilioState};
    use sb_twilio::{CallTarget, CreateCall, MachineDetection, UpdateCall};

    let (ingress, fake) = fake_ingress(Mode::Converse).await;
    let mut config = Config::new(sb_sim::caller::DEFAULT_ACCOUNT_SID, TOKEN);
    config.answer = Some(sb_sim::twilio::Answer {
        caller: CallerConfig::new(ingress.http_url(), ingress.http_url(), TOKEN),
        scenario: sb_sim::twilio::empty_scenario(),
    });
    config.callees = Some(Callees::new(Callee::Voicemail {
        greeting: std::time::Duration::from_millis(100),
    }));
    let (twilio, state) = sb_sim::twilio::spawn(config).await.unwrap();
    let mut create = CreateCall::new(
        "+14155551234",
        "+15005550006",
        CallTarget::Url(format!("{PUBLIC}/twilio/voice")),
    );
    create.status_callback = Some(format!("{PUBLIC}/twilio/status"));
    create.machine_detection = Some(MachineDetection::DetectMessageEnd);
    let account = sb_sim::caller::DEFAULT_ACCOUNT_SID;
    let client = reqwest::Client::new();
    let created: serde_json::Value = client
        .post(format!(
            "{}{}",
            twilio.http_url(),
            sb_twilio::rest::calls_path(account)
        ))
        .basic_auth(account, Some(TOKEN))
        .body(create.to_form())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sid = created["sid"].as_str().unwrap().to_owned();
    // The greeting's mark echoed back: the callee has received bot audio.
    fake.wait_for(|seen| {
        seen.iter()
            .any(|s| matches!(s, Seen::Stream(InboundMessage::Mark { .. })))
    })
    .await;
    let Seen::Webhook { valid: true, call } = &fake.seen()[0] else {
        panic!("{:?}", fake.seen()[0])
    };
    assert_eq!(
        sb_twilio::form::first(&call.params, "AnsweredBy"),
        Some("machine_end_beep"),
        "sync AMD holds the webhook and sends its result with it"
    );
    let hang_up = client
        .post(format!(
            "{}{}",
            twilio.http_url(),
            sb_twilio::rest::call_path(account, &sid)
        ))
        .basic_auth(account, Some(TOKEN))
        .body(UpdateCall::hang_up().to_form())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(hang_up.status().as_u16(), 200);
    let reported = |s: &TwilioState| s.call(&sid).is_some_and(|c| c.caller_report.is_some());
    assert!(
        state
            .wait_until(std::time::Duration::from_secs(10), reported)
            .await
    );
    fake.wait_for(|seen| seen.iter().any(|s| matches!(s, Seen::Status { .. })))
        .await;
    let record = state.call(&sid).unwrap();
    assert!(record.bot_audio_bytes >= 160, "{}", record.bot_audio_bytes);
    assert_eq!(record.caller_report.unwrap().ended_by, EndedBy::Api);
    let statuses: Vec<_> = fake
        .seen()
        .into_iter()
        .filter_map(|s| match s {
            Seen::Status { valid, callback } => Some((valid, callback)),
            _ => None,
        })
        .collect();
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    let (valid, callback) = &statuses[0];
    assert!(valid);
    assert_eq!(callback.direction, "outbound-api");
    assert_eq!(callback.answered_by.as_deref(), Some("machine_end_beep"));
}
