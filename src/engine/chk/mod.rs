//! `tahoe-chk`: Tahoe-LAFS's immutable (CHK) file format, byte for byte, so
//! that stock Tahoe reads what griddav writes and griddav reads what Tahoe
//! wrote. Sans-I/O like the rest of the engine's coding core: bytes in,
//! bytes out; where the shares live is the grid's business (so the arrows
//! stay `engine -> grid`, and nothing here knows WebDAV or a backend).
//!
//! ```text
//! zfec.rs      zfec's k-of-n code (Tahoe's "crs" codec)
//! ```

pub mod zfec;
