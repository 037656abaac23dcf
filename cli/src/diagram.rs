//! `kea-operator diagram`: the Microservices of one namespace as the cluster reports them, printed
//! as a PlantUML component diagram.
//!
//! One component per Microservice with its URL, its Service and its ready/desired pods; an arrow
//! per `dependsOn` entry, labelled with the `<NAME>_URL` variable that carries it; a database per
//! store of `spec.stores`, drawn as that Microservice's own (its server or volume, its state,
//! what happens to it on delete; never a credential); for a store not declared there, a
//! database when the Microservice is pointed at one through `DATABASE_URL` or `REDIS_URL`, and
//! otherwise a note for the ephemeral stores it keeps embedded in `/data` (SQLite, redb).
//!
//! [`render_plantuml`] is a pure function of the objects read, so it is tested without a
//! cluster; [`run`] reads them with the kube client and prints the result.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::{EnvVar, Pod, Service};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use kea_contract::env;
use kea_operator::api::{DeletionPolicy, Microservice, conditions};
use kea_operator::children::meta::{self, MANAGER, labels};
use kea_operator::children::stores::{
    self, EmbeddedEngine, Engine, PlannedStore, Role, ServerEngine,
};
use kea_operator::children::workload::{self, ReplicaControl};
use kea_operator::controller::check_crd_installed;
use kea_operator::error::{Error, Result};
use kea_operator::status::find_condition;

/// Arguments of `kea-operator diagram`.
#[derive(clap::Args, Debug, Clone)]
pub struct DiagramArgs {
    /// Namespace to draw; defaults to the namespace of the current kubeconfig context.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
}

/// Reads the Microservices, Services and pods of a namespace and prints the diagram.
pub async fn run(args: &DiagramArgs) -> Result<()> {
    let client = Client::try_default().await?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    print!("{}", from_cluster(&client, &namespace).await?);
    Ok(())
}

/// The diagram of `namespace` as the cluster shows it now.
pub async fn from_cluster(client: &Client, namespace: &str) -> Result<String> {
    check_crd_installed(client, Some(namespace)).await?;
    let managed = ListParams::default().labels(&format!("{}={MANAGER}", labels::MANAGED_BY));
    let microservices = Api::<Microservice>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?
        .items;
    let services = Api::<Service>::namespaced(client.clone(), namespace)
        .list(&managed)
        .await?
        .items;
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&managed)
        .await?
        .items;
    Ok(render_plantuml(namespace, &microservices, &services, &pods))
}

/// The PlantUML source of the diagram of `namespace`.
///
/// Ready pods come from `status.readyReplicas`; a Microservice without a status yet (the
/// operator has not reconciled it) counts its ready pods in `pods` instead. The output depends
/// only on the arguments, and is sorted by name, so the same objects give the same text.
pub fn render_plantuml(
    namespace: &str,
    microservices: &[Microservice],
    services: &[Service],
    pods: &[Pod],
) -> String {
    let mut sorted: Vec<&Microservice> = microservices
        .iter()
        .filter(|ms| ms.metadata.deletion_timestamp.is_none())
        .collect();
    sorted.sort_by_key(|ms| ms.name_any());
    let known: BTreeSet<String> = sorted.iter().map(|ms| ms.name_any()).collect();

    let mut drawing = Drawing::default();
    for ms in &sorted {
        let ms_alias = alias("ms", &ms.name_any());
        let (color, lines) = component_lines(ms, namespace, services, pods);
        let _ = writeln!(
            drawing.body,
            "  component \"{}\" <<Microservice>> as {ms_alias} {color}",
            lines.join("\\n")
        );
        drawing.dependencies(ms, &ms_alias, &known);
        drawing.stores(ms, &ms_alias, namespace);
    }
    drawing.finish(namespace)
}

/// The diagram of a snapshot of `namespace` written as a YAML stream of Microservices (with
/// their status), Services and Pods, as `kubectl get -o yaml` would print them; other kinds
/// are ignored. The docs' `cluster-example.puml` is drawn from such a file.
pub fn render_snapshot(namespace: &str, yaml: &str) -> Result<String> {
    let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml)
        .map_err(|err| Error::Serialization(format!("not YAML: {err}")))?;
    let (mut microservices, mut services, mut pods) = (Vec::new(), Vec::new(), Vec::new());
    for (index, document) in documents.into_iter().enumerate() {
        let invalid =
            |err: serde_json::Error| Error::Serialization(format!("document {}: {err}", index + 1));
        match document["kind"].as_str() {
            Some("Microservice") => {
                microservices.push(serde_json::from_value(document).map_err(invalid)?)
            }
            Some("Service") => services.push(serde_json::from_value(document).map_err(invalid)?),
            Some("Pod") => pods.push(serde_json::from_value(document).map_err(invalid)?),
            _ => {}
        }
    }
    Ok(render_plantuml(namespace, &microservices, &services, &pods))
}

/// A diagram being drawn: the nodes inside the namespace's rectangle, the notes, the edges,
/// and the dependencies that name no Microservice.
#[derive(Default)]
struct Drawing {
    body: String,
    edges: Vec<String>,
    notes: Vec<String>,
    missing: BTreeSet<String>,
}

impl Drawing {
    /// An edge per `dependsOn`, to the Microservice or to a "no such Microservice" node.
    fn dependencies(&mut self, ms: &Microservice, ms_alias: &str, known: &BTreeSet<String>) {
        for dependency in &ms.spec.depends_on {
            let variable = env::dependency_url(&dependency.name);
            if known.contains(&dependency.name) {
                self.edges.push(format!(
                    "{ms_alias} --> {} : {variable}",
                    alias_of_ms(&dependency.name)
                ));
            } else {
                self.missing.insert(dependency.name.clone());
                self.edges.push(format!(
                    "{ms_alias} ..> {} : {variable}\\n(not found)",
                    alias("missing", &dependency.name)
                ));
            }
        }
    }

    /// A database per store: declared in `spec.stores`, reached through a variable, or else
    /// embedded (a note).
    fn stores(&mut self, ms: &Microservice, ms_alias: &str, namespace: &str) {
        let name = ms.name_any();
        let declared = stores::plan(&name, ms.spec.stores.as_ref());
        for store in &declared {
            let (line, edge) = declared_store(ms, store, namespace);
            let store_alias = alias(&format!("store_{}", role_alias(store.role)), &name);
            let _ = writeln!(self.body, "  database \"{line}\" as {store_alias}");
            self.edges
                .push(format!("{ms_alias} --> {store_alias} : {edge}"));
        }
        let mut embedded = Vec::new();
        for store in STORES
            .iter()
            .filter(|store| !declared.iter().any(|d| role_alias(d.role) == store.role))
        {
            match find_env(ms, store.variable) {
                Some(var) => {
                    let store_alias = alias(&format!("store_{}", store.role), &name);
                    let _ = writeln!(
                        self.body,
                        "  database \"{}\\n{}\" as {store_alias}",
                        store.product(var),
                        quote(&store_origin(var)),
                    );
                    self.edges
                        .push(format!("{ms_alias} --> {store_alias} : {}", store.variable));
                }
                None => embedded.push(store.embedded),
            }
        }
        if !embedded.is_empty() {
            self.notes.push(embedded_note(ms, ms_alias, &embedded));
        }
    }

    /// The whole document: header, the namespace with its nodes and notes, then the edges.
    fn finish(self, namespace: &str) -> String {
        let mut out = String::new();
        out.push_str("@startuml\n");
        let _ = writeln!(
            out,
            "' The Microservices of namespace {namespace}, as `kea-operator diagram --namespace {namespace}` read them."
        );
        out.push_str(concat!(
            "skinparam shadowing false\n",
            "skinparam componentStyle uml2\n",
            "skinparam defaultTextAlignment center\n",
            "skinparam component {\n",
            "  BorderColor #37474F\n",
            "}\n",
            "skinparam database {\n",
            "  BackgroundColor #E3F2FD\n",
            "  BorderColor #1565C0\n",
            "}\n",
            "skinparam note {\n",
            "  BackgroundColor #FFFDE7\n",
            "  BorderColor #9E9D24\n",
            "}\n",
        ));
        let _ = writeln!(out, "title Microservices in namespace {}", quote(namespace));
        out.push('\n');
        let _ = writeln!(out, "rectangle \"namespace {}\" {{", quote(namespace));
        out.push_str(&self.body);
        for name in &self.missing {
            let _ = writeln!(
                out,
                "  component \"<b>{name}</b>\\nno such Microservice\" as {} #FFEBEE",
                alias("missing", name)
            );
        }
        for note in &self.notes {
            out.push_str(note);
            out.push('\n');
        }
        out.push_str("}\n");
        if !self.edges.is_empty() {
            out.push('\n');
        }
        for edge in &self.edges {
            out.push_str(edge);
            out.push('\n');
        }
        out.push_str("@enduml\n");
        out
    }
}

/// The note of the stores embedded in the pod (no variable points elsewhere), and the
/// envFrom sources that could still set one.
fn embedded_note(ms: &Microservice, ms_alias: &str, embedded: &[&str]) -> String {
    let mut note = format!(
        "note bottom of {ms_alias}\n  embedded in {}:\n  {}\n",
        kea_contract::mounts::DATA,
        embedded.join(", ")
    );
    let sources: Vec<String> = ms
        .spec
        .env_from
        .iter()
        .filter_map(|source| {
            let secret = source
                .secret_ref
                .as_ref()
                .map(|s| format!("Secret {}", s.name));
            let config_map = source
                .config_map_ref
                .as_ref()
                .map(|c| format!("ConfigMap {}", c.name));
            secret.or(config_map)
        })
        .collect();
    if !sources.is_empty() {
        let _ = writeln!(
            note,
            "  unless set by envFrom ({})",
            quote(&sources.join(", "))
        );
    }
    note.push_str("end note");
    note
}

/// The alias part of a store role (kept from the diagrams drawn before `spec.stores`).
fn role_alias(role: Role) -> &'static str {
    match role {
        Role::Sql => "relational",
        Role::Nosql => "nosql",
    }
}

/// The text of a declared store's database and of its edge from the owner.
fn declared_store(ms: &Microservice, store: &PlannedStore, namespace: &str) -> (String, String) {
    let status = ms
        .status
        .as_ref()
        .and_then(|s| s.stores.iter().find(|s| s.name == store.role.as_str()));
    let state = match status {
        Some(s) if s.ready => "ready".to_owned(),
        Some(s) => format!("not ready: {}", s.reason),
        None => "not provisioned yet".to_owned(),
    };
    let policy = match store.deletion_policy {
        DeletionPolicy::Retain => "kept on delete",
        DeletionPolicy::Delete => "deleted with it",
    };
    let (product, place, edge) = match store.engine {
        Engine::Server(engine) => (
            match engine {
                ServerEngine::Mariadb => "MariaDB",
                ServerEngine::Redis => "Redis",
            },
            format!(
                "StatefulSet {}\\n{}",
                store.object_name,
                quote(&store.host(namespace).unwrap_or_default())
            ),
            format!("{}\\n(Secret {})", engine.url_variable(), store.object_name),
        ),
        Engine::Embedded(engine) => (
            match engine {
                EmbeddedEngine::Sqlite => "SQLite",
                EmbeddedEngine::Redb => "redb",
            },
            format!("in its pod, volume {}", store.claim_name),
            "own volume".to_owned(),
        ),
    };
    (
        format!(
            "<b>{product}</b> of {}\\n{place}\\n{} {}, {policy}\\n{}",
            ms.name_any(),
            quote(&store.size),
            store.role.as_str(),
            quote(&state)
        ),
        edge,
    )
}

/// A store the reference service can be pointed at through an environment variable.
struct Store {
    role: &'static str,
    variable: &'static str,
    embedded: &'static str,
}

const STORES: [Store; 2] = [
    Store {
        role: "relational",
        variable: env::DATABASE_URL,
        embedded: "SQLite (relational)",
    },
    Store {
        role: "nosql",
        variable: env::REDIS_URL,
        embedded: "redb (NoSQL)",
    },
];

impl Store {
    /// The product the URL names (by scheme), or the one the service expects for the variable.
    fn product(&self, var: &EnvVar) -> &'static str {
        let scheme = var
            .value
            .as_deref()
            .and_then(|url| url.split_once("://"))
            .map(|(scheme, _)| scheme.to_ascii_lowercase());
        match (self.variable, scheme.as_deref()) {
            (_, Some("mariadb")) => "MariaDB",
            (env::DATABASE_URL, _) => "MySQL",
            _ => "Redis",
        }
    }
}

/// The fill colour and the text lines of a Microservice's component.
fn component_lines(
    ms: &Microservice,
    namespace: &str,
    services: &[Service],
    pods: &[Pod],
) -> (&'static str, Vec<String>) {
    let name = ms.name_any();
    let status = ms.status.as_ref();
    let url = status
        .and_then(|s| s.url.clone())
        .unwrap_or_else(|| meta::service_url(&name, namespace, ms.spec.port));
    let ready_pods = match status {
        Some(status) => status.ready_replicas,
        None => ready_pods_of(&name, pods),
    };
    let pods_line = match workload::replica_control(&ms.spec) {
        ReplicaControl::Fixed(desired) => format!("{ready_pods}/{desired} pods ready"),
        ReplicaControl::Autoscaled { min, max } => {
            format!("{ready_pods} pods ready (autoscaled {min}..{max})")
        }
    };
    let service_line = match services.iter().find(|s| s.name_any() == name) {
        Some(service) => {
            let spec = service.spec.as_ref();
            let type_ = spec.and_then(|s| s.type_.as_deref()).unwrap_or("ClusterIP");
            let ports: Vec<String> = spec
                .and_then(|s| s.ports.as_ref())
                .map(|ports| ports.iter().map(|p| p.port.to_string()).collect())
                .unwrap_or_default();
            format!("Service {type_} :{}", ports.join(","))
        }
        None => "no Service yet".to_owned(),
    };
    let ready = status.and_then(|s| find_condition(&s.conditions, conditions::READY));
    let (color, state) = match ready {
        _ if ms.spec.suspend => ("#ECEFF1", "Suspended".to_owned()),
        Some(c) if c.status == "True" => ("#E8F5E9", "Ready".to_owned()),
        Some(c) => ("#FFF3E0", format!("not ready: {}", c.reason)),
        None => ("#FFF3E0", "not reconciled yet".to_owned()),
    };
    let lines = vec![
        format!("<b>{name}</b>"),
        quote(&url),
        service_line,
        format!("{pods_line}, {}", quote(&state)),
    ];
    (color, lines)
}

/// Ready, not terminating pods selected by the Microservice's selector labels.
fn ready_pods_of(name: &str, pods: &[Pod]) -> i32 {
    let selector = meta::selector_labels(name);
    let count = pods
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| {
            let pod_labels = pod.labels();
            selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
        })
        .filter(|pod| {
            pod.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count();
    i32::try_from(count).unwrap_or(i32::MAX)
}

fn find_env<'a>(ms: &'a Microservice, variable: &str) -> Option<&'a EnvVar> {
    ms.spec.env.iter().find(|var| var.name == variable)
}

/// Where a store URL comes from, without credentials: `host:port/db` for a literal value, the
/// Secret or ConfigMap key for a reference.
fn store_origin(var: &EnvVar) -> String {
    if let Some(value) = &var.value {
        return redacted_address(value);
    }
    let from = var.value_from.as_ref();
    if let Some(secret) = from.and_then(|f| f.secret_key_ref.as_ref()) {
        return format!("from Secret {}/{}", secret.name, secret.key);
    }
    if let Some(config_map) = from.and_then(|f| f.config_map_key_ref.as_ref()) {
        return format!("from ConfigMap {}/{}", config_map.name, config_map.key);
    }
    "from valueFrom".to_owned()
}

/// `mysql://user:secret@db.shop:3306/orders?ssl-mode=required` -> `db.shop:3306/orders`.
fn redacted_address(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if path.is_empty() {
        host.to_owned()
    } else {
        format!("{host}/{path}")
    }
}

/// A PlantUML identifier: names are DNS labels, so only `-` needs replacing.
fn alias(prefix: &str, name: &str) -> String {
    format!("{prefix}_{}", name.replace('-', "_"))
}

fn alias_of_ms(name: &str) -> String {
    alias("ms", name)
}

/// Text safe inside a PlantUML double-quoted label.
fn quote(text: &str) -> String {
    text.replace('"', "'").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// The example system of `deploy/examples/` as a cluster shows it (the source of the
    /// docs' cluster-example diagram).
    const EXAMPLE: &str = include_str!("../../docs/diagrams/cluster-example.yaml");

    /// Stores configured through the environment: a Secret reference, a literal URL with a
    /// password, and an envFrom that may set the other variable.
    const STORES: &str = r#"
apiVersion: kea.dev/v1alpha1
kind: Microservice
metadata: {name: orders, namespace: shop}
spec:
  image: kea.dev/kea-service:dev
  env:
    - name: DATABASE_URL
      valueFrom: {secretKeyRef: {name: orders-db, key: url}}
    - name: REDIS_URL
      value: redis://:s3cret@orders-redis.shop.svc.cluster.local:6379/0
---
apiVersion: kea.dev/v1alpha1
kind: Microservice
metadata: {name: users, namespace: shop}
spec:
  image: kea.dev/kea-service:dev
  env:
    - name: DATABASE_URL
      value: mariadb://users:s3cret@users-db.shop.svc.cluster.local:3306/users?ssl-mode=required
  envFrom:
    - secretRef: {name: users-stores}
"#;

    /// The objects of `kind` in a YAML stream.
    fn objects<K: serde::de::DeserializeOwned>(yaml: &str, kind: &str) -> Vec<K> {
        let documents: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(yaml).expect("fixture parses");
        documents
            .into_iter()
            .filter(|document| document["kind"] == kind)
            .map(|document| serde_json::from_value(document).expect("fixture object parses"))
            .collect()
    }

    fn microservices(yaml: &str) -> Vec<Microservice> {
        objects(yaml, "Microservice")
    }

    fn services() -> Vec<Service> {
        objects(EXAMPLE, "Service")
    }

    fn pod(name: &str, microservice: &str, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("kea-demo".into()),
                labels: Some(meta::selector_labels(microservice)),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn example() -> String {
        render_plantuml("kea-demo", &microservices(EXAMPLE), &services(), &[])
    }

    #[test]
    fn a_snapshot_file_draws_what_its_objects_say() {
        assert_eq!(render_snapshot("kea-demo", EXAMPLE).unwrap(), example());
        let error = render_snapshot(
            "kea-demo",
            "kind: Service
spec: 3
",
        )
        .unwrap_err();
        assert!(error.to_string().contains("document 1"), "{error}");
    }

    #[test]
    fn one_component_per_microservice_with_url_and_pods() {
        let text = example();
        assert!(text.starts_with("@startuml\n") && text.ends_with("@enduml\n"));
        assert!(text.contains(
            "component \"<b>frontend</b>\\nhttp://frontend.kea-demo.svc.cluster.local:8080\\n\
             Service ClusterIP :8080\\n2 pods ready (autoscaled 2..5), Ready\" <<Microservice>> as ms_frontend #E8F5E9"
        ));
        assert!(text.contains("\\n1/1 pods ready, Ready\" <<Microservice>> as ms_users #E8F5E9"));
        assert!(text.contains(
            "\\n0/3 pods ready, not ready: StorePodNotReady\" <<Microservice>> as ms_orders #FFF3E0"
        ));
        // Sorted by name, whatever the input order.
        let position = |alias: &str| text.find(&format!(" as {alias} ")).expect(alias);
        assert!(position("ms_frontend") < position("ms_orders"));
        assert!(position("ms_orders") < position("ms_users"));
    }

    #[test]
    fn depends_on_becomes_an_arrow_named_after_the_variable() {
        let text = example();
        assert!(text.contains("ms_frontend --> ms_users : USERS_URL\n"));
        assert!(text.contains("ms_frontend --> ms_orders : ORDERS_URL\n"));
        assert!(text.contains("ms_orders --> ms_users : USERS_URL\n"));
        assert_eq!(text.matches(" --> ms_").count(), 3);
    }

    #[test]
    fn undeclared_embedded_stores_are_a_note() {
        let text = example();
        assert!(text.contains(
            "note bottom of ms_frontend\n  embedded in /data:\n  SQLite (relational), redb (NoSQL)\nend note"
        ));
        assert_eq!(text.matches("note bottom of").count(), 1, "{text}");
    }

    #[test]
    fn declared_stores_are_their_owners_databases() {
        let text = example();
        assert!(text.contains(
            "database \"<b>MariaDB</b> of orders\\nStatefulSet orders-mariadb\\norders-mariadb.kea-demo.svc.cluster.local:3306\\n512Mi sql, kept on delete\\nnot ready: StorePodNotReady\" as store_relational_orders"
        ), "{text}");
        assert!(text.contains(
            "database \"<b>redb</b> of users\\nin its pod, volume users-redb\\n256Mi nosql, kept on delete\\nready\" as store_nosql_users"
        ), "{text}");
        assert!(text.contains(
            "ms_orders --> store_relational_orders : DATABASE_URL\\n(Secret orders-mariadb)\n"
        ));
        assert!(
            text.contains("ms_orders --> store_nosql_orders : REDIS_URL\\n(Secret orders-redis)\n")
        );
        assert!(text.contains("ms_users --> store_relational_users : own volume\n"));
        // Each store has exactly one edge: its owner's.
        assert_eq!(text.matches(" --> store_").count(), 4);
    }

    #[test]
    fn configured_stores_are_databases_without_credentials() {
        let text = render_plantuml("shop", &microservices(STORES), &[], &[]);
        assert!(
            text.contains(
                "database \"MySQL\\nfrom Secret orders-db/url\" as store_relational_orders"
            )
        );
        assert!(text.contains(
            "database \"Redis\\norders-redis.shop.svc.cluster.local:6379/0\" as store_nosql_orders"
        ));
        assert!(text.contains(
            "database \"MariaDB\\nusers-db.shop.svc.cluster.local:3306/users\" as store_relational_users"
        ));
        assert!(!text.contains("s3cret"), "a password leaked:\n{text}");
        assert!(text.contains("ms_orders --> store_relational_orders : DATABASE_URL\n"));
        assert!(text.contains("ms_orders --> store_nosql_orders : REDIS_URL\n"));
        assert!(!text.contains("note bottom of ms_orders"));
        // users: MariaDB configured, redb embedded unless its envFrom Secret sets REDIS_URL.
        assert!(text.contains(
            "note bottom of ms_users\n  embedded in /data:\n  redb (NoSQL)\n  unless set by envFrom (Secret users-stores)\nend note"
        ), "{text}");
    }

    #[test]
    fn missing_dependencies_are_drawn_as_such() {
        let yaml = r#"
apiVersion: kea.dev/v1alpha1
kind: Microservice
metadata: {name: frontend, namespace: shop}
spec:
  image: kea.dev/kea-service:dev
  dependsOn: [{name: payment-gateway}]
"#;
        let text = render_plantuml("shop", &microservices(yaml), &[], &[]);
        assert!(text.contains(
            "component \"<b>payment-gateway</b>\\nno such Microservice\" as missing_payment_gateway #FFEBEE"
        ));
        assert!(text.contains(
            "ms_frontend ..> missing_payment_gateway : PAYMENT_GATEWAY_URL\\n(not found)\n"
        ));
        // No status yet: the default URL, no Service, and an unreconciled state.
        assert!(text.contains(
            "http://frontend.shop.svc.cluster.local:8080\\nno Service yet\\n0/1 pods ready, not reconciled yet"
        ));
    }

    #[test]
    fn without_a_status_ready_pods_are_counted() {
        let mut ms = microservices(EXAMPLE);
        for m in &mut ms {
            m.status = None;
        }
        let pods = [
            pod("users-a", "users", true),
            pod("orders-a", "orders", false),
            pod("frontend-a", "frontend", true),
            pod("frontend-b", "frontend", true),
        ];
        let text = render_plantuml("kea-demo", &ms, &services(), &pods);
        assert!(text.contains("\\n1/1 pods ready, not reconciled yet\""));
        assert!(text.contains("\\n2 pods ready (autoscaled 2..5), not reconciled yet\""));
        assert!(text.contains("\\n0/3 pods ready, not reconciled yet\""));
    }

    #[test]
    fn output_is_deterministic() {
        let mut reversed = microservices(EXAMPLE);
        reversed.reverse();
        assert_eq!(
            render_plantuml("kea-demo", &reversed, &services(), &[]),
            example()
        );
    }

    #[test]
    fn addresses_drop_credentials_and_options() {
        assert_eq!(
            redacted_address("mysql://u:p@db.shop:3306/orders?ssl-mode=required"),
            "db.shop:3306/orders"
        );
        assert_eq!(redacted_address("redis://:pw@cache:6379"), "cache:6379");
        assert_eq!(redacted_address("redis://cache"), "cache");
    }
}
