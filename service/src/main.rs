//! Entry point of the reference microservice: parse configuration, set up
//! logging, serve until SIGTERM.

use clap::Parser;
use kea_service::config::Config;

/// jemalloc rather than the system allocator: after a burst of connections
/// (each with its buffers) its background thread gives the freed memory back
/// to the system within seconds, where glibc keeps it in per-thread arenas.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    kea_service::telemetry::init_logging(config.log_format);
    match kea_service::run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "kea-service stopped");
            std::process::ExitCode::FAILURE
        }
    }
}
