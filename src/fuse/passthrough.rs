//! FUSE passthrough of shared content on /dev/fuse: an OPEN of a file
//! whose store entry exists (and is verified for its image) is answered
//! with `FOPEN_PASSTHROUGH` and a backing id on the entry's file, so the
//! kernel reads the entry itself (page-cache speed, no READ messages).
//!
//! The kernel keeps one I/O mode per inode while it is open: files opened
//! with a backing file and files opened through the FUSE page cache cannot
//! be open at once (the second kind fails with EIO), and every
//! passthrough open of an inode must name the same backing file. So per
//! node: while any cached open is there, new opens are cached too; while
//! passthrough opens are there, new ones reuse their backing id. The id
//! is dropped when the node's last passthrough file is released.
//!
//! Owns: the backing ids of one connection (bounded by its open handles).
//! Trusts: the kernel's RELEASE of every handle it opened.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use foldhash::fast::RandomState;
use log::{debug, warn};

use super::outbound::Outbound;
use crate::share::Entry;

/// A node's open files, by I/O mode.
#[derive(Debug, Default)]
struct NodeIo {
    /// Files opened through the FUSE page cache.
    cached: u64,
    /// Files opened with the backing file; its id and entry.
    passthrough: u64,
    backing: Option<(u32, Arc<Entry>)>,
}

#[derive(Debug, Default)]
struct Tables {
    nodes: HashMap<u64, NodeIo, RandomState>,
    /// Handle -> (node, opened with passthrough).
    handles: HashMap<u64, (u64, bool), RandomState>,
}

/// One connection's passthrough state.
#[derive(Debug, Default)]
pub(crate) struct Passthrough {
    /// INIT agreed on passthrough (and backing files can be opened).
    on: AtomicBool,
    tables: Mutex<Tables>,
}

/// How an OPEN is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenMode {
    /// Through the FUSE page cache (READ messages).
    Cached,
    /// With this backing id.
    Backing(u32),
}

impl Passthrough {
    pub(crate) fn set_on(&self, on: bool) {
        self.on.store(on, Ordering::Release);
    }

    pub(crate) fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides how handle `fh` of node `nodeid` is opened: with the node's
    /// backing file when it has one or `entry` gives one (and no cached
    /// open is there), else cached. Called before the reply is sent;
    /// [`Passthrough::release`] undoes it.
    pub(crate) fn open(
        &self,
        out: &dyn Outbound,
        nodeid: u64,
        fh: u64,
        entry: impl FnOnce() -> Option<Arc<Entry>>,
    ) -> OpenMode {
        let mut t = self.lock();
        let node = t.nodes.entry(nodeid).or_default();
        let mode = if !self.is_on() || node.cached > 0 {
            OpenMode::Cached
        } else if let Some((id, _)) = &node.backing {
            OpenMode::Backing(*id)
        } else {
            match entry() {
                Some(e) => match out.backing_open(e.file().as_fd()) {
                    Ok(id) => {
                        node.backing = Some((id, e));
                        OpenMode::Backing(id)
                    }
                    Err(err) => {
                        warn!("no FUSE passthrough from now on: opening a backing file: {err}");
                        self.set_on(false);
                        OpenMode::Cached
                    }
                },
                None => OpenMode::Cached,
            }
        };
        match mode {
            OpenMode::Cached => node.cached = node.cached.saturating_add(1),
            OpenMode::Backing(_) => node.passthrough = node.passthrough.saturating_add(1),
        }
        let pt = matches!(mode, OpenMode::Backing(_));
        t.handles.insert(fh, (nodeid, pt));
        mode
    }

    /// Handle `fh` is closed (or its OPEN reply was not sent): drops the
    /// node's backing id with its last passthrough file.
    pub(crate) fn release(&self, out: &dyn Outbound, fh: u64) {
        let mut t = self.lock();
        let Some((nodeid, pt)) = t.handles.remove(&fh) else {
            return;
        };
        let Some(node) = t.nodes.get_mut(&nodeid) else {
            return;
        };
        if pt {
            node.passthrough = node.passthrough.saturating_sub(1);
            if node.passthrough == 0 {
                if let Some((id, _entry)) = node.backing.take() {
                    if let Err(e) = out.backing_close(id) {
                        debug!("closing backing id {id}: {e}");
                    }
                }
            }
        } else {
            node.cached = node.cached.saturating_sub(1);
        }
        if node.cached == 0 && node.passthrough == 0 {
            t.nodes.remove(&nodeid);
        }
    }

    /// The connection ended or was reset (DESTROY): its backing ids are
    /// gone with it.
    pub(crate) fn clear(&self) {
        let mut t = self.lock();
        t.nodes.clear();
        t.handles.clear();
    }
}
