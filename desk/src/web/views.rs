//! What the templates are given: the SDK's types turned into plain, labelled values.
//!
//! Templates stay free of logic about handover states or clocks: each label
//! key and status is decided here, once, and every page that shows an offer,
//! a clock or an entry shows it the same way.

use hub::policy::Policy;
use ketenhub_sdk::{
    ClockKind, Content, Escalation, FamilyTold, HandoverEvent, MemberDelivery, MemberId, Offer, OfferState, Ownership,
    ParticipantRole,
};
use serde::Serialize;
use wire::handover::CaseClock;

use crate::store::{Entry, Stored};

const DAY_MS: u64 = 86_400_000;

/// A member, with their organisation's name.
#[derive(Debug, Clone, Serialize)]
pub struct Who {
    /// The organisation's name (or OIN when the policy does not know it).
    pub organisation: String,
    /// The worker id.
    pub worker: String,
    /// Whether it is this desk's own identity.
    pub me: bool,
}

/// Names a member by the policy's organisation names.
pub fn who(policy: &Policy, member: &MemberId, me: &MemberId) -> Who {
    let organisation = policy.organisation(&member.oin).map_or_else(|| member.oin.to_string(), |o| o.name.clone());
    Who { organisation, worker: member.worker.clone(), me: member == me }
}

/// A member of a case as its member list shows it: a participant's role and end date beside its name.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    /// Who.
    pub who: Who,
    /// `consultant` or `co_worker` for a time-boxed participant.
    pub role: Option<&'static str>,
    /// A participant's end date, ms since the Unix epoch.
    pub until_ms: Option<u64>,
}

/// A participant role's code, as forms send it and label keys name it (`role_consultant`).
pub fn participant_code(role: ParticipantRole) -> &'static str {
    match role {
        ParticipantRole::Consultant => "consultant",
        ParticipantRole::CoWorker => "co_worker",
    }
}

/// The participant role a form's code names.
pub fn participant_role(code: &str) -> Option<ParticipantRole> {
    [ParticipantRole::Consultant, ParticipantRole::CoWorker].into_iter().find(|r| participant_code(*r) == code)
}

/// The case's members, each with its participation if it has one.
pub fn members(policy: &Policy, members: &[MemberId], ownership: Option<&Ownership>, me: &MemberId) -> Vec<MemberView> {
    members
        .iter()
        .map(|m| {
            let taking_part = ownership.and_then(|o| o.participant(m));
            MemberView {
                who: who(policy, m, me),
                role: taking_part.map(|p| participant_code(p.role)),
                until_ms: taking_part.map(|p| p.until_ms),
            }
        })
        .collect()
}

/// A clock with its due date and state.
#[derive(Debug, Clone, Serialize)]
pub struct ClockView {
    /// `first_contact`, `safety_plan` or `rappel`.
    pub kind: &'static str,
    /// Due, ms since the Unix epoch.
    pub due_ms: u64,
    /// `done`, `running`, `due` (within a day) or `overdue`.
    pub status: &'static str,
    /// Escalations so far.
    pub escalations: u32,
}

/// The clock kind of a code.
pub fn clock_kind(code: &str) -> Option<ClockKind> {
    ClockKind::ALL.into_iter().find(|k| k.code() == code)
}

fn clock(c: &CaseClock, now_ms: u64) -> ClockView {
    let status = if c.done {
        "done"
    } else if c.due_ms <= now_ms || c.escalations > 0 {
        "overdue"
    } else if c.due_ms <= now_ms + DAY_MS {
        "due"
    } else {
        "running"
    };
    ClockView { kind: c.kind.code(), due_ms: c.due_ms, status, escalations: c.escalations }
}

/// An offer with its parties named.
#[derive(Debug, Clone, Serialize)]
pub struct OfferView {
    /// Its number in the case.
    pub id: u32,
    /// Who offered it.
    pub from: Who,
    /// The receiving organisation's name.
    pub to: String,
    /// The receiving worker, if named.
    pub to_worker: Option<String>,
    /// The route.
    pub route: String,
    /// The legal basis code.
    pub legal_basis: String,
    /// Whether the basis shares without consent.
    pub without_consent: bool,
    /// Why.
    pub reason: String,
    /// The written justification.
    pub justification: Option<String>,
    /// The acceptance deadline.
    pub deadline_ms: u64,
    /// `offered`, `accepted`, `declined`, `expired` or `completed`.
    pub state: &'static str,
    /// Who answered, and the decline's reason or the completion's family note.
    pub answer: Option<String>,
    /// Whether this desk is the receiver who may answer it.
    pub to_me: bool,
    /// Whether this desk accepted it and may complete it.
    pub mine_to_complete: bool,
    /// Whether this desk sent it and may still withdraw it.
    pub mine_to_withdraw: bool,
    /// Whether this desk sent or accepted it and may cancel it before completion.
    pub mine_to_cancel: bool,
}

/// Shows an offer.
pub fn offer(policy: &Policy, o: &Offer, me: &MemberId) -> OfferView {
    let to = policy.organisation(&o.to).map_or_else(|| o.to.to_string(), |org| org.name.clone());
    let (state, answer) = match &o.state {
        OfferState::Offered => ("offered", None),
        OfferState::Accepted { by } => ("accepted", Some(by.to_string())),
        OfferState::Declined { by, reason } => ("declined", Some(format!("{by}: {reason}"))),
        OfferState::Expired => ("expired", None),
        OfferState::Withdrawn { by, reason } => ("withdrawn", Some(format!("{by}: {reason}"))),
        OfferState::Cancelled { by, reason, .. } => ("cancelled", Some(format!("{by}: {reason}"))),
        OfferState::Completed { by, family } => ("completed", Some(format!("{by}{}", family_note(family)))),
    };
    let to_me = o.to == me.oin && o.to_worker.as_ref().is_none_or(|w| *w == me.worker);
    let mine_to_complete = matches!(&o.state, OfferState::Accepted { by } if by == me);
    let mine_to_withdraw = o.state == OfferState::Offered && o.from == *me;
    let mine_to_cancel = matches!(&o.state, OfferState::Accepted { by } if by == me || o.from == *me);
    OfferView {
        id: o.id,
        from: who(policy, &o.from, me),
        to,
        to_worker: o.to_worker.clone(),
        route: o.route.clone(),
        legal_basis: o.legal_basis.clone(),
        without_consent: hub::handovers::needs_review(policy, &o.legal_basis),
        reason: o.reason.clone(),
        justification: o.justification.clone(),
        deadline_ms: o.deadline_ms,
        state,
        answer,
        to_me: to_me && state == "offered",
        mine_to_complete,
        mine_to_withdraw,
        mine_to_cancel,
    }
}

fn family_note(family: &FamilyTold) -> String {
    match family {
        FamilyTold::Yes => String::new(),
        FamilyTold::No { reason } => format!(" ({reason})"),
    }
}

/// A case's ownership as a caseworker sees it.
#[derive(Debug, Clone, Serialize)]
pub struct CaseView {
    /// The case id.
    pub id: String,
    /// Who holds regie.
    pub owner: Who,
    /// This desk's role: `owner`, `receiving`, `background`, `left`, `consultant`, `co_worker` or `member`.
    pub my_role: &'static str,
    /// Every offer, newest first.
    pub offers: Vec<OfferView>,
    /// The open offer, if any.
    pub open_offer: Option<OfferView>,
    /// Every clock.
    pub clocks: Vec<ClockView>,
    /// Former owners in the background, with until when.
    pub background: Vec<(Who, u64)>,
    /// Former owners who left, with their reason.
    pub left: Vec<(Who, String)>,
    /// While closed: the outcome, and until when it may be reopened (ms since the Unix epoch).
    pub closed: Option<(String, u64)>,
}

/// The role a member has on a case.
pub fn role(ownership: &Ownership, me: &MemberId) -> &'static str {
    if &ownership.owner == me {
        "owner"
    } else if ownership.background.iter().any(|b| &b.member == me) {
        "background"
    } else if ownership.left.iter().any(|(m, _)| m == me) {
        "left"
    } else if ownership.offers.iter().any(|o| matches!(&o.state, OfferState::Accepted { by } if by == me)) {
        "receiving"
    } else {
        ownership.participant(me).map_or("member", |p| participant_code(p.role))
    }
}

/// Shows a case's ownership.
pub fn case(policy: &Policy, id: String, ownership: &Ownership, me: &MemberId, now_ms: u64) -> CaseView {
    let offers: Vec<OfferView> = ownership.offers.iter().rev().map(|o| offer(policy, o, me)).collect();
    CaseView {
        id,
        owner: who(policy, &ownership.owner, me),
        my_role: role(ownership, me),
        open_offer: ownership.open_offer().map(|o| offer(policy, o, me)),
        offers,
        clocks: ownership.clocks.iter().map(|c| clock(c, now_ms)).collect(),
        background: ownership.background.iter().map(|b| (who(policy, &b.member, me), b.until_ms)).collect(),
        left: ownership.left.iter().map(|(m, r)| (who(policy, m, me), r.clone())).collect(),
        closed: ownership.closed().map(|c| (c.outcome.clone(), c.reopen_until_ms)),
    }
}

/// An attachment as the thread shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AttachmentView {
    /// The file name.
    pub name: String,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256 as hex, which the download is checked against.
    pub sha256: String,
}

/// One entry of a thread.
#[derive(Debug, Clone, Serialize)]
pub struct EntryView {
    /// Its sequence number.
    pub seq: u64,
    /// `text`, `attachment`, `packet`, `bytes`, `member_added`, `member_removed`, `handover` or `unreadable`.
    pub kind: &'static str,
    /// Who sent it or took the step.
    pub who: Who,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// The text, or a step's description parameters.
    pub text: Option<String>,
    /// The attachment.
    pub attachment: Option<AttachmentView>,
    /// The packet, as its JSON shape for the packet template.
    pub packet: Option<serde_json::Value>,
    /// The fields of a received packet that break the packet's rules on the day it was sent (a sender's
    /// SDK checks them, but a member's own software need not have): shown as a warning.
    pub packet_problems: Vec<String>,
    /// For a membership change: the member concerned.
    pub member: Option<Who>,
    /// For a handover step: its kind (`offered`, `accepted`, ...).
    pub step: Option<&'static str>,
    /// For a history share: the earlier messages it re-shares, in their original order.
    pub shared: Vec<SharedView>,
    /// For a message: which of the other members have it on a device, as the page was made.
    pub delivery: Option<DeliveryView>,
}

/// The other current members of a thread, split by whether a message reached one of their devices.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeliveryView {
    /// Members whose device acknowledged it.
    pub received: Vec<Who>,
    /// Members whose devices have not yet.
    pub waiting: Vec<Who>,
}

/// Where message `e` has arrived, from the hub's delivery status; none for other entries.
pub fn delivery(policy: &Policy, status: &[MemberDelivery], e: &Entry, me: &MemberId) -> Option<DeliveryView> {
    let Stored::Message(message) = &e.body else { return None };
    let mut view = DeliveryView::default();
    for member in status.iter().filter(|d| d.member != message.sender) {
        let list = if member.any_device >= e.seq { &mut view.received } else { &mut view.waiting };
        list.push(who(policy, &member.member, me));
    }
    Some(view)
}

/// One earlier message in a history share, as the thread shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SharedView {
    /// Its original seq.
    pub seq: u64,
    /// Who sent it.
    pub who: Who,
    /// When.
    pub at_ms: u64,
    /// Its text, or what it was (a file's name, a packet).
    pub text: String,
}

/// An earlier message as a history share shows it, or offers it to be shared.
pub fn shared(policy: &Policy, item: &ketenhub_sdk::SharedItem, me: &MemberId) -> SharedView {
    SharedView { seq: item.seq, who: who(policy, &item.sender, me), at_ms: item.at_ms, text: summary(&item.content) }
}

fn summary(content: &Content) -> String {
    match content {
        Content::Text { text } => text.clone(),
        Content::Minutes { conference, text } => format!("#{conference}: {text}"),
        Content::Bytes { data } => format!("{} bytes", data.len()),
        Content::Attachment(a) => a.name.clone(),
        Content::HandoverPacket(p) => format!("handover packet v{}", p.version),
        Content::HistoryShare(s) => format!("{} items", s.items.len()),
        Content::Informed { offer, records } => informed(*offer, records),
    }
}

/// The information records of a completion on one line: who was told on which day, who not and why.
fn informed(offer: u32, records: &[ketenhub_sdk::packet::Informed]) -> String {
    let each: Vec<String> = records
        .iter()
        .map(|r| match &r.outcome {
            ketenhub_sdk::packet::Told::Told { on, by, what } => format!("{} ({on}, {by}): {what}", r.member),
            ketenhub_sdk::packet::Told::NotTold { reason } => format!("{}: — {reason}", r.member),
        })
        .collect();
    format!("#{offer}: {}", each.join("; "))
}

fn step(event: &HandoverEvent) -> (&'static str, Option<String>) {
    match event {
        HandoverEvent::Offered { offer } => {
            ("offered", Some(format!("{} — {}: {}", offer.route, offer.legal_basis, offer.reason)))
        }
        HandoverEvent::Accepted { offer, by } => ("accepted", Some(format!("#{offer}: {by}"))),
        HandoverEvent::Declined { offer, reason } => ("declined", Some(format!("#{offer}: {reason}"))),
        HandoverEvent::Completed { offer, owner, family } => {
            ("completed", Some(format!("#{offer}: {owner}{}", family_note(family))))
        }
        HandoverEvent::Escalated { escalation: Escalation::OfferExpired { offer, .. } } => {
            ("expired", Some(format!("#{offer}")))
        }
        HandoverEvent::Escalated { escalation: Escalation::Overdue { clock, escalation, .. } } => {
            ("overdue", Some(format!("{} ({escalation})", clock.code())))
        }
        HandoverEvent::Left { member, reason } => ("left", Some(format!("{member}: {reason}"))),
        HandoverEvent::Scheduled { clock } => ("scheduled", Some(clock.code().to_owned())),
        HandoverEvent::Done { clock } => ("done", Some(clock.code().to_owned())),
        HandoverEvent::Withdrawn { offer, reason } => ("withdrawn", Some(format!("#{offer}: {reason}"))),
        HandoverEvent::Cancelled { offer, by, reason, .. } => ("cancelled", Some(format!("#{offer}: {by}: {reason}"))),
        HandoverEvent::TakenOver { owner, former, reason } => {
            ("taken_over", Some(format!("{former} → {owner}: {reason}")))
        }
        HandoverEvent::Closed { outcome, reason, reopen_until_ms } => {
            let until = ketenhub_sdk::report::date_time(*reopen_until_ms);
            ("closed", Some(format!("{outcome}: {reason} (→ {until})")))
        }
        HandoverEvent::Reopened { reason } => ("reopened", Some(reason.clone())),
        HandoverEvent::Archived => ("archived", None),
        HandoverEvent::MeasureSet { measure } => {
            let (from, until) = (measure.start_ms, measure.end_ms);
            let (from, until) = (ketenhub_sdk::report::date_time(from), ketenhub_sdk::report::date_time(until));
            ("measure_set", Some(format!("{from} → {until}")))
        }
        HandoverEvent::ConferenceCalled { conference: c } => {
            let who: Vec<String> = c.invited.iter().map(|i| format!("{} ({})", i.member, i.reason)).collect();
            let until = ketenhub_sdk::report::date_time(c.until_ms);
            ("conference_called", Some(format!("#{}: {} → {until}: {}", c.id, c.topic, who.join(", "))))
        }
        HandoverEvent::Decided { conference, decision } => {
            ("decided", Some(format!("#{conference}: {}: {}", decision.regie_with.as_str(), decision.reason)))
        }
        HandoverEvent::EvaluationScheduled { due_ms } => {
            ("evaluation_scheduled", Some(ketenhub_sdk::report::date_time(*due_ms)))
        }
        HandoverEvent::Engaged { participant: p } => {
            let until = ketenhub_sdk::report::date_time(p.until_ms);
            let step = if p.role == ParticipantRole::Consultant { "engaged_consultant" } else { "engaged_co_worker" };
            (step, Some(format!("{} → {until}: {}", p.member, p.reason)))
        }
    }
}

/// Shows a stored entry.
pub fn entry(policy: &Policy, e: &Entry, me: &MemberId) -> EntryView {
    let mut view = EntryView {
        seq: e.seq,
        kind: "text",
        who: who(policy, me, me),
        at_ms: 0,
        text: None,
        attachment: None,
        packet: None,
        packet_problems: Vec::new(),
        member: None,
        step: None,
        shared: Vec::new(),
        delivery: None,
    };
    match &e.body {
        Stored::Message(m) => {
            view.who = who(policy, &m.sender, me);
            view.at_ms = m.at_ms;
            match &m.content {
                Content::Text { text } => view.text = Some(text.clone()),
                Content::Minutes { conference, text } => {
                    view.kind = "minutes";
                    view.text = Some(format!("#{conference}: {text}"));
                }
                Content::Informed { offer, records } => {
                    view.kind = "informed";
                    view.text = Some(informed(*offer, records));
                }
                Content::Bytes { data } => {
                    view.kind = "bytes";
                    view.text = Some(data.len().to_string());
                }
                Content::Attachment(a) => {
                    view.kind = "attachment";
                    view.attachment = Some(AttachmentView {
                        name: a.name.clone(),
                        media_type: a.media_type.clone(),
                        size: a.size,
                        sha256: a.sha256_hex(),
                    });
                }
                Content::HandoverPacket(p) => {
                    view.kind = "packet";
                    view.packet = serde_json::to_value(p).ok();
                    let sent_on = ketenhub_sdk::packet::Date::from_unix_ms(m.at_ms);
                    if let Err(problems) = p.validate(sent_on) {
                        view.packet_problems = problems.paths().into_iter().map(str::to_owned).collect();
                    }
                }
                Content::HistoryShare(share) => {
                    view.kind = "history_share";
                    view.shared = share.items.iter().map(|i| shared(policy, i, me)).collect();
                }
            }
        }
        Stored::MemberAdded { member, by, at_ms } | Stored::MemberRemoved { member, by, at_ms } => {
            view.kind = if matches!(e.body, Stored::MemberAdded { .. }) { "member_added" } else { "member_removed" };
            view.who = who(policy, by, me);
            view.member = Some(who(policy, member, me));
            view.at_ms = *at_ms;
        }
        Stored::Handover { by, event, at_ms } => {
            let (name, text) = step(event);
            view.kind = "handover";
            view.step = Some(name);
            view.text = text;
            view.who = who(policy, by, me);
            view.at_ms = *at_ms;
        }
        Stored::Unreadable { sender, error, at_ms } => {
            view.kind = "unreadable";
            view.who = who(policy, sender, me);
            view.text = Some(error.clone());
            view.at_ms = *at_ms;
        }
    }
    view
}
