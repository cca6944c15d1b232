//! Process-wide calls: user and group ids, the page size, CPU pinning,
//! group lookup, and detaching into the background.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;

use super::check;

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The real user and group ids.
pub fn uid_gid() -> (u32, u32) {
    // SAFETY: getuid/getgid have no preconditions and cannot fail.
    unsafe { (libc::getuid(), libc::getgid()) }
}

/// The size of a memory page (4096 when the system does not say).
pub fn page_size() -> u64 {
    // SAFETY: sysconf only reads its argument.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// Gives the allocator's free memory back to the system (glibc's
/// `malloc_trim(0)`: the free pages of every heap, not just their tops).
/// For after a burst of work whose buffers were freed (the content store's
/// loads); a no-op where the C library has no such call.
pub fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointer; it only walks the allocator's
    // own heaps under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Total physical memory in bytes (sysinfo(2), which works where /proc
/// is not mounted, e.g. in the sandbox); `None` when the call fails.
pub fn total_memory() -> Option<u64> {
    let mut info = std::mem::MaybeUninit::<libc::sysinfo>::uninit();
    // SAFETY: `info` has room for one `struct sysinfo`, which sysinfo fills
    // in whenever it succeeds.
    if unsafe { libc::sysinfo(info.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: sysinfo succeeded, so it wrote the whole struct.
    let info = unsafe { info.assume_init() };
    // c_ulong is u32 on 32-bit targets: the conversion is not useless there.
    #[allow(clippy::useless_conversion)]
    let total = u64::from(info.totalram);
    total.checked_mul(u64::from(info.mem_unit))
}

/// Has every thread allocate from glibc's main heap instead of an arena
/// of its own. Called first thing, before any thread starts. A thread's
/// own arena grows one `mprotect` call per page it takes on, and nodes
/// made while a fresh mount is walked take on megabytes: a third of the
/// daemon's time in a walk went there (page faults and `mprotect`). The
/// main heap grows with `brk` in 128 KiB steps; small blocks still come
/// from each thread's cache without a lock.
pub fn malloc_one_arena() {
    // SAFETY: mallopt only changes glibc's allocator settings; M_ARENA_MAX
    // takes any positive count, and no allocation is in flight on another
    // thread (none has started yet).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Pins the calling thread to CPU `cpu`; failure (a cpuset without it, a
/// number past `CPU_SETSIZE`) leaves it unpinned.
pub fn pin_to_cpu(cpu: usize) {
    if cpu >= usize::try_from(libc::CPU_SETSIZE).unwrap_or(0) {
        return;
    }
    // SAFETY: cpu_set_t is plain data (all-zero is the empty set);
    // CPU_ZERO/CPU_SET only write into `set` (`cpu` is below CPU_SETSIZE,
    // checked above), and sched_setaffinity reads
    // `size_of::<cpu_set_t>()` bytes of it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The gid of group `name` (getgrnam_r); `NotFound` when there is none.
pub fn group_id(name: &str) -> io::Result<u32> {
    let name = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "group name has a NUL byte"))?;
    let mut grp = std::mem::MaybeUninit::<libc::group>::uninit();
    let mut buf = vec![0 as libc::c_char; 16384];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `name` is a
    // NUL-terminated string, `grp` has room for one `struct group`, `buf`
    // for `buf.len()` bytes, and `result` for one pointer; the strings
    // getgrnam_r stores point into `buf`, which we do not read.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            grp.as_mut_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    if result.is_null() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no such group"));
    }
    // SAFETY: getgrnam_r returned 0 with a non-null result, so it filled
    // in `grp`.
    Ok(unsafe { grp.assume_init() }.gr_gid)
}

/// Threads of this process (entries of /proc/self/task).
pub(crate) fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// Detaches from the caller: forks, the parent exits 0 at once, the child
/// goes on in a new session, in `/`, with stdio on /dev/null.
///
/// Only a single-threaded process can fork and go on running ordinary
/// code in the child (another thread could hold a lock, e.g. the
/// allocator's, that nobody would release in the child): it fails
/// (`Other`) when more than one thread is running.
pub fn daemonize() -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let threads = thread_count()?;
    if threads != 1 {
        return Err(io::Error::other(format!(
            "cannot fork with {threads} threads running"
        )));
    }
    // SAFETY: the process has one thread (checked above; only this thread
    // could start another), so the child is a complete copy of it with no
    // lock held by a thread that does not exist there.
    let pid = check(unsafe { libc::fork() })?;
    if pid > 0 {
        // SAFETY: _exit ends the parent without running destructors or
        // exit handlers that could touch state the child now owns (the
        // mount).
        unsafe { libc::_exit(0) };
    }
    // SAFETY: setsid has no preconditions; failure (already a session
    // leader) is harmless.
    unsafe { libc::setsid() };
    let _ = std::env::set_current_dir("/");
    for fd in 0..3 {
        // SAFETY: both descriptors are open; dup2 replaces stdio
        // atomically, and the standard streams of std keep writing to the
        // numbers 0-2 without owning them.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_page_size_is_a_power_of_two() {
        assert!(page_size().is_power_of_two());
    }

    #[test]
    fn test_total_memory_matches_meminfo() {
        let kb: u64 = std::fs::read_to_string("/proc/meminfo")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        assert_eq!(total_memory(), Some(kb * 1024));
    }

    #[test]
    fn test_group_lookup() {
        assert_eq!(group_id("root").unwrap(), 0);
        let e = group_id("no-such-group-erofs").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e = group_id("a\0b").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn test_daemonize_refuses_with_threads_running() {
        // The test harness runs tests on threads of their own: more than
        // one thread, so no fork.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        assert!(daemonize().is_err());
        drop(tx);
        let _ = t.join();
    }
}
