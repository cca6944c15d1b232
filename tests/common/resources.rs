//! What a daemon holds while it runs (resident memory, open descriptors,
//! threads), summed over its processes (the sandbox's supervisor and the
//! server), sampled over a soak to show that nothing grows.

use std::fs;
use std::time::Instant;

/// One look at a set of processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Resident set, KiB (VmRSS).
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// Threads.
    pub threads: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        self.rss_kib += o.rss_kib;
        self.fds += o.fds;
        self.threads += o.threads;
    }
}

/// `pid`'s usage (zero for what cannot be read: a process that is gone).
fn one(pid: u32) -> Usage {
    let mut u = Usage::default();
    if let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) {
        for line in status.lines() {
            let value = |l: &str| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            if line.starts_with("VmRSS:") {
                u.rss_kib = value(line);
            } else if line.starts_with("Threads:") {
                u.threads = value(line);
            }
        }
    }
    if let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) {
        u.fds = fds.count() as u64;
    }
    u
}

/// The usage of `pid` and all its descendants.
pub fn usage(pid: u32) -> Usage {
    let mut total = Usage::default();
    for p in super::procs::tree(pid) {
        total += one(p);
    }
    total
}

/// Samples of one or more daemons over time.
pub struct Sampler {
    start: Instant,
    samples: Vec<(f64, Usage)>,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampler {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            samples: Vec::new(),
        }
    }

    /// Records the summed usage of the daemons `pids` now.
    pub fn sample(&mut self, pids: &[u32]) {
        let mut u = Usage::default();
        for &p in pids {
            u += usage(p);
        }
        self.samples.push((self.start.elapsed().as_secs_f64(), u));
    }

    pub fn samples(&self) -> &[(f64, Usage)] {
        &self.samples
    }

    /// The first sample taken at or after `warmup_secs`, and the largest
    /// of each figure from there on.
    fn after_warmup(&self, warmup_secs: f64) -> Option<(Usage, Usage, Usage)> {
        let later: Vec<Usage> = self
            .samples
            .iter()
            .filter(|(t, _)| *t >= warmup_secs)
            .map(|(_, u)| *u)
            .collect();
        let base = *later.first()?;
        let last = *later.last()?;
        let max = later.iter().fold(Usage::default(), |m, u| Usage {
            rss_kib: m.rss_kib.max(u.rss_kib),
            fds: m.fds.max(u.fds),
            threads: m.threads.max(u.threads),
        });
        Some((base, max, last))
    }

    /// One line: each figure at the first sample, after warm-up, at its
    /// largest after warm-up, and at the end.
    pub fn report(&self, what: &str, warmup_secs: f64) -> String {
        let first = self.samples.first().map(|s| s.1).unwrap_or_default();
        match self.after_warmup(warmup_secs) {
            Some((base, max, last)) => format!(
                "{what}: {} samples over {:.0} s; RSS KiB start {} / after {warmup_secs:.0} s warm-up {} / max {} / end {}; \
                 fds {} / {} / {} / {}; threads {} / {} / {} / {}",
                self.samples.len(),
                self.samples.last().map(|s| s.0).unwrap_or(0.0),
                first.rss_kib, base.rss_kib, max.rss_kib, last.rss_kib,
                first.fds, base.fds, max.fds, last.fds,
                first.threads, base.threads, max.threads, last.threads,
            ),
            None => format!("{what}: no sample after the warm-up"),
        }
    }

    /// Whether every figure stayed within `pct` percent of its value right
    /// after the warm-up (descriptor and thread counts may also move by
    /// one: a request in flight holds a descriptor or wakes a thread).
    pub fn check_flat(&self, what: &str, warmup_secs: f64, pct: u64) -> Result<(), String> {
        let (base, max, _) = self
            .after_warmup(warmup_secs)
            .ok_or_else(|| format!("{what}: no sample after the warm-up"))?;
        let bound = |b: u64, slack: u64| b + (b * pct / 100).max(slack);
        let mut bad = Vec::new();
        if max.rss_kib > bound(base.rss_kib, 0) {
            bad.push(format!("RSS {} KiB -> {} KiB", base.rss_kib, max.rss_kib));
        }
        if max.fds > bound(base.fds, 1) {
            bad.push(format!("fds {} -> {}", base.fds, max.fds));
        }
        if max.threads > bound(base.threads, 1) {
            bad.push(format!("threads {} -> {}", base.threads, max.threads));
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{what}: grew by more than {pct}% after the warm-up: {}\n{}",
                bad.join(", "),
                self.report(what, warmup_secs)
            ))
        }
    }
}

/// What the descriptors of `pid` and its descendants point at, counted by
/// kind (`anon_inode:[eventfd]`, `socket`, paths...): for failure messages.
pub fn fd_kinds(pid: u32) -> String {
    let mut kinds: std::collections::BTreeMap<String, u64> = Default::default();
    for p in super::procs::tree(pid) {
        let Ok(fds) = fs::read_dir(format!("/proc/{p}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let target = fs::read_link(fd.path())
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "?".to_owned());
            let kind = match target.split_once(':') {
                Some((k, _)) if k == "socket" || k == "pipe" => k.to_owned(),
                Some((k, rest)) if k == "anon_inode" => format!("{k}:{rest}"),
                _ => target,
            };
            *kinds.entry(kind).or_default() += 1;
        }
    }
    kinds
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}
