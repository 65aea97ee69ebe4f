//! griddav: a WebDAV server that streams uploads, encrypted and
//! erasure-coded, into a grid of storage servers.
//!
//! ```text
//!   client --HTTP--> dav --> namespace (SQLite: names, properties, locks)
//!                     |
//!                     +----> engine (segment, AES-256-CTR, Reed-Solomon, hash trees)
//!                               |
//!                               +--> grid (ShareStore: local directories, Tahoe-LAFS)
//! ```
//!
//! The arrows point one way: the engine knows nothing of WebDAV, the grid
//! knows nothing of files or keys.

pub mod auth;
pub mod config;
pub mod dav;
pub mod engine;
pub mod gc;
pub mod grid;
pub mod http;
pub mod metrics;
pub mod namespace;
pub mod repair;
pub mod server;
pub mod snapshot;
