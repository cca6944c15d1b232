//! The dispatcher's state tables: nodes the kernel holds (with their lookup
//! counts and decoded inodes) and open file handles.
//!
//! Node ids: in a share whose root is one image, a node id is a function
//! of the nid (see `super::session`). In a share of named images, ids are
//! handed out in increasing order, keyed by (image serial, nid), so the
//! same inode keeps its id while the kernel holds it, and an id is never
//! handed out again, for any image: a removed image's ids stay unknown
//! (ESTALE) once forgotten, never another image's inode.
//!
//! Both are bounded: the node table by the inodes the kernel holds (it can
//! only name inodes that lookup or readdirplus handed out, and forgets
//! them) and by a cap (`--max-nodes`: a guest that never forgets cannot
//! grow it past that; a lookup of a new inode beyond it is ENFILE), the
//! handle table by a cap (`--max-handles`).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use foldhash::fast::RandomState;

use super::images::ShareImage;
use crate::erofs::Inode;

const SHARDS: usize = 16;
const SHARD_MASK: u64 = SHARDS as u64 - 1;

/// An inode and the image it belongs to. Cheap to clone: one reference
/// count of its own, so that requests on different nodes never touch the
/// same count (the image's is shared by all its nodes and is touched only
/// when a node is made).
#[derive(Debug, Clone)]
pub(crate) struct Target(Arc<TargetParts>);

/// What a [`Target`] holds.
#[derive(Debug)]
pub(crate) struct TargetParts {
    pub(crate) img: Arc<ShareImage>,
    pub(crate) inode: Arc<Inode>,
}

impl Target {
    pub(crate) fn new(img: Arc<ShareImage>, inode: Arc<Inode>) -> Self {
        Self(Arc::new(TargetParts { img, inode }))
    }
}

impl std::ops::Deref for Target {
    type Target = TargetParts;

    fn deref(&self) -> &TargetParts {
        &self.0
    }
}

#[derive(Debug)]
struct Node {
    target: Target,
    nlookup: u64,
    /// Where the node was last listed by READDIRPLUS.
    listed: Option<Listed>,
}

/// A directory entry's place in its directory listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listed {
    /// The directory's nid.
    pub(crate) parent: u64,
    /// The entry's listing position.
    pub(crate) at: u64,
    /// The next entry's position.
    pub(crate) next: u64,
}

/// Node id -> (decoded inode, lookup count), sharded for parallel access.
#[derive(Debug)]
pub(crate) struct NodeTable {
    shards: Vec<Mutex<HashMap<u64, Node, RandomState>>>,
    /// Handed-out ids by (image serial, nid), for shares of named images.
    /// Locked before a shard, never after.
    ids: Option<Mutex<IdMap>>,
    /// Nodes held, across shards (changed under the shard's lock).
    held: AtomicUsize,
    /// Most nodes held at once.
    cap: usize,
}

/// The ids of a share of named images.
#[derive(Debug, Default)]
struct IdMap {
    by_key: HashMap<(u64, u64), u64, RandomState>,
    /// The last id handed out (ids 0 and 1 are never handed out).
    last: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave a map half-updated (every update is a
    // single insert/remove), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl NodeTable {
    /// A table whose ids the caller computes (`keyed` false) or which hands
    /// them out ([`add_lookup_keyed`](Self::add_lookup_keyed)), holding at
    /// most `cap` nodes.
    pub(crate) fn new(keyed: bool, cap: usize) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
            ids: keyed.then(|| {
                Mutex::new(IdMap {
                    last: 1,
                    ..IdMap::default()
                })
            }),
            held: AtomicUsize::new(0),
            cap,
        }
    }

    /// The id handed out for `nid` of image `serial`, while the kernel
    /// holds it (keyed tables only).
    pub(crate) fn id_of(&self, serial: u64, nid: u64) -> Option<u64> {
        let ids = lock(self.ids.as_ref()?);
        ids.by_key.get(&(serial, nid)).copied()
    }

    /// Counts one more lookup of `target`, handing out a new id the first
    /// time (keyed tables only); returns the id, or the errno: ENFILE when
    /// the table is full, EIO when ids ran out (or the table is not keyed).
    pub(crate) fn add_lookup_keyed(&self, target: &Target) -> Result<u64, i32> {
        let mut ids = lock(self.ids.as_ref().ok_or(libc::EIO)?);
        let key = (target.img.serial(), target.inode.nid);
        let id = match ids.by_key.get(&key) {
            Some(&id) => id,
            None => {
                if self.held.load(Ordering::Acquire) >= self.cap {
                    return Err(libc::ENFILE);
                }
                let id = ids.last.checked_add(1).ok_or(libc::EIO)?;
                ids.last = id;
                ids.by_key.insert(key, id);
                id
            }
        };
        self.add_lookup(id, target)?;
        Ok(id)
    }

    fn shard(&self, nodeid: u64) -> &Mutex<HashMap<u64, Node, RandomState>> {
        // SHARDS is a power of two; the low bits of nids are well spread.
        let i = usize::try_from(nodeid & SHARD_MASK).unwrap_or(0);
        &self.shards[i]
    }

    /// The inode of a node the kernel holds.
    pub(crate) fn get(&self, nodeid: u64) -> Option<Target> {
        lock(self.shard(nodeid))
            .get(&nodeid)
            .map(|n| n.target.clone())
    }

    /// Counts one more lookup of `nodeid` (inserting it with `target`);
    /// ENFILE when it is new and the table holds its cap of nodes.
    pub(crate) fn add_lookup(&self, nodeid: u64, target: &Target) -> Result<(), i32> {
        self.count_lookup(nodeid, || target.clone(), None).map(drop)
    }

    /// Counts one more lookup of `nodeid`, listed at `listed`, in one visit
    /// of its shard: a node already held keeps its target, a new one is
    /// made of `img` and `inode`. ENFILE when it is new and the table holds
    /// its cap of nodes. Returns the node's target.
    pub(crate) fn add_listed(
        &self,
        nodeid: u64,
        img: &Arc<ShareImage>,
        inode: Inode,
        listed: Listed,
    ) -> Result<Target, i32> {
        let make = || Target::new(Arc::clone(img), Arc::new(inode));
        self.count_lookup(nodeid, make, Some(listed))
    }

    /// One more lookup of `nodeid`, made with `make` when it is new (and
    /// the cap allows), with where it was listed if given; its target.
    fn count_lookup(
        &self,
        nodeid: u64,
        make: impl FnOnce() -> Target,
        listed: Option<Listed>,
    ) -> Result<Target, i32> {
        let mut shard = lock(self.shard(nodeid));
        match shard.entry(nodeid) {
            Entry::Occupied(mut o) => {
                let node = o.get_mut();
                node.nlookup = node.nlookup.saturating_add(1);
                if listed.is_some() {
                    node.listed = listed;
                }
                Ok(node.target.clone())
            }
            Entry::Vacant(v) => {
                // Reserve a place first: concurrent inserts into other
                // shards cannot both take the last one.
                self.held
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < self.cap).then(|| n.saturating_add(1))
                    })
                    .map_err(|_| libc::ENFILE)?;
                let target = make();
                v.insert(Node {
                    target: target.clone(),
                    nlookup: 1,
                    listed,
                });
                Ok(target)
            }
        }
    }

    /// Records where a held node was listed.
    pub(crate) fn set_listed(&self, nodeid: u64, listed: Listed) {
        if let Some(node) = lock(self.shard(nodeid)).get_mut(&nodeid) {
            node.listed = Some(listed);
        }
    }

    /// Where `nodeid` was last listed, if it is held and was listed.
    pub(crate) fn listed(&self, nodeid: u64) -> Option<Listed> {
        lock(self.shard(nodeid)).get(&nodeid).and_then(|n| n.listed)
    }

    /// Drops `n` lookups; the node goes when none remain (and with it its
    /// key: the id is not handed out again).
    pub(crate) fn forget(&self, nodeid: u64, n: u64) {
        let mut ids = self.ids.as_ref().map(lock);
        let mut shard = lock(self.shard(nodeid));
        if let Some(node) = shard.get_mut(&nodeid) {
            node.nlookup = node.nlookup.saturating_sub(n);
            if node.nlookup == 0 {
                let key = (node.target.img.serial(), node.target.inode.nid);
                shard.remove(&nodeid);
                self.held.fetch_sub(1, Ordering::AcqRel);
                if let Some(ids) = ids.as_mut() {
                    ids.by_key.remove(&key);
                }
            }
        }
    }

    /// The lookup count of `nodeid` (0 when unknown).
    pub(crate) fn lookups(&self, nodeid: u64) -> u64 {
        lock(self.shard(nodeid))
            .get(&nodeid)
            .map_or(0, |n| n.nlookup)
    }

    /// Nodes held.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Forgets everything (FUSE_DESTROY); ids already handed out are still
    /// not handed out again.
    pub(crate) fn clear(&self) {
        let mut ids = self.ids.as_ref().map(lock);
        for s in &self.shards {
            let mut s = lock(s);
            self.held.fetch_sub(s.len(), Ordering::AcqRel);
            s.clear();
        }
        if let Some(ids) = ids.as_mut() {
            ids.by_key.clear();
        }
    }
}

/// What an open handle refers to.
#[derive(Debug, Clone)]
pub(crate) struct Handle {
    /// The inode; `None` for the synthetic root of a share of named images.
    pub(crate) target: Option<Target>,
    pub(crate) dir: bool,
}

#[derive(Debug, Default)]
struct Slots {
    slots: Vec<Option<Handle>>,
    free: Vec<usize>,
    used: usize,
}

/// Open handles: `fh` is the slot index + 1 (0 means "no handle").
#[derive(Debug)]
pub(crate) struct HandleTable {
    inner: RwLock<Slots>,
    cap: usize,
}

impl HandleTable {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            inner: RwLock::new(Slots::default()),
            cap,
        }
    }

    /// Stores `h`; `None` when `cap` handles are open.
    pub(crate) fn insert(&self, h: Handle) -> Option<u64> {
        let mut s = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if s.used >= self.cap {
            return None;
        }
        let idx = match s.free.pop() {
            Some(i) => {
                *s.slots.get_mut(i)? = Some(h);
                i
            }
            None => {
                s.slots.push(Some(h));
                s.slots.len().checked_sub(1)?
            }
        };
        s.used = s.used.saturating_add(1);
        u64::try_from(idx).ok()?.checked_add(1)
    }

    fn index(fh: u64) -> Option<usize> {
        usize::try_from(fh.checked_sub(1)?).ok()
    }

    /// The handle `fh`, if open.
    pub(crate) fn get(&self, fh: u64) -> Option<Handle> {
        let s = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        s.slots.get(Self::index(fh)?)?.clone()
    }

    /// Closes `fh`; false when it was not open.
    pub(crate) fn remove(&self, fh: u64) -> bool {
        let Some(i) = Self::index(fh) else {
            return false;
        };
        let mut s = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        match s.slots.get_mut(i).and_then(Option::take) {
            Some(_) => {
                s.free.push(i);
                s.used = s.used.saturating_sub(1);
                true
            }
            None => false,
        }
    }

    /// Handles open.
    pub(crate) fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .used
    }

    /// Closes everything (FUSE_DESTROY).
    pub(crate) fn clear(&self) {
        *self.inner.write().unwrap_or_else(PoisonError::into_inner) = Slots::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuse::images::{root_of, ImageMeta, Place};
    use crate::fuse::testutil::{memory_image, TINY_IMAGE};

    fn target(serial: u64) -> Target {
        let img = memory_image(TINY_IMAGE).unwrap();
        let root = root_of(&img).unwrap();
        let place = Place { serial, slot: 1 };
        let rec = ShareImage::new(
            Some("x".into()),
            img,
            Arc::clone(&root),
            ImageMeta::default(),
            place,
        );
        Target::new(Arc::new(rec), root)
    }

    #[test]
    fn test_keyed_ids_are_per_image_and_never_handed_out_again() {
        let t = NodeTable::new(true, 100);
        let (a, b) = (target(1), target(2));
        let ida = t.add_lookup_keyed(&a).unwrap();
        let idb = t.add_lookup_keyed(&b).unwrap();
        assert_ne!(ida, idb, "same nid, other image: other id");
        assert!(ida > 1 && idb > 1, "0 and 1 are not handed out");
        assert_eq!(t.add_lookup_keyed(&a), Ok(ida));
        assert_eq!(t.lookups(ida), 2);
        assert_eq!(t.id_of(1, a.inode.nid), Some(ida));
        t.forget(ida, 2);
        assert!(t.get(ida).is_none());
        assert_eq!(t.id_of(1, a.inode.nid), None);
        let again = t.add_lookup_keyed(&a).unwrap();
        assert!(again > idb, "a forgotten id is not reused: {again}");
        t.clear();
        assert_eq!(t.len(), 0);
        assert!(t.add_lookup_keyed(&b).unwrap() > again);
        assert_eq!(t.get(ida).map(|x| x.img.serial()), None);
    }

    #[test]
    fn test_unkeyed_tables_hand_out_nothing() {
        let t = NodeTable::new(false, 100);
        assert_eq!(t.add_lookup_keyed(&target(1)), Err(libc::EIO));
        assert_eq!(t.id_of(1, 0), None);
    }

    #[test]
    fn test_node_table_full_is_enfile_until_a_forget() {
        // Arrange: a table of two nodes, full.
        let t = NodeTable::new(false, 2);
        let x = target(1);
        t.add_lookup(10, &x).unwrap();
        t.add_lookup(11, &x).unwrap();
        // Act + assert: a new node is refused, a held one still counts.
        assert_eq!(t.add_lookup(12, &x), Err(libc::ENFILE));
        assert_eq!(t.add_lookup(10, &x), Ok(()));
        assert_eq!(t.lookups(10), 2);
        assert_eq!(t.len(), 2);
        // A forgotten node makes room.
        t.forget(11, 1);
        assert_eq!(t.add_lookup(12, &x), Ok(()));
        assert_eq!(t.add_lookup(13, &x), Err(libc::ENFILE));
        t.clear();
        assert_eq!(t.add_lookup(13, &x), Ok(()));
    }

    #[test]
    fn test_keyed_table_full_is_enfile_and_hands_out_no_id() {
        let t = NodeTable::new(true, 1);
        let (a, b) = (target(1), target(2));
        let ida = t.add_lookup_keyed(&a).unwrap();
        assert_eq!(t.add_lookup_keyed(&b), Err(libc::ENFILE));
        assert_eq!(t.id_of(2, b.inode.nid), None);
        assert_eq!(t.add_lookup_keyed(&a), Ok(ida));
    }
}
