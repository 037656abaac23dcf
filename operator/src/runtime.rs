//! The operator as a process: its health and metrics endpoints, leader election among its
//! replicas, the controller while it leads, and a clean stop on SIGTERM or a lost Lease.
//! `kea-operator run` is [`run`] with [`RunArgs`] from flags and environment variables.

use std::net::SocketAddr;
use std::time::Duration;

use clap::ValueEnum;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::cache::Informers;
use crate::http::{self, HttpState};
use crate::leader::{LeaderElection, LeaderElector};
use crate::reconcile::{check_crd_installed, run_controller_with, start_informers};
use crate::{ControllerConfig, Error, Metrics, run_controller};

/// How the operator process runs: flags of `kea-operator run`, each with its environment variable.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "KEA_HTTP_ADDR", default_value = "0.0.0.0:8081")]
    pub http_addr: SocketAddr,
    /// Elect a leader among replicas through a Lease; only the leader reconciles.
    #[arg(long, env = "KEA_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(long, env = "KEA_LEASE_NAME", default_value = "kea-operator")]
    pub lease_name: String,
    /// Namespace of the Lease; defaults to the pod's namespace, else the kubeconfig's.
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Seconds a follower waits, after it last saw the Lease change, before taking it over.
    #[arg(long, env = "KEA_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Seconds the leader keeps leading without a successful renewal (less than the lease
    /// duration).
    #[arg(long, env = "KEA_LEASE_RENEW_DEADLINE_SECONDS", default_value_t = 10)]
    pub lease_renew_deadline_seconds: u64,
    /// Seconds between two renewals, and between two looks of a follower at the Lease.
    #[arg(long, env = "KEA_LEASE_RETRY_PERIOD_SECONDS", default_value_t = 2)]
    pub lease_retry_period_seconds: u64,
    /// This replica's identity in the Lease; defaults to the pod name, else the hostname.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Watch only this namespace (all namespaces when unset).
    #[arg(long, env = "KEA_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Reconciles running at once.
    #[arg(long, env = "KEA_CONCURRENCY", default_value_t = 4)]
    pub concurrency: u16,
    /// Log format.
    #[arg(long, env = "KEA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Write a NetworkPolicy per Microservice and per store server, so that only declared calls
    /// get through. Turn off on clusters without a NetworkPolicy implementation.
    #[arg(long, env = "KEA_NETWORK_POLICIES", default_value_t = true, action = clap::ArgAction::Set)]
    pub network_policies: bool,
    /// Image of the MariaDB servers of `stores.sql.engine: mariadb`.
    #[arg(long, env = "KEA_MARIADB_IMAGE", default_value = crate::stores::DEFAULT_MARIADB_IMAGE)]
    pub mariadb_image: String,
    /// Image of the Redis servers of `stores.nosql.engine: redis`.
    #[arg(long, env = "KEA_REDIS_IMAGE", default_value = crate::stores::DEFAULT_REDIS_IMAGE)]
    pub redis_image: String,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable text, for a terminal.
    Text,
}

/// Runs the operator until SIGTERM/SIGINT, or until it loses the leader Lease (an error: the
/// pod restarts as a follower).
pub async fn run(args: RunArgs) -> crate::Result<()> {
    init_logging(args.log_format);
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
        settings: crate::builders::Settings {
            store_images: crate::stores::StoreImages {
                mariadb: args.mariadb_image.clone(),
                redis: args.redis_image.clone(),
            },
            network_policies: args.network_policies,
        },
        ..Default::default()
    };

    let result = if args.leader_elect {
        let lease_namespace = args
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let settings = LeaderElection {
            lease_duration: Duration::from_secs(args.lease_duration_seconds),
            renew_deadline: Duration::from_secs(args.lease_renew_deadline_seconds),
            retry_period: Duration::from_secs(args.lease_retry_period_seconds),
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

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
