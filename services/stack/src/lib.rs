//! The whole Switchboard on one machine, on loopback.
//!
//! [`nats_server`] and [`servers`] run real nats-server (auth on, optionally TLS or a
//! cluster) and redis-server (password on) child processes; [`ops`] is the operator's
//! `topology` and `nats-auth` commands; [`campaign_cli`] and [`campaigns_api`] the
//! campaigns API's client and stand-alone server; [`process`] runs
//! the stand-ins and services as child processes; [`stack`] starts all of it on free
//! loopback ports, any number of replicas per service behind a [`front`], and injects
//! faults. [`load`] (`bench-load`), [`chaos`] and [`soak`] run scripted calls against it
//! ([`pool`] keeps calls in flight). State: the child processes, killed on drop, and their
//! log files.

pub mod breakdown;
pub mod campaign_cli;
pub mod campaigns_api;
pub mod chaos;
pub mod demo;
pub mod demo_campaign;
pub mod frames;
pub mod front;
pub mod gate;
pub mod live_tenant;
pub mod load;
mod nats_config;
pub mod nats_server;
pub mod ops;
pub mod plot;
pub mod pool;
pub mod process;
pub mod report;
pub mod run;
pub mod servers;
pub mod service_env;
pub mod soak;
pub mod stack;
pub mod tenants_cli;
mod tenants_remote;

pub use stack::{Delays, Stack, StackConfig};
