//! A TCP proxy in front of the API server that can cut its clients off (a network partition),
//! and a client that records its writes.
//!
//! While partitioned the proxy moves no byte in either direction: requests and answers wait,
//! as they would behind a link that drops packets while TCP keeps retrying. A connection that
//! its client closes during the partition is dropped with what it had sent, as when a client
//! gives up and resets its connections; the others resume when the partition heals.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::{Method, Request, StatusCode};
use kube::Client;
use kube::client::Body;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The proxy; it stops accepting when dropped.
pub struct PartitionProxy {
    addr: SocketAddr,
    partitioned: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl PartitionProxy {
    /// A proxy on a free loopback port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (partitioned, _) = watch::channel(false);
        let partition = partitioned.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(requests(client_read, server_write, partition.subscribe()));
                tokio::spawn(answers(server_read, client_write, partition.subscribe()));
            }
        });
        Self {
            addr,
            partitioned,
            accept,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts every connection off, open or future.
    pub fn partition(&self) {
        self.partitioned.send_replace(true);
    }

    /// Lets bytes through again.
    pub fn heal(&self) {
        self.partitioned.send_replace(false);
    }
}

impl Drop for PartitionProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Client to server. Reads even while partitioned, to notice a client that gives up.
async fn requests(
    mut client: OwnedReadHalf,
    mut server: OwnedWriteHalf,
    mut partitioned: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut held = Vec::new();
    loop {
        let read = tokio::select! {
            read = client.read(&mut buffer) => Some(read),
            healed = partitioned.wait_for(|cut| !*cut), if !held.is_empty() => {
                if healed.is_err() {
                    return;
                }
                None
            }
        };
        match read {
            Some(Ok(0) | Err(_)) => {
                if *partitioned.borrow() {
                    // Given up during the partition: what it sent never arrives.
                    return;
                }
                let _ = server.write_all(&held).await;
                let _ = server.shutdown().await;
                return;
            }
            Some(Ok(n)) => held.extend_from_slice(&buffer[..n]),
            None => {}
        }
        if !*partitioned.borrow() && !held.is_empty() {
            if server.write_all(&held).await.is_err() {
                return;
            }
            held.clear();
        }
    }
}

/// Server to client: nothing is read from the server while partitioned.
async fn answers(
    mut server: OwnedReadHalf,
    mut client: OwnedWriteHalf,
    mut partitioned: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if partitioned.wait_for(|cut| !*cut).await.is_err() {
            return;
        }
        let n = match server.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if partitioned.wait_for(|cut| !*cut).await.is_err() {
            return;
        }
        if client.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// What became of a write.
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    /// Sent, no answer yet.
    Waiting,
    /// Answered with this status.
    Answered(Instant, StatusCode),
    /// Dropped by the client (its future cancelled) or failed without an answer.
    Dropped(Instant),
}

/// One write request (anything but GET) a recording client sent.
#[derive(Clone, Debug)]
pub struct Write {
    pub method: Method,
    pub path: String,
    pub sent: Instant,
    pub outcome: Outcome,
}

impl Write {
    /// When the API server accepted it (answered 2xx), if it did.
    pub fn accepted_at(&self) -> Option<Instant> {
        match self.outcome {
            Outcome::Answered(at, status) if status.is_success() => Some(at),
            _ => None,
        }
    }
}

/// The writes of one client, shared with the test.
#[derive(Clone, Default)]
pub struct WriteLog(Arc<Mutex<Vec<Write>>>);

impl WriteLog {
    pub fn writes(&self) -> Vec<Write> {
        self.0.lock().unwrap().clone()
    }

    /// Writes sent and neither answered nor dropped yet.
    pub fn in_flight(&self) -> usize {
        self.writes()
            .iter()
            .filter(|w| matches!(w.outcome, Outcome::Waiting))
            .count()
    }

    /// Accepted writes answered after `instant`.
    pub fn accepted_after(&self, instant: Instant) -> Vec<Write> {
        self.writes()
            .into_iter()
            .filter(|w| w.accepted_at().is_some_and(|at| at > instant))
            .collect()
    }

    /// The first accepted write whose path contains `fragment`.
    pub fn first_accepted(&self, fragment: &str) -> Option<Write> {
        self.writes()
            .into_iter()
            .filter(|w| w.path.contains(fragment) && w.accepted_at().is_some())
            .min_by_key(|w| w.accepted_at())
    }

    fn begin(&self, method: &Method, path: &str) -> usize {
        let mut writes = self.0.lock().unwrap();
        writes.push(Write {
            method: method.clone(),
            path: path.to_owned(),
            sent: Instant::now(),
            outcome: Outcome::Waiting,
        });
        writes.len() - 1
    }

    fn settle(&self, index: usize, outcome: Outcome) {
        self.0.lock().unwrap()[index].outcome = outcome;
    }
}

/// A client of `config` that records each write it sends in `log`.
pub fn recording_client(config: kube::Config, log: WriteLog) -> Client {
    let namespace = config.default_namespace.clone();
    let inner = Client::try_from(config).unwrap();
    let service = tower::service_fn(move |request: Request<Body>| {
        let (inner, log) = (inner.clone(), log.clone());
        async move {
            if request.method() == Method::GET {
                return inner.send(request).await;
            }
            let index = log.begin(request.method(), request.uri().path());
            let mut pending = Pending {
                log: &log,
                index: Some(index),
            };
            let answer = inner.send(request).await;
            if let Ok(response) = &answer {
                log.settle(index, Outcome::Answered(Instant::now(), response.status()));
                pending.index = None;
            }
            answer
        }
    });
    Client::new(service, namespace)
}

/// Marks a write dropped (its future cancelled, or failed without an answer).
struct Pending<'a> {
    log: &'a WriteLog,
    index: Option<usize>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(index) = self.index {
            self.log.settle(index, Outcome::Dropped(Instant::now()));
        }
    }
}
