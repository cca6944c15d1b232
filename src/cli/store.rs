//! `erofs-virtiofsd store ...`: look into a content store and warm it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use super::json::{backslash_replace, Object};
use super::source::ImageSource;
use crate::erofs::{self, Image, Inode, InodeKind};
use crate::share::{self, Domain, FingerprintXattr, LoadOutcome, Store, StoreOptions};

/// Hidden test hook: a load pauses for good once this many bytes of a file
/// have been read, after saying so on stderr (for killing a loader at a
/// known point).
const PAUSE_ENV: &str = "EROFS_VIRTIOFSD_TEST_PAUSE_LOAD_AFTER";

/// The line the paused loader prints.
pub const PAUSED_LINE: &str = "erofs-virtiofsd: test: load paused";

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Show each trust domain's entries, bytes, loads, hits, verification
    /// failures and evictions.
    Stat {
        /// The store directory [default: /dev/shm/erofs-virtiofsd.UID].
        #[arg(long, value_name = "DIR")]
        store: Option<PathBuf>,
        /// One JSON object per domain and line.
        #[arg(long)]
        json: bool,
    },
    /// Load every fingerprinted regular file of an image into the store,
    /// each verified against its fingerprint.
    Preload(PreloadArgs),
}

/// Arguments of `store preload`.
#[derive(Debug, Args)]
pub struct PreloadArgs {
    /// The store directory [default: /dev/shm/erofs-virtiofsd.UID].
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// The trust domain the content is stored for.
    #[arg(long, value_name = "NAME")]
    domain: Domain,
    /// Most bytes the store may hold (suffixes K, M, G, T; default a
    /// quarter of RAM); unused entries are evicted to stay below.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    store_size: Option<u64>,
    /// The xattr holding fingerprints [default: what the image declares].
    #[arg(long, value_name = "NAME")]
    fingerprint_xattr: Option<String>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    src: ImageSource,
}

impl StoreCommand {
    /// Runs the command.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            StoreCommand::Stat { store, json } => stat(store, json),
            StoreCommand::Preload(args) => preload(args),
        }
    }
}

/// Parses a byte count with an optional binary suffix (K, M, G, T).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{s:?}: unknown size suffix {c:?} (K, M, G, T)")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn store_dir(store: Option<PathBuf>) -> PathBuf {
    store.unwrap_or_else(share::store::default_dir)
}

fn stat(store: Option<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    let dir = store_dir(store);
    if !dir.join(share::store::LAYOUT_DIR).is_dir() {
        bail!("no content store in {}", dir.display());
    }
    let s = Store::open(&dir, StoreOptions::default())?;
    let domains = s.stats()?;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    if json {
        for d in &domains {
            let mut o = Object::new();
            o.str("domain", d.domain.as_str())
                .int("entries", d.entries)
                .int("bytes", d.bytes)
                .int("loads", d.counters.loads)
                .int("hits", d.counters.hits)
                .int("verify_failures", d.counters.verify_failures)
                .int("evictions", d.counters.evictions);
            writeln!(out, "{}", o.finish())?;
        }
    } else {
        writeln!(out, "store {}: {} bytes in use", dir.display(), s.usage()?)?;
        writeln!(
            out,
            "{:<20} {:>9} {:>14} {:>9} {:>9} {:>9} {:>9}",
            "DOMAIN", "ENTRIES", "BYTES", "LOADS", "HITS", "VERIFYERR", "EVICTED"
        )?;
        for d in &domains {
            let c = d.counters;
            writeln!(
                out,
                "{:<20} {:>9} {:>14} {:>9} {:>9} {:>9} {:>9}",
                d.domain.as_str(),
                d.entries,
                d.bytes,
                c.loads,
                c.hits,
                c.verify_failures,
                c.evictions
            )?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// What a preload did.
#[derive(Debug, Default)]
struct Tally {
    files: u64,
    fingerprinted: u64,
    loaded: u64,
    loaded_bytes: u64,
    present: u64,
    in_progress: u64,
    mismatched: u64,
    full: u64,
    errors: u64,
}

fn preload(args: PreloadArgs) -> anyhow::Result<ExitCode> {
    let img = args.src.open()?;
    let configured = args
        .fingerprint_xattr
        .as_deref()
        .map(FingerprintXattr::from_name)
        .transpose()?;
    let Some(xattr) = FingerprintXattr::for_image(&img, configured.as_ref()) else {
        bail!(
            "{} declares no fingerprint xattr (made without mkfs.erofs --xattr-inode-digest?); \
             name one with --fingerprint-xattr",
            args.src.image.display()
        );
    };
    let dir = store_dir(args.store);
    let opts = StoreOptions {
        size_limit: args
            .store_size
            .unwrap_or_else(share::store::default_size_limit),
    };
    let store = share::hugefs::open_store(&dir, opts)?;
    let files = regular_files(&img)?;
    let pause_after: Option<u64> = std::env::var(PAUSE_ENV).ok().and_then(|v| v.parse().ok());
    let start = Instant::now();
    let mut t = Tally::default();
    for (path, inode) in &files {
        t.files += 1;
        let Some(fp) = xattr.fingerprint(&img, inode) else {
            continue;
        };
        t.fingerprinted += 1;
        let mut read = |off: u64, buf: &mut [u8]| -> std::io::Result<usize> {
            if pause_after.is_some_and(|n| off >= n) {
                pause_forever();
            }
            img.read(inode, off, buf).map_err(std::io::Error::other)
        };
        let shown = || backslash_replace(path).0;
        match store.load_waiting(&args.domain, &fp, inode.size, &mut read) {
            Ok(LoadOutcome::Stored(_)) => {
                t.loaded += 1;
                t.loaded_bytes += inode.size;
            }
            Ok(LoadOutcome::AlreadyStored(_)) => t.present += 1,
            Ok(LoadOutcome::InProgress) => t.in_progress += 1,
            Err(e @ share::Error::Mismatch { .. }) => {
                t.mismatched += 1;
                warn(format_args!("{}: {e}", shown()));
            }
            Err(e @ share::Error::Full { .. }) => {
                t.full += 1;
                warn(format_args!("{}: {e}", shown()));
            }
            Err(e) => {
                t.errors += 1;
                warn(format_args!("{}: {:#}", shown(), anyhow::Error::from(e)));
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    report(&args.src.image, &dir, &args.domain, &t, secs, args.json)?;
    let bad = t.mismatched + t.full + t.errors;
    if bad > 0 {
        bail!(
            "{} files not stored: {} failed verification, {} did not fit, {} errors",
            bad,
            t.mismatched,
            t.full,
            t.errors
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Every regular file of the image once (hard links by their first path).
fn regular_files(img: &Image) -> anyhow::Result<Vec<(Vec<u8>, Inode)>> {
    let mut seen = std::collections::HashSet::new();
    let mut files = Vec::new();
    let mut problems = 0u64;
    erofs::walk(
        img,
        |e| {
            if e.inode.kind == InodeKind::File && seen.insert(e.inode.nid) {
                files.push((e.path.clone(), e.inode.clone()));
            }
        },
        |path, err| {
            problems += 1;
            warn(format_args!("{}: {err}", backslash_replace(path).0));
        },
    )
    .context("walking the image")?;
    if problems > 0 {
        warn(format_args!(
            "{problems} parts of the image could not be walked"
        ));
    }
    Ok(files)
}

fn report(
    image: &Path,
    dir: &Path,
    domain: &Domain,
    t: &Tally,
    secs: f64,
    json: bool,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let mut o = Object::new();
        o.str("image", &image.display().to_string())
            .str("store", &dir.display().to_string())
            .str("domain", domain.as_str())
            .int("files", t.files)
            .int("fingerprinted", t.fingerprinted)
            .int("loaded", t.loaded)
            .int("loaded_bytes", t.loaded_bytes)
            .int("already_stored", t.present)
            .int("in_progress", t.in_progress)
            .int("verify_failures", t.mismatched)
            .int("full", t.full)
            .int("errors", t.errors)
            .int("milliseconds", (secs * 1000.0) as u64);
        writeln!(out, "{}", o.finish())?;
    } else {
        writeln!(
            out,
            "{}: {} regular files, {} fingerprinted: {} loaded ({} bytes in {secs:.2}s), \
             {} already stored, {} failed verification, {} did not fit, {} errors",
            image.display(),
            t.files,
            t.fingerprinted,
            t.loaded,
            t.loaded_bytes,
            t.present,
            t.mismatched,
            t.full,
            t.errors
        )?;
    }
    Ok(())
}

/// A warning on stderr (this command sets up no logger).
fn warn(msg: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "erofs-virtiofsd: warning: {msg}");
}

fn pause_forever() -> ! {
    let _ = writeln!(std::io::stderr(), "{PAUSED_LINE}");
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_size_table() {
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("4096", Some(4096)),
            ("64K", Some(64 << 10)),
            ("3m", Some(3 << 20)),
            ("2G", Some(2 << 30)),
            ("1T", Some(1 << 40)),
            ("", None),
            ("G", None),
            ("12X", None),
            ("-1", None),
            ("99999999999T", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_size(s).ok(), *want, "{s:?}");
        }
    }
}
