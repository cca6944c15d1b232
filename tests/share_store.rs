//! The shared content store through the binary (`store preload`, `store
//! stat`) and the library: fingerprints as mkfs.erofs 1.9 writes them, one
//! load per content across concurrent processes, killed loaders, lying
//! images, trust domains and the size bound.
//!
//! Needs mkfs.erofs 1.9 (`--xattr-inode-digest`): `$EROFS_MKFS_NEW`, else
//! `target/sid/bin/mkfs.erofs` as `scripts/sid-tools.sh erofs` installs it.
//! Stores are made under /dev/shm (the default kind of store), trees and
//! images under the temp directory.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use erofs_virtiofsd::erofs::{self, Image, ImageOptions, InodeKind};
use erofs_virtiofsd::share::{
    self, Domain, Fingerprint, FingerprintXattr, Store, StoreOptions, DEFAULT_XATTR_NAME,
};
use erofs_virtiofsd::source;
use sha2::{Digest, Sha256};

use common::mkfs::{mixed_content as content, mkfs_19 as mkfs};

const BIN: &str = env!("CARGO_BIN_EXE_erofs-virtiofsd");
const PAUSE_ENV: &str = "EROFS_VIRTIOFSD_TEST_PAUSE_LOAD_AFTER";
const PAUSED_LINE: &str = "erofs-virtiofsd: test: load paused";
const MIB: usize = 1 << 20;

fn sha(data: &[u8]) -> Fingerprint {
    Fingerprint::from_sha256(Sha256::digest(data).into())
}

/// Writes `files` (name, content) into a new directory `dir`.
fn make_tree(dir: &Path, files: &[(String, Vec<u8>)]) {
    fs::create_dir_all(dir).unwrap();
    for (name, data) in files {
        let p = dir.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
}

fn shm_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("share-store-test")
        .tempdir_in("/dev/shm")
        .unwrap()
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run binary")
}

#[track_caller]
fn run_ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn preload_cmd(store: &Path, domain: &str, image: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(["store", "preload", "--store"])
        .arg(store)
        .args(["--domain", domain])
        .args(extra)
        .arg(image);
    c
}

#[track_caller]
fn preload_ok(store: &Path, domain: &str, image: &Path, extra: &[&str]) {
    let out = preload_cmd(store, domain, image, extra).output().unwrap();
    assert!(
        out.status.success(),
        "preload {} failed: {}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `store stat --json`, by domain.
fn stat(store: &Path) -> BTreeMap<String, serde_json::Value> {
    let text = run_ok(&[
        "store",
        "stat",
        "--json",
        "--store",
        store.to_str().unwrap(),
    ]);
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["domain"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

fn num(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

fn objects_dir(store: &Path, domain: &str) -> PathBuf {
    let d = Domain::new(domain).unwrap();
    store.join("v1/domains").join(d.dir_name()).join("objects")
}

fn list(dir: &Path) -> BTreeSet<String> {
    match fs::read_dir(dir) {
        Ok(it) => it
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// Checks the domain's entries are exactly `contents`, byte for byte.
#[track_caller]
fn assert_entries_exact(store: &Path, domain: &str, contents: &[&[u8]]) {
    let want: BTreeMap<String, &[u8]> = contents
        .iter()
        .filter(|c| !c.is_empty())
        .map(|c| (sha(c).to_hex(), *c))
        .collect();
    let dir = objects_dir(store, domain);
    assert_eq!(
        list(&dir),
        want.keys().cloned().collect::<BTreeSet<_>>(),
        "entries of domain {domain}"
    );
    for (hex, data) in want {
        let stored = fs::read(dir.join(&hex)).unwrap();
        assert!(stored == data, "entry {hex} differs from the file content");
    }
}

fn open_image(path: &Path) -> Image {
    let src = source::open_path(path, 0).unwrap();
    Image::open(src, ImageOptions::default()).unwrap()
}

/// Every regular file of an image by path, with its inode.
fn image_files(img: &Image) -> BTreeMap<String, erofs::Inode> {
    let mut out = BTreeMap::new();
    erofs::walk(
        img,
        |e| {
            if e.inode.kind == InodeKind::File {
                out.insert(String::from_utf8(e.path.clone()).unwrap(), e.inode.clone());
            }
        },
        |p, e| panic!("{}: {e}", String::from_utf8_lossy(p)),
    )
    .unwrap();
    out
}

/// Two trees with 12 identical files (and a duplicate inside the first),
/// plus 8 files of their own each.
fn overlapping_trees(base: &Path) -> (PathBuf, PathBuf, Vec<Vec<u8>>) {
    let shared_sizes = [
        1,
        100,
        4095,
        4096,
        4097,
        65536,
        100_000,
        MIB,
        MIB + 1,
        3 * MIB,
        5 * MIB,
        12 * MIB,
    ];
    let mut a = Vec::new();
    let mut b = Vec::new();
    let mut all = Vec::new();
    for (i, &n) in shared_sizes.iter().enumerate() {
        let c = content(1000 + i as u64, n);
        a.push((format!("shared/s{i}"), c.clone()));
        b.push((format!("common/x{i}"), c.clone()));
        all.push(c);
    }
    a.push(("dup-of-s3".to_string(), all[3].clone()));
    for i in 0..8 {
        let ca = content(2000 + i, 1000 + 37_000 * i as usize);
        let cb = content(3000 + i, 2000 + 41_000 * i as usize);
        a.push((format!("own/a{i}"), ca.clone()));
        b.push((format!("own/b{i}"), cb.clone()));
        all.push(ca);
        all.push(cb);
    }
    a.push(("empty".to_string(), Vec::new()));
    b.push(("empty".to_string(), Vec::new()));
    let (ta, tb) = (base.join("tree-a"), base.join("tree-b"));
    make_tree(&ta, &a);
    make_tree(&tb, &b);
    std::os::unix::fs::symlink("shared/s0", ta.join("link")).unwrap();
    (ta, tb, all)
}

#[test]
fn test_fingerprints_are_the_sha256_of_each_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (ta, _, _) = overlapping_trees(tmp.path());
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "plain-default",
            &["--xattr-inode-digest"],
            DEFAULT_XATTR_NAME,
        ),
        (
            "lz4hc-trusted",
            &["-zlz4hc", "--xattr-inode-digest=trusted.erofs.fingerprint"],
            "trusted.erofs.fingerprint",
        ),
        (
            "zstd-user",
            &["-zzstd", "--xattr-inode-digest=user.fp"],
            "user.fp",
        ),
    ];
    for (name, args, xname) in cases {
        let img = open_image(&mkfs(&ta, &tmp.path().join(format!("{name}.erofs")), args));
        let x = FingerprintXattr::declared_by(&img).expect("declared fingerprint xattr");
        assert_eq!(x.name(), *xname, "{name}");
        assert_eq!(x, FingerprintXattr::from_name(xname).unwrap(), "{name}");
        let mut seen = 0;
        for (path, inode) in image_files(&img) {
            let data = fs::read(ta.join(path.trim_start_matches('/'))).unwrap();
            let fp = x.fingerprint(&img, &inode);
            if data.is_empty() {
                assert_eq!(fp, None, "{name}: {path}: empty files have none");
            } else {
                assert_eq!(fp, Some(sha(&data)), "{name}: {path}");
                let mut read = |off: u64, buf: &mut [u8]| {
                    img.read(&inode, off, buf).map_err(std::io::Error::other)
                };
                assert_eq!(
                    share::hash_content(inode.size, &mut read).unwrap(),
                    sha(&data)
                );
                seen += 1;
            }
        }
        assert_eq!(seen, 21, "{name}");
        let root = img.inode(img.root_nid()).unwrap();
        assert_eq!(x.fingerprint(&img, &root), None);
    }
    // Without --xattr-inode-digest: nothing declared, nothing found even
    // when the default name is forced.
    let img = open_image(&mkfs(&ta, &tmp.path().join("none.erofs"), &[]));
    assert!(FingerprintXattr::declared_by(&img).is_none());
    let forced = FingerprintXattr::from_name(DEFAULT_XATTR_NAME).unwrap();
    for inode in image_files(&img).values() {
        assert_eq!(forced.fingerprint(&img, inode), None);
    }
}

#[test]
fn test_two_concurrent_preloads_load_each_shared_content_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store = shm_tempdir();
    let (ta, tb, all) = overlapping_trees(tmp.path());
    let ia = mkfs(&ta, &tmp.path().join("a.erofs"), &["--xattr-inode-digest"]);
    let ib = mkfs(
        &tb,
        &tmp.path().join("b.erofs"),
        &["-zlz4hc", "--xattr-inode-digest=trusted.erofs.fingerprint"],
    );

    let mut procs: Vec<Child> = [&ia, &ib, &ia, &ib]
        .iter()
        .map(|img| {
            preload_cmd(store.path(), "team", img, &[])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for p in procs.iter_mut() {
        let out = p.wait().unwrap();
        assert!(out.success(), "a preload failed: {out}");
    }

    let st = stat(store.path());
    let team = &st["team"];
    let distinct = all.len() as u64;
    assert_eq!(num(team, "entries"), distinct);
    assert_eq!(
        num(team, "loads"),
        distinct,
        "each content loaded once: {team}"
    );
    // 21 and 20 fingerprinted files, each image preloaded twice: every
    // lookup that is not the one load of its content is a hit.
    assert_eq!(num(team, "hits"), 2 * 21 + 2 * 20 - distinct, "{team}");
    assert_eq!(num(team, "verify_failures"), 0);
    let bytes: u64 = all.iter().map(|c| c.len() as u64).sum();
    assert_eq!(num(team, "bytes"), bytes);
    let refs: Vec<&[u8]> = all.iter().map(|c| c.as_slice()).collect();
    assert_entries_exact(store.path(), "team", &refs);
    let dom = store.path().join("v1/domains/team");
    assert!(list(&dom.join("tmp")).is_empty() && list(&dom.join("claims")).is_empty());
}

#[test]
fn test_killed_loader_leaves_no_partial_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let store = shm_tempdir();
    let big = content(7, 48 * MIB);
    make_tree(&tmp.path().join("t"), &[("big".to_string(), big.clone())]);
    let img = mkfs(
        &tmp.path().join("t"),
        &tmp.path().join("big.erofs"),
        &["--xattr-inode-digest"],
    );

    let pause_at = 16 * MIB;
    let mut loader = preload_cmd(store.path(), "d", &img, &[])
        .env(PAUSE_ENV, pause_at.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(loader.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "the loader ended before pausing"
        );
        if line.trim_end() == PAUSED_LINE {
            break;
        }
    }
    // Paused with 16 MiB written: a waiting loader queues behind it.
    let dom = store.path().join("v1/domains/d");
    let partial = dom.join("tmp").join(sha(&big).to_hex());
    assert_eq!(fs::metadata(&partial).unwrap().len(), pause_at as u64);
    assert!(list(&dom.join("objects")).is_empty());
    let successor = preload_cmd(store.path(), "d", &img, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loader.kill().unwrap();
    loader.wait().unwrap();

    let out = successor.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = &stat(store.path())["d"];
    assert_eq!((num(d, "entries"), num(d, "loads")), (1, 1), "{d}");
    assert_entries_exact(store.path(), "d", &[&big]);
    assert!(list(&dom.join("tmp")).is_empty() && list(&dom.join("claims")).is_empty());
}

#[test]
fn test_killed_loader_alone_leaves_a_usable_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = shm_tempdir();
    let big = content(8, 20 * MIB);
    make_tree(&tmp.path().join("t"), &[("big".to_string(), big.clone())]);
    let img = mkfs(
        &tmp.path().join("t"),
        &tmp.path().join("big.erofs"),
        &["-zlz4hc", "--xattr-inode-digest"],
    );
    let mut loader = preload_cmd(store.path(), "d", &img, &[])
        .env(PAUSE_ENV, (4 * MIB).to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = BufReader::new(loader.stderr.take().unwrap());
    assert!(
        err.lines().map_while(Result::ok).any(|l| l == PAUSED_LINE),
        "the loader ended before pausing"
    );
    loader.kill().unwrap();
    loader.wait().unwrap();

    // Nothing visible; the dead loader's reservation and partial file go
    // at the next recount (every open of the store recounts).
    let d = &stat(store.path())["d"];
    assert_eq!((num(d, "entries"), num(d, "loads")), (0, 0), "{d}");
    let s = Store::open(store.path(), StoreOptions::default()).unwrap();
    assert_eq!(s.usage().unwrap(), 0);
    let dom = store.path().join("v1/domains/d");
    assert!(list(&dom.join("tmp")).is_empty() && list(&dom.join("claims")).is_empty());
    assert!(s
        .get(&Domain::new("d").unwrap(), &sha(&big))
        .unwrap()
        .is_none());
    preload_ok(store.path(), "d", &img, &[]);
    assert_entries_exact(store.path(), "d", &[&big]);
}

#[test]
fn test_lying_image_is_caught_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = shm_tempdir();
    let mut victim = b"LYING-IMAGE-TEST-MARKER-0123456789".to_vec();
    victim.extend(content(9, 3 * 4096));
    let other = content(10, 5000);
    let t = tmp.path().join("t");
    make_tree(
        &t,
        &[
            ("victim".to_string(), victim.clone()),
            ("other".to_string(), other.clone()),
        ],
    );
    let honest = mkfs(
        &t,
        &tmp.path().join("honest.erofs"),
        &["--xattr-inode-digest"],
    );
    // The liar: same xattrs, one byte of the victim's data changed.
    let mut bytes = fs::read(&honest).unwrap();
    let marker = &victim[..34];
    let at: Vec<usize> = bytes
        .windows(marker.len())
        .enumerate()
        .filter(|(_, w)| *w == marker)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        at.len(),
        1,
        "the victim's data is stored once, uncompressed"
    );
    bytes[at[0] + 40] ^= 0xff;
    let liar = tmp.path().join("liar.erofs");
    fs::write(&liar, &bytes).unwrap();

    // The library sees the lie too: the claim is the honest digest, the
    // liar's content hashes differently.
    let limg = open_image(&liar);
    let x = FingerprintXattr::declared_by(&limg).unwrap();
    let inode = image_files(&limg)["/victim"].clone();
    assert_eq!(x.fingerprint(&limg, &inode), Some(sha(&victim)));
    let mut read =
        |off: u64, buf: &mut [u8]| limg.read(&inode, off, buf).map_err(std::io::Error::other);
    assert_ne!(
        share::hash_content(inode.size, &mut read).unwrap(),
        sha(&victim)
    );

    // Liar first: caught, counted, nothing stored for the victim.
    let out = preload_cmd(store.path(), "d", &liar, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1 failed verification"), "{err}");
    let d = &stat(store.path())["d"];
    assert_eq!(
        (
            num(d, "verify_failures"),
            num(d, "entries"),
            num(d, "loads")
        ),
        (1, 1, 1),
        "{d}"
    );
    assert_entries_exact(store.path(), "d", &[&other]);

    // The honest image then stores the true content, and the liar cannot
    // change it afterwards.
    preload_ok(store.path(), "d", &honest, &[]);
    preload_ok(store.path(), "d", &liar, &[]);
    assert_entries_exact(store.path(), "d", &[&other, &victim]);
    let d = &stat(store.path())["d"];
    assert_eq!((num(d, "verify_failures"), num(d, "loads")), (1, 2), "{d}");
}

#[test]
fn test_domains_never_share_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let store = shm_tempdir();
    let files: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| (format!("f{i}"), content(20 + i, 10_000 * (i as usize + 1))))
        .collect();
    make_tree(&tmp.path().join("t"), &files);
    let img = mkfs(
        &tmp.path().join("t"),
        &tmp.path().join("i.erofs"),
        &["--xattr-inode-digest"],
    );
    let odd = "team/x y";
    preload_ok(store.path(), "a", &img, &[]);
    preload_ok(store.path(), odd, &img, &[]);

    let st = stat(store.path());
    assert_eq!(st.keys().cloned().collect::<Vec<_>>(), ["a", odd]);
    for dom in ["a", odd] {
        let d = &st[dom];
        assert_eq!(
            (num(d, "entries"), num(d, "loads"), num(d, "hits")),
            (5, 5, 0)
        );
        let refs: Vec<&[u8]> = files.iter().map(|f| f.1.as_slice()).collect();
        assert_entries_exact(store.path(), dom, &refs);
    }
    // One copy per domain: separate files, not links of one another.
    use std::os::unix::fs::MetadataExt;
    let hex = sha(&files[0].1).to_hex();
    let ma = fs::metadata(objects_dir(store.path(), "a").join(&hex)).unwrap();
    let mb = fs::metadata(objects_dir(store.path(), odd).join(&hex)).unwrap();
    assert_ne!(ma.ino(), mb.ino());
    assert_eq!(ma.nlink(), 1);
}

#[test]
fn test_size_bound_evicts_unused_entries_never_one_in_use() {
    let tmp = tempfile::tempdir().unwrap();
    let store = shm_tempdir();
    let mk = |name: &str, seed: u64, n: usize| {
        let files: Vec<(String, Vec<u8>)> = (0..n)
            .map(|i| (format!("f{i}"), content(seed + i as u64, MIB)))
            .collect();
        make_tree(&tmp.path().join(name), &files);
        let img = mkfs(
            &tmp.path().join(name),
            &tmp.path().join(format!("{name}.erofs")),
            &["--xattr-inode-digest"],
        );
        (img, files.into_iter().map(|f| f.1).collect::<Vec<_>>())
    };
    let (ix, x) = mk("x", 100, 4);
    let (iy, y) = mk("y", 200, 4);
    let (iz, z) = mk("z", 300, 1);
    let limit = ["--store-size", "5M"];
    let d = Domain::new("d").unwrap();

    preload_ok(store.path(), "d", &ix, &limit);
    // This process holds x[0]; another process then needs room for y.
    let s = Store::open(store.path(), StoreOptions::default()).unwrap();
    let held = s.get(&d, &sha(&x[0])).unwrap().expect("x0 stored");
    preload_ok(store.path(), "d", &iy, &limit);
    let st = &stat(store.path())["d"];
    assert_eq!(
        (num(st, "entries"), num(st, "bytes"), num(st, "evictions")),
        (5, 5 * MIB as u64, 3),
        "{st}"
    );
    assert_entries_exact(store.path(), "d", &[&x[0], &y[0], &y[1], &y[2], &y[3]]);
    let mut b = vec![0u8; MIB];
    std::os::unix::fs::FileExt::read_exact_at(held.file(), &mut b, 0).unwrap();
    assert_eq!(b, x[0]);

    // Everything in use: z does not fit and nothing is evicted.
    let holds: Vec<_> = y
        .iter()
        .map(|c| s.get(&d, &sha(c)).unwrap().unwrap())
        .collect();
    let out = preload_cmd(store.path(), "d", &iz, &limit)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 did not fit"));
    let st = &stat(store.path())["d"];
    assert_eq!((num(st, "entries"), num(st, "evictions")), (5, 3), "{st}");

    // Released: z fits by evicting one unused entry.
    drop(holds);
    drop(held);
    preload_ok(store.path(), "d", &iz, &limit);
    let st = &stat(store.path())["d"];
    assert_eq!((num(st, "entries"), num(st, "evictions")), (5, 4), "{st}");
    assert!(objects_dir(store.path(), "d")
        .join(sha(&z[0]).to_hex())
        .exists());
    assert!(s.usage().unwrap() <= 5 * MIB as u64);
}

#[test]
fn test_store_stat_and_preload_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nothing-here");
    let out = run(&["store", "stat", "--store", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no content store"));

    make_tree(&tmp.path().join("t"), &[("f".to_string(), content(1, 10))]);
    let plain = mkfs(&tmp.path().join("t"), &tmp.path().join("p.erofs"), &[]);
    let store = shm_tempdir();
    let out = preload_cmd(store.path(), "d", &plain, &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("declares no fingerprint xattr"));

    let out = preload_cmd(store.path(), "", &plain, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "clap rejects an empty domain");
}
