//! `just chaos`: scripted calls against the whole stack (two replicas of every service)
//! while faults are injected one kind at a time, each in its own round.
//!
//! A round keeps `calls` multi-turn calls in flight ([`CallPool`], ramped in), waits until
//! each of the first calls has a transcript stored (the fault lands mid-call), injects its
//! [`Fault`] while replacing calls that end, places a few fresh calls once it is over, lets
//! the calls finish and judges the round ([`check`]): calls completed, questions answered,
//! the longest silence a caller heard, events lost (what the callers did against what
//! `CALLS` and `AUDIO` stored) and sessions rebuilt (`switchboard_session_rebuilt_total`
//! scraped from every replica). Every wait is bounded, so the run stops by itself.
//! Consumes [`ChaosOptions`]; produces a [`RoundResult`] per fault, which [`table`]
//! prints. State: the stack and the round's calls.

pub mod check;
pub mod table;

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use async_nats::jetstream;
use sb_schemas::{CallSid, Kind, TenantId, subject};
use sb_sim::caller::Scenario;

pub use check::RoundResult;

use crate::{
    frames,
    pool::CallPool,
    stack::{Delays, ROLL_GRACE, Replicas, Service, Stack, StackConfig},
};

/// What a caller asks, in order (also what the Deepgram stand-in "hears").
pub const QUESTIONS: [&str; 8] = [
    "What are your opening hours?",
    "Do you have any offers at the moment?",
    "How much is delivery?",
    "Can I return something I bought online?",
    "Do you have a store in the city centre?",
    "Is parking free there?",
    "Can I pay by card on delivery?",
    "Could you email me the details?",
];

/// What the LLM stand-in answers, by turn; `{n}` makes each answer unique (every TTS
/// request misses the cache, as real answers do).
pub const REPLIES: [&str; 8] = [
    "We're open from nine to five on weekdays, ticket {n}.",
    "Yes, order {n} gets half price on every second item.",
    "Delivery is free on orders over fifty dollars, quote {n}.",
    "Yes, returns are free within thirty days, case {n}.",
    "Yes, on Main Street next to the station, store {n}.",
    "Parking is free for two hours, permit {n}.",
    "Yes, every card is accepted at the door, order {n}.",
    "Of course, I'll email offer {n} to you right away.",
];

/// The tenant the chaos calls reach (`to` below).
const TENANT: &str = "acme";

/// A caller waits this long for an answer before asking the next question anyway (the
/// question then counts as unanswered).
const ANSWER_WAIT_MS: u64 = 30_000;
/// A fault that takes longer than this is abandoned (the round says so).
const FAULT_LIMIT: Duration = Duration::from_secs(240);

/// One fault, injected once in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL one replica of a service (the ingress or stt with the most calls, else the
    /// oldest); a replacement starts at once.
    Kill(Service),
    /// The same for every service at the same moment; then the replacements start.
    KillAll,
    /// The same for every service but the ingress: the pipeline's workers (stt, agent,
    /// tts, dialer).
    KillWorkers,
    /// SIGKILL nats-server and start it on the same port and store.
    RestartNats,
    /// SIGKILL redis-server and start it with its append-only file (`keep_data`) or empty.
    RestartRedis { keep_data: bool },
    /// Roll every service, one replica at a time (SIGTERM, drain, replacement ready).
    Roll,
}

impl Fault {
    /// One round per fault of the list.
    pub const FULL: [Fault; 9] = [
        Fault::Kill(Service::Ingress),
        Fault::Kill(Service::Stt),
        Fault::Kill(Service::Agent),
        Fault::Kill(Service::Tts),
        Fault::Kill(Service::Dialer),
        Fault::RestartNats,
        Fault::RestartRedis { keep_data: true },
        Fault::RestartRedis { keep_data: false },
        Fault::Roll,
    ];
    /// One fault of each kind (`--quick`, the ring-3 test): every service killed at once
    /// (the ingress' calls reconnect through `<Connect action>`), Redis restarted with and
    /// without its data, a rolling deploy. nats-server's restart is in the full run only:
    /// its rounds are the slowest to settle and the box the README's test command runs on
    /// is shared with the other tests.
    pub const QUICK: [Fault; 4] = [
        Fault::KillAll,
        Fault::RestartRedis { keep_data: true },
        Fault::RestartRedis { keep_data: false },
        Fault::Roll,
    ];

    pub fn name(self) -> String {
        match self {
            Fault::Kill(service) => format!("kill-{}", service.name()),
            Fault::KillAll => "kill-all".into(),
            Fault::KillWorkers => "kill-workers".into(),
            Fault::RestartNats => "restart-nats".into(),
            Fault::RestartRedis { keep_data: true } => "restart-redis-aof".into(),
            Fault::RestartRedis { keep_data: false } => "restart-redis-empty".into(),
            Fault::Roll => "roll".into(),
        }
    }

    pub fn parse(name: &str) -> Option<Fault> {
        Fault::FULL
            .into_iter()
            .chain([Fault::KillAll, Fault::KillWorkers])
            .find(|f| f.name() == name)
    }

    /// Injects the fault; returns what is worth knowing (replicas that did not drain).
    async fn inject(self, stack: &mut Stack) -> anyhow::Result<Vec<String>> {
        let mut notes = Vec::new();
        match self {
            Fault::Kill(service) => {
                let victim = check::busiest(stack, service).await;
                stack.kill(service, victim).await?;
                stack.start_replica(service).await?;
            }
            Fault::KillAll | Fault::KillWorkers => {
                let services: Vec<Service> = Service::ALL
                    .into_iter()
                    .filter(|s| self == Fault::KillAll || *s != Service::Ingress)
                    .collect();
                let mut victims = Vec::new();
                for &service in &services {
                    victims.push((service, check::busiest(stack, service).await));
                }
                for (service, victim) in victims {
                    stack.kill(service, victim).await?;
                }
                for service in services {
                    stack.start_replica(service).await?;
                }
            }
            Fault::RestartNats => stack.restart_nats().await?,
            Fault::RestartRedis { keep_data } => stack.restart_redis(keep_data).await?,
            Fault::Roll => {
                for service in Service::ALL {
                    for name in stack.roll(service, ROLL_GRACE).await? {
                        notes.push(format!("{name} did not exit within {ROLL_GRACE:?}: killed"));
                    }
                }
            }
        }
        Ok(notes)
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// Calls kept in flight during each round.
    pub calls: usize,
    pub faults: Vec<Fault>,
    /// Questions per call (at most [`QUESTIONS`]'s length).
    pub questions: usize,
    /// The first calls of a round start over this long.
    pub ramp: Duration,
    pub run_dir: PathBuf,
}

impl ChaosOptions {
    /// `just chaos`: every fault of the issue, `calls` calls of 6 questions.
    pub fn full(calls: usize, run_dir: PathBuf) -> Self {
        Self {
            calls,
            faults: Fault::FULL.to_vec(),
            questions: 6,
            ramp: ramp_for(calls),
            run_dir,
        }
    }

    /// `--quick`: one fault of each kind, 4 calls of 4 questions.
    pub fn quick(run_dir: PathBuf) -> Self {
        Self {
            calls: 4,
            faults: Fault::QUICK.to_vec(),
            questions: 4,
            ramp: ramp_for(4),
            run_dir,
        }
    }

    /// The longest a call may last: every question unanswered, plus the greeting.
    fn max_call(&self) -> Duration {
        Duration::from_millis((self.questions as u64 + 1) * (ANSWER_WAIT_MS + 5_000))
    }
}

/// A fifth of a second per call, at least 2 s: 50 calls start over 10 s.
pub fn ramp_for(calls: usize) -> Duration {
    Duration::from_millis((calls as u64 * 200).max(2_000))
}

/// What a chaos run measured.
#[derive(Debug)]
pub struct ChaosResult {
    pub options: ChaosOptions,
    pub rounds: Vec<RoundResult>,
    pub wall: Duration,
}

impl ChaosResult {
    /// The rounds that dropped a call, left a question unanswered or lost an event.
    pub fn failed(&self) -> Vec<&RoundResult> {
        self.rounds
            .iter()
            .filter(|r| !r.problems().is_empty())
            .collect()
    }
}

/// The scripted call: greeting, then each question and its answer, hang up.
pub fn scenario(questions: usize) -> anyhow::Result<Scenario> {
    let mut toml = String::from("from = \"+14155551234\"\nto = \"+15005550006\"\ntones = true\n");
    toml += &format!("[[steps]]\nwait_for_bot = {ANSWER_WAIT_MS}\n");
    for question in QUESTIONS.iter().take(questions) {
        toml += &format!(
            "[[steps]]\nsay = \"{question}\"\n[[steps]]\nwait_for_bot = {ANSWER_WAIT_MS}\n"
        );
    }
    toml += "[[steps]]\nhangup = true\n";
    Ok(Scenario::from_toml(&toml)?)
}

/// Starts the stack (two replicas of every service, Redis with its append-only file),
/// runs one round per fault, stops the stack.
pub async fn run(options: &ChaosOptions) -> anyhow::Result<ChaosResult> {
    let started = Instant::now();
    let mut config = StackConfig::new(&options.run_dir);
    config.delays = Delays::TYPICAL;
    config.replicas = Replicas::all(2);
    config.redis_aof = true;
    config.stt_script = QUESTIONS.map(String::from).to_vec();
    config.llm_replies = REPLIES.map(String::from).to_vec();
    // One stt replica may have to own every call while the other is gone.
    config.service_env.push((
        "SB_STT_MAX_CALLS".into(),
        (2 * options.calls + 10).to_string(),
    ));
    let mut stack = Stack::start(config)
        .await
        .context("the stack did not start")?;
    let js = stack.jetstream().await?;
    let mut rounds = Vec::new();
    for (i, fault) in options.faults.iter().enumerate() {
        println!(
            "chaos: round {} of {}: {} while {} calls run",
            i + 1,
            options.faults.len(),
            fault.name(),
            options.calls
        );
        let result = round(&mut stack, &js, *fault, options).await?;
        println!("{}", table::row(&result));
        rounds.push(result);
    }
    stack.stop().await;
    Ok(ChaosResult {
        options: options.clone(),
        rounds,
        wall: started.elapsed(),
    })
}

/// One round: calls in, the fault mid-call, calls out, judged.
async fn round(
    stack: &mut Stack,
    js: &jetstream::Context,
    fault: Fault,
    options: &ChaosOptions,
) -> anyhow::Result<RoundResult> {
    let rebuilt_before = check::sessions_rebuilt(stack).await;
    let audio_from = frames::next_sequence(js).await?;
    let mut pool = CallPool::new(
        stack.caller_config(),
        scenario(options.questions)?,
        options.max_call(),
    );
    let first = pool.ramp(options.calls, options.ramp);
    let wait = options.ramp + Duration::from_secs(60);
    let ended = pool.ended();
    // Replacements stop at four times the calls (a broken stack refuses every call).
    let max_placed = 4 * options.calls;
    let mid_call = pool
        .keep(options.calls, max_placed, mid_call(js, &first, ended, wait))
        .await;
    let mut notes = Vec::new();
    if !mid_call {
        notes.push(format!(
            "not every call was mid-call after {wait:?}; fault injected anyway"
        ));
    }
    let injected = Instant::now();
    let outcome = pool
        .keep(
            options.calls,
            max_placed,
            tokio::time::timeout(FAULT_LIMIT, fault.inject(stack)),
        )
        .await;
    let fault_took = injected.elapsed();
    match outcome {
        Ok(Ok(more)) => notes.extend(more),
        Ok(Err(error)) => notes.push(format!("the fault failed: {error:#}")),
        Err(_) => notes.push(format!("the fault did not finish within {FAULT_LIMIT:?}")),
    }
    // New calls arrive once the fault is over, too: a fault that leaves the stack unable
    // to take calls shows in its own round, not in the next one's first calls.
    for _ in 0..fresh_calls(options.calls) {
        pool.place(Duration::ZERO);
    }
    pool.drain().await;
    let mut result = check::judge(js, fault, pool.take_finished(), audio_from).await?;
    result.fault_secs = fault_took.as_secs_f64();
    result.sessions_rebuilt = check::sessions_rebuilt(stack)
        .await
        .into_iter()
        .map(|(name, n)| n.saturating_sub(rebuilt_before.get(&name).copied().unwrap_or(0)))
        .sum();
    result.notes.extend(notes);
    Ok(result)
}

/// Calls placed right after the fault: a tenth of the round's, at least two (the front
/// picks a replica at random: at two calls both ingress replicas get one half the time,
/// at five 15 times in 16).
fn fresh_calls(calls: usize) -> usize {
    (calls / 10).max(2)
}

/// Waits until every call of `sids` has a transcript stored (it is past its first
/// question) or has ended; `false` if that did not happen within `limit`.
async fn mid_call(
    js: &jetstream::Context,
    sids: &[String],
    ended: Arc<Mutex<HashSet<String>>>,
    limit: Duration,
) -> bool {
    let tenant = TenantId::parse(TENANT).expect("a valid tenant id");
    let deadline = Instant::now() + limit;
    let mut asked: HashSet<&String> = HashSet::new();
    // A poll of JetStream every 200 ms (one direct get per call still waiting).
    let mut poll = tokio::time::interval(Duration::from_millis(200));
    while Instant::now() < deadline {
        poll.tick().await;
        let Ok(stream) = js.get_stream(subject::CALLS_STREAM).await else {
            continue;
        };
        let ended = ended.lock().expect("never poisoned").clone();
        let waiting: Vec<&String> = sids
            .iter()
            .filter(|s| !asked.contains(s) && !ended.contains(*s))
            .collect();
        for sid in waiting {
            let Ok(call) = CallSid::parse(sid) else {
                continue;
            };
            let transcript = subject::event(&tenant, &call, Kind::Transcript);
            if stream
                .get_last_raw_message_by_subject(&transcript)
                .await
                .is_ok()
            {
                asked.insert(sid);
            }
        }
        if sids.iter().all(|s| asked.contains(s) || ended.contains(s)) {
            return true;
        }
    }
    false
}
