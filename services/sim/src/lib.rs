//! Protocol-faithful stand-ins for every external vendor, and the scripted caller.
//!
//! Each stand-in is an axum server bound to loopback that speaks the vendor's wire protocol
//! (`docs/PROTOCOLS.md`): [`deepgram`] (live STT WebSocket), [`llm`] (OpenAI/Groq
//! chat completions with SSE), [`tts`] (Azure TTS REST, plus Deepgram and OpenAI speech
//! faces), [`twilio`] (REST calls API), [`tenant`] (a tenant's tool server). [`caller`] plays Twilio's side of a call against
//! Switchboard's ingress. Every server runs in-process via `spawn(...) -> SimServer`, which
//! stops on drop ([`support`] holds what the stand-ins share: API keys, fault dice, the CLI runner); the `sim` binary runs them from the command line. State: per-connection
//! and per-server memory only.

pub mod caller;
pub mod deepgram;
pub mod llm;
pub mod server;
pub mod support;
pub mod tenant;
pub mod tts;
pub mod twilio;

pub use server::SimServer;
