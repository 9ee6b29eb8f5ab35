//! Campaign routes: create, read, pause, resume, cancel.
//!
//! Consumes an authorised tenant and a campaign definition or id; produces changes to the
//! definition (`cq:{tenant}:defs`, JSON of [`Campaign`]), to the campaign's cap
//! (`cq:{tenant}:caps`) and hold (`cq:{tenant}:hold`, through the queue's `pause`,
//! `resume`, `cancel`), and answers with the campaign and its counts. State: Redis only.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::Rng as _;
use sb_runtime::redis::campaigns::CampaignId;
use sb_schemas::TenantId;

use super::ApiState;
use super::auth::TenantAuth;
use super::error::{ApiError, ErrorBody, JsonBody};
use super::model::{CampaignDoc, CampaignView, CancelReport, Counts, SpecDoc};
use crate::campaign::{Campaign, CampaignSpec, CampaignState};

/// Server-generated ids: 12 characters of `[a-z0-9]` (62 bits; a clash is retried).
const ID_LEN: usize = 12;
const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn new_id() -> CampaignId {
    let mut rng = rand::rng();
    let id: String = (0..ID_LEN)
        .map(|_| char::from(ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())]))
        .collect();
    CampaignId::parse(&id).expect("12 characters of [a-z0-9] are a valid campaign id")
}

/// The campaign `raw` of `tenant`: 404 when the id is malformed or unknown.
pub async fn load(
    state: &ApiState,
    tenant: &TenantId,
    raw: &str,
) -> Result<(CampaignId, Campaign), ApiError> {
    let id = CampaignId::parse(raw).map_err(|_| ApiError::NotFound)?;
    let json = state
        .queue
        .def(tenant, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let campaign = serde_json::from_str(&json).map_err(|e| {
        tracing::error!(tenant = %tenant.as_str(), campaign = %id, error = %e,
            "campaigns api: stored definition unreadable");
        ApiError::Internal
    })?;
    Ok((id, campaign))
}

async fn view(
    state: &ApiState,
    tenant: &TenantId,
    campaign: Campaign,
) -> Result<CampaignView, ApiError> {
    let id = CampaignId::parse(&campaign.id).map_err(|_| ApiError::Internal)?;
    let counts = Counts::from_map(&state.queue.counts(tenant, &id).await?);
    Ok(CampaignView { campaign, counts })
}

async fn store(
    state: &ApiState,
    tenant: &TenantId,
    id: &CampaignId,
    c: &Campaign,
) -> Result<(), ApiError> {
    let json = serde_json::to_string(c).map_err(|_| ApiError::Internal)?;
    Ok(state.queue.put_def(tenant, id, &json).await?)
}

/// Create a campaign; its id is chosen by the server.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/campaigns", tag = "campaigns",
    params(("tenant" = String, Path, description = "Tenant id")),
    request_body(content = SpecDoc, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = CampaignDoc,
            headers(("Location" = String, description = "The campaign's URL"))),
        (status = 400, description = "Invalid JSON or field", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "Unknown tenant", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<ApiState>,
    auth: TenantAuth,
    JsonBody(spec): JsonBody<CampaignSpec>,
) -> Result<Response, ApiError> {
    spec.validate(&auth.tenant.numbers)
        .map_err(|e| ApiError::field(e.field.clone(), e.to_string()))?;
    let tenant = auth.id();
    for _ in 0..3 {
        let id = new_id();
        let campaign = Campaign::new(id.clone(), spec.clone(), state.clock.now());
        let json = serde_json::to_string(&campaign).map_err(|_| ApiError::Internal)?;
        // The cap first: a campaign is never visible without it.
        state
            .queue
            .set_campaign_cap(tenant, &id, Some(spec.max_concurrent_calls))
            .await?;
        if state.queue.create_def(tenant, &id, &json).await? {
            tracing::info!(tenant = %tenant.as_str(), campaign = %id, "campaign created");
            let location = format!("/v1/tenants/{}/campaigns/{id}", tenant.as_str());
            let body = CampaignView {
                campaign,
                counts: Counts::default(),
            };
            let mut response = (StatusCode::CREATED, Json(body)).into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, v);
            }
            return Ok(response);
        }
    }
    Err(ApiError::Unavailable)
}

/// A campaign, its state and its contacts per state.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/campaigns/{campaign}", tag = "campaigns",
    params(("tenant" = String, Path, description = "Tenant id"),
           ("campaign" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "The campaign", body = CampaignDoc),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "Unknown tenant or campaign", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<ApiState>,
    auth: TenantAuth,
    Path((_, raw)): Path<(String, String)>,
) -> Result<Json<CampaignView>, ApiError> {
    let (_, campaign) = load(&state, auth.id(), &raw).await?;
    Ok(Json(view(&state, auth.id(), campaign).await?))
}

/// Stop popping the campaign's contacts until it is resumed (calls in flight finish).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/campaigns/{campaign}/pause", tag = "campaigns",
    params(("tenant" = String, Path, description = "Tenant id"),
           ("campaign" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "Paused", body = CampaignDoc),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "Unknown tenant or campaign", body = ErrorBody),
        (status = 409, description = "The campaign is cancelled", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn pause(
    State(state): State<ApiState>,
    auth: TenantAuth,
    Path((_, raw)): Path<(String, String)>,
) -> Result<Json<CampaignView>, ApiError> {
    set_state(&state, &auth, &raw, CampaignState::Paused).await
}

/// Pop the campaign's contacts again.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/campaigns/{campaign}/resume", tag = "campaigns",
    params(("tenant" = String, Path, description = "Tenant id"),
           ("campaign" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "Active", body = CampaignDoc),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "Unknown tenant or campaign", body = ErrorBody),
        (status = 409, description = "The campaign is cancelled", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn resume(
    State(state): State<ApiState>,
    auth: TenantAuth,
    Path((_, raw)): Path<(String, String)>,
) -> Result<Json<CampaignView>, ApiError> {
    set_state(&state, &auth, &raw, CampaignState::Active).await
}

async fn set_state(
    state: &ApiState,
    auth: &TenantAuth,
    raw: &str,
    to: CampaignState,
) -> Result<Json<CampaignView>, ApiError> {
    let tenant = auth.id();
    let (id, mut campaign) = load(state, tenant, raw).await?;
    if campaign.state == CampaignState::Canceled {
        return Err(ApiError::Conflict(
            "the campaign is cancelled for good".into(),
        ));
    }
    match to {
        CampaignState::Paused => state.queue.pause(tenant, &id).await?,
        _ => state.queue.resume(tenant, &id).await?,
    };
    campaign.state = to;
    store(state, tenant, &id, &campaign).await?;
    tracing::info!(tenant = %tenant.as_str(), campaign = %id, state = ?to, "campaign state");
    Ok(Json(view(state, tenant, campaign).await?))
}

/// Cancel for good: queued contacts end `canceled`, calls in flight finish unretried.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/campaigns/{campaign}/cancel", tag = "campaigns",
    params(("tenant" = String, Path, description = "Tenant id"),
           ("campaign" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "Cancelled (again: 0 contacts)", body = CancelReport),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "Unknown tenant or campaign", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<ApiState>,
    auth: TenantAuth,
    Path((_, raw)): Path<(String, String)>,
) -> Result<Json<CancelReport>, ApiError> {
    let tenant = auth.id();
    let (id, mut campaign) = load(&state, tenant, &raw).await?;
    // The definition first: uploads check it, so none lands after the queue is emptied.
    campaign.state = CampaignState::Canceled;
    store(&state, tenant, &id, &campaign).await?;
    let canceled_contacts = state.queue.cancel(tenant, &id).await?;
    tracing::info!(tenant = %tenant.as_str(), campaign = %id, canceled_contacts, "campaign cancelled");
    Ok(Json(CancelReport {
        canceled_contacts,
        campaign: view(&state, tenant, campaign).await?,
    }))
}
