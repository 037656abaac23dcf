//! "Let it fail" across real sockets: a dependency that answers, one that is
//! down, the circuit breaker opening, and the dependency recovering.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{embedded_app, get};
use kea_service::config::Config;
use kea_service::dependencies::DependencyTarget;
use tokio::net::TcpListener;

/// Serves a kea-service with embedded stores on an ephemeral loopback port.
async fn serve_kea_on(listener: TcpListener) -> tempfile::TempDir {
    let (app, dir) = embedded_app().await;
    tokio::spawn(async move { axum::serve(listener, tower::make::Shared::new(app)).await });
    dir
}

/// A loopback port with nothing listening on it.
async fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test]
async fn dependencies_are_reported_without_failing_the_caller() {
    let up_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = up_listener.local_addr().unwrap();
    let _up_dir = serve_kea_on(up_listener).await;
    let down = free_port().await;

    let dir = tempfile::tempdir().unwrap();
    let targets = vec![
        DependencyTarget {
            name: "users".into(),
            url: format!("http://{up}"),
        },
        DependencyTarget {
            name: "orders".into(),
            url: format!("http://{down}"),
        },
    ];
    let mut config = Config::with_data_dir(dir.path());
    config.dependency_timeout = Duration::from_millis(500);
    config.circuit_open_for = Duration::from_millis(500);
    let (app, _) = kea_service::build_with_dependencies(&config, targets)
        .await
        .unwrap();

    let report = get(&app, "/api/dependencies").await;
    assert_eq!(report.status, 200, "the report itself never fails");
    let report = report.json();
    let users = &report["dependencies"][0];
    assert_eq!(users["name"], "users");
    assert_eq!(users["up"], true, "{report}");
    assert_eq!(users["answer"], "Hello KEA!");
    assert_eq!(users["attempts"], 1);
    let orders = &report["dependencies"][1];
    assert_eq!(orders["up"], false);
    assert_eq!(orders["attempts"], 3, "bounded retries");
    assert!(
        orders["error"].as_str().unwrap().contains("refused"),
        "{orders}"
    );
    assert_eq!(
        orders["circuit"], "closed",
        "one failed call does not open the circuit"
    );

    // Two more failed calls open the circuit: then calls are not even made.
    get(&app, "/api/dependencies").await;
    let third = get(&app, "/api/dependencies").await.json();
    let opened = Instant::now();
    assert_eq!(third["dependencies"][1]["circuit"], "open");
    let rejected = get(&app, "/api/dependencies").await.json();
    assert_eq!(rejected["dependencies"][1]["attempts"], 0);
    assert_eq!(
        rejected["dependencies"][0]["up"], true,
        "the healthy one is unaffected"
    );

    // The dependency comes back: calls stay rejected until the open period is over, then a
    // trial call closes the circuit.
    let _orders_dir = serve_kea_on(TcpListener::bind(down).await.unwrap()).await;
    let recovered = loop {
        let report = get(&app, "/api/dependencies").await.json();
        let orders = &report["dependencies"][1];
        if orders["circuit"] != "open" {
            break report;
        }
        assert_eq!(
            orders["attempts"], 0,
            "an open circuit makes no call: {report}"
        );
        assert!(
            opened.elapsed() < Duration::from_secs(10),
            "the circuit stayed open: {report}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        opened.elapsed() >= config.circuit_open_for,
        "the circuit let a call through after {:?}, before its open period",
        opened.elapsed()
    );
    assert_eq!(recovered["dependencies"][1]["up"], true, "{recovered}");
    assert_eq!(recovered["dependencies"][1]["circuit"], "closed");
    assert_eq!(recovered["dependencies"][1]["attempts"], 1);
}
