//! The campaigns API (docs/campaigns-api.md) served on a loopback port over a real
//! redis-server: uploads (CSV with bad rows, JSON, 100,000 rows in one request), pause,
//! resume and cancel as the queue's pops see them, paging with a state filter, deletes,
//! tenant isolation and authentication, JSON errors naming the field, 413s, a Redis
//! outage as 503, and the `switchboard campaign` CLI (`cli`). The queue is checked
//! directly (`counts`, `depth`, `pop`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use sb_dialer::api::auth::key_hash;
use sb_dialer::api::{ApiState, router};
use sb_dialer::clock::ManualClock;
use sb_runtime::redis::campaigns::{CampaignId, CampaignQueue};
use sb_runtime::redis::{Keys, Redis};
use sb_runtime::tenants::testing::TenantToml;
use sb_schemas::testing::tenant_id;
use sb_tests::RedisServer;
use serde_json::{Value, json};

mod cli;

const T0: u64 = 1_800_000_000_000;
const LEASE: Duration = Duration::from_secs(30);
const ACME_KEY: &str = "acme-secret-key";
const GLOBEX_KEY: &str = "globex-secret-key";

struct Api {
    redis: RedisServer,
    queue: CampaignQueue,
    base: String,
    http: reqwest::Client,
}

async fn start() -> Api {
    let redis = RedisServer::start().await.unwrap();
    let handle = Redis::connect(&redis.url, Keys::new(""), Duration::from_secs(1800))
        .await
        .unwrap();
    let tenants = TenantToml::new()
        .tier("standard", 4, 60)
        .tenant("acme", "+15005550006", "standard")
        .set("api_key_sha256", vec![key_hash(ACME_KEY)])
        .tenant("globex", "+15005550007", "standard")
        .set("api_key_sha256", vec![key_hash(GLOBEX_KEY)])
        .parse()
        .unwrap();
    let queue = handle.campaign_queue();
    let state = ApiState::new(
        queue.clone(),
        sb_runtime::LiveTenants::fixed(tenants),
        Arc::new(ManualClock::at(T0)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, router(state)).into_future());
    Api {
        redis,
        queue,
        base,
        http: reqwest::Client::new(),
    }
}

fn spec(caller_id: &str) -> Value {
    json!({"name": "reminders", "caller_id": caller_id, "priority": 3,
           "calling_hours": {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                             "from": "00:00", "to": "23:59", "time_zone": "UTC"},
           "max_concurrent_calls": 5})
}

impl Api {
    /// A request with `key` (none: no header) and an optional body of a content type.
    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<(&str, String)>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some((kind, body)) = body {
            req = req.header("content-type", kind).body(body);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn create(&self, tenant: &str, key: &str, caller_id: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/v1/tenants/{tenant}/campaigns"),
                Some(key),
                Some(("application/json", spec(caller_id).to_string())),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        assert!(
            id.len() == 12
                && id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "{id}"
        );
        id
    }

    async fn upload_csv(&self, id: &str, csv: String) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            &format!("/v1/tenants/acme/campaigns/{id}/contacts"),
            Some(ACME_KEY),
            Some(("text/csv", csv)),
        )
        .await
    }

    async fn counts(&self, tenant: &str, id: &str) -> Value {
        let c = self
            .queue
            .counts(&tenant_id(tenant), &CampaignId::parse(id).unwrap())
            .await
            .unwrap();
        serde_json::to_value(c).unwrap()
    }
}

fn numbers(from: u64, n: u64) -> String {
    let mut csv = String::from("phone,name\n");
    for i in from..from + n {
        csv.push_str(&format!("+1415{i:07},N{i}\n"));
    }
    csv
}

/// Each bad row (bad phone, missing phone, a repeated number, a wrong column count) is
/// listed with its line and reason, the good rows are queued (counts and depth agree),
/// and uploading the same file again queues nothing and counts duplicates.
#[tokio::test]
async fn csv_uploads_list_bad_rows_and_queue_the_good_ones() {
    let api = start().await;
    let id = api.create("acme", ACME_KEY, "+15005550006").await;
    let csv = "phone,name,ref\n+14155550100,Ann,r1\n4155550101,Bob,r2\n,Cy,r3\n+14155550100,Ann,r4\n+14155550102,Dee\n+14155550103,Eve,r6\n".to_owned();
    let (status, report) = api.upload_csv(&id, csv.clone()).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        report,
        json!({"queued": 2, "duplicates": 0, "rejected_total": 4, "rejected": [
        {"line": 3, "reason": "\"4155550101\" is not an E.164 number (+ and 2-15 digits)"},
        {"line": 4, "reason": "missing phone"},
        {"line": 5, "reason": "duplicate of line 2"},
        {"line": 6, "reason": "expected 3 columns, found 2"}]})
    );
    assert_eq!(api.counts("acme", &id).await["queued"], 2);
    assert_eq!(api.queue.depth(&tenant_id("acme")).await.unwrap(), 2);
    let (_, again) = api.upload_csv(&id, csv).await;
    assert_eq!(
        (again["queued"].clone(), again["duplicates"].clone()),
        (json!(0), json!(2))
    );
    let (status, body) = api.upload_csv(&id, "name\nAnn\n".into()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_csv"))
    );
    let lease = api.queue.pop(T0, LEASE).await.unwrap().unwrap();
    assert_eq!(
        (lease.contact.as_str(), lease.payload.vars["name"].as_str()),
        ("14155550100", "Ann")
    );
}

/// JSON uploads queue like CSV; bad bodies are 400s naming the field, a wrong content
/// type 415, and none is a 5xx.
#[tokio::test]
async fn json_uploads_and_bad_bodies_give_json_errors_naming_the_field() {
    let api = start().await;
    let id = api.create("acme", ACME_KEY, "+15005550006").await;
    let path = format!("/v1/tenants/acme/campaigns/{id}/contacts");
    let body = json!({"contacts": [{"phone": "+14155550100", "vars": {"name": "Ann"}}, {"phone": "nope"}]});
    let (status, report) = api
        .call(
            Method::POST,
            &path,
            Some(ACME_KEY),
            Some(("application/json", body.to_string())),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        report,
        json!({"queued": 1, "duplicates": 0, "rejected_total": 1,
        "rejected": [{"line": 2, "reason": "\"nope\" is not an E.164 number (+ and 2-15 digits)"}]})
    );
    let create = "/v1/tenants/acme/campaigns";
    let mut wrong_type = spec("+15005550006");
    wrong_type["calling_hours"]["from"] = json!(9);
    let cases = [
        (path.as_str(), "{\"contacts\": [", "invalid_json", None),
        (
            path.as_str(),
            "{\"contacts\": [{\"phone\": 1}]}",
            "invalid_field",
            Some("contacts[0].phone"),
        ),
        (
            path.as_str(),
            "{\"people\": []}",
            "invalid_field",
            Some("people"),
        ),
        (
            create,
            &wrong_type.to_string(),
            "invalid_field",
            Some("calling_hours.from"),
        ),
        (
            create,
            &spec("+15550000000").to_string(),
            "invalid_field",
            Some("caller_id"),
        ),
    ];
    for (path, body, code, field) in cases {
        let (status, e) = api
            .call(
                Method::POST,
                path,
                Some(ACME_KEY),
                Some(("application/json", body.to_owned())),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {e}");
        assert_eq!(e["error"]["code"], code, "{body}: {e}");
        assert_eq!(e["error"]["field"].as_str(), field, "{body}: {e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (status, e) = api
        .call(
            Method::POST,
            &path,
            Some(ACME_KEY),
            Some(("text/plain", "x".into())),
        )
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("unsupported_media_type")
        )
    );
    assert_eq!(api.counts("acme", &id).await["queued"], 1);
}

/// Pause stops pops of the campaign, resume brings them back, cancel ends its queued
/// contacts (reported), after which resume and uploads are 409s.
#[tokio::test]
async fn pause_resume_and_cancel_change_what_pops() {
    let api = start().await;
    let id = api.create("acme", ACME_KEY, "+15005550006").await;
    api.upload_csv(&id, numbers(0, 3)).await;
    let base = format!("/v1/tenants/acme/campaigns/{id}");
    let (status, c) = api
        .call(Method::POST, &format!("{base}/pause"), Some(ACME_KEY), None)
        .await;
    assert_eq!(
        (status, c["state"].as_str()),
        (StatusCode::OK, Some("paused"))
    );
    assert!(
        api.queue.pop(T0, LEASE).await.unwrap().is_none(),
        "paused: nothing pops"
    );
    let (_, c) = api
        .call(
            Method::POST,
            &format!("{base}/resume"),
            Some(ACME_KEY),
            None,
        )
        .await;
    assert_eq!(c["state"], "active");
    assert!(
        api.queue.pop(T0, LEASE).await.unwrap().is_some(),
        "resumed: pops again"
    );
    let (status, r) = api
        .call(
            Method::POST,
            &format!("{base}/cancel"),
            Some(ACME_KEY),
            None,
        )
        .await;
    assert_eq!(
        (status, r["canceled_contacts"].clone()),
        (StatusCode::OK, json!(2))
    );
    assert_eq!(
        (
            r["campaign"]["state"].as_str(),
            r["campaign"]["counts"]["canceled"].clone()
        ),
        (Some("canceled"), json!(2))
    );
    assert!(
        api.queue.pop(T0, LEASE).await.unwrap().is_none(),
        "cancelled: nothing pops"
    );
    for path in [format!("{base}/resume"), format!("{base}/pause")] {
        let (status, e) = api.call(Method::POST, &path, Some(ACME_KEY), None).await;
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("conflict")),
            "{path}"
        );
    }
    let (status, _) = api.upload_csv(&id, numbers(10, 1)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, c) = api.call(Method::GET, &base, Some(ACME_KEY), None).await;
    assert_eq!(
        (c["state"].as_str(), c["counts"]["queued"].clone()),
        (Some("canceled"), json!(0))
    );
}

/// Walking every page with a state filter sees each contact in that state exactly once.
#[tokio::test]
async fn paging_with_a_state_filter_walks_each_contact_once() {
    let api = start().await;
    let id = api.create("acme", ACME_KEY, "+15005550006").await;
    api.upload_csv(&id, numbers(0, 1000)).await;
    // The campaign's cap (max_concurrent_calls) is 5: five pops lease five.
    for _ in 0..5 {
        api.queue.pop(T0, LEASE).await.unwrap().unwrap();
    }
    for (filter, want) in [("state=queued&", 995), ("state=leased&", 5), ("", 1000)] {
        let mut seen = HashSet::new();
        let mut cursor = String::new();
        loop {
            let path = format!("/v1/tenants/acme/campaigns/{id}/contacts?{filter}limit=37{cursor}");
            let (status, page) = api.call(Method::GET, &path, Some(ACME_KEY), None).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            for c in page["contacts"].as_array().unwrap() {
                assert!(
                    seen.insert(c["phone"].as_str().unwrap().to_owned()),
                    "twice: {c}"
                );
                assert!(filter.is_empty() || filter.contains(c["state"].as_str().unwrap()));
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => break,
            }
        }
        assert_eq!(seen.len(), want, "{filter}");
    }
    let (status, e) = api
        .call(
            Method::GET,
            &format!("/v1/tenants/acme/campaigns/{id}/contacts?state=gone"),
            Some(ACME_KEY),
            None,
        )
        .await;
    assert_eq!(
        (status, e["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("state"))
    );
}

/// A queued contact is deleted by its number with or without `+`; an unknown one is 404,
/// one being called is 409.
#[tokio::test]
async fn contacts_are_deleted_by_number() {
    let api = start().await;
    let id = api.create("acme", ACME_KEY, "+15005550006").await;
    api.upload_csv(&id, numbers(0, 3)).await;
    let leased = api.queue.pop(T0, LEASE).await.unwrap().unwrap();
    let path = |c: &str| format!("/v1/tenants/acme/campaigns/{id}/contacts/{c}");
    let others: Vec<String> = (0..3)
        .map(|i| format!("1415{i:07}"))
        .filter(|c| c != leased.contact.as_str())
        .collect();
    let (status, _) = api
        .call(
            Method::DELETE,
            &path(&format!("%2B{}", others[0])),
            Some(ACME_KEY),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api
        .call(Method::DELETE, &path(&others[1]), Some(ACME_KEY), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, e) = api
        .call(Method::DELETE, &path(&others[1]), Some(ACME_KEY), None)
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, _) = api
        .call(
            Method::DELETE,
            &path(leased.contact.as_str()),
            Some(ACME_KEY),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(api.counts("acme", &id).await["queued"], 0);
    assert_eq!(api.counts("acme", &id).await["leased"], 1);
}

/// Every route of the OpenAPI document is served and refuses a missing or unknown key
/// with 401 + `WWW-Authenticate: Bearer`; acme's key on globex's campaign gets, on every
/// route, the body an unknown campaign gets, and changes nothing.
#[tokio::test]
async fn keys_open_only_their_own_tenant() {
    let api = start().await;
    let theirs = api.create("globex", GLOBEX_KEY, "+15005550007").await;
    let (status, _) = api
        .call(
            Method::POST,
            &format!("/v1/tenants/globex/campaigns/{theirs}/contacts"),
            Some(GLOBEX_KEY),
            Some(("text/csv", numbers(0, 5))),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let before = (
        api.counts("globex", &theirs).await,
        api.queue
            .def(&tenant_id("globex"), &CampaignId::parse(&theirs).unwrap())
            .await
            .unwrap(),
    );
    let (_, unknown) = api
        .call(
            Method::GET,
            "/v1/tenants/acme/campaigns/nosuchcampaign",
            Some(ACME_KEY),
            None,
        )
        .await;
    assert_eq!(unknown["error"]["code"], "not_found");
    let doc: Value = api
        .http
        .get(format!("{}/openapi.json", api.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (template, ops) in doc["paths"].as_object().unwrap() {
        let path = template
            .replace("{tenant}", "globex")
            .replace("{campaign}", &theirs)
            .replace("{contact}", "14150000000");
        for method in ops.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = || Some(("text/csv", numbers(100, 2)));
            for key in [None, Some("wrong")] {
                let res = api
                    .http
                    .request(method.clone(), format!("{}{path}", api.base));
                let res = match key {
                    Some(k) => res.bearer_auth(k),
                    None => res,
                }
                .send()
                .await
                .unwrap();
                assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
                assert_eq!(res.headers()["www-authenticate"], "Bearer");
            }
            let (status, e) = api
                .call(method.clone(), &path, Some(ACME_KEY), body())
                .await;
            assert_eq!(
                (status, &e),
                (StatusCode::NOT_FOUND, &unknown),
                "{method} {path}"
            );
        }
    }
    let after = (
        api.counts("globex", &theirs).await,
        api.queue
            .def(&tenant_id("globex"), &CampaignId::parse(&theirs).unwrap())
            .await
            .unwrap(),
    );
    assert_eq!(before, after, "acme changed globex's campaign");
    let (status, _) = api
        .call(
            Method::POST,
            "/v1/tenants/nosuch/campaigns",
            Some(ACME_KEY),
            Some(("application/json", spec("+15005550006").to_string())),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// An upload over 16 MiB is a 413 whether its length is declared or it streams without
/// one (cut off at the limit), and so is a campaign definition over 256 KiB.
#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let api = start().await;
    let id = api.create("acme", ACME_KEY, "+15005550006").await;
    // Few, long rows: what the streamed upload queues before the cut stays small.
    let mut big = String::from("phone,note\n");
    for i in 0..20_000 {
        big.push_str(&format!("+1415{i:07},{}\n", "x".repeat(900)));
    }
    assert!(big.len() > 16 * 1024 * 1024);
    let (status, e) = api.upload_csv(&id, big.clone()).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large"))
    );
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = big
        .into_bytes()
        .chunks(1 << 20)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let res = api
        .http
        .post(format!(
            "{}/v1/tenants/acme/campaigns/{id}/contacts",
            api.base
        ))
        .bearer_auth(ACME_KEY)
        .header("content-type", "text/csv")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let e: Value = res.json().await.unwrap();
    assert_eq!(e["error"]["code"], "too_large");
    let mut huge = spec("+15005550006");
    huge["name"] = json!("x".repeat(300 * 1024));
    let (status, e) = api
        .call(
            Method::POST,
            "/v1/tenants/acme/campaigns",
            Some(ACME_KEY),
            Some(("application/json", huge.to_string())),
        )
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large"))
    );
}

/// With Redis gone, a request answers 503 in the JSON error shape, not a 500.
#[tokio::test]
async fn a_redis_outage_is_a_503() {
    let mut api = start().await;
    let id = api.create("acme", ACME_KEY, "+15005550006").await;
    api.redis.stop();
    let (status, e) = api
        .call(
            Method::GET,
            &format!("/v1/tenants/acme/campaigns/{id}"),
            Some(ACME_KEY),
            None,
        )
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable"))
    );
}

/// 100,000 rows (~2 MB) in one request are all queued.
#[tokio::test]
async fn a_100000_row_csv_is_queued_in_one_request() {
    let api = start().await;
    let id = api.create("acme", ACME_KEY, "+15005550006").await;
    let (status, report) = api.upload_csv(&id, numbers(0, 100_000)).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (report["queued"].clone(), report["rejected_total"].clone()),
        (json!(100_000), json!(0))
    );
    assert_eq!(api.queue.depth(&tenant_id("acme")).await.unwrap(), 100_000);
}
