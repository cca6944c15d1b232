//! `erofs-virtiofsd mount [IMAGE] MOUNTPOINT`: serve an image (or named
//! images, `--image NAME=PATH`, `--config FILE`) through /dev/fuse.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use super::control::{self, Allowed, ShareControl};
use super::images::{Plan, ShareArgs};
use super::log::{self as logging, init_logging, LogArgs, LogLevel};
use super::sandbox::SandboxArgs;
use crate::fuse::devfuse::{self, MountConfig};
use crate::fuse::uring;
use crate::fuse::{CachePolicy, Share, ShareOptions};
use crate::os::signal::{self, SignalSet};
use crate::sandbox::{Profile, Supervision};

/// `--cache` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CacheArg {
    /// No caching: zero timeouts, direct I/O.
    Never,
    /// Short (1 s) timeouts.
    Auto,
    /// Long timeouts, page and directory cache kept (the image is immutable);
    /// the rest of each decoded extent, the next small files of a directory
    /// read in listing order, and the 128 KiB around small reads of an
    /// uncompressed file read densely at random are pushed into the page
    /// cache.
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
    /// The image at the share's root (a file or block device); leave it
    /// out to serve named images (`--image NAME=PATH`, `--config`).
    #[arg(value_name = "IMAGE")]
    image: Option<PathBuf>,
    /// Directory to mount on.
    #[arg(value_name = "MOUNTPOINT")]
    mountpoint: Option<PathBuf>,
    #[command(flatten)]
    share: ShareArgs,
    /// Worker threads reading /dev/fuse.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Most microseconds a worker that answered a request keeps polling
    /// for the next one before it sleeps (one worker at a time, yielding
    /// its CPU to anything else runnable between polls): a walk's requests
    /// then find it awake instead of having to wake it, which on a VM is
    /// much of a round trip. Adaptive: each gap between requests longer
    /// than this halves the window, down to none, so a mount seldom used
    /// does not poll. 0: workers sleep at once.
    #[arg(long, value_name = "US", default_value_t = DEFAULT_POLL_US)]
    poll_us: u64,
    /// Stay in the foreground (default: detach once the mount is up).
    #[arg(long)]
    foreground: bool,
    /// How long the kernel may cache names, attributes and data.
    #[arg(long, value_enum, default_value_t = CacheArg::Always)]
    cache: CacheArg,
    /// Readahead of the mount in KiB (its `read_ahead_kb` in sysfs): with
    /// more than one request's worth, sequential reads of compressed files
    /// are decoded by several workers at once. 0 keeps the kernel's 128.
    #[arg(long, default_value_t = DEFAULT_READAHEAD_KB)]
    readahead_kb: u32,
    /// FUSE over io_uring (Linux 6.14+, when
    /// /sys/module/fuse/parameters/enable_uring is Y): requests go to a
    /// queue per CPU served by a thread pinned to that CPU (large READs
    /// lent to a helper thread per queue). About twice the small-read rate
    /// for a reader that stays on one CPU and faster walks, but
    /// uncompressed files read sequentially lose the splice from the
    /// image's page cache, so it is off by default. `auto`: use it when
    /// allowed.
    #[arg(long, value_enum, default_value_t = UringArg::Off)]
    io_uring: UringArg,
    /// Log messages of this level and more severe to stderr (which is
    /// /dev/null once detached: use --foreground to see them).
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    log_level: LogLevel,
    /// FUSE passthrough of files whose content is in the store (Linux 6.9+):
    /// the kernel reads the store's entry itself, at page-cache speed.
    /// `auto` uses it when the kernel agrees and an image served from the
    /// start has a domain; `on` also when only images added later through
    /// the API may have one. Agreeing on it costs every file of the mount
    /// an OPEN and a RELEASE round trip (the kernel then sends them for
    /// all files), and the sandboxed process keeps CAP_SYS_ADMIN, which
    /// the kernel wants for registering backing files (docs/sandbox.md).
    /// Only with a store (images with --domain, or --api-socket).
    #[arg(long, value_enum, default_value_t = PassthroughArg::Auto)]
    passthrough: PassthroughArg,
    #[command(flatten)]
    sandbox: SandboxArgs,
    #[command(flatten)]
    log: LogArgs,
    /// Serve the HTTP API (images added and removed, metrics) on this Unix
    /// socket; the mount may then start with no image at all.
    #[arg(long, value_name = "PATH")]
    api_socket: Option<PathBuf>,
}

/// `--passthrough` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PassthroughArg {
    /// When the kernel offers it and an image served from the start has a
    /// domain.
    Auto,
    /// When the kernel offers it and there is a store (with --api-socket
    /// alone too: for images with a domain added later).
    On,
    /// Never: every read of stored content is a READ answered from the
    /// entry.
    Off,
}

/// `--io-uring` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UringArg {
    /// Use it when the kernel allows it.
    Auto,
    /// Use it; fail when the kernel does not allow it.
    On,
    /// Never: read requests from /dev/fuse only.
    Off,
}

/// Largest READ of the local mount: 252 pages, so that a reply spliced
/// from the image file (header, and data that may start inside a page)
/// fits a pipe of the default largest size (1 MiB, 256 buffers).
pub const MOUNT_MAX_READ: u32 = 252 * 4096;

/// Default `--readahead-kb`: four 1 MiB requests in flight.
pub const DEFAULT_READAHEAD_KB: u32 = 4096;

/// Default of `--poll-us`.
pub const DEFAULT_POLL_US: u64 = 300;

impl MountArgs {
    /// Opens and checks the image, mounts, serves until unmounted (or
    /// SIGINT/SIGTERM/SIGHUP, which unmount).
    pub fn run(self) -> anyhow::Result<ExitCode> {
        init_logging(self.log_level, &self.log)?;
        let (image, mountpoint) = match (&self.image, &self.mountpoint) {
            (image, Some(m)) => (image.clone(), m.clone()),
            // One path: the mount point, the images given by name.
            (Some(m), None) => (None, m.clone()),
            (None, None) => bail!("MOUNTPOINT is required"),
        };
        let plan = self.share.plan(image)?;
        if plan.is_none() && self.api_socket.is_none() {
            bail!(
                "no image to serve: give IMAGE, --image NAME=PATH, --config FILE or --api-socket"
            );
        }
        // The images are opened and checked before anything is mounted.
        let opts = ShareOptions {
            cache: self.cache.into(),
            max_nodes: self.share.max_nodes,
            max_handles: self.share.max_handles,
            max_read: MOUNT_MAX_READ,
            ..ShareOptions::default()
        };
        let store = self
            .share
            .store_spec(plan.as_ref(), self.api_socket.is_some())?;
        let share = Arc::new(match &plan {
            Some(plan) => plan.open_share(opts, self.share.decode_cache)?,
            // Images come later, through the API.
            None => Share::named(opts),
        });
        // Agreed at INIT for the whole connection, and then every file
        // costs an OPEN and a RELEASE: only when stored content is there
        // to pass through, or asked for.
        let domains = plan.as_ref().is_some_and(Plan::has_domains);
        let passthrough = store.is_some()
            && match self.passthrough {
                PassthroughArg::Auto => domains,
                PassthroughArg::On => true,
                PassthroughArg::Off => false,
            };
        if let Some(spec) = &store {
            let content = spec.open()?;
            content.set_passthrough(passthrough);
            match &plan {
                Some(plan) => plan.share_content(&share, content)?,
                None => share.set_content(content),
            }
        }
        let queues = self.uring_queues()?;
        let mountpoint = devfuse::preflight(&mountpoint)?;
        // Signals are handled by one thread (below); block them first so a
        // signal between mount and serve cannot kill us with the mount up.
        // With a log file, SIGHUP reopens it instead of stopping.
        let reopens = self.log.reopens();
        let stop: &[libc::c_int] = if reopens {
            &STOP_SIGNALS[..2]
        } else {
            &STOP_SIGNALS
        };
        let signals = SignalSet::new(stop);
        signals.block().context("blocking signals")?;
        let hup = SignalSet::new(&[libc::SIGHUP]);
        if reopens {
            hup.block().context("blocking SIGHUP")?;
        }
        // Listening before the mount shows: a client that sees the mount
        // may connect at once (it is answered once the API is served).
        let api = control::bind(self.api_socket.as_deref())?;
        let mut mount = devfuse::mount(&MountConfig {
            mountpoint: mountpoint.clone(),
            fsname: "erofs-virtiofsd".into(),
            subtype: "erofs-virtiofsd".into(),
            max_read: MOUNT_MAX_READ,
            readahead_kb: (self.readahead_kb != 0).then_some(self.readahead_kb),
        })?;
        if !self.foreground {
            if let Err(e) = crate::os::proc::daemonize() {
                let _ = devfuse::unmount(&mountpoint);
                return Err(e).context("detaching from the terminal");
            }
        }
        mount.open_clones(self.threads);
        mount.set_poll(Duration::from_micros(self.poll_us));
        // Decided before the sandbox (it reads paths and the euid).
        let mut sandbox = self.sandbox.options();
        let allowed = Allowed::of(sandbox.mode, &sandbox.read_only);
        // Everything is open: from here on the daemon runs in its sandbox.
        // Unmounting needs the host's view and CAP_SYS_ADMIN: the
        // supervisor outside the sandbox does it.
        let stop_at = mountpoint.clone();
        sandbox.writable.extend(store.map(|s| s.dir));
        sandbox.enter(
            Profile {
                dev_fuse: true,
                io_uring: !queues.is_empty(),
                passthrough,
                ..Profile::default()
            },
            Supervision::run_on_stop(move || unmount_on_signal(&stop_at))
                .remove_on_exit(api.as_ref().map(|a| a.path()))
                .forward_sighup(reopens),
        )?;
        let _api = control::serve(api, || {
            ShareControl::new(
                Arc::clone(&share),
                plan.as_ref(),
                allowed,
                control::api_decode_cache(self.share.decode_cache),
                logging::reopener(&self.log),
            )
        })?;
        spawn_signal_thread(signals, mountpoint.clone())?;
        if reopens {
            logging::spawn_reopen_thread(hup)?;
        }
        mount.serve(&share, self.threads, queues)?;
        if let Some(c) = share.content() {
            c.log_summary();
        }
        Ok(ExitCode::SUCCESS)
    }

    /// The io_uring queues to offer at INIT (none: /dev/fuse only). Made
    /// before mounting: once INIT agrees on io_uring the kernel holds every
    /// request until all queues are registered.
    fn uring_queues(&self) -> anyhow::Result<Vec<uring::Queue>> {
        const HOW: &str = "echo Y > /sys/module/fuse/parameters/enable_uring";
        if self.io_uring == UringArg::Off {
            return Ok(Vec::new());
        }
        if !uring::kernel_enabled() {
            if self.io_uring == UringArg::On {
                anyhow::bail!("--io-uring on: this kernel does not allow FUSE over io_uring (Linux 6.14+ with `{HOW}`)");
            }
            return Ok(Vec::new());
        }
        let payload = usize::try_from(MOUNT_MAX_READ).unwrap_or(usize::MAX);
        match uring::make_queues(uring::DEFAULT_DEPTH, payload) {
            Ok(q) => Ok(q),
            Err(e) if self.io_uring == UringArg::On => {
                Err(e).context("--io-uring on: setting up the io_uring queues")
            }
            Err(e) => {
                log::warn!("no FUSE over io_uring ({e}); serving /dev/fuse only");
                Ok(Vec::new())
            }
        }
    }
}

/// The signals that end the mount: SIGINT, SIGTERM, and SIGHUP unless it
/// reopens the log file (`--log-file`).
const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Waits for SIGINT/SIGTERM/SIGHUP (blocked in every thread) and unmounts;
/// the workers then see ENODEV and the process exits.
fn spawn_signal_thread(signals: SignalSet, mountpoint: PathBuf) -> anyhow::Result<()> {
    signal::spawn_handler(signals, "signals", move |_| unmount_on_signal(&mountpoint))
        .context("spawning the signal thread")
}

/// Unmounts on a stop signal (or, outside the sandbox, once the daemon in
/// it has failed); a failure is logged.
fn unmount_on_signal(mountpoint: &Path) {
    if let Err(e) = devfuse::unmount(mountpoint) {
        // Not mounted any more (already unmounted by someone): nothing to say.
        if e.raw_os_error() != Some(libc::EINVAL) {
            log::error!("unmounting {}: {e}", mountpoint.display());
        }
    }
}
