//! A read-only shared mapping of a sealed file, lent out as `&[u8]`.
//!
//! Borrowing a mapping as a byte slice is sound only if its bytes cannot
//! change and its pages cannot go away while borrowed. A file carrying
//! `F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW` can never again be written
//! (by anyone, through any descriptor or mapping) nor truncated, so
//! [`SealedMapping::new`] maps only files that carry those seals, and only
//! up to their length.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

use super::fd;

/// The seals that make a file (and so a shared mapping of it) immutable.
pub const IMMUTABLE_SEALS: libc::c_int =
    libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;

/// Adds the immutability seals to `file` if it can take them; true if it
/// carries all of them afterwards (then [`SealedMapping::new`] maps it).
pub fn seal_immutable(file: &File) -> bool {
    // Failure here (not sealable, mapped writable) shows in the check.
    let _ = fd::add_seals(file, IMMUTABLE_SEALS);
    fd::seals(file).is_ok_and(|s| s & IMMUTABLE_SEALS == IMMUTABLE_SEALS)
}

/// A read-only shared mapping of a whole sealed file, unmapped on drop.
#[derive(Debug)]
pub struct SealedMapping {
    ptr: NonNull<u8>,
    len: usize,
    // Keeps the file (the seals' subject) open as long as the mapping.
    _file: File,
}

// SAFETY: the mapping is read-only and its file is sealed against writes
// and size changes (checked in `new`), so its bytes never change; sending
// it to another thread moves only the right to unmap it, in drop.
unsafe impl Send for SealedMapping {}
// SAFETY: as above: shared access is to immutable memory.
unsafe impl Sync for SealedMapping {}

impl SealedMapping {
    /// Maps all of `file`, which must carry [`IMMUTABLE_SEALS`] and be
    /// non-empty; fails (`InvalidInput`) otherwise.
    pub fn new(file: File) -> io::Result<Self> {
        let sealed = fd::seals(&file).is_ok_and(|s| s & IMMUTABLE_SEALS == IMMUTABLE_SEALS);
        if !sealed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "file is not sealed against writes and resizing",
            ));
        }
        // Read after sealing: the length can no longer change.
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "image too large to map"))?;
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot map an empty file",
            ));
        }
        // SAFETY: a fresh read-only shared mapping of `len` bytes of a file
        // that is exactly that long and sealed against shrinking; the
        // kernel picks the address, so no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(Self {
            ptr,
            len,
            _file: file,
        })
    }
}

impl AsRef<[u8]> for SealedMapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self`
        // lives (unmapped only in drop, which the borrow of `self`
        // prevents); the file is sealed against writes and shrinking, so
        // the bytes never change and never go away while borrowed.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for SealedMapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region mmap returned; no borrow of it
        // outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::FromRawFd;

    fn memfd(flags: libc::c_uint) -> File {
        // SAFETY: a NUL-terminated name and valid flags.
        let fd = unsafe { libc::memfd_create(c"sealed-test".as_ptr(), flags) };
        assert!(fd >= 0, "{}", io::Error::last_os_error());
        // SAFETY: a fresh descriptor owned by nothing else.
        unsafe { File::from_raw_fd(fd) }
    }

    #[test]
    fn test_sealed_memfd_is_mapped_and_unsealed_refused() {
        let mut f = memfd(libc::MFD_ALLOW_SEALING | libc::MFD_CLOEXEC);
        f.write_all(b"hello sealed").unwrap();
        let unsealed = f.try_clone().unwrap();
        assert!(SealedMapping::new(unsealed).is_err());
        assert!(seal_immutable(&f));
        let m = SealedMapping::new(f).unwrap();
        assert_eq!(m.as_ref(), b"hello sealed");
    }

    #[test]
    fn test_memfd_without_sealing_stays_unsealed() {
        let mut f = memfd(libc::MFD_CLOEXEC);
        f.write_all(b"x").unwrap();
        assert!(!seal_immutable(&f));
        assert!(SealedMapping::new(f).is_err());
    }
}
