//! Everything between the socket and dav-server.

pub mod guard;
pub mod listener;
pub mod range;
pub mod roots;
pub mod tls;
