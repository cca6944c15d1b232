//! Unit tests of the content store (one process, threads for concurrency).

use std::os::unix::fs::FileExt;
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use super::fingerprint::CHUNK;
use super::*;

fn content(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn fp_of(data: &[u8]) -> Fingerprint {
    Fingerprint::from_sha256(Sha256::digest(data).into())
}

fn reader(data: &[u8]) -> impl FnMut(u64, &mut [u8]) -> io::Result<usize> + '_ {
    move |off, buf| {
        let off = off as usize;
        let n = buf.len().min(data.len() - off);
        buf[..n].copy_from_slice(&data[off..off + n]);
        Ok(n)
    }
}

fn store(dir: &Path, limit: u64) -> Store {
    Store::open(dir, StoreOptions { size_limit: limit }).unwrap()
}

fn dom(name: &str) -> Domain {
    Domain::new(name).unwrap()
}

fn read_all(e: &Entry) -> Vec<u8> {
    let mut v = vec![0u8; e.len() as usize];
    e.file().read_exact_at(&mut v, 0).unwrap();
    v
}

fn stats_of(s: &Store, d: &str) -> DomainStats {
    s.stats()
        .unwrap()
        .into_iter()
        .find(|x| x.domain.as_str() == d)
        .expect("domain in stats")
}

fn count_files(dir: &Path) -> usize {
    fs::read_dir(dir).map(|it| it.count()).unwrap_or(0)
}

#[test]
fn test_store_load_then_get_same_content() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 30);
    let data = content(1, 3 * CHUNK / 2 + 17);
    let fp = fp_of(&data);
    let d = dom("a");

    let out = s
        .load(&d, &fp, data.len() as u64, &mut reader(&data))
        .unwrap();
    let LoadOutcome::Stored(e) = out else {
        panic!("expected Stored, got {out:?}");
    };
    assert_eq!(e.len(), data.len() as u64);
    assert_eq!(read_all(&e), data);
    let again = s.get(&d, &fp).unwrap().expect("stored entry");
    assert_eq!(read_all(&again), data);
    let out = s
        .load(&d, &fp, data.len() as u64, &mut |_, _| panic!("read again"))
        .unwrap();
    assert!(matches!(out, LoadOutcome::AlreadyStored(_)));

    let st = stats_of(&s, "a");
    assert_eq!((st.entries, st.bytes), (1, data.len() as u64));
    assert_eq!((st.counters.loads, st.counters.hits), (1, 2));
    assert_eq!(s.usage().unwrap(), data.len() as u64);
    let dd = s.domain_dir(&d);
    assert_eq!((count_files(&dd.tmp), count_files(&dd.claims)), (0, 0));
}

#[test]
fn test_store_mismatch_stores_nothing_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 30);
    let data = content(2, 5000);
    let claimed = fp_of(b"something else");
    let d = dom("a");

    let err = s
        .load(&d, &claimed, data.len() as u64, &mut reader(&data))
        .unwrap_err();
    match err {
        Error::Mismatch {
            fingerprint,
            actual,
            ..
        } => assert_eq!((fingerprint, actual), (claimed, fp_of(&data))),
        e => panic!("expected a mismatch, got {e}"),
    }
    assert!(s.get(&d, &claimed).unwrap().is_none());
    assert!(s.get(&d, &fp_of(&data)).unwrap().is_none());
    let st = stats_of(&s, "a");
    assert_eq!(
        (st.entries, st.counters.verify_failures, st.counters.loads),
        (0, 1, 0)
    );
    assert_eq!(s.usage().unwrap(), 0);
    assert_eq!(count_files(&s.domain_dir(&d).tmp), 0);
}

#[test]
fn test_store_source_error_or_short_content_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 30);
    let data = content(3, 1000);
    let fp = fp_of(&data);
    let d = dom("a");

    let err = s.load(&d, &fp, 2000, &mut reader(&data)).unwrap_err();
    assert!(matches!(err, Error::Source { offset: 1000, .. }), "{err}");
    let err = s
        .load(&d, &fp, 1000, &mut |_, _| {
            Err(io::Error::other("bad block"))
        })
        .unwrap_err();
    assert!(matches!(err, Error::Source { offset: 0, .. }), "{err}");
    assert!(s.get(&d, &fp).unwrap().is_none());
    assert_eq!(s.usage().unwrap(), 0);
    assert_eq!(stats_of(&s, "a").counters.verify_failures, 0);
}

#[test]
fn test_store_domains_never_share() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 30);
    let data = content(4, 100);
    let fp = fp_of(&data);

    s.load(&dom("a"), &fp, 100, &mut reader(&data)).unwrap();
    assert!(s.get(&dom("b"), &fp).unwrap().is_none());
    let out = s.load(&dom("b"), &fp, 100, &mut reader(&data)).unwrap();
    assert!(matches!(out, LoadOutcome::Stored(_)));
    assert_eq!(stats_of(&s, "a").counters.loads, 1);
    assert_eq!(stats_of(&s, "b").counters.loads, 1);
}

#[test]
fn test_store_second_loader_does_not_wait_or_load() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 30);
    let data = content(5, 3 * CHUNK);
    let fp = fp_of(&data);
    let d = dom("a");
    let (at_half_tx, at_half_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();

    std::thread::scope(|sc| {
        let (sr, dr, fpr, datar) = (&s, &d, &fp, &data);
        let first = sc.spawn(move || {
            let mut inner = reader(datar);
            let mut read = |off: u64, buf: &mut [u8]| {
                if off >= CHUNK as u64 && off < 2 * CHUNK as u64 {
                    at_half_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                }
                inner(off, buf)
            };
            sr.load(dr, fpr, datar.len() as u64, &mut read).unwrap()
        });
        at_half_rx.recv().unwrap();
        // The first loader is inside its load: nobody sees a partial entry,
        // and a second loader returns at once without reading.
        assert!(s.get(&d, &fp).unwrap().is_none());
        let second = s
            .load(&d, &fp, data.len() as u64, &mut |_, _| {
                panic!("second read")
            })
            .unwrap();
        assert!(matches!(second, LoadOutcome::InProgress), "{second:?}");
        go_tx.send(()).unwrap();
        assert!(matches!(first.join().unwrap(), LoadOutcome::Stored(_)));
    });
    assert_eq!(read_all(&s.get(&d, &fp).unwrap().unwrap()), data);
    assert_eq!(stats_of(&s, "a").counters.loads, 1);
}

#[test]
fn test_store_waiting_loader_gets_the_first_ones_entry() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 30);
    let data = content(6, 1000);
    let fp = fp_of(&data);
    let d = dom("a");
    let (in_tx, in_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();

    std::thread::scope(|sc| {
        let (sr, dr, fpr, datar) = (&s, &d, &fp, &data);
        let first = sc.spawn(move || {
            let mut inner = reader(datar);
            let mut read = |off: u64, buf: &mut [u8]| {
                in_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                inner(off, buf)
            };
            sr.load(dr, fpr, 1000, &mut read).unwrap()
        });
        in_rx.recv().unwrap();
        let second = sc.spawn(|| s.load_waiting(&d, &fp, 1000, &mut |_, _| panic!("read")));
        go_tx.send(()).unwrap();
        assert!(matches!(first.join().unwrap(), LoadOutcome::Stored(_)));
        let out = second.join().unwrap().unwrap();
        assert!(matches!(out, LoadOutcome::AlreadyStored(_)), "{out:?}");
    });
    assert_eq!(stats_of(&s, "a").counters.loads, 1);
}

#[test]
fn test_store_dead_loader_leftovers_are_replaced_and_swept() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 30);
    let data = content(7, 10_000);
    let fp = fp_of(&data);
    let d = dom("a");
    // What a loader killed mid-load leaves: an unlocked claim holding its
    // reservation, a partial file, and the reservation in the usage count.
    s.make_domain_dirs(&s.domain_dir(&d)).unwrap();
    let dd = s.domain_dir(&d);
    fs::write(dd.claims.join(fp.to_hex()), 10_000u64.to_le_bytes()).unwrap();
    fs::write(dd.tmp.join(fp.to_hex()), &data[..4000]).unwrap();
    s.lock_usage().unwrap().set(10_000).unwrap();

    assert!(s.get(&d, &fp).unwrap().is_none());
    assert_eq!(stats_of(&s, "a").entries, 0);
    s.reconcile().unwrap();
    assert_eq!(s.usage().unwrap(), 0);
    assert_eq!((count_files(&dd.tmp), count_files(&dd.claims)), (0, 0));

    // A leftover also does not stop the next loader.
    fs::write(dd.tmp.join(fp.to_hex()), &data[..4000]).unwrap();
    let out = s.load(&d, &fp, 10_000, &mut reader(&data)).unwrap();
    assert!(matches!(out, LoadOutcome::Stored(_)));
    assert_eq!(read_all(&s.get(&d, &fp).unwrap().unwrap()), data);
}

#[test]
fn test_store_evicts_least_recently_used_never_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 3000);
    let d = dom("a");
    let datas: Vec<Vec<u8>> = (0..5).map(|i| content(10 + i, 1000)).collect();
    let fps: Vec<Fingerprint> = datas.iter().map(|x| fp_of(x)).collect();
    let load = |i: usize| match s.load(&d, &fps[i], 1000, &mut reader(&datas[i])) {
        Ok(LoadOutcome::Stored(e)) => e,
        other => panic!("load {i}: {other:?}"),
    };
    let set_age = |i: usize, secs: u64| {
        let p = s.domain_dir(&d).objects.join(fps[i].to_hex());
        let f = File::open(p).unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs))
            .unwrap();
    };
    // 0 is the oldest but held; 1 and 2 are unused, 1 the older.
    let held = load(0);
    drop(load(1));
    drop(load(2));
    set_age(0, 100);
    set_age(1, 200);
    set_age(2, 300);

    let _e3 = load(3);
    assert!(
        s.get(&d, &fps[1]).unwrap().is_none(),
        "LRU unused entry evicted"
    );
    assert!(s.get(&d, &fps[0]).unwrap().is_some(), "held entry kept");
    assert_eq!(read_all(&held), datas[0]);
    let st = stats_of(&s, "a");
    assert_eq!((st.entries, st.bytes, st.counters.evictions), (3, 3000, 1));
    assert!(s.usage().unwrap() <= 3000);

    // Everything in use: nothing fits, nothing is evicted.
    let _e2 = s.get(&d, &fps[2]).unwrap().unwrap();
    let err = s
        .load(&d, &fps[4], 1000, &mut reader(&datas[4]))
        .unwrap_err();
    assert!(matches!(err, Error::Full { .. }), "{err}");
    assert_eq!(stats_of(&s, "a").entries, 3);
    assert!(s.usage().unwrap() <= 3000);
}

#[test]
fn test_store_content_larger_than_limit_is_full_and_evicts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 100);
    let small = content(19, 60);
    drop(
        s.load(&dom("a"), &fp_of(&small), 60, &mut reader(&small))
            .unwrap(),
    );
    let data = content(20, 101);
    let err = s
        .load(&dom("a"), &fp_of(&data), 101, &mut reader(&data))
        .unwrap_err();
    assert!(matches!(err, Error::Full { len: 101, .. }), "{err}");
    let st = stats_of(&s, "a");
    assert_eq!((st.entries, st.counters.evictions), (1, 0));
}

#[test]
fn test_store_and_entry_can_be_shared_between_threads() {
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Store>();
    is_send_sync::<Entry>();
}

#[test]
fn test_store_evicted_entry_opened_late_counts_as_absent() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 30);
    let data = content(21, 100);
    let fp = fp_of(&data);
    let d = dom("a");
    drop(s.load(&d, &fp, 100, &mut reader(&data)).unwrap());
    let path = s.domain_dir(&d).objects.join(fp.to_hex());
    {
        let _in_use = s.get(&d, &fp).unwrap().unwrap();
        assert!(!evict(&path).unwrap(), "in use");
    }
    // Opened before the eviction, locked after it.
    let late = File::open(&path).unwrap();
    assert!(evict(&path).unwrap());
    late.try_lock_shared().unwrap();
    assert_eq!(late.metadata().unwrap().nlink(), 0);
    assert!(s.get(&d, &fp).unwrap().is_none());
}

#[test]
fn test_store_entry_rw_descriptor_is_read_write() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 30);
    let data = content(22, 100);
    let fp = fp_of(&data);
    let LoadOutcome::Stored(e) = s.load(&dom("a"), &fp, 100, &mut reader(&data)).unwrap() else {
        panic!("not stored");
    };
    let flags = |f: &File| -> u32 {
        let info = fs::read_to_string(format!("/proc/self/fdinfo/{}", f.as_raw_fd())).unwrap();
        let v = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .unwrap()
            .trim();
        u32::from_str_radix(v, 8).unwrap() & 3
    };
    assert_eq!(flags(e.file()), 0, "O_RDONLY");
    let rw = e.open_rw().unwrap();
    assert_eq!(flags(&rw), 2, "O_RDWR");
    let mut b = vec![0u8; 100];
    rw.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(b, data);
}

#[test]
fn test_store_refuses_directories_others_can_write() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    fs::create_dir(&p).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o777)).unwrap();
    let err = Store::open(&p, StoreOptions::default()).unwrap_err();
    assert!(matches!(err, Error::UnsafeStore { .. }), "{err}");
    let f = dir.path().join("f");
    fs::write(&f, b"").unwrap();
    assert!(Store::open(&f, StoreOptions::default()).is_err());
}

#[test]
fn test_store_private_removed_on_drop_and_after_death() {
    let base = tempfile::tempdir().unwrap();
    let s = Store::private(base.path(), StoreOptions::default()).unwrap();
    let data = content(23, 100);
    s.load(&dom("img-1"), &fp_of(&data), 100, &mut reader(&data))
        .unwrap();
    let dir = s.root().parent().unwrap().to_path_buf();
    assert!(dir.is_dir());
    drop(s);
    assert!(!dir.exists());

    // A private store whose owner died (its owner file unlocked).
    let parent = dir.parent().unwrap();
    let dead = parent.join("1-0");
    fs::create_dir(&dead).unwrap();
    fs::write(dead.join("owner"), b"").unwrap();
    let s2 = Store::private(base.path(), StoreOptions::default()).unwrap();
    assert!(!dead.exists());
    drop(s2);
}

#[test]
fn test_unescape_mountinfo_octal() {
    assert_eq!(unescape_mountinfo(r"/mnt/a\040b"), "/mnt/a b");
    assert_eq!(unescape_mountinfo(r"/x\\y"), r"/x\\y");
    assert_eq!(unescape_mountinfo(r"/end\04"), r"/end\04");
}

#[test]
fn test_on_memory_fs_sees_dev_shm() {
    if Path::new("/dev/shm").is_dir() {
        assert!(on_memory_fs(Path::new("/dev/shm")));
    }
    assert!(!on_memory_fs(Path::new("/proc")));
}
