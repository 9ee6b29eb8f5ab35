//! Ring 2: the webhooks stage's real `handle`, its real HTTP client against the
//! tenant-server stand-in (which checks the signature), and a call log of the test's own
//! instead of JetStream.

#![allow(clippy::unwrap_used)] // a test file: helpers panic on failure by design

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use sb_replay::index::IndexError;
use sb_replay::summary::CallSummary;
use sb_replay::{CallLog, ReplayError, Stored};
use sb_runtime::tenants::testing::{TenantToml, secret_env};
use sb_runtime::testing::drive;
use sb_runtime::{LiveTenants, StageError};
use sb_schemas::testing::{sid, tenant_id};
use sb_schemas::{Body, CallSid, End, EndReason, Envelope, Start};
use sb_sim::tenant::{self, ToolScript};
use sb_webhooks::{CallLogs, Webhooks, WebhooksConfig};
use serde_json::Value;

const SECRET: &str = "webhook-secret";

/// A log with the call's `start` and `end`; the summaries indexed.
#[derive(Default)]
struct OneCall {
    indexed: Mutex<Vec<CallSummary>>,
}

impl CallLogs for OneCall {
    fn load<'a>(
        &'a self,
        sid: &'a CallSid,
        _audio: bool,
    ) -> BoxFuture<'a, Result<CallLog, ReplayError>> {
        let start = Envelope::new(
            tenant_id("acme"),
            sid.clone(),
            0,
            Body::Start(Start {
                stream_sid: "MZ1".into(),
                account_sid: "AC1".into(),
                from: "+14155551234".into(),
                to: "+15005550006".into(),
                custom_parameters: Default::default(),
            }),
        );
        let ended = Envelope::new(
            tenant_id("acme"),
            sid.clone(),
            2,
            Body::End(End {
                reason: EndReason::Stop,
            }),
        );
        Box::pin(async move {
            Ok(CallLog {
                events: [start, ended]
                    .into_iter()
                    .enumerate()
                    .map(|(i, event)| Stored {
                        stream: "CALLS",
                        seq: i as u64 + 1,
                        event,
                    })
                    .collect(),
                undecodable: 0,
            })
        })
    }

    fn index<'a>(&'a self, summary: &'a CallSummary) -> BoxFuture<'a, Result<(), IndexError>> {
        self.indexed.lock().unwrap().push(summary.clone());
        Box::pin(async { Ok(()) })
    }
}

async fn rig(fail: u32) -> (Webhooks, sb_sim::SimServer, Arc<OneCall>) {
    let server = tenant::spawn(tenant::Config {
        secret: Some(SECRET.into()),
        hooks: [(
            "acme".to_owned(),
            ToolScript {
                fail,
                ..ToolScript::default()
            },
        )]
        .into(),
        ..tenant::Config::default()
    })
    .await
    .unwrap();
    let mut hooks = toml::Table::new();
    hooks.insert(
        "url".into(),
        format!("{}/webhooks/acme", server.http_url()).into(),
    );
    let tenants = TenantToml::new()
        .tier("t", 4, 60)
        .tenant("acme", "+15005550006", "t")
        .set("signing_secret_env", secret_env("acme"))
        .set("webhooks", hooks)
        .tenant("plain", "+15005550007", "t")
        .parse()
        .unwrap();
    let logs = Arc::new(OneCall::default());
    let worker = Webhooks::new(
        LiveTenants::fixed(tenants),
        logs.clone(),
        WebhooksConfig::defaults(),
        |var| (var == secret_env("acme")).then(|| SECRET.to_owned()),
    )
    .unwrap();
    (worker, server, logs)
}

fn end(tenant: &str) -> Envelope {
    Envelope::new(
        tenant_id(tenant),
        sid(9),
        2,
        Body::End(End {
            reason: EndReason::Stop,
        }),
    )
}

async fn received(server: &sb_sim::SimServer) -> Vec<Value> {
    tenant::fetch_received(&server.http_url()).await.unwrap()
}

/// `end` becomes a signed `call.ended` whose id is the end event's; nothing is emitted.
#[tokio::test]
async fn an_end_is_delivered_signed_with_its_event_id() {
    let (worker, server, _) = rig(0).await;
    let input = end("acme");
    let driven = drive(&worker, input.clone()).await;
    driven.result.as_ref().unwrap();
    assert!(driven.outputs.is_empty());
    let got = received(&server).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["signature"], "valid");
    assert_eq!(got[0]["event"], "call.ended");
    assert_eq!(got[0]["idempotency_key"], input.id.to_string());
    assert_eq!(got[0]["body"]["data"]["from"], "+14155551234");
}

/// A failing endpoint is a retry with a delay (the runner NAKs); a tenant without
/// webhooks sends nothing; an event past the retry window is dead-lettered.
#[tokio::test]
async fn failures_retry_and_old_events_are_given_up() {
    let (worker, server, _) = rig(5).await;
    let failed = drive(&worker, end("acme")).await;
    assert!(
        matches!(failed.result, Err(StageError::Retry { after: Some(_), .. })),
        "{:?}",
        failed.result
    );
    assert_eq!(received(&server).await[0]["status"], 500);

    drive(&worker, end("plain")).await.result.unwrap();
    assert_eq!(received(&server).await.len(), 1, "plain has no webhooks");

    let mut old = end("acme");
    old.at -= 2 * 3_600 * 1_000_000;
    let expired = drive(&worker, old).await;
    assert!(
        matches!(
            expired.result,
            Err(StageError::Reject {
                kind: "webhook_expired",
                ..
            })
        ),
        "{:?}",
        expired.result
    );
    assert_eq!(received(&server).await.len(), 1, "nothing sent for it");
}

/// Every ended call is indexed, whether its tenant takes webhooks or not; a start is not.
#[tokio::test]
async fn every_end_is_indexed() {
    let (worker, _server, logs) = rig(0).await;
    drive(&worker, end("plain")).await.result.unwrap();
    let indexed = logs.indexed.lock().unwrap().clone();
    assert_eq!(indexed.len(), 1);
    assert_eq!(indexed[0].call_sid, sid(9).as_str());
    assert_eq!(indexed[0].outcome, "completed");
    assert_eq!(indexed[0].from.as_deref(), Some("+14155551234"));
}
