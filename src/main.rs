use std::process::ExitCode;

use clap::Parser;
use tomoda_promote::{cli::Cli, logging, report_error, run};

fn main() -> ExitCode {
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
