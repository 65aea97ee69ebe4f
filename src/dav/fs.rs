//! GridFs: dav-server's file system, on the namespace (names, properties)
//! and the engine (content).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavFileSystem, DavMetaData, DavProp, FsError, FsFuture, FsResult,
    FsStream, OpenOptions, ReadDirMeta,
};
use futures::FutureExt;
use http::StatusCode;
use tokio::sync::Notify;

use super::meta::{GridDirEntry, GridMeta};
use super::pending::{PendingUploads, WAIT_FOR_UPLOAD};
use super::propstat::{self, NamedPropfind};
use super::read::ReadHandle;
use super::readers::ReaderCache;
use super::write::WriteHandle;
use crate::engine::{
    Capability, EncodingParams, EngineError, FileReader, Format, ShareProblem, UploadOptions,
};
use crate::grid::Grid;
use crate::namespace::{Namespace, NamespaceError, Node, Prop, PropPatch, Removal};

/// How GridFs stores content.
#[derive(Clone, Debug)]
pub struct GridFsOptions {
    /// How new files are split into shares.
    pub params: EncodingParams,
    /// How much of an upload may be in flight.
    pub upload: UploadOptions,
    /// Files up to this many bytes live in their namespace row and never
    /// touch the grid (Finder's `._*` and `.DS_Store`, Office's `~$` files).
    pub inline_threshold: u64,
    /// The most a GET asks of a file at once (dav-server's read buffer). A
    /// smaller read is the last of its range, so it never starts
    /// read-ahead: a Range GET across a segment boundary reads two
    /// segments, not the 64 MiB that follow.
    pub read_buf_size: usize,
    /// The share format of new files whose size is known at the start.
    pub format: Format,
}

impl Default for GridFsOptions {
    fn default() -> Self {
        Self {
            params: EncodingParams::default(),
            upload: UploadOptions::default(),
            inline_threshold: 16384,
            read_buf_size: 256 << 10,
            format: Format::default(),
        }
    }
}

pub(crate) struct FsInner {
    pub ns: Namespace,
    pub grid: Grid,
    pub options: GridFsOptions,
    readers: ReaderCache,
    /// Woken when content becomes garbage.
    pub garbage: Arc<Notify>,
    /// Uploads in progress, by path.
    pub uploads: Arc<PendingUploads>,
    /// The last quota figures: (when, used, available).
    quota: tokio::sync::Mutex<Option<(Instant, u64, Option<u64>)>>,
    /// Bytes stored, as last counted: folders report it (GridMeta::with_usage).
    used: Arc<AtomicU64>,
    /// Set when a write runs out of space: the collector then frees
    /// garbage at once, but for content being read (`reading`).
    pub pressure: crate::gc::SpacePressure,
    /// Notified when a file is stored with fewer than n shares.
    pub short_files: Arc<Notify>,
    /// Every reader handed out, by capability, for [`GridFs::in_use`].
    reading: std::sync::Mutex<std::collections::HashMap<String, std::sync::Weak<FileReader>>>,
}

/// Entries of a folder one namespace trip reads for a listing.
const LIST_PAGE: usize = 1000;

/// Entries whose named properties one namespace trip loads during a
/// PROPFIND (see [`GridFs::load_named`]).
const PROPS_PAGE: usize = 256;

/// `path`'s folder and name; `None` for the root.
fn split_parent(path: &str) -> Option<(&str, &str)> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let (dir, name) = trimmed.rsplit_once('/')?;
    if name.is_empty() {
        return None;
    }
    Some((if dir.is_empty() { "/" } else { dir }, name))
}

/// How long quota figures are reused: counting them scans the namespace
/// and asks every server for its free space.
const QUOTA_TTL: Duration = Duration::from_secs(5);

impl FsInner {
    /// A verified reader of `cap`, shared with other requests for it.
    pub(crate) async fn downloader(&self, cap: &str) -> FsResult<Arc<FileReader>> {
        let reader = self.open_downloader(cap).await?;
        let mut reading = self.reading.lock().unwrap_or_else(|p| p.into_inner());
        if reading.len() >= 1024 {
            reading.retain(|_, weak| weak.strong_count() > 0);
        }
        reading.insert(cap.to_owned(), Arc::downgrade(&reader));
        Ok(reader)
    }

    /// Whether a request still holds a reader of `cap` (the reader cache's
    /// own reference aside).
    fn in_use(&self, cap: &str) -> bool {
        let reading = self.reading.lock().unwrap_or_else(|p| p.into_inner());
        let cached = usize::from(self.readers.contains(cap));
        reading
            .get(cap)
            .is_some_and(|weak| weak.strong_count() > cached)
    }

    /// Passes `e` on, noting space pressure when it is a 507.
    pub(crate) fn note(&self, e: FsError) -> FsError {
        if matches!(e, FsError::InsufficientStorage) {
            self.pressure.report();
        }
        e
    }

    async fn open_downloader(&self, cap: &str) -> FsResult<Arc<FileReader>> {
        if let Some(reader) = self.readers.get(cap) {
            return Ok(reader);
        }
        let parsed: Capability = cap.parse().map_err(|e| {
            tracing::error!(error = %e, "a namespace row holds an invalid capability");
            FsError::GeneralFailure
        })?;
        let reader = Arc::new(
            FileReader::open(&self.grid, &parsed)
                .await
                .map_err(|e| engine_error("open for reading", &e))?,
        );
        self.readers.insert(cap, Arc::clone(&reader));
        Ok(reader)
    }

    /// The node at `path`; when there is none but an upload of that path
    /// is in progress, the node it commits, for the requests that wait
    /// for uploads (PROPFIND, GET, HEAD: see [`super::pending`]).
    pub(crate) async fn lookup_or_wait(
        &self,
        path: &str,
        operation: &str,
    ) -> FsResult<Option<Node>> {
        let node = self
            .ns
            .lookup(path)
            .await
            .map_err(|e| ns_error(operation, e))?;
        if node.is_some()
            || !super::pending::request_waits()
            || !self.uploads.wait_for(path, WAIT_FOR_UPLOAD).await
        {
            return Ok(node);
        }
        self.ns
            .lookup(path)
            .await
            .map_err(|e| ns_error(operation, e))
    }

    /// Bytes stored and plaintext bytes the grid still has room for,
    /// counted at most every [`QUOTA_TTL`].
    async fn quota(&self) -> FsResult<(u64, Option<u64>)> {
        let mut cached = self.quota.lock().await;
        if let Some((at, used, available)) = *cached {
            if at.elapsed() < QUOTA_TTL {
                return Ok((used, available));
            }
        }
        let usage = self.ns.usage().await.map_err(|e| ns_error("quota", e))?;
        let params = &self.options.params;
        let available = self.grid.available_bytes(params.k, params.n).await;
        let used = usage.stored_bytes;
        self.used.store(used, Ordering::Relaxed);
        *cached = Some((Instant::now(), used, available));
        Ok((used, available))
    }

    pub(crate) fn wake_collector(&self, queued: bool) {
        if queued {
            self.garbage.notify_one();
        }
    }
}

/// The WebDAV file system of griddav. Cheap to clone.
#[derive(Clone)]
pub struct GridFs {
    inner: Arc<FsInner>,
}

impl GridFs {
    /// Whether `path` is the destination file of the MOVE this task serves,
    /// with a file as its source: then the rename replaces it, in one
    /// transaction with the move, and removing it first is left out (see
    /// [`super::moving`]).
    async fn removal_left_to_the_move(&self, path: &str) -> bool {
        let Some(serving) = super::moving::current() else {
            return false;
        };
        if serving.destination != path {
            return false;
        }
        matches!(
            self.inner.ns.lookup(&serving.source).await,
            Ok(Some(node)) if node.kind == crate::namespace::NodeKind::File
        )
    }

    /// A file system over `ns` that keeps file content in `grid`.
    pub fn new(ns: Namespace, grid: Grid, options: GridFsOptions) -> Self {
        Self {
            inner: Arc::new(FsInner {
                ns,
                grid,
                options,
                readers: ReaderCache::default(),
                garbage: Arc::new(Notify::new()),
                uploads: Arc::default(),
                quota: tokio::sync::Mutex::new(None),
                used: Arc::default(),
                pressure: crate::gc::SpacePressure::default(),
                short_files: Arc::new(Notify::new()),
                reading: Default::default(),
            }),
        }
    }

    /// Wakes the collector when a removal made garbage.
    fn removed(&self, operation: &str, removal: Result<Removal, NamespaceError>) -> FsResult<()> {
        let removal = removal.map_err(|e| ns_error(operation, e))?;
        self.inner.wake_collector(removal.garbage_queued > 0);
        Ok(())
    }

    /// Loads the named dead properties of `path` for the PROPFIND being
    /// answered, unless they are loaded already: one lookup per entry.
    async fn load_named(&self, named: &NamedPropfind, path: &str) -> FsResult<()> {
        if named.has(path) {
            return Ok(());
        }
        let names = named.dead_names();
        if names.is_empty() {
            named.load(path, Vec::new());
            return Ok(());
        }
        // An entry of a listing: its folder's next entries are loaded with
        // it, so a Depth: 1 PROPFIND makes one trip to the namespace per
        // page rather than per entry.
        if let Some((dir, name)) = split_parent(path) {
            if let Some(props) = named.take_from_page(dir, name) {
                named.load(path, props);
                return Ok(());
            }
            match self
                .inner
                .ns
                .get_named_props_of_children(dir, name, PROPS_PAGE, Arc::clone(&names))
                .await
            {
                Ok(page) => {
                    named.keep_page(dir, page);
                    if let Some(props) = named.take_from_page(dir, name) {
                        named.load(path, props);
                        return Ok(());
                    }
                }
                // Answered below for the entry alone, with its own error.
                Err(e) => tracing::debug!(error = %e, "properties of a folder's entries"),
            }
        }
        let props = self
            .inner
            .ns
            .get_named_props(path, names)
            .await
            .map_err(|e| ns_error("get_props", e))?;
        named.load(path, props);
        Ok(())
    }

    /// The uploads in progress: the HTTP layer registers a PUT as soon as
    /// it arrives, before the handler's checks and `open`.
    pub fn pending_uploads(&self) -> Arc<PendingUploads> {
        Arc::clone(&self.inner.uploads)
    }

    /// Notified when a file is stored short of shares: hand it to the
    /// background repair.
    pub fn short_files_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.inner.short_files)
    }

    /// Reported when a write runs out of space: hand it to the collector.
    pub fn space_pressure(&self) -> crate::gc::SpacePressure {
        self.inner.pressure.clone()
    }

    /// Whether a request still reads a capability's content: the
    /// collector keeps it under space pressure.
    pub fn in_use(&self) -> crate::gc::InUse {
        let inner = Arc::downgrade(&self.inner);
        Arc::new(move |cap: &str| inner.upgrade().is_some_and(|inner| inner.in_use(cap)))
    }

    /// Links capabilities into this tree ([`super::link`]).
    pub fn linker(&self) -> super::link::Linker {
        super::link::Linker::new(Arc::clone(&self.inner))
    }

    /// Notified whenever content becomes garbage: hand it to the collector.
    pub fn garbage_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.inner.garbage)
    }
}

/// The namespace path of a request path: percent-decoded UTF-8. Names that
/// are not UTF-8 are refused rather than guessed at.
pub(crate) fn ns_path(path: &DavPath) -> FsResult<String> {
    let path = String::from_utf8(path.as_bytes().to_vec()).map_err(|_| FsError::Forbidden)?;
    // dav-server names the parent of a top-level entry "" rather than "/"
    // (when it checks a COPY or MOVE destination's parent).
    if path.is_empty() {
        return Ok("/".to_owned());
    }
    Ok(path)
}

pub(crate) fn ns_error(operation: &str, e: NamespaceError) -> FsError {
    match e {
        NamespaceError::NotFound { .. } => FsError::NotFound,
        NamespaceError::AlreadyExists { .. } => FsError::Exists,
        NamespaceError::NotADirectory { .. }
        | NamespaceError::IsADirectory { .. }
        | NamespaceError::DirectoryNotEmpty { .. }
        | NamespaceError::InvalidName { .. }
        | NamespaceError::Conflict { .. }
        | NamespaceError::Locked { .. } => {
            tracing::debug!(operation, error = %e, "refused");
            FsError::Forbidden
        }
        NamespaceError::PropertyTooLarge { .. } | NamespaceError::PropertiesFull { .. } => {
            tracing::debug!(operation, error = %e, "refused");
            FsError::InsufficientStorage
        }
        ref full if full.is_out_of_space() => {
            tracing::warn!(operation, error = %e, "the namespace's disk is full");
            FsError::InsufficientStorage
        }
        other => {
            tracing::error!(operation, error = %other, "namespace failure");
            FsError::GeneralFailure
        }
    }
}

/// The one place an engine failure becomes a status, by whose fault it is:
/// - the grid not answering now (too few servers reachable, an upload not
///   happy): `IsRemote`, which src/server.rs answers as 503 with
///   Retry-After for GET, HEAD and PUT (dav-server itself says 502);
/// - data that fails verification everywhere, and our own bugs (bad
///   parameters, a bad capability in our namespace, a task of ours that
///   died, a layout we made that does not parse): `GeneralFailure`, 500,
///   which no retry fixes.
pub(crate) fn engine_error(operation: &str, e: &EngineError) -> FsError {
    tracing::error!(operation, error = %e, "engine failure");
    match e {
        EngineError::InvalidParams(_)
        | EngineError::TaskFailed { .. }
        | EngineError::BudgetClosed
        | EngineError::OwnLayout { .. }
        | EngineError::Decode { .. }
        | EngineError::ShortRead { .. }
        | EngineError::ReencodedMismatch
        | EngineError::InvalidCap(_)
        | EngineError::Chk(_)
        | EngineError::Inconsistent { .. } => FsError::GeneralFailure,
        EngineError::NoSpace { .. } => FsError::InsufficientStorage,
        EngineError::Grid(e) if e.is_out_of_space() => FsError::InsufficientStorage,
        EngineError::NotEnoughShares { problems, .. }
            if only_corrupt(problems) || problems.iter().any(|p| p.kind.is_ours()) =>
        {
            FsError::GeneralFailure
        }
        _ => FsError::IsRemote,
    }
}

/// Every server answered and every share it gave failed verification:
/// corrupt data, not an outage.
fn only_corrupt(problems: &[ShareProblem]) -> bool {
    !problems.is_empty() && problems.iter().all(|p| p.kind.is_corrupt())
}

impl DavFileSystem for GridFs {
    fn open<'a>(
        &'a self,
        path: &'a DavPath,
        options: OpenOptions,
    ) -> FsFuture<'a, Box<dyn DavFile>> {
        async move {
            let path = ns_path(path)?;
            let node = self
                .inner
                .ns
                .lookup(&path)
                .await
                .map_err(|e| ns_error("open", e))?;
            if options.write || options.append {
                let handle =
                    WriteHandle::open(Arc::clone(&self.inner), path, node, &options).await?;
                return Ok(Box::new(handle) as Box<dyn DavFile>);
            }
            let node = match node {
                Some(node) => node,
                None => self
                    .inner
                    .lookup_or_wait(&path, "open")
                    .await?
                    .ok_or(FsError::NotFound)?,
            };
            if node.is_dir() {
                return Err(FsError::Forbidden);
            }
            Ok(Box::new(ReadHandle::new(Arc::clone(&self.inner), &node)) as Box<dyn DavFile>)
        }
        .boxed()
    }

    fn read_dir<'a>(
        &'a self,
        path: &'a DavPath,
        _meta: ReadDirMeta,
    ) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        async move {
            let path = ns_path(path)?;
            // The first page now, so that a missing folder is an error
            // before the answer starts; the rest as the answer is written.
            let first = self
                .inner
                .ns
                .list_page(&path, None, LIST_PAGE)
                .await
                .map_err(|e| ns_error("read_dir", e))?;
            use futures::StreamExt as _;
            let inner = Arc::clone(&self.inner);
            let pages = futures::stream::unfold(Some((first, inner, path)), |state| async move {
                let (page, inner, path) = state?;
                let full = page.len() == LIST_PAGE;
                let last = page.last().map(|node| node.name.clone());
                let entries: Vec<FsResult<Box<dyn DavDirEntry>>> = page
                    .iter()
                    .map(|node| {
                        Ok(Box::new(GridDirEntry {
                            name: node.name.clone(),
                            meta: GridMeta::from(node).with_usage(&inner.used),
                        }) as Box<dyn DavDirEntry>)
                    })
                    .collect();
                let next = match (full, last) {
                    (true, Some(last)) => {
                        match inner.ns.list_page(&path, Some(last), LIST_PAGE).await {
                            Ok(next) => Some((next, inner, path)),
                            Err(e) => {
                                // The answer has started: end it short,
                                // said in the log.
                                tracing::error!(error = %e, "listing a folder's next entries");
                                None
                            }
                        }
                    }
                    _ => None,
                };
                Some((futures::stream::iter(entries), next))
            })
            .flatten();
            Ok(Box::pin(pages) as FsStream<Box<dyn DavDirEntry>>)
        }
        .boxed()
    }

    fn metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move {
            let path = ns_path(path)?;
            let node = self
                .inner
                .lookup_or_wait(&path, "metadata")
                .await?
                .ok_or(FsError::NotFound)?;
            let meta = GridMeta::from(&node).with_usage(&self.inner.used);
            Ok(Box::new(meta) as Box<dyn DavMetaData>)
        }
        .boxed()
    }

    fn create_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let path = ns_path(path)?;
            self.inner
                .ns
                .create_dir(&path)
                .await
                .map_err(|e| ns_error("create_dir", e))?;
            Ok(())
        }
        .boxed()
    }

    fn remove_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let path = ns_path(path)?;
            self.removed("remove_dir", self.inner.ns.remove_dir(&path).await)
        }
        .boxed()
    }

    fn remove_file<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let path = ns_path(path)?;
            if self.removal_left_to_the_move(&path).await {
                return Ok(());
            }
            self.removed("remove_file", self.inner.ns.remove_file(&path).await)
        }
        .boxed()
    }

    fn rename<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let (from, to) = (ns_path(from)?, ns_path(to)?);
            // An existing destination file is replaced here, in the same
            // transaction (its removal was left to this, see
            // `removal_left_to_the_move`); a destination folder the handler
            // removed already.
            let outcome = self
                .inner
                .ns
                .rename(&from, &to, true)
                .await
                .map_err(|e| ns_error("rename", e))?;
            self.inner.wake_collector(outcome.garbage_queued > 0);
            Ok(())
        }
        .boxed()
    }

    fn copy<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let (from, to) = (ns_path(from)?, ns_path(to)?);
            // Content is immutable: the copy shares the capability, no re-upload.
            let outcome = self
                .inner
                .ns
                .copy_file(&from, &to)
                .await
                .map_err(|e| ns_error("copy", e))?;
            self.inner.wake_collector(outcome.garbage_queued.is_some());
            Ok(())
        }
        .boxed()
    }

    fn set_modified<'a>(&'a self, path: &'a DavPath, time: SystemTime) -> FsFuture<'a, ()> {
        async move {
            let path = ns_path(path)?;
            self.inner
                .ns
                .set_mtime(&path, time)
                .await
                .map_err(|e| ns_error("set_modified", e))?;
            Ok(())
        }
        .boxed()
    }

    fn have_props<'a>(
        &'a self,
        _path: &'a DavPath,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        futures::future::ready(true).boxed()
    }

    fn patch_props<'a>(
        &'a self,
        path: &'a DavPath,
        patch: Vec<(bool, DavProp)>,
    ) -> FsFuture<'a, Vec<(StatusCode, DavProp)>> {
        async move {
            let path = ns_path(path)?;
            let mut changes = Vec::with_capacity(patch.len());
            let mut answer = Vec::with_capacity(patch.len());
            let sets: Vec<bool> = patch.iter().map(|(set, _)| *set).collect();
            for (set, prop) in patch {
                let namespace = prop.namespace.clone().unwrap_or_default();
                changes.push(if set {
                    PropPatch::Set(Prop {
                        namespace,
                        name: prop.name.clone(),
                        value: prop.xml.clone().unwrap_or_default(),
                    })
                } else {
                    PropPatch::Remove {
                        namespace,
                        name: prop.name.clone(),
                    }
                });
                answer.push((StatusCode::OK, DavProp { xml: None, ..prop }));
            }
            match self.inner.ns.patch_props(&path, changes).await {
                Ok(()) => Ok(answer),
                // RFC 4918 section 9.2.1: 507 for what could not be stored,
                // 424 for the rest of the all-or-nothing patch.
                Err(NamespaceError::PropertyTooLarge {
                    namespace,
                    name,
                    size,
                    limit,
                    ..
                }) => {
                    tracing::debug!(%namespace, %name, size, limit, "PROPPATCH refused");
                    Ok(refused_patch(answer, &sets, |prop, _| {
                        prop.name == name
                            && prop.namespace.as_deref().unwrap_or_default() == namespace
                    }))
                }
                Err(NamespaceError::PropertiesFull { total, limit, .. }) => {
                    tracing::debug!(total, limit, "PROPPATCH refused: properties full");
                    Ok(refused_patch(answer, &sets, |_, set| set))
                }
                Err(e) => Err(ns_error("patch_props", e)),
            }
        }
        .boxed()
    }

    fn get_props<'a>(&'a self, path: &'a DavPath, do_content: bool) -> FsFuture<'a, Vec<DavProp>> {
        async move {
            let path = ns_path(path)?;
            let props = match propstat::named_propfind() {
                // A PROPFIND that names its properties: only those.
                Some(named) => {
                    self.load_named(&named, &path).await?;
                    named.rest(&path)
                }
                None => self
                    .inner
                    .ns
                    .list_props(&path)
                    .await
                    .map_err(|e| ns_error("get_props", e))?,
            };
            Ok(props
                .into_iter()
                .map(|prop| DavProp {
                    prefix: xml_prefix(&prop.value),
                    namespace: (!prop.namespace.is_empty()).then_some(prop.namespace),
                    name: prop.name,
                    xml: do_content.then_some(prop.value),
                })
                .collect())
        }
        .boxed()
    }

    fn get_prop<'a>(&'a self, path: &'a DavPath, prop: DavProp) -> FsFuture<'a, Vec<u8>> {
        async move {
            let path = ns_path(path)?;
            let namespace = prop.namespace.unwrap_or_default();
            if let Some(named) = propstat::named_propfind() {
                self.load_named(&named, &path).await?;
                return named
                    .take(&path, &namespace, &prop.name)
                    .ok_or(FsError::NotFound);
            }
            self.inner
                .ns
                .get_prop(&path, &namespace, &prop.name)
                .await
                .map_err(|e| ns_error("get_prop", e))?
                .ok_or(FsError::NotFound)
        }
        .boxed()
    }

    fn get_quota(&self) -> FsFuture<'_, (u64, Option<u64>)> {
        async move {
            // RFC 4331 through dav-server: (used, total); it reports
            // available = total - used on `/` (total - len elsewhere).
            let (used, available) = self.inner.quota().await?;
            Ok((used, available.map(|room| used.saturating_add(room))))
        }
        .boxed()
    }
}

/// The answer to a PROPPATCH that changed nothing: 507 Insufficient
/// Storage for the properties `culprit` picks (given each one and whether
/// it was a set), 424 Failed Dependency for the others.
fn refused_patch(
    answer: Vec<(StatusCode, DavProp)>,
    sets: &[bool],
    culprit: impl Fn(&DavProp, bool) -> bool,
) -> Vec<(StatusCode, DavProp)> {
    answer
        .into_iter()
        .zip(sets.iter().copied())
        .map(|((_, prop), set)| {
            let status = if culprit(&prop, set) {
                StatusCode::INSUFFICIENT_STORAGE
            } else {
                StatusCode::FAILED_DEPENDENCY
            };
            (status, prop)
        })
        .collect()
}

/// The prefix of the stored property element (`<Z:Win32FileAttributes ...>`
/// gives `Z`), so that a PROPFIND for names only echoes what was set.
fn xml_prefix(xml: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(xml).ok()?;
    let mut rest = text;
    // Skip an XML declaration or comments before the element.
    let start = loop {
        let at = rest.find('<')?;
        rest = &rest[at + 1..];
        if !rest.starts_with('?') && !rest.starts_with('!') {
            break rest;
        }
    };
    let tag: String = start
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '>' && *c != '/')
        .collect();
    tag.split_once(':').map(|(prefix, _)| prefix.to_owned())
}

#[cfg(test)]
mod tests {
    use dav_server::fs::FsError;

    use super::{engine_error, xml_prefix};
    use crate::engine::{Corruption, EngineError, ProblemKind, ShareProblem};
    use crate::grid::GridError;

    fn not_enough(kinds: Vec<ProblemKind>) -> EngineError {
        EngineError::NotEnoughShares {
            have: 0,
            need: 3,
            problems: kinds
                .into_iter()
                .map(|kind| ShareProblem {
                    share: None,
                    server: "s".into(),
                    kind,
                })
                .collect(),
        }
    }

    /// 503 for a grid that does not answer now, 500 for data that fails
    /// verification everywhere and for our own bugs.
    #[test]
    fn the_status_follows_the_kind_of_failure() {
        let down = || {
            ProblemKind::of(GridError::Io {
                server: "s".into(),
                operation: "read",
                source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            })
        };
        let corrupt = || ProblemKind::Corrupt(Corruption::BlockHash { segment: 0 });
        let status = |e: EngineError| engine_error("test", &e);
        assert_eq!(
            status(not_enough(vec![down(), corrupt()])),
            FsError::IsRemote
        );
        assert_eq!(
            status(not_enough(vec![ProblemKind::TimedOut(
                std::time::Duration::from_secs(1)
            )])),
            FsError::IsRemote
        );
        assert_eq!(
            status(not_enough(vec![corrupt(), corrupt()])),
            FsError::GeneralFailure
        );
        assert_eq!(
            status(not_enough(vec![
                down(),
                ProblemKind::TaskGone { what: "share task" }
            ])),
            FsError::GeneralFailure
        );
        assert_eq!(status(EngineError::BudgetClosed), FsError::GeneralFailure);
        assert_eq!(
            status(EngineError::Grid(GridError::Io {
                server: "s".into(),
                operation: "read",
                source: std::io::Error::from(std::io::ErrorKind::TimedOut),
            })),
            FsError::IsRemote
        );
        assert!(
            matches!(down(), ProblemKind::Unavailable(e) if matches!(*e, GridError::Io { .. }))
        );
    }

    #[test]
    fn prefixes_of_stored_properties() {
        assert_eq!(
            xml_prefix(b"<Z:Win32 xmlns:Z=\"urn:schemas-microsoft-com:\">1</Z:Win32>"),
            Some("Z".into())
        );
        assert_eq!(
            xml_prefix(b"<?xml version=\"1.0\"?><a:b/>"),
            Some("a".into())
        );
        assert_eq!(xml_prefix(b"<b xmlns=\"x\"/>"), None);
    }
}
