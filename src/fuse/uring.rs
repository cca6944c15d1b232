//! FUSE over io_uring (Linux 6.14+): the kernel hands requests to
//! per-CPU queues of registered buffers instead of read(2) on /dev/fuse.
//!
//! One ring and one thread per possible CPU, the thread pinned to its CPU:
//! the kernel queues a request on the queue of the CPU its caller runs on,
//! so the caller, the request and the reply stay on one CPU (no cross-CPU
//! wake-up per request, which is what a round trip through /dev/fuse costs
//! most in a VM). FORGET and INTERRUPT still come through /dev/fuse, so
//! the /dev/fuse workers keep running.
//!
//! Flow per ring entry: REGISTER (header + payload buffer, once), then a
//! completion per request: the request is reassembled from the in-header,
//! the op header and the payload, answered by the same dispatcher as the
//! other transports into the entry's buffers, and handed back with
//! COMMIT_AND_FETCH, which also waits for the next request.
//!
//! The kernel only offers this when `/sys/module/fuse/parameters/enable_uring`
//! is `Y`. Once INIT agreed on it, the kernel holds every request until all
//! queues are registered, or until a REGISTER fails (it then falls back to
//! /dev/fuse): so the rings are created before INIT is answered, and INIT
//! only asks for io_uring when they exist.

use std::io;
use std::os::fd::RawFd;

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use super::abi::{InHeader, OutHeader};
use super::sink::{out_header, Errno, Fill, ReplySink};
use super::Server;

/// `FUSE_IO_URING_CMD_REGISTER`: register an entry's buffers, fetch a request.
const CMD_REGISTER: u32 = 1;
/// `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`: send the reply, fetch the next one.
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// Size of the in/out header area of an entry.
const IN_OUT_HEADER_SZ: usize = 128;
/// Size of the per-op header area of an entry.
const OP_IN_OUT_SZ: usize = 128;
/// Entries (requests in flight) per queue.
pub const DEFAULT_DEPTH: usize = 4;

/// `struct fuse_uring_ent_in_out`.
#[derive(Debug, Default, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct EntInOut {
    flags: u64,
    commit_id: u64,
    payload_sz: u32,
    padding: u32,
    reserved: u64,
}

/// `struct fuse_uring_req_header`: what REGISTER's first iovec points at.
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct ReqHeader {
    in_out: [u8; IN_OUT_HEADER_SZ],
    op_in: [u8; OP_IN_OUT_SZ],
    ent: EntInOut,
}

/// `struct fuse_uring_cmd_req`, in the SQE's command area.
#[derive(Debug, Default, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct CmdReq {
    flags: u64,
    commit_id: u64,
    qid: u16,
    padding: [u8; 6],
}

/// One page of a payload buffer.
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// One ring entry: its header and payload buffers and the iovecs REGISTER
/// reads. The buffers are heap memory that never moves while the ring
/// lives; the kernel writes into them only while this thread is inside
/// io_uring_enter(2), and they are read only after a completion.
struct Entry {
    header: Box<ReqHeader>,
    payload: Vec<Page>,
    iov: Box<[libc::iovec; 2]>,
}

// SAFETY: the iovecs' raw pointers point into this entry's own heap
// buffers (boxed, never reallocated), which move with it to the queue's
// thread; nothing else holds them.
unsafe impl Send for Entry {}

impl Entry {
    fn new(payload_len: usize) -> Self {
        let mut header = Box::new(ReqHeader::new_zeroed());
        let mut payload = vec![Page([0; 4096]); payload_len.div_ceil(4096).max(1)];
        let iov = Box::new([
            libc::iovec {
                iov_base: std::ptr::from_mut(&mut *header).cast(),
                iov_len: std::mem::size_of::<ReqHeader>(),
            },
            libc::iovec {
                iov_base: payload.as_mut_ptr().cast(),
                iov_len: payload.len().saturating_mul(4096),
            },
        ]);
        Self {
            header,
            payload,
            iov,
        }
    }
}

/// The queue count the kernel uses: one per possible CPU id
/// (`/sys/devices/system/cpu/possible`, e.g. `0-3` or `0,2-5`).
pub fn possible_cpus() -> io::Result<usize> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("bad cpu list {s:?}"));
    let mut max = None::<usize>;
    for part in s.trim().split(',') {
        let last = part.rsplit('-').next().ok_or_else(bad)?;
        let n: usize = last.parse().map_err(|_| bad())?;
        max = Some(max.map_or(n, |m: usize| m.max(n)));
    }
    max.and_then(|m| m.checked_add(1)).ok_or_else(bad)
}

/// Whether the kernel lets FUSE servers use io_uring
/// (`/sys/module/fuse/parameters/enable_uring`).
pub fn kernel_enabled() -> bool {
    std::fs::read_to_string("/sys/module/fuse/parameters/enable_uring")
        .is_ok_and(|s| s.trim() == "Y")
}

/// One queue: its ring (made before INIT) and entries.
pub struct Queue {
    qid: u16,
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("qid", &self.qid)
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// Makes one queue per possible CPU, each with `depth` entries whose
/// payload buffers hold `payload_len` bytes (at least the negotiated
/// `max_pages` worth: the kernel refuses smaller ones).
pub fn make_queues(depth: usize, payload_len: usize) -> io::Result<Vec<Queue>> {
    let n = possible_cpus()?;
    let depth = depth.max(1);
    let sq = u32::try_from(depth.saturating_mul(2)).unwrap_or(u32::MAX);
    (0..n)
        .map(|q| {
            let qid = u16::try_from(q).map_err(io::Error::other)?;
            let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
                .setup_coop_taskrun()
                .build(sq)?;
            let entries = (0..depth).map(|_| Entry::new(payload_len)).collect();
            Ok(Queue { qid, ring, entries })
        })
        .collect()
}

/// An SQE for `cmd` on `fd` with the command area set to `req`.
fn uring_cmd(fd: RawFd, cmd: u32, req: &CmdReq, user_data: u64) -> squeue::Entry128 {
    let mut area = [0u8; 80];
    if let Some(dst) = area.get_mut(..std::mem::size_of::<CmdReq>()) {
        dst.copy_from_slice(req.as_bytes());
    }
    opcode::UringCmd80::new(types::Fd(fd), cmd)
        .cmd(area)
        .build()
        .user_data(user_data)
}

/// REGISTER's SQE: like [`uring_cmd`] plus `addr` = the entry's two iovecs
/// and `len` = 2, which the io-uring crate's builder cannot set.
fn register_sqe(fd: RawFd, qid: u16, e: &Entry, user_data: u64) -> squeue::Entry128 {
    let req = CmdReq {
        qid,
        ..CmdReq::default()
    };
    let mut area = [0u8; 80];
    if let Some(dst) = area.get_mut(..std::mem::size_of::<CmdReq>()) {
        dst.copy_from_slice(req.as_bytes());
    }
    let sqe = opcode::UringCmd80::new(types::Fd(fd), CMD_REGISTER)
        .cmd(area)
        .addr(Some(e.iov.as_ptr() as u64))
        .build()
        .user_data(user_data);
    // SAFETY: `Entry128` is `repr(C)`: a 64-byte `io_uring_sqe` followed by
    // 64 bytes of command data, 128 initialised bytes with no padding, so
    // it can be viewed as bytes and any byte pattern is a valid value.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(sqe) };
    // `len` is the u32 at offset 24 of the SQE: the number of iovecs.
    if let Some(len) = raw.get_mut(24..28) {
        len.copy_from_slice(&2u32.to_ne_bytes());
    }
    // SAFETY: as above, in the other direction.
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(raw) }
}

/// Pins the calling thread to `cpu`; failure (a cpuset without it) leaves
/// it unpinned.
fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write into
    // `set`, and sched_setaffinity reads `size_of::<cpu_set_t>()` bytes
    // of it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        if cpu < libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

/// Replies written into a ring entry: the out-header into the in/out area,
/// the payload into the payload buffer, its size into `payload_sz`.
struct EntrySink<'a> {
    header: &'a mut ReqHeader,
    payload: &'a mut [u8],
    sent: bool,
}

impl EntrySink<'_> {
    fn set(&mut self, h: &OutHeader, payload: usize) {
        if let Some(dst) = self
            .header
            .in_out
            .get_mut(..std::mem::size_of::<OutHeader>())
        {
            dst.copy_from_slice(h.as_bytes());
        }
        self.header.ent.payload_sz = u32::try_from(payload).unwrap_or(0);
        self.sent = true;
    }
}

impl ReplySink for EntrySink<'_> {
    fn send(&mut self, header: &OutHeader, body: &[&[u8]]) -> io::Result<()> {
        let total: usize = body.iter().map(|b| b.len()).sum();
        if total > self.payload.len() {
            // Never happens for replies sized by the request; answer EIO
            // rather than a truncated payload.
            self.set(&out_header(header.unique, libc::EIO, 0), 0);
            return Ok(());
        }
        let mut at = 0usize;
        for b in body {
            let end = at.saturating_add(b.len());
            if let Some(dst) = self.payload.get_mut(at..end) {
                dst.copy_from_slice(b);
            }
            at = end;
        }
        self.set(header, total);
        Ok(())
    }

    fn send_with(&mut self, unique: u64, len: usize, fill: &mut Fill<'_>) -> io::Result<()> {
        let len = len.min(self.payload.len());
        let buf = self.payload.get_mut(..len).unwrap_or(&mut []);
        match fill(buf, 0) {
            Ok(n) => {
                let n = n.min(len);
                self.set(&out_header(unique, 0, n), n);
            }
            Err(Errno(e)) => self.set(&out_header(unique, e, 0), 0),
        }
        Ok(())
    }
}

/// Serves one queue until the connection ends: registers the entries,
/// then answers each completion and commits it. Runs on its own thread,
/// pinned to the queue's CPU.
pub fn serve_queue(mut q: Queue, fd: RawFd, server: &Server) -> io::Result<()> {
    pin_to(usize::from(q.qid));
    let qid = q.qid;
    for (i, e) in q.entries.iter().enumerate() {
        let sqe = register_sqe(fd, qid, e, i as u64);
        // SAFETY: the SQE points at the entry's iovecs and buffers, which
        // live in `q` until this function returns, after the ring (which
        // is dropped with `q`) stops using them.
        unsafe { q.ring.submission().push(&sqe) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
    }
    let mut live = q.entries.len();
    let mut req = Vec::with_capacity(4096);
    // Completions of one wait (the ring is borrowed again to commit them).
    let mut done: Vec<(u64, i32)> = Vec::with_capacity(q.entries.len());
    while live > 0 {
        match q.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
        done.clear();
        done.extend(q.ring.completion().map(|c| (c.user_data(), c.result())));
        for &(ud, res) in &done {
            let Some(e) = usize::try_from(ud).ok().and_then(|i| q.entries.get_mut(i)) else {
                continue;
            };
            if res < 0 {
                // The connection is gone (ENOTCONN, ECONNABORTED, ...) or
                // registration was refused (the kernel then falls back to
                // /dev/fuse): this entry is done.
                live = live.saturating_sub(1);
                let errno = res.saturating_neg();
                let gone = matches!(errno, libc::ENOTCONN | libc::ECONNABORTED | libc::ENODEV);
                if live == 0 && !gone {
                    return Err(io::Error::from_raw_os_error(errno));
                }
                continue;
            }
            let commit_id = answer(e, server, &mut req);
            let creq = CmdReq {
                commit_id,
                qid,
                ..CmdReq::default()
            };
            let sqe = uring_cmd(fd, CMD_COMMIT_AND_FETCH, &creq, ud);
            // SAFETY: as for REGISTER: the entry's buffers outlive the ring.
            if unsafe { q.ring.submission().push(&sqe) }.is_err() {
                return Err(io::Error::other("io_uring submission queue full"));
            }
        }
    }
    Ok(())
}

/// Answers the request in entry `e`; returns its commit id.
fn answer(e: &mut Entry, server: &Server, req: &mut Vec<u8>) -> u64 {
    let h = &*e.header;
    let commit_id = h.ent.commit_id;
    let payload = e.payload.as_bytes();
    let payload_sz = usize::try_from(h.ent.payload_sz)
        .unwrap_or(usize::MAX)
        .min(payload.len());
    let in_len = std::mem::size_of::<InHeader>();
    let in_header = InHeader::read_from_prefix(&h.in_out).map(|(v, _)| v).ok();
    // The request as /dev/fuse would frame it: in-header, op header (the
    // rest of `len` not in the payload), payload.
    let op_len = in_header.and_then(|ih| {
        usize::try_from(ih.len)
            .ok()?
            .checked_sub(in_len)?
            .checked_sub(payload_sz)
    });
    req.clear();
    let unique = in_header.map_or(commit_id, |ih| ih.unique);
    match (in_header, op_len) {
        (Some(_), Some(op_len)) if op_len <= OP_IN_OUT_SZ => {
            req.extend_from_slice(h.in_out.get(..in_len).unwrap_or(&[]));
            req.extend_from_slice(h.op_in.get(..op_len).unwrap_or(&[]));
            req.extend_from_slice(payload.get(..payload_sz).unwrap_or(&[]));
        }
        _ => {
            // A frame this transport does not understand: refuse it.
            let mut sink = EntrySink {
                header: &mut e.header,
                payload: e.payload.as_mut_bytes(),
                sent: false,
            };
            sink.set(&out_header(unique, libc::EIO, 0), 0);
            return commit_id;
        }
    }
    let mut sink = EntrySink {
        header: &mut e.header,
        payload: e.payload.as_mut_bytes(),
        sent: false,
    };
    // Transport errors cannot happen here (the reply is only memory), and
    // a request that produced no reply still has to be committed.
    let _ = server.handle(req, &mut sink);
    if !sink.sent {
        sink.set(&out_header(unique, libc::EIO, 0), 0);
    }
    commit_id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_uapi() {
        assert_eq!(std::mem::size_of::<EntInOut>(), 32);
        assert_eq!(std::mem::size_of::<ReqHeader>(), 128 + 128 + 32);
        assert_eq!(std::mem::size_of::<CmdReq>(), 24);
        assert_eq!(std::mem::size_of::<squeue::Entry128>(), 128);
    }

    #[test]
    fn register_sqe_sets_addr_and_len() {
        let e = Entry::new(8192);
        let sqe = register_sqe(7, 3, &e, 9);
        // SAFETY: see `register_sqe`.
        let raw: [u8; 128] = unsafe { std::mem::transmute(sqe) };
        assert_eq!(raw[0], 46, "IORING_OP_URING_CMD");
        assert_eq!(&raw[4..8], &7i32.to_ne_bytes(), "fd");
        assert_eq!(&raw[8..12], &CMD_REGISTER.to_ne_bytes(), "cmd_op");
        assert_eq!(&raw[16..24], &(e.iov.as_ptr() as u64).to_ne_bytes(), "addr");
        assert_eq!(&raw[24..28], &2u32.to_ne_bytes(), "len");
        assert_eq!(&raw[32..40], &9u64.to_ne_bytes(), "user_data");
        // The command area starts at byte 48: flags, commit_id, qid.
        assert_eq!(&raw[64..66], &3u16.to_ne_bytes(), "qid");
    }

    #[test]
    fn cpu_lists_parse() {
        assert!(possible_cpus().is_ok_and(|n| n >= 1));
    }
}
