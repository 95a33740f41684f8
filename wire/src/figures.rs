//! Chain figures: how the chain keeps its promises, from handover metadata alone, identifying no one.
//!
//! Municipalities report quarterly and the inspectorate asks how many children a certified institution
//! saw within five working days; the chain answers today with a hand-drawn sample. The hub already
//! holds the moments that answer it: every offer, acceptance, completion, escalation and done report
//! is a handover entry with the hub's time. [`compute`] turns the entries of many cases into a
//! [`ChainReport`] without reading any content (the hub cannot) and without naming a case or a worker.
//!
//! Every figure is given for the chain as a whole and per organisation, per region and per route. A
//! cell counting fewer than the minimum (k = 10 by default) is suppressed, so that no family can be
//! recognised from a small number; when exactly one cell of a breakdown would be suppressed, the
//! smallest other one is suppressed with it, since the total minus the others would give it away.
//!
//! The figures and their definitions (`docs/figures.md` gives the sources in the chain's documents):
//! - `first_contact`: offers on a route with a first-contact clock (a court measure handed to a GI),
//!   accepted in the window: the first face-to-face contact reported within 5 working days of the
//!   measure's start (of the acceptance when no measure is registered), within 10, later, or pending;
//! - `safety_plan`: the same offers, the safety plan reported within 3 months of that start;
//! - `offer_answered`: offers made in the window, answered before their deadline, expired, withdrawn
//!   or pending;
//! - `escalations`: escalations raised in the window, by kind;
//! - `offer_to_accept`, `accept_to_complete`, `report_to_first_contact_gi`: lead times in days, the
//!   last from the offer to a GI to the first contact it reports;
//! - `reopened`: cases closed in the window, reopened within 12 months, within 12 to 15 months, not
//!   within 15 months, or too recent to tell.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::calendar::{add_months, DAY_MS};
use crate::handover::{Calendar, ClockKind, Escalation, HandoverEvent, Offer, RouteClocks};
use crate::{AgencyKind, Oin};

/// The minimum count of a cell unless configured otherwise.
pub const DEFAULT_MIN_COUNT: u64 = 10;

/// What the figures need to know about the chain beyond the entries: the policy's organisations and routes.
pub trait Directory {
    /// The organisation's name, region and kind, if the policy knows it.
    fn organisation(&self, oin: &Oin) -> Option<OrganisationFacts>;
    /// The clocks the policy declares for a route.
    fn route_clocks(&self, route: &str) -> RouteClocks;
}

/// An organisation as the figures group it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganisationFacts {
    /// Its name.
    pub name: String,
    /// Its region.
    pub region: String,
    /// Its kind of agency.
    pub kind: AgencyKind,
}

/// The period and settings of a report.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The first moment counted, ms since the Unix epoch.
    pub since_ms: u64,
    /// The moment the window ends (not counted), ms since the Unix epoch.
    pub until_ms: u64,
    /// The smallest count shown in a cell.
    pub min_count: u64,
    /// The working-day calendar.
    pub calendar: Calendar,
}

/// One case's handover entries, in the order of the case's thread: the moment and the event.
pub type CaseEvents = Vec<(u64, HandoverEvent)>;

/// The figures for a period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainReport {
    /// The first day counted (`YYYY-MM-DD`, UTC).
    pub since: String,
    /// The day the window ends, not counted.
    pub until: String,
    /// The smallest count a cell shows.
    pub min_count: u64,
    /// The figures, in the order of the module's list.
    pub figures: Vec<Figure>,
}

/// One figure, for the chain and per organisation, region and route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// Its code, for example `first_contact`.
    pub code: String,
    /// The names of its values, in order: buckets (counts) or `median_days` and `p90_days`.
    pub measures: Vec<String>,
    /// Its cells: `all` first, then each breakdown sorted by key.
    pub cells: Vec<Cell>,
}

/// One cell of a figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// `all`, `organisation`, `region` or `route`.
    pub dimension: String,
    /// The organisation's name, the region or the route; `all` for the chain.
    pub key: String,
    /// How many observations it counts; `None` when suppressed.
    pub count: Option<u64>,
    /// The values, one per measure of the figure; empty when suppressed.
    pub values: Vec<f64>,
}

impl Cell {
    /// Whether the cell is suppressed.
    pub fn suppressed(&self) -> bool {
        self.count.is_none()
    }
}

/// What one observation adds to a figure.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Bucket(&'static str),
    Days(f64),
}

/// One unit counted: a figure, where it belongs and what came of it.
struct Observation {
    figure: &'static str,
    /// Which case it comes from (its position in the tally), so that cells count families, not events.
    case: usize,
    /// Its position among all observations, to tell it from another of the same case.
    id: usize,
    organisation: Oin,
    route: String,
    outcome: Outcome,
}

const FIGURES: [(&str, &[&str]); 8] = [
    ("first_contact", &["within_5_working_days", "within_10_working_days", "over_10_working_days", "pending"]),
    ("safety_plan", &["within_3_months", "later", "pending"]),
    ("offer_answered", &["in_time", "late", "expired", "withdrawn", "pending"]),
    (
        "escalations",
        &["offer_expired", "first_contact", "safety_plan", "completion", "rappel", "renewal", "evaluation"],
    ),
    ("offer_to_accept", DURATION),
    ("accept_to_complete", DURATION),
    ("report_to_first_contact_gi", DURATION),
    ("reopened", &["within_12_months", "within_15_months", "not_within_15_months", "too_recent"]),
];

const DURATION: &[&str] = &["median_days", "p90_days"];

/// The figures over `cases` for the window and settings given.
pub fn compute(cases: &[CaseEvents], directory: &dyn Directory, settings: &Settings) -> ChainReport {
    let mut tally = Tally::default();
    for case in cases {
        tally.add(case, directory, settings);
    }
    tally.report(directory, settings)
}

/// The figures gathered one case at a time, so that a hub reads its cases without holding them all.
#[derive(Default)]
pub struct Tally {
    observations: Vec<Observation>,
    cases: usize,
}

impl Tally {
    /// Counts one case.
    pub fn add(&mut self, case: &CaseEvents, directory: &dyn Directory, settings: &Settings) {
        CaseTrack::of(case, settings.until_ms).observe(self.cases, directory, settings, &mut self.observations);
        self.cases += 1;
    }

    /// The report over the cases counted.
    pub fn report(&self, directory: &dyn Directory, settings: &Settings) -> ChainReport {
        let figures = FIGURES
            .iter()
            .map(|(code, measures)| figure(code, measures, &self.observations, directory, settings.min_count))
            .collect();
        let day = |ms: u64| {
            let (y, m, d) = crate::calendar::civil_from_ms(ms);
            format!("{y:04}-{m:02}-{d:02}")
        };
        let (since, until) = (day(settings.since_ms), day(settings.until_ms));
        ChainReport { since, until, min_count: settings.min_count, figures }
    }
}

/// One offer's course through a case.
struct OfferTrack {
    offer: Offer,
    made_ms: u64,
    accepted_ms: Option<u64>,
    answered_ms: Option<u64>,
    completed_ms: Option<u64>,
    expired: bool,
    withdrawn: bool,
    cancelled: bool,
}

/// What the figures read from one case's entries.
#[derive(Default)]
struct CaseTrack {
    offers: BTreeMap<u32, OfferTrack>,
    done: Vec<(u64, ClockKind)>,
    measure_start_ms: Option<u64>,
    closures: Vec<u64>,
    reopenings: Vec<u64>,
    escalations: Vec<(u64, Escalation)>,
}

impl CaseTrack {
    /// The case as it stood when the window ended: later entries are not known to the report.
    fn of(case: &CaseEvents, until_ms: u64) -> Self {
        let mut track = Self::default();
        for (at, event) in case.iter().filter(|(at, _)| *at < until_ms) {
            let at = *at;
            match event {
                // A reassignment stays inside one organisation: the chain's figures are about handovers.
                HandoverEvent::Offered { offer } if offer.route == crate::handover::REASSIGNMENT_ROUTE => {}
                HandoverEvent::Offered { offer } => {
                    let made_ms = if offer.made_ms == 0 { at } else { offer.made_ms };
                    let t = OfferTrack {
                        offer: (**offer).clone(),
                        made_ms,
                        accepted_ms: None,
                        answered_ms: None,
                        completed_ms: None,
                        expired: false,
                        withdrawn: false,
                        cancelled: false,
                    };
                    track.offers.insert(offer.id, t);
                }
                HandoverEvent::Accepted { offer: id, .. } => {
                    if let Some(t) = track.offers.get_mut(id) {
                        t.accepted_ms.get_or_insert(at);
                        t.answered_ms.get_or_insert(at);
                    }
                }
                HandoverEvent::Declined { offer: id, .. } => {
                    if let Some(t) = track.offers.get_mut(id) {
                        t.answered_ms.get_or_insert(at);
                    }
                }
                HandoverEvent::Completed { offer: id, .. } => {
                    if let Some(t) = track.offers.get_mut(id) {
                        t.completed_ms.get_or_insert(at);
                    }
                }
                HandoverEvent::Withdrawn { offer: id, .. } => {
                    if let Some(t) = track.offers.get_mut(id) {
                        t.withdrawn = true;
                    }
                }
                HandoverEvent::Cancelled { offer: id, .. } => {
                    if let Some(t) = track.offers.get_mut(id) {
                        t.cancelled = true;
                    }
                }
                HandoverEvent::Escalated { escalation } => {
                    if let Escalation::OfferExpired { offer: id, .. } = escalation {
                        if let Some(t) = track.offers.get_mut(id) {
                            t.expired = true;
                        }
                    }
                    track.escalations.push((at, escalation.clone()));
                }
                HandoverEvent::Done { clock } => track.done.push((at, *clock)),
                HandoverEvent::MeasureSet { measure } => track.measure_start_ms = Some(measure.start_ms),
                HandoverEvent::Closed { .. } => track.closures.push(at),
                HandoverEvent::Reopened { .. } => track.reopenings.push(at),
                _ => {}
            }
        }
        track
    }

    fn first_done(&self, clock: ClockKind, from_ms: u64) -> Option<u64> {
        self.done.iter().find(|(at, kind)| *kind == clock && *at >= from_ms).map(|(at, _)| *at)
    }

    /// The route of the latest offer accepted by `at_ms`, for figures about the case rather than one offer.
    fn route_at(&self, at_ms: u64) -> String {
        let accepted = self.offers.values().rfind(|t| t.accepted_ms.is_some_and(|a| a <= at_ms));
        accepted.map_or_else(|| "none".to_owned(), |t| t.offer.route.clone())
    }

    /// Adds the case's observations to `out`, as case number `case`.
    fn observe(&self, case: usize, directory: &dyn Directory, s: &Settings, out: &mut Vec<Observation>) {
        let within = |at: u64| (s.since_ms..s.until_ms).contains(&at);
        let mut push = |figure, organisation: &Oin, route: &str, outcome| {
            let (organisation, route) = (organisation.clone(), route.to_owned());
            out.push(Observation { figure, case, id: out.len(), organisation, route, outcome });
        };
        for t in self.offers.values() {
            let (to, route) = (&t.offer.to, t.offer.route.as_str());
            if within(t.made_ms) {
                push("offer_answered", to, route, Outcome::Bucket(answered(t)));
                if let Some(accepted) = t.accepted_ms {
                    push("offer_to_accept", to, route, Outcome::Days(days(t.made_ms, accepted)));
                }
            }
            // A cancelled acceptance stopped its clocks: the receiver never took the case on.
            let Some(accepted) = t.accepted_ms.filter(|a| within(*a) && !t.cancelled) else { continue };
            if let Some(completed) = t.completed_ms {
                push("accept_to_complete", to, route, Outcome::Days(days(accepted, completed)));
            }
            let clocks = directory.route_clocks(route);
            // A measure counts from its start when that lies before the acceptance, and within a year of it:
            // an owner cannot push its figures with a start far in the past.
            let start =
                self.measure_start_ms.filter(|m| *m <= accepted && accepted - m <= 365 * DAY_MS).unwrap_or(accepted);
            let contact = self.first_done(ClockKind::FirstContact, accepted);
            if clocks.first_contact_days.is_some() {
                push(
                    "first_contact",
                    to,
                    route,
                    Outcome::Bucket(first_contact(&s.calendar, start, contact, s.until_ms)),
                );
            }
            if clocks.safety_plan_days.is_some() {
                let plan = self.first_done(ClockKind::SafetyPlan, accepted);
                push("safety_plan", to, route, Outcome::Bucket(late_or_not(add_months(start, 3), plan, s.until_ms)));
            }
            let to_gi = directory.organisation(to).is_some_and(|o| o.kind == AgencyKind::GI);
            if let Some(contact) = contact.filter(|_| to_gi) {
                push("report_to_first_contact_gi", to, route, Outcome::Days(days(t.made_ms, contact)));
            }
        }
        for (at, escalation) in self.escalations.iter().filter(|(at, _)| within(*at)) {
            let (organisation, kind) = match escalation {
                Escalation::OfferExpired { sender, .. } => (&sender.oin, "offer_expired"),
                Escalation::Overdue { clock, owner, .. } => (&owner.oin, clock.code()),
            };
            push("escalations", organisation, &self.route_at(*at), Outcome::Bucket(kind));
        }
        for closed in self.closures.iter().copied().filter(|at| within(*at)) {
            let reopened = self.reopenings.iter().copied().find(|at| *at >= closed);
            let owner = self.owner_org_at(closed);
            if let Some(owner) = owner {
                push(
                    "reopened",
                    &owner,
                    &self.route_at(closed),
                    Outcome::Bucket(reopening(closed, reopened, s.until_ms)),
                );
            }
        }
    }

    /// The organisation that held regie at `at_ms`: the receiver of the last offer completed by then,
    /// or the sender of the case's first offer when none was.
    fn owner_org_at(&self, at_ms: u64) -> Option<Oin> {
        let completed = self.offers.values().rfind(|t| t.completed_ms.is_some_and(|c| c <= at_ms));
        completed.map(|t| t.offer.to.clone()).or_else(|| self.offers.values().next().map(|t| t.offer.from.oin.clone()))
    }
}

fn days(from_ms: u64, to_ms: u64) -> f64 {
    to_ms.saturating_sub(from_ms) as f64 / DAY_MS as f64
}

fn answered(t: &OfferTrack) -> &'static str {
    match t.answered_ms {
        Some(at) if at <= t.offer.deadline_ms => "in_time",
        Some(_) => "late",
        None if t.expired => "expired",
        None if t.withdrawn => "withdrawn",
        None => "pending",
    }
}

fn first_contact(calendar: &Calendar, start_ms: u64, done_ms: Option<u64>, until_ms: u64) -> &'static str {
    let (five, ten) = (calendar.after_working_days(start_ms, 5), calendar.after_working_days(start_ms, 10));
    match done_ms {
        Some(at) if at <= five => "within_5_working_days",
        Some(at) if at <= ten => "within_10_working_days",
        Some(_) => "over_10_working_days",
        None if until_ms > ten => "over_10_working_days",
        None => "pending",
    }
}

fn late_or_not(due_ms: u64, done_ms: Option<u64>, until_ms: u64) -> &'static str {
    match done_ms {
        Some(at) if at <= due_ms => "within_3_months",
        Some(_) => "later",
        None if until_ms > due_ms => "later",
        None => "pending",
    }
}

fn reopening(closed_ms: u64, reopened_ms: Option<u64>, until_ms: u64) -> &'static str {
    let (twelve, fifteen) = (add_months(closed_ms, 12), add_months(closed_ms, 15));
    match reopened_ms {
        Some(at) if at <= twelve => "within_12_months",
        Some(at) if at <= fifteen => "within_15_months",
        _ if until_ms > fifteen => "not_within_15_months",
        _ => "too_recent",
    }
}

/// How a breakdown names the cell an observation belongs to.
type KeyOf<'a> = dyn Fn(&Observation) -> String + 'a;

/// The breakdowns after the chain's own cell, by their dimension's name.
const BREAKDOWNS: [&str; 3] = ["organisation", "region", "route"];

/// One cell while its suppression is decided: the observations in it and the cases they come from.
struct Group<'a> {
    dimension: usize,
    key: String,
    members: Vec<&'a Observation>,
    cases: BTreeSet<usize>,
    suppressed: bool,
}

/// One figure from the observations, with every cell and its suppression.
fn figure(code: &str, measures: &[&str], all: &[Observation], directory: &dyn Directory, k: u64) -> Figure {
    let observations: Vec<&Observation> = all.iter().filter(|o| o.figure == code).collect();
    // An organisation the policy does not know (any more) is not named by its OIN.
    let name = |oin: &Oin| directory.organisation(oin).map_or_else(|| "unknown".to_owned(), |o| o.name);
    let region = |oin: &Oin| directory.organisation(oin).map_or_else(|| "unknown".to_owned(), |o| o.region);
    let key_of: [&KeyOf; 3] = [&|o| name(&o.organisation), &|o| region(&o.organisation), &|o| o.route.clone()];
    let mut groups = vec![Group {
        dimension: 0,
        key: "all".into(),
        cases: observations.iter().map(|o| o.case).collect(),
        members: observations.clone(),
        suppressed: false,
    }];
    for (dimension, key_of) in key_of.iter().enumerate() {
        let mut by_key: BTreeMap<String, Vec<&Observation>> = BTreeMap::new();
        for o in &observations {
            by_key.entry(key_of(o)).or_default().push(o);
        }
        groups.extend(by_key.into_iter().map(|(key, members)| Group {
            dimension: dimension + 1,
            key,
            cases: members.iter().map(|o| o.case).collect(),
            members,
            suppressed: false,
        }));
    }
    suppress(&mut groups, k as usize);
    let cells = groups
        .iter()
        .map(|g| Cell {
            dimension: if g.dimension == 0 { "all".into() } else { BREAKDOWNS[g.dimension - 1].into() },
            key: g.key.clone(),
            count: (!g.suppressed).then_some(g.members.len() as u64),
            values: if g.suppressed { Vec::new() } else { values(&g.members, measures) },
        })
        .collect();
    Figure { code: code.to_owned(), measures: measures.iter().map(|m| (*m).to_owned()).collect(), cells }
}

/// Decides which cells are suppressed, so that no cell, and no difference of shown cells, rests on
/// fewer than `k` cases:
/// - a cell of fewer than `k` cases is suppressed;
/// - within a breakdown, the suppressed cells together cover `k` cases or more (else the chain's cell
///   minus the shown ones would reveal them): the smallest shown cell is suppressed until they do;
/// - across breakdowns (an organisation lies in one region, a route crosses organisations), a shown
///   cell whose observations in another breakdown's suppressed cells come from fewer than `k` cases
///   is suppressed, since subtracting the shown cells it shares would reveal them; and when what the
///   shown cells do not hold of those suppressed cells comes from fewer than `k` cases, the shown cell
///   holding most of them is suppressed too.
///
/// Repeated until nothing changes; each round suppresses at least one more cell or ends.
fn suppress(groups: &mut [Group<'_>], k: usize) {
    for g in groups.iter_mut() {
        g.suppressed = g.cases.len() < k;
    }
    loop {
        let mut changed = false;
        for dimension in 1..=BREAKDOWNS.len() {
            changed |= complete_row(groups, dimension, k);
        }
        for hidden in 1..=BREAKDOWNS.len() {
            for across in (1..=BREAKDOWNS.len()).filter(|d| *d != hidden) {
                changed |= guard_across(groups, hidden, across, k);
            }
        }
        if !changed {
            return;
        }
    }
}

/// Keeps breakdown `across` from revealing the suppressed cells of breakdown `hidden`: what a shown cell
/// of `across` holds of them could be had by subtraction, so it must come from `k` cases or more, and so
/// must what remains of them beyond all shown cells. Returns whether it suppressed any.
fn guard_across(groups: &mut [Group<'_>], hidden: usize, across: usize, k: usize) -> bool {
    let hidden_ids = hidden_observations(groups, hidden);
    if hidden_ids.is_empty() {
        return false;
    }
    let mut changed = false;
    let mut revealed: BTreeSet<usize> = BTreeSet::new();
    let mut largest: Option<(usize, usize)> = None;
    for (index, g) in groups.iter_mut().enumerate().filter(|(_, g)| g.dimension == across && !g.suppressed) {
        let overlap: Vec<&Observation> = g.members.iter().copied().filter(|o| hidden_ids.contains(&o.id)).collect();
        let cases: BTreeSet<usize> = overlap.iter().map(|o| o.case).collect();
        if cases.is_empty() {
            continue;
        }
        if cases.len() < k {
            g.suppressed = true;
            changed = true;
            continue;
        }
        revealed.extend(overlap.iter().map(|o| o.id));
        if largest.is_none_or(|(_, size)| overlap.len() > size) {
            largest = Some((index, overlap.len()));
        }
    }
    let rest: BTreeSet<usize> = groups
        .iter()
        .filter(|g| g.dimension == hidden && g.suppressed)
        .flat_map(|g| g.members.iter().filter(|o| !revealed.contains(&o.id)).map(|o| o.case))
        .collect();
    if !rest.is_empty() && rest.len() < k {
        if let Some((index, _)) = largest {
            groups[index].suppressed = true;
            changed = true;
        }
    }
    changed
}

/// Suppresses the smallest shown cells of a breakdown until its suppressed cells cover `k` cases;
/// returns whether it suppressed any.
fn complete_row(groups: &mut [Group<'_>], dimension: usize, k: usize) -> bool {
    let mut changed = false;
    loop {
        let row = || groups.iter().filter(|g| g.dimension == dimension);
        let hidden: BTreeSet<usize> = row().filter(|g| g.suppressed).flat_map(|g| g.cases.iter().copied()).collect();
        if hidden.is_empty() || hidden.len() >= k {
            return changed;
        }
        let smallest = groups
            .iter_mut()
            .filter(|g| g.dimension == dimension && !g.suppressed)
            .min_by_key(|g| (g.cases.len(), g.key.clone()));
        match smallest {
            Some(g) => {
                g.suppressed = true;
                changed = true;
            }
            None => return changed,
        }
    }
}

/// The observations in the suppressed cells of one breakdown.
fn hidden_observations(groups: &[Group<'_>], dimension: usize) -> BTreeSet<usize> {
    groups
        .iter()
        .filter(|g| g.dimension == dimension && g.suppressed)
        .flat_map(|g| g.members.iter().map(|o| o.id))
        .collect()
}

fn values(group: &[&Observation], measures: &[&str]) -> Vec<f64> {
    let mut durations: Vec<f64> =
        group.iter().filter_map(|o| if let Outcome::Days(d) = o.outcome { Some(d) } else { None }).collect();
    if measures == DURATION {
        durations.sort_by(f64::total_cmp);
        return vec![percentile(&durations, 50), percentile(&durations, 90)];
    }
    let count = |bucket: &str| group.iter().filter(|o| matches!(o.outcome, Outcome::Bucket(b) if b == bucket)).count();
    measures.iter().map(|m| count(m) as f64).collect()
}

/// The nearest-rank percentile of sorted values, to one decimal.
fn percentile(sorted: &[f64], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    (sorted[rank - 1] * 10.0).round() / 10.0
}

impl ChainReport {
    /// The report as CSV: one line per value, `figure,dimension,key,count,measure,value`; a suppressed
    /// cell is one line with `suppressed` for its count.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("figure,dimension,key,count,measure,value\n");
        for figure in &self.figures {
            for cell in &figure.cells {
                let key = csv_field(&cell.key);
                match cell.count {
                    None => out.push_str(&format!("{},{},{key},suppressed,,\n", figure.code, cell.dimension)),
                    Some(count) => {
                        for (measure, value) in figure.measures.iter().zip(&cell.values) {
                            let line = format!("{},{},{key},{count},{measure},{value}\n", figure.code, cell.dimension);
                            out.push_str(&line);
                        }
                    }
                }
            }
        }
        out
    }

    /// The report as Markdown: a table per figure, suppressed cells shown as `< k`.
    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "# Chain figures {} to {}\n\nCells counting fewer than {} are suppressed (`< {}`).\n",
            self.since, self.until, self.min_count, self.min_count
        );
        for figure in &self.figures {
            out.push_str(&format!("\n## {}\n\n| | | n | {} |\n", figure.code, figure.measures.join(" | ")));
            out.push_str(&format!("|---|---|---|{}\n", "---|".repeat(figure.measures.len())));
            for cell in &figure.cells {
                let values = match cell.count {
                    None => vec!["".to_owned(); figure.measures.len()],
                    Some(_) => cell.values.iter().map(|v| format!("{v}")).collect(),
                };
                let count = cell.count.map_or_else(|| format!("< {}", self.min_count), |c| c.to_string());
                let key = cell.key.replace('|', "/").replace(['\n', '\r'], " ");
                out.push_str(&format!("| {} | {key} | {count} | {} |\n", cell.dimension, values.join(" | ")));
            }
        }
        out
    }
}

/// A CSV field, quoted when it must be, and with a leading `=`, `+`, `-` or `@` defused so that a
/// spreadsheet does not run it as a formula.
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@']) { format!("'{text}") } else { text.to_owned() };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::days_from_civil;
    use crate::handover::{Measure, OfferState};
    use crate::MemberId;

    const VT: &str = "00000001800000000001";
    const GI: &str = "00000001800000000005";
    const LT: &str = "00000001800000000002";
    const LT_UTRECHT: &str = "00000001800000000009";

    struct Chain;

    impl Directory for Chain {
        fn organisation(&self, oin: &Oin) -> Option<OrganisationFacts> {
            let (name, region, kind) = match oin.to_string().as_str() {
                VT => ("Veilig Thuis Utrecht", "Utrecht", AgencyKind::VT),
                GI => ("SAVE Midden-Nederland", "Midden-Nederland", AgencyKind::GI),
                LT => ("Lokaal team Woerden", "Woerden", AgencyKind::LT),
                LT_UTRECHT => ("Lokaal team Utrecht", "Utrecht", AgencyKind::LT),
                _ => return None,
            };
            Some(OrganisationFacts { name: name.into(), region: region.into(), kind })
        }

        fn route_clocks(&self, route: &str) -> RouteClocks {
            match route {
                "rvdk-gi-measure" => RouteClocks {
                    first_contact_days: Some(5),
                    first_contact_again_days: Some(5),
                    safety_plan_days: Some(91),
                    completion_days: None,
                },
                _ => RouteClocks::default(),
            }
        }
    }

    fn member(oin: &str, worker: &str) -> MemberId {
        MemberId { oin: oin.parse().unwrap(), worker: worker.into() }
    }

    /// 2026-03-16, a Monday.
    fn monday() -> u64 {
        days_from_civil(2026, 3, 16).unwrap() as u64 * DAY_MS
    }

    /// A case: an offer from VT at `made` to `to` on `route`, accepted after a day, then `then`.
    fn case(made: u64, to: &str, route: &str, then: &[(u64, HandoverEvent)]) -> CaseEvents {
        let offer = Offer {
            id: 1,
            from: member(VT, "anna.devries"),
            to: to.parse().unwrap(),
            to_worker: Some("jan.worker".into()),
            route: route.into(),
            legal_basis: "consent".into(),
            reason: "r".into(),
            justification: None,
            deadline_ms: made + 3 * DAY_MS,
            made_ms: made,
            state: OfferState::Offered,
        };
        let mut events = vec![
            (made, HandoverEvent::Offered { offer: Box::new(offer) }),
            (made + DAY_MS, HandoverEvent::Accepted { offer: 1, by: member(to, "jan.worker") }),
        ];
        events.extend(then.iter().cloned());
        events
    }

    fn settings(k: u64) -> Settings {
        Settings { since_ms: monday(), until_ms: monday() + 200 * DAY_MS, min_count: k, calendar: Calendar::default() }
    }

    fn cell<'a>(report: &'a ChainReport, figure: &str, dimension: &str, key: &str) -> &'a Cell {
        let figure = report.figures.iter().find(|f| f.code == figure).unwrap();
        figure.cells.iter().find(|c| c.dimension == dimension && c.key == key).unwrap()
    }

    /// 30 measures handed to the GI: 21 children seen within 5 working days, 6 within 10, 3 later;
    /// 12 referrals to the local team and 4 more on a third route, which is suppressed with the next.
    fn history() -> Vec<CaseEvents> {
        let calendar = Calendar::default();
        let mut cases = Vec::new();
        for i in 0..30u64 {
            let made = monday() + i * DAY_MS;
            let accepted = made + DAY_MS;
            let working_days = match i % 10 {
                0..=6 => 2,
                7 | 8 => 7,
                _ => 12,
            };
            let contact = calendar.after_working_days(accepted, working_days) - 3_600_000;
            let plan = if i < 15 { accepted + 60 * DAY_MS } else { accepted + 120 * DAY_MS };
            cases.push(case(
                made,
                GI,
                "rvdk-gi-measure",
                &[
                    (accepted + 2 * DAY_MS, completed()),
                    (contact, HandoverEvent::Done { clock: ClockKind::FirstContact }),
                    (plan, HandoverEvent::Done { clock: ClockKind::SafetyPlan }),
                ],
            ));
        }
        for i in 0..12u64 {
            let made = monday() + i * DAY_MS;
            cases.push(case(made, LT, "vt-lt-referral", &[(made + 4 * DAY_MS, completed())]));
        }
        for i in 0..4u64 {
            let made = monday() + i * DAY_MS;
            cases.push(case(made, LT, "vt-lt-safety", &[]));
        }
        cases
    }

    fn completed() -> HandoverEvent {
        HandoverEvent::Completed { offer: 1, owner: member(GI, "jan.worker"), family: crate::handover::FamilyTold::Yes }
    }

    #[test]
    fn first_contacts_are_counted_in_working_days_from_the_start() {
        let report = compute(&history(), &Chain, &settings(10));
        let all = cell(&report, "first_contact", "all", "all");
        assert_eq!((all.count, all.values.as_slice()), (Some(30), &[21.0, 6.0, 3.0, 0.0][..]));
        let gi = cell(&report, "first_contact", "organisation", "SAVE Midden-Nederland");
        assert_eq!(gi.count, Some(30));
        assert_eq!(cell(&report, "first_contact", "region", "Midden-Nederland").count, Some(30));
        let plan = cell(&report, "safety_plan", "all", "all");
        assert_eq!(plan.values, [15.0, 15.0, 0.0]);
        let lead = cell(&report, "offer_to_accept", "all", "all");
        assert_eq!(lead.values, [1.0, 1.0]);
        let complete = cell(&report, "accept_to_complete", "route", "vt-lt-referral");
        assert_eq!((complete.count, complete.values.as_slice()), (Some(12), &[3.0, 3.0][..]));
        let gi_lead = cell(&report, "report_to_first_contact_gi", "all", "all");
        assert_eq!(gi_lead.count, Some(30));
    }

    #[test]
    fn small_cells_are_suppressed_with_the_next_smallest_so_no_difference_gives_them_away() {
        let report = compute(&history(), &Chain, &settings(10));
        let answered = |key| cell(&report, "offer_answered", "route", key).clone();
        assert!(answered("vt-lt-safety").suppressed(), "4 offers");
        assert!(answered("vt-lt-referral").suppressed(), "12 offers, but the total minus it would give the 4");
        assert_eq!(answered("rvdk-gi-measure").count, Some(30));
        let all = cell(&report, "offer_answered", "all", "all");
        assert_eq!((all.count, all.values.as_slice()), (Some(46), &[46.0, 0.0, 0.0, 0.0, 0.0][..]));
        // The local team's 16 offers are one cell of their organisation, and shown.
        assert_eq!(cell(&report, "offer_answered", "organisation", "Lokaal team Woerden").count, Some(16));
        // With k = 50 even the chain's total is suppressed.
        let strict = compute(&history(), &Chain, &settings(50));
        assert!(strict.figures.iter().all(|f| f.cells.iter().all(Cell::suppressed)));
        let csv = strict.to_csv();
        assert!(csv.lines().skip(1).all(|l| l.contains(",suppressed,")), "{csv}");
        let markdown = report.to_markdown();
        assert!(markdown.contains("| route | vt-lt-safety | < 10 |"), "{markdown}");
    }

    #[test]
    fn one_family_with_many_events_does_not_fill_a_cell() {
        let owner = member(GI, "jan.worker");
        let overdue = |n| HandoverEvent::Escalated {
            escalation: Escalation::Overdue { clock: ClockKind::Evaluation, escalation: n, owner: owner.clone() },
        };
        let events: Vec<(u64, HandoverEvent)> =
            (1..=12).map(|n| (monday() + u64::from(n) * DAY_MS, overdue(n))).collect();
        let report = compute(&[case(monday(), GI, "rvdk-gi-measure", &events)], &Chain, &settings(10));
        assert!(cell(&report, "escalations", "all", "all").suppressed(), "12 escalations, but one family");
    }

    /// Veilig Thuis and a second local team lie in one region: with the local team's 3 offers suppressed,
    /// the region's cell minus Veilig Thuis's would give them back, and so would the chain's cell minus
    /// the shown organisations once the 12 of Woerden (a region of one organisation) were shown.
    #[test]
    fn a_cell_suppressed_in_one_breakdown_cannot_be_had_from_another() {
        let mut cases = Vec::new();
        for (to, n) in [(LT_UTRECHT, 3), (VT, 40), (LT, 12), (GI, 25)] {
            for i in 0..n {
                cases.push(case(monday() + i * 3_600_000, to, "one-route", &[]));
            }
        }
        let report = compute(&cases, &Chain, &settings(10));
        let shown = |dimension: &str, key: &str| !cell(&report, "offer_answered", dimension, key).suppressed();
        assert!(!shown("organisation", "Lokaal team Utrecht"), "3 offers");
        assert!(!shown("organisation", "Lokaal team Woerden"), "the complement of the 3");
        assert!(shown("organisation", "Veilig Thuis Utrecht") && shown("organisation", "SAVE Midden-Nederland"));
        assert!(!shown("region", "Utrecht"), "Utrecht minus Veilig Thuis would be the 3");
        assert!(!shown("region", "Woerden"), "Woerden is the local team of Woerden, whose count gives the 3 back");
        assert!(shown("region", "Midden-Nederland"));
        // What is shown adds up only to sums of at least 10 cases: 80 in all, 65 shown organisations.
        assert_eq!(cell(&report, "offer_answered", "all", "all").count, Some(80));
    }

    #[test]
    fn cancelled_acceptances_reassignments_and_far_measures_do_not_bend_the_figures() {
        let accepted = monday() + DAY_MS;
        let contact = (accepted + 3_600_000, HandoverEvent::Done { clock: ClockKind::FirstContact });
        let cancelled = HandoverEvent::Cancelled {
            offer: 1,
            by: member(GI, "jan.worker"),
            receiver: member(GI, "jan.worker"),
            reason: "r".into(),
        };
        let long_ago = Measure { start_ms: 0, end_ms: accepted + 300 * DAY_MS };
        let mut reassigned = case(monday(), VT, crate::handover::REASSIGNMENT_ROUTE, &[]);
        if let HandoverEvent::Offered { offer } = &mut reassigned[0].1 {
            offer.to = VT.parse().unwrap();
        }
        let cases = [
            case(monday(), GI, "rvdk-gi-measure", &[(accepted + DAY_MS, cancelled)]),
            case(
                monday(),
                GI,
                "rvdk-gi-measure",
                &[(accepted, HandoverEvent::MeasureSet { measure: long_ago }), contact],
            ),
            reassigned,
        ];
        let report = compute(&cases, &Chain, &settings(1));
        // The cancelled acceptance is no first contact at all; the measure set in 1970 does not count.
        assert_eq!(cell(&report, "first_contact", "all", "all").values, [1.0, 0.0, 0.0, 0.0]);
        assert_eq!(cell(&report, "offer_answered", "all", "all").count, Some(2), "the reassignment is not a handover");
    }

    #[test]
    fn csv_defuses_formulas_and_quotes_line_breaks() {
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("-1,2"), "\"'-1,2\"");
        assert_eq!(csv_field("a\rb"), "\"a\rb\"");
        assert_eq!(csv_field("Lokaal team \"Noord\""), "\"Lokaal team \"\"Noord\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }

    #[test]
    fn no_case_or_worker_appears_in_any_form_of_the_report() {
        let report = compute(&history(), &Chain, &settings(1));
        let json = serde_json::to_string(&report).unwrap();
        for text in [json, report.to_csv(), report.to_markdown()] {
            for secret in ["anna.devries", "jan.worker", VT, GI, LT] {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
        }
    }

    #[test]
    fn a_registered_measure_starts_the_count_and_late_or_missing_contacts_count_as_late() {
        let calendar = Calendar::default();
        let accepted = monday() + DAY_MS;
        let ruling = monday() - 8 * DAY_MS;
        let measure = Measure { start_ms: ruling, end_ms: ruling + 300 * DAY_MS };
        let seen_late = case(
            monday(),
            GI,
            "rvdk-gi-measure",
            &[
                (accepted, HandoverEvent::MeasureSet { measure }),
                (accepted + 3_600_000, HandoverEvent::Done { clock: ClockKind::FirstContact }),
            ],
        );
        let never_seen = case(monday(), GI, "rvdk-gi-measure", &[]);
        let recent = case(monday() + 190 * DAY_MS, GI, "rvdk-gi-measure", &[]);
        let report = compute(&[seen_late, never_seen, recent], &Chain, &settings(1));
        // Seen the day after acceptance, but 6 working days after the ruling; never seen; too recent to tell.
        assert_eq!(cell(&report, "first_contact", "all", "all").values, [0.0, 1.0, 1.0, 1.0]);
        assert!(calendar.after_working_days(ruling, 5) < accepted);
    }

    #[test]
    fn escalations_and_reopenings_are_counted_by_kind_and_by_their_months() {
        let at = |days: u64| monday() + days * DAY_MS;
        let owner = member(GI, "jan.worker");
        let overdue = |clock| HandoverEvent::Escalated {
            escalation: Escalation::Overdue { clock, escalation: 1, owner: owner.clone() },
        };
        let closed = |day| {
            (at(day), HandoverEvent::Closed { outcome: "safe-at-home".into(), reason: "r".into(), reopen_until_ms: 0 })
        };
        let reopened = |ms| (ms, HandoverEvent::Reopened { reason: "r".into() });
        let cases = vec![
            case(
                at(0),
                GI,
                "rvdk-gi-measure",
                &[(at(10), overdue(ClockKind::FirstContact)), closed(20), reopened(add_months(at(20), 11))],
            ),
            case(
                at(0),
                GI,
                "rvdk-gi-measure",
                &[(at(15), overdue(ClockKind::SafetyPlan)), closed(20), reopened(add_months(at(20), 13))],
            ),
            case(at(0), GI, "rvdk-gi-measure", &[closed(20)]),
        ];
        let mut s = settings(1);
        s.until_ms = add_months(at(20), 16);
        let report = compute(&cases, &Chain, &s);
        assert_eq!(cell(&report, "escalations", "all", "all").values, [0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        // The offers were accepted, not completed: Veilig Thuis still held regie when it closed them.
        let reopened = cell(&report, "reopened", "organisation", "Veilig Thuis Utrecht");
        assert_eq!(reopened.values, [1.0, 1.0, 1.0, 0.0]);
        s.until_ms = at(200);
        let early = compute(&cases, &Chain, &s);
        assert_eq!(
            cell(&early, "reopened", "all", "all").values,
            [0.0, 0.0, 0.0, 3.0],
            "the reopenings are after the window's end"
        );
    }
}
