//! Service start-up against real servers: topology applied idempotently, readiness,
//! metrics, and clear errors for bad configuration.

use std::{io::Write, time::Duration};

use axum::{body::Body, http::Request};
use sb_runtime::{Runtime, Topology, http};
use sb_tests::TestEnv;
use tower::ServiceExt;

async fn get(app: axum::Router, path: &str) -> (u16, String) {
    let response = app
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// `/ready` is 200 with NATS and Redis up and turns 503 once shutdown begins; `/health`
/// stays 200; `/metrics` renders Prometheus text.
#[tokio::test]
async fn readiness_follows_shutdown() {
    let env = TestEnv::start().await.unwrap();
    let rt = env.runtime("itest").await.unwrap();
    let app = http::router(rt.health(http::ReadyNeeds::NATS_AND_REDIS));
    assert_eq!(get(app.clone(), "/ready").await, (200, "ready".into()));
    metrics::counter!(sb_runtime::metrics::Metric::EventsPublished.name(), "kind" => "probe")
        .increment(1);
    let (status, text) = get(app.clone(), "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        text.contains("switchboard_events_published_total{kind=\"probe\"}"),
        "{text}"
    );

    rt.shutdown.trigger();
    assert_eq!(get(app.clone(), "/ready").await, (503, "draining".into()));
    assert_eq!(get(app, "/health").await.0, 200);
}

/// Applying the topology twice is harmless, and a changed consumer setting is updated in
/// place (create-or-update), as every replica does at start-up.
#[tokio::test]
async fn topology_apply_is_idempotent_and_updates() {
    let env = TestEnv::start().await.unwrap();
    let mut topology = Topology::embedded().unwrap();
    topology.apply(&env.js).await.unwrap();
    let agent = topology
        .consumers
        .iter_mut()
        .find(|c| c.name() == "agent")
        .unwrap();
    agent.config.max_deliver = 7;
    topology.apply(&env.js).await.unwrap();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = env
        .js
        .get_consumer_from_stream("agent", "CALLS")
        .await
        .unwrap();
    assert_eq!(consumer.info().await.unwrap().config.max_deliver, 7);
    let mut calls = env.js.get_stream("CALLS").await.unwrap();
    assert_eq!(
        calls.info().await.unwrap().config.duplicate_window,
        Duration::from_secs(120)
    );
}

/// A broken tenants file stops start-up with a message naming the tenant and the field;
/// an unreachable NATS names the URL.
#[tokio::test]
async fn bad_configuration_fails_fast_and_clearly() {
    let env = TestEnv::start().await.unwrap();
    let shipped =
        std::fs::read_to_string(sb_tests::workspace_root().join("deploy/base/tenants.toml"))
            .unwrap();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(
        shipped
            .replace("voice = \"en-US-GuyNeural\"", "voice = \"\"")
            .as_bytes(),
    )
    .unwrap();
    let mut config = env.runtime_config();
    config.tenants_file = file.path().to_owned();
    let err = Runtime::start("itest", config)
        .await
        .err()
        .expect("must fail")
        .to_string();
    assert!(
        err.contains("tenant \"globex\": field `voice`: must not be empty"),
        "{err}"
    );

    let mut config = env.runtime_config();
    config.nats.url = "nats://127.0.0.1:1".into();
    let err = Runtime::start("itest", config)
        .await
        .err()
        .expect("must fail")
        .to_string();
    assert!(
        err.contains("cannot connect to NATS at nats://127.0.0.1:1"),
        "{err}"
    );
}
