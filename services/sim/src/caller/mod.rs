//! The scripted caller: plays Twilio's side of one call against Switchboard's ingress
//! (PROTOCOLS §3.5) and measures what the caller experiences.
//!
//! Consumes a [`CallerConfig`] (where the ingress listens, the public URL Twilio would
//! sign, the auth token) and a [`Scenario`]. Produces, in order: the signed incoming-call
//! webhook, a signed Media Streams WebSocket (`connected`, `start`, paced `media`, `dtmf`,
//! `mark` echoes, `stop`) and a signed `completed` status callback; returns a
//! [`CallReport`]. State: per call, in the tasks of [`place_call`]; nothing survives it.

mod control;
mod line;
mod playback;
mod report;
mod scenario;
mod script;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use futures::StreamExt as _;
use sb_twilio::form::encode_form;
use sb_twilio::resource::rfc2822;
use sb_twilio::signature::{sign, sign_url, websocket_url};
use sb_twilio::twiml::{self, ConnectStream, TwimlError};
use sb_twilio::{IncomingCall, StatusCallback};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

pub use report::{BargeIn, CallReport, EndedBy, MarkEcho, ProtocolError, TurnReport};
pub use scenario::{Scenario, ScenarioError, Step, Utterance};

/// The account the caller (and the REST stand-in) use unless told otherwise.
pub const DEFAULT_ACCOUNT_SID: &str = "AC00000000000000000000000000000000";
/// Twilio caps every call-related HTTP request at 15 s.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// Twilio gives up on a Media Streams connection after this (error 31901).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Socket read buffer: bot `media` messages are ~350 bytes, `clear`/`mark` less.
const WS_READ_BUFFER_BYTES: usize = 4 * 1024;

/// Where and how to call.
#[derive(Clone)]
pub struct CallerConfig {
    /// Where the ingress really listens, e.g. `http://127.0.0.1:8080`: webhooks are POSTed
    /// here and the media WebSocket connects here (`ws://`, the stream URL's path).
    pub ingress_url: String,
    /// The public base URL Twilio would call, e.g. `https://agent.example.com`: every
    /// signature is computed over it, as behind a TLS-terminating proxy.
    pub public_url: String,
    /// The account's auth token (signs every request).
    pub auth_token: String,
    pub account_sid: String,
    /// Path (and query) of the Voice URL.
    pub voice_path: String,
    /// Path of the status callback.
    pub status_path: String,
    /// Connect the media WebSocket here instead of `ingress_url` + the stream's path.
    pub media_connect_url: Option<String>,
    /// Hang up (send `stop`) after this long.
    pub max_call: Duration,
    /// Use this CallSid (an outbound call created through the REST stand-in); a fresh
    /// `CA` + 32 hex otherwise.
    pub call_sid: Option<String>,
    /// `Direction` in the webhook: `inbound`, or `outbound-api` for created calls.
    pub direction: String,
    /// Cancel to hang up from outside, as REST `Status=completed` does.
    pub hangup: CancellationToken,
    /// POST the `completed` status callback to `status_path` when the call ends. The REST
    /// stand-in turns it off: it sends outbound calls' callbacks itself, to the
    /// `StatusCallback` URL of the create request, once.
    pub send_status_callback: bool,
    /// Extra webhook fields, e.g. `AnsweredBy` after synchronous AMD.
    pub webhook_extra: Vec<(String, String)>,
    /// The Twilio stand-in's URL: the call's line registers there, so what an update runs
    /// on the call (a redirect to a new stream, a hang-up) reaches it. `None`: updates
    /// cannot reach the call.
    pub control_url: Option<String>,
}

impl std::fmt::Debug for CallerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerConfig")
            .field("ingress_url", &self.ingress_url)
            .field("public_url", &self.public_url)
            .field("auth_token", &"<redacted>")
            .field("account_sid", &self.account_sid)
            .field("voice_path", &self.voice_path)
            .field("status_path", &self.status_path)
            .field("media_connect_url", &self.media_connect_url)
            .field("max_call", &self.max_call)
            .field("call_sid", &self.call_sid)
            .field("direction", &self.direction)
            .finish_non_exhaustive()
    }
}

impl CallerConfig {
    /// An inbound call to `ingress_url`, signed for `public_url`, with Switchboard's paths.
    pub fn new(
        ingress_url: impl Into<String>,
        public_url: impl Into<String>,
        auth_token: impl Into<String>,
    ) -> Self {
        Self {
            ingress_url: ingress_url.into(),
            public_url: public_url.into(),
            auth_token: auth_token.into(),
            account_sid: DEFAULT_ACCOUNT_SID.to_owned(),
            voice_path: "/twilio/voice".to_owned(),
            status_path: "/twilio/status".to_owned(),
            media_connect_url: None,
            max_call: Duration::from_secs(120),
            call_sid: None,
            direction: "inbound".to_owned(),
            hangup: CancellationToken::new(),
            send_status_callback: true,
            webhook_extra: Vec::new(),
            control_url: None,
        }
    }
}

/// Why a call could not be placed at all (problems during the call are in the report).
#[derive(Debug, thiserror::Error)]
pub enum CallerError {
    /// espeak-ng failed on an utterance.
    #[error("synthesising an utterance: {0}")]
    Synth(#[from] sb_audio::synth::SynthError),
    /// The webhook request itself failed (connection refused, timeout).
    #[error("webhook request failed: {0}")]
    Http(String),
    /// The webhook was answered with a non-2xx status.
    #[error("webhook answered {status}: {body}")]
    Webhook { status: u16, body: String },
    /// The answer was not TwiML.
    #[error("webhook answer: {0}")]
    Twiml(#[from] TwimlError),
    /// The answer was TwiML without `<Connect><Stream>` (e.g. `<Say>…<Hangup/>`).
    #[error("call rejected with TwiML saying {said:?}")]
    Rejected { said: String },
    /// The media WebSocket could not be opened.
    #[error("media websocket: {0}")]
    WebSocket(String),
    /// A configured or received URL is unusable.
    #[error("bad url {0:?}")]
    Url(String),
}

impl CallerError {
    /// A bounded label for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Synth(_) => "synth",
            Self::Http(_) => "http",
            Self::Webhook { .. } => "webhook_status",
            Self::Twiml(_) => "twiml",
            Self::Rejected { .. } => "rejected",
            Self::WebSocket(_) => "websocket",
            Self::Url(_) => "url",
        }
    }
}

/// `prefix` + 32 random lowercase hex digits.
pub fn new_sid(prefix: &str) -> String {
    format!("{prefix}{:032x}", rand::random::<u128>())
}

/// Places one call: webhook, TwiML, media stream driven by `scenario`, status callback.
pub async fn place_call(
    config: CallerConfig,
    scenario: &Scenario,
) -> Result<CallReport, CallerError> {
    let spoken = script::synthesise(scenario).await?;
    let call_sid = config.call_sid.clone().unwrap_or_else(|| new_sid("CA"));
    let mut call = IncomingCall::ringing(
        &config.account_sid,
        &call_sid,
        &scenario.from,
        &scenario.to,
        &config.direction,
    );
    call.params.extend(config.webhook_extra.iter().cloned());
    let http = reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .build()
        .map_err(|e| CallerError::Http(e.to_string()))?;
    let began = SystemTime::now();

    let (status, body) = post_signed(&http, &config, &config.voice_path, &call.params).await?;
    if !(200..300).contains(&status) {
        return Err(CallerError::Webhook { status, body });
    }
    let response = twiml::parse(&body)?;
    let Ok(stream) = response.connect_stream().cloned() else {
        if config.send_status_callback {
            let _ = post_completed(&http, &config, &call, began).await;
        }
        return Err(CallerError::Rejected {
            said: response.said(),
        });
    };

    let socket = connect_media(&config, &stream).await?;
    let (sink, socket_stream) = socket.split();
    let (commands, command_rx) = mpsc::channel(16);
    let (status_tx, status_rx) = watch::channel(line::LineStatus::default());
    let setup = line::LineSetup {
        account_sid: config.account_sid.clone(),
        call_sid: call_sid.clone(),
        stream_sid: new_sid("MZ"),
        custom_parameters: stream.parameters.iter().cloned().collect(),
        max_call: config.max_call,
        hangup: config.hangup.clone(),
    };
    let switches = match &config.control_url {
        Some(url) => Some(control::open(&config, url, &call_sid).await?),
        None => None,
    };
    let on_stream_end =
        control::on_stream_end(&config, &http, stream.action.as_deref(), &call.params);
    let line = line::run_line(
        setup,
        (sink, socket_stream),
        switches,
        on_stream_end,
        command_rx,
        status_tx,
    );
    tokio::pin!(line);
    let mut report = tokio::select! {
        report = &mut line => report,
        () = script::run_script(scenario, spoken, commands, status_rx) => line.await,
    };

    if config.send_status_callback {
        match post_completed(&http, &config, &call, began).await {
            Ok(status) => report.status_callback = Some(status),
            Err(error) => report
                .notes
                .push(format!("status callback failed: {error}")),
        }
    }
    Ok(report)
}

fn join(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// POSTs a form to `ingress_url + path`, signed over `public_url + path`.
async fn post_signed(
    http: &reqwest::Client,
    config: &CallerConfig,
    path: &str,
    params: &[(String, String)],
) -> Result<(u16, String), CallerError> {
    let signature = sign(&config.auth_token, &join(&config.public_url, path), params);
    let response = http
        .post(join(&config.ingress_url, path))
        .header("X-Twilio-Signature", signature)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(encode_form(params))
        .send()
        .await
        .map_err(|e| CallerError::Http(e.to_string()))?;
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .map_err(|e| CallerError::Http(e.to_string()))?;
    Ok((status, body))
}

async fn post_completed(
    http: &reqwest::Client,
    config: &CallerConfig,
    call: &IncomingCall,
    began: SystemTime,
) -> Result<u16, CallerError> {
    let seconds = began.elapsed().map_or(0, |d| d.as_secs());
    let completed = StatusCallback::completed(call, seconds, 0, &rfc2822(SystemTime::now()));
    Ok(
        post_signed(http, config, &config.status_path, &completed.params)
            .await?
            .0,
    )
}

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the media WebSocket: signed over the stream's `wss://` URL, connected locally.
pub(crate) async fn connect_media(
    config: &CallerConfig,
    stream: &ConnectStream,
) -> Result<Socket, CallerError> {
    let connect_url = match &config.media_connect_url {
        Some(url) => url.clone(),
        None => local_ws_url(&config.ingress_url, &stream.url)?,
    };
    let mut request = connect_url
        .as_str()
        .into_client_request()
        .map_err(|_| CallerError::Url(connect_url.clone()))?;
    let signature = sign_url(&config.auth_token, &websocket_url(&stream.url));
    let header =
        HeaderValue::from_str(&signature).map_err(|e| CallerError::WebSocket(e.to_string()))?;
    request.headers_mut().insert("X-Twilio-Signature", header);
    // Small reads (tungstenite zero-fills its whole read buffer, 128 KiB by default, before
    // every read) and no Nagle delay on the 20 ms frames.
    let ws_config = WebSocketConfig::default().read_buffer_size(WS_READ_BUFFER_BYTES);
    let connect = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true);
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(error)) => Err(CallerError::WebSocket(error.to_string())),
        Err(_) => Err(CallerError::WebSocket(
            "connection timed out (31901)".to_owned(),
        )),
    }
}

/// `ws://{ingress host:port}{stream path}`.
fn local_ws_url(ingress_url: &str, stream_url: &str) -> Result<String, CallerError> {
    let ingress =
        url::Url::parse(ingress_url).map_err(|_| CallerError::Url(ingress_url.to_owned()))?;
    let stream =
        url::Url::parse(stream_url).map_err(|_| CallerError::Url(stream_url.to_owned()))?;
    let scheme = if ingress.scheme() == "https" {
        "wss"
    } else {
        "ws"
    };
    let host = ingress
        .host_str()
        .ok_or_else(|| CallerError::Url(ingress_url.to_owned()))?;
    let port = ingress.port_or_known_default().unwrap_or(80);
    Ok(format!("{scheme}://{host}:{port}{}", stream.path()))
}

/// Command-line options of `sim call`.
#[derive(clap::Args)]
pub struct Args {
    /// Base URL where Switchboard's ingress listens; webhooks and the media WebSocket go here.
    #[arg(long, env = "SIM_INGRESS_URL", default_value = "http://127.0.0.1:8080")]
    pub ingress: String,
    /// Public base URL Twilio would call (signatures are computed over it); defaults to --ingress.
    #[arg(long, env = "SIM_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Twilio auth token that signs every request (never printed).
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: String,
    /// Account SID sent in the webhooks and the stream's `start`.
    #[arg(long, env = "TWILIO_ACCOUNT_SID", default_value = DEFAULT_ACCOUNT_SID)]
    pub account_sid: String,
    /// Scenario TOML file (see services/sim/scenarios/).
    #[arg(long)]
    pub scenario: PathBuf,
    /// Write the call as heard to this stereo WAV (caller left, bot right).
    #[arg(long)]
    pub wav: Option<PathBuf>,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Path (and query) of the Voice URL on the ingress.
    #[arg(long, default_value = "/twilio/voice")]
    pub voice_path: String,
    /// Path of the status callback on the ingress.
    #[arg(long, default_value = "/twilio/status")]
    pub status_path: String,
    /// Connect the media WebSocket to this URL instead of the ingress address + the stream path.
    #[arg(long)]
    pub media_url: Option<String>,
    /// Hang up after this many milliseconds whatever the scenario says.
    #[arg(long, default_value_t = 120_000)]
    pub max_call_ms: u64,
}

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field("ingress", &self.ingress)
            .field("public_url", &self.public_url)
            .field("auth_token", &"<redacted>")
            .field("scenario", &self.scenario)
            .finish_non_exhaustive()
    }
}

/// `sim call`: places one call and prints the report.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let scenario = Scenario::load(&args.scenario)
        .with_context(|| format!("scenario {}", args.scenario.display()))?;
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| args.ingress.clone());
    let mut config = CallerConfig::new(args.ingress, public_url, args.auth_token);
    config.account_sid = args.account_sid;
    config.voice_path = args.voice_path;
    config.status_path = args.status_path;
    config.media_connect_url = args.media_url;
    config.max_call = Duration::from_millis(args.max_call_ms);
    let report = place_call(config, &scenario).await?;
    if let Some(path) = &args.wav {
        std::fs::write(path, report.to_wav())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    Ok(())
}
