//! The console's pages (ARCHITECTURE §9): sign-in, the calls list, a call's page and a
//! live call, rendered on the server (maud: HTML escaped by construction) with the style
//! sheet and the two small scripts compiled into the binary (no CDN, no build step).
//!
//! Consumes browser requests signed in by the login cookie ([`session`]); produces HTML,
//! the call's WAV and a live call's server-sent events. Every page answers with a strict
//! Content-Security-Policy (same-origin styles, scripts and media only; no inline script)
//! and `Cache-Control: no-store`, since pages carry call content. State: none.
//!
//! Code map: [`session`] (login, logout, [`session::PageViewer`]), [`pages`] (calls list,
//! call page, WAV), [`call_page`] (the call page's markup), [`waterfall`] (the latency
//! SVG), [`live`] (the live page and its event stream).

pub mod call_page;
pub mod live;
pub mod pages;
pub mod session;
pub mod waterfall;

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::DateTime;
use maud::{DOCTYPE, Markup, html};
use sb_replay::summary::LatencySummary;

use crate::ConsoleState;
use crate::access::Viewer;

/// Where the pages live.
pub const PREFIX: &str = "/console";

const CSS: &str = include_str!("assets/console.css");
const CALL_JS: &str = include_str!("assets/call.js");
const LIVE_JS: &str = include_str!("assets/live.js");

/// Pages may load only what this server serves; nothing inline runs.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
    media-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

/// The pages' routes.
pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/calls") }))
        .route("/console/login", get(session::form).post(session::login))
        .route(
            "/console/logout",
            get(session::logout).post(session::logout),
        )
        .route("/console/calls", get(pages::calls))
        .route("/console/calls/{sid}", get(pages::call))
        .route("/console/calls/{sid}/audio.wav", get(pages::audio))
        .route("/console/calls/{sid}/live", get(live::page))
        .route("/console/calls/{sid}/events", get(live::events))
        .route("/console/assets/{name}", get(asset))
        .layer(axum::middleware::map_response(page_headers))
}

/// Route misses: an HTML 404 under `/console`, the JSON error body elsewhere.
pub async fn fallback(request: Request) -> Response {
    if request.uri().path().starts_with(PREFIX) {
        let page = error_page(None, "Not found", "There is no such page.");
        page_headers((StatusCode::NOT_FOUND, page).into_response()).await
    } else {
        sb_runtime::api_error::ApiError::NotFound.into_response()
    }
}

async fn page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn asset(Path(name): Path<String>) -> Response {
    let (kind, body) = match name.as_str() {
        "console.css" => ("text/css; charset=utf-8", CSS),
        "call.js" => ("text/javascript; charset=utf-8", CALL_JS),
        "live.js" => ("text/javascript; charset=utf-8", LIVE_JS),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    let headers = [
        (header::CONTENT_TYPE, kind),
        (header::CACHE_CONTROL, "private, max-age=300"),
    ];
    (headers, body).into_response()
}

/// A whole page: the header (who is signed in, sign-out) around `body`.
pub fn layout(title: &str, viewer: Option<&Viewer>, body: Markup) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Switchboard console" }
                link rel="stylesheet" href="/console/assets/console.css";
            }
            body {
                header.top {
                    a.brand href="/console/calls" { "Switchboard console" }
                    @if let Some(viewer) = viewer {
                        nav { a href="/console/calls" { "Calls" } }
                        span.who { "Signed in as " (viewer.label()) }
                        form.signout method="post" action="/console/logout" {
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    };
    Html(markup.into_string())
}

/// The call page as one self-contained HTML file (styles and script inline) that plays
/// `wav`, a file beside it: the demo's report of its call.
pub fn report(sid: &sb_schemas::CallSid, log: &sb_replay::CallLog, wav: &str) -> String {
    let body = call_page::render(sid, log, call_page::Assets::Standalone { wav });
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Call " (sid) " · Switchboard" }
                style { (maud::PreEscaped(CSS)) }
            }
            body { main { (body) } }
        }
    };
    markup.into_string()
}

/// A page saying what went wrong, in words.
pub fn error_page(viewer: Option<&Viewer>, title: &str, message: &str) -> Html<String> {
    layout(
        title,
        viewer,
        html! {
            section.error {
                h1 { (title) }
                p.message { (message) }
                p { a href="/console/calls" { "Back to the calls" } }
            }
        },
    )
}

/// `2025-06-01 09:30:03 UTC` for µs since the epoch.
pub fn utc(micros: u64) -> String {
    i64::try_from(micros)
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .map_or_else(
            || "-".to_owned(),
            |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

/// `4 min 05 s`, `12.3 s`.
pub fn duration(ms: u64) -> String {
    if ms >= 60_000 {
        format!("{} min {:02} s", ms / 60_000, (ms % 60_000) / 1_000)
    } else {
        format!("{:.1} s", ms as f64 / 1e3)
    }
}

/// `812 ms`.
pub fn millis(ms: f64) -> String {
    format!("{ms:.0} ms")
}

/// A call's p95 turn latency, `–` without a measured turn.
pub fn p95(latency: Option<LatencySummary>) -> String {
    latency.map_or_else(|| "–".to_owned(), |l| millis(l.p95))
}

/// `+14155551234 → +15005550006`, `?` for an unknown number.
pub fn numbers(from: Option<&str>, to: Option<&str>) -> String {
    format!("{} → {}", from.unwrap_or("?"), to.unwrap_or("?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_read_well() {
        assert_eq!(utc(1_748_770_203_000_000), "2025-06-01 09:30:03 UTC");
        assert_eq!(duration(245_000), "4 min 05 s");
        assert_eq!(duration(12_345), "12.3 s");
        assert_eq!(millis(811.6), "812 ms");
    }

    /// The demo's report stands alone: styles and script inline, the WAV beside it, no
    /// link back to a console.
    #[test]
    fn the_report_is_one_self_contained_file() {
        let sid = sb_schemas::testing::sid(7);
        let page = report(&sid, &sb_replay::CallLog::default(), "call.wav");
        assert!(page.contains(r#"src="call.wav""#), "{page}");
        assert!(
            page.contains("<style>") && page.contains("<script>"),
            "{page}"
        );
        assert!(!page.contains("/console/assets/"), "{page}");
        assert!(page.contains(sid.as_str()));
    }
}
