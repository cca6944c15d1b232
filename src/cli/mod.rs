//! The command line: argument parsing and the human-facing commands.
#![forbid(unsafe_code)]

mod control;
mod image;
mod images;
pub mod json;
mod log;
mod manifest;
mod mount;
mod sandbox;
mod serve;
mod source;
mod store;

pub use images::{ConfigFile, ConfigImage, ImageSpec, Plan, ShareArgs};
pub use source::{default_decode_cache, image_options, ImageSource};

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Serve read-only EROFS images to virtual machines over vhost-user
/// virtio-fs, and inspect them.
///
/// Without a subcommand it serves IMAGE over vhost-user:
/// `erofs-virtiofsd --socket-path SOCK --image IMAGE`, or several images,
/// each a top-level directory of the share:
/// `--image NAME=IMAGE --image NAME2=IMAGE2` (or `--config FILE`).
#[derive(Debug, Parser)]
#[command(name = "erofs-virtiofsd", version, about)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: serve::ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect an EROFS image without mounting it.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Mount an image (or several, by name) through /dev/fuse (read-only;
    /// needs root).
    #[command(override_usage = "erofs-virtiofsd mount [OPTIONS] [IMAGE] <MOUNTPOINT>")]
    Mount(mount::MountArgs),
    /// Serve an image to a VMM over vhost-user (also the default without a
    /// subcommand).
    Serve(serve::ServeArgs),
    /// Look into a shared content store, or warm it with an image.
    #[command(subcommand)]
    Store(store::StoreCommand),
}

/// Runs the command line and maps failures to a one-line error and exit 1.
pub fn main() -> ExitCode {
    crate::os::proc::malloc_one_arena();
    let cli = Cli::parse();
    let r = match cli.command {
        Some(Command::Image(c)) => c.run(),
        Some(Command::Mount(m)) => m.run(),
        Some(Command::Serve(s)) => s.run(),
        Some(Command::Store(c)) => c.run(),
        None if cli.serve.is_empty() => {
            use clap::CommandFactory;
            let _ = Cli::command().print_help();
            return ExitCode::from(2);
        }
        None => cli.serve.run(),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            // A closed pipe (e.g. `| head`) is not an error worth a message.
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            // Not `eprintln!`: it panics (exit 101) when stderr cannot be
            // written (closed pipe, full disk); the exit code still tells.
            let _ = writeln!(std::io::stderr(), "erofs-virtiofsd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
