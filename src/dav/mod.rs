//! The WebDAV face of griddav: dav-server's file system and lock system,
//! on the namespace and the engine.

pub mod allow;
mod complete;
mod fs;
pub mod link;
mod locks;
mod meta;
pub mod moving;
pub mod pending;
pub mod propstat;
mod read;
mod readers;
mod write;
pub mod xmlstream;

pub use fs::{GridFs, GridFsOptions};
pub use locks::NamespaceLockSystem;
