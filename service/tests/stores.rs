//! The server-backed stores against REAL servers: MariaDB for `/mysqldata`
//! and Redis for `/nosqldata` (`hack/backing-services.sh start`).

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use common::{backend_url, get, post_json};
use kea_service::config::Config;
use kea_service::dto::NewItem;
use kea_service::store::ItemStore;
use kea_service::store::redis::RedisStore;
use kea_service::store::sql::MySqlStore;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A key prefix of its own per test run, so runs never see each other's data.
fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("kea-test:{test}:{nanos}")
}

async fn exercise(store: Arc<dyn ItemStore>, seed_name: &str) {
    store.ping().await.expect("the server answers");
    // The seed item is the oldest: the only one before id 2, however many
    // items the shared server already holds.
    let seed = store.list(10, Some(2)).await.unwrap();
    assert_eq!(seed.len(), 1);
    assert_eq!(seed[0].id, 1);
    assert_eq!(seed[0].name, seed_name);

    let name = format!("item {}", unique_prefix("x"));
    let created = store.create(NewItem { name: name.clone() }).await.unwrap();
    assert!(created.id > 1);
    let unicode = store
        .create(NewItem {
            name: "Ærø ☕ 日本".into(),
        })
        .await
        .unwrap();
    assert!(unicode.id > created.id, "ids increase");

    let after = store.list(1000, None).await.unwrap();
    let found = after
        .iter()
        .find(|item| item.id == created.id)
        .expect("listed");
    assert_eq!(found.name, name);
    assert_eq!(
        found.created_at.timestamp_millis(),
        created.created_at.timestamp_millis()
    );
    assert!(after.iter().any(|item| item.name == "Ærø ☕ 日本"));
    assert!(
        after.windows(2).all(|pair| pair[0].id > pair[1].id),
        "newest first"
    );
    // Other tests may write to the same table at the same time.
    assert!(after[0].id >= unicode.id, "the newest item comes first");
    let newest = store.list(1, None).await.unwrap();
    assert_eq!(newest.len(), 1, "the limit applies");
    let page = store.list(1, Some(unicode.id)).await.unwrap();
    assert!(
        (created.id..unicode.id).contains(&page[0].id),
        "`before` gives the next page"
    );
}

#[tokio::test]
#[ignore = "needs MariaDB and Redis: hack/backing-services.sh start, then cargo test -- --ignored"]
async fn mysql_store_on_real_mariadb() {
    let url = backend_url("KEA_TEST_MYSQL_URL");
    let store = MySqlStore::connect_lazy(&url, TIMEOUT).unwrap();
    assert_eq!(store.backend().name, "mysql");
    exercise(Arc::new(store), "Test MySQL").await;
}

#[tokio::test]
#[ignore = "needs MariaDB and Redis: hack/backing-services.sh start, then cargo test -- --ignored"]
async fn redis_store_on_real_redis() {
    let url = backend_url("KEA_TEST_REDIS_URL");
    let store = RedisStore::new(&url, &unique_prefix("redis"), TIMEOUT).unwrap();
    assert_eq!(store.backend().name, "redis");
    exercise(Arc::new(store), "Test NoSQL").await;
}

#[tokio::test]
#[ignore = "needs MariaDB and Redis: hack/backing-services.sh start, then cargo test -- --ignored"]
async fn concurrent_creates_get_distinct_ids() {
    let mysql = backend_url("KEA_TEST_MYSQL_URL");
    let redis = backend_url("KEA_TEST_REDIS_URL");
    let stores: [Arc<dyn ItemStore>; 2] = [
        Arc::new(MySqlStore::connect_lazy(&mysql, TIMEOUT).unwrap()),
        Arc::new(RedisStore::new(&redis, &unique_prefix("concurrent"), TIMEOUT).unwrap()),
    ];
    for store in stores {
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    store
                        .create(NewItem {
                            name: format!("c{i}"),
                        })
                        .await
                })
            })
            .collect();
        let mut ids = Vec::new();
        for task in tasks {
            ids.push(task.await.unwrap().unwrap().id);
        }
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(
            ids.len(),
            20,
            "{}: every create got its own id",
            store.backend().name
        );
    }
}

#[tokio::test]
#[ignore = "needs MariaDB and Redis: hack/backing-services.sh start, then cargo test -- --ignored"]
async fn routes_serve_from_the_real_servers() {
    let mysql = backend_url("KEA_TEST_MYSQL_URL");
    let redis = backend_url("KEA_TEST_REDIS_URL");
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::with_data_dir(dir.path());
    config.database_url = Some(mysql);
    config.redis_url = Some(redis);
    config.redis_key_prefix = unique_prefix("routes");
    let (app, _) = kea_service::build_with_dependencies(&config, vec![])
        .await
        .unwrap();

    assert_eq!(get(&app, "/mysqldata").await.json()["store"], "mysql");
    assert_eq!(get(&app, "/nosqldata").await.json()["store"], "redis");
    for route in ["/mysqldata", "/nosqldata"] {
        let created = post_json(&app, route, r#"{"name": "through the route"}"#).await;
        assert_eq!(
            created.status,
            StatusCode::CREATED,
            "{route}: {}",
            created.text
        );
        let rejected = post_json(&app, route, r#"{"name": ""}"#).await;
        assert_eq!(rejected.status, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let ready = get(&app, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    assert!(
        !dir.path().join("relational.sqlite").exists(),
        "no embedded store is opened"
    );
}
