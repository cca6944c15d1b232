//! The dispatcher's state tables: nodes the kernel holds (with their lookup
//! counts and decoded inodes) and open file handles.
//!
//! Both are bounded: the node table by the inodes the image has (node ids
//! are a bijection of nids, so the kernel can only name inodes that lookup
//! or readdirplus handed out), the handle table by a fixed cap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use foldhash::fast::RandomState;

use super::share::ShareImage;
use crate::erofs::Inode;

const SHARDS: usize = 16;
const SHARD_MASK: u64 = SHARDS as u64 - 1;

/// An inode and the image it belongs to.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) img: Arc<ShareImage>,
    pub(crate) inode: Arc<Inode>,
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
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave a map half-updated (every update is a
    // single insert/remove), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl NodeTable {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
        }
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

    /// Counts one more lookup of `nodeid` (inserting it with `target`).
    pub(crate) fn add_lookup(&self, nodeid: u64, target: &Target) {
        let mut shard = lock(self.shard(nodeid));
        let node = shard.entry(nodeid).or_insert_with(|| Node {
            target: target.clone(),
            nlookup: 0,
            listed: None,
        });
        node.nlookup = node.nlookup.saturating_add(1);
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

    /// Drops `n` lookups; the node goes when none remain.
    pub(crate) fn forget(&self, nodeid: u64, n: u64) {
        let mut shard = lock(self.shard(nodeid));
        if let Some(node) = shard.get_mut(&nodeid) {
            node.nlookup = node.nlookup.saturating_sub(n);
            if node.nlookup == 0 {
                shard.remove(&nodeid);
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

    /// Forgets everything (FUSE_DESTROY).
    pub(crate) fn clear(&self) {
        for s in &self.shards {
            lock(s).clear();
        }
    }
}

/// What an open handle refers to.
#[derive(Debug, Clone)]
pub(crate) struct Handle {
    pub(crate) target: Target,
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
