//! Ring 3: integration tests against real nats-server and redis-server child processes.

// This whole binary is test code: helpers panic on failure like the tests themselves.
#![allow(clippy::unwrap_used)]

mod agent_tts;
mod cache_pressure;
mod campaign_api;
mod campaign_queue;
mod chaos;
mod cluster;
mod console_browser;
mod dialer;
mod e2e;
mod e2e_calls_index;
mod e2e_hindi;
mod e2e_keypad;
mod e2e_outbound;
mod e2e_preflight;
mod e2e_tenants_live;
mod e2e_tools;
mod e2e_turns;
mod e2e_voices;
mod e2e_webhooks;
mod ingress;
mod ingress_end;
mod ingress_trust;
mod internal_plane;
mod llm_limits;
mod redis_patterns;
mod replay;
mod replay_dlq;
mod replay_export;
mod replay_redrive;
mod resilience;
mod retention;
mod runner;
mod secrets;
mod shutdown;
mod startup;
mod stt;
mod support;
mod tenants_live;
