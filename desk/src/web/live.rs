//! Live updates: Server-Sent Events to every open page of this desk.
//!
//! A new thread entry is sent as the HTML of its list item, rendered in the
//! session's language, so the thread grows without a reload and without the
//! script knowing how an entry looks. Anything else that changed (an offer,
//! an owner, a clock) is a `refresh`: the script fetches the page again and
//! swaps the regions marked live, keeping focus and what is being typed.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use futures_util::{Stream, StreamExt};
use tokio_stream::wrappers::BroadcastStream;

use super::auth::Session;
use super::{views, App};
use crate::desk::Live;

/// The event stream of one page.
pub async fn events(
    State(app): State<App>,
    Extension(session): Extension<Session>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let me = app.desk.client.member_id();
    let stream = BroadcastStream::new(app.desk.live.subscribe()).filter_map(move |live| {
        let app = app.clone();
        let me = me.clone();
        let lang = session.lang;
        async move {
            match live {
                Ok(Live::Entry(entry)) => {
                    let view = views::entry(&app.desk.policy, &entry, &me);
                    let ctx = minijinja::context! { e => view, case_id => entry.thread.to_string() };
                    let html = app.fragment(lang, "entry.html", ctx).ok()?;
                    let data = serde_json::json!({ "thread": entry.thread.to_string(), "seq": entry.seq, "html": html });
                    Some(Ok(Event::default().event("entry").data(data.to_string())))
                }
                Ok(Live::Refresh) => Some(Ok(Event::default().event("refresh").data("{}"))),
                // A page that fell behind catches up with one refresh.
                Err(_) => Some(Ok(Event::default().event("refresh").data("{}"))),
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
