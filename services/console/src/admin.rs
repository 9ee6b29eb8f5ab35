//! The tenant admin API (ARCHITECTURE §2d): read the live tenants file and change it,
//! one tenant or the whole file, without restarting anything.
//!
//! Consumes operator requests (`Authorization: Bearer $SB_OPERATOR_TOKEN`); produces JSON
//! answers and new revisions of the `TENANTS` bucket through [`TenantsStore`], each
//! validated first (a refusal is 422 naming the tenant and field) and written only over
//! the revision it was based on (`If-Match`, else the one just read; 409 otherwise). New
//! calls get a new revision within the services' watch delay; live calls keep theirs.
//! State: none here.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use sb_runtime::api_error::{ApiError, ErrorBody, JsonBody, media_type};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::ConsoleState;
use crate::auth::OperatorAuth;
use crate::document::{self, EditError};
use crate::store::{Current, StoreError};

/// One tenant in the list.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantSummary {
    pub id: String,
    pub numbers: Vec<String>,
    pub tier: String,
}

/// Every tenant of the revision new calls are served with.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantList {
    /// The `TENANTS` bucket's revision (0: the file the services started with).
    pub revision: u64,
    pub tenants: Vec<TenantSummary>,
}

/// One tenant's settings: the fields of its `[[tenant]]` table (docs/ARCHITECTURE.md §2a).
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantDoc {
    pub revision: u64,
    /// The table as JSON: `id`, `numbers`, `system_prompt`, `greeting`, `voice`, `tools`, …
    #[schema(value_type = Object)]
    pub tenant: Value,
}

/// What a change stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct Applied {
    /// The new revision; new calls are served with it.
    pub revision: u64,
}

fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::Invalid(message) => ApiError::InvalidConfig(message),
        StoreError::Conflict { .. } => ApiError::Conflict(error.to_string()),
        StoreError::Unavailable(reason) => {
            tracing::warn!(%reason, "tenants bucket unavailable");
            ApiError::Unavailable
        }
    }
}

/// The current revision, for a read (a stored text that no longer validates is ours).
async fn current(state: &ConsoleState) -> Result<Current, ApiError> {
    state.store.current().await.map_err(|e| match e {
        StoreError::Invalid(message) => {
            tracing::error!(%message, "the stored tenants file does not validate");
            ApiError::Internal
        }
        other => store_error(other),
    })
}

/// `If-Match: "7"` (or `7`): the revision a change is based on.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(raw) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    raw.to_str()
        .ok()
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(|| ApiError::field("If-Match", "must be a revision number, e.g. \"7\""))
}

fn etag(revision: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{revision}\"")).expect("a number is a header value")
}

/// The base revision of a change, and the text it changes.
async fn base(state: &ConsoleState, headers: &HeaderMap) -> Result<Current, ApiError> {
    let wanted = if_match(headers)?;
    let current = current(state).await?;
    match wanted {
        Some(revision) if revision != current.revision => Err(store_error(StoreError::Conflict {
            expected: revision,
            actual: current.revision,
        })),
        _ => Ok(current),
    }
}

#[utoipa::path(get, path = "/v1/admin/tenants", tag = "tenants",
    responses(
        (status = 200, description = "Every tenant", body = TenantList),
        (status = 401, description = "No valid operator token", body = ErrorBody),
        (status = 503, description = "Tenants bucket unavailable", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    _: OperatorAuth,
    State(state): State<ConsoleState>,
) -> Result<Json<TenantList>, ApiError> {
    let current = current(&state).await?;
    let mut tenants: Vec<TenantSummary> = current
        .tenants
        .iter()
        .map(|t| TenantSummary {
            id: t.id.as_str().to_owned(),
            numbers: t.numbers.clone(),
            tier: t.tier_name.clone(),
        })
        .collect();
    tenants.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(TenantList {
        revision: current.revision,
        tenants,
    }))
}

#[utoipa::path(get, path = "/v1/admin/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "The tenant's settings", body = TenantDoc,
            headers(("ETag" = String, description = "The revision, for If-Match"))),
        (status = 401, description = "No valid operator token", body = ErrorBody),
        (status = 404, description = "Unknown tenant", body = ErrorBody),
        (status = 503, description = "Tenants bucket unavailable", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    _: OperatorAuth,
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let current = current(&state).await?;
    let tenant = document::tenant(&current.text, &id)
        .map_err(|_| ApiError::Internal)?
        .ok_or(ApiError::NotFound)?;
    let doc = TenantDoc {
        revision: current.revision,
        tenant,
    };
    Ok(([(header::ETAG, etag(current.revision))], Json(doc)).into_response())
}

#[utoipa::path(put, path = "/v1/admin/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant id (a new one adds the tenant)"),
           ("If-Match" = Option<String>, Header, description = "Only over this revision")),
    request_body(content = Object, content_type = "application/json",
        description = "The tenant's whole table (fields as in tenants.toml)"),
    responses(
        (status = 200, description = "Stored; new calls get it", body = Applied),
        (status = 400, description = "Invalid JSON or If-Match", body = ErrorBody),
        (status = 401, description = "No valid operator token", body = ErrorBody),
        (status = 409, description = "The file changed since If-Match", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Does not validate (names the field)", body = ErrorBody),
        (status = 503, description = "Tenants bucket unavailable", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn put(
    _: OperatorAuth,
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(settings): JsonBody<Map<String, Value>>,
) -> Result<Json<Applied>, ApiError> {
    let base = base(&state, &headers).await?;
    let text = document::with_tenant(&base.text, &id, settings).map_err(|e| match e {
        EditError::Body(message) => ApiError::InvalidConfig(format!("tenant {id:?}: {message}")),
        EditError::File(_) => ApiError::Internal,
    })?;
    let revision = state
        .store
        .put(&text, base.revision)
        .await
        .map_err(store_error)?;
    tracing::info!(tenant = %id, revision, "tenant changed through the admin API");
    Ok(Json(Applied { revision }))
}

#[utoipa::path(get, path = "/v1/admin/config", tag = "config",
    responses(
        (status = 200, description = "The whole tenants file (TOML)", body = String,
            content_type = "application/toml",
            headers(("ETag" = String, description = "The revision, for If-Match"))),
        (status = 401, description = "No valid operator token", body = ErrorBody),
        (status = 503, description = "Tenants bucket unavailable", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_config(
    _: OperatorAuth,
    State(state): State<ConsoleState>,
) -> Result<Response, ApiError> {
    let current = current(&state).await?;
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/toml"),
        ),
        (header::ETAG, etag(current.revision)),
    ];
    Ok((headers, current.text).into_response())
}

#[utoipa::path(put, path = "/v1/admin/config", tag = "config",
    params(("If-Match" = Option<String>, Header, description = "Only over this revision")),
    request_body(content = String, content_type = "text/plain",
        description = "The whole tenants file (TOML; `application/toml` is accepted too)"),
    responses(
        (status = 200, description = "Stored; new calls get it", body = Applied),
        (status = 400, description = "Invalid If-Match or not UTF-8", body = ErrorBody),
        (status = 401, description = "No valid operator token", body = ErrorBody),
        (status = 409, description = "The file changed since If-Match", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not application/toml or text/plain", body = ErrorBody),
        (status = 422, description = "Does not validate (names the field)", body = ErrorBody),
        (status = 503, description = "Tenants bucket unavailable", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn put_config(
    _: OperatorAuth,
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Applied>, ApiError> {
    match media_type(headers.get(header::CONTENT_TYPE)).as_deref() {
        Some("application/toml" | "text/plain") => {}
        _ => {
            return Err(ApiError::UnsupportedMediaType(
                "the body must be application/toml (or text/plain)".into(),
            ));
        }
    }
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::field("body", "the tenants file must be UTF-8"))?;
    let base = base(&state, &headers).await?;
    let revision = state
        .store
        .put(&text, base.revision)
        .await
        .map_err(store_error)?;
    tracing::info!(revision, "tenants file replaced through the admin API");
    Ok(Json(Applied { revision }))
}
