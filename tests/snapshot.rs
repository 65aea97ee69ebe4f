//! The namespace in the grid: the root secret and its recovery key, copies
//! of the namespace, `griddav recover`, and the graceful shutdown that
//! takes the last copy.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use support::Server;

fn griddav(args: &[&std::ffi::OsStr], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_griddav"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run griddav");
    // griddav may exit before it reads its input.
    let _ = child.stdin.take().expect("stdin is piped").write_all(stdin);
    child.wait_with_output().expect("wait for griddav")
}

#[test]
fn serve_makes_the_root_secret_and_recovery_key_prints_it() {
    let server = Server::start();
    let path = server.data_dir().join("root-secret");
    let secret = std::fs::read(&path).expect("serve made the root secret");
    assert_eq!(secret.len(), 32);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the root secret is the owner's only");

    let data_dir = server.data_dir();
    let out = griddav(
        &[
            "--data-dir".as_ref(),
            data_dir.as_os_str(),
            "recovery-key".as_ref(),
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let words = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let groups: Vec<&str> = words.split('-').collect();
    assert_eq!(groups.len(), 14, "{words}");
    assert!(groups.iter().all(|g| g.len() == 4), "{words}");
    // The key is the secret: base32 of its 32 bytes and a checksum.
    let decoded = data_encoding::BASE32_NOPAD
        .decode(words.replace('-', "").to_uppercase().as_bytes())
        .unwrap();
    assert_eq!(&decoded[..32], &secret[..]);
    // Asking again prints the same key; the secret is never made anew.
    let again = griddav(
        &[
            "--data-dir".as_ref(),
            data_dir.as_os_str(),
            "recovery-key".as_ref(),
        ],
        b"",
    );
    assert_eq!(String::from_utf8(again.stdout).unwrap().trim(), words);
    assert_eq!(std::fs::read(&path).unwrap(), secret);
}
