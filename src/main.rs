use std::process::ExitCode;

use tomoda_promote::{cli, logging, report, run};

fn main() -> ExitCode {
    let args = cli::parse();
    logging::init(args.log_format);
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            report::error(&error, args.log_format);
            ExitCode::from(error.exit_code())
        }
    }
}
