//! Reading file bytes straight into guest memory.
//!
//! The guest may write its buffers at any moment, even while we fill them
//! (a buggy or hostile driver), so no Rust reference (`&mut [u8]`) to
//! guest memory may exist: two writers to memory behind a `&mut` is
//! undefined behaviour whatever the bytes. Guest memory therefore stays a
//! [`VolatileSlice`] (a pointer and a length whose constructor promised
//! they are valid for the slice's lifetime) and is written either with
//! vm-memory's volatile copies or, here, by the kernel: `preadv(2)` is
//! given the slices' addresses and writes them itself, as it would for
//! the guest's own DMA; Rust code never dereferences them. Whatever the
//! guest does meanwhile only changes its own bytes.

use std::io;
use std::os::fd::RawFd;

use vm_memory::bitmap::BitmapSlice;
use vm_memory::volatile_memory::PtrGuardMut;
use vm_memory::VolatileSlice;

use super::check_size;

/// Most iovecs passed to one preadv(2) (below the kernel's `UIO_MAXIOV`).
const MAX_IOV: usize = 64;

/// Fills every slice of `bufs`, in order, with the bytes of file `fd`
/// from `offset` on (preadv(2), continued after short reads and `EINTR`).
/// Fails with `UnexpectedEof` when the file ends first; the bytes already
/// read stay written either way.
pub fn pread_exact<B: BitmapSlice>(
    fd: RawFd,
    bufs: &[VolatileSlice<'_, B>],
    mut offset: u64,
) -> io::Result<()> {
    // Position: slice `at`, byte `skip` of it.
    let (mut at, mut skip) = (0usize, 0usize);
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_IOV];
    // Keep the slices' pointers valid until the call is done.
    let mut guards: Vec<PtrGuardMut> = Vec::with_capacity(MAX_IOV.min(bufs.len()));
    loop {
        // Skip what is full (and empty slices).
        while bufs.get(at).is_some_and(|b| skip >= b.len()) {
            at = at.saturating_add(1);
            skip = 0;
        }
        let Some(rest) = bufs.get(at..) else {
            return Ok(());
        };
        if rest.is_empty() {
            return Ok(());
        }
        guards.clear();
        let mut cnt = 0usize;
        for (v, b) in iov.iter_mut().zip(rest) {
            let start = if cnt == 0 { skip } else { 0 };
            let guard = b.ptr_guard_mut();
            // `start < b.len()` for the first slice (skipped above), 0 for
            // the others: the pointer stays inside the slice.
            v.iov_base = guard.as_ptr().wrapping_add(start).cast();
            v.iov_len = b.len().saturating_sub(start);
            guards.push(guard);
            cnt = cnt.saturating_add(1);
        }
        let off = libc::off_t::try_from(offset).map_err(io::Error::other)?;
        let cnt_c = libc::c_int::try_from(cnt).map_err(io::Error::other)?;
        // SAFETY: each of the first `cnt` iovecs covers memory inside one
        // `VolatileSlice` of `bufs` (from `start` to its end), which the
        // slice's constructor guarantees is valid for writes for the
        // slice's lifetime, which outlasts this call (the slices are
        // borrowed, their pointer guards held in `guards`). The kernel writes that memory itself; no Rust
        // reference to it exists, so concurrent writes by the guest are
        // no data race in Rust's sense.
        let n = unsafe { libc::preadv(fd, iov.as_ptr(), cnt_c, off) };
        let n = match check_size(n) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("file ends at byte {offset}"),
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        offset = offset.saturating_add(n as u64);
        // Advance over what was written, marking it dirty.
        let mut left = n;
        while left > 0 {
            let Some(b) = bufs.get(at) else {
                break;
            };
            let k = left.min(b.len().saturating_sub(skip));
            b.bitmap().mark_dirty(skip, k);
            left = left.saturating_sub(k);
            skip = skip.saturating_add(k);
            if skip >= b.len() {
                at = at.saturating_add(1);
                skip = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    fn file_of(bytes: &[u8]) -> std::fs::File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn test_pread_fills_slices_in_order() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let f = file_of(&data);
        let mut a = vec![0u8; 3];
        let mut b = vec![0u8; 0];
        let mut c = vec![0u8; 500];
        let slices = [
            VolatileSlice::from(a.as_mut_slice()),
            VolatileSlice::from(b.as_mut_slice()),
            VolatileSlice::from(c.as_mut_slice()),
        ];
        pread_exact(f.as_raw_fd(), &slices, 10).unwrap();
        assert_eq!(a, &data[10..13]);
        assert_eq!(c, &data[13..513]);
    }

    #[test]
    fn test_pread_past_the_end_is_eof() {
        let f = file_of(b"abcdef");
        let mut a = vec![0u8; 4];
        let mut b = vec![0u8; 4];
        let slices = [
            VolatileSlice::from(a.as_mut_slice()),
            VolatileSlice::from(b.as_mut_slice()),
        ];
        let e = pread_exact(f.as_raw_fd(), &slices, 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // What was there was read.
        assert_eq!(a, b"abcd");
        assert_eq!(&b[..2], b"ef");
    }

    #[test]
    fn test_pread_over_many_slices() {
        // More slices than one preadv takes.
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        let f = file_of(&data);
        let mut bufs: Vec<Vec<u8>> = (0..150).map(|i| vec![0u8; 1 + i % 20]).collect();
        let total: usize = bufs.iter().map(Vec::len).sum();
        let slices: Vec<VolatileSlice<'_>> = bufs
            .iter_mut()
            .map(|b| VolatileSlice::from(b.as_mut_slice()))
            .collect();
        pread_exact(f.as_raw_fd(), &slices, 5).unwrap();
        drop(slices);
        assert_eq!(bufs.concat(), &data[5..5 + total]);
    }

    #[test]
    fn test_pread_bad_descriptor_fails() {
        let mut a = vec![0u8; 4];
        let slices = [VolatileSlice::from(a.as_mut_slice())];
        let e = pread_exact(987_654, &slices, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
        assert!(pread_exact(987_654, &[] as &[VolatileSlice<'_>], 0).is_ok());
    }
}
