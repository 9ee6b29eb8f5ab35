//! The calls list (`/console/calls`), a call's page (`/console/calls/{sid}`) and its audio
//! (`/console/calls/{sid}/audio.wav`).
//!
//! Consumes signed-in page requests ([`PageViewer`]) and the list's filter form (the JSON
//! API's query, [`CallQuery`]); produces HTML and the call's stereo WAV (caller left, bot
//! right, [`sb_replay::wav`]). An unknown call, or another tenant's, is the same 404 page.
//! State: none.

use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use sb_replay::summary::CallSummary;
use sb_replay::{AudioScope, wav};

use super::session::PageViewer;
use super::{call_page, duration, error_page, layout, numbers, p95, utc};
use crate::ConsoleState;
use crate::access::Viewer;
use crate::calls::query::{CallQuery, DIRECTIONS, OUTCOMES};
use crate::calls::{self, CallError};

/// The page for a call that cannot be shown.
pub fn call_error(viewer: &Viewer, error: &CallError) -> Response {
    let title = match error {
        CallError::NotFound(_) => "Call not found",
        CallError::Unavailable(_) => "Calls unavailable",
    };
    let message = error.to_string();
    (error.status(), error_page(Some(viewer), title, &message)).into_response()
}

/// `GET /console/calls`: the filter form and the calls that pass it, newest first.
pub async fn calls(
    PageViewer(viewer): PageViewer,
    State(state): State<ConsoleState>,
    RawQuery(raw): RawQuery,
) -> Response {
    let query = CallQuery::form(raw.as_deref());
    let filter = query
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|q| q.filter(&viewer.scope(q.tenant.as_deref())));
    let (status, listed) = match filter {
        Err(invalid) => (StatusCode::BAD_REQUEST, Err(invalid.to_string())),
        Ok(filter) => match calls::list(&state.js, &viewer, filter).await {
            Ok(calls) => (StatusCode::OK, Ok(calls)),
            Err(e) => (e.status(), Err(e.to_string())),
        },
    };
    let query = query.unwrap_or_default();
    let tenants: Vec<String> = match &viewer {
        Viewer::Operator => {
            let mut ids: Vec<String> = state
                .tenants
                .tenants()
                .iter()
                .map(|t| t.id.as_str().to_owned())
                .collect();
            ids.sort();
            ids
        }
        Viewer::Tenant(id) => vec![id.as_str().to_owned()],
    };
    let body = html! {
        h1 { "Calls" }
        (filters(&query, &viewer, &tenants))
        @match &listed {
            Err(message) => p.message.error role="alert" { (message) },
            Ok(calls) if calls.is_empty() => p.empty { "No ended call matches." },
            Ok(calls) => (table(calls)),
        }
    };
    (status, layout("Calls", Some(&viewer), body)).into_response()
}

fn filters(q: &CallQuery, viewer: &Viewer, tenants: &[String]) -> Markup {
    let chosen = |value: &Option<String>, option: &str| value.as_deref() == Some(option);
    html! {
        form.filters method="get" action="/console/calls" {
            label { "Tenant "
                select name="tenant" disabled[matches!(viewer, Viewer::Tenant(_))] {
                    @if matches!(viewer, Viewer::Operator) { option value="" { "all" } }
                    @for t in tenants { option value=(t) selected[chosen(&q.tenant, t)] { (t) } }
                }
            }
            label { "Direction "
                select name="direction" {
                    option value="" { "both" }
                    @for d in DIRECTIONS {
                        option value=(d) selected[chosen(&q.direction, d)] { (d) }
                    }
                }
            }
            label { "From " input type="datetime-local" name="since" value=[q.since.as_deref()]; }
            label { "To " input type="datetime-local" name="until" value=[q.until.as_deref()]; }
            label { "Outcome "
                select name="outcome" {
                    option value="" { "any" }
                    @for o in OUTCOMES {
                        option value=(o) selected[chosen(&q.outcome, o)] { (o.replace('_', " ")) }
                    }
                }
            }
            label { "Show "
                input type="number" name="limit" min="1" max="200" placeholder="50"
                    value=[q.limit.as_deref()];
            }
            button type="submit" { "Filter" }
            span.hint { "times in UTC" }
        }
    }
}

fn table(calls: &[CallSummary]) -> Markup {
    html! {
        table.calls {
            thead { tr {
                th { "Started" } th { "Tenant" } th { "From → to" } th.num { "Duration" }
                th.num { "Turns" } th.num { "Barge-ins" } th.num { "p95 turn" } th { "Outcome" }
            } }
            tbody {
                @for c in calls {
                    tr.call data-sid=(c.call_sid) {
                        td { a href={ "/console/calls/" (c.call_sid) } { (utc(c.started_at)) } }
                        td { (c.tenant) }
                        td {
                            (numbers(c.from.as_deref(), c.to.as_deref()))
                            " " span.dir { (c.direction) }
                        }
                        td.num { (duration(c.duration_ms())) }
                        td.num { (c.turns) }
                        td.num { (c.barge_ins) }
                        td.num { (p95(c.latency_ms)) }
                        td {
                            span class=(format!("outcome {}", c.outcome)) {
                                (c.outcome.replace('_', " "))
                            }
                            @if c.fallback { " " span.flag { "fallback" } }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /console/calls/{sid}`: the call's page.
pub async fn call(
    PageViewer(viewer): PageViewer,
    State(state): State<ConsoleState>,
    Path(sid): Path<String>,
) -> Response {
    // Bot audio for the latency's first audio; the player fetches the whole WAV itself.
    match calls::load(&state.js, &viewer, &sid, AudioScope::Bot).await {
        Ok((sid, log)) => {
            let body = call_page::render(&sid, &log, call_page::Assets::Served);
            layout(&format!("Call {sid}"), Some(&viewer), body).into_response()
        }
        Err(e) => call_error(&viewer, &e),
    }
}

/// `GET /console/calls/{sid}/audio.wav`: the call as a stereo WAV, caller left, bot right.
pub async fn audio(
    PageViewer(viewer): PageViewer,
    State(state): State<ConsoleState>,
    Path(sid): Path<String>,
) -> Response {
    match calls::load(&state.js, &viewer, &sid, AudioScope::All).await {
        Ok((sid, log)) => {
            let headers = [
                (header::CONTENT_TYPE, "audio/wav".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("inline; filename=\"{sid}.wav\""),
                ),
            ];
            (headers, wav::render(&log)).into_response()
        }
        Err(e) => call_error(&viewer, &e),
    }
}
