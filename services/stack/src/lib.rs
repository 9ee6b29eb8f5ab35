//! The whole Switchboard on one machine, on loopback.
//!
//! [`servers`] runs real nats-server and redis-server child processes; [`process`] runs
//! the stand-ins and services as child processes; [`stack`] starts all of it on free
//! loopback ports. State: the child processes, killed on drop, and their log files.

pub mod breakdown;
pub mod demo;
pub mod frames;
pub mod load;
pub mod plot;
pub mod process;
pub mod report;
pub mod run;
pub mod servers;
pub mod stack;

pub use stack::{Delays, Stack, StackConfig};
