//! Test helpers for the tests that need a real Kubernetes API server.
//!
//! The project's second test tier runs against a local control plane (etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler and kwok faking a node)
//! started by `hack/control-plane.sh up`. This crate connects to it and gives each
//! test its own fresh namespace, so tests can run in parallel without seeing each
//! other's objects:
//!
//! ```no_run
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kea_testkit::TestNamespace;
//!
//! # async fn example() -> Result<(), kea_testkit::Error> {
//! // Panics, saying how to start one, when no control plane runs: tests that call it are
//! // `#[ignore = "needs the control plane"]`, and run with `cargo test -- --ignored`.
//! let ns = TestNamespace::for_test("my-test").await;
//! let config_maps = ns.api::<ConfigMap>();
//! // ... create objects, then `kea_testkit::wait_for(&config_maps, "name", condition, timeout)`
//! ns.cleanup().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Where the kubeconfig is looked up: see [`kubeconfig_path`].

#![warn(missing_docs)]

pub mod microservices;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{Condition, await_condition, conditions};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Environment variable naming the kubeconfig to use; it wins over every other location.
pub const KUBECONFIG_ENV: &str = "KEA_KUBECONFIG";

/// Environment variable that, set to `1` (or `true`), keeps the namespaces of tests that
/// did not call [`TestNamespace::cleanup`] (typically failed ones) for inspection.
pub const KEEP_NAMESPACES_ENV: &str = "KEA_KEEP_NAMESPACES";

/// Label put on every namespace this crate creates, so that leftovers can be swept with
/// `kubectl delete namespace -l kea.dev/testkit=true`.
pub const NAMESPACE_LABEL: &str = "kea.dev/testkit";

/// What to do when no control plane answers.
pub const START_HINT: &str = "start it with hack/control-plane.sh up";

/// How long connecting to the control plane may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`TestNamespace::create`] waits for the namespace's `default` ServiceAccount.
const SERVICE_ACCOUNT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`TestNamespace::cleanup_and_wait`] waits for the namespace to be gone.
const NAMESPACE_DELETE_TIMEOUT: Duration = Duration::from_secs(90);

/// Errors of the test helpers. Each message says what was being done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No control plane answered through the kubeconfig (missing file, refused
    /// connection, timeout, bad credentials...).
    #[error("no Kubernetes control plane reachable through {kubeconfig}: {reason}; {START_HINT}")]
    Unreachable {
        /// The kubeconfig that was tried.
        kubeconfig: PathBuf,
        /// Why it did not work.
        reason: String,
    },
    /// A Kubernetes API call failed.
    #[error("{action} failed: {source}")]
    Kube {
        /// What was being done, e.g. "creating namespace foo".
        action: String,
        /// The error from the client.
        #[source]
        source: kube::Error,
    },
    /// A [`wait_for`] did not see its condition met in time.
    #[error("timed out after {timeout:?} waiting for {what}; {last_seen}")]
    Timeout {
        /// What was waited for, e.g. "Deployment ns/web to meet its condition".
        what: String,
        /// How long was waited.
        timeout: Duration,
        /// The state of the object when the wait gave up.
        last_seen: String,
    },
    /// A test's setup could not be made (e.g. the CRD does not build).
    #[error("test setup failed: {0}")]
    Setup(String),
    /// The watch behind a [`wait_for`] failed.
    #[error("watching while waiting for {what} failed: {source}")]
    Watch {
        /// What was waited for.
        what: String,
        /// The error from the watcher.
        #[source]
        source: kube::runtime::wait::Error,
    },
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The kubeconfig of the local control plane: `$KEA_KUBECONFIG` if set, else
/// `$KEA_RUN_DIR/kubeconfig`, else `$KEA_CACHE_DIR/run/kubeconfig`, else
/// `~/.cache/kea/run/kubeconfig` (the places `hack/control-plane.sh` writes it).
pub fn kubeconfig_path() -> PathBuf {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(path) = env(KUBECONFIG_ENV) {
        return path.into();
    }
    if let Some(run_dir) = env("KEA_RUN_DIR") {
        return PathBuf::from(run_dir).join("kubeconfig");
    }
    let cache_dir = env("KEA_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env("HOME").unwrap_or_else(|| ".".into())).join(".cache/kea")
    });
    cache_dir.join("run/kubeconfig")
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Reads the control plane's kubeconfig (see [`kubeconfig_path`]) into a client
/// configuration, without contacting the server.
pub async fn config() -> Result<kube::Config> {
    let path = kubeconfig_path();
    let unreachable = |reason: String| Error::Unreachable {
        kubeconfig: path.clone(),
        reason,
    };
    if !path.exists() {
        return Err(unreachable("the kubeconfig does not exist".into()));
    }
    let kubeconfig = Kubeconfig::read_from(&path).map_err(|e| unreachable(e.to_string()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| unreachable(e.to_string()))
}

/// A client for the control plane, checked to be reachable (it answers `/version`).
pub async fn client() -> Result<Client> {
    Ok(connect().await?.0)
}

async fn connect() -> Result<(Client, kube::Config)> {
    let config = config().await?;
    let unreachable = |reason: String| Error::Unreachable {
        kubeconfig: kubeconfig_path(),
        reason,
    };
    let client = Client::try_from(config.clone()).map_err(|e| unreachable(e.to_string()))?;
    match tokio::time::timeout(CONNECT_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(_)) => Ok((client, config)),
        Ok(Err(e)) => Err(unreachable(format!(
            "{} did not answer: {e}",
            config.cluster_url
        ))),
        Err(_) => Err(unreachable(format!(
            "{} did not answer within {CONNECT_TIMEOUT:?}",
            config.cluster_url
        ))),
    }
}

/// A uniquely named namespace for one test, deleted at the end of the test.
///
/// Call [`cleanup`](Self::cleanup) at the end of a passing test. If the test panics
/// before that, `Drop` requests the deletion best-effort (or keeps the namespace when
/// `KEA_KEEP_NAMESPACES=1`, to inspect it). Either way `hack/control-plane.sh down`
/// throws the whole store away.
pub struct TestNamespace {
    name: String,
    client: Client,
    config: kube::Config,
    cleaned_up: bool,
}

impl Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish()
    }
}

impl TestNamespace {
    /// Creates a namespace named `<prefix>-<unique suffix>` (labelled
    /// [`NAMESPACE_LABEL`]`=true`) and waits until its `default` ServiceAccount exists,
    /// so Pods can be created in it right away.
    ///
    /// Fails with [`Error::Unreachable`] (whose message says how to start the control
    /// plane) when no control plane answers.
    pub async fn create(prefix: &str) -> Result<Self> {
        let (client, config) = connect().await?;
        Self::create_with(client, config, prefix, BTreeMap::new()).await
    }

    /// Like [`create`](Self::create), in the cluster of `config` (e.g. a kind cluster's
    /// rather than the local control plane's), with `labels` added to [`NAMESPACE_LABEL`]
    /// (e.g. Pod Security labels).
    pub async fn create_in(
        config: kube::Config,
        prefix: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Self> {
        let client = Client::try_from(config.clone()).map_err(|source| Error::Kube {
            action: format!("connecting to {}", config.cluster_url),
            source,
        })?;
        Self::create_with(client, config, prefix, labels).await
    }

    async fn create_with(
        client: Client,
        config: kube::Config,
        prefix: &str,
        mut labels: BTreeMap<String, String>,
    ) -> Result<Self> {
        labels.insert(NAMESPACE_LABEL.to_string(), "true".to_string());
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let mut attempt = 0;
        let name = loop {
            let name = unique_name(prefix);
            let namespace = Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(labels.clone()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            };
            match namespaces.create(&PostParams::default(), &namespace).await {
                Ok(_) => break name,
                // A leftover of an earlier run with the same name: pick another one.
                Err(kube::Error::Api(status)) if status.code == 409 && attempt < 5 => attempt += 1,
                Err(source) => {
                    return Err(Error::Kube {
                        action: format!("creating namespace {name}"),
                        source,
                    });
                }
            }
        };
        let namespace = Self {
            name,
            client,
            config,
            cleaned_up: false,
        };
        let service_accounts = namespace.api::<ServiceAccount>();
        wait_for(
            &service_accounts,
            "default",
            conditions::is_created(),
            SERVICE_ACCOUNT_TIMEOUT,
        )
        .await?;
        Ok(namespace)
    }

    /// Like [`create`](Self::create), for a test: the tests that need a control plane are
    /// `#[ignore]`d, so a plain `cargo test` lists them as ignored; one that runs (`cargo test
    /// -- --ignored`, as `hack/test.sh` does) needs the control plane, and fails without it.
    ///
    /// # Panics
    ///
    /// When no control plane is reachable, or when the namespace cannot be created: both are
    /// test failures, with what to do in the message.
    pub async fn for_test(prefix: &str) -> Self {
        match Self::create(prefix).await {
            Ok(namespace) => namespace,
            Err(error @ Error::Unreachable { .. }) => panic!(
                "test '{prefix}' needs a control plane: {error}\n\
                 start one with `hack/control-plane.sh up`, or run every tier with `hack/test.sh`"
            ),
            Err(error) => panic!("test namespace for '{prefix}': {error}"),
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A client for the control plane (a cheap clone of the namespace's own).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// An [`Api`] for a namespaced resource kind, scoped to this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace: the API marks it Terminating and the namespace
    /// controller removes its contents in the background (a few seconds). Does not
    /// wait for that, so tests do not pay for it; see
    /// [`cleanup_and_wait`](Self::cleanup_and_wait).
    pub async fn cleanup(mut self) -> Result<()> {
        self.cleaned_up = true;
        self.delete().await.map(|_| ())
    }

    /// Deletes the namespace and waits until it is gone, i.e. the namespace
    /// controller has removed everything in it.
    pub async fn cleanup_and_wait(mut self) -> Result<()> {
        self.cleaned_up = true;
        let Some(uid) = self.delete().await? else {
            return Ok(());
        };
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        wait_for(
            &namespaces,
            &self.name,
            conditions::is_deleted(&uid),
            NAMESPACE_DELETE_TIMEOUT,
        )
        .await
        .map(|_| ())
    }

    /// Requests the deletion; returns the uid of the namespace while it is being
    /// deleted, `None` if it is already gone.
    async fn delete(&self) -> Result<Option<String>> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        match namespaces
            .delete(&self.name, &DeleteParams::background())
            .await
        {
            // Right: deleted at once, nothing left to wait for.
            Ok(deleting) => Ok(deleting.left().and_then(|namespace| namespace.uid())),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
            Err(source) => Err(Error::Kube {
                action: format!("deleting namespace {}", self.name),
                source,
            }),
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.cleaned_up {
            return;
        }
        if env_flag(KEEP_NAMESPACES_ENV) {
            eprintln!(
                "kea-testkit: keeping namespace {} ({KEEP_NAMESPACES_ENV} is set)",
                self.name
            );
            return;
        }
        // Drop cannot await, and the test's runtime may be single-threaded and about to
        // end: delete from a thread of our own, on its own runtime and its own client.
        let config = self.config.clone();
        let name = self.name.clone();
        let deleted = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let client = Client::try_from(config).map_err(|e| e.to_string())?;
                let namespaces: Api<Namespace> = Api::all(client);
                let params = DeleteParams::background();
                let delete = namespaces.delete(&name, &params);
                match tokio::time::timeout(Duration::from_secs(10), delete).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(kube::Error::Api(status))) if status.code == 404 => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("timed out".into()),
                }
            })
        })
        .join();
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("kea-testkit: could not delete namespace {}: {e}", self.name),
            Err(_) => eprintln!("kea-testkit: deleting namespace {} panicked", self.name),
        }
    }
}

/// `<prefix>-<pid>-<time>-<counter>`, cut to a valid namespace name (a DNS label).
fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut prefix: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    prefix.truncate(36);
    let prefix = prefix.trim_matches('-');
    let prefix = if prefix.is_empty() { "test" } else { prefix };
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}-{:x}-{:x}-{count:x}",
        std::process::id(),
        millis & 0xff_ffff
    )
}

/// Waits until the object `name` of `api` meets `condition` (a
/// [`kube::runtime::wait::Condition`], e.g. one of [`kube::runtime::wait::conditions`] or
/// a closure `|obj: Option<&K>| -> bool`), for at most `timeout`.
///
/// Returns the object as it was when the condition held (`None` if it held for an
/// absent object). On timeout the error names the kind, namespace and name waited for
/// and shows the object's last status.
pub async fn wait_for<K, C>(
    api: &Api<K>,
    name: &str,
    condition: C,
    timeout: Duration,
) -> Result<Option<K>>
where
    K: Resource + Clone + Debug + Send + DeserializeOwned + Serialize + 'static,
    K::DynamicType: Default,
    C: Condition<K>,
{
    let what = format!("{} to meet its condition", describe(api, name));
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, condition)).await {
        Ok(Ok(object)) => Ok(object),
        Ok(Err(source)) => Err(Error::Watch { what, source }),
        Err(_) => Err(Error::Timeout {
            what,
            timeout,
            last_seen: last_seen(api, name).await,
        }),
    }
}

/// Waits until the object `name` of `api` is gone, for at most `timeout`. Succeeds at
/// once when it does not exist; a new object created under the same name in the
/// meantime does not count as the old one.
pub async fn wait_for_deletion<K>(api: &Api<K>, name: &str, timeout: Duration) -> Result<()>
where
    K: Resource + Clone + Debug + Send + DeserializeOwned + Serialize + 'static,
    K::DynamicType: Default,
{
    let object = api.get_opt(name).await.map_err(|source| Error::Kube {
        action: format!("reading {}", describe(api, name)),
        source,
    })?;
    let Some(object) = object else {
        return Ok(());
    };
    let uid = object.uid().unwrap_or_default();
    let what = format!("{} to be deleted", describe(api, name));
    let gone = await_condition(api.clone(), name, conditions::is_deleted(&uid));
    match tokio::time::timeout(timeout, gone).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(source)) => Err(Error::Watch { what, source }),
        Err(_) => Err(Error::Timeout {
            what,
            timeout,
            last_seen: last_seen(api, name).await,
        }),
    }
}

/// Waits until the objects of `api` that match `selector` (a label selector, `""` for all)
/// meet `condition`, judged on the whole list after each change a watch reports; for at
/// most `timeout`. Returns the objects as they were when the condition held. On timeout the
/// error names what was waited for and says what `condition` last saw, through `describe`.
pub async fn wait_for_list<K>(
    api: &Api<K>,
    selector: &str,
    what: &str,
    condition: impl Fn(&[K]) -> bool,
    describe: impl Fn(&[K]) -> String,
    timeout: Duration,
) -> Result<Vec<K>>
where
    K: Resource + Clone + Debug + Send + Sync + DeserializeOwned + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, reflector, watcher};

    let (reader, writer) = reflector::store();
    let config = watcher::Config::default().labels(selector);
    let mut events =
        std::pin::pin!(reflector(writer, watcher(api.clone(), config)).default_backoff());
    let objects = |reader: &reflector::Store<K>| -> Vec<K> {
        let mut objects: Vec<K> = reader.state().iter().map(|o| (**o).clone()).collect();
        objects.sort_by_key(|o| o.meta().name.clone());
        objects
    };
    let waited = tokio::time::timeout(timeout, async {
        // Judged only once the initial list is complete, so that "none match yet" is not
        // read off a half-filled store; then after every change.
        let mut listed = false;
        while let Some(event) = events.next().await {
            listed |= matches!(event, Ok(watcher::Event::InitDone));
            if listed {
                let now = objects(&reader);
                if condition(&now) {
                    return Ok(now);
                }
            }
        }
        Err(format!("the watch for {what} ended"))
    })
    .await;
    match waited {
        Ok(Ok(objects)) => Ok(objects),
        Ok(Err(ended)) => Err(Error::Timeout {
            what: what.to_string(),
            timeout,
            last_seen: ended,
        }),
        Err(_) => Err(Error::Timeout {
            what: what.to_string(),
            timeout,
            last_seen: describe(&objects(&reader)),
        }),
    }
}

/// A condition for any object with standard `status.conditions`: holds when the
/// condition of type `type_` has status `status` (e.g. `("Available", "True")` for a
/// Deployment, or `("Ready", "True")` for a custom resource that follows the convention).
pub fn has_status_condition<K: Serialize>(
    type_: &str,
    status: &str,
) -> impl Fn(Option<&K>) -> bool + use<K> {
    let (type_, status) = (type_.to_string(), status.to_string());
    move |object: Option<&K>| {
        let Some(value) = object.and_then(|o| serde_json::to_value(o).ok()) else {
            return false;
        };
        value
            .pointer("/status/conditions")
            .and_then(|c| c.as_array())
            .is_some_and(|conditions| {
                conditions.iter().any(|c| {
                    c.get("type").and_then(|t| t.as_str()) == Some(type_.as_str())
                        && c.get("status").and_then(|s| s.as_str()) == Some(status.as_str())
                })
            })
    }
}

/// "Deployment ns/name" (or "Namespace name" for cluster-scoped kinds).
fn describe<K>(api: &Api<K>, name: &str) -> String
where
    K: Resource,
    K::DynamicType: Default,
{
    let dynamic_type = K::DynamicType::default();
    let kind = K::kind(&dynamic_type);
    match api.namespace() {
        Some(namespace) => format!("{kind} {namespace}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// The object's current status, for timeout messages.
async fn last_seen<K>(api: &Api<K>, name: &str) -> String
where
    K: Resource + Clone + Debug + DeserializeOwned + Serialize,
{
    const MAX: usize = 2000;
    match api.get_opt(name).await {
        Ok(None) => "it does not exist".into(),
        Ok(Some(object)) => {
            let value = serde_json::to_value(&object).unwrap_or_default();
            let mut shown = match value.get("status") {
                Some(status) => format!("last seen status: {status}"),
                None => "it exists (it has no status)".into(),
            };
            if let Some(deleting) = value.pointer("/metadata/deletionTimestamp") {
                shown.push_str(&format!(", being deleted since {deleting}"));
            }
            if shown.chars().count() > MAX {
                shown = shown.chars().take(MAX).chain("...".chars()).collect();
            }
            shown
        }
        Err(e) => format!("could not read it afterwards: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_dns_labels_and_differ() {
        let a = unique_name("Control_Plane test!");
        let b = unique_name("Control_Plane test!");
        assert_ne!(a, b);
        for name in [&a, &b, &unique_name(&"x".repeat(100)), &unique_name("--")] {
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.starts_with('-') && !name.ends_with('-'), "{name}");
        }
        assert!(a.starts_with("control-plane-test-"), "{a}");
    }

    #[test]
    fn status_condition_matches_type_and_status() {
        use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus};
        let deployment = |status: &str| Deployment {
            status: Some(DeploymentStatus {
                conditions: Some(vec![DeploymentCondition {
                    type_: "Available".into(),
                    status: status.into(),
                    ..DeploymentCondition::default()
                }]),
                ..DeploymentStatus::default()
            }),
            ..Deployment::default()
        };
        let available = has_status_condition::<Deployment>("Available", "True");
        assert!(available(Some(&deployment("True"))));
        assert!(!available(Some(&deployment("False"))));
        assert!(!available(Some(&Deployment::default())));
        assert!(!available(None));
    }
}
