//! Everything between the socket and dav-server.

pub mod listener;
pub mod range;
