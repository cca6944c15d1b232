//! Serving from the content store: `mount` and serve-mode daemons with
//! `--domain` and `--store`, checked against the kernel's EROFS mounts and
//! the trees the images were made from.
//!
//! Needs mkfs.erofs 1.9 (`--xattr-inode-digest`): `$EROFS_MKFS_NEW`, else
//! `target/sid/bin/mkfs.erofs` as `scripts/sid-tools.sh erofs` installs it.
//! Needs root (FUSE and kernel mounts). Stores are made under /dev/shm.
//!
//! Loads run in the background: tests wait for them by polling `store
//! stat` (a condition, never a fixed sleep).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::frontend::{Frontend, FrontendOptions};
use common::fuse_client::{walk, FuseClient};
use common::fusemount::{wait_for, FuseMount};
use common::mkfs::{mixed_content as content, mkfs_19 as mkfs};
use common::{assert_manifests_eq, walk_manifest, KernelMount};
use erofs_virtiofsd::share::{Domain, Fingerprint};
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_erofs-virtiofsd");
const PAUSE_ENV: &str = "EROFS_VIRTIOFSD_TEST_PAUSE_LOAD_AFTER";
const PAUSED_LINE: &str = "erofs-virtiofsd: test: load paused";
const MIB: usize = 1 << 20;
/// How long background loads may take.
const LOADS: Duration = Duration::from_secs(60);

fn sha(data: &[u8]) -> Fingerprint {
    Fingerprint::from_sha256(Sha256::digest(data).into())
}

type Files = Vec<(String, Vec<u8>)>;

fn make_tree(dir: &Path, files: &Files) {
    fs::create_dir_all(dir).unwrap();
    for (name, data) in files {
        let p = dir.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
}

/// Two trees with 10 identical files (40% of each tree's files) and 15 of
/// their own each; returns them and the distinct non-empty contents.
fn pair(base: &Path) -> (PathBuf, PathBuf, Files, Files, usize) {
    let shared = [
        1,
        4095,
        4096,
        65_537,
        100_000,
        MIB,
        MIB + 7,
        3 * MIB,
        6 * MIB,
        200,
    ];
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (i, &n) in shared.iter().enumerate() {
        let c = content(100 + i as u64, n);
        a.push((format!("lib/s{i}"), c.clone()));
        b.push((format!("usr/x{i}"), c));
    }
    for i in 0..15u64 {
        a.push((
            format!("own/a{i}"),
            content(200 + i, 3000 + 50_000 * i as usize),
        ));
        b.push((
            format!("own/b{i}"),
            content(300 + i, 5000 + 61_000 * i as usize),
        ));
    }
    let (ta, tb) = (base.join("tree-a"), base.join("tree-b"));
    make_tree(&ta, &a);
    make_tree(&tb, &b);
    let distinct: BTreeSet<Fingerprint> = a.iter().chain(&b).map(|f| sha(&f.1)).collect();
    (ta, tb, a, b, distinct.len())
}

fn shm_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("store-serve-test")
        .tempdir_in("/dev/shm")
        .unwrap()
}

/// `store stat --json`, by domain (empty when there is no store).
fn stat(store: &Path) -> BTreeMap<String, serde_json::Value> {
    let out = Command::new(BIN)
        .args(["store", "stat", "--json", "--store"])
        .arg(store)
        .output()
        .unwrap();
    if !out.status.success() {
        return BTreeMap::new();
    }
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["domain"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

fn num(store: &Path, domain: &str, k: &str) -> u64 {
    stat(store)
        .get(domain)
        .and_then(|v| v[k].as_u64())
        .unwrap_or(0)
}

/// Waits until `domain`'s counter `k` reaches `want`; panics with the
/// stats otherwise.
#[track_caller]
fn wait_count(store: &Path, domain: &str, k: &str, want: u64) {
    let ok = wait_for(LOADS, || num(store, domain, k) >= want);
    assert!(ok, "{domain} {k} never reached {want}: {:?}", stat(store));
}

fn objects(store: &Path, domain: &str) -> PathBuf {
    let d = Domain::new(domain).unwrap();
    store.join("v1/domains").join(d.dir_name()).join("objects")
}

fn list(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|it| {
            it.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

/// Mounts `image` with `args` (the store's arguments among them).
fn mount(image: &Path, args: &[&str]) -> FuseMount {
    FuseMount::new(image, &[], args)
}

fn store_args<'a>(store: &'a Path, domain: &'a str) -> Vec<&'a str> {
    vec![
        "--domain",
        domain,
        "--store",
        store.to_str().unwrap(),
        "--log-level",
        "debug",
    ]
}

/// Reads every file of `files` under `root` and compares it with its
/// content.
#[track_caller]
fn read_all(root: &Path, files: &Files) {
    for (name, data) in files {
        let got = fs::read(root.join(name)).unwrap();
        assert!(got == *data, "{name} differs under {}", root.display());
    }
}

/// The summary counters a daemon logs when its share ends: (reads from
/// entries, passthrough opens, loads, verified, unshared).
fn summary(log: &str) -> (u64, u64, u64, u64, u64) {
    let line = log
        .lines()
        .rfind(|l| l.contains("content store: ") && l.contains("reads from entries"))
        .unwrap_or_else(|| panic!("no summary in the log:\n{log}"));
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1], nums[2], nums[3], nums[4])
}

#[test]
fn test_two_mounts_load_each_shared_content_once_and_read_like_the_kernel() {
    let tmp = tempfile::tempdir().unwrap();
    let store = shm_tempdir();
    let (ta, tb, fa, fb, distinct) = pair(tmp.path());
    // One image uncompressed, the other lz4hc.
    let ia = mkfs(&ta, &tmp.path().join("a.erofs"), &["--xattr-inode-digest"]);
    let ib = mkfs(
        &tb,
        &tmp.path().join("b.erofs"),
        &["-zlz4hc", "--xattr-inode-digest"],
    );
    let ka = KernelMount::new(&ia, &[]);
    let kb = KernelMount::new(&ib, &[]);
    let (want_a, want_b) = (walk_manifest(ka.path()), walk_manifest(kb.path()));

    let ma = mount(&ia, &store_args(store.path(), "team"));
    let mb = mount(&ib, &store_args(store.path(), "team"));
    read_all(ma.path(), &fa);
    read_all(mb.path(), &fb);
    wait_count(store.path(), "team", "loads", distinct as u64);
    // Every file is read again (now from the entries, or passthrough) and
    // the whole trees compared with the kernel's.
    for _ in 0..2 {
        read_all(ma.path(), &fa);
        read_all(mb.path(), &fb);
    }
    assert_manifests_eq("a through the store", &want_a, &walk_manifest(ma.path()));
    assert_manifests_eq("b through the store", &want_b, &walk_manifest(mb.path()));
    let st = &stat(store.path())["team"];
    assert_eq!(st["loads"].as_u64(), Some(distinct as u64), "{st}");
    assert_eq!(st["entries"].as_u64(), Some(distinct as u64), "{st}");
    assert_eq!(st["verify_failures"].as_u64(), Some(0), "{st}");
    // Each process counts its own loads: together, each content once.
    let (_, _, loads_a, _, _) = summary(&ma.finish_with_log("a"));
    let (_, _, loads_b, _, _) = summary(&mb.finish_with_log("b"));
    assert_eq!(loads_a + loads_b, distinct as u64);
}

#[test]
fn test_passthrough_serves_stored_files_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let store = shm_tempdir();
    let (ta, _, fa, _, _) = pair(tmp.path());
    let ia = mkfs(&ta, &tmp.path().join("a.erofs"), &["--xattr-inode-digest"]);
    let distinct: BTreeSet<_> = fa.iter().map(|f| sha(&f.1)).collect();
    let m = mount(&ia, &store_args(store.path(), "p"));
    read_all(m.path(), &fa);
    wait_count(store.path(), "p", "loads", distinct.len() as u64);
    // Every content was loaded by this process (so verified): each open
    // now gets its entry as the backing file, and no READ reaches us.
    read_all(m.path(), &fa);
    let (_, opens, loads, _, _) = summary(&m.finish_with_log("passthrough"));
    assert_eq!(loads, distinct.len() as u64);
    assert!(opens >= fa.len() as u64, "{opens} passthrough opens");

    // --passthrough off (and no page cache): READs answered from entries.
    let m = mount(
        &ia,
        &[
            store_args(store.path(), "p"),
            vec!["--passthrough", "off", "--cache", "never"],
        ]
        .concat(),
    );
    // Each file is checked against the entry (in the background) before
    // it is served from it.
    let checked = wait_for(LOADS, || {
        read_all(m.path(), &fa);
        m.stderr_text()
            .matches("verified against the stored")
            .count()
            >= distinct.len()
    });
    assert!(checked, "not all verified: {}", m.stderr_text());
    read_all(m.path(), &fa);
    let (entry_reads, opens, loads, verified, unshared) =
        summary(&m.finish_with_log("no passthrough"));
    assert_eq!((opens, loads, unshared), (0, 0, 0));
    assert_eq!(verified, distinct.len() as u64);
    assert!(entry_reads >= fa.len() as u64, "{entry_reads}");
}

#[test]
fn test_domains_never_share_and_no_domain_touches_no_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = shm_tempdir();
    let (ta, _, fa, _, _) = pair(tmp.path());
    let ia = mkfs(&ta, &tmp.path().join("a.erofs"), &["--xattr-inode-digest"]);
    let n = fa.len() as u64;
    let m1 = mount(&ia, &store_args(store.path(), "x"));
    let m2 = mount(&ia, &store_args(store.path(), "y"));
    read_all(m1.path(), &fa);
    read_all(m2.path(), &fa);
    wait_count(store.path(), "x", "loads", n);
    wait_count(store.path(), "y", "loads", n);
    read_all(m1.path(), &fa);
    read_all(m2.path(), &fa);
    let st = stat(store.path());
    assert_eq!(st.keys().cloned().collect::<Vec<_>>(), ["x", "y"]);
    for d in ["x", "y"] {
        assert_eq!(st[d]["loads"].as_u64(), Some(n), "{}", st[d]);
    }
    // Separate copies, never links of one another.
    use std::os::unix::fs::MetadataExt;
    let hex = sha(&fa[0].1).to_hex();
    let ix = fs::metadata(objects(store.path(), "x").join(&hex)).unwrap();
    let iy = fs::metadata(objects(store.path(), "y").join(&hex)).unwrap();
    assert_ne!(ix.ino(), iy.ino());
    m1.finish("x");
    m2.finish("y");

    // No domain: the store directory is never made, even when named.
    let untouched = tmp.path().join("never-made");
    let m = mount(
        &ia,
        &[
            "--store",
            untouched.to_str().unwrap(),
            "--log-level",
            "debug",
        ],
    );
    read_all(m.path(), &fa);
    read_all(m.path(), &fa);
    let log = m.finish_with_log("no domain");
    assert!(!untouched.exists(), "the store was made");
    assert!(!log.contains("content store"), "{log}");
}

/// An honest image and a liar: same xattrs, one byte of `victim` changed.
fn honest_and_liar(base: &Path) -> (PathBuf, PathBuf, Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut victim = b"LYING-IMAGE-TEST-MARKER-0123456789".to_vec();
    victim.extend(content(9, 5 * 4096));
    let other = content(10, 5000);
    let t = base.join("t");
    make_tree(
        &t,
        &vec![
            ("victim".to_string(), victim.clone()),
            ("other".to_string(), other.clone()),
        ],
    );
    let honest = mkfs(&t, &base.join("honest.erofs"), &["--xattr-inode-digest"]);
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
    let mut lie = victim.clone();
    lie[40] ^= 0xff;
    let liar = base.join("liar.erofs");
    fs::write(&liar, &bytes).unwrap();
    (honest, liar, victim, lie, other)
}

#[test]
fn test_lying_image_reads_its_own_content_and_changes_nobody_elses() {
    let tmp = tempfile::tempdir().unwrap();
    let store = shm_tempdir();
    let (honest, liar, victim, lie, other) = honest_and_liar(tmp.path());
    let s = store.path();

    // The liar first: its load fails verification; it reads its own bytes.
    let ml = mount(&liar, &store_args(s, "d"));
    assert_eq!(fs::read(ml.path().join("victim")).unwrap(), lie);
    assert_eq!(fs::read(ml.path().join("other")).unwrap(), other);
    wait_count(s, "d", "verify_failures", 1);
    wait_count(s, "d", "loads", 1);
    assert_eq!(fs::read(ml.path().join("victim")).unwrap(), lie);

    // The honest image stores the true content and reads it.
    let mh = mount(&honest, &store_args(s, "d"));
    assert_eq!(fs::read(mh.path().join("victim")).unwrap(), victim);
    wait_count(s, "d", "loads", 2);
    assert_eq!(list(&objects(s, "d")).len(), 2);
    assert_eq!(
        fs::read(objects(s, "d").join(sha(&victim).to_hex())).unwrap(),
        victim
    );

    // A new liar process finds the entry, checks its own content before
    // using it, and keeps reading its own bytes; the honest mount too.
    let ml2 = mount(&liar, &store_args(s, "d"));
    let caught = wait_for(LOADS, || {
        assert_eq!(fs::read(ml2.path().join("victim")).unwrap(), lie);
        num(s, "d", "verify_failures") >= 2
    });
    assert!(caught, "{:?}", stat(s));
    for _ in 0..3 {
        assert_eq!(fs::read(ml2.path().join("victim")).unwrap(), lie);
        assert_eq!(fs::read(ml.path().join("victim")).unwrap(), lie);
        assert_eq!(fs::read(mh.path().join("victim")).unwrap(), victim);
    }
    let (_, _, _, _, unshared) = summary(&ml2.finish_with_log("liar 2"));
    assert_eq!(unshared, 1);
    let log = ml.finish_with_log("liar");
    assert!(log.contains("served unshared"), "{log}");
    mh.finish("honest");
    // Each lie counted once per process that met it.
    assert_eq!(num(s, "d", "verify_failures"), 2);
}

/// A small xorshift generator (deterministic per seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn test_eight_readers_over_two_processes_read_random_ranges_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let store = shm_tempdir();
    let (ta, tb, fa, fb, _) = pair(tmp.path());
    let ia = mkfs(&ta, &tmp.path().join("a.erofs"), &["--xattr-inode-digest"]);
    let ib = mkfs(
        &tb,
        &tmp.path().join("b.erofs"),
        &["-zlz4hc", "--xattr-inode-digest"],
    );
    let ma = mount(&ia, &store_args(store.path(), "r"));
    let mb = mount(&ib, &store_args(store.path(), "r"));
    std::thread::scope(|sc| {
        for t in 0..8u64 {
            let (root, files) = if t % 2 == 0 {
                (ma.path(), &fa)
            } else {
                (mb.path(), &fb)
            };
            sc.spawn(move || {
                let mut rng = Rng(0x1234_5678 + t * 7919);
                for _ in 0..400 {
                    let (name, data) = &files[(rng.next() % files.len() as u64) as usize];
                    let off = rng.next() % data.len() as u64;
                    let len = 1 + (rng.next() % (256 << 10)) as usize;
                    let f = fs::File::open(root.join(name)).unwrap();
                    let mut buf = vec![0u8; len];
                    let mut got = 0;
                    while got < len {
                        let n = f.read_at(&mut buf[got..], off + got as u64).unwrap();
                        if n == 0 {
                            break;
                        }
                        got += n;
                    }
                    let end = (off as usize + len).min(data.len());
                    assert!(
                        buf[..got] == data[off as usize..end],
                        "{name} at {off}+{len} differs (reader {t})"
                    );
                }
            });
        }
    });
    ma.finish("a");
    mb.finish("b");
    assert_eq!(num(store.path(), "r", "verify_failures"), 0);
}

#[test]
fn test_loader_killed_mid_load_leaves_a_usable_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = shm_tempdir();
    let big = content(7, 48 * MIB);
    let t = tmp.path().join("t");
    make_tree(&t, &vec![("big".to_string(), big.clone())]);
    let img = mkfs(&t, &tmp.path().join("big.erofs"), &["--xattr-inode-digest"]);

    // A mount whose loader pauses for good 16 MiB into the file.
    let dir = tempfile::tempdir().unwrap();
    let err_path = dir.path().join("stderr");
    let mnt = dir.path().join("m");
    fs::create_dir_all(&mnt).unwrap();
    let mut child = Command::new(BIN)
        .arg("mount")
        .arg(&img)
        .arg(dir.path().join("m"))
        .arg("--foreground")
        .args(store_args(store.path(), "k"))
        .env(PAUSE_ENV, (16 * MIB).to_string())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    assert!(wait_for(LOADS, || common::fusemount::is_mounted(&mnt)));
    let mut f = fs::File::open(mnt.join("big")).unwrap();
    let mut first = vec![0u8; 4096];
    f.read_exact(&mut first).unwrap();
    assert!(wait_for(LOADS, || fs::read_to_string(&err_path)
        .unwrap_or_default()
        .contains(PAUSED_LINE)));
    // The load is stuck: the whole file still reads, from the image.
    let mut all = first;
    f.read_to_end(&mut all).unwrap();
    assert!(all == big, "read while the load is stuck differs");
    drop(f);
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = Command::new("umount").arg("-l").arg(&mnt).status();
    let st = stat(store.path());
    assert_eq!(st.get("k").and_then(|v| v["entries"].as_u64()), Some(0));

    // A new mount loads it and serves it. (The killed mount's sandboxed
    // child may hold its claim a moment longer; a claim found taken is
    // looked at again at the file's next read, so read until it loads.)
    let m = mount(&img, &store_args(store.path(), "k"));
    assert!(fs::read(m.path().join("big")).unwrap() == big);
    let loaded = wait_for(LOADS, || {
        assert!(fs::read(m.path().join("big")).unwrap() == big);
        num(store.path(), "k", "loads") >= 1
    });
    assert!(loaded, "never loaded: {:?}", stat(store.path()));
    assert!(fs::read(m.path().join("big")).unwrap() == big);
    m.finish("after the kill");
    let hex = sha(&big).to_hex();
    assert_eq!(
        list(&objects(store.path(), "k")),
        BTreeSet::from([hex.clone()])
    );
    assert!(fs::read(objects(store.path(), "k").join(&hex)).unwrap() == big);
    let dom = store.path().join("v1/domains/k");
    assert!(list(&dom.join("tmp")).is_empty(), "partial files left");
}

#[test]
fn test_vhost_daemon_serves_stored_content() {
    let tmp = tempfile::tempdir().unwrap();
    let store = shm_tempdir();
    let (ta, _, fa, _, _) = pair(tmp.path());
    let ia = mkfs(
        &ta,
        &tmp.path().join("a.erofs"),
        &["-zlz4hc", "--xattr-inode-digest"],
    );
    let want = walk_manifest(KernelMount::new(&ia, &[]).path());
    let d = common::daemon::Daemon::start(
        &ia,
        &[
            "--domain",
            "v",
            "--store",
            store.path().to_str().unwrap(),
            "--once",
        ],
    );
    let mut c = FuseClient::new(Frontend::connect(&d.socket, &FrontendOptions::default()));
    c.init();
    assert_manifests_eq("vhost, first walk", &want, &walk(&mut c));
    wait_count(store.path(), "v", "loads", fa.len() as u64);
    assert_manifests_eq("vhost, from the store", &want, &walk(&mut c));
    drop(c);
    let mut d = d;
    assert!(d
        .wait_exit(Duration::from_secs(20))
        .is_some_and(|s| s.success()));
    let (entry_reads, opens, loads, _, _) = summary(&d.log());
    assert_eq!((opens, loads), (0, fa.len() as u64));
    assert!(entry_reads > 0, "{}", d.log());
}
