//! One descriptor chain split into the request (its readable part, copied
//! out) and the reply space (its writable part, borrowed in place).
//!
//! Trusts nothing in the chain. virtio-queue walks it (bounded by a ttl,
//! nested indirect tables refused, total length capped at 4 GiB) and
//! vm-memory checks every address range; here we check what they leave to
//! the device: readable descriptors come first, lengths add up without
//! overflow, the readable part is bounded before anything is copied,
//! writable buffers do not overlap, and a chain that stops while its last
//! descriptor still says "next" is broken rather than short.
//!
//! virtio-queue's own `Reader`/`Writer` are not used: they copy through
//! `io::Read`/`io::Write` and do not hand out the guest buffers, which the
//! in-place file reads of [`GuestWriter`] need.

use vm_memory::{GuestMemory, GuestMemoryMmap, Permissions, VolatileSlice};

use virtio_queue::desc::split::Descriptor;

use super::error::ChainError;
use super::writer::GuestWriter;

/// A chain taken apart. When the chain is malformed, `fault` says how,
/// `request` holds the readable bytes copied before the fault (so that an
/// error reply can carry the request's `unique`) and `writer` the writable
/// buffers found before it (so that the error reply has somewhere to go).
#[derive(Debug)]
pub struct Parsed<'a> {
    /// The readable bytes (the request), or a prefix of them on a fault.
    pub request: Vec<u8>,
    /// The writable part.
    pub writer: GuestWriter<'a>,
    /// Why the chain is unusable, if it is.
    pub fault: Option<ChainError>,
}

/// Takes apart the chain with head `head` whose descriptors `descs` yields
/// (as virtio-queue's `DescriptorChain` iterator does), copying at most
/// `max_request` readable bytes.
pub fn parse<'a>(
    mem: &'a GuestMemoryMmap,
    head: u16,
    descs: impl Iterator<Item = Descriptor>,
    max_request: usize,
) -> Parsed<'a> {
    let mut p = Parser {
        mem,
        head,
        max_request,
        request: Vec::new(),
        readable: 0,
        writable: Vec::new(),
        capacity: 0,
        seen_writable: false,
    };
    let fault = p.run(descs).err();
    match p.finish_writable() {
        Ok(writer) => Parsed {
            request: p.request,
            writer,
            fault,
        },
        Err(e) => Parsed {
            request: p.request,
            writer: GuestWriter::empty(),
            fault: Some(e),
        },
    }
}

struct Parser<'a> {
    mem: &'a GuestMemoryMmap,
    head: u16,
    max_request: usize,
    request: Vec<u8>,
    readable: u64,
    writable: Vec<VolatileSlice<'a>>,
    capacity: usize,
    seen_writable: bool,
}

impl<'a> Parser<'a> {
    /// Walks the chain. A fault in the readable part does not stop the
    /// walk: the writable buffers after it are still collected, so that
    /// the error reply reaches the guest. A fault in the writable part
    /// stops it (the buffers before it are kept).
    fn run(&mut self, descs: impl Iterator<Item = Descriptor>) -> Result<(), ChainError> {
        let mut count = 0usize;
        let mut last_has_next = false;
        let mut fault = None;
        for (index, d) in descs.enumerate() {
            count = index.saturating_add(1);
            last_has_next = d.has_next();
            if d.is_write_only() {
                if let Err(e) = self.add_writable(index, &d) {
                    return Err(fault.unwrap_or(e));
                }
            } else if self.seen_writable {
                return Err(fault.unwrap_or(ChainError::ReadableAfterWritable {
                    head: self.head,
                    index,
                }));
            } else if fault.is_none() {
                fault = self.add_readable(index, &d).err();
            }
        }
        if let Some(e) = fault {
            return Err(e);
        }
        if last_has_next {
            return Err(ChainError::Broken {
                head: self.head,
                count,
            });
        }
        Ok(())
    }

    fn slices(
        &self,
        index: usize,
        d: &Descriptor,
        access: Permissions,
    ) -> Result<Vec<VolatileSlice<'a>>, ChainError> {
        let err = |source| ChainError::OutsideGuestMemory {
            head: self.head,
            index,
            addr: d.addr().0,
            len: d.len(),
            source,
        };
        let mem: &'a GuestMemoryMmap = self.mem;
        let iter = GuestMemory::get_slices(mem, d.addr(), d.len() as usize, access).map_err(err)?;
        iter.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    fn add_readable(&mut self, index: usize, d: &Descriptor) -> Result<(), ChainError> {
        self.readable = self.readable.saturating_add(u64::from(d.len()));
        let slices = self.slices(index, d, Permissions::Read)?;
        for vs in slices {
            // Copy no more than `max_request` bytes in all: on a too-long
            // request the prefix still tells whom to answer.
            let start = self.request.len();
            let n = vs.len().min(self.max_request.saturating_sub(start));
            if n == 0 {
                break;
            }
            self.request.resize(start.saturating_add(n), 0);
            if let Some(dst) = self.request.get_mut(start..) {
                vs.copy_to(dst);
            }
        }
        if self.readable > self.max_request as u64 {
            return Err(ChainError::RequestTooLong {
                head: self.head,
                len: self.readable,
                max: self.max_request,
            });
        }
        Ok(())
    }

    fn add_writable(&mut self, index: usize, d: &Descriptor) -> Result<(), ChainError> {
        self.seen_writable = true;
        let slices = self.slices(index, d, Permissions::Write)?;
        self.capacity = self
            .capacity
            .checked_add(d.len() as usize)
            .ok_or(ChainError::WritableOverflow { head: self.head })?;
        self.writable.extend(slices);
        Ok(())
    }

    /// Builds the writer, refusing overlapping writable buffers (the
    /// writer hands them out as distinct `&mut [u8]`).
    fn finish_writable(&mut self) -> Result<GuestWriter<'a>, ChainError> {
        let mut spans: Vec<(usize, usize)> = self
            .writable
            .iter()
            .filter(|vs| !vs.is_empty())
            .map(|vs| (vs.ptr_guard().as_ptr() as usize, vs.len()))
            .collect();
        spans.sort_unstable();
        for pair in spans.windows(2) {
            if let [(a, alen), (b, _)] = pair {
                if a.saturating_add(*alen) > *b {
                    return Err(ChainError::OverlappingWritable { head: self.head });
                }
            }
        }
        Ok(GuestWriter::new(
            std::mem::take(&mut self.writable),
            self.capacity,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    const R: u16 = 0;
    const W: u16 = virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE as u16;
    const N: u16 = virtio_bindings::bindings::virtio_ring::VRING_DESC_F_NEXT as u16;

    /// Two adjacent regions: 0x1000..0x3000 and 0x3000..0x5000.
    fn memory() -> GuestMemoryMmap {
        let m = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0x1000), 0x2000),
            (GuestAddress(0x3000), 0x2000),
        ])
        .unwrap();
        let pattern: Vec<u8> = (0..0x4000u32).map(|i| (i % 251) as u8).collect();
        m.write_slice(&pattern, GuestAddress(0x1000)).unwrap();
        m
    }

    fn d(addr: u64, len: u32, flags: u16) -> Descriptor {
        Descriptor::new(addr, len, flags, 0)
    }

    /// (name, chain, expected fault kind, request length, writable capacity)
    type Case = (
        &'static str,
        Vec<Descriptor>,
        Option<&'static str>,
        usize,
        usize,
    );

    #[test]
    fn test_parse_table() {
        let cases: Vec<Case> = vec![
            (
                "plain",
                vec![d(0x1000, 40, R | N), d(0x2000, 100, W)],
                None,
                40,
                100,
            ),
            (
                "split both ways",
                vec![
                    d(0x1000, 10, R | N),
                    d(0x1100, 30, R | N),
                    d(0x2000, 50, W | N),
                    d(0x2100, 50, W),
                ],
                None,
                40,
                100,
            ),
            ("readable only", vec![d(0x1000, 40, R)], None, 40, 0),
            (
                "spans regions",
                vec![d(0x2ff0, 0x20, R | N), d(0x3ff0, 0x20, W)],
                None,
                0x20,
                0x20,
            ),
            (
                "zero lengths",
                vec![d(0x1000, 0, R | N), d(0x2000, 0, W)],
                None,
                0,
                0,
            ),
            ("empty", vec![], None, 0, 0),
            (
                "writable first",
                vec![d(0x2000, 64, W | N), d(0x1000, 40, R)],
                Some("ReadableAfterWritable"),
                0,
                64,
            ),
            (
                "zero-length writable first",
                vec![d(0x2000, 0, W | N), d(0x1000, 40, R)],
                Some("ReadableAfterWritable"),
                0,
                0,
            ),
            (
                "readable outside",
                vec![d(0x9000, 40, R | N), d(0x2000, 64, W)],
                Some("OutsideGuestMemory"),
                0,
                64,
            ),
            (
                "readable below ram",
                vec![d(0, 40, R | N), d(0x2000, 64, W)],
                Some("OutsideGuestMemory"),
                0,
                64,
            ),
            (
                "writable after a bad one is dropped",
                vec![
                    d(0x1000, 40, R | N),
                    d(0x2000, 16, W | N),
                    d(0x9000, 16, W | N),
                    d(0x2100, 16, W),
                ],
                Some("OutsideGuestMemory"),
                40,
                16,
            ),
            (
                "writable straddles the end",
                vec![d(0x1000, 40, R | N), d(0x4ff0, 0x20, W)],
                Some("OutsideGuestMemory"),
                40,
                0,
            ),
            (
                "address wraps",
                vec![d(u64::MAX - 4, 40, R | N), d(0x2000, 64, W)],
                Some("OutsideGuestMemory"),
                0,
                64,
            ),
            (
                "cut short",
                vec![d(0x1000, 40, R | N), d(0x2000, 64, W | N)],
                Some("Broken"),
                40,
                64,
            ),
            (
                "too long",
                vec![
                    d(0x1000, 0x1800, R | N),
                    d(0x3000, 0x1800, R | N),
                    d(0x2000, 64, W),
                ],
                Some("RequestTooLong"),
                0x2000,
                64,
            ),
            (
                "overlapping writable",
                vec![d(0x1000, 40, R | N), d(0x2000, 64, W | N), d(0x2020, 64, W)],
                Some("OverlappingWritable"),
                40,
                0,
            ),
        ];
        let mem = memory();
        for (name, descs, fault, req_len, cap) in cases {
            let p = parse(&mem, 7, descs.into_iter(), 0x2000);
            let got = p.fault.as_ref().map(|e| format!("{e:?}"));
            match fault {
                None => assert!(got.is_none(), "{name}: {got:?}"),
                Some(kind) => assert!(
                    got.as_deref().is_some_and(|g| g.starts_with(kind)),
                    "{name}: expected {kind}, got {got:?}"
                ),
            }
            assert_eq!(p.request.len(), req_len, "{name}: request length");
            assert_eq!(p.writer.capacity(), cap, "{name}: capacity");
        }
    }

    #[test]
    fn test_parse_copies_request_bytes_in_chain_order() {
        let mem = memory();
        let descs = vec![d(0x1100, 3, R | N), d(0x1000, 2, R | N), d(0x2ffe, 4, R)];
        let p = parse(&mem, 0, descs.into_iter(), 100);
        assert!(p.fault.is_none());
        let at = |a: u64| ((a - 0x1000) % 251) as u8;
        let expected = vec![
            at(0x1100),
            at(0x1101),
            at(0x1102),
            at(0x1000),
            at(0x1001),
            at(0x2ffe),
            at(0x2fff),
            at(0x3000),
            at(0x3001),
        ];
        assert_eq!(p.request, expected);
    }

    #[test]
    fn test_parse_writer_writes_across_regions() {
        let mem = memory();
        let descs = vec![d(0x2ffc, 8, W)];
        let mut p = parse(&mem, 0, descs.into_iter(), 100);
        p.writer.write_at(0, b"abcdefgh").unwrap();
        drop(p);
        let mut back = [0u8; 8];
        mem.read_slice(&mut back, GuestAddress(0x2ffc)).unwrap();
        assert_eq!(&back, b"abcdefgh");
    }
}
