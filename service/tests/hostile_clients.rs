//! The real binary against clients that misbehave: slow and idle connections,
//! floods, oversized heads, and clients that keep connections open across a
//! shutdown. Loopback only; every loop is bounded in count and time.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

mod common;

use std::time::{Duration, Instant};

use common::Service;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits until the server closes `stream` (EOF or reset), at most `within`.
async fn closed_by_server(mut stream: TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {} // an answer (e.g. 503 at the limit): keep reading
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn slow_and_idle_clients_are_disconnected_and_healthz_keeps_answering() {
    let service = Service::start(&[
        ("KEA_HEADER_TIMEOUT", "500ms"),
        ("KEA_MAX_CONNECTIONS", "64"),
    ])
    .await;
    let mut clients = Vec::new();
    for i in 0..150 {
        let mut stream = TcpStream::connect(service.address).await.unwrap();
        if i % 2 == 0 {
            // Slowloris: a head that never ends.
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .unwrap();
        }
        clients.push(stream);
    }
    let started = Instant::now();
    let closed = futures::future::join_all(
        clients
            .into_iter()
            .map(|stream| closed_by_server(stream, Duration::from_secs(5))),
    )
    .await;
    assert!(
        closed.iter().all(|c| *c),
        "{} of 150 slow or idle connections were still open after {:?}",
        closed.iter().filter(|c| !**c).count(),
        started.elapsed()
    );
    let health = reqwest::get(format!("{}/healthz", service.base))
        .await
        .unwrap();
    assert_eq!(health.status(), reqwest::StatusCode::OK);
}
