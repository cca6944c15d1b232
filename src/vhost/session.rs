//! The FUSE dispatcher as a [`Session`]: one `fuse::Server` per frontend
//! connection, so that a reconnecting VMM or a rebooted guest starts with
//! no lookup counts and no open handles.

use std::io;
use std::sync::Arc;

use super::backend::Session;
use super::writer::GuestWriter;
use crate::erofs::Image;
use crate::fuse::{Server, ServerOptions};

impl Session for Server {
    fn handle(&self, request: &[u8], reply: &mut GuestWriter<'_>) -> io::Result<()> {
        Server::handle(self, request, reply)
    }
}

/// A fresh FUSE session over `image` (shared between sessions: it is
/// immutable, and its caches stay warm across reconnections).
pub fn fuse_session(image: &Arc<Image>, opts: &ServerOptions) -> Result<Arc<dyn Session>, String> {
    let server = Server::new(Arc::clone(image), opts.clone()).map_err(|e| e.to_string())?;
    Ok(Arc::new(server))
}
