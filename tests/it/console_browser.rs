//! The console's call inspector in a real browser: a call recorded through the real ingress
//! (the replay rig's scripted caller, a test bot standing in for stt, agent and tts: a
//! greeting, then an answer to the caller's key press), its summary in the call index, the
//! console served in-process as its own NATS user, and headless Chromium driven through
//! chromedriver. Also the JSON API's access rules over HTTP. A screenshot of the call page
//! is left in `target/test-artifacts/console-call.png`.

mod browser;

use std::time::Duration;

use fantoccini::{Client, Locator};
use futures::StreamExt as _;
use sb_console::store::TenantsStore;
use sb_console::{ConsoleState, router};
use sb_replay::summary::CallSummary;
use sb_replay::{CallLog, index, latency, wav};
use sb_runtime::tenants::keys::key_hash;
use sb_runtime::{Publisher, Secret};
use sb_schemas::testing::tenant;
use sb_schemas::{Body, CallSid, Kind, Sentence, Token, Transcript, decode, subject};
use sb_tests::{TestEnv, eventually, workspace_root};
use serde_json::{Value, json};

use crate::replay::rig::{new_call, publish_chunks, record_with};
use browser::Driver;

const OPERATOR: &str = "it-operator-token";
const ACME_KEY: &str = "acme-console-key";
const GLOBEX_KEY: &str = "globex-console-key";
const GREETING: &str = "Hello, how can I help?";
const QUESTION: &str = "What are your opening hours?";
const ANSWER: &str = "We are open nine to five.";
/// Waits in the browser: generous, since a loaded CI machine is slow to start Chromium.
const PAGE_WAIT: Duration = Duration::from_secs(20);

/// Records a two-turn call: the greeting on `start`; on the caller's key press, the
/// caller's question as a transcript (turn 1) and the bot's answer, both played.
async fn record(env: &TestEnv, sid: &CallSid) {
    let mut starts = env
        .client
        .subscribe(subject::event(&tenant(), sid, Kind::Start))
        .await
        .unwrap();
    let mut keys = env
        .client
        .subscribe(subject::event(&tenant(), sid, Kind::Dtmf))
        .await
        .unwrap();
    let publisher = Publisher::new(env.js.clone());
    let bot_sid = sid.clone();
    let bot = async move {
        let start = decode(&starts.next().await.unwrap().payload).unwrap();
        let sentence = |text: &str| {
            Body::Sentence(Sentence {
                index: 0,
                text: text.into(),
                last: true,
                fallback: false,
            })
        };
        publisher
            .publish(&start.follow(sentence(GREETING)))
            .await
            .unwrap();
        publish_chunks(&publisher, &bot_sid, 0).await;
        let key = decode(&keys.next().await.unwrap().payload).unwrap();
        let mut turn = key.follow(Body::Transcript(Transcript {
            epoch: 1,
            text: QUESTION.into(),
            confidence: 0.93,
            audio_seq: 0,
            speech_ended_at: key.at,
        }));
        turn.turn = 1;
        publisher.publish(&turn).await.unwrap();
        let token = Body::Token(Token {
            index: 0,
            text: "We".into(),
        });
        publisher.publish(&turn.follow(token)).await.unwrap();
        publisher
            .publish(&turn.follow(sentence(ANSWER)))
            .await
            .unwrap();
        publish_chunks(&publisher, &bot_sid, 1).await;
    };
    let scenario = "tones = true\nbot_quiet_ms = 300\n[[steps]]\nwait_for_bot = 10000\n\
                    [[steps]]\ndtmf = \"7\"\n[[steps]]\nwait_for_bot = 10000\n";
    record_with(env, sid, scenario, bot).await;
}

/// The shipped tenants file with an API key for acme and one for globex, stored as a new
/// revision of the live tenants file (as the admin API stores one).
async fn add_keys(env: &TestEnv) -> String {
    let shipped =
        std::fs::read_to_string(workspace_root().join("deploy/base/tenants.toml")).unwrap();
    let mut doc: toml::Table = toml::from_str(&shipped).unwrap();
    for t in doc["tenant"].as_array_mut().unwrap() {
        let key = match t["id"].as_str().unwrap() {
            "acme" => ACME_KEY,
            "globex" => GLOBEX_KEY,
            _ => continue,
        };
        let hashes = toml::Value::Array(vec![key_hash(key).into()]);
        t.as_table_mut()
            .unwrap()
            .insert("api_key_sha256".into(), hashes);
    }
    let store = TenantsStore::open(&env.js, shipped.clone()).await.unwrap();
    store.put(&toml::to_string(&doc).unwrap(), 0).await.unwrap();
    shipped
}

/// Signs in through the login form with `token` and waits for the calls list.
async fn sign_in(browser: &Client, base: &str, token: &str) {
    browser
        .goto(&format!("{base}/console/calls"))
        .await
        .unwrap();
    let url = browser.current_url().await.unwrap();
    assert_eq!(url.path(), "/console/login", "no cookie: the login page");
    browser
        .find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    browser
        .find(Locator::Css("#signin"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .at_most(PAGE_WAIT)
        .for_element(Locator::Css("form.filters"))
        .await
        .unwrap();
}

/// The texts of the elements `css` selects.
async fn texts(browser: &Client, css: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in browser.find_all(Locator::Css(css)).await.unwrap() {
        out.push(e.text().await.unwrap());
    }
    out
}

/// An HTTP answer's status and body (the bearer or the cookie `token`).
async fn get(url: &str, bearer: Option<&str>, cookie: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    if let Some(token) = cookie {
        req = req.header("cookie", format!("sb_console={}", hex::encode(token)));
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// The operator signs in, finds the call in the list, and its page shows the caller's and
/// the bot's words, one waterfall row per turn with one dominant step each, and a playable
/// WAV of the call's length; the live page replays it to its end. Another tenant's key
/// neither lists nor opens it (404), in the browser and over the JSON API.
#[tokio::test]
async fn the_call_inspector_shows_a_recorded_call_in_a_browser() {
    // Before anything else: a machine without the browser fails here, saying why.
    let driver = Driver::start().await.unwrap();
    let env = TestEnv::start().await.unwrap();
    let sid = new_call();
    record(&env, &sid).await;
    let log = CallLog::load(&env.js, &sid).await.unwrap();
    index::record(&env.js, &CallSummary::of(&log).unwrap())
        .await
        .unwrap();
    let shipped = add_keys(&env).await;

    let runtime = env.runtime("console").await.unwrap();
    let state = ConsoleState::open(&runtime, Secret::new(OPERATOR), shipped)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, router(state)).into_future());
    let browser = driver.session().await.unwrap();

    // The operator: the calls list links the call.
    sign_in(&browser, &base, OPERATOR).await;
    let row = format!("tr.call[data-sid=\"{sid}\"] a");
    browser
        .find(Locator::Css(&row))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .at_most(PAGE_WAIT)
        .for_element(Locator::Css("#sid"))
        .await
        .unwrap();
    assert_eq!(
        browser
            .find(Locator::Css("#sid"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        sid.as_str()
    );

    // The transcript: the caller's question and key, the bot's two sentences, played.
    let caller = texts(&browser, "ol.chat li[data-speaker=\"caller\"] .text").await;
    assert_eq!(caller, ["7", QUESTION]);
    let played = texts(
        &browser,
        "ol.chat li[data-speaker=\"bot\"][data-kind=\"played\"] .text",
    )
    .await;
    assert_eq!(played, [GREETING, ANSWER]);

    // The waterfall: one row per turn (greeting, answer), one dominant step in each.
    let turns = latency::turns(&log);
    assert_eq!(turns.len(), 2, "{turns:?}");
    let rows = browser
        .find_all(Locator::Css("svg.waterfall g.wf-row"))
        .await
        .unwrap();
    assert_eq!(rows.len(), turns.len());
    for (row, turn) in rows.iter().zip(&turns) {
        assert_eq!(
            row.attr("data-turn").await.unwrap(),
            Some(turn.turn.to_string())
        );
        let dominant = row
            .find_all(Locator::Css("rect.wf-seg.dominant"))
            .await
            .unwrap();
        assert_eq!(dominant.len(), 1, "turn {}", turn.turn);
    }

    // The player loads the call's WAV: its duration is the rendered call's.
    let samples = (wav::render(&log).len() - 44) / 4;
    let expected = samples as f64 / 8000.0;
    let duration = eventually("the audio's metadata", PAGE_WAIT, || async {
        let got = browser
            .execute(
                "const a = document.getElementById('call-audio'); \
                 return a.readyState >= 1 && a.duration > 0 ? a.duration : null;",
                vec![],
            )
            .await
            .ok()?;
        got.as_f64()
    })
    .await
    .unwrap();
    assert!(
        (duration - expected).abs() < 0.05,
        "{duration} s, the WAV is {expected} s"
    );
    let marks = browser
        .find_all(Locator::Css("svg.axis line.mark"))
        .await
        .unwrap();
    assert!(
        marks.len() >= 6,
        "the events are marked under the player: {}",
        marks.len()
    );
    let shot = browser.screenshot().await.unwrap();
    let dir = workspace_root().join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("console-call.png"), shot).unwrap();

    // The live page replays the call from its first event to its end.
    browser
        .goto(&format!("{base}/console/calls/{sid}/live"))
        .await
        .unwrap();
    eventually("the live page at the call's end", PAGE_WAIT, || async {
        let hidden = browser
            .execute("return document.getElementById('after').hidden;", vec![])
            .await
            .ok()?;
        (hidden == Value::Bool(false)).then_some(())
    })
    .await
    .unwrap();
    let live = texts(&browser, "#chat li .text").await;
    assert_eq!(live, [GREETING, "pressed 7", QUESTION, ANSWER]);

    // Another tenant: not in its list, and the call's page is the 404 page.
    browser
        .find(Locator::Css("form.signout button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .at_most(PAGE_WAIT)
        .for_element(Locator::Css("#token"))
        .await
        .unwrap();
    sign_in(&browser, &base, GLOBEX_KEY).await;
    assert!(
        browser
            .find_all(Locator::Css("tr.call"))
            .await
            .unwrap()
            .is_empty()
    );
    browser
        .goto(&format!("{base}/console/calls/{sid}"))
        .await
        .unwrap();
    let title = browser
        .find(Locator::Css("section.error h1"))
        .await
        .unwrap();
    assert_eq!(title.text().await.unwrap(), "Call not found");
    browser.close().await.unwrap();
    let page = format!("{base}/console/calls/{sid}");
    assert_eq!(get(&page, None, Some(GLOBEX_KEY)).await.0, 404);
    assert_eq!(get(&page, None, Some(ACME_KEY)).await.0, 200);
    let res = reqwest::Client::new()
        .get(&page)
        .header("cookie", format!("sb_console={}", hex::encode(ACME_KEY)))
        .send()
        .await
        .unwrap();
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(res.headers()["cache-control"], "no-store");
    // Route misses: an HTML page under /console, the JSON error elsewhere.
    let (status, body) = get(&format!("{base}/console/nowhere"), None, None).await;
    assert_eq!(status, 404);
    assert!(body.contains("<h1>Not found</h1>"), "{body}");
    let (status, body) = get(&format!("{base}/v1/nowhere"), Some(OPERATOR), None).await;
    assert_eq!(status, 404);
    assert!(body.contains("\"not_found\""), "{body}");

    // The JSON API: the same rules, the same data.
    let one = format!("{base}/v1/calls/{sid}");
    assert_eq!(get(&one, None, None).await.0, 401);
    let (status, body) = get(&one, Some(GLOBEX_KEY), None).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains(sid.as_str()),
        "the 404 names the call: {body}"
    );
    let (status, body) = get(&one, Some(ACME_KEY), None).await;
    assert_eq!(status, 200, "{body}");
    let detail: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(detail["summary"]["call_sid"], sid.as_str());
    assert_eq!(detail["turns"].as_array().unwrap().len(), 2);
    let listed = |body: &str| {
        let list: Value = serde_json::from_str(body).unwrap();
        list["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["call_sid"].clone())
            .collect::<Vec<_>>()
    };
    let list = format!("{base}/v1/calls");
    assert_eq!(
        listed(&get(&list, Some(OPERATOR), None).await.1),
        [json!(sid.as_str())]
    );
    assert_eq!(
        listed(&get(&list, Some(ACME_KEY), None).await.1),
        [json!(sid.as_str())]
    );
    let globex: Vec<Value> = listed(&get(&list, Some(GLOBEX_KEY), None).await.1);
    assert!(globex.is_empty());
    let forced = format!("{list}?tenant=acme");
    assert!(listed(&get(&forced, Some(GLOBEX_KEY), None).await.1).is_empty());
}
