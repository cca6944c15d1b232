//! Real guests with a DAX window: QEMU 11.1 from Debian unstable
//! (`scripts/sid-tools.sh qemu`, unpacked and cached, nothing installed;
//! `$EROFS_DAX_QEMU` names another binary) boots the test guest of
//! `vm-images/` (TCG) with the daemon behind `vhost-user-test-device-pci`
//! (see docs/dax.md), the share mounted `-o dax=always`.
//!
//! - `test_guest_dax_walk_*`: the guest walks plain, LZ4, zstd tail-packed
//!   and fragment images served by name (evfs-walk: SHA-256 of every file),
//!   equal to the kernel's manifests; the daemon's counters show the data
//!   came through SETUPMAPPING and not one FUSE_READ of a regular file.
//! - `test_guest_dax_write_through_window`: a guest writes into its window
//!   with busybox `devmem`, sees its write, drops its caches and reads the
//!   true content again (the daemon found the store's mapped copy changed
//!   and replaced it); then a second guest of the same domain and one of
//!   another domain read the true content. The image has fingerprints
//!   (mkfs.erofs 1.9 from `scripts/sid-tools.sh erofs`) and a domain, so
//!   the guests map the content store's mapped copies.
//!
//! Needs root and, the first time, Debian's archive (as `tests/guest.rs`).
//! One guest at a time.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::fixture_image;
use common::manifest::{parse_jsonl, subtree};
use common::{assert_manifests_eq, load_expected};
use sha2::{Digest, Sha256};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One guest at a time; the guest image built and QEMU fetched once.
fn guest_lock() -> (std::sync::MutexGuard<'static, ()>, &'static Path) {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    static QEMU: OnceLock<PathBuf> = OnceLock::new();
    let qemu = QEMU.get_or_init(|| {
        let out = Command::new(repo().join("vm-images/build.sh"))
            .output()
            .expect("run vm-images/build.sh");
        assert!(
            out.status.success(),
            "vm-images/build.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(q) = std::env::var_os("EROFS_DAX_QEMU") {
            return PathBuf::from(q);
        }
        let out = Command::new(repo().join("scripts/sid-tools.sh"))
            .args(["--quiet", "qemu"])
            .output()
            .expect("run scripts/sid-tools.sh");
        let text = String::from_utf8_lossy(&out.stdout);
        let path = text
            .lines()
            .find_map(|l| l.strip_prefix("QEMU_SYSTEM_X86_64="))
            .unwrap_or_else(|| {
                panic!(
                    "scripts/sid-tools.sh qemu failed ({}):\n{text}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        PathBuf::from(path)
    });
    (guard, qemu)
}

/// The daemon; killed (and reaped) on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(args: &[String], sock: &Path, log: &Path) -> Daemon {
        let log_file = std::fs::File::create(log).expect("daemon log");
        let child = Command::new(env!("CARGO_BIN_EXE_erofs-virtiofsd"))
            .arg("--socket-path")
            .arg(sock)
            .args(["--tag", "myfs"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("daemon log"))
            .stderr(log_file)
            .spawn()
            .expect("start erofs-virtiofsd");
        let mut d = Daemon {
            child,
            log: log.to_path_buf(),
        };
        d.wait_log("Waiting for vhost-user socket connection...", 1);
        d
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (polling with a deadline; the daemon's exit ends it at once)
    /// until `line` is in the log `n` times.
    fn wait_log(&mut self, line: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.log_text().matches(line).count() < n {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the daemon exited ({status}):\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "no {line:?} in the daemon's log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The counters of the `n`-th connection to end (1-based).
    fn dax_counts(&mut self, n: usize) -> DaxCounts {
        // The n-th whole line: the daemon may still be writing the last one.
        let nth_whole = |text: &str| {
            text.split_inclusive('\n')
                .filter(|l| l.ends_with('\n') && l.contains("connection ended; dax:"))
                .nth(n - 1)
                .map(|l| l.trim_end().to_string())
        };
        self.wait_log("connection ended; dax:", n);
        let deadline = Instant::now() + Duration::from_secs(10);
        let line = loop {
            if let Some(l) = nth_whole(&self.log_text()) {
                break l;
            }
            assert!(
                Instant::now() < deadline,
                "line {n} never ended:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let field = |name: &str| -> u64 {
            let key = format!("{name}=");
            let at = line.find(&key).unwrap_or_else(|| panic!("{line}")) + key.len();
            line[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        DaxCounts {
            setups: field("setups"),
            replaced: field("replaced"),
            refused: field("refused"),
            file_reads: field("file_reads"),
            shared: field("shared"),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct DaxCounts {
    setups: u64,
    replaced: u64,
    refused: u64,
    file_reads: u64,
    shared: u64,
}

/// Boots a guest with the share behind the DAX device, mounted
/// `dax=always`, running `cmd_args` (run.sh's); returns its output.
fn boot(qemu: &Path, sock: &Path, work: &Path, cmd_args: &[&str], d: &Daemon) -> String {
    let console = work.join("console.log");
    let out = Command::new(repo().join("vm-images/run.sh"))
        .args(["--no-build", "--dax-device", "-o", "dax=always"])
        .arg("--qemu")
        .arg(qemu)
        .args(["--timeout", "900", "-s"])
        .arg(sock)
        .arg("--log")
        .arg(&console)
        .args(cmd_args)
        .stdin(Stdio::null())
        .output()
        .expect("run vm-images/run.sh");
    let console_text = std::fs::read_to_string(&console).unwrap_or_default();
    let tail = |t: &str| {
        let l: Vec<&str> = t.lines().collect();
        l[l.len().saturating_sub(40)..].join("\n")
    };
    assert!(
        out.status.success(),
        "the guest failed ({}); stderr:\n{}\nconsole (tail):\n{}\ndaemon log (tail):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        tail(&console_text),
        tail(&d.log_text())
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The fixtures walked through the window, served by name in one guest.
const WALKED: [(&str, &str); 4] = [
    ("plain", "edge_plain-b4096"),
    ("lz4", "edge_lz4"),
    ("zstd", "usr_zstd15-ztailpack"),
    ("frag", "edge_lz4hc-fragments"),
];

#[test]
fn test_guest_dax_walk_plain_lz4_zstd_fragments() {
    let (_guard, qemu) = guest_lock();
    let work = tempfile::Builder::new()
        .prefix("evfs-dax-")
        .tempdir()
        .unwrap();
    let sock = work.path().join("vfs.sock");
    let mut args = vec!["--dax-window".to_string(), "256M".to_string()];
    for (n, f) in WALKED {
        let fx = fixture_image(f);
        assert!(fx.devices().is_empty(), "{f} has blob devices");
        args.push("--image".into());
        args.push(format!("{n}={}", fx.image.display()));
    }
    let mut d = Daemon::start(&args, &sock, &work.path().join("daemon.log"));
    let started = Instant::now();
    let walk = boot(qemu, &sock, work.path(), &["-c", "walk"], &d);
    eprintln!("DAX walk: {:.1} s", started.elapsed().as_secs_f64());
    let walk_file = work.path().join("walk.txt");
    std::fs::write(&walk_file, walk).unwrap();
    let conv = Command::new(repo().join("vm-images/walk2manifest.py"))
        .arg(&walk_file)
        .output()
        .expect("run walk2manifest.py");
    assert!(
        conv.status.success(),
        "{}",
        String::from_utf8_lossy(&conv.stderr)
    );
    let guest = parse_jsonl(&String::from_utf8(conv.stdout).unwrap(), "DAX walk");
    for (n, f) in WALKED {
        assert_manifests_eq(
            &format!("/{n} walked through the DAX window vs the kernel's manifest of {f}"),
            &load_expected(f),
            &subtree(&guest, n.as_bytes()),
        );
    }
    let c = d.dax_counts(1);
    assert!(c.setups > 100, "{c:?}");
    assert_eq!(c.file_reads, 0, "file data read with FUSE_READ: {c:?}");
    assert_eq!((c.refused, c.replaced), (0, 0), "{c:?}");
    // QEMU 11.1 acks SHMEM_MAP before it commits the new layout, then shows
    // the mapping in the memory table (ADD_MEM_REG): each SETUPMAPPING
    // reply waited for that. Had QEMU not shown them, the daemon would
    // have said so (and answered at once, racing the guest's first read).
    let log = d.log_text();
    assert!(
        !log.contains("does not show window mappings")
            && !log.contains("did not show in the memory table"),
        "maps did not wait for QEMU's memory table:\n{log}"
    );
}

/// An image with fingerprints (mkfs.erofs 1.9 `--xattr-inode-digest`) of
/// a tree with one file, in `work`: the image, the file's path, its
/// SHA-256, and the SHA-256 of its bytes with the first four made `ABCD`
/// (what the writer guest writes through its window).
fn target_image(work: &Path) -> (PathBuf, &'static str, String, String) {
    let out = Command::new(repo().join("scripts/sid-tools.sh"))
        .args(["--quiet", "erofs"])
        .output()
        .expect("run scripts/sid-tools.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    let mkfs = text
        .lines()
        .find_map(|l| l.strip_prefix("MKFS_EROFS="))
        .unwrap_or_else(|| panic!("scripts/sid-tools.sh erofs failed:\n{text}"));
    let tree = work.join("tree");
    std::fs::create_dir_all(tree.join("files")).unwrap();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..3 * 4096 + 100)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let path = "/files/rand";
    std::fs::write(tree.join("files/rand"), &data).unwrap();
    let image = work.join("target.erofs");
    let out = Command::new(mkfs)
        .args(["--quiet", "--xattr-inode-digest"])
        .arg(&image)
        .arg(&tree)
        .output()
        .expect("run mkfs.erofs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hex = |d: &[u8]| -> String {
        Sha256::digest(d)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let mut written = data.clone();
    written[..4].copy_from_slice(b"ABCD");
    (image, path, hex(&data), hex(&written))
}

#[test]
fn test_guest_dax_write_through_window() {
    let (_guard, qemu) = guest_lock();
    let work = tempfile::Builder::new()
        .prefix("evfs-dax-")
        .tempdir()
        .unwrap();
    let (image, path, sha, sha_written) = target_image(work.path());
    let store = tempfile::Builder::new()
        .prefix("evfs-dax-store-")
        .tempdir_in(common::dax::store_base())
        .unwrap();
    let args = |domain: &str| {
        vec![
            "--dax-window".to_string(),
            "16M".to_string(),
            "--domain".to_string(),
            domain.to_string(),
            "--store".to_string(),
            store.path().display().to_string(),
            "--image".to_string(),
            image.display().to_string(),
        ]
    };
    // The window's guest-physical address is in the kernel's log; the
    // file's first range is the first one the guest maps: at offset 0.
    let writer = work.path().join("writer.sh");
    std::fs::write(
        &writer,
        format!(
            "f=/mnt{path}\n\
             b=$(dmesg|sed -n 's/.*len: 0x[0-9a-f]* @ \\(0x[0-9a-f]*\\).*/\\1/p'|head -n1)\n\
             [ -n \"$b\" ] || {{ dmesg|grep -i -e virtio -e dax; exit 3; }}\n\
             echo before=$(sha256sum<$f|cut -c1-64)\n\
             devmem $b 32 0x44434241\n\
             echo mapped=$(head -c4 $f)\n\
             echo 3 >/proc/sys/vm/drop_caches\n\
             echo after=$(sha256sum<$f|cut -c1-64)\n"
        ),
    )
    .unwrap();
    let reader = work.path().join("reader.sh");
    std::fs::write(
        &reader,
        format!("echo after=$(sha256sum</mnt{path}|cut -c1-64)\n"),
    )
    .unwrap();
    let script = |p: &Path| vec!["--script-file".to_string(), p.display().to_string()];

    let sock = work.path().join("a.sock");
    let mut d = Daemon::start(&args("tenant-a"), &sock, &work.path().join("a.log"));
    // `iomem=relaxed`: Debian's kernel keeps /dev/mem away from ranges a
    // driver claimed (the window) unless told otherwise; root can.
    let mut w = script(&writer);
    w.extend(["--append".to_string(), "iomem=relaxed".to_string()]);
    let out = boot(
        qemu,
        &sock,
        work.path(),
        &w.iter().map(String::as_str).collect::<Vec<_>>(),
        &d,
    );
    let line = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
            .to_string()
    };
    assert_eq!(line("before="), sha, "{out}");
    assert_eq!(line("mapped="), "ABCD", "the guest sees its own write");
    // Whether drop_caches unmaps the file is the guest kernel's choice:
    // 6.1 evicts the inode and so removes its mapping, and the next read
    // maps the range again, which the daemon must find changed; 7.2 sends
    // neither REMOVEMAPPING nor a second SETUPMAPPING (it keeps the file's
    // mapping), so the guest still sees its own write and the next
    // mapping is the second guest's below.
    let after = line("after=");
    let c = d.dax_counts(1);
    let kept = after != sha;
    if kept {
        assert_eq!(after, sha_written, "neither the true content nor the write");
        assert_eq!((c.setups, c.replaced), (1, 0), "{c:?}");
        assert!(c.shared >= 1, "the store's mapped copy: {c:?}");
    } else {
        assert_eq!(c.replaced, 1, "{c:?}");
        assert!(c.shared >= 2, "the store's mapped copies: {c:?}");
    }
    assert_eq!(c.file_reads, 0, "{c:?}");

    // A second guest of the same domain (the same daemon), and one of
    // another domain (a daemon of its own), read the true content.
    let r = script(&reader);
    let r: Vec<&str> = r.iter().map(String::as_str).collect();
    let out = boot(qemu, &sock, work.path(), &r, &d);
    assert!(out.contains(&format!("after={sha}")), "{out}");
    let c = d.dax_counts(2);
    // The write the first guest left mapped is found at this mapping.
    assert_eq!(c.replaced, u64::from(kept), "{c:?}");
    assert!(c.shared >= 1, "{c:?}");
    let sock_b = work.path().join("b.sock");
    let mut other = Daemon::start(&args("tenant-b"), &sock_b, &work.path().join("b.log"));
    let out = boot(qemu, &sock_b, work.path(), &r, &other);
    assert!(out.contains(&format!("after={sha}")), "{out}");
    let c = other.dax_counts(1);
    assert!(c.setups > 0 && c.shared >= 1, "{c:?}");
}
