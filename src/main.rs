use std::process::ExitCode;

use clap::Parser;
use tomoda_promote::{cli::Cli, logging, run, secrets};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "{}",
                secrets::redact(&format!("tomoda-promote: error: {error}"))
            );
            ExitCode::from(error.exit_code())
        }
    }
}
