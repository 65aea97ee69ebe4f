//! zfec's erasure code, byte-identical with the `zfec` package Tahoe-LAFS uses.
//!
//! zfec (Rizzo's `fec.c`) works in GF(2^8) with the polynomial
//! x^8 + x^4 + x^3 + x^2 + 1 (0x11d, the same field as reed-solomon-erasure's),
//! but its systematic matrix differs: it starts from the n-by-k Vandermonde
//! matrix whose rows are the powers of the points 0, 1, a, a^2, ... (a = x),
//! inverts the top k-by-k part with zfec's own Vandermonde inversion, and
//! multiplies the bottom n-k rows by that inverse. Shares 0..k-1 are the
//! input blocks themselves.
//!
//! The matrix is built by a line-for-line port of `fec_new` and
//! `_invert_vdm`; the bulk work (a coefficient times a block, added into
//! another) goes through reed-solomon-erasure's table-driven kernels (SIMD
//! when the `simd-accel` feature is on), since multiplication in one field is
//! the same whatever matrix uses it. Decoding inverts the k-by-k submatrix of
//! the shares at hand (Gauss-Jordan); the inverse is unique, so any correct
//! inversion gives zfec's result.
//!
//! Proven against vectors from the real package: tests/chk/zfec_vectors.json,
//! made by tests/chk/make_zfec_vectors.py.

use std::sync::OnceLock;

use reed_solomon_erasure::galois_8;

/// zfec's limit: share numbers are one byte.
pub const MAX_SHARES: usize = 256;

/// Why zfec refused its input.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs)] // fields are named in each variant's message
pub enum ZfecError {
    /// k or n out of zfec's range.
    #[error("zfec parameters {k}-of-{n} out of range (1 <= k <= n <= 256)")]
    BadParams { k: usize, n: usize },
    /// Decoding got other than k blocks.
    #[error("zfec needs exactly {need} blocks, got {got}")]
    WrongCount { got: usize, need: usize },
    /// Blocks of one call differ in length.
    #[error("zfec blocks differ in length ({a} and {b} bytes)")]
    LengthMismatch { a: usize, b: usize },
    /// A share number at or past n.
    #[error("share number {sharenum} out of range for {n} shares")]
    BadShareNum { sharenum: usize, n: usize },
    /// The same share number given twice.
    #[error("share number {sharenum} given twice")]
    DuplicateShare { sharenum: usize },
}

struct Tables {
    exp: [u8; 510],
    log: [usize; 256],
    inverse: [u8; 256],
}

/// `generate_gf` of fec.c.
fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        // Do not change: zfec's primitive polynomial, "101110001" in fec.c.
        const PP: &[u8; 9] = b"101110001";
        let mut exp = [0u8; 510];
        let mut log = [0usize; 256];
        let mut mask: u8 = 1;
        for i in 0..8 {
            exp[i] = mask;
            log[usize::from(mask)] = i;
            if PP[i] == b'1' {
                exp[8] ^= mask;
            }
            mask = mask.wrapping_shl(1);
        }
        log[usize::from(exp[8])] = 8;
        for i in 9..255 {
            exp[i] = if exp[i - 1] >= 0x80 {
                exp[8] ^ (exp[i - 1] << 1)
            } else {
                exp[i - 1] << 1
            };
            log[usize::from(exp[i])] = i;
        }
        // log(0) is undefined; fec.c stores 255 there and never uses it.
        log[0] = 255;
        for i in 0..255 {
            exp[i + 255] = exp[i];
        }
        let mut inverse = [0u8; 256];
        inverse[0] = 0;
        inverse[1] = 1;
        for i in 2..256 {
            inverse[i] = exp[255 - log[i]];
        }
        Tables { exp, log, inverse }
    })
}

fn modnn(mut x: usize) -> usize {
    while x >= 255 {
        x -= 255;
        x = (x >> 8) + (x & 255);
    }
    x
}

fn gf_mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        return 0;
    }
    let t = tables();
    t.exp[modnn(t.log[usize::from(a)] + t.log[usize::from(b)])]
}

/// `out ^= c * input`, byte by byte in the field. Empty blocks are legal
/// (the kernels index the first byte).
fn addmul(out: &mut [u8], input: &[u8], c: u8) {
    if c == 0 || input.is_empty() {
        return;
    }
    galois_8::mul_slice_xor(c, input, out);
}

/// `_invert_vdm` of fec.c: inverts in place the k-by-k Vandermonde matrix
/// whose second column holds its points.
fn invert_vdm(src: &mut [u8], k: usize) {
    if k == 1 {
        return;
    }
    let t = tables();
    let mut c = vec![0u8; k];
    let mut b = vec![0u8; k];
    let p: Vec<u8> = (0..k).map(|i| src[i * k + 1]).collect();
    c[k - 1] = p[0];
    for (i, &p_i) in p.iter().enumerate().skip(1) {
        for j in (k - i)..(k - 1) {
            c[j] ^= gf_mul(p_i, c[j + 1]);
        }
        c[k - 1] ^= p_i;
    }
    for (row, &xx) in p.iter().enumerate() {
        let mut tt: u8 = 1;
        b[k - 1] = 1;
        for i in (1..k).rev() {
            b[i - 1] = c[i] ^ gf_mul(xx, b[i]);
            tt = gf_mul(xx, tt) ^ b[i - 1];
        }
        for col in 0..k {
            src[col * k + row] = gf_mul(t.inverse[usize::from(tt)], b[col]);
        }
    }
}

/// Inverts a k-by-k matrix (row-major); `None` if it is singular, which
/// cannot happen for k distinct rows of a zfec matrix.
fn invert(m: &[u8], k: usize) -> Option<Vec<u8>> {
    let t = tables();
    let mut a = m.to_vec();
    let mut inv = vec![0u8; k * k];
    for i in 0..k {
        inv[i * k + i] = 1;
    }
    for col in 0..k {
        let pivot = (col..k).find(|&r| a[r * k + col] != 0)?;
        if pivot != col {
            for x in 0..k {
                a.swap(pivot * k + x, col * k + x);
                inv.swap(pivot * k + x, col * k + x);
            }
        }
        let scale = t.inverse[usize::from(a[col * k + col])];
        for x in 0..k {
            a[col * k + x] = gf_mul(a[col * k + x], scale);
            inv[col * k + x] = gf_mul(inv[col * k + x], scale);
        }
        for r in 0..k {
            let f = a[r * k + col];
            if r == col || f == 0 {
                continue;
            }
            for x in 0..k {
                a[r * k + x] ^= gf_mul(f, a[col * k + x]);
                inv[r * k + x] ^= gf_mul(f, inv[col * k + x]);
            }
        }
    }
    Some(inv)
}

/// A k-of-n zfec code: its encoding matrix, built once.
#[derive(Clone, Debug)]
pub struct Zfec {
    k: usize,
    n: usize,
    /// n rows of k coefficients; rows 0..k are the identity.
    enc: Vec<u8>,
}

impl Zfec {
    /// `fec_new(k, n)`.
    pub fn new(k: usize, n: usize) -> Result<Self, ZfecError> {
        if k == 0 || k > n || n > MAX_SHARES {
            return Err(ZfecError::BadParams { k, n });
        }
        let t = tables();
        let mut tmp = vec![0u8; n * k];
        tmp[0] = 1;
        for row in 0..n - 1 {
            for col in 0..k {
                tmp[(row + 1) * k + col] = t.exp[modnn(row * col)];
            }
        }
        invert_vdm(&mut tmp[..k * k], k);
        let mut enc = vec![0u8; n * k];
        for i in 0..k {
            enc[i * k + i] = 1;
        }
        // _matmul(tmp + k*k, tmp, enc + k*k, n-k, k, k)
        for row in 0..n - k {
            for col in 0..k {
                let mut acc = 0u8;
                for i in 0..k {
                    acc ^= gf_mul(tmp[(k + row) * k + i], tmp[i * k + col]);
                }
                enc[(k + row) * k + col] = acc;
            }
        }
        Ok(Self { k, n, enc })
    }

    /// Blocks needed to decode.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Blocks encoded.
    pub fn n(&self) -> usize {
        self.n
    }

    fn check_blocks(&self, blocks: &[&[u8]]) -> Result<usize, ZfecError> {
        if blocks.len() != self.k {
            return Err(ZfecError::WrongCount {
                got: blocks.len(),
                need: self.k,
            });
        }
        let len = blocks[0].len();
        if let Some(b) = blocks.iter().find(|b| b.len() != len) {
            return Err(ZfecError::LengthMismatch { a: len, b: b.len() });
        }
        Ok(len)
    }

    /// Share `sharenum` of the k equal-length input blocks, written into
    /// `out` (which must be as long as a block).
    pub fn encode_into(
        &self,
        primary: &[&[u8]],
        sharenum: usize,
        out: &mut [u8],
    ) -> Result<(), ZfecError> {
        let len = self.check_blocks(primary)?;
        if sharenum >= self.n {
            return Err(ZfecError::BadShareNum {
                sharenum,
                n: self.n,
            });
        }
        if out.len() != len {
            return Err(ZfecError::LengthMismatch {
                a: len,
                b: out.len(),
            });
        }
        if sharenum < self.k {
            out.copy_from_slice(primary[sharenum]);
            return Ok(());
        }
        out.fill(0);
        let row = &self.enc[sharenum * self.k..(sharenum + 1) * self.k];
        // In strides that stay in cache while every input block is added in,
        // as fec_encode does.
        const STRIDE: usize = 16 * 1024;
        let mut at = 0;
        while at < len {
            let end = len.min(at + STRIDE);
            for (j, &c) in row.iter().enumerate() {
                addmul(&mut out[at..end], &primary[j][at..end], c);
            }
            at = end;
        }
        Ok(())
    }

    /// All n shares of the k equal-length input blocks.
    pub fn encode(&self, primary: &[&[u8]]) -> Result<Vec<Vec<u8>>, ZfecError> {
        let len = self.check_blocks(primary)?;
        let mut shares = Vec::with_capacity(self.n);
        for sharenum in 0..self.n {
            let mut out = vec![0u8; len];
            self.encode_into(primary, sharenum, &mut out)?;
            shares.push(out);
        }
        Ok(shares)
    }

    /// The k input blocks from any k distinct shares, in any order.
    pub fn decode(&self, shares: &[(usize, &[u8])]) -> Result<Vec<Vec<u8>>, ZfecError> {
        if shares.len() != self.k {
            return Err(ZfecError::WrongCount {
                got: shares.len(),
                need: self.k,
            });
        }
        let len = shares[0].1.len();
        let mut seen = [false; MAX_SHARES];
        for &(sharenum, block) in shares {
            if sharenum >= self.n {
                return Err(ZfecError::BadShareNum {
                    sharenum,
                    n: self.n,
                });
            }
            if seen[sharenum] {
                return Err(ZfecError::DuplicateShare { sharenum });
            }
            seen[sharenum] = true;
            if block.len() != len {
                return Err(ZfecError::LengthMismatch {
                    a: len,
                    b: block.len(),
                });
            }
        }
        let mut out: Vec<Option<Vec<u8>>> = vec![None; self.k];
        for &(sharenum, block) in shares {
            if sharenum < self.k {
                out[sharenum] = Some(block.to_vec());
            }
        }
        if out.iter().any(Option::is_none) {
            let mut m = Vec::with_capacity(self.k * self.k);
            for &(sharenum, _) in shares {
                m.extend_from_slice(&self.enc[sharenum * self.k..(sharenum + 1) * self.k]);
            }
            // Distinct rows of a zfec matrix are always independent: that is
            // the code's MDS property, so this is unreachable.
            let inv = invert(&m, self.k).ok_or(ZfecError::BadParams {
                k: self.k,
                n: self.n,
            })?;
            for (row, slot) in out.iter_mut().enumerate() {
                if slot.is_some() {
                    continue;
                }
                let mut block = vec![0u8; len];
                for (col, &(_, input)) in shares.iter().enumerate() {
                    addmul(&mut block, input, inv[row * self.k + col]);
                }
                *slot = Some(block);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
#[allow(clippy::cast_possible_truncation)] // tests: byte patterns wrap on purpose
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Vectors {
        cases: Vec<Case>,
    }

    #[derive(serde::Deserialize)]
    struct Case {
        k: usize,
        n: usize,
        primary: Vec<String>,
        shares: Vec<String>,
        zfec_decoded_from: Vec<Vec<usize>>,
    }

    fn vectors() -> Vec<Case> {
        let v: Vectors =
            serde_json::from_str(include_str!("../../../tests/chk/zfec_vectors.json")).unwrap();
        v.cases
    }

    fn unhex(v: &[String]) -> Vec<Vec<u8>> {
        v.iter().map(|s| hex::decode(s).unwrap()).collect()
    }

    /// Every k-subset of n, or (when there are too many) a spread of them.
    fn subsets(k: usize, n: usize) -> Vec<Vec<usize>> {
        let mut all = Vec::new();
        let mut idx: Vec<usize> = (0..k).collect();
        loop {
            all.push(idx.clone());
            if all.len() > 400 {
                break;
            }
            let mut i = k;
            while i > 0 && idx[i - 1] == n - k + i - 1 {
                i -= 1;
            }
            if i == 0 {
                break;
            }
            idx[i - 1] += 1;
            for j in i..k {
                idx[j] = idx[j - 1] + 1;
            }
        }
        all.push((n - k..n).collect());
        all.push((0..n).step_by((n / k).max(1)).take(k).collect());
        all
    }

    #[test]
    fn encode_matches_real_zfec() {
        let cases = vectors();
        assert!(cases.len() >= 15);
        for case in &cases {
            let code = Zfec::new(case.k, case.n).unwrap();
            let primary = unhex(&case.primary);
            let refs: Vec<&[u8]> = primary.iter().map(Vec::as_slice).collect();
            let shares = code.encode(&refs).unwrap();
            assert_eq!(shares, unhex(&case.shares), "{}-of-{}", case.k, case.n);
        }
    }

    #[test]
    fn decode_from_every_kind_of_subset() {
        for case in &vectors() {
            let code = Zfec::new(case.k, case.n).unwrap();
            let primary = unhex(&case.primary);
            let shares = unhex(&case.shares);
            let mut sets = subsets(case.k, case.n);
            sets.extend(case.zfec_decoded_from.iter().cloned());
            for set in sets {
                let mut given: Vec<(usize, &[u8])> =
                    set.iter().map(|&i| (i, shares[i].as_slice())).collect();
                given.reverse();
                let got = code.decode(&given).unwrap();
                assert_eq!(got, primary, "{}-of-{} from {:?}", case.k, case.n, set);
            }
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(Zfec::new(0, 1).is_err());
        assert!(Zfec::new(4, 3).is_err());
        assert!(Zfec::new(1, 257).is_err());
        let code = Zfec::new(3, 10).unwrap();
        let a = [1u8, 2];
        let b = [3u8];
        assert_eq!(
            code.encode(&[&a, &a, &b]).unwrap_err(),
            ZfecError::LengthMismatch { a: 2, b: 1 }
        );
        assert!(code.encode(&[&a, &a]).is_err());
        assert_eq!(
            code.decode(&[(1, &a), (1, &a), (2, &a)]).unwrap_err(),
            ZfecError::DuplicateShare { sharenum: 1 }
        );
        assert!(code.decode(&[(1, &a), (10, &a), (2, &a)]).is_err());
        assert!(code.decode(&[(1, &a), (3, &b), (2, &a)]).is_err());
    }

    /// 3-of-10 encode throughput; run with
    /// `cargo test --release --lib engine::chk::zfec -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn encode_speed_3_of_10() {
        let code = Zfec::new(3, 10).unwrap();
        let seg = 1 << 20;
        let data: Vec<u8> = (0..seg).map(|i| (i * 7 + i / 251) as u8).collect();
        let blocks: Vec<&[u8]> = data.chunks(seg / 3 + 1).collect();
        let mut padded = blocks[2].to_vec();
        padded.resize(blocks[0].len(), 0);
        let refs = [blocks[0], blocks[1], padded.as_slice()];
        let mut out = vec![0u8; refs[0].len()];
        let rounds = 300;
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            for s in 3..10 {
                code.encode_into(&refs, s, &mut out).unwrap();
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "zfec 3-of-10 encode: {:.0} MB/s of input",
            (rounds * seg) as f64 / secs / 1e6
        );
    }
}
