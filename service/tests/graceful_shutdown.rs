//! The real binary under SIGTERM: it turns unready, finishes every request in
//! flight, and exits 0.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The service's `kea_service_http_requests_in_flight` gauge.
async fn in_flight_requests(client: &reqwest::Client, base: &str) -> i64 {
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("kea_service_http_requests_in_flight "))
        .and_then(|value| value.trim().parse().ok())
        .expect("the in-flight gauge")
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kea-service"))
        .env("KEA_LISTEN", format!("127.0.0.1:{port}"))
        .env("KEA_DATA_DIR", dir.path())
        .env("KEA_SHUTDOWN_DELAY", "700ms")
        .env("KEA_DRAIN_TIMEOUT", "5s")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = kea_service::dependencies::http_client_builder()
        .build()
        .unwrap();
    // Probes open a connection each, as a kubelet's do: an idle pooled one would keep the
    // drain waiting until its deadline.
    let prober = kea_service::dependencies::http_client_builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();

    let started = Instant::now();
    while prober
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| r.status())
        .ok()
        != Some(reqwest::StatusCode::OK)
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the service did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Requests that are still running when SIGTERM arrives, and after the delay.
    let in_flight: Vec<_> = (0..20)
        .map(|_| {
            let request = client.get(format!("{base}/delay/1500")).send();
            tokio::spawn(async move { request.await.map(|r| r.status()) })
        })
        .collect();
    // SIGTERM once all of them are being answered (the metrics request counts itself).
    let started = Instant::now();
    while in_flight_requests(&prober, &base).await < 21 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the requests never got in flight"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    // During the shutdown delay the service still accepts connections (as a kubelet's probe
    // opens one each time), but says it is unready: every probe until then is answered, never
    // refused, and one of them says draining.
    let readiness = loop {
        let readiness = prober
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("the service answers during its shutdown delay");
        if readiness.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            break readiness;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never unready after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let body: serde_json::Value = readiness.json().await.unwrap();
    assert_eq!(body["draining"], true);

    for request in in_flight {
        assert_eq!(
            request.await.unwrap().unwrap(),
            reqwest::StatusCode::OK,
            "no request is dropped"
        );
    }
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        client.get(format!("{base}/healthz")).send().await.is_err(),
        "nothing listens after exit"
    );
}
