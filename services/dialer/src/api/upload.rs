//! `POST …/campaigns/{campaign}/contacts`: contacts uploaded as CSV (streamed) or JSON.
//!
//! Consumes the request body: `text/csv` is parsed while it arrives (a blocking task reads
//! it through a bounded channel, so neither the whole body nor all its rows are ever in
//! memory at once) and enqueued in batches of 4,000 while the next batch is parsed;
//! `application/json` is read whole (up to the same limit) and enqueued the same way.
//! Produces contacts in the campaign's queue (`CampaignQueue::enqueue`) and an
//! [`UploadReport`]. State: Redis; the upload's numbers seen so far, in memory.

use std::io::{self, Read};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest as _, Path, Request, State};
use axum::http::header;
use futures::StreamExt as _;
use sb_runtime::redis::campaigns::{CampaignId, NewContact};
use sb_schemas::TenantId;
use tokio::sync::mpsc;

use super::ApiState;
use super::auth::TenantAuth;
use super::campaigns::load;
use super::error::{ApiError, ErrorBody, media_type, parse_json};
use super::intake::{CsvFailure, Intake, read_csv};
use super::model::{ContactsUpload, UploadReport};
use crate::campaign::CampaignState;

/// Largest upload: a 100,000-row CSV with a few variables is ~10 MB.
pub const UPLOAD_LIMIT_BYTES: usize = 16 * 1024 * 1024;

/// Add contacts: `text/csv` with a header row (`phone` plus variable columns) or
/// `application/json` (`{"contacts": [{"phone", "vars"}]}`).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/campaigns/{campaign}/contacts", tag = "contacts",
    params(("tenant" = String, Path, description = "Tenant id"),
           ("campaign" = String, Path, description = "Campaign id")),
    request_body(description = "CSV (header row: `phone` and variable names) or JSON",
        content(
            (ContactsUpload = "application/json"),
            (String = "text/csv", example = "phone,name\n+14155550100,Ann\n"))),
    responses(
        (status = 200, description = "What was queued, skipped and refused", body = UploadReport),
        (status = 400, description = "Invalid JSON, field or CSV header", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "Unknown tenant or campaign", body = ErrorBody),
        (status = 409, description = "The campaign is cancelled", body = ErrorBody),
        (status = 413, description = "Over 16 MiB", body = ErrorBody),
        (status = 415, description = "Neither text/csv nor application/json", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn upload(
    State(state): State<ApiState>,
    auth: TenantAuth,
    Path((_, raw)): Path<(String, String)>,
    request: Request,
) -> Result<Json<UploadReport>, ApiError> {
    let tenant = auth.id().clone();
    let (id, campaign) = load(&state, &tenant, &raw).await?;
    if campaign.state == CampaignState::Canceled {
        return Err(ApiError::Conflict(
            "the campaign is cancelled: it takes no contacts".into(),
        ));
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > UPLOAD_LIMIT_BYTES as u64) {
        return Err(too_large());
    }
    let intake = Intake::new(campaign.spec.priority);
    let target = Target {
        state: &state,
        tenant: &tenant,
        campaign: &id,
    };
    let report = match media_type(request.headers().get(header::CONTENT_TYPE)).as_deref() {
        Some("text/csv") => csv_upload(target, intake, request.into_body()).await?,
        Some("application/json") => json_upload(target, intake, request).await?,
        _ => {
            return Err(ApiError::UnsupportedMediaType(
                "contacts are text/csv or application/json".into(),
            ));
        }
    };
    tracing::info!(tenant = %tenant.as_str(), campaign = %id, queued = report.queued,
        duplicates = report.duplicates, rejected = report.rejected_total, "contacts uploaded");
    Ok(Json(report))
}

fn too_large() -> ApiError {
    ApiError::TooLarge(format!("uploads are limited to {UPLOAD_LIMIT_BYTES} bytes"))
}

/// Where contacts go.
#[derive(Clone, Copy)]
struct Target<'a> {
    state: &'a ApiState,
    tenant: &'a TenantId,
    campaign: &'a CampaignId,
}

impl Target<'_> {
    async fn enqueue(&self, batch: &[NewContact]) -> Result<u64, ApiError> {
        let now = self.state.clock.now_ms();
        Ok(self
            .state
            .queue
            .enqueue(self.tenant, self.campaign, batch, now)
            .await?)
    }
}

fn finish(mut intake: Intake, queued: u64) -> UploadReport {
    intake.report.queued = queued;
    intake.report.duplicates = intake.accepted.saturating_sub(queued);
    intake.report
}

async fn json_upload(
    target: Target<'_>,
    mut intake: Intake,
    request: Request,
) -> Result<UploadReport, ApiError> {
    let bytes = Bytes::from_request(request, &()).await.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::InvalidJson(format!("cannot read the body: {e}"))
        }
    })?;
    let upload: ContactsUpload = parse_json(&bytes)?;
    drop(bytes);
    let mut queued = 0;
    for (i, contact) in upload.contacts.into_iter().enumerate() {
        if let Some(batch) = intake.row(i as u64 + 1, &contact.phone, contact.vars) {
            queued += target.enqueue(&batch).await?;
        }
    }
    let rest = intake.take();
    queued += target.enqueue(&rest).await?;
    Ok(finish(intake, queued))
}

/// The request body as a blocking `Read`, chunk by chunk from the pump.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    chunk: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

async fn csv_upload(
    target: Target<'_>,
    intake: Intake,
    body: Body,
) -> Result<UploadReport, ApiError> {
    let (bytes_tx, bytes_rx) = mpsc::channel::<io::Result<Bytes>>(16);
    let (batch_tx, mut batch_rx) = mpsc::channel::<Vec<NewContact>>(2);
    let parser = tokio::task::spawn_blocking(move || {
        let mut intake = intake;
        let reader = ChannelReader {
            rx: bytes_rx,
            chunk: Bytes::new(),
        };
        let result = read_csv(reader, &mut intake, |batch| {
            batch_tx.blocking_send(batch).is_ok()
        });
        (intake, result)
    });
    // Feeds the parser; stops at the limit or when the parser stopped reading.
    let pump = async move {
        let mut stream = body.into_data_stream();
        let mut total = 0usize;
        while let Some(chunk) = stream.next().await {
            let (item, failure) = match chunk {
                Ok(c) if total + c.len() > UPLOAD_LIMIT_BYTES => (
                    Err(io::Error::other("over the upload limit")),
                    Some(too_large()),
                ),
                Ok(c) => {
                    total += c.len();
                    (Ok(c), None)
                }
                Err(e) => (
                    Err(io::Error::other(e.to_string())),
                    Some(ApiError::InvalidCsv(format!("cannot read the body: {e}"))),
                ),
            };
            if bytes_tx.send(item).await.is_err() || failure.is_some() {
                return failure;
            }
        }
        None
    };
    let enqueue = async move {
        let mut queued = 0;
        while let Some(batch) = batch_rx.recv().await {
            queued += target.enqueue(&batch).await?;
        }
        Ok::<u64, ApiError>(queued)
    };
    let (pump_failure, queued) = tokio::join!(pump, enqueue);
    let (mut intake, parsed) = parser.await.map_err(|_| ApiError::Internal)?;
    let mut queued = queued?;
    if let Some(failure) = pump_failure {
        return Err(failure);
    }
    match parsed {
        Ok(()) => {}
        Err(CsvFailure::Io(_)) => return Err(ApiError::InvalidCsv("the body was cut off".into())),
        Err(invalid) => return Err(invalid.into()),
    }
    let rest = intake.take();
    queued += target.enqueue(&rest).await?;
    Ok(finish(intake, queued))
}
