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
//! The kernel puts a reader's readahead on the reader's CPU's queue, so a
//! sequential read would be answered by one thread; large READs are
//! therefore lent to a helper thread of the queue, unpinned, while the
//! queue's thread answers the next one: two requests of one queue are
//! answered at once, and the helper hands its entry back through an
//! eventfd the ring polls.
//!
//! The kernel only offers this when `/sys/module/fuse/parameters/enable_uring`
//! is `Y`. Once INIT agreed on it, the kernel holds every request until all
//! queues are registered, or until a REGISTER fails (it then falls back to
//! /dev/fuse): so the rings are created before INIT is answered, and INIT
//! only asks for io_uring when they exist.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::abi::{self, InHeader, OutHeader, ReadIn};
use super::request::{reassemble, unique_of};
use super::session::Session;
use super::sink::{out_header, Errno, Fill, ReplySink};
use crate::os::uring::{FuseRing, Lent};

/// Size of the in/out header area of an entry.
const IN_OUT_HEADER_SZ: usize = 128;
/// Size of the per-op header area of an entry.
const OP_IN_OUT_SZ: usize = 128;
/// Entries (requests in flight) per queue.
pub const DEFAULT_DEPTH: usize = 4;
/// READs of at least this many bytes (readahead of a sequential reader)
/// may go to the queue's helper thread; smaller ones (random reads) are
/// answered at once by the queue's thread.
const LEND_MIN_READ: u32 = 128 << 10;
/// Most entries of a queue lent to its helper at once.
const MAX_LENT: usize = 3;

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

/// One queue: its ring and entries (made before INIT), and the eventfd
/// its helper thread wakes it with.
#[derive(Debug)]
pub struct Queue {
    qid: u16,
    ring: FuseRing<ReqHeader>,
    wake: EventFd,
}

/// Makes one queue per possible CPU, each with `depth` entries whose
/// payload buffers hold `payload_len` bytes (at least the negotiated
/// `max_pages` worth: the kernel refuses smaller ones).
pub fn make_queues(depth: usize, payload_len: usize) -> io::Result<Vec<Queue>> {
    let n = possible_cpus()?;
    (0..n)
        .map(|q| {
            let qid = u16::try_from(q).map_err(io::Error::other)?;
            let ring = FuseRing::new(depth, payload_len)?;
            let wake = EventFd::new(EFD_NONBLOCK)?;
            Ok(Queue { qid, ring, wake })
        })
        .collect()
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
/// then answers each completion and commits it, lending large READs to a
/// helper thread while it answers the others. Runs on its own thread,
/// pinned to the queue's CPU.
pub fn serve_queue(q: Queue, fd: RawFd, server: &Session) -> io::Result<()> {
    let Queue {
        qid,
        mut ring,
        wake,
    } = q;
    let (jobs, job_rx) = mpsc::channel::<Lent<ReqHeader>>();
    let (done_tx, done) = mpsc::channel::<(Lent<ReqHeader>, u64)>();
    std::thread::scope(|s| {
        let wake = &wake;
        std::thread::Builder::new()
            .name("fuse-uring-read".into())
            .spawn_scoped(s, move || {
                let mut req = Vec::with_capacity(4096);
                for mut lent in job_rx {
                    let Some((header, payload)) = lent.buffers() else {
                        // Cannot happen (a token names an entry of its
                        // ring); ending here lets the queue's thread
                        // count the entry as gone.
                        break;
                    };
                    let commit_id = answer(header, payload, server, &mut req);
                    if done_tx.send((lent, commit_id)).is_err() {
                        break;
                    }
                    // Fails only with the counter near u64::MAX, which
                    // one write per lent entry never reaches.
                    let _ = wake.write(1);
                }
            })?;
        // Pinned after the helper started, which keeps the affinity it
        // was born with (any CPU).
        crate::os::proc::pin_to_cpu(usize::from(qid));
        ring.register(fd, qid)?;
        let mut r = Ring {
            ring: &mut ring,
            qid,
            jobs: Some(jobs),
            done: &done,
            lent: Vec::new(),
            wake,
        };
        let res = r.serve(server);
        // The helper ends once its jobs are gone (the scope waits for it).
        r.jobs = None;
        res
    })
}

/// The queue's thread's side of [`serve_queue`].
struct Ring<'a> {
    ring: &'a mut FuseRing<ReqHeader>,
    qid: u16,
    /// To the helper thread (None once it is gone).
    jobs: Option<mpsc::Sender<Lent<ReqHeader>>>,
    /// From the helper thread: answered entries and their commit ids.
    done: &'a mpsc::Receiver<(Lent<ReqHeader>, u64)>,
    /// The entries the helper holds (at most [`MAX_LENT`]).
    lent: Vec<usize>,
    wake: &'a EventFd,
}

impl Ring<'_> {
    fn serve(&mut self, server: &Session) -> io::Result<()> {
        let mut live = self.ring.depth();
        let mut req = Vec::with_capacity(4096);
        // Completions of one wait (the ring is borrowed again to commit them).
        let mut ready: Vec<(usize, i32)> = Vec::with_capacity(live);
        self.ring.poll_wake(self.wake.as_raw_fd())?;
        while live > 0 {
            ready.clear();
            if self.ring.wait(&mut ready)? {
                // Reset the eventfd (nonblocking: EAGAIN if already read).
                let _ = self.wake.read();
                self.ring.poll_wake(self.wake.as_raw_fd())?;
            }
            self.collect(&mut live)?;
            let n = ready.len();
            for (k, &(i, res)) in ready.iter().enumerate() {
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
                if self.lend(i, server, &mut req)? {
                    continue;
                }
                let Some((header, payload)) = self.ring.entry_mut(i) else {
                    continue;
                };
                let commit_id = answer(header, payload, server, &mut req);
                self.ring.commit_and_fetch(i, self.qid, commit_id)?;
                if k.saturating_add(1) < n {
                    // More to answer in this batch: let the kernel have
                    // this reply now rather than after the others.
                    self.ring.submit()?;
                }
                self.collect(&mut live)?;
            }
        }
        Ok(())
    }

    /// Hands entry `i` to the helper when it holds a large READ and the
    /// helper has room; true when the entry was taken care of (lent, or
    /// answered here because the helper is gone).
    fn lend(&mut self, i: usize, server: &Session, req: &mut Vec<u8>) -> io::Result<bool> {
        if self.lent.len() >= MAX_LENT || !self.is_large_read(i) {
            return Ok(false);
        }
        let Some(jobs) = &self.jobs else {
            return Ok(false);
        };
        let Some(lent) = self.ring.lend(i) else {
            return Ok(false);
        };
        match jobs.send(lent) {
            Ok(()) => self.lent.push(i),
            Err(mpsc::SendError(mut lent)) => {
                // The helper is gone: answer it here.
                self.jobs = None;
                if let Some((header, payload)) = lent.buffers() {
                    let commit_id = answer(header, payload, server, req);
                    self.ring.commit_lent(lent, self.qid, commit_id)?;
                }
            }
        }
        Ok(true)
    }

    /// Whether entry `i` (ours) holds a READ large enough to lend.
    fn is_large_read(&mut self, i: usize) -> bool {
        let Some((h, _)) = self.ring.entry_mut(i) else {
            return false;
        };
        let op = InHeader::read_from_prefix(&h.in_out).map(|(h, _)| h.opcode);
        let size = ReadIn::read_from_prefix(&h.op_in).map(|(r, _)| r.size);
        matches!((op, size), (Ok(abi::READ), Ok(n)) if n >= LEND_MIN_READ)
    }

    /// Commits what the helper answered; notices a helper that died
    /// (its entry then never comes back).
    fn collect(&mut self, live: &mut usize) -> io::Result<()> {
        loop {
            match self.done.try_recv() {
                Ok((lent, commit_id)) => {
                    let i = lent.index();
                    self.lent.retain(|&l| l != i);
                    self.ring.commit_lent(lent, self.qid, commit_id)?;
                }
                Err(mpsc::TryRecvError::Empty) => return Ok(()),
                Err(mpsc::TryRecvError::Disconnected) => {
                    for i in self.lent.drain(..) {
                        self.ring.forget_lent(i);
                        *live = live.saturating_sub(1);
                    }
                    self.jobs = None;
                    return Ok(());
                }
            }
        }
    }
}

/// Answers the request in an entry (`h`, `payload`); returns its commit
/// id.
fn answer(h: &mut ReqHeader, payload: &mut [u8], server: &Session, req: &mut Vec<u8>) -> u64 {
    let commit_id = h.ent.commit_id;
    let payload_sz = usize::try_from(h.ent.payload_sz)
        .unwrap_or(usize::MAX)
        .min(payload.len());
    let framed = reassemble(
        &h.in_out,
        &h.op_in,
        payload.get(..payload_sz).unwrap_or(&[]),
        req,
    );
    let mut sink = EntrySink {
        header: h,
        payload,
        sent: false,
    };
    match framed {
        // Transport errors cannot happen here (the reply is only memory).
        Ok(()) => {
            let _ = server.handle(req, &mut sink);
        }
        // A frame that does not add up gets what any transport answers.
        Err(e) => {
            let unique = e.unique.unwrap_or(commit_id);
            sink.set(&out_header(unique, e.error.errno(), 0), 0);
        }
    }
    // A request that produced no reply still has to be committed.
    if !sink.sent {
        let unique = unique_of(req).unwrap_or(commit_id);
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
    }

    #[test]
    fn cpu_lists_parse() {
        assert!(possible_cpus().is_ok_and(|n| n >= 1));
    }
}
