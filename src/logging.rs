//! Log output for weir's binaries and examples.
//!
//! Owns [`init_stderr`]: one `tracing` subscriber writing to stderr, filtered
//! by `RUST_LOG` (default `info`), with colours only when stderr is a
//! terminal. The library itself only emits events; it must never install a
//! subscriber on its own (that choice belongs to the application).

use std::io::IsTerminal;

/// Installs the stderr subscriber. Call once, first thing in `main`; a
/// second call (or another subscriber already installed) is ignored.
///
/// ```
/// weir::logging::init_stderr();
/// tracing::info!("ready");
/// ```
pub fn init_stderr() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .try_init();
}
