//! The one error type of the operator.

/// Everything that can go wrong in the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),

    /// The `Microservice` CRD is not installed in the cluster.
    #[error(
        "CRD microservices.kea.dev is not installed: kubectl apply -f deploy/00-crd.yaml \
         (or: cargo run -p kea-cli -- crd | kubectl apply -f -)"
    )]
    CrdNotInstalled,

    /// A Microservice misses data the operator needs (e.g. a namespace or a uid).
    #[error("invalid Microservice: {0}")]
    InvalidObject(String),

    /// A spec breaks a rule that the CRD schema cannot express.
    #[error("invalid Microservice spec: {0}")]
    InvalidSpec(String),

    /// A child the operator wants to create exists already and belongs to someone else.
    #[error("{0}")]
    Conflict(String),

    /// Turning an object into or out of YAML or JSON failed.
    #[error("serialization failed: {0}")]
    Serialization(String),

    /// Reading or writing a file or socket failed.
    #[error("I/O failed: {0}")]
    Io(#[from] std::io::Error),

    /// A watch feeding the controller ended (the process is stopping).
    #[error("the watch of {0} stopped")]
    WatchStopped(String),

    /// This process lost the leader Lease while it was running the controller.
    #[error("lost the leader lease {0}")]
    LeadershipLost(String),
}

impl Error {
    /// A short, fixed label for the `errors` metric (bounded cardinality).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::CrdNotInstalled => "crd_not_installed",
            Self::InvalidObject(_) => "invalid_object",
            Self::InvalidSpec(_) => "invalid_spec",
            Self::Conflict(_) => "conflict",
            Self::Serialization(_) => "serialization",
            Self::Io(_) => "io",
            Self::WatchStopped(_) => "watch_stopped",
            Self::LeadershipLost(_) => "leadership_lost",
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Self::Serialization(err.to_string())
    }
}

/// The operator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
