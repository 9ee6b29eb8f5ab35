//! How a media socket's call ends, and what its `end` event says (channel-driven, paused
//! time): Twilio's `stop`, a socket dropped without it (`Closed`), no message for the
//! tenant's idle timeout (`IdleTimeout`, closed with 1000), a frame over the hard limit
//! (`Rejected`, closed with 1009).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::line::Line;
use sb_ingress::Incoming;
use sb_ingress::testing::MemoryBackend;
use sb_schemas::{Body, EndReason, Kind};
use tokio::time::Instant;

fn end_reason(backend: &MemoryBackend) -> EndReason {
    let ends = backend.of_kind(Kind::End);
    assert_eq!(ends.len(), 1, "one end");
    match &ends[0].body {
        Body::End(end) => end.reason,
        other => panic!("{other:?}"),
    }
}

/// No message for the tenant's 15 s (counted from `start`, the last message): closed with
/// 1000, `end` says `IdleTimeout`.
#[tokio::test(start_paused = true)]
async fn an_idle_socket_is_closed_and_its_end_says_so() {
    let mut line = Line::open(1, "acme");
    line.start().await;
    let started = Instant::now();
    assert_eq!(line.closed_with().await, Some(1000));
    let waited = started.elapsed();
    assert!(
        (Duration::from_millis(14_900)..Duration::from_secs(16)).contains(&waited),
        "{waited:?}"
    );
    assert_eq!(end_reason(&line.backend), EndReason::IdleTimeout);
}

/// The tenant's own timeout (tiny: 4 s) applies once `start` named the tenant.
#[tokio::test(start_paused = true)]
async fn the_tenants_idle_timeout_applies() {
    let mut line = Line::open(5, "tiny");
    line.start().await;
    let started = Instant::now();
    assert_eq!(line.closed_with().await, Some(1000));
    let waited = started.elapsed();
    assert!(
        (Duration::from_millis(3_900)..Duration::from_secs(5)).contains(&waited),
        "{waited:?}"
    );
    assert_eq!(end_reason(&line.backend), EndReason::IdleTimeout);
}

/// Media every 10 s keeps a socket open past 15 s; `stop` ends it as `Stop`.
#[tokio::test(start_paused = true)]
async fn messages_keep_a_socket_open() {
    let mut line = Line::open(2, "acme");
    line.start().await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        line.media(&[0xFF; 160]);
    }
    let backend = line.close().await;
    assert_eq!(end_reason(&backend), EndReason::Stop);
}

/// A socket that closes without `stop` (a reset, a lost peer) is not a hang-up: `Closed`.
#[tokio::test(start_paused = true)]
async fn a_socket_dropped_without_stop_ends_as_closed() {
    let mut line = Line::open(3, "acme");
    line.start().await;
    line.raw(Incoming::Failed("connection reset by peer".into()));
    assert_eq!(line.closed_with().await, None);
    assert_eq!(end_reason(&line.backend), EndReason::Closed);
}

/// A frame over the hard limit: closed with 1009, `end` says `Rejected`.
#[tokio::test(start_paused = true)]
async fn a_frame_over_the_limit_closes_with_1009() {
    let mut line = Line::open(4, "acme");
    line.start().await;
    line.raw(Incoming::TooBig);
    assert_eq!(line.closed_with().await, Some(1009));
    assert_eq!(end_reason(&line.backend), EndReason::Rejected);
}
