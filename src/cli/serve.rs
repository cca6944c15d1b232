//! Serve mode: the vhost-user-fs daemon, with the options of the vhost-user
//! spec's "Backend program conventions" (`--socket-path`, `--fd`,
//! `--print-capabilities`) and virtiofsd's (`--tag`, `--log-level`,
//! `--socket-group`, `--thread-pool-size`, `--cache`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;

use super::control::{self, Allowed, ShareControl};
use super::images::{Plan, ShareArgs};
use super::log::{self as logging, init_logging, LogArgs, LogLevel};
use super::mount::CacheArg;
use super::sandbox::SandboxArgs;
use super::source::image_options;
use crate::fuse::{DaxMode, Share, ShareOptions};
use crate::os::signal::SignalSet;
use crate::sandbox::{Profile, Supervision};
use crate::vhost::{self, DeviceOptions, Listen, ServeOptions};

/// `--dax` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DaxArg {
    /// No mappings.
    Never,
    /// Every regular file.
    Always,
    /// Files of 64 KiB or more (for guests mounted `dax=inode`).
    Inode,
}

impl From<DaxArg> for DaxMode {
    fn from(a: DaxArg) -> Self {
        match a {
            DaxArg::Never => DaxMode::Never,
            DaxArg::Always => DaxMode::Always,
            DaxArg::Inode => DaxMode::Inode,
        }
    }
}

/// `--dax-window`: a size with an optional suffix, checked.
fn parse_dax_window(s: &str) -> Result<u64, String> {
    super::store::parse_size(s).and_then(vhost::config::check_dax_window)
}

/// Options of serve mode (the default without a subcommand).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// vhost-user socket to create and listen on (removed on exit).
    #[arg(long, value_name = "PATH", conflicts_with = "fd")]
    socket_path: Option<PathBuf>,
    /// Listen on this inherited, already listening Unix socket instead.
    #[arg(long, value_name = "FDNUM")]
    fd: Option<i32>,
    /// Print the vhost-user backend capabilities (JSON) and exit.
    #[arg(long)]
    print_capabilities: bool,
    /// Filesystem tag offered in the device's config space (up to 36
    /// bytes); without it, the VMM supplies the tag (QEMU's
    /// vhost-user-fs-pci `tag=`).
    #[arg(long)]
    tag: Option<String>,
    /// Log messages of this level and more severe to stderr.
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    log_level: LogLevel,
    /// Give the socket to this group (name or gid), mode 0660.
    #[arg(long, value_name = "GROUP", requires = "socket_path")]
    socket_group: Option<String>,
    /// The images to serve and their options.
    #[command(flatten)]
    share: ShareArgs,
    /// The image at the root is in inherited file descriptor FD (e.g. a
    /// memfd; with `--offset` it may start anywhere in it); same as
    /// `--image fd:FD`.
    #[arg(long, value_name = "FD", conflicts_with = "images")]
    image_fd: Option<i32>,
    /// How long the guest may cache names, attributes and data.
    #[arg(long, value_enum, default_value_t = CacheArg::Always)]
    cache: CacheArg,
    /// Number of request queues (besides the high-priority queue).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=62))]
    queues: u16,
    /// Worker threads for requests; 0 handles each queue's requests on
    /// that queue's own thread.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1024))]
    thread_pool_size: u16,
    /// Serve one frontend, then exit (default: wait for the next one).
    #[arg(long)]
    once: bool,
    /// Offer a DAX window of SIZE bytes (a power of two, 2 MiB to 64 GiB;
    /// suffixes K, M, G): the guest maps file data instead of reading it.
    /// Needs `--tag` and QEMU's `vhost-user-test-device-pci` (see
    /// docs/dax.md).
    #[arg(long, value_name = "SIZE", value_parser = parse_dax_window, requires = "tag")]
    dax_window: Option<u64>,
    /// Which files the guest may map through its window: never, always
    /// (every regular file), inode (files of 64 KiB or more carry
    /// FUSE_ATTR_DAX for guests mounted `dax=inode`). Default: always with
    /// `--dax-window`.
    #[arg(long, value_enum, requires = "dax_window")]
    dax: Option<DaxArg>,
    #[command(flatten)]
    sandbox: SandboxArgs,
    #[command(flatten)]
    log: LogArgs,
    /// Serve the HTTP API (images added and removed, metrics) on this Unix
    /// socket; the daemon may then start with no image at all.
    #[arg(long, value_name = "PATH")]
    api_socket: Option<PathBuf>,
}

impl ServeArgs {
    /// Whether nothing at all was asked (then the help is shown).
    pub fn is_empty(&self) -> bool {
        self.socket_path.is_none()
            && self.fd.is_none()
            && self.share.is_empty()
            && !self.print_capabilities
            && self.api_socket.is_none()
    }

    /// Runs the daemon (or prints the capabilities).
    pub fn run(self) -> anyhow::Result<ExitCode> {
        if self.print_capabilities {
            let mut out = std::io::stdout().lock();
            out.write_all(vhost::config::capabilities_json().as_bytes())?;
            out.flush()?;
            return Ok(ExitCode::SUCCESS);
        }
        let listen = match (&self.socket_path, self.fd) {
            (Some(path), None) => Listen::Path {
                path: path.clone(),
                group: self.socket_group.clone(),
            },
            (None, Some(fd)) => Listen::Fd(fd),
            _ => bail!("one of --socket-path or --fd is required"),
        };
        let root_fd = self.image_fd.map(|fd| PathBuf::from(format!("fd:{fd}")));
        let plan = self.share.plan(root_fd)?;
        if plan.is_none() && self.api_socket.is_none() {
            bail!("--image (or --image-fd) is required, or --api-socket to add images later");
        }
        if let Some(tag) = &self.tag {
            vhost::config::VirtioFsConfig::new(tag, 1).context("--tag")?;
        }
        let dax = match (self.dax_window, self.dax) {
            (None, _) => DaxMode::Never,
            (Some(_), None) => DaxMode::Always,
            (Some(_), Some(d)) => d.into(),
        };
        let server_opts = ShareOptions {
            cache: self.cache.into(),
            dax,
            max_nodes: self.share.max_nodes,
            max_handles: self.share.max_handles,
            ..ShareOptions::default()
        };
        let opts = ServeOptions {
            listen,
            device: DeviceOptions {
                tag: self.tag.clone(),
                request_queues: usize::from(self.queues),
                thread_pool_size: usize::from(self.thread_pool_size),
                dax_window: self.dax_window,
            },
            once: self.once,
        };
        let mut store = self
            .share
            .store_spec(plan.as_ref(), self.api_socket.is_some())?;
        let guest = match &plan {
            Some(plan) => guest_range(plan)?,
            None => None,
        };
        if guest.is_some() && self.api_socket.is_some() {
            bail!(
                "--api-socket: a guest image (--image guest:GPA:LEN) cannot be served with the API"
            );
        }
        let mut shared = None;
        let share_for: Box<vhost::ShareFor<'_>> = if let Some(range) = guest {
            let guest = self.guest_image(range)?;
            init_logging(self.log_level, &self.log)?;
            if store.take().is_some() {
                log::warn!("a guest image shares no content: --domain ignored");
            }
            log::info!(
                "serving the image at guest-physical {:#x} ({} bytes), opened at FUSE INIT",
                guest.gpa,
                guest.len
            );
            Box::new(move |mem| vhost::guest_image_share(&guest, &server_opts, mem))
        } else {
            init_logging(self.log_level, &self.log)?;
            let share = Arc::new(match &plan {
                Some(plan) => plan.open_share(server_opts, self.share.decode_cache)?,
                // Images come later, through the API.
                None => Share::named(server_opts),
            });
            if let Some(spec) = &store {
                let content = spec.open()?;
                match &plan {
                    Some(plan) => plan.share_content(&share, content)?,
                    None => share.set_content(content),
                }
            }
            shared = Some(Arc::clone(&share));
            if share.is_named() && share.images().is_empty() {
                log::info!("serving no image yet: the API adds them");
            } else if share.is_named() {
                let names: Vec<_> = share
                    .images()
                    .iter()
                    .filter_map(|i| i.name().map(str::to_owned))
                    .collect();
                log::info!("serving {} images: {}", names.len(), names.join(", "));
            }
            Box::new(move |_| Arc::clone(&share))
        };
        // Logged once logging is set up.
        if let Some(w) = self.dax_window {
            if w > crate::fuse::dax::MAX_SAFE_WINDOW {
                log::warn!(
                    "--dax-window {w}: more than {} live mappings may be asked for; those beyond get ENOSPC",
                    crate::fuse::dax::MAX_MAPPINGS
                );
            }
        }
        // With a log file, SIGHUP reopens it (blocked before any thread, so
        // that only the thread below takes it).
        let reopens = self.log.reopens();
        let hup = SignalSet::new(&[libc::SIGHUP]);
        if reopens {
            hup.block().context("blocking SIGHUP")?;
        }
        let bound = vhost::bind(&opts.listen)?;
        let api = control::bind(self.api_socket.as_deref())?;
        // Everything is open: from here on the daemon runs in its sandbox.
        // Decided before the sandbox (it reads paths and the euid).
        let mut sandbox = self.sandbox.options();
        let allowed = Allowed::of(sandbox.mode, &sandbox.read_only);
        sandbox.writable.extend(store.map(|s| s.dir));
        sandbox.enter(
            Profile {
                vhost: true,
                ..Profile::default()
            },
            Supervision::forward()
                .remove_on_exit(bound.socket_path())
                .remove_on_exit(api.as_ref().map(|a| a.path()))
                .forward_sighup(reopens),
        )?;
        if reopens {
            logging::spawn_reopen_thread(hup)?;
        }
        let summary_of = shared.clone();
        let _api = match shared {
            Some(share) => control::serve(api, || {
                ShareControl::new(
                    share,
                    plan.as_ref(),
                    allowed,
                    control::api_decode_cache(self.share.decode_cache),
                    logging::reopener(&self.log),
                )
            })?,
            None => None,
        };
        bound.serve(&opts, &*share_for)?;
        if let Some(c) = summary_of.as_ref().and_then(|s| s.content()) {
            c.log_summary();
        }
        Ok(ExitCode::SUCCESS)
    }

    /// `--image guest:GPA:LEN` (`spec`: what follows `guest:`), with the
    /// extra devices and cache size of the command line.
    fn guest_image(&self, spec: &str) -> anyhow::Result<vhost::GuestImage> {
        let (gpa, len) = parse_guest_range(spec).with_context(|| {
            format!("--image guest:{spec}: expected guest:GPA:LEN (decimal or 0x-hex)")
        })?;
        if self.share.offset != 0 {
            bail!("--offset does not apply to a guest image (give the address in GPA)");
        }
        if self.share.direct_io {
            bail!("--direct-io does not apply to a guest image");
        }
        Ok(vhost::GuestImage {
            gpa,
            len,
            options: image_options(&self.share.devices, false, self.share.decode_cache)?,
        })
    }
}

/// The `GPA:LEN` of a guest image at the share's root; guest images
/// cannot be named.
fn guest_range(plan: &Plan) -> anyhow::Result<Option<&str>> {
    fn guest(p: &Path) -> Option<&str> {
        p.to_str().and_then(|s| s.strip_prefix("guest:"))
    }
    match plan {
        Plan::Root(spec) => Ok(guest(&spec.path)),
        Plan::Named(specs) => {
            if let Some(s) = specs.iter().find(|s| guest(&s.path).is_some()) {
                bail!(
                    "image {}: a guest image can only be the share's root (--image guest:GPA:LEN)",
                    s.name.as_deref().unwrap_or_default()
                );
            }
            Ok(None)
        }
    }
}

/// `GPA:LEN`, each decimal or 0x-hex (`_` separators allowed); LEN not 0
/// and the range not wrapping around.
fn parse_guest_range(spec: &str) -> anyhow::Result<(u64, u64)> {
    let (gpa, len) = spec
        .split_once(':')
        .context("missing ':' between GPA and LEN")?;
    let gpa = parse_u64(gpa).context("GPA")?;
    let len = parse_u64(len).context("LEN")?;
    if len == 0 {
        bail!("LEN is 0");
    }
    if gpa.checked_add(len).is_none() {
        bail!("the range wraps around the address space");
    }
    Ok((gpa, len))
}

fn parse_u64(s: &str) -> anyhow::Result<u64> {
    let s = s.trim().replace('_', "");
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse::<u64>(),
    };
    r.with_context(|| format!("not a number: {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_guest_range() {
        assert_eq!(
            parse_guest_range("0x1000_0003:4096").unwrap(),
            (0x1000_0003, 4096)
        );
        assert_eq!(parse_guest_range("17:0X10").unwrap(), (17, 16));
        for bad in [
            "",
            "0x10",
            "0x10:",
            ":5",
            "0x10:0",
            "zz:1",
            "1:-1",
            "0xffffffffffffffff:2",
        ] {
            assert!(parse_guest_range(bad).is_err(), "{bad:?}");
        }
    }
}
