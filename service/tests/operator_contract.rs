//! The contract between the operator and the service, checked on both real sides: the
//! container the operator renders for a Microservice (its environment, port, volumes and
//! probes) starts the real kea-service binary, which then listens where the probes and the
//! Service look and answers them. A variable renamed on one side only, a probe path or a
//! port that drifted, fails here.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, HTTPGetAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kea_operator::children::{Settings, build_children};
use kea_operator::{Microservice, MicroserviceSpec};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The container's port that `port` (a number or a named port) points at.
fn resolve(container: &Container, port: &IntOrString) -> i32 {
    match port {
        IntOrString::Int(number) => *number,
        IntOrString::String(name) => {
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .unwrap_or_else(|| panic!("no container port named {name}"))
                .container_port
        }
    }
}

/// The rendered container's environment, as the kubelet would set it, with each volume's
/// mount path replaced by a directory of this test (the pod's filesystem here).
fn environment(
    container: &Container,
    volumes: &BTreeMap<String, tempfile::TempDir>,
) -> Vec<(String, String)> {
    container
        .env
        .iter()
        .flatten()
        .map(|var| {
            assert!(
                var.value_from.is_none(),
                "{} comes from an object; this Microservice has none",
                var.name
            );
            let value = var.value.clone().unwrap_or_default();
            let value = volumes
                .iter()
                .find(|(mount, _)| value == **mount)
                .map_or(value, |(_, dir)| dir.path().display().to_string());
            (var.name.clone(), value)
        })
        .collect()
}

async fn get(port: i32, path: &str) -> Option<reqwest::StatusCode> {
    let url = format!("http://127.0.0.1:{port}{path}");
    kea_service::dependencies::http_client_builder()
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .ok()
        .map(|r| r.status())
}

#[tokio::test]
async fn the_rendered_container_starts_the_service_that_its_probes_and_service_reach() {
    let port = i32::from(free_port());
    let mut spec = MicroserviceSpec::with_image("kea.dev/kea-service:dev");
    spec.port = port;
    spec.depends_on = vec![kea_operator::api::Dependency {
        name: "users".into(),
    }];
    // Embedded stores: their volumes and variables are part of the contract too.
    spec.stores = Some(
        serde_json::from_value(serde_json::json!({
            "sql": {"engine": "sqlite"}, "nosql": {"engine": "redb"}
        }))
        .unwrap(),
    );
    let mut ms = Microservice::new("orders", spec);
    ms.metadata.namespace = Some("shop".into());
    let children = build_children(&ms, &BTreeMap::new(), &Settings::default()).unwrap();
    let pod = children.deployment.spec.unwrap().template.spec.unwrap();
    let container = pod.containers[0].clone();

    let volumes: BTreeMap<String, tempfile::TempDir> = container
        .volume_mounts
        .iter()
        .flatten()
        .map(|mount| (mount.mount_path.clone(), tempfile::tempdir().unwrap()))
        .collect();
    let env = environment(&container, &volumes);
    assert!(
        env.iter()
            .any(|(name, value)| name == "USERS_URL" && value.starts_with("http://users.shop.svc")),
        "the dependency's URL: {env:?}"
    );
    // The image's entrypoint is the binary; the container may add arguments.
    let mut service = Command::new(env!("CARGO_BIN_EXE_kea-service"))
        .args(container.args.iter().flatten())
        .env_clear()
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let probes = [
        ("startup", container.startup_probe.as_ref()),
        ("liveness", container.liveness_probe.as_ref()),
        ("readiness", container.readiness_probe.as_ref()),
    ];
    let started = Instant::now();
    for (kind, probe) in probes {
        let Some(probe) = probe else { continue };
        let HTTPGetAction { path, port, .. } = probe.http_get.clone().unwrap_or_else(|| {
            panic!("the {kind} probe is not an HTTP GET: {probe:?}");
        });
        let (path, port) = (path.unwrap_or_default(), resolve(&container, &port));
        loop {
            if get(port, &path).await == Some(reqwest::StatusCode::OK) {
                break;
            }
            if started.elapsed() > Duration::from_secs(20) || service.try_wait().unwrap().is_some()
            {
                let _ = service.kill();
                let output = service.wait_with_output().unwrap();
                panic!(
                    "the {kind} probe (GET {path} on port {port}) never passed; the service said:\n{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The Service sends its traffic to the port the service listens on.
    let service_port = &children.service.spec.unwrap().ports.unwrap()[0];
    let target = resolve(&container, service_port.target_port.as_ref().unwrap());
    let answer = kea_service::dependencies::http_client_builder()
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{target}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.text().await.unwrap(), "Hello KEA!");
    // The stores are the embedded ones, with their files in the volumes the operator mounts.
    let metrics = kea_service::dependencies::http_client_builder()
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{target}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for store in [
        r#"kea_service_store_up{store="relational",backend="sqlite"} 1"#,
        r#"kea_service_store_up{store="nosql",backend="redb"} 1"#,
    ] {
        assert!(metrics.contains(store), "{store} not in\n{metrics}");
    }
    for variable in ["KEA_SQL_DATA_DIR", "KEA_NOSQL_DATA_DIR"] {
        let mount = container
            .env
            .iter()
            .flatten()
            .find(|var| var.name == variable)
            .and_then(|var| var.value.clone())
            .unwrap_or_else(|| panic!("{variable} not set"));
        let dir = volumes
            .get(&mount)
            .unwrap_or_else(|| panic!("{variable}={mount} is not a volume"));
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_some(),
            "nothing written to the volume at {mount}"
        );
    }
    let _ = service.kill();
    let _ = service.wait();
}
