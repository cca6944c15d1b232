//! Content fingerprints: the per-file digest xattr that `mkfs.erofs
//! --xattr-inode-digest[=NAME]` (erofs-utils 1.9) writes.
//!
//! What the images hold (checked against erofs-utils 1.9.3/1.9.4, the
//! kernel's `fs/erofs` inode-share code and real images):
//! - The superblock sets COMPAT_ISHARE_XATTRS and `ishare_xattr_prefix_id`
//!   (byte 0x69): the index of a long xattr name prefix that is the whole
//!   xattr name. mkfs splits NAME like any long prefix: after `user.`,
//!   `trusted.` or `security.` the rest is the infix
//!   (`trusted.erofs.fingerprint` is short index 4 + `erofs.fingerprint`);
//!   any other NAME gets short index 0, which no xattr handler serves, so
//!   listxattr and getxattr never show it. The default NAME is
//!   [`DEFAULT_XATTR_NAME`].
//! - Each regular file of at least one byte carries one xattr entry under
//!   that prefix with an empty name. Its value is 39 bytes: ASCII `sha256:`
//!   then the 32 raw bytes of the SHA-256 of the file's whole content as
//!   the file reads (its `i_size` bytes, holes as zeros), so the same
//!   content has the same value whatever the compression, block size or
//!   layout of the image. Empty files, directories, symlinks and special
//!   files get none. Equal values are usually one shared xattr.
//! - The kernel compares the value as opaque bytes (plus the mount's
//!   `domain_id`); `fsck.erofs --xattr-inode-digest` wants exactly the 39-byte
//!   form.
//!
//! A fingerprint is only what an image claims: the content store verifies
//! the content against it before anyone else can see it. A value of any
//! other form (and, leniently, `sha256:` with 64 hex digits, a form some
//! format notes describe) is "no fingerprint": the file is served unshared.
//!
//! Trusts: nothing read from the image. Owns: the name resolution and the
//! value format.

use std::fmt;
use std::io;
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use crate::erofs::{Image, Inode, InodeKind};

use super::{Error, Result};

/// The xattr name mkfs.erofs uses when `--xattr-inode-digest` has none.
pub const DEFAULT_XATTR_NAME: &str = "erofs.fingerprint.v1";

/// The algorithm tag that starts every fingerprint value.
const SHA256_TAG: &[u8] = b"sha256:";

/// Longest name after a short prefix (the on-disk name length is a byte).
const MAX_SUFFIX: usize = 255;

/// The SHA-256 of a file's content, as an image claims it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// A fingerprint from a raw SHA-256 digest.
    pub fn from_sha256(digest: [u8; 32]) -> Self {
        Self(digest)
    }

    /// Decodes an xattr value: `sha256:` + 32 raw bytes (what mkfs writes)
    /// or `sha256:` + 64 hex digits. Anything else is `None`.
    pub fn from_xattr_value(value: &[u8]) -> Option<Self> {
        let rest = value.strip_prefix(SHA256_TAG)?;
        match rest.len() {
            32 => rest.try_into().ok().map(Self),
            64 => std::str::from_utf8(rest).ok().and_then(Self::from_hex),
            _ => None,
        }
    }

    /// The value mkfs.erofs writes for this fingerprint.
    pub fn xattr_value(&self) -> [u8; 39] {
        let mut v = [0u8; 39];
        v[..7].copy_from_slice(SHA256_TAG);
        v[7..].copy_from_slice(&self.0);
        v
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex (64 characters).
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
            *o = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
        }
        Some(Self(out))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.to_hex())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Which xattr holds the fingerprints of an image's files: a short prefix
/// index and the name after it, as [`crate::erofs::Xattr`] reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FingerprintXattr {
    index: u8,
    suffix: Vec<u8>,
}

impl FingerprintXattr {
    /// The xattr of a full name, split as mkfs.erofs splits
    /// `--xattr-inode-digest=NAME` (a name without a `user.`, `trusted.` or
    /// `security.` prefix is a hidden one).
    pub fn from_name(name: &str) -> Result<Self> {
        const SHORT: [(u8, &str); 3] = [(1, "user."), (4, "trusted."), (6, "security.")];
        let (index, suffix) = SHORT
            .iter()
            .find_map(|(i, p)| name.strip_prefix(p).map(|rest| (*i, rest)))
            .unwrap_or((0, name));
        if name.is_empty() || suffix.len() > MAX_SUFFIX || name.contains('\0') {
            return Err(Error::FingerprintXattr(format!(
                "{name:?}: wants 1 to {MAX_SUFFIX} bytes after the prefix, no NUL"
            )));
        }
        Ok(Self {
            index,
            suffix: suffix.as_bytes().to_vec(),
        })
    }

    /// The xattr the image's superblock declares for fingerprints, if any.
    /// An unreadable prefix table counts as none (logged).
    pub fn declared_by(img: &Image) -> Option<Self> {
        match img.ishare_xattr() {
            Ok(x) => x.map(|(index, suffix)| Self { index, suffix }),
            Err(e) => {
                log::warn!("fingerprint xattr prefix unreadable, sharing nothing: {e}");
                None
            }
        }
    }

    /// The xattr to use for an image: `configured` when given (the
    /// `--fingerprint-xattr` option), else what the image declares. `None`:
    /// the image's files have no fingerprints.
    pub fn for_image(img: &Image, configured: Option<&FingerprintXattr>) -> Option<Self> {
        configured.cloned().or_else(|| Self::declared_by(img))
    }

    /// The full name for messages (hidden names as their bare suffix).
    pub fn name(&self) -> String {
        let prefix = match self.index {
            1 => "user.",
            4 => "trusted.",
            6 => "security.",
            _ => "",
        };
        format!("{prefix}{}", String::from_utf8_lossy(&self.suffix))
    }

    /// The fingerprint `inode` claims, if it is a regular file with a value
    /// of a known form. Never fails: an unreadable xattr area is logged and
    /// means "no fingerprint".
    pub fn fingerprint(&self, img: &Image, inode: &Inode) -> Option<Fingerprint> {
        if inode.kind != InodeKind::File {
            return None;
        }
        let xattrs = match img.xattrs(inode) {
            Ok(x) => x,
            Err(e) => {
                log::debug!("nid {}: xattrs unreadable, no fingerprint: {e}", inode.nid);
                return None;
            }
        };
        let x = xattrs
            .into_iter()
            .find(|x| x.index == self.index && x.suffix == self.suffix)?;
        let fp = Fingerprint::from_xattr_value(&x.value);
        if fp.is_none() {
            log::debug!(
                "nid {}: {} holds {} bytes of unknown form, no fingerprint",
                inode.nid,
                self.name(),
                x.value.len()
            );
        }
        fp
    }
}

/// Bytes per read/hash step when streaming content. Small on purpose: the
/// buffers are freed after each load, and the allocator keeps freed blocks
/// of a size it has once returned to the system in the loader threads'
/// heaps; with 1 MiB chunks that left about 6 MiB per process resident
/// after loading a few thousand files (`scripts/bench-share`), with
/// 128 KiB chunks well under one. Loads are no slower measurably: the
/// read and the hash of a chunk still overlap.
pub(super) const CHUNK: usize = 128 << 10;

/// Chunk buffers in flight between the reading and the hashing thread.
const BUFFERS: usize = 4;

/// The sha256 of `len` bytes of content read through `read(offset, buf)`
/// (returns the bytes read, 0 at the end): to check an image's own content
/// against its claim without storing it.
pub fn hash_content(
    len: u64,
    read: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<usize>,
) -> Result<Fingerprint> {
    stream_hashed(len, read, &mut |_| Ok(()))
}

/// Reads `len` bytes through `read`, hands each chunk to `sink` in order
/// and returns the content's sha256. Content of more than one chunk is
/// hashed on a second thread while the next chunk is read and written, so
/// a load costs about the slower of the two, not their sum.
pub(super) fn stream_hashed(
    len: u64,
    read: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<usize>,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<Fingerprint> {
    if len <= CHUNK as u64 {
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(CHUNK)];
        let mut h = Sha256::new();
        let mut off = 0u64;
        while off < len {
            let n = read_chunk(read, off, len, &mut buf)?;
            h.update(&buf[..n]);
            sink(&buf[..n])?;
            off += n as u64;
        }
        return Ok(Fingerprint(h.finalize().into()));
    }
    std::thread::scope(|s| {
        let (full_tx, full_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(BUFFERS);
        let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
        let hasher = s.spawn(move || {
            let mut h = Sha256::new();
            for (buf, n) in full_rx {
                h.update(&buf[..n]);
                // The reader may be gone (an error): then just drain.
                let _ = empty_tx.send(buf);
            }
            Fingerprint(h.finalize().into())
        });
        let mut fed = || -> Result<()> {
            let mut allocated = 0;
            let mut off = 0u64;
            while off < len {
                let mut buf = match empty_rx.try_recv() {
                    Ok(b) => b,
                    Err(_) if allocated < BUFFERS => {
                        allocated += 1;
                        vec![0u8; CHUNK]
                    }
                    Err(_) => empty_rx.recv().map_err(|_| hasher_gone())?,
                };
                let n = read_chunk(read, off, len, &mut buf)?;
                sink(&buf[..n])?;
                full_tx.send((buf, n)).map_err(|_| hasher_gone())?;
                off += n as u64;
            }
            Ok(())
        };
        let fed = fed();
        drop(full_tx);
        let digest = match hasher.join() {
            Ok(d) => d,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        fed.map(|()| digest)
    })
}

/// Reads the chunk at `off` (at most `buf.len()` bytes, never past `len`).
fn read_chunk(
    read: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<usize>,
    off: u64,
    len: u64,
    buf: &mut [u8],
) -> Result<usize> {
    let want = usize::try_from(len - off)
        .unwrap_or(usize::MAX)
        .min(buf.len());
    let n = read(off, &mut buf[..want]).map_err(|source| Error::Source {
        offset: off,
        source,
    })?;
    if n == 0 {
        return Err(Error::Source {
            offset: off,
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("content ends at byte {off} of {len}"),
            ),
        });
    }
    Ok(n.min(want))
}

fn hasher_gone() -> Error {
    Error::Source {
        offset: 0,
        source: io::Error::other("the hashing thread stopped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(b: u8) -> Fingerprint {
        Fingerprint::from_sha256([b; 32])
    }

    #[test]
    fn test_fingerprint_value_forms_table() {
        let raw = fp(0xab).xattr_value();
        let hex = format!("sha256:{}", "AB".repeat(32));
        let bad_hex = format!("sha256:{}", "zz".repeat(32));
        let cases: &[(&[u8], Option<Fingerprint>)] = &[
            (&raw, Some(fp(0xab))),
            (hex.as_bytes(), Some(fp(0xab))),
            (&raw[..38], None),
            (b"sha256:", None),
            (b"", None),
            (&[b'x'; 39], None),
            (b"sha512:0123456789012345678901234567890", None),
            (bad_hex.as_bytes(), None),
            (
                &[&raw[..], b"x"].concat(),
                None, // 40 bytes
            ),
        ];
        for (value, want) in cases {
            assert_eq!(
                Fingerprint::from_xattr_value(value),
                *want,
                "{}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn test_fingerprint_hex_round_trips() {
        let f = Fingerprint::from_sha256(std::array::from_fn(|i| i as u8 * 7));
        assert_eq!(Fingerprint::from_hex(&f.to_hex()), Some(f));
        assert_eq!(f.to_hex().len(), 64);
        assert!(Fingerprint::from_hex("ab").is_none());
    }

    #[test]
    fn test_hash_content_matches_sha256_at_every_size() {
        let data: Vec<u8> = (0..3 * CHUNK + 5)
            .map(|i| (i * 7 + i / 1000) as u8)
            .collect();
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5] {
            let want = Fingerprint(Sha256::digest(&data[..len]).into());
            // A reader that returns odd short counts.
            let mut read = |off: u64, buf: &mut [u8]| {
                let off = off as usize;
                let n = buf.len().min(len - off).min(777_777);
                buf[..n].copy_from_slice(&data[off..off + n]);
                Ok(n)
            };
            let mut sunk = Vec::new();
            let got = stream_hashed(len as u64, &mut read, &mut |c| {
                sunk.extend_from_slice(c);
                Ok(())
            })
            .unwrap();
            assert_eq!(got, want, "len {len}");
            assert_eq!(sunk, &data[..len], "len {len}");
        }
    }

    #[test]
    fn test_hash_content_errors_name_the_offset() {
        let mut short = |off: u64, buf: &mut [u8]| {
            Ok(if off < 5000 {
                buf.len().min(5000 - off as usize)
            } else {
                0
            })
        };
        let e = hash_content(3 * CHUNK as u64, &mut short).unwrap_err();
        assert!(matches!(e, Error::Source { offset: 5000, .. }), "{e}");
        let mut failing = |off: u64, buf: &mut [u8]| {
            if off >= 2 * CHUNK as u64 {
                Err(io::Error::other("bad block"))
            } else {
                Ok(buf.len())
            }
        };
        let e = hash_content(3 * CHUNK as u64, &mut failing).unwrap_err();
        assert!(
            matches!(e, Error::Source { offset, .. } if offset == 2 * CHUNK as u64),
            "{e}"
        );
        let mut ok = |_: u64, buf: &mut [u8]| Ok(buf.len());
        let e = stream_hashed(3 * CHUNK as u64, &mut ok, &mut |_| {
            Err(Error::Domain("sink full".into()))
        })
        .unwrap_err();
        assert!(matches!(e, Error::Domain(_)), "{e}");
    }

    #[test]
    fn test_fingerprint_xattr_names_split_like_mkfs() {
        let cases: &[(&str, u8, &str)] = &[
            (DEFAULT_XATTR_NAME, 0, DEFAULT_XATTR_NAME),
            ("trusted.erofs.fingerprint", 4, "erofs.fingerprint"),
            ("user.fp", 1, "fp"),
            ("security.x", 6, "x"),
            ("system.x", 0, "system.x"),
        ];
        for (name, index, suffix) in cases {
            let x = FingerprintXattr::from_name(name).unwrap();
            assert_eq!((x.index, x.suffix.as_slice()), (*index, suffix.as_bytes()));
            assert_eq!(x.name(), *name);
        }
    }

    #[test]
    fn test_fingerprint_xattr_bad_names_rejected() {
        let long = "x".repeat(256);
        for name in ["", long.as_str(), "a\0b"] {
            assert!(FingerprintXattr::from_name(name).is_err(), "{name:?}");
        }
        assert!(FingerprintXattr::from_name(&format!("user.{}", "x".repeat(255))).is_ok());
    }
}
