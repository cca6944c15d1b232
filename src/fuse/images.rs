//! The images of a share: one record per image ([`ShareImage`]) and the
//! table of named images, made to have images added and removed while
//! connections are served.
//!
//! # Inode numbers
//!
//! A share whose root is one image reports every inode's `st_ino` exactly
//! as the kernel's EROFS driver does for that image. A share of named
//! images (a directory per image under a synthetic root) must keep
//! `st_ino` unique across its images, or `tar` and `find` would take equal
//! numbers with `nlink > 1` for hard links. Each named image gets a *slot*
//! (1 to 65535) when it is added, and its inodes report
//!
//! ```text
//! st_ino = slot << 48 | (kernel st_ino & (2^48 - 1))
//! ```
//!
//! The synthetic root is inode 1 (slot 0). The kernel's numbers of an
//! image stay below 2^48 unless its metadata exceeds 2^53 bytes, so
//! numbers never collide in practice. Slots are handed out round-robin,
//! skipping those in use: a removed image's slot is taken again only after
//! 65535 other additions.
//!
//! Node ids (what the FUSE client holds) are a connection's business: see
//! `super::nodes`. Each image has a *serial*, never reused in a share, that
//! node ids are keyed by, so an id handed out for one image never names an
//! inode of another.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use super::content::ImageContent;

use crate::erofs::{ondisk, Image, Inode};
use crate::metrics::ImageMetrics;

/// Most named images a share holds at once.
pub const MAX_IMAGES: usize = 4096;

/// Longest image name, in bytes (a directory name's limit).
pub const MAX_NAME_LEN: usize = 255;

/// Bits of `st_ino` below an image's slot.
const SLOT_SHIFT: u32 = 48;

/// The `st_ino` bits an image's own numbers keep in a share of named
/// images.
const INO_MASK: u64 = (1 << SLOT_SHIFT) - 1;

/// What a share knows of an image besides its contents: carried for logs,
/// the API and content sharing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageMeta {
    /// Where the image comes from (a path, `fd:N`, a guest range), as the
    /// user gave it.
    pub source: String,
    /// Trust domain: only images of one domain may share content; `None`
    /// shares nothing.
    pub domain: Option<String>,
    /// Name of the xattr holding each file's content fingerprint, if not
    /// the default.
    pub fingerprint_xattr: Option<String>,
}

/// One image of a share.
#[derive(Debug)]
pub struct ShareImage {
    name: Option<String>,
    image: Arc<Image>,
    root: Arc<Inode>,
    meta: ImageMeta,
    /// Never reused within a share (0: the share's root image).
    serial: u64,
    /// The high bits of its `st_ino` (0: the share's root image, whose
    /// numbers are the kernel's).
    slot: u16,
    /// Taken out of its share: its nodes answer ESTALE.
    removed: AtomicBool,
    /// Its request counters (named images registered in the share's
    /// metrics).
    metrics: Option<Arc<ImageMetrics>>,
    /// Its part in content sharing (images with a domain, in a share with
    /// a content store).
    content: OnceLock<Arc<ImageContent>>,
}

/// The root directory of `image`; fails if it is not a usable directory.
pub(crate) fn root_of(image: &Image) -> crate::erofs::Result<Arc<Inode>> {
    let root = image.inode(image.root_nid())?;
    if !root.is_dir() {
        return Err(crate::erofs::Error::corrupt(
            Some(root.nid),
            root.loc,
            "root inode",
            "not a directory",
        ));
    }
    Ok(Arc::new(root))
}

/// Where an image sits in its share.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Place {
    /// Never reused within a share (0: the share's root image).
    pub(crate) serial: u64,
    /// The high bits of `st_ino` (0: the kernel's numbers).
    pub(crate) slot: u16,
}

impl ShareImage {
    /// A record for `image` whose root directory is `root` (from
    /// [`root_of`]).
    pub(crate) fn new(
        name: Option<String>,
        image: Arc<Image>,
        root: Arc<Inode>,
        meta: ImageMeta,
        place: Place,
    ) -> Self {
        Self {
            name,
            image,
            root,
            meta,
            serial: place.serial,
            slot: place.slot,
            removed: AtomicBool::new(false),
            metrics: None,
            content: OnceLock::new(),
        }
    }

    /// The same, counting its requests in `metrics`.
    pub(crate) fn with_metrics(mut self, metrics: Option<Arc<ImageMetrics>>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Its request counters, if it has its own.
    pub fn metrics(&self) -> Option<&Arc<ImageMetrics>> {
        self.metrics.as_ref()
    }

    /// Its part in content sharing, if it shares.
    pub(crate) fn content(&self) -> Option<&Arc<ImageContent>> {
        self.content.get()
    }

    /// Makes it share content (once; later calls change nothing).
    pub(crate) fn set_content(&self, c: Arc<ImageContent>) {
        let _ = self.content.set(c);
    }

    /// The image's name in the share (`None`: the image is the share's
    /// root).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The image.
    pub fn image(&self) -> &Arc<Image> {
        &self.image
    }

    /// Its root directory.
    pub fn root(&self) -> &Arc<Inode> {
        &self.root
    }

    /// What the share knows of it.
    pub fn meta(&self) -> &ImageMeta {
        &self.meta
    }

    /// Its serial in the share (never reused; 0 for a root image).
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// Whether it was taken out of its share.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    pub(crate) fn mark_removed(&self) {
        self.removed.store(true, Ordering::Release);
    }

    /// `st_ino` of `nid`: what the kernel's EROFS driver reports
    /// (`erofs_nid_to_ino64`: nids of metabox images are folded so the
    /// metabox bit lands on bit 31), with the image's slot on top in a
    /// share of named images (see the module's documentation).
    pub fn st_ino(&self, nid: u64) -> u64 {
        let ino = if self.image.superblock().metabox_nid.is_none() {
            nid
        } else {
            ((nid << 1) & 0xffff_ffff_0000_0000)
                | (nid & 0x7fff_ffff)
                | ((nid >> ondisk::NID_METABOX_BIT.trailing_zeros()) << 31)
        };
        if self.slot == 0 {
            return ino;
        }
        (u64::from(self.slot) << SLOT_SHIFT) | (ino & INO_MASK)
    }
}

/// Why an image name cannot name a top-level directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// No bytes.
    #[error("image name is empty")]
    Empty,
    /// `.` or `..`.
    #[error("image name {0:?} is reserved")]
    Reserved(String),
    /// Longer than a directory name may be.
    #[error("image name is {len} bytes long, more than {MAX_NAME_LEN}")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// A `/`, which would make it a path.
    #[error("image name {0:?} contains '/'")]
    Slash(String),
    /// NUL or another control character.
    #[error("image name {0:?} contains a control character")]
    Control(String),
}

/// Checks that `name` can be a top-level directory of a share.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name == "." || name == ".." {
        return Err(NameError::Reserved(name.to_owned()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { len: name.len() });
    }
    if name.contains('/') {
        return Err(NameError::Slash(name.to_owned()));
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::Control(name.to_owned()));
    }
    Ok(())
}

/// The named images of a share, by name, with the slots and serials they
/// were given.
#[derive(Debug, Default)]
pub(crate) struct ImageTable {
    by_name: BTreeMap<String, Arc<ShareImage>>,
    /// Slots in use (index: slot).
    used: Vec<bool>,
    /// Where the search for a free slot starts.
    next_slot: u16,
    /// The last serial handed out.
    last_serial: u64,
}

impl ImageTable {
    pub(crate) fn get(&self, name: &[u8]) -> Option<&Arc<ShareImage>> {
        let name = std::str::from_utf8(name).ok()?;
        self.by_name.get(name)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
    }

    /// The images in the order they were added (by serial).
    pub(crate) fn in_order(&self) -> Vec<Arc<ShareImage>> {
        let mut v: Vec<_> = self.by_name.values().cloned().collect();
        v.sort_by_key(|i| i.serial);
        v
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// A serial and a slot for a new image; `None` when the table is full.
    /// The slot is taken when the image is [inserted](Self::insert), under
    /// the same lock.
    pub(crate) fn reserve(&mut self) -> Option<Place> {
        if self.by_name.len() >= MAX_IMAGES {
            return None;
        }
        if self.used.is_empty() {
            self.used = vec![false; usize::from(u16::MAX).saturating_add(1)];
        }
        let mut slot = self.next_slot;
        for _ in 0..=u16::MAX {
            slot = slot.wrapping_add(1).max(1);
            if !self.used.get(usize::from(slot)).copied().unwrap_or(true) {
                self.next_slot = slot;
                self.last_serial = self.last_serial.checked_add(1)?;
                return Some(Place {
                    serial: self.last_serial,
                    slot,
                });
            }
        }
        None
    }

    /// Adds an image made with a reserved serial and slot.
    pub(crate) fn insert(&mut self, img: Arc<ShareImage>) {
        if let Some(u) = self.used.get_mut(usize::from(img.slot)) {
            *u = true;
        }
        if let Some(name) = img.name.clone() {
            self.by_name.insert(name, img);
        }
    }

    /// Takes out the image called `name`.
    pub(crate) fn remove(&mut self, name: &str) -> Option<Arc<ShareImage>> {
        let img = self.by_name.remove(name)?;
        if let Some(u) = self.used.get_mut(usize::from(img.slot)) {
            *u = false;
        }
        Some(img)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuse::testutil::{memory_image, TINY_IMAGE};

    #[test]
    fn test_check_name_table() {
        let long = "x".repeat(256);
        let table: &[(&str, Option<NameError>)] = &[
            ("app", None),
            ("layer-1.2_x", None),
            ("ünïcode", None),
            (&long[..255], None),
            ("", Some(NameError::Empty)),
            (".", Some(NameError::Reserved(".".into()))),
            ("..", Some(NameError::Reserved("..".into()))),
            ("...", None),
            (&long, Some(NameError::TooLong { len: 256 })),
            ("a/b", Some(NameError::Slash("a/b".into()))),
            ("a\0b", Some(NameError::Control("a\0b".into()))),
            ("a\nb", Some(NameError::Control("a\nb".into()))),
        ];
        for (name, want) in table {
            assert_eq!(check_name(name).err(), *want, "{name:?}");
        }
    }

    fn record(table: &mut ImageTable, name: &str) -> Arc<ShareImage> {
        let place = table.reserve().unwrap();
        let img = memory_image(TINY_IMAGE).unwrap();
        let root = root_of(&img).unwrap();
        let rec = ShareImage::new(Some(name.into()), img, root, ImageMeta::default(), place);
        let rec = Arc::new(rec);
        table.insert(Arc::clone(&rec));
        rec
    }

    #[test]
    fn test_serials_never_repeat_and_slots_go_round() {
        let mut t = ImageTable::default();
        let a = record(&mut t, "a");
        let b = record(&mut t, "b");
        assert_eq!((a.serial, a.slot), (1, 1));
        assert_eq!((b.serial, b.slot), (2, 2));
        assert!(t.remove("a").is_some());
        assert!(t.remove("a").is_none());
        // Slot 1 is free again, but the next one is taken first.
        let c = record(&mut t, "a");
        assert_eq!((c.serial, c.slot), (3, 3));
        let names: Vec<_> = t.in_order().iter().map(|i| i.serial).collect();
        assert_eq!(names, [2, 3]);
        assert!(t.get(b"a").is_some_and(|i| i.serial == 3));
    }

    #[test]
    fn test_slots_wrap_past_those_in_use() {
        let mut t = ImageTable::default();
        let keep = record(&mut t, "keep");
        assert_eq!(keep.slot, 1);
        t.next_slot = u16::MAX - 1;
        let last = record(&mut t, "last");
        assert_eq!(last.slot, u16::MAX);
        // Slot 0 is the root's and slot 1 is in use.
        let wrapped = record(&mut t, "wrapped");
        assert_eq!(wrapped.slot, 2);
    }

    #[test]
    fn test_st_ino_has_the_slot_on_top() {
        let img = memory_image(TINY_IMAGE).unwrap();
        let dir = root_of(&img).unwrap();
        let meta = ImageMeta::default();
        let root = ShareImage::new(
            None,
            Arc::clone(&img),
            dir.clone(),
            meta.clone(),
            Place::default(),
        );
        let place = Place { serial: 1, slot: 7 };
        let named = ShareImage::new(Some("x".into()), img, dir, meta, place);
        assert_eq!(root.st_ino(36), 36);
        assert_eq!(named.st_ino(36), 7 << 48 | 36);
        assert_eq!(named.st_ino(u64::MAX) >> 48, 7);
    }

    #[test]
    fn test_root_must_be_a_directory() {
        // An image whose root nid names a file: made by pointing the
        // superblock's root nid at /hello.
        let img = memory_image(TINY_IMAGE).unwrap();
        let root = img.inode(img.root_nid()).unwrap();
        let (nid, _) = img.lookup(&root, b"hello").unwrap().unwrap();
        let mut bytes = TINY_IMAGE.to_vec();
        let at = 1024 + 14; // erofs_super_block.root_nid (__le16)
        assert_eq!(
            u16::from_le_bytes([bytes[at], bytes[at + 1]]),
            img.root_nid() as u16
        );
        bytes[at..at + 2].copy_from_slice(&(nid as u16).to_le_bytes());
        // Without the superblock checksum feature the edit is not refused.
        let compat = 1024 + 8;
        let mut feat = u32::from_le_bytes(bytes[compat..compat + 4].try_into().unwrap());
        feat &= !ondisk::COMPAT_SB_CHKSUM;
        bytes[compat..compat + 4].copy_from_slice(&feat.to_le_bytes());
        let bad = memory_image(&bytes).unwrap();
        let e = root_of(&bad).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
    }
}
