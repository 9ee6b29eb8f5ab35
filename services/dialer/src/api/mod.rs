//! The campaigns API (issue 14): tenants create campaigns, upload contacts, watch and
//! steer them over HTTP; docs/campaigns-api.md is its reference.
//!
//! Consumes authenticated HTTP requests (`Authorization: Bearer`, [`auth`]); produces
//! campaign definitions, holds and queued contacts in the campaign queue
//! (`CampaignQueue`, ARCHITECTURE §6) and JSON answers; every error has one JSON shape
//! ([`error`]). `GET /openapi.json` serves the OpenAPI document generated from the
//! handlers ([`ApiDoc`]). State: none in the process; everything is in the state Redis.
//!
//! Code map: [`campaigns`] (create, read, pause, resume, cancel), [`upload`] (CSV and
//! JSON uploads) over [`intake`] (rows → contacts, pure), [`contacts`] (list, delete),
//! [`model`] (bodies), [`error`], [`auth`].

pub mod auth;
pub mod campaigns;
pub mod contacts;
pub use sb_runtime::api_error as error;
pub mod intake;
pub mod model;
pub mod upload;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use sb_runtime::LiveTenants;
use sb_runtime::redis::campaigns::CampaignQueue;
use utoipa::OpenApi;

use crate::clock::SharedClock;

/// What the handlers share: the queue, the tenants (and their key hashes), the clock.
#[derive(Clone)]
pub struct ApiState {
    pub queue: CampaignQueue,
    pub tenants: Arc<LiveTenants>,
    pub clock: SharedClock,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("tenants", &self.tenants.tenants().len())
            .finish_non_exhaustive()
    }
}

impl ApiState {
    pub fn new(queue: CampaignQueue, tenants: Arc<LiveTenants>, clock: SharedClock) -> Self {
        Self {
            queue,
            tenants,
            clock,
        }
    }
}

/// The OpenAPI document: every route, body, response and error, bearer auth.
#[derive(OpenApi)]
#[openapi(
    info(title = "Switchboard campaigns API", version = "1",
        description = "Outbound campaigns: definitions, contacts, pause/resume/cancel."),
    paths(campaigns::create, campaigns::get, campaigns::pause, campaigns::resume,
          campaigns::cancel, upload::upload, contacts::list, contacts::delete),
    components(schemas(error::ErrorBody, error::ErrorDetail, model::UploadReport,
        model::Rejection, model::ContactsUpload, model::ContactIn, model::CampaignDoc,
        model::CancelReport, model::ContactsPage, model::ContactView, model::Counts)),
    modifiers(&BearerAuth),
    tags((name = "campaigns"), (name = "contacts")),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        error::add_bearer_scheme(doc, "A tenant's API key (its sha256 is in tenants.toml)");
    }
}

pub use error::OPENAPI_PATH;

/// The API's routes. The dialer merges them into its server; `switchboard campaigns-api`
/// serves them alone.
pub fn router(state: ApiState) -> Router {
    let doc = ApiDoc::openapi()
        .to_json()
        .expect("the generated OpenAPI document serialises");
    let campaign = "/v1/tenants/{tenant}/campaigns/{campaign}";
    Router::new()
        .route("/v1/tenants/{tenant}/campaigns", post(campaigns::create))
        .route(campaign, get(campaigns::get))
        .route(&format!("{campaign}/pause"), post(campaigns::pause))
        .route(&format!("{campaign}/resume"), post(campaigns::resume))
        .route(&format!("{campaign}/cancel"), post(campaigns::cancel))
        .route(
            &format!("{campaign}/contacts"),
            get(contacts::list).merge(
                post(upload::upload).layer(DefaultBodyLimit::max(upload::UPLOAD_LIMIT_BYTES)),
            ),
        )
        .route(
            &format!("{campaign}/contacts/{{contact}}"),
            delete(contacts::delete),
        )
        .route(OPENAPI_PATH, error::openapi_route(doc))
        .layer(DefaultBodyLimit::max(error::JSON_BODY_LIMIT))
        .layer(axum::middleware::map_response(error::json_errors))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the router serves (method and path) is in the OpenAPI document with
    /// the bearer scheme, and the document has nothing else.
    #[test]
    fn every_route_is_in_the_openapi_document() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let c = "/v1/tenants/{tenant}/campaigns/{campaign}";
        let served = [
            ("post", "/v1/tenants/{tenant}/campaigns".to_owned()),
            ("get", c.to_owned()),
            ("post", format!("{c}/pause")),
            ("post", format!("{c}/resume")),
            ("post", format!("{c}/cancel")),
            ("get", format!("{c}/contacts")),
            ("post", format!("{c}/contacts")),
            ("delete", format!("{c}/contacts/{{contact}}")),
        ];
        let paths = doc["paths"].as_object().unwrap();
        let mut documented = 0;
        for (_, ops) in paths {
            documented += ops.as_object().unwrap().len();
        }
        assert_eq!(documented, served.len(), "{paths:#?}");
        for (method, path) in &served {
            let op = &doc["paths"][path][method];
            assert!(op.is_object(), "{method} {path} is not documented");
            assert_eq!(
                op["security"][0]["bearer"],
                serde_json::json!([]),
                "{method} {path}"
            );
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.contains_key("401") && responses.contains_key("404"));
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}
