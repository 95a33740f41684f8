//! Conformance: `PROTOCOL.md` is the protocol.
//!
//! The CDDL is read out of `PROTOCOL.md` itself (its ```` ```cddl ```` block)
//! and every frame of a scenario that exercises nearly every frame kind
//! against a real hub is validated against it with the `cddl` crate: each
//! client frame the SDK sends as `client-frame`, each hub frame it receives as
//! `hub-frame`, bytes as they were on the wire (through the SDK's frame tap).
//! A frame kind or field the document lacks fails here, so the document
//! cannot drift from the code again. The negative tests check the other
//! direction: what the document calls malformed, the hub answers `malformed`,
//! naming the request when its `id` could be read.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cddl::validator::{cbor::CBORValidator, Validator};
use ciborium::Value;
use ketenhub_sdk::raw::{Direction, FrameTap, RawConnection, RawIncoming};
use ketenhub_sdk::{Client, ClockKind, FamilyTold, Grounds, OfferRequest, ParticipantRole};
use tests::{messages, next_event, refusal_rule, DevHub};
use wire::{ClientFrame, ErrorCode, HubFrame, RequestId, ThreadId};

const WAIT: Duration = Duration::from_secs(20);
const DAY_MS: u64 = 24 * 3_600_000;

/// The ```` ```cddl ```` block of `PROTOCOL.md`.
fn protocol_cddl() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../PROTOCOL.md");
    let text = std::fs::read_to_string(path).expect("PROTOCOL.md is readable");
    let start = text.find("```cddl\n").expect("PROTOCOL.md has a ```cddl block") + "```cddl\n".len();
    let end = start + text[start..].find("\n```").expect("the cddl block ends");
    text[start..end].to_owned()
}

/// The document with `root` as its first rule, which is what the validator starts from.
fn rooted(root: &str) -> String {
    format!("conformance-root = {root}\n{}", protocol_cddl())
}

/// Validates one frame's bytes against `root` of the document; the reason if it does not conform.
fn conforms(document: &str, bytes: &[u8]) -> Result<(), String> {
    let cddl = cddl::cddl_from_str(document, false).map_err(|e| format!("PROTOCOL.md's CDDL does not parse: {e}"))?;
    let value = cddl::validator::cbor_value::decode_cbor(bytes).map_err(|e| format!("not CBOR: {e}"))?;
    let mut validator = CBORValidator::new(&cddl, value, None);
    let result: Result<(), cddl::validator::cbor::Error<std::io::Error>> = validator.validate();
    result.map_err(|e| e.to_string())
}

/// A frame as the tap saw it: which way, and its bytes.
type Seen = (Direction, Vec<u8>);

/// Every frame a set of clients sent and received.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Seen>>>);

impl Recorder {
    fn tap(&self) -> FrameTap {
        let frames = self.0.clone();
        FrameTap::new(move |direction, bytes| frames.lock().unwrap().push((direction, bytes.to_vec())))
    }

    fn frames(&self) -> Vec<(Direction, Vec<u8>)> {
        self.0.lock().unwrap().clone()
    }
}

/// The frame kinds in `frames`: `type`, request `op`s (inside `on_behalf_of`
/// too), reply and entry `kind`s, handover `step`s and error codes, so that the
/// scenario can prove what it covered.
fn kinds(frames: &[(Direction, Vec<u8>)]) -> BTreeSet<String> {
    fn text<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
        map.as_map()?.iter().find(|(k, _)| k.as_text() == Some(key)).map(|(_, v)| v)
    }
    fn walk(value: &Value, out: &mut BTreeSet<String>) {
        match value {
            Value::Map(entries) => {
                for (key, v) in entries {
                    if let (Some(key), Some(name)) = (key.as_text(), v.as_text()) {
                        if matches!(key, "type" | "op" | "kind" | "step" | "code" | "action") {
                            out.insert(format!("{key}:{name}"));
                        }
                    }
                    walk(v, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    for (_, bytes) in frames {
        let value: Value = ciborium::from_reader(&bytes[..]).expect("recorded frames are CBOR");
        walk(&value, &mut out);
        if let Some(Value::Map(_)) = text(&value, "result") {
            out.insert("result".into());
        }
    }
    out
}

fn offer(to: &Client, basis: &str, deadline_ms: u64) -> OfferRequest {
    OfferRequest { to: to.identity().oin.clone(), legal_basis: basis.into(), ..tests::referral_to_lt(deadline_ms) }
}

#[tokio::test]
async fn every_frame_of_a_full_scenario_matches_the_cddl_in_protocol_md() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let recorder = Recorder::default();
    let connect = |slug: &str| hub.client(slug).frame_tap(recorder.tap()).connect();
    let vt = connect("vt-utrecht-caseworker").await?;
    let lt = connect("lt-woerden-caseworker").await?;
    let mut lt_events = lt.events().unwrap();
    let mut vt_events = vt.events().unwrap();
    let audit_key = hub::audit::chain::AuditKey::load(&hub::server::audit_key_path(hub.data_dir()))?.public_key();
    let officer =
        hub.client("vt-utrecht-privacy").frame_tap(recorder.tap()).audit_public_key(audit_key).connect().await?;
    let system = connect("vt-utrecht-system").await?;
    let lead = connect("vt-utrecht-teamlead").await?;
    let school = connect("school-mentor").await?;
    // LT's case system receives LT's inbox: the offers below name no worker.
    let lt_system = connect("lt-woerden-system").await?;
    let mut lt_inbox = lt_system.events().unwrap();

    // A case, a message, a handover offer, accepted; the receiver joins the MLS group.
    let thread = vt.create_thread().await?;
    vt.send_text(thread, "Melding: zorgen over de veiligheid.").await?;
    let deadline = hub::clock::now_ms() + 2 * DAY_MS;
    let id = vt.offer_handover(thread, offer(&lt, "consent", deadline)).await?.offers[0].id;
    assert_eq!(lt.pending_offers().await?.len(), 1);
    next_event(&mut lt_inbox, WAIT, |e| matches!(e, ketenhub_sdk::Event::Notice { .. })).await?;
    lt.accept_offer(thread, id).await?;
    vt.add_member(thread, lt.member_id(), &Grounds::new("accepted handover", "consent")).await?;
    vt.send_text(thread, "welkom").await?;
    let report = dir.path().join("rapportage.pdf");
    tests::write_random_file(&report, 300_000, 3)?;
    vt.send_attachment(thread, &report, "application/pdf").await?;
    let got = messages(&mut lt_events, 2, WAIT).await?;
    let ketenhub_sdk::Content::Attachment(attachment) = &got[1].content else { panic!("expected the attachment") };
    lt.fetch_attachment(thread, attachment, dir.path().join("ontvangen.pdf")).await?;
    lt.ack(thread, got[1].seq).await?;
    lt.threads().await?;
    lt.members(thread).await?;

    // Completion, the former owner's background role and leaving, clocks.
    lt.complete_handover(thread, id, FamilyTold::No { reason: "not reached yet".into() }).await?;
    assert_eq!(refusal_rule(vt.send_text(thread, "one more thing").await), "background-read-only");
    vt.leave_case(thread, "LT has regie").await?;
    lt.schedule_rappel(thread).await?;
    lt.report_done(thread, ClockKind::Rappel).await?;
    let now = hub::clock::now_ms();
    lt.set_measure(thread, ketenhub_sdk::Measure { start_ms: now, end_ms: now + 180 * DAY_MS }).await?;
    lt.schedule_evaluation(thread, now + 30 * DAY_MS).await?;
    let table = vec![ketenhub_sdk::Invitation { member: vt.member_id(), reason: "knows the report".into() }];
    lt.call_conference(thread, ("safety at home", now + 2 * DAY_MS), table, "consent").await?;
    let decision =
        ketenhub_sdk::RegieDecision { regie_with: lt.identity().oin.clone(), reason: "voluntary help".into() };
    lt.record_decision(thread, 1, decision).await?;
    lt.ownership(thread).await?;
    let earlier = ketenhub_sdk::SharedItem::of(&got[0]);
    lt.share_history(thread, vec![earlier]).await?;
    lt.close_case(thread, "safe-at-home", "the family is safe").await?;
    assert_eq!(refusal_rule(lt.send_text(thread, "after closing").await), "case-closed");
    lt.reopen_case(thread, "a new report").await?;

    // A declined offer on a second case.
    let second = vt.create_thread().await?;
    let declined = vt.offer_handover(second, offer(&lt, "consent", deadline)).await?.offers[0].id;
    lt.decline_offer(second, declined, "not our region").await?;
    next_event(&mut vt_events, WAIT, |e| {
        matches!(e, ketenhub_sdk::Event::Handover { event: ketenhub_sdk::HandoverEvent::Declined { .. }, .. })
    })
    .await?;
    // On the same case: an offer withdrawn, then one accepted and cancelled; then a team lead takes over.
    let without_consent =
        OfferRequest { justification: Some("acute risk".into()), ..offer(&lt, "vt-safety", deadline + 1) };
    let withdrawn = vt.offer_handover(second, without_consent).await?.offers[1].id;
    vt.withdraw_offer(second, withdrawn, "sent to the wrong team").await?;
    let cancelled = vt.offer_handover(second, offer(&lt, "consent", deadline + 2)).await?.offers[2].id;
    lt.accept_offer(second, cancelled).await?;
    lt.cancel_offer(second, cancelled, "the family moved").await?;
    let until = hub::clock::now_ms() + 7 * DAY_MS;
    let advice = Grounds::new("advice on the family's network", "consent");
    vt.add_participant(second, lt.member_id(), (ParticipantRole::Consultant, until), &advice).await?;
    // A side thread for the school, which follows regie when the team lead takes over.
    let side = vt.open_side_thread(second, "attendance").await?;
    vt.add_member(side, school.member_id(), &Grounds::new("attendance question", "consent")).await?;
    school.send_text(side, "Three absences this month.").await?;
    assert!(school.threads().await?.iter().any(|t| t.side.as_ref().is_some_and(|s| s.case == second)));
    lead.take_over(second, "the owner is on sick leave").await?;
    vt.follow_owner(second).await?;

    // Refusals of several codes, a system acting for its worker, the privacy officer.
    assert_eq!(refusal_rule(lt.members(ThreadId::random()).await), "NotFound");
    assert_eq!(refusal_rule(lt.complete_handover(thread, id, FamilyTold::Yes).await), "Conflict");
    assert_eq!(refusal_rule(lt.leave_case(thread, "the owner does not leave this way").await), "Invalid");
    assert_eq!(refusal_rule(system.create_thread().await), "system-names-worker");
    system.on_behalf_of("anna.devries").threads().await?;
    assert!(!lt.delivery(thread).await?.is_empty());
    officer.pending_offers().await?;
    let audit = officer.audit_query(wire::audit::AuditFilter { case: Some(thread), ..Default::default() }).await?;
    assert!(!audit.is_empty());
    let handovers = wire::audit::AuditFilter { action: Some(wire::audit::AuditAction::Handover), ..Default::default() };
    let handovers = officer.audit_query(handovers).await?;
    let queue = ketenhub_sdk::report::review_queue(&handovers, &officer.identity().oin, |b| b == "vt-safety");
    let share = queue.first().ok_or_else(|| anyhow::anyhow!("no share to review"))?;
    officer.mark_reviewed(share.share.seq, "justified").await?;
    officer.witness_audit().await?;
    let today = ketenhub_sdk::packet::Date::from_unix_ms(hub::clock::now_ms());
    let figures = officer.chain_figures(today.add_days(-1), today.add_days(30)).await?;
    assert!(figures.figures.iter().any(|f| f.cells.iter().any(|c| c.suppressed())), "a small history is suppressed");
    for client in [&vt, &lt, &officer, &system, &lead, &school, &lt_system] {
        client.close().await;
    }
    hub.stop().await?;

    let frames = recorder.frames();
    let (client_doc, hub_doc) = (rooted("client-frame"), rooted("hub-frame"));
    let failures: Vec<String> = frames
        .iter()
        .filter_map(|(direction, bytes)| {
            let document = if *direction == Direction::Sent { &client_doc } else { &hub_doc };
            conforms(document, bytes).err().map(|why| {
                let value: Value = ciborium::from_reader(&bytes[..]).expect("CBOR");
                format!("{direction:?} frame does not match PROTOCOL.md: {why}\n  frame: {value:?}")
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} frames do not conform:\n{}",
        failures.len(),
        frames.len(),
        failures.join("\n")
    );

    // The scenario really covered what it claims, so the check above cannot pass on a thin run.
    let seen = kinds(&frames);
    let expected = [
        "type:hello",
        "type:reply",
        "type:event",
        "type:request",
        "type:ack",
        "op:create_thread",
        "op:open_side_thread",
        "op:send",
        "op:add_member",
        "op:list_threads",
        "op:list_members",
        "op:delivery_status",
        "kind:delivery",
        "op:init_group",
        "op:commit",
        "op:upload_key_packages",
        "op:claim_key_package",
        "op:put_blob_chunk",
        "op:get_blob_chunk",
        "op:on_behalf_of",
        "op:audit_query",
        "op:audit_head",
        "op:mark_reviewed",
        "kind:reviewed",
        "op:chain_figures",
        "kind:chain_figures",
        "op:offer_handover",
        "op:answer_offer",
        "op:complete_handover",
        "op:report_done",
        "op:schedule_rappel",
        "op:leave_case",
        "op:withdraw_offer",
        "op:cancel_offer",
        "op:take_over",
        "op:add_participant",
        "op:close_case",
        "op:record_history_share",
        "kind:history_share_recorded",
        "op:reopen_case",
        "op:set_measure",
        "op:schedule_evaluation",
        "op:call_conference",
        "op:record_decision",
        "op:get_ownership",
        "op:list_offers",
        "kind:thread_created",
        "kind:member_added",
        "kind:sent",
        "kind:threads",
        "kind:members",
        "kind:group_ready",
        "kind:commit_accepted",
        "kind:key_packages_stored",
        "kind:key_package",
        "kind:blob_chunk_stored",
        "kind:blob_chunk",
        "kind:audit_entries",
        "kind:audit_head",
        "kind:ownership",
        "kind:offers",
        "kind:message",
        "kind:handover",
        "kind:commit",
        "kind:welcome",
        "kind:notice",
        "step:offered",
        "step:accepted",
        "step:declined",
        "step:completed",
        "step:left",
        "step:scheduled",
        "step:done",
        "step:withdrawn",
        "step:cancelled",
        "step:taken_over",
        "step:engaged",
        "step:closed",
        "step:reopened",
        "step:measure_set",
        "step:evaluation_scheduled",
        "step:conference_called",
        "step:decided",
        "code:forbidden",
        "code:not_found",
        "code:invalid",
        "code:conflict",
        "action:handover",
    ];
    let missing: Vec<&str> = expected.iter().copied().filter(|k| !seen.contains(*k)).collect();
    assert!(missing.is_empty(), "the scenario did not exercise {missing:?}");
    Ok(())
}

/// Sends `bytes` and returns the hub's answer to them: the reply or error frame.
async fn answer(raw: &mut RawConnection, bytes: Vec<u8>) -> anyhow::Result<HubFrame> {
    raw.send_bytes(bytes).await?;
    loop {
        match tokio::time::timeout(WAIT, raw.next()).await?? {
            RawIncoming::Frame(frame @ (HubFrame::Reply { .. } | HubFrame::Error { .. })) => return Ok(frame),
            RawIncoming::Frame(_) => {}
            other => anyhow::bail!("connection ended: {other:?}"),
        }
    }
}

/// Checks that the answer is `malformed`, for request `id` when one was readable,
/// and that the answer itself conforms to the document.
fn assert_malformed(answer: &HubFrame, id: Option<RequestId>, what: &str) {
    let error = match (answer, id) {
        (HubFrame::Reply { id: got, result: Err(error) }, Some(id)) if *got == id => error,
        (HubFrame::Error { error }, None) => error,
        other => panic!("{what}: expected malformed for id {id:?}, got {other:?}"),
    };
    assert_eq!(error.code, ErrorCode::Malformed, "{what}: {error:?}");
    conforms(&rooted("hub-frame"), &wire::encode(answer)).unwrap_or_else(|e| panic!("{what}: {e}"));
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn request(id: u64, request: Value) -> Value {
    Value::Map(vec![
        (text("type"), text("request")),
        (text("id"), Value::Integer(id.into())),
        (text("request"), request),
    ])
}

fn list_members(thread: Value) -> Value {
    Value::Map(vec![(text("op"), text("list_members")), (text("thread"), thread)])
}

#[tokio::test]
async fn what_the_document_calls_malformed_is_answered_malformed_with_the_id() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    let mut raw = hub.client("vt-utrecht-caseworker").connect_raw().await?;
    let id_bytes = Value::Bytes(thread.0.as_bytes().to_vec());
    let client_doc = rooted("client-frame");

    // The canonical frame is answered, and conforms: the negative cases below differ from it in one thing each.
    let good = request(1, list_members(id_bytes.clone()));
    conforms(&client_doc, &wire::encode(&good)).map_err(anyhow::Error::msg)?;
    assert!(matches!(answer(&mut raw, wire::encode(&good)).await?, HubFrame::Reply { id: 1, result: Ok(_) }));

    let Value::Map(mut extra) = request(2, list_members(id_bytes.clone())) else { unreachable!() };
    extra.push((text("priority"), Value::Integer(1.into())));
    let mut cases = vec![(Value::Map(extra), Some(2), "an extra key in the frame".to_owned())];
    let Value::Map(mut inner) = list_members(id_bytes.clone()) else { unreachable!() };
    inner.push((text("reason"), text("curious")));
    cases.push((request(3, Value::Map(inner)), Some(3), "an extra key in the request".into()));
    let as_array = Value::Array(vec![text("list_members"), id_bytes.clone()]);
    cases.push((request(4, as_array), Some(4), "an array in place of the request map".into()));
    let whole = Value::Array(vec![text("request"), Value::Integer(5.into()), list_members(id_bytes.clone())]);
    cases.push((whole, None, "an array in place of the frame map".into()));
    for (n, spelling) in
        [thread.0.simple().to_string(), thread.0.to_string(), thread.0.urn().to_string()].into_iter().enumerate()
    {
        cases.push((request(10 + n as u64, list_members(text(&spelling))), Some(10 + n as u64), spelling));
    }
    for (frame, id, what) in cases {
        let bytes = wire::encode(&frame);
        assert!(conforms(&client_doc, &bytes).is_err(), "the document itself accepts {what}");
        assert_malformed(&answer(&mut raw, bytes).await?, id, &what);
    }
    hub.stop().await
}

#[tokio::test]
async fn replies_to_pipelined_requests_are_paired_by_id_even_when_one_is_malformed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let mut raw = hub.client("lt-woerden-caseworker").connect_raw().await?;
    let list = ClientFrame::Request { id: 21, request: wire::Request::ListThreads };
    raw.send_frame(&list).await?;
    raw.send_bytes(wire::encode(&request(22, list_members(text("not-a-uuid"))))).await?;
    raw.send_frame(&ClientFrame::Request { id: 23, request: wire::Request::ListOffers }).await?;
    let mut answered = BTreeSet::new();
    while answered.len() < 3 {
        if let RawIncoming::Frame(HubFrame::Reply { id, result }) = tokio::time::timeout(WAIT, raw.next()).await?? {
            assert_eq!(result.is_err(), id == 22, "reply {id}: {result:?}");
            answered.insert(id);
        }
    }
    assert_eq!(answered, BTreeSet::from([21, 22, 23]));
    hub.stop().await
}

#[tokio::test]
async fn hello_announces_every_limit_a_client_needs() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let limits = hub::config::Limits { frames_burst: 3_000, max_blob_bytes: 5 << 20, ..tests::limits() };
    let hub = DevHub::start(dir.path(), limits.clone()).await?;
    let raw = hub.client("lt-woerden-caseworker").connect_raw().await?;
    let announced = &raw.hello().limits;
    assert_eq!(announced.max_frame_bytes, limits.max_frame_bytes as u64);
    assert_eq!(announced.frames_per_second, limits.frames_per_second);
    assert_eq!(announced.frames_burst, 3_000);
    assert_eq!(announced.max_blob_bytes, 5 << 20);
    assert!(announced.max_hub_frame_bytes > announced.max_frame_bytes, "a hub frame wraps a client payload");
    conforms(&rooted("hub-frame"), &wire::encode(&HubFrame::Hello(raw.hello().clone()))).map_err(anyhow::Error::msg)?;
    hub.stop().await
}
