//! What `serve` and `mount` serve: one image at the share's root, or
//! named images, each a top-level directory (`--image NAME=PATH`,
//! repeatable, and the images of a TOML `--config FILE`), and the share
//! made of them.
//!
//! A config file:
//!
//! ```toml
//! domain = "tenant-a"          # default trust domain (optional)
//! store = "/dev/shm/store"     # content store (optional; --store wins)
//! store_size = 4294967296      # its size limit in bytes (optional)
//! fingerprint_xattr = "erofs.fingerprint.v1"  # default for the images
//!
//! [[image]]
//! name = "base"                # the directory /base of the share
//! path = "/images/base.erofs"  # relative paths: from the file's directory
//! devices = ["/images/base.blob"]
//! offset = 0
//! direct_io = false
//! domain = "tenant-a"
//! fingerprint_xattr = "erofs.fingerprint.v1"
//! ```
//!
//! Every key but `name` and `path` is optional; unknown keys are errors.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;
use serde::Deserialize;

use super::source::{default_decode_cache, image_options};
use crate::erofs::Image;
use crate::fuse::content::SharedContent;
use crate::fuse::{check_name, ImageMeta, Share, ShareOptions};
use crate::share::StoreOptions;
use crate::source;

/// Largest config file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Decoded-data cache of an image opened for the content store's loads
/// (they read whole files in order).
const LOADER_DECODE_CACHE: u64 = 8 << 20;

/// Smallest decoded-data cache an image gets when several share the
/// budget.
const MIN_DECODE_CACHE: u64 = 16 << 20;

/// The images a command serves, and their options.
#[derive(Debug, Clone, Default, Args)]
pub struct ShareArgs {
    /// An image to serve. `PATH` (a file or block device; for `serve` also
    /// `fd:N`, an inherited descriptor, or `guest:GPA:LEN`, LEN bytes of
    /// the guest's RAM at guest-physical address GPA, opened at FUSE INIT)
    /// is the share's root; `NAME=PATH`, repeatable, serves PATH as the
    /// top-level directory NAME of a read-only root listing the names
    /// (write `./a=b` for a path with `=` in its first component).
    #[arg(long = "image", value_name = "[NAME=]PATH")]
    pub images: Vec<OsString>,
    /// TOML file of named images with per-image options (`[[image]]` with
    /// `name`, `path`, `devices`, `offset`, `direct_io`, `domain`,
    /// `fingerprint_xattr`), served beside any `--image NAME=PATH`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Trust domain of every image (the config may set one per image):
    /// only images of the same domain will share content.
    #[arg(long, value_name = "NAME")]
    pub domain: Option<String>,
    /// Extra device (blob) for multi-device images, in device-table order;
    /// repeat for several. Only with a single image (the config gives each
    /// named image its own).
    #[arg(long = "device", value_name = "BLOB")]
    pub devices: Vec<PathBuf>,
    /// Byte offset of the image inside its file (any alignment). Only with
    /// a single image.
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    /// Bytes of decoded compressed data to keep cached, shared evenly by
    /// the images (default: 1/16 of RAM, between 64 MiB and 1 GiB).
    #[arg(long, value_name = "BYTES")]
    pub decode_cache: Option<u64>,
    /// Read the images and their devices with O_DIRECT (no host page
    /// cache; requests are aligned to the device's logical block size).
    #[arg(long)]
    pub direct_io: bool,
    /// Content store shared by every daemon and mount naming it: files of
    /// images with a trust domain are loaded into it once per content
    /// (verified) and read from there [default:
    /// /dev/shm/erofs-virtiofsd.UID]. Not touched when no image has a
    /// domain.
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Most bytes the content store may hold (suffixes K, M, G, T; default
    /// a quarter of RAM); unused entries are evicted to stay below.
    #[arg(long, value_name = "BYTES", value_parser = super::store::parse_size)]
    pub store_size: Option<u64>,
    /// The xattr holding each file's content fingerprint [default: what
    /// each image declares (mkfs.erofs --xattr-inode-digest)]; the config
    /// may set one per image.
    #[arg(long, value_name = "NAME")]
    pub fingerprint_xattr: Option<String>,
    /// Most inodes a connection's kernel may hold at once (its node
    /// table); a lookup of another one beyond it fails with ENFILE until
    /// the kernel forgets some (docs/limits.md).
    #[arg(long, value_name = "N", default_value_t = crate::fuse::DEFAULT_MAX_NODES)]
    pub max_nodes: usize,
    /// Most files and directories a connection may have open at once; an
    /// open beyond it fails with ENFILE (docs/limits.md).
    #[arg(long, value_name = "N", default_value_t = crate::fuse::DEFAULT_MAX_HANDLES)]
    pub max_handles: usize,
}

/// A `--config` file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Default trust domain of its images.
    #[serde(default)]
    pub domain: Option<String>,
    /// The content store directory (`--store` wins).
    #[serde(default)]
    pub store: Option<PathBuf>,
    /// The content store's size limit in bytes (`--store-size` wins).
    #[serde(default)]
    pub store_size: Option<u64>,
    /// Default fingerprint xattr of its images.
    #[serde(default)]
    pub fingerprint_xattr: Option<String>,
    /// The images (`[[image]]` tables).
    #[serde(default, rename = "image")]
    pub images: Vec<ConfigImage>,
}

/// One `[[image]]` of a config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigImage {
    /// Its top-level directory.
    pub name: String,
    /// The image file or block device (relative: from the config file's
    /// directory).
    pub path: PathBuf,
    /// Extra devices, in device-table order.
    #[serde(default)]
    pub devices: Vec<PathBuf>,
    /// Byte offset of the image in its file.
    #[serde(default)]
    pub offset: u64,
    /// Read with O_DIRECT (default: `--direct-io`).
    #[serde(default)]
    pub direct_io: Option<bool>,
    /// Trust domain (default: the file's `domain`, then `--domain`).
    #[serde(default)]
    pub domain: Option<String>,
    /// Name of the fingerprint xattr, if not the default.
    #[serde(default)]
    pub fingerprint_xattr: Option<String>,
}

impl ConfigFile {
    /// Parses a config file's text; errors name the line and column.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let before = text.get(..s.start).unwrap_or("");
                    let line = before.matches('\n').count().saturating_add(1);
                    let col = before
                        .rsplit('\n')
                        .next()
                        .map_or(0, |l| l.chars().count())
                        .saturating_add(1);
                    format!("line {line}, column {col}: ")
                })
                .unwrap_or_default();
            let msg = e.message().trim().replace('\n', " ");
            anyhow::anyhow!("{at}{msg}")
        })
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use std::io::Read;
        let f = std::fs::File::open(path)?;
        let mut text = String::new();
        f.take(MAX_CONFIG_BYTES.saturating_add(1))
            .read_to_string(&mut text)?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            bail!("larger than {MAX_CONFIG_BYTES} bytes");
        }
        Self::parse(&text)
    }
}

/// One image to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// Its top-level directory (`None`: the share's root).
    pub name: Option<String>,
    /// The image file, block device, `fd:N` or `guest:GPA:LEN`.
    pub path: PathBuf,
    /// Extra devices.
    pub devices: Vec<PathBuf>,
    /// Byte offset in `path`.
    pub offset: u64,
    /// O_DIRECT.
    pub direct_io: bool,
    /// Trust domain.
    pub domain: Option<String>,
    /// Fingerprint xattr name.
    pub fingerprint_xattr: Option<String>,
}

/// The images of a share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// One image is the share's root (today's command lines).
    Root(ImageSpec),
    /// Named images under a synthetic root.
    Named(Vec<ImageSpec>),
}

/// An `--image` value: `NAME=PATH` when what precedes the first `=` could
/// be a name (not empty, no `/`), else a path.
fn split_image_arg(arg: &OsStr) -> (Option<&OsStr>, &OsStr) {
    let b = arg.as_bytes();
    match b.iter().position(|&c| c == b'=') {
        Some(i) if i > 0 && !b[..i].contains(&b'/') => (
            Some(OsStr::from_bytes(&b[..i])),
            OsStr::from_bytes(b.get(i.saturating_add(1)..).unwrap_or(&[])),
        ),
        _ => (None, arg),
    }
}

/// Checks a trust domain's name (the rules of an image name).
fn check_domain(domain: &str) -> anyhow::Result<()> {
    check_name(domain).map_err(|e| {
        anyhow::anyhow!(
            "domain {domain:?}: {}",
            e.to_string().replace("image name ", "")
        )
    })
}

impl ShareArgs {
    /// Whether no image was given at all.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty() && self.config.is_none()
    }

    /// What to serve: `root` (a positional IMAGE, or `--image-fd`'s
    /// `fd:N`) or an unnamed `--image` at the root, or named images from
    /// `--image NAME=PATH` and `--config`. `None` when no image was given.
    pub fn plan(&self, root: Option<PathBuf>) -> anyhow::Result<Option<Plan>> {
        if let Some(d) = &self.domain {
            check_domain(d).context("--domain")?;
        }
        let mut roots: Vec<PathBuf> = root.into_iter().collect();
        let mut named = Vec::new();
        for arg in &self.images {
            match split_image_arg(arg) {
                (None, path) => roots.push(PathBuf::from(path)),
                (Some(name), path) => {
                    let name = name.to_str().with_context(|| {
                        format!("--image {}: the name is not UTF-8", arg.to_string_lossy())
                    })?;
                    check_name(name).with_context(|| format!("--image {name}=..."))?;
                    if path.is_empty() {
                        bail!("--image {name}=: no path after '='");
                    }
                    named.push(ImageSpec {
                        name: Some(name.to_owned()),
                        path: PathBuf::from(path),
                        devices: Vec::new(),
                        offset: 0,
                        direct_io: self.direct_io,
                        domain: self.domain.clone(),
                        fingerprint_xattr: self.fingerprint_xattr.clone(),
                    });
                }
            }
        }
        let from_flags = named.len();
        if let Some(path) = &self.config {
            let cfg =
                ConfigFile::load(path).with_context(|| format!("--config {}", path.display()))?;
            named.extend(
                self.config_images(&cfg, path)
                    .with_context(|| format!("--config {}", path.display()))?,
            );
        }
        if roots.len() > 1 {
            bail!("more than one image for the share's root: name them (--image NAME=PATH)");
        }
        let root = roots.pop();
        let single = root.is_some() || (from_flags == 1 && named.len() == 1);
        if !single && (!self.devices.is_empty() || self.offset != 0) {
            bail!(
                "--device and --offset apply to a single image; give each named image's \
                 devices and offset in --config"
            );
        }
        if let Some(path) = root {
            if !named.is_empty() {
                bail!(
                    "an image at the share's root cannot be served with named images \
                     (--image NAME=PATH, --config): name it too"
                );
            }
            return Ok(Some(Plan::Root(ImageSpec {
                name: None,
                path,
                devices: self.devices.clone(),
                offset: self.offset,
                direct_io: self.direct_io,
                domain: self.domain.clone(),
                fingerprint_xattr: self.fingerprint_xattr.clone(),
            })));
        }
        if named.is_empty() {
            return match &self.config {
                Some(p) => bail!("--config {}: no [[image]] in it", p.display()),
                None => Ok(None),
            };
        }
        if single {
            if let [only] = named.as_mut_slice() {
                only.devices.clone_from(&self.devices);
                only.offset = self.offset;
            }
        }
        for (i, a) in named.iter().enumerate() {
            if named[..i].iter().any(|b| b.name == a.name) {
                bail!(
                    "image name {:?} is given twice",
                    a.name.as_deref().unwrap_or_default()
                );
            }
        }
        Ok(Some(Plan::Named(named)))
    }

    /// The images of `cfg` (read from `path`), with this command line's
    /// defaults.
    fn config_images(&self, cfg: &ConfigFile, path: &Path) -> anyhow::Result<Vec<ImageSpec>> {
        if let Some(d) = &cfg.domain {
            check_domain(d)?;
        }
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.images
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let what = || format!("[[image]] #{} ({:?})", i.saturating_add(1), c.name);
                check_name(&c.name).with_context(what)?;
                if let Some(d) = &c.domain {
                    check_domain(d).with_context(what)?;
                }
                if c.path.as_os_str().is_empty() {
                    return Err(anyhow::anyhow!("path is empty")).with_context(what);
                }
                let rel = |p: &Path| base.join(p);
                Ok(ImageSpec {
                    name: Some(c.name.clone()),
                    path: rel(&c.path),
                    devices: c.devices.iter().map(|d| rel(d)).collect(),
                    offset: c.offset,
                    direct_io: c.direct_io.unwrap_or(self.direct_io),
                    domain: c
                        .domain
                        .clone()
                        .or_else(|| cfg.domain.clone())
                        .or_else(|| self.domain.clone()),
                    fingerprint_xattr: c
                        .fingerprint_xattr
                        .clone()
                        .or_else(|| cfg.fingerprint_xattr.clone())
                        .or_else(|| self.fingerprint_xattr.clone()),
                })
            })
            .collect()
    }
}

/// Where the content store is and how large it may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSpec {
    /// Its directory.
    pub dir: PathBuf,
    /// Its size limit.
    pub size_limit: u64,
}

impl ShareArgs {
    /// The content store the share uses: `None` when no image of `plan`
    /// has a trust domain and no API can add one (then no store is opened
    /// or touched). The flags win over the config file's `store` and
    /// `store_size`.
    pub fn store_spec(&self, plan: Option<&Plan>, api: bool) -> anyhow::Result<Option<StoreSpec>> {
        let domains = plan.is_some_and(Plan::has_domains);
        // Images added through the API may name a domain: their store is
        // ready for them.
        if !domains && !api {
            return Ok(None);
        }
        let cfg = match &self.config {
            Some(p) => ConfigFile::load(p).with_context(|| format!("--config {}", p.display()))?,
            None => ConfigFile::default(),
        };
        if let Some(x) = &self.fingerprint_xattr {
            crate::share::FingerprintXattr::from_name(x).context("--fingerprint-xattr")?;
        }
        Ok(Some(StoreSpec {
            dir: self
                .store
                .clone()
                .or(cfg.store)
                .unwrap_or_else(crate::share::store::default_dir),
            size_limit: self
                .store_size
                .or(cfg.store_size)
                .unwrap_or_else(crate::share::store::default_size_limit),
        }))
    }
}

impl StoreSpec {
    /// Opens (creating) the store.
    pub fn open(&self) -> anyhow::Result<Arc<SharedContent>> {
        let store = crate::share::hugefs::open_store(
            &self.dir,
            StoreOptions {
                size_limit: self.size_limit,
            },
        )
        .with_context(|| format!("--store {}", self.dir.display()))?;
        Ok(Arc::new(SharedContent::new(store)))
    }
}

impl ImageSpec {
    /// The image opened again for the content store's loads: with O_DIRECT,
    /// so content loaded into the store is not cached a second time, and
    /// with a decoded-data cache of its own, so the decoding of whole files
    /// for loads and checks does not fill `serving`'s (whose reads of those
    /// files the store answers from then on); it shares `serving`'s
    /// metadata cache. `None`: load through the serving image (an
    /// inherited descriptor, or O_DIRECT refused by the file system).
    pub fn open_loader(&self, serving: &Image) -> Option<Arc<Image>> {
        if source::parse_fd_spec(&self.path).is_some() {
            return None;
        }
        let opened = source::open_path_with(&self.path, self.offset, true)
            .map_err(anyhow::Error::from)
            .and_then(|src| {
                let options = image_options(&self.devices, true, Some(LOADER_DECODE_CACHE))?;
                Ok(serving.reopen(src, options)?)
            });
        match opened {
            Ok(img) => Some(Arc::new(img)),
            Err(e) => {
                log::info!(
                    "{}: loading into the content store through the page cache (no O_DIRECT: {e:#})",
                    self.path.display()
                );
                None
            }
        }
    }

    /// Opens the image (and its devices) with a decoded-data cache of
    /// `decode_cache` bytes.
    pub fn open(&self, decode_cache: u64) -> anyhow::Result<Image> {
        let src = source::open_path_with(&self.path, self.offset, self.direct_io)
            .with_context(|| format!("cannot open image {}", self.path.display()))?;
        let options = image_options(&self.devices, self.direct_io, Some(decode_cache))?;
        Image::open(src, options).with_context(|| format!("{}", self.path.display()))
    }

    /// What the share records of it.
    pub fn meta(&self) -> ImageMeta {
        ImageMeta {
            source: self.path.display().to_string(),
            domain: self.domain.clone(),
            fingerprint_xattr: self.fingerprint_xattr.clone(),
        }
    }
}

impl Plan {
    /// Every image of the plan.
    pub fn specs(&self) -> &[ImageSpec] {
        match self {
            Plan::Root(spec) => std::slice::from_ref(spec),
            Plan::Named(specs) => specs,
        }
    }

    /// Whether an image of the plan has a trust domain.
    pub fn has_domains(&self) -> bool {
        self.specs().iter().any(|s| s.domain.is_some())
    }

    /// Makes the images of `share` (opened from this plan) that have a
    /// trust domain share content through `content`.
    pub fn share_content(&self, share: &Share, content: Arc<SharedContent>) -> anyhow::Result<()> {
        share.set_content(content);
        for spec in self.specs() {
            if spec.domain.is_none() {
                continue;
            }
            let img = match &spec.name {
                Some(name) => share.image(name),
                None => share.root_image().cloned(),
            };
            let Some(img) = img else {
                continue;
            };
            let what = spec.name.as_deref().unwrap_or("the image");
            let on = share
                .share_content(&img, spec.open_loader(img.image()))
                .with_context(|| format!("{what} ({})", spec.path.display()))?;
            log::debug!(
                "{what}: {}",
                if on {
                    "content shared through the store"
                } else {
                    "no fingerprints: served unshared"
                }
            );
        }
        Ok(())
    }

    /// Opens every image and makes the share. The decoded-data cache
    /// (`decode_cache`, or the default) is split evenly among the images.
    pub fn open_share(
        &self,
        opts: ShareOptions,
        decode_cache: Option<u64>,
    ) -> anyhow::Result<Share> {
        let total = decode_cache.unwrap_or_else(default_decode_cache);
        match self {
            Plan::Root(spec) => {
                let img = Arc::new(spec.open(total)?);
                Share::with_meta(img, spec.meta(), opts)
                    .with_context(|| format!("{}", spec.path.display()))
            }
            Plan::Named(specs) => {
                let n = u64::try_from(specs.len()).unwrap_or(u64::MAX).max(1);
                let each = (total / n).max(MIN_DECODE_CACHE.min(total));
                let share = Share::named(opts);
                for spec in specs {
                    let name = spec.name.as_deref().unwrap_or_default();
                    let img = spec.open(each).with_context(|| format!("image {name}"))?;
                    share
                        .add_image(name, Arc::new(img), spec.meta())
                        .with_context(|| format!("image {name} ({})", spec.path.display()))?;
                }
                Ok(share)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(images: &[&str]) -> ShareArgs {
        ShareArgs {
            images: images.iter().map(OsString::from).collect(),
            ..ShareArgs::default()
        }
    }

    fn names(plan: &Plan) -> Vec<Option<String>> {
        match plan {
            Plan::Root(s) => vec![s.name.clone()],
            Plan::Named(v) => v.iter().map(|s| s.name.clone()).collect(),
        }
    }

    #[test]
    fn test_image_args_name_or_path() {
        let table: &[(&str, Option<&str>, &str)] = &[
            ("a.erofs", None, "a.erofs"),
            ("/x/a=b.erofs", None, "/x/a=b.erofs"),
            ("./a=b", None, "./a=b"),
            ("app=/x/app.erofs", Some("app"), "/x/app.erofs"),
            ("app=rel=x", Some("app"), "rel=x"),
            ("=x", None, "=x"),
            ("fd:3", None, "fd:3"),
            ("guest:0x1000:4096", None, "guest:0x1000:4096"),
        ];
        for (arg, name, path) in table {
            let (n, p) = split_image_arg(OsStr::new(arg));
            assert_eq!(n.map(|n| n.to_str().unwrap()), *name, "{arg}");
            assert_eq!(p, OsStr::new(path), "{arg}");
        }
    }

    #[test]
    fn test_plans_of_command_lines() {
        // Today's single image, positional or --image: the root.
        let p = args(&[]).plan(Some("a.erofs".into())).unwrap().unwrap();
        assert_eq!(names(&p), [None]);
        let p = args(&["a.erofs"]).plan(None).unwrap().unwrap();
        assert!(matches!(&p, Plan::Root(s) if s.path == Path::new("a.erofs")));
        assert_eq!(args(&[]).plan(None).unwrap(), None);
        // Named images, in order.
        let p = args(&["x=/a", "y=/b"]).plan(None).unwrap().unwrap();
        assert_eq!(names(&p), [Some("x".into()), Some("y".into())]);
        // Refused.
        let bad: &[(&[&str], Option<&str>, &str)] = &[
            (&["x=/a", "x=/b"], None, "given twice"),
            (&["a", "b"], None, "more than one image"),
            (&["x=/a"], Some("root.erofs"), "name it too"),
            (&["x=/a", "y=/b"], None, ""),
            (&["a/b=/c", "b"], None, "more than one image"),
            (&["x="], None, "no path"),
            (&["x\u{7}=/a"], None, "control character"),
        ];
        for (imgs, root, want) in bad {
            let mut a = args(imgs);
            if want.is_empty() {
                // Several images with --device: refused.
                a.devices = vec!["/blob".into()];
            }
            let r = a.plan(root.map(PathBuf::from));
            let want = if want.is_empty() { "--device" } else { want };
            match r {
                Err(e) => assert!(format!("{e:#}").contains(want), "{imgs:?}: {e:#}"),
                Ok(p) => panic!("{imgs:?}: accepted as {p:?}"),
            }
        }
        // One named image takes --device and --offset.
        let mut a = args(&["x=/a"]);
        a.devices = vec!["/blob".into()];
        a.offset = 512;
        let Some(Plan::Named(v)) = a.plan(None).unwrap() else {
            panic!("not named")
        };
        assert_eq!((v[0].devices.len(), v[0].offset), (1, 512));
        // --domain is every image's, and checked.
        let mut a = args(&["x=/a"]);
        a.domain = Some("t1".into());
        let Some(Plan::Named(v)) = a.plan(None).unwrap() else {
            panic!("not named")
        };
        assert_eq!(v[0].domain.as_deref(), Some("t1"));
        a.domain = Some("a/b".into());
        assert!(format!("{:#}", a.plan(None).unwrap_err()).contains("--domain"));
    }

    #[test]
    fn test_config_files_parse_strictly() {
        let good = r#"
domain = "d"

[[image]]
name = "base"
path = "base.erofs"
devices = ["b1", "/abs/b2"]
offset = 4096
direct_io = true

[[image]]
name = "app"
path = "/images/app.erofs"
domain = "other"
fingerprint_xattr = "user.fp"
"#;
        let cfg = ConfigFile::parse(good).unwrap();
        assert_eq!(cfg.images.len(), 2);
        assert_eq!(cfg.images[0].offset, 4096);
        assert_eq!(cfg.images[1].domain.as_deref(), Some("other"));
        let bad: &[(&str, &str)] = &[
            ("[[image]]\nname = \"x\"\npath = 1\n", "line 3"),
            ("[[image]]\nname = \"x\"\n", "path"),
            (
                "[[image]]\nname = \"x\"\npath = \"/a\"\ncolour = 1\n",
                "colour",
            ),
            ("nonsense = true\n", "nonsense"),
            ("[[image]\n", "line 1"),
            (
                "[[image]]\nname = \"x\"\npath = \"/a\"\noffset = -1\n",
                "line 4",
            ),
        ];
        for (text, want) in bad {
            let e = ConfigFile::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn test_config_images_get_defaults_and_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("share.toml");
        std::fs::write(
            &path,
            "domain = \"file\"\n[[image]]\nname = \"a\"\npath = \"a.erofs\"\n\
             [[image]]\nname = \"b\"\npath = \"/b.erofs\"\ndomain = \"own\"\ndirect_io = false\n",
        )
        .unwrap();
        let mut a = args(&["c=/c.erofs"]);
        a.config = Some(path.clone());
        a.domain = Some("cli".into());
        a.direct_io = true;
        let Some(Plan::Named(v)) = a.plan(None).unwrap() else {
            panic!("not named")
        };
        let got: Vec<_> = v
            .iter()
            .map(|s| {
                (
                    s.name.clone().unwrap(),
                    s.path.clone(),
                    s.domain.clone().unwrap(),
                    s.direct_io,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("c".into(), PathBuf::from("/c.erofs"), "cli".into(), true),
                ("a".into(), dir.path().join("a.erofs"), "file".into(), true),
                ("b".into(), PathBuf::from("/b.erofs"), "own".into(), false),
            ]
        );
        // A name in the file and on the command line.
        let mut a = args(&["a=/x.erofs"]);
        a.config = Some(path.clone());
        assert!(format!("{:#}", a.plan(None).unwrap_err()).contains("given twice"));
        // Bad names and domains in the file.
        std::fs::write(&path, "[[image]]\nname = \"..\"\npath = \"/a\"\n").unwrap();
        let mut a = args(&[]);
        a.config = Some(path.clone());
        let e = format!("{:#}", a.plan(None).unwrap_err());
        assert!(e.contains("#1") && e.contains("reserved"), "{e}");
        std::fs::write(
            &path,
            "domain = \"\"\n[[image]]\nname = \"a\"\npath = \"/a\"\n",
        )
        .unwrap();
        assert!(format!("{:#}", a.plan(None).unwrap_err()).contains("domain"));
        // No images at all.
        std::fs::write(&path, "domain = \"d\"\n").unwrap();
        assert!(format!("{:#}", a.plan(None).unwrap_err()).contains("no [[image]]"));
        // Missing file.
        a.config = Some(dir.path().join("nope.toml"));
        assert!(format!("{:#}", a.plan(None).unwrap_err()).contains("nope.toml"));
    }
}
