//! The relational store behind `/mysqldata`: MySQL/MariaDB when configured,
//! an embedded SQLite file otherwise. Timestamps are stored as Unix
//! milliseconds so both dialects share one row shape.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;
use sqlx::Connection;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use tokio::sync::OnceCell;

use super::{
    Backend, ItemStore, RELATIONAL_SEED_ITEM, StoreError, StoreFuture, from_millis, group_commit,
    to_millis, with_timeout,
};
use crate::dto::{Item, NewItem};

const LIST_ITEMS: &str =
    "SELECT id, name, created_at_ms FROM items WHERE id < ? ORDER BY id DESC LIMIT ?";
const INSERT_ITEM: &str = "INSERT INTO items (name, created_at_ms) VALUES (?, ?)";

/// MySQL or MariaDB, reached through a connection pool that connects lazily.
pub struct MySqlStore {
    pool: MySqlPool,
    /// Set once the schema exists; retried on each call until then.
    schema: OnceCell<()>,
    timeout: Duration,
}

impl MySqlStore {
    const BACKEND: Backend = Backend {
        name: "mysql",
        shared: true,
    };

    /// Parses the URL and prepares the pool without connecting, so the
    /// service starts even while the database is down.
    pub fn connect_lazy(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let invalid = |reason: String| {
            StoreError::new(
                Self::BACKEND.name,
                format!("DATABASE_URL is not a valid mysql:// URL ({reason})"),
            )
        };
        if !url.starts_with("mysql://") {
            return Err(invalid("it must start with mysql://".into()));
        }
        // Each pooled connection prepares a statement once and keeps it
        // (sqlx's per-connection statement cache): the list and insert
        // queries are sent as prepared statements with bound parameters.
        let options = MySqlConnectOptions::from_str(url)
            .map_err(|e| invalid(e.to_string()))?
            .statement_cache_capacity(32);
        let pool = MySqlPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(timeout)
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            schema: OnceCell::new(),
            timeout,
        })
    }

    async fn ready_pool(&self) -> Result<&MySqlPool, StoreError> {
        self.schema
            .get_or_try_init(|| async {
                sqlx::query(
                    "CREATE TABLE IF NOT EXISTS items (
                        id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
                        name VARCHAR(200) NOT NULL,
                        created_at_ms BIGINT NOT NULL
                    ) CHARACTER SET utf8mb4",
                )
                .execute(&self.pool)
                .await?;
                // A fixed id makes the seed row idempotent across replicas and restarts.
                sqlx::query("INSERT IGNORE INTO items (id, name, created_at_ms) VALUES (1, ?, ?)")
                    .bind(RELATIONAL_SEED_ITEM)
                    .bind(to_millis(Utc::now()))
                    .execute(&self.pool)
                    .await?;
                Ok::<(), sqlx::Error>(())
            })
            .await
            .map_err(|e| StoreError::new(Self::BACKEND.name, e))?;
        Ok(&self.pool)
    }
}

impl ItemStore for MySqlStore {
    fn backend(&self) -> Backend {
        Self::BACKEND
    }

    fn list(&self, limit: u32, before: Option<u64>) -> StoreFuture<'_, Vec<Item>> {
        Box::pin(with_timeout(Self::BACKEND.name, self.timeout, async move {
            let pool = self.ready_pool().await?;
            let rows: Vec<(u64, String, i64)> = sqlx::query_as(LIST_ITEMS)
                .bind(before_bound(before))
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(|e| StoreError::new(Self::BACKEND.name, e))?;
            Ok(rows.into_iter().map(item_from_row).collect())
        }))
    }

    fn create(&self, item: NewItem) -> StoreFuture<'_, Item> {
        Box::pin(with_timeout(Self::BACKEND.name, self.timeout, async move {
            let pool = self.ready_pool().await?;
            let created_at = Utc::now();
            let result = sqlx::query(INSERT_ITEM)
                .bind(&item.name)
                .bind(to_millis(created_at))
                .execute(pool)
                .await
                .map_err(|e| StoreError::new(Self::BACKEND.name, e))?;
            Ok(Item {
                id: result.last_insert_id(),
                name: item.name,
                created_at: from_millis(to_millis(created_at)),
            })
        }))
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(with_timeout(Self::BACKEND.name, self.timeout, async move {
            let pool = self.ready_pool().await?;
            sqlx::query("SELECT 1")
                .execute(pool)
                .await
                .map_err(|e| StoreError::new(Self::BACKEND.name, e))?;
            Ok(())
        }))
    }
}

/// An SQLite database file in the data directory. Reads go through a pool;
/// writes through one writer connection that commits them in groups
/// ([`group_commit`]), each commit durable (WAL, `synchronous = FULL`).
pub struct SqliteStore {
    pool: SqlitePool,
    /// The database file.
    path: PathBuf,
    writer: group_commit::Writer,
    /// The task committing the writes (it ends by itself once the store is
    /// dropped), for tests that stop it as a panic would.
    #[cfg(test)]
    write_loop: tokio::task::AbortHandle,
}

impl SqliteStore {
    const BACKEND: Backend = Backend {
        name: "sqlite",
        shared: false,
    };

    /// Opens (or creates) the database file and its schema.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        super::remove_stale_snapshots(path);
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await
            .map_err(|e| {
                StoreError::new(
                    Self::BACKEND.name,
                    format!("cannot open {}: {e}", path.display()),
                )
            })?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS items (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                name TEXT NOT NULL,
                created_at_ms INTEGER NOT NULL
            )",
        )
        .execute(&pool)
        .await
        .map_err(|e| StoreError::new(Self::BACKEND.name, e))?;
        sqlx::query("INSERT OR IGNORE INTO items (id, name, created_at_ms) VALUES (1, ?, ?)")
            .bind(RELATIONAL_SEED_ITEM)
            .bind(to_millis(Utc::now()))
            .execute(&pool)
            .await
            .map_err(|e| StoreError::new(Self::BACKEND.name, e))?;
        let connection = SqliteConnection::connect_with(&options)
            .await
            .map_err(|e| StoreError::new(Self::BACKEND.name, e))?;
        let (writer, queue) = group_commit::Writer::new(Self::BACKEND.name);
        let write_loop = tokio::spawn(Self::write_loop(connection, queue));
        #[cfg(not(test))]
        drop(write_loop);
        Ok(Self {
            pool,
            path: path.to_owned(),
            writer,
            #[cfg(test)]
            write_loop: write_loop.abort_handle(),
        })
    }

    /// Commits the waiting writes in groups until the store is dropped.
    async fn write_loop(
        mut connection: SqliteConnection,
        mut queue: tokio::sync::mpsc::Receiver<group_commit::PendingWrite>,
    ) {
        while let Some(batch) = group_commit::next_batch(&mut queue).await {
            let result = Self::commit(&mut connection, &batch).await;
            group_commit::answer(batch, result);
        }
        let _ = connection.close().await;
    }

    async fn commit(
        connection: &mut SqliteConnection,
        batch: &[group_commit::PendingWrite],
    ) -> Result<Vec<Item>, StoreError> {
        let error = |e: sqlx::Error| StoreError::new(Self::BACKEND.name, e);
        let mut transaction = connection.begin().await.map_err(error)?;
        let mut items = Vec::with_capacity(batch.len());
        for write in batch {
            let created_at = from_millis(to_millis(Utc::now()));
            let result = sqlx::query(INSERT_ITEM)
                .bind(&write.item.name)
                .bind(to_millis(created_at))
                .execute(&mut *transaction)
                .await
                .map_err(error)?;
            items.push(Item {
                id: result.last_insert_rowid().unsigned_abs(),
                name: write.item.name.clone(),
                created_at,
            });
        }
        transaction.commit().await.map_err(error)?;
        Ok(items)
    }
}

impl ItemStore for SqliteStore {
    fn backend(&self) -> Backend {
        Self::BACKEND
    }

    fn list(&self, limit: u32, before: Option<u64>) -> StoreFuture<'_, Vec<Item>> {
        Box::pin(async move {
            let rows: Vec<(i64, String, i64)> = sqlx::query_as(LIST_ITEMS)
                .bind(before_bound(before))
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| StoreError::new(Self::BACKEND.name, e))?;
            Ok(rows
                .into_iter()
                .map(|(id, name, created)| item_from_row((id.unsigned_abs(), name, created)))
                .collect())
        })
    }

    fn create(&self, item: NewItem) -> StoreFuture<'_, Item> {
        Box::pin(self.writer.write(item))
    }

    /// Reads the table itself (`SELECT 1` would not touch the file) and checks
    /// that the writer runs: this store is the pod's own, and readiness rests on it.
    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.writer.check_running()?;
            sqlx::query("SELECT id FROM items LIMIT 1")
                .execute(&self.pool)
                .await
                .map_err(|e| StoreError::new(Self::BACKEND.name, e))?;
            Ok(())
        })
    }

    /// `VACUUM INTO` a new file: one read transaction, so the copy is the database as of
    /// one commit, while writes go on.
    fn snapshot(&self) -> StoreFuture<'_, Option<std::fs::File>> {
        Box::pin(async move {
            let target = super::snapshot_path(&self.path);
            let written = sqlx::query("VACUUM INTO ?")
                .bind(target.to_string_lossy().into_owned())
                .execute(&self.pool)
                .await;
            if let Err(e) = written {
                let _ = std::fs::remove_file(&target);
                return Err(StoreError::new(Self::BACKEND.name, e));
            }
            super::open_snapshot(Self::BACKEND.name, &target).map(Some)
        })
    }
}

/// The `id < ?` bound of a page: every id when there is no cursor.
fn before_bound(before: Option<u64>) -> i64 {
    before.map_or(i64::MAX, |id| i64::try_from(id).unwrap_or(i64::MAX))
}

fn item_from_row((id, name, created_at_ms): (u64, String, i64)) -> Item {
    Item {
        id,
        name,
        created_at: from_millis(created_at_ms),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A pod whose own store can no longer write must leave the Service: when the writer
    /// task is gone (it panicked, say), `ping` (what readiness asks) fails and says why.
    #[tokio::test]
    async fn ping_fails_once_the_writer_has_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("items.sqlite"))
            .await
            .unwrap();
        store.ping().await.expect("a fresh store answers");
        store.write_loop.abort();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let error = loop {
            match store.ping().await {
                Err(error) => break error,
                Ok(()) if tokio::time::Instant::now() < deadline => tokio::task::yield_now().await,
                Ok(()) => panic!("ping still succeeds 5 s after the writer stopped"),
            }
        };
        assert!(error.reason.contains("writer has stopped"), "{error}");
        let write = store.create(NewItem { name: "x".into() }).await;
        assert!(write.is_err(), "a write was accepted with no writer");
    }
}
