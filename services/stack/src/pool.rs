//! A pool of concurrent scripted calls that replaces each call as it ends: the load the
//! chaos rounds and the soak keep on the stack while something else happens.
//!
//! Consumes where the ingress listens (one address: the stack's front) and a scenario;
//! produces one [`Finished`] per call placed, each with its call sid chosen up front (so
//! JetStream can be asked about a call while it runs). State: the calls' tasks, the sids
//! placed and the set of sids whose call has ended.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use sb_sim::caller::{CallReport, CallerConfig, Scenario, new_sid, place_call};
use tokio::task::JoinSet;

/// One call's outcome: its report, or why it could not be placed or did not finish.
#[derive(Debug)]
pub struct Finished {
    pub sid: String,
    pub result: Result<CallReport, String>,
}

/// Calls in flight, replaced as they end while [`CallPool::keep`] runs.
pub struct CallPool {
    /// Every call's caller, but for its sid and `max_call` (see [`crate::Stack::caller_config`]).
    caller: CallerConfig,
    scenario: Arc<Scenario>,
    /// A call longer than this hangs up (`CallerConfig::max_call`).
    max_call: Duration,
    tasks: JoinSet<Finished>,
    /// Every sid placed, in order.
    pub placed: Vec<String>,
    ended: Arc<Mutex<HashSet<String>>>,
    finished: Vec<Finished>,
}

impl CallPool {
    pub fn new(caller: CallerConfig, scenario: Scenario, max_call: Duration) -> Self {
        Self {
            caller,
            scenario: Arc::new(scenario),
            max_call,
            tasks: JoinSet::new(),
            placed: Vec::new(),
            ended: Arc::default(),
            finished: Vec::new(),
        }
    }

    /// Calls running (or waiting for their ramp slot).
    pub fn in_flight(&self) -> usize {
        self.tasks.len()
    }

    /// The sids whose call has ended (shared: a condition can read it while calls run).
    pub fn ended(&self) -> Arc<Mutex<HashSet<String>>> {
        self.ended.clone()
    }

    /// Places `n` calls, spread evenly over `over`; returns their sids.
    pub fn ramp(&mut self, n: usize, over: Duration) -> Vec<String> {
        let step = over / n.max(1) as u32;
        (0..n).map(|i| self.place(step * i as u32)).collect()
    }

    /// Places one call after `delay`; returns its sid.
    pub fn place(&mut self, delay: Duration) -> String {
        let sid = new_sid("CA");
        let mut caller = self.caller.clone();
        caller.call_sid = Some(sid.clone());
        caller.max_call = self.max_call;
        // The caller hangs up at `max_call`; this bounds the webhook and the status
        // callback around it (15 s each at most) too.
        let limit = delay + self.max_call + Duration::from_secs(45);
        let (scenario, ended) = (self.scenario.clone(), self.ended.clone());
        let task_sid = sid.clone();
        self.tasks.spawn(async move {
            let call = async {
                tokio::time::sleep(delay).await;
                place_call(caller, &scenario).await
            };
            let result = match tokio::time::timeout(limit, call).await {
                Ok(Ok(report)) => Ok(report),
                Ok(Err(error)) => Err(format!("{} ({})", error, error.kind())),
                Err(_) => Err(format!("no result after {limit:?}")),
            };
            ended
                .lock()
                .expect("never poisoned")
                .insert(task_sid.clone());
            Finished {
                sid: task_sid,
                result,
            }
        });
        self.placed.push(sid.clone());
        sid
    }

    /// Runs `until` to completion while keeping `target` calls in flight: each call that
    /// ends is replaced at once (a call that could not be placed, after a second, so a
    /// broken stack is not flooded), until `max_placed` calls have been placed in all.
    pub async fn keep<T>(
        &mut self,
        target: usize,
        max_placed: usize,
        until: impl Future<Output = T>,
    ) -> T {
        tokio::pin!(until);
        loop {
            tokio::select! {
                output = &mut until => return output,
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    let failed = !matches!(&joined, Ok(Finished { result: Ok(_), .. }));
                    self.record(joined);
                    let delay = if failed { Duration::from_secs(1) } else { Duration::ZERO };
                    while self.tasks.len() < target && self.placed.len() < max_placed {
                        self.place(delay);
                    }
                }
            }
        }
    }

    /// Waits for every call in flight to end (each is bounded by its own limit).
    pub async fn drain(&mut self) {
        while let Some(joined) = self.tasks.join_next().await {
            self.record(joined);
        }
    }

    /// The calls that ended since the last take.
    pub fn take_finished(&mut self) -> Vec<Finished> {
        std::mem::take(&mut self.finished)
    }

    fn record(&mut self, joined: Result<Finished, tokio::task::JoinError>) {
        match joined {
            Ok(finished) => self.finished.push(finished),
            // A caller task panicked: nothing to attribute it to but the error.
            Err(error) => self.finished.push(Finished {
                sid: String::new(),
                result: Err(format!("caller task failed: {error}")),
            }),
        }
    }
}
