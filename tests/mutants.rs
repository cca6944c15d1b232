//! Corrupt compressed images cost bounded work: a packed-inode mutant.
//!
//! An all-fragments image keeps every file's data in the packed inode, in
//! big pclusters (-C1048576) that hundreds of files share. Flipping a few
//! bytes inside each such pcluster makes (nearly) every file unreadable; a
//! reader that does not remember failed decodes decodes the shared
//! megabyte once per file to fail again (minutes for a few thousand files
//! where the kernel takes seconds). These tests check, without timing:
//!
//! - `test_packed_mutant_reads_whole_or_euclean_and_decodes_each_pcluster_once`
//!   (library): every file reads bit-exactly, or fails with EUCLEAN (the
//!   kernel's EFSCORRUPTED), or (when its bytes are in a mutated pcluster
//!   of a format without a checksum) reads to its full length; the outcome is the same on a second pass; and
//!   the mutated pclusters are read from the source at most twice each over
//!   both passes of every file (a counting source), not once per file;
//! - `test_fuse_packed_mutant_reads_whole_or_euclean_daemon_alive`: the same
//!   rule through our FUSE daemon, which stays up.
//!
//! The time figures (our walk against the kernel's on such mutants) come
//! from `scripts/bench-mutants.sh` (docs/benchmarks.md), not from a timed
//! test. Needs mkfs.erofs 1.9 (`$EROFS_MKFS_NEW`, else
//! `target/sid/bin/mkfs.erofs` from `scripts/sid-tools.sh erofs`); the FUSE
//! test needs root and /dev/fuse.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use erofs_virtiofsd::erofs::zmap::{ZKind, ZMap};
use erofs_virtiofsd::erofs::{self, Image, ImageOptions, Inode, InodeKind};
use erofs_virtiofsd::source::{MemorySource, Source};

use common::fusemount::FuseMount;
use common::trees::{image_dir, scratch_dir, XorShift64};

/// Files in the tree (each 500..3500 bytes of text).
const FILES: usize = 800;

/// Bytes flipped in the middle of each packed pcluster.
const FLIPS: u64 = 3;

/// mkfs.erofs 1.9 from Debian sid.
fn mkfs_new() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let p = match std::env::var_os("EROFS_MKFS_NEW") {
            Some(p) => PathBuf::from(p),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sid/bin/mkfs.erofs"),
        };
        let out = Command::new(&p)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "mkfs.erofs 1.9 not runnable at {} ({e}): run `scripts/sid-tools.sh erofs` \
                 or set EROFS_MKFS_NEW",
                    p.display()
                )
            });
        let v = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            v.contains(" 1.9"),
            "{} is not mkfs.erofs 1.9 ({v:?})",
            p.display()
        );
        p
    })
}

/// A tree of [`FILES`] small text files in 100-file directories.
fn build_tree(root: &Path) {
    let mut rng = XorShift64::new(20261207);
    let words: Vec<String> = (0..2000)
        .map(|_| {
            let n = 2 + rng.below(8) as usize;
            (0..n)
                .map(|_| (b'a' + rng.below(26) as u8) as char)
                .collect()
        })
        .collect();
    for i in 0..FILES {
        let dir = root.join(format!("d{:02}", i / 100));
        fs::create_dir_all(&dir).expect("mkdir");
        let size = 500 + rng.below(3000) as usize;
        let mut text = String::with_capacity(size + 16);
        while text.len() < size {
            text.push_str(&words[rng.below(words.len() as u64) as usize]);
            text.push(' ');
        }
        text.truncate(size);
        fs::write(dir.join(format!("f{:03}.txt", i % 100)), text).expect("write");
    }
}

/// An all-fragments image of the tree with `-z{alg}` and 1 MiB pclusters.
fn build_image(tree: &Path, dir: &Path, alg: &str) -> PathBuf {
    let image = dir.join(format!("{alg}-allfrag.erofs"));
    let out = Command::new(mkfs_new())
        .args(["--quiet", "-T", "1700000000", &format!("-z{alg}")])
        .args(["-C1048576", "-Eall-fragments"])
        .arg(&image)
        .arg(tree)
        .output()
        .expect("run mkfs.erofs");
    assert!(
        out.status.success(),
        "mkfs.erofs -z{alg} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    image
}

/// A byte range `[start, end)`.
type Range = (u64, u64);

/// A pcluster: its physical range and the logical range it decodes to.
type Pcluster = (Range, Range);

/// Path -> (inode, fragment range in the packed inode).
type Listing = BTreeMap<Vec<u8>, (Inode, Option<Range>)>;

/// A memory source counting the reads that touch any of `watched`.
#[derive(Debug)]
struct CountingSource {
    inner: MemorySource,
    watched: Vec<(u64, u64)>,
    hits: AtomicU64,
}

impl Source for CountingSource {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let end = offset + buf.len() as u64;
        if self.watched.iter().any(|&(s, e)| offset < e && s < end) {
            self.hits.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.read_at(buf, offset)
    }

    fn size(&self) -> u64 {
        self.inner.size()
    }
}

/// The packed inode's encoded pclusters: (physical range, logical range).
fn packed_pclusters(img: &Image) -> Vec<Pcluster> {
    let packed = img
        .inode(img.superblock().packed_nid)
        .expect("packed inode");
    let z = ZMap::new(img, &packed).expect("packed map");
    let mut out = Vec::new();
    let mut la = 0;
    while la < packed.size {
        let e = z.map(la).expect("packed extent");
        if let ZKind::Encoded {
            pa,
            plen,
            inline: false,
            ..
        } = e.kind
        {
            out.push(((pa, pa + plen), (e.la, e.la + e.llen)));
        }
        la = e.la + e.llen.max(1);
    }
    out
}

/// Every regular file of `img`: path -> (inode, fragment range in the
/// packed inode, if its data is a fragment).
fn files(img: &Image) -> Listing {
    let mut out = BTreeMap::new();
    erofs::walk(
        img,
        |e| {
            if e.inode.kind == InodeKind::File {
                out.insert(e.path.clone(), (e.inode.clone(), None));
            }
        },
        |p, e| panic!("walk problem at {p:?}: {e}"),
    )
    .expect("walk");
    for (ino, frag) in out.values_mut() {
        if ino.size == 0 || !ino.is_compressed() {
            continue;
        }
        let z = ZMap::new(img, ino).expect("file map");
        if let ZKind::Fragment { off } = z.map(0).expect("file extent").kind {
            *frag = Some((off, off + ino.size));
        }
    }
    out
}

fn read_all(img: &Image, ino: &Inode) -> erofs::Result<Vec<u8>> {
    let mut buf = vec![0u8; ino.size as usize];
    let n = img.read(ino, 0, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// Whether `range` (logical, in the packed inode) overlaps a mutated
/// pcluster.
fn hit(range: Option<(u64, u64)>, mutated: &[(u64, u64)]) -> bool {
    range.is_some_and(|(s, e)| mutated.iter().any(|&(ms, me)| s < me && ms < e))
}

/// Flips [`FLIPS`] bytes in the middle of each pcluster of `bytes`.
fn mutate(bytes: &mut [u8], pclusters: &[Pcluster]) {
    for &((s, e), _) in pclusters {
        let mid = (s + e) / 2;
        for k in 0..FLIPS {
            let pos = mid + k * 97;
            if pos < e {
                bytes[pos as usize] ^= 0x5a;
            }
        }
    }
}

#[test]
fn test_packed_mutant_reads_whole_or_euclean_and_decodes_each_pcluster_once() {
    let tree = scratch_dir("mutant-tree");
    build_tree(tree.path());
    let dir = image_dir("mutant-img");
    for alg in ["lzma", "zstd", "lz4hc", "deflate"] {
        // Arrange: the pristine image, its files and its packed pclusters.
        let path = build_image(tree.path(), dir.path(), alg);
        let pristine_bytes = fs::read(&path).expect("read image");
        let pristine = Image::open(
            Arc::new(MemorySource::from_vec(pristine_bytes.clone())),
            ImageOptions::default(),
        )
        .expect("open pristine");
        let pcl = packed_pclusters(&pristine);
        assert!(!pcl.is_empty(), "{alg}: no packed pcluster");
        let listing = files(&pristine);
        assert!(listing.len() >= FILES, "{alg}: {} files", listing.len());
        let shared = listing.values().filter(|(_, f)| f.is_some()).count();
        assert!(
            shared > 4 * pcl.len(),
            "{alg}: {shared} fragment files for {} pclusters: the test needs shared pclusters",
            pcl.len()
        );
        let want: BTreeMap<_, _> = listing
            .iter()
            .map(|(p, (ino, _))| (p.clone(), read_all(&pristine, ino).expect("pristine read")))
            .collect();

        // Act: the mutant, read twice over, file by file.
        let mut bytes = pristine_bytes;
        mutate(&mut bytes, &pcl);
        let src = Arc::new(CountingSource {
            inner: MemorySource::from_vec(bytes),
            watched: pcl.iter().map(|&(p, _)| p).collect(),
            hits: AtomicU64::new(0),
        });
        let img = Image::open(src.clone(), ImageOptions::default()).expect("open mutant");
        let mutated: Vec<(u64, u64)> = pcl.iter().map(|&(_, l)| l).collect();
        let mut first: BTreeMap<Vec<u8>, Result<Vec<u8>, String>> = BTreeMap::new();
        let mut failed = 0;
        for pass in 0..2 {
            for (p, (ino, frag)) in &listing {
                let shown = String::from_utf8_lossy(p);
                let got = read_all(&img, ino);
                // Assert: whole or EUCLEAN, the same both times.
                match &got {
                    Ok(data) if data == &want[p] => {}
                    Ok(data) => {
                        assert!(
                            hit(*frag, &mutated),
                            "{alg}: {shown} reads wrong bytes but none of its pclusters is mutated"
                        );
                        assert_eq!(data.len(), want[p].len(), "{alg}: {shown}: short read");
                    }
                    Err(e) => {
                        assert_eq!(e.errno(), libc::EUCLEAN, "{alg}: {shown}: {e}");
                        if pass == 0 {
                            failed += 1;
                        }
                    }
                }
                let got = got.map_err(|e| e.to_string());
                if pass == 0 {
                    first.insert(p.clone(), got);
                } else {
                    assert_eq!(
                        first[p], got,
                        "{alg}: {shown} reads differently the second time"
                    );
                }
            }
        }
        let hits = src.hits.load(Ordering::SeqCst);
        eprintln!(
            "{alg}: {} files, {failed} failed, {} packed pclusters, {hits} reads of them",
            listing.len(),
            pcl.len()
        );
        assert!(
            hits <= 2 * pcl.len() as u64,
            "{alg}: the {} mutated pclusters were read {hits} times for {} files (twice \
             each): failed decodes are not remembered",
            pcl.len(),
            listing.len()
        );
    }
}

#[test]
fn test_fuse_packed_mutant_reads_whole_or_euclean_daemon_alive() {
    let tree = scratch_dir("mutant-fuse-tree");
    build_tree(tree.path());
    let dir = image_dir("mutant-fuse-img");
    let path = build_image(tree.path(), dir.path(), "lzma");
    let mut bytes = fs::read(&path).expect("read image");
    let pristine = Image::open(
        Arc::new(MemorySource::from_vec(bytes.clone())),
        ImageOptions::default(),
    )
    .expect("open pristine");
    let pcl = packed_pclusters(&pristine);
    let listing = files(&pristine);
    let mutated: Vec<(u64, u64)> = pcl.iter().map(|&(_, l)| l).collect();
    mutate(&mut bytes, &pcl);
    let mutant = dir.path().join("mutant.erofs");
    fs::write(&mutant, &bytes).expect("write mutant");

    let mut mount = FuseMount::new(&mutant, &[], &[]);
    let mut failed = 0;
    for (p, (ino, frag)) in &listing {
        let rel = String::from_utf8_lossy(p)
            .trim_start_matches('/')
            .to_string();
        let want = read_all(&pristine, ino).expect("pristine read");
        let mut got = Vec::new();
        let r = fs::File::open(mount.path().join(&rel)).and_then(|mut f| f.read_to_end(&mut got));
        match r {
            Ok(_) if got == want => {}
            Ok(_) => {
                assert!(
                    hit(*frag, &mutated),
                    "{rel}: wrong bytes outside the mutation"
                );
                assert_eq!(got.len(), want.len(), "{rel}: short read");
            }
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EUCLEAN), "{rel}: {e}");
                failed += 1;
            }
        }
    }
    assert!(failed > 0, "no file failed: the mutation missed");
    assert!(mount.alive(), "the daemon died: {}", mount.stderr_text());
    mount.finish("packed mutant");
}
