//! Users: HTTP Basic against argon2id hashes from `[[users]]`, with the
//! checks that make that affordable and hard to abuse.
//!
//! ```text
//!   Authorization: Basic ...
//!     -> failures of this client address in the last minute >= limit?  429
//!     -> SHA-256(process salt || header) in the cache of good ones?     user
//!     -> argon2id verify (blocking pool, a few at a time)               user / 401
//! ```
//!
//! Finder and Windows send their credentials with every request, and one
//! argon2id run costs tens of milliseconds of CPU: a successful check is
//! remembered for [`CACHE_TTL`], keyed by a salted hash of the header (never
//! the password itself), in a bounded LRU. Failures are not cached; they
//! are counted per client address instead, and past [`FAILURES_PER_MINUTE`]
//! that address gets 429 without any password being checked, while other
//! addresses are served as before.
//!
//! A user's `root` is the folder they see as `/`; [`crate::http::guard`]
//! rewrites their paths into it and [`crate::http::roots`] strips it from
//! answers again.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use http::{HeaderValue, Response, StatusCode};
use lru::LruCache;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::config::UserConfig;

/// How long a successful check is remembered.
pub const CACHE_TTL: Duration = Duration::from_secs(600);
/// Distinct credentials remembered at once.
const CACHE_SIZE: usize = 1024;
/// Wrong passwords from one client address per minute before it gets 429.
pub const FAILURES_PER_MINUTE: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Client addresses whose failures are counted at once; the oldest is
/// forgotten first, so the table cannot grow without bound.
const FAILURE_TABLE: usize = 4096;
/// The longest `Authorization` header looked at.
const MAX_AUTHORIZATION: usize = 4096;

/// A configured user, as requests see it.
#[derive(Debug)]
pub struct User {
    /// The user name of Basic authentication, and the lock principal.
    pub name: String,
    /// The names of the root folder's path; empty for `/`.
    pub root: Vec<String>,
    /// Refused every method that changes something (403).
    pub read_only: bool,
    /// Set once the root folder is known to exist.
    root_ready: AtomicBool,
}

impl User {
    /// The root folder as the namespace writes it (`/`, `/a/b`).
    pub fn root_path(&self) -> String {
        if self.root.is_empty() {
            return "/".to_owned();
        }
        self.root.iter().map(|n| format!("/{n}")).collect()
    }

    /// Whether the root folder was already made (or found).
    pub fn root_ready(&self) -> bool {
        self.root_ready.load(Ordering::Relaxed)
    }

    /// Records that the root folder exists, so it is not made again.
    pub fn set_root_ready(&self) {
        self.root_ready.store(true, Ordering::Relaxed);
    }
}

/// The user a request was authenticated as; in its extensions.
#[derive(Clone, Debug)]
pub struct Session(pub Arc<User>);

/// Checks that `phc` is an argon2id PHC string, without saying anything
/// about it in the reason (it goes to a log).
pub fn check_phc(phc: &str) -> Result<(), &'static str> {
    let hash =
        PasswordHash::new(phc).map_err(|_| "not a PHC string; `griddav passwd` prints one")?;
    if hash.algorithm.as_str() != "argon2id" {
        return Err("must be an argon2id hash; `griddav passwd` prints one");
    }
    if hash.hash.is_none() || hash.salt.is_none() {
        return Err("holds no hash or no salt; `griddav passwd` prints one");
    }
    Ok(())
}

/// The folder names of a `root` setting: `/` or `/a/b`, each name of
/// letters, digits, `.`, `-` and `_` (so that it reads the same encoded
/// and decoded in every URL), no `.` or `..`.
pub fn root_names(root: &str) -> Result<Vec<String>, &'static str> {
    let bad =
        "an absolute folder path such as \"/alice\", names of letters, digits, '.', '-' and '_'";
    let rest = root.strip_prefix('/').ok_or(bad)?;
    let mut names = Vec::new();
    for name in rest.split('/') {
        if name.is_empty() {
            continue;
        }
        if name == "."
            || name == ".."
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(bad);
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

/// A new argon2id PHC string for `password` (argon2's default cost:
/// 19 MiB, 2 passes).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Why a request was not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No credentials, or wrong ones: 401 with a Basic challenge.
    Unauthenticated,
    /// Too many failures from this address: 429.
    TooMany {
        /// How long until this address may try again (`Retry-After`).
        retry_after: Duration,
    },
    /// A read-only user asked for a change: 403.
    ReadOnly,
}

impl Denied {
    /// The answer to send instead of serving the request.
    pub fn into_response(self) -> Response<dav_server::body::Body> {
        let (status, text) = match &self {
            Denied::Unauthenticated => (StatusCode::UNAUTHORIZED, "authentication required\n"),
            Denied::TooMany { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed logins from this address; try again later\n",
            ),
            Denied::ReadOnly => (StatusCode::FORBIDDEN, "this user may not change anything\n"),
        };
        let mut response = Response::new(dav_server::body::Body::from(text));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        match self {
            Denied::Unauthenticated => {
                headers.insert(
                    http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"griddav\", charset=\"UTF-8\""),
                );
            }
            Denied::TooMany { retry_after } => {
                headers.insert(
                    http::header::RETRY_AFTER,
                    HeaderValue::from(retry_after.as_secs().max(1)),
                );
            }
            Denied::ReadOnly => {}
        }
        response
    }
}

/// Whether `method` can change anything (refused for read-only users).
pub fn changes_anything(method: &http::Method) -> bool {
    matches!(
        method.as_str(),
        "PUT"
            | "DELETE"
            | "MKCOL"
            | "MOVE"
            | "COPY"
            | "PROPPATCH"
            | "LOCK"
            | "UNLOCK"
            | "PATCH"
            | "POST"
    )
}

struct Entry {
    user: usize,
    expires: Instant,
}

struct Failures {
    window_start: Instant,
    count: u32,
}

/// The configured users and the state of their checks; cheap to share.
pub struct Users {
    users: Vec<(Arc<User>, String)>,
    /// Makes cache keys useless outside this process.
    salt: [u8; 32],
    cache: Mutex<LruCache<[u8; 32], Entry>>,
    failures: Mutex<LruCache<IpAddr, Failures>>,
    /// argon2 runs at once: each takes ~19 MiB and a core.
    verifying: Semaphore,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users")
            .field("count", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl Users {
    /// `None` when no user is configured: everyone is let in, as before.
    /// The entries must have passed [`crate::config::Config::validate`].
    pub fn from_config(entries: &[UserConfig]) -> Option<Arc<Users>> {
        if entries.is_empty() {
            return None;
        }
        let users = entries
            .iter()
            .map(|e| {
                let user = User {
                    name: e.name.clone(),
                    root: root_names(&e.root).unwrap_or_default(),
                    read_only: e.read_only,
                    root_ready: AtomicBool::new(false),
                };
                (Arc::new(user), e.password_hash.clone())
            })
            .collect();
        let mut salt = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Some(Arc::new(Users {
            users,
            salt,
            cache: Mutex::new(LruCache::new(nonzero(CACHE_SIZE))),
            failures: Mutex::new(LruCache::new(nonzero(FAILURE_TABLE))),
            verifying: Semaphore::new(cores),
        }))
    }

    /// The user the `Authorization` header names with the right password.
    pub async fn authenticate(
        &self,
        authorization: Option<&HeaderValue>,
        client: Option<IpAddr>,
    ) -> Result<Arc<User>, Denied> {
        let Some(header) = authorization else {
            // What Finder and Explorer send first: not a failure.
            return Err(Denied::Unauthenticated);
        };
        if let Some(retry_after) = client.and_then(|ip| self.blocked(ip)) {
            return Err(Denied::TooMany { retry_after });
        }
        let key = self.cache_key(header.as_bytes());
        if let Some(user) = self.cached(&key) {
            return Ok(user);
        }
        match self.verify(header).await {
            Some(index) => {
                let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
                cache.put(
                    key,
                    Entry {
                        user: index,
                        expires: Instant::now() + CACHE_TTL,
                    },
                );
                Ok(Arc::clone(&self.users[index].0))
            }
            None => {
                if let Some(ip) = client {
                    self.count_failure(ip);
                }
                Err(Denied::Unauthenticated)
            }
        }
    }

    fn cache_key(&self, header: &[u8]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.salt);
        hasher.update(header);
        hasher.finalize().into()
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Arc<User>> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = cache.get(key)?;
        if entry.expires <= Instant::now() {
            cache.pop(key);
            return None;
        }
        self.users.get(entry.user).map(|(user, _)| Arc::clone(user))
    }

    /// The index of the user whose password the header holds.
    async fn verify(&self, header: &HeaderValue) -> Option<usize> {
        let (name, password) = basic_credentials(header)?;
        let index = self.users.iter().position(|(u, _)| u.name == name);
        // An unknown name costs an argon2 run too, so that the time taken
        // does not tell which names exist.
        let phc = match index {
            Some(i) => self.users[i].1.clone(),
            None => dummy_hash().to_owned(),
        };
        let _permit = self.verifying.acquire().await.ok()?;
        let matches = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&phc)
                .map(|hash| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &hash)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        index.filter(|_| matches)
    }

    fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = failures.peek(&ip)?;
        let ends = entry.window_start + FAILURE_WINDOW;
        let now = Instant::now();
        if now >= ends {
            failures.pop(&ip);
            return None;
        }
        (entry.count >= FAILURES_PER_MINUTE).then(|| ends - now)
    }

    fn count_failure(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match failures.get_mut(&ip) {
            Some(entry) if now < entry.window_start + FAILURE_WINDOW => {
                entry.count = entry.count.saturating_add(1);
            }
            _ => {
                failures.put(
                    ip,
                    Failures {
                        window_start: now,
                        count: 1,
                    },
                );
            }
        }
    }
}

fn nonzero(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

/// A hash of a random password, checked for unknown user names.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let password = data_encoding::HEXLOWER.encode(&bytes);
        hash_password(&password).unwrap_or_default()
    })
}

/// `Basic base64(name:password)` -> (name, password).
fn basic_credentials(header: &HeaderValue) -> Option<(String, String)> {
    let bytes = header.as_bytes();
    if bytes.len() > MAX_AUTHORIZATION {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (name, password) = decoded.split_once(':')?;
    Some((name.to_owned(), password.to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    fn basic(name: &str, password: &str) -> HeaderValue {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    fn users(entries: &[(&str, &str)]) -> Arc<Users> {
        let entries: Vec<UserConfig> = entries
            .iter()
            .map(|(name, password)| UserConfig {
                name: (*name).to_owned(),
                password_hash: hash_password(password).unwrap(),
                root: "/".to_owned(),
                read_only: false,
            })
            .collect();
        Users::from_config(&entries).unwrap()
    }

    #[test]
    fn hashes_are_argon2id_phc_strings() {
        let phc = hash_password("secret").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        check_phc(&phc).unwrap();
        assert!(check_phc("secret").is_err());
        assert!(check_phc("$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo").is_err());
    }

    #[test]
    fn roots_are_plain_absolute_folders() {
        assert_eq!(root_names("/").unwrap(), Vec::<String>::new());
        assert_eq!(root_names("/a/b-c_d.e/").unwrap(), ["a", "b-c_d.e"]);
        for bad in ["", "a", "/../x", "/a/./b", "/a b", "/%2e", "/ü"] {
            assert!(root_names(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn right_wrong_and_missing_credentials() {
        let users = users(&[("alice", "pw1"), ("bob", "pw:2")]);
        let ip = Some(IpAddr::from([127, 0, 0, 1]));
        let alice = users.authenticate(Some(&basic("alice", "pw1")), ip).await;
        assert_eq!(alice.unwrap().name, "alice");
        // A ':' in the password is the password's.
        let bob = users.authenticate(Some(&basic("bob", "pw:2")), ip).await;
        assert_eq!(bob.unwrap().name, "bob");
        for header in [
            basic("alice", "pw2"),
            basic("bob", "pw1"),
            basic("carol", "pw1"),
            HeaderValue::from_static("Basic !!!"),
            HeaderValue::from_static("Bearer x"),
        ] {
            let denied = users.authenticate(Some(&header), ip).await.unwrap_err();
            assert_eq!(denied, Denied::Unauthenticated);
        }
        assert_eq!(
            users.authenticate(None, ip).await.unwrap_err(),
            Denied::Unauthenticated
        );
    }

    #[tokio::test]
    async fn a_good_check_is_cached_under_a_salted_key() {
        let users = users(&[("alice", "pw1")]);
        let header = basic("alice", "pw1");
        users.authenticate(Some(&header), None).await.unwrap();
        let key = users.cache_key(header.as_bytes());
        assert!(users.cached(&key).is_some());
        assert_ne!(key, <[u8; 32]>::from(Sha256::digest(header.as_bytes())));
        // Expired entries are not used.
        users.cache.lock().unwrap().get_mut(&key).unwrap().expires = Instant::now();
        assert!(users.cached(&key).is_none());
    }

    #[tokio::test]
    async fn failures_are_limited_per_address() {
        let users = users(&[("alice", "pw1")]);
        let bad = basic("alice", "nope");
        let good = basic("alice", "pw1");
        let one_ip = IpAddr::from([127, 0, 0, 1]);
        let one = Some(one_ip);
        let other = Some(IpAddr::from([127, 0, 0, 2]));
        for _ in 0..FAILURES_PER_MINUTE {
            assert_eq!(
                users.authenticate(Some(&bad), one).await.unwrap_err(),
                Denied::Unauthenticated
            );
        }
        match users.authenticate(Some(&good), one).await.unwrap_err() {
            Denied::TooMany { retry_after } => assert!(retry_after <= FAILURE_WINDOW),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            users.authenticate(Some(&good), other).await.unwrap().name,
            "alice"
        );
        // The window passes.
        users
            .failures
            .lock()
            .unwrap()
            .get_mut(&one_ip)
            .unwrap()
            .window_start -= FAILURE_WINDOW;
        assert!(users.authenticate(Some(&good), one).await.is_ok());
    }
}
