//! Answering READs from store entries, and finding the entry of a node:
//! the glue between the share's images, the connection's nodes and
//! [`super::content`] (kept apart so that neither needs the other's
//! callers).

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use log::warn;

use super::nodes::Target;
use super::reply::OpResult;
use super::share::Share;
use super::sink::{Errno, ReplySink};
use super::splice::SPLICE_MIN;
use crate::erofs::Span;
use crate::share::Entry;

/// The entry to serve the file `t` from, if its share has a store and the
/// file is shared and verified (see [`SharedContent::entry_for`]).
pub(crate) fn entry_for(share: &Share, t: &Target) -> Option<Arc<Entry>> {
    let ic = t.img.content()?;
    share.content()?.entry_for(ic, t.img.image(), &t.inode)
}

/// Answers a READ of `len` bytes at `offset` from an entry: spliced from
/// the entry's file when the transport can (no copy), else read into the
/// transport's buffers.
pub(crate) fn reply_from_entry(
    share: &Share,
    unique: u64,
    entry: &Entry,
    offset: u64,
    len: usize,
    sink: &mut dyn ReplySink,
) -> OpResult {
    if let Some(c) = share.content() {
        c.count_entry_read();
    }
    if len >= SPLICE_MIN && sink.can_splice() {
        let spans = [Span::File {
            fd: entry.file().as_raw_fd(),
            offset,
            len,
        }];
        if sink.send_spans(unique, &spans)? {
            return Ok(());
        }
    }
    let mut fill = |buf: &mut [u8], pos: usize| -> Result<usize, Errno> {
        read_entry(entry, offset.saturating_add(pos as u64), buf).map_err(|e| {
            warn!("reading a store entry: {e}");
            Errno(libc::EIO)
        })
    };
    sink.send_with(unique, len, &mut fill)?;
    Ok(())
}

/// Reads `buf.len()` bytes of an entry at `offset` (fewer at its end).
pub(crate) fn read_entry(e: &Entry, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0usize;
    while done < buf.len() {
        let Some(rest) = buf.get_mut(done..) else {
            break;
        };
        let at = offset.saturating_add(done as u64);
        match e.file().read_at(rest, at) {
            Ok(0) => break,
            Ok(n) => done = done.saturating_add(n),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(done)
}
