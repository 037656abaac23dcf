//! The real binary against clients that misbehave: slow and idle connections,
//! floods, oversized heads, and clients that keep connections open across a
//! shutdown. Loopback only; every loop is bounded in count and time.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

mod common;

use std::time::{Duration, Instant};

use common::{Service, raw_exchange, read_answer};
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
    let health = kea_service::dependencies::http_client_builder()
        .build()
        .unwrap()
        .get(format!("{}/healthz", service.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), reqwest::StatusCode::OK);
}

#[tokio::test]
async fn oversized_heads_and_uris_get_json_errors() {
    let service = Service::start(&[]).await;
    let within = Duration::from_secs(5);
    let check = |answer: &str, status: &str, code: &str| {
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer, ""));
        let head = head.to_lowercase();
        assert!(head.starts_with(&format!("http/1.1 {status}")), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], code, "{body}");
        assert!(!json["error"]["message"].as_str().unwrap().is_empty());
    };
    // A 390 KB header, as one client sent it.
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(390 * 1024)
    );
    let answer = raw_exchange(service.address, big_header.as_bytes(), within).await;
    check(&answer, "431", "headers_too_large");
    // Just over the 16 KiB head limit, in many headers.
    let many: String = (0..200)
        .map(|i| format!("X-H{i}: {}\r\n", "b".repeat(80)))
        .collect();
    let answer = raw_exchange(
        service.address,
        format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
        within,
    )
    .await;
    check(&answer, "431", "headers_too_large");
    // A URI over 8 KiB that fits in the head limit.
    let long_uri = format!(
        "GET /status/200?{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "q".repeat(10 * 1024)
    );
    let answer = raw_exchange(service.address, long_uri.as_bytes(), within).await;
    check(&answer, "414", "uri_too_long");
    // A malformed request line.
    let answer = raw_exchange(service.address, b"GET / HTTP/1.1\x01\r\n\r\n", within).await;
    check(&answer, "400", "bad_request");
    // A head just under the limit is served.
    let fine = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Fine: {}\r\n\r\n",
        "c".repeat(15 * 1024)
    );
    let answer = raw_exchange(service.address, fine.as_bytes(), within).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Sends a keep-alive `GET path` on `stream` and reads the answer.
async fn keep_alive_get(stream: &mut TcpStream, path: &str) -> Option<(String, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    tokio::time::timeout(Duration::from_secs(5), read_answer(stream))
        .await
        .ok()?
}

#[tokio::test]
async fn keep_alive_clients_are_told_to_close_and_answered_during_shutdown() {
    let mut service = Service::start(&[
        ("KEA_SHUTDOWN_DELAY", "1500ms"),
        ("KEA_DRAIN_TIMEOUT", "5s"),
        ("KEA_HEADER_TIMEOUT", "5s"),
    ])
    .await;
    let mut during_delay = TcpStream::connect(service.address).await.unwrap();
    let mut after_delay = TcpStream::connect(service.address).await.unwrap();
    for stream in [&mut during_delay, &mut after_delay] {
        let (head, _) = keep_alive_get(stream, "/").await.unwrap();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
    }

    service.terminate();
    let client = kea_service::dependencies::http_client_builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let started = Instant::now();
    for attempt in 0.. {
        let ready = client.get(format!("{}/readyz", service.base)).send().await;
        if ready.map(|r| r.status()).ok() == Some(reqwest::StatusCode::SERVICE_UNAVAILABLE) {
            break;
        }
        assert!(
            attempt < 200 && started.elapsed() < Duration::from_secs(5),
            "never unready"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // During the delay: answered, told to close, and closed.
    let (head, body) = keep_alive_get(&mut during_delay, "/")
        .await
        .expect("answered");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "Hello KEA!");
    assert!(head.contains("connection: close"), "{head}");
    assert!(closed_by_server(during_delay, Duration::from_secs(2)).await);

    // Once the listener is closed, a request on a connection opened before is still answered.
    for attempt in 0.. {
        if TcpStream::connect(service.address).await.is_err() {
            break;
        }
        assert!(
            attempt < 500 && started.elapsed() < Duration::from_secs(8),
            "still accepting"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (head, _) = keep_alive_get(&mut after_delay, "/healthz")
        .await
        .expect("a request on an open keep-alive connection after the delay is answered");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");

    let exit = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(status) = service.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the process exits once its connections are closed");
    assert!(exit.success(), "{exit:?}");
}

/// Starts a 3 s request and returns it once it holds the service's only concurrency slot
/// (a probe is shed). A probe that arrives first takes the slot and has the slow request
/// shed instead: then the slow request is sent again.
async fn hold_the_only_slot(
    client: &reqwest::Client,
    base: &str,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    for _ in 0..100 {
        let slow = tokio::spawn(client.get(format!("{base}/delay/3000")).send());
        for _ in 0..1000 {
            assert!(
                Instant::now() < deadline,
                "the slow request never held the slot"
            );
            let probe = client.get(format!("{base}/healthz")).send().await.unwrap();
            if probe.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                return slow;
            }
            if slow.is_finished() {
                break;
            }
        }
    }
    panic!("the slow request never held the slot");
}

#[tokio::test]
async fn shed_requests_are_logged_in_aggregate() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("service.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let service = Service::start_in(dir, &[("KEA_MAX_CONCURRENCY", "1")], log).await;
    let client = kea_service::dependencies::http_client_builder()
        .build()
        .unwrap();
    let slow = hold_the_only_slot(&client, &service.base).await;
    let mut shed = 0;
    let started = Instant::now();
    for _ in 0..400 {
        let answer = client
            .get(format!("{}/", service.base))
            .send()
            .await
            .unwrap();
        if answer.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            shed += 1;
        }
        if started.elapsed() > Duration::from_millis(2500) {
            break;
        }
    }
    assert!(shed >= 100, "only {shed} requests were shed");
    assert_eq!(
        slow.await.unwrap().unwrap().status(),
        reqwest::StatusCode::OK
    );
    let lines = std::fs::read_to_string(&log_path)
        .unwrap()
        .lines()
        .filter(|line| line.contains("overloaded"))
        .count();
    assert!(
        lines <= 4,
        "{lines} log lines for {shed} shed requests in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn memory_returns_after_a_flood_of_connections() {
    // The header timeout is generous: on a busy machine 2,000 connects can
    // take seconds, and a connection closed for slowness is not an answer.
    let service = Service::start(&[("KEA_HEADER_TIMEOUT", "15s")]).await;
    let baseline = service.rss_kib();
    // 2,000 connections at once, each sending its request (with a large
    // header) as soon as it is connected, and all kept open until measured.
    let header = "h".repeat(12 * 1024);
    let request = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Pad: {header}\r\n\r\n");
    let connections = futures::future::join_all((0..2000).map(|_| async {
        let mut stream = TcpStream::connect(service.address).await.ok()?;
        let answer = tokio::time::timeout(Duration::from_secs(20), async {
            stream.write_all(request.as_bytes()).await.ok()?;
            read_answer(&mut stream).await
        })
        .await
        .ok()
        .flatten();
        Some((stream, answer.is_some()))
    }))
    .await;
    let answered = connections
        .iter()
        .filter(|connection| matches!(connection, Some((_, true))))
        .count();
    assert!(
        answered >= 1000,
        "only {answered} of 2000 connections answered"
    );
    let peak = service.rss_kib();
    drop(connections);

    // Once the clients are gone the memory goes back (allowing 16 MiB of slack).
    let started = Instant::now();
    let mut now = service.rss_kib();
    for _ in 0..600 {
        if now <= baseline + 16 * 1024 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        now = service.rss_kib();
    }
    assert!(
        now <= baseline + 16 * 1024,
        "RSS {now} KiB after the flood (baseline {baseline} KiB, peak {peak} KiB, waited {:?})",
        started.elapsed()
    );
}
