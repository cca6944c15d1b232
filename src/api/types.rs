//! What the API says and hears: image names, mount requests and their
//! config, the daemon's state. Parsing is strict: a request is taken whole
//! or refused with a message that names what is wrong.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// Longest image name, in bytes (a directory name's limit).
pub const NAME_MAX: usize = 255;
/// Longest path accepted for an image or a device, in bytes.
pub const PATH_MAX: usize = 4096;
/// Most extra devices one image may name.
pub const MAX_DEVICES: usize = 1024;
/// The only `fs_type` this daemon serves.
pub const FS_TYPE: &str = "erofs";

/// The name of an image: one top-level directory of the share.
///
/// 1 to [`NAME_MAX`] bytes of UTF-8, not `.` or `..`, without `/`, NUL or
/// other control characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageName(String);

impl ImageName {
    /// Checks a name.
    pub fn new(name: &str) -> Result<Self, String> {
        check_name("image name", name)?;
        Ok(ImageName(name.to_owned()))
    }

    /// The name of the image at `mountpoint`, which must be `/NAME`.
    pub fn from_mountpoint(mountpoint: &str) -> Result<Self, String> {
        let Some(name) = mountpoint.strip_prefix('/') else {
            return Err(format!(
                "mountpoint {mountpoint:?} must start with '/' (give /NAME)"
            ));
        };
        if name.contains('/') {
            return Err(format!(
                "mountpoint {mountpoint:?} is nested or ends with '/': images are \
                 top-level directories of the share (give /NAME)"
            ));
        }
        Self::new(name).map_err(|e| format!("mountpoint {mountpoint:?}: {e}"))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The mountpoint the API shows for it: `/NAME`.
    pub fn mountpoint(&self) -> String {
        format!("/{}", self.0)
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a name that becomes a directory name (images, domains).
fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if name == "." || name == ".." {
        return Err(format!("{what} {name:?} is reserved"));
    }
    if name.len() > NAME_MAX {
        return Err(format!(
            "{what} is {} bytes long, more than {NAME_MAX}",
            name.len()
        ));
    }
    if name.contains('/') {
        return Err(format!("{what} {name:?} contains '/'"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{what} {name:?} contains a control character"));
    }
    Ok(())
}

/// Per-image options: the config string of a mount request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// Extra devices (blobs) in device-table order.
    #[serde(default)]
    pub devices: Vec<PathBuf>,
    /// Byte offset of the image in its source.
    #[serde(default)]
    pub offset: u64,
    /// Read the image and its devices with O_DIRECT.
    #[serde(default)]
    pub direct_io: bool,
    /// Trust domain for shared content; `None`: no sharing.
    #[serde(default)]
    pub domain: Option<String>,
}

const CONFIG_KEYS: [&str; 4] = ["devices", "offset", "direct_io", "domain"];

impl ImageConfig {
    /// Parses the config string of a mount request: a JSON object with the
    /// keys `devices`, `offset`, `direct_io` and `domain`, each optional.
    /// An empty string is the default config.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        let v: Value = serde_json::from_str(s).map_err(|e| format!("config: {e}"))?;
        let Value::Object(map) = v else {
            return Err("config must be a JSON object".to_owned());
        };
        unknown_keys("config", map.keys(), &CONFIG_KEYS)?;
        let mut cfg = ImageConfig::default();
        for (k, v) in &map {
            match (k.as_str(), v) {
                ("offset", v) => {
                    cfg.offset = v
                        .as_u64()
                        .ok_or("config: offset must be an integer from 0 to 2^64-1")?;
                }
                ("direct_io", v) => {
                    cfg.direct_io = v
                        .as_bool()
                        .ok_or("config: direct_io must be true or false")?;
                }
                ("domain", Value::Null) => cfg.domain = None,
                ("domain", Value::String(d)) => cfg.domain = Some(d.clone()),
                ("domain", _) => return Err("config: domain must be a string or null".into()),
                ("devices", Value::Array(a)) => {
                    cfg.devices = a
                        .iter()
                        .map(|d| d.as_str().map(PathBuf::from))
                        .collect::<Option<_>>()
                        .ok_or("config: devices must be an array of paths")?;
                }
                ("devices", _) => return Err("config: devices must be an array of paths".into()),
                // Refused above.
                _ => {}
            }
        }
        // The map kept the last of duplicate keys; the typed parse refuses
        // them.
        let typed: ImageConfig = serde_json::from_str(s).map_err(|e| format!("config: {e}"))?;
        debug_assert_eq!(typed, cfg);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if self.devices.len() > MAX_DEVICES {
            return Err(format!(
                "config names {} devices, more than {MAX_DEVICES}",
                self.devices.len()
            ));
        }
        for d in &self.devices {
            check_path("device", d)?;
        }
        if let Some(domain) = &self.domain {
            check_name("domain", domain)?;
        }
        Ok(())
    }
}

/// Refuses keys outside `known`, naming all of them.
fn unknown_keys<'a>(
    what: &str,
    keys: impl Iterator<Item = &'a String>,
    known: &[&str],
) -> Result<(), String> {
    let unknown: BTreeSet<&str> = keys
        .map(String::as_str)
        .filter(|k| !known.contains(k))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = unknown.iter().map(|k| format!("{k:?}")).collect();
    Err(format!(
        "{what}: unknown key{} {} (known: {})",
        if list.len() > 1 { "s" } else { "" },
        list.join(", "),
        known.join(", ")
    ))
}

fn check_path(what: &str, p: &Path) -> Result<(), String> {
    let s = p.as_os_str().as_encoded_bytes();
    if s.is_empty() {
        return Err(format!("{what} path is empty"));
    }
    if !p.is_absolute() {
        return Err(format!("{what} path {} is not absolute", p.display()));
    }
    if s.len() > PATH_MAX {
        return Err(format!(
            "{what} path is {} bytes long, more than {PATH_MAX}",
            s.len()
        ));
    }
    if s.contains(&0) {
        return Err(format!("{what} path contains a NUL byte"));
    }
    Ok(())
}

/// What a mount request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// The image file or block device (absolute).
    pub source: PathBuf,
    /// Its options.
    pub config: ImageConfig,
}

/// Why a mount request's body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not valid JSON, unknown keys, wrong types or values.
    #[error("{0}")]
    Invalid(String),
    /// An `fs_type` other than [`FS_TYPE`].
    #[error("{0}")]
    UnsupportedFsType(String),
}

const BODY_KEYS: [&str; 4] = ["source", "fs_type", "config", "prefetch_files"];

/// The body of `POST /api/v1/mount`, as nydusd takes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MountBody {
    source: PathBuf,
    #[serde(default)]
    fs_type: Option<String>,
    #[serde(default)]
    config: Option<Box<RawValue>>,
    #[serde(default)]
    prefetch_files: Option<Vec<String>>,
}

impl MountSpec {
    /// Parses the body of a mount request: `{"source": PATH, "fs_type":
    /// "erofs", "config": "<JSON object as a string>"}`. `fs_type` may be
    /// left out; `config` may be left out, empty, or given as an object.
    /// nydusd's `prefetch_files` is accepted only empty.
    pub fn parse_body(body: &[u8]) -> Result<Self, BodyError> {
        let b = Self::parse_fields(body).map_err(BodyError::Invalid)?;
        match b.fs_type.as_deref() {
            None | Some(FS_TYPE) => {}
            Some(other) => {
                return Err(BodyError::UnsupportedFsType(format!(
                    "fs_type {other:?} is not supported: this daemon serves only \"{FS_TYPE}\""
                )))
            }
        }
        Self::from_fields(b).map_err(BodyError::Invalid)
    }

    fn parse_fields(body: &[u8]) -> Result<MountBody, String> {
        let v: Value = serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?;
        let Value::Object(map) = &v else {
            return Err("body must be a JSON object".to_owned());
        };
        unknown_keys("body", map.keys(), &BODY_KEYS)?;
        serde_json::from_slice(body).map_err(|e| format!("body: {e}"))
    }

    fn from_fields(b: MountBody) -> Result<Self, String> {
        if b.prefetch_files.is_some_and(|p| !p.is_empty()) {
            return Err("prefetch_files is not supported".to_owned());
        }
        check_path("source", &b.source)?;
        let config = match b.config.as_deref().map(RawValue::get) {
            None | Some("null") => ImageConfig::default(),
            Some(raw) if raw.starts_with('"') => {
                let s: String = serde_json::from_str(raw).map_err(|e| format!("config: {e}"))?;
                ImageConfig::parse(&s)?
            }
            // Parsed from its own text, so duplicate keys are caught too.
            Some(raw) if raw.starts_with('{') => ImageConfig::parse(raw)?,
            Some(_) => return Err("config must be a JSON string or object".to_owned()),
        };
        Ok(MountSpec {
            source: b.source,
            config,
        })
    }
}

/// The daemon's working state, as nydusd names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DaemonState {
    /// Starting: not serving yet.
    Init,
    /// Serving (or ready for the VMM to connect). Kata waits for this.
    Running,
    /// Shutting down.
    Stopped,
}

/// One image being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Its name; `None` for an image that is the share's root.
    pub name: Option<ImageName>,
    /// Its source file.
    pub source: PathBuf,
    /// Its options.
    pub config: ImageConfig,
}

/// What [`crate::api::Control::daemon`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonStatus {
    /// The daemon's id (e.g. given on the command line), if any.
    pub id: Option<String>,
    /// Its state.
    pub state: DaemonState,
    /// The images it serves.
    pub images: Vec<ImageInfo>,
}

/// Build information, in nydusd's `version` shape (every field a string;
/// Kata's clients require them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// The crate version.
    pub package_ver: String,
    /// The git commit, if the build recorded one
    /// (`EROFS_VIRTIOFSD_GIT_COMMIT` at build time).
    pub git_commit: String,
    /// The build time, if recorded (`EROFS_VIRTIOFSD_BUILD_TIME`).
    pub build_time: String,
    /// `release` or `debug`.
    pub profile: String,
    /// The compiler, if recorded (`EROFS_VIRTIOFSD_RUSTC`).
    pub rustc: String,
}

impl BuildInfo {
    /// This build's information.
    pub fn current() -> Self {
        BuildInfo {
            package_ver: env!("CARGO_PKG_VERSION").to_owned(),
            git_commit: option_env!("EROFS_VIRTIOFSD_GIT_COMMIT")
                .unwrap_or("")
                .to_owned(),
            build_time: option_env!("EROFS_VIRTIOFSD_BUILD_TIME")
                .unwrap_or("")
                .to_owned(),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .to_owned(),
            rustc: option_env!("EROFS_VIRTIOFSD_RUSTC")
                .unwrap_or("")
                .to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_image_name_from_mountpoint_table() {
        let long = format!("/{}", "a".repeat(NAME_MAX));
        let too_long = format!("/{}", "a".repeat(NAME_MAX + 1));
        let ok = [
            "/a",
            "/layer-1.2_x",
            "/.hidden",
            "/with space",
            "/ünï",
            &long,
        ];
        for mp in ok {
            let n = ImageName::from_mountpoint(mp).unwrap_or_else(|e| panic!("{mp}: {e}"));
            assert_eq!(n.mountpoint(), mp);
        }
        let bad = [
            ("", "must start with '/'"),
            ("a", "must start with '/'"),
            ("/", "is empty"),
            ("//", "nested"),
            ("/a/", "nested"),
            ("/a/b", "nested"),
            ("/rafs/cid/lowerdir", "nested"),
            ("/.", "reserved"),
            ("/..", "reserved"),
            ("/a\0b", "control"),
            ("/a\nb", "control"),
            ("/a\u{7f}", "control"),
            (&too_long, "more than 255"),
        ];
        for (mp, want) in bad {
            let e = ImageName::from_mountpoint(mp).unwrap_err();
            assert!(e.contains(want), "{mp:?}: {e}");
        }
    }

    #[test]
    fn test_config_parse_valid() {
        let cases = [
            ("", ImageConfig::default()),
            ("{}", ImageConfig::default()),
            (
                r#"{"devices":["/b1","/b2"],"offset":4096,"direct_io":true,"domain":"d"}"#,
                ImageConfig {
                    devices: vec!["/b1".into(), "/b2".into()],
                    offset: 4096,
                    direct_io: true,
                    domain: Some("d".into()),
                },
            ),
            (r#"{"domain":null}"#, ImageConfig::default()),
        ];
        for (s, want) in cases {
            assert_eq!(ImageConfig::parse(s).unwrap(), want, "{s}");
        }
    }

    #[test]
    fn test_config_parse_invalid() {
        let cases = [
            ("[]", "must be a JSON object"),
            ("{", "config:"),
            (
                r#"{"mode":"direct","digest_validate":false}"#,
                "unknown keys \"digest_validate\", \"mode\"",
            ),
            (r#"{"offset":-1}"#, "offset must be an integer"),
            (r#"{"offset":1.5}"#, "offset must be an integer"),
            (r#"{"offset":"1"}"#, "offset must be an integer"),
            (r#"{"domain":1}"#, "domain must be a string"),
            (r#"{"offset":1,"offset":2}"#, "duplicate field"),
            (r#"{"direct_io":"yes"}"#, "direct_io must be true or false"),
            (r#"{"devices":"/b"}"#, "devices must be an array"),
            (r#"{"devices":[1]}"#, "devices must be an array"),
            (r#"{"devices":["b"]}"#, "not absolute"),
            (r#"{"devices":[""]}"#, "empty"),
            (r#"{"devices":["/a\u0000"]}"#, "NUL"),
            (r#"{"domain":""}"#, "domain is empty"),
            (r#"{"domain":"a/b"}"#, "contains '/'"),
            (r#"{"domain":".."}"#, "reserved"),
        ];
        for (s, want) in cases {
            let e = ImageConfig::parse(s).unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
        }
    }

    #[test]
    fn test_mount_body_nydus_shape() {
        let body = br#"{"source":"/img.erofs","fs_type":"erofs","config":"{\"offset\":512}"}"#;
        let spec = MountSpec::parse_body(body).unwrap();
        assert_eq!(spec.source, PathBuf::from("/img.erofs"));
        assert_eq!(spec.config.offset, 512);

        let spec =
            MountSpec::parse_body(br#"{"source":"/i","config":{"direct_io":true}}"#).unwrap();
        assert!(spec.config.direct_io);
        let spec = MountSpec::parse_body(br#"{"source":"/i","config":null}"#).unwrap();
        assert_eq!(spec.config, ImageConfig::default());
        let spec = MountSpec::parse_body(br#"{"source":"/i","prefetch_files":[]}"#).unwrap();
        assert_eq!(spec.config, ImageConfig::default());
    }

    #[test]
    fn test_mount_body_invalid() {
        let cases: [(&[u8], &str); 13] = [
            (b"", "body:"),
            (b"not json", "body:"),
            (b"[1]", "must be a JSON object"),
            (br#"{"fs_type":"erofs"}"#, "missing field `source`"),
            (
                br#"{"source":"/i","fs_type":"rafs"}"#,
                "fs_type \"rafs\" is not supported",
            ),
            (br#"{"source":"/i","fs_type":"EROFS"}"#, "not supported"),
            (
                br#"{"source":"/i","extra":1,"more":2}"#,
                "unknown keys \"extra\", \"more\"",
            ),
            (br#"{"source":"rel/path"}"#, "not absolute"),
            (br#"{"source":"/i","config":7}"#, "JSON string or object"),
            (
                br#"{"source":"/i","config":"{\"bogus\":1}"}"#,
                "unknown key \"bogus\"",
            ),
            (
                br#"{"source":"/i","prefetch_files":["/a"]}"#,
                "prefetch_files",
            ),
            (
                br#"{"source":"/i","config":{"offset":1,"offset":2}}"#,
                "duplicate field",
            ),
            (br#"{"source":"/i","source":"/j"}"#, "duplicate field"),
        ];
        for (b, want) in cases {
            let e = MountSpec::parse_body(b).unwrap_err().to_string();
            assert!(e.contains(want), "{}: {e}", String::from_utf8_lossy(b));
        }
    }
}
