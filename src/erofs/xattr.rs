//! Extended attributes: entry decoding, name prefixes, the name filter,
//! and the walk over an inode's inline and shared entries.

use std::sync::OnceLock;

use zerocopy::FromBytes;

use super::access::ImageRead;
use super::error::At;
use super::inode::{Inode, MetaPos};
use super::metacache::MetaBytes;
use super::ondisk::{self, XattrEntry, XattrIbodyHeader};
use super::{Error, Result};

/// Largest inline xattr area: 12 + 4 * (65535 - 1) bytes.
const XATTR_IBODY_MAX: u32 = 12 + 4 * 65534;

/// One xattr as stored: the resolved short-prefix index, the name after that
/// prefix (a long prefix's infix included) and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    /// Short prefix index (1 user, 2 ACL access, 3 ACL default, 4 trusted,
    /// 5 lustre, 6 security; other values have no name).
    pub index: u8,
    /// Name after the short prefix.
    pub suffix: Vec<u8>,
    /// Value bytes.
    pub value: Vec<u8>,
}

impl Xattr {
    /// The full name as listxattr shows it, or `None` when the kernel hides
    /// it (no handler for the prefix index).
    pub fn full_name(&self) -> Option<Vec<u8>> {
        xattr_full_name(self.index, &self.suffix)
    }
}

/// The short prefix string of an index, as the kernel's handlers list it.
fn prefix_of(index: u8) -> Option<&'static [u8]> {
    match index {
        1 => Some(b"user."),
        2 => Some(b"system.posix_acl_access"),
        3 => Some(b"system.posix_acl_default"),
        4 => Some(b"trusted."),
        6 => Some(b"security."),
        _ => None,
    }
}

/// Full xattr name for a prefix index and suffix; `None` if hidden.
pub fn xattr_full_name(index: u8, suffix: &[u8]) -> Option<Vec<u8>> {
    let p = prefix_of(index)?;
    let mut v = Vec::with_capacity(p.len().saturating_add(suffix.len()));
    v.extend_from_slice(p);
    v.extend_from_slice(suffix);
    Some(v)
}

/// Splits a full name into (index, suffix) the way the VFS routes it to a
/// handler. `None` when no handler takes the name.
pub fn split_name(name: &[u8]) -> Option<(u8, &[u8])> {
    for (idx, p) in [
        (2u8, &b"system.posix_acl_access"[..]),
        (3, b"system.posix_acl_default"),
    ] {
        if name == p {
            return Some((idx, &[]));
        }
    }
    for (idx, p) in [(1u8, &b"user."[..]), (4, b"trusted."), (6, b"security.")] {
        if let Some(rest) = name.strip_prefix(p) {
            return Some((idx, rest));
        }
    }
    None
}

/// A long xattr name prefix from the prefix table.
#[derive(Debug, Clone)]
pub struct LongPrefix {
    /// Short prefix index it extends.
    pub base_index: u8,
    /// Infix appended after the short prefix.
    pub infix: Vec<u8>,
}

impl LongPrefix {
    /// Decodes a prefix record body (after its 2-byte length).
    pub fn parse(body: &[u8]) -> Result<Self> {
        match body.split_first() {
            Some((&base_index, infix)) if infix.len() <= ondisk::NAME_LEN => Ok(Self {
                base_index,
                infix: infix.to_vec(),
            }),
            _ => Err(Error::corrupt_unplaced(
                None,
                "xattr prefix",
                format!("record of {} bytes (1..=256 allowed)", body.len()),
            )),
        }
    }
}

/// Size of an entry (header + name + value) rounded up to 4 bytes.
pub fn entry_size(name_len: u8, value_size: u16) -> u32 {
    // At most 4 + 255 + 65535 + 3: no overflow in u32.
    u32::from(name_len)
        .saturating_add(u32::from(value_size))
        .saturating_add(7)
        & !3
}

/// Resolves an entry's raw index and name against the long prefixes.
/// Returns `None` for a long-prefix reference beyond the table (the kernel
/// skips such entries).
pub fn resolve_name(raw_index: u8, name: &[u8], prefixes: &[LongPrefix]) -> Option<(u8, Vec<u8>)> {
    if raw_index & 0x80 != 0 {
        let pf = prefixes.get(usize::from(raw_index & 0x7f))?;
        let mut s = Vec::with_capacity(pf.infix.len().saturating_add(name.len()));
        s.extend_from_slice(&pf.infix);
        s.extend_from_slice(name);
        Some((pf.base_index, s))
    } else {
        Some((raw_index, name.to_vec()))
    }
}

/// The bloom-filter bit of a name, as the kernel computes it: xxh32 of the
/// suffix seeded with the filter seed plus the short index.
pub fn filter_bit(index: u8, suffix: &[u8]) -> u32 {
    const SEED: u32 = 0x25BB_E08F;
    xxhash_rust::xxh32::xxh32(suffix, SEED.wrapping_add(u32::from(index))) & 31
}

/// The inline xattr area of an inode: its name filter, shared xattr ids
/// and the bytes holding the inline entries (from `entries_at` on).
struct Ibody<'a> {
    /// Where the area is.
    pos: MetaPos,
    filter: u32,
    shared_ids: Vec<u32>,
    body: MetaBytes<'a>,
    entries_at: usize,
}

/// An image's xattr reader: the long name prefix table (read on first
/// use) and the walk over an inode's entries.
#[derive(Debug, Default)]
pub(super) struct Xattrs {
    prefixes: OnceLock<Result<Vec<LongPrefix>>>,
}

impl Xattrs {
    /// Every xattr of `inode`, inline ones first, then shared ones (the
    /// kernel's listxattr order), hidden ones included.
    pub(super) fn list<I: ImageRead + ?Sized>(&self, img: &I, inode: &Inode) -> Result<Vec<Xattr>> {
        let mut out = Vec::new();
        self.for_each(img, inode, |x| {
            out.push(x);
            true
        })?;
        Ok(out)
    }

    /// The value of xattr `name` of `inode`, or `None` when absent (or
    /// hidden).
    pub(super) fn get<I: ImageRead + ?Sized>(
        &self,
        img: &I,
        inode: &Inode,
        name: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let Some((index, suffix)) = split_name(name) else {
            return Ok(None);
        };
        if suffix.len() > ondisk::NAME_LEN {
            return Ok(None);
        }
        let Some(ibody) = read_ibody(img, inode)? else {
            return Ok(None);
        };
        let sb = img.superblock();
        if sb.has_compat(ondisk::COMPAT_XATTR_FILTER)
            && sb.xattr_filter_reserved == 0
            && ibody.filter & (1u32 << filter_bit(index, suffix)) != 0
        {
            return Ok(None);
        }
        let mut found = None;
        self.for_each(img, inode, |x| {
            if x.index == index && x.suffix == suffix {
                found = Some(x.value);
                false
            } else {
                true
            }
        })?;
        Ok(found)
    }

    /// The long-prefix table (loaded once, a failure remembered).
    pub(super) fn prefixes<I: ImageRead + ?Sized>(&self, img: &I) -> Result<&[LongPrefix]> {
        // A table that failed to load fails every later use the same way.
        match self.prefixes.get_or_init(|| load_prefixes(img)) {
            Ok(v) => Ok(v),
            Err(e) => Err(e.clone()),
        }
    }

    /// Calls `f` with each xattr of `inode` until it returns false.
    fn for_each<I: ImageRead + ?Sized>(
        &self,
        img: &I,
        inode: &Inode,
        mut f: impl FnMut(Xattr) -> bool,
    ) -> Result<()> {
        let Some(ibody) = read_ibody(img, inode)? else {
            return Ok(());
        };
        let mut prefixes: Option<&[LongPrefix]> = None;
        let mut resolve = |idx: u8, name: &[u8]| -> Result<Option<(u8, Vec<u8>)>> {
            if idx & 0x80 == 0 {
                return Ok(Some((idx, name.to_vec())));
            }
            let p = match prefixes {
                Some(p) => p,
                None => {
                    let p = self.prefixes(img)?;
                    prefixes = Some(p);
                    p
                }
            };
            Ok(resolve_name(idx, name, p))
        };
        let mut rest: &[u8] = ibody.body.get(ibody.entries_at..).unwrap_or(&[]);
        let mut entry_at = At::from(ibody.pos).plus(ibody.entries_at as u64);
        while !rest.is_empty() {
            let e = rest
                .get(..4)
                .and_then(|b| XattrEntry::read_from_bytes(b).ok())
                .ok_or_else(|| {
                    Error::corrupt(Some(inode.nid), entry_at, "xattr entry", "truncated header")
                })?;
            let size = entry_size(e.e_name_len, e.e_value_size.get()) as usize;
            if size > rest.len() {
                return Err(Error::corrupt(
                    Some(inode.nid),
                    entry_at,
                    "xattr entry",
                    format!("{size}-byte entry beyond the inline area"),
                ));
            }
            // size >= 4 + name + value was checked against rest above.
            let (name, value) = rest[4..size].split_at(usize::from(e.e_name_len));
            let value = &value[..usize::from(e.e_value_size.get())];
            if let Some((index, suffix)) = resolve(e.e_name_index, name)? {
                if !f(Xattr {
                    index,
                    suffix,
                    value: value.to_vec(),
                }) {
                    return Ok(());
                }
            }
            rest = &rest[size..];
            entry_at = entry_at.plus(size as u64);
        }
        let sb = img.superblock();
        let in_metabox = sb.has_compat(ondisk::COMPAT_SHARED_EA_IN_METABOX);
        let base = u64::from(sb.xattr_blkaddr) << sb.blkszbits;
        for id in ibody.shared_ids {
            let pos = MetaPos {
                pos: base.saturating_add(u64::from(id).saturating_mul(4)),
                in_metabox,
            };
            let hb = img.meta("shared xattr", pos, 4)?;
            let body_pos = pos.offset(4).ok_or_else(|| {
                Error::corrupt(Some(inode.nid), pos, "shared xattr", "position overflows")
            })?;
            let e = XattrEntry::read_from_bytes(&hb[..])
                .map_err(|_| Error::corrupt(Some(inode.nid), pos, "shared xattr", "decode"))?;
            let nl = usize::from(e.e_name_len);
            let vl = usize::from(e.e_value_size.get());
            let body = img.meta("shared xattr", body_pos, nl.saturating_add(vl))?;
            if let Some((index, suffix)) = resolve(e.e_name_index, &body[..nl])? {
                if !f(Xattr {
                    index,
                    suffix,
                    value: body[nl..].to_vec(),
                }) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// Reads the inline xattr area of `inode` (`None`: it has none).
fn read_ibody<'a, I: ImageRead + ?Sized>(img: &'a I, inode: &Inode) -> Result<Option<Ibody<'a>>> {
    let isz = inode.xattr_isize;
    if isz == 0 {
        return Ok(None);
    }
    if isz <= 12 || isz > XATTR_IBODY_MAX {
        return Err(Error::corrupt(
            Some(inode.nid),
            inode.loc,
            "i_xattr_icount",
            format!("inline xattr size {isz}"),
        ));
    }
    let pos = inode
        .loc
        .offset(u64::from(inode.inode_isize))
        .ok_or_else(|| Error::corrupt(Some(inode.nid), inode.loc, "xattr", "position overflows"))?;
    let body = img.meta("inline xattrs", pos, isz as usize)?;
    let hdr = XattrIbodyHeader::read_from_bytes(&body[..12])
        .map_err(|_| Error::corrupt(Some(inode.nid), pos, "xattr header", "decode"))?;
    let shared_count = usize::from(hdr.h_shared_count);
    // shared_count <= 255: no overflow.
    let ids_end = shared_count.saturating_mul(4).saturating_add(12);
    let ids = body.get(12..ids_end).ok_or_else(|| {
        Error::corrupt(
            Some(inode.nid),
            pos,
            "h_shared_count",
            format!("{shared_count} shared ids do not fit in {isz} bytes"),
        )
    })?;
    let shared_ids = ids
        .chunks_exact(4)
        .filter_map(|c| ondisk::le32(c, 0))
        .collect();
    Ok(Some(Ibody {
        pos,
        filter: hdr.h_name_filter.get(),
        shared_ids,
        body,
        entries_at: ids_end,
    }))
}

/// Reads the long xattr name prefix table.
fn load_prefixes<I: ImageRead + ?Sized>(img: &I) -> Result<Vec<LongPrefix>> {
    let sb = img.superblock();
    let count = sb.xattr_prefix_count;
    if count == 0 {
        return Ok(Vec::new());
    }
    let mut pos = u64::from(sb.xattr_prefix_start) * 4;
    let plain = sb.has_compat(ondisk::COMPAT_PLAIN_XATTR_PFX);
    let metabox = sb.metabox_nid.is_some();
    let packed = if !plain
        && !metabox
        && sb.has_incompat(ondisk::INCOMPAT_FRAGMENTS)
        && sb.packed_nid != 0
    {
        Some(img.inode(sb.packed_nid)?)
    } else {
        None
    };
    let in_metabox = !plain && metabox;
    // Where prefix byte `pos` is stored (in the packed inode's data, or in
    // the metadata).
    let place = |pos: u64| -> At {
        match &packed {
            Some(p) => img.locate(p, pos).unwrap_or(At::from(p.loc)),
            None => At::from(MetaPos { pos, in_metabox }),
        }
    };
    let read = |pos: u64, buf: &mut [u8]| -> Result<()> {
        match &packed {
            Some(p) => {
                if img.read(p, pos, buf)? != buf.len() {
                    return Err(Error::corrupt(
                        Some(p.nid),
                        p.loc,
                        "xattr prefixes",
                        format!("prefix at byte {pos} beyond the packed inode"),
                    ));
                }
                Ok(())
            }
            None => img.meta_into("xattr prefix", MetaPos { pos, in_metabox }, buf),
        }
    };
    let mut out = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        pos = pos.next_multiple_of(4);
        let mut l = [0u8; 2];
        read(pos, &mut l)?;
        let len = match u16::from_le_bytes(l) {
            0 => 65536usize,
            n => usize::from(n),
        };
        if len > 256 {
            return Err(Error::corrupt(
                None,
                place(pos),
                "xattr prefix",
                format!("length {len}"),
            ));
        }
        let mut body = vec![0u8; len];
        read(pos.saturating_add(2), &mut body)?;
        out.push(LongPrefix::parse(&body).map_err(|e| e.placed(None, place(pos)))?);
        pos = pos.saturating_add(2).saturating_add(len as u64);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    #[test]
    fn test_split_name_routes_like_vfs() {
        type Case<'a> = (&'a [u8], Option<(u8, &'a [u8])>);
        let cases: &[Case] = &[
            (b"user.a", Some((1, b"a"))),
            (b"trusted.overlay.x", Some((4, b"overlay.x"))),
            (b"security.capability", Some((6, b"capability"))),
            (b"system.posix_acl_access", Some((2, b""))),
            (b"system.posix_acl_default", Some((3, b""))),
            (b"system.other", None),
            (b"lustre.x", None),
            (b"user", None),
        ];
        for (name, want) in cases {
            assert_eq!(split_name(name), *want, "{}", String::from_utf8_lossy(name));
        }
    }

    #[test]
    fn test_full_name_hides_unknown_indexes() {
        assert_eq!(xattr_full_name(1, b"x").unwrap(), b"user.x");
        assert!(xattr_full_name(5, b"x").is_none());
        assert!(xattr_full_name(0, b"x").is_none());
        assert!(xattr_full_name(7, b"x").is_none());
    }

    #[test]
    fn test_resolve_long_prefix() {
        let p = vec![LongPrefix {
            base_index: 4,
            infix: b"overlay.".to_vec(),
        }];
        assert_eq!(
            resolve_name(0x80, b"opaque", &p).unwrap(),
            (4, b"overlay.opaque".to_vec())
        );
        assert!(resolve_name(0x81, b"x", &p).is_none());
    }

    #[test]
    fn test_entry_size_rounds_to_4() {
        assert_eq!(entry_size(1, 0), 8);
        assert_eq!(entry_size(4, 0), 8);
        assert_eq!(entry_size(255, 65535), (4 + 255 + 65535 + 3) & !3);
    }
}
