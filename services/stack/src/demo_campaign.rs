//! The demo's second part: a tiny outbound campaign through the campaigns API, on the
//! stack the demo's inbound call ran on.
//!
//! Creates a campaign for tenant acme (its greeting and voicemail with `{{name}}` and
//! `{{day}}`, busy calls retried 3 s later), uploads three contacts as CSV, waits until
//! every contact is finished, and prints each one's outcome, attempts and what the agent
//! said first. The Twilio stand-in answers as `services/sim/examples/campaign_callees.toml`
//! says: Ann answers and asks a question, Bob's voicemail takes the message, Cleo is busy
//! and answers the retry. State: none beyond the stack's.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use sb_dialer::campaign::CallingHours;
use sb_replay::CallLog;
use sb_schemas::{Body, CallSid};
use serde_json::{Value, json};

use crate::service_env::CAMPAIGNS_API_KEY;
use crate::stack::Stack;

/// Who the campaign calls (the stand-in's callees know these numbers).
pub const CONTACTS_CSV: &str = "phone,name,day\n\
    +15005550201,Ann,Friday\n\
    +15005550202,Bob,Monday\n\
    +15005550203,Cleo,Tuesday\n";

/// How long the whole campaign may take.
const DEADLINE: Duration = Duration::from_secs(120);

/// One finished contact.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub phone: String,
    pub state: String,
    pub attempts: u64,
    pub last_outcome: String,
    pub call_sids: Vec<String>,
}

fn spec() -> Value {
    json!({
        "name": "Appointment reminders",
        "caller_id": "+15005550006",
        "calling_hours": CallingHours::around_the_clock(chrono::Utc::now()),
        "max_concurrent_calls": 3,
        "retry": { "on": ["busy", "no-answer"], "max_attempts": 2, "spacing_secs": 3 },
        "greeting": "Hi {{name}}, this is Acme about your appointment on {{day}}.",
        "voicemail": "Hi {{name}}, Acme here about your appointment on {{day}}. Please call us back. Goodbye.",
        "machine_detection": true
    })
}

async fn api(request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let response = request.bearer_auth(CAMPAIGNS_API_KEY).send().await?;
    let status = response.status();
    let body: Value = response.json().await.context("the API answered no JSON")?;
    if !status.is_success() {
        bail!("the campaigns API answered {status}: {body}");
    }
    Ok(body)
}

/// Runs the campaign and returns every contact's outcome.
pub async fn run(stack: &Stack) -> anyhow::Result<Vec<Outcome>> {
    let http = reqwest::Client::new();
    let base = format!("{}/v1/tenants/acme/campaigns", stack.dialer_url());
    let created = api(http.post(&base).json(&spec())).await?;
    let id = created["id"].as_str().context("no campaign id")?.to_owned();
    let campaign = format!("{base}/{id}");
    let upload = api(http
        .post(format!("{campaign}/contacts"))
        .header("content-type", "text/csv")
        .body(CONTACTS_CSV))
    .await?;
    println!(
        "\nA campaign: POST /v1/tenants/acme/campaigns ({id}), then {} contacts uploaded as CSV",
        upload["queued"]
    );
    let started = Instant::now();
    loop {
        let status = api(http.get(&campaign)).await?;
        let counts = &status["counts"];
        let open: u64 = ["queued", "leased", "calling"]
            .iter()
            .map(|s| counts[s].as_u64().unwrap_or(0))
            .sum();
        if open == 0 {
            break;
        }
        if started.elapsed() > DEADLINE {
            bail!("the campaign did not finish within {DEADLINE:?}: {counts}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let page = api(http.get(format!("{campaign}/contacts"))).await?;
    let mut outcomes: Vec<Outcome> = page["contacts"]
        .as_array()
        .context("no contacts")?
        .iter()
        .map(|c| Outcome {
            phone: c["phone"].as_str().unwrap_or_default().to_owned(),
            state: c["state"].as_str().unwrap_or_default().to_owned(),
            attempts: c["attempts"].as_u64().unwrap_or(0),
            last_outcome: c["last_outcome"].as_str().unwrap_or("-").to_owned(),
            call_sids: c["call_sids"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect();
    outcomes.sort_by(|a, b| a.phone.cmp(&b.phone));
    println!(
        "  every contact finished after {:.1} s:",
        started.elapsed().as_secs_f64()
    );
    let js = stack.jetstream().await?;
    for o in &outcomes {
        let first = match o.call_sids.last().map(|s| CallSid::parse(s)) {
            Some(Ok(sid)) => first_words(&js, &sid).await,
            _ => None,
        };
        println!(
            "  {}: {} after {} attempt(s), last outcome {}{}",
            o.phone,
            o.state,
            o.attempts,
            o.last_outcome,
            first
                .map(|t| format!("; the agent said “{t}”"))
                .unwrap_or_default()
        );
    }
    Ok(outcomes)
}

/// The agent's first sentence on a call (its greeting or voicemail), from the log.
async fn first_words(js: &async_nats::jetstream::Context, sid: &CallSid) -> Option<String> {
    let log = CallLog::load(js, sid).await.ok()?;
    log.envelopes().find_map(|e| match &e.body {
        Body::Sentence(s) if e.turn == 0 => Some(s.text.clone()),
        _ => None,
    })
}
