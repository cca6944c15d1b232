//! Deterministic source trees for `mkfs.erofs`.
//!
//! [`edge_tree`] covers the corner cases an EROFS reader must get right (see
//! [`build_edge_tree`]); [`plain_tree`] is a small ordinary tree for quick
//! tests. Names, sizes, contents (a seeded xorshift PRNG), owners, modes,
//! xattrs and timestamps are all fixed, so a failure reproduces exactly.
//!
//! Trees are built under `$EROFS_TEST_TMP`, else `/dev/shm` (tmpfs: user
//! xattrs and xattr values up to 64 KiB, which ext4 refuses), else the system
//! temporary directory. Building needs root (devices, chown, trusted.*).

use std::ffi::{CString, OsStr};
use std::fs::{self, File, Permissions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::manifest::make_dev;

/// Environment variable naming the directory trees are built in.
pub const TREE_TMP_ENV: &str = "EROFS_TEST_TMP";

/// A tiny xorshift64 PRNG: reproducible "random" data without a dependency.
#[derive(Clone, Debug)]
pub struct XorShift64(u64);

impl XorShift64 {
    /// A generator for `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Self {
        let mut g = XorShift64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        g.next_u64();
        g
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..n` (`n > 0`; slightly biased, fine for test data).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Fills `buf`.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

/// A built tree in its own temporary directory (removed on drop).
#[derive(Debug)]
pub struct Tree {
    dir: TempDir,
}

impl Tree {
    /// The tree's root directory (what mkfs.erofs gets).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Where trees and other scratch files go (see the module docs).
pub fn scratch_base() -> PathBuf {
    if let Some(d) = std::env::var_os(TREE_TMP_ENV) {
        return PathBuf::from(d);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

/// Environment variable that keeps scratch directories (trees, images) for
/// debugging instead of removing them.
pub const KEEP_TMP_ENV: &str = "EROFS_KEEP_TMP";

/// A fresh empty scratch directory, removed on drop unless `$EROFS_KEEP_TMP`
/// is set.
pub fn scratch_dir(prefix: &str) -> TempDir {
    let base = scratch_base();
    let mut dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("creating a scratch directory in {}: {e}", base.display()));
    if std::env::var_os(KEEP_TMP_ENV).is_some() {
        dir.disable_cleanup(true);
        eprintln!("{KEEP_TMP_ENV}: keeping {}", dir.path().display());
    }
    dir
}

/// What the edge tree may contain beyond what every mkfs.erofs accepts.
#[derive(Clone, Debug)]
pub struct EdgeOptions {
    /// Length of the longest names in `/names`. Linux allows 255, but
    /// Debian's mkfs.erofs 1.5 fails on 255-byte names ("Could not format
    /// the device: No such file or directory"); 254 works.
    pub long_name_len: usize,
}

impl EdgeOptions {
    /// What Debian's mkfs.erofs 1.5 accepts.
    pub const MKFS15: EdgeOptions = EdgeOptions { long_name_len: 254 };
    /// Everything Linux allows (for newer mkfs.erofs).
    pub const FULL: EdgeOptions = EdgeOptions { long_name_len: 255 };
}

impl Default for EdgeOptions {
    fn default() -> Self {
        EdgeOptions::MKFS15
    }
}

/// Environment variable naming the directory images are written to.
pub const IMAGE_TMP_ENV: &str = "EROFS_IMAGE_TMP";

/// A fresh empty directory for images (removed on drop unless
/// `$EROFS_KEEP_TMP` is set): under `$EROFS_IMAGE_TMP`, else cargo's
/// `CARGO_TARGET_TMPDIR` (`target/tmp`).
///
/// Images must not live on tmpfs: mkfs.erofs 1.5 fails with EIO writing a
/// `--chunksize` image there (its `copy_file_range` has no fallback), and the
/// kernel cannot back a file-backed mount with a tmpfs file (no `read_folio`),
/// which forces loop devices.
pub fn image_dir(prefix: &str) -> TempDir {
    let base = std::env::var_os(IMAGE_TMP_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    fs::create_dir_all(&base).unwrap_or_else(|e| panic!("mkdir -p {}: {e}", base.display()));
    let mut dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("creating an image directory in {}: {e}", base.display()));
    if std::env::var_os(KEEP_TMP_ENV).is_some() {
        dir.disable_cleanup(true);
        eprintln!("{KEEP_TMP_ENV}: keeping {}", dir.path().display());
    }
    dir
}

/// The edge-case tree for Debian's mkfs.erofs 1.5, freshly built (see
/// [`build_edge_tree`]).
pub fn edge_tree() -> Tree {
    edge_tree_with(&EdgeOptions::default())
}

/// The edge-case tree with `opts`, freshly built.
pub fn edge_tree_with(opts: &EdgeOptions) -> Tree {
    let dir = scratch_dir("erofs-edge-");
    build_edge_tree(dir.path(), opts);
    Tree { dir }
}

/// The small plain tree, freshly built (see [`build_plain_tree`]).
pub fn plain_tree() -> Tree {
    let dir = scratch_dir("erofs-plain-");
    build_plain_tree(dir.path());
    Tree { dir }
}

/// Owner and permission bits of a new entry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
}

pub(crate) const fn m(mode: u32) -> Meta {
    Meta {
        mode,
        uid: 0,
        gid: 0,
    }
}

pub(crate) const fn mo(mode: u32, uid: u32, gid: u32) -> Meta {
    Meta { mode, uid, gid }
}

pub(crate) const FILE: Meta = m(0o644);
pub(crate) const DIR: Meta = m(0o755);

/// Seconds (may be negative) and nanoseconds.
type Timestamp = (i64, u32);

/// Creates entries (relative paths given as raw bytes) and remembers them so
/// that [`Builder::finish`] can set every timestamp last, children first.
#[derive(Debug)]
pub(crate) struct Builder {
    root: PathBuf,
    /// (relative path, explicit mtime) in creation order.
    made: Vec<(Vec<u8>, Option<Timestamp>)>,
}

impl Builder {
    fn new(root: &Path) -> Builder {
        let mut b = Builder {
            root: root.to_path_buf(),
            made: Vec::new(),
        };
        b.finish_entry(b"", DIR, false);
        b.made.push((Vec::new(), Some((1_700_000_000, 0))));
        b
    }

    fn path(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(OsStr::from_bytes(rel))
        }
    }

    /// chown then chmod (chown clears setuid/setgid, so it must come first).
    fn finish_entry(&mut self, rel: &[u8], meta: Meta, symlink: bool) {
        let p = self.path(rel);
        lchown(&p, Some(meta.uid), Some(meta.gid))
            .unwrap_or_else(|e| panic!("lchown {}: {e}", p.display()));
        if !symlink {
            fs::set_permissions(&p, Permissions::from_mode(meta.mode))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
        }
    }

    fn record(&mut self, rel: &[u8], meta: Meta, symlink: bool) {
        self.finish_entry(rel, meta, symlink);
        self.made.push((rel.to_vec(), None));
    }

    pub(crate) fn dir(&mut self, rel: &[u8], meta: Meta) {
        let p = self.path(rel);
        fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        self.record(rel, meta, false);
    }

    pub(crate) fn file(&mut self, rel: &[u8], data: &[u8], meta: Meta) {
        let p = self.path(rel);
        fs::write(&p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        self.record(rel, meta, false);
    }

    /// A sparse file: `pieces` of data at offsets, then truncated/extended
    /// to `len` (the gaps are holes).
    pub(crate) fn sparse(&mut self, rel: &[u8], pieces: &[(u64, &[u8])], len: u64) {
        let p = self.path(rel);
        let mut f = File::create(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        for (off, data) in pieces {
            f.seek(SeekFrom::Start(*off))
                .and_then(|_| f.write_all(data))
                .unwrap_or_else(|e| panic!("write {} at {off}: {e}", p.display()));
        }
        f.set_len(len)
            .unwrap_or_else(|e| panic!("truncate {}: {e}", p.display()));
        drop(f);
        self.record(rel, FILE, false);
    }

    pub(crate) fn symlink(&mut self, rel: &[u8], target: &[u8], meta: Meta) {
        let p = self.path(rel);
        std::os::unix::fs::symlink(OsStr::from_bytes(target), &p)
            .unwrap_or_else(|e| panic!("symlink {}: {e}", p.display()));
        self.record(rel, meta, true);
    }

    pub(crate) fn hardlink(&mut self, existing: &[u8], new: &[u8]) {
        let (a, b) = (self.path(existing), self.path(new));
        // linkat(2) without AT_SYMLINK_FOLLOW: links a symlink itself.
        fs::hard_link(&a, &b)
            .unwrap_or_else(|e| panic!("link {} -> {}: {e}", b.display(), a.display()));
    }

    /// A fifo, character or block device (`kind` is `libc::S_IF*`).
    pub(crate) fn node(&mut self, rel: &[u8], kind: libc::mode_t, meta: Meta, rdev: (u32, u32)) {
        let p = self.path(rel);
        let c = CString::new(p.as_os_str().as_bytes()).expect("no NUL in a tree path");
        let dev = make_dev(rdev.0, rdev.1) as libc::dev_t;
        // SAFETY: `c` is a valid NUL-terminated path for the whole call.
        let rc = unsafe { libc::mknod(c.as_ptr(), kind | 0o600, dev) };
        if rc != 0 {
            panic!(
                "mknod {} ({kind:o}, {}:{}): {}",
                p.display(),
                rdev.0,
                rdev.1,
                std::io::Error::last_os_error()
            );
        }
        self.record(rel, meta, false);
    }

    pub(crate) fn fifo(&mut self, rel: &[u8], meta: Meta) {
        self.node(rel, libc::S_IFIFO, meta, (0, 0));
    }

    /// A unix socket file: bind a listener, drop it; the file stays.
    pub(crate) fn socket(&mut self, rel: &[u8], meta: Meta) {
        let p = self.path(rel);
        drop(UnixListener::bind(&p).unwrap_or_else(|e| panic!("bind {}: {e}", p.display())));
        self.record(rel, meta, false);
    }

    pub(crate) fn xattr(&mut self, rel: &[u8], name: &str, value: &[u8]) {
        let p = self.path(rel);
        xattr::set(&p, name, value).unwrap_or_else(|e| {
            panic!(
                "lsetxattr {} {name:?} ({} bytes): {e} (user.* xattrs need tmpfs >= 6.6 \
                 or ext4; big values need tmpfs: set {TREE_TMP_ENV})",
                p.display(),
                value.len()
            )
        });
    }

    /// Overrides the (otherwise derived) mtime of an entry.
    pub(crate) fn mtime(&mut self, rel: &[u8], sec: i64, nsec: u32) {
        let slot = self
            .made
            .iter_mut()
            .rev()
            .find(|(r, _)| r == rel)
            .unwrap_or_else(|| {
                panic!("mtime for unknown entry {:?}", String::from_utf8_lossy(rel))
            });
        slot.1 = Some((sec, nsec));
    }

    /// Sets atime = mtime of every entry, children before parents (creating
    /// a child changes its parent's mtime). Entries without an explicit time
    /// get one derived from their path.
    fn finish(self) {
        for (rel, time) in self.made.iter().rev() {
            let (sec, nsec) = time.unwrap_or_else(|| default_mtime(rel));
            let p = self.path(rel);
            set_times(&p, sec, nsec);
        }
    }
}

/// A fixed mtime per path: 2020-09-13 + up to ~3 years, whole seconds.
fn default_mtime(rel: &[u8]) -> Timestamp {
    // FNV-1a
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in rel {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (1_600_000_000 + (h % 100_000_000) as i64, 0)
}

/// utimensat(AT_SYMLINK_NOFOLLOW) with atime = mtime.
fn set_times(p: &Path, sec: i64, nsec: u32) {
    let c = CString::new(p.as_os_str().as_bytes()).expect("no NUL in a tree path");
    let ts = libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: nsec as libc::c_long,
    };
    let times = [ts, ts];
    // SAFETY: `c` is a valid NUL-terminated path and `times` an array of two
    // timespecs, both alive for the whole call.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        panic!(
            "utimensat {} ({sec}.{nsec:09}): {}",
            p.display(),
            std::io::Error::last_os_error()
        );
    }
}

/// Concatenates path pieces (raw bytes).
fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Repeats `pattern` to exactly `len` bytes.
fn repeat_to(pattern: &[u8], len: usize) -> Vec<u8> {
    pattern.iter().copied().cycle().take(len).collect()
}

/// Log-like text of exactly `len` bytes (compressible, not repetitive).
pub(crate) fn log_text(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift64::new(seed);
    let levels = ["INFO", "DEBUG", "WARN", "ERROR"];
    let mut out = Vec::with_capacity(len + 128);
    let mut i = 0u64;
    while out.len() < len {
        let line = format!(
            "2024-03-{:02}T{:02}:{:02}:{:02}.{:03}Z {} worker-{} request id={} path=/api/v1/items/{} status={} bytes={}\n",
            1 + i / 86400 % 28,
            i / 3600 % 24,
            i / 60 % 60,
            i % 60,
            rng.below(1000),
            levels[rng.below(4) as usize],
            rng.below(16),
            rng.next_u64() % 1_000_000,
            rng.below(5000),
            [200, 200, 200, 404, 500][rng.below(5) as usize],
            rng.below(100_000),
        );
        out.extend_from_slice(line.as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

/// A symlink target of exactly `len` bytes: `cNNNxxx/` components.
fn long_target(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift64::new(seed);
    let mut t = Vec::with_capacity(len + 64);
    let mut n = 0;
    while t.len() < len {
        t.extend_from_slice(format!("c{n:03}").as_bytes());
        let xs = rng.below(40) as usize;
        t.resize(t.len() + xs, b'x');
        t.push(b'/');
        n += 1;
    }
    t.truncate(len);
    if t.last() == Some(&b'/') {
        *t.last_mut().expect("non-empty") = b'y';
    }
    t
}

/// Random / zero / pattern / text blocks of 4 KiB, `len` bytes in all.
pub(crate) fn mixed_data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift64::new(seed);
    let mut out = Vec::with_capacity(len);
    let mut block = 0u64;
    while out.len() < len {
        let piece = match block % 4 {
            0 => rng.bytes(4096),
            1 => vec![0; 4096],
            2 => repeat_to(b"EROFS-pattern-0123456789-", 4096),
            _ => log_text(4096, seed ^ block),
        };
        out.extend_from_slice(&piece);
        block += 1;
    }
    out.truncate(len);
    out
}

/// Sizes of the random files in `/files` (block and cluster boundaries).
pub const EDGE_RANDOM_SIZES: &[usize] = &[
    511, 512, 513, 1023, 1024, 1025, 2047, 2048, 2049, 4095, 4096, 4097, 8191, 8192, 8193, 12287,
    12288, 12289, 65535, 65536, 65537, 1_048_577,
];

/// Number of entries in `/bigdir`.
pub const EDGE_BIGDIR_ENTRIES: usize = 5000;

/// Lengths of the `/symlinks/s_len_NNNN` targets (4095 is Linux's maximum).
pub const EDGE_SYMLINK_LENGTHS: &[usize] = &[
    59, 60, 61, 255, 256, 511, 512, 1023, 1024, 2047, 2048, 3000, 4000, 4095,
];

/// Value sizes in `/xattrs/long_values` (mkfs.erofs 1.5 takes them all; the
/// VFS limit is 65536).
pub const EDGE_XATTR_VALUE_SIZES: &[(&str, usize)] = &[
    ("user.v4000", 4000),
    ("trusted.v8192", 8192),
    ("security.v16000", 16000),
    ("user.v60000", 60000),
];

/// Builds the edge-case tree into the existing empty directory `root`:
///
/// - `/files`: empty, 1-byte, random files at block boundaries
///   ([`EDGE_RANDOM_SIZES`]), zero-filled, repeated-pattern, log text,
///   mixed 4 KiB blocks.
/// - `/sparse`: leading, middle, trailing and all-hole files.
/// - `/links`: hard links (3 names, empty files, to a symlink, to a fifo,
///   to a char device, across directories).
/// - `/symlinks`: 1 byte .. 4095 bytes, dangling, looping, absolute, `.`,
///   non-UTF-8.
/// - `/special`: fifos, a socket, char/block devices (0:0 whiteout,
///   4095:1048575 maximum, 259:65537).
/// - `/bigdir`: [`EDGE_BIGDIR_ENTRIES`] entries (files, dirs, symlinks).
/// - `/names`: 1-byte and the longest names (255 bytes, 254 for mkfs 1.5:
///   see [`EdgeOptions`]; ASCII, 3- and 4-byte UTF-8, a directory), invalid
///   UTF-8, control characters, shell metacharacters.
/// - `/deep`: 40 nested directories.
/// - `/xattrs`: 100 user.* on one file, values up to 60000 bytes, 255-byte
///   names, binary and empty values, trusted.overlay.*, xattrs on a dir,
///   symlink, fifo, char device and socket, POSIX ACLs (access and default),
///   a file capability, 40 files sharing xattrs.
/// - `/modes`: setuid/setgid/sticky and unusual permission bits.
/// - `/owners`: uids/gids 0..4294967294 (beyond 16 bits: extended inodes).
/// - `/times`: mtimes from 1901 to 9999 with nanoseconds, negative ones.
pub fn build_edge_tree(root: &Path, opts: &EdgeOptions) {
    build_edge_tree_plus(root, opts, |_| {});
}

/// [`build_edge_tree`], with `more` adding entries (or xattrs, or mtimes)
/// before the timestamps are set.
pub(crate) fn build_edge_tree_plus(
    root: &Path,
    opts: &EdgeOptions,
    more: impl FnOnce(&mut Builder),
) {
    let mut b = Builder::new(root);
    b.xattr(b"", "user.root.comment", b"edge tree root");
    b.xattr(b"", "trusted.root.marker", &[1, 2, 3]);

    edge_files(&mut b);
    edge_sparse(&mut b);
    edge_links(&mut b);
    edge_symlinks(&mut b);
    edge_special(&mut b);
    edge_bigdir(&mut b);
    edge_names(&mut b, opts);
    edge_deep(&mut b);
    edge_xattrs(&mut b);
    edge_modes(&mut b);
    edge_owners(&mut b);
    edge_times(&mut b);
    more(&mut b);
    b.finish();
}

fn edge_files(b: &mut Builder) {
    b.dir(b"files", DIR);
    b.file(b"files/empty", b"", FILE);
    b.file(b"files/one", b"1", FILE);
    for &n in EDGE_RANDOM_SIZES {
        let data = XorShift64::new(n as u64).bytes(n);
        b.file(format!("files/rand_{n}").as_bytes(), &data, FILE);
    }
    for n in [4096usize, 65537, 131072] {
        b.file(format!("files/zero_{n}").as_bytes(), &vec![0; n], FILE);
    }
    b.file(b"files/ones_12289", &vec![0xff; 12289], FILE);
    b.file(
        b"files/repeat_40000",
        &repeat_to(b"0123456789abcdef repeated pattern\n", 40000),
        FILE,
    );
    b.file(b"files/log_70000", &log_text(70000, 7), FILE);
    b.file(b"files/mixed_200001", &mixed_data(200_001, 11), FILE);
}

fn edge_sparse(b: &mut Builder) {
    b.dir(b"sparse", DIR);
    b.sparse(b"sparse/lead_hole", &[(100_000, b"x")], 100_001);
    let head = XorShift64::new(21).bytes(4096);
    b.sparse(
        b"sparse/holes",
        &[(0, &head), (262_144 + 100, b"middle data")],
        786_432,
    );
    b.sparse(b"sparse/all_hole_256k", &[], 262_144);
    b.sparse(
        b"sparse/unaligned",
        &[(4097, b"abc"), (70_000, b"def")],
        120_000,
    );
    b.sparse(
        b"sparse/middle_chunk_only",
        &[(65_536 + 10, b"z")],
        3 * 65_536,
    );
}

fn edge_links(b: &mut Builder) {
    b.dir(b"links", DIR);
    b.dir(b"links/sub", DIR);
    let data = XorShift64::new(31).bytes(5000);
    b.file(b"links/hl_a", &data, mo(0o640, 1000, 1000));
    b.hardlink(b"links/hl_a", b"links/hl_b");
    b.hardlink(b"links/hl_a", b"links/sub/hl_c");
    b.file(b"links/hl_empty_1", b"", FILE);
    b.hardlink(b"links/hl_empty_1", b"links/hl_empty_2");
    b.symlink(b"links/hl_symlink", b"hl_a", FILE);
    b.hardlink(b"links/hl_symlink", b"links/hl_symlink_2");
    b.fifo(b"links/hl_fifo", m(0o644));
    b.hardlink(b"links/hl_fifo", b"links/sub/hl_fifo_2");
    b.node(b"links/hl_chr", libc::S_IFCHR, m(0o600), (1, 7));
    b.hardlink(b"links/hl_chr", b"links/sub/hl_chr_2");
}

fn edge_symlinks(b: &mut Builder) {
    b.dir(b"symlinks", DIR);
    b.file(b"symlinks/target", b"target content\n", FILE);
    let plain: &[(&[u8], &[u8])] = &[
        (b"s_1", b"a"),
        (b"s_rel", b"target"),
        (b"s_abs", b"/etc/passwd"),
        (b"s_dot", b"."),
        (b"s_up", b"../files/one"),
        (b"s_dir", b"../deep"),
        (b"s_dangling", b"does/not/exist"),
        (b"s_loop1", b"s_loop2"),
        (b"s_loop2", b"s_loop1"),
        (b"s_nonutf8", b"bad\xff\xfe/\x01name"),
        (b"s_spaces", b"a target with spaces"),
    ];
    for (name, target) in plain {
        b.symlink(&cat(&[b"symlinks/", name]), target, FILE);
    }
    for &n in EDGE_SYMLINK_LENGTHS {
        let target = long_target(n, n as u64);
        b.symlink(format!("symlinks/s_len_{n:04}").as_bytes(), &target, FILE);
    }
}

fn edge_special(b: &mut Builder) {
    b.dir(b"special", DIR);
    b.fifo(b"special/fifo", m(0o640));
    b.fifo(b"special/fifo_0", m(0));
    b.socket(b"special/sock", m(0o755));
    type Dev = (&'static [u8], libc::mode_t, Meta, (u32, u32));
    let devs: &[Dev] = &[
        (b"chr_null", libc::S_IFCHR, m(0o666), (1, 3)),
        (b"chr_whiteout", libc::S_IFCHR, m(0), (0, 0)),
        (
            b"chr_max",
            libc::S_IFCHR,
            mo(0o620, 0, 5),
            (4095, 1_048_575),
        ),
        (b"chr_bigminor", libc::S_IFCHR, m(0o620), (136, 300)),
        (b"blk_sda", libc::S_IFBLK, mo(0o660, 0, 6), (8, 0)),
        (b"blk_nvme", libc::S_IFBLK, m(0o660), (259, 65537)),
    ];
    for (name, kind, meta, rdev) in devs {
        b.node(&cat(&[b"special/", name]), *kind, *meta, *rdev);
    }
}

fn edge_bigdir(b: &mut Builder) {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    b.dir(b"bigdir", DIR);
    for i in 0..EDGE_BIGDIR_ENTRIES {
        let name = cat(&[
            format!("bigdir/{i:05}_").as_bytes(),
            &LETTERS[..(i * 7) % 27],
        ]);
        if i % 100 == 99 {
            b.dir(&name, DIR);
        } else if i % 50 == 25 {
            b.symlink(&name, b"00000_", FILE);
        } else if i % 10 == 1 {
            b.file(&name, format!("entry {i}\n").as_bytes(), FILE);
        } else {
            b.file(&name, b"", FILE);
        }
    }
}

/// `unit` repeated, then ASCII letters, to exactly `len` bytes.
fn fill_name(unit: &str, len: usize) -> Vec<u8> {
    let mut v = unit.repeat(len / unit.len()).into_bytes();
    v.extend(b"abcdefgh".iter().take(len - v.len()));
    v
}

fn edge_names(b: &mut Builder, opts: &EdgeOptions) {
    b.dir(b"names", DIR);
    let names: &[&[u8]] = &[
        b"a",
        b"A",
        b"aa",
        b"0",
        b".hidden",
        b"...",
        b"..double",
        b"-dash",
        b" leading space",
        b"trailing space ",
        b"new\nline",
        b"tab\there",
        b"back\\slash",
        b"quote\"s",
        b"apos'",
        b"colon:name",
        b"semi;colon",
        b"*?[]{}$",
        b"%percent%",
        b"\x01\x02\x03",
        b"\x7f",
        "ünïcödé".as_bytes(),
        "日本語ファイル.txt".as_bytes(),
        "emoji_😀_🎉".as_bytes(),
        "zero\u{200b}width".as_bytes(),
        b"latin1_\xe9t\xe9",
        b"\xff",
        b"\xc3(",
        b"\xfe\xff",
        b"\xed\xa0\x80surrogate",
    ];
    for (i, name) in names.iter().enumerate() {
        let data = format!("name {i}\n");
        b.file(&cat(&[b"names/", name]), data.as_bytes(), FILE);
    }
    // Longest names: ASCII, 3-byte and 4-byte UTF-8, a directory.
    let len = opts.long_name_len;
    let ascii = vec![b'n'; len];
    b.file(&cat(&[b"names/", &ascii]), b"longest ascii\n", FILE);
    let cjk = fill_name("日", len);
    b.file(&cat(&[b"names/", &cjk]), b"longest cjk\n", FILE);
    let emoji = fill_name("😀", len);
    b.file(&cat(&[b"names/", &emoji]), b"longest emoji\n", FILE);
    let dir = cat(&[b"names/", &vec![b'D'; len]]);
    b.dir(&dir, DIR);
    b.file(
        &cat(&[&dir, b"/", &vec![b'f'; len]]),
        b"longest in longest\n",
        FILE,
    );
    b.dir("names/目录".as_bytes(), DIR);
    b.file("names/目录/x".as_bytes(), b"inside\n", FILE);
}

fn edge_deep(b: &mut Builder) {
    let mut p = b"deep".to_vec();
    b.dir(&p, DIR);
    for level in 1..=40 {
        p.extend_from_slice(format!("/d{level:02}").as_bytes());
        b.dir(&p, DIR);
        b.file(
            &cat(&[&p, b"/f"]),
            format!("level {level:02}\n").as_bytes(),
            FILE,
        );
    }
    b.file(&cat(&[&p, b"/leaf.txt"]), b"the bottom of /deep\n", FILE);
}

/// A POSIX ACL in the kernel's xattr format: version 2, then (tag u16,
/// perm u16, id u32) little-endian entries.
fn posix_acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const ACL_UNDEFINED_ID: u32 = u32::MAX;

fn edge_xattrs(b: &mut Builder) {
    b.dir(b"xattrs", DIR);

    b.file(b"xattrs/many_user", b"many\n", FILE);
    for i in 0..100 {
        let value = format!("value-{i}-{}", "v".repeat(i % 40));
        b.xattr(
            b"xattrs/many_user",
            &format!("user.attr.{i:03}"),
            value.as_bytes(),
        );
    }

    b.file(b"xattrs/long_values", b"long values\n", FILE);
    for (name, size) in EDGE_XATTR_VALUE_SIZES {
        let value = XorShift64::new(*size as u64).bytes(*size);
        b.xattr(b"xattrs/long_values", name, &value);
    }

    b.file(b"xattrs/name_255", b"255-byte names\n", FILE);
    b.xattr(
        b"xattrs/name_255",
        &format!("user.{}", "N".repeat(250)),
        b"user",
    );
    b.xattr(
        b"xattrs/name_255",
        &format!("trusted.{}", "T".repeat(247)),
        b"",
    );
    b.xattr(
        b"xattrs/name_255",
        &format!("security.{}", "S".repeat(246)),
        b"sec",
    );

    b.file(b"xattrs/binary_value", b"b", FILE);
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    b.xattr(b"xattrs/binary_value", "user.bin", &all_bytes);
    b.xattr(b"xattrs/binary_value", "trusted.nul", &[0; 17]);

    b.file(b"xattrs/empty_value", b"e", FILE);
    b.xattr(b"xattrs/empty_value", "user.empty", b"");
    b.xattr(b"xattrs/empty_value", "security.empty", b"");

    b.file(b"xattrs/prefix_sharing", b"overlay-like\n", FILE);
    for (i, suffix) in [
        "opaque", "origin", "redirect", "impure", "metacopy", "upper",
    ]
    .iter()
    .enumerate()
    {
        let value = XorShift64::new(100 + i as u64).bytes(8 + 8 * i);
        b.xattr(
            b"xattrs/prefix_sharing",
            &format!("trusted.overlay.{suffix}"),
            &value,
        );
    }

    b.dir(b"xattrs/dir_x", DIR);
    b.xattr(b"xattrs/dir_x", "trusted.overlay.opaque", b"y");
    b.xattr(b"xattrs/dir_x", "user.on.dir", b"dir xattr");

    // user.* is not allowed on symlinks and special files.
    b.symlink(b"xattrs/symlink_x", b"many_user", FILE);
    b.xattr(b"xattrs/symlink_x", "trusted.on.symlink", b"symlink xattr");
    b.xattr(b"xattrs/symlink_x", "security.on.symlink", b"sec");
    b.fifo(b"xattrs/fifo_x", m(0o644));
    b.xattr(b"xattrs/fifo_x", "trusted.on.fifo", b"fifo xattr");
    b.node(b"xattrs/chr_x", libc::S_IFCHR, m(0o600), (1, 5));
    b.xattr(b"xattrs/chr_x", "trusted.on.chr", b"chr xattr");
    b.socket(b"xattrs/sock_x", m(0o755));
    b.xattr(b"xattrs/sock_x", "trusted.on.sock", b"sock xattr");

    // ACLs with named entries (an ACL equivalent to the mode bits would be
    // folded into the mode and not stored). Setting the access ACL also
    // sets the group bits to the mask.
    b.file(b"xattrs/acl_file", b"acl\n", m(0o640));
    b.xattr(
        b"xattrs/acl_file",
        "system.posix_acl_access",
        &posix_acl(&[
            (ACL_USER_OBJ, 6, ACL_UNDEFINED_ID),
            (ACL_USER, 4, 1000),
            (ACL_GROUP_OBJ, 4, ACL_UNDEFINED_ID),
            (ACL_GROUP, 6, 1001),
            (ACL_MASK, 6, ACL_UNDEFINED_ID),
            (ACL_OTHER, 0, ACL_UNDEFINED_ID),
        ]),
    );
    b.dir(b"xattrs/acl_dir", m(0o750));
    b.xattr(
        b"xattrs/acl_dir",
        "system.posix_acl_default",
        &posix_acl(&[
            (ACL_USER_OBJ, 7, ACL_UNDEFINED_ID),
            (ACL_USER, 5, 1000),
            (ACL_GROUP_OBJ, 5, ACL_UNDEFINED_ID),
            (ACL_MASK, 5, ACL_UNDEFINED_ID),
            (ACL_OTHER, 0, ACL_UNDEFINED_ID),
        ]),
    );
    b.xattr(
        b"xattrs/acl_dir",
        "system.posix_acl_access",
        &posix_acl(&[
            (ACL_USER_OBJ, 7, ACL_UNDEFINED_ID),
            (ACL_GROUP_OBJ, 5, ACL_UNDEFINED_ID),
            (ACL_GROUP, 7, 1002),
            (ACL_MASK, 7, ACL_UNDEFINED_ID),
            (ACL_OTHER, 0, ACL_UNDEFINED_ID),
        ]),
    );

    // VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE, permitted = CAP_NET_RAW.
    b.file(b"xattrs/cap_bin", b"#!/bin/true\n", m(0o755));
    let mut cap = 0x0200_0001u32.to_le_bytes().to_vec();
    cap.extend_from_slice(&(1u32 << 13).to_le_bytes());
    cap.extend_from_slice(&[0; 12]);
    b.xattr(b"xattrs/cap_bin", "security.capability", &cap);

    // Xattrs shared by many inodes (mkfs puts them in the shared area).
    b.dir(b"xattrs/shared", DIR);
    for i in 0..40 {
        let rel = format!("xattrs/shared/f{i:02}");
        b.file(rel.as_bytes(), format!("shared {i}\n").as_bytes(), FILE);
        b.xattr(
            rel.as_bytes(),
            "user.shared.common",
            b"common value shared by forty files",
        );
        if i % 2 == 1 {
            b.xattr(rel.as_bytes(), "trusted.shared.half", &[b'h'; 80]);
        }
        if i % 10 == 0 {
            b.xattr(
                rel.as_bytes(),
                "user.unique",
                format!("only f{i:02}").as_bytes(),
            );
        }
    }
}

fn edge_modes(b: &mut Builder) {
    b.dir(b"modes", DIR);
    for mode in [
        0o000, 0o400, 0o444, 0o600, 0o644, 0o666, 0o700, 0o755, 0o777, 0o1644, 0o2000, 0o2755,
        0o4000, 0o4755, 0o6755, 0o7777,
    ] {
        let rel = format!("modes/f_{mode:04o}");
        b.file(rel.as_bytes(), format!("{mode:04o}\n").as_bytes(), m(mode));
    }
    for mode in [0o000, 0o555, 0o700, 0o1777, 0o2775, 0o3777] {
        let rel = format!("modes/d_{mode:04o}");
        b.dir(rel.as_bytes(), DIR);
        b.file(format!("{rel}/inside").as_bytes(), b"inside\n", FILE);
        b.finish_entry(rel.as_bytes(), m(mode), false);
    }
}

fn edge_owners(b: &mut Builder) {
    b.dir(b"owners", DIR);
    for (uid, gid) in [
        (0u32, 0u32),
        (1, 1),
        (1000, 1000),
        (1000, 0),
        (65534, 65534),
        (65535, 65535),
        (65536, 1),
        (1, 65536),
        (100_000, 100_000),
        (2_147_483_647, 2_147_483_648),
        (4_294_967_294, 4_294_967_294),
    ] {
        let rel = format!("owners/u{uid}_g{gid}");
        b.file(rel.as_bytes(), b"owned\n", mo(0o644, uid, gid));
    }
    b.dir(b"owners/dir_u100000", mo(0o755, 100_000, 100_000));
    b.fifo(b"owners/fifo_u1234_g4321", mo(0o644, 1234, 4321));
    b.symlink(b"owners/link_u70000", b"u0_g0", mo(0o777, 70000, 70001));
}

fn edge_times(b: &mut Builder) {
    b.dir(b"times", DIR);
    for (sec, nsec) in [
        (0i64, 0u32),
        (1, 0),
        (-1, 500_000_000),
        (-86400, 0),
        (-2_147_483_648, 0),
        (946_684_800, 0),
        (1_700_000_000, 1),
        (1_700_000_000, 999_999_999),
        (2_147_483_647, 0),
        (2_147_483_648, 0),
        (4_102_444_800, 123),
        (4_294_967_295, 0),
        (4_294_967_296, 0),
        (253_402_300_799, 999_999_999),
    ] {
        let rel = format!("times/t_{sec}_{nsec}");
        b.file(rel.as_bytes(), b"time\n", FILE);
        b.mtime(rel.as_bytes(), sec, nsec);
    }
    b.dir(b"times/dir_future", DIR);
    b.mtime(b"times/dir_future", 4_102_444_800, 5);
    b.symlink(b"times/link_old", b"t_0_0", FILE);
    b.mtime(b"times/link_old", 12345, 678);
    b.mtime(b"times", 1_234_567_890, 123_456_789);
}

/// Builds the small plain tree into the existing empty directory `root`:
/// a few files (empty, text, 5000 random bytes, 3 blocks + 1), a subdirectory,
/// a symlink, a hard link, a fifo and one user xattr.
pub fn build_plain_tree(root: &Path) {
    let mut b = Builder::new(root);
    b.file(b"hello.txt", b"hello, world\n", FILE);
    b.file(b"empty", b"", FILE);
    b.file(b"random_5000", &XorShift64::new(5000).bytes(5000), FILE);
    b.file(b"blocks_12289", &mixed_data(12289, 3), FILE);
    b.dir(b"sub", DIR);
    b.dir(b"sub/dir", DIR);
    b.file(b"sub/dir/file", b"nested file\n", mo(0o600, 1000, 1000));
    b.symlink(b"link", b"hello.txt", FILE);
    b.hardlink(b"hello.txt", b"sub/hello_again.txt");
    b.fifo(b"sub/fifo", m(0o644));
    b.xattr(b"hello.txt", "user.greeting", b"hi");
    b.finish();
}
