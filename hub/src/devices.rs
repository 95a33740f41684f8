//! An identity's devices, each with its own delivery cursor.
//!
//! A caseworker has a desk at the office and a laptop, each its own MLS leaf
//! (see `groups`) and its own state. If they shared one cursor, the laptop
//! acknowledging an entry would let retention delete content the desk has not
//! received yet. So a connection names its device (`/?device=ID` in its
//! WebSocket request; none names the identity's default device), and each
//! device has its own cursor per thread.
//!
//! The rules, all applied on the writer thread:
//! - A device seen for the first time starts in each of its identity's threads
//!   at the thread's last entry: its MLS group begins when it joins, so what
//!   came before is nothing it could read. Threads the identity joins later are
//!   delivered from the membership's start, as for any member. The identity's
//!   first named device instead takes over the default cursors, so that an SDK
//!   that named no device before loses nothing it had not acknowledged.
//! - At most `limits.max_devices_per_identity` devices are kept. A new device
//!   forgets those not seen for `limits.device_idle_days`, and over the bound
//!   takes the place of the one seen least recently (its records and cursors
//!   go in the same write): a worker who reinstalls is never locked out.
//! - Retention waits for every device seen within `device_idle_days`: a device
//!   away longer no longer holds content back, and when it comes back it gets
//!   what is left (expired entries as `expired`).

use serde::{Deserialize, Serialize};
use wire::calendar::DAY_MS;
use wire::{DeviceId, MemberDelivery, MemberId, ThreadId};

use crate::durability::{Write, WriteError};
use crate::session::{Caller, Hub};
use crate::store::{DeviceWrite, Store, StoreError};

/// How stale a device's `last_seen_ms` may get before a connection updates it.
const SEEN_GRANULARITY_MS: u64 = 60 * 60 * 1000;

/// What the hub remembers of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// When it first connected, in milliseconds since the Unix epoch.
    pub first_seen_ms: u64,
    /// When it last connected.
    pub last_seen_ms: u64,
}

/// The bounds on an identity's devices (`limits.max_devices_per_identity`, `limits.device_idle_days`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Devices kept per identity.
    pub max: usize,
    /// Days after which an unseen device no longer holds retention back, and may be forgotten.
    pub idle_days: u32,
}

impl DeviceLimits {
    fn idle_before(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(u64::from(self.idle_days) * DAY_MS)
    }
}

impl Hub {
    /// Records, before its delivery starts, that the caller's device has
    /// connected (see [`register`]); fails only when the write does.
    pub async fn register_device(&self, caller: &Caller) -> Result<(), wire::WireError> {
        // A device seen lately needs no write: idleness counts in days, and a
        // write per connection would cost every reconnect a trip to the writer.
        let known = self.store.devices(&caller.member).map_err(crate::session::internal)?;
        let recent = self.clock.now_ms().saturating_sub(SEEN_GRANULARITY_MS);
        if known.iter().any(|(d, r)| d == &caller.device && r.last_seen_ms >= recent) {
            return Ok(());
        }
        let write = Write::RegisterDevice {
            member: caller.member.clone(),
            device: caller.device.clone(),
            limits: self.limits.devices(),
        };
        let written = self.writes.submit(write, None).await.await.unwrap_or(Err(WriteError::Closed));
        written.map(drop).map_err(crate::session::not_durable)
    }
}

/// Records that `device` of `member` connected at `now_ms` (see the module's
/// rules), in one atomic write.
pub fn register(
    store: &dyn Store,
    member: &MemberId,
    device: &DeviceId,
    now_ms: u64,
    limits: DeviceLimits,
) -> Result<(), StoreError> {
    let mut known = store.devices(member)?;
    if let Some((_, record)) = known.iter().find(|(d, _)| d == device) {
        let record = DeviceRecord { last_seen_ms: now_ms, ..*record };
        return store.put_device(member, &DeviceWrite { device, record, starts: &[], forget: &[] });
    }
    let first_named = !device.is_default() && known.iter().all(|(d, _)| d.is_default());
    let starts = if first_named || device.is_default() {
        Vec::new()
    } else {
        store.threads_of(member)?.into_iter().map(|t| Ok((t, store.last_seq(t)?))).collect::<Result<_, StoreError>>()?
    };
    // Room is made by forgetting, least recently seen first, the devices idle
    // long enough, then, if need be, others: a worker who reinstalls is never
    // locked out, and the device forgotten is the one longest away.
    let over = (known.len() + 1).saturating_sub(limits.max.max(1));
    // The default device is never forgotten (its cursors are every device's starting point).
    known.retain(|(d, _)| !d.is_default());
    known.sort_by_key(|(_, r)| r.last_seen_ms);
    let idle = known.iter().filter(|(_, r)| r.last_seen_ms < limits.idle_before(now_ms)).count();
    let forget: Vec<DeviceId> = known.into_iter().take(idle.max(over)).map(|(d, _)| d).collect();
    let record = DeviceRecord { first_seen_ms: now_ms, last_seen_ms: now_ms };
    store.put_device(member, &DeviceWrite { device, record, starts: &starts, forget: &forget })
}

/// How far `member` has received `thread` for retention: the lowest cursor of
/// its devices seen within the idle period, or when none was, the highest of
/// all (what it received on any device).
pub fn received(
    store: &dyn Store,
    member: &MemberId,
    thread: ThreadId,
    now_ms: u64,
    limits: DeviceLimits,
) -> Result<u64, StoreError> {
    Ok(delivery(store, member, thread, now_ms, limits)?.every_device)
}

/// How far `member` has received `thread` on any device, and on every
/// device seen within the idle period (on any, when none was).
pub fn delivery(
    store: &dyn Store,
    member: &MemberId,
    thread: ThreadId,
    now_ms: u64,
    limits: DeviceLimits,
) -> Result<MemberDelivery, StoreError> {
    let devices = store.devices(member)?;
    let mut active = None::<u64>;
    let mut any = if devices.is_empty() { store.cursor(member, &DeviceId::default(), thread)? } else { 0 };
    for (device, record) in &devices {
        let cursor = store.cursor(member, device, thread)?;
        any = any.max(cursor);
        if record.last_seen_ms >= limits.idle_before(now_ms) {
            active = Some(active.map_or(cursor, |lowest| lowest.min(cursor)));
        }
    }
    Ok(MemberDelivery { member: member.clone(), any_device: any, every_device: active.unwrap_or(any) })
}
