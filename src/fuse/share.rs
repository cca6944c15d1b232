//! A share: the images and options every connection serving it sees the
//! same. It outlives connections and serves any number at once (a local
//! mount and vhost-user frontends, one after another or together); each
//! connection has its own [`super::Session`] pointing at it.
//!
//! Owns: the image table (one image at the root, or named images under a
//! synthetic root, added and removed at runtime), the server options, the
//! count of image errors (and their rate-limited log). Trusts the images
//! only through [`crate::erofs`].

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, Weak};
use std::time::SystemTime;

use log::{debug, info, warn};

use super::abi;
use super::content::{ImageContent, SharedContent};
use super::dax::DaxMode;
use super::images::{
    check_name, root_of, ImageMeta, ImageTable, NameError, Place, ShareImage, MAX_IMAGES,
};
use super::outbound::Outbound;
use super::reply::Fail;
use crate::erofs::{CacheStats, Image};
use crate::metrics::{CacheSnapshot, Metrics, MetricsSnapshot};
use crate::share::Domain;

/// How long the kernel may trust what it was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CachePolicy {
    /// No caching: zero timeouts and direct I/O (every read reaches us).
    Never,
    /// Short timeouts (1 s); the page cache is dropped on open.
    Auto,
    /// Long timeouts, data and directory listings kept across opens (the
    /// image never changes).
    #[default]
    Always,
}

/// Attribute and entry timeout under [`CachePolicy::Always`] (one year).
pub const LONG_TIMEOUT_SECS: u64 = 365 * 24 * 3600;

/// Default largest READ: 1 MiB (256 pages).
pub const DEFAULT_MAX_READ: u32 = 1 << 20;

/// Default cap on open handles (per connection).
pub const DEFAULT_MAX_HANDLES: usize = 1 << 16;

/// Default cap on nodes (inodes the kernel holds) per connection: about
/// 300 bytes each, so at most ~600 MiB for a guest that never forgets.
pub const DEFAULT_MAX_NODES: usize = 1 << 21;

/// How many image errors are logged (then they are only counted).
pub const MAX_LOGGED_ERRORS: u64 = 100;

/// Server settings, the same for every connection of a share.
#[derive(Debug, Clone)]
pub struct ShareOptions {
    /// Caching policy.
    pub cache: CachePolicy,
    /// Largest READ (and READDIR) size accepted; also what INIT offers as
    /// `max_pages` (in 4 KiB pages).
    pub max_read: u32,
    /// Most handles open at once per connection (ENFILE beyond).
    pub max_handles: usize,
    /// Most nodes (inodes the kernel holds a lookup of) per connection;
    /// a lookup of another inode beyond it is ENFILE.
    pub max_nodes: usize,
    /// Background requests the kernel may have in flight (readahead).
    pub max_background: u16,
    /// Which files a client with a DAX window may map.
    pub dax: DaxMode,
}

impl Default for ShareOptions {
    fn default() -> Self {
        Self {
            cache: CachePolicy::default(),
            max_read: DEFAULT_MAX_READ,
            max_handles: DEFAULT_MAX_HANDLES,
            max_nodes: DEFAULT_MAX_NODES,
            max_background: 64,
            dax: DaxMode::Never,
        }
    }
}

/// Why an image could not be opened when the first INIT came.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The bytes are not there (e.g. a guest range outside guest memory).
    #[error("{0}")]
    Unavailable(#[source] std::io::Error),
    /// The bytes are no usable image.
    #[error(transparent)]
    Image(#[from] crate::erofs::Error),
    /// The source is shorter than the image says.
    #[error("too small: the superblock says {need} bytes")]
    TooSmall {
        /// Bytes the superblock accounts for.
        need: u64,
        /// Bytes the source has.
        have: u64,
    },
}

impl OpenError {
    /// The errno of the refused INIT.
    pub fn errno(&self) -> i32 {
        match self {
            OpenError::Unavailable(_) => libc::ENODEV,
            OpenError::Image(e) => e.errno(),
            OpenError::TooSmall { .. } => libc::EIO,
        }
    }
}

/// Opens a share's image when a connection's first INIT arrives (for
/// images that do not exist before, e.g. in the guest's own memory).
pub trait ImageProvider: Send + Sync + fmt::Debug {
    /// What is being opened, for log lines.
    fn describe(&self) -> String;

    /// Opens the image (called again after a failure, at the next INIT).
    fn open(&self) -> Result<Image, OpenError>;
}

/// Why a share could not be made or changed.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// The image's root is unusable.
    #[error(transparent)]
    Image(#[from] crate::erofs::Error),
    /// The name cannot be a top-level directory.
    #[error(transparent)]
    BadName(#[from] NameError),
    /// Another image has the name.
    #[error("an image named {0:?} is already served")]
    Exists(String),
    /// No image has the name.
    #[error("no image named {0:?} is served")]
    NotFound(String),
    /// The share holds as many images as it may.
    #[error("the share already serves {MAX_IMAGES} images")]
    Full,
    /// The share's root is one image: it has no named images.
    #[error("the share's root is one image: images cannot be added or removed")]
    NotNamed,
}

/// An image taken out of a share.
#[derive(Debug)]
pub struct Removed {
    /// The image (still read by the files clients have open).
    pub image: Arc<ShareImage>,
    /// Connections told that its name is gone (those whose transport can
    /// be told: /dev/fuse; virtio-fs clients see it at their next lookup).
    pub told: usize,
}

/// How the share's root looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// The root is one image (opened now, or at the first INIT).
    Image,
    /// The root is a read-only directory of named images.
    Named,
}

/// The images a connection serves and the options it serves them with.
///
/// Either one image is the share's root (its inode numbers are the
/// kernel's), or the root is a synthetic read-only directory (mode 0555)
/// listing named images, each a top-level directory, which may be added
/// and removed while connections are served ([`Share::add_image`],
/// [`Share::remove_image`]). What a removal does to the connections:
///
/// - the name is gone from the root at once (the root's entries, attributes
///   and listing are never cached by the client; a /dev/fuse client is also
///   told with `FUSE_NOTIFY_INVAL_ENTRY`);
/// - a file or directory of the image that a client still has open keeps
///   reading from the image until it is closed (and forgotten): the image
///   stays in memory until then;
/// - anything else a client asks about the image's nodes it still holds
///   (LOOKUP, GETATTR, OPEN, ...) answers ESTALE, never another image's
///   inode: node ids are keyed by the image's serial, which is never
///   reused. (A client that opens a file from its own cache, without a
///   message, reads it like a file already open.)
pub struct Share {
    opts: ShareOptions,
    layout: Layout,
    /// The image at the root, once open (root layout only).
    root: OnceLock<Arc<ShareImage>>,
    /// Opens the root image at the first INIT when it is not open yet.
    provider: Option<Box<dyn ImageProvider>>,
    /// Held while the provider opens, so that concurrent INITs open once.
    opening: Mutex<()>,
    /// The named images (named layout only).
    table: RwLock<ImageTable>,
    /// The connections' outbound channels, to tell them of names gone.
    outbounds: Mutex<Vec<Weak<dyn Outbound>>>,
    /// Image errors so far (the first [`MAX_LOGGED_ERRORS`] are logged).
    errors: AtomicU64,
    /// When the share was made (the synthetic root's times).
    created: SystemTime,
    /// Request counters of every connection, and of each named image.
    metrics: Arc<Metrics>,
    /// Decoded-extent cache counts of the images removed so far (the
    /// totals never go down).
    retired: Mutex<CacheStats>,
    /// The content store its images of a domain share (see
    /// [`super::content`]).
    content: OnceLock<Arc<SharedContent>>,
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Share")
            .field("opts", &self.opts)
            .field("layout", &self.layout)
            .field("root", &self.root.get().map(|r| r.meta()))
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl Share {
    /// A share whose root is `image`; fails if its root inode cannot be
    /// decoded.
    pub fn new(image: Arc<Image>, opts: ShareOptions) -> Result<Self, ShareError> {
        Self::with_meta(image, ImageMeta::default(), opts)
    }

    /// The same, with what is known of the image.
    pub fn with_meta(
        image: Arc<Image>,
        meta: ImageMeta,
        opts: ShareOptions,
    ) -> Result<Self, ShareError> {
        let share = Self::empty(opts, Layout::Image, None);
        let dir = root_of(&image)?;
        let root = ShareImage::new(None, image, dir, meta, Place::default());
        let _ = share.root.set(Arc::new(root));
        Ok(share)
    }

    /// A share whose root image `provider` opens at the first INIT. Until
    /// then every request but INIT gets EIO; an INIT whose image cannot be
    /// opened gets the errno of the cause (logged), and the next INIT
    /// tries again.
    pub fn opened_at_init(provider: Box<dyn ImageProvider>, opts: ShareOptions) -> Self {
        Self::empty(opts, Layout::Image, Some(provider))
    }

    /// A share of named images, none yet: its root is a read-only
    /// directory of their names ([`Share::add_image`]).
    pub fn named(opts: ShareOptions) -> Self {
        Self::empty(opts, Layout::Named, None)
    }

    fn empty(opts: ShareOptions, layout: Layout, provider: Option<Box<dyn ImageProvider>>) -> Self {
        Self {
            opts,
            layout,
            root: OnceLock::new(),
            provider,
            opening: Mutex::new(()),
            table: RwLock::new(ImageTable::default()),
            outbounds: Mutex::new(Vec::new()),
            errors: AtomicU64::new(0),
            created: SystemTime::now(),
            metrics: Arc::new(Metrics::new()),
            retired: Mutex::new(CacheStats::default()),
            content: OnceLock::new(),
        }
    }

    /// Serves the content of its images that have a trust domain from
    /// `content`'s store (once; a later call changes nothing). Images then
    /// join with [`Share::share_content`].
    pub fn set_content(&self, content: Arc<SharedContent>) {
        let _ = self.content.set(content);
    }

    /// The content store served from, if any.
    pub fn content(&self) -> Option<&Arc<SharedContent>> {
        self.content.get()
    }

    /// Makes `img` share its files' content through the share's store when
    /// it has a trust domain and fingerprints (`loader`: the image opened
    /// for loads, e.g. with O_DIRECT; `None`: the image itself). Returns
    /// whether it shares; without a store, or without a domain, nothing
    /// changes.
    pub fn share_content(
        &self,
        img: &ShareImage,
        loader: Option<Arc<Image>>,
    ) -> Result<bool, crate::share::Error> {
        if self.content.get().is_none() {
            return Ok(false);
        }
        let name = img.name().unwrap_or(img.meta().source.as_str()).to_owned();
        let meta = img.meta();
        let (domain, xattr) = (meta.domain.as_deref(), meta.fingerprint_xattr.as_deref());
        match ImageContent::for_image(&name, img.image(), domain, xattr, loader)? {
            Some(c) => {
                img.set_content(Arc::new(c));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The share's metrics registry (its connections count into it).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The metrics now, with each image's decoded-extent cache (read from
    /// the images, so counting costs the read path nothing).
    pub fn metrics_snapshot(&self) -> MetricsSnapshot {
        let mut snap = self.metrics.snapshot();
        let mut total = *self.retired.lock().unwrap_or_else(PoisonError::into_inner);
        let mut live = CacheStats::default();
        let images: Vec<Arc<ShareImage>> = match self.root.get() {
            Some(root) => vec![Arc::clone(root)],
            None => self.images(),
        };
        for img in &images {
            let s = img.image().extent_cache_stats();
            add_stats(&mut total, &s);
            add_stats(&mut live, &s);
            if let Some(per) = img.name().and_then(|n| snap.images.get_mut(n)) {
                per.extent_cache = cache_snapshot(&s);
            }
        }
        // Sizes are what is held now: the live images' only.
        total.bytes = live.bytes;
        total.entries = live.entries;
        snap.extent_cache = cache_snapshot(&total);
        if let Some(content) = self.content() {
            // The domains of the images served now.
            let domains: BTreeSet<Domain> = images
                .iter()
                .filter_map(|i| i.content().map(|c| c.domain().clone()))
                .collect();
            content.add_metrics(&mut snap.store, &domains);
        }
        snap
    }

    /// The options.
    pub fn options(&self) -> &ShareOptions {
        &self.opts
    }

    /// Whether the root is a directory of named images.
    pub fn is_named(&self) -> bool {
        self.layout == Layout::Named
    }

    /// The image at the share's root, once open (`None` for a share of
    /// named images).
    pub fn root_image(&self) -> Option<&Arc<ShareImage>> {
        self.root.get()
    }

    /// The named image called `name`.
    pub fn image(&self, name: &str) -> Option<Arc<ShareImage>> {
        self.read_table().get(name.as_bytes()).cloned()
    }

    /// The named images, in the order they were added.
    pub fn images(&self) -> Vec<Arc<ShareImage>> {
        self.read_table().in_order()
    }

    /// Adds `image` as the top-level directory `name` (named shares only);
    /// fails for a bad or taken name, a full share, or an image whose root
    /// is unusable. Connections see it at their next lookup or listing of
    /// the root.
    pub fn add_image(
        &self,
        name: &str,
        image: Arc<Image>,
        meta: ImageMeta,
    ) -> Result<Arc<ShareImage>, ShareError> {
        if !self.is_named() {
            return Err(ShareError::NotNamed);
        }
        check_name(name)?;
        // Decoded before the table is locked: it reads the image.
        let dir = root_of(&image)?;
        let mut table = self.write_table();
        if table.contains(name) {
            return Err(ShareError::Exists(name.to_owned()));
        }
        let place = table.reserve().ok_or(ShareError::Full)?;
        // Past the registry's bound the image is counted in the totals only.
        let counters = self.metrics.add_image(name).ok();
        let img = Arc::new(
            ShareImage::new(Some(name.to_owned()), image, dir, meta, place).with_metrics(counters),
        );
        table.insert(Arc::clone(&img));
        Ok(img)
    }

    /// Removes the image called `name` (named shares only) and tells every
    /// connection that can be told that the name is gone; see [`Share`]
    /// for what happens to what clients still hold of it.
    pub fn remove_image(&self, name: &str) -> Result<Removed, ShareError> {
        if !self.is_named() {
            return Err(ShareError::NotNamed);
        }
        let image = self
            .write_table()
            .remove(name)
            .ok_or_else(|| ShareError::NotFound(name.to_owned()))?;
        image.mark_removed();
        self.metrics.remove_image(name);
        {
            let mut retired = self.retired.lock().unwrap_or_else(PoisonError::into_inner);
            let s = image.image().extent_cache_stats();
            add_stats(&mut retired, &s);
        }
        let mut told = 0usize;
        for out in self.live_outbounds() {
            match out.inval_entry(abi::ROOT_ID, name.as_bytes()) {
                // ENOENT: the client had nothing cached under the name.
                Ok(()) => told = told.saturating_add(1),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => told = told.saturating_add(1),
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {}
                Err(e) => debug!("telling a connection that {name:?} is gone: {e}"),
            }
        }
        Ok(Removed { image, told })
    }

    /// Image errors met so far (logged or not).
    pub fn image_errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The synthetic root's change time: when the share was made.
    pub(crate) fn created(&self) -> SystemTime {
        self.created
    }

    /// Named image `name` (raw bytes of a LOOKUP).
    pub(crate) fn lookup_image(&self, name: &[u8]) -> Option<Arc<ShareImage>> {
        self.read_table().get(name).cloned()
    }

    /// Named images served now.
    pub(crate) fn image_count(&self) -> usize {
        self.read_table().len()
    }

    /// Remembers a connection's outbound channel (weakly), to tell it of
    /// names gone.
    pub(crate) fn register(&self, out: &Arc<dyn Outbound>) {
        let mut v = self
            .outbounds
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        v.retain(|w| w.strong_count() > 0);
        v.push(Arc::downgrade(out));
    }

    fn live_outbounds(&self) -> Vec<Arc<dyn Outbound>> {
        let v = self
            .outbounds
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        v.iter().filter_map(Weak::upgrade).collect()
    }

    fn read_table(&self) -> std::sync::RwLockReadGuard<'_, ImageTable> {
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_table(&self) -> std::sync::RwLockWriteGuard<'_, ImageTable> {
        self.table.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens what must be open before INIT is answered; the errno to
    /// refuse INIT with otherwise (the reason is logged).
    pub(crate) fn open_at_init(&self) -> Result<(), i32> {
        if self.root.get().is_some() {
            return Ok(());
        }
        let Some(provider) = &self.provider else {
            return Ok(());
        };
        let _guard = self.opening.lock().unwrap_or_else(PoisonError::into_inner);
        if self.root.get().is_some() {
            return Ok(());
        }
        let what = provider.describe();
        let refuse = |e: &dyn fmt::Display, errno: i32| {
            warn!(
                "{what}: {e}; FUSE INIT refused ({})",
                errno_name(errno).unwrap_or("error")
            );
            errno
        };
        let image = provider.open().map_err(|e| refuse(&e, e.errno()))?;
        let meta = ImageMeta {
            source: what.clone(),
            ..ImageMeta::default()
        };
        let dir = root_of(&image).map_err(|e| refuse(&e, e.errno()))?;
        let root = ShareImage::new(None, Arc::new(image), dir, meta, Place::default());
        info!("{what}: opened");
        let _ = self.root.set(Arc::new(root));
        Ok(())
    }

    /// Logs an image error (the first [`MAX_LOGGED_ERRORS`]; then only
    /// counts them) and turns it into the errno its cause implies.
    pub(crate) fn image_error(
        &self,
        img: &ShareImage,
        what: &str,
        e: &crate::erofs::Error,
    ) -> Fail {
        let n = self.errors.fetch_add(1, Ordering::Relaxed);
        if n < MAX_LOGGED_ERRORS {
            match img.name() {
                Some(name) => warn!("image {name}: {what}: {e}"),
                None => warn!("{what}: {e}"),
            }
            if n.saturating_add(1) == MAX_LOGGED_ERRORS {
                warn!("{MAX_LOGGED_ERRORS} image errors logged; further ones are only counted");
            }
        }
        Fail::Errno(e.errno())
    }
}

/// Adds the counts of `b` to `a` (sizes too).
fn add_stats(a: &mut CacheStats, b: &CacheStats) {
    a.hits = a.hits.saturating_add(b.hits);
    a.misses = a.misses.saturating_add(b.misses);
    a.evictions = a.evictions.saturating_add(b.evictions);
    a.bytes = a.bytes.saturating_add(b.bytes);
    a.entries = a.entries.saturating_add(b.entries);
}

fn cache_snapshot(s: &CacheStats) -> CacheSnapshot {
    CacheSnapshot {
        hits: s.hits,
        misses: s.misses,
        evictions: s.evictions,
        bytes: s.bytes,
        entries: s.entries,
    }
}

/// The symbolic name of the errnos a refused INIT carries.
fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EIO => "EIO",
        libc::ENODEV => "ENODEV",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EINVAL => "EINVAL",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuse::testutil::{memory_image, TINY_IMAGE};

    #[test]
    fn test_image_errors_keep_their_errno_and_are_counted_past_the_log_limit() {
        let share = Share::new(memory_image(TINY_IMAGE).unwrap(), ShareOptions::default()).unwrap();
        let img = Arc::clone(share.root_image().unwrap());
        let unsupported = crate::erofs::Error::unsupported(Some(5), "a feature");
        for n in 0..MAX_LOGGED_ERRORS + 20 {
            let Fail::Errno(e) = share.image_error(&img, "read", &unsupported) else {
                panic!("not an errno");
            };
            assert_eq!(e, libc::EOPNOTSUPP);
            assert_eq!(share.image_errors(), n + 1);
        }
    }
}
