//! The whole Switchboard on one machine, on loopback.
//!
//! [`servers`] runs real nats-server and redis-server child processes. State: the child
//! processes, killed on drop.

pub mod servers;
