//! Harness for the HTTP integration tests: the real `griddav serve` binary
//! on a temporary data directory, a small HTTP/1.1 client that can
//! misbehave, generated content, and a look at the grid's directories.

#![allow(dead_code, unused_imports)]
// Each test crate includes this module privately: its `pub` items are
// the test crates' shared API, so `pub(crate)` would only add noise.
#![allow(unreachable_pub)]

pub mod content;
pub mod grid;
pub mod http;
pub mod server;

pub use content::{sha256_hex, Content};
pub use grid::GridFiles;
pub use http::{Client, Ending, Request, Response};
pub use server::{wait_until, Server};

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;

/// griddav's default `inline_threshold`: files up to this size live in the
/// namespace database, larger ones in the grid.
pub const INLINE_THRESHOLD: u64 = 16 * 1024;
