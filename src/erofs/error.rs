//! Errors of the format layer.
//!
//! Errors are values that can be kept: a failure remembered by a cache (a
//! pcluster that did not decode, a packed inode that did not parse) is
//! handed out again as a clone of the original, with its type, so
//! [`Error::errno`] answers what its cause implies. Corruption names the
//! inode (when there is one) and where the bad structure is ([`At`]).

use std::fmt;
use std::io;
use std::sync::Arc;

/// Result of format-layer operations.
pub type Result<T> = std::result::Result<T, Error>;

/// Where a structure or a byte of the image lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum At {
    /// Byte offset in the primary image (the unified address space of
    /// device 0 when the extra devices are inside it).
    Image(u64),
    /// Byte offset inside the data of the metabox inode.
    Metabox(u64),
    /// Byte offset on extra device `id` (numbered from 1, as chunk
    /// indexes and the device table number them).
    Device {
        /// Device id.
        id: u16,
        /// Byte offset on that device.
        offset: u64,
    },
}

impl At {
    /// The byte offset, in whichever space.
    pub fn offset(self) -> u64 {
        match self {
            At::Image(o) | At::Metabox(o) | At::Device { offset: o, .. } => o,
        }
    }

    /// The same space, `n` bytes further on (saturating).
    pub fn plus(self, n: u64) -> At {
        match self {
            At::Image(o) => At::Image(o.saturating_add(n)),
            At::Metabox(o) => At::Metabox(o.saturating_add(n)),
            At::Device { id, offset } => At::Device {
                id,
                offset: offset.saturating_add(n),
            },
        }
    }

    /// Name of the space: `image`, `metabox inode`, `extra device N`.
    pub fn space(self) -> String {
        match self {
            At::Image(_) => "image".into(),
            At::Metabox(_) => "metabox inode".into(),
            At::Device { id, .. } => format!("extra device {id}"),
        }
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Image(o) => write!(f, "image byte {o}"),
            At::Metabox(o) => write!(f, "metabox byte {o}"),
            At::Device { id, offset } => write!(f, "byte {offset} of extra device {id}"),
        }
    }
}

/// What went wrong while reading an image. Corruption (the bytes are wrong)
/// is kept apart from I/O failure (the bytes could not be read), from
/// missing pieces (a device not given) and from valid features this reader
/// does not handle.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The source could not be read.
    #[error("I/O error reading {len} bytes at {at}: {source}")]
    Io {
        /// Where the failed read started.
        at: At,
        /// Length of the failed read.
        len: usize,
        /// The underlying error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The image (or a device) is shorter than something it references.
    #[error("image truncated: {what} needs bytes {}..{end} but the {} has {size}", .at.offset(), .at.space())]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Start of the needed range.
        at: At,
        /// End of the needed range (same space as `at`).
        end: u64,
        /// Size of that space.
        size: u64,
    },
    /// No EROFS superblock.
    #[error("not an EROFS image (magic {found:#010x} at byte 1024, expected 0xe0f5e1e2)")]
    NotErofs {
        /// The magic found.
        found: u32,
    },
    /// The superblock checksum does not match.
    #[error("superblock checksum mismatch (image byte 1028): stored {stored:#010x}, computed {computed:#010x}")]
    BadChecksum {
        /// Stored value.
        stored: u32,
        /// Computed value.
        computed: u32,
    },
    /// The image needs incompatible features this reader does not know.
    #[error("unknown incompatible feature bits {bits:#x} (superblock, image byte 1104): this image needs a newer reader")]
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
    #[error("corrupt image{}{}: {field}: {detail}", fmt_at(*.at), fmt_nid(*.nid))]
    Corrupt {
        /// Inode concerned, if any.
        nid: Option<u64>,
        /// Where the bad structure is. `None` only for bytes whose place
        /// the code finding the fault does not know (a compressed stream, a
        /// config record); its caller places or wraps the error.
        at: Option<At>,
        /// The field or structure at fault.
        field: &'static str,
        /// Details (values, offsets).
        detail: String,
    },
    /// An extra device the data is on was not given (and is not inside
    /// the image).
    #[error(
        "data{} at byte {offset} of extra device {id} is missing: the device is not inside \
         the image and was not given ({given} given; pass --device BLOB)",
        fmt_of_nid(*.nid)
    )]
    MissingDevice {
        /// Device id from the image.
        id: u16,
        /// How many extra devices were given.
        given: usize,
        /// Inode whose data this is, if any.
        nid: Option<u64>,
        /// Byte offset on that device.
        offset: u64,
    },
    /// A compressed extent could not be decoded (its pcluster could not
    /// be read, or its bytes are not a valid stream).
    #[error(
        "nid {nid}: cannot decode file bytes {la}..{} from the {plen}-byte pcluster at {at}: {cause}",
        .la.saturating_add(*.llen)
    )]
    Decode {
        /// Inode read.
        nid: u64,
        /// Logical (file) offset of the extent (or run of extents).
        la: u64,
        /// Decoded length.
        llen: u64,
        /// Where the pcluster (or run of pclusters) is.
        at: At,
        /// Encoded length.
        plen: u64,
        /// Why (shown in this error's text, so not also its `source()`).
        cause: Box<Error>,
    },
    /// Wrong inode kind for the operation.
    #[error("nid {nid}: {what}")]
    WrongKind {
        /// Inode concerned.
        nid: u64,
        /// Explanation.
        what: &'static str,
    },
    /// A lock was poisoned by a panic in another thread.
    #[error("internal error: {0} poisoned by a panic")]
    Poisoned(&'static str),
}

fn fmt_nid(nid: Option<u64>) -> String {
    nid.map(|n| format!(" (nid {n})")).unwrap_or_default()
}

fn fmt_of_nid(nid: Option<u64>) -> String {
    nid.map(|n| format!(" of nid {n}")).unwrap_or_default()
}

fn fmt_at(at: Option<At>) -> String {
    at.map(|a| format!(" at {a}")).unwrap_or_default()
}

impl Error {
    /// Builds a corruption error for the structure at `at`.
    pub fn corrupt(
        nid: Option<u64>,
        at: impl Into<At>,
        field: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            nid,
            at: Some(at.into()),
            field,
            detail: detail.into(),
        }
    }

    /// Builds a corruption error about bytes whose place the caller knows
    /// (and adds with [`Error::placed`] or a wrapping [`Error::Decode`]):
    /// a directory block, a compressed stream, a config record.
    pub fn corrupt_unplaced(
        nid: Option<u64>,
        field: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            nid,
            at: None,
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

    /// Builds an I/O error of a read of `len` bytes at `at`.
    pub fn io(at: At, len: usize, source: io::Error) -> Self {
        Error::Io {
            at,
            len,
            source: Arc::new(source),
        }
    }

    /// This error with a corruption's missing place and inode filled in
    /// (`at` and `nid`; what the error already names is kept).
    pub fn placed(self, nid: Option<u64>, at: impl Into<At>) -> Self {
        match self {
            Error::Corrupt {
                nid: n,
                at: a,
                field,
                detail,
            } => Error::Corrupt {
                nid: n.or(nid),
                at: a.or(Some(at.into())),
                field,
                detail,
            },
            other => other,
        }
    }

    /// Whether this error follows from the image's bytes alone, so that
    /// trying again on the same bytes fails the same way (corruption, an
    /// unsupported construct, a missing device): such failures may be
    /// remembered. A failed read of the source ([`Error::Io`]) may pass,
    /// and a poisoned lock is an internal fault: those are not kept.
    pub fn is_lasting(&self) -> bool {
        match self {
            Error::Io { .. } | Error::Poisoned(_) => false,
            Error::Decode { cause, .. } => cause.is_lasting(),
            _ => true,
        }
    }

    /// The errno a filesystem client should see for this error: what the
    /// kernel's EROFS gives for the same fault. Inconsistent on-disk data
    /// (a bad inode, dirent, xattr, compressed map or stream) is EUCLEAN,
    /// the kernel's EFSCORRUPTED, for data reads too; a failed or short
    /// read of the source stays EIO.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Unsupported { .. } => libc::EOPNOTSUPP,
            Error::WrongKind { .. } => libc::EINVAL,
            Error::MissingDevice { .. } => libc::ENODEV,
            Error::Corrupt { .. } => libc::EUCLEAN,
            Error::Decode { cause, .. } => cause.errno(),
            _ => libc::EIO,
        }
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    /// A decode failure of nid 7 caused by `cause`.
    fn decode(cause: Error) -> Error {
        Error::Decode {
            nid: 7,
            la: 0,
            llen: 10,
            at: At::Image(4096),
            plen: 4,
            cause: Box::new(cause),
        }
    }

    #[test]
    fn test_error_errno_follows_the_cause() {
        let missing = Error::MissingDevice {
            id: 1,
            given: 0,
            nid: Some(7),
            offset: 4096,
        };
        let cases: &[(Error, i32)] = &[
            (
                Error::corrupt(Some(1), At::Image(8), "f", "d"),
                libc::EUCLEAN,
            ),
            (
                decode(Error::corrupt_unplaced(None, "lz4", "bad")),
                libc::EUCLEAN,
            ),
            (Error::unsupported(None, "x"), libc::EOPNOTSUPP),
            (missing.clone(), libc::ENODEV),
            (decode(missing), libc::ENODEV),
            (decode(Error::unsupported(Some(7), "x")), libc::EOPNOTSUPP),
        ];
        for (e, want) in cases {
            assert_eq!(e.errno(), *want, "{e}");
            // A remembered copy answers the same.
            assert_eq!(e.clone().errno(), *want, "{e}");
        }
    }

    #[test]
    fn test_error_is_lasting_unless_io() {
        let io = Error::io(At::Image(0), 4, io::Error::from_raw_os_error(libc::EIO));
        let cases: &[(Error, bool)] = &[
            (Error::corrupt_unplaced(None, "lzma", "bad"), true),
            (Error::unsupported(None, "x"), true),
            (decode(Error::corrupt_unplaced(None, "lz4", "bad")), true),
            (io.clone(), false),
            (decode(io), false),
            (Error::Poisoned("x"), false),
        ];
        for (e, want) in cases {
            assert_eq!(e.is_lasting(), *want, "{e}");
        }
    }

    #[test]
    fn test_error_texts_name_inode_and_place() {
        let e =
            Error::corrupt_unplaced(None, "lz4", "bad literal").placed(Some(3), At::Metabox(64));
        assert_eq!(
            e.to_string(),
            "corrupt image at metabox byte 64 (nid 3): lz4: bad literal"
        );
        let d = Error::Decode {
            nid: 9,
            la: 8192,
            llen: 4096,
            at: At::Device { id: 1, offset: 512 },
            plen: 100,
            cause: Box::new(Error::corrupt_unplaced(None, "lz4", "bad")),
        };
        assert_eq!(
            d.to_string(),
            "nid 9: cannot decode file bytes 8192..12288 from the 100-byte pcluster at \
             byte 512 of extra device 1: corrupt image: lz4: bad"
        );
        let t = Error::Truncated {
            what: "inode",
            at: At::Image(100),
            end: 164,
            size: 120,
        };
        assert_eq!(
            t.to_string(),
            "image truncated: inode needs bytes 100..164 but the image has 120"
        );
    }
}
