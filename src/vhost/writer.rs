//! The writable part of a descriptor chain as one byte range the reply is
//! written into, in place.
//!
//! Owns nothing: it borrows the guest memory (kept mapped by the memory
//! guard of the chain) and trusts only what [`super::chain`] checked: every
//! slice lies inside guest memory and the total fits `usize`.
//!
//! Guest memory is only ever written through vm-memory's volatile copies
//! or by the kernel (file bytes read straight into it, see
//! [`crate::os::guestmem`]); it is never lent out as `&mut [u8]`, since the
//! guest may write the same bytes at any moment.

use std::fmt;
use std::io;
use std::os::fd::RawFd;

use vm_memory::VolatileSlice;

use super::error::ReplyTooLong;
use crate::os::guestmem;

/// Device-writable guest buffers of one chain, in chain order.
///
/// Writes may land anywhere in `0..capacity()` and in any order (a reply
/// header is written after the data it describes); the used length reported
/// to the guest is the end of the furthest write.
pub struct GuestWriter<'a> {
    bufs: Vec<VolatileSlice<'a>>,
    capacity: usize,
    used: usize,
}

impl fmt::Debug for GuestWriter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestWriter")
            .field("segments", &self.bufs.len())
            .field("capacity", &self.capacity)
            .field("used", &self.used)
            .finish()
    }
}

impl<'a> GuestWriter<'a> {
    /// Wraps checked slices whose lengths sum to `capacity`.
    pub(super) fn new(bufs: Vec<VolatileSlice<'a>>, capacity: usize) -> Self {
        Self {
            bufs,
            capacity,
            used: 0,
        }
    }

    /// A writer with no space (a chain without writable descriptors).
    pub fn empty() -> Self {
        Self::new(Vec::new(), 0)
    }

    /// Writable bytes in the chain.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes the guest will see: the end of the furthest write so far.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Forgets what was written (the used length drops to 0), e.g. to
    /// replace a half-written reply by an error reply.
    pub fn reset(&mut self) {
        self.used = 0;
    }

    /// Checks that `offset..offset + len` is inside the writable part.
    fn check(&self, offset: usize, len: usize) -> Result<usize, ReplyTooLong> {
        offset
            .checked_add(len)
            .filter(|&end| end <= self.capacity)
            .ok_or(ReplyTooLong {
                offset,
                len,
                capacity: self.capacity,
            })
    }

    /// Calls `f` on each guest slice covering `offset..offset + len`, in
    /// order; the range must have been checked.
    fn for_each_slice(
        &self,
        mut offset: usize,
        mut len: usize,
        mut f: impl FnMut(VolatileSlice<'a>),
    ) {
        for vs in &self.bufs {
            if len == 0 {
                break;
            }
            if offset >= vs.len() {
                offset -= vs.len();
                continue;
            }
            let n = len.min(vs.len() - offset);
            // The range was checked against the total, and `offset + n` is
            // within this slice, so `subslice` cannot fail; skip defensively.
            if let Ok(part) = vs.subslice(offset, n) {
                f(part);
            }
            len -= n;
            offset = 0;
        }
    }

    /// Copies `data` to `offset`.
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> Result<(), ReplyTooLong> {
        let end = self.check(offset, data.len())?;
        let mut rest = data;
        self.for_each_slice(offset, data.len(), |vs| {
            let (now, later) = rest.split_at(vs.len().min(rest.len()));
            vs.copy_from(now);
            rest = later;
        });
        self.used = self.used.max(end);
        Ok(())
    }

    /// Reads `len` bytes of file `fd` at `file_offset` into `offset..`:
    /// the kernel writes them straight into the guest's buffers (no copy
    /// through our memory). Fails with `UnexpectedEof` if the file ends
    /// first; the used length grows only when all of it was read.
    pub fn read_file_at(
        &mut self,
        offset: usize,
        fd: RawFd,
        file_offset: u64,
        len: usize,
    ) -> io::Result<()> {
        let end = self.check(offset, len)?;
        let mut parts: Vec<VolatileSlice<'a>> = Vec::new();
        self.for_each_slice(offset, len, |vs| parts.push(vs));
        guestmem::pread_exact(fd, &parts, file_offset)?;
        self.used = self.used.max(end);
        Ok(())
    }

    /// Writes `len` zero bytes at `offset`.
    pub fn zero_at(&mut self, offset: usize, len: usize) -> Result<(), ReplyTooLong> {
        static ZEROS: [u8; 4096] = [0; 4096];
        let end = self.check(offset, len)?;
        self.for_each_slice(offset, len, |vs| {
            let mut at = 0;
            while at < vs.len() {
                let n = (vs.len() - at).min(ZEROS.len());
                if let Ok(part) = vs.subslice(at, n) {
                    part.copy_from(&ZEROS[..n]);
                }
                at += n;
            }
        });
        self.used = self.used.max(end);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer_over<'a>(bufs: &'a mut [Vec<u8>]) -> GuestWriter<'a> {
        let mut total = 0;
        let slices = bufs
            .iter_mut()
            .map(|b| {
                total += b.len();
                VolatileSlice::from(b.as_mut_slice())
            })
            .collect();
        GuestWriter::new(slices, total)
    }

    #[test]
    fn test_write_at_spans_segments() {
        let mut bufs = vec![vec![0u8; 3], vec![0u8; 2], vec![0u8; 4]];
        let mut w = writer_over(&mut bufs);
        w.write_at(2, b"abcde").unwrap();
        assert_eq!(w.used(), 7);
        w.write_at(0, b"XY").unwrap();
        assert_eq!(w.used(), 7);
        drop(w);
        assert_eq!(
            bufs,
            vec![b"XYa".to_vec(), b"bc".to_vec(), b"de\0\0".to_vec()]
        );
    }

    #[test]
    fn test_write_past_capacity_is_rejected() {
        let mut bufs = vec![vec![0u8; 4]];
        let mut w = writer_over(&mut bufs);
        let table: &[(usize, usize)] = &[(0, 5), (4, 1), (usize::MAX, 2)];
        for &(off, len) in table {
            let data = vec![1u8; len];
            assert!(w.write_at(off, &data).is_err(), "{off}+{len}");
        }
        assert_eq!(w.used(), 0);
        assert!(w.write_at(4, b"").is_ok());
    }

    #[test]
    fn test_read_file_at_spans_segments() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"0123456789").unwrap();
        let mut bufs = vec![vec![0u8; 3], vec![0u8; 5]];
        let mut w = writer_over(&mut bufs);
        w.read_file_at(1, f.as_raw_fd(), 2, 6).unwrap();
        assert_eq!(w.used(), 7);
        // Past the end of the file: an error, the used length unchanged.
        let e = w.read_file_at(0, f.as_raw_fd(), 8, 4).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(w.used(), 7);
        // Past the end of the buffers: refused before reading.
        assert!(w.read_file_at(7, f.as_raw_fd(), 0, 2).is_err());
        drop(w);
        // The failed read still wrote what the file had ("89").
        assert_eq!(bufs, vec![b"893".to_vec(), b"4567\0".to_vec()]);
    }

    #[test]
    fn test_zero_at_spans_segments() {
        let mut bufs = vec![vec![1u8; 3], vec![1u8; 5000]];
        let mut w = writer_over(&mut bufs);
        w.zero_at(2, 4999).unwrap();
        assert_eq!(w.used(), 5001);
        assert!(w.zero_at(5000, 4).is_err());
        drop(w);
        assert_eq!(bufs[0], vec![1, 1, 0]);
        assert!(bufs[1][..4998].iter().all(|&b| b == 0));
        assert_eq!(bufs[1][4998..], [1, 1]);
    }

    #[test]
    fn test_empty_writer_takes_nothing() {
        let mut w = GuestWriter::empty();
        assert!(w.write_at(0, b"x").is_err());
        assert!(w.zero_at(0, 1).is_err());
        assert!(w.read_file_at(0, 0, 0, 1).is_err());
        assert_eq!(w.capacity(), 0);
    }
}
