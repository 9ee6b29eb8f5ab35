//! The operators' console (ARCHITECTURE §2d): the tenant admin API over the live
//! `TENANTS` bucket, served beside the health endpoints.
//!
//! Consumes operator HTTP requests and the tenants file the deployment ships (what is
//! served while the bucket is empty); produces new revisions of the tenants file
//! ([`admin`], validated, versioned) and the OpenAPI document at `/openapi.json`. State:
//! none of its own; the bucket is the record.

pub mod admin;
pub mod auth;
pub mod document;
pub mod store;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use sb_runtime::Secret;
use sb_runtime::api_error::{ErrorBody, ErrorDetail, json_errors};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::store::{MAX_CONFIG_BYTES, TenantsStore};

/// The console's own settings (the runtime's come from `RuntimeConfig`).
#[derive(Debug, Clone, clap::Args)]
pub struct ConsoleConfig {
    /// The operator's bearer token for the admin API: it sees and changes every tenant.
    #[arg(long, env = "SB_OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: Secret,
}

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct ConsoleState {
    pub store: TenantsStore,
    pub operator_token: Secret,
}

/// The OpenAPI document of the admin API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Switchboard console API", version = "1",
        description = "Tenant administration: the live tenants file, one tenant or whole."),
    paths(admin::list, admin::get, admin::put, admin::get_config, admin::put_config),
    components(schemas(ErrorBody, ErrorDetail, admin::TenantList, admin::TenantSummary,
        admin::TenantDoc, admin::Applied)),
    modifiers(&OperatorBearer),
    tags((name = "tenants"), (name = "config")),
)]
pub struct ApiDoc;

struct OperatorBearer;

impl utoipa::Modify for OperatorBearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The operator token (SB_OPERATOR_TOKEN)"))
                    .build(),
            ),
        );
    }
}

/// The path of the OpenAPI document (no auth).
pub const OPENAPI_PATH: &str = "/openapi.json";

/// The console's routes.
pub fn router(state: ConsoleState) -> Router {
    let doc = ApiDoc::openapi()
        .to_json()
        .expect("the generated OpenAPI document serialises");
    Router::new()
        .route("/v1/admin/tenants", get(admin::list))
        .route(
            "/v1/admin/tenants/{tenant}",
            get(admin::get).put(admin::put),
        )
        .route(
            "/v1/admin/config",
            get(admin::get_config).put(admin::put_config),
        )
        .route(
            OPENAPI_PATH,
            get(move || async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    doc,
                )
            }),
        )
        .layer(DefaultBodyLimit::max(MAX_CONFIG_BYTES))
        .layer(axum::middleware::map_response(json_errors))
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
        ] {
            for method in methods {
                assert!(paths[path].get(*method).is_some(), "{method} {path}");
            }
        }
        assert_eq!(paths.len(), 3);
    }
}
