//! Logging setup: `tracing` to stderr, pretty or JSON, filtered by `logging.level` or `RUST_LOG`.

use crate::config::LoggingSettings;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls are ignored (tests call it repeatedly).
pub fn init(settings: &LoggingSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if settings.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
