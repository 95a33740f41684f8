//! The audit log as a Merkle tree in the style of RFC 9162 (Certificate
//! Transparency 2.0), shared by the hub (which builds it and proves) and the
//! SDK and the `hub audit verify` command (which check).
//!
//! The leaves are the audit entries' chain hashes, in sequence order: leaf `i`
//! (from 0) is entry `seq = i + 1`. Hashes are SHA-256 with the RFC's domain
//! prefixes, so a leaf can never pass for an inner node:
//!
//! - leaf: `SHA-256(0x00 || entry_hash)`
//! - node: `SHA-256(0x01 || left || right)`
//! - the empty tree: `SHA-256("")`
//!
//! A tree of `n` leaves splits at the largest power of two below `n` (RFC 9162
//! §2.1.1). The hub keeps every *perfect* subtree's hash (`level`, `index`:
//! the subtree of `2^level` leaves starting at leaf `index * 2^level`), written
//! with the entry that completes it, so any subtree a proof needs costs at most
//! `log2 n` look-ups ([`subtree_hash`]). [`CompactRange`] is the writer's view:
//! the hashes of the perfect subtrees that make up the tree so far (one per set
//! bit of the size), from which the root and the nodes a new leaf completes
//! follow in O(log n).
//!
//! Inclusion proofs (§2.1.3) and consistency proofs (§2.1.4) are produced from
//! any node source and checked by [`verify_inclusion`] and
//! [`verify_consistency`], which implement the RFC's verification algorithms
//! step by step. Signed tree heads are [`crate::audit::SignedTreeHead`].

use ring::digest::{Context, SHA256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// SHA-256 over `parts`, one after the other.
pub fn sha256(parts: &[&[u8]]) -> Hash {
    let mut context = Context::new(&SHA256);
    for part in parts {
        context.update(part);
    }
    let mut out = [0u8; 32];
    // SHA-256 digests are 32 bytes by definition.
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// The hash of a leaf whose data is `data` (an entry's chain hash).
pub fn leaf_hash(data: &[u8]) -> Hash {
    sha256(&[&[0x00], data])
}

/// The hash of an inner node over its two children.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[0x01], left, right])
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    sha256(&[])
}

/// The largest power of two strictly below `n` (for `n >= 2`): where RFC 9162 splits a tree of `n` leaves.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// A perfect subtree the writer completed: `2^level` leaves from leaf `index << level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// The height: 0 for a leaf.
    pub level: u8,
    /// Its position among the subtrees of its level.
    pub index: u64,
    /// Its hash.
    pub hash: Hash,
}

/// The perfect subtrees that make up a tree of `size` leaves, largest (leftmost) first: the state a writer
/// needs to append and to compute the root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    /// `(level, hash)` for each set bit of `size`, from the highest.
    peaks: Vec<(u8, Hash)>,
}

impl CompactRange {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The range of a tree of `size` leaves, read from a node source (the hub's store).
    pub fn load<E>(size: u64, mut node: impl FnMut(u8, u64) -> Result<Hash, E>) -> Result<Self, E> {
        let mut peaks = Vec::new();
        let mut start = 0u64;
        for level in (0..64u8).rev() {
            if size & (1u64 << level) != 0 {
                peaks.push((level, node(level, start >> level)?));
                start += 1u64 << level;
            }
        }
        Ok(Self { size, peaks })
    }

    /// A range from its peaks as an export's `tree_prefix` line gives them; `None` when their number does
    /// not match `size`.
    pub fn from_peaks(size: u64, hashes: &[Hash]) -> Option<Self> {
        let levels: Vec<u8> = (0..64u8).rev().filter(|level| size & (1u64 << level) != 0).collect();
        (levels.len() == hashes.len())
            .then(|| Self { size, peaks: levels.into_iter().zip(hashes.iter().copied()).collect() })
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The peaks' hashes, largest subtree first.
    pub fn peaks(&self) -> Vec<Hash> {
        self.peaks.iter().map(|(_, hash)| *hash).collect()
    }

    /// Appends a leaf (already hashed with [`leaf_hash`]); returns every perfect subtree it completes, the
    /// leaf itself first, so that the caller can store them with the entry.
    pub fn append(&mut self, leaf: Hash) -> Vec<Node> {
        let mut completed = Vec::with_capacity(2);
        self.append_with(leaf, |node| completed.push(node));
        completed
    }

    /// Like [`CompactRange::append`], handing each completed subtree to `completed` without allocating:
    /// the verifier's hot path.
    pub fn append_with(&mut self, leaf: Hash, mut completed: impl FnMut(Node)) {
        let leaf_index = self.size;
        completed(Node { level: 0, index: leaf_index, hash: leaf });
        let mut current = (0u8, leaf);
        while let Some(&(level, left)) = self.peaks.last() {
            if level != current.0 {
                break;
            }
            self.peaks.pop();
            let merged = (level + 1, node_hash(&left, &current.1));
            completed(Node { level: merged.0, index: leaf_index >> merged.0, hash: merged.1 });
            current = merged;
        }
        self.peaks.push(current);
        self.size += 1;
    }

    /// The root: the peaks folded from the right (RFC 9162 splits at the largest power of two, which is
    /// exactly the leftmost peak).
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some((_, last)) = peaks.next() else { return empty_root() };
        peaks.fold(*last, |right, (_, left)| node_hash(left, &right))
    }
}

/// The hash of leaves `start..end` from a source of perfect-subtree hashes. `start` must be a multiple of
/// the largest power of two not above `end - start` (true of every subtree RFC 9162's recursion visits), so
/// only the right edge descends: at most `log2 n` look-ups.
pub fn subtree_hash<E>(start: u64, end: u64, node: &mut impl FnMut(u8, u64) -> Result<Hash, E>) -> Result<Hash, E> {
    let n = end - start;
    if n == 0 {
        return Ok(empty_root());
    }
    if n.is_power_of_two() && start.is_multiple_of(n) {
        let level = n.trailing_zeros() as u8;
        return node(level, start >> level);
    }
    let k = split(n);
    let left = subtree_hash(start, start + k, node)?;
    let right = subtree_hash(start + k, end, node)?;
    Ok(node_hash(&left, &right))
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves (RFC 9162 §2.1.3.1, `PATH`), from the
/// leaf upwards. Empty for a tree of one leaf; `None` from the caller's side when `index >= size`.
pub fn inclusion_proof<E>(
    index: u64,
    size: u64,
    node: &mut impl FnMut(u8, u64) -> Result<Hash, E>,
) -> Result<Vec<Hash>, E> {
    fn path<E>(
        m: u64,
        start: u64,
        end: u64,
        node: &mut impl FnMut(u8, u64) -> Result<Hash, E>,
        out: &mut Vec<Hash>,
    ) -> Result<(), E> {
        let n = end - start;
        if n <= 1 {
            return Ok(());
        }
        let k = split(n);
        if m < k {
            path(m, start, start + k, node, out)?;
            out.push(subtree_hash(start + k, end, node)?);
        } else {
            path(m - k, start + k, end, node, out)?;
            out.push(subtree_hash(start, start + k, node)?);
        }
        Ok(())
    }
    let mut out = Vec::new();
    if index < size {
        path(index, 0, size, node, &mut out)?;
    }
    Ok(out)
}

/// The consistency proof from the tree of `old` leaves to the tree of `new` leaves (RFC 9162 §2.1.4.1,
/// `PROOF`). Empty when `old` is 0 or `old == new` (nothing to prove) or `old > new` (nothing provable).
pub fn consistency_proof<E>(
    old: u64,
    new: u64,
    node: &mut impl FnMut(u8, u64) -> Result<Hash, E>,
) -> Result<Vec<Hash>, E> {
    fn subproof<E>(
        m: u64,
        start: u64,
        end: u64,
        whole: bool,
        node: &mut impl FnMut(u8, u64) -> Result<Hash, E>,
        out: &mut Vec<Hash>,
    ) -> Result<(), E> {
        let n = end - start;
        if m == n {
            if !whole {
                out.push(subtree_hash(start, end, node)?);
            }
            return Ok(());
        }
        let k = split(n);
        if m <= k {
            subproof(m, start, start + k, whole, node, out)?;
            out.push(subtree_hash(start + k, end, node)?);
        } else {
            subproof(m - k, start + k, end, false, node, out)?;
            out.push(subtree_hash(start, start + k, node)?);
        }
        Ok(())
    }
    let mut out = Vec::new();
    if old > 0 && old < new {
        subproof(old, 0, new, true, node, &mut out)?;
    }
    Ok(out)
}

/// Checks an inclusion proof (RFC 9162 §2.1.3.2): that the leaf with hash `leaf` is leaf `index` of the
/// tree of `size` leaves whose root is `root`.
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// Checks a consistency proof (RFC 9162 §2.1.4.2): that the tree of `old` leaves with root `old_root` is a
/// prefix of the tree of `new` leaves with root `new_root`. Equal sizes need equal roots and an empty proof;
/// the empty tree is a prefix of every tree; a shrinking tree is never consistent.
pub fn verify_consistency(old: u64, new: u64, old_root: &Hash, new_root: &Hash, proof: &[Hash]) -> bool {
    if old > new {
        return false;
    }
    if old == new {
        return proof.is_empty() && old_root == new_root;
    }
    if old == 0 {
        return proof.is_empty();
    }
    // When the old tree is a perfect subtree its root is the proof's implicit first element.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else { return false };
    let (mut fn_, mut sn) = (old - 1, new - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    fr == *old_root && sr == *new_root && sn == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::convert::Infallible;

    /// RFC 9162 §2.1.1's MTH, computed directly from the leaves: the reference everything is checked against.
    fn naive_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&naive_root(&leaves[..k]), &naive_root(&leaves[k..]))
            }
        }
    }

    fn naive_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = split(n as u64) as usize;
        if m < k {
            let mut p = naive_path(m, &leaves[..k]);
            p.push(naive_root(&leaves[k..]));
            p
        } else {
            let mut p = naive_path(m - k, &leaves[k..]);
            p.push(naive_root(&leaves[..k]));
            p
        }
    }

    fn naive_subproof(m: usize, leaves: &[Hash], whole: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if whole { Vec::new() } else { vec![naive_root(leaves)] };
        }
        let k = split(n as u64) as usize;
        if m <= k {
            let mut p = naive_subproof(m, &leaves[..k], whole);
            p.push(naive_root(&leaves[k..]));
            p
        } else {
            let mut p = naive_subproof(m - k, &leaves[k..], false);
            p.push(naive_root(&leaves[..k]));
            p
        }
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n as u64).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    /// Builds the node store a writer would have after appending `leaves`.
    fn store(leaves: &[Hash]) -> (CompactRange, HashMap<(u8, u64), Hash>) {
        let mut range = CompactRange::new();
        let mut nodes = HashMap::new();
        for leaf in leaves {
            for node in range.append(*leaf) {
                assert!(nodes.insert((node.level, node.index), node.hash).is_none(), "a node is written twice");
            }
        }
        (range, nodes)
    }

    fn source(nodes: &HashMap<(u8, u64), Hash>) -> impl FnMut(u8, u64) -> Result<Hash, Infallible> + '_ {
        move |level, index| Ok(nodes[&(level, index)])
    }

    const MAX: usize = 70;

    #[test]
    fn roots_and_stored_subtrees_match_the_naive_tree() {
        let all = leaves(MAX);
        let (_, nodes) = store(&all);
        for n in 0..=MAX {
            let (range, _) = store(&all[..n]);
            assert_eq!(range.root(), naive_root(&all[..n]), "root of {n}");
            let reloaded = CompactRange::load(n as u64, source(&nodes)).unwrap();
            assert_eq!(reloaded, range, "range of {n} reloaded from the nodes");
            assert_eq!(CompactRange::from_peaks(n as u64, &range.peaks()), Some(range.clone()));
            let mut get = source(&nodes);
            assert_eq!(subtree_hash(0, n as u64, &mut get).unwrap(), naive_root(&all[..n]));
        }
    }

    #[test]
    fn inclusion_proofs_match_the_naive_tree_and_verify_only_in_place() {
        let all = leaves(MAX);
        let (_, nodes) = store(&all);
        for n in 1..=MAX {
            let root = naive_root(&all[..n]);
            for m in 0..n {
                let proof = inclusion_proof(m as u64, n as u64, &mut source(&nodes)).unwrap();
                assert_eq!(proof, naive_path(m, &all[..n]), "path of {m} in {n}");
                assert!(verify_inclusion(m as u64, n as u64, &all[m], &proof, &root), "{m} in {n}");
                // The wrong place, the wrong size, the wrong leaf or a changed hash fail.
                assert!(!verify_inclusion(((m + 1) % n) as u64, n as u64, &all[m], &proof, &root) || n == 1);
                assert!(
                    !verify_inclusion(m as u64, n as u64 + 1, &all[m], &proof, &naive_root(&all[..=n.min(MAX - 1)]))
                        || n == MAX
                );
                assert!(!verify_inclusion(m as u64, n as u64, &all[(m + 1) % MAX], &proof, &root));
                if let Some(first) = proof.first() {
                    let mut bad = proof.clone();
                    bad[0] = node_hash(first, first);
                    assert!(!verify_inclusion(m as u64, n as u64, &all[m], &bad, &root));
                    assert!(!verify_inclusion(m as u64, n as u64, &all[m], &proof[1..], &root));
                }
            }
            assert!(!verify_inclusion(n as u64, n as u64, &all[0], &[], &root));
        }
    }

    #[test]
    fn consistency_proofs_match_the_naive_tree_and_catch_a_rewritten_prefix() {
        let all = leaves(MAX);
        let (_, nodes) = store(&all);
        let mut other = all.clone();
        for m in 0..=MAX {
            for n in m..=MAX {
                let proof = consistency_proof(m as u64, n as u64, &mut source(&nodes)).unwrap();
                if 0 < m && m < n {
                    assert_eq!(proof, naive_subproof(m, &all[..n], true), "proof {m} -> {n}");
                } else {
                    assert!(proof.is_empty());
                }
                let (old, new) = (naive_root(&all[..m]), naive_root(&all[..n]));
                assert!(verify_consistency(m as u64, n as u64, &old, &new, &proof), "{m} -> {n}");
                if m > 0 {
                    // A tree whose old part was rewritten (leaf m-1 changed) is not consistent with the old root.
                    other[m - 1] = leaf_hash(b"rewritten");
                    let forged = naive_root(&other[..n]);
                    assert!(!verify_consistency(m as u64, n as u64, &old, &forged, &proof), "forged {m} -> {n}");
                    other[m - 1] = all[m - 1];
                    // Nor does the proof pass for another old size.
                    if m < n && m > 1 {
                        assert!(!verify_consistency(m as u64 - 1, n as u64, &old, &new, &proof), "size {m} -> {n}");
                    }
                }
                if m < n {
                    assert!(!verify_consistency(n as u64, m as u64, &new, &old, &proof), "shrinking {n} -> {m}");
                }
            }
        }
    }

    #[test]
    fn appending_writes_each_perfect_subtree_once() {
        let all = leaves(MAX);
        let (range, nodes) = store(&all);
        // n leaves complete 2n - popcount(n) perfect subtrees.
        assert_eq!(nodes.len(), 2 * MAX - (MAX as u64).count_ones() as usize);
        assert_eq!(range.size(), MAX as u64);
    }

    proptest::proptest! {
        #[test]
        fn random_sizes_prove_and_verify(n in 1u64..2_000, m_frac in 0.0f64..1.0, o_frac in 0.0f64..1.0) {
            let all = leaves(n as usize);
            let (range, nodes) = store(&all);
            let root = range.root();
            let m = ((n as f64 * m_frac) as u64).min(n - 1);
            let proof = inclusion_proof(m, n, &mut source(&nodes)).unwrap();
            proptest::prop_assert!(verify_inclusion(m, n, &all[m as usize], &proof, &root));
            let old = (n as f64 * o_frac) as u64;
            let old_root = CompactRange::load(old, source(&nodes)).unwrap().root();
            let proof = consistency_proof(old, n, &mut source(&nodes)).unwrap();
            proptest::prop_assert!(verify_consistency(old, n, &old_root, &root, &proof));
        }
    }
}
