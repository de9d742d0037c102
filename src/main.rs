use std::process::ExitCode;

use tomoda_promote::{cli, logging, report, run};

fn main() -> ExitCode {
    // First, while the process has one thread (see its SAFETY note).
    tomoda_promote::git::allow_checkouts_of_other_users();
    tomoda_promote::git::cache_large_trees();
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
