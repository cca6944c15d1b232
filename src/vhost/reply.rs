//! The FUSE dispatcher's reply sink over a chain's writable buffers: the
//! reply header and payloads are copied in, file data is produced in place.

use std::io;

use zerocopy::IntoBytes;

use super::writer::GuestWriter;
use crate::fuse::abi::OutHeader;
use crate::fuse::{out_header, Errno, Fill, ReplySink, OUT_HEADER_LEN};

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
        let done = self.with_slices(OUT_HEADER_LEN, want, |bufs| {
            let mut done = 0usize;
            for buf in bufs.iter_mut() {
                let size = buf.len();
                match fill(buf, done) {
                    Ok(n) => {
                        let n = n.min(size);
                        done = done.saturating_add(n);
                        if n < size {
                            break;
                        }
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            Ok((done, done))
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
    fn test_send_with_without_room_for_a_header_fails() {
        let (r, out) = with_writer(&[15], |w| w.send_with(5, 16, &mut |_: &mut [u8], _| Ok(0)));
        assert!(r.is_err());
        assert!(out.is_empty());
        let (ok, out) = with_writer(&[15], |w| error_reply(w, 1, libc::EIO));
        assert!(!ok);
        assert!(out.is_empty());
    }
}
