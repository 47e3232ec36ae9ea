//! The `foundry-emulator` binary: parse flags, start logging, run, map the result to an exit code.

use std::process::ExitCode;

use argh::FromArgs;
use foundry_emulator::cli::{self, Args};

/// Usage errors exit 2, like every other error the binary reports itself.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let command = argv
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a))
        .unwrap_or("foundry-emulator");
    let rest: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    let args = match Args::from_args(&[command], &rest) {
        Ok(args) => args,
        // `--help` is an early exit with Ok status; a bad flag is one with Err.
        Err(exit) if exit.status.is_ok() => {
            println!("{}", exit.output);
            return ExitCode::SUCCESS;
        }
        Err(exit) => {
            eprintln!("{}", exit.output);
            return ExitCode::from(EXIT_USAGE);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("foundry-emulator: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}
