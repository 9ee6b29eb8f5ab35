//! Following a running call: `/console/calls/{sid}/live` (the page) and
//! `/console/calls/{sid}/events` (its server-sent events).
//!
//! Consumes the call's control events (`call.*.{sid}.>` on `CALLS`) with an ordered
//! consumer that delivers what is stored and then each new event
//! ([`sb_replay::follow`]), until the call's `end`; produces one SSE `call` event per
//! control event (JSON: seconds since the first event, turn, kind, detail, and for the
//! chat its speaker and text), then an `end` event, and closes. Tokens and partials stay
//! out (the sentence carries the text); audio is not followed. The stream stops when the
//! browser goes away or the console stops. A call the viewer may not see is 404 before
//! anything is streamed. State: one ephemeral consumer per open page, gone with it.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use maud::html;
use sb_replay::{Streams, follow};
use sb_schemas::{Body, Envelope};
use serde::Serialize;
use tokio::sync::mpsc;

use super::layout;
use super::pages::call_error;
use super::session::PageViewer;
use crate::ConsoleState;
use crate::calls::{self, timeline};

/// One event as the live page draws it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveEvent {
    /// Seconds since the first event streamed.
    pub t: f64,
    pub turn: u32,
    pub kind: &'static str,
    pub detail: String,
    /// `caller` or `bot` for a line of the chat (a transcript, a key, a sentence).
    pub speaker: Option<&'static str>,
    pub text: Option<String>,
}

/// `e` as the live page draws it (`None`: not shown live).
pub fn live_event(e: &Envelope, first_at: u64) -> Option<LiveEvent> {
    let row = timeline::row(e)?;
    let (speaker, text) = match &e.body {
        Body::Transcript(t) => (Some("caller"), Some(t.text.clone())),
        Body::Dtmf(d) => (Some("caller"), Some(format!("pressed {}", d.digit))),
        Body::Sentence(s) => (Some("bot"), Some(s.text.clone())),
        _ => (None, None),
    };
    Some(LiveEvent {
        t: e.at.saturating_sub(first_at) as f64 / 1e6,
        turn: e.turn,
        kind: e.kind().as_str(),
        detail: row.detail,
        speaker,
        text,
    })
}

/// `GET /console/calls/{sid}/live`: the page; its script opens the event stream.
pub async fn page(
    PageViewer(viewer): PageViewer,
    State(state): State<ConsoleState>,
    Path(sid): Path<String>,
) -> Response {
    let (sid, tenant) = match calls::tenant_of(&state.js, &viewer, &sid).await {
        Ok(found) => found,
        Err(e) => return call_error(&viewer, &e),
    };
    let body = html! {
        section.call-head {
            h1 { "Live call " code #sid { (sid) } }
            p { "Tenant " (tenant) ". " span #status.status { "Connecting…" } " "
                a #after href={ "/console/calls/" (sid) } hidden { "Open the call's page" } }
        }
        div.live data-events={ "/console/calls/" (sid) "/events" } {
            section #transcript { h2 { "Transcript" } ol #chat.chat {} }
            section #timeline {
                h2 { "Events" }
                table.timeline {
                    thead { tr {
                        th.num { "Time" } th.num { "Turn" } th { "Event" } th { "Detail" }
                    } }
                    tbody #events {}
                }
            }
        }
        script src="/console/assets/live.js" {}
    };
    layout(&format!("Live call {sid}"), Some(&viewer), body).into_response()
}

/// `GET /console/calls/{sid}/events`: the call's control events as server-sent events.
pub async fn events(
    PageViewer(viewer): PageViewer,
    State(state): State<ConsoleState>,
    Path(sid): Path<String>,
) -> Response {
    let (sid, _) = match calls::tenant_of(&state.js, &viewer, &sid).await {
        Ok(found) => found,
        Err(e) => return (e.status(), e.to_string()).into_response(),
    };
    let (tx, rx) = mpsc::unbounded_channel::<Event>();
    let js = state.js.clone();
    let stopping = state.stopping.clone();
    tokio::spawn(async move {
        let mut first_at = None;
        let streams = Streams::live();
        let followed = follow::follow(&js, &streams, &sid, false, |stored| {
            if !viewer.sees(&stored.event.tenant) {
                return Ok(());
            }
            let first = *first_at.get_or_insert(stored.event.at);
            let Some(event) = live_event(&stored.event, first) else {
                return Ok(());
            };
            let data = serde_json::to_string(&event).expect("a live event serialises");
            tx.send(Event::default().event("call").data(data))
                .map_err(|_| std::io::Error::other("the page went away"))
        });
        tokio::select! {
            result = followed => match result {
                Ok(_) => { let _ = tx.send(Event::default().event("end").data("{}")); }
                Err(error) => tracing::debug!(call_sid = %sid, %error, "live call stream stopped"),
            },
            () = tx.closed() => {}
            () = stopping.cancelled() => {}
        }
    });
    let stream = sse_stream(rx);
    (
        StatusCode::OK,
        Sse::new(stream).keep_alive(KeepAlive::default()),
    )
        .into_response()
}

fn sse_stream(rx: mpsc::UnboundedReceiver<Event>) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
    )
}

#[cfg(test)]
mod tests {
    use sb_schemas::testing::{sid, tenant};
    use sb_schemas::*;

    use super::*;

    fn at(turn: u32, ms: u64, body: Body) -> Envelope {
        let mut e = Envelope::new(tenant(), sid(1), turn, body);
        e.at = ms * 1_000;
        e
    }

    /// Transcripts, keys and sentences are chat lines; other control events are rows
    /// only; tokens are not streamed.
    #[test]
    fn events_become_live_rows_and_chat_lines() {
        let sentence = Body::Sentence(Sentence {
            index: 0,
            text: "Hello!".into(),
            last: true,
            fallback: false,
        });
        let e = live_event(&at(0, 1_500, sentence), 1_000_000).unwrap();
        assert_eq!(
            (e.t, e.kind, e.speaker, e.text.as_deref()),
            (0.5, "sentence", Some("bot"), Some("Hello!"))
        );
        let dtmf = live_event(&at(1, 0, Body::Dtmf(Dtmf { digit: "7".into() })), 0).unwrap();
        assert_eq!(dtmf.text.as_deref(), Some("pressed 7"));
        let end = Body::End(End {
            reason: EndReason::Stop,
        });
        let e = live_event(&at(1, 2_000, end), 1_000_000).unwrap();
        assert_eq!((e.kind, e.speaker), ("end", None));
        let token = Body::Token(Token {
            index: 0,
            text: "He".into(),
        });
        assert_eq!(live_event(&at(0, 0, token), 0), None);
    }
}
