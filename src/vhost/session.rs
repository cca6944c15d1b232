//! The FUSE dispatcher as a [`Session`]: one `fuse::Session` per frontend
//! connection, so that a reconnecting VMM or a rebooted guest starts with
//! no lookup counts and no open handles.
//!
//! [`guest_image_session`]: the same over an image in the guest's own
//! RAM, opened at FUSE INIT through the connection's memory table.

use std::io;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use log::{info, warn};

use super::backend::{GuestMem, Session};
use super::reply::error_reply;
use super::writer::GuestWriter;
use crate::erofs::{Image, ImageOptions};
use crate::fuse::request::{parse_header, Op};
use crate::fuse::{RepliesOnly, Session as Server, Share, ShareOptions as ServerOptions};
use crate::source::GuestMemorySource;

impl Session for Server {
    fn handle(&self, request: &[u8], reply: &mut GuestWriter<'_>) -> io::Result<()> {
        Server::handle(self, request, reply)
    }
}

/// A fresh FUSE session of `share` (shared between sessions: its images
/// are immutable, and their caches stay warm across reconnections).
pub fn fuse_session(share: &Arc<Share>) -> Arc<dyn Session> {
    Arc::new(Server::new(Arc::clone(share), Arc::new(RepliesOnly)))
}

/// An image in the guest's own RAM (`--image guest:GPA:LEN`).
#[derive(Debug, Clone)]
pub struct GuestImage {
    /// Guest-physical address of the image's first byte (any alignment).
    pub gpa: u64,
    /// Length of the image in bytes.
    pub len: u64,
    /// How to open it (caches, extra devices).
    pub options: ImageOptions,
}

impl GuestImage {
    fn describe(&self) -> String {
        format!(
            "guest image at {:#x}..{:#x} ({} bytes)",
            self.gpa,
            self.gpa.saturating_add(self.len),
            self.len
        )
    }
}

/// A session over an image in guest memory, opened when FUSE INIT
/// arrives (after SET_MEM_TABLE: the image is read through the
/// connection's memory table).
///
/// Before a successful INIT every request gets EIO (as the FUSE server
/// answers before INIT); an INIT whose range is not mapped gets ENODEV,
/// one whose range holds no usable image (or too little of it) EIO, each
/// with a log line, and a later INIT tries again.
///
/// The image's metadata and decoded-extent caches keep validated copies:
/// when the guest rewrites the image while it is served, the daemon may
/// go on answering from those copies (stale but consistent), while what
/// it reads afresh reflects the new bytes (validated again, or an error).
pub fn guest_image_session(
    image: &GuestImage,
    opts: &ServerOptions,
    mem: &GuestMem,
) -> Arc<dyn Session> {
    Arc::new(GuestImageSession {
        image: image.clone(),
        opts: opts.clone(),
        mem: mem.clone(),
        opening: Mutex::new(()),
        server: OnceLock::new(),
    })
}

struct GuestImageSession {
    image: GuestImage,
    opts: ServerOptions,
    mem: GuestMem,
    /// Held while opening, so that concurrent INITs open the image once.
    opening: Mutex<()>,
    server: OnceLock<Server>,
}

impl GuestImageSession {
    /// The server, opening the image first if needed; on failure the
    /// errno for the INIT reply (the reason is logged).
    fn open(&self) -> Result<&Server, i32> {
        let _guard = self.opening.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = self.server.get() {
            return Ok(s);
        }
        let what = self.image.describe();
        let src = GuestMemorySource::new(self.mem.clone(), self.image.gpa, self.image.len)
            .and_then(|s| s.check_mapped().map(|()| s))
            .map_err(|e| {
                warn!("{what}: {e}; FUSE INIT refused (ENODEV)");
                libc::ENODEV
            })?;
        let refuse = |e: &dyn std::fmt::Display| {
            warn!("{what}: {e}; FUSE INIT refused (EIO)");
            libc::EIO
        };
        let img = Image::open(Arc::new(src), self.image.options.clone()).map_err(|e| refuse(&e))?;
        let sb = img.superblock();
        let need = sb.blocks.saturating_mul(sb.block_size());
        if need > self.image.len {
            return Err(refuse(&format_args!(
                "too small: the superblock says {need} bytes"
            )));
        }
        let share = Share::new(Arc::new(img), self.opts.clone()).map_err(|e| refuse(&e))?;
        let server = Server::new(Arc::new(share), Arc::new(RepliesOnly));
        info!("{what}: opened");
        Ok(self.server.get_or_init(|| server))
    }
}

impl std::fmt::Debug for GuestImageSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestImageSession")
            .field("image", &self.image)
            .field("open", &self.server.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Session for GuestImageSession {
    fn handle(&self, request: &[u8], reply: &mut GuestWriter<'_>) -> io::Result<()> {
        if let Some(s) = self.server.get() {
            return Server::handle(s, request, reply);
        }
        let (hdr, args) = match parse_header(request) {
            Ok(x) => x,
            Err(e) => return send_error(reply, e.unique.unwrap_or(0), e.error.errno()),
        };
        match Op::decode(hdr.opcode, args) {
            Err(e) => send_error(reply, hdr.unique, e.errno()),
            Ok(Op::Init(_)) => match self.open() {
                Ok(s) => Server::handle(s, request, reply),
                Err(errno) => send_error(reply, hdr.unique, errno),
            },
            Ok(op) if !op.wants_reply() => Ok(()),
            Ok(_) => send_error(reply, hdr.unique, libc::EIO),
        }
    }
}

fn send_error(reply: &mut GuestWriter<'_>, unique: u64, errno: i32) -> io::Result<()> {
    if error_reply(reply, unique, errno) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "no room for a reply header",
        ))
    }
}
