//! The `foundry-emulator` binary: parse flags, start logging, run, map the result to an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: foundry_emulator::cli::Args = argh::from_env();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match foundry_emulator::cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("foundry-emulator: {e}");
            ExitCode::from(2)
        }
    }
}
