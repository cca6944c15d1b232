//! `erofs-virtiofsd mount IMAGE MOUNTPOINT`: serve an image through
//! /dev/fuse.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::ImageSource;
use crate::fuse::devfuse::{self, MountConfig};
use crate::fuse::{CachePolicy, Server, ServerOptions, DEFAULT_MAX_READ};

/// `--cache` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CacheArg {
    /// No caching: zero timeouts, direct I/O.
    Never,
    /// Short (1 s) timeouts.
    Auto,
    /// Long timeouts, page and directory cache kept (the image is immutable).
    Always,
}

impl From<CacheArg> for CachePolicy {
    fn from(c: CacheArg) -> Self {
        match c {
            CacheArg::Never => CachePolicy::Never,
            CacheArg::Auto => CachePolicy::Auto,
            CacheArg::Always => CachePolicy::Always,
        }
    }
}

/// Arguments of `mount`.
#[derive(Debug, Args)]
pub struct MountArgs {
    #[command(flatten)]
    src: ImageSource,
    /// Directory to mount on.
    mountpoint: PathBuf,
    /// Worker threads reading /dev/fuse.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Stay in the foreground (default: detach once the mount is up).
    #[arg(long)]
    foreground: bool,
    /// How long the kernel may cache names, attributes and data.
    #[arg(long, value_enum, default_value_t = CacheArg::Always)]
    cache: CacheArg,
}

impl MountArgs {
    /// Opens and checks the image, mounts, serves until unmounted (or
    /// SIGINT/SIGTERM/SIGHUP, which unmount).
    pub fn run(self) -> anyhow::Result<ExitCode> {
        // The image is opened and checked before anything is mounted.
        let img = Arc::new(self.src.open()?);
        let opts = ServerOptions {
            cache: self.cache.into(),
            ..ServerOptions::default()
        };
        let server = Arc::new(
            Server::new(img, opts).with_context(|| format!("{}", self.src.image.display()))?,
        );
        let mountpoint = devfuse::preflight(&self.mountpoint)?;
        // Signals are handled by one thread (below); block them first so a
        // signal between mount and serve cannot kill us with the mount up.
        block_signals()?;
        let mount = devfuse::mount(&MountConfig {
            mountpoint: mountpoint.clone(),
            fsname: "erofs-virtiofsd".into(),
            subtype: "erofs-virtiofsd".into(),
            max_read: DEFAULT_MAX_READ,
        })?;
        if !self.foreground {
            if let Err(e) = daemonize() {
                let _ = devfuse::unmount(&mountpoint);
                return Err(e);
            }
        }
        spawn_signal_thread(mountpoint.clone())?;
        mount.serve(&server, self.threads)?;
        Ok(ExitCode::SUCCESS)
    }
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it fully
    // before sigaddset reads it, and both only touch `set`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

fn block_signals() -> anyhow::Result<()> {
    let set = signal_set();
    // SAFETY: `set` is an initialised signal set; the old mask is not
    // wanted (null).
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        anyhow::bail!("pthread_sigmask: {}", std::io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Waits for SIGINT/SIGTERM/SIGHUP (blocked in every thread) and unmounts;
/// the workers then see ENODEV and the process exits.
fn spawn_signal_thread(mountpoint: PathBuf) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let set = signal_set();
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is initialised and `sig` is a valid out pointer.
            let rc = unsafe { libc::sigwait(&set, &mut sig) };
            if rc != 0 {
                continue;
            }
            if let Err(e) = devfuse::unmount(&mountpoint) {
                let _ = writeln!(
                    std::io::stderr(),
                    "erofs-virtiofsd: unmounting {} on signal {sig}: {e}",
                    mountpoint.display()
                );
            }
        })
        .context("spawning the signal thread")?;
    Ok(())
}

/// Forks; the parent exits 0 (the mount is up), the child goes on in a new
/// session with stdio on /dev/null.
fn daemonize() -> anyhow::Result<()> {
    // SAFETY: no thread has been spawned yet, so the child is a complete
    // copy of this single-threaded process.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        anyhow::bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid > 0 {
        // SAFETY: _exit ends the parent without running destructors that
        // could touch state the child now owns (the mount).
        unsafe { libc::_exit(0) };
    }
    // SAFETY: setsid has no preconditions; failure (already a leader) is
    // harmless.
    unsafe { libc::setsid() };
    let _ = std::env::set_current_dir(Path::new("/"));
    let null = devfuse::open_null().context("opening /dev/null")?;
    for fd in 0..3 {
        // SAFETY: both fds are open; dup2 replaces stdio atomically.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
    Ok(())
}
