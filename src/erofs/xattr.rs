//! Extended attributes: entry decoding, name prefixes and the name filter.

use super::ondisk;
use super::{Error, Result};

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
            _ => Err(Error::corrupt(
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
