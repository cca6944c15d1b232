//! `--api-socket`: the daemon's side of the API ([`crate::api::Control`])
//! over its [`Share`]. Images added through the API are opened with the
//! options of their mount request and become top-level directories of the
//! share; removing one takes its name away (files still open keep reading,
//! see [`Share`]).
//!
//! Where images may come from: in the sandbox only the `--allow-dir`
//! directories exist, so a source or device outside them is refused with a
//! message that says so (also with `--sandbox none` when `--allow-dir` is
//! given: it is then the list of what the API may open). The check is on
//! the path as given (absolute, no `..`); the sandbox is what enforces it.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use log::{debug, info};

use super::images::{ImageSpec, Plan};
use crate::api::{
    ApiOptions, ApiSocket, Control, ControlError, DaemonState, DaemonStatus, ImageConfig,
    ImageInfo, ImageName, MountSpec,
};
use crate::fuse::{Share, ShareError};
use crate::metrics::MetricsSnapshot;
use crate::sandbox::Mode;

/// Reopens the log file (as on SIGHUP).
pub type Reopen = Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>;

/// Smallest decoded-data cache an image added through the API gets.
const MIN_API_DECODE_CACHE: u64 = 16 << 20;

/// Where images added at runtime may be opened from.
#[derive(Debug, Clone)]
pub enum Allowed {
    /// Anywhere the daemon can open (`--sandbox none`, no `--allow-dir`).
    Anywhere,
    /// Only under these directories.
    Under(Vec<PathBuf>),
    /// Nowhere (`--sandbox chroot` sees no host path).
    Nowhere,
}

impl Allowed {
    /// What the sandbox `mode` with `--allow-dir` `dirs` leaves visible.
    pub fn of(mode: Mode, dirs: &[PathBuf]) -> Self {
        match mode {
            Mode::Chroot => Allowed::Nowhere,
            Mode::None if dirs.is_empty() => Allowed::Anywhere,
            Mode::None | Mode::Namespace => {
                let mut under: Vec<PathBuf> = Vec::new();
                for d in dirs {
                    let abs = std::path::absolute(d).unwrap_or_else(|_| d.clone());
                    for p in std::iter::once(abs).chain(std::fs::canonicalize(d).ok()) {
                        if !under.contains(&p) {
                            under.push(p);
                        }
                    }
                }
                Allowed::Under(under)
            }
        }
    }

    /// Refuses `path` (a `what`) when it may not be opened.
    fn check(&self, what: &str, path: &Path) -> Result<(), ControlError> {
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(ControlError::BadRequest(format!(
                "{what} {}: '..' is not allowed in a path",
                path.display()
            )));
        }
        match self {
            Allowed::Anywhere => Ok(()),
            Allowed::Nowhere => Err(ControlError::Unsupported(format!(
                "{what} {}: --sandbox chroot sees no host path after start; use --sandbox \
                 namespace with --allow-dir",
                path.display()
            ))),
            Allowed::Under(dirs) if dirs.iter().any(|d| path.starts_with(d)) => Ok(()),
            Allowed::Under(dirs) => {
                let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
                Err(ControlError::Unprocessable(format!(
                    "{what} {} is not under an --allow-dir directory ({}): the daemon cannot \
                     open it after start",
                    path.display(),
                    if list.is_empty() {
                        "none given".to_owned()
                    } else {
                        list.join(", ")
                    }
                )))
            }
        }
    }
}

/// The API's view of a daemon serving `share`.
pub struct ShareControl {
    share: Arc<Share>,
    /// Each image's options, by name (`None`: the share's root image).
    configs: Mutex<BTreeMap<Option<String>, (PathBuf, ImageConfig)>>,
    allowed: Allowed,
    /// Decoded-data cache of each image added through the API.
    decode_cache: u64,
    reopen: Option<Reopen>,
}

impl std::fmt::Debug for ShareControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareControl")
            .field("share", &self.share)
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

impl ShareControl {
    /// Control of `share`, whose images at start are `plan`'s (if any);
    /// images added get `decode_cache` bytes of decoded-data cache each.
    pub fn new(
        share: Arc<Share>,
        plan: Option<&Plan>,
        allowed: Allowed,
        decode_cache: u64,
        reopen: Option<Reopen>,
    ) -> Self {
        let specs: Vec<&ImageSpec> = match plan {
            Some(Plan::Root(s)) => vec![s],
            Some(Plan::Named(v)) => v.iter().collect(),
            None => Vec::new(),
        };
        let configs = specs
            .into_iter()
            .map(|s| {
                (
                    s.name.clone(),
                    (
                        s.path.clone(),
                        ImageConfig {
                            devices: s.devices.clone(),
                            offset: s.offset,
                            direct_io: s.direct_io,
                            domain: s.domain.clone(),
                        },
                    ),
                )
            })
            .collect();
        ShareControl {
            share,
            configs: Mutex::new(configs),
            allowed,
            decode_cache: decode_cache.max(MIN_API_DECODE_CACHE),
            reopen,
        }
    }

    fn configs(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<Option<String>, (PathBuf, ImageConfig)>> {
        self.configs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Control for ShareControl {
    fn daemon(&self) -> DaemonStatus {
        let configs = self.configs();
        let info = |name: Option<&str>, source: &str| {
            let key = name.map(str::to_owned);
            let (source, config) = configs
                .get(&key)
                .cloned()
                .unwrap_or_else(|| (PathBuf::from(source), ImageConfig::default()));
            ImageInfo {
                name: name.and_then(|n| ImageName::new(n).ok()),
                source,
                config,
            }
        };
        let images = match self.share.root_image() {
            Some(root) => vec![info(None, &root.meta().source)],
            None => self
                .share
                .images()
                .iter()
                .map(|i| info(i.name(), &i.meta().source))
                .collect(),
        };
        DaemonStatus {
            id: None,
            state: DaemonState::Running,
            images,
        }
    }

    fn mount(&self, name: &ImageName, spec: MountSpec) -> Result<(), ControlError> {
        if !self.share.is_named() {
            return Err(ControlError::Unsupported(
                "the share's root is one image: images cannot be added (start with named \
                 images, or none)"
                    .to_owned(),
            ));
        }
        if self.share.image(name.as_str()).is_some() {
            return Err(ControlError::AlreadyExists(format!(
                "{} is already mounted",
                name.mountpoint()
            )));
        }
        self.allowed.check("source", &spec.source)?;
        for d in &spec.config.devices {
            self.allowed.check("device", d)?;
        }
        let image_spec = ImageSpec {
            name: Some(name.as_str().to_owned()),
            path: spec.source.clone(),
            devices: spec.config.devices.clone(),
            offset: spec.config.offset,
            direct_io: spec.config.direct_io,
            domain: spec.config.domain.clone(),
            fingerprint_xattr: None,
        };
        let image = image_spec
            .open(self.decode_cache)
            .map_err(|e| ControlError::Unprocessable(format!("{e:#}")))?;
        let added = self
            .share
            .add_image(name.as_str(), Arc::new(image), image_spec.meta())
            .map_err(|e| match e {
                ShareError::Exists(_) => {
                    ControlError::AlreadyExists(format!("{} is already mounted", name.mountpoint()))
                }
                ShareError::Full => ControlError::LimitReached(e.to_string()),
                ShareError::BadName(_) => ControlError::BadRequest(e.to_string()),
                ShareError::NotNamed => ControlError::Unsupported(e.to_string()),
                ShareError::Image(_) | ShareError::NotFound(_) => {
                    ControlError::Unprocessable(format!("{}: {e}", spec.source.display()))
                }
            })?;
        if image_spec.domain.is_some() {
            // Without fingerprints (or a store) it is served unshared.
            match self
                .share
                .share_content(&added, image_spec.open_loader(added.image()))
            {
                Ok(true) => log::info!("{}: content shared through the store", name.mountpoint()),
                Ok(false) => {}
                Err(e) => log::warn!("{}: served unshared: {e}", name.mountpoint()),
            }
        }
        self.configs()
            .insert(Some(name.as_str().to_owned()), (spec.source, spec.config));
        Ok(())
    }

    fn umount(&self, name: &ImageName) -> Result<(), ControlError> {
        if !self.share.is_named() {
            return Err(ControlError::Unsupported(
                "the share's root is one image: it cannot be removed".to_owned(),
            ));
        }
        let removed = self
            .share
            .remove_image(name.as_str())
            .map_err(|e| match e {
                ShareError::NotFound(_) => {
                    ControlError::NotFound(format!("{} is not mounted", name.mountpoint()))
                }
                other => ControlError::Internal(other.to_string()),
            })?;
        self.configs().remove(&Some(name.as_str().to_owned()));
        debug!(
            "image {}: {} connection(s) told it is gone",
            name.as_str(),
            removed.told
        );
        Ok(())
    }

    fn metrics(&self) -> MetricsSnapshot {
        self.share.metrics_snapshot()
    }

    fn reopen_logs(&self) -> Result<(), ControlError> {
        match &self.reopen {
            Some(f) => f().map_err(|e| ControlError::Internal(format!("reopening the log: {e}"))),
            None => Err(ControlError::Unsupported(
                "the daemon logs to stderr or syslog: there is no log file to reopen (--log-file)"
                    .to_owned(),
            )),
        }
    }
}

/// The decoded-data cache of an image added through the API: `total`
/// (`--decode-cache`, or the default) divided as at start among four
/// images, at least [`MIN_API_DECODE_CACHE`].
pub fn api_decode_cache(total: Option<u64>) -> u64 {
    let total = total.unwrap_or_else(super::default_decode_cache);
    (total / 4).max(MIN_API_DECODE_CACHE.min(total))
}

/// Binds `--api-socket` (before the sandbox).
pub fn bind(path: Option<&Path>) -> anyhow::Result<Option<ApiSocket>> {
    let Some(path) = path else {
        return Ok(None);
    };
    // Absolute: a daemon that detaches changes to `/` afterwards, and
    // removes the socket by this path when it stops.
    let path =
        std::path::absolute(path).with_context(|| format!("API socket path {}", path.display()))?;
    Ok(Some(ApiSocket::bind(&path)?))
}

/// Serves a bound API socket (after the sandbox).
pub fn serve(
    socket: Option<ApiSocket>,
    control: impl FnOnce() -> ShareControl,
) -> anyhow::Result<Option<crate::api::ApiHandle>> {
    let Some(socket) = socket else {
        return Ok(None);
    };
    let path = socket.path().to_owned();
    let handle = socket.serve(Arc::new(control()), ApiOptions::default())?;
    info!("API socket {} serving", path.display());
    Ok(Some(handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_allowed_paths() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let under = Allowed::of(Mode::None, std::slice::from_ref(&d));
        assert!(under.check("source", &d.join("a.erofs")).is_ok());
        assert!(under.check("source", &d.join("sub/a.erofs")).is_ok());
        let e = under.check("source", Path::new("/etc/passwd")).unwrap_err();
        assert!(matches!(e, ControlError::Unprocessable(ref m) if m.contains("--allow-dir")));
        let e = under.check("source", &d.join("../x")).unwrap_err();
        assert!(matches!(e, ControlError::BadRequest(_)));
        // A sibling whose name starts like the directory is not under it.
        let mut sibling = d.clone().into_os_string();
        sibling.push("x/a.erofs");
        assert!(under.check("source", Path::new(&sibling)).is_err());

        let anywhere = Allowed::of(Mode::None, &[]);
        assert!(anywhere.check("source", Path::new("/etc/passwd")).is_ok());
        assert!(anywhere.check("source", Path::new("/a/../b")).is_err());
        let ns = Allowed::of(Mode::Namespace, &[]);
        assert!(ns.check("source", Path::new("/etc/passwd")).is_err());
        let chroot = Allowed::of(Mode::Chroot, std::slice::from_ref(&d));
        assert!(matches!(
            chroot.check("source", &d.join("a.erofs")),
            Err(ControlError::Unsupported(_))
        ));
    }
}
