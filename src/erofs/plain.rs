//! Reading uncompressed files: their extents turned into bytes, or into
//! the host file spans to splice them from.

use super::access::{ImageRead, MetaRead};
use super::devices::{Devices, Span};
use super::inode::Inode;
use super::map::{map_uncompressed, ExtentKind};
use super::{Error, Result};

/// Walks the extents of uncompressed `inode` over `want` bytes from
/// `offset` (within the file): `each(done, n, kind, skip)` gets each piece,
/// `done` bytes into the range, `n` bytes long, starting `skip` bytes into
/// its extent of kind `kind`; it returns whether to go on.
fn for_each_piece<M: MetaRead + ?Sized>(
    meta: &M,
    inode: &Inode,
    offset: u64,
    want: usize,
    mut each: impl FnMut(usize, usize, ExtentKind, u64) -> Result<bool>,
) -> Result<()> {
    let mut done = 0usize;
    // Each pass covers at least one byte, so this ends after `want` passes
    // at most.
    while let Some(rest) = want.checked_sub(done).filter(|r| *r > 0) {
        let pos = offset.saturating_add(done as u64);
        let ext = map_uncompressed(meta, inode, pos)?;
        let span = pos
            .checked_sub(ext.la)
            .and_then(|skip| Some((skip, ext.len.checked_sub(skip)?)))
            .filter(|(_, avail)| *avail > 0);
        let Some((skip, avail)) = span else {
            return Err(Error::corrupt(
                Some(inode.nid),
                inode.loc,
                "block map",
                "extent does not cover offset",
            ));
        };
        let n = usize::try_from(avail).unwrap_or(usize::MAX).min(rest);
        if !each(done, n, ext.kind, skip)? {
            break;
        }
        done = done.saturating_add(n);
    }
    Ok(())
}

/// Fills `buf` (already clipped to the file size) with the bytes of
/// uncompressed `inode` at `offset`.
pub(super) fn read<I: ImageRead + ?Sized>(
    img: &I,
    inode: &Inode,
    offset: u64,
    buf: &mut [u8],
) -> Result<()> {
    read_with(img, inode, offset, buf, false)
}

/// [`read`] through the metadata block cache, for directories: a walk
/// reads their blocks again at every listing and lookup, and the cache
/// keeps them in the daemon's memory instead of the host page cache of the
/// image (where, beside the cached inodes, they would be a second copy of
/// the metadata).
pub(super) fn read_cached<I: ImageRead + ?Sized>(
    img: &I,
    inode: &Inode,
    offset: u64,
    buf: &mut [u8],
) -> Result<()> {
    read_with(img, inode, offset, buf, true)
}

fn read_with<I: ImageRead + ?Sized>(
    img: &I,
    inode: &Inode,
    offset: u64,
    buf: &mut [u8],
    cached: bool,
) -> Result<()> {
    for_each_piece(img, inode, offset, buf.len(), |done, n, kind, skip| {
        let out = &mut buf[done..][..n];
        match kind {
            ExtentKind::Hole => out.fill(0),
            ExtentKind::Mapped { device, pa } => {
                let pa = pa.checked_add(skip).ok_or_else(|| {
                    Error::corrupt(Some(inode.nid), inode.loc, "block map", "address overflow")
                })?;
                if cached {
                    img.read_physical_cached(inode.nid, device, pa, out)?;
                } else {
                    img.read_physical(inode.nid, device, pa, out)?;
                }
            }
            ExtentKind::Inline(p) => {
                let p = p.offset(skip).ok_or_else(|| {
                    Error::corrupt(Some(inode.nid), p, "inline data", "address overflow")
                })?;
                if cached {
                    let bytes = img.meta("inline data", p, n)?;
                    bytes.copy_into("inline data", p.into(), out)?;
                } else {
                    img.meta_into("inline data", p, out)?;
                }
            }
        }
        Ok(true)
    })
}

/// The host spans of `want` bytes (already clipped to the file size) of
/// uncompressed `inode` at `offset`; `None` when some piece cannot be
/// spliced or more than `max_spans` spans would be needed.
pub(super) fn spans<M: MetaRead + ?Sized>(
    meta: &M,
    devices: &Devices,
    inode: &Inode,
    offset: u64,
    want: usize,
    max_spans: usize,
) -> Result<Option<Vec<Span>>> {
    let mut spans: Vec<Span> = Vec::new();
    let mut whole = true;
    for_each_piece(meta, inode, offset, want, |_, n, kind, skip| {
        let span = match kind {
            ExtentKind::Hole => Some(Span::Zero(n)),
            ExtentKind::Mapped { device, pa } => pa
                .checked_add(skip)
                .and_then(|p| devices.span(device, p, n)),
            ExtentKind::Inline(_) => None,
        };
        let full = spans.len() >= max_spans;
        match (span, spans.last_mut()) {
            (None, _) => whole = false,
            // Contiguous with the previous piece: one span.
            (Some(Span::File { offset: at, .. }), Some(Span::File { offset, len, .. }))
                if offset.checked_add(*len as u64) == Some(at) =>
            {
                *len = len.saturating_add(n);
            }
            (Some(_), _) if full => whole = false,
            (Some(span), _) => spans.push(span),
        }
        Ok(whole)
    })?;
    Ok(whole.then_some(spans))
}
