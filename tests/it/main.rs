//! Ring 3: integration tests against real nats-server and redis-server child processes.

mod redis_patterns;
mod runner;
mod shutdown;
mod startup;
mod support;
