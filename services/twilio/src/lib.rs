//! Twilio wire facts shared by Switchboard's ingress and the Twilio stand-in
//! (PROTOCOLS §1–4): [`signature`] (`X-Twilio-Signature`, computing and
//! validating), [`media`] (Media Streams WebSocket messages), [`twiml`] (the
//! `<Connect><Stream>` answer and a parser), [`rest`], [`update`], [`resource`] and
//! [`list`] (the Calls API), [`amd`] (answering machine detection), [`status`]
//! (incoming-call webhook and status callbacks), [`form`] (form bodies with
//! repeated keys) and [`credential`] (Switchboard's per-call media-socket credential,
//! carried through Twilio as a TwiML `<Parameter>`).
//!
//! Consumes wire text; produces typed values and wire text. Stateless: nothing here does
//! I/O or keeps state between calls.

pub mod amd;
pub mod credential;
pub mod form;
pub mod list;
pub mod media;
pub mod resource;
pub mod rest;
pub mod signature;
pub mod status;
pub mod twiml;
pub mod update;

pub use amd::{AmdCallback, AnsweredBy, MachineDetection};
pub use credential::{CallBinding, CallCredentials, CredentialError};
pub use list::{CallPage, ListCalls};
pub use media::{InboundMessage, MediaError, OutboundMessage, parse_inbound, parse_outbound};
pub use resource::CallResource;
pub use rest::{ApiError, CallStatus, CallTarget, CreateCall, UpdateCall};
pub use signature::{RequestValidator, SignatureError, sign, sign_url};
pub use status::{IncomingCall, StatusCallback};
pub use twiml::{ConnectStream, TwimlError};
