//! A memory of whether keys exist, for the kinds of key the policy asks about
//! on every routed message.
//!
//! A message is checked twice against the same state: at the enforcement
//! point and again in write order (is the sender still a member, not a
//! read-only former owner, is the case still open). Each check is a point
//! read of a key that changes only with a membership or a handover, and on an
//! LSM engine such a read walks the in-memory table and every sorted file's
//! filter. This memory answers the repeats from RAM.
//!
//! It never answers from a state older than a write that has returned: the
//! engine forgets a key after every write to it, whatever the write's outcome
//! (a guard does it, so a write that panics part-way is no exception), and a
//! read that raced with such a write does not record what it read (a
//! generation counter, bumped by every forgetting, tells it so). The memory is
//! bounded in bytes (`store.presence_cache_bytes`) and starts again empty when
//! it is full, which costs only reads.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::{lock, StoreError};

/// What one remembered key is counted as beside its own bytes: the map's
/// slot (about 25 bytes, and up to twice that just after the table grew),
/// the boxed slice's allocation header and rounding, with room to spare.
const ENTRY_OVERHEAD: usize = 128;

/// Remembered presence of the keys whose first byte is one of `prefixes`.
#[derive(Debug)]
pub(super) struct Presence {
    prefixes: &'static [u8],
    budget: usize,
    known: Mutex<Known>,
}

#[derive(Debug, Default)]
struct Known {
    keys: HashMap<Box<[u8]>, bool>,
    bytes: usize,
    generation: u64,
}

impl Presence {
    /// A memory of at most `budget` bytes of the keys starting with one of
    /// `prefixes`; with no prefixes (or no budget) it remembers nothing.
    pub(super) fn new(prefixes: &'static [u8], budget: usize) -> Self {
        Self { prefixes, budget, known: Mutex::default() }
    }

    /// Its budget in bytes.
    pub(super) fn budget(&self) -> usize {
        self.budget
    }

    fn remembers(&self, key: &[u8]) -> bool {
        key.first().is_some_and(|first| self.prefixes.contains(first))
    }

    fn known(&self) -> MutexGuard<'_, Known> {
        // Every update below leaves the map and its byte count consistent
        // before anything can panic.
        lock(&self.known)
    }

    /// Whether `key` exists: remembered, or found by `read` and remembered.
    pub(super) fn contains(
        &self,
        key: &[u8],
        read: impl FnOnce() -> Result<bool, StoreError>,
    ) -> Result<bool, StoreError> {
        if !self.remembers(key) {
            return read();
        }
        let generation = {
            let known = self.known();
            if let Some(&present) = known.keys.get(key) {
                return Ok(present);
            }
            known.generation
        };
        // Read without the lock, so a slow read holds up no one else.
        let present = read()?;
        let mut known = self.known();
        if known.generation == generation {
            known.record(key, present, self.budget);
        }
        Ok(present)
    }

    /// A guard that forgets those of `keys` it remembers when dropped: held
    /// across a write to them, it forgets them once the write is made, has
    /// failed, or has panicked part-way (the writer thread survives a panic).
    pub(super) fn forgetting<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) -> Forgetting<'_> {
        let keys = keys.into_iter().filter(|key| self.remembers(key)).map(<[u8]>::to_vec).collect();
        Forgetting { presence: self, keys }
    }
}

/// Forgets its keys when dropped; see [`Presence::forgetting`].
#[must_use = "the keys are forgotten when the guard is dropped, which must be after the write"]
pub(super) struct Forgetting<'p> {
    presence: &'p Presence,
    keys: Vec<Vec<u8>>,
}

impl Drop for Forgetting<'_> {
    fn drop(&mut self) {
        if !self.keys.is_empty() {
            let mut known = self.presence.known();
            self.keys.iter().for_each(|key| known.forget(key));
        }
    }
}

impl Known {
    fn record(&mut self, key: &[u8], present: bool, budget: usize) {
        let cost = key.len() + ENTRY_OVERHEAD;
        if cost > budget {
            return;
        }
        if self.bytes + cost > budget {
            self.keys.clear();
            self.bytes = 0;
        }
        if self.keys.insert(key.into(), present).is_none() {
            self.bytes += cost;
        }
    }

    fn forget(&mut self, key: &[u8]) {
        if self.keys.remove(key).is_some() {
            self.bytes -= key.len() + ENTRY_OVERHEAD;
        }
        self.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn a_remembered_key_is_read_once_until_it_is_forgotten() {
        let presence = Presence::new(b"M", 1 << 20);
        let reads = Cell::new(0);
        let read = |answer| {
            reads.set(reads.get() + 1);
            Ok(answer)
        };
        assert!(!presence.contains(b"Mkey", || read(false)).unwrap());
        assert!(!presence.contains(b"Mkey", || read(true)).unwrap());
        assert_eq!(reads.get(), 1);
        drop(presence.forgetting([&b"Mkey"[..]]));
        assert!(presence.contains(b"Mkey", || read(true)).unwrap());
        assert_eq!(reads.get(), 2);
    }

    #[test]
    fn other_kinds_of_key_are_always_read() {
        let presence = Presence::new(b"M", 1 << 20);
        let reads = Cell::new(0);
        for _ in 0..3 {
            presence
                .contains(b"Ekey", || {
                    reads.set(reads.get() + 1);
                    Ok(true)
                })
                .unwrap();
        }
        assert_eq!(reads.get(), 3);
    }

    #[test]
    fn a_read_that_raced_with_a_write_is_not_remembered() {
        let presence = Presence::new(b"M", 1 << 20);
        // The read sees the state before a write; the write's forgetting
        // comes before the read records it.
        assert!(!presence
            .contains(b"Mkey", || {
                drop(presence.forgetting([&b"Mkey"[..]]));
                Ok(false)
            })
            .unwrap());
        assert!(presence.contains(b"Mkey", || Ok(true)).unwrap());
    }

    #[test]
    fn the_memory_stays_within_its_budget() {
        let budget = 10 * (4 + ENTRY_OVERHEAD);
        let presence = Presence::new(b"M", budget);
        for i in 0..1000u32 {
            let key = [b'M', (i >> 16) as u8, (i >> 8) as u8, i as u8];
            presence.contains(&key, || Ok(true)).unwrap();
            assert!(presence.known().bytes <= budget);
        }
        assert!(!presence.known().keys.is_empty());
        let none = Presence::new(b"M", 0);
        none.contains(b"Mkey", || Ok(true)).unwrap();
        assert!(none.known().keys.is_empty());
    }

    #[test]
    fn a_write_that_panics_part_way_still_forgets() {
        let presence = Presence::new(b"M", 1 << 20);
        presence.contains(b"Mkey", || Ok(true)).unwrap();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _forgetting = presence.forgetting([&b"Mkey"[..], b"Eother"]);
            panic!("the engine failed after making the write visible");
        }));
        assert!(panicked.is_err());
        assert!(!presence.contains(b"Mkey", || Ok(false)).unwrap());
    }

    #[test]
    fn a_key_recorded_twice_is_counted_once() {
        let presence = Presence::new(b"M", 1 << 20);
        presence.known().record(b"Mkey", true, 1 << 20);
        presence.known().record(b"Mkey", true, 1 << 20);
        assert_eq!(presence.known().bytes, 4 + ENTRY_OVERHEAD);
    }

    #[test]
    fn a_failed_read_is_not_remembered() {
        let presence = Presence::new(b"M", 1 << 20);
        assert!(presence.contains(b"Mkey", || Err(StoreError::Backend("disk".into()))).is_err());
        assert!(presence.contains(b"Mkey", || Ok(true)).unwrap());
    }
}
