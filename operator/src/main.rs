//! The `kea-operator` command: runs the controller (`run`, the default), or prints the CRD
//! (`crd`), the children of a Microservice file (`render FILE`), the RBAC rules (`rbac`) or a
//! PlantUML diagram of the Microservices in a namespace (`diagram`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use kea_operator::cache::Informers;
use kea_operator::http::{self, HttpState};
use kea_operator::leader::{LeaderElection, LeaderElector};
use kea_operator::reconcile::{check_crd_installed, run_controller_with, start_informers};
use kea_operator::{ControllerConfig, Error, Metrics, crdgen, rbac, render, run_controller};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{error, info};

/// The kea operator: reconciles Microservice custom resources (kea.dev/v1alpha1).
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand, `run` with these arguments.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller against the cluster of the current kubeconfig or service account.
    Run(RunArgs),
    /// Print the CustomResourceDefinition as YAML.
    Crd,
    /// Print the children (Deployment, Service, ...) of the Microservices in a YAML file.
    Render {
        /// A YAML file with one or more Microservices.
        file: PathBuf,
    },
    /// Print the ClusterRole and the leader-election Role the operator needs.
    Rbac {
        /// Namespace of the leader-election Role.
        #[arg(long, default_value = "kea-system")]
        namespace: String,
        /// For an operator confined to this namespace: its permissions there as a Role, and a
        /// ClusterRole with the cluster-scoped reads only.
        #[arg(long)]
        watch_namespace: Option<String>,
    },
    /// Print the Microservices of a namespace, their dependencies and stores as PlantUML.
    Diagram(kea_operator::diagram::DiagramArgs),
    /// GET an http:// URL; exit 0 on a 2xx answer (the chart's `helm test` pod runs this).
    Probe {
        /// e.g. http://kea-operator-metrics.kea-system.svc:8081/readyz
        url: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5)]
        timeout_seconds: u64,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "KEA_HTTP_ADDR", default_value = "0.0.0.0:8081")]
    http_addr: SocketAddr,
    /// Elect a leader among replicas through a Lease; only the leader reconciles.
    #[arg(long, env = "KEA_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(long, env = "KEA_LEASE_NAME", default_value = "kea-operator")]
    lease_name: String,
    /// Namespace of the Lease; defaults to the pod's namespace, else the kubeconfig's.
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Seconds a follower waits, after it last saw the Lease change, before taking it over.
    #[arg(long, env = "KEA_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Seconds the leader keeps leading without a successful renewal (less than the lease
    /// duration).
    #[arg(long, env = "KEA_LEASE_RENEW_DEADLINE_SECONDS", default_value_t = 10)]
    lease_renew_deadline_seconds: u64,
    /// Seconds between two renewals, and between two looks of a follower at the Lease.
    #[arg(long, env = "KEA_LEASE_RETRY_PERIOD_SECONDS", default_value_t = 2)]
    lease_retry_period_seconds: u64,
    /// This replica's identity in the Lease; defaults to the pod name, else the hostname.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Watch only this namespace (all namespaces when unset).
    #[arg(long, env = "KEA_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Reconciles running at once.
    #[arg(long, env = "KEA_CONCURRENCY", default_value_t = 4)]
    concurrency: u16,
    /// Log format.
    #[arg(long, env = "KEA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
    /// Write a NetworkPolicy per Microservice and per store server, so that only declared calls
    /// get through. Turn off on clusters without a NetworkPolicy implementation.
    #[arg(long, env = "KEA_NETWORK_POLICIES", default_value_t = true, action = clap::ArgAction::Set)]
    network_policies: bool,
    /// Image of the MariaDB servers of `stores.sql.engine: mariadb`.
    #[arg(long, env = "KEA_MARIADB_IMAGE", default_value = kea_operator::stores::DEFAULT_MARIADB_IMAGE)]
    mariadb_image: String,
    /// Image of the Redis servers of `stores.nosql.engine: redis`.
    #[arg(long, env = "KEA_REDIS_IMAGE", default_value = kea_operator::stores::DEFAULT_REDIS_IMAGE)]
    redis_image: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => run(cli.run).await,
        Some(Command::Run(args)) => run(args).await,
        Some(Command::Crd) => crdgen::crd_yaml().map(|yaml| print!("{yaml}")),
        Some(Command::Render { file }) => std::fs::read_to_string(&file)
            .map_err(Error::from)
            .and_then(|input| render::render_yaml(&input))
            .map(|yaml| print!("{yaml}")),
        Some(Command::Rbac {
            namespace,
            watch_namespace,
        }) => print_rbac(&namespace, watch_namespace.as_deref()),
        Some(Command::Diagram(args)) => kea_operator::diagram::run(&args).await,
        Some(Command::Probe {
            url,
            timeout_seconds,
        }) => probe(&url, Duration::from_secs(timeout_seconds)).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Logging may not be set up (subcommands): say it on stderr too.
            error!(error = %err, "kea-operator failed");
            eprintln!("kea-operator: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn probe(url: &str, timeout: Duration) -> kea_operator::Result<()> {
    let status = http::probe(url, timeout).await?;
    println!("{url}: {status}");
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(Error::Io(std::io::Error::other(format!(
            "{url} answered {status}"
        ))))
    }
}

fn print_rbac(namespace: &str, watch_namespace: Option<&str>) -> kea_operator::Result<()> {
    let documents = match watch_namespace {
        None => vec![
            serde_json::to_value(rbac::cluster_role())?,
            serde_json::to_value(rbac::lease_role(namespace))?,
        ],
        Some(watched) => vec![
            serde_json::to_value(rbac::cluster_scoped_role())?,
            serde_json::to_value(rbac::watched_namespace_role(watched))?,
            serde_json::to_value(rbac::lease_role(namespace))?,
        ],
    };
    print!("{}", render::to_yaml_stream(&documents)?);
    Ok(())
}

async fn run(args: RunArgs) -> kea_operator::Result<()> {
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
        settings: kea_operator::builders::Settings {
            store_images: kea_operator::stores::StoreImages {
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
        run_as_leader(
            client, config, informers, metrics, elector, stop_tx, stop_rx,
        )
        .await
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

async fn run_as_leader(
    client: kube::Client,
    config: ControllerConfig,
    informers: Informers,
    metrics: Metrics,
    elector: LeaderElector,
    stop_tx: watch::Sender<bool>,
    mut stop_rx: watch::Receiver<bool>,
) -> kea_operator::Result<()> {
    tokio::select! {
        () = elector.acquire() => {}
        _ = stop_rx.wait_for(|stop| *stop) => return Ok(()),
    }
    metrics.leader.set(1);
    let mut controller = tokio::spawn(run_controller_with(
        informers,
        client,
        config,
        metrics.clone(),
        stopped(stop_rx),
    ));
    let result = tokio::select! {
        lost = elector.keep_renewing() => {
            // Stop reconciling before another replica starts: finish running reconciles, exit
            // non-zero, and let the pod restart as a follower.
            let _ = stop_tx.send(true);
            let _ = controller.await;
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
