//! The ingress' own settings, read by clap from flags or `SB_*` environment variables, and
//! their validated form.
//!
//! Consumes [`IngressConfig`] (flattened into the binary's `Config` next to the runtime's
//! settings); produces [`Settings`]: the signature validator, the call credentials, the
//! public URLs Twilio signs, the TwiML answers that never change, and the media limits. Invalid values fail at
//! start-up with a message naming the environment variable. State: none.

use std::time::Duration;

use sb_runtime::Secret;
use sb_runtime::redis::idempotency::IDEMPOTENCY_TTL;
use sb_twilio::{CallCredentials, RequestValidator, twiml};

/// The shortest call-credential secret accepted (32 random bytes in hex are 64).
const MIN_CREDENTIAL_SECRET_CHARS: usize = 32;

/// Settings of the Twilio-facing service.
#[derive(Debug, Clone, clap::Args)]
pub struct IngressConfig {
    /// Twilio auth token (the account's primary token); signs every webhook and media-stream
    /// upgrade Twilio sends. Required. Never printed.
    #[arg(long, env = "SB_TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Option<Secret>,

    /// Public base URL Twilio calls, e.g. https://agent.example.com (as configured on the
    /// number; a path prefix is allowed). Signatures are checked against it plus the request's
    /// path and query (https for webhooks, wss for the media socket), and the TwiML stream URL
    /// is built from it. Required.
    #[arg(long, env = "SB_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Secret that signs each call's media-socket credential (HMAC-SHA256 over the call
    /// sid, tenant, stream URL and expiry), which the webhook's TwiML hands Twilio and the
    /// socket's `start` must bring back. At least 32 characters (e.g. `openssl rand -hex
    /// 32`), the same on every ingress replica. Required. Never printed.
    #[arg(long, env = "SB_CALL_CREDENTIAL_SECRET", hide_env_values = true)]
    pub call_credential_secret: Option<Secret>,

    /// How long a call's credential is good for after its webhook, in seconds (a real
    /// call's socket starts within seconds). At most 300: the admission record a socket is
    /// checked against lives that long.
    #[arg(long, env = "SB_CALL_CREDENTIAL_TTL_SECS", default_value_t = 300)]
    pub call_credential_ttl_secs: u64,

    /// Twilio's REST API (the stand-in's locally): on drain, live calls are redirected
    /// through it to another replica.
    #[arg(
        long,
        env = "SB_TWILIO_API_URL",
        default_value = "https://api.twilio.com"
    )]
    pub twilio_api_url: String,

    /// On drain (SIGTERM), move each live call to another replica through a Twilio
    /// redirect instead of playing it out until the drain deadline.
    #[arg(long, env = "SB_MIGRATE_ON_DRAIN", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate_on_drain: bool,

    /// Fault injection, for tests and chaos runs only: bot-audio chunks the ingress drops
    /// on receipt as if lost in transit, each `turn:sentence:chunk` (comma-separated). The
    /// gap repair then fetches them from the `AUDIO` stream. Empty (the default) in
    /// production.
    #[arg(long, env = "SB_FAULT_DROP_BOT_CHUNKS", value_delimiter = ',')]
    pub fault_drop_bot_chunks: Vec<String>,

    /// Caller audio per published `audio.in` event, in ms: a multiple of 20 (one Twilio frame).
    #[arg(long, env = "SB_AUDIO_BATCH_MS", default_value_t = 20)]
    pub audio_batch_ms: u32,

    /// How far ahead of real time bot audio is sent to Twilio, in ms: small, so a barge-in
    /// `clear` discards little and mark echoes track what was heard.
    #[arg(long, env = "SB_PLAYBACK_LEAD_MS", default_value_t = 80)]
    pub playback_lead_ms: u64,

    /// While the bot's turn is unfinished, its audio counts as pending (barge-in possible)
    /// this long after its last chunk arrived or was played, in ms.
    #[arg(long, env = "SB_BARGEIN_PENDING_MS", default_value_t = 1500)]
    pub bargein_pending_ms: u64,

    /// Largest media-stream message accepted, in bytes; a larger one is rejected on its own
    /// (counted, logged) and the call goes on. Frames beyond 64 times this close the socket.
    #[arg(long, env = "SB_WS_MAX_MESSAGE_BYTES", default_value_t = 16 * 1024)]
    pub ws_max_message_bytes: usize,

    /// Largest webhook body accepted, in bytes (413 beyond).
    #[arg(long, env = "SB_MAX_FORM_BYTES", default_value_t = 32 * 1024)]
    pub max_form_bytes: usize,

    /// Pipelined publishes (caller audio, dtmf, played) whose store acks are checked at once,
    /// for the whole process; beyond twice this an ack goes unchecked (counted), so a slow
    /// NATS never stalls a socket.
    #[arg(long, env = "SB_AUDIO_ACKS_IN_FLIGHT", default_value_t = 8192)]
    pub audio_acks_in_flight: usize,

    /// Every Nth `audio.in` event of a call (and the partial batch flushed when it ends) asks
    /// JetStream for a store ack, checked off the socket's path; the events between are plain
    /// publishes on the same connection, which the stream stores in order with them. 1 = an
    /// ack for every event.
    #[arg(long, env = "SB_AUDIO_ACK_EVERY", default_value_t = 10)]
    pub audio_ack_every: u32,

    /// What a caller hears when the dialled number belongs to no tenant.
    #[arg(
        long,
        env = "SB_UNKNOWN_NUMBER_TEXT",
        default_value = "Sorry, this number is not in service. Goodbye."
    )]
    pub unknown_number_text: String,

    /// What a caller hears when the tenant's webhook rate limit declines the call.
    #[arg(
        long,
        env = "SB_RATE_LIMITED_TEXT",
        default_value = "Sorry, all our lines are busy right now. Please call again later. Goodbye."
    )]
    pub rate_limited_text: String,

    /// Path of the incoming-call webhook (the number's Voice URL).
    #[arg(long, env = "SB_VOICE_PATH", default_value = "/twilio/voice")]
    pub voice_path: String,

    /// Path of the call status callback.
    #[arg(
        long,
        env = "SB_STATUS_CALLBACK_PATH",
        default_value = "/twilio/status"
    )]
    pub status_callback_path: String,

    /// Path of the Media Streams WebSocket (put in the TwiML `<Stream url>`).
    #[arg(long, env = "SB_MEDIA_PATH", default_value = "/twilio/media")]
    pub media_path: String,
}

impl IngressConfig {
    /// Defaults as in production, with the given token and public URL (and a fixed call
    /// credential secret, [`Self::TEST_CREDENTIAL_SECRET`]).
    pub fn for_tests(auth_token: &str, public_url: &str) -> Self {
        Self {
            twilio_auth_token: Some(Secret::new(auth_token)),
            public_url: Some(public_url.to_owned()),
            call_credential_secret: Some(Secret::new(Self::TEST_CREDENTIAL_SECRET)),
            call_credential_ttl_secs: 300,
            twilio_api_url: "https://api.twilio.com".to_owned(),
            migrate_on_drain: true,
            fault_drop_bot_chunks: Vec::new(),
            audio_batch_ms: 20,
            playback_lead_ms: 80,
            bargein_pending_ms: 1500,
            ws_max_message_bytes: 16 * 1024,
            max_form_bytes: 32 * 1024,
            audio_acks_in_flight: 8192,
            audio_ack_every: 10,
            unknown_number_text: "Sorry, this number is not in service. Goodbye.".to_owned(),
            rate_limited_text: "Sorry, all our lines are busy right now. Goodbye.".to_owned(),
            voice_path: "/twilio/voice".to_owned(),
            status_callback_path: "/twilio/status".to_owned(),
            media_path: "/twilio/media".to_owned(),
        }
    }
}

impl IngressConfig {
    /// The call credential secret of [`Self::for_tests`] (tests forge with it).
    pub const TEST_CREDENTIAL_SECRET: &str = "test-call-credential-secret-0123456789";
}

/// A setting that cannot work, named by its environment variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

fn invalid(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        reason: reason.into(),
    }
}

/// Silence past a tenant's endpointing during which caller frames are still sent one by
/// one: covers the STT's own timing slack, so batching never delays the end of a turn.
pub const BATCH_HOLD_MARGIN_MS: u32 = 300;

/// Validated settings, shared by every request and socket.
#[derive(Debug, Clone)]
pub struct Settings {
    pub validator: RequestValidator,
    /// Issues each admitted call's media-socket credential and checks it at `start`.
    pub credentials: CallCredentials,
    /// `https://host[:port][/prefix]`, no trailing slash.
    pub public_base: String,
    /// `wss://host[:port][/prefix]/twilio/media`: the TwiML stream URL.
    pub stream_url: String,
    /// Twilio frames (20 ms) per `audio.in` event, at most (see [`Settings::batch_hold_frames`]).
    pub audio_batch_frames: usize,
    pub playback_lead: Duration,
    pub bargein_pending: Duration,
    pub ws_max_message_bytes: usize,
    pub max_form_bytes: usize,
    pub audio_acks_in_flight: usize,
    /// A call's `audio.in` events per store ack requested (see [`IngressConfig::audio_ack_every`]).
    pub audio_ack_every: u64,
    /// `<Say>…</Say><Hangup/>` for numbers without a tenant.
    pub unknown_number_twiml: String,
    /// `<Say>…</Say><Hangup/>` for calls over the tenant's rate limit.
    pub rate_limited_twiml: String,
    pub voice_path: String,
    pub status_callback_path: String,
    pub media_path: String,
    /// Bot-audio chunks dropped on receipt (fault injection; see the config).
    pub drop_bot_chunks: Vec<(u32, u32, u32)>,
    /// Live calls move to another replica on drain.
    pub migrate_on_drain: bool,
}

impl Settings {
    /// Frames after voice that are still sent one by one, for a tenant whose STT ends a
    /// turn after `endpointing_ms` of silence: the endpointing and [`BATCH_HOLD_MARGIN_MS`],
    /// so the frame that ends a turn is never held back in a batch.
    pub fn batch_hold_frames(&self, endpointing_ms: u32) -> u64 {
        u64::from((endpointing_ms + BATCH_HOLD_MARGIN_MS).div_ceil(20))
    }

    /// Checks every setting; the error names the environment variable to fix.
    pub fn from_config(config: &IngressConfig) -> Result<Self, ConfigError> {
        let token = config
            .twilio_auth_token
            .as_ref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid("SB_TWILIO_AUTH_TOKEN", "required: the Twilio auth token"))?;
        let credentials = credentials(config)?;
        let public_base = public_base(config.public_url.as_deref())?;
        let paths = [
            ("SB_VOICE_PATH", &config.voice_path),
            ("SB_STATUS_CALLBACK_PATH", &config.status_callback_path),
            ("SB_MEDIA_PATH", &config.media_path),
        ];
        for (var, path) in paths {
            if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
                return Err(invalid(
                    var,
                    format!("{path:?} must be a path like /twilio/x"),
                ));
            }
        }
        if config.status_callback_path == config.voice_path {
            return Err(invalid(
                "SB_STATUS_CALLBACK_PATH",
                "must differ from SB_VOICE_PATH",
            ));
        }
        if config.media_path == config.voice_path
            || config.media_path == config.status_callback_path
        {
            return Err(invalid(
                "SB_MEDIA_PATH",
                "must differ from the webhook paths",
            ));
        }
        if config.audio_batch_ms == 0
            || !config.audio_batch_ms.is_multiple_of(20)
            || config.audio_batch_ms > 1000
        {
            return Err(invalid(
                "SB_AUDIO_BATCH_MS",
                "must be a multiple of 20 between 20 and 1000",
            ));
        }
        if config.playback_lead_ms > 5000 {
            return Err(invalid("SB_PLAYBACK_LEAD_MS", "must be at most 5000"));
        }
        if config.ws_max_message_bytes < 1024 {
            return Err(invalid("SB_WS_MAX_MESSAGE_BYTES", "must be at least 1024"));
        }
        if config.max_form_bytes < 1024 {
            return Err(invalid("SB_MAX_FORM_BYTES", "must be at least 1024"));
        }
        if config.audio_acks_in_flight == 0 {
            return Err(invalid("SB_AUDIO_ACKS_IN_FLIGHT", "must be at least 1"));
        }
        if !(1..=1000).contains(&config.audio_ack_every) {
            return Err(invalid("SB_AUDIO_ACK_EVERY", "must be between 1 and 1000"));
        }
        let drop_bot_chunks = config
            .fault_drop_bot_chunks
            .iter()
            .map(|raw| chunk_position(raw))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                invalid(
                    "SB_FAULT_DROP_BOT_CHUNKS",
                    "each entry must be turn:sentence:chunk",
                )
            })?;
        let stream_url = format!(
            "{}{}",
            sb_twilio::signature::websocket_url(&public_base),
            config.media_path
        );
        // The stream URL must make valid TwiML (wss, no query): check once, here.
        twiml::ConnectStream::new(stream_url.clone())
            .to_twiml()
            .map_err(|e| invalid("SB_PUBLIC_URL", e.to_string()))?;
        Ok(Self {
            validator: RequestValidator::new(token.expose()),
            credentials,
            public_base,
            stream_url,
            audio_batch_frames: (config.audio_batch_ms / 20) as usize,
            playback_lead: Duration::from_millis(config.playback_lead_ms),
            bargein_pending: Duration::from_millis(config.bargein_pending_ms),
            ws_max_message_bytes: config.ws_max_message_bytes,
            max_form_bytes: config.max_form_bytes,
            audio_acks_in_flight: config.audio_acks_in_flight,
            audio_ack_every: u64::from(config.audio_ack_every),
            unknown_number_twiml: twiml::say_and_hang_up(&config.unknown_number_text),
            rate_limited_twiml: twiml::say_and_hang_up(&config.rate_limited_text),
            voice_path: config.voice_path.clone(),
            status_callback_path: config.status_callback_path.clone(),
            media_path: config.media_path.clone(),
            drop_bot_chunks,
            migrate_on_drain: config.migrate_on_drain,
        })
    }

    /// The URL Twilio requested (and signed) for a request that reached us as `path_and_query`.
    pub fn public_url_for(&self, path_and_query: &str) -> String {
        let mut url = String::with_capacity(self.public_base.len() + path_and_query.len());
        url.push_str(&self.public_base);
        url.push_str(path_and_query);
        url
    }
}

/// `turn:sentence:chunk` → its numbers.
fn chunk_position(raw: &str) -> Option<(u32, u32, u32)> {
    let mut parts = raw.trim().split(':').map(|p| p.parse::<u32>().ok());
    let position = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(position)
}

fn credentials(config: &IngressConfig) -> Result<CallCredentials, ConfigError> {
    const VAR: &str = "SB_CALL_CREDENTIAL_SECRET";
    let secret = config
        .call_credential_secret
        .as_ref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(VAR, "required: the secret signing call credentials"))?;
    if secret.expose().chars().count() < MIN_CREDENTIAL_SECRET_CHARS {
        return Err(invalid(
            VAR,
            format!("must be at least {MIN_CREDENTIAL_SECRET_CHARS} characters"),
        ));
    }
    let ttl = config.call_credential_ttl_secs;
    if !(1..=IDEMPOTENCY_TTL.as_secs()).contains(&ttl) {
        return Err(invalid(
            "SB_CALL_CREDENTIAL_TTL_SECS",
            format!("must be between 1 and {}", IDEMPOTENCY_TTL.as_secs()),
        ));
    }
    Ok(CallCredentials::new(
        secret.expose().as_bytes(),
        Duration::from_secs(ttl),
    ))
}

fn public_base(raw: Option<&str>) -> Result<String, ConfigError> {
    const VAR: &str = "SB_PUBLIC_URL";
    let raw = raw
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| invalid(VAR, "required: the public https:// URL Twilio calls"))?;
    let Some(rest) = raw.strip_prefix("https://") else {
        return Err(invalid(
            VAR,
            format!("{raw:?} must start with https:// (Twilio media streams need wss)"),
        ));
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || raw.contains(['?', '#', ' ']) {
        return Err(invalid(
            VAR,
            format!("{raw:?} must be https://host[:port][/prefix]"),
        ));
    }
    Ok(raw.trim_end_matches('/').to_owned())
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
