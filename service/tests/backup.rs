//! `GET /admin/backup/{store}` of the real binary: the copy of each embedded store is
//! consistent while writes go on (exactly the items up to one commit), a service started on
//! the copies serves them, the route is closed without the token and says what to fix, and
//! no snapshot file stays behind, not even when the client hangs up half-way.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Service, all_items};

const TOKEN: &str = "s3cret-token-for-the-test";
const ROUTES: [(&str, &str, &str); 2] = [
    ("sql", "/mysqldata", kea_contract::files::SQLITE),
    ("nosql", "/nosqldata", kea_contract::files::REDB),
];

async fn write(client: &reqwest::Client, base: &str, route: &str, name: &str) {
    let answer = client
        .post(format!("{base}{route}"))
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201, "{}", answer.text().await.unwrap());
}

/// The names of the files beside the stores whose names say they are snapshots.
fn snapshot_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".snapshot-"))
        .collect()
}

#[tokio::test]
async fn a_backup_taken_under_writes_is_one_commit_of_the_store_and_serves_again() {
    let service = Service::start(&[("KEA_ADMIN_TOKEN", TOKEN)]).await;
    let client = kea_service::dependencies::http_client_builder()
        .build()
        .unwrap();
    let base = service.base.clone();
    for (store, route, file) in ROUTES {
        for i in 0..300 {
            write(&client, &base, route, &format!("before-{i}")).await;
        }
        // Writers keep going while the copy is taken (bounded: 400 writes each).
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (client, base) = (client.clone(), base.clone());
                tokio::spawn(async move {
                    for i in 0..100 {
                        write(&client, &base, route, &format!("during-{w}-{i}")).await;
                    }
                })
            })
            .collect();
        let before = all_items(&client, &base, route).await;
        let answer = client
            .get(format!("{base}/admin/backup/{store}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{store}");
        let length: usize = answer.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let copy = answer.bytes().await.unwrap();
        assert_eq!(
            copy.len(),
            length,
            "{store}: the copy is as long as announced"
        );
        for writer in writers {
            writer.await.unwrap();
        }
        let after = all_items(&client, &base, route).await;
        assert_eq!(
            after.len(),
            1 + 300 + 400,
            "{store}: every write acknowledged"
        );

        // A service started on the copy serves exactly the items up to one commit: all that
        // were there before the request, none that were never written, no gap.
        let restored_dir = tempfile::tempdir().unwrap();
        std::fs::write(restored_dir.path().join(file), &copy).unwrap();
        let restored = Service::start_in(restored_dir, &[], std::process::Stdio::null()).await;
        let copied = all_items(&client, &restored.base, route).await;
        let last = *copied.keys().last().unwrap();
        let expected: BTreeMap<u64, String> =
            after.range(..=last).map(|(k, v)| (*k, v.clone())).collect();
        assert_eq!(
            copied, expected,
            "{store}: the copy is the store as of one commit"
        );
        assert!(
            before.keys().all(|id| copied.contains_key(id)),
            "{store}: the copy lacks items written before it was asked for"
        );
    }
    assert_eq!(snapshot_files(service.dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn the_backup_route_needs_the_token_and_a_known_store() {
    let client = kea_service::dependencies::http_client_builder()
        .build()
        .unwrap();
    let closed = Service::start(&[]).await;
    let answer = client
        .get(format!("{}/admin/backup/sql", closed.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404, "no token configured: no admin route");

    let service = Service::start(&[("KEA_ADMIN_TOKEN", TOKEN)]).await;
    let url = |store: &str| format!("{}/admin/backup/{store}", service.base);
    let cases = [
        (client.get(url("sql")), 401, "unauthorized"),
        (
            client.get(url("sql")).bearer_auth("wrong"),
            401,
            "unauthorized",
        ),
        (
            client.get(url("sql")).bearer_auth(format!("{TOKEN}x")),
            401,
            "unauthorized",
        ),
        (
            client.get(url("sql")).header("authorization", TOKEN),
            401,
            "unauthorized",
        ),
        (
            client.get(url("users")).bearer_auth(TOKEN),
            400,
            "bad_request",
        ),
    ];
    for (request, status, code) in cases {
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), status);
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            !body.to_string().contains(TOKEN),
            "an answer repeats the token"
        );
    }
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_copy_leaves_no_file_behind() {
    let service = Service::start(&[("KEA_ADMIN_TOKEN", TOKEN)]).await;
    let client = kea_service::dependencies::http_client_builder()
        .build()
        .unwrap();
    // Enough items for a copy of several chunks.
    let name = "x".repeat(190);
    for _ in 0..2000 {
        write(&client, &service.base, "/nosqldata", &name).await;
    }
    for store in ["sql", "nosql"] {
        let mut answer = client
            .get(format!("{}/admin/backup/{store}", service.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        answer.chunk().await.unwrap();
        drop(answer);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !snapshot_files(service.dir.path()).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "snapshot files left: {:?}",
            snapshot_files(service.dir.path())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
