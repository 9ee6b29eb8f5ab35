//! The runtime every Switchboard service is built on.
//!
//! Owns the shared plumbing so a service is its own logic and nothing else: typed config
//! ([`config`]), logging ([`telemetry`]), metric names ([`metrics`]), the NATS connection and
//! JetStream topology from `nats/` ([`nats`], [`topology`]), publishing ([`publisher`]), the
//! stage runner ([`stage`], [`runner`]) with dead letters ([`dead_letter`]), graceful
//! shutdown ([`shutdown`]), the health/metrics HTTP server ([`http`]), tenant configuration
//! ([`tenants`]) and every Redis pattern ([`redis`]). [`Runtime`] wires them for a binary.
//! State: connections and handles only; no call state lives here.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod config;
pub mod dead_letter;
pub mod http;
pub mod metrics;
pub mod nats;
pub mod publisher;
pub mod redis;
pub mod runner;
mod service;
pub mod shutdown;
pub mod stage;
pub mod telemetry;
pub mod tenants;
pub mod topology;

pub use config::{RuntimeConfig, Secret};
pub use publisher::Publisher;
pub use runner::{RunnerConfig, run_stage};
pub use service::{Runtime, StartError};
pub use shutdown::Shutdown;
pub use stage::{Emitter, Stage, StageError};
pub use tenants::{Tenant, Tenants};
pub use topology::Topology;
