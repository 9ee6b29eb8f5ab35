//! The operators' console (ARCHITECTURE §2d, §9): the tenant admin API over the live
//! `TENANTS` bucket, and the call inspector (pages and a JSON API), served beside the
//! health endpoints.
//!
//! Consumes operator and tenant HTTP requests, the tenants file the deployment ships (what
//! is served while the bucket is empty), the call index and the calls' events; produces
//! new revisions of the tenants file ([`admin`], validated, versioned), the calls list and
//! call pages ([`web`]), their JSON ([`calls::api`]) and the OpenAPI document at
//! `/openapi.json`. State: none of its own; the bucket and the streams are the record.
//!
//! Code map: [`admin`], [`store`] and [`document`] (the tenants file); [`auth`] (the
//! operator token) and [`access`] (who sees which calls); [`calls`] (reading calls:
//! list, log, transcript, latency, timeline, JSON API); [`web`] (the pages: login, calls
//! list, call page with the latency waterfall and the call's audio, live call).

pub mod access;
pub mod admin;
pub mod auth;
pub mod calls;
pub mod document;
pub mod store;
pub mod web;

use std::sync::Arc;

use async_nats::jetstream;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use sb_runtime::api_error::{
    ErrorBody, ErrorDetail, add_bearer_scheme, json_errors, openapi_route,
};
use sb_runtime::{LiveTenants, Runtime, Secret};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

use crate::store::{MAX_CONFIG_BYTES, StoreError, TenantsStore};

/// The console's own settings (the runtime's come from `RuntimeConfig`).
#[derive(Debug, Clone, clap::Args)]
pub struct ConsoleConfig {
    /// The operator's bearer token for the admin API and the call inspector: it sees and
    /// changes every tenant.
    #[arg(long, env = "SB_OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: Secret,
}

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct ConsoleState {
    pub store: TenantsStore,
    pub operator_token: Secret,
    /// JetStream as the console's NATS user: the calls' events and audio, the call index.
    pub js: jetstream::Context,
    /// The tenants as they are now: whose API key a token is.
    pub tenants: Arc<LiveTenants>,
    /// Cancelled when the process stops: live-call streams end so the server can stop.
    pub stopping: CancellationToken,
}

impl ConsoleState {
    /// The state over `runtime`'s connections; `file` is the text of the tenants file the
    /// services started with.
    pub async fn open(
        runtime: &Runtime,
        operator_token: Secret,
        file: String,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            store: TenantsStore::open(&runtime.js, file).await?,
            operator_token,
            js: runtime.js.clone(),
            tenants: runtime.tenants.clone(),
            stopping: runtime.shutdown.stopping().clone(),
        })
    }
}

/// The OpenAPI document of the admin API and the call inspector's JSON API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Switchboard console API", version = "1",
        description = "Tenant administration (the live tenants file, one tenant or whole) and \
            the call inspector (ended calls, one call's transcript and per-turn latency)."),
    paths(admin::list, admin::get, admin::put, admin::get_config, admin::put_config,
        calls::api::list, calls::api::get),
    components(schemas(ErrorBody, ErrorDetail, admin::TenantList, admin::TenantSummary,
        admin::TenantDoc, admin::Applied, calls::api::CallList, calls::api::CallItem,
        calls::api::CallDetail, calls::api::LatencyMs, calls::query::DirectionDoc,
        calls::query::OutcomeDoc, calls::transcript::Line, calls::transcript::Speaker,
        calls::transcript::LineKind, calls::turns::TurnSteps, calls::turns::Segment,
        calls::turns::Step)),
    modifiers(&OperatorBearer),
    tags((name = "tenants"), (name = "config"), (name = "calls")),
)]
pub struct ApiDoc;

struct OperatorBearer;

impl utoipa::Modify for OperatorBearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        add_bearer_scheme(
            doc,
            "The operator token (SB_OPERATOR_TOKEN); on /v1/calls also a tenant's API key, \
             which sees its own tenant's calls only",
        );
    }
}

pub use sb_runtime::api_error::OPENAPI_PATH;

/// The console's routes: the JSON APIs (every error in the one JSON shape) and the pages.
pub fn router(state: ConsoleState) -> Router {
    let doc = ApiDoc::openapi()
        .to_json()
        .expect("the generated OpenAPI document serialises");
    let api = Router::new()
        .route("/v1/admin/tenants", get(admin::list))
        .route(
            "/v1/admin/tenants/{tenant}",
            get(admin::get).put(admin::put),
        )
        .route(
            "/v1/admin/config",
            get(admin::get_config).put(admin::put_config),
        )
        .route("/v1/calls", get(calls::api::list))
        .route("/v1/calls/{sid}", get(calls::api::get))
        .route(OPENAPI_PATH, openapi_route(doc))
        .layer(DefaultBodyLimit::max(MAX_CONFIG_BYTES))
        .layer(axum::middleware::map_response(json_errors));
    api.merge(web::routes())
        .fallback(web::fallback)
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the router serves is in the document, with its methods.
    #[test]
    fn every_route_is_in_the_openapi_document() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for (path, methods) in [
            ("/v1/admin/tenants", &["get"][..]),
            ("/v1/admin/tenants/{tenant}", &["get", "put"]),
            ("/v1/admin/config", &["get", "put"]),
            ("/v1/calls", &["get"]),
            ("/v1/calls/{sid}", &["get"]),
        ] {
            for method in methods {
                assert!(paths[path].get(*method).is_some(), "{method} {path}");
            }
        }
        assert_eq!(paths.len(), 5);
    }
}
