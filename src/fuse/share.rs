//! A share: the images and options every connection serving it sees the
//! same. It outlives connections and serves any number at once (a local
//! mount and vhost-user frontends, one after another or together); each
//! connection has its own [`super::Session`] pointing at it.
//!
//! Owns: the image table, the server options, the count of image errors
//! (and their rate-limited log). Trusts the images only through
//! [`crate::erofs`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use log::{info, warn};

use super::reply::Fail;
use crate::erofs::{ondisk, Image, Inode};

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
    /// Background requests the kernel may have in flight (readahead).
    pub max_background: u16,
}

impl Default for ShareOptions {
    fn default() -> Self {
        Self {
            cache: CachePolicy::default(),
            max_read: DEFAULT_MAX_READ,
            max_handles: DEFAULT_MAX_HANDLES,
            max_background: 64,
        }
    }
}

/// What a share knows of an image besides its contents: carried for logs,
/// the API and content sharing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageMeta {
    /// Where the image comes from (a path, `fd:N`, a guest range), as the
    /// user gave it.
    pub source: String,
    /// Trust domain: only images of one domain may share content; `None`
    /// shares nothing.
    pub domain: Option<String>,
    /// Name of the xattr holding each file's content fingerprint, if not
    /// the default.
    pub fingerprint_xattr: Option<String>,
}

/// One image of a share.
#[derive(Debug)]
pub struct ShareImage {
    name: Option<String>,
    image: Arc<Image>,
    root: Arc<Inode>,
    meta: ImageMeta,
}

impl ShareImage {
    /// Checks that the image's root is a usable directory.
    fn new(name: Option<String>, image: Arc<Image>, meta: ImageMeta) -> crate::erofs::Result<Self> {
        let root = Arc::new(image.inode(image.root_nid())?);
        if !root.is_dir() {
            return Err(crate::erofs::Error::corrupt(
                Some(root.nid),
                "root inode",
                "not a directory",
            ));
        }
        Ok(Self {
            name,
            image,
            root,
            meta,
        })
    }

    /// The image's name in the share (`None`: the image is the share's
    /// root).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The image.
    pub fn image(&self) -> &Arc<Image> {
        &self.image
    }

    /// Its root directory.
    pub fn root(&self) -> &Arc<Inode> {
        &self.root
    }

    /// What the share knows of it.
    pub fn meta(&self) -> &ImageMeta {
        &self.meta
    }

    /// `st_ino` of `nid`, as the kernel's EROFS driver reports it
    /// (`erofs_nid_to_ino64`: nids of metabox images are folded so the
    /// metabox bit lands on bit 31).
    pub fn st_ino(&self, nid: u64) -> u64 {
        if self.image.superblock().metabox_nid.is_none() {
            return nid;
        }
        ((nid << 1) & 0xffff_ffff_0000_0000)
            | (nid & 0x7fff_ffff)
            | ((nid >> ondisk::NID_METABOX_BIT.trailing_zeros()) << 31)
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
}

/// The images a connection serves and the options it serves them with.
pub struct Share {
    opts: ShareOptions,
    /// The image at the root, once open.
    root: OnceLock<Arc<ShareImage>>,
    /// Opens the root image at the first INIT when it is not open yet.
    provider: Option<Box<dyn ImageProvider>>,
    /// Held while the provider opens, so that concurrent INITs open once.
    opening: Mutex<()>,
    /// Image errors so far (the first [`MAX_LOGGED_ERRORS`] are logged).
    errors: AtomicU64,
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Share")
            .field("opts", &self.opts)
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
        let share = Self::empty(opts, None);
        let root = ShareImage::new(None, image, meta)?;
        let _ = share.root.set(Arc::new(root));
        Ok(share)
    }

    /// A share whose root image `provider` opens at the first INIT. Until
    /// then every request but INIT gets EIO; an INIT whose image cannot be
    /// opened gets the errno of the cause (logged), and the next INIT
    /// tries again.
    pub fn opened_at_init(provider: Box<dyn ImageProvider>, opts: ShareOptions) -> Self {
        Self::empty(opts, Some(provider))
    }

    fn empty(opts: ShareOptions, provider: Option<Box<dyn ImageProvider>>) -> Self {
        Self {
            opts,
            root: OnceLock::new(),
            provider,
            opening: Mutex::new(()),
            errors: AtomicU64::new(0),
        }
    }

    /// The options.
    pub fn options(&self) -> &ShareOptions {
        &self.opts
    }

    /// The image at the share's root, once open.
    pub fn root_image(&self) -> Option<&Arc<ShareImage>> {
        self.root.get()
    }

    /// Image errors met so far (logged or not).
    pub fn image_errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
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
        let root =
            ShareImage::new(None, Arc::new(image), meta).map_err(|e| refuse(&e, e.errno()))?;
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
