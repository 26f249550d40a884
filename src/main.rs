//! `cnnc`: compile, inspect, train and run Keras-style CNNs declared in YAML.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    restore_sigpipe();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Dies quietly on a closed pipe (`cnnc summary m.yaml | head`), as `cat` does, instead of
/// panicking in `println!`: Rust's runtime ignores SIGPIPE, so writes would fail with EPIPE.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: resetting a signal to its default action before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
