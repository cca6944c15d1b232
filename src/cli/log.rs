//! Logging for every command: the `log` facade's messages, one line each,
//! at the level `--log-level` chose, to stderr (the default), to a file
//! (`--log-file PATH`, reopened on SIGHUP and through the API, for log
//! rotation) or to syslog (`--syslog`, through the `syslog` crate).
//!
//! Both destinations are opened before the daemon enters its sandbox and
//! keep working in it: syslog through its socket, connected at start (no
//! socket can be made in the sandbox); the log file through its directory,
//! kept open, so that reopening creates a new file there after a rename
//! even when the directory is not visible in the sandbox.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use anyhow::Context;
use clap::{Args, ValueEnum};
use syslog::{Facility, Formatter3164, LoggerBackend};

/// `--log-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Nothing.
    Off,
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// What happens (connections, images opened) and the above.
    Info,
    /// Per-request detail.
    Debug,
    /// Everything.
    Trace,
}

/// Where the daemons log (`serve`, `mount`).
#[derive(Debug, Clone, Default, Args)]
pub struct LogArgs {
    /// Log to this file instead of stderr (appended to; created with mode
    /// 0640). SIGHUP, or `PUT /api/v1/daemon/logs/reopen`, reopens it:
    /// after a rename, a new file is made at PATH.
    #[arg(long, value_name = "PATH", conflicts_with = "syslog")]
    pub log_file: Option<PathBuf>,
    /// Log to syslog (facility daemon) instead of stderr, through SOCKET
    /// (default /dev/log).
    #[arg(long, value_name = "SOCKET", num_args = 0..=1, default_missing_value = "/dev/log")]
    pub syslog: Option<PathBuf>,
}

impl LogArgs {
    /// Whether the log goes to a file that SIGHUP reopens.
    pub fn reopens(&self) -> bool {
        self.log_file.is_some()
    }
}

/// The log file, its directory kept open to reopen it by name.
struct LogFile {
    dir: File,
    name: OsString,
    path: PathBuf,
    file: File,
}

impl LogFile {
    fn open(path: &Path) -> io::Result<LogFile> {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::other("not a file name"))?
            .to_owned();
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = File::open(parent)?;
        let file = append(path)?;
        Ok(LogFile {
            dir,
            name,
            path: path.to_owned(),
            file,
        })
    }

    /// Opens the file at the same name again (a new one if it was renamed
    /// or removed), through the directory kept open: its path may not be
    /// visible any more (the sandbox).
    fn reopen(&mut self) -> io::Result<()> {
        let mut through_dir = PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd()));
        through_dir.push(&self.name);
        self.file = append(&through_dir).or_else(|_| append(&self.path))?;
        Ok(())
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// Where the messages go.
enum Sink {
    Stderr,
    File(LogFile),
    Syslog(syslog::Logger<LoggerBackend, Formatter3164>),
}

/// The logger behind the facade.
struct Logger {
    sink: Mutex<Sink>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Forwards the facade to [`LOGGER`] (stderr until it is set).
struct Facade;

impl log::Log for Facade {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let Some(logger) = LOGGER.get() else {
            // Not `eprintln!`, which panics when stderr is unwritable.
            let _ = writeln!(
                io::stderr(),
                "erofs-virtiofsd: [{}] {}",
                record.level(),
                record.args()
            );
            return;
        };
        let mut sink = logger.sink.lock().unwrap_or_else(PoisonError::into_inner);
        // A failed write has nowhere to be reported: dropped.
        let _ = match &mut *sink {
            Sink::Stderr => writeln!(
                io::stderr(),
                "erofs-virtiofsd: [{}] {}",
                record.level(),
                record.args()
            ),
            Sink::File(f) => writeln!(
                f.file,
                "{} [{}] {}",
                timestamp(),
                record.level(),
                record.args()
            ),
            Sink::Syslog(s) => {
                let msg = record.args().to_string();
                let r = match record.level() {
                    log::Level::Error => s.err(msg),
                    log::Level::Warn => s.warning(msg),
                    log::Level::Info => s.info(msg),
                    log::Level::Debug | log::Level::Trace => s.debug(msg),
                };
                r.map_err(|e| io::Error::other(e.to_string()))
            }
        };
    }

    fn flush(&self) {}
}

static FACADE: Facade = Facade;

/// Seconds and microseconds since the epoch, UTC (no time zone data is
/// visible in the sandbox).
fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:06}", now.as_secs(), now.subsec_micros())
}

fn filter(level: LogLevel) -> log::LevelFilter {
    match level {
        LogLevel::Off => log::LevelFilter::Off,
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Trace => log::LevelFilter::Trace,
    }
}

/// Sends the `log` facade to stderr at `level` (once per process).
pub fn init_logger(level: LogLevel) {
    if log::set_logger(&FACADE).is_ok() {
        log::set_max_level(filter(level));
    }
}

/// Sends the `log` facade where `args` say, at `level`; opens the file or
/// connects to syslog now (before the sandbox). Once per process.
pub fn init_logging(level: LogLevel, args: &LogArgs) -> anyhow::Result<()> {
    let sink = if let Some(path) = &args.log_file {
        Sink::File(LogFile::open(path).with_context(|| format!("--log-file {}", path.display()))?)
    } else if let Some(socket) = &args.syslog {
        let formatter = Formatter3164 {
            facility: Facility::LOG_DAEMON,
            hostname: None,
            process: "erofs-virtiofsd".into(),
            pid: std::process::id(),
        };
        let logger = syslog::unix_custom(formatter, socket)
            .map_err(|e| anyhow::anyhow!("--syslog {}: {e}", socket.display()))?;
        Sink::Syslog(logger)
    } else {
        Sink::Stderr
    };
    let _ = LOGGER.set(Logger {
        sink: Mutex::new(sink),
    });
    init_logger(level);
    Ok(())
}

/// Reopens the log file (for SIGHUP and the API); nothing to do when
/// logging elsewhere.
pub fn reopen_log() -> io::Result<()> {
    let Some(logger) = LOGGER.get() else {
        return Ok(());
    };
    let mut sink = logger.sink.lock().unwrap_or_else(PoisonError::into_inner);
    if let Sink::File(f) = &mut *sink {
        f.reopen()?;
    }
    Ok(())
}

/// [`reopen_log`] for the API, when logging to a file.
pub fn reopener(args: &LogArgs) -> Option<super::control::Reopen> {
    args.reopens().then(|| {
        let f: super::control::Reopen = Arc::new(|| {
            reopen_log()?;
            log::info!("log file reopened (API)");
            Ok(())
        });
        f
    })
}

/// Reopens the log file on each SIGHUP (`hup`, blocked beforehand) in a
/// thread of its own.
pub fn spawn_reopen_thread(hup: crate::os::signal::SignalSet) -> anyhow::Result<()> {
    crate::os::signal::spawn_handler(hup, "log-reopen", |_| match reopen_log() {
        Ok(()) => log::info!("log file reopened (SIGHUP)"),
        Err(e) => log::error!("reopening the log file: {e}"),
    })
    .context("spawning the SIGHUP thread")
}
