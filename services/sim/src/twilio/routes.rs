//! HTTP face of the Twilio REST stand-in: the Calls endpoints of API 2010-04-01.
//!
//! Consumes HTTP requests (basic auth, form bodies, list queries); produces Twilio's JSON
//! (201 call resource, 200 on update/fetch, a page of calls on list, legacy error bodies
//! 400/401/404/429/500) and records every request in [`TwilioState`]. A created call is
//! handed to its life ([`super::life`]) when the stand-in has callees or an [`Answer`].
//! Media lines register at `/sim/lines/{sid}` for the TwiML an update runs on their call.
//! State: all of it in [`TwilioState`].

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use sb_twilio::form::parse_form;
use sb_twilio::rest::{call_path, calls_path};
use sb_twilio::{ApiError, CallPage, CreateCall, ListCalls, UpdateCall};

use super::callee::Callees;
use super::life::{Life, Settings};
use super::record::RecordedRequest;
use super::state::TwilioState;
use crate::caller::{CallerConfig, Scenario};

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
    /// Calls live their lives (callbacks, callees) only when set.
    lives: Option<(Arc<Settings>, Arc<Callees>)>,
}

/// The stand-in's router.
pub(crate) fn router(state: TwilioState, lives: Option<(Settings, Callees)>) -> Router {
    let app = App {
        state,
        lives: lives.map(|(settings, callees)| (Arc::new(settings), Arc::new(callees))),
    };
    Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Calls.json",
            post(create).get(list),
        )
        .route(
            "/2010-04-01/Accounts/{account}/Calls/{call}",
            get(fetch).post(update),
        )
        .route("/sim/lines/{call}", get(line))
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
    result: Result<(StatusCode, String), ApiError>,
) -> Response {
    let (response, status, error_code) = match result {
        Ok((status, body)) => (json(status, body), status.as_u16(), None),
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
        .and_then(|()| match app.state.take_server_error() {
            true => Err(ApiError::new(500, 20500, "Internal Server Error")),
            false => CreateCall::from_params(&params),
        })
        .map(|create| {
            let callees = app.lives.as_ref().map(|(_, callees)| callees.as_ref());
            let (resource, hangup, callee) = app.state.create_call(create.clone(), callees);
            if let (Some((settings, _)), Some(callee)) = (&app.lives, callee) {
                let life = Life {
                    state: app.state.clone(),
                    settings: Arc::clone(settings),
                    call_sid: resource.sid.clone(),
                    create,
                    callee,
                    hangup,
                };
                tokio::spawn(life.run());
            }
            (StatusCode::CREATED, resource.to_json())
        });
    respond(&app.state, Method::POST, path, params, result)
}

/// `GET …/Calls.json?To=&From=&Status=&PageSize=`: one page, newest first.
async fn list(
    State(app): State<App>,
    Path(account): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let path = calls_path(&account);
    let query = query.unwrap_or_default();
    let params = parse_form(query.as_bytes()).unwrap_or_default();
    let result = admit(&app.state, &headers, &account, &path)
        .and_then(|()| ListCalls::from_query(&query))
        .map(|filters| {
            let calls = app.state.list(&filters);
            let page = CallPage::first(app.state.account_sid(), &filters, calls);
            (StatusCode::OK, page.to_json())
        });
    respond(&app.state, Method::GET, path, params, result)
}

/// `GET /sim/lines/{call}` (WebSocket; the stand-in's own, not Twilio's API): a media
/// line registers for its call, and every TwiML an update runs on the call arrives as a
/// text message (a redirect's `<Connect><Stream>`, a hang-up's `<Hangup/>`), until the
/// line closes the socket.
async fn line(
    State(app): State<App>,
    Path(call): Path<String>,
    ws: axum::extract::WebSocketUpgrade,
) -> Response {
    ws.on_upgrade(move |mut socket| async move {
        use axum::extract::ws::Message;
        let mut twimls = app.state.open_line(&call);
        loop {
            tokio::select! {
                twiml = twimls.recv() => match twiml {
                    Some(twiml) => {
                        if socket.send(Message::Text(twiml.into())).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
                message = socket.recv() => match message {
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
            }
        }
        app.state.close_line(&call);
    })
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
        .map(|resource| (StatusCode::OK, resource.to_json()));
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
        .map(|resource| (StatusCode::OK, resource.to_json()));
    respond(&app.state, Method::GET, path, Vec::new(), result)
}
