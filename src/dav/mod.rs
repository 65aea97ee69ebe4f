//! The WebDAV face of griddav: dav-server's file system and lock system,
//! on the namespace and the engine.

pub mod allow;
mod fs;
mod locks;
mod meta;
pub mod moving;
pub mod pending;
pub mod propstat;
pub mod xmlstream;
mod read;
mod readers;
mod write;

pub use fs::{GridFs, GridFsOptions};
pub use locks::NamespaceLockSystem;
