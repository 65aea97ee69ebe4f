//! Pseudo-random test content generated on the fly, with random access:
//! any byte range of a large body can be produced (to stream it, or to
//! compare a Range GET against it) without keeping the body in memory.

use sha2::{Digest, Sha256};

/// `len` pseudo-random bytes determined by `seed`.
#[derive(Debug, Clone, Copy)]
pub struct Content {
    pub seed: u64,
    pub len: u64,
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Content {
    pub fn new(seed: u64, len: u64) -> Content {
        Content { seed, len }
    }

    fn word(&self, index: u64) -> [u8; 8] {
        splitmix64(self.seed.wrapping_mul(0xD134_2543_DE82_EF95) ^ index).to_le_bytes()
    }

    /// Fills `buf` with the bytes starting at `offset` (past the end is not checked).
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        let mut pos = offset;
        let mut out = 0;
        while out < buf.len() {
            let word = self.word(pos / 8);
            let start = (pos % 8) as usize;
            let take = (8 - start).min(buf.len() - out);
            buf[out..out + take].copy_from_slice(&word[start..start + take]);
            out += take;
            pos += take as u64;
        }
    }

    /// The bytes in `start..end`.
    pub fn slice(&self, start: u64, end: u64) -> Vec<u8> {
        assert!(start <= end && end <= self.len, "slice out of range");
        let mut buf = vec![0u8; (end - start) as usize];
        self.fill(start, &mut buf);
        buf
    }

    /// The whole content (only for small bodies).
    pub fn bytes(&self) -> Vec<u8> {
        self.slice(0, self.len)
    }

    /// The content as pieces of `piece` bytes (the last one shorter).
    pub fn pieces(&self, piece: usize) -> Pieces {
        assert!(piece > 0, "piece size must not be zero");
        Pieces {
            content: *self,
            offset: 0,
            piece,
        }
    }

    /// Hex SHA-256 of the whole content.
    pub fn sha256(&self) -> String {
        let mut hasher = Sha256::new();
        for piece in self.pieces(1 << 20) {
            hasher.update(&piece);
        }
        hex::encode(hasher.finalize())
    }
}

/// Iterator over a [`Content`] in pieces.
pub struct Pieces {
    content: Content,
    offset: u64,
    piece: usize,
}

impl Iterator for Pieces {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.offset >= self.content.len {
            return None;
        }
        let end = (self.offset + self.piece as u64).min(self.content.len);
        let piece = self.content.slice(self.offset, end);
        self.offset = end;
        Some(piece)
    }
}

/// Hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
