//! The embedded NoSQL store behind `/nosqldata` when no Redis is configured:
//! a redb key-value file in the data directory (ACID, crash-safe), with items
//! as JSON values keyed by id.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{Backend, ItemStore, NOSQL_SEED_ITEM, StoreError, StoreFuture, group_commit};
use crate::dto::{Item, NewItem};

const ITEMS: TableDefinition<u64, &str> = TableDefinition::new("items");

/// A redb database file. redb's API is blocking: reads run on tokio's
/// blocking pool, writes on a writer thread that commits them in groups
/// ([`group_commit`]), each commit durable (`Durability::Immediate`).
pub struct RedbStore {
    database: Arc<Database>,
    /// The database file.
    path: PathBuf,
    /// `None` only while dropping.
    writer: Option<group_commit::Writer>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RedbStore {
    /// Stops the writer thread and waits for it, so that the file is closed
    /// (and can be opened again) once the store is gone.
    fn drop(&mut self) {
        self.writer = None;
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
    }
}

impl RedbStore {
    const BACKEND: Backend = Backend {
        name: "redb",
        shared: false,
    };

    /// Opens (or creates) the file, its table and the seed item.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        super::remove_stale_snapshots(path);
        let file = path.to_owned();
        let path = path.to_owned();
        let database = tokio::task::spawn_blocking(move || -> Result<Database, StoreError> {
            let database = Database::create(&path).map_err(|e| {
                StoreError::new(
                    Self::BACKEND.name,
                    format!("cannot open {}: {e}", path.display()),
                )
            })?;
            let transaction = database.begin_write().map_err(store_error)?;
            {
                let mut table = transaction.open_table(ITEMS).map_err(store_error)?;
                if table.is_empty().map_err(store_error)? {
                    let seed = Item {
                        id: 1,
                        name: NOSQL_SEED_ITEM.into(),
                        created_at: Utc::now(),
                    };
                    table
                        .insert(seed.id, to_json(&seed)?.as_str())
                        .map_err(store_error)?;
                }
            }
            transaction.commit().map_err(store_error)?;
            Ok(database)
        })
        .await
        .map_err(store_error)??;
        let database = Arc::new(database);
        let (writer, mut queue) = group_commit::Writer::new(Self::BACKEND.name);
        let writer_database = Arc::clone(&database);
        let writer_thread = std::thread::Builder::new()
            .name("redb-writer".into())
            .spawn(move || {
                while let Some(batch) = group_commit::next_batch_blocking(&mut queue) {
                    let result = Self::commit(&writer_database, &batch);
                    group_commit::answer(batch, result);
                }
            })
            .map_err(store_error)?;
        Ok(Self {
            database,
            path: file,
            writer: Some(writer),
            writer_thread: Some(writer_thread),
        })
    }

    fn commit(
        database: &Database,
        batch: &[group_commit::PendingWrite],
    ) -> Result<Vec<Item>, StoreError> {
        let transaction = database.begin_write().map_err(store_error)?;
        let mut items = Vec::with_capacity(batch.len());
        {
            let mut table = transaction.open_table(ITEMS).map_err(store_error)?;
            let last_id = table
                .last()
                .map_err(store_error)?
                .map_or(0, |(key, _)| key.value());
            for (id, write) in (last_id + 1..).zip(batch) {
                let item = Item {
                    id,
                    name: write.item.name.clone(),
                    created_at: Utc::now(),
                };
                table
                    .insert(item.id, to_json(&item)?.as_str())
                    .map_err(store_error)?;
                items.push(item);
            }
        }
        transaction.commit().map_err(store_error)?;
        Ok(items)
    }

    /// Copies every item as one read transaction sees them into a new database at `target`.
    fn copy_to(database: &Database, target: &Path) -> Result<(), StoreError> {
        let read = database.begin_read().map_err(store_error)?;
        let source = read.open_table(ITEMS).map_err(store_error)?;
        let copy = Database::create(target).map_err(store_error)?;
        let write = copy.begin_write().map_err(store_error)?;
        {
            let mut table = write.open_table(ITEMS).map_err(store_error)?;
            for entry in source.iter().map_err(store_error)? {
                let (key, value) = entry.map_err(store_error)?;
                table
                    .insert(key.value(), value.value())
                    .map_err(store_error)?;
            }
        }
        write.commit().map_err(store_error)
    }

    /// The writer, unless the store is closing.
    fn writer(&self) -> Result<&group_commit::Writer, StoreError> {
        self.writer
            .as_ref()
            .ok_or_else(|| StoreError::new(Self::BACKEND.name, "the store is closing"))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let database = Arc::clone(&self.database);
        tokio::task::spawn_blocking(move || operation(&database))
            .await
            .map_err(store_error)?
    }
}

impl ItemStore for RedbStore {
    fn backend(&self) -> Backend {
        Self::BACKEND
    }

    fn list(&self, limit: u32, before: Option<u64>) -> StoreFuture<'_, Vec<Item>> {
        Box::pin(self.blocking(move |database| {
            let transaction = database.begin_read().map_err(store_error)?;
            let table = transaction.open_table(ITEMS).map_err(store_error)?;
            let mut items = Vec::new();
            let ids = 0..before.unwrap_or(u64::MAX);
            for entry in table
                .range(ids)
                .map_err(store_error)?
                .rev()
                .take(limit as usize)
            {
                let (_, value) = entry.map_err(store_error)?;
                let item = serde_json::from_str(value.value()).map_err(|e| {
                    StoreError::new(
                        Self::BACKEND.name,
                        format!("a stored item is not valid JSON: {e}"),
                    )
                })?;
                items.push(item);
            }
            Ok(items)
        }))
    }

    fn create(&self, new_item: NewItem) -> StoreFuture<'_, Item> {
        Box::pin(async move { self.writer()?.write(new_item).await })
    }

    /// Opens the table in a read transaction and checks that the writer runs.
    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.writer()?.check_running()?;
            self.blocking(|database| {
                let transaction = database.begin_read().map_err(store_error)?;
                transaction.open_table(ITEMS).map_err(store_error)?;
                Ok(())
            })
            .await
        })
    }

    /// A new database holding what one read transaction sees: redb locks its file to one
    /// process and writes pages in place, so a copy of the file itself could be torn.
    fn snapshot(&self) -> StoreFuture<'_, Option<std::fs::File>> {
        let target = super::snapshot_path(&self.path);
        Box::pin(self.blocking(move |database| {
            if let Err(e) = Self::copy_to(database, &target) {
                let _ = std::fs::remove_file(&target);
                return Err(e);
            }
            super::open_snapshot(Self::BACKEND.name, &target).map(Some)
        }))
    }
}

fn store_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::new(RedbStore::BACKEND.name, error)
}

fn to_json(item: &Item) -> Result<String, StoreError> {
    serde_json::to_string(item).map_err(store_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Readiness rests on `ping`: once the writer thread is gone, every write would fail, so
    /// `ping` must fail too, and say why.
    #[tokio::test]
    async fn ping_fails_once_the_writer_has_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RedbStore::open(&dir.path().join("items.redb"))
            .await
            .unwrap();
        store.ping().await.expect("a fresh store answers");
        // A writer whose loop has ended, as after a panic of the writer thread.
        let (stopped, queue) = group_commit::Writer::new(RedbStore::BACKEND.name);
        drop(queue);
        store.writer = Some(stopped);
        let error = store
            .ping()
            .await
            .expect_err("ping succeeded with no writer");
        assert!(error.reason.contains("writer has stopped"), "{error}");
    }
}
