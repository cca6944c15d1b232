//! mount(2), umount2(2) and the /dev/fuse ioctls (clone, passthrough
//! backing files).
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

/// `FUSE_DEV_IOC_BACKING_OPEN`: `_IOW(229, 1, struct fuse_backing_map)`
/// (linux/fuse.h).
pub const FUSE_DEV_IOC_BACKING_OPEN: u64 = (1 << 30) | (16 << 16) | (229 << 8) | 1;
/// `FUSE_DEV_IOC_BACKING_CLOSE`: `_IOW(229, 2, uint32_t)` (linux/fuse.h).
pub const FUSE_DEV_IOC_BACKING_CLOSE: u64 = (1 << 30) | (4 << 16) | (229 << 8) | 2;

/// `struct fuse_backing_map` (linux/fuse.h).
#[repr(C)]
struct BackingMap {
    fd: i32,
    flags: u32,
    padding: u64,
}

/// Registers `file` as a FUSE passthrough backing file of the connection
/// of `dev` (`FUSE_DEV_IOC_BACKING_OPEN`) and returns its backing id. The
/// kernel wants CAP_SYS_ADMIN (in the initial user namespace) and a
/// connection that agreed on passthrough at INIT.
pub fn fuse_backing_open(dev: &impl AsFd, file: &impl AsFd) -> io::Result<u32> {
    let map = BackingMap {
        fd: file.as_fd().as_raw_fd(),
        flags: 0,
        padding: 0,
    };
    // SAFETY: the ioctl reads one `struct fuse_backing_map` (16 bytes,
    // `BackingMap` has its layout, checked by the tests below) from the
    // pointer, which points at a local that lives for the whole call; on a
    // descriptor that is not /dev/fuse it fails without touching memory.
    let id = check(unsafe {
        libc::ioctl(
            dev.as_fd().as_raw_fd(),
            FUSE_DEV_IOC_BACKING_OPEN as libc::c_ulong,
            std::ptr::from_ref(&map),
        )
    })?;
    u32::try_from(id).map_err(io::Error::other)
}

/// Drops backing id `id` of the connection of `dev`
/// (`FUSE_DEV_IOC_BACKING_CLOSE`); files already opened with it keep their
/// backing file.
pub fn fuse_backing_close(dev: &impl AsFd, id: u32) -> io::Result<()> {
    // SAFETY: the ioctl reads one u32 from the pointer, which points at a
    // local that lives for the whole call.
    check(unsafe {
        libc::ioctl(
            dev.as_fd().as_raw_fd(),
            FUSE_DEV_IOC_BACKING_CLOSE as libc::c_ulong,
            std::ptr::from_ref(&id),
        )
    })
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_backing_ioctl_numbers_and_map_layout_match_uapi() {
        assert_eq!(FUSE_DEV_IOC_BACKING_OPEN, 0x4010_e501);
        assert_eq!(FUSE_DEV_IOC_BACKING_CLOSE, 0x4004_e502);
        assert_eq!(std::mem::size_of::<BackingMap>(), 16);
        assert_eq!(std::mem::offset_of!(BackingMap, padding), 8);
    }

    #[test]
    fn test_backing_ioctls_on_a_plain_file_fail_cleanly() {
        let f = tempfile::tempfile().unwrap();
        assert!(fuse_backing_open(&f, &f).is_err());
        assert!(fuse_backing_close(&f, 1).is_err());
    }

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
