//! The caseworker's pages: my cases, the case thread, attachments and every handover step.
//!
//! Each step of the case's life is one handler that calls one SDK method and
//! goes back to the case, so adding a step (reassignment, withdrawal, ...) is
//! adding one handler, one route and one form in the thread's template.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form, Json};
use ketenhub_sdk::packet::{AttachmentRef, Date, FieldError, Organisation, Party, Problem};
use ketenhub_sdk::{Content, FamilyTold, Grounds, MemberId, OfferRequest, ParticipantRole, SharedItem, ThreadId};
use serde::{Deserialize, Serialize};

use super::auth::Session;
use super::packet_form::{self, Frame, Values};
use super::views::{self, OfferView};
use super::{App, WebError, WebResult};
use crate::store::{PendingPacket, Stored};

use wire::calendar::DAY_MS;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn case_id(text: &str) -> WebResult<ThreadId> {
    text.parse::<uuid::Uuid>().map(ThreadId).map_err(|_| WebError::NotFound)
}

fn to_case(thread: ThreadId) -> Redirect {
    Redirect::to(&format!("/cases/{thread}"))
}

/// My cases, with the offers waiting for me.
pub async fn cases(State(app): State<App>, Extension(session): Extension<Session>) -> WebResult {
    let desk = &app.desk;
    let me = desk.client.member_id();
    let (mut cases, mut sides) = (Vec::new(), Vec::new());
    // The organisation's inbox is no case: its offers are in the inbox of offers below.
    for summary in desk.client.threads().await?.into_iter().filter(|s| !s.inbox) {
        if let Some(side) = summary.side {
            sides.push(SideView { id: summary.thread.to_string(), case: side.case.to_string(), purpose: side.purpose });
            continue;
        }
        let ownership = desk.client.ownership(summary.thread).await?;
        cases.push(views::case(&desk.policy, summary.thread.to_string(), &ownership, &me, now_ms()));
    }
    let inbox = inbox_offers(&app).await?;
    let team_lead = desk.policy.is_team_lead(&me);
    let ctx = minijinja::context! { cases, sides, inbox, team_lead, page => "cases" };
    Ok(app.render(&session, "cases.html", ctx)?.into_response())
}

/// A side thread in my cases: its id, its case's and what it is for.
#[derive(Serialize)]
struct SideView {
    id: String,
    case: String,
    purpose: String,
}

#[derive(Serialize)]
struct InboxOffer {
    case: String,
    offer: OfferView,
}

async fn inbox_offers(app: &App) -> WebResult<Vec<InboxOffer>> {
    let me = app.desk.client.member_id();
    Ok(app
        .desk
        .client
        .pending_offers()
        .await?
        .iter()
        .map(|(thread, o)| InboxOffer { case: thread.to_string(), offer: views::offer(&app.desk.policy, o, &me) })
        .filter(|o| o.offer.to_me)
        .collect())
}

/// The inbox of offers to me or my organisation.
pub async fn inbox(State(app): State<App>, Extension(session): Extension<Session>) -> WebResult {
    let inbox = inbox_offers(&app).await?;
    Ok(app.render(&session, "offers.html", minijinja::context! { inbox, page => "offers" })?.into_response())
}

/// Opens a new case.
pub async fn create(State(app): State<App>) -> WebResult<Redirect> {
    Ok(to_case(app.desk.client.create_thread().await?))
}

#[derive(Serialize)]
struct Choice {
    value: String,
    label: String,
    justify: bool,
}

/// The organisations a case can go to from mine, with the route-and-basis pairs the policy allows to each.
fn receivers(app: &App) -> Vec<(String, String, Vec<Choice>)> {
    let policy = &app.desk.policy;
    let kind = app.desk.identity.kind;
    policy
        .organisations()
        .into_iter()
        .filter(|org| org.oin != app.desk.identity.oin)
        .filter_map(|org| {
            let choices: Vec<Choice> = policy
                .routes()
                .iter()
                .filter(|r| r.from == kind && r.to == org.kind)
                .flat_map(|r| r.legal_bases.iter().map(move |b| (r, b)))
                .map(|(r, b)| Choice {
                    value: format!("{}|{b}", r.name),
                    label: format!("{} — {b}", r.name),
                    justify: needs_justification(app, b),
                })
                .collect();
            (!choices.is_empty()).then(|| (org.oin.to_string(), org.name.clone(), choices))
        })
        .collect()
}

/// A basis that shares without consent needs a written justification: the policy says which do, and the
/// SDK's packet check asks one for every basis but consent.
fn needs_justification(app: &App, basis: &str) -> bool {
    basis != ketenhub_sdk::packet::LawfulBasis::CONSENT || hub::handovers::needs_review(&app.desk.policy, basis)
}

/// The legal bases with their descriptions, for the add-member form.
fn bases(app: &App) -> Vec<(String, bool)> {
    let mut all: Vec<(String, bool)> = app
        .desk
        .policy
        .routes()
        .iter()
        .flat_map(|r| r.legal_bases.iter())
        .map(|b| (b.clone(), needs_justification(app, b)))
        .collect();
    all.sort();
    all.dedup();
    all
}

#[derive(Deserialize, Default)]
pub struct ThreadQuery {
    add_refused: Option<String>,
    reassign_refused: Option<String>,
}

/// The case thread: ownership, offers, clocks, messages and every form of the case.
pub async fn thread(
    State(app): State<App>,
    Extension(session): Extension<Session>,
    Path(case): Path<String>,
    Query(query): Query<ThreadQuery>,
) -> WebResult {
    let thread = case_id(&case)?;
    let desk = &app.desk;
    let me = desk.client.member_id();
    let summaries = desk.client.threads().await?;
    if let Some(side) = summaries.iter().find(|s| s.thread == thread).and_then(|s| s.side.clone()) {
        let in_case = summaries.iter().any(|s| s.thread == side.case);
        return side_thread(&app, &session, (thread, side, in_case), query).await;
    }
    let ownership = desk.client.ownership(thread).await?;
    let view = views::case(&desk.policy, thread.to_string(), &ownership, &me, now_ms());
    let members = views::members(&desk.policy, &desk.client.members(thread).await?, Some(&ownership), &me);
    let writes = !matches!(view.my_role, "background" | "left") && view.closed.is_none();
    let ctx = minijinja::context! {
        case => view, members, outcomes => &desk.policy.closing.outcomes,
        writes, adds => writes, participants => ownership.owner == me, reassign_refused => query.reassign_refused,
        ..conversation(&app, thread, query.add_refused).await?
    };
    Ok(app.render(&session, "thread.html", ctx)?.into_response())
}

/// What the messages and the forms under them need, for a case and a side thread alike.
async fn conversation(app: &App, thread: ThreadId, refused: Option<String>) -> WebResult<minijinja::Value> {
    let desk = &app.desk;
    let me = desk.client.member_id();
    // Without the delivery status the thread still shows, without its delivery lines.
    let status = desk.client.delivery(thread).await.unwrap_or_default();
    let stored = desk.store.thread(thread)?;
    let history_missing = stored.first().is_none_or(|e| e.seq > 1);
    let view = |e| views::EntryView {
        delivery: views::delivery(&desk.policy, &status, e, &me),
        ..views::entry(&desk.policy, e, &me)
    };
    let entries: Vec<_> = stored.iter().map(view).collect();
    let organisations: Vec<(String, String)> =
        desk.policy.organisations().iter().map(|o| (o.oin.to_string(), o.name.clone())).collect();
    Ok(minijinja::context! {
        case_id => thread.to_string(), entries, history_missing, organisations, bases => bases(app), refused,
        page => "cases",
    })
}

/// A side thread of a case: its messages, its members, and for the case's owner the add form. A member who is
/// not on the case (the limited recipient) sees nothing of the case but its id.
async fn side_thread(
    app: &App,
    session: &Session,
    (thread, side, in_case): (ThreadId, ketenhub_sdk::SideThread, bool),
    query: ThreadQuery,
) -> WebResult {
    let desk = &app.desk;
    let me = desk.client.member_id();
    let ownership = if in_case { Some(desk.client.ownership(side.case).await?) } else { None };
    let adds = ownership.as_ref().is_some_and(|o| o.owner == me && o.closed().is_none());
    let writes = ownership.as_ref().is_none_or(|o| o.closed().is_none() && !o.is_read_only(&me));
    let members = views::members(&desk.policy, &desk.client.members(thread).await?, None, &me);
    let side = minijinja::context! { case => side.case.to_string(), purpose => side.purpose };
    let ctx = minijinja::context! {
        side, in_case, members, writes, adds, participants => false, ..conversation(app, thread, query.add_refused).await?
    };
    Ok(app.render(session, "side.html", ctx)?.into_response())
}

#[derive(Deserialize)]
pub struct PurposeForm {
    purpose: String,
}

/// Opens a side thread of the case for a limited recipient, and goes to it.
pub async fn open_side(
    State(app): State<App>,
    Path(case): Path<String>,
    Form(form): Form<PurposeForm>,
) -> WebResult<Redirect> {
    let thread = case_id(&case)?;
    if form.purpose.trim().is_empty() {
        return Err(WebError::BadRequest("a side thread needs a purpose".into()));
    }
    Ok(to_case(app.desk.client.open_side_thread(thread, form.purpose.trim()).await?))
}

#[derive(Deserialize)]
pub struct TextForm {
    text: String,
}

/// Sends a message.
pub async fn send(State(app): State<App>, Path(case): Path<String>, Form(form): Form<TextForm>) -> WebResult<Redirect> {
    let thread = case_id(&case)?;
    if form.text.trim().is_empty() {
        return Err(WebError::BadRequest("empty message".into()));
    }
    app.desk.client.send_text(thread, form.text.trim()).await?;
    Ok(Redirect::to(&format!("/cases/{thread}#compose")))
}

#[derive(Deserialize)]
pub struct UploadQuery {
    name: String,
    #[serde(rename = "type")]
    media_type: Option<String>,
}

#[derive(Serialize)]
pub struct Uploaded {
    seq: u64,
    sha256: String,
    size: u64,
}

/// A file name without any path, or why it is not one.
fn file_name(name: &str) -> WebResult<String> {
    let name = name.trim();
    let bad = name.is_empty() || name.len() > 200 || name.contains(['/', '\\', '\0']) || name.starts_with('.');
    if bad {
        return Err(WebError::BadRequest(format!("{name:?} is not a file name")));
    }
    Ok(name.to_owned())
}

/// Encrypts and uploads an attachment (the browser sends the file's bytes as the body).
pub async fn upload(
    State(app): State<App>,
    Path(case): Path<String>,
    Query(query): Query<UploadQuery>,
    body: Bytes,
) -> WebResult<Json<Uploaded>> {
    let thread = case_id(&case)?;
    let name = file_name(&query.name)?;
    let media_type = query.media_type.filter(|t| !t.is_empty()).unwrap_or_else(|| "application/octet-stream".into());
    let attachment =
        app.desk.client.upload_attachment(thread, &name, &media_type, std::io::Cursor::new(body.to_vec())).await?;
    let sent = app.desk.client.send_content(thread, Content::Attachment(attachment.clone())).await?;
    Ok(Json(Uploaded { seq: sent.seq, sha256: attachment.sha256_hex(), size: attachment.size }))
}

/// Fetches, decrypts and verifies an attachment, and hands it to the browser with its verified hash.
pub async fn download(State(app): State<App>, Path((case, seq)): Path<(String, u64)>) -> WebResult<Response> {
    let thread = case_id(&case)?;
    let Some(entry) = app.desk.store.entry(thread, seq)? else { return Err(WebError::NotFound) };
    let Stored::Message(message) = entry.body else { return Err(WebError::NotFound) };
    let Content::Attachment(attachment) = message.content else { return Err(WebError::NotFound) };
    let dest = app.desk.files.join(format!("{}.verified", attachment.blob.0));
    let fetched = app.desk.client.fetch_attachment(thread, &attachment, &dest).await?;
    let bytes = tokio::fs::read(&fetched.path).await.map_err(|e| WebError::Other(e.to_string()))?;
    let _ = tokio::fs::remove_file(&fetched.path).await;
    let mut response = bytes.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    let ascii: String = attachment.name.chars().filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c)).collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{ascii}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&attachment.sha256_hex()) {
        h.insert("x-ketenhub-sha256", v);
    }
    Ok(response)
}

/// The family's own summary of the packet at `seq`, in plain Dutch and printable, made here from the
/// decrypted packet: the hub never sees it.
pub async fn family_summary(Path((case, seq)): Path<(String, u64)>, State(app): State<App>) -> WebResult<Response> {
    let thread = case_id(&case)?;
    let Some(entry) = app.desk.store.entry(thread, seq)? else { return Err(WebError::NotFound) };
    let Stored::Message(message) = entry.body else { return Err(WebError::NotFound) };
    let Content::HandoverPacket(packet) = message.content else { return Err(WebError::NotFound) };
    let today = Date::from_unix_ms(now_ms());
    Ok(Html(ketenhub_sdk::family::summary_html_linked(&packet, today, "/assets/family.css")).into_response())
}

/// What the offer form draws from the case's thread, read once: the attachments a packet may name,
/// and the latest handover packet this desk holds, sent or received, whose family and consents carry
/// over to the next handover so that the family is not asked again.
#[derive(Default)]
struct ThreadMaterial {
    attachments: Vec<AttachmentRef>,
    latest_packet: Option<ketenhub_sdk::HandoverPacket>,
}

fn thread_material(app: &App, thread: ThreadId) -> WebResult<ThreadMaterial> {
    let mut material = ThreadMaterial::default();
    for entry in app.desk.store.thread(thread)? {
        if let Stored::Message(message) = entry.body {
            match message.content {
                Content::Attachment(a) => material.attachments.push(AttachmentRef::to(&a, a.name.clone())),
                Content::HandoverPacket(packet) => material.latest_packet = Some(*packet),
                _ => {}
            }
        }
    }
    Ok(material)
}

/// What the offer form shows besides the values.
struct OfferPage<'a> {
    thread: ThreadId,
    values: &'a Values,
    errors: &'a [FieldError],
    preview: Option<serde_json::Value>,
}

fn render_offer(app: &App, session: &Session, page: OfferPage<'_>) -> WebResult<Response> {
    let say = |e: &FieldError| crate::i18n::problem(session.lang, &e.problem);
    let mut errs: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for e in page.errors {
        errs.entry(e.path.as_str()).or_default().push(say(e));
    }
    let rows: BTreeMap<&str, Vec<usize>> =
        packet_form::SECTIONS.iter().map(|s| (*s, (0..packet_form::rows(page.values, s)).collect())).collect();
    let errors: Vec<(String, String, String)> =
        page.errors.iter().map(|e| (e.path.clone(), packet_form::field_id(&e.path), say(e))).collect();
    let material = thread_material(app, page.thread)?;
    let ctx = minijinja::context! {
        case => page.thread.to_string(), v => page.values, errs, errors, rows, preview => page.preview,
        receivers => receivers(app), attachments => material.attachments,
        examples => app.desk.examples, page => "cases", earlier => material.latest_packet.is_some(),
    };
    let status =
        if page.errors.is_empty() { axum::http::StatusCode::OK } else { axum::http::StatusCode::UNPROCESSABLE_ENTITY };
    Ok((status, app.render(session, "offer.html", ctx)?).into_response())
}

/// The offer form with the packet, from the case's draft.
pub async fn offer_form(
    State(app): State<App>,
    Extension(session): Extension<Session>,
    Path(case): Path<String>,
) -> WebResult {
    let thread = case_id(&case)?;
    app.desk.client.ownership(thread).await?;
    let values = app.desk.store.draft(thread)?.unwrap_or_default();
    render_offer(&app, &session, OfferPage { thread, values: &values, errors: &[], preview: None })
}

/// The last millisecond of a day (UTC, as the hub's clocks count).
fn end_of_day(d: Date) -> u64 {
    d.unix_ms() + DAY_MS - 1
}

/// A deadline given as a date: the end of that day, if it is still to come.
fn future_deadline(text: &str) -> Option<u64> {
    text.trim().parse::<Date>().ok().map(end_of_day).filter(|d| *d > now_ms())
}

fn fail(errors: &mut Vec<FieldError>, path: &str, problem: Problem) {
    errors.push(FieldError::new(path, problem));
}

/// The offer the form asks for, with the frame of its packet, or the problems at their fields.
fn offer_request(app: &App, v: &Values, errors: &mut Vec<FieldError>) -> Option<(OfferRequest, Frame)> {
    let policy = &app.desk.policy;
    let receiver = v.get("receiver_oin").and_then(|oin| oin.parse().ok()).and_then(|oin| policy.organisation(&oin));
    let (route, basis) = v.get("route_basis").and_then(|rb| rb.split_once('|')).unwrap_or_default();
    let Some(receiver) = receiver else {
        fail(errors, "receiver_oin", Problem::NotChosen);
        return None;
    };
    let allowed = policy.route(route).is_some_and(|r| {
        r.from == app.desk.identity.kind && r.to == receiver.kind && r.legal_bases.iter().any(|b| b == basis)
    });
    if !allowed {
        fail(errors, "route_basis", Problem::NotAllowedForReceiver);
    }
    let justification = v.get("lawful_basis.justification").map(|j| j.trim().to_owned()).filter(|j| !j.is_empty());
    if needs_justification(app, basis) && justification.is_none() {
        fail(errors, "lawful_basis.justification", Problem::JustificationMissing);
    }
    let deadline_ms = v.get("deadline").and_then(|d| future_deadline(d));
    if deadline_ms.is_none() {
        fail(errors, "deadline", Problem::NotInFuture);
    }
    let worker = v.get("receiver.worker").map(|w| w.trim().to_owned()).filter(|w| !w.is_empty());
    let request = OfferRequest {
        to: receiver.oin.clone(),
        to_worker: worker,
        route: route.to_owned(),
        legal_basis: basis.to_owned(),
        reason: v.get("reason").map(|r| r.trim().to_owned()).unwrap_or_default(),
        justification,
        deadline_ms: deadline_ms.unwrap_or_default(),
    };
    let me = &app.desk.identity;
    let org = |oin: &wire::Oin, name: &str, kind| Organisation { oin: oin.clone(), name: name.to_owned(), kind };
    let frame = Frame {
        sender: Party { organisation: org(&me.oin, &me.organisation, me.kind), worker: me.worker.clone() },
        receiver: org(&receiver.oin, &receiver.name, receiver.kind),
        route: route.to_owned(),
        legal_basis: basis.to_owned(),
    };
    Some((request, frame))
}

/// The offer form's submission: add a row, preview, or offer the case with its packet.
pub async fn offer(
    State(app): State<App>,
    Extension(session): Extension<Session>,
    Path(case): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> WebResult {
    let thread = case_id(&case)?;
    let mut values: Values = form.into_iter().filter(|(k, _)| k != "_csrf" && k != "op").collect::<BTreeMap<_, _>>();
    let op = values.remove("op_value").unwrap_or_default();
    let op = if op.is_empty() { "preview".to_owned() } else { op };
    if op == "example" && app.desk.examples {
        values = crate::demo::example_draft(Date::from_unix_ms(now_ms()));
        app.desk.store.save_draft(thread, &values).await?;
        return render_offer(&app, &session, OfferPage { thread, values: &values, errors: &[], preview: None });
    }
    if op == "carry" {
        if let Some(earlier) = thread_material(&app, thread)?.latest_packet {
            packet_form::carry(&mut values, &earlier, Date::from_unix_ms(now_ms()));
        }
        app.desk.store.save_draft(thread, &values).await?;
        return render_offer(&app, &session, OfferPage { thread, values: &values, errors: &[], preview: None });
    }
    if let Some(section) = op.strip_prefix("add:") {
        if packet_form::SECTIONS.contains(&section) {
            packet_form::add_row(&mut values, section);
        }
        app.desk.store.save_draft(thread, &values).await?;
        return render_offer(&app, &session, OfferPage { thread, values: &values, errors: &[], preview: None });
    }
    app.desk.store.save_draft(thread, &values).await?;
    let mut errors = Vec::new();
    let today = Date::from_unix_ms(now_ms());
    let built = offer_request(&app, &values, &mut errors).map(|(request, frame)| {
        let packet = thread_material(&app, thread).map(|m| packet_form::packet(&values, &frame, &m.attachments));
        (request, packet)
    });
    let (request, packet) = match built {
        Some((request, Ok(Ok(packet)))) => {
            if let Err(problems) = packet.validate(today) {
                errors.extend(problems.0);
            }
            (Some(request), Some(packet))
        }
        Some((_, Ok(Err(problems)))) => {
            errors.extend(problems);
            (None, None)
        }
        Some((_, Err(e))) => return Err(e),
        None => (None, None),
    };
    let preview = packet.as_ref().and_then(|p| serde_json::to_value(p).ok());
    let (Some(request), Some(packet), true, "send") = (request, packet, errors.is_empty(), op.as_str()) else {
        return render_offer(&app, &session, OfferPage { thread, values: &values, errors: &errors, preview });
    };
    let pending = PendingPacket { reason: request.reason.clone(), legal_basis: request.legal_basis.clone(), packet };
    let ownership = app.desk.client.offer_handover(thread, request).await?;
    if let Some(made) = ownership.offers.last() {
        app.desk.store.put_pending(thread, made.id, &pending).await?;
    }
    Ok(to_case(thread).into_response())
}

/// Accepts an offer: this worker joins the case; the sender's device then adds it and sends the packet.
pub async fn accept(State(app): State<App>, Path((case, offer)): Path<(String, u32)>) -> WebResult<Redirect> {
    let thread = case_id(&case)?;
    app.desk.client.accept_offer(thread, offer).await?;
    Ok(to_case(thread))
}

#[derive(Deserialize)]
pub struct ReasonForm {
    reason: String,
}

fn reason(text: &str) -> WebResult<&str> {
    let reason = text.trim();
    if reason.is_empty() {
        return Err(WebError::BadRequest("a reason is required".into()));
    }
    Ok(reason)
}

#[derive(Deserialize)]
pub struct CloseForm {
    outcome: String,
    reason: String,
}

/// The owner closes the case with an outcome from the policy and a reason.
pub async fn close(
    State(app): State<App>,
    Path(case): Path<String>,
    Form(form): Form<CloseForm>,
) -> WebResult<Redirect> {
    let thread = case_id(&case)?;
    app.desk.client.close_case(thread, form.outcome.trim(), reason(&form.reason)?).await?;
    Ok(to_case(thread))
}

/// The earlier messages this desk holds that may be shared again: every message but a share.
fn shareable(app: &App, thread: ThreadId) -> WebResult<Vec<SharedItem>> {
    let entries = app.desk.store.thread(thread)?;
    Ok(entries
        .iter()
        .filter_map(|e| match &e.body {
            Stored::Message(m) if !matches!(m.content, Content::HistoryShare(_)) => Some(SharedItem::of(m)),
            _ => None,
        })
        .collect())
}

/// The share page: `items` to choose from, and whom a share just made reached.
fn render_share(
    app: &App,
    session: &Session,
    thread: ThreadId,
    (items, shared): (&[SharedItem], Option<Vec<views::Who>>),
) -> WebResult {
    let me = app.desk.client.member_id();
    let items: Vec<_> = items.iter().map(|i| views::shared(&app.desk.policy, i, &me)).collect();
    let ctx = minijinja::context! { case_id => thread.to_string(), items, shared, page => "cases" };
    Ok(app.render(session, "share.html", ctx)?.into_response())
}

/// The case's earlier messages, to choose which to share again with members who joined after them.
pub async fn share_form(
    State(app): State<App>,
    Extension(session): Extension<Session>,
    Path(case): Path<String>,
) -> WebResult {
    let thread = case_id(&case)?;
    render_share(&app, &session, thread, (&shareable(&app, thread)?, None))
}

/// Shares the chosen messages again (a history share: the hub audits which, to whom), and says with whom.
pub async fn share(
    State(app): State<App>,
    Extension(session): Extension<Session>,
    Path(case): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> WebResult {
    let thread = case_id(&case)?;
    let chosen: Vec<u64> = fields.iter().filter(|(k, _)| k == "seq").filter_map(|(_, v)| v.parse().ok()).collect();
    let all = shareable(&app, thread)?;
    let items: Vec<SharedItem> = all.iter().filter(|i| chosen.contains(&i.seq)).cloned().collect();
    if items.is_empty() {
        return Err(WebError::BadRequest("choose one or more messages to share".into()));
    }
    let (_, recipients) = app.desk.client.share_history(thread, items).await?;
    let me = app.desk.client.member_id();
    let shared = recipients.iter().map(|r| views::who(&app.desk.policy, r, &me)).collect();
    render_share(&app, &session, thread, (&all, Some(shared)))
}

#[derive(Deserialize)]
pub struct ReassignForm {
    worker: String,
    reason: String,
    legal_basis: String,
    #[serde(default)]
    justification: String,
    deadline: String,
}

/// The owner offers the case to a colleague of its own organisation (a reassignment: no packet,
/// since the case stays within the organisation's files). A refusal is shown at the form.
pub async fn reassign(
    State(app): State<App>,
    Path(case): Path<String>,
    Form(form): Form<ReassignForm>,
) -> WebResult<Redirect> {
    let thread = case_id(&case)?;
    let deadline_ms =
        future_deadline(&form.deadline).ok_or_else(|| WebError::BadRequest("give a deadline in the future".into()))?;
    let justification = Some(form.justification.trim().to_owned()).filter(|j| !j.is_empty());
    let request = OfferRequest {
        to: app.desk.identity.oin.clone(),
        to_worker: Some(form.worker.trim().to_owned()),
        route: wire::handover::REASSIGNMENT_ROUTE.into(),
        legal_basis: form.legal_basis.trim().to_owned(),
        reason: reason(&form.reason)?.to_owned(),
        justification,
        deadline_ms,
    };
    refusal_at(thread, "reassign", app.desk.client.offer_handover(thread, request).await.map(drop))
}

#[derive(Deserialize)]
pub struct TakeOverForm {
    case: String,
    reason: String,
}

/// A team lead takes over a case of its organisation whose owner is away; the
/// lead need not be on the case, so the case is named by its id.
pub async fn take_over(State(app): State<App>, Form(form): Form<TakeOverForm>) -> WebResult<Redirect> {
    let thread = case_id(form.case.trim())?;
    app.desk.client.take_over(thread, reason(&form.reason)?).await?;
    Ok(to_case(thread))
}

/// The owner reopens a closed case within its period, with a reason.
pub async fn reopen(
    State(app): State<App>,
    Path(case): Path<String>,
    Form(form): Form<ReasonForm>,
) -> WebResult<Redirect> {
    let thread = case_id(&case)?;
    app.desk.client.reopen_case(thread, reason(&form.reason)?).await?;
    Ok(to_case(thread))
}

/// Declines an offer with a reason.
pub async fn decline(
    State(app): State<App>,
    Path((case, offer)): Path<(String, u32)>,
    Form(form): Form<ReasonForm>,
) -> WebResult<Redirect> {
    let thread = case_id(&case)?;
    app.desk.client.decline_offer(thread, offer, reason(&form.reason)?).await?;
    Ok(Redirect::to("/offers"))
}

/// Calls off an offer with a reason: `withdraw` one this worker sent and
/// nobody answered yet, or `cancel` one accepted but not completed (the sender
/// stays owner).
pub async fn call_off(
    State(app): State<App>,
    Path((case, offer, step)): Path<(String, u32, String)>,
    Form(form): Form<ReasonForm>,
) -> WebResult<Redirect> {
    let thread = case_id(&case)?;
    let client = &app.desk.client;
    match step.as_str() {
        "withdraw" => client.withdraw_offer(thread, offer, reason(&form.reason)?).await?,
        "cancel" => client.cancel_offer(thread, offer, reason(&form.reason)?).await?,
        _ => return Err(WebError::NotFound),
    };
    Ok(Redirect::to(&format!("/cases/{case}")))
}

#[derive(Deserialize)]
pub struct CompleteForm {
    family_told: String,
    reason: Option<String>,
}

/// Completes an accepted handover: this worker takes regie.
pub async fn complete(
    State(app): State<App>,
    Path((case, offer)): Path<(String, u32)>,
    Form(form): Form<CompleteForm>,
) -> WebResult<Redirect> {
    let thread = case_id(&case)?;
    let family = match form.family_told.as_str() {
        "yes" => FamilyTold::Yes,
        _ => FamilyTold::No { reason: form.reason.unwrap_or_default().trim().to_owned() },
    };
    if matches!(&family, FamilyTold::No { reason } if reason.is_empty()) {
        return Err(WebError::BadRequest("say why the family was not told".into()));
    }
    app.desk.client.complete_handover(thread, offer, family).await?;
    Ok(to_case(thread))
}

/// Leaves a case from the background role, with a reason.
pub async fn leave(
    State(app): State<App>,
    Path(case): Path<String>,
    Form(form): Form<ReasonForm>,
) -> WebResult<Redirect> {
    let thread = case_id(&case)?;
    app.desk.client.leave_case(thread, reason(&form.reason)?).await?;
    Ok(Redirect::to("/cases"))
}

#[derive(Deserialize)]
pub struct AddForm {
    oin: String,
    worker: String,
    reason: String,
    legal_basis: String,
    /// `member` (no end), `consultant` or `co_worker`.
    #[serde(default)]
    role: String,
    /// A participant's last day, `YYYY-MM-DD`.
    #[serde(default)]
    until: String,
}

/// The participation the add form asks for: none for a full member, else a role and its end (the last ms of its last day).
fn participation(form: &AddForm) -> WebResult<Option<(ParticipantRole, u64)>> {
    if matches!(form.role.as_str(), "" | "member") {
        return Ok(None);
    }
    let role =
        views::participant_role(&form.role).ok_or_else(|| WebError::BadRequest(format!("no role {:?}", form.role)))?;
    let last_day =
        super::day_ms(&form.until)?.ok_or_else(|| WebError::BadRequest("a participant needs an end date".into()))?;
    Ok(Some((role, last_day + wire::calendar::DAY_MS - 1)))
}

/// Brings someone into the case, as a full member or a participant until an
/// end date; a refusal is shown on the case with the rule that decided it.
pub async fn add(State(app): State<App>, Path(case): Path<String>, Form(form): Form<AddForm>) -> WebResult<Redirect> {
    let thread = case_id(&case)?;
    let member = MemberId::new(form.oin.trim(), form.worker.trim())
        .map_err(|e| WebError::BadRequest(format!("not a member: {e}")))?;
    let grounds = Grounds::new(form.reason.trim(), form.legal_basis.trim());
    let added = match participation(&form)? {
        None => app.desk.client.add_member(thread, member, &grounds).await.map(drop),
        Some(terms) => app.desk.client.add_participant(thread, member, terms, &grounds).await.map(drop),
    };
    refusal_at(thread, "add", added)
}

/// Back to the case after a step its form names (`add`, `reassign`): a refusal by the hub (not an
/// unknown case) is shown at that form with its rule, through the page's `FORM_refused` parameter.
fn refusal_at(thread: ThreadId, form: &str, done: Result<(), ketenhub_sdk::Error>) -> WebResult<Redirect> {
    match done {
        Ok(()) => Ok(to_case(thread)),
        Err(ketenhub_sdk::Error::Hub(e)) if !matches!(e.code, ketenhub_sdk::ErrorCode::NotFound) => {
            Ok(Redirect::to(&format!("/cases/{thread}?{form}_refused={}#{form}", url_encode(&e.message))))
        }
        Err(e) => Err(e.into()),
    }
}

fn url_encode(text: &str) -> String {
    serde_urlencoded::to_string([("x", text)]).map(|s| s[2..].to_owned()).unwrap_or_default()
}

/// Reports a clock's work done (the first face-to-face contact, the safety plan).
pub async fn clock_done(State(app): State<App>, Path((case, clock)): Path<(String, String)>) -> WebResult<Redirect> {
    let thread = case_id(&case)?;
    let kind = views::clock_kind(&clock).ok_or(WebError::NotFound)?;
    app.desk.client.report_done(thread, kind).await?;
    Ok(to_case(thread))
}
