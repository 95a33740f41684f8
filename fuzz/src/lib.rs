//! Shared pieces of the fuzz targets: the framing of the MLS targets' inputs.
//!
//! A libFuzzer input is one byte string, but the hub's MLS checks take several
//! (the identity CA, a thread id, a caller, a GroupInfo, a ratchet tree, commits). The MLS
//! targets therefore read their input as *sections*, each a 4-byte big-endian
//! length followed by that many bytes, so that the seeds made from real groups
//! (`cargo run -p tests --bin fuzz-seeds`, which writes the same framing) keep
//! their parts apart while libFuzzer mutates inside them. The format is
//! described in `docs/fuzzing.md`; it belongs to the fuzzers only.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use wire::{MemberId, ThreadId};

/// Splits `data` into length-prefixed sections. A length running past the end
/// ends the iteration; whatever follows is ignored, so every input is readable.
pub fn sections(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (head, rest) = data.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*head)).ok()?;
        if len > rest.len() {
            return None;
        }
        let (section, rest) = rest.split_at(len);
        data = rest;
        Some(section)
    })
}

/// The opening of an MLS target's input: a group to build, and what follows.
pub struct GroupInput<'a, R> {
    /// The identity CA the leaves must be bound to (from a PEM section).
    pub identities: certs::binding::Verifier,
    /// The thread (a 16-byte id).
    pub thread: ThreadId,
    /// The caller (written `OIN/worker`).
    pub caller: MemberId,
    /// The GroupInfo.
    pub group_info: &'a [u8],
    /// The ratchet tree.
    pub tree: &'a [u8],
    /// The sections after them (the commits).
    pub rest: R,
}

/// Reads the five sections that open an MLS target's input. `None` when one
/// is missing or the CA or the ids are malformed: the hub only ever calls its
/// MLS checks with a CA and ids it has already parsed.
pub fn group_input(data: &[u8]) -> Option<GroupInput<'_, impl Iterator<Item = &[u8]>>> {
    let mut parts = sections(data);
    let identities = certs::binding::Verifier::from_pem(parts.next()?).ok()?;
    let (thread, caller, group_info, tree) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let thread = ThreadId(uuid::Uuid::from_slice(thread).ok()?);
    let (oin, worker) = std::str::from_utf8(caller).ok()?.split_once('/')?;
    let caller = MemberId::new(oin, worker).ok()?;
    Some(GroupInput { identities, thread, caller, group_info, tree, rest: parts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_stop_at_a_length_past_the_end() {
        let mut data = Vec::new();
        data.extend_from_slice(&3u32.to_be_bytes());
        data.extend_from_slice(b"abc");
        data.extend_from_slice(&0u32.to_be_bytes());
        data.extend_from_slice(&9u32.to_be_bytes());
        data.extend_from_slice(b"short");
        let parts: Vec<&[u8]> = sections(&data).collect();
        assert_eq!(parts, [&b"abc"[..], &b""[..]]);
    }
}
