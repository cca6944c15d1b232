//! A fake daemon for tests and fuzzing (`cfg(test)` or the `test-utils`
//! feature): images live in a map, sources whose file name starts with
//! `bad` cannot be opened, and at most [`FAKE_MAX_IMAGES`] fit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::router::{Router, JSON};
use super::{
    Control, ControlError, DaemonState, DaemonStatus, ErrorBody, ImageConfig, ImageInfo, ImageName,
    MountSpec,
};
use crate::metrics::{Metrics, MetricsSnapshot};

/// Most images the fake takes.
pub const FAKE_MAX_IMAGES: usize = 8;

/// A [`Control`] that keeps images in memory.
#[derive(Debug, Default)]
pub struct FakeControl {
    images: Mutex<BTreeMap<ImageName, MountSpec>>,
    /// The registry it reports.
    pub metrics: Metrics,
    /// Times the logs were reopened.
    pub reopened: AtomicU64,
}

impl Control for FakeControl {
    fn daemon(&self) -> DaemonStatus {
        let images = self.images.lock().unwrap_or_else(|e| e.into_inner());
        DaemonStatus {
            id: Some("fake".to_owned()),
            state: DaemonState::Running,
            images: images
                .iter()
                .map(|(n, s)| ImageInfo {
                    name: Some(n.clone()),
                    source: s.source.clone(),
                    config: s.config.clone(),
                })
                .collect(),
        }
    }

    fn mount(&self, name: &ImageName, spec: MountSpec) -> Result<(), ControlError> {
        let mut images = self.images.lock().unwrap_or_else(|e| e.into_inner());
        if images.contains_key(name) {
            return Err(ControlError::AlreadyExists(format!("/{name} is mounted")));
        }
        if images.len() >= FAKE_MAX_IMAGES {
            return Err(ControlError::LimitReached("too many images".to_owned()));
        }
        let bad = spec
            .source
            .file_name()
            .is_some_and(|f| f.as_encoded_bytes().starts_with(b"bad"));
        if bad {
            return Err(ControlError::Unprocessable(format!(
                "{}: not an EROFS image",
                spec.source.display()
            )));
        }
        let m = self
            .metrics
            .add_image(name.as_str())
            .map_err(|e| ControlError::LimitReached(e.to_string()))?;
        m.observe_request(1, Duration::from_micros(5), 0, 0);
        images.insert(name.clone(), spec);
        Ok(())
    }

    fn umount(&self, name: &ImageName) -> Result<(), ControlError> {
        let mut images = self.images.lock().unwrap_or_else(|e| e.into_inner());
        if images.remove(name).is_none() {
            return Err(ControlError::NotFound(format!("/{name} is not mounted")));
        }
        self.metrics.remove_image(name.as_str());
        Ok(())
    }

    fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    fn reopen_logs(&self) -> Result<(), ControlError> {
        self.reopened.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

const METHODS: [&str; 8] = [
    "GET", "POST", "DELETE", "PUT", "HEAD", "PATCH", "OPTIONS", "get",
];

/// Fuzzing entry: `data` is a sequence of requests separated by `\n--\n`,
/// each a method selector byte, the target up to the first `\n`, then the
/// body; all go to one router over a fresh [`FakeControl`]. Every body is
/// also parsed as a config string. Panics if a reply breaks the API's
/// promises (status range, error bodies, JSON bodies).
pub fn fuzz_api(data: &[u8]) {
    let router = Router::new(Arc::new(FakeControl::default()));
    for rec in split(data, b"\n--\n").take(64) {
        let Some((&sel, rest)) = rec.split_first() else {
            continue;
        };
        let method = METHODS[usize::from(sel) % METHODS.len()];
        let (target, body) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        let target = String::from_utf8_lossy(target);
        let _ = ImageConfig::parse(&String::from_utf8_lossy(body));
        let r = router.handle(method, &target, body);
        assert!((200..600).contains(&r.status), "status {}", r.status);
        if r.status == 204 {
            assert!(r.body.is_empty());
        } else if r.status >= 400 {
            let e: ErrorBody = serde_json::from_slice(&r.body).expect("error body");
            assert!(!e.code.is_empty() && !e.message.is_empty());
        } else if r.content_type == JSON {
            let _: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON body");
        }
    }
}

fn split<'a>(data: &'a [u8], sep: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let d = rest?;
        match d.windows(sep.len()).position(|w| w == sep) {
            Some(i) => {
                rest = Some(&d[i + sep.len()..]);
                Some(&d[..i])
            }
            None => {
                rest = None;
                Some(d)
            }
        }
    })
}
