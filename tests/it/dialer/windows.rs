//! A dialer that dies in any window of a dial (ARCHITECTURE §6, "Dial attempts"): after
//! the pop, after recording the attempt, after Twilio created the call but before its sid
//! was recorded, and after. Another dialer (the callbacks and the reconciler) finishes
//! every contact, each with exactly one call, never two at once.

use std::time::Duration;

use sb_dialer::Dialled;
use sb_dialer::clock::{Clock as _, SystemClock};
use sb_dialer::reconcile::Reconciled;
use sb_runtime::redis::campaigns::ContactState;
use sb_sim::twilio::Callees;
use sb_tests::eventually;

use super::rig::{Rig, always_open, contact, human, tenant};

/// The four windows, one contact each, on a clock that starts at the real time (the
/// stand-in stamps calls with it, and the reconciler matches an attempt to a call by it).
#[tokio::test]
async fn a_dialer_dying_in_any_window_loses_no_contact_and_never_calls_twice() {
    let rig = Rig::start(Callees::new(human()), |c| {
        c.reconcile_secs = 10;
        c.orphan_secs = 5;
        c.lease_secs = 30;
    })
    .await;
    rig.clock.set(SystemClock.now_ms());
    let numbers = [
        "+15005550301",
        "+15005550302",
        "+15005550303",
        "+15005550304",
    ];
    let contacts: Vec<_> = numbers.iter().map(|n| contact(n, &[])).collect();
    let c = rig.campaign("windows", always_open(), &contacts).await;
    let q = rig.queue();
    let def = rig.dialer.campaign(&tenant(), &c).await.unwrap().unwrap();
    let now = rig.clock.now_ms();

    // 1. Dies holding the lease.
    let _lost = q.pop(now, Duration::from_secs(30)).await.unwrap().unwrap();
    // 2. Dies after recording the attempt, before asking Twilio.
    let lease = q.pop(now, Duration::from_secs(30)).await.unwrap().unwrap();
    let unsent = rig
        .dialer
        .prepare(lease, def.clone())
        .await
        .unwrap()
        .unwrap();
    // 3. Dies after Twilio created the call, before recording its sid.
    let lease = q.pop(now, Duration::from_secs(30)).await.unwrap().unwrap();
    let sent = rig
        .dialer
        .prepare(lease, def.clone())
        .await
        .unwrap()
        .unwrap();
    let call = rig
        .dialer
        .settings
        .rest
        .create_call(&sent.create)
        .await
        .unwrap();
    // 4. Dies after the whole dial.
    assert_eq!(rig.dialer.dial_next().await.unwrap(), Some(Dialled::Placed));
    let calling = rig.queue().counts(&tenant(), &c).await.unwrap();
    assert_eq!((calling["leased"], calling["calling"]), (1, 3));
    drop(unsent);

    // Window 3's call ends: its callbacks (served by the survivor) adopt and resolve it.
    eventually(
        "window 3's call resolved by its callbacks",
        Duration::from_secs(20),
        || async {
            let r = rig.record(&c, "+15005550303").await;
            (r.state == ContactState::Done).then_some(())
        },
    )
    .await
    .unwrap();
    assert_eq!(
        rig.queue()
            .attempt(&sent.attempt)
            .await
            .unwrap()
            .unwrap()
            .call_sid(),
        Some(call.sid.as_str())
    );

    // Past the lease and the orphan time: the survivor's reconciler returns both.
    rig.clock.advance(31_000);
    let (reaped, results) = rig.dialer.reconcile_once().await.unwrap();
    assert_eq!(reaped, 1, "window 1's lease");
    assert_eq!(
        results,
        [Reconciled::Abandoned],
        "window 2: no call at Twilio"
    );
    assert_eq!(rig.dialer.dial_next().await.unwrap(), Some(Dialled::Placed));
    assert_eq!(rig.dialer.dial_next().await.unwrap(), Some(Dialled::Placed));
    assert_eq!(rig.dialer.dial_next().await.unwrap(), None);
    rig.settled().await;

    for number in numbers {
        let r = rig.record(&c, number).await;
        assert_eq!((r.state, r.attempts), (ContactState::Done, 1), "{number}");
        assert_eq!(rig.twilio.calls_to(number), 1, "{number}: one call");
    }
    let counts = rig.queue().counts(&tenant(), &c).await.unwrap();
    assert_eq!(counts["done"], 4);
    assert_eq!(
        rig.queue().active(&tenant(), None).await.unwrap(),
        0,
        "every slot freed"
    );
}

/// A call whose callbacks were all lost (they went to a dialer that died): the
/// reconciler asks Twilio, finds the call over and resolves the attempt once.
#[tokio::test]
async fn the_reconciler_resolves_a_call_whose_callbacks_were_lost() {
    let rig = Rig::start(Callees::new(human()), |c| {
        c.reconcile_secs = 10;
        // Callbacks go to a port nobody listens on.
        c.dialer_public_url = Some("http://127.0.0.1:9".into());
    })
    .await;
    rig.clock.set(SystemClock.now_ms());
    let c = rig
        .campaign("lost", always_open(), &[contact("+15005550311", &[])])
        .await;
    assert_eq!(rig.dialer.dial_next().await.unwrap(), Some(Dialled::Placed));
    let sid = rig.twilio.calls()[0].resource.sid.clone();
    rig.twilio
        .wait_until(Duration::from_secs(20), |t| {
            t.call(&sid).is_some_and(|r| r.resource.status.is_final())
        })
        .await;
    assert_eq!(
        rig.record(&c, "+15005550311").await.state,
        ContactState::Calling
    );
    rig.clock.advance(10_000);
    let (_, results) = rig.dialer.reconcile_once().await.unwrap();
    assert_eq!(results, [Reconciled::Resolved]);
    let r = rig.record(&c, "+15005550311").await;
    assert_eq!(
        (r.state, r.reason.as_str()),
        (ContactState::Done, "completed")
    );
    let (_, again) = rig.dialer.reconcile_once().await.unwrap();
    assert!(again.is_empty(), "resolved once");
}
