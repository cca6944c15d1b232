//! erofs-virtiofsd command line entry point.

use std::process::ExitCode;

fn main() -> ExitCode {
    erofs_virtiofsd::cli::main()
}
