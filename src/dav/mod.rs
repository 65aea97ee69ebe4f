mod locks;
pub use locks::NamespaceLockSystem;
