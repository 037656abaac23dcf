//! The NoSQL store behind `/nosqldata` when `REDIS_URL` is set.
//!
//! Layout, under a configurable key prefix (default `kea`):
//! - `<prefix>:items` — hash of item id to the item's JSON;
//! - `<prefix>:item-ids` — sorted set of ids (score = id), for ordered, bounded lists;
//! - `<prefix>:next-id` — counter that hands out ids.

use std::time::Duration;

use chrono::Utc;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::{Backend, ItemStore, NOSQL_SEED_ITEM, StoreError, StoreFuture, with_timeout};
use crate::dto::{Item, NewItem};

/// A Redis server reached through a reconnecting connection manager, created
/// on first use so that the service starts while Redis is down.
pub struct RedisStore {
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
    timeout: Duration,
    items_key: String,
    ids_key: String,
    next_id_key: String,
}

impl RedisStore {
    const BACKEND: Backend = Backend {
        name: "redis",
        shared: true,
    };

    /// Validates the URL; connects on first use.
    pub fn new(url: &str, key_prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| {
            StoreError::new(
                Self::BACKEND.name,
                format!("REDIS_URL is not a valid redis:// URL ({e})"),
            )
        })?;
        Ok(Self {
            client,
            connection: OnceCell::new(),
            timeout,
            items_key: format!("{key_prefix}:items"),
            ids_key: format!("{key_prefix}:item-ids"),
            next_id_key: format!("{key_prefix}:next-id"),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        self.connection
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1);
                let mut connection =
                    ConnectionManager::new_with_config(self.client.clone(), config)
                        .await
                        .map_err(|e| StoreError::new(Self::BACKEND.name, e))?;
                self.seed(&mut connection).await?;
                Ok(connection)
            })
            .await
            .cloned()
    }

    /// Writes the seed item once: whoever sets the counter first writes item 1.
    async fn seed(&self, connection: &mut ConnectionManager) -> Result<(), StoreError> {
        let claimed: bool = redis::cmd("SET")
            .arg(&self.next_id_key)
            .arg(1)
            .arg("NX")
            .query_async::<Option<String>>(connection)
            .await
            .map_err(|e| StoreError::new(Self::BACKEND.name, e))?
            .is_some();
        if claimed {
            let item = Item {
                id: 1,
                name: NOSQL_SEED_ITEM.into(),
                created_at: Utc::now(),
            };
            self.write(connection, &item).await?;
        }
        Ok(())
    }

    async fn write(
        &self,
        connection: &mut ConnectionManager,
        item: &Item,
    ) -> Result<(), StoreError> {
        let json =
            serde_json::to_string(item).map_err(|e| StoreError::new(Self::BACKEND.name, e))?;
        redis::pipe()
            .atomic()
            .hset(&self.items_key, item.id, json)
            .zadd(&self.ids_key, item.id, item.id)
            .query_async::<()>(connection)
            .await
            .map_err(|e| StoreError::new(Self::BACKEND.name, e))
    }
}

impl ItemStore for RedisStore {
    fn backend(&self) -> Backend {
        Self::BACKEND
    }

    fn list(&self, limit: u32, before: Option<u64>) -> StoreFuture<'_, Vec<Item>> {
        Box::pin(with_timeout(Self::BACKEND.name, self.timeout, async move {
            let mut connection = self.connection().await?;
            let max = before.map_or_else(|| "+inf".to_owned(), |id| format!("({id}"));
            let ids: Vec<u64> = redis::cmd("ZREVRANGEBYSCORE")
                .arg(&self.ids_key)
                .arg(max)
                .arg("-inf")
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query_async(&mut connection)
                .await
                .map_err(|e| StoreError::new(Self::BACKEND.name, e))?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let values: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(&self.items_key)
                .arg(&ids)
                .query_async(&mut connection)
                .await
                .map_err(|e| StoreError::new(Self::BACKEND.name, e))?;
            values
                .into_iter()
                .flatten()
                .map(|json| {
                    serde_json::from_str(&json).map_err(|e| {
                        StoreError::new(
                            Self::BACKEND.name,
                            format!("a stored item is not valid JSON: {e}"),
                        )
                    })
                })
                .collect()
        }))
    }

    fn create(&self, item: NewItem) -> StoreFuture<'_, Item> {
        Box::pin(with_timeout(Self::BACKEND.name, self.timeout, async move {
            let mut connection = self.connection().await?;
            let id: u64 = connection
                .incr(&self.next_id_key, 1)
                .await
                .map_err(|e| StoreError::new(Self::BACKEND.name, e))?;
            let item = Item {
                id,
                name: item.name,
                created_at: Utc::now(),
            };
            self.write(&mut connection, &item).await?;
            Ok(item)
        }))
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(with_timeout(Self::BACKEND.name, self.timeout, async move {
            let mut connection = self.connection().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .map_err(|e| StoreError::new(Self::BACKEND.name, e))?;
            Ok(())
        }))
    }
}
