//! The internal plane is authenticated and least-privileged, against real servers: every
//! service's NATS user may do what its role needs and is refused (and counts the refusal)
//! what it does not; NATS and Redis refuse a login without the password; the operator's
//! reconcile reports an operator's change instead of silently undoing it.

use std::time::Duration;

use async_nats::Client;
use futures::{FutureExt as _, StreamExt as _};
use metrics_exporter_prometheus::PrometheusHandle;
use sb_runtime::{
    Topology,
    metrics::{self, Metric},
    nats::{self, NatsLogin},
    reconcile::Change,
};
use sb_schemas::{
    Kind,
    roles::Role,
    subject,
    testing::{sid, tenant_id},
};
use sb_tests::{NatsOptions, NatsServer, TestEnv, eventually};

/// One subject a role may publish and one it may not, one it may subscribe to and one it
/// may not (concrete subjects of one call).
fn cases(role: Role) -> (String, String, String, String) {
    let (t, s) = (tenant_id("acme"), sid(7));
    let event = |kind| subject::event(&t, &s, kind);
    match role {
        Role::Ingress => (
            event(Kind::End),
            event(Kind::Transcript),
            event(Kind::TtsChunk),
            event(Kind::Sentence),
        ),
        Role::Stt => (
            event(Kind::Transcript),
            event(Kind::BargeIn),
            event(Kind::Audio),
            event(Kind::TtsChunk),
        ),
        Role::Agent => (
            event(Kind::Sentence),
            event(Kind::End),
            // The agent reads only through its durable consumer: its inbox is all it has.
            format!("{}.probe", role.inbox_prefix()),
            event(Kind::Transcript),
        ),
        Role::Tts => (
            event(Kind::TtsChunk),
            event(Kind::Audio),
            format!("{}.probe", role.inbox_prefix()),
            event(Kind::Sentence),
        ),
        Role::Dialer => (
            event(Kind::DialResult),
            // A forged hang-up or transcript needs the ingress' or stt's password.
            event(Kind::End),
            format!("{}.probe", role.inbox_prefix()),
            event(Kind::Transcript),
        ),
        Role::Webhooks => (
            "$JS.API.STREAM.INFO.CALLS".to_owned(),
            // It reads the log and writes nothing: no forged hang-up either.
            event(Kind::End),
            format!("{}.probe", role.inbox_prefix()),
            event(Kind::Sentence),
        ),
        Role::Replay => (
            "$JS.API.STREAM.INFO.CALLS".to_owned(),
            event(Kind::Start),
            format!("{}.probe", role.inbox_prefix()),
            "_INBOX_agent.probe".to_owned(),
        ),
        Role::Console => (
            "$JS.API.STREAM.INFO.KV_TENANTS".to_owned(),
            // It writes the tenants bucket, never an event.
            event(Kind::End),
            format!("{}.probe", role.inbox_prefix()),
            "_INBOX_ingress.probe".to_owned(),
        ),
        Role::Ops => unreachable!("ops may do anything"),
    }
}

fn denied(handle: &PrometheusHandle, op: &str) -> u64 {
    let line = format!("{}{{op=\"{op}\"}} ", Metric::NatsPermissionDenied.name());
    handle
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&line).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// A round trip on `client`'s connection: the server has processed everything it sent
/// before (`flush` only empties the client's buffer). Every role may read a stream's info.
async fn barrier(client: &Client) {
    let js = async_nats::jetstream::new(client.clone());
    js.get_stream("CALLS")
        .await
        .expect("a round trip to the server");
}

/// Waits until the process has counted more refusals of `op` than `before`.
async fn refusal_counted(handle: &PrometheusHandle, op: &str, before: u64, role: Role) {
    eventually("the refusal counted", Duration::from_secs(10), || {
        let n = denied(handle, op);
        async move { (n > before).then_some(()) }
    })
    .await
    .unwrap_or_else(|e| panic!("{role:?} {op}: {e}"));
}

/// Publishes `forbidden`, waits for its refusal, then publishes `allowed`: NATS keeps a
/// connection's order, so once the observer sees `allowed`, `forbidden` would have
/// arrived first had it passed.
async fn publish_pair(
    client: &Client,
    observer: &Client,
    handle: &PrometheusHandle,
    role: Role,
    (allowed, forbidden): (&str, &str),
) {
    let mut seen = observer.subscribe(allowed.to_owned()).await.unwrap();
    let mut leaked = observer.subscribe(forbidden.to_owned()).await.unwrap();
    barrier(observer).await;
    let before = denied(handle, "publish");
    client
        .publish(forbidden.to_owned(), "forged".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    refusal_counted(handle, "publish", before, role).await;
    client
        .publish(allowed.to_owned(), "ok".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), seen.next())
        .await
        .unwrap_or_else(|_| panic!("{role:?}: the allowed publish to {allowed} arrives"))
        .unwrap();
    assert_eq!(first.subject.as_str(), allowed);
    assert!(
        leaked.next().now_or_never().is_none(),
        "{role:?}: the forbidden publish to {forbidden} reached a subscriber"
    );
}

#[tokio::test]
async fn every_service_user_is_held_to_its_role() {
    let env = TestEnv::start().await.unwrap();
    let handle = metrics::install();
    for role in [
        Role::Ingress,
        Role::Stt,
        Role::Agent,
        Role::Tts,
        Role::Replay,
        Role::Console,
    ] {
        let (may_pub, may_not_pub, may_sub, may_not_sub) = cases(role);
        let client = nats::connect(&env.nats.login(role)).await.unwrap();

        // Publish: the forbidden one is refused and counted, the allowed one arrives.
        let pair = (may_pub.as_str(), may_not_pub.as_str());
        publish_pair(&client, &env.client, &handle, role, pair).await;

        // Subscribe: the forbidden one is refused and counted, the allowed one receives.
        let before = denied(&handle, "subscribe");
        let mut refused = client.subscribe(may_not_sub.clone()).await.unwrap();
        refusal_counted(&handle, "subscribe", before, role).await;
        let mut allowed = client.subscribe(may_sub.clone()).await.unwrap();
        barrier(&client).await;
        env.client
            .publish(may_not_sub.clone(), "secret".into())
            .await
            .unwrap();
        env.client
            .publish(may_sub.clone(), "yours".into())
            .await
            .unwrap();
        env.client.flush().await.unwrap();
        let message = tokio::time::timeout(Duration::from_secs(10), allowed.next())
            .await
            .unwrap_or_else(|_| panic!("{role:?} receives on {may_sub}: {}", env.nats.log()))
            .unwrap();
        assert_eq!(&message.payload[..], b"yours");
        assert!(
            refused.next().now_or_never().flatten().is_none(),
            "{role:?} read {may_not_sub}"
        );
    }
}

/// A service's JetStream reads work through its own consumer only: the agent cannot read
/// (or pull) the tts' consumer, nor delete a stream; each refusal is counted.
#[tokio::test]
async fn a_service_cannot_touch_another_stages_consumer_or_the_streams() {
    let env = TestEnv::start().await.unwrap();
    let handle = metrics::install();
    let agent = nats::connect(&env.nats.login(Role::Agent)).await.unwrap();
    // A refused request gets no answer: wait for it briefly, the refusal is the signal.
    let mut js = async_nats::jetstream::new(agent);
    js.set_timeout(Duration::from_millis(300));
    let own: Result<async_nats::jetstream::consumer::PullConsumer, _> =
        js.get_consumer_from_stream("agent", "CALLS").await;
    assert!(own.is_ok(), "{:?}", own.err());
    assert!(js.get_stream("CALLS").await.is_ok());

    let before = denied(&handle, "publish");
    let other: Result<async_nats::jetstream::consumer::PullConsumer, _> =
        js.get_consumer_from_stream("tts", "CALLS").await;
    assert!(other.is_err(), "the agent read the tts consumer");
    refusal_counted(&handle, "publish", before, Role::Agent).await;
    let before = denied(&handle, "publish");
    assert!(
        js.delete_stream("CALLS").await.is_err(),
        "the agent deleted a stream"
    );
    refusal_counted(&handle, "publish", before, Role::Agent).await;
    assert!(env.js.get_stream("CALLS").await.is_ok());
}

/// No password, no connection: NATS refuses an anonymous or wrong login, Redis a client
/// without its password.
#[tokio::test]
async fn logins_without_the_password_are_refused() {
    let env = TestEnv::start().await.unwrap();
    let anonymous = nats::connect(&NatsLogin::anonymous(&env.nats.url, "intruder")).await;
    assert!(anonymous.is_err(), "anonymous NATS login accepted");
    let wrong = nats::connect(&NatsLogin::as_role(
        &env.nats.url,
        Role::Agent,
        sb_runtime::Secret::new("not-the-password"),
    ))
    .await;
    assert!(wrong.is_err(), "a wrong NATS password accepted");

    let client = redis::Client::open(env.redis.url_without_password()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let refused: Result<String, _> = redis::cmd("GET")
        .arg("session:x")
        .query_async(&mut connection)
        .await;
    let error = refused.unwrap_err();
    assert!(
        error.to_string().to_lowercase().contains("auth"),
        "Redis without the password: {error}"
    );
    let mut with = env.redis_raw().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut with)
        .await
        .unwrap();
}

async fn dlq_config(js: &async_nats::jetstream::Context) -> async_nats::jetstream::stream::Config {
    let mut stream = js.get_stream("DLQ").await.unwrap();
    stream.info().await.unwrap().config.clone()
}

/// An operator raises a stream's replicas by hand and tags it: a check reports the
/// difference, the services' start-up leaves it alone, and an apply changes only the
/// configured field (the tag survives).
#[tokio::test]
async fn reconcile_reports_drift_and_keeps_what_it_does_not_manage() {
    let env = TestEnv::start().await.unwrap();
    let mut info = env
        .js
        .get_stream("DLQ")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    info.max_age = Duration::from_secs(3600);
    info.metadata.insert("owner".into(), "ops-team".into());
    env.js.update_stream(info).await.unwrap();

    let topology = Topology::embedded().unwrap();
    let drift = topology.reconcile(&env.js, false).await.unwrap();
    assert!(
        matches!(drift.as_slice(), [Change::Differs { stream, field, .. }] if stream == "DLQ" && field == "max_age"),
        "{drift:?}"
    );
    let _agent = env.runtime("agent").await.unwrap();
    let live = dlq_config(&env.js).await;
    assert_eq!(
        live.max_age,
        Duration::from_secs(3600),
        "a service changed the stream"
    );

    let applied = topology.reconcile(&env.js, true).await.unwrap();
    assert_eq!(applied, drift);
    let live = dlq_config(&env.js).await;
    assert_eq!(live.max_age, Duration::from_secs(14 * 86_400));
    assert_eq!(
        live.metadata.get("owner").map(String::as_str),
        Some("ops-team")
    );
    assert!(topology.reconcile(&env.js, false).await.unwrap().is_empty());
}

/// With TLS on, a client that trusts the server's CA logs in and publishes; one that does
/// does not (system roots only) cannot verify the server and is refused.
#[tokio::test]
async fn nats_tls_is_required_and_verified() {
    let nats = NatsServer::start_with(NatsOptions {
        tls: true,
        auth: true,
    })
    .await
    .unwrap();
    let login = nats.login(Role::Ops);
    assert!(login.tls_ca.is_some());
    let client = nats::connect(&login).await.unwrap();
    client.publish("call.acme.probe", "x".into()).await.unwrap();
    client.flush().await.unwrap();

    let untrusted = nats::connect(&login.clone().with_tls_ca(None)).await;
    assert!(
        untrusted.is_err(),
        "a client verified the server without its CA"
    );
}
