//! End to end, outbound: the dialer places a campaign's calls through the Twilio stand-in,
//! which answers them with scripted callees against the real ingress; the whole pipeline
//! runs them (every service its own process, real NATS and Redis). A person hears the
//! campaign's greeting with their name filled in and talks to the agent; a machine gets
//! the voicemail and is hung up on; both calls are in the log from the dial on.

use std::time::Duration;

use sb_dialer::campaign::{Campaign, CampaignSpec};
use sb_replay::CallLog;
use sb_runtime::redis::campaigns::{CampaignId, ContactState};
use sb_runtime::redis::{Keys, Redis};
use sb_schemas::{Body, CallSid, Kind};
use sb_tests::eventually;

use crate::dialer::rig::{always_open, contact, tenant};
use crate::e2e::stack;

const HUMAN: &str = "+15005550150";
const MACHINE: &str = "+15005550151";

fn callees(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::write(
        dir.join("answers.toml"),
        r#"
        from = "+15005550150"
        to = "+15005550006"
        [[steps]]
        wait_for_bot = 15000
        [[steps]]
        say = "Yes, I will be there."
        [[steps]]
        wait_for_bot = 15000
        [[steps]]
        hangup = true
        "#,
    )
    .unwrap();
    let path = dir.join("callees.toml");
    std::fs::write(
        &path,
        format!(
            r#"
            default = "busy"
            [[number]]
            to = "{HUMAN}"
            script = ["human"]
            scenario = "answers.toml"
            [[number]]
            to = "{MACHINE}"
            script = ["voicemail"]
            greeting_ms = 500
            "#
        ),
    )
    .unwrap();
    path
}

fn campaign_spec() -> CampaignSpec {
    let mut spec = always_open();
    spec.greeting = Some("Hi {{name}}, this is Acme about your appointment tomorrow.".into());
    spec.voicemail = Some("Hi {{name}}, Acme calling about tomorrow. Please call us back.".into());
    spec
}

/// The call sid of a contact's (only) attempt, once the contact is finished.
async fn finished(redis: &Redis, c: &CampaignId, number: &str) -> (String, String) {
    let q = redis.campaign_queue();
    eventually(number, Duration::from_secs(90), || async {
        let page = q.contacts_page(&tenant(), c, None, 0, 100).await.ok()?;
        let row = page
            .contacts
            .into_iter()
            .find(|r| r.record.payload.contains(number))?;
        (row.record.state == ContactState::Done)
            .then(|| (row.call_sids[0].clone(), row.record.reason.clone()))
    })
    .await
    .unwrap()
}

fn sentence_of_turn_0(log: &CallLog) -> Option<String> {
    log.envelopes().find_map(|e| match &e.body {
        Body::Sentence(s) if e.turn == 0 => Some(s.text.clone()),
        _ => None,
    })
}

#[tokio::test]
async fn an_outbound_campaign_greets_a_person_by_name_and_leaves_a_machine_a_voicemail() {
    let dir = tempfile::tempdir().unwrap();
    let callees = callees(dir.path());
    let (stack, _logs) = stack(|c| {
        c.stt_script = vec!["Yes, I will be there.".into()];
        c.llm_replies = vec!["Great, see you tomorrow. Goodbye!".into()];
        c.callees = Some(callees);
    })
    .await;
    let redis = Redis::connect(&stack.redis.url, Keys::new(""), Duration::from_secs(60))
        .await
        .unwrap();
    let q = redis.campaign_queue();
    let c = CampaignId::parse("tomorrow").unwrap();
    let def = Campaign::new(c.clone(), campaign_spec(), chrono::Utc::now());
    q.create_def(&tenant(), &c, &serde_json::to_string(&def).unwrap())
        .await
        .unwrap();
    let contacts = [
        contact(HUMAN, &[("name", "Ann")]),
        contact(MACHINE, &[("name", "Bob")]),
    ];
    q.enqueue(&tenant(), &c, &contacts, 0).await.unwrap();

    let js = stack.jetstream().await.unwrap();
    let (human_sid, outcome) = finished(&redis, &c, HUMAN).await;
    assert_eq!(outcome, "completed");
    let log = CallLog::load(&js, &CallSid::parse(&human_sid).unwrap())
        .await
        .unwrap();
    let kinds: Vec<Kind> = log.envelopes().map(|e| e.kind()).collect();
    for kind in [
        Kind::Dial,
        Kind::Webhook,
        Kind::Start,
        Kind::AnsweredBy,
        Kind::Transcript,
        Kind::DialResult,
    ] {
        assert!(kinds.contains(&kind), "{kind:?} in {kinds:?}");
    }
    assert_eq!(
        sentence_of_turn_0(&log).as_deref(),
        Some("Hi Ann, this is Acme about your appointment tomorrow.")
    );
    let heard = log
        .envelopes()
        .any(|e| e.turn == 0 && matches!(e.body, Body::Played(_)));
    assert!(heard, "Twilio confirmed the greeting played");
    let webhook = log.envelopes().find_map(|e| match &e.body {
        Body::Webhook(w) => Some(w.clone()),
        _ => None,
    });
    assert!(
        webhook.unwrap().attempt.is_some(),
        "matched to its dial attempt"
    );

    let (machine_sid, outcome) = finished(&redis, &c, MACHINE).await;
    assert_eq!(outcome, "voicemail");
    let log = CallLog::load(&js, &CallSid::parse(&machine_sid).unwrap())
        .await
        .unwrap();
    assert_eq!(
        sentence_of_turn_0(&log).as_deref(),
        Some("Hi Bob, Acme calling about tomorrow. Please call us back.")
    );
    let answered = log.envelopes().find_map(|e| match &e.body {
        Body::AnsweredBy(a) => Some(a.machine),
        _ => None,
    });
    assert_eq!(answered, Some(true));
    stack.stop().await;
}
