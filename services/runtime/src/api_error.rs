//! The HTTP APIs' errors (the campaigns API, the console's admin API): one JSON shape for
//! every 4xx and 5xx, and the JSON body extractor whose rejections use it.
//!
//! Consumes handler failures, store errors and axum's own rejections; produces
//! `{"error": {"code", "message", "field"?}}` responses with the status the code implies
//! (docs/campaigns-api.md, "Errors"). No state.

use crate::redis::RedisError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

/// Bytes of a JSON body other than a contacts upload: a campaign definition is a few KB.
pub const JSON_BODY_LIMIT: usize = 256 * 1024;

/// Why a request was refused; each variant has one status and one `code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Unreadable JSON, a field of the wrong type, missing or invalid (`field` names it).
    #[error("{message}")]
    InvalidField {
        field: Option<String>,
        message: String,
    },
    #[error("{0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidCsv(String),
    /// A configuration that parses but does not validate (the message names the field).
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{field}: {message}")]
    InvalidQuery { field: String, message: String },
    #[error("a valid API key is required: Authorization: Bearer <key>")]
    Unauthorized,
    /// An unknown tenant, campaign or contact, or another tenant's (never said which).
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Redis failed or timed out: worth retrying.
    #[error("the store is unavailable; retry later")]
    Unavailable,
    /// Stored data the API cannot read (not the request's fault).
    #[error("internal error")]
    Internal,
}

/// The error body: `{"error": {...}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code: `invalid_field`, `invalid_json`, `invalid_csv`,
    /// `invalid_config`, `invalid_query`, `unauthorized`, `not_found`, `method_not_allowed`, `conflict`,
    /// `too_large`, `unsupported_media_type`, `unavailable`, `internal`.
    pub code: String,
    /// For people; may change.
    pub message: String,
    /// The field at fault (dotted path into the JSON body, or the query parameter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidField {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidField { .. }
            | Self::InvalidJson(_)
            | Self::InvalidCsv(_)
            | Self::InvalidQuery { .. } => StatusCode::BAD_REQUEST,
            Self::InvalidConfig(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidField { .. } => "invalid_field",
            Self::InvalidJson(_) => "invalid_json",
            Self::InvalidCsv(_) => "invalid_csv",
            Self::InvalidConfig(_) => "invalid_config",
            Self::InvalidQuery { .. } => "invalid_query",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::TooLarge(_) => "too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The error a bare status of axum's own (a route or method miss) stands for.
    pub fn for_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => Self::TooLarge("the request body is too large".into()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                Self::UnsupportedMediaType("unsupported content type".into())
            }
            StatusCode::UNAUTHORIZED => Self::Unauthorized,
            s if s.is_server_error() => Self::Internal,
            _ => Self::InvalidField {
                field: None,
                message: status
                    .canonical_reason()
                    .unwrap_or("bad request")
                    .to_owned(),
            },
        }
    }

    fn body(&self) -> ErrorBody {
        let field = match self {
            Self::InvalidField { field, .. } => field.clone(),
            Self::InvalidQuery { field, .. } => Some(field.clone()),
            _ => None,
        };
        ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.to_string(),
                field,
            },
        }
    }
}

impl From<RedisError> for ApiError {
    fn from(e: RedisError) -> Self {
        match e {
            RedisError::Corrupt { .. } => {
                tracing::error!(error = %e, "api: corrupt stored data");
                Self::Internal
            }
            other => {
                tracing::warn!(error = %other, "api: redis failed");
                Self::Unavailable
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if self == Self::Unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Middleware: any 4xx or 5xx that is not JSON yet (axum's own route and method misses)
/// gets the API's error body; its headers (`Allow`, `WWW-Authenticate`) stay.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let fresh = ApiError::for_status(status).into_response();
    let (fresh_parts, body) = fresh.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.extend(fresh_parts.headers);
    Response::from_parts(parts, body)
}

/// The bearer token of an `Authorization` header (scheme case-insensitive).
pub fn bearer(parts: &axum::http::request::Parts) -> Option<&str> {
    let raw = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = raw.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether the request says its body is JSON (`application/json`, parameters allowed).
pub fn is_json(content_type: Option<&HeaderValue>) -> bool {
    media_type(content_type).is_some_and(|m| m == "application/json")
}

/// The media type of a `Content-Type`, lowercased, without parameters.
pub fn media_type(content_type: Option<&HeaderValue>) -> Option<String> {
    let raw = content_type?.to_str().ok()?;
    let essence = raw.split(';').next()?.trim().to_ascii_lowercase();
    (!essence.is_empty()).then_some(essence)
}

/// Parses JSON bytes; an error names the field (its dotted path) when there is one.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::InvalidJson(format!("the body is not valid JSON: {inner}"))
        } else if path == "." {
            // Valid JSON of the wrong shape as a whole (an array, a string): no one field.
            ApiError::InvalidField {
                field: None,
                message: format!("the body: {inner}"),
            }
        } else {
            ApiError::InvalidField {
                message: format!("{path}: {inner}"),
                field: Some(path),
            }
        }
    })?;
    de.end()
        .map_err(|e| ApiError::InvalidJson(format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}

/// A JSON body: `Content-Type: application/json` (else 415), at most [`JSON_BODY_LIMIT`]
/// bytes (else 413), parsed with the field named on error (400).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::UnsupportedMediaType(
                "the body must be application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::TooLarge(format!("the body is larger than {JSON_BODY_LIMIT} bytes"))
                }
                _ => ApiError::InvalidJson(format!("cannot read the body: {e}")),
            })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// The path of an API's OpenAPI document (no auth).
pub const OPENAPI_PATH: &str = "/openapi.json";

/// Adds the `bearer` security scheme, described as `description`, to an OpenAPI document.
pub fn add_bearer_scheme(doc: &mut utoipa::openapi::OpenApi, description: &str) {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(description))
                .build(),
        ),
    );
}

/// `GET` [`OPENAPI_PATH`]: the document (`OpenApi::to_json`) served as JSON.
pub fn openapi_route<S: Clone + Send + Sync + 'static>(
    json: String,
) -> axum::routing::MethodRouter<S> {
    axum::routing::get(move || async move { ([(header::CONTENT_TYPE, "application/json")], json) })
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::extract::DefaultBodyLimit;
    use axum::http::{Request, StatusCode};
    use axum::routing::post;
    use tower::ServiceExt as _;

    use serde_json::Value;

    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Thing {
        inner: Inner,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Inner {
        n: u32,
    }

    fn app() -> Router {
        Router::new()
            .route(
                "/thing",
                post(|JsonBody(t): JsonBody<Thing>| async move { t.inner.n.to_string() }),
            )
            .layer(DefaultBodyLimit::max(64))
            .layer(axum::middleware::map_response(json_errors))
    }

    async fn send(
        method: &str,
        path: &str,
        kind: &str,
        body: &str,
    ) -> (StatusCode, Option<String>, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", kind);
        let res = app()
            .oneshot(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let allow = res
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        (
            status,
            allow,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Body rejections and axum's own route and method misses all answer the one JSON
    /// shape with their status; a wrong type names the field by its path; `Allow` stays.
    #[tokio::test]
    async fn every_rejection_is_the_json_error_shape() {
        let j = "application/json";
        let cases = [
            (
                "POST",
                "/thing",
                j,
                "{\"inner\": {\"n\": \"x\"}}",
                400,
                "invalid_field",
                Some("inner.n"),
            ),
            (
                "POST",
                "/thing",
                j,
                "{\"inner\": {\"n\": 1}, \"x\": 2}",
                400,
                "invalid_field",
                Some("x"),
            ),
            (
                "POST",
                "/thing",
                j,
                "{\"inner\": ",
                400,
                "invalid_json",
                None,
            ),
            ("POST", "/thing", j, "[]", 400, "invalid_field", None),
            (
                "POST",
                "/thing",
                "text/plain",
                "{}",
                415,
                "unsupported_media_type",
                None,
            ),
            (
                "POST",
                "/thing",
                j,
                &"x".repeat(100),
                413,
                "too_large",
                None,
            ),
            ("POST", "/nowhere", j, "{}", 404, "not_found", None),
            ("GET", "/thing", j, "", 405, "method_not_allowed", None),
        ];
        for (method, path, kind, body, status, code, field) in cases {
            let (got, allow, e) = send(method, path, kind, body).await;
            assert_eq!(
                (got.as_u16(), e["error"]["code"].as_str()),
                (status, Some(code)),
                "{body}: {e}"
            );
            assert_eq!(e["error"]["field"].as_str(), field, "{body}: {e}");
            assert_eq!(allow.is_some(), status == 405);
        }
    }
}
