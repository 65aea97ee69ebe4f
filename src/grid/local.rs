//! A storage server that is a directory on a local file system.

/// Placeholder: implemented in its own change.
#[derive(Debug)]
pub struct LocalStore;
