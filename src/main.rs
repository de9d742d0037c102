use std::process::ExitCode;

use clap::Parser;
use tomoda_promote::{cli::Cli, logging, report_error, run};

fn main() -> ExitCode {
    // First, while the process has one thread (see its SAFETY note).
    tomoda_promote::git::allow_checkouts_of_other_users();
    tomoda_promote::cli::forget_empty_env();
    let cli = Cli::parse();
    logging::init(cli.log_format);
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            report_error(&error, cli.log_format);
            ExitCode::from(error.exit_code())
        }
    }
}
