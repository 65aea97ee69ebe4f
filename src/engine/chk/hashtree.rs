//! Tahoe-LAFS's Merkle trees (allmydata/hashtree.py): a complete binary tree
//! stored as a flat list, node 0 the root, node i's children 2i+1 and 2i+2.
//! The leaves are padded to a power of two with `empty_leaf_hash(i)` (i the
//! leaf's position), internal nodes are `pair_hash(left, right)`.

use super::hashutil::{
    tagged_hash, tagged_pair_hash, Hash, MERKLE_EMPTY_LEAF_TAG, MERKLE_INTERNAL_NODE_TAG,
};

/// The leaf that pads a tree to a power of two at position `i`.
pub fn empty_leaf_hash(i: usize) -> Hash {
    tagged_hash(MERKLE_EMPTY_LEAF_TAG, i.to_string().as_bytes())
}

/// An internal node over its two children.
pub fn pair_hash(a: &Hash, b: &Hash) -> Hash {
    tagged_pair_hash(MERKLE_INTERNAL_NODE_TAG, a, b)
}

/// The smallest power of two >= x (1 for 0), as `roundup_pow2`.
pub fn roundup_pow2(x: usize) -> usize {
    x.max(1).next_power_of_two()
}

/// The whole tree over `leaves`, in Tahoe's node numbering
/// (2 * roundup_pow2(leaves) - 1 nodes).
pub fn hash_tree(leaves: &[Hash]) -> Vec<Hash> {
    let width = roundup_pow2(leaves.len());
    let mut nodes = vec![[0u8; 32]; 2 * width - 1];
    let first_leaf = width - 1;
    for i in 0..width {
        nodes[first_leaf + i] = match leaves.get(i) {
            Some(h) => *h,
            None => empty_leaf_hash(i),
        };
    }
    for i in (0..first_leaf).rev() {
        nodes[i] = pair_hash(&nodes[2 * i + 1], &nodes[2 * i + 2]);
    }
    nodes
}

/// The node numbers needed to check leaf `leaf` against the root, from the
/// leaf's sibling up (`needed_for`); with `include_leaf` the leaf too.
pub fn needed_hashes(num_leaves: usize, leaf: usize, include_leaf: bool) -> Vec<usize> {
    let width = roundup_pow2(num_leaves);
    let mut here = width - 1 + leaf;
    let mut needed = Vec::new();
    if include_leaf {
        needed.push(here);
    }
    while here != 0 {
        let sibling = if here % 2 == 1 { here + 1 } else { here - 1 };
        needed.push(sibling);
        here = (here - 1) / 2;
    }
    needed.sort_unstable();
    needed
}

/// Checks that `leaf_hash` is leaf `leaf` of a tree of `num_leaves` leaves
/// with root `root`, given the sibling hashes along its path (looked up by
/// node number in `nodes`). False if a needed node is missing.
pub fn verify_leaf(
    root: &Hash,
    num_leaves: usize,
    leaf: usize,
    leaf_hash: &Hash,
    nodes: &dyn Fn(usize) -> Option<Hash>,
) -> bool {
    let width = roundup_pow2(num_leaves);
    if leaf >= width {
        return false;
    }
    let mut here = width - 1 + leaf;
    let mut acc = *leaf_hash;
    while here != 0 {
        let (sibling, left) = if here % 2 == 1 {
            (here + 1, true)
        } else {
            (here - 1, false)
        };
        let Some(s) = nodes(sibling) else {
            return false;
        };
        acc = if left {
            pair_hash(&acc, &s)
        } else {
            pair_hash(&s, &acc)
        };
        here = (here - 1) / 2;
    }
    acc == *root
}
