//! The `kea-operator` command: runs the controller (`run`, the default), or prints the CRD
//! (`crd`), the children of a Microservice file (`render FILE`), the RBAC rules (`rbac`) or a
//! PlantUML diagram of the Microservices in a namespace (`diagram`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kea_cli::probe::probe;
use kea_cli::run::{RunArgs, run};
use kea_cli::{diagram, manifests, render};
use kea_operator::Error;
use tracing::error;

/// The kea operator: reconciles Microservice custom resources (kea.dev/v1alpha1).
#[derive(Parser, Debug)]
#[command(
    name = "kea-operator",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
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
        /// Only the rules, by what they are for (the Helm chart's `files/rbac-rules.yaml`).
        #[arg(long, conflicts_with = "watch_namespace")]
        rules: bool,
    },
    /// Print the Microservices of a namespace, their dependencies and stores as PlantUML.
    Diagram(kea_cli::diagram::DiagramArgs),
    /// GET an http:// URL; exit 0 on a 2xx answer (the chart's `helm test` pod runs this).
    Probe {
        /// e.g. http://kea-operator-metrics.kea-system.svc:8081/readyz
        url: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5)]
        timeout_seconds: u64,
    },
    /// Back up an embedded store (SQLite, redb) from its service: what its backup Job runs.
    StoreBackup(kea_cli::store_backup::BackupArgs),
    /// Put the newest backup in place as an embedded store's file, unless the file exists:
    /// what the restore init container of the service's pod runs.
    StoreRestore(kea_cli::store_backup::RestoreArgs),
    /// Upload the newest backup of a folder to a bucket and keep the newest there: what the
    /// backup Job of a server store with an S3 target runs after the dump.
    StoreUpload(kea_cli::store_backup::UploadArgs),
    /// Download a backup from a bucket, unless the store's volume holds data: what runs
    /// before the restore of a store with `restoreFrom.s3`.
    StoreFetch(kea_cli::store_backup::FetchArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => run(cli.run).await,
        Some(Command::Run(args)) => run(args).await,
        Some(Command::Crd) => manifests::crd_yaml().map(|yaml| print!("{yaml}")),
        Some(Command::Render { file }) => std::fs::read_to_string(&file)
            .map_err(Error::from)
            .and_then(|input| render::render_yaml(&input))
            .map(|yaml| print!("{yaml}")),
        Some(Command::Rbac { rules: true, .. }) => {
            manifests::rbac_rules_yaml().map(|yaml| print!("{yaml}"))
        }
        Some(Command::Rbac {
            namespace,
            watch_namespace,
            ..
        }) => manifests::rbac_yaml(&namespace, watch_namespace.as_deref())
            .map(|yaml| print!("{yaml}")),
        Some(Command::Diagram(args)) => diagram::run(&args).await,
        Some(Command::Probe {
            url,
            timeout_seconds,
        }) => probe(&url, Duration::from_secs(timeout_seconds)).await,
        Some(Command::StoreBackup(args)) => kea_cli::store_backup::backup(&args).await,
        Some(Command::StoreRestore(args)) => kea_cli::store_backup::restore(&args),
        Some(Command::StoreUpload(args)) => kea_cli::store_backup::upload_newest(&args).await,
        Some(Command::StoreFetch(args)) => kea_cli::store_backup::fetch_for_restore(&args).await,
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
