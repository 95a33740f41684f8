//! Who may start a handshake, and how refused handshakes reach the audit log.
//!
//! A TLS handshake costs the hub far more than it costs the peer, and a slot
//! held by a handshake that never finishes is a slot nobody else gets. So
//! pending handshakes are bounded per source address and in total, apart from
//! the open connections (which are taken only once a peer has authenticated):
//! one address flooding the hub with half-open connections cannot lock out
//! everyone else. And since every refusal would otherwise be an audit entry
//! through the single writer, refusals are aggregated: the first refusal of a
//! source address for a reason is recorded at once, the rest of the interval
//! as one entry with a count.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use crate::config::Limits;
use crate::locks::lock;

/// Pending handshakes, per source address and in total.
#[derive(Debug)]
pub struct Admission {
    per_address: usize,
    total: usize,
    pending: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Why a handshake was not even started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotAdmitted {
    /// This source address has `limits.max_handshakes_per_address` pending.
    #[error("too many pending handshakes from this address")]
    Address,
    /// The hub has `limits.max_pending_handshakes` pending.
    #[error("too many pending handshakes")]
    Total,
}

impl Admission {
    /// Bounds from the hub's limits.
    pub fn new(limits: &Limits) -> Arc<Self> {
        Arc::new(Self {
            per_address: limits.max_handshakes_per_address,
            total: limits.max_pending_handshakes,
            pending: Mutex::new((0, HashMap::new())),
        })
    }

    /// Admits a handshake from `ip`; it counts as pending until the result is dropped.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Pending, NotAdmitted> {
        let mut pending = lock(&self.pending);
        if pending.0 >= self.total {
            return Err(NotAdmitted::Total);
        }
        let from = pending.1.entry(ip).or_default();
        if *from >= self.per_address {
            return Err(NotAdmitted::Address);
        }
        *from += 1;
        pending.0 += 1;
        Ok(Pending { admission: self.clone(), ip })
    }
}

/// A handshake in progress; dropping it frees its place.
#[derive(Debug)]
pub struct Pending {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut pending = lock(&self.admission.pending);
        pending.0 = pending.0.saturating_sub(1);
        if let Some(from) = pending.1.get_mut(&self.ip) {
            *from -= 1;
            if *from == 0 {
                pending.1.remove(&self.ip);
            }
        }
    }
}

/// Refused handshakes of the current interval, by source address and reason.
#[derive(Debug, Default)]
pub struct Refusals {
    seen: Mutex<HashMap<(IpAddr, String), (SocketAddr, u64)>>,
}

impl Refusals {
    /// Notes a refusal; true when it is the first of its address and reason in
    /// this interval, and so is to be recorded on its own at once.
    pub fn first(&self, peer: SocketAddr, reason: &str) -> bool {
        let mut seen = lock(&self.seen);
        match seen.get_mut(&(peer.ip(), reason.to_owned())) {
            Some((_, more)) => {
                *more += 1;
                false
            }
            None => {
                seen.insert((peer.ip(), reason.to_owned()), (peer, 0));
                true
            }
        }
    }

    /// Ends the interval: the refusals that were not recorded on their own, as
    /// (a peer, the reason, how many).
    pub fn drain(&self) -> Vec<(SocketAddr, String, u64)> {
        let mut seen = lock(&self.seen);
        seen.drain()
            .filter(|(_, (_, more))| *more > 0)
            .map(|((_, reason), (peer, more))| (peer, reason, more))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_handshakes_are_bounded_per_address_and_in_total() {
        let limits = Limits { max_handshakes_per_address: 2, max_pending_handshakes: 3, ..Limits::default() };
        let admission = Admission::new(&limits);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        let first = admission.admit(a).unwrap();
        let _second = admission.admit(a).unwrap();
        assert_eq!(admission.admit(a).unwrap_err(), NotAdmitted::Address);
        let _third = admission.admit(b).unwrap();
        assert_eq!(admission.admit(b).unwrap_err(), NotAdmitted::Total);
        drop(first);
        assert!(admission.admit(a).is_ok(), "a finished handshake frees its place");
    }

    #[test]
    fn refusals_are_recorded_once_then_counted() {
        let refusals = Refusals::default();
        let peer: SocketAddr = "127.0.0.2:4000".parse().unwrap();
        assert!(refusals.first(peer, "UnknownIssuer"));
        assert!(!refusals.first("127.0.0.2:4001".parse().unwrap(), "UnknownIssuer"));
        assert!(!refusals.first(peer, "UnknownIssuer"));
        assert!(refusals.first(peer, "Expired"));
        assert_eq!(refusals.drain(), vec![(peer, "UnknownIssuer".to_owned(), 2)]);
        assert!(refusals.first(peer, "UnknownIssuer"), "a new interval records anew");
    }
}
