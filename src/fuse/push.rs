//! Filling the mount's page cache with decoded data nobody asked for yet
//! (`FUSE_NOTIFY_STORE`), the way the kernel's own EROFS fills the page
//! cache for every page of a pcluster it decoded, not just the pages that
//! were read.
//!
//! A 4 KiB read in a file with 64 KiB or 1 MiB pclusters decodes the whole
//! extent; without this every other page of it costs the reader another
//! round trip through the daemon (served from the decode cache, but a round
//! trip is most of the cost). After answering such a read the dispatcher
//! [offers](Pusher::offer) the rest of the decoded range; one thread per
//! mount sends it. The workers never wait for that thread: when its queue is
//! full an offer is dropped. That matters for more than speed: storing into
//! the page cache waits for pages another READ has locked, and that READ
//! needs a worker to answer it.
//!
//! The same thread pushes whole small files ahead of a reader going
//! through a directory in listing order (`Session::follow_listing`), and
//! the [window](AROUND) around small reads of uncompressed files once a
//! file is read densely enough at random ([`Pusher::read_around`]).
//!
//! This is the policy (what to push, when, how much) and the queue; the
//! writing is the transport's, through its [`Outbound`]: uncompressed
//! data goes as file ranges ([`Outbound::store_spans`], spliced from the
//! image file's page cache on /dev/fuse, as READ replies are), anything
//! else as bytes ([`Outbound::store`]). Only transports that can store
//! (/dev/fuse: virtio-fs has no notifications) with the page cache kept
//! (`--cache always`) get a pusher.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use super::nodes::Target;
use super::outbound::Outbound;
use super::splice::{spans_len, MAX_SPANS};
use crate::erofs::Inode;

/// Most bytes pushed on either side of one read.
pub const MAX_PUSH: u64 = 1 << 20;

/// Less than this on both sides of a read together is not pushed: a few
/// pages are not worth a system call and a page-cache walk.
pub const MIN_PUSH: u64 = 64 << 10;

/// Reads this long or longer are not followed by pushes: they come from
/// readahead, whose next requests ask for the rest anyway (pushing it too
/// made sequential reads of 1 MiB pclusters 15-20% slower).
pub const SMALL_READ: u64 = 64 << 10;

/// The window pushed around a small read of an uncompressed file: the
/// kernel's default readahead, which is also what it reads around a page
/// fault in a mapped file.
pub const AROUND: u64 = 128 << 10;

/// Read-around starts for a file once it had small reads (each one a miss
/// in the page cache: hits never reach us) numbering its windows divided
/// by this: a reader touching half of the file's windows at random will
/// likely come back to pages next to those it read, one touching a few
/// places of a big file will not, and pushing for it would only cost CPU
/// and page cache.
const AROUND_DENSITY: u64 = 2;

/// And not before this many small reads of it: a file of a window or two
/// read once from its start (`head`, `file`, a loader sniffing a header)
/// is not being read at random.
const AROUND_MIN_READS: u64 = 4;

/// Files whose small reads are counted; past that the counts start over.
const COUNTED: usize = 4096;

/// Offers waiting for the pushing thread; more are dropped.
const QUEUE: usize = 256;

/// Recently pushed ranges remembered, so that reads landing in the same
/// extent do not push it again.
const RECENT: usize = 128;

struct Push {
    nodeid: u64,
    target: Target,
    offset: u64,
    len: u64,
}

/// Counts of what the pushing thread did (for tests and logs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PushStats {
    /// Ranges stored into the kernel's page cache.
    pub stored: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Offers dropped because the queue was full.
    pub dropped: u64,
}

/// Hands decoded ranges to the pushing thread.
#[derive(Debug)]
pub struct Pusher {
    tx: Mutex<Option<SyncSender<Push>>>,
    /// Joined only by tests: in service the thread may be stuck in a store
    /// the kernel holds, and nobody needs to wait for it.
    #[cfg_attr(not(test), allow(dead_code))]
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    recent: Mutex<VecDeque<(u64, u64)>>,
    stats: Arc<Mutex<PushStats>>,
    page: u64,
    /// Small reads of uncompressed files so far, by node.
    misses: Mutex<HashMap<u64, u64, foldhash::fast::RandomState>>,
}

impl std::fmt::Debug for Push {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Push({} @{}+{})", self.nodeid, self.offset, self.len)
    }
}

impl Pusher {
    /// Starts the pushing thread, which reads the data from the images and
    /// stores it through `out`. It ends at [`close`](Self::close) (or when
    /// the pusher is dropped) or when the connection goes away.
    pub fn start(out: Arc<dyn Outbound>) -> io::Result<Pusher> {
        let (tx, rx) = sync_channel(QUEUE);
        let stats = Arc::new(Mutex::new(PushStats::default()));
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("fuse-push".into())
            .spawn(move || run(&rx, &*out, &thread_stats))?;
        Ok(Pusher {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            stats,
            page: crate::os::proc::page_size(),
            misses: Mutex::new(HashMap::default()),
        })
    }

    /// Stops taking offers; the thread ends once the queue is empty.
    pub fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
    }

    /// Stops taking offers and waits until the thread has sent what was
    /// queued.
    #[cfg(test)]
    pub(crate) fn finish(&self) {
        self.close();
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }

    /// What the thread has done so far.
    pub fn stats(&self) -> PushStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// A read of `offset..offset + len` of `t` (node `nodeid`) was
    /// answered and decoding it produced `decoded` (from
    /// [`crate::erofs::Image::decoded_range`]): offers the whole pages of `decoded` on
    /// either side of the read, at most [`MAX_PUSH`] bytes each, nearest
    /// the read first; nothing when that is under [`MIN_PUSH`] in all or
    /// the read is not [small](SMALL_READ).
    pub(crate) fn offer(
        &self,
        nodeid: u64,
        t: &Target,
        offset: u64,
        len: u64,
        decoded: (u64, u64),
    ) {
        for (a, b) in push_ranges(self.page, t.inode.size, offset, len, decoded) {
            if b > a {
                self.send(nodeid, t, a, b.saturating_sub(a));
            }
        }
    }

    /// Counts a small read (under [`SMALL_READ`]) of uncompressed `inode`
    /// (node `nodeid`) of `len` bytes: how many it had so far, this one
    /// included; `None` for reads read-around does not count. Called
    /// before the read is answered, so that the counts follow the order in
    /// which a reader sent its reads.
    pub(crate) fn count_small_read(&self, nodeid: u64, inode: &Inode, len: u64) -> Option<u64> {
        if len >= SMALL_READ || inode.is_compressed() {
            return None;
        }
        let Ok(mut m) = self.misses.lock() else {
            return None;
        };
        if m.len() >= COUNTED && !m.contains_key(&nodeid) {
            m.clear();
        }
        let n = m.entry(nodeid).or_insert(0);
        *n = n.saturating_add(1);
        Some(*n)
    }

    /// The `misses`-th small read ([`Self::count_small_read`]) of
    /// `offset..offset + len` of uncompressed `t` (node `nodeid`) was
    /// answered: once the file has had enough of them (`AROUND_DENSITY`,
    /// `AROUND_MIN_READS`) offers the rest of the [`AROUND`]-aligned window
    /// holding `offset`.
    pub(crate) fn read_around(&self, nodeid: u64, t: &Target, offset: u64, len: u64, misses: u64) {
        if let Some(window) = around_window(t.inode.size, offset, misses) {
            self.offer(nodeid, t, offset, len, window);
        }
    }

    /// Offers all of a (small) file, from its start.
    pub(crate) fn offer_file(&self, nodeid: u64, t: &Target) {
        if t.inode.size > 0 {
            self.send(nodeid, t, 0, t.inode.size);
        }
    }

    fn send(&self, nodeid: u64, t: &Target, offset: u64, len: u64) {
        {
            let Ok(mut recent) = self.recent.lock() else {
                return;
            };
            if recent.contains(&(nodeid, offset)) {
                return;
            }
            if recent.len() >= RECENT {
                recent.pop_front();
            }
            recent.push_back((nodeid, offset));
        }
        let Ok(tx) = self.tx.lock() else {
            return;
        };
        let Some(tx) = tx.as_ref() else {
            return;
        };
        let push = Push {
            nodeid,
            target: t.clone(),
            offset,
            len,
        };
        match tx.try_send(push) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                if let Ok(mut s) = self.stats.lock() {
                    s.dropped = s.dropped.saturating_add(1);
                }
            }
        }
    }
}

/// The ranges [`Pusher::offer`] pushes, after the read then before it
/// (empty ones are `(x, x)`): whole pages of `decoded` outside the read's
/// pages (a partial page only at the end of a `size`-byte file), at most
/// [`MAX_PUSH`] bytes each, nothing when under [`MIN_PUSH`] in all or when
/// the read is not [small](SMALL_READ).
fn push_ranges(
    page: u64,
    size: u64,
    offset: u64,
    len: u64,
    decoded: (u64, u64),
) -> [(u64, u64); 2] {
    let (start, end) = decoded;
    let up = |x: u64| x.div_ceil(page).saturating_mul(page);
    let down = |x: u64| x.checked_div(page).unwrap_or(0).saturating_mul(page);
    // The read's own pages are in the cache already.
    let read_start = down(offset);
    let read_end = up(offset.saturating_add(len)).min(size);
    let stop = if end >= size { size } else { down(end) };
    let after = (
        read_end,
        stop.min(read_end.saturating_add(MAX_PUSH)).max(read_end),
    );
    let before_start = up(start)
        .max(read_start.saturating_sub(MAX_PUSH))
        .min(read_start);
    let before = (before_start, read_start);
    let total = after
        .1
        .saturating_sub(after.0)
        .saturating_add(before.1.saturating_sub(before.0));
    if total < MIN_PUSH || len >= SMALL_READ {
        return [(read_end, read_end), (read_start, read_start)];
    }
    [after, before]
}

/// The window to read around `offset` in a file of `size` bytes after its
/// `misses`-th small read, if read-around has started for it.
fn around_window(size: u64, offset: u64, misses: u64) -> Option<(u64, u64)> {
    let windows = size.div_ceil(AROUND);
    if misses < (windows / AROUND_DENSITY).max(AROUND_MIN_READS) || offset >= size {
        return None;
    }
    let start = offset.saturating_sub(offset.checked_rem(AROUND).unwrap_or(0));
    Some((start, start.saturating_add(AROUND).min(size)))
}

fn run(rx: &Receiver<Push>, out: &dyn Outbound, stats: &Mutex<PushStats>) {
    let mut buf = Vec::new();
    while let Ok(p) = rx.recv() {
        let sent = match store_spans(out, &p) {
            Some(r) => r,
            None => {
                let Ok(len) = usize::try_from(p.len) else {
                    continue;
                };
                buf.resize(len, 0);
                // Anything the image cannot give is simply not pushed: the
                // reader asks for it and gets the error then.
                match p
                    .target
                    .img
                    .image()
                    .read(&p.target.inode, p.offset, &mut buf)
                {
                    Ok(n) if n == len => {}
                    _ => continue,
                }
                out.store(p.nodeid, p.offset, &buf)
            }
        };
        match sent {
            Ok(()) => {
                if let Ok(mut s) = stats.lock() {
                    s.stored = s.stored.saturating_add(1);
                    s.bytes = s.bytes.saturating_add(p.len);
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return,
            // ENOENT: the kernel no longer has the inode; nothing to do.
            Err(_) => {}
        }
    }
}

/// Sends push `p` as file ranges, when its data is uncompressed and in
/// the image file (`None` otherwise, when the spans turn out shorter than
/// the file says, and when the transport did not take them: the copying
/// path then decides).
fn store_spans(out: &dyn Outbound, p: &Push) -> Option<io::Result<()>> {
    let len = usize::try_from(p.len).ok()?;
    let spans = p
        .target
        .img
        .image()
        .plain_spans(&p.target.inode, p.offset, len, MAX_SPANS)
        .ok()??;
    if spans_len(&spans) != len {
        return None;
    }
    match out.store_spans(p.nodeid, p.offset, &spans) {
        Ok(true) => Some(Ok(())),
        Ok(false) => None,
        Err(e) => Some(Err(e)),
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use crate::fuse::testutil::{memory_image, TINY_IMAGE};

    const K: u64 = 1024;

    #[test]
    fn test_push_ranges() {
        let p = 4096;
        // A 4 KiB read in the middle of a 1 MiB extent of a big file.
        assert_eq!(
            push_ranges(p, 10 << 20, 512 * K, 4 * K, (0, 1 << 20)),
            [(516 * K, 1 << 20), (0, 512 * K)]
        );
        // Unaligned read and extent ends: whole pages only.
        assert_eq!(
            push_ranges(p, 10 << 20, 512 * K + 100, 10, (100, (1 << 20) - 100)),
            [(516 * K, (1 << 20) - 4 * K), (4 * K, 512 * K)]
        );
        // At the end of the file the partial last page is pushed.
        assert_eq!(
            push_ranges(p, 300 * K + 5, 8 * K, 4 * K, (0, 300 * K + 5)),
            [(12 * K, 300 * K + 5), (0, 8 * K)]
        );
        // Capped at MAX_PUSH on each side, nearest the read.
        assert_eq!(
            push_ranges(p, 64 << 20, 4 << 20, 4 * K, (0, 16 << 20)),
            [((4 << 20) + 4 * K, (5 << 20) + 4 * K), (3 << 20, 4 << 20)]
        );
        // Too little to bother.
        let none = push_ranges(p, 1 << 20, 8 * K, 4 * K, (0, 48 * K));
        assert!(none.iter().all(|(a, b)| a == b), "{none:?}");
        // The read covers the extent.
        let none = push_ranges(p, 1 << 20, 0, 128 * K, (0, 128 * K));
        assert!(none.iter().all(|(a, b)| a == b), "{none:?}");
        // A readahead-sized read in a larger extent: the rest is asked for
        // next anyway.
        let none = push_ranges(p, 4 << 20, 0, 128 * K, (0, 1 << 20));
        assert!(none.iter().all(|(a, b)| a == b), "{none:?}");
    }

    #[test]
    fn test_around_window() {
        let w = AROUND;
        // A 2 MiB file has 16 windows: read-around from the 8th small read.
        let size = 2 << 20;
        assert_eq!(around_window(size, 5 * w + 100, 7), None);
        assert_eq!(around_window(size, 5 * w + 100, 8), Some((5 * w, 6 * w)));
        assert_eq!(around_window(size, 0, 9), Some((0, w)));
        // The last window stops at the end of the file.
        assert_eq!(
            around_window(size + 10, size + 5, 9),
            Some((size, size + 10))
        );
        // Files of a window or two get it from the fourth read on.
        assert_eq!(around_window(100 << 10, 4096, 3), None);
        assert_eq!(around_window(100 << 10, 4096, 4), Some((0, 100 << 10)));
        assert_eq!(around_window(200 << 10, 150 << 10, 4), Some((w, 200 << 10)));
        // Nothing past the end, nothing at the edge of u64.
        assert_eq!(around_window(size, size, 100), None);
        assert_eq!(
            around_window(u64::MAX, u64::MAX - 1, u64::MAX).map(|r| r.1),
            Some(u64::MAX)
        );
        // The read's own page is not pushed, and under MIN_PUSH nothing is.
        let p = 4096;
        assert_eq!(
            push_ranges(p, size, 5 * w + 100, 4 * K, (5 * w, 6 * w)),
            [(5 * w + 8 * K, 6 * w), (5 * w, 5 * w)]
        );
    }

    /// Records what it is asked to store.
    #[derive(Debug, Default)]
    struct Recorder {
        stores: Mutex<Vec<(u64, u64, Vec<u8>)>>,
    }

    impl Outbound for Recorder {
        fn can_store(&self) -> bool {
            true
        }

        fn store(&self, nodeid: u64, offset: u64, data: &[u8]) -> io::Result<()> {
            self.stores
                .lock()
                .unwrap()
                .push((nodeid, offset, data.to_vec()));
            Ok(())
        }
    }

    #[test]
    fn test_push_stores_through_the_transport_once() {
        let img = memory_image(TINY_IMAGE).unwrap();
        let share = crate::fuse::Share::new(img, Default::default()).unwrap();
        let img = Arc::clone(share.root_image().unwrap());
        let root = img.root();
        let (nid, _) = img.image().lookup(root, b"big").unwrap().unwrap();
        let inode = Arc::new(img.image().inode(nid).unwrap());
        let mut want = vec![0u8; 8204];
        assert_eq!(
            img.image().read(&inode, 4096, &mut want).unwrap(),
            want.len()
        );
        let out = Arc::new(Recorder::default());
        let pusher = Pusher::start(out.clone()).unwrap();
        let t = Target::new(img, inode);
        pusher.send(77, &t, 4096, 8204);
        // The same range again is not pushed twice.
        pusher.send(77, &t, 4096, 8204);
        pusher.finish();
        let stores = out.stores.lock().unwrap();
        assert_eq!(stores.len(), 1, "one store");
        assert_eq!((stores[0].0, stores[0].1), (77, 4096));
        assert_eq!(stores[0].2, want);
        assert_eq!(
            pusher.stats(),
            PushStats {
                stored: 1,
                bytes: 8204,
                dropped: 0
            }
        );
    }
}
