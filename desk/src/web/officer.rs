//! The privacy officer's console: the audit log within scope, the family's access report,
//! the review queue of shares without consent, and the audit log's verification status.
//!
//! The hub decides the scope (the cases the organisation's people are or were
//! in); the console only asks. Entries are shown under the field names of the
//! audit export (NEN 7513 and the Logboek Dataverwerkingen), produced by the
//! hub crate's own mapping, so the console and an inspector's export never
//! name a field differently.

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use hub::audit::chain::{to_json_line, ExportLine};
use ketenhub_sdk::{AuditAction, AuditEntry, AuditFilter, MemberId, ThreadId};
use serde::{Deserialize, Serialize};

use super::auth::Session;
use super::{App, WebError, WebResult};

/// Entries per page of the audit query.
pub const PAGE: usize = 50;

/// The columns of the audit table: export field names, in the order an officer reads them.
pub const COLUMNS: [&str; 11] = [
    "dpl.core.processing_activity_id",
    "dpl.core.data_subject_id",
    "nen7513.actor.organisation",
    "nen7513.actor.worker",
    "nen7513.actor.role",
    "nen7513.on_behalf_of",
    "nen7513.object_id",
    "nen7513.purpose",
    "nen7513.legal_basis",
    "nen7513.outcome",
    "nen7513.rule",
];

/// The audit query's filter, as the form sends it.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct AuditForm {
    #[serde(default)]
    case: String,
    #[serde(default)]
    worker_oin: String,
    #[serde(default)]
    worker: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    /// The last seq of the previous page.
    after_seq: Option<u64>,
}

#[derive(Serialize)]
struct Row {
    seq: u64,
    at_ms: u64,
    fields: Vec<String>,
}

fn case_filter(text: &str) -> WebResult<Option<ThreadId>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<uuid::Uuid>()
        .map(|u| Some(ThreadId(u)))
        .map_err(|_| WebError::BadRequest(format!("{text:?} is not a case id")))
}

impl AuditForm {
    fn filter(&self) -> WebResult<AuditFilter> {
        let worker = if self.worker.trim().is_empty() {
            None
        } else {
            Some(
                MemberId::new(self.worker_oin.trim(), self.worker.trim())
                    .map_err(|e| WebError::BadRequest(format!("worker: {e}")))?,
            )
        };
        let since = super::day_ms(&self.since)?;
        Ok(AuditFilter {
            case: case_filter(&self.case)?,
            worker,
            since_ms: since,
            until_ms: super::day_ms(&self.until)?.map(|d| d + wire::calendar::DAY_MS),
            limit: Some(PAGE as u32),
            action: None,
            after_seq: self.after_seq,
        })
    }
}

/// An entry's fields under the export's names.
fn fields(entry: &AuditEntry) -> Vec<String> {
    let line: serde_json::Value =
        serde_json::from_str(&to_json_line(&ExportLine::Entry(entry.clone()))).unwrap_or_default();
    let attributes = &line["attributes"];
    COLUMNS
        .iter()
        .map(|name| match &attributes[*name] {
            serde_json::Value::Null => String::new(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// The audit log within the organisation's scope, a page at a time.
pub async fn audit(
    State(app): State<App>,
    Extension(session): Extension<Session>,
    Query(form): Query<AuditForm>,
) -> WebResult {
    let filter = form.filter()?;
    let (rows, next, error) = match app.desk.client.audit_page(filter).await {
        Ok(page) => {
            let next = page.entries.last().filter(|_| page.truncated).map(|e| e.seq);
            let rows: Vec<Row> =
                page.entries.iter().map(|e| Row { seq: e.seq, at_ms: e.record.at_ms, fields: fields(e) }).collect();
            (rows, next, None)
        }
        Err(e) => (Vec::new(), None, Some(e.to_string())),
    };
    let organisations: Vec<(String, String)> =
        app.desk.policy.organisations().iter().map(|o| (o.oin.to_string(), o.name.clone())).collect();
    let next_query = next.map(|seq| {
        let mut q = serde_urlencoded::to_string(&form).unwrap_or_default();
        q = q.split('&').filter(|p| !p.starts_with("after_")).collect::<Vec<_>>().join("&");
        format!("{q}&after_seq={seq}")
    });
    let ctx = minijinja::context! {
        form, rows, columns => COLUMNS, next_query, error, organisations, page => "audit",
    };
    Ok(app.render(&session, "audit.html", ctx)?.into_response())
}

#[derive(Deserialize)]
pub struct ReportQuery {
    case: String,
    download: Option<String>,
}

/// Every entry about a case, across pages.
async fn case_entries(app: &App, case: ThreadId) -> WebResult<Vec<AuditEntry>> {
    Ok(app.desk.client.audit_query(AuditFilter { case: Some(case), ..Default::default() }).await?)
}

#[derive(Serialize)]
struct TimelineRow {
    at_ms: u64,
    organisation: String,
    person: String,
    role: String,
    action: String,
    legal_basis: String,
    outcome: String,
}

fn timeline(entries: &[AuditEntry]) -> Vec<TimelineRow> {
    entries
        .iter()
        .map(|e| {
            let r = &e.record;
            TimelineRow {
                at_ms: r.at_ms,
                organisation: r.actor.as_ref().map(|a| a.organisation.clone()).unwrap_or_default(),
                person: match (&r.actor, &r.on_behalf_of) {
                    (Some(a), Some(m)) => format!("{} ({})", m.worker, a.worker),
                    (Some(a), None) => a.worker.clone(),
                    (None, _) => String::new(),
                },
                role: r.actor.as_ref().map(|a| a.role.code().to_owned()).unwrap_or_default(),
                action: code(&r.action),
                legal_basis: r.legal_basis.clone().unwrap_or_default(),
                outcome: code(&r.outcome),
            }
        })
        .collect()
}

/// The serde name of an audit enum, as the string keys use it.
fn code(value: &impl Serialize) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The family's access report for a case (GDPR art. 15), printable and downloadable, without any content.
pub async fn report(
    State(app): State<App>,
    Extension(session): Extension<Session>,
    Query(query): Query<ReportQuery>,
) -> WebResult<Response> {
    let case = case_filter(&query.case)?.ok_or_else(|| WebError::BadRequest("no case".into()))?;
    let entries = case_entries(&app, case).await?;
    let people = ketenhub_sdk::report::who_had_access(&entries);
    let ctx = minijinja::context! {
        case => case.to_string(), people, timeline => timeline(&entries), count => entries.len(),
        produced_ms => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        download => query.download.is_some(), page => "audit",
    };
    let mut response = app.render(&session, "report.html", ctx)?.into_response();
    if query.download.is_some() {
        let name = format!("attachment; filename=\"inzageverslag-{case}.html\"");
        if let Ok(v) = HeaderValue::from_str(&name) {
            response.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
    }
    Ok(response)
}

/// The access report for the family: plain Dutch, printable, no worker named (see the SDK's
/// `report::family_html`).
pub async fn family_report(State(app): State<App>, Query(query): Query<ReportQuery>) -> WebResult<Response> {
    let case = case_filter(&query.case)?.ok_or_else(|| WebError::BadRequest("no case".into()))?;
    let entries = case_entries(&app, case).await?;
    let organisation = app.desk.client.identity().organisation.clone();
    let glossary = app.desk.policy.glossary(&organisation);
    let html = ketenhub_sdk::report::family_html_linked(case, &entries, &glossary, "/assets/family.css");
    Ok(axum::response::Html(html).into_response())
}

/// One share without consent on the review page, with its reviews by this organisation.
#[derive(Serialize)]
struct ReviewRow {
    seq: u64,
    at_ms: u64,
    case: String,
    actor: String,
    action: &'static str,
    object: String,
    legal_basis: String,
    purpose: String,
    reviews: Vec<(String, u64, String)>,
}

impl ReviewRow {
    fn of(item: &ketenhub_sdk::report::ReviewItem) -> Self {
        let record = &item.share.record;
        let who = |r: &wire::audit::AuditRecord| {
            r.actor.as_ref().map_or_else(String::new, |a| format!("{} ({})", a.organisation, a.worker))
        };
        Self {
            seq: item.share.seq,
            at_ms: record.at_ms,
            case: record.case.map(|c| c.to_string()).unwrap_or_default(),
            actor: who(record),
            action: record.action.code(),
            object: record.object.clone().unwrap_or_default(),
            legal_basis: record.legal_basis.clone().unwrap_or_default(),
            purpose: record.purpose.clone().unwrap_or_default(),
            reviews: item
                .reviews
                .iter()
                .map(|r| (who(&r.record), r.record.at_ms, r.record.purpose.clone().unwrap_or_default()))
                .collect(),
        }
    }
}

/// The review queue: every offer and add in scope that shared without the
/// family's consent, from the audit log, each with the reviews this
/// organisation's officers gave it; the unreviewed ones first.
pub async fn review(State(app): State<App>, Extension(session): Extension<Session>) -> WebResult {
    let client = &app.desk.client;
    let mut entries = Vec::new();
    for action in [AuditAction::Handover, AuditAction::AddMember, AuditAction::Review] {
        entries.extend(client.audit_query(AuditFilter { action: Some(action), ..Default::default() }).await?);
    }
    entries.sort_by_key(|e| e.seq);
    let policy = &app.desk.policy;
    let without_consent = |basis: &str| hub::handovers::needs_review(policy, basis);
    let queue = ketenhub_sdk::report::review_queue(&entries, &client.identity().oin, without_consent);
    let (open, done): (Vec<_>, Vec<_>) = queue.iter().map(ReviewRow::of).partition(|r| r.reviews.is_empty());
    Ok(app.render(&session, "review.html", minijinja::context! { open, done, page => "review" })?.into_response())
}

/// The note a privacy officer gives with a review.
#[derive(Deserialize)]
pub struct ReviewForm {
    note: String,
}

/// Marks a share as reviewed with the officer's note: an audit entry at the hub.
pub async fn mark_reviewed(
    State(app): State<App>,
    axum::extract::Path(entry): axum::extract::Path<u64>,
    axum::Form(form): axum::Form<ReviewForm>,
) -> WebResult<axum::response::Redirect> {
    let note = form.note.trim();
    if note.is_empty() {
        return Err(WebError::BadRequest("a review needs a note".into()));
    }
    app.desk.client.mark_reviewed(entry, note).await?;
    Ok(axum::response::Redirect::to("/review"))
}

#[derive(Deserialize)]
pub struct StatusQuery {
    check: Option<String>,
}

/// The audit log's verification status as this desk's SDK witnesses it.
pub async fn status(
    State(app): State<App>,
    Extension(session): Extension<Session>,
    Query(query): Query<StatusQuery>,
) -> WebResult {
    let checked = match query.check {
        Some(_) => Some(app.desk.client.witness_audit().await.map(|_| ()).map_err(|e| e.to_string())),
        None => None,
    };
    let head = app.desk.client.witnessed_audit_head().map(|h| {
        minijinja::context! {
            size => h.size, at_ms => h.at_ms,
            root => h.root.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        }
    });
    let alarm = app.desk.alarm.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let (ok, error) = match checked {
        Some(Ok(())) => (Some(true), None),
        Some(Err(e)) => (Some(false), Some(e)),
        None => (None, None),
    };
    let ctx = minijinja::context! { head, alarm, ok, error, page => "status" };
    Ok(app.render(&session, "status.html", ctx)?.into_response())
}
