//! `kubectl-gebeta`: the companion CLI of gebeta-operator, a kubectl plugin (`kubectl gebeta`).
//! Parses the flags and hands over to [`gebeta_operator::cli`]. Exit codes: 0 success,
//! 1 failure, 2 bad usage.

use std::process::ExitCode;

use clap::Parser as _;
use gebeta_operator::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(cli::run(cli))
}
