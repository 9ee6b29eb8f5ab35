//! The runtime every Switchboard service is built on.
//!
//! Owns the shared plumbing so a service is its own logic and nothing else: typed config
//! ([`config`]), logging ([`telemetry`]), metric names ([`metrics`]), the NATS connection and
//! JetStream topology from `nats/` ([`nats`], [`topology`], [`reconcile`]) and the
//! nats-server users it implies ([`nats_auth`]), publishing ([`publisher`]), the
//! stage contract ([`stage`], [`emitter`] over an [`outbox`], [`meter`]) and its runner
//! ([`runner`]) with dead letters ([`dead_letter`]), a stage binary's whole `main`
//! ([`stage_main`]), graceful shutdown ([`shutdown`]), the health/metrics HTTP server
//! ([`http`]), tenant configuration ([`tenants`]), every Redis pattern ([`redis`]), the call
//! state stages use behind traits ([`state`]) with the one staleness rule ([`progress`]) and
//! its rebuild from the call's events when Redis lost it ([`session_log`]),
//! and in-memory doubles of those seams for ring-2 tests (`testing`, feature `testing`).
//! [`Runtime`] wires them for a binary.
//! State: connections and handles only; no call state lives here.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod api_error;
pub mod config;
pub mod dead_letter;
pub mod emitter;
pub mod heard;
pub mod http;
pub mod meter;
pub mod metrics;
pub mod nats;
pub mod nats_auth;
pub mod outbox;
pub mod progress;
pub mod publisher;
pub mod reconcile;
pub mod redis;
pub mod runner;
mod service;
pub mod session_log;
pub mod shutdown;
pub mod signature;
pub mod stage;
pub mod stage_main;
pub mod state;
pub mod telemetry;
pub mod tenants;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod topology;

pub use config::{NatsConfig, RuntimeConfig, Secret};
pub use publisher::Publisher;
pub use runner::{RunnerConfig, run_stage};
pub use service::{Runtime, StartError};
pub use shutdown::Shutdown;
pub use stage::{Emitter, Stage, StageError};
pub use stage_main::{StageMain, stage_main};
pub use tenants::{LiveTenants, Tenant, Tenants};
pub use topology::Topology;
