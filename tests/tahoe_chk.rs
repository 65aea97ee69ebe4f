//! `tahoe-chk` against stock Tahoe-LAFS 1.20.0: files griddav's CHK encoder
//! writes are read by Tahoe's own downloader and by `tahoe get`; files
//! Tahoe's encoder and `tahoe put` write are read by griddav's decoder.
//!
//! Needs the Python venv with tahoe-lafs that tests/tahoe/harness.sh installs
//! (`GRIDDAV_TAHOE_VENV`, default /tmp/griddav-tahoe/venv); the `stock_grid`
//! tests also need the harness's nodes running and the client of
//! tests/chk/tahoe_client.sh started (`GRIDDAV_TAHOE_CONFIG` set, as
//! .ci/run does). Hence `#[ignore]`: run with `--include-ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::Command;

use griddav::engine::chk::decode::decode_all;
use griddav::engine::chk::encode::ChkEncoder;
use griddav::engine::chk::params::{ChkParams, DEFAULT_MAX_SEGMENT_SIZE};
use griddav::engine::chk::uri::ChkCap;
use rand::RngCore;

const MIB: usize = 1 << 20;

fn python() -> PathBuf {
    let venv =
        std::env::var("GRIDDAV_TAHOE_VENV").unwrap_or_else(|_| "/tmp/griddav-tahoe/venv".into());
    let py = Path::new(&venv).join("bin/python");
    assert!(
        py.exists(),
        "{} missing: run tests/tahoe/harness.sh start (it installs tahoe-lafs 1.20.0)",
        py.display()
    );
    py
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("run helper");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn data(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// Encodes with griddav, streaming in uneven writes; shares as DIR/share.N.
fn griddav_encode(plain: &[u8], k: u16, n: u16, dir: &Path) -> ChkCap {
    let mut key = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut key);
    let params = ChkParams::for_upload(plain.len() as u64, k, n, DEFAULT_MAX_SEGMENT_SIZE).unwrap();
    let mut enc = ChkEncoder::new(key, params).unwrap();
    let mut shares: Vec<Vec<u8>> = vec![enc.header(); usize::from(n)];
    for chunk in plain.chunks(65_537) {
        for seg in enc.write(chunk).unwrap() {
            for (s, b) in shares.iter_mut().zip(seg.blocks) {
                s.extend_from_slice(&b);
            }
        }
    }
    let size = enc.share_size();
    let fin = enc.finish().unwrap();
    for (i, (s, t)) in shares.iter_mut().zip(fin.tails).enumerate() {
        s.extend_from_slice(&t);
        assert_eq!(s.len() as u64, size);
        std::fs::write(dir.join(format!("share.{i}")), s).unwrap();
    }
    fin.cap
}

fn read_shares(dir: &Path) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if let Some(n) = name.strip_prefix("share.") {
            out.push((n.parse().unwrap(), std::fs::read(e.path()).unwrap()));
        }
    }
    out.sort();
    out
}

fn griddav_decode(cap: &ChkCap, shares: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let refs: Vec<(u16, &[u8])> = shares.iter().map(|(n, s)| (*n, s.as_slice())).collect();
    decode_all(cap, &refs).unwrap()
}

// Sizes: Tahoe's smallest CHK file (56: 55 and under are literal caps), one
// byte short of, exactly, and one byte over a segment, and several segments.
const SIZES: [usize; 6] = [56, 1000, MIB - 1, MIB, MIB + 1, 3 * MIB + 12_345];

#[test]
#[ignore = "needs the tahoe-lafs venv of tests/tahoe/harness.sh"]
fn tahoe_downloader_reads_what_griddav_wrote() {
    let py = python();
    for (k, n) in [(3u16, 10u16), (1, 1), (2, 5)] {
        for size in SIZES {
            let dir = tempfile::tempdir().unwrap();
            let plain = data(size);
            let cap = griddav_encode(&plain, k, n, dir.path());
            let got = run(Command::new(&py)
                .arg("tests/chk/tahoe_chk.py")
                .arg("read")
                .arg(cap.to_uri())
                .arg(dir.path()));
            assert!(
                got == plain,
                "{size} bytes {k}-of-{n}: Tahoe read other bytes"
            );
        }
    }
}

#[test]
#[ignore = "needs the tahoe-lafs venv of tests/tahoe/harness.sh"]
fn griddav_reads_what_tahoes_encoder_wrote() {
    let py = python();
    for size in SIZES {
        let dir = tempfile::tempdir().unwrap();
        let cap = run(Command::new(&py)
            .arg("tests/chk/tahoe_chk.py")
            .arg("encode")
            .arg(size.to_string())
            .arg(format!("seed{size}"))
            .arg(dir.path()));
        let cap = ChkCap::parse(String::from_utf8(cap).unwrap().trim()).unwrap();
        let plain = std::fs::read(dir.path().join("plain")).unwrap();
        let shares = read_shares(dir.path());
        assert_eq!(shares.len(), 10);
        assert!(griddav_decode(&cap, &shares) == plain, "{size} bytes");
        // Any 3 of the 10: the last three (parity only).
        assert!(
            griddav_decode(&cap, &shares[7..]) == plain,
            "{size} bytes from shares 7-9"
        );
    }
}

fn client(args: &[&str]) -> Vec<u8> {
    assert!(
        std::env::var_os("GRIDDAV_TAHOE_CONFIG").is_some(),
        "set GRIDDAV_TAHOE_CONFIG: start tests/tahoe/harness.sh and tests/chk/tahoe_client.sh"
    );
    run(Command::new("bash")
        .arg("tests/chk/tahoe_client.sh")
        .args(args))
}

#[test]
#[ignore = "needs the Tahoe harness nodes and tests/chk/tahoe_client.sh running"]
fn stock_grid_tahoe_get_reads_griddav_shares() {
    for size in [56, MIB + 1, 5 * MIB + 7] {
        let dir = tempfile::tempdir().unwrap();
        let plain = data(size);
        let cap = griddav_encode(&plain, 3, 10, dir.path()).to_uri();
        client(&["place", &cap, dir.path().to_str().unwrap()]);
        let got = client(&["get", &cap]);
        assert!(got == plain, "{size} bytes: tahoe get returned other bytes");
    }
}

#[test]
#[ignore = "needs the Tahoe harness nodes and tests/chk/tahoe_client.sh running"]
fn stock_grid_griddav_reads_tahoe_put() {
    for size in [56, MIB + 1, 5 * MIB + 7] {
        let dir = tempfile::tempdir().unwrap();
        let plain = data(size);
        let file = dir.path().join("plain");
        std::fs::write(&file, &plain).unwrap();
        let cap = client(&["put", file.to_str().unwrap()]);
        let cap = String::from_utf8(cap).unwrap();
        let cap = ChkCap::parse(cap.trim()).unwrap();
        let shares_dir = dir.path().join("shares");
        client(&["shares", &cap.to_uri(), shares_dir.to_str().unwrap()]);
        let shares = read_shares(&shares_dir);
        assert_eq!(shares.len(), 10, "{size} bytes: tahoe put placed 10 shares");
        assert!(griddav_decode(&cap, &shares) == plain, "{size} bytes");
        assert!(
            griddav_decode(&cap, &shares[..3]) == plain,
            "{size} bytes from 3 shares"
        );
    }
}
