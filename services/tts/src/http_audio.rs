//! What the HTTP speech providers share: send the request, turn the answer into an
//! [`AudioStream`] with the provider's timeouts, and name the failures.
//!
//! Consumes a built request (Azure, OpenAI `/v1/audio/speech`, Deepgram `/v1/speak`);
//! produces the body as it arrives, once its first non-empty piece is in (so a slow
//! provider fails before anything is sent to the caller), or a [`TtsError`]: a connect
//! failure, no first byte in time, a non-200 (429 with its `retry-after`), a stall between
//! pieces, a broken body. Time to first audio goes to
//! `switchboard_provider_ttfb_seconds{provider}`. State: none.

use std::time::Duration;

use futures::StreamExt as _;
use sb_runtime::metrics::Metric;
use tokio::time::Instant;

use crate::provider::{AudioStream, TtsError};

/// Timeouts of a streaming speech client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
}

/// An HTTP client for a speech provider: connect timeout, pooled, no Nagle.
pub(crate) fn client(timeouts: Timeouts) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| format!("cannot build the http client: {e}"))
}

/// Sends `request` and streams the audio body.
pub(crate) async fn open(
    request: reqwest::RequestBuilder,
    provider: &'static str,
    timeouts: Timeouts,
) -> Result<AudioStream, TtsError> {
    let sent = Instant::now();
    let first_deadline = sent + timeouts.first_byte;
    let timeout = TtsError::FirstByteTimeout(timeouts.first_byte);
    let response = tokio::time::timeout_at(first_deadline, request.send())
        .await
        .map_err(|_| timeout.clone())?
        .map_err(|e| TtsError::Connect(e.without_url().to_string()))?;
    let status = response.status().as_u16();
    if status != 200 {
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(3600.0)));
        let body = tokio::time::timeout_at(first_deadline, response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        return Err(if status == 429 {
            TtsError::RateLimited { retry_after }
        } else {
            TtsError::Status {
                status,
                message: body.chars().take(200).collect(),
            }
        });
    }
    let mut body = response.bytes_stream();
    let first = loop {
        match tokio::time::timeout_at(first_deadline, body.next()).await {
            Err(_) => return Err(timeout),
            Ok(None) => break None,
            Ok(Some(Err(e))) => return Err(TtsError::Cut(e.without_url().to_string())),
            Ok(Some(Ok(bytes))) if bytes.is_empty() => continue,
            Ok(Some(Ok(bytes))) => break Some(bytes),
        }
    };
    metrics::histogram!(Metric::ProviderTtfbSeconds.name(), "provider" => provider)
        .record(sent.elapsed().as_secs_f64());
    let idle = timeouts.idle;
    let rest = futures::stream::unfold(Some(body), move |body| async move {
        let mut body = body?;
        match tokio::time::timeout(idle, body.next()).await {
            Err(_) => Some((Err(TtsError::IdleTimeout(idle)), None)),
            Ok(None) => None,
            Ok(Some(Err(e))) => Some((Err(TtsError::Cut(e.without_url().to_string())), None)),
            Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some(body))),
        }
    });
    Ok(Box::pin(futures::stream::iter(first.map(Ok)).chain(rest)))
}
