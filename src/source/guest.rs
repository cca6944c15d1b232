//! An image in the guest's own RAM: a byte range `[gpa, gpa + len)` of
//! guest-physical memory, read through the vhost-user memory table.
//!
//! The guest can rewrite that memory at any moment, so this source only
//! ever copies bytes out (vm-memory's bounds-checked, region-crossing
//! `read`) and never lends a borrowed slice ([`Source::slice`] is `None`):
//! every byte the EROFS layer validates is a private copy, which the guest
//! cannot change between the check and the use.
//!
//! The memory table is the connection's [`GuestMemoryAtomic`], so each read
//! sees the table of the moment (SET_MEM_TABLE, ADD/REM_MEM_REG); a read of
//! a range not (or no longer) mapped fails with an `io::Error`, never a
//! panic.

use std::fmt;
use std::io;

use vm_memory::{
    Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap,
    GuestMemoryRegion,
};

use super::{clamp_read, Source};

/// `len` bytes of guest memory at guest-physical address `gpa` (any
/// alignment; may cross memory regions).
pub struct GuestMemorySource {
    mem: GuestMemoryAtomic<GuestMemoryMmap>,
    gpa: u64,
    len: u64,
}

impl fmt::Debug for GuestMemorySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestMemorySource")
            .field("gpa", &format_args!("{:#x}", self.gpa))
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl GuestMemorySource {
    /// The range `[gpa, gpa + len)` of `mem` (not checked against the
    /// memory table: see [`Self::check_mapped`]); fails only when the range
    /// wraps around the address space.
    pub fn new(mem: GuestMemoryAtomic<GuestMemoryMmap>, gpa: u64, len: u64) -> io::Result<Self> {
        if gpa.checked_add(len).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("guest range {gpa:#x}+{len:#x} wraps around the address space"),
            ));
        }
        Ok(Self { mem, gpa, len })
    }

    /// Guest-physical address of the first byte.
    pub fn gpa(&self) -> u64 {
        self.gpa
    }

    /// Whether the whole range is mapped in the current memory table; the
    /// error says where the first unmapped byte is.
    pub fn check_mapped(&self) -> io::Result<()> {
        let mem = self.mem.memory();
        if mem.num_regions() == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no guest memory table yet (SET_MEM_TABLE not received)",
            ));
        }
        // Walk the range region by region, as reads do.
        let end = self.gpa.saturating_add(self.len);
        let mut at = self.gpa;
        while at < end {
            let Some(region) = mem.find_region(GuestAddress(at)) else {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "guest range {:#x}..{end:#x}: {at:#x} is not in guest memory",
                        self.gpa
                    ),
                ));
            };
            let region_end = region.last_addr().0.saturating_add(1);
            if region_end <= at {
                // Cannot happen for a region containing `at`; never loop.
                return Err(io::Error::other("inconsistent memory region"));
            }
            at = region_end;
        }
        Ok(())
    }
}

impl Source for GuestMemorySource {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let buf = clamp_read(buf, offset, self.len);
        let n = buf.len();
        if n == 0 {
            return Ok(0);
        }
        // In [gpa, gpa + len): offset < len and gpa + len does not wrap.
        let addr = self.gpa.saturating_add(offset);
        // One snapshot of the memory table for the whole read.
        let mem = self.mem.memory();
        mem.read_slice(buf, GuestAddress(addr)).map_err(|e| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("guest memory {addr:#x}+{n:#x} (image byte {offset}): {e}"),
            )
        })?;
        Ok(n)
    }

    fn size(&self) -> u64 {
        self.len
    }

    // `slice` stays `None`: the guest may change its memory under a borrow.
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two regions: [0x1000, 0x2000) and [0x2000, 0x3000), then a hole,
    /// then [0x4000, 0x5000); byte at GPA a is `a as u8 ^ (a >> 8) as u8`.
    fn memory() -> GuestMemoryAtomic<GuestMemoryMmap> {
        GuestMemoryAtomic::new(mmap())
    }

    fn mmap() -> GuestMemoryMmap {
        let m = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0x1000), 0x1000),
            (GuestAddress(0x2000), 0x1000),
            (GuestAddress(0x4000), 0x1000),
        ])
        .unwrap();
        for base in [0x1000u64, 0x2000, 0x4000] {
            let bytes: Vec<u8> = (base..base + 0x1000).map(pattern).collect();
            m.write_slice(&bytes, GuestAddress(base)).unwrap();
        }
        m
    }

    fn pattern(a: u64) -> u8 {
        (a as u8) ^ ((a >> 8) as u8)
    }

    #[test]
    fn test_read_crossing_region_boundary() {
        let src = GuestMemorySource::new(memory(), 0x1ff3, 0x100).unwrap();
        src.check_mapped().unwrap();
        let mut buf = vec![0u8; 0x40];
        assert_eq!(src.read_at(&mut buf, 0).unwrap(), 0x40);
        let want: Vec<u8> = (0x1ff3..0x2033).map(pattern).collect();
        assert_eq!(buf, want);
        assert!(src.slice(0, 4).is_none());
    }

    #[test]
    fn test_read_past_len_is_short_then_zero() {
        let src = GuestMemorySource::new(memory(), 0x1003, 0x20).unwrap();
        let mut buf = vec![0u8; 0x40];
        assert_eq!(src.read_at(&mut buf, 0x10).unwrap(), 0x10);
        let want: Vec<u8> = (0x1013..0x1023).map(pattern).collect();
        assert_eq!(&buf[..0x10], &want[..]);
        assert_eq!(src.read_at(&mut buf, 0x20).unwrap(), 0);
        assert_eq!(src.read_at(&mut buf, u64::MAX).unwrap(), 0);
        // Never reads the byte after the range.
        let err = super::super::read_exact_at(&src, &mut buf, 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn test_read_into_hole_is_an_error() {
        let src = GuestMemorySource::new(memory(), 0x2f00, 0x1200).unwrap();
        assert!(src.check_mapped().is_err());
        let mut buf = vec![0u8; 0x200];
        // Entirely mapped part: fine.
        assert_eq!(src.read_at(&mut buf[..0x100], 0).unwrap(), 0x100);
        // Crossing into the hole, or inside it: errors.
        assert!(src.read_at(&mut buf, 0).is_err());
        assert!(src.read_at(&mut buf, 0x400).is_err());
        // Past the hole, mapped again.
        assert_eq!(src.read_at(&mut buf[..0x10], 0x1100).unwrap(), 0x10);
        // Not mapped at all.
        let src = GuestMemorySource::new(memory(), 0x10_0000, 0x10).unwrap();
        assert!(src.check_mapped().is_err());
        assert!(src.read_at(&mut buf, 0).is_err());
    }

    #[test]
    fn test_memory_table_updates_are_seen() {
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::<()>::new());
        let src = GuestMemorySource::new(mem.clone(), 0x1000, 0x10).unwrap();
        let mut buf = [0u8; 0x10];
        assert!(src.check_mapped().is_err());
        assert!(src.read_at(&mut buf, 0).is_err());
        mem.lock().unwrap().replace(mmap());
        src.check_mapped().unwrap();
        assert_eq!(src.read_at(&mut buf, 0).unwrap(), 0x10);
        assert_eq!(buf[1], pattern(0x1001));
    }

    #[test]
    fn test_wrapping_range_is_rejected() {
        assert!(GuestMemorySource::new(memory(), u64::MAX - 3, 8).is_err());
        let src = GuestMemorySource::new(memory(), u64::MAX - 8, 8).unwrap();
        let mut buf = [0u8; 8];
        assert!(src.read_at(&mut buf, 0).is_err());
    }
}
