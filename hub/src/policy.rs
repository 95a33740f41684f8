//! Need-to-know policy: who may do what, decided in one place.
//!
//! The policy file (TOML; `deploy/policy.toml` is the annotated example) names
//! the organisations of the chain, the handover routes between agency kinds with
//! the legal bases allowed on each, what each role may do, and how long content
//! and audit entries are kept. The hub loads it at start and on SIGHUP; a file
//! that does not validate is refused and the policy in force stays.
//!
//! The [`Policy`]'s checks (such as [`Policy::may_add`] and [`Policy::role_allows`]) are
//! the only place a request is allowed or denied. It
//! denies by default: an action is allowed only when a rule says so, and every
//! decision carries the name of the rule that made it, for the audit log.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::Deserialize;
use wire::{AgencyKind, Identity, MemberId, Oin, Role};

/// A policy file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("invalid policy file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said.
        message: String,
    },
    /// The file parses but contradicts itself.
    #[error("invalid policy: {0}")]
    Invalid(String),
}

/// What a role may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Open a case thread.
    CreateThread,
    /// Add a member to a case.
    AddMember,
    /// Send messages and attachments, and change the thread's MLS group.
    Send,
    /// Read a case: receive its entries, list members, fetch attachments.
    Read,
    /// Query the audit log within the role's scope.
    AuditQuery,
    /// Offer, answer and complete warm handovers.
    Handover,
}

/// An organisation of the chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organisation {
    /// Its OIN.
    pub oin: Oin,
    /// Its name.
    pub name: String,
    /// Its kind of agency.
    pub kind: AgencyKind,
    /// Its region (gemeente or jeugdregio).
    pub region: String,
    /// The workers (by worker id) who lead its teams: they may reassign a
    /// case of the organisation to a colleague and take over a case whose
    /// owner is away, and they receive the organisation's inbox.
    #[serde(default)]
    pub team_leads: Vec<String>,
    /// The workers who answer urgent offers (the on-call role): they receive
    /// the organisation's inbox.
    #[serde(default)]
    pub on_call: Vec<String>,
    /// The worker ids of the organisation's `system` identities (its case
    /// systems): they receive the organisation's inbox.
    #[serde(default)]
    pub systems: Vec<String>,
}

impl Organisation {
    /// Who receives the organisation's inbox: its system identities, team
    /// leads and on-call workers, each once.
    pub fn inbox(&self) -> Vec<MemberId> {
        let workers: BTreeSet<&String> = self.systems.iter().chain(&self.team_leads).chain(&self.on_call).collect();
        workers.into_iter().map(|w| MemberId { oin: self.oin.clone(), worker: w.clone() }).collect()
    }
}

/// The durations the policy sets for every case, beside those of each route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clocks {
    /// Days a former owner keeps its background role, unless its route says otherwise (30).
    #[serde(default = "thirty")]
    pub background_days: u32,
    /// Days from scheduling to a VT re-check (rappel; 91, three months).
    #[serde(default = "ninety_one")]
    pub rappel_days: u32,
    /// Days before a measure ends that the renewal (or ending) is due (56: the
    /// court needs the request weeks before the end).
    #[serde(default = "fifty_six")]
    pub renewal_days_before: u32,
    /// The longest period a measure, or an extension, is registered for
    /// (a measure runs six months to a year at a time).
    #[serde(default = "a_year")]
    pub measure_max_days: u32,
}

impl Default for Clocks {
    fn default() -> Self {
        Self {
            background_days: thirty(),
            rappel_days: ninety_one(),
            renewal_days_before: fifty_six(),
            measure_max_days: a_year(),
        }
    }
}

fn fifty_six() -> u32 {
    56
}

fn thirty() -> u32 {
    30
}

fn ninety_one() -> u32 {
    // Three months as the field counts them, independent of month lengths.
    91
}

/// The longest period any clock or duration of the policy may have: ten
/// years, so that counting working days always ends soon.
const MAX_DAYS: u32 = 3_650;

/// How the organisation inbox treats offers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inbox {
    /// An offer whose deadline is at most this many hours away is urgent: it
    /// reaches the receiving organisation's inbox even when it names a
    /// worker, and when it expires the escalation reaches that inbox too.
    #[serde(default = "four")]
    pub urgent_hours: u32,
}

impl Default for Inbox {
    fn default() -> Self {
        Self { urgent_hours: four() }
    }
}

fn four() -> u32 {
    4
}

/// A kind of agency the chain knows: routes and organisations name it, and a
/// certificate's `OU` carries its code.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kind {
    /// Its code, for example `VT`.
    pub code: AgencyKind,
    /// Its name as the desk and the reports show it, for example `Veilig Thuis`.
    pub name: String,
}

/// A legal basis for sharing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegalBasis {
    /// The code used in requests, for example `consent`.
    pub code: String,
    /// What it is, for reports.
    pub description: String,
    /// True when it allows sharing without the family's consent (on safety
    /// grounds): such a share needs a written justification and review.
    #[serde(default)]
    pub without_consent: bool,
    /// What it means, in plain words for the family's access report (in the
    /// family's language, Dutch in the sample); `description` when absent.
    #[serde(default)]
    pub family_words: Option<String>,
}

/// A handover route between agency kinds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Its name, for example `vt-lt-referral`.
    pub name: String,
    /// The kind of the organisation that brings the other in.
    pub from: AgencyKind,
    /// The kind of the organisation brought in.
    pub to: AgencyKind,
    /// The legal bases allowed on it (codes from `legal_bases`).
    pub legal_bases: Vec<String>,
    /// Working days from acceptance by which the receiver completes the
    /// handover; past it the case escalates to the owner. None: no deadline.
    #[serde(default)]
    pub completion_days: Option<u32>,
    /// Separation of duties: the offering worker must never have taken part in
    /// the case in these roles (the court request is filed by someone outside
    /// the safety team, who worked the case as co-workers).
    #[serde(default)]
    pub offerer_not_among: Vec<wire::handover::ParticipantRole>,
    /// Working days from acceptance to the first face-to-face contact, escalated then (a court measure: 5).
    #[serde(default)]
    pub first_contact_days: Option<u32>,
    /// Working days after that escalation until a second one (a court measure: 5 more).
    #[serde(default)]
    pub first_contact_again_days: Option<u32>,
    /// Days from acceptance to the safety plan, escalated then (a court measure: 91, three months).
    #[serde(default)]
    pub safety_plan_days: Option<u32>,
    /// Days the former owner keeps its background role after completion; the
    /// `[clocks] background_days` when left out.
    #[serde(default)]
    pub background_days: Option<u32>,
    /// The former owner keeps its background role until the measure ends
    /// (from the dates the case system registered), instead of for a number of days.
    #[serde(default)]
    pub background_until_measure_ends: bool,
    /// A route to a limited recipient (a school, a GP, the police): who it
    /// brings in receives only what is shared in a side thread of the case,
    /// never the case thread itself, and no case is offered on it.
    #[serde(default)]
    pub limited: bool,
}

/// How long the hub keeps things.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Days message content and attachments are kept after every member received them.
    pub content_days: u32,
    /// Years audit entries are kept.
    #[serde(default = "five")]
    pub audit_years: u32,
}

fn five() -> u32 {
    5
}

/// How long consultants and co-workers may take part in a case before the
/// owner renews their participation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Participation {
    /// The longest a consultant's participation may run, in days from now.
    #[serde(default = "ninety")]
    pub consultant_max_days: u32,
    /// The longest a co-worker's participation may run, in days from now.
    #[serde(default = "a_year")]
    pub co_worker_max_days: u32,
}

impl Default for Participation {
    fn default() -> Self {
        Self { consultant_max_days: ninety(), co_worker_max_days: a_year() }
    }
}

/// How cases are closed: the outcomes an owner chooses from, and how long a
/// closed case may be reopened before the hub archives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Closing {
    /// The outcome codes, for example `safe-at-home`.
    #[serde(default = "default_outcomes")]
    pub outcomes: Vec<String>,
    /// Days after closing in which the case may be reopened; then its memberships end.
    #[serde(default = "fifteen_months")]
    pub reopen_days: u32,
}

impl Default for Closing {
    fn default() -> Self {
        Self { outcomes: default_outcomes(), reopen_days: fifteen_months() }
    }
}

fn default_outcomes() -> Vec<String> {
    ["safe-at-home", "handed-to-regular-care", "moved-out-of-region", "came-of-age", "no-concern-found"]
        .map(str::to_owned)
        .to_vec()
}

fn fifteen_months() -> u32 {
    // 31 % of cases return within 12 to 15 months: the reopening period covers that.
    456
}

fn ninety() -> u32 {
    90
}

fn a_year() -> u32 {
    365
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    retention: Retention,
    #[serde(default)]
    kinds: Vec<Kind>,
    #[serde(default)]
    organisations: Vec<Organisation>,
    #[serde(default)]
    legal_bases: Vec<LegalBasis>,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    roles: HashMap<String, BTreeSet<Action>>,
    #[serde(default)]
    participation: Participation,
    #[serde(default)]
    closing: Closing,
    #[serde(default)]
    inbox: Inbox,
    #[serde(default)]
    clocks: Clocks,
}

/// A validated policy.
#[derive(Debug)]
pub struct Policy {
    kinds: BTreeMap<AgencyKind, Kind>,
    organisations: HashMap<Oin, Organisation>,
    bases: HashMap<String, LegalBasis>,
    routes: Vec<Route>,
    roles: HashMap<Role, BTreeSet<Action>>,
    /// The retention periods.
    pub retention: Retention,
    /// The longest participations.
    pub participation: Participation,
    /// The outcomes and reopening period of closed cases.
    pub closing: Closing,
    /// How the organisation inbox treats offers.
    pub inbox: Inbox,
    /// The durations for every case.
    pub clocks: Clocks,
}

/// Why an add is justified, as the caller states it.
#[derive(Debug, Clone, Copy)]
pub struct Grounds<'a> {
    /// The reason given.
    pub reason: &'a str,
    /// The legal basis code given.
    pub legal_basis: &'a str,
}

/// A decision, naming the rule that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the action may go ahead.
    pub allowed: bool,
    /// The rule's name.
    pub rule: &'static str,
    /// A readable explanation.
    pub reason: String,
}

impl Decision {
    fn allow(rule: &'static str, reason: impl Into<String>) -> Self {
        Self { allowed: true, rule, reason: reason.into() }
    }

    fn deny(rule: &'static str, reason: impl Into<String>) -> Self {
        Self { allowed: false, rule, reason: reason.into() }
    }
}

/// The kinds the file declares, once each, and every kind an organisation or a
/// route names among them: a typo in a kind would otherwise be a route no one can take.
fn declared_kinds(file: &PolicyFile) -> Result<BTreeMap<AgencyKind, Kind>, PolicyError> {
    let mut kinds = BTreeMap::new();
    for kind in &file.kinds {
        if kinds.insert(kind.code, kind.clone()).is_some() {
            return Err(PolicyError::Invalid(format!("kind {} is listed twice", kind.code)));
        }
    }
    let named = file.organisations.iter().map(|o| (o.kind, format!("organisation {}", o.oin)));
    let named = named.chain(
        file.routes.iter().flat_map(|r| [(r.from, format!("route {}", r.name)), (r.to, format!("route {}", r.name))]),
    );
    for (kind, by) in named {
        if !kinds.contains_key(&kind) {
            return Err(PolicyError::Invalid(format!("{by} names kind {kind}, which [[kinds]] does not declare")));
        }
    }
    Ok(kinds)
}

fn role_from_key(key: &str) -> Option<Role> {
    [Role::Caseworker, Role::System, Role::PrivacyOfficer, Role::Admin].into_iter().find(|r| r.code() == key)
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read { path: shown.clone(), source })?;
        Self::parse(&text).map_err(|e| match e {
            PolicyError::Parse { message, .. } => PolicyError::Parse { path: shown, message },
            other => other,
        })
    }

    /// Parses and validates policy text.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|e| PolicyError::Parse { path: String::new(), message: e.to_string() })?;
        let kinds = declared_kinds(&file)?;
        let mut organisations = HashMap::new();
        for org in file.organisations {
            let workers = org.team_leads.iter().chain(&org.on_call).chain(&org.systems);
            if let Some(bad) = workers.into_iter().find(|w| wire::identity::validate_worker(w).is_err()) {
                return Err(PolicyError::Invalid(format!("{bad:?} of {} is not a worker id", org.oin)));
            }
            if let Some(old) = organisations.insert(org.oin.clone(), org) {
                return Err(PolicyError::Invalid(format!("OIN {} is listed twice", old.oin)));
            }
        }
        let mut bases = HashMap::new();
        for basis in file.legal_bases {
            if let Some(old) = bases.insert(basis.code.clone(), basis) {
                return Err(PolicyError::Invalid(format!("legal basis {} is listed twice", old.code)));
            }
        }
        let mut names = BTreeSet::new();
        for route in &file.routes {
            if !names.insert(route.name.as_str()) {
                return Err(PolicyError::Invalid(format!("route {} is listed twice", route.name)));
            }
            if route.name == wire::handover::REASSIGNMENT_ROUTE {
                return Err(PolicyError::Invalid(format!("route name {} is reserved for reassignments", route.name)));
            }
            let durations = [
                route.completion_days,
                route.first_contact_days,
                route.first_contact_again_days,
                route.safety_plan_days,
                route.background_days,
            ];
            if route.limited && (durations.iter().any(Option::is_some) || !route.offerer_not_among.is_empty()) {
                return Err(PolicyError::Invalid(format!("route {} is limited: no case is offered on it", route.name)));
            }
            if durations.iter().flatten().any(|d| !(1..=MAX_DAYS).contains(d)) {
                let name = &route.name;
                return Err(PolicyError::Invalid(format!("route {name} has a clock of 0 days or over {MAX_DAYS}")));
            }
            if route.background_until_measure_ends && route.background_days.is_some() {
                let name = &route.name;
                return Err(PolicyError::Invalid(format!(
                    "route {name} sets background_days and until the measure ends"
                )));
            }
            if route.first_contact_again_days.is_some() && route.first_contact_days.is_none() {
                let name = &route.name;
                return Err(PolicyError::Invalid(format!(
                    "route {name} repeats a first-contact clock it does not start"
                )));
            }
            if route.legal_bases.is_empty() {
                return Err(PolicyError::Invalid(format!("route {} allows no legal basis", route.name)));
            }
            if let Some(unknown) = route.legal_bases.iter().find(|b| !bases.contains_key(*b)) {
                return Err(PolicyError::Invalid(format!("route {} names unknown legal basis {unknown}", route.name)));
            }
        }
        for route in file.routes.iter().filter(|r| r.limited) {
            // Else a limited recipient could be put on the case on the other route between the same kinds.
            let other = file.routes.iter().find(|o| !o.limited && o.from == route.from && o.to == route.to);
            if let Some(other) = other {
                let (limited, open) = (&route.name, &other.name);
                return Err(PolicyError::Invalid(format!(
                    "route {limited} is limited and {open} between the same kinds is not"
                )));
            }
        }
        let mut roles = HashMap::new();
        for (key, actions) in file.roles {
            let role = role_from_key(&key).ok_or_else(|| PolicyError::Invalid(format!("unknown role {key}")))?;
            roles.insert(role, actions);
        }
        if file.retention.content_days == 0 || file.retention.audit_years == 0 {
            return Err(PolicyError::Invalid("retention periods must be greater than zero".into()));
        }
        let participation = file.participation;
        if participation.consultant_max_days == 0 || participation.co_worker_max_days == 0 {
            return Err(PolicyError::Invalid("participation periods must be greater than zero".into()));
        }
        let closing = file.closing;
        if closing.outcomes.is_empty() || closing.reopen_days == 0 {
            return Err(PolicyError::Invalid("closing needs at least one outcome and a reopening period".into()));
        }
        let retention = file.retention;
        let inbox = file.inbox;
        if inbox.urgent_hours == 0 || inbox.urgent_hours > 24 * MAX_DAYS {
            return Err(PolicyError::Invalid("[inbox] urgent_hours is 1 hour to ten years".into()));
        }
        let clocks = file.clocks;
        let periods = [clocks.background_days, clocks.rappel_days, clocks.renewal_days_before, clocks.measure_max_days];
        if periods.iter().any(|d| !(1..=MAX_DAYS).contains(d)) {
            return Err(PolicyError::Invalid(format!("[clocks] periods are 1 to {MAX_DAYS} days")));
        }
        let routes = file.routes;
        Ok(Self { kinds, organisations, bases, routes, roles, retention, participation, closing, inbox, clocks })
    }

    /// The kind of agency with this code, if the policy declares it.
    pub fn kind(&self, code: &AgencyKind) -> Option<&Kind> {
        self.kinds.get(code)
    }

    /// Whether a certificate with this identity may connect at all: its
    /// organisation is in the policy, and the certificate's kind (`OU`) is the
    /// one the policy gives that organisation. The hub decides routes by the
    /// policy's kind; a certificate claiming another would make the audit log
    /// and the MLS credentials name a kind the organisation is not.
    pub fn admits(&self, identity: &Identity) -> Result<(), Decision> {
        let Some(org) = self.organisation(&identity.oin) else {
            return Err(Decision::deny("unknown-organisation", format!("{} is not in the policy", identity.oin)));
        };
        if org.kind != identity.kind {
            let why = format!("the certificate says {}, the policy says {} is {}", identity.kind, org.name, org.kind);
            return Err(Decision::deny("kind-mismatch", why));
        }
        Ok(())
    }

    /// The organisation with this OIN, if the policy knows it.
    pub fn organisation(&self, oin: &Oin) -> Option<&Organisation> {
        self.organisations.get(oin)
    }

    /// A legal basis by code.
    pub fn legal_basis(&self, code: &str) -> Option<&LegalBasis> {
        self.bases.get(code)
    }

    /// Every legal basis, by code.
    pub fn legal_bases(&self) -> Vec<&LegalBasis> {
        let mut all: Vec<&LegalBasis> = self.bases.values().collect();
        all.sort_by(|a, b| a.code.cmp(&b.code));
        all
    }

    /// What the family's access report needs from the policy: its legal bases in words and its
    /// organisations' names; `answered_by` is the officer's organisation.
    pub fn glossary(&self, answered_by: &str) -> ketenhub_sdk::report::Glossary {
        let bases = self
            .legal_bases()
            .into_iter()
            .map(|b| {
                (b.code.clone(), (b.family_words.clone().unwrap_or_else(|| b.description.clone()), b.without_consent))
            })
            .collect();
        let organisations = self.organisations.values().map(|o| (o.oin.to_string(), o.name.clone())).collect();
        ketenhub_sdk::report::Glossary { bases, organisations, answered_by: answered_by.to_owned() }
    }

    /// A route by name.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }

    /// Every organisation the policy knows, by name (for a desk's choice of receiver).
    pub fn organisations(&self) -> Vec<&Organisation> {
        let mut all: Vec<&Organisation> = self.organisations.values().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Who receives each organisation's inbox.
    pub fn inboxes(&self) -> Vec<(Oin, Vec<MemberId>)> {
        self.organisations.values().map(|o| (o.oin.clone(), o.inbox())).collect()
    }

    /// The clocks an accepted offer on route `name` starts (none for an unknown route or a reassignment).
    pub fn route_clocks(&self, name: &str) -> wire::handover::RouteClocks {
        self.route(name).map_or_else(Default::default, |r| wire::handover::RouteClocks {
            first_contact_days: r.first_contact_days,
            first_contact_again_days: r.first_contact_again_days,
            safety_plan_days: r.safety_plan_days,
            completion_days: r.completion_days,
        })
    }

    /// The days of the background role after a handover on route `name` of a
    /// case whose measure ends in `to_measure_end` days, if registered.
    pub fn background_days(&self, name: &str, to_measure_end: Option<u32>) -> u32 {
        let route = self.route(name);
        match (route.is_some_and(|r| r.background_until_measure_ends), to_measure_end) {
            (true, Some(days)) => days,
            _ => route.and_then(|r| r.background_days).unwrap_or(self.clocks.background_days),
        }
    }

    /// Whether an offer made at `now_ms` with this deadline is urgent.
    pub fn is_urgent(&self, deadline_ms: u64, now_ms: u64) -> bool {
        deadline_ms.saturating_sub(now_ms) <= u64::from(self.inbox.urgent_hours) * 3_600_000
    }

    /// Whether `member` leads a team of its organisation (`team_leads` in the policy).
    pub fn is_team_lead(&self, member: &MemberId) -> bool {
        self.organisation(&member.oin).is_some_and(|o| o.team_leads.contains(&member.worker))
    }

    /// Every handover route, in the policy's order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Who acts: the caller, or for a `system` identity the worker of its own
    /// organisation it names. `Err` is the denial.
    pub fn actor(&self, caller: &Identity, on_behalf_of: Option<&MemberId>) -> Result<MemberId, Decision> {
        if self.organisation(&caller.oin).is_none() {
            return Err(Decision::deny("unknown-organisation", format!("{} is not in the policy", caller.oin)));
        }
        match (caller.role, on_behalf_of) {
            (Role::System, None) => {
                Err(Decision::deny("system-names-worker", "a system identity must name the worker it acts for"))
            }
            (Role::System, Some(member)) if member == &caller.member_id() => Err(Decision::deny(
                "system-names-worker",
                "a system identity must name a worker of its organisation, not itself",
            )),
            (Role::System, Some(member)) if member.oin != caller.oin => Err(Decision::deny(
                "system-own-organisation",
                format!("a system of {} may act only for its own workers, not for {member}", caller.oin),
            )),
            (Role::System, Some(member)) => {
                wire::identity::validate_worker(&member.worker)
                    .map_err(|e| Decision::deny("system-names-worker", e.to_string()))?;
                Ok(member.clone())
            }
            (_, Some(_)) => Err(Decision::deny("on-behalf-only-for-system", "only a system identity acts for others")),
            (_, None) => Ok(caller.member_id()),
        }
    }

    /// Whether the caller's role may take `action` at all.
    pub fn role_allows(&self, role: Role, action: Action) -> Decision {
        if self.roles.get(&role).is_some_and(|actions| actions.contains(&action)) {
            Decision::allow("role-permits", format!("role {} may {action:?}", role.code()))
        } else {
            Decision::deny("role-forbids", format!("role {} may not {action:?}", role.code()))
        }
    }

    /// Whether `outcome` is one the policy lets a case close with.
    pub fn may_close(&self, outcome: &str) -> Decision {
        if self.closing.outcomes.iter().any(|o| o == outcome) {
            Decision::allow("outcome-in-policy", format!("outcome {outcome}"))
        } else {
            Decision::deny("unknown-outcome", format!("{outcome:?} is not an outcome in the policy"))
        }
    }

    /// Whether a participation in `role` may run `for_ms` from now (the
    /// sharing itself is [`Policy::may_add`]'s to decide).
    pub fn may_take_part(&self, for_ms: u64, role: wire::handover::ParticipantRole) -> Decision {
        let days = match role {
            wire::handover::ParticipantRole::Consultant => self.participation.consultant_max_days,
            wire::handover::ParticipantRole::CoWorker => self.participation.co_worker_max_days,
        };
        if for_ms > u64::from(days) * wire::calendar::DAY_MS {
            return Decision::deny(
                "participation-too-long",
                format!("a {role:?} takes part for at most {days} days at a time; renew it before it ends"),
            );
        }
        Decision::allow("participation-within-limit", format!("at most {days} days"))
    }

    /// Whether `by` (of kind `from`) may bring `member` into a case, or into
    /// one of its side threads (`side`), on these grounds.
    pub fn may_add(&self, by: &MemberId, member: &MemberId, grounds: Grounds<'_>, side: bool) -> Decision {
        if grounds.reason.trim().is_empty() {
            return Decision::deny("add-needs-reason", "adding a member needs a reason");
        }
        let Some(target) = self.organisation(&member.oin) else {
            return Decision::deny("member-unknown-organisation", format!("{} is not in the policy", member.oin));
        };
        let Some(from) = self.organisation(&by.oin) else {
            return Decision::deny("unknown-organisation", format!("{} is not in the policy", by.oin));
        };
        if self.legal_basis(grounds.legal_basis).is_none() {
            return Decision::deny("unknown-legal-basis", format!("no legal basis {}", grounds.legal_basis));
        }
        if from.oin == target.oin {
            return Decision::allow("same-organisation", format!("a colleague at {}", from.name));
        }
        let routes: Vec<&Route> = self.routes.iter().filter(|r| r.from == from.kind && r.to == target.kind).collect();
        if routes.is_empty() {
            return Decision::deny(
                "no-route",
                format!("no route from {} to {} in the policy", from.kind.code(), target.kind.code()),
            );
        }
        let fits: Vec<&&Route> =
            routes.iter().filter(|r| r.legal_bases.iter().any(|b| b == grounds.legal_basis)).collect();
        match fits.iter().find(|r| side || !r.limited).or(fits.first()) {
            Some(route) if route.limited && !side => Decision::deny(
                "limited-recipient",
                format!(
                    "route {} is limited: its recipients receive only what a side thread of the case shares",
                    route.name
                ),
            ),
            Some(route) => Decision::allow("route-permits", format!("route {}", route.name)),
            None => Decision::deny(
                "basis-not-on-route",
                format!(
                    "legal basis {} is not allowed from {} to {}",
                    grounds.legal_basis,
                    from.kind.code(),
                    target.kind.code()
                ),
            ),
        }
    }
}

/// The policy in force and the file it came from; reloaded on SIGHUP.
#[derive(Debug)]
pub struct PolicySource {
    path: std::path::PathBuf,
    current: std::sync::RwLock<std::sync::Arc<Policy>>,
}

impl PolicySource {
    /// Loads the policy file; the hub does not start without a valid one.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let policy = Policy::load(path)?;
        Ok(Self { path: path.to_owned(), current: std::sync::RwLock::new(std::sync::Arc::new(policy)) })
    }

    /// The policy in force. A request keeps the policy it started with.
    pub fn current(&self) -> std::sync::Arc<Policy> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the file again without putting it in force; on any error the
    /// policy in force stays and the error is returned.
    pub fn read_again(&self) -> Result<Policy, PolicyError> {
        Policy::load(&self.path)
    }

    /// Puts a policy read by [`PolicySource::read_again`] in force.
    pub fn install(&self, policy: Policy) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(policy);
    }

    /// Reads the file again and puts it in force; on any error the policy in
    /// force stays and the error is returned.
    pub fn reload(&self) -> Result<(), PolicyError> {
        self.install(self.read_again()?);
        Ok(())
    }

    /// Whether an open connection with a certificate of `identity`, admitted
    /// under `before`, stays open under `after`: `after` still admits it (its
    /// organisation, of the same kind), and a role that received case entries may still read.
    pub fn keeps(before: &Policy, after: &Policy, identity: &Identity) -> bool {
        let reads = |policy: &Policy| policy.role_allows(identity.role, Action::Read).allowed;
        after.admits(identity).is_ok() && (!reads(before) || reads(after))
    }

    /// The policy file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Policy {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/policy.toml");
        Policy::load(&path).unwrap()
    }

    fn member(oin: &str, worker: &str) -> MemberId {
        MemberId { oin: oin.parse().unwrap(), worker: worker.into() }
    }

    const VT: &str = "00000001800000000001";
    const LT: &str = "00000001800000000002";
    const GI: &str = "00000001800000000005";

    #[test]
    fn the_example_policy_loads() {
        let policy = example();
        assert!(policy.route("vt-lt-referral").is_some());
        assert_eq!(policy.retention.audit_years, 5);
    }

    #[test]
    fn adds_need_a_reason_a_route_and_a_basis_on_it() {
        let policy = example();
        let (vt, lt, gi) = (member(VT, "a"), member(LT, "b"), member(GI, "c"));
        let grounds = |basis| Grounds { reason: "referral after a report", legal_basis: basis };
        assert_eq!(policy.may_add(&vt, &lt, grounds("consent"), false).rule, "route-permits");
        assert_eq!(
            policy.may_add(&vt, &lt, Grounds { reason: " ", legal_basis: "consent" }, false).rule,
            "add-needs-reason"
        );
        assert_eq!(policy.may_add(&vt, &gi, grounds("consent"), false).rule, "no-route");
        assert_eq!(policy.may_add(&vt, &lt, grounds("ots-measure"), false).rule, "basis-not-on-route");
        assert_eq!(policy.may_add(&vt, &lt, grounds("made-up"), false).rule, "unknown-legal-basis");
        assert_eq!(policy.may_add(&vt, &member(VT, "z"), grounds("consent"), false).rule, "same-organisation");
        let stranger = member("00000009999999999999", "x");
        assert_eq!(policy.may_add(&vt, &stranger, grounds("consent"), false).rule, "member-unknown-organisation");
    }

    #[test]
    fn a_limited_recipient_is_added_to_a_side_thread_only() {
        let policy = example();
        let (vt, school) = (member(VT, "a"), member("00000001800000000006", "mentor"));
        let grounds = Grounds { reason: "attendance question", legal_basis: "consent" };
        assert_eq!(policy.may_add(&vt, &school, grounds, false).rule, "limited-recipient");
        assert_eq!(policy.may_add(&vt, &school, grounds, true).rule, "route-permits");
        // A side thread is no way around the routes: the basis must still be on one.
        let unlisted = Grounds { reason: "attendance question", legal_basis: "ots-measure" };
        assert_eq!(policy.may_add(&vt, &school, unlisted, true).rule, "basis-not-on-route");
    }

    #[test]
    fn a_limited_route_has_no_open_route_beside_it() {
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/policy.toml")).unwrap();
        let open_beside = format!("{text}\n[[routes]]\nname = \"vt-gp-referral\"\nfrom = \"VT\"\nto = \"OTHER\"\nlegal_bases = [\"consent\"]\n");
        let refused = Policy::parse(&open_beside).unwrap_err().to_string();
        assert!(refused.contains("vt-school-question is limited and vt-gp-referral"), "{refused}");
    }

    #[test]
    fn contradictions_are_refused() {
        let base = "[retention]\ncontent_days = 30\n[[kinds]]\ncode = \"VT\"\nname = \"\"\n[[kinds]]\ncode = \"LT\"\nname = \"\"\n";
        let twice = format!("{base}[[legal_bases]]\ncode = \"a\"\ndescription = \"\"\n[[legal_bases]]\ncode = \"a\"\ndescription = \"\"\n");
        assert!(matches!(Policy::parse(&twice), Err(PolicyError::Invalid(m)) if m.contains("twice")));
        let unknown = format!("{base}[[routes]]\nname = \"r\"\nfrom = \"VT\"\nto = \"LT\"\nlegal_bases = [\"nope\"]\n");
        assert!(matches!(Policy::parse(&unknown), Err(PolicyError::Invalid(m)) if m.contains("nope")));
        assert!(matches!(Policy::parse("[retention]\ncontent_dayz = 1\n"), Err(PolicyError::Parse { .. })));
        assert!(matches!(Policy::parse(&format!("{base}[roles]\nboss = []\n")), Err(PolicyError::Invalid(_))));
        let basis = "[[legal_bases]]\ncode = \"a\"\ndescription = \"\"\n";
        let route = |clocks: &str| {
            format!(
                "{base}{basis}[[routes]]\nname = \"r\"\nfrom = \"VT\"\nto = \"LT\"\nlegal_bases = [\"a\"]\n{clocks}"
            )
        };
        let zero = route("safety_plan_days = 0\n");
        assert!(matches!(Policy::parse(&zero), Err(PolicyError::Invalid(m)) if m.contains("0 days")));
        let forever = route("completion_days = 4000000000\n");
        assert!(matches!(Policy::parse(&forever), Err(PolicyError::Invalid(m)) if m.contains("over 3650")));
        let again = route("first_contact_again_days = 5\n");
        assert!(matches!(Policy::parse(&again), Err(PolicyError::Invalid(m)) if m.contains("does not start")));
        let never = format!("{base}[clocks]\nrappel_days = 0\n");
        assert!(matches!(Policy::parse(&never), Err(PolicyError::Invalid(m)) if m.contains("[clocks]")));
        assert!(Policy::parse(&route("first_contact_days = 5\nfirst_contact_again_days = 5\n")).is_ok());
    }

    #[test]
    fn kinds_are_declared_once_and_everything_names_a_declared_one() {
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/policy.toml")).unwrap();
        let policy = Policy::parse(&text).unwrap();
        assert_eq!(policy.kind(&AgencyKind::RVDK).map(|k| k.name.as_str()), Some("Raad voor de Kinderbescherming"));
        let twice = format!("{text}\n[[kinds]]\ncode = \"GI\"\nname = \"again\"\n");
        assert!(Policy::parse(&twice).unwrap_err().to_string().contains("kind GI is listed twice"));
        let typo = text.replacen("to = \"GI\"", "to = \"Gi\"", 1);
        let refused = Policy::parse(&typo).unwrap_err().to_string();
        assert!(refused.contains("names kind Gi, which [[kinds]] does not declare"), "{refused}");
        let malformed = text.replacen("code = \"OTHER\"", "code = \"OVER IG\"", 1);
        assert!(matches!(Policy::parse(&malformed), Err(PolicyError::Parse { .. })));
    }
}
