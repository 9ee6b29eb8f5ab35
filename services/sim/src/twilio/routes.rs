//! HTTP face of the Twilio REST stand-in: the Calls endpoints of API 2010-04-01.
//!
//! Consumes HTTP requests (basic auth, form bodies); produces Twilio's JSON (201 call
//! resource, 200 on update/fetch, legacy error bodies 400/401/404/429) and records every
//! request in [`TwilioState`]. A created call with a `Url` can be answered by the scripted
//! caller (see [`Answer`]). State: all of it in [`TwilioState`].

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use sb_twilio::form::parse_form;
use sb_twilio::rest::{call_path, calls_path};
use sb_twilio::{ApiError, CallResource, CallTarget, CreateCall, UpdateCall};

use super::state::{RecordedRequest, TwilioState};
use crate::caller::{CallerConfig, Scenario, place_call};

/// Answering created calls with the scripted caller: where Switchboard's ingress listens
/// and what the callee does. The public URL that is signed comes from each call's `Url`.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Template: ingress URL and auth token; public URL and paths come from the created call.
    pub caller: CallerConfig,
    /// What the answering party does; `from`/`to` are taken from the created call.
    pub scenario: Scenario,
}

#[derive(Clone)]
struct App {
    state: TwilioState,
    answer: Option<Arc<Answer>>,
}

/// The stand-in's router.
pub(crate) fn router(state: TwilioState, answer: Option<Answer>) -> Router {
    let app = App {
        state,
        answer: answer.map(Arc::new),
    };
    Router::new()
        .route("/2010-04-01/Accounts/{account}/Calls.json", post(create))
        .route(
            "/2010-04-01/Accounts/{account}/Calls/{call}",
            get(fetch).post(update),
        )
        .with_state(app)
}

fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

fn error_response(error: &ApiError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = json(status, error.to_json());
    if error.status == 401 {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Twilio API\""),
        );
    }
    response
}

/// Basic auth `AccountSid:AuthToken`, the path's account, then the injected 429 share.
fn admit(
    state: &TwilioState,
    headers: &HeaderMap,
    account: &str,
    path: &str,
) -> Result<(), ApiError> {
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok());
    let authorised = credentials
        .as_deref()
        .and_then(|c| c.split_once(':'))
        .is_some_and(|(sid, token)| state.credentials_match(sid, token));
    if !authorised {
        return Err(ApiError::unauthorized());
    }
    if account != state.account_sid() {
        return Err(ApiError::not_found(path));
    }
    if state.take_rate_limit() {
        return Err(ApiError::too_many_requests());
    }
    Ok(())
}

/// Answers and records the request.
fn respond(
    state: &TwilioState,
    method: Method,
    path: String,
    params: Vec<(String, String)>,
    result: Result<(StatusCode, CallResource), ApiError>,
) -> Response {
    let (response, status, error_code) = match result {
        Ok((status, resource)) => (json(status, resource.to_json()), status.as_u16(), None),
        Err(error) => (error_response(&error), error.status, Some(error.code)),
    };
    state.record(RecordedRequest {
        method: method.to_string(),
        path,
        params,
        status,
        error_code,
    });
    response
}

async fn create(
    State(app): State<App>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = calls_path(&account);
    let params = parse_form(&body).unwrap_or_default();
    let result = admit(&app.state, &headers, &account, &path)
        .and_then(|()| CreateCall::from_params(&params))
        .map(|create| {
            let (resource, hangup) = app.state.create_call(create.clone());
            if let Some(answer) = &app.answer {
                spawn_answer(
                    app.state.clone(),
                    Arc::clone(answer),
                    &resource,
                    &create,
                    hangup,
                );
            }
            (StatusCode::CREATED, resource)
        });
    respond(&app.state, Method::POST, path, params, result)
}

/// `CA….json` → `CA…`.
fn call_sid(segment: &str) -> Option<&str> {
    segment.strip_suffix(".json")
}

async fn update(
    State(app): State<App>,
    Path((account, call)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let sid = call_sid(&call).unwrap_or(&call).to_owned();
    let path = call_path(&account, &sid);
    let params = parse_form(&body).unwrap_or_default();
    let result = admit(&app.state, &headers, &account, &path)
        .and_then(|()| {
            call_sid(&call)
                .ok_or_else(|| ApiError::not_found(&path))
                .map(|_| ())
        })
        .and_then(|()| UpdateCall::from_params(&params))
        .and_then(|update| app.state.update_call(&sid, update, &path))
        .map(|resource| (StatusCode::OK, resource));
    respond(&app.state, Method::POST, path, params, result)
}

async fn fetch(
    State(app): State<App>,
    Path((account, call)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let sid = call_sid(&call).unwrap_or(&call).to_owned();
    let path = call_path(&account, &sid);
    let result = admit(&app.state, &headers, &account, &path)
        .and_then(|()| {
            call_sid(&call)
                .and_then(|sid| app.state.fetch(sid))
                .ok_or_else(|| ApiError::not_found(&path))
        })
        .map(|resource| (StatusCode::OK, resource));
    respond(&app.state, Method::GET, path, Vec::new(), result)
}

/// `(origin, path and query)` of an absolute URL: what Twilio signs is `origin + path`.
fn split_url(url: &str) -> Option<(String, String)> {
    let parsed = url::Url::parse(url).ok()?;
    let path = match parsed.query() {
        Some(query) => format!("{}?{query}", parsed.path()),
        None => parsed.path().to_owned(),
    };
    Some((parsed.origin().ascii_serialization(), path))
}

/// Picks up a created call with the scripted caller: the webhook goes to the ingress at
/// the path of the call's `Url` (signed over the `Url` itself), status callbacks to the
/// `StatusCallback` path (signed over the `Url`'s origin + that path).
fn spawn_answer(
    state: TwilioState,
    answer: Arc<Answer>,
    resource: &CallResource,
    create: &CreateCall,
    hangup: tokio_util::sync::CancellationToken,
) {
    let call_sid = resource.sid.clone();
    let CallTarget::Url(url) = &create.target else {
        state.caller_done(
            &call_sid,
            Err("only calls created with Url are answered".to_owned()),
        );
        return;
    };
    let mut config = answer.caller.clone();
    config.account_sid = state.account_sid().to_owned();
    config.call_sid = Some(call_sid.clone());
    config.direction = "outbound-api".to_owned();
    config.hangup = hangup;
    if let Some((origin, path)) = split_url(url) {
        config.public_url = origin;
        config.voice_path = path;
    }
    if let Some((_, path)) = create.status_callback.as_deref().and_then(split_url) {
        config.status_path = path;
    }
    let mut scenario = answer.scenario.clone();
    scenario.from = create.from.clone();
    scenario.to = create.to.clone();
    tokio::spawn(async move {
        state.answered(&call_sid);
        let outcome = place_call(config, &scenario)
            .await
            .map_err(|e| e.to_string());
        state.caller_done(&call_sid, outcome);
    });
}
