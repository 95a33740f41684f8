//! The hub's one way of taking a mutex, poisoned or not.
//!
//! A thread that panics while it holds a `std::sync::Mutex` poisons it. Every
//! mutex in the hub is held only by code that leaves its data whole before
//! anything can panic, and the writer thread survives a panic and goes on, so
//! a poisoned lock is still usable: refusing it would turn one panic into a
//! hub that can no longer route, count quotas or admit connections.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, poisoned or not.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
