//! The dialer: outbound campaigns (ARCHITECTURE §6, "Dial attempts").
//!
//! Consumes the campaigns API's requests, the campaign queue in the state Redis, and
//! Twilio's status and machine-detection callbacks; produces calls through Twilio's REST
//! API (`Calls.json`), the `dial`, `answered_by` and `dial_result` events of each call on
//! JetStream, and the outcome of every contact in the queue. Stateless: every fact lives
//! in Redis (the queue, the open attempts) or in the log.

pub mod api;
pub mod callbacks;
pub mod campaign;
pub mod clock;
pub mod config;
pub mod dialer;
pub mod outcome;
pub mod reconcile;
pub mod run;
pub mod twilio;

pub use config::{ConfigError, DialerConfig, Settings};
pub use dialer::{Dialer, Dialled};
