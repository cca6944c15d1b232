//! The daemon around the device: the listening socket, one session per
//! frontend connection, and clean shutdown on SIGTERM/SIGINT.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{info, warn};
use vhost::vhost_user::{Error as VhostUserError, Listener};
use vhost_user_backend::{Error as DaemonLibError, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use super::backend::{DeviceOptions, FsBackend, GuestMem, Session};
use super::error::DaemonError;
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

/// Makes the session of one connection, given its guest memory.
pub type NewSession<'a> = dyn Fn(&GuestMem) -> Result<Arc<dyn Session>, String> + 'a;

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

/// Serves frontends one after another, each with a session from
/// `new_session` (given the connection's guest memory, which the
/// vhost-user control plane updates on SET_MEM_TABLE), until the first
/// disconnect with `once`, or a signal.
///
/// Must be called before any other thread is started: it blocks SIGTERM and
/// SIGINT for the whole process and handles them on a thread of its own
/// (removing the socket file and exiting with status 0).
pub fn serve(opts: &ServeOptions, new_session: &NewSession<'_>) -> Result<(), DaemonError> {
    let signals = SignalSet::new(&[libc::SIGTERM, libc::SIGINT]);
    signals.block().map_err(|source| DaemonError::Os {
        what: "blocking SIGTERM/SIGINT",
        source,
    })?;
    let (listener, created) = listen(&opts.listen)?;
    spawn_signal_thread(signals, created.clone())?;
    let mut listener = Listener::from(listener);
    let result = session_loop(opts, new_session, &mut listener);
    if let Some(p) = &created {
        let _ = fs::remove_file(p);
    }
    result
}

fn session_loop(
    opts: &ServeOptions,
    new_session: &NewSession<'_>,
    listener: &mut Listener,
) -> Result<(), DaemonError> {
    loop {
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let session = new_session(&mem).map_err(DaemonError::VhostUser)?;
        let backend = Arc::new(
            FsBackend::new(session, &opts.device, mem.clone()).map_err(DaemonError::VhostUser)?,
        );
        let mut daemon =
            VhostUserDaemon::new("erofs-virtiofsd".to_string(), Arc::clone(&backend), mem)
                .map_err(|e| DaemonError::VhostUser(e.to_string()))?;
        info!("waiting for a vhost-user frontend");
        daemon
            .start(listener)
            .map_err(|e| DaemonError::VhostUser(e.to_string()))?;
        info!("frontend connected");
        let result = daemon.wait();
        for handler in daemon.get_epoll_handlers() {
            handler.send_exit_event();
        }
        backend.shutdown();
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
    let name = CString::new(group)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "group name has a NUL byte"))?;
    let mut grp = std::mem::MaybeUninit::<libc::group>::uninit();
    let mut buf = vec![0 as libc::c_char; 16384];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `name` is a
    // NUL-terminated string, `grp` has room for one `struct group`, `buf`
    // for `buf.len()` bytes, and `result` for one pointer; the strings
    // getgrnam_r stores point into `buf`, which we do not read.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            grp.as_mut_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    if result.is_null() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no such group"));
    }
    // SAFETY: getgrnam_r returned 0 with a non-null result, so it filled
    // in `grp`.
    Ok(unsafe { grp.assume_init() }.gr_gid)
}

/// Takes over `fd` after checking that it is a listening Unix socket.
fn adopt_listening_fd(fd: RawFd) -> Result<UnixListener, DaemonError> {
    let bad = |reason: String| DaemonError::BadFd { fd, reason };
    if fd < 0 {
        return Err(bad("not a file descriptor".to_string()));
    }
    let int_opt = |opt: libc::c_int| -> io::Result<libc::c_int> {
        let mut val: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `val` and `len` are valid for writes of the sizes given;
        // getsockopt only reads `fd` (invalid fds fail with EBADF/ENOTSOCK).
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&mut val as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            Ok(val)
        } else {
            Err(io::Error::last_os_error())
        }
    };
    let domain = int_opt(libc::SO_DOMAIN).map_err(|e| bad(e.to_string()))?;
    if domain != libc::AF_UNIX {
        return Err(bad("not a Unix domain socket".to_string()));
    }
    let listening = int_opt(libc::SO_ACCEPTCONN).map_err(|e| bad(e.to_string()))?;
    if listening == 0 {
        return Err(bad("socket is not listening".to_string()));
    }
    // SAFETY: `fd` is an open Unix socket (getsockopt succeeded on it) that
    // the caller handed to us (--fd) and nothing else in this process owns.
    let l = unsafe { UnixListener::from_raw_fd(fd) };
    // SAFETY: fcntl on an fd we own; F_SETFD takes an int argument.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        warn!("--fd {fd}: cannot set close-on-exec");
    }
    Ok(l)
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
