//! Graceful shutdown: one per process.
//!
//! Consumes SIGTERM/SIGINT (or a call to [`Shutdown::trigger`]); produces two cancellation
//! signals. `stopping` fires first: `/ready` turns 503 and consumers stop pulling. `abort`
//! fires when the drain deadline passes: in-flight work hands its input back (NAK). A
//! `TaskTracker` counts the in-flight work. State: the tokens and the tracker.

use std::time::Duration;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

#[derive(Debug, Clone)]
pub struct Shutdown {
    stopping: CancellationToken,
    abort: CancellationToken,
    tracker: TaskTracker,
    deadline: Duration,
}

impl Shutdown {
    pub fn new(deadline: Duration) -> Self {
        Self {
            stopping: CancellationToken::new(),
            abort: CancellationToken::new(),
            tracker: TaskTracker::new(),
            deadline,
        }
    }

    /// Fires when shutdown begins: stop taking new work.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// Fires when the drain deadline has passed: give back unfinished work.
    pub fn abort(&self) -> &CancellationToken {
        &self.abort
    }

    /// Tracks in-flight work (stage deliveries, ingress sockets).
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }

    /// Begins shutdown.
    pub fn trigger(&self) {
        self.stopping.cancel();
    }

    /// Triggers shutdown on SIGTERM or Ctrl-C.
    pub fn listen_for_signals(&self) {
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received");
            stopping.cancel();
        });
    }

    /// After `stopping` fired: waits for tracked work, up to the drain deadline; then fires
    /// `abort` and waits for the work to hand back its inputs. Returns whether everything
    /// finished inside the deadline.
    pub async fn drain(&self) -> bool {
        self.tracker.close();
        let finished = tokio::time::timeout(self.deadline, self.tracker.wait())
            .await
            .is_ok();
        if !finished {
            tracing::warn!(
                deadline_secs = self.deadline.as_secs_f64(),
                "drain deadline passed"
            );
            self.abort.cancel();
            self.tracker.wait().await;
        }
        finished
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_work_then_aborts_at_the_deadline() {
        let shutdown = Shutdown::new(Duration::from_secs(5));
        let quick = shutdown
            .tracker()
            .spawn(tokio::time::sleep(Duration::from_secs(1)));
        let abort = shutdown.abort().clone();
        let slow = shutdown.tracker().spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(60)) => "finished",
                () = abort.cancelled() => "handed back",
            }
        });
        shutdown.trigger();
        assert!(shutdown.is_stopping());
        assert!(
            !shutdown.drain().await,
            "slow work should miss the deadline"
        );
        quick.await.unwrap();
        assert_eq!(slow.await.unwrap(), "handed back");
    }

    #[tokio::test(start_paused = true)]
    async fn drain_reports_success_when_work_finishes_in_time() {
        let shutdown = Shutdown::new(Duration::from_secs(5));
        shutdown
            .tracker()
            .spawn(tokio::time::sleep(Duration::from_secs(1)));
        shutdown.trigger();
        assert!(shutdown.drain().await);
        assert!(!shutdown.abort().is_cancelled());
    }
}
