//! `kea-operator run`: the flags (each with its environment variable) and the log setup of
//! the operator process, which is `kea_operator::runtime::run`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::ValueEnum;
use kea_operator::children::Settings;
use kea_operator::children::stores::StoreImages;
use kea_operator::runtime::{self, Options};

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
    #[arg(long, env = "KEA_MARIADB_IMAGE", default_value = kea_operator::children::stores::DEFAULT_MARIADB_IMAGE)]
    pub mariadb_image: String,
    /// Image of the Redis servers of `stores.nosql.engine: redis`.
    #[arg(long, env = "KEA_REDIS_IMAGE", default_value = kea_operator::children::stores::DEFAULT_REDIS_IMAGE)]
    pub redis_image: String,
    /// The operator's own image, which backs up and restores the embedded stores (`sqlite`,
    /// `redb`) with `kea-operator store-backup` / `store-restore`.
    #[arg(long, env = "KEA_TOOLS_IMAGE", default_value = kea_operator::children::stores::DEFAULT_TOOLS_IMAGE)]
    pub tools_image: String,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable text, for a terminal.
    Text,
}

impl RunArgs {
    /// What the operator process is told.
    pub fn options(&self) -> Options {
        Options {
            http_addr: self.http_addr,
            leader_elect: self.leader_elect,
            lease_name: self.lease_name.clone(),
            lease_namespace: self.lease_namespace.clone(),
            lease_duration: Duration::from_secs(self.lease_duration_seconds),
            renew_deadline: Duration::from_secs(self.lease_renew_deadline_seconds),
            retry_period: Duration::from_secs(self.lease_retry_period_seconds),
            identity: self.identity.clone(),
            watch_namespace: self.watch_namespace.clone(),
            concurrency: self.concurrency,
            settings: Settings {
                store_images: StoreImages {
                    mariadb: self.mariadb_image.clone(),
                    redis: self.redis_image.clone(),
                    tools: self.tools_image.clone(),
                },
                network_policies: self.network_policies,
                operator_namespace: self.lease_namespace.clone(),
            },
        }
    }
}

/// Sets up logging, then runs the operator until SIGTERM or a lost Lease.
pub async fn run(args: RunArgs) -> kea_operator::Result<()> {
    init_logging(args.log_format);
    runtime::run(args.options()).await
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
