//! The writable part of a descriptor chain as one byte range the reply is
//! written into, in place.
//!
//! Owns nothing: it borrows the guest memory (kept mapped by the memory
//! guard of the chain) and trusts only what [`super::chain`] checked: every
//! slice lies inside guest memory and the total fits `usize`.

use std::fmt;

use vm_memory::VolatileSlice;

use super::error::ReplyTooLong;

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

    /// Hands out the guest memory of `offset..offset + len` as mutable byte
    /// slices (one per guest buffer, in order) so that data is produced
    /// straight into the guest's buffers, without a bounce copy. `f`
    /// returns how many bytes it produced from the start of the range; the
    /// used length grows by that much.
    ///
    /// The slices alias memory the guest can also write. A well-behaved
    /// driver does not touch buffers it has made available to the device
    /// until they are returned (virtio spec 2.7.13); a driver that does
    /// only corrupts its own data: we never read these bytes back and `u8`
    /// has no invalid values.
    pub fn with_slices<R>(
        &mut self,
        offset: usize,
        len: usize,
        f: impl FnOnce(&mut [&mut [u8]]) -> std::io::Result<(usize, R)>,
    ) -> std::io::Result<R> {
        self.check(offset, len)?;
        let mut parts: Vec<VolatileSlice<'a>> = Vec::new();
        self.for_each_slice(offset, len, |vs| parts.push(vs));
        let guards: Vec<_> = parts.iter().map(VolatileSlice::ptr_guard_mut).collect();
        let mut slices: Vec<&mut [u8]> = guards
            .iter()
            .map(|g| {
                // SAFETY: `g` points at `g.len()` bytes of guest memory that
                // `check` and `subslice` placed inside one mapped region;
                // the mapping outlives this call (the slices borrow `self`,
                // whose lifetime `'a` is that of the memory guard), the
                // guard is held until the slices are dropped, the slices
                // are disjoint (distinct descriptors' ranges are taken in
                // order, and overlap between descriptors only aliases the
                // guest's own buffers) and `u8` needs no alignment and has
                // no invalid values. See the method documentation for why
                // concurrent guest writes are acceptable.
                unsafe { std::slice::from_raw_parts_mut(g.as_ptr(), g.len()) }
            })
            .collect();
        let (produced, r) = f(&mut slices)?;
        drop(slices);
        drop(guards);
        let produced = produced.min(len);
        let end = offset.saturating_add(produced);
        self.used = self.used.max(end);
        Ok(r)
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
    fn test_with_slices_exposes_guest_buffers_in_order() {
        let mut bufs = vec![vec![0u8; 3], vec![0u8; 5]];
        let mut w = writer_over(&mut bufs);
        let lens = w
            .with_slices(1, 6, |s| {
                let lens: Vec<usize> = s.iter().map(|x| x.len()).collect();
                s[0].fill(7);
                s[1][..2].fill(8);
                Ok((4, lens))
            })
            .unwrap();
        assert_eq!(lens, vec![2, 4]);
        assert_eq!(w.used(), 5);
        drop(w);
        assert_eq!(bufs, vec![vec![0, 7, 7], vec![8, 8, 0, 0, 0]]);
    }

    #[test]
    fn test_empty_writer_takes_nothing() {
        let mut w = GuestWriter::empty();
        assert!(w.write_at(0, b"x").is_err());
        assert!(w.with_slices(0, 1, |_| Ok((0, ()))).is_err());
        assert_eq!(w.capacity(), 0);
    }
}
