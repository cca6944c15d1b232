//! erofs-virtiofsd command line entry point.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    erofs_virtiofsd::cli::main()
}
