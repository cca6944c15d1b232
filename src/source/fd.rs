//! An image passed as an inherited file descriptor (`fd:N`), typically a
//! memfd holding an image in host memory.
//!
//! A memfd that can be sealed against writes, shrinking and growing is
//! mapped and read in place: metadata is parsed straight from the mapping
//! and file data is copied once, into the reply. The seals make the mapping
//! safe to borrow from (nobody can change or truncate it, so no SIGBUS and
//! no bytes changing under a reference). Anything else (a regular file, a
//! memfd without `MFD_ALLOW_SEALING`, a memfd someone still has mapped
//! writable) is read with `pread`, like a file.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::Arc;

use super::{FileSource, MemorySource, Source};

/// The seals that make a shared mapping immutable.
const SEALS: libc::c_int = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;

/// A read-only shared mapping of a sealed file, unmapped on drop.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
    // Keeps the file (and so the seals' subject) open as long as the mapping.
    _file: File,
}

// SAFETY: the mapping is read-only and its file is sealed against writes and
// size changes, so the bytes never change; sharing them between threads is
// sharing immutable memory.
unsafe impl Send for Mapping {}
// SAFETY: as above: immutable memory.
unsafe impl Sync for Mapping {}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self`
        // lives (unmapped only in drop); the file is sealed, so they never
        // change while borrowed.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region mmap returned; no borrow of it
        // outlives `self`.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

/// Parses an `fd:N` image argument.
pub fn parse_fd_spec(spec: &std::path::Path) -> Option<RawFd> {
    spec.to_str()?
        .strip_prefix("fd:")?
        .parse()
        .ok()
        .filter(|&n| n >= 0)
}

/// Takes ownership of inherited descriptor `fd` and opens it as a source.
pub fn open_fd(fd: RawFd) -> io::Result<Arc<dyn Source>> {
    // SAFETY: F_GETFD only queries the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("fd:{fd}: not an open file descriptor"),
        ));
    }
    // SAFETY: the descriptor is open (checked above) and was handed to this
    // process on its command line to own; nothing else in the process uses
    // it.
    let file = unsafe { File::from_raw_fd(fd) };
    let meta = file.metadata()?;
    if !meta.is_file() {
        // Block devices and the like: read like any file.
        return Ok(Arc::new(FileSource::from_file(file)?));
    }
    if !try_seal(&file) || meta.len() == 0 {
        return Ok(Arc::new(FileSource::from_file(file)?));
    }
    let len = usize::try_from(meta.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "image too large to map"))?;
    // SAFETY: a fresh read-only shared mapping of `len` bytes of a file
    // that is at least that long and sealed against shrinking and writes;
    // no existing memory is affected.
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
    Ok(Arc::new(MemorySource::new(Box::new(Mapping {
        ptr,
        len,
        _file: file,
    }))))
}

/// Adds the immutability seals; true if the file carries all of them.
fn try_seal(file: &File) -> bool {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own; no memory is passed.
    unsafe {
        libc::fcntl(fd, libc::F_ADD_SEALS, SEALS);
    }
    // SAFETY: as above.
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    seals >= 0 && seals & SEALS == SEALS
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn test_parse_fd_spec() {
        assert_eq!(parse_fd_spec(Path::new("fd:7")), Some(7));
        assert_eq!(parse_fd_spec(Path::new("fd:-1")), None);
        assert_eq!(parse_fd_spec(Path::new("fd:x")), None);
        assert_eq!(parse_fd_spec(Path::new("./fd:7")), None);
        assert_eq!(parse_fd_spec(Path::new("image.erofs")), None);
    }

    #[test]
    fn test_closed_fd_is_refused() {
        let e = open_fd(987_654).unwrap_err();
        assert!(e.to_string().contains("not an open file descriptor"), "{e}");
    }
}
