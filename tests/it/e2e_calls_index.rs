//! End to end: the call index (ring 3, issue 17). Every service as its own process, real
//! NATS and Redis: a finished call's summary is written by the post-call worker and
//! `replay calls` finds it, filtered, without scanning `CALLS`.

use std::time::Duration;

use sb_replay::index::{Filter, recent};
use sb_schemas::CallSid;
use sb_tests::eventually;

use crate::e2e::{asking, call, stack};

#[tokio::test]
async fn a_finished_call_is_in_the_index_with_its_numbers() {
    let (stack, _dir) = stack(|_| {}).await;
    let report = call(&stack, &asking(&["What are your opening hours?"], 20_000)).await;
    let sid = CallSid::parse(&report.call_sid).unwrap();
    let js = stack.jetstream().await.unwrap();
    let acme = Filter {
        tenant: Some("acme".into()),
        limit: 10,
        ..Default::default()
    };
    let row = eventually("the call indexed", Duration::from_secs(30), || {
        let (js, acme) = (js.clone(), acme.clone());
        let sid = sid.as_str().to_owned();
        async move {
            let calls = recent(&js, &acme).await.ok()?;
            calls.into_iter().find(|c| c.call_sid == sid)
        }
    })
    .await
    .unwrap();
    assert_eq!(row.tenant, "acme");
    assert_eq!(row.direction, "inbound");
    assert_eq!(row.to.as_deref(), Some("+15005550006"));
    assert_eq!(row.turns, 1);
    assert_eq!(row.outcome, "completed");
    assert!(row.ended_at > row.started_at);
    let latency = row.latency_ms.expect("the caller's turn was measured");
    assert_eq!(latency.turns, 1);
    assert!(latency.p95 > 0.0);

    // The filters: another tenant, another direction, an outcome it did not have.
    for filter in [
        Filter {
            tenant: Some("globex".into()),
            limit: 10,
            ..Default::default()
        },
        Filter {
            direction: Some("outbound".into()),
            limit: 10,
            ..Default::default()
        },
        Filter {
            outcome: Some("dropped".into()),
            limit: 10,
            ..Default::default()
        },
        Filter {
            since: Some(row.ended_at + 1),
            limit: 10,
            ..Default::default()
        },
    ] {
        let calls = recent(&js, &filter).await.unwrap();
        assert!(
            calls.iter().all(|c| c.call_sid != row.call_sid),
            "{filter:?}"
        );
    }
    let mut out = Vec::new();
    sb_replay::calls::render(std::slice::from_ref(&row), false, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(sid.as_str()) && text.contains("completed"),
        "{text}"
    );
}
