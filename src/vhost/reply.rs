//! The FUSE dispatcher's reply sink over a chain's writable buffers.
//!
//! The reply header and payloads are copied in with volatile copies.
//! File data comes two ways: uncompressed data of a buffered image file,
//! given as file ranges ([`ReplySink::send_spans`]), is read by the kernel
//! straight into the guest's buffers; anything else (compressed data,
//! images in memory, `O_DIRECT` files, small reads) is produced into a
//! per-thread bounce buffer and copied in. Guest memory is never lent out
//! as `&mut [u8]` (the guest may write it at any time).

use std::cell::RefCell;
use std::io;

use zerocopy::IntoBytes;

use super::writer::GuestWriter;
use crate::erofs::Span;
use crate::fuse::abi::OutHeader;
use crate::fuse::{out_header, Errno, Fill, ReplySink, OUT_HEADER_LEN};

/// Most bounce-buffer bytes a thread keeps between replies (READs are at
/// most 1 MiB; a larger buffer is freed after use).
const BOUNCE_KEEP: usize = 2 << 20;

thread_local! {
    /// The calling thread's bounce buffer for [`ReplySink::send_with`].
    static BOUNCE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with a buffer of `len` bytes: the thread's bounce buffer (a
/// fresh one if that is in use).
fn with_bounce<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    BOUNCE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut b) => {
            if b.len() < len {
                b.resize(len, 0);
            }
            let r = f(b.get_mut(..len).unwrap_or(&mut []));
            if b.capacity() > BOUNCE_KEEP {
                *b = Vec::new();
            }
            r
        }
        Err(_) => f(&mut vec![0; len]),
    })
}

impl ReplySink for GuestWriter<'_> {
    fn send(&mut self, header: &OutHeader, body: &[&[u8]]) -> io::Result<()> {
        self.reset();
        // All or nothing: never leave a header whose length was not sent.
        let total = body
            .iter()
            .fold(OUT_HEADER_LEN, |t, b| t.saturating_add(b.len()));
        if total > self.capacity() {
            return Err(super::error::ReplyTooLong {
                offset: 0,
                len: total,
                capacity: self.capacity(),
            }
            .into());
        }
        self.write_at(0, header.as_bytes())?;
        let mut at = OUT_HEADER_LEN;
        for part in body {
            self.write_at(at, part)?;
            at = at.saturating_add(part.len());
        }
        Ok(())
    }

    fn send_with(&mut self, unique: u64, len: usize, fill: &mut Fill<'_>) -> io::Result<()> {
        self.reset();
        let room = self.capacity().checked_sub(OUT_HEADER_LEN).ok_or_else(|| {
            io::Error::from(super::error::ReplyTooLong {
                offset: 0,
                len: OUT_HEADER_LEN,
                capacity: self.capacity(),
            })
        })?;
        let want = len.min(room);
        let mut failed = None;
        let done = with_bounce(want, |buf| match fill(buf, 0) {
            Ok(n) => {
                let n = n.min(buf.len());
                self.write_at(OUT_HEADER_LEN, buf.get(..n).unwrap_or(&[]))
                    .map(|()| n)
            }
            Err(e) => {
                failed = Some(e);
                Ok(0)
            }
        })?;
        if let Some(Errno(e)) = failed {
            self.reset();
            return self
                .write_at(0, out_header(unique, e, 0).as_bytes())
                .map_err(Into::into);
        }
        self.write_at(0, out_header(unique, 0, done).as_bytes())
            .map_err(Into::into)
    }

    fn can_splice(&self) -> bool {
        true
    }

    /// File ranges are read by the kernel straight into the guest's
    /// buffers (preadv), holes written as zeros; the payload is cut to the
    /// room the chain has. If a file read fails, nothing is sent and the
    /// caller's copying path answers (with the error, if it persists).
    fn send_spans(&mut self, unique: u64, spans: &[Span]) -> io::Result<bool> {
        self.reset();
        let Some(room) = self.capacity().checked_sub(OUT_HEADER_LEN) else {
            return Ok(false);
        };
        let mut done = 0usize;
        for span in spans {
            let at = OUT_HEADER_LEN.saturating_add(done);
            let left = room.saturating_sub(done);
            let n = match *span {
                Span::File { fd, offset, len } => {
                    let n = len.min(left);
                    if self.read_file_at(at, fd, offset, n).is_err() {
                        self.reset();
                        return Ok(false);
                    }
                    n
                }
                Span::Zero(len) => {
                    let n = len.min(left);
                    self.zero_at(at, n)?;
                    n
                }
            };
            done = done.saturating_add(n);
        }
        self.write_at(0, out_header(unique, 0, done).as_bytes())?;
        Ok(true)
    }
}

/// Writes a header-only error reply (`errno` positive), replacing anything
/// written before; false when not even the header fits.
pub fn error_reply(w: &mut GuestWriter<'_>, unique: u64, errno: i32) -> bool {
    w.reset();
    w.write_at(0, out_header(unique, errno, 0).as_bytes())
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::VolatileSlice;

    fn with_writer<R>(sizes: &[usize], f: impl FnOnce(&mut GuestWriter<'_>) -> R) -> (R, Vec<u8>) {
        let mut bufs: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![0xee; n]).collect();
        let r = {
            let slices = bufs
                .iter_mut()
                .map(|b| VolatileSlice::from(b.as_mut_slice()))
                .collect();
            let mut w = GuestWriter::new(slices, sizes.iter().sum());
            let r = f(&mut w);
            (r, w.used())
        };
        let flat: Vec<u8> = bufs.concat();
        (r.0, flat[..r.1].to_vec())
    }

    fn header(bytes: &[u8]) -> (u32, i32, u64) {
        let le = |r: std::ops::Range<usize>| {
            bytes[r]
                .iter()
                .rev()
                .fold(0u64, |a, &b| a << 8 | u64::from(b))
        };
        (le(0..4) as u32, le(4..8) as u32 as i32, le(8..16))
    }

    #[test]
    fn test_send_fits_across_buffers() {
        let (r, out) = with_writer(&[5, 7, 100], |w| {
            w.send(&out_header(9, 0, 6), &[b"abc", b"def"])
        });
        r.unwrap();
        assert_eq!(out.len(), 22);
        assert_eq!(header(&out), (22, 0, 9));
        assert_eq!(&out[16..], b"abcdef");
    }

    #[test]
    fn test_send_too_big_writes_nothing() {
        let (r, out) = with_writer(&[20], |w| w.send(&out_header(9, 0, 6), &[b"abcdef"]));
        assert!(r.is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn test_send_with_is_cut_to_the_room_and_fills_in_place() {
        let (r, out) = with_writer(&[16, 3, 4], |w| {
            w.send_with(5, 100, &mut |buf: &mut [u8], pos: usize| {
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = (pos + i) as u8;
                }
                Ok(buf.len())
            })
        });
        r.unwrap();
        assert_eq!(header(&out), (23, 0, 5));
        assert_eq!(&out[16..], &[0, 1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn test_send_with_short_fill_ends_the_payload() {
        let (r, out) = with_writer(&[16, 8, 8], |w| {
            w.send_with(5, 16, &mut |buf: &mut [u8], _| {
                buf[0] = 1;
                Ok(1)
            })
        });
        r.unwrap();
        assert_eq!(header(&out), (17, 0, 5));
    }

    #[test]
    fn test_send_with_fill_error_is_an_error_reply() {
        let (r, out) = with_writer(&[64], |w| {
            w.send_with(5, 16, &mut |_: &mut [u8], _| Err(Errno(libc::EIO)))
        });
        r.unwrap();
        assert_eq!(header(&out), (16, -libc::EIO, 5));
    }

    #[test]
    fn test_send_spans_reads_files_and_zeros_into_the_buffers() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"abcdefghij").unwrap();
        let fd = f.as_raw_fd();
        let spans = [
            Span::File {
                fd,
                offset: 2,
                len: 3,
            },
            Span::Zero(2),
            Span::File {
                fd,
                offset: 7,
                len: 3,
            },
        ];
        let (r, out) = with_writer(&[10, 8, 100], |w| w.send_spans(4, &spans));
        assert!(r.unwrap());
        assert_eq!(header(&out), (24, 0, 4));
        assert_eq!(&out[16..], b"cde\0\0hij");
        // Cut to the room of the chain.
        let (r, out) = with_writer(&[16, 4], |w| w.send_spans(4, &spans));
        assert!(r.unwrap());
        assert_eq!(header(&out), (20, 0, 4));
        assert_eq!(&out[16..], b"cde\0");
    }

    #[test]
    fn test_send_spans_past_the_file_end_sends_nothing() {
        let f = tempfile::tempfile().unwrap();
        let spans = [Span::File {
            fd: std::os::fd::AsRawFd::as_raw_fd(&f),
            offset: 0,
            len: 8,
        }];
        let (r, out) = with_writer(&[64], |w| w.send_spans(4, &spans));
        assert!(!r.unwrap());
        assert!(out.is_empty());
        // No room for a header: not sent either.
        let (r, out) = with_writer(&[15], |w| w.send_spans(4, &[Span::Zero(1)]));
        assert!(!r.unwrap());
        assert!(out.is_empty());
    }

    #[test]
    fn test_send_with_without_room_for_a_header_fails() {
        let (r, out) = with_writer(&[15], |w| w.send_with(5, 16, &mut |_: &mut [u8], _| Ok(0)));
        assert!(r.is_err());
        assert!(out.is_empty());
        let (ok, out) = with_writer(&[15], |w| error_reply(w, 1, libc::EIO));
        assert!(!ok);
        assert!(out.is_empty());
    }
}
