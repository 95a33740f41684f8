//! Revocation and expiry that bite on live connections.
//!
//! rustls checks a client certificate's validity period and the CRLs once, in
//! a full handshake. That is not enough: a resumed TLS 1.3 session restores the
//! certificate without checking it, a connection stays open past its
//! certificate's `notAfter`, and a CRL published later concerns connections
//! opened before it. So the hub also checks the certificate itself after every
//! handshake (in `server`), closes each connection when its certificate expires
//! ([`expired`], in `connection`), and rereads the CRLs on SIGHUP and every
//! `tls.crl_reload_seconds` ([`Hub::reload_crls`]): new handshakes use the new
//! lists at once, and the open connections they refuse are audited, then closed
//! with a `forbidden` error frame naming the rule. A reread that fails leaves
//! the lists in force untouched.

use std::sync::Arc;
use std::time::Duration;

use certs::revocation::{merge_marks, rolled_back, utc, CertRefusal, CertValidity, RevocationLists};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use wire::audit::AuditOutcome;

use crate::delivery::{Farewell, Open};
use crate::durability::{Write, WriteError};
use crate::session::{reload_record, Hub, Refused};
use crate::store::{Store, StoreError};
use crate::tls::{now_secs, InForce, TlsError};

/// Resolves once `certificate` has expired, with the refusal to close its
/// connection with. It sleeps at most a day at a time, so a wall clock that was
/// set forward is noticed within a day at worst, and a far `notAfter` never
/// overflows a timer.
pub async fn expired(certificate: &CertValidity) -> CertRefusal {
    loop {
        let now = now_secs();
        if let Err(refusal @ CertRefusal::Expired { .. }) = certificate.check_period(now) {
            return refusal;
        }
        // Valid through its notAfter second: the first moment it is expired is the next second.
        let left = certificate.not_after().saturating_add(1).saturating_sub(now);
        tokio::time::sleep(Duration::from_secs(left.clamp(1, 86_400) as u64)).await;
    }
}

/// Refuses to start on a list older than one of its issuer the hub had in
/// force before, and otherwise remembers the lists it starts on, durably. It
/// writes to the store directly: it runs before the writer thread starts, so
/// nothing else writes.
pub fn start_no_older(store: &dyn Store, lists: &RevocationLists) -> Result<(), crate::server::ServeError> {
    let before = store.revocation_marks().map_err(|e| StoreError::Corrupt(format!("revocation marks (tag r): {e}")))?;
    let now = lists.marks();
    if let Some(older) = rolled_back(&now, &before) {
        return Err(TlsError::rolled_back(older).into());
    }
    store.put_revocation_marks(&merge_marks(&before, &now))?;
    store.flush()?;
    Ok(())
}

/// Says, in the log, which lists in force are past their `nextUpdate`, and
/// what that does.
pub fn warn_if_stale(in_force: &InForce, files: &str, allow_stale: bool) {
    for next_update in in_force.stale(now_secs()) {
        let effect = if allow_stale {
            "it still counts (tls.allow_stale_crl)"
        } else {
            "the certificates it covers are refused until a fresh one is published"
        };
        warn!(files, "a revocation list is out of date (its next update was due {}); {effect}", utc(next_update));
    }
}

/// The open connections whose certificate `lists` refuse at `now`.
fn refused_under(lists: &RevocationLists, now: i64) -> impl Fn(Open<'_>) -> Option<Farewell> + '_ {
    move |open| lists.check(open.certificate, now).err().map(|refusal| Farewell::certificate(&refusal))
}

impl Hub {
    /// Rereads the CRL files. A set that does not load (a file unreadable,
    /// garbled, or holding no CRL) is refused, logged and audited, and the lists
    /// in force stay. Otherwise the new lists, and the closing of every open
    /// connection they refuse, are audited before they take effect; from then
    /// on new handshakes use them and those connections receive nothing more.
    pub async fn reload_crls(&self) {
        let _alone = self.certificates.rereading().await;
        let files = self.certificates.crl_files();
        let refused = Refused { what: "CRL reload refused", stays: "the revocation lists in force stay" };
        let Some(candidate) = self.reread(&files, self.certificates.read_again(), refused).await else { return };
        warn_if_stale(&candidate, &files, self.certificates.allows_stale());
        let now = now_secs();
        let changed = !candidate.same_lists(&self.certificates.current());
        if changed {
            // Checked against and merged into the newest lists the hub has had in force, in the
            // writer, before they take effect: a list of an issuer with none in force now (its
            // file dropped, then put back) must not be older either, and a restart on an older
            // list is refused. A refusal is audited as the reload's failure.
            let record = reload_record(&files, AuditOutcome::Allowed, "crl-reloaded".to_owned());
            let marks = Write::RevocationMarks { newer: candidate.lists.marks() };
            if let Err(e) = self.writes.submit(marks, Some(record)).await.await.unwrap_or(Err(WriteError::Closed)) {
                error!(files, "CRL reload refused, the revocation lists in force stay: {e}");
                return;
            }
        }
        let records = self.registry.refused_by(refused_under(&candidate.lists, now));
        if let Err(e) = self.audit_all(records).await {
            error!(error = %e, "cannot audit the CRL reload; the revocation lists in force stay");
            return;
        }
        let lists = candidate.lists.clone();
        self.certificates.install(candidate);
        self.registry.revoke(refused_under(&lists, now));
        if changed {
            info!(files, "revocation lists reloaded");
        } else {
            debug!(files, "revocation lists unchanged");
        }
    }
}

/// Rereads the CRLs every `every` until shutdown.
pub async fn crl_reloads(hub: Arc<Hub>, every: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(every);
    // A slow reread (a store that stalls its audit entry) is not made up for with a burst.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate, and the lists were read a moment ago at start.
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => hub.reload_crls().await,
        }
    }
}
