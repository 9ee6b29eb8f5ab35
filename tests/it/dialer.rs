//! The dialer (ARCHITECTURE §6, "Dial attempts") against real NATS, Redis and the Twilio
//! stand-in's scripted callees: every outcome follows the campaign's retry policy, a
//! machine gets the voicemail path, calling hours hold calls until they open (on an
//! injected clock), concurrency caps and the shared calls-per-second limit hold, and a
//! dialer that dies at any point of a dial loses no contact and never calls one twice
//! ([`windows`]).

mod processes;
pub(crate) mod rig;
mod windows;

use std::time::Duration;

use sb_dialer::Dialled;
use sb_runtime::redis::campaigns::{ContactState, Hold};
use sb_schemas::{Body, Kind};
use sb_sim::twilio::{Callee, Callees};
use sb_tests::eventually;

use rig::{Rig, contact, human, spec, tenant};

/// Busy, no-answer and failed are tried again after the spacing and fail for good after
/// the last attempt; a person who answers the second time completes the contact. Every
/// call's `dial` and `dial_result` are in the log.
#[tokio::test]
async fn every_outcome_follows_the_retry_policy() {
    let callees = Callees::new(human())
        .with_number("+15005550101", vec![Callee::Busy])
        .with_number("+15005550102", vec![Callee::NoAnswer, human()])
        .with_number("+15005550103", vec![Callee::Failed]);
    let rig = Rig::start(callees, |_| {}).await;
    let numbers = [
        "+15005550101",
        "+15005550102",
        "+15005550103",
        "+15005550104",
    ];
    let contacts: Vec<_> = numbers
        .iter()
        .map(|n| contact(n, &[("name", "Ann")]))
        .collect();
    let c = rig.campaign("retries", spec(), &contacts).await;
    for _ in numbers {
        assert_eq!(rig.dialer.dial_next().await.unwrap(), Some(Dialled::Placed));
    }
    assert_eq!(
        rig.dialer.dial_next().await.unwrap(),
        None,
        "all four are calling"
    );
    rig.settled().await;
    for (number, reason) in [
        ("+15005550101", "busy"),
        ("+15005550102", "no-answer"),
        ("+15005550103", "failed"),
    ] {
        let r = rig.record(&c, number).await;
        assert_eq!(
            (r.state, r.attempts, r.reason.as_str()),
            (ContactState::Queued, 1, reason),
            "{number}"
        );
    }
    let done = rig.record(&c, "+15005550104").await;
    assert_eq!(
        (done.state, done.attempts, done.reason.as_str()),
        (ContactState::Done, 1, "completed")
    );
    assert_eq!(
        rig.dialer.dial_next().await.unwrap(),
        None,
        "retries wait for the spacing"
    );

    rig.clock.advance(60_000);
    for _ in 0..3 {
        assert_eq!(rig.dialer.dial_next().await.unwrap(), Some(Dialled::Placed));
    }
    rig.settled().await;
    for (number, state, reason) in [
        ("+15005550101", ContactState::Failed, "busy"),
        ("+15005550102", ContactState::Done, "completed"),
        ("+15005550103", ContactState::Failed, "failed"),
    ] {
        let r = rig.record(&c, number).await;
        assert_eq!(
            (r.state, r.attempts, r.reason.as_str()),
            (state, 2, reason),
            "{number}"
        );
    }
    assert_eq!(rig.dialer.dial_next().await.unwrap(), None);
    let counts = rig.queue().counts(&tenant(), &c).await.unwrap();
    assert_eq!(
        (counts["done"], counts["failed"], counts["queued"]),
        (2, 2, 0)
    );

    // The log: each call has its dial and its result, the retry's decision included.
    let busy: Vec<_> = rig
        .twilio
        .calls()
        .into_iter()
        .filter(|r| r.resource.to == "+15005550101")
        .collect();
    assert_eq!(busy.len(), 2);
    match rig.event(&busy[0].resource.sid, Kind::DialResult).await {
        Body::DialResult(r) => assert_eq!(
            (r.outcome.as_str(), r.attempts, r.decision.as_str()),
            ("busy", 1, "retry")
        ),
        other => panic!("{other:?}"),
    }
    match rig.event(&busy[1].resource.sid, Kind::DialResult).await {
        Body::DialResult(r) => assert_eq!(
            (r.outcome.as_str(), r.attempts, r.decision.as_str()),
            ("busy", 2, "failed")
        ),
        other => panic!("{other:?}"),
    }
    match rig.event(&busy[1].resource.sid, Kind::Dial).await {
        Body::Dial(d) => assert_eq!((d.to.as_str(), d.attempt_number), ("+15005550101", 2)),
        other => panic!("{other:?}"),
    }
}

/// A machine answers: `answered_by` carries the voicemail with the contact's name filled
/// in; once the call is hung up (as the agent does after the message plays), the contact
/// is done with the outcome `voicemail`.
#[tokio::test]
async fn a_machine_gets_the_voicemail_and_the_outcome_is_voicemail() {
    let callees = Callees::new(Callee::Voicemail {
        greeting: Duration::from_millis(300),
    });
    let rig = Rig::start(callees, |_| {}).await;
    let c = rig
        .campaign("vm", spec(), &[contact("+15005550111", &[("name", "Ann")])])
        .await;
    assert_eq!(rig.dialer.dial_next().await.unwrap(), Some(Dialled::Placed));
    let sid = rig.twilio.calls()[0].resource.sid.clone();
    match rig.event(&sid, Kind::AnsweredBy).await {
        Body::AnsweredBy(a) => {
            assert!(a.machine, "{a:?}");
            assert_eq!(a.answered_by, "machine_end_beep");
            assert_eq!(a.voicemail, "Hi Ann, please call Acme back.");
        }
        other => panic!("{other:?}"),
    }
    // The agent's hang-up, through the REST API as it does it.
    let url = format!(
        "{}/2010-04-01/Accounts/{}/Calls/{sid}.json",
        rig.dialer.settings.rest.base(),
        rig::ACCOUNT
    );
    let answer = reqwest::Client::new()
        .post(url)
        .basic_auth(rig::ACCOUNT, Some(rig::TOKEN))
        .form(&[("Status", "completed")])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    rig.settled().await;
    let r = rig.record(&c, "+15005550111").await;
    assert_eq!(
        (r.state, r.reason.as_str()),
        (ContactState::Done, "voicemail")
    );
    match rig.event(&sid, Kind::DialResult).await {
        Body::DialResult(r) => assert_eq!(r.outcome, "voicemail"),
        other => panic!("{other:?}"),
    }
}

/// Outside its hours (Saturday in New York) the campaign waits: its contact goes back to
/// its place, the campaign is held until Monday 09:00, and nothing is called until the
/// clock gets there. A contact in its own zone (callees' zones on) waits alone.
#[tokio::test]
async fn calling_hours_hold_calls_until_they_open() {
    let rig = Rig::start(Callees::new(Callee::Busy), |_| {}).await;
    // Saturday 2026-12-05 15:00 UTC = 10:00 in New York.
    let saturday = rig::THURSDAY_10AM_NY + 2 * 86_400_000;
    let monday_9am_ny = rig::THURSDAY_10AM_NY + 4 * 86_400_000 - 3_600_000;
    rig.clock.set(saturday);
    let c = rig
        .campaign(
            "hours",
            spec(),
            &[contact("+15005550121", &[]), contact("+15005550122", &[])],
        )
        .await;
    assert_eq!(
        rig.dialer.dial_next().await.unwrap(),
        Some(Dialled::Returned)
    );
    assert_eq!(
        rig.queue().hold(&tenant(), &c).await.unwrap(),
        Some(Hold::Until(monday_9am_ny))
    );
    assert_eq!(
        rig.dialer.dial_next().await.unwrap(),
        None,
        "the campaign is held"
    );
    rig.clock.set(monday_9am_ny - 1);
    assert_eq!(rig.dialer.dial_next().await.unwrap(), None);
    assert!(rig.twilio.calls().is_empty());
    // Queued, but none dialable until the hours open (what the stuck-queue alert reads).
    assert_eq!(rig.queue().depth(&tenant()).await.unwrap(), 2);
    assert_eq!(
        rig.queue().dialable(monday_9am_ny - 1, 100).await.unwrap(),
        0
    );
    assert_eq!(rig.queue().dialable(monday_9am_ny, 100).await.unwrap(), 2);
    rig.clock.set(monday_9am_ny);
    assert_eq!(rig.dialer.dial_next().await.unwrap(), Some(Dialled::Placed));
    assert_eq!(
        rig.twilio.calls()[0].resource.to,
        "+15005550121",
        "FIFO kept"
    );

    // Callees' own zones: Monday 02:00 UTC is Sunday night in New York, 11:00 in Tokyo.
    let mut own = spec();
    own.calling_hours.callee_time_zone = true;
    let monday_2am_utc = monday_9am_ny - 12 * 3_600_000;
    rig.clock.set(monday_2am_utc);
    let tz = rig
        .campaign(
            "zones",
            own,
            &[
                contact("+15005550123", &[]),
                contact("+15005550124", &[("timezone", "Asia/Tokyo")]),
            ],
        )
        .await;
    // The New York contact waits (the whole campaign is held), so Tokyo's is next.
    assert_eq!(
        rig.dialer.dial_next().await.unwrap(),
        Some(Dialled::Returned)
    );
    assert_eq!(rig.dialer.dial_next().await.unwrap(), None);
    assert!(
        rig.twilio
            .calls()
            .iter()
            .all(|r| r.resource.to != "+15005550124")
    );
    assert!(matches!(
        rig.queue().hold(&tenant(), &tz).await.unwrap(),
        Some(Hold::Until(_))
    ));
}

/// A campaign capped at 2 never has more than 2 calls live: the third waits until one
/// ends, then goes out.
#[tokio::test]
async fn the_campaign_cap_holds() {
    let rig = Rig::start(Callees::new(human()), |_| {}).await;
    let mut capped = spec();
    capped.max_concurrent_calls = 2;
    let numbers = ["+15005550131", "+15005550132", "+15005550133"];
    let contacts: Vec<_> = numbers.iter().map(|n| contact(n, &[])).collect();
    let c = rig.campaign("capped", capped, &contacts).await;
    assert_eq!(rig.dialer.dial_next().await.unwrap(), Some(Dialled::Placed));
    assert_eq!(rig.dialer.dial_next().await.unwrap(), Some(Dialled::Placed));
    assert_eq!(rig.dialer.dial_next().await.unwrap(), None, "at the cap");
    assert_eq!(rig.queue().active(&tenant(), Some(&c)).await.unwrap(), 2);
    eventually(
        "a slot frees up and the third call goes out",
        Duration::from_secs(20),
        || async { (rig.dialer.dial_next().await.ok()? == Some(Dialled::Placed)).then_some(()) },
    )
    .await
    .unwrap();
    rig.settled().await;
    assert!(
        rig.twilio.max_live_calls() <= 2,
        "{}",
        rig.twilio.max_live_calls()
    );
    assert_eq!(rig.twilio.calls().len(), 3);
}

/// Two dialers share one account's calls-per-second bucket in Redis: 12 calls at 4 per
/// second (burst 1) take about three seconds, and no second of them holds more than 5.
#[tokio::test]
async fn two_dialers_share_the_calls_per_second_limit() {
    let rig = Rig::start(Callees::new(Callee::Busy), |c| {
        c.cps = 4.0;
        c.cps_burst = 1;
    })
    .await;
    let mut once = spec();
    once.retry.max_attempts = 1;
    let contacts: Vec<_> = (0..12)
        .map(|i| contact(&format!("+150055502{i:02}"), &[]))
        .collect();
    rig.campaign("cps", once, &contacts).await;
    // Each its own Redis connection and settings; both on the real clock (moved to a
    // weekday morning), so the bucket refills as time passes.
    let replica = || {
        sb_dialer::Dialer::new(
            rig.runtime.redis.campaign_queue(),
            std::sync::Arc::new(rig.runtime.publisher.clone()),
            rig::settings(
                rig.dialer.settings.rest.base(),
                &rig.dialer.settings.dialer_url,
                |c| {
                    c.cps = 4.0;
                    c.cps_burst = 1;
                },
            ),
            std::sync::Arc::new(rig::Shifted::to(rig::THURSDAY_10AM_NY)),
        )
    };
    let (first, second) = (replica(), replica());
    let drain = |d: sb_dialer::Dialer| async move {
        let mut placed = 0;
        // A `Returned` (no token within its wait) is tried again; `None`: nothing left.
        while let Some(result) = d.dial_next().await.unwrap() {
            placed += usize::from(result == Dialled::Placed);
        }
        placed
    };
    let (a, b) = tokio::join!(drain(first), drain(second));
    assert_eq!(a + b, 12);
    assert!(a > 0 && b > 0, "both dialed: {a} {b}");
    rig::assert_rate(rig.twilio.created_at(), 5);
}

/// With a Twilio API key (`SK…` and its secret) the dialer places calls without the auth
/// token in its REST requests; a key Twilio does not know places none.
#[tokio::test]
async fn an_api_key_places_calls_in_place_of_the_auth_token() {
    const KEY: &str = "SK0123456789abcdef0123456789abcdef";
    let with_key = |secret: &'static str| {
        move |c: &mut sb_dialer::DialerConfig| {
            c.twilio_api_key_sid = Some(KEY.into());
            c.twilio_api_key_secret = Some(sb_runtime::Secret::new(secret));
        }
    };
    let rig = Rig::start(Callees::new(human()), with_key("key-secret")).await;
    rig.twilio.add_api_key(KEY, "key-secret");
    rig.campaign(
        "keyed",
        spec(),
        &[contact("+15005550121", &[("name", "Ann")])],
    )
    .await;
    assert_eq!(rig.dialer.dial_next().await.unwrap(), Some(Dialled::Placed));
    assert_eq!(rig.twilio.calls().len(), 1);

    let rig = Rig::start(Callees::new(human()), with_key("wrong-secret")).await;
    rig.twilio.add_api_key(KEY, "key-secret");
    rig.campaign(
        "keyed",
        spec(),
        &[contact("+15005550122", &[("name", "Ann")])],
    )
    .await;
    assert_ne!(rig.dialer.dial_next().await.unwrap(), Some(Dialled::Placed));
    assert!(rig.twilio.calls().is_empty());
    let refused = rig.twilio.requests();
    assert!(refused.iter().all(|r| r.status == 401), "{refused:?}");
}
