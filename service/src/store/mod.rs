//! The service's own data stores ("each service has its own resources and
//! data storages"). Both routes speak to an [`ItemStore`]; which backend sits
//! behind it is configuration:
//!
//! | route        | configured (`DATABASE_URL` / `REDIS_URL`) | nothing configured        |
//! |--------------|-------------------------------------------|---------------------------|
//! | `/mysqldata` | MySQL or MariaDB ([`sql::MySqlStore`])    | SQLite ([`sql::SqliteStore`]) |
//! | `/nosqldata` | Redis ([`redis::RedisStore`])             | redb ([`embedded_kv::RedbStore`]) |
//!
//! The embedded backends keep their files in the data directory, so the
//! service runs with no setup and keeps its data across restarts.

pub mod embedded_kv;
pub mod group_commit;
pub mod redis;
pub mod sql;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::config::Config;
use crate::dto::{Item, NewItem};

/// Name of the item every relational store starts with, as the seed's `/mysqldata` answered.
pub const RELATIONAL_SEED_ITEM: &str = "Test MySQL";
/// Name of the item every NoSQL store starts with, as the seed's `/nosqldata` answered.
pub const NOSQL_SEED_ITEM: &str = "Test NoSQL";

/// A boxed future, so [`ItemStore`] can be used as a trait object.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A kind of store: its name and whether the replicas share it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Short name reported to clients and in metrics: `mysql`, `sqlite`, `redis`, `redb`.
    pub name: &'static str,
    /// True for a server shared by every replica (MySQL, Redis); false for a
    /// store embedded in the pod (SQLite, redb). Readiness counts only the
    /// latter: an outage of a shared store would otherwise take every replica
    /// out of the Service at once.
    pub shared: bool,
}

/// What the data routes need from a store. Implementations create their
/// schema on first use, so a store that is down at start-up does not stop the
/// service from starting: its route answers 503 until it comes back.
pub trait ItemStore: Send + Sync {
    /// Which backend this is.
    fn backend(&self) -> Backend;
    /// Up to `limit` items, newest first; with `before`, only items whose id
    /// is lower (the next page).
    fn list(&self, limit: u32, before: Option<u64>) -> StoreFuture<'_, Vec<Item>>;
    /// Stores a new, already validated item and returns it with its id.
    fn create(&self, item: NewItem) -> StoreFuture<'_, Item>;
    /// Checks that the store answers (and its schema exists).
    fn ping(&self) -> StoreFuture<'_, ()>;
    /// A consistent copy of an embedded store as an open file, already gone from its
    /// directory (closing it frees the space; nothing is left behind). `None` for a server
    /// store: that is backed up from its server.
    fn snapshot(&self) -> StoreFuture<'_, Option<std::fs::File>> {
        Box::pin(async { Ok(None) })
    }
}

/// A store failure. The message names the backend and the cause but never a
/// connection URL, which may hold a password.
#[derive(Debug, thiserror::Error)]
#[error("the {backend} store is unavailable: {reason}")]
pub struct StoreError {
    /// The backend that failed.
    pub backend: &'static str,
    /// Why, in words.
    pub reason: String,
}

impl StoreError {
    /// Wraps any displayable cause.
    pub fn new(backend: &'static str, reason: impl std::fmt::Display) -> Self {
        Self {
            backend,
            reason: reason.to_string(),
        }
    }
}

/// The two stores of the service.
#[derive(Clone)]
pub struct Stores {
    /// Behind `/mysqldata`.
    pub relational: Arc<dyn ItemStore>,
    /// Behind `/nosqldata`.
    pub nosql: Arc<dyn ItemStore>,
}

impl Stores {
    /// Opens the stores the configuration asks for. Only a configuration
    /// error (a bad URL, an unusable data directory) fails here; a server that
    /// is down is reported later, per request and by readiness.
    pub async fn open(config: &Config) -> Result<Self, StoreError> {
        let relational: Arc<dyn ItemStore> = match &config.database_url {
            Some(url) => Arc::new(sql::MySqlStore::connect_lazy(url, config.store_timeout)?),
            None => {
                let dir = config.sql_data_dir.as_ref().unwrap_or(&config.data_dir);
                ensure_dir(dir, "--sql-data-dir")?;
                Arc::new(sql::SqliteStore::open(&dir.join(kea_contract::files::SQLITE)).await?)
            }
        };
        let nosql: Arc<dyn ItemStore> = match &config.redis_url {
            Some(url) => Arc::new(redis::RedisStore::new(
                url,
                &config.redis_key_prefix,
                config.store_timeout,
            )?),
            None => {
                let dir = config.nosql_data_dir.as_ref().unwrap_or(&config.data_dir);
                ensure_dir(dir, "--nosql-data-dir")?;
                Arc::new(embedded_kv::RedbStore::open(&dir.join(kea_contract::files::REDB)).await?)
            }
        };
        Ok(Self { relational, nosql })
    }
}

/// Creates an embedded store's directory; `flag` names the setting to fix when that fails.
fn ensure_dir(dir: &Path, flag: &str) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        StoreError::new(
            "embedded",
            format!(
                "cannot create the data directory {}: {e}; set --data-dir (or {flag}) to a writable directory",
                dir.display()
            ),
        )
    })
}

/// Where the snapshot of the database file `database` is written: a hidden file beside it
/// (on the same volume), named so that [`remove_stale_snapshots`] finds it.
pub(crate) fn snapshot_path(database: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = database
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    database.with_file_name(format!(
        ".{name}.snapshot-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Opens a finished snapshot and removes its name, so the file lives only as long as the
/// reader; on failure the file is removed too.
pub(crate) fn open_snapshot(
    backend: &'static str,
    path: &Path,
) -> Result<std::fs::File, StoreError> {
    let opened = std::fs::File::open(path);
    let _ = std::fs::remove_file(path);
    opened.map_err(|e| StoreError::new(backend, format!("cannot read the snapshot: {e}")))
}

/// Removes the snapshots a killed process left beside `database`.
pub(crate) fn remove_stale_snapshots(database: &Path) {
    let (Some(dir), Some(name)) = (database.parent(), database.file_name()) else {
        return;
    };
    let prefix = format!(".{}.snapshot-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Runs a store operation with a deadline, so a hung server becomes a 503
/// rather than a request that never ends.
pub async fn with_timeout<T>(
    backend: &'static str,
    timeout: Duration,
    operation: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(timeout, operation)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::new(
                backend,
                format!("no answer within {timeout:?}"),
            ))
        })
}

/// Milliseconds since the Unix epoch, as stored by the SQL backends.
pub(crate) fn to_millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

/// The inverse of [`to_millis`]; out-of-range values (a corrupt row) map to the epoch.
pub(crate) fn from_millis(millis: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(millis)
        .single()
        .unwrap_or_default()
}
