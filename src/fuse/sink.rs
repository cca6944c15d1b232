//! Where replies go: the [`ReplySink`] a transport hands the dispatcher.

use std::io;

use zerocopy::IntoBytes;

use super::abi::OutHeader;
use crate::erofs::Span;

/// An errno to send back (positive, e.g. `libc::ENOENT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl From<&crate::erofs::Error> for Errno {
    fn from(e: &crate::erofs::Error) -> Self {
        Errno(e.errno())
    }
}

/// The payload writer given to [`ReplySink::send_with`]: `fill(buf, pos)`
/// writes payload bytes `pos..` into `buf` and returns how many it wrote.
pub type Fill<'a> = dyn FnMut(&mut [u8], usize) -> Result<usize, Errno> + 'a;

/// Size of the reply header.
pub const OUT_HEADER_LEN: usize = std::mem::size_of::<OutHeader>();

/// The transport side of one reply: how the dispatcher's answer reaches the
/// kernel (or the guest).
///
/// A reply is one message: a [`OutHeader`] (whose `len` counts the header
/// and everything after it), then a payload. The dispatcher produces each
/// reply with exactly one call, either
///
/// - [`send`](Self::send): the header and a payload the dispatcher already
///   holds (attributes, directory entries, xattr values), given as slices
///   to be sent back to back; or
/// - [`send_with`](Self::send_with): a payload produced in place, straight
///   into the transport's own memory: the sink hands out writable buffers
///   and the dispatcher fills them (file data from `Image::read`). On
///   /dev/fuse those buffers are a per-thread aligned buffer sent with one
///   `writev(2)`; on virtio-fs a per-thread bounce buffer copied into the
///   guest's writable descriptors (guest memory is never lent out as
///   `&mut [u8]`: the guest may write it at any time).
///
/// Requests that get no reply (FORGET, BATCH_FORGET, INTERRUPT) make no call
/// at all. Errors returned are the transport's own (the device went away);
/// the dispatcher passes them up unchanged.
pub trait ReplySink {
    /// Sends `header` followed by every slice of `body`, in order, as one
    /// reply. `header.len` is already the total length.
    fn send(&mut self, header: &OutHeader, body: &[&[u8]]) -> io::Result<()>;

    /// Sends a reply of at most `len` payload bytes written in place.
    ///
    /// The sink calls `fill(buf, pos)` with writable buffers of its own
    /// memory, in payload order (`pos` is the payload offset of `buf[0]`;
    /// the buffers add up to `len` bytes, or to less if the transport has
    /// less room). `fill` writes the payload bytes at `pos..` into `buf` and
    /// returns how many it wrote; a count short of `buf.len()` ends the
    /// payload there. The sink then sends a header with error 0 and the
    /// bytes written. If `fill` fails, the sink sends a header-only reply
    /// with that errno instead.
    fn send_with(&mut self, unique: u64, len: usize, fill: &mut Fill<'_>) -> io::Result<()>;

    /// Whether [`send_spans`](Self::send_spans) may take file data as host
    /// file ranges (worth asking the image for them): spliced on
    /// /dev/fuse, read by the kernel into the guest's buffers on
    /// virtio-fs.
    fn can_splice(&self) -> bool {
        false
    }

    /// Sends a reply whose payload is `spans` (host file ranges and zeros),
    /// moved by the kernel without passing through user space. Returns
    /// `Ok(false)` when nothing was sent and the caller should send the
    /// data with [`send_with`](Self::send_with) instead.
    fn send_spans(&mut self, _unique: u64, _spans: &[Span]) -> io::Result<bool> {
        Ok(false)
    }
}

/// Builds the header of a reply with `payload` bytes after it.
pub fn out_header(unique: u64, errno: i32, payload: usize) -> OutHeader {
    let len = payload.saturating_add(OUT_HEADER_LEN);
    OutHeader {
        len: u32::try_from(len).unwrap_or(u32::MAX),
        error: errno.checked_neg().unwrap_or(i32::MIN),
        unique,
    }
}

/// A sink that keeps every reply in memory: for tests, fuzzing and
/// transports that assemble a reply before copying it out.
#[derive(Debug, Default)]
pub struct VecSink {
    /// Each reply, header included, in the order sent.
    pub replies: Vec<Vec<u8>>,
    /// The most payload bytes [`ReplySink::send_with`] offers, in buffers of
    /// at most `chunk` bytes (0: one buffer).
    pub chunk: usize,
}

impl VecSink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ReplySink for VecSink {
    fn send(&mut self, header: &OutHeader, body: &[&[u8]]) -> io::Result<()> {
        let mut v = header.as_bytes().to_vec();
        for b in body {
            v.extend_from_slice(b);
        }
        self.replies.push(v);
        Ok(())
    }

    fn send_with(&mut self, unique: u64, len: usize, fill: &mut Fill<'_>) -> io::Result<()> {
        let mut data = vec![0u8; len];
        let chunk = if self.chunk == 0 {
            len.max(1)
        } else {
            self.chunk
        };
        let mut done = 0usize;
        let mut failed = None;
        for buf in data.chunks_mut(chunk) {
            let want = buf.len();
            match fill(buf, done) {
                Ok(n) => {
                    done = done.saturating_add(n.min(want));
                    if n < want {
                        break;
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(Errno(e)) = failed {
            return self.send(&out_header(unique, e, 0), &[]);
        }
        data.truncate(done);
        self.send(&out_header(unique, 0, done), &[&data])
    }
}
