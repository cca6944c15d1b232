//! Errors of the format layer.

use std::io;

/// Result of format-layer operations.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong while reading an image. Corruption (the bytes are wrong)
/// is kept apart from I/O failure (the bytes could not be read) and from
/// valid features this reader does not handle.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The source could not be read.
    #[error("I/O error reading {len} bytes at image offset {offset}: {source}")]
    Io {
        /// Byte offset of the failed read.
        offset: u64,
        /// Length of the failed read.
        len: usize,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The image is shorter than something it references.
    #[error("image truncated: {what} needs bytes {offset}..{end} but the {device} has {size}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Start of the needed range.
        offset: u64,
        /// End of the needed range.
        end: u64,
        /// Size of the device.
        size: u64,
        /// Which device.
        device: String,
    },
    /// No EROFS superblock.
    #[error("not an EROFS image (magic {found:#010x} at byte 1024, expected 0xe0f5e1e2)")]
    NotErofs {
        /// The magic found.
        found: u32,
    },
    /// The superblock checksum does not match.
    #[error("superblock checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadChecksum {
        /// Stored value.
        stored: u32,
        /// Computed value.
        computed: u32,
    },
    /// The image needs incompatible features this reader does not know.
    #[error("unknown incompatible feature bits {bits:#x}: this image needs a newer reader")]
    UnknownIncompat {
        /// The unknown bits.
        bits: u32,
    },
    /// A valid but unsupported construct.
    #[error("unsupported{}: {what}", fmt_nid(*.nid))]
    Unsupported {
        /// Inode concerned, if any.
        nid: Option<u64>,
        /// What is unsupported.
        what: String,
    },
    /// On-disk data is inconsistent.
    #[error("corrupt image{}: {field}: {detail}", fmt_nid(*.nid))]
    Corrupt {
        /// Inode concerned, if any.
        nid: Option<u64>,
        /// The field or structure at fault.
        field: &'static str,
        /// Details (values, offsets).
        detail: String,
    },
    /// An extra device the image needs was not given.
    #[error("data is on extra device {id}, which is not inside the image and was not given ({given} given; pass --device BLOB)")]
    MissingDevice {
        /// Device id from the image.
        id: u16,
        /// How many extra devices were given.
        given: usize,
    },
    /// An error found earlier and remembered (its text as first reported).
    #[error("{0}")]
    Earlier(String),
    /// Wrong inode kind for the operation.
    #[error("nid {nid}: {what}")]
    WrongKind {
        /// Inode concerned.
        nid: u64,
        /// Explanation.
        what: &'static str,
    },
}

fn fmt_nid(nid: Option<u64>) -> String {
    nid.map(|n| format!(" (nid {n})")).unwrap_or_default()
}

impl Error {
    /// Builds a corruption error.
    pub fn corrupt(nid: Option<u64>, field: &'static str, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            nid,
            field,
            detail: detail.into(),
        }
    }

    /// Builds an unsupported-feature error.
    pub fn unsupported(nid: Option<u64>, what: impl Into<String>) -> Self {
        Error::Unsupported {
            nid,
            what: what.into(),
        }
    }

    /// The errno a filesystem client should see for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Unsupported { .. } => libc::EOPNOTSUPP,
            Error::WrongKind { .. } => libc::EINVAL,
            Error::MissingDevice { .. } => libc::ENODEV,
            _ => libc::EIO,
        }
    }
}
