//! Chaos, quick (`switchboard chaos --quick`, issue 15): two replicas of every service,
//! scripted calls in flight, and one fault of each kind in its own round: one replica of
//! every service SIGKILLed at once (the ingress' calls reconnect through the stream's
//! `<Connect action>`), redis-server restarted with its append-only file and restarted
//! empty, every service (the ingress too: its calls move) rolled one replica at a time.
//! nats-server's restart runs in `just chaos` only (the slowest round to settle).

use sb_stack::{
    chaos::{self, ChaosOptions, Fault},
    stack::ensure_built,
};

/// Every round keeps every call (none ends early or is refused), answers every question
/// the callers ask, and loses no event: each call's `webhook`, `start` and `end`, and a
/// `transcript` for every question, are in `CALLS`. The faults really happened: each was
/// injected without error while the calls were past their first question.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_survive_one_fault_of_each_kind() {
    ensure_built(false).expect("the service binaries build");
    let dir = tempfile::Builder::new()
        .prefix("sb-chaos-")
        .tempdir()
        .unwrap();
    // The logs outlive a failure (removed at the end of a passing run).
    let logs = dir.keep();
    eprintln!("chaos: logs in {}", logs.display());
    let options = ChaosOptions::quick(logs.clone());
    let result = chaos::run(&options).await.expect("the chaos run completes");
    eprint!("{}", chaos::table::render(&result));

    let faults: Vec<Fault> = result.rounds.iter().map(|r| r.fault).collect();
    assert_eq!(faults, Fault::QUICK, "one round per kind of fault");
    let mut failures = Vec::new();
    for round in &result.rounds {
        let name = round.fault.name();
        if !round.notes.is_empty() {
            failures.push(format!("{name}: {:?}", round.notes));
        }
        if round.placed < options.calls {
            failures.push(format!("{name}: only {} calls placed", round.placed));
        }
        if round.asked < options.calls * options.questions {
            failures.push(format!(
                "{name}: {} questions asked, fewer than {} calls × {}",
                round.asked, options.calls, options.questions
            ));
        }
        if round.completed != round.placed {
            failures.push(format!("{name}: calls dropped: {:?}", round.dropped));
        }
        if round.answered != round.asked {
            failures.push(format!("{name}: unanswered: {:?}", round.unanswered));
        }
        if !round.events_lost.is_empty() {
            failures.push(format!("{name}: events lost: {:?}", round.events_lost));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let _ = std::fs::remove_dir_all(logs);
}
