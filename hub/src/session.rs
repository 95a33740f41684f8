//! The state every connection of a running hub shares, who is calling, and
//! what the hub does on its own rather than for one request: rereading the
//! policy, sweeping retention, recording connections.
//!
//! The requests themselves are handled in [`crate::requests`], one module per
//! family; they all build on what is here, so nothing here depends on them.

use std::net::SocketAddr;
use std::sync::Arc;

use tracing::error;
use wire::audit::{AuditAction, AuditOutcome, AuditRecord};
use wire::{ErrorCode, Identity, MemberId, WireError};

use crate::audit::{self, Recorder};
use crate::clock::Clock;
use crate::config::Limits;
use crate::delivery::{Farewell, Registry};
use crate::durability::{Write, WriteError, WriteLog, Written};
use crate::policy::{Policy, PolicySource};
use crate::store::{Store, StoreError};
use certs::revocation::CertValidity;
use wire::handover::Calendar;

/// The state shared by every connection of a running hub.
pub struct Hub {
    /// The store, for reads; writes go through [`Hub::writes`].
    pub store: Arc<dyn Store>,
    /// The write path.
    pub writes: WriteLog,
    /// The online connections.
    pub registry: Arc<Registry>,
    /// The limits in force.
    pub limits: Limits,
    /// The need-to-know policy.
    pub policy: Arc<PolicySource>,
    /// How often, at most, the audit chain is checkpointed while idle.
    pub checkpoint_every_ms: u64,
    /// The clock handover deadlines run on (tests move it).
    pub clock: Clock,
    /// Working days for handover deadlines.
    pub calendar: Calendar,
    /// The per-identity quotas' counters.
    pub quotas: crate::quotas::Quotas,
    /// Refused handshakes of the current interval, for aggregated audit entries.
    pub refusals: crate::admission::Refusals,
    /// The hub-wide budget of bytes queued towards connections.
    pub outbound: Arc<tokio::sync::Semaphore>,
    /// The TLS configuration and the CRLs in force.
    pub certificates: Arc<crate::tls::Certificates>,
}

/// The authenticated party behind a connection.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The identity from its certificate.
    pub identity: Identity,
    /// Its member id (derived once from the identity).
    pub member: MemberId,
    /// The SHA-256 fingerprint of its certificate.
    pub fingerprint: String,
    /// Its certificate's validity period and serial, checked again over the
    /// connection's life.
    pub certificate: CertValidity,
    /// Its network address.
    pub peer: SocketAddr,
    /// Which of the identity's devices it is (see `crate::devices`).
    pub device: wire::DeviceId,
}

impl Caller {
    /// A caller with the given identity, certificate (fingerprint and
    /// validity) and address.
    pub fn new(identity: Identity, fingerprint: String, certificate: CertValidity, peer: SocketAddr) -> Self {
        let member = identity.member_id();
        Self { identity, member, fingerprint, certificate, peer, device: wire::DeviceId::default() }
    }
}

/// The caller learns only that nothing changed: what failed in the store is for the log, not the wire.
pub(crate) fn internal(e: StoreError) -> WireError {
    error!(error = %e, "store failure");
    WireError::new(ErrorCode::Internal, "the hub could not complete the request; nothing was changed")
}

/// How a refused reread is told: `what` was refused, and what `stays` in force.
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    /// For example "policy reload refused"; its kebab case is the audit rule.
    pub what: &'static str,
    /// What stays in force instead.
    pub stays: &'static str,
}

/// The audit record of a reload of `object` (the policy file, the CRL files):
/// what the hub puts in force decides who is admitted, so both are `policy_reload`.
pub fn reload_record(object: &str, outcome: AuditOutcome, rule: String) -> AuditRecord {
    AuditRecord {
        object: Some(object.to_owned()),
        outcome,
        rule,
        ..audit::blank_record(AuditAction::PolicyReload, None)
    }
}

/// The connections a policy change from `before` to `after` no longer admits.
fn no_longer_admits<'a>(
    before: &'a Policy,
    after: &'a Policy,
) -> impl Fn(crate::delivery::Open<'_>) -> Option<Farewell> + 'a {
    move |open| (!PolicySource::keeps(before, after, open.identity)).then(Farewell::policy)
}

/// A refusal from the writer thread reaches the caller as it stands; any other failure only says to retry.
pub(crate) fn not_durable(e: WriteError) -> WireError {
    match e {
        WriteError::Refused(refusal) => refusal,
        WriteError::Store(StoreError::NoSuchThread) => WireError::thread_not_found(),
        WriteError::Stalled => WireError::new(ErrorCode::Unavailable, e.to_string()),
        e => {
            error!(error = %e, "write failed");
            WireError::new(ErrorCode::Unavailable, "the hub could not make the change durable; retry")
        }
    }
}

impl Hub {
    /// Builds the shared state around a store; starts the writer thread.
    pub fn new(
        store: Arc<dyn Store>,
        limits: Limits,
        policy: Arc<PolicySource>,
        recorder: Recorder,
        clock: Clock,
        calendar: Calendar,
        certificates: Arc<crate::tls::Certificates>,
    ) -> std::io::Result<Arc<Self>> {
        let registry = Registry::new(limits.max_connections_per_identity);
        let checkpoint_every_ms = recorder.checkpoint_every_ms();
        let writes = WriteLog::start(store.clone(), registry.clone(), recorder, certificates.identities())?;
        let quotas = crate::quotas::Quotas::default();
        let refusals = crate::admission::Refusals::default();
        let outbound =
            Arc::new(tokio::sync::Semaphore::new(limits.outbound_total_bytes.min(tokio::sync::Semaphore::MAX_PERMITS)));
        Ok(Arc::new(Self {
            writes,
            store,
            registry,
            limits,
            policy,
            checkpoint_every_ms,
            clock,
            calendar,
            quotas,
            refusals,
            outbound,
            certificates,
        }))
    }

    /// Reloads the policy file; a file that does not validate leaves the policy
    /// in force. The reload, and the closing of every connection the new policy
    /// no longer admits, are audited before they take effect; those
    /// connections receive nothing once it is in force.
    pub async fn reload_policy(&self) {
        let path = self.policy.path().display().to_string();
        let refused = Refused { what: "policy reload refused", stays: "the previous policy stays in force" };
        let Some(candidate) = self.reread(&path, self.policy.read_again(), refused).await else { return };
        let before = self.policy.current();
        let mut records = vec![reload_record(&path, AuditOutcome::Allowed, "policy-reloaded".to_owned())];
        records.extend(self.registry.refused_by(no_longer_admits(&before, &candidate)));
        if let Err(e) = self.audit_all(records).await {
            error!(error = %e, "cannot audit the policy reload; the previous policy stays in force");
            return;
        }
        self.policy.install(candidate);
        let after = self.policy.current();
        self.registry.revoke(no_longer_admits(&before, &after));
        tracing::info!(file = %path, "policy reloaded");
        self.sync_inboxes().await;
    }

    /// Makes the organisations' inboxes hold the members the policy in force
    /// names; a failure is logged, and the next start or reload tries again.
    pub async fn sync_inboxes(&self) {
        let members = self.policy.current().inboxes();
        let written = self.writes.submit(Write::Inboxes { members }, None).await;
        if let Err(e) = written.await.unwrap_or(Err(WriteError::Closed)) {
            error!(error = %e, "cannot bring the organisations' inboxes in line with the policy");
        }
    }

    /// The result of rereading `object`; a failure is logged and audited
    /// (outcome failed, rule `what` in kebab case) and gives `None`: what is in force stays.
    pub async fn reread<T, E: std::fmt::Display>(
        &self,
        object: &str,
        read: Result<T, E>,
        refused: Refused,
    ) -> Option<T> {
        let e = match read {
            Ok(candidate) => return Some(candidate),
            Err(e) => e,
        };
        error!("{}, {}: {e}", refused.what, refused.stays);
        let rule = format!("{}: {e}", refused.what.to_lowercase().replace(' ', "-"));
        let _ = self.audit_all(vec![reload_record(object, AuditOutcome::Failed, rule)]).await;
        None
    }

    /// Writes `records` to the audit log, one after another, until one fails.
    pub async fn audit_all(&self, records: Vec<AuditRecord>) -> Result<(), WriteError> {
        for record in records {
            self.writes.submit(Write::Audit, Some(record)).await.await.unwrap_or(Err(WriteError::Closed))?;
        }
        Ok(())
    }

    /// Runs a retention sweep at `now_ms` with the policy's periods and records
    /// what it deleted.
    pub async fn sweep_retention(&self, now_ms: u64) -> Result<crate::retention::Swept, WireError> {
        let retention = self.policy.current().retention.clone();
        let devices = self.limits.devices();
        let written = self.writes.submit(Write::Retention { retention, devices, now_ms }, None).await;
        match written.await.unwrap_or(Err(WriteError::Closed)) {
            Ok(Written::Swept(swept)) => Ok(swept),
            Ok(other) => Err(WireError::new(ErrorCode::Internal, format!("unexpected {other:?}"))),
            Err(e) => Err(not_durable(e)),
        }
    }

    /// Takes no more connections, stops delivery on every one still open and records what each
    /// delivered and has not recorded yet: at shutdown, before the log is
    /// sealed, for connections that outlast the grace (a client that does not
    /// read holds its writer and pump).
    pub async fn record_open_deliveries(&self) {
        for (mailbox, template) in self.registry.close_registrations() {
            mailbox.close();
            self.recorder(template).record_left(&mailbox).await;
        }
    }

    /// The recorder of the deliveries to `caller`'s connection.
    pub fn delivery_log(&self, caller: &Caller) -> crate::delivery::DeliveryLog {
        self.recorder(self.delivery_record(caller))
    }

    /// The recorder of deliveries whose entries start from `template`.
    fn recorder(&self, template: AuditRecord) -> crate::delivery::DeliveryLog {
        crate::delivery::DeliveryLog { writes: self.writes.clone(), template }
    }

    /// The audit record of deliveries to this caller's connection.
    pub fn delivery_record(&self, caller: &Caller) -> AuditRecord {
        AuditRecord {
            actor: Some(audit::actor(&caller.identity, &caller.fingerprint)),
            rule: "member-of-case".into(),
            ..audit::blank_record(AuditAction::Deliver, Some(caller.peer))
        }
    }

    /// Records a connection, or a refused handshake (with no caller), in the
    /// audit log, and waits until the entry is durable.
    pub async fn audit_connection(
        &self,
        caller: Option<&Caller>,
        peer: SocketAddr,
        action: AuditAction,
        outcome: AuditOutcome,
        why: &str,
    ) -> Result<(), WireError> {
        let record = AuditRecord {
            actor: caller.map(|c| audit::actor(&c.identity, &c.fingerprint)),
            outcome,
            rule: why.to_owned(),
            ..audit::blank_record(action, Some(peer))
        };
        let durable = self.writes.submit(Write::Audit, Some(record)).await;
        durable.await.unwrap_or(Err(WriteError::Closed)).map(drop).map_err(not_durable)
    }
}
