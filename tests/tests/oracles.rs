//! No request tells an outsider whether a case, an offer or a blob exists.
//!
//! For every thread-, offer- and blob-scoped request kind, an outsider aims it
//! at a real case (with an open offer and a sealed blob) and at random ids, and
//! the two encoded replies must be byte-identical apart from the request id.
//! [`probes`] matches on every [`Request`] variant with no wildcard arm, so a new
//! request kind does not compile until it is in the table.

use std::collections::HashSet;
use std::mem::discriminant;
use std::time::Duration;

use anyhow::bail;
use ketenhub_sdk::raw::{RawConnection, RawIncoming};
use ketenhub_sdk::{ClockKind, FamilyTold, OfferRequest, Participant, ParticipantRole};
use tests::DevHub;
use wire::audit::AuditFilter;
use wire::{BlobId, ClientFrame, HubFrame, MemberId, MessageId, Reply, Request, ThreadId, WireError};

/// Request kinds in [`wire::Request`]; [`every_kind`] holds one of each.
const KINDS: usize = 39;

/// What a probe is aimed at.
#[derive(Clone, Copy)]
struct Target {
    thread: ThreadId,
    offer: u32,
    blob: BlobId,
    /// An audit entry: at the real case, its offer's (which shares without consent).
    entry: u64,
}

/// Who sends a probe: each kind goes out from an outsider whose role may send it,
/// so that the policy's role check does not hide what membership would reveal.
#[derive(Clone, Copy, Debug)]
enum Who {
    /// A caseworker of an organisation not on the case.
    Caseworker,
    /// A system identity acting for a worker of its organisation, which is not on the case.
    System,
    /// A privacy officer of an organisation not on the case.
    Officer,
}

fn member_of_lt() -> MemberId {
    MemberId { oin: "00000001800000000002".parse().unwrap(), worker: "sanne.bakker".into() }
}

/// One request of every kind; [`probes`] aims each at a target.
fn every_kind() -> Vec<Request> {
    let t = ThreadId::random();
    // Someone of no organisation the officer's scope covers, and a VT worker the VT system acts for.
    let member = member_of_lt();
    let colleague = MemberId { oin: "00000001800000000001".parse().unwrap(), worker: "anna.devries".into() };
    let offer = OfferRequest {
        to: "00000001800000000002".parse().unwrap(),
        to_worker: None,
        route: "gi-lt-step-down".into(),
        legal_basis: "consent".into(),
        reason: "the measure ended".into(),
        justification: None,
        deadline_ms: u64::MAX / 2,
    };
    vec![
        Request::CreateThread { client_ref: uuid::Uuid::new_v4() },
        Request::OpenSideThread { case: t, client_ref: uuid::Uuid::new_v4(), purpose: "school attendance".into() },
        Request::AddMember { thread: t, member: member.clone(), reason: "r".into(), legal_basis: "consent".into() },
        Request::Send { thread: t, message: MessageId::new(), payload: vec![1, 2, 3] },
        Request::ListThreads,
        Request::ListMembers { thread: t },
        Request::DeliveryStatus { thread: t },
        Request::InitGroup { thread: t, group_info: vec![1], ratchet_tree: vec![2] },
        Request::Commit { thread: t, commit: vec![3], welcome: None, group_info: None },
        Request::GroupInfo { thread: t },
        Request::Rejoin { thread: t, commit: vec![4], group_info: vec![5] },
        Request::UploadKeyPackages { key_packages: Vec::new() },
        Request::ClaimKeyPackage { thread: t, member },
        Request::PutBlobChunk { thread: t, blob: BlobId::random(), index: 0, last: true, data: vec![0; 32] },
        Request::GetBlobChunk { thread: t, blob: BlobId::random(), index: 0 },
        // After the system identity's refused probes, which name the case for VT's people: a refused
        // request never brings a case into the officer's scope, so this stays refused.
        Request::OnBehalfOf { member: colleague, request: Box::new(Request::ListMembers { thread: t }) },
        Request::OfferHandover { thread: t, offer },
        Request::AnswerOffer { thread: t, offer: 1, accept: true, reason: None },
        Request::CompleteHandover { thread: t, offer: 1, family: FamilyTold::Yes },
        Request::ReportDone { thread: t, clock: ClockKind::FirstContact, due_ms: None },
        Request::ScheduleRappel { thread: t },
        Request::SetMeasure { thread: t, measure: wire::handover::Measure { start_ms: 1, end_ms: u64::MAX / 2 } },
        Request::ScheduleEvaluation { thread: t, due_ms: u64::MAX / 2 },
        Request::CallConference {
            thread: t,
            topic: "safety at home".into(),
            until_ms: u64::MAX / 2,
            invited: vec![wire::handover::Invitation { member: member_of_lt(), reason: "knows the family".into() }],
            legal_basis: "consent".into(),
        },
        Request::RecordDecision {
            thread: t,
            conference: 1,
            decision: wire::handover::RegieDecision {
                regie_with: "00000001800000000002".parse().unwrap(),
                reason: "the local team".into(),
            },
        },
        Request::LeaveCase { thread: t, reason: "done".into() },
        Request::WithdrawOffer { thread: t, offer: 1, reason: "no longer needed".into() },
        Request::CancelOffer { thread: t, offer: 1, reason: "family moved".into() },
        Request::TakeOver { thread: t, reason: "owner sick".into() },
        Request::AddParticipant {
            thread: t,
            participant: Participant {
                member: member_of_lt(),
                role: ParticipantRole::Consultant,
                until_ms: u64::MAX / 2,
                reason: "advice".into(),
            },
            legal_basis: "consent".into(),
        },
        Request::CloseCase { thread: t, outcome: "safe-at-home".into(), reason: "safe".into() },
        Request::ReopenCase { thread: t, reason: "a new report".into() },
        Request::RecordHistoryShare { thread: t, message: MessageId::new(), seqs: vec![1] },
        Request::GetOwnership { thread: t },
        Request::AuditQuery { filter: AuditFilter { case: Some(t), ..AuditFilter::default() }, known_size: 0 },
        Request::ListOffers,
        Request::AuditHead { known_size: 0 },
        Request::MarkReviewed { entry: 1, note: "justified".into() },
        Request::ChainFigures { since_ms: 0, until_ms: 1 },
    ]
}

/// The probes of `kind` aimed at `t`, with who sends each; none for a kind
/// that names no case, offer or blob.
fn probes(kind: Request, t: Target) -> Vec<(Who, Request)> {
    use Who::*;
    let thread = t.thread;
    match kind {
        Request::CreateThread { .. } | Request::ListThreads | Request::UploadKeyPackages { .. } => Vec::new(),
        // Offers waiting for the caller's own organisation: nothing of anyone else's.
        Request::ListOffers => Vec::new(),
        // The log's head names no case: the same for everyone.
        Request::AuditHead { .. } => Vec::new(),
        // Figures name no case and count the officer's own organisation's cases only (tests/figures.rs).
        Request::ChainFigures { .. } => Vec::new(),
        Request::OpenSideThread { client_ref, purpose, .. } => {
            vec![(Caseworker, Request::OpenSideThread { case: thread, client_ref, purpose })]
        }
        Request::AddMember { member, reason, legal_basis, .. } => {
            vec![(Caseworker, Request::AddMember { thread, member, reason, legal_basis })]
        }
        Request::Send { message, payload, .. } => vec![(Caseworker, Request::Send { thread, message, payload })],
        Request::ListMembers { .. } => vec![(Caseworker, Request::ListMembers { thread })],
        Request::DeliveryStatus { .. } => vec![(Caseworker, Request::DeliveryStatus { thread })],
        Request::InitGroup { group_info, ratchet_tree, .. } => {
            vec![(Caseworker, Request::InitGroup { thread, group_info, ratchet_tree })]
        }
        Request::Commit { commit, welcome, group_info, .. } => {
            vec![(Caseworker, Request::Commit { thread, commit, welcome, group_info })]
        }
        Request::GroupInfo { .. } => vec![(Caseworker, Request::GroupInfo { thread })],
        Request::Rejoin { commit, group_info, .. } => {
            vec![(Caseworker, Request::Rejoin { thread, commit, group_info })]
        }
        Request::ClaimKeyPackage { member, .. } => vec![(Caseworker, Request::ClaimKeyPackage { thread, member })],
        Request::PutBlobChunk { index, last, data, .. } => {
            vec![(Caseworker, Request::PutBlobChunk { thread, blob: t.blob, index, last, data })]
        }
        Request::GetBlobChunk { index, .. } => {
            vec![(Caseworker, Request::GetBlobChunk { thread, blob: t.blob, index })]
        }
        Request::OnBehalfOf { member, request } => probes(*request, t)
            .into_iter()
            .map(|(_, inner)| (System, Request::OnBehalfOf { member: member.clone(), request: Box::new(inner) }))
            .collect(),
        Request::MarkReviewed { note, .. } => vec![(Officer, Request::MarkReviewed { entry: t.entry, note })],
        Request::AuditQuery { filter, known_size } => {
            vec![(Officer, Request::AuditQuery { filter: AuditFilter { case: Some(thread), ..filter }, known_size })]
        }
        Request::OfferHandover { offer, .. } => vec![(Caseworker, Request::OfferHandover { thread, offer })],
        Request::AnswerOffer { .. } => vec![
            (Caseworker, Request::AnswerOffer { thread, offer: t.offer, accept: true, reason: None }),
            (Caseworker, Request::AnswerOffer { thread, offer: t.offer, accept: false, reason: None }),
            (Caseworker, Request::AnswerOffer { thread, offer: t.offer, accept: false, reason: Some(" ".into()) }),
            (Caseworker, Request::AnswerOffer { thread, offer: t.offer, accept: false, reason: Some("no".into()) }),
            (Caseworker, Request::AnswerOffer { thread, offer: t.offer + 1, accept: true, reason: None }),
        ],
        Request::CompleteHandover { family, .. } => {
            vec![(Caseworker, Request::CompleteHandover { thread, offer: t.offer, family })]
        }
        Request::ReportDone { clock, due_ms, .. } => vec![(Caseworker, Request::ReportDone { thread, clock, due_ms })],
        Request::ScheduleRappel { .. } => vec![(Caseworker, Request::ScheduleRappel { thread })],
        Request::SetMeasure { measure, .. } => vec![(Caseworker, Request::SetMeasure { thread, measure })],
        Request::CallConference { topic, until_ms, invited, legal_basis, .. } => {
            vec![(Caseworker, Request::CallConference { thread, topic, until_ms, invited, legal_basis })]
        }
        Request::RecordDecision { conference, decision, .. } => {
            vec![(Caseworker, Request::RecordDecision { thread, conference, decision })]
        }
        Request::ScheduleEvaluation { due_ms, .. } => {
            vec![(Caseworker, Request::ScheduleEvaluation { thread, due_ms })]
        }
        Request::LeaveCase { reason, .. } => vec![(Caseworker, Request::LeaveCase { thread, reason })],
        Request::WithdrawOffer { reason, .. } => {
            vec![(Caseworker, Request::WithdrawOffer { thread, offer: t.offer, reason })]
        }
        Request::CancelOffer { reason, .. } => {
            vec![(Caseworker, Request::CancelOffer { thread, offer: t.offer, reason })]
        }
        Request::TakeOver { reason, .. } => vec![(Caseworker, Request::TakeOver { thread, reason })],
        Request::AddParticipant { participant, legal_basis, .. } => {
            vec![(Caseworker, Request::AddParticipant { thread, participant, legal_basis })]
        }
        Request::GetOwnership { .. } => vec![(Caseworker, Request::GetOwnership { thread })],
        Request::CloseCase { outcome, reason, .. } => {
            vec![(Caseworker, Request::CloseCase { thread, outcome, reason })]
        }
        Request::ReopenCase { reason, .. } => vec![(Caseworker, Request::ReopenCase { thread, reason })],
        Request::RecordHistoryShare { message, seqs, .. } => {
            vec![(Caseworker, Request::RecordHistoryShare { thread, message, seqs })]
        }
    }
}

/// The sequence number of the audit entry of the offer on `case`.
fn offer_entry(hub: &DevHub, case: ThreadId) -> anyhow::Result<u64> {
    let mut found = None;
    hub::audit::scan(hub.store().as_ref(), |e| {
        let offered = e.record.object.as_deref().is_some_and(|o| o.starts_with("offer to"));
        if e.record.case == Some(case) && offered {
            found = Some(e.seq);
        }
        found.is_none()
    })?;
    found.ok_or_else(|| anyhow::anyhow!("the offer left no audit entry"))
}

/// The hub's encoded reply to `request`, with the request id zeroed.
async fn encoded_reply(raw: &mut RawConnection, id: u64, request: Request) -> anyhow::Result<Vec<u8>> {
    raw.send_frame(&ClientFrame::Request { id, request }).await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), raw.next()).await?? {
            RawIncoming::Frame(HubFrame::Reply { id: got, result }) if got == id => {
                return Ok(wire::encode(&HubFrame::Reply { id: 0, result }));
            }
            RawIncoming::Frame(_) => {}
            other => bail!("connection ended: {other:?}"),
        }
    }
}

fn decoded(bytes: &[u8]) -> Result<Reply, WireError> {
    match wire::decode::<HubFrame>(bytes) {
        Ok(HubFrame::Reply { result, .. }) => result,
        other => panic!("not a reply: {other:?}"),
    }
}

#[tokio::test]
async fn an_outsider_gets_the_same_bytes_for_a_real_case_as_for_random_ids() -> anyhow::Result<()> {
    let kinds = every_kind();
    let distinct: HashSet<_> = kinds.iter().map(discriminant).collect();
    assert_eq!((kinds.len(), distinct.len()), (KINDS, KINDS), "every_kind must hold each request kind once");

    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    // A real case: the Raad's, with an open offer to the GI and a sealed blob.
    let rvdk = hub.client("rvdk-caseworker").discard_events().connect().await?;
    let gi = hub.client("gi-save-caseworker").discard_events().connect().await?;
    let thread = rvdk.create_thread().await?;
    let measure = OfferRequest {
        to: gi.identity().oin.clone(),
        to_worker: None,
        route: "rvdk-gi-measure".into(),
        legal_basis: "ots-measure".into(),
        reason: "OTS ordered".into(),
        justification: Some("ordered by the juvenile court".into()),
        deadline_ms: hub::clock::now_ms() + 86_400_000,
    };
    let offer = rvdk.offer_handover(thread, measure).await?.offers[0].id;
    let blob = BlobId::random();
    let mut raw_rvdk = hub.client("rvdk-caseworker").connect_raw().await?;
    let sealed = Request::PutBlobChunk { thread, blob, index: 0, last: true, data: vec![7; 64] };
    assert!(tests::raw_reply(&mut raw_rvdk, sealed).await?.is_ok());
    let entry = offer_entry(&hub, thread)?;
    let real = Target { thread, offer, blob, entry };
    let random = Target { thread: ThreadId::random(), offer, blob: BlobId::random(), entry: entry + 1_000_000 };

    // Outsiders: no organisation of theirs is on the case.
    let mut caseworker = hub.client("lt-oudewater-caseworker").connect_raw().await?;
    let mut system = hub.client("vt-utrecht-system").connect_raw().await?;
    let mut officer = hub.client("vt-utrecht-privacy").connect_raw().await?;
    let mut id = 0;
    let mut compared = 0;
    for kind in kinds {
        for ((who, at_real), (_, at_random)) in probes(kind.clone(), real).into_iter().zip(probes(kind, random)) {
            let raw = match who {
                Who::Caseworker => &mut caseworker,
                Who::System => &mut system,
                Who::Officer => &mut officer,
            };
            id += 2;
            let for_real = encoded_reply(raw, id, at_real.clone()).await?;
            let for_random = encoded_reply(raw, id + 1, at_random).await?;
            assert!(decoded(&for_real).is_err(), "{who:?} was allowed {at_real:?}");
            assert_eq!(for_real, for_random, "{who:?} tells a real case from a random id with {at_real:?}");
            compared += 1;
        }
    }
    assert!(compared >= 20, "only {compared} probes compared");

    // In a thread of its own, the outsider names the case's blob id: it behaves
    // exactly like an unused id, for fetching and for uploading.
    let own = hub.client("lt-oudewater-caseworker").discard_events().connect().await?.create_thread().await?;
    let unused = BlobId::random();
    let get = |blob| Request::GetBlobChunk { thread: own, blob, index: 0 };
    let fetched = (
        encoded_reply(&mut caseworker, 100, get(blob)).await?,
        encoded_reply(&mut caseworker, 101, get(unused)).await?,
    );
    assert_eq!(fetched.0, fetched.1, "fetching another case's blob id differs from an unused one");
    let put = |blob| Request::PutBlobChunk { thread: own, blob, index: 0, last: false, data: vec![1; 16] };
    let stored = |bytes: Vec<u8>| match decoded(&bytes) {
        // The reply echoes the blob id the request named, as it echoes the request id.
        Ok(Reply::BlobChunkStored { index, duplicate, .. }) => Ok((index, duplicate)),
        other => Err(other),
    };
    let with_theirs = stored(encoded_reply(&mut caseworker, 102, put(blob)).await?);
    let with_unused = stored(encoded_reply(&mut caseworker, 103, put(unused)).await?);
    assert_eq!(with_theirs, with_unused, "uploading under another case's blob id differs from an unused one");
    assert_eq!(with_theirs, Ok((0, false)));
    // And the case's own blob is untouched: its members still fetch it.
    let chunk = tests::raw_reply(&mut raw_rvdk, Request::GetBlobChunk { thread, blob, index: 0 }).await?;
    assert!(matches!(chunk, Ok(Reply::BlobChunk { ref data, last: true, .. }) if *data == vec![7; 64]), "{chunk:?}");
    hub.stop().await
}
