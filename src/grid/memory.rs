//! A storage server in memory, for tests and benchmarks.

/// Placeholder: implemented in its own change.
#[derive(Debug)]
pub struct MemoryStore;
