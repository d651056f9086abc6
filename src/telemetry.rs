//! Structured logs: `tracing` to standard output, filtered by `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `format` is `pretty` or `json`.
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    // A second install (tests in one process) keeps the first.
    let _ = match format {
        "json" => builder.json().flatten_event(true).try_init(),
        _ => builder.try_init(),
    };
}
