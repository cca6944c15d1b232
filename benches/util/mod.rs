//! Helpers shared by the benchmarks: kernel unmounts, a read-counting
//! source, child commands, and where the fixtures and the machine are.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use erofs_virtiofsd::source::Source;

/// Benchmark results: errors are messages for the operator.
pub type Res<T> = Result<T, String>;

/// `p` as a C string for mount(2) and friends.
pub fn cstr(p: &Path) -> Res<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("NUL in path {}", p.display()))
}

/// Unmounts `dir`.
pub fn umount(dir: &Path) -> Res<()> {
    let tgt = cstr(dir)?;
    erofs_virtiofsd::os::mount::umount(&tgt, false)
        .map_err(|e| format!("umount {}: {e}", dir.display()))
}

/// A source that counts and logs every read of the one it wraps.
pub struct Counting {
    inner: Arc<dyn Source>,
    calls: AtomicU64,
    bytes: AtomicU64,
    log: Mutex<Vec<(u64, usize)>>,
}

impl std::fmt::Debug for Counting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counting")
            .field("calls", &self.calls())
            .finish()
    }
}

impl Counting {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Source>) -> Self {
        Counting {
            inner,
            calls: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
        }
    }

    /// `read_at` calls so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// "N reads, B bytes, D distinct (offset, length); most common: ..."
    /// with the `top` most common lengths, `reads` naming the calls.
    pub fn report(&self, reads: &str, top: usize) -> String {
        let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
        let distinct: BTreeSet<_> = log.iter().copied().collect();
        let mut by_len = BTreeMap::<usize, u64>::new();
        for (_, l) in &log {
            *by_len.entry(*l).or_default() += 1;
        }
        let mut common: Vec<_> = by_len.into_iter().collect();
        common.sort_by_key(|e| std::cmp::Reverse(e.1));
        let common: Vec<String> = common
            .iter()
            .take(top)
            .map(|(l, n)| format!("{n} x {l} B"))
            .collect();
        format!(
            "{} {reads}, {} bytes, {} distinct (offset, length); most common: {}",
            self.calls(),
            self.bytes.load(Ordering::Relaxed),
            distinct.len(),
            common.join(", ")
        )
    }
}

impl Source for Counting {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        if let Ok(mut l) = self.log.lock() {
            l.push((offset, buf.len()));
        }
        self.inner.read_at(buf, offset)
    }

    fn size(&self) -> u64 {
        self.inner.size()
    }
}

/// Runs `cmd`, failing with its stderr unless it succeeds; its stdout.
pub fn run_cmd(cmd: &mut Command, what: &str) -> Res<Vec<u8>> {
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

#[path = "../../tests/common/fixture_dir.rs"]
mod fixture_dir;
/// `$EROFS_FIXTURES`, else the repository's `tests/fixtures` (built by
/// `scripts/fixtures.sh`).
pub use fixture_dir::fixtures_dir;

/// Distribution, kernel, cores and CPU model.
pub fn machine() -> String {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let os = fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("PRETTY_NAME=")
                .map(|s| s.trim_matches('"').to_string())
        })
        .unwrap_or_default();
    format!("{os}, kernel {}, {cores} cores ({cpu})", kernel.trim())
}
