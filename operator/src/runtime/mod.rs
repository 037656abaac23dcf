//! The operator as a process: its health and metrics endpoints, leader election among its
//! replicas, the controller while it leads, and a clean stop on SIGTERM or a lost Lease.
//! `kea-operator run` is [`run`] with [`Options`] from flags and environment variables.

pub mod http;
pub mod leader;

use std::net::SocketAddr;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::controller::cache::Informers;
use crate::controller::{check_crd_installed, run_controller_with, start_informers};
use crate::runtime::leader::{LeaderElection, LeaderElector};
use crate::{ControllerConfig, Error, Metrics, run_controller};
use http::HttpState;

/// How the operator process runs: the flags of `kea-operator run` (see the `kea-cli` crate).
#[derive(Clone, Debug)]
pub struct Options {
    /// Address of /healthz, /readyz and /metrics.
    pub http_addr: SocketAddr,
    /// Elect a leader among replicas through a Lease; only the leader reconciles.
    pub leader_elect: bool,
    /// Name of the leader-election Lease.
    pub lease_name: String,
    /// Namespace of the Lease; `None`: the kubeconfig's (the pod's own in a cluster).
    pub lease_namespace: Option<String>,
    /// How long followers wait, after they last saw the Lease change, before taking it over.
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// Between two renewals, and between two looks of a follower at the Lease.
    pub retry_period: Duration,
    /// This replica's identity in the Lease; `None`: the hostname.
    pub identity: Option<String>,
    /// Watch only this namespace (all namespaces when `None`).
    pub watch_namespace: Option<String>,
    /// Reconciles running at once.
    pub concurrency: u16,
    /// What shapes the children (store images, NetworkPolicies on or off).
    pub settings: crate::children::Settings,
}

/// Runs the operator until SIGTERM/SIGINT, or until it loses the leader Lease (an error: the
/// pod restarts as a follower).
pub async fn run(args: Options) -> crate::Result<()> {
    let client = kube::Client::try_default().await?;

    // One stop signal for everything: SIGTERM/SIGINT, or the loss of the leader Lease.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(forward_signals(stop_tx.clone()));

    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let http_state = HttpState::new(registry);
    let http_server = tokio::spawn(http::serve(
        args.http_addr,
        http_state.clone(),
        stopped(stop_rx.clone()),
    ));

    check_crd_installed(&client, args.watch_namespace.as_deref()).await?;
    http_state.set_ready(true);

    let config = ControllerConfig {
        namespace: args.watch_namespace.clone(),
        concurrency: args.concurrency,
        instance: Some(identity(args.identity.clone())),
        settings: args.settings.clone(),
        ..Default::default()
    };

    let result = if args.leader_elect {
        let lease_namespace = args
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let settings = LeaderElection {
            lease_duration: args.lease_duration,
            renew_deadline: args.renew_deadline,
            retry_period: args.retry_period,
            ..LeaderElection::new(
                args.lease_name.clone(),
                lease_namespace,
                identity(args.identity.clone()),
            )
        };
        settings.check()?;
        let elector = LeaderElector::new(client.clone(), settings);
        // Followers watch too: their caches are warm when they take over.
        let informers = start_informers(&client, &config);
        lead(client, config, informers, metrics, elector, stop_tx).await
    } else {
        metrics.leader.set(1);
        run_controller(client, config, metrics, stopped(stop_rx)).await
    };
    // The HTTP server stops with the same signal; its own failure is only logged.
    if let Ok(Err(err)) = http_server.await {
        error!(error = %err, "the HTTP server failed");
    }
    result
}

/// Waits for the Lease, then runs the controller while this replica holds it. Returns `Ok`
/// after a stop through `stop_tx` (the Lease released, so another replica takes over at once)
/// and [`Error::LeadershipLost`] once the Lease could not be renewed: by then `stop_tx` told
/// everything else to stop too, and the controller, with its running reconciles, has been
/// stopped before any follower could take the Lease over.
pub async fn lead(
    client: kube::Client,
    config: ControllerConfig,
    informers: Informers,
    metrics: Metrics,
    elector: LeaderElector,
    stop_tx: watch::Sender<bool>,
) -> crate::Result<()> {
    let mut stop_rx = stop_tx.subscribe();
    let renewed_at = tokio::select! {
        renewed_at = elector.acquire() => renewed_at,
        _ = stop_rx.wait_for(|stop| *stop) => return Ok(()),
    };
    metrics.leader.set(1);
    let mut controller = tokio::spawn(run_controller_with(
        informers,
        client,
        config,
        metrics.clone(),
        stopped(stop_rx),
    ));
    let result = tokio::select! {
        lost = elector.keep_renewing(renewed_at) => {
            // Stop reconciling before another replica may start: running reconciles get half
            // of the margin to finish, then are dropped with their requests (a reconcile
            // waiting on an API server that does not answer would otherwise write whenever
            // it answers again). The process then exits non-zero and restarts as a follower.
            let _ = stop_tx.send(true);
            let grace = elector.stop_margin() / 2;
            if tokio::time::timeout(grace, &mut controller).await.is_err() {
                warn!(?grace, "running reconciles did not finish in time after the leader lease was lost; dropping them");
                controller.abort();
                let _ = controller.await;
            }
            Err(lost)
        }
        finished = &mut controller => {
            elector.release().await;
            finished.unwrap_or_else(|err| Err(Error::InvalidObject(format!("controller task failed: {err}"))))
        }
    };
    metrics.leader.set(0);
    result
}

/// Resolves once a stop was requested.
async fn stopped(mut stop_rx: watch::Receiver<bool>) {
    let _ = stop_rx.wait_for(|stop| *stop).await;
}

async fn forward_signals(stop_tx: watch::Sender<bool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => info!("SIGTERM received, shutting down"),
                    _ = tokio::signal::ctrl_c() => info!("SIGINT received, shutting down"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = stop_tx.send(true);
}

fn identity(explicit: Option<String>) -> String {
    explicit
        .filter(|id| !id.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| format!("kea-operator-{}", std::process::id()))
}
