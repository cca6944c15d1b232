//! The ring of one FUSE-over-io_uring queue and its entries' buffers.
//!
//! Each entry has a header buffer (`H`, the `fuse_uring_req_header`) and a
//! payload buffer, which REGISTER hands to the kernel as two iovecs. From
//! then on the kernel writes a request into them and reads the reply back
//! whenever it holds the entry: between a REGISTER or COMMIT_AND_FETCH and
//! the completion that hands the entry back. It does so from task work of
//! this thread, which can run at any system call this thread makes (not
//! only in `io_uring_enter`), so the buffers are kept as raw pointers and
//! a Rust reference to an entry's buffers exists only while the entry is
//! ours ([`FuseRing::entry_mut`] checks that, and borrows the ring so that
//! no reference survives the next commit).
//!
//! The commands go only to a /dev/fuse descriptor of the ring's own (a
//! duplicate checked to be the FUSE device at [`FuseRing::register`]):
//! their command area holds no pointer for FUSE, while another driver
//! could read one from it.
//!
//! An entry that is ours can be lent to another thread ([`FuseRing::lend`])
//! to answer there: the [`Lent`] token is then the only way to its
//! buffers, and the entry goes back to the kernel only when the token is
//! handed back ([`FuseRing::commit_lent`]). The buffers are shared by the
//! ring and its tokens and freed when the last of them goes, so a token
//! outliving its ring never points at freed memory.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::ptr::NonNull;
use std::sync::Arc;

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `FUSE_IO_URING_CMD_REGISTER`: register an entry's buffers, fetch a request.
const CMD_REGISTER: u32 = 1;
/// `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`: send the reply, fetch the next one.
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// The FUSE device: misc character device 10:229.
const FUSE_DEV: (u32, u32) = (10, 229);

/// `struct fuse_uring_cmd_req`, in the SQE's command area.
#[derive(Debug, Default, Clone, Copy, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct CmdReq {
    flags: u64,
    commit_id: u64,
    qid: u16,
    padding: [u8; 6],
}

/// One page of a payload buffer.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// `user_data` of the wake-up poll ([`FuseRing::poll_wake`]); entries
/// use their index.
const WAKE: u64 = u64::MAX;

/// Who may touch an entry's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    /// Not registered yet.
    Idle,
    /// Handed to the kernel (registered or committed, no completion yet).
    Kernel,
    /// Its completion came: a request is in it, the reply goes in.
    Ours,
    /// Ours, lent to whoever holds its [`Lent`] token.
    Lent,
    /// Its command failed: the kernel no longer uses it.
    Done,
}

/// One entry's buffers, owned through raw pointers (see the module doc),
/// freed by [`Buffers`]'s drop.
struct Entry<H> {
    header: NonNull<H>,
    payload: NonNull<[Page]>,
    /// The two iovecs REGISTER points at (header, payload).
    iov: Box<[libc::iovec; 2]>,
}

impl<H> Entry<H> {
    /// The entry's header and payload.
    ///
    /// # Safety
    /// The caller must hold the entry alone (it is ours and not lent, or
    /// the caller holds its [`Lent`] token) for as long as the references
    /// live.
    #[allow(clippy::mut_from_ref)]
    unsafe fn buffers(&self) -> (&mut H, &mut [u8]) {
        let len = self.payload.len().saturating_mul(4096);
        // SAFETY: the pointers are valid, aligned allocations of an `H`
        // and of `len` bytes of pages (from `FuseRing::new`), freed only
        // when the last handle to `Buffers` goes; exclusive access is the
        // caller's promise.
        unsafe {
            (
                &mut *self.header.as_ptr(),
                std::slice::from_raw_parts_mut(self.payload.as_ptr().cast::<u8>(), len),
            )
        }
    }
}

/// Every entry's buffers, shared by [`FuseRing`] (a field declared after
/// the ring, so that they outlive the ring's use of them) and the [`Lent`]
/// tokens; freed when the last of them goes.
struct Buffers<H> {
    entries: Vec<Entry<H>>,
}

// SAFETY: `Buffers` hands out no access to what its pointers point at by
// itself: references are made only by `FuseRing::entry_mut` and
// `Lent::buffers`, each for an entry its caller holds alone (the ring's
// `holders` state, or the one token of a lent entry), so sharing or moving
// the handles across threads cannot make two threads use one buffer.
unsafe impl<H: Send> Send for Buffers<H> {}
// SAFETY: as for `Send`.
unsafe impl<H: Send> Sync for Buffers<H> {}

impl<H> Drop for Buffers<H> {
    fn drop(&mut self) {
        for e in &self.entries {
            // SAFETY: both pointers came from `Box::leak` in
            // `FuseRing::new` and are freed only here, once, when the last
            // handle goes: the ring (closed before its `bufs` field drops)
            // no longer hands them to the kernel, no token is left, and no
            // reference to them outlives a borrow of the ring or of a
            // token.
            unsafe {
                drop(Box::from_raw(e.header.as_ptr()));
                drop(Box::from_raw(e.payload.as_ptr()));
            }
        }
    }
}

/// The ring of one queue with its entries.
pub struct FuseRing<H> {
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    bufs: Arc<Buffers<H>>,
    /// Who holds each entry (index as in `bufs.entries`).
    holders: Vec<Holder>,
    /// Our own descriptor of the FUSE connection (set by `register`).
    dev: Option<OwnedFd>,
}

/// An entry lent to another thread: the only access to its buffers until
/// it is handed back with [`FuseRing::commit_lent`].
pub struct Lent<H> {
    bufs: Arc<Buffers<H>>,
    index: usize,
}

impl<H: FromBytes> Lent<H> {
    /// The index of the entry in its ring.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The entry's header and payload buffers.
    pub fn buffers(&mut self) -> Option<(&mut H, &mut [u8])> {
        let e = self.bufs.entries.get(self.index)?;
        // SAFETY: this token is the only one for the entry (made once by
        // `FuseRing::lend`, which marks the entry lent, so neither the ring
        // nor the kernel touches it until the token comes back through
        // `commit_lent`), and the references borrow the token mutably;
        // `H: FromBytes` and `u8` accept any bytes the kernel wrote.
        Some(unsafe { e.buffers() })
    }
}

impl<H> std::fmt::Debug for Lent<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lent").field("index", &self.index).finish()
    }
}

impl<H> std::fmt::Debug for FuseRing<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FuseRing")
            .field("entries", &self.bufs.entries.len())
            .finish_non_exhaustive()
    }
}

impl<H: FromBytes> FuseRing<H> {
    /// A ring with `depth` entries whose payload buffers hold
    /// `payload_len` bytes (rounded up to whole pages).
    pub fn new(depth: usize, payload_len: usize) -> io::Result<Self> {
        let depth = depth.max(1);
        let sq = u32::try_from(depth.saturating_mul(2)).unwrap_or(u32::MAX);
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
            .setup_coop_taskrun()
            .build(sq)?;
        let pages = payload_len.div_ceil(4096).max(1);
        // Made before the first allocation, so that a failure frees what
        // was allocated.
        let mut bufs = Buffers {
            entries: Vec::with_capacity(depth),
        };
        let holders = vec![Holder::Idle; depth];
        for _ in 0..depth {
            let header = NonNull::from(Box::leak(Box::new(H::new_zeroed())));
            let payload = NonNull::from(Box::leak(vec![Page([0; 4096]); pages].into_boxed_slice()));
            let iov = Box::new([
                libc::iovec {
                    iov_base: header.as_ptr().cast(),
                    iov_len: std::mem::size_of::<H>(),
                },
                libc::iovec {
                    iov_base: payload.as_ptr().cast(),
                    iov_len: pages.saturating_mul(4096),
                },
            ]);
            bufs.entries.push(Entry {
                header,
                payload,
                iov,
            });
        }
        Ok(Self {
            ring,
            bufs: Arc::new(bufs),
            holders,
            dev: None,
        })
    }

    /// Number of entries.
    pub fn depth(&self) -> usize {
        self.bufs.entries.len()
    }

    /// Registers every entry with queue `qid` of the FUSE connection of
    /// `/dev/fuse` descriptor `fd` (the ring keeps a duplicate of it).
    /// Submitted with the next [`Self::wait`].
    pub fn register(&mut self, fd: RawFd, qid: u16) -> io::Result<()> {
        let dev = File::from(super::fd::dup_inherited(fd)?);
        let st = dev.metadata()?;
        let rdev = st.rdev();
        if !st.file_type().is_char_device() || (libc::major(rdev), libc::minor(rdev)) != FUSE_DEV {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a /dev/fuse descriptor",
            ));
        }
        let raw = dev.as_raw_fd();
        self.dev = Some(OwnedFd::from(dev));
        let req = CmdReq {
            qid,
            ..CmdReq::default()
        };
        for (i, (e, holder)) in self.bufs.entries.iter().zip(&mut self.holders).enumerate() {
            if *holder != Holder::Idle {
                continue;
            }
            let sqe = register_sqe(raw, &req, &e.iov, i as u64);
            // SAFETY: the SQE points at this entry's iovecs, which point
            // at its buffers; all of them live until the ring is closed
            // (see `Buffers`), and no reference to the buffers exists
            // while the kernel holds the entry (`holder`).
            unsafe { self.ring.submission().push(&sqe) }
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
            *holder = Holder::Kernel;
        }
        Ok(())
    }

    /// Queues a one-shot poll of `fd` (an eventfd that other threads
    /// write when they hand a lent entry back): [`Self::wait`] then also
    /// returns when it becomes readable. Queue it again after each such
    /// return.
    pub fn poll_wake(&mut self, fd: RawFd) -> io::Result<()> {
        let sqe = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .build()
            .user_data(WAKE);
        // SAFETY: a poll carries no pointer.
        unsafe { self.ring.submission().push(&sqe.into()) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))
    }

    /// Submits what was queued without waiting.
    pub fn submit(&mut self) -> io::Result<()> {
        match self.ring.submit() {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Submits what was queued and waits for at least one completion;
    /// appends each as (entry index, result) to `out` (an interrupted
    /// wait appends nothing). An entry whose result is 0 or more is ours
    /// until [`Self::commit_and_fetch`]; one with an error is done.
    /// Returns whether the poll of [`Self::poll_wake`] fired.
    pub fn wait(&mut self, out: &mut Vec<(usize, i32)>) -> io::Result<bool> {
        match self.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => return Ok(false),
            Err(e) => return Err(e),
        }
        let mut woke = false;
        for c in self.ring.completion() {
            if c.user_data() == WAKE {
                woke = true;
                continue;
            }
            let i = usize::try_from(c.user_data()).unwrap_or(usize::MAX);
            let Some(holder) = self.holders.get_mut(i) else {
                continue;
            };
            if *holder != Holder::Kernel {
                continue;
            }
            *holder = if c.result() >= 0 {
                Holder::Ours
            } else {
                Holder::Done
            };
            out.push((i, c.result()));
        }
        Ok(woke)
    }

    /// The header and payload buffers of entry `i`, while it is ours.
    pub fn entry_mut(&mut self, i: usize) -> Option<(&mut H, &mut [u8])> {
        if self.holders.get(i) != Some(&Holder::Ours) {
            return None;
        }
        let e = self.bufs.entries.get(i)?;
        // SAFETY: the kernel handed the entry back (its completion came)
        // and gets it again only through `commit_and_fetch`, which needs
        // the ring borrowed mutably, so not while these references live;
        // it is not lent (no token for it exists); `H: FromBytes` and `u8`
        // accept any bytes the kernel wrote.
        Some(unsafe { e.buffers() })
    }

    /// Lends entry `i` (ours) to another thread: its buffers are then
    /// reached only through the token, until [`Self::commit_lent`].
    pub fn lend(&mut self, i: usize) -> Option<Lent<H>> {
        let holder = self.holders.get_mut(i)?;
        if *holder != Holder::Ours {
            return None;
        }
        *holder = Holder::Lent;
        Some(Lent {
            bufs: Arc::clone(&self.bufs),
            index: i,
        })
    }

    /// Takes a lent entry back (its reply written) and commits it as
    /// [`Self::commit_and_fetch`] does.
    pub fn commit_lent(&mut self, lent: Lent<H>, qid: u16, commit_id: u64) -> io::Result<()> {
        let i = lent.index;
        if !Arc::ptr_eq(&lent.bufs, &self.bufs) || self.holders.get(i) != Some(&Holder::Lent) {
            return Err(io::Error::other(
                "committing an entry this ring did not lend",
            ));
        }
        // The token goes before the kernel can have the buffers again.
        drop(lent);
        if let Some(h) = self.holders.get_mut(i) {
            *h = Holder::Ours;
        }
        self.commit_and_fetch(i, qid, commit_id)
    }

    /// Marks entry `i`, lent and never to come back (its token was
    /// dropped by a thread that died), as done.
    pub fn forget_lent(&mut self, i: usize) {
        if let Some(h) = self.holders.get_mut(i).filter(|h| **h == Holder::Lent) {
            *h = Holder::Done;
        }
    }

    /// Hands entry `i` (ours, its reply written) back to the kernel with
    /// COMMIT_AND_FETCH for request `commit_id` of queue `qid`.
    pub fn commit_and_fetch(&mut self, i: usize, qid: u16, commit_id: u64) -> io::Result<()> {
        let fd = self
            .dev
            .as_ref()
            .map(AsRawFd::as_raw_fd)
            .ok_or_else(|| io::Error::other("io_uring queue not registered"))?;
        let holder = self
            .holders
            .get_mut(i)
            .filter(|h| **h == Holder::Ours)
            .ok_or_else(|| io::Error::other("committing an entry the kernel holds"))?;
        let req = CmdReq {
            commit_id,
            qid,
            ..CmdReq::default()
        };
        let sqe = uring_cmd(fd, CMD_COMMIT_AND_FETCH, &req, i as u64);
        // SAFETY: the command carries no pointer; the kernel uses the
        // buffers registered for this entry, which live until the ring is
        // closed, and no reference to them survives this `&mut self` call.
        unsafe { self.ring.submission().push(&sqe) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        *holder = Holder::Kernel;
        Ok(())
    }
}

/// An SQE for FUSE command `cmd` on `fd` with the command area set to
/// `req`.
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
fn register_sqe(
    fd: RawFd,
    req: &CmdReq,
    iov: &[libc::iovec; 2],
    user_data: u64,
) -> squeue::Entry128 {
    let mut area = [0u8; 80];
    if let Some(dst) = area.get_mut(..std::mem::size_of::<CmdReq>()) {
        dst.copy_from_slice(req.as_bytes());
    }
    let sqe = opcode::UringCmd80::new(types::Fd(fd), CMD_REGISTER)
        .cmd(area)
        .addr(Some(iov.as_ptr() as u64))
        .build()
        .user_data(user_data);
    let mut raw = sqe_bytes(sqe);
    // `len` is the u32 at offset 24 of the SQE: the number of iovecs.
    if let Some(len) = raw.get_mut(24..28) {
        len.copy_from_slice(&2u32.to_ne_bytes());
    }
    // SAFETY: `Entry128` is `repr(C)`: a 64-byte `io_uring_sqe` followed
    // by 64 bytes of command data, plain integers and byte arrays with no
    // padding and no invalid values, so any 128 bytes are a valid value.
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(raw) }
}

/// The 128 bytes of an SQE.
fn sqe_bytes(sqe: squeue::Entry128) -> [u8; 128] {
    // SAFETY: `Entry128` is `repr(C)`, 128 initialised bytes with no
    // padding (see `register_sqe`), so it can be viewed as bytes.
    unsafe { std::mem::transmute(sqe) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_layouts_match_the_uapi() {
        assert_eq!(std::mem::size_of::<CmdReq>(), 24);
        assert_eq!(std::mem::size_of::<squeue::Entry128>(), 128);
    }

    #[test]
    fn test_register_sqe_sets_addr_and_len() {
        let iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 2];
        let req = CmdReq {
            qid: 3,
            ..CmdReq::default()
        };
        let raw = sqe_bytes(register_sqe(7, &req, &iov, 9));
        assert_eq!(raw[0], 46, "IORING_OP_URING_CMD");
        assert_eq!(&raw[4..8], &7i32.to_ne_bytes(), "fd");
        assert_eq!(&raw[8..12], &CMD_REGISTER.to_ne_bytes(), "cmd_op");
        assert_eq!(&raw[16..24], &(iov.as_ptr() as u64).to_ne_bytes(), "addr");
        assert_eq!(&raw[24..28], &2u32.to_ne_bytes(), "len");
        assert_eq!(&raw[32..40], &9u64.to_ne_bytes(), "user_data");
        // The command area starts at byte 48: flags, commit_id, qid.
        assert_eq!(&raw[64..66], &3u16.to_ne_bytes(), "qid");
    }

    #[test]
    fn test_entries_are_not_lent_before_their_completion() {
        let mut r = match FuseRing::<[u8; 288]>::new(2, 8192) {
            Ok(r) => r,
            // io_uring disabled (sysctl kernel.io_uring_disabled).
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => return,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(r.depth(), 2);
        assert!(r.entry_mut(0).is_none());
        // Only an entry that is ours can be lent.
        assert!(r.lend(0).is_none());
        assert!(r.commit_and_fetch(0, 0, 1).is_err());
        // Not the FUSE device: refused before anything is queued.
        let f = tempfile::tempfile().unwrap();
        assert!(r.register(f.as_raw_fd(), 0).is_err());
        assert!(r.entry_mut(1).is_none());
    }
}
