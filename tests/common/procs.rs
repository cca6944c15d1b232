//! The processes of one daemon. With the default sandbox the process a
//! test starts is a supervisor, and its one child (PID 1 of its own pid
//! namespace) serves; with `--sandbox none` the process serves itself.

use std::fs;

/// The children of `pid` (from every thread's `children` list).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `pid` and all its descendants, parents first.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while let Some(&p) = out.get(i) {
        out.extend(children(p));
        i += 1;
    }
    out
}

/// The process that serves: the one child of a supervisor, or `pid`
/// itself when it has no child.
pub fn server(pid: u32) -> u32 {
    match children(pid)[..] {
        [child] => child,
        _ => pid,
    }
}

/// CPU time (user + system) `pid` and its descendants have used, in clock
/// ticks (`/proc/PID/stat`; a process gone meanwhile counts nothing).
pub fn cpu_ticks(pid: u32) -> u64 {
    tree(pid)
        .into_iter()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .map(|stat| {
            // Fields after the ")" that ends the command name; utime and
            // stime are fields 14 and 15 of the whole line.
            let rest = stat
                .rfind(')')
                .and_then(|i| stat.get(i + 2..))
                .unwrap_or("");
            let f: Vec<&str> = rest.split(' ').collect();
            let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            field(11) + field(12)
        })
        .sum()
}
