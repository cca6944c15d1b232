//! mount(2), umount2(2) and the /dev/fuse clone ioctl.
//!
//! The strings are `&CStr`s borrowed for the call (the kernel only reads
//! them); making them from paths and options, with the errors that go
//! with it, is the caller's part.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};

use super::check;

/// Mounts `source` of type `fstype` on `target` with `flags` (`MS_*`) and
/// the option string `data`.
pub fn mount(
    source: &CStr,
    target: &CStr,
    fstype: &CStr,
    flags: libc::c_ulong,
    data: &CStr,
) -> io::Result<()> {
    // SAFETY: every pointer is a valid NUL-terminated string borrowed for
    // the whole call; the kernel only reads them.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    })
    .map(drop)
}

/// Unmounts `target`; with `detach`, lazily (`MNT_DETACH`).
pub fn umount(target: &CStr, detach: bool) -> io::Result<()> {
    let flags = if detach { libc::MNT_DETACH } else { 0 };
    // SAFETY: `target` is a valid NUL-terminated path for the whole call.
    check(unsafe { libc::umount2(target.as_ptr(), flags) }).map(drop)
}

/// `FUSE_DEV_IOC_CLONE`: `_IOR(229, 0, uint32_t)` (linux/fuse.h).
const FUSE_DEV_IOC_CLONE: libc::c_ulong = (2 << 30) | (4 << 16) | (229 << 8);

/// Attaches the freshly opened /dev/fuse descriptor `new` to the
/// connection of `existing` (`FUSE_DEV_IOC_CLONE`), so that it gets
/// requests of that connection on its own queue.
pub fn clone_fuse_fd(new: &impl AsFd, existing: RawFd) -> io::Result<()> {
    let src = u32::try_from(existing).map_err(io::Error::other)?;
    // SAFETY: the ioctl reads one u32 from the pointer, which points at a
    // local that lives for the whole call; on a descriptor that is not
    // /dev/fuse the ioctl fails (ENOTTY or similar) without touching
    // memory.
    check(unsafe {
        libc::ioctl(
            new.as_fd().as_raw_fd(),
            FUSE_DEV_IOC_CLONE,
            std::ptr::from_ref(&src),
        )
    })
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_unmounting_what_is_not_mounted_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
        let e = umount(&path, false).unwrap_err();
        // EINVAL (not a mount point) as root, EPERM otherwise.
        assert!(
            matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EPERM)),
            "{e}"
        );
    }

    #[test]
    fn test_fuse_dev_ioc_clone_number() {
        assert_eq!(FUSE_DEV_IOC_CLONE, 0x8004_e500);
    }
}
