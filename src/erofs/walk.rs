//! A bounded walk over every path of an image.

use std::collections::HashSet;

use super::image::Image;
use super::inode::Inode;
use super::{Error, Result};

/// Deepest directory nesting followed (PATH_MAX allows ~2048 levels).
pub const MAX_DEPTH: usize = 2048;

/// One path found by [`walk`].
#[derive(Debug, Clone)]
pub struct WalkEntry {
    /// Absolute path bytes ("/" for the root).
    pub path: Vec<u8>,
    /// The inode at that path.
    pub inode: Inode,
}

/// Visits the root and every path below it, each directory once. Problems
/// (unreadable inodes, corrupt directories, cycles) go to `problem` with the
/// path where they were found, and the walk goes on with the rest.
pub fn walk(
    img: &Image,
    mut visit: impl FnMut(&WalkEntry),
    mut problem: impl FnMut(&[u8], Error),
) -> Result<()> {
    let root = img.inode(img.root_nid())?;
    if !root.is_dir() {
        return Err(Error::corrupt(
            Some(root.nid),
            root.loc,
            "root",
            "root inode is not a directory",
        ));
    }
    let mut seen_dirs = HashSet::new();
    seen_dirs.insert(root.nid);
    let mut stack = vec![(
        WalkEntry {
            path: b"/".to_vec(),
            inode: root,
        },
        0usize,
    )];
    while let Some((entry, depth)) = stack.pop() {
        visit(&entry);
        if !entry.inode.is_dir() {
            continue;
        }
        let mut children = Vec::new();
        let r = img.readdir(&entry.inode, 0, |e, _| {
            if e.name != b"." && e.name != b".." {
                children.push((e.name.to_vec(), e.nid));
            }
            true
        });
        if let Err(e) = r {
            problem(&entry.path, e);
        }
        for (name, nid) in children.into_iter().rev() {
            let mut path = entry.path.clone();
            if path.len() > 1 {
                path.push(b'/');
            }
            path.extend_from_slice(&name);
            let inode = match img.inode(nid) {
                Ok(i) => i,
                Err(e) => {
                    problem(&path, e);
                    continue;
                }
            };
            if inode.is_dir() {
                if !seen_dirs.insert(nid) {
                    problem(
                        &path,
                        Error::corrupt(
                            Some(nid),
                            inode.loc,
                            "directory",
                            "directory reached twice (cycle or hard-linked directory)",
                        ),
                    );
                    continue;
                }
                if depth >= MAX_DEPTH {
                    problem(
                        &path,
                        Error::corrupt(
                            Some(nid),
                            inode.loc,
                            "directory",
                            format!("nesting deeper than {MAX_DEPTH}"),
                        ),
                    );
                    continue;
                }
            }
            stack.push((WalkEntry { path, inode }, depth.saturating_add(1)));
        }
    }
    Ok(())
}
