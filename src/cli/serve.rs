//! Serve mode: the vhost-user-fs daemon, with the options of the vhost-user
//! spec's "Backend program conventions" (`--socket-path`, `--fd`,
//! `--print-capabilities`) and virtiofsd's (`--tag`, `--log-level`,
//! `--socket-group`, `--thread-pool-size`, `--cache`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;

use super::log::{init_logger, LogLevel};
use super::mount::CacheArg;
use super::ImageSource;
use crate::fuse::{Share, ShareOptions};
use crate::vhost::{self, DeviceOptions, Listen, ServeOptions};

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
    /// The EROFS image to serve (a file or block device), or
    /// `guest:GPA:LEN`: LEN bytes of the guest's own RAM at guest-physical
    /// address GPA (decimal or 0x-hex), opened at FUSE INIT.
    #[arg(long, value_name = "IMAGE")]
    image: Option<PathBuf>,
    /// The image is in inherited file descriptor FD (e.g. a memfd; with
    /// `--offset` it may start anywhere in it); same as `--image fd:FD`.
    #[arg(long, value_name = "FD", conflicts_with = "image")]
    image_fd: Option<i32>,
    /// Extra device (blob) for multi-device images, in device-table order;
    /// repeat for several.
    #[arg(long = "device", value_name = "BLOB")]
    devices: Vec<PathBuf>,
    /// Byte offset of the image inside IMAGE (any alignment).
    #[arg(long, default_value_t = 0)]
    offset: u64,
    /// Bytes of decoded compressed data to keep cached (default: 1/16 of
    /// RAM, between 64 MiB and 1 GiB).
    #[arg(long, value_name = "BYTES")]
    decode_cache: Option<u64>,
    /// Read the image and its devices with O_DIRECT (no host page cache).
    #[arg(long)]
    direct_io: bool,
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
}

impl ServeArgs {
    /// Whether nothing at all was asked (then the help is shown).
    pub fn is_empty(&self) -> bool {
        self.socket_path.is_none()
            && self.fd.is_none()
            && self.image.is_none()
            && !self.print_capabilities
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
        let image = match (&self.image, self.image_fd) {
            (Some(i), _) => i.clone(),
            (None, Some(fd)) => PathBuf::from(format!("fd:{fd}")),
            (None, None) => bail!("--image (or --image-fd) is required"),
        };
        if let Some(tag) = &self.tag {
            vhost::config::VirtioFsConfig::new(tag, 1).context("--tag")?;
        }
        let server_opts = ShareOptions {
            cache: self.cache.into(),
            ..ShareOptions::default()
        };
        let opts = ServeOptions {
            listen,
            device: DeviceOptions {
                tag: self.tag.clone(),
                request_queues: usize::from(self.queues),
                thread_pool_size: usize::from(self.thread_pool_size),
            },
            once: self.once,
        };
        if let Some(spec) = image.to_str().and_then(|s| s.strip_prefix("guest:")) {
            let guest = self.guest_image(spec)?;
            init_logger(self.log_level);
            log::info!(
                "serving the image at guest-physical {:#x} ({} bytes), opened at FUSE INIT",
                guest.gpa,
                guest.len
            );
            vhost::serve(&opts, &|mem| {
                vhost::guest_image_share(&guest, &server_opts, mem)
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        init_logger(self.log_level);
        let src = ImageSource {
            image,
            devices: self.devices.clone(),
            offset: self.offset,
            decode_cache: self.decode_cache,
            direct_io: self.direct_io,
        };
        let img = Arc::new(src.open()?);
        let share = Arc::new(Share::new(img, server_opts)?);
        vhost::serve(&opts, &|_| Arc::clone(&share))?;
        Ok(ExitCode::SUCCESS)
    }

    /// `--image guest:GPA:LEN` (`spec`: what follows `guest:`), with the
    /// extra devices and cache size of the command line.
    fn guest_image(&self, spec: &str) -> anyhow::Result<vhost::GuestImage> {
        let (gpa, len) = parse_guest_range(spec).with_context(|| {
            format!("--image guest:{spec}: expected guest:GPA:LEN (decimal or 0x-hex)")
        })?;
        if self.offset != 0 {
            bail!("--offset does not apply to a guest image (give the address in GPA)");
        }
        if self.direct_io {
            bail!("--direct-io does not apply to a guest image");
        }
        Ok(vhost::GuestImage {
            gpa,
            len,
            options: super::image_options(&self.devices, false, self.decode_cache)?,
        })
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
