//! Configuration from flags and environment variables (flags win).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use kea_contract::env;

/// Largest accepted request body. Items are small; anything bigger is a mistake or abuse.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Longest accepted request target (path and query), in bytes; longer ones get a 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// kea-service: the KEA demo microservice, with its own relational and NoSQL stores.
#[derive(Debug, Clone, Parser)]
#[command(name = "kea-service", version, about)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = env::LISTEN, default_value_t = SocketAddr::from(([0, 0, 0, 0], kea_contract::DEFAULT_PORT)))]
    pub listen: SocketAddr,

    /// Directory of the embedded stores (SQLite, redb); the only place the service writes.
    #[arg(long, env = env::DATA_DIR, default_value = "data")]
    pub data_dir: PathBuf,

    /// Directory of the embedded SQLite file when it lives apart from the data directory,
    /// e.g. on its own volume.
    #[arg(long, env = env::SQL_DATA_DIR)]
    pub sql_data_dir: Option<PathBuf>,

    /// Directory of the embedded redb file when it lives apart from the data directory,
    /// e.g. on its own volume.
    #[arg(long, env = env::NOSQL_DATA_DIR)]
    pub nosql_data_dir: Option<PathBuf>,

    /// MySQL/MariaDB URL (mysql://user:password@host/db) for /mysqldata; embedded SQLite when unset.
    #[arg(long, env = env::DATABASE_URL, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Redis URL (redis://host:6379/0) for /nosqldata; embedded redb when unset.
    #[arg(long, env = env::REDIS_URL, hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Token that opens the admin routes (`/admin/backup/...`); none are served without it.
    #[arg(long, env = env::ADMIN_TOKEN, hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Prefix of the keys the service owns in Redis, so services can share a server.
    #[arg(long, env = "KEA_REDIS_KEY_PREFIX", default_value = "kea")]
    pub redis_key_prefix: String,

    /// Deadline of one store operation, e.g. `2s` or `500ms`.
    #[arg(long, env = "KEA_STORE_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub store_timeout: Duration,

    /// Deadline of a whole request; slower requests get a 503.
    #[arg(long, env = "KEA_REQUEST_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Requests served at once; more are shed with a 503 instead of queueing without bound.
    #[arg(long, env = "KEA_MAX_CONCURRENCY", default_value_t = 1024)]
    pub max_concurrency: usize,

    /// Connections served at once; more are answered 503 and closed. Capped below the
    /// process's file descriptor limit.
    #[arg(long, env = "KEA_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Deadline to receive a whole request head, and how long a keep-alive
    /// connection may stay idle; slow or idle clients are disconnected.
    #[arg(long, env = "KEA_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// Largest request head (request line and headers) in bytes; larger ones get a 431.
    #[arg(long, env = "KEA_MAX_HEADER_BYTES", default_value_t = 16 * 1024,
        value_parser = parse_header_bytes)]
    pub max_header_bytes: usize,

    /// Deadline of one call to a dependency (each `<NAME>_URL` variable).
    #[arg(long, env = "KEA_DEPENDENCY_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub dependency_timeout: Duration,

    /// How long a dependency's circuit stays open (calls rejected without touching the
    /// network) after repeated failures, before one trial call goes through.
    #[arg(long, env = "KEA_CIRCUIT_OPEN_FOR", default_value = "5s", value_parser = parse_duration)]
    pub circuit_open_for: Duration,

    /// After SIGTERM: how long to stay up but unready, so load balancers stop sending traffic.
    #[arg(long, env = env::SHUTDOWN_DELAY, default_value = "3s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,

    /// After the delay: how long in-flight requests get to finish before the process exits.
    #[arg(long, env = env::DRAIN_TIMEOUT, default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Percentage of `GET /` requests answered 500 on purpose, evenly spread: a faulty
    /// release to rehearse delivery with (the operator's canary analysis reverts it).
    #[arg(long, env = "KEA_FAULT_ERROR_PERCENT", default_value_t = 0,
        value_parser = clap::value_parser!(u8).range(0..=100))]
    pub fault_error_percent: u8,

    /// Log format.
    #[arg(long, env = "KEA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable text, for a terminal.
    Text,
}

impl Config {
    /// The configuration with every default and no stores configured: what
    /// the service runs with when started with no flags.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        let mut config = Self::parse_from(["kea-service"]);
        config.data_dir = data_dir.into();
        config.sql_data_dir = None;
        config.nosql_data_dir = None;
        config.database_url = None;
        config.redis_url = None;
        config.admin_token = None;
        config
    }
}

impl Config {
    /// `max_connections`, lowered to leave file descriptors for the stores and
    /// the log when the process may open fewer than it asks for.
    pub fn effective_max_connections(&self) -> usize {
        let reserve = 64;
        match open_files_limit() {
            Some(limit) if limit <= reserve => 1,
            Some(limit) => self.max_connections.min(limit - reserve).max(1),
            None => self.max_connections.max(1),
        }
    }
}

/// The soft limit on open files of this process (Linux), from `/proc/self/limits`.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Parses a head size limit, 1024 to 65536 bytes.
fn parse_header_bytes(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(bytes @ 1024..=65536) => Ok(bytes),
        _ => Err(format!(
            "`{text}` is not a number of bytes between 1024 and 65536"
        )),
    }
}

/// Parses `250ms`, `2s`, `1m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(split) => text.split_at(split),
        None => (text, "s"),
    };
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: use e.g. 500ms, 2s or 1m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value.saturating_mul(60))),
        _ => Err(format!("`{text}` has an unknown unit: use ms, s or m")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("").is_err());
    }
}
