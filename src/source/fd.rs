//! An image passed as an inherited file descriptor (`fd:N`), typically a
//! memfd holding an image in host memory.
//!
//! A memfd that can be sealed against writes, shrinking and growing is
//! mapped and read in place: metadata is parsed straight from the mapping
//! and file data is copied from it into the reply. The seals make the mapping
//! safe to borrow from (nobody can change or truncate it, so no SIGBUS and
//! no bytes changing under a reference). Anything else (a regular file, a
//! memfd without `MFD_ALLOW_SEALING`, a memfd someone still has mapped
//! writable) is read with `pread`, like a file.

use std::fs::File;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use super::{FileSource, MemorySource, Source};
use crate::os::fd::dup_inherited;
use crate::os::mmap::{seal_immutable, SealedMapping};

/// Parses an `fd:N` image argument.
pub fn parse_fd_spec(spec: &std::path::Path) -> Option<RawFd> {
    spec.to_str()?
        .strip_prefix("fd:")?
        .parse()
        .ok()
        .filter(|&n| n >= 0)
}

/// Opens inherited descriptor `fd` as a source (through a duplicate of
/// our own: see [`dup_inherited`]).
pub fn open_fd(fd: RawFd) -> io::Result<Arc<dyn Source>> {
    let file = File::from(dup_inherited(fd).map_err(|e| {
        if e.raw_os_error() == Some(libc::EBADF) {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("fd:{fd}: not an open file descriptor"),
            )
        } else {
            e
        }
    })?);
    let meta = file.metadata()?;
    if !meta.is_file() {
        // Block devices and the like: read like any file.
        return Ok(Arc::new(FileSource::from_file(file)?));
    }
    if !seal_immutable(&file) || meta.len() == 0 {
        return Ok(Arc::new(FileSource::from_file(file)?));
    }
    Ok(Arc::new(MemorySource::new(Box::new(SealedMapping::new(
        file,
    )?))))
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
