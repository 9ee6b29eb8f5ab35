//! The Twilio REST stand-in over real HTTP (reqwest): create, fetch, hang up and redirect
//! calls; Twilio's auth, validation, 404 and injected-429 answers; every request recorded.
//! State: one stand-in per test on a free loopback port.

#![allow(clippy::unwrap_used)] // a test file: helpers panic on failure by design

use std::time::Duration;

use sb_sim::SimServer;
use sb_sim::twilio::{self, Config, TwilioState};
use sb_twilio::{CallStatus, CallTarget, CreateCall, UpdateCall};
use serde_json::Value;

const AC: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "sekret-token";

async fn start() -> (SimServer, TwilioState, reqwest::Client) {
    let (server, state) = twilio::spawn(Config::new(AC, TOKEN)).await.unwrap();
    (server, state, reqwest::Client::new())
}

fn create_body() -> String {
    let mut create = CreateCall::new(
        "+14155551234",
        "+15005550006",
        CallTarget::Url("https://agent.example.com/twilio/voice".into()),
    );
    create.status_callback = Some("https://agent.example.com/twilio/status".into());
    create.status_callback_event = vec!["initiated".into(), "answered".into(), "completed".into()];
    create.to_form()
}

async fn post(client: &reqwest::Client, url: String, token: &str, body: String) -> (u16, Value) {
    let response = client
        .post(url)
        .basic_auth(AC, Some(token))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn get(client: &reqwest::Client, url: String) -> (u16, Value) {
    let response = client
        .get(url)
        .basic_auth(AC, Some(TOKEN))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Create answers 201 with a queued outbound-api call; fetch returns it; `Status=completed`
/// hangs it up; a redirect after that is refused with 21220; the stand-in recorded it all.
#[tokio::test]
async fn create_fetch_hang_up() {
    let (server, state, client) = start().await;
    let base = format!("{}/2010-04-01/Accounts/{AC}/Calls", server.http_url());
    let (status, call) = post(&client, format!("{base}.json"), TOKEN, create_body()).await;
    assert_eq!(status, 201, "{call}");
    assert_eq!(
        (call["status"].as_str(), call["direction"].as_str()),
        (Some("queued"), Some("outbound-api"))
    );
    assert_eq!(call["to"], "+14155551234");
    assert_eq!(call["account_sid"], AC);
    let sid = call["sid"].as_str().unwrap().to_owned();
    assert!(sb_twilio::rest::is_sid(&sid, "CA"), "{sid}");

    let (status, fetched) = get(&client, format!("{base}/{sid}.json")).await;
    assert_eq!((status, fetched["sid"].as_str()), (200, Some(sid.as_str())));

    let (status, done) = post(
        &client,
        format!("{base}/{sid}.json"),
        TOKEN,
        UpdateCall::hang_up().to_form(),
    )
    .await;
    assert_eq!((status, done["status"].as_str()), (200, Some("completed")));
    assert!(
        done["end_time"].is_string() && done["duration"].is_string(),
        "{done}"
    );

    let redirect = UpdateCall {
        url: Some("https://agent.example.com/next".into()),
        ..UpdateCall::default()
    };
    let (status, error) = post(
        &client,
        format!("{base}/{sid}.json"),
        TOKEN,
        redirect.to_form(),
    )
    .await;
    assert_eq!((status, error["code"].as_u64()), (400, Some(21220)));

    let record = state.call(&sid).unwrap();
    assert_eq!(record.resource.status, CallStatus::Completed);
    assert_eq!(
        record.create.status_callback_event,
        ["initiated", "answered", "completed"]
    );
    assert_eq!(record.updates, vec![UpdateCall::hang_up()]);
    let statuses: Vec<u16> = state.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [201, 200, 200, 400]);
}

/// A live call can be redirected with `Url` or `Twiml`; both updates are recorded.
#[tokio::test]
async fn redirect_live_call() {
    let (server, state, client) = start().await;
    let base = format!("{}/2010-04-01/Accounts/{AC}/Calls", server.http_url());
    let (_, call) = post(&client, format!("{base}.json"), TOKEN, create_body()).await;
    let sid = call["sid"].as_str().unwrap();
    for update in [
        UpdateCall {
            url: Some("https://agent.example.com/transfer".into()),
            method: Some("POST".into()),
            ..UpdateCall::default()
        },
        UpdateCall {
            twiml: Some("<Response><Dial>+14155550000</Dial></Response>".into()),
            ..UpdateCall::default()
        },
    ] {
        let (status, body) = post(
            &client,
            format!("{base}/{sid}.json"),
            TOKEN,
            update.to_form(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let updates = state.call(sid).unwrap().updates;
    assert_eq!(
        updates[0].url.as_deref(),
        Some("https://agent.example.com/transfer")
    );
    assert!(updates[1].twiml.as_deref().unwrap().contains("<Dial>"));
}

/// Wrong or missing credentials answer 401 / 20003; another account's path 404; unknown
/// calls 404 / 20404; invalid creates 400 with Twilio's 21xxx codes.
#[tokio::test]
async fn auth_validation_and_not_found() {
    let (server, state, client) = start().await;
    let base = format!("{}/2010-04-01/Accounts/{AC}/Calls", server.http_url());
    let (status, error) = post(&client, format!("{base}.json"), "wrong", create_body()).await;
    assert_eq!(
        (status, error["code"].as_u64(), error["status"].as_u64()),
        (401, Some(20003), Some(401))
    );
    let response = client
        .post(format!("{base}.json"))
        .body(create_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert!(response.headers().contains_key("www-authenticate"));

    let other = format!(
        "{}/2010-04-01/Accounts/AC99999999999999999999999999999999/Calls.json",
        server.http_url()
    );
    assert_eq!(post(&client, other, TOKEN, create_body()).await.0, 404);

    let missing = format!("{base}/CA00000000000000000000000000000000.json");
    let (status, error) = get(&client, missing.clone()).await;
    assert_eq!((status, error["code"].as_u64()), (404, Some(20404)));
    assert!(error["more_info"].as_str().unwrap().ends_with("/20404"));
    assert_eq!(
        post(&client, missing, TOKEN, "Status=completed".into())
            .await
            .0,
        404
    );

    let (status, error) = post(
        &client,
        format!("{base}.json"),
        TOKEN,
        "From=%2B15005550006&Url=https://a/b".into(),
    )
    .await;
    assert_eq!((status, error["code"].as_u64()), (400, Some(21201)));
    let (status, error) = post(
        &client,
        format!("{base}.json"),
        TOKEN,
        "To=%2B14155551234&From=%2B15005550006".into(),
    )
    .await;
    assert_eq!((status, error["code"].as_u64()), (400, Some(21205)));
    assert!(state.calls().is_empty());
    assert_eq!(state.requests().len(), 7);
}

/// An injected share of 429s: exactly half of four creates answer 429 / 20429, and a
/// condition on the recorded requests can be awaited.
#[tokio::test]
async fn injected_rate_limit() {
    let (server, state, client) = start().await;
    state.set_rate_limit_share(0.5);
    let url = format!("{}/2010-04-01/Accounts/{AC}/Calls.json", server.http_url());
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (status, body) = post(&client, url.clone(), TOKEN, create_body()).await;
        if status == 429 {
            assert_eq!(
                (body["code"].as_u64(), body["status"].as_u64()),
                (Some(20429), Some(429))
            );
        }
        statuses.push(status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(state.calls().len(), 2);
    let limited = |s: &TwilioState| {
        s.requests()
            .iter()
            .filter(|r| r.error_code == Some(20429))
            .count()
            == 2
    };
    assert!(state.wait_until(Duration::from_secs(1), limited).await);
    state.set_rate_limit_share(0.0);
    assert_eq!(post(&client, url, TOKEN, create_body()).await.0, 201);
}

/// Listing: newest first, filtered by `To` and `Status`, cut to `PageSize`, with Twilio's
/// paging fields and no next page; a bad `Status` is a 400. An injected 500 share answers
/// creates with 500 / 20500; an invalid `To` stays 400 / 21211.
#[tokio::test]
async fn list_filters_and_server_errors() {
    let (server, state, client) = start().await;
    let url = format!("{}/2010-04-01/Accounts/{AC}/Calls.json", server.http_url());
    let mut sids = Vec::new();
    for to in ["+14155550001", "+14155550002", "+14155550001"] {
        let mut create = CreateCall::new(
            to,
            "+15005550006",
            CallTarget::Url("https://a.example/v".into()),
        );
        create.timeout_secs = Some(20);
        let (status, call) = post(&client, url.clone(), TOKEN, create.to_form()).await;
        assert_eq!(status, 201);
        sids.push(call["sid"].as_str().unwrap().to_owned());
    }
    let (status, page) = get(&client, format!("{url}?To=%2B14155550001&Status=queued")).await;
    assert_eq!(status, 200, "{page}");
    let listed: Vec<&str> = page["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["sid"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [sids[2].as_str(), sids[0].as_str()], "newest first");
    assert_eq!(
        (page["page"].as_u64(), page["page_size"].as_u64()),
        (Some(0), Some(50))
    );
    assert!(page["next_page_uri"].is_null() && page["first_page_uri"].is_string());
    let (_, one) = get(&client, format!("{url}?PageSize=1")).await;
    assert_eq!(one["calls"].as_array().unwrap().len(), 1);
    let (_, none) = get(&client, format!("{url}?Status=completed")).await;
    assert!(none["calls"].as_array().unwrap().is_empty());
    let (status, error) = get(&client, format!("{url}?Status=gone")).await;
    assert_eq!((status, error["status"].as_u64()), (400, Some(400)));

    state.set_server_error_share(0.5);
    let mut codes = Vec::new();
    for _ in 0..4 {
        let (status, body) = post(&client, url.clone(), TOKEN, create_body()).await;
        codes.push((status, body["code"].as_u64()));
    }
    assert_eq!(
        codes.iter().filter(|c| **c == (500, Some(20500))).count(),
        2,
        "{codes:?}"
    );
    state.set_server_error_share(0.0);
    let (status, error) = post(
        &client,
        url,
        TOKEN,
        "To=%2B1-415-555&From=%2B15005550006&Url=https://a/b".into(),
    )
    .await;
    assert_eq!((status, error["code"].as_u64()), (400, Some(21211)));
}
