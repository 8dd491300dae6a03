//! The shard's internal handles: indices into its participant and track slabs. Plain
//! numbers, cheap to copy; every owner of one checks it is still live before use.

/// Index of a participant in the shard's slab.
pub(crate) type PKey = usize;
/// Index of a track in the shard's slab.
pub(crate) type TKey = usize;
/// Index of a remote publisher (one on another shard, `relay.rs`) in the shard's slab.
pub(crate) type RKey = usize;
