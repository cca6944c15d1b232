//! The FUSE dispatcher's reply sink over a chain's writable buffers: the
//! reply header and payloads are copied in, file data is produced in place.

use std::io;

use zerocopy::IntoBytes;

use super::writer::GuestWriter;
use crate::fuse::abi::OutHeader;
use crate::fuse::{out_header, Errno, Fill, ReplySink, OUT_HEADER_LEN};

impl ReplySink for GuestWriter<'_> {
    fn send(&mut self, header: &OutHeader, body: &[&[u8]]) -> io::Result<()> {
        self.reset();
        // All or nothing: never leave a header whose length was not sent.
        let total = body
            .iter()
            .fold(OUT_HEADER_LEN, |t, b| t.saturating_add(b.len()));
        if total > self.capacity() {
            return Err(super::error::ReplyTooLong {
                offset: 0,
                len: total,
                capacity: self.capacity(),
            }
            .into());
        }
        self.write_at(0, header.as_bytes())?;
        let mut at = OUT_HEADER_LEN;
        for part in body {
            self.write_at(at, part)?;
            at = at.saturating_add(part.len());
        }
        Ok(())
    }

    fn send_with(&mut self, unique: u64, len: usize, fill: &mut Fill<'_>) -> io::Result<()> {
        self.reset();
        let room = self.capacity().checked_sub(OUT_HEADER_LEN).ok_or_else(|| {
            io::Error::from(super::error::ReplyTooLong {
                offset: 0,
                len: OUT_HEADER_LEN,
                capacity: self.capacity(),
            })
        })?;
        let want = len.min(room);
        let mut failed = None;
        let done = self.with_slices(OUT_HEADER_LEN, want, |bufs| {
            let mut done = 0usize;
            for buf in bufs.iter_mut() {
                let size = buf.len();
                match fill(buf, done) {
                    Ok(n) => {
                        let n = n.min(size);
                        done = done.saturating_add(n);
                        if n < size {
                            break;
                        }
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            Ok((done, done))
        })?;
        if let Some(Errno(e)) = failed {
            self.reset();
            return self
                .write_at(0, out_header(unique, e, 0).as_bytes())
                .map_err(Into::into);
        }
        self.write_at(0, out_header(unique, 0, done).as_bytes())
            .map_err(Into::into)
    }
}

/// Writes a header-only error reply (`errno` positive), replacing anything
/// written before; false when not even the header fits.
pub fn error_reply(w: &mut GuestWriter<'_>, unique: u64, errno: i32) -> bool {
    w.reset();
    w.write_at(0, out_header(unique, errno, 0).as_bytes())
        .is_ok()
}
