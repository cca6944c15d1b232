//! Trust domains: only images of the same domain share content, as with
//! the kernel's `domain_id`. No domain means no sharing.
//!
//! A domain name is 1 to [`MAX_DOMAIN_LEN`] bytes of UTF-8 without control
//! characters. In the store it becomes one directory name: bytes
//! `[A-Za-z0-9_-]` and `.` (not first) stay, every other byte is `%XX`
//! (upper-case hex), so any valid name is a safe path component of at most
//! 192 bytes and decodes back exactly.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::{Error, Result};

/// Longest domain name in bytes.
pub const MAX_DOMAIN_LEN: usize = 64;

/// A validated trust-domain name (cheap to clone: every open of a shared
/// file keys its entry with one).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(Arc<str>);

impl Domain {
    /// Validates a domain name.
    pub fn new(name: &str) -> Result<Self> {
        if name.is_empty() || name.len() > MAX_DOMAIN_LEN {
            return Err(Error::Domain(format!(
                "{name:?}: a domain name has 1 to {MAX_DOMAIN_LEN} bytes"
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(Error::Domain(format!(
                "{name:?}: control characters are not allowed in a domain name"
            )));
        }
        Ok(Self(Arc::from(name)))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The directory name that stands for this domain in a store.
    pub fn dir_name(&self) -> String {
        let mut s = String::with_capacity(self.0.len());
        for (i, b) in self.0.bytes().enumerate() {
            let keep = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
            if keep {
                s.push(char::from(b));
            } else {
                s.push('%');
                s.push(char::from(HEX[usize::from(b >> 4)]));
                s.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
        s
    }

    /// The domain a store directory name stands for; `None` for names that
    /// [`Domain::dir_name`] does not produce.
    pub fn from_dir_name(dir: &str) -> Option<Self> {
        let mut bytes = Vec::with_capacity(dir.len());
        let mut it = dir.bytes();
        while let Some(b) = it.next() {
            if b == b'%' {
                let hi = unhex(it.next()?)?;
                let lo = unhex(it.next()?)?;
                bytes.push((hi << 4) | lo);
            } else {
                bytes.push(b);
            }
        }
        let d = Self::new(std::str::from_utf8(&bytes).ok()?).ok()?;
        (d.dir_name() == dir).then_some(d)
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn unhex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl FromStr for Domain {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Domain({:?})", self.0)
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_domain_dir_names_table() {
        let cases: &[(&str, &str)] = &[
            ("prod", "prod"),
            ("a.b-c_d", "a.b-c_d"),
            (".", "%2E"),
            ("..", "%2E."),
            ("a/b", "a%2Fb"),
            ("100%", "100%25"),
            ("é", "%C3%A9"),
            ("x y", "x%20y"),
        ];
        for (name, dir) in cases {
            let d = Domain::new(name).unwrap();
            assert_eq!(d.dir_name(), *dir, "{name}");
            assert_eq!(Domain::from_dir_name(dir), Some(d), "{dir}");
        }
    }

    #[test]
    fn test_domain_invalid_names_rejected() {
        let long = "x".repeat(MAX_DOMAIN_LEN + 1);
        for name in ["", long.as_str(), "a\nb", "a\0b", "\u{7f}"] {
            assert!(Domain::new(name).is_err(), "{name:?}");
        }
        assert!(Domain::new(&"é".repeat(MAX_DOMAIN_LEN / 2)).is_ok());
    }

    #[test]
    fn test_domain_longest_dir_name_fits_a_path_component() {
        let d = Domain::new(&"/".repeat(MAX_DOMAIN_LEN)).unwrap();
        assert!(d.dir_name().len() <= 255);
        assert!(!d.dir_name().contains('/'));
    }

    #[test]
    fn test_domain_foreign_dir_names_ignored() {
        for dir in ["", "%2e", "%2", "%ZZ", "a%2Fb%", ".hidden", "%0A", "a/b"] {
            assert_eq!(Domain::from_dir_name(dir), None, "{dir:?}");
        }
    }
}
