//! The FUSE wire format: the structures and constants of the Linux uapi
//! `<linux/fuse.h>` (protocol 7.45) this server uses, DAX structures
//! included so the virtio-fs transport can share them.
//!
//! Every structure is `#[repr(C)]`, has no implicit padding and derives
//! zerocopy's `FromBytes`/`IntoBytes`, so requests decode and replies encode
//! without `unsafe`. Fields are in host byte order, as on /dev/fuse (and on
//! virtio-fs between a little-endian guest and host).
#![allow(missing_docs)] // The names are those of <linux/fuse.h>; see there.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Major protocol version.
pub const KERNEL_VERSION: u32 = 7;
/// The highest minor version this server speaks.
pub const KERNEL_MINOR_VERSION: u32 = 45;
/// The lowest minor version this server accepts.
pub const MIN_MINOR_VERSION: u32 = 31;
/// Node id of the root directory.
pub const ROOT_ID: u64 = 1;
/// The smallest buffer the kernel accepts for reading /dev/fuse.
pub const MIN_READ_BUFFER: usize = 8192;
/// Longest name the kernel accepts in a directory entry.
pub const NAME_MAX: usize = 1024;

// Opcodes.
pub const LOOKUP: u32 = 1;
pub const FORGET: u32 = 2;
pub const GETATTR: u32 = 3;
pub const SETATTR: u32 = 4;
pub const READLINK: u32 = 5;
pub const SYMLINK: u32 = 6;
pub const MKNOD: u32 = 8;
pub const MKDIR: u32 = 9;
pub const UNLINK: u32 = 10;
pub const RMDIR: u32 = 11;
pub const RENAME: u32 = 12;
pub const LINK: u32 = 13;
pub const OPEN: u32 = 14;
pub const READ: u32 = 15;
pub const WRITE: u32 = 16;
pub const STATFS: u32 = 17;
pub const RELEASE: u32 = 18;
pub const FSYNC: u32 = 20;
pub const SETXATTR: u32 = 21;
pub const GETXATTR: u32 = 22;
pub const LISTXATTR: u32 = 23;
pub const REMOVEXATTR: u32 = 24;
pub const FLUSH: u32 = 25;
pub const INIT: u32 = 26;
pub const OPENDIR: u32 = 27;
pub const READDIR: u32 = 28;
pub const RELEASEDIR: u32 = 29;
pub const FSYNCDIR: u32 = 30;
pub const GETLK: u32 = 31;
pub const SETLK: u32 = 32;
pub const SETLKW: u32 = 33;
pub const ACCESS: u32 = 34;
pub const CREATE: u32 = 35;
pub const INTERRUPT: u32 = 36;
pub const BMAP: u32 = 37;
pub const DESTROY: u32 = 38;
pub const IOCTL: u32 = 39;
pub const POLL: u32 = 40;
pub const NOTIFY_REPLY: u32 = 41;
pub const BATCH_FORGET: u32 = 42;
pub const FALLOCATE: u32 = 43;
pub const READDIRPLUS: u32 = 44;
pub const RENAME2: u32 = 45;
pub const LSEEK: u32 = 46;
pub const COPY_FILE_RANGE: u32 = 47;
pub const SETUPMAPPING: u32 = 48;
pub const REMOVEMAPPING: u32 = 49;
pub const SYNCFS: u32 = 50;
pub const TMPFILE: u32 = 51;
pub const STATX: u32 = 52;
pub const COPY_FILE_RANGE_64: u32 = 53;

// INIT flags (`flags`; bits 32.. travel in `flags2`).
pub const ASYNC_READ: u64 = 1 << 0;
pub const POSIX_LOCKS: u64 = 1 << 1;
pub const FILE_OPS: u64 = 1 << 2;
pub const ATOMIC_O_TRUNC: u64 = 1 << 3;
pub const EXPORT_SUPPORT: u64 = 1 << 4;
pub const BIG_WRITES: u64 = 1 << 5;
pub const DONT_MASK: u64 = 1 << 6;
pub const SPLICE_WRITE: u64 = 1 << 7;
pub const SPLICE_MOVE: u64 = 1 << 8;
pub const SPLICE_READ: u64 = 1 << 9;
pub const FLOCK_LOCKS: u64 = 1 << 10;
pub const HAS_IOCTL_DIR: u64 = 1 << 11;
pub const AUTO_INVAL_DATA: u64 = 1 << 12;
pub const DO_READDIRPLUS: u64 = 1 << 13;
pub const READDIRPLUS_AUTO: u64 = 1 << 14;
pub const ASYNC_DIO: u64 = 1 << 15;
pub const WRITEBACK_CACHE: u64 = 1 << 16;
pub const NO_OPEN_SUPPORT: u64 = 1 << 17;
pub const PARALLEL_DIROPS: u64 = 1 << 18;
pub const HANDLE_KILLPRIV: u64 = 1 << 19;
pub const POSIX_ACL: u64 = 1 << 20;
pub const ABORT_ERROR: u64 = 1 << 21;
pub const MAX_PAGES: u64 = 1 << 22;
pub const CACHE_SYMLINKS: u64 = 1 << 23;
pub const NO_OPENDIR_SUPPORT: u64 = 1 << 24;
pub const EXPLICIT_INVAL_DATA: u64 = 1 << 25;
pub const MAP_ALIGNMENT: u64 = 1 << 26;
pub const SUBMOUNTS: u64 = 1 << 27;
pub const HANDLE_KILLPRIV_V2: u64 = 1 << 28;
pub const SETXATTR_EXT: u64 = 1 << 29;
pub const INIT_EXT: u64 = 1 << 30;
pub const INIT_RESERVED: u64 = 1 << 31;
pub const SECURITY_CTX: u64 = 1 << 32;
pub const HAS_INODE_DAX: u64 = 1 << 33;
pub const CREATE_SUPP_GROUP: u64 = 1 << 34;
pub const HAS_EXPIRE_ONLY: u64 = 1 << 35;
pub const DIRECT_IO_ALLOW_MMAP: u64 = 1 << 36;
pub const PASSTHROUGH: u64 = 1 << 37;
pub const NO_EXPORT_SUPPORT: u64 = 1 << 38;
pub const HAS_RESEND: u64 = 1 << 39;
pub const ALLOW_IDMAP: u64 = 1 << 40;
pub const OVER_IO_URING: u64 = 1 << 41;
pub const REQUEST_TIMEOUT: u64 = 1 << 42;

// OPEN reply flags.
pub const FOPEN_DIRECT_IO: u32 = 1 << 0;
pub const FOPEN_KEEP_CACHE: u32 = 1 << 1;
pub const FOPEN_NONSEEKABLE: u32 = 1 << 2;
pub const FOPEN_CACHE_DIR: u32 = 1 << 3;
pub const FOPEN_STREAM: u32 = 1 << 4;
pub const FOPEN_NOFLUSH: u32 = 1 << 5;
pub const FOPEN_PARALLEL_DIRECT_WRITES: u32 = 1 << 6;
pub const FOPEN_PASSTHROUGH: u32 = 1 << 7;

// `fuse_attr.flags`.
pub const ATTR_SUBMOUNT: u32 = 1 << 0;
pub const ATTR_DAX: u32 = 1 << 1;

// GETATTR flags.
pub const GETATTR_FH: u32 = 1 << 0;

// SETUPMAPPING flags.
pub const SETUPMAPPING_FLAG_WRITE: u64 = 1 << 0;
pub const SETUPMAPPING_FLAG_READ: u64 = 1 << 1;

/// Set in `unique` of a request the kernel sends again (FUSE_HAS_RESEND).
pub const UNIQUE_RESEND: u64 = 1 << 63;

/// `statx` mask bits (`<linux/stat.h>`), for FUSE_STATX replies.
pub const STATX_BASIC_STATS: u32 = 0x7ff;
/// `STATX_ATTR_COMPRESSED`.
pub const STATX_ATTR_COMPRESSED: u64 = 0x4;
/// `STATX_ATTR_IMMUTABLE`.
pub const STATX_ATTR_IMMUTABLE: u64 = 0x10;

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: u64,
    pub mtime: u64,
    pub ctime: u64,
    pub atimensec: u32,
    pub mtimensec: u32,
    pub ctimensec: u32,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
    pub flags: u32,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct SxTime {
    pub tv_sec: i64,
    pub tv_nsec: u32,
    pub reserved: i32,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Statx {
    pub mask: u32,
    pub blksize: u32,
    pub attributes: u64,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub mode: u16,
    pub spare0: u16,
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub attributes_mask: u64,
    pub atime: SxTime,
    pub btime: SxTime,
    pub ctime: SxTime,
    pub mtime: SxTime,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub spare2: [u64; 14],
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Kstatfs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
    pub padding: u32,
    pub spare: [u32; 6],
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct InHeader {
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    pub total_extlen: u16,
    pub padding: u16,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct OutHeader {
    pub len: u32,
    pub error: i32,
    pub unique: u64,
}

/// Notification codes (`enum fuse_notify_code`), sent in `OutHeader::error`
/// with `unique` 0.
pub const NOTIFY_INVAL_ENTRY: i32 = 3;
/// See [`NOTIFY_INVAL_ENTRY`].
pub const NOTIFY_STORE: i32 = 4;

/// `struct fuse_notify_inval_entry_out`: followed by the name and a NUL.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NotifyInvalEntryOut {
    pub parent: u64,
    pub namelen: u32,
    pub flags: u32,
}

/// `struct fuse_notify_store_out`: followed by `size` bytes of data.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NotifyStoreOut {
    pub nodeid: u64,
    pub offset: u64,
    pub size: u32,
    pub padding: u32,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct InitIn {
    pub major: u32,
    pub minor: u32,
    pub max_readahead: u32,
    pub flags: u32,
    pub flags2: u32,
    pub unused: [u32; 11],
}

/// The part of [`InitIn`] every protocol 7.x kernel sends.
pub const INIT_IN_COMPAT_SIZE: usize = 16;

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct InitOut {
    pub major: u32,
    pub minor: u32,
    pub max_readahead: u32,
    pub flags: u32,
    pub max_background: u16,
    pub congestion_threshold: u16,
    pub max_write: u32,
    pub time_gran: u32,
    pub max_pages: u16,
    pub map_alignment: u16,
    pub flags2: u32,
    pub max_stack_depth: u32,
    pub request_timeout: u16,
    pub unused: [u16; 11],
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EntryOut {
    pub nodeid: u64,
    pub generation: u64,
    pub entry_valid: u64,
    pub attr_valid: u64,
    pub entry_valid_nsec: u32,
    pub attr_valid_nsec: u32,
    pub attr: Attr,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ForgetIn {
    pub nlookup: u64,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ForgetOne {
    pub nodeid: u64,
    pub nlookup: u64,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct BatchForgetIn {
    pub count: u32,
    pub dummy: u32,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GetattrIn {
    pub getattr_flags: u32,
    pub dummy: u32,
    pub fh: u64,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct AttrOut {
    pub attr_valid: u64,
    pub attr_valid_nsec: u32,
    pub dummy: u32,
    pub attr: Attr,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct StatxIn {
    pub getattr_flags: u32,
    pub reserved: u32,
    pub fh: u64,
    pub sx_flags: u32,
    pub sx_mask: u32,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct StatxOut {
    pub attr_valid: u64,
    pub attr_valid_nsec: u32,
    pub flags: u32,
    pub spare: [u64; 2],
    pub stat: Statx,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct OpenIn {
    pub flags: u32,
    pub open_flags: u32,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct OpenOut {
    pub fh: u64,
    pub open_flags: u32,
    pub backing_id: i32,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ReleaseIn {
    pub fh: u64,
    pub flags: u32,
    pub release_flags: u32,
    pub lock_owner: u64,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct FlushIn {
    pub fh: u64,
    pub unused: u32,
    pub padding: u32,
    pub lock_owner: u64,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ReadIn {
    pub fh: u64,
    pub offset: u64,
    pub size: u32,
    pub read_flags: u32,
    pub lock_owner: u64,
    pub flags: u32,
    pub padding: u32,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct StatfsOut {
    pub st: Kstatfs,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct FsyncIn {
    pub fh: u64,
    pub fsync_flags: u32,
    pub padding: u32,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GetxattrIn {
    pub size: u32,
    pub padding: u32,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GetxattrOut {
    pub size: u32,
    pub padding: u32,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct AccessIn {
    pub mask: u32,
    pub padding: u32,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct InterruptIn {
    pub unique: u64,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Dirent {
    pub ino: u64,
    pub off: u64,
    pub namelen: u32,
    pub typ: u32,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Direntplus {
    pub entry_out: EntryOut,
    pub dirent: Dirent,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct LseekIn {
    pub fh: u64,
    pub offset: u64,
    pub whence: u32,
    pub padding: u32,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct LseekOut {
    pub offset: u64,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct SyncfsIn {
    pub padding: u64,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct SetupmappingIn {
    pub fh: u64,
    pub foffset: u64,
    pub len: u64,
    pub flags: u64,
    pub moffset: u64,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct RemovemappingIn {
    pub count: u32,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct RemovemappingOne {
    pub moffset: u64,
    pub len: u64,
}

/// Rounds a directory record length up to 8 bytes (`FUSE_DIRENT_ALIGN`).
pub fn dirent_align(len: usize) -> Option<usize> {
    len.checked_next_multiple_of(8)
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn test_abi_sizes_match_uapi() {
        let cases: &[(&str, usize, usize)] = &[
            ("fuse_attr", size_of::<Attr>(), 88),
            ("fuse_sx_time", size_of::<SxTime>(), 16),
            ("fuse_statx", size_of::<Statx>(), 256),
            ("fuse_kstatfs", size_of::<Kstatfs>(), 80),
            ("fuse_in_header", size_of::<InHeader>(), 40),
            ("fuse_out_header", size_of::<OutHeader>(), 16),
            ("fuse_notify_store_out", size_of::<NotifyStoreOut>(), 24),
            (
                "fuse_notify_inval_entry_out",
                size_of::<NotifyInvalEntryOut>(),
                16,
            ),
            ("fuse_init_in", size_of::<InitIn>(), 64),
            ("fuse_init_out", size_of::<InitOut>(), 64),
            ("fuse_entry_out", size_of::<EntryOut>(), 128),
            ("fuse_forget_in", size_of::<ForgetIn>(), 8),
            ("fuse_forget_one", size_of::<ForgetOne>(), 16),
            ("fuse_batch_forget_in", size_of::<BatchForgetIn>(), 8),
            ("fuse_getattr_in", size_of::<GetattrIn>(), 16),
            ("fuse_attr_out", size_of::<AttrOut>(), 104),
            ("fuse_statx_in", size_of::<StatxIn>(), 24),
            ("fuse_statx_out", size_of::<StatxOut>(), 288),
            ("fuse_open_in", size_of::<OpenIn>(), 8),
            ("fuse_open_out", size_of::<OpenOut>(), 16),
            ("fuse_release_in", size_of::<ReleaseIn>(), 24),
            ("fuse_flush_in", size_of::<FlushIn>(), 24),
            ("fuse_read_in", size_of::<ReadIn>(), 40),
            ("fuse_statfs_out", size_of::<StatfsOut>(), 80),
            ("fuse_fsync_in", size_of::<FsyncIn>(), 16),
            ("fuse_getxattr_in", size_of::<GetxattrIn>(), 8),
            ("fuse_getxattr_out", size_of::<GetxattrOut>(), 8),
            ("fuse_access_in", size_of::<AccessIn>(), 8),
            ("fuse_interrupt_in", size_of::<InterruptIn>(), 8),
            ("fuse_dirent", size_of::<Dirent>(), 24),
            ("fuse_direntplus", size_of::<Direntplus>(), 152),
            ("fuse_lseek_in", size_of::<LseekIn>(), 24),
            ("fuse_lseek_out", size_of::<LseekOut>(), 8),
            ("fuse_syncfs_in", size_of::<SyncfsIn>(), 8),
            ("fuse_setupmapping_in", size_of::<SetupmappingIn>(), 40),
            ("fuse_removemapping_in", size_of::<RemovemappingIn>(), 4),
            ("fuse_removemapping_one", size_of::<RemovemappingOne>(), 16),
        ];
        for (name, got, want) in cases {
            assert_eq!(got, want, "sizeof(struct {name})");
        }
    }

    #[test]
    fn test_abi_key_offsets_match_uapi() {
        assert_eq!(offset_of!(Attr, atimensec), 48);
        assert_eq!(offset_of!(Attr, blksize), 80);
        assert_eq!(offset_of!(InHeader, nodeid), 16);
        assert_eq!(offset_of!(InHeader, total_extlen), 36);
        assert_eq!(offset_of!(InitOut, max_pages), 28);
        assert_eq!(offset_of!(InitOut, map_alignment), 30);
        assert_eq!(offset_of!(InitOut, flags2), 32);
        assert_eq!(offset_of!(InitOut, request_timeout), 40);
        assert_eq!(offset_of!(InitIn, flags2), 16);
        assert_eq!(offset_of!(EntryOut, attr), 40);
        assert_eq!(offset_of!(Statx, ino), 32);
        assert_eq!(offset_of!(Statx, atime), 64);
        assert_eq!(offset_of!(Statx, rdev_major), 128);
        assert_eq!(offset_of!(StatxOut, stat), 32);
        assert_eq!(offset_of!(ReadIn, size), 16);
        assert_eq!(offset_of!(Direntplus, dirent), 128);
        assert_eq!(offset_of!(SetupmappingIn, moffset), 32);
    }

    #[test]
    fn test_abi_flag_values_match_uapi() {
        assert_eq!(HAS_INODE_DAX >> 32, 2);
        assert_eq!(INIT_EXT, 0x4000_0000);
        assert_eq!(MAX_PAGES, 0x40_0000);
        assert_eq!(dirent_align(25), Some(32));
        assert_eq!(dirent_align(24), Some(24));
    }
}
