//! Live updates: Server-Sent Events to every open page of this desk.
//!
//! A new thread entry is sent as the HTML of its list item, rendered in the
//! session's language, so the thread grows without a reload and without the
//! script knowing how an entry looks. A thread's page names the last entry it
//! shows: the stream first replays what the store has after it, then goes
//! live, so an entry stored between the page's rendering and the stream's
//! start is not lost (the script ignores an entry it already shows). Anything else that changed (an offer,
//! an owner, a clock) is a `refresh`: the script fetches the page again and
//! swaps the regions marked live, keeping focus and what is being typed.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use futures_util::{stream, Stream, StreamExt};
use ketenhub_sdk::{MemberId, ThreadId};
use serde::Deserialize;
use tokio_stream::wrappers::BroadcastStream;

use super::auth::Session;
use super::{views, App};
use crate::desk::Live;
use crate::store::Entry;

/// Which thread the page shows, and its last entry.
#[derive(Debug, Deserialize)]
pub struct Since {
    thread: Option<String>,
    after: Option<u64>,
}

fn entry_event(app: &App, lang: crate::i18n::Lang, me: &MemberId, entry: &Entry) -> Option<Event> {
    let view = views::entry(&app.desk.policy, entry, me);
    let ctx = minijinja::context! { e => view, case_id => entry.thread.to_string() };
    let html = app.fragment(lang, "entry.html", ctx).ok()?;
    let data = serde_json::json!({ "thread": entry.thread.to_string(), "seq": entry.seq, "html": html });
    Some(Event::default().event("entry").data(data.to_string()))
}

/// What the store has of `thread` after `after`, for a page that may have missed it.
fn replay(app: &App, since: &Since) -> Vec<Entry> {
    let thread = since.thread.as_deref().and_then(|t| t.parse::<uuid::Uuid>().ok()).map(ThreadId);
    let (Some(thread), Some(after)) = (thread, since.after) else { return Vec::new() };
    app.desk.store.thread(thread).unwrap_or_default().into_iter().filter(|e| e.seq > after).collect()
}

/// The event stream of one page.
pub async fn events(
    State(app): State<App>,
    Extension(session): Extension<Session>,
    Query(since): Query<Since>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let me = app.desk.client.member_id();
    // Subscribed before reading the store, so nothing falls between the two.
    let live = BroadcastStream::new(app.desk.live.subscribe());
    let missed: Vec<Result<Event, Infallible>> =
        replay(&app, &since).iter().filter_map(|e| entry_event(&app, session.lang, &me, e)).map(Ok).collect();
    let stream = live.filter_map(move |live| {
        let app = app.clone();
        let me = me.clone();
        let lang = session.lang;
        async move {
            match live {
                Ok(Live::Entry(entry)) => entry_event(&app, lang, &me, &entry).map(Ok),
                Ok(Live::Refresh) => Some(Ok(Event::default().event("refresh").data("{}"))),
                // A page that fell behind catches up with one refresh.
                Err(_) => Some(Ok(Event::default().event("refresh").data("{}"))),
            }
        }
    });
    Sse::new(stream::iter(missed).chain(stream)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
