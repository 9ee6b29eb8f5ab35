//! The dialer under test, in-process: real NATS and Redis ([`TestEnv`]), the Twilio
//! stand-in with scripted callees, a [`Dialer`] on a [`ManualClock`] whose callbacks are
//! served on loopback. Tests drive it one step at a time (`dial_next`,
//! `reconcile_once`), so nothing races but Twilio's callbacks, which they wait for.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sb_dialer::campaign::{CallingHours, Campaign, CampaignSpec, RetrySpec};
use sb_dialer::clock::{Clock as _, ManualClock};
use sb_dialer::{Dialer, DialerConfig, Settings, callbacks};
use sb_replay::CallLog;
use sb_runtime::Runtime;
use sb_runtime::http::{HttpServer, ReadyNeeds};
use sb_runtime::redis::campaigns::{
    CampaignId, CampaignQueue, ContactId, ContactPayload, ContactRecord, NewContact, Outcome,
};
use sb_schemas::{Body, CallSid, Envelope, Kind, TenantId};
use sb_sim::SimServer;
use sb_sim::caller::Scenario;
use sb_sim::twilio::{self, Callee, Callees, TwilioState};
use sb_stack::process::free_addr;
use sb_tests::{TestEnv, eventually};

pub(crate) const ACCOUNT: &str = "AC0000000000000000000000000000d1a1";
pub(crate) const TOKEN: &str = "dialer-test-auth-token";
/// Thursday 2026-12-03 15:00 UTC: 10:00 in New York, inside weekday 09:00–17:00.
pub(crate) const THURSDAY_10AM_NY: u64 = 1_796_310_000_000;
pub(crate) const CALLER_ID: &str = "+15005550006";

pub(crate) fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

/// A human who answers and says one short line (about a second of call).
pub(crate) fn human() -> Callee {
    Callee::Human(
        Scenario::from_toml(
            r#"
            from = "+15005550006"
            to = "+15005550100"
            [[steps]]
            say = "hello"
            "#,
        )
        .unwrap(),
    )
}

/// A weekday 09:00–17:00 New York campaign with AMD, 2 attempts on busy, no-answer and
/// failed, 60 s apart, and a greeting with a variable.
pub(crate) fn spec() -> CampaignSpec {
    CampaignSpec {
        name: "reminders".into(),
        caller_id: CALLER_ID.into(),
        calling_hours: CallingHours {
            days: ["mon", "tue", "wed", "thu", "fri"]
                .map(String::from)
                .to_vec(),
            from: "09:00".into(),
            to: "17:00".into(),
            time_zone: "America/New_York".into(),
            callee_time_zone: false,
        },
        max_concurrent_calls: 50,
        retry: RetrySpec {
            on: vec![Outcome::Busy, Outcome::NoAnswer, Outcome::Failed],
            max_attempts: 2,
            spacing_secs: 60,
        },
        priority: 1,
        starts_at: None,
        ends_at: None,
        greeting: Some("Hi {{name}}, this is Acme.".into()),
        prompt: None,
        voicemail: Some("Hi {{name}}, please call Acme back.".into()),
        machine_detection: true,
    }
}

pub(crate) fn contact(number: &str, vars: &[(&str, &str)]) -> NewContact {
    NewContact {
        id: ContactId::parse(number.trim_start_matches('+')).unwrap(),
        priority: 1,
        not_before_ms: 0,
        payload: ContactPayload {
            phone: number.into(),
            vars: vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        },
    }
}

/// Settings for a dialer whose callbacks are served at `dialer_url`.
pub(crate) fn settings(
    twilio: &str,
    dialer_url: &str,
    tweak: impl FnOnce(&mut DialerConfig),
) -> Settings {
    let mut config = DialerConfig {
        twilio_account_sid: Some(ACCOUNT.into()),
        twilio_auth_token: Some(sb_runtime::Secret::new(TOKEN)),
        twilio_api_key_sid: None,
        twilio_api_key_secret: None,
        twilio_api_url: twilio.into(),
        twilio_timeout_ms: 5_000,
        ingress_public_url: Some("https://switchboard.example".into()),
        dialer_public_url: Some(dialer_url.into()),
        cps: 1_000.0,
        cps_burst: 1_000,
        global_cap: 0,
        workers: 1,
        ring_secs: 30,
        reconcile_secs: 120,
        orphan_secs: 60,
        lease_secs: 30,
        idle_ms: 50,
        backoff_secs: 5,
    };
    tweak(&mut config);
    Settings::from_config(&config).unwrap()
}

/// One dialer and everything it talks to.
pub(crate) struct Rig {
    pub env: TestEnv,
    pub twilio: TwilioState,
    _twilio_server: SimServer,
    pub runtime: Runtime,
    pub clock: ManualClock,
    pub dialer: Dialer,
    _http: HttpServer,
}

impl Rig {
    /// A dialer at [`THURSDAY_10AM_NY`] whose calls reach `callees`.
    pub(crate) async fn start(callees: Callees, tweak: impl FnOnce(&mut DialerConfig)) -> Self {
        let env = TestEnv::start().await.unwrap();
        let mut sim = twilio::Config::new(ACCOUNT, TOKEN);
        sim.callees = Some(callees);
        sim.timing.ring = Duration::from_millis(100);
        sim.timing.amd_delay = Duration::from_millis(200);
        let (server, twilio) = twilio::spawn(sim).await.unwrap();
        let addr = free_addr().unwrap();
        let mut config = env.runtime_config_as(sb_schemas::roles::Role::Dialer);
        config.http_addr = addr;
        let runtime = Runtime::start("dialer", config).await.unwrap();
        let settings = settings(&server.http_url(), &format!("http://{addr}"), tweak);
        let clock = ManualClock::at(THURSDAY_10AM_NY);
        let dialer = Dialer::new(
            runtime.redis.campaign_queue(),
            Arc::new(runtime.publisher.clone()),
            settings,
            Arc::new(clock.clone()),
        );
        let http = runtime
            .serve_http(
                callbacks::router(dialer.clone()),
                ReadyNeeds::NATS_AND_REDIS,
            )
            .await
            .unwrap();
        Self {
            env,
            twilio,
            _twilio_server: server,
            runtime,
            clock,
            dialer,
            _http: http,
        }
    }

    pub(crate) fn queue(&self) -> &CampaignQueue {
        &self.dialer.queue
    }

    /// Stores `spec` as campaign `id` and queues `contacts`.
    pub(crate) async fn campaign(
        &self,
        id: &str,
        spec: CampaignSpec,
        contacts: &[NewContact],
    ) -> CampaignId {
        let id = CampaignId::parse(id).unwrap();
        let def = Campaign::new(id.clone(), spec.clone(), self.clock.now());
        let json = serde_json::to_string(&def).unwrap();
        assert!(
            self.queue()
                .create_def(&tenant(), &id, &json)
                .await
                .unwrap()
        );
        self.queue()
            .set_campaign_cap(&tenant(), &id, Some(spec.max_concurrent_calls))
            .await
            .unwrap();
        self.queue()
            .enqueue(&tenant(), &id, contacts, self.clock.now_ms())
            .await
            .unwrap();
        id
    }

    pub(crate) async fn record(&self, campaign: &CampaignId, number: &str) -> ContactRecord {
        let id = ContactId::parse(number.trim_start_matches('+')).unwrap();
        self.queue()
            .contact(&tenant(), campaign, &id)
            .await
            .unwrap()
            .unwrap()
    }

    /// Waits until no attempt is open (every placed call's final callback was handled).
    pub(crate) async fn settled(&self) {
        eventually(
            "every attempt resolved",
            Duration::from_secs(20),
            || async { (self.queue().open_attempts().await.ok()? == 0).then_some(()) },
        )
        .await
        .unwrap();
    }

    /// The events of a call stored so far.
    pub(crate) async fn events(&self, sid: &str) -> Vec<Envelope> {
        let sid = CallSid::parse(sid).unwrap();
        let log = CallLog::load(&self.env.js, &sid).await.unwrap();
        log.envelopes().cloned().collect()
    }

    /// Waits for a call's event of `kind`.
    pub(crate) async fn event(&self, sid: &str, kind: Kind) -> Body {
        eventually(kind.as_str(), Duration::from_secs(20), || async {
            self.events(sid)
                .await
                .into_iter()
                .find(|e| e.kind() == kind)
                .map(|e| e.body)
        })
        .await
        .unwrap()
    }
}

/// The system clock moved so that it reads `at` now: real time passes (calls-per-second
/// buckets refill), the calendar is a chosen one (calling hours are open).
pub(crate) struct Shifted {
    offset: i128,
}

impl Shifted {
    pub(crate) fn to(at: u64) -> Self {
        let now = sb_dialer::clock::SystemClock.now_ms();
        Self {
            offset: i128::from(at) - i128::from(now),
        }
    }
}

impl sb_dialer::clock::Clock for Shifted {
    fn now_ms(&self) -> u64 {
        let now = i128::from(sb_dialer::clock::SystemClock.now_ms()) + self.offset;
        u64::try_from(now).unwrap_or(0)
    }
}

/// A campaign open around the clock ([`CallingHours::around_the_clock`]), one attempt per
/// contact.
pub(crate) fn always_open() -> CampaignSpec {
    let mut spec = spec();
    spec.calling_hours = CallingHours::around_the_clock(chrono::Utc::now());
    spec.retry.max_attempts = 1;
    spec
}

/// No second of `created` (when the stand-in created each call) holds more than `max` calls.
pub(crate) fn assert_rate(mut created: Vec<std::time::Instant>, max: usize) {
    created.sort();
    for (i, start) in created.iter().enumerate() {
        let within = created[i..]
            .iter()
            .take_while(|t| t.duration_since(*start) < Duration::from_secs(1))
            .count();
        assert!(within <= max, "{within} calls within a second of call {i}");
    }
}
