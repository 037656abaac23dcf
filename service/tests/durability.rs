//! Durable writes, on both embedded stores, of the real binary:
//! - killed with SIGKILL under concurrent writes, it loses none it acknowledged. This proves
//!   that nothing acknowledged waits in the process's memory, but not that it reached the
//!   disk: the kernel's page cache outlives the process, so a store that never called fsync
//!   would pass it too;
//! - hence the second test: the disk is flushed (fsync/fdatasync, counted by strace) at least
//!   once per acknowledged write when writes come one at a time, so each answer waited for the
//!   disk and a power cut after it loses nothing.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Service;

#[tokio::test]
async fn sigkill_under_concurrent_writes_loses_no_acknowledged_write() {
    for route in ["/mysqldata", "/nosqldata"] {
        let data = tempfile::tempdir().unwrap();
        let data_dir = data.path().to_str().unwrap().to_owned();
        let env = [("KEA_DATA_DIR", data_dir.as_str())];
        let mut service = Service::start_in(
            tempfile::tempdir().unwrap(),
            &env,
            std::process::Stdio::null(),
        )
        .await;
        let client = kea_service::dependencies::http_client_builder()
            .build()
            .unwrap();
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let writers: Vec<_> = (0..16)
            .map(|writer| {
                let (client, acknowledged) = (client.clone(), Arc::clone(&acknowledged));
                let url = format!("{}{route}", service.base);
                tokio::spawn(async move {
                    for i in 0..20_000 {
                        let name = format!("w{writer}-{i}");
                        let Ok(answer) = client
                            .post(&url)
                            .json(&serde_json::json!({ "name": name }))
                            .send()
                            .await
                        else {
                            return;
                        };
                        if answer.status() != reqwest::StatusCode::CREATED {
                            return;
                        }
                        let Ok(item) = answer.json::<serde_json::Value>().await else {
                            return;
                        };
                        acknowledged
                            .lock()
                            .unwrap()
                            .push((item["id"].as_u64().unwrap(), name));
                    }
                })
            })
            .collect();
        let started = Instant::now();
        while acknowledged.lock().unwrap().len() < 500 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{route}: writes too slow"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        service.child.kill().unwrap(); // SIGKILL, with writes in flight
        service.child.wait().unwrap();
        for writer in writers {
            writer.await.unwrap();
        }
        let acknowledged = acknowledged.lock().unwrap().clone();

        let restarted = Service::start_in(
            tempfile::tempdir().unwrap(),
            &env,
            std::process::Stdio::null(),
        )
        .await;
        let stored = common::all_items(&client, &restarted.base, route).await;
        let lost: Vec<_> = acknowledged
            .iter()
            .filter(|(id, name)| stored.get(id) != Some(name))
            .collect();
        assert!(
            lost.is_empty(),
            "{route}: {} of {} acknowledged writes lost, e.g. {:?}",
            lost.len(),
            acknowledged.len(),
            &lost[..lost.len().min(5)]
        );
        drop(data);
    }
}

/// One at a time, each write is acknowledged only after a flush of its store to the disk.
#[tokio::test]
async fn each_acknowledged_write_waited_for_the_disk() {
    const WRITES: usize = 40;
    for route in ["/mysqldata", "/nosqldata"] {
        let data = tempfile::tempdir().unwrap();
        let data_dir = data.path().to_str().unwrap().to_owned();
        let trace = data.path().join("trace");
        let service = Service::start_traced(
            tempfile::tempdir().unwrap(),
            &[("KEA_DATA_DIR", data_dir.as_str())],
            "fsync,fdatasync",
            &trace,
        )
        .await;
        let client = kea_service::dependencies::http_client_builder()
            .build()
            .unwrap();
        let flushes = || {
            std::fs::read_to_string(&trace)
                .unwrap_or_default()
                .lines()
                .filter(|line| line.contains("fsync(") || line.contains("fdatasync("))
                .count()
        };
        let before = flushes();
        for i in 0..WRITES {
            let answer = client
                .post(format!("{}{route}", service.base))
                .json(&serde_json::json!({ "name": format!("item-{i}") }))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), reqwest::StatusCode::CREATED, "{route}");
        }
        // strace writes each call as it returns; the last write's flush is in the file by the
        // time its answer came.
        let during = flushes() - before;
        eprintln!("{route}: {during} flushes for {WRITES} acknowledged writes");
        assert!(
            during >= WRITES,
            "{route}: {during} flushes (fsync/fdatasync) for {WRITES} writes acknowledged one at a \
             time: some answers did not wait for the disk"
        );
        drop(service);
        drop(data);
    }
}
