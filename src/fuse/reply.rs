//! Building replies: the failure of one operation and the helpers every
//! opcode answers through.

use std::io;

use zerocopy::{Immutable, IntoBytes};

use super::sink::{out_header, Errno, ReplySink};

/// Failure of one operation: an errno for the reply, or the transport's own
/// error (passed up).
#[derive(Debug)]
pub(crate) enum Fail {
    Errno(i32),
    Io(io::Error),
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        Fail::Io(e)
    }
}

impl From<Errno> for Fail {
    fn from(e: Errno) -> Self {
        Fail::Errno(e.0)
    }
}

pub(crate) type OpResult = Result<(), Fail>;

/// Sends a fixed-size reply.
pub(crate) fn send<T: IntoBytes + Immutable>(
    sink: &mut dyn ReplySink,
    unique: u64,
    body: &T,
) -> OpResult {
    send_bytes(sink, unique, &[body.as_bytes()])
}

/// Sends a reply made of `parts`.
pub(crate) fn send_bytes(sink: &mut dyn ReplySink, unique: u64, parts: &[&[u8]]) -> OpResult {
    let len = parts.iter().fold(0usize, |a, p| a.saturating_add(p.len()));
    sink.send(&out_header(unique, 0, len), parts)?;
    Ok(())
}

/// Sends an empty success reply.
pub(crate) fn send_ok(sink: &mut dyn ReplySink, unique: u64) -> OpResult {
    send_bytes(sink, unique, &[])
}

/// Sends an error reply (`errno` positive).
pub(crate) fn send_err(sink: &mut dyn ReplySink, unique: u64, errno: i32) -> io::Result<()> {
    sink.send(&out_header(unique, errno, 0), &[])
}
