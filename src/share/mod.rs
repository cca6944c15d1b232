//! Shared content: one host copy of each file content per fingerprint and
//! trust domain, across images, mounts and daemon processes.
//!
//! - [`fingerprint`]: the digest xattr `mkfs.erofs --xattr-inode-digest`
//!   writes, and how to find it in an image (the value format is described
//!   there).
//! - [`domain`]: trust domains; only images of one domain share content.
//! - [`store`]: the content store, a directory shared by every process
//!   that names it, holding each (domain, fingerprint)'s content once,
//!   verified.
//! - [`stats`]: the per-domain counters kept in the store.
//!
//! Trusts: the store directory (it must belong to this user and be
//! writable by nobody else; it is checked when opened). Trusts nothing from
//! images: a fingerprint is a claim, and content enters the store only when
//! its sha256 equals the fingerprint, so an image that lies cannot change
//! what any other image's readers see.
//!
//! # Store layout (`DIR`, default `/dev/shm/erofs-virtiofsd.UID`)
//!
//! ```text
//! DIR/                              0700, this user's
//!   v1/                             layout version; another layout gets v2/
//!     usage                         u64 LE: bytes of entries + reservations
//!     domains/DOMAIN/               DOMAIN = Domain::dir_name (%-encoded)
//!       objects/HEX                 an entry: the content whose sha256 is HEX
//!       mapped/HEX                  its mapped copy for DAX windows, padded
//!                                   to 2 MiB (see store::mapped)
//!       claims/HEX                  the lock file of HEX's loader
//!       tmp/HEX                     HEX's content while it is loaded
//!       stats                       counters (see stats)
//! ```
//! Directories are 0700, files 0600: a store belongs to one user.
//!
//! # Rules
//! - **One loader per content.** A loader locks `claims/HEX` (exclusive
//!   `flock`, never waiting; a reader that finds it taken serves from its
//!   own image and looks again later), checks `objects/HEX` again, writes
//!   `tmp/HEX` while hashing it, and only when the hash equals HEX links it
//!   as `objects/HEX` (`link` never replaces) and unlinks the claim. The
//!   kernel drops a dead loader's lock; its partial `tmp/HEX` was never
//!   visible and is removed by the next claimant of HEX or by the next
//!   recount.
//! - **Entries in use are never evicted.** An [`store::Entry`] holds a
//!   shared `flock` on its file. The evictor takes the exclusive lock
//!   without waiting (skipping entries in use), checks the path still names
//!   that file and unlinks it while locked. A user that opened the path
//!   just before sees, once it has its shared lock, a link count of 0 and
//!   treats the entry as absent.
//! - **Size.** `usage` counts entries plus the bytes loaders have reserved
//!   (each claim holds its own reservation), changed only under an
//!   exclusive lock of `usage`. A load that would pass the limit recounts
//!   from the directories (which also cleans up after dead loaders, whose
//!   reservations would otherwise stay counted) and evicts unused entries,
//!   least recently used (oldest mtime; every hit touches it) first; if the
//!   content still does not fit, the load fails with [`Error::Full`].
//! - **Counters** per domain are kept by [`stats`]; entries and bytes are
//!   counted from the directory when asked.
//! - On a disk (not tmpfs) content is synced before it is linked, so a
//!   crash of the machine cannot leave a torn entry.
//! - A private store ([`store::Store::private`]) has the same layout in a
//!   directory of its own, removed when it is dropped (or, after a crash,
//!   by the next private store made beside it).
#![forbid(unsafe_code)]

mod claim;
pub mod domain;
pub mod fingerprint;
pub mod hugefs;
pub mod stats;
pub mod store;

use std::io;
use std::path::{Path, PathBuf};

pub use domain::Domain;
pub use fingerprint::{hash_content, Fingerprint, FingerprintXattr, DEFAULT_XATTR_NAME};
pub use stats::{Counters, DomainStats};
pub use store::{Entry, LoadOutcome, Store, StoreOptions};

/// Errors of the shared-content layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A trust-domain name that cannot be used.
    #[error("invalid trust domain {0}")]
    Domain(String),
    /// A fingerprint xattr name that cannot be used.
    #[error("invalid fingerprint xattr name {0}")]
    FingerprintXattr(String),
    /// A store directory someone else could change.
    #[error("refusing store directory {path}: {what}")]
    UnsafeStore {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// A store operation failed.
    #[error("content store: cannot {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// Reading the content to load failed.
    #[error("reading the content to store failed at byte {offset}")]
    Source {
        /// Where in the content.
        offset: u64,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The content's sha256 is not its fingerprint: nothing was stored.
    #[error("content claimed as {fingerprint} in domain {domain} has sha256 {actual}: not stored")]
    Mismatch {
        /// The domain of the load.
        domain: Domain,
        /// What the image claimed.
        fingerprint: Fingerprint,
        /// What the content hashes to.
        actual: Fingerprint,
    },
    /// The content does not fit even after evicting every unused entry.
    #[error("content store full: {len} bytes do not fit ({used} of {limit} in use)")]
    Full {
        /// Bytes of the content.
        len: u64,
        /// Bytes in use (entries in use, loads in flight).
        used: u64,
        /// The size limit.
        limit: u64,
    },
}

impl Error {
    fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Result of the shared-content layer.
pub type Result<T> = std::result::Result<T, Error>;
