//! Request decoding: the header, then each opcode's arguments.
//!
//! Trusts nothing: the buffer may be truncated, `len` may lie, names may
//! lack their NUL and counts may exceed the bytes present. Every read goes
//! through zerocopy's `read_from_prefix` or `.get()`, so decoding any byte
//! string returns `Ok` or an [`DecodeError`], never panics, and allocates
//! nothing.

use zerocopy::{FromBytes, Immutable, KnownLayout};

use super::abi::{self, *};

/// Size of the request header.
pub const IN_HEADER_LEN: usize = std::mem::size_of::<InHeader>();

/// Why a request could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the header needs.
    #[error("request of {have} bytes is shorter than the {IN_HEADER_LEN}-byte header")]
    ShortHeader {
        /// Bytes present.
        have: usize,
    },
    /// `len` disagrees with the bytes present.
    #[error("header len {len} but {have} bytes present (minimum {IN_HEADER_LEN})")]
    BadLength {
        /// The header's `len`.
        len: u32,
        /// Bytes present.
        have: usize,
    },
    /// Extension area larger than the arguments.
    #[error("total_extlen {extlen} * 8 exceeds the {args} argument bytes")]
    BadExtLen {
        /// The header's `total_extlen`.
        extlen: u16,
        /// Argument bytes.
        args: usize,
    },
    /// Arguments shorter than the opcode's fixed structure.
    #[error("opcode {opcode}: {what} needs {need} bytes, {have} present")]
    ShortArgs {
        /// The opcode.
        opcode: u32,
        /// The structure.
        what: &'static str,
        /// Its size.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// A name without its terminating NUL.
    #[error("opcode {opcode}: name is not NUL-terminated")]
    NoNul {
        /// The opcode.
        opcode: u32,
    },
    /// A name longer than any the kernel sends.
    #[error("opcode {opcode}: name of {len} bytes")]
    NameTooLong {
        /// The opcode.
        opcode: u32,
        /// The name's length.
        len: usize,
    },
}

impl DecodeError {
    /// The errno the reply carries.
    pub fn errno(&self) -> i32 {
        match self {
            DecodeError::NameTooLong { .. } => libc::ENAMETOOLONG,
            _ => libc::EINVAL,
        }
    }
}

/// A header that failed to decode, with the `unique` to answer with when
/// the bytes hold one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderError {
    /// The request's `unique`, if at least 16 bytes arrived.
    pub unique: Option<u64>,
    /// What is wrong.
    pub error: DecodeError,
}

/// The `unique` of a (possibly partial or malformed) request, if at least
/// the bytes up to it arrived: what an error reply to it carries.
pub fn unique_of(buf: &[u8]) -> Option<u64> {
    let off = std::mem::offset_of!(InHeader, unique);
    let end = off.checked_add(8)?;
    buf.get(off..end)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_ne_bytes)
}

/// Splits a request into its header and argument bytes (extensions cut
/// off). `len` may be shorter than `buf` (a transport's buffer holding more
/// than the message): the bytes after `len` are ignored.
pub fn parse_header(buf: &[u8]) -> Result<(InHeader, &[u8]), HeaderError> {
    let unique = unique_of(buf);
    let Ok((hdr, _)) = InHeader::read_from_prefix(buf) else {
        return Err(HeaderError {
            unique,
            error: DecodeError::ShortHeader { have: buf.len() },
        });
    };
    let len = usize::try_from(hdr.len).unwrap_or(usize::MAX);
    let bad_len = DecodeError::BadLength {
        len: hdr.len,
        have: buf.len(),
    };
    if len < IN_HEADER_LEN {
        return Err(HeaderError {
            unique,
            error: bad_len,
        });
    }
    let Some(args) = buf.get(IN_HEADER_LEN..len) else {
        return Err(HeaderError {
            unique,
            error: bad_len,
        });
    };
    let ext = usize::from(hdr.total_extlen).saturating_mul(8);
    let Some(args_len) = args.len().checked_sub(ext) else {
        return Err(HeaderError {
            unique,
            error: DecodeError::BadExtLen {
                extlen: hdr.total_extlen,
                args: args.len(),
            },
        });
    };
    Ok((hdr, args.get(..args_len).unwrap_or(&[])))
}

/// Rebuilds a request as /dev/fuse frames it (in-header, op header,
/// payload) from the three areas a FUSE-over-io_uring ring entry delivers
/// it in: `in_area` starts with the in-header, `op_area` holds the op
/// header (the bytes of `len` that are neither header nor payload) and
/// `payload` the rest. Fails, with the `unique` when readable, when the
/// header is short or its `len` does not add up.
pub fn reassemble(
    in_area: &[u8],
    op_area: &[u8],
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), HeaderError> {
    out.clear();
    let unique = unique_of(in_area);
    let Ok((hdr, _)) = InHeader::read_from_prefix(in_area) else {
        return Err(HeaderError {
            unique,
            error: DecodeError::ShortHeader {
                have: in_area.len(),
            },
        });
    };
    let op_len = usize::try_from(hdr.len)
        .ok()
        .and_then(|len| len.checked_sub(IN_HEADER_LEN)?.checked_sub(payload.len()));
    let (Some(head), Some(op)) = (
        in_area.get(..IN_HEADER_LEN),
        op_len.and_then(|n| op_area.get(..n)),
    ) else {
        return Err(HeaderError {
            unique,
            error: DecodeError::BadLength {
                len: hdr.len,
                have: IN_HEADER_LEN
                    .saturating_add(op_area.len())
                    .saturating_add(payload.len()),
            },
        });
    };
    out.extend_from_slice(head);
    out.extend_from_slice(op);
    out.extend_from_slice(payload);
    Ok(())
}

/// One decoded request body.
#[derive(Debug, Clone, Copy)]
pub enum Op<'a> {
    /// FUSE_INIT (fields past those sent are zero).
    Init(InitIn),
    /// FUSE_LOOKUP of `name` in the node.
    Lookup(&'a [u8]),
    /// FUSE_FORGET.
    Forget(ForgetIn),
    /// FUSE_BATCH_FORGET.
    BatchForget(BatchForget<'a>),
    /// FUSE_GETATTR.
    Getattr(GetattrIn),
    /// FUSE_STATX.
    Statx(StatxIn),
    /// FUSE_READLINK.
    Readlink,
    /// FUSE_OPEN.
    Open(OpenIn),
    /// FUSE_READ.
    Read(ReadIn),
    /// FUSE_RELEASE.
    Release(ReleaseIn),
    /// FUSE_OPENDIR.
    Opendir(OpenIn),
    /// FUSE_READDIR.
    Readdir(ReadIn),
    /// FUSE_READDIRPLUS.
    Readdirplus(ReadIn),
    /// FUSE_RELEASEDIR.
    Releasedir(ReleaseIn),
    /// FUSE_STATFS.
    Statfs,
    /// FUSE_GETXATTR: the caller's buffer size and the name.
    Getxattr(u32, &'a [u8]),
    /// FUSE_LISTXATTR: the caller's buffer size.
    Listxattr(u32),
    /// FUSE_ACCESS.
    Access(AccessIn),
    /// FUSE_FLUSH.
    Flush(FlushIn),
    /// FUSE_FSYNC.
    Fsync(FsyncIn),
    /// FUSE_FSYNCDIR.
    Fsyncdir(FsyncIn),
    /// FUSE_LSEEK.
    Lseek(LseekIn),
    /// FUSE_INTERRUPT.
    Interrupt(InterruptIn),
    /// FUSE_SYNCFS.
    Syncfs,
    /// FUSE_DESTROY.
    Destroy,
    /// FUSE_SETUPMAPPING (DAX).
    Setupmapping(SetupmappingIn),
    /// FUSE_REMOVEMAPPING (DAX).
    Removemapping(Removemapping<'a>),
    /// An opcode that would change the filesystem.
    Mutating(u32),
    /// A message that gets no reply (FUSE_NOTIFY_REPLY).
    Ignored(u32),
    /// Anything else.
    Unsupported(u32),
}

/// The entries of a FUSE_BATCH_FORGET, decoded lazily.
#[derive(Debug, Clone, Copy)]
pub struct BatchForget<'a> {
    count: u32,
    entries: &'a [u8],
}

impl BatchForget<'_> {
    /// The entries present: at most `count`, and only whole ones.
    pub fn iter(&self) -> impl Iterator<Item = ForgetOne> + '_ {
        self.entries
            .chunks_exact(std::mem::size_of::<ForgetOne>())
            .take(usize::try_from(self.count).unwrap_or(usize::MAX))
            .filter_map(|c| ForgetOne::read_from_bytes(c).ok())
    }
}

/// The ranges of a FUSE_REMOVEMAPPING, decoded lazily.
#[derive(Debug, Clone, Copy)]
pub struct Removemapping<'a> {
    count: u32,
    entries: &'a [u8],
}

impl Removemapping<'_> {
    /// The count the request claims.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The ranges present: at most `count`, and only whole ones.
    pub fn iter(&self) -> impl Iterator<Item = RemovemappingOne> + '_ {
        self.entries
            .chunks_exact(std::mem::size_of::<RemovemappingOne>())
            .take(usize::try_from(self.count).unwrap_or(usize::MAX))
            .filter_map(|c| RemovemappingOne::read_from_bytes(c).ok())
    }
}

fn take<'a, T: FromBytes + KnownLayout + Immutable>(
    opcode: u32,
    args: &'a [u8],
    what: &'static str,
) -> Result<(T, &'a [u8]), DecodeError> {
    T::read_from_prefix(args).map_err(|_| DecodeError::ShortArgs {
        opcode,
        what,
        need: std::mem::size_of::<T>(),
        have: args.len(),
    })
}

fn fixed<T: FromBytes + KnownLayout + Immutable>(
    opcode: u32,
    args: &[u8],
    what: &'static str,
) -> Result<T, DecodeError> {
    take(opcode, args, what).map(|(t, _)| t)
}

/// The NUL-terminated name at the start of `args`.
fn name(opcode: u32, args: &[u8]) -> Result<&[u8], DecodeError> {
    let nul = args
        .iter()
        .position(|&b| b == 0)
        .ok_or(DecodeError::NoNul { opcode })?;
    if nul > abi::NAME_MAX {
        return Err(DecodeError::NameTooLong { opcode, len: nul });
    }
    Ok(args.get(..nul).unwrap_or(&[]))
}

impl<'a> Op<'a> {
    /// Decodes the arguments of `opcode`.
    pub fn decode(opcode: u32, args: &'a [u8]) -> Result<Op<'a>, DecodeError> {
        Ok(match opcode {
            INIT => {
                if args.len() < INIT_IN_COMPAT_SIZE {
                    return Err(DecodeError::ShortArgs {
                        opcode,
                        what: "fuse_init_in",
                        need: INIT_IN_COMPAT_SIZE,
                        have: args.len(),
                    });
                }
                let mut full = [0u8; std::mem::size_of::<InitIn>()];
                let n = args.len().min(full.len());
                full[..n].copy_from_slice(&args[..n]);
                Op::Init(fixed(opcode, &full, "fuse_init_in")?)
            }
            LOOKUP => Op::Lookup(name(opcode, args)?),
            FORGET => Op::Forget(fixed(opcode, args, "fuse_forget_in")?),
            BATCH_FORGET => {
                let (h, rest): (BatchForgetIn, _) = take(opcode, args, "fuse_batch_forget_in")?;
                Op::BatchForget(BatchForget {
                    count: h.count,
                    entries: rest,
                })
            }
            GETATTR => Op::Getattr(fixed(opcode, args, "fuse_getattr_in")?),
            STATX => Op::Statx(fixed(opcode, args, "fuse_statx_in")?),
            READLINK => Op::Readlink,
            OPEN => Op::Open(fixed(opcode, args, "fuse_open_in")?),
            READ => Op::Read(fixed(opcode, args, "fuse_read_in")?),
            RELEASE => Op::Release(fixed(opcode, args, "fuse_release_in")?),
            OPENDIR => Op::Opendir(fixed(opcode, args, "fuse_open_in")?),
            READDIR => Op::Readdir(fixed(opcode, args, "fuse_read_in")?),
            READDIRPLUS => Op::Readdirplus(fixed(opcode, args, "fuse_read_in")?),
            RELEASEDIR => Op::Releasedir(fixed(opcode, args, "fuse_release_in")?),
            STATFS => Op::Statfs,
            GETXATTR => {
                let (g, rest): (GetxattrIn, _) = take(opcode, args, "fuse_getxattr_in")?;
                Op::Getxattr(g.size, name(opcode, rest)?)
            }
            LISTXATTR => {
                let g: GetxattrIn = fixed(opcode, args, "fuse_getxattr_in")?;
                Op::Listxattr(g.size)
            }
            ACCESS => Op::Access(fixed(opcode, args, "fuse_access_in")?),
            FLUSH => Op::Flush(fixed(opcode, args, "fuse_flush_in")?),
            FSYNC => Op::Fsync(fixed(opcode, args, "fuse_fsync_in")?),
            FSYNCDIR => Op::Fsyncdir(fixed(opcode, args, "fuse_fsync_in")?),
            LSEEK => Op::Lseek(fixed(opcode, args, "fuse_lseek_in")?),
            INTERRUPT => Op::Interrupt(fixed(opcode, args, "fuse_interrupt_in")?),
            SYNCFS => Op::Syncfs,
            DESTROY => Op::Destroy,
            SETUPMAPPING => Op::Setupmapping(fixed(opcode, args, "fuse_setupmapping_in")?),
            REMOVEMAPPING => {
                let (h, rest): (RemovemappingIn, _) = take(opcode, args, "fuse_removemapping_in")?;
                Op::Removemapping(Removemapping {
                    count: h.count,
                    entries: rest,
                })
            }
            SETATTR | SYMLINK | MKNOD | MKDIR | UNLINK | RMDIR | RENAME | LINK | WRITE
            | SETXATTR | REMOVEXATTR | CREATE | FALLOCATE | RENAME2 | COPY_FILE_RANGE | TMPFILE
            | COPY_FILE_RANGE_64 => Op::Mutating(opcode),
            NOTIFY_REPLY => Op::Ignored(opcode),
            other => Op::Unsupported(other),
        })
    }

    /// Whether the kernel expects a reply.
    pub fn wants_reply(&self) -> bool {
        !matches!(
            self,
            Op::Forget(_) | Op::BatchForget(_) | Op::Interrupt(_) | Op::Ignored(_)
        )
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use zerocopy::IntoBytes;

    use super::*;

    fn request(opcode: u32, args: &[u8]) -> Vec<u8> {
        let hdr = InHeader {
            len: (IN_HEADER_LEN + args.len()) as u32,
            opcode,
            unique: 77,
            nodeid: 1,
            ..Default::default()
        };
        let mut v = hdr.as_bytes().to_vec();
        v.extend_from_slice(args);
        v
    }

    type Want = Result<usize, (Option<u64>, i32)>;

    #[test]
    fn test_parse_header_table() {
        let good = request(GETATTR, &[0; 16]);
        let mut long_len = good.clone();
        long_len[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        let mut tiny_len = good.clone();
        tiny_len[0..4].copy_from_slice(&8u32.to_ne_bytes());
        let mut ext = good.clone();
        ext[36..38].copy_from_slice(&3u16.to_ne_bytes());
        let cases: &[(&str, &[u8], Want)] = &[
            ("empty", &[], Err((None, libc::EINVAL))),
            ("15 bytes", &good[..15], Err((None, libc::EINVAL))),
            ("39 bytes", &good[..39], Err((Some(77), libc::EINVAL))),
            ("len past buffer", &long_len, Err((Some(77), libc::EINVAL))),
            ("len below header", &tiny_len, Err((Some(77), libc::EINVAL))),
            ("extensions past args", &ext, Err((Some(77), libc::EINVAL))),
            ("good", &good, Ok(16)),
        ];
        for (name, buf, want) in cases {
            let got = parse_header(buf)
                .map(|(_, a)| a.len())
                .map_err(|e| (e.unique, e.error.errno()));
            assert_eq!(&got, want, "{name}");
        }
    }

    #[test]
    fn test_decode_args_table() {
        let cases: &[(&str, u32, &[u8], Option<i32>)] = &[
            ("lookup without NUL", LOOKUP, b"abc", Some(libc::EINVAL)),
            ("lookup", LOOKUP, b"abc\0", None),
            ("getattr short", GETATTR, &[0; 15], Some(libc::EINVAL)),
            ("read short", READ, &[0; 39], Some(libc::EINVAL)),
            ("init short", INIT, &[0; 15], Some(libc::EINVAL)),
            ("init compat", INIT, &[0; 16], None),
            ("getxattr no name", GETXATTR, &[0; 8], Some(libc::EINVAL)),
            (
                "batch forget short",
                BATCH_FORGET,
                &[0; 4],
                Some(libc::EINVAL),
            ),
            ("unknown", 9999, &[], None),
        ];
        for (name, op, args, want) in cases {
            let got = Op::decode(*op, args).err().map(|e| e.errno());
            assert_eq!(&got, want, "{name}");
        }
        let long = [b'a'; 2000];
        let mut named = long.to_vec();
        named.push(0);
        let e = Op::decode(LOOKUP, &named).unwrap_err();
        assert_eq!(e.errno(), libc::ENAMETOOLONG);
    }

    #[test]
    fn test_batch_forget_count_beyond_bytes_is_clipped() {
        let mut args = BatchForgetIn {
            count: u32::MAX,
            dummy: 0,
        }
        .as_bytes()
        .to_vec();
        args.extend_from_slice(
            ForgetOne {
                nodeid: 5,
                nlookup: 2,
            }
            .as_bytes(),
        );
        args.extend_from_slice(&[1, 2, 3]);
        let Op::BatchForget(b) = Op::decode(BATCH_FORGET, &args).unwrap() else {
            panic!("not a batch forget");
        };
        let got: Vec<(u64, u64)> = b.iter().map(|f| (f.nodeid, f.nlookup)).collect();
        assert_eq!(got, vec![(5, 2)]);
    }

    #[test]
    fn test_unique_of_needs_its_bytes() {
        let req = request(abi::GETATTR, &[0; 16]);
        assert_eq!(unique_of(&req), Some(77));
        assert_eq!(unique_of(&req[..16]), Some(77));
        assert_eq!(unique_of(&req[..15]), None);
        assert_eq!(unique_of(&[]), None);
    }

    #[test]
    fn test_reassemble_table() {
        // A READ: 40-byte header, 40-byte op header, no payload; a
        // 5-byte payload after a 0-byte op header; then broken frames.
        let read = request(abi::READ, &[9; 40]);
        let (head, op) = read.split_at(IN_HEADER_LEN);
        let mut out = Vec::new();
        reassemble(&read, op, &[], &mut out).unwrap();
        assert_eq!(out, read);
        let mut hdr = InHeader::read_from_prefix(head).unwrap().0;
        hdr.len = (IN_HEADER_LEN + 5) as u32;
        reassemble(hdr.as_bytes(), &[1; 128], b"abcde", &mut out).unwrap();
        assert_eq!(&out[IN_HEADER_LEN..], b"abcde");
        let table: &[(u32, usize, Option<u64>)] = &[
            // len shorter than header + payload.
            (IN_HEADER_LEN as u32 + 2, 5, Some(77)),
            // Op header longer than its area.
            (IN_HEADER_LEN as u32 + 200, 0, Some(77)),
        ];
        for &(len, payload, unique) in table {
            hdr.len = len;
            let e = reassemble(hdr.as_bytes(), &[0; 128], &vec![0; payload], &mut out)
                .expect_err("broken frame");
            assert_eq!(e.unique, unique, "len {len}");
            assert_eq!(e.error.errno(), libc::EINVAL);
        }
        let e = reassemble(&head[..20], &[], &[], &mut out).unwrap_err();
        assert_eq!(e.unique, Some(77));
        assert!(matches!(e.error, DecodeError::ShortHeader { have: 20 }));
    }
}
