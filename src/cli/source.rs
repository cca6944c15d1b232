//! Opening one image from the command line: its path, extra devices,
//! offset, O_DIRECT and decoded-data cache.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::erofs::{Image, ImageOptions};
use crate::source::{self, Source};

/// Where the image comes from: shared by every command that opens one.
#[derive(Debug, Clone, Args)]
pub struct ImageSource {
    /// The EROFS image (a file or block device).
    pub image: PathBuf,
    /// Extra device (blob) for multi-device images, in device-table order;
    /// repeat for several.
    #[arg(long = "device", value_name = "BLOB")]
    pub devices: Vec<PathBuf>,
    /// Byte offset of the image inside IMAGE (any alignment).
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    /// Bytes of decoded compressed data to keep cached (default: 1/16 of
    /// RAM, between 64 MiB and 1 GiB).
    #[arg(long, value_name = "BYTES")]
    pub decode_cache: Option<u64>,
    /// Read the image and its devices with O_DIRECT (no host page cache;
    /// requests are aligned to the device's logical block size).
    #[arg(long)]
    pub direct_io: bool,
}

/// The default decoded-data cache: 1/16 of physical memory, clamped to
/// 64 MiB..1 GiB (64 MiB when memory size is unknown). Asked with
/// sysinfo(2), so images added in the sandbox (no /proc/meminfo) get the
/// same default.
pub fn default_decode_cache() -> u64 {
    let total = crate::os::proc::total_memory().unwrap_or(0);
    (total / 16).clamp(64 << 20, 1 << 30)
}

/// How every command opens an image's extra devices (`--device`), in
/// order, and sizes its decoded-data cache (`--decode-cache`).
pub fn image_options(
    devices: &[PathBuf],
    direct_io: bool,
    decode_cache: Option<u64>,
) -> anyhow::Result<ImageOptions> {
    let devices = devices
        .iter()
        .map(|d| {
            source::open_path_with(d, 0, direct_io)
                .with_context(|| format!("cannot open device {}", d.display()))
        })
        .collect::<anyhow::Result<Vec<Arc<dyn Source>>>>()?;
    Ok(ImageOptions {
        devices,
        decode_cache_bytes: Some(decode_cache.unwrap_or_else(default_decode_cache)),
        ..Default::default()
    })
}

impl ImageSource {
    /// Opens the image and its devices.
    pub fn open(&self) -> anyhow::Result<Image> {
        let src = source::open_path_with(&self.image, self.offset, self.direct_io)
            .with_context(|| format!("cannot open image {}", self.image.display()))?;
        let options = image_options(&self.devices, self.direct_io, self.decode_cache)?;
        Image::open(src, options).with_context(|| format!("{}", self.image.display()))
    }
}
