//! Per-tenant retention against a real nats-server (ring 3, issue 17): a tenant's events
//! and audio are published with its `Nats-TTL`, and the streams drop them when its time is
//! up, while another tenant's calls stay.

use std::time::Duration;

use async_nats::header::NATS_MESSAGE_TTL;
use bytes::Bytes;
use sb_runtime::tenants::testing::TenantToml;
use sb_runtime::{LiveTenants, Publisher};
use sb_schemas::testing::sid;
use sb_schemas::{Audio, Body, Envelope, Mulaw, TenantId, Transcript};
use sb_tests::{TestEnv, eventually};

fn events(tenant: &str, n: u128) -> [Envelope; 2] {
    let tenant = TenantId::parse(tenant).unwrap();
    let transcript = Body::Transcript(Transcript {
        epoch: 1,
        text: "What are your hours?".into(),
        confidence: 0.9,
        audio_seq: 1,
        speech_ended_at: 1,
    });
    let audio = Body::Audio(Audio {
        seq: 1,
        timestamp_ms: 20,
        payload: Mulaw(Bytes::from_static(&[0xFF; 160])),
    });
    [
        Envelope::new(tenant.clone(), sid(n), 1, transcript),
        Envelope::new(tenant, sid(n), 1, audio),
    ]
}

/// Messages stored for call `n` in `stream`.
async fn stored(env: &TestEnv, stream: &str, n: u128) -> u64 {
    let filter = match stream {
        "CALLS" => format!("call.*.{}.>", sid(n)),
        _ => format!("audio.*.{}.>", sid(n)),
    };
    let stream = env.js.get_stream(stream).await.unwrap();
    let counts: Vec<(String, usize)> =
        futures::TryStreamExt::try_collect(stream.info_with_subjects(filter).await.unwrap())
            .await
            .unwrap();
    counts.iter().map(|(_, n)| *n as u64).sum()
}

#[tokio::test]
async fn a_tenants_retention_drops_its_calls_and_keeps_the_others() {
    let env = TestEnv::start().await.unwrap();
    let mut retention = toml::Table::new();
    retention.insert("events_secs".into(), 2.into());
    retention.insert("audio_secs".into(), 1.into());
    let tenants = TenantToml::new()
        .tier("t", 4, 60)
        .tenant("acme", "+15005550006", "t")
        .tenant("brief", "+15005550007", "t")
        .set("retention", retention)
        .parse()
        .unwrap();
    let publisher = Publisher::new(env.js.clone()).with_retention(LiveTenants::fixed(tenants));
    for event in events("brief", 1).iter().chain(&events("acme", 2)) {
        publisher.publish(event).await.unwrap();
    }
    for (stream, n) in [("CALLS", 1), ("AUDIO", 1), ("CALLS", 2), ("AUDIO", 2)] {
        assert_eq!(stored(&env, stream, n).await, 1, "{stream} call {n}");
    }
    let calls = env.js.get_stream("CALLS").await.unwrap();
    let brief = calls
        .get_last_raw_message_by_subject(&format!("call.brief.{}.transcript", sid(1)))
        .await
        .unwrap();
    assert_eq!(
        brief.headers.get(NATS_MESSAGE_TTL).map(|v| v.as_str()),
        Some("2s")
    );
    let acme = calls
        .get_last_raw_message_by_subject(&format!("call.acme.{}.transcript", sid(2)))
        .await
        .unwrap();
    assert!(acme.headers.get(NATS_MESSAGE_TTL).is_none());

    eventually("brief's call expired", Duration::from_secs(20), || async {
        let left = stored(&env, "CALLS", 1).await + stored(&env, "AUDIO", 1).await;
        (left == 0).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(stored(&env, "CALLS", 2).await, 1, "acme's events stay");
    assert_eq!(stored(&env, "AUDIO", 2).await, 1, "acme's audio stays");
}
