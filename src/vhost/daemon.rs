//! The daemon around the device: the listening socket, one FUSE session
//! per frontend connection (of the share the caller gives), and clean
//! shutdown on SIGTERM/SIGINT.

use std::fs;
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{info, warn};
use vhost::vhost_user::{Error as VhostUserError, Listener};
use vhost_user_backend::{Error as DaemonLibError, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use super::backend::{DeviceOptions, FsBackend, GuestMem};
use super::error::{DaemonError, FdProblem};
use super::outbound::VhostOutbound;
use super::session::connection_session_with;
use crate::fuse::Share;
use crate::os;
use crate::os::signal::SignalSet;

/// Where frontends connect.
#[derive(Debug, Clone)]
pub enum Listen {
    /// Create a socket at this path (a stale socket there is replaced),
    /// optionally owned by a group (mode 0660); removed on exit.
    Path {
        /// The socket path.
        path: PathBuf,
        /// Group allowed to connect.
        group: Option<String>,
    },
    /// An inherited socket that is already listening.
    Fd(RawFd),
}

/// The share a connection serves, given its guest memory (the same share
/// for every connection, or one made for it, e.g. over an image in that
/// guest's memory).
pub type ShareFor<'a> = dyn Fn(&GuestMem) -> Arc<Share> + 'a;

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where frontends connect.
    pub listen: Listen,
    /// The device's queues, tag and threads.
    pub device: DeviceOptions,
    /// Serve one frontend, then exit (else wait for the next one).
    pub once: bool,
}

/// Serves frontends one after another, each with a fresh FUSE session of
/// the share from `share_for` (given the connection's guest memory, which
/// the vhost-user control plane updates on SET_MEM_TABLE), until the first
/// disconnect with `once`, or a signal: [`bind`], then [`Bound::serve`].
///
/// Must be called before any other thread is started: it blocks SIGTERM and
/// SIGINT for the whole process and handles them on a thread of its own
/// (removing the socket file and exiting with status 0).
pub fn serve(opts: &ServeOptions, share_for: &ShareFor<'_>) -> Result<(), DaemonError> {
    bind(&opts.listen)?.serve(opts, share_for)
}

/// The listening socket, made (or adopted) but not served yet: bound before
/// the daemon enters its sandbox, served after. Dropped unserved (setup
/// failed), it removes the socket file it made.
#[derive(Debug)]
pub struct Bound {
    listener: Option<UnixListener>,
    created: Option<PathBuf>,
    signals: SignalSet,
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Some(p) = self.created.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Blocks SIGTERM and SIGINT (call it before any other thread is started:
/// they are handled by a thread of [`Bound::serve`]) and makes or adopts
/// the listening socket.
pub fn bind(how: &Listen) -> Result<Bound, DaemonError> {
    let signals = SignalSet::new(&[libc::SIGTERM, libc::SIGINT]);
    signals.block().map_err(|source| DaemonError::Os {
        what: "blocking SIGTERM/SIGINT",
        source,
    })?;
    let (listener, created) = listen(how)?;
    Ok(Bound {
        listener: Some(listener),
        created,
        signals,
    })
}

impl Bound {
    /// The socket file made by [`bind`] (none for an inherited socket).
    pub fn socket_path(&self) -> Option<&Path> {
        self.created.as_deref()
    }

    /// Serves frontends on the socket (see [`serve`]); starts the thread
    /// that handles SIGTERM and SIGINT.
    pub fn serve(
        mut self,
        opts: &ServeOptions,
        share_for: &ShareFor<'_>,
    ) -> Result<(), DaemonError> {
        let listener = self.listener.take().ok_or_else(|| DaemonError::Os {
            what: "serving the socket",
            source: io::Error::other("already served"),
        })?;
        spawn_signal_thread(self.signals, self.created.clone())?;
        let mut listener = Listener::from(listener);
        // The socket file is removed when `self` is dropped, on return.
        session_loop(opts, share_for, &mut listener)
    }
}

fn session_loop(
    opts: &ServeOptions,
    share_for: &ShareFor<'_>,
    listener: &mut Listener,
) -> Result<(), DaemonError> {
    loop {
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let out = Arc::new(VhostOutbound::new(opts.device.dax_window));
        let session = connection_session_with(&share_for(&mem), Arc::clone(&out));
        let backend = Arc::new(FsBackend::new(
            Arc::clone(&session),
            out,
            &opts.device,
            mem.clone(),
        )?);
        let mut daemon =
            VhostUserDaemon::new("erofs-virtiofsd".to_string(), Arc::clone(&backend), mem)
                .map_err(|e| DaemonError::VhostUser(e.into()))?;
        info!("waiting for a vhost-user frontend");
        // The readiness line VMM launchers wait for on stderr (Kata's
        // runtime-rs, as with virtiofsd): not a log message, so it is
        // written whatever the log level. The socket is listening by now.
        let _ = writeln!(io::stderr(), "Waiting for vhost-user socket connection...");
        daemon
            .start(listener)
            .map_err(|e| DaemonError::VhostUser(e.into()))?;
        info!("frontend connected");
        let result = daemon.wait();
        for handler in daemon.get_epoll_handlers() {
            handler.send_exit_event();
        }
        backend.shutdown();
        if let Some(c) = session.dax_counts() {
            info!("connection ended; {c}");
        }
        // Joins the library's epoll threads (they hold the backend), then
        // closes what the library left open.
        drop(daemon);
        FsBackend::close_exit_events(backend);
        match result {
            Ok(())
            | Err(DaemonLibError::HandleRequest(
                VhostUserError::Disconnected | VhostUserError::PartialMessage,
            )) => info!("frontend disconnected"),
            Err(e) => warn!("frontend session ended: {e}"),
        }
        if opts.once {
            return Ok(());
        }
    }
}

/// Creates or adopts the listening socket; returns it and the path to
/// remove on exit.
fn listen(how: &Listen) -> Result<(UnixListener, Option<PathBuf>), DaemonError> {
    match how {
        Listen::Path { path, group } => {
            remove_stale_socket(path).map_err(|source| DaemonError::Listen {
                path: path.clone(),
                source,
            })?;
            let l = UnixListener::bind(path).map_err(|source| DaemonError::Listen {
                path: path.clone(),
                source,
            })?;
            if let Some(g) = group {
                if let Err(source) = give_to_group(path, g) {
                    let _ = fs::remove_file(path);
                    return Err(DaemonError::SocketGroup {
                        path: path.clone(),
                        group: g.clone(),
                        source,
                    });
                }
            }
            Ok((l, Some(path.clone())))
        }
        Listen::Fd(fd) => Ok((adopt_listening_fd(*fd)?, None)),
    }
}

/// Removes a socket left at `path` by an earlier run; anything else there
/// is left alone (bind then fails with "address in use").
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a file that is not a socket is in the way",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn give_to_group(path: &Path, group: &str) -> io::Result<()> {
    let gid = group_id(group)?;
    std::os::unix::fs::chown(path, None, Some(gid))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o660))
}

/// The gid of a group name, or of a number.
fn group_id(group: &str) -> io::Result<u32> {
    if let Ok(n) = group.parse::<u32>() {
        return Ok(n);
    }
    os::proc::group_id(group)
}

/// Takes over `fd` after checking that it is a listening Unix socket.
fn adopt_listening_fd(fd: RawFd) -> Result<UnixListener, DaemonError> {
    let bad = |problem: FdProblem| DaemonError::BadFd { fd, problem };
    if fd < 0 {
        return Err(bad(FdProblem::Negative));
    }
    // A close-on-exec descriptor of our own for the inherited socket.
    let sock = os::fd::dup_inherited(fd).map_err(|e| bad(FdProblem::Unusable(e)))?;
    let int_opt = |opt| os::fd::socket_option(&sock, opt).map_err(|e| bad(FdProblem::Unusable(e)));
    if int_opt(libc::SO_DOMAIN)? != libc::AF_UNIX {
        return Err(bad(FdProblem::NotUnix));
    }
    if int_opt(libc::SO_ACCEPTCONN)? == 0 {
        return Err(bad(FdProblem::NotListening));
    }
    Ok(UnixListener::from(sock))
}

/// Waits for SIGTERM/SIGINT; then removes the socket and exits (status 0).
fn spawn_signal_thread(set: SignalSet, socket: Option<PathBuf>) -> Result<(), DaemonError> {
    os::signal::spawn_handler(set, "signals", move |sig| {
        info!("signal {sig} received, shutting down");
        if let Some(p) = &socket {
            let _ = fs::remove_file(p);
        }
        std::process::exit(0);
    })
    .map_err(|source| DaemonError::Os {
        what: "starting the signal thread",
        source,
    })
}
