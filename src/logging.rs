//! Progress and diagnostics on stderr through tracing, filtered by RUST_LOG, every line
//! passed through the secret redactor.

use tracing_subscriber::EnvFilter;

use crate::secrets::RedactingStderr;

pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("tomoda_promote=info,warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactingStderr)
        .with_target(false)
        .without_time()
        .with_ansi(false)
        .try_init();
}
