//! Helpers shared by the service's integration tests.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use kea_service::config::Config;
use kea_service::routes::App;
use tower::ServiceExt;

/// The response of one request: status, content type and body text.
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// The `error.code` of a JSON error answer.
    pub fn error_code(&self) -> String {
        assert!(
            self.content_type.starts_with("application/json"),
            "error answers are JSON, got {:?}: {}",
            self.content_type,
            self.text
        );
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// Sends one request through the router, with no network.
pub async fn send(app: &App, request: Request<Body>) -> Answer {
    let response = app
        .clone()
        .oneshot(request)
        .await
        .expect("the router is infallible");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Answer {
        status,
        content_type,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub async fn get(app: &App, uri: &str) -> Answer {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

pub async fn post_json(app: &App, uri: &str, body: &str) -> Answer {
    let request = Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    send(app, request).await
}

/// The service with embedded stores in a fresh temporary directory.
pub async fn embedded_app() -> (App, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (app, _) = kea_service::build_with_dependencies(&Config::with_data_dir(dir.path()), vec![])
        .await
        .unwrap();
    (app, dir)
}

/// Every item of a route of the service at `base`, by id, walking the pages.
pub async fn all_items(
    client: &reqwest::Client,
    base: &str,
    route: &str,
) -> std::collections::BTreeMap<u64, String> {
    let mut items = std::collections::BTreeMap::new();
    let mut uri = format!("{base}{route}?limit=1000");
    for _ in 0..1000 {
        let page: serde_json::Value = client.get(&uri).send().await.unwrap().json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            items.insert(
                item["id"].as_u64().unwrap(),
                item["name"].as_str().unwrap().to_owned(),
            );
        }
        match page["next_before"].as_u64() {
            Some(before) => uri = format!("{base}{route}?limit=1000&before={before}"),
            None => return items,
        }
    }
    panic!("more than 1000 pages");
}

/// A real backing server's URL from the environment (set by `hack/backing-services.sh env`).
/// The tests that call it are `#[ignore]`d: one that runs (`cargo test -- --ignored`, as in
/// `hack/test.sh`) fails without the server.
pub fn backend_url(variable: &str) -> String {
    match std::env::var(variable) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{variable} is not set: start the servers with `hack/backing-services.sh start` and \
             `eval \"$(hack/backing-services.sh env)\"`, or run every tier with `hack/test.sh`"
        ),
    }
}

/// The real binary, listening on a free loopback port with embedded stores in
/// a temporary directory; killed when dropped.
pub struct Service {
    pub child: std::process::Child,
    pub address: std::net::SocketAddr,
    pub base: String,
    pub dir: tempfile::TempDir,
}

impl Service {
    /// Starts the binary with extra environment variables and waits (at most
    /// 20 s) until `/healthz` answers.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, env, std::process::Stdio::null()).await
    }

    /// [`Service::start`] in a given data directory, with stdout (the log) sent to `log`.
    pub async fn start_in(
        dir: tempfile::TempDir,
        env: &[(&str, &str)],
        log: impl Into<std::process::Stdio>,
    ) -> Self {
        Self::launch(
            std::process::Command::new(env!("CARGO_BIN_EXE_kea-service")),
            dir,
            env,
            log,
        )
        .await
    }

    /// [`Service::start_in`] under `strace`, which writes the calls of `syscalls` (comma
    /// separated) of every thread to `trace`.
    pub async fn start_traced(
        dir: tempfile::TempDir,
        env: &[(&str, &str)],
        syscalls: &str,
        trace: &std::path::Path,
    ) -> Self {
        let mut strace = std::process::Command::new("strace");
        strace
            .args(["-f", "-qq", "-e"])
            .arg(format!("trace={syscalls}"))
            .arg("-o")
            .arg(trace)
            .arg(env!("CARGO_BIN_EXE_kea-service"));
        Self::launch(strace, dir, env, std::process::Stdio::null()).await
    }

    async fn launch(
        mut command: std::process::Command,
        dir: tempfile::TempDir,
        env: &[(&str, &str)],
        log: impl Into<std::process::Stdio>,
    ) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        command
            .env("KEA_LISTEN", address.to_string())
            .env("KEA_DATA_DIR", dir.path())
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .stdout(log)
            .stderr(std::process::Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("starting {command:?}: {err}"));
        let service = Self {
            child,
            address,
            base: format!("http://{address}"),
            dir,
        };
        let client = kea_service::dependencies::http_client_builder()
            .build()
            .unwrap();
        let started = std::time::Instant::now();
        loop {
            let answer = client.get(format!("{}/healthz", service.base)).send().await;
            if answer.map(|r| r.status().is_success()).unwrap_or(false) {
                break;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "the service did not start"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        service
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Resident memory of the process now, in KiB (Linux).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends raw bytes on a new connection and reads until the server closes it
/// or `within` passes; returns what was read.
pub async fn raw_exchange(
    address: std::net::SocketAddr,
    request: &[u8],
    within: std::time::Duration,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    // The server may answer and close before the whole request is written.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(within, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Reads one HTTP/1.1 answer with a `content-length` from a stream: the
/// head (lower-cased) and the body.
pub async fn read_answer(stream: &mut tokio::net::TcpStream) -> Option<(String, String)> {
    use tokio::io::AsyncReadExt;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            while buffer.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buffer.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]).into_owned();
            return Some((head, body));
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}
