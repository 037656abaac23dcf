//! Item 4: a rolling update under continuous load drops no request, as the Service sees it.
//!
//! The load comes from inside the cluster: a client pod runs parallel request loops against
//! the Service's DNS name (cluster DNS, ClusterIP, kube-proxy, the NetworkPolicy), as a real
//! caller would, and counts every request that got no right answer, including the ones that
//! got no answer at all. The test follows each old pod through its termination and requires
//! requests answered while it terminated, so the load demonstrably spans the whole rollout.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kea_e2e::load::{Counts, Load};
use kea_e2e::{microservice, namespace, pods_of, service_url, wait_ready, wait_ready_pods};
use kea_operator::Microservice;
use kea_operator::api::RolloutSpec;
use kea_operator::children::config::stamped;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams, PostParams};

const TIMEOUT: Duration = Duration::from_secs(240);

/// The load's counts when an old pod began terminating and when it was gone, with the time of
/// day (UTC, as the load pod stamps its failures).
#[derive(Debug, Default)]
struct Termination {
    began: Option<(Counts, String)>,
    ended: Option<(Counts, String)>,
}

/// The time of day, UTC, as `HH:MM:SS`.
fn clock() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() % 86_400);
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// What a rollout under load looked like: the load's report, and each old pod's termination.
struct RolloutUnderLoad {
    ok: u64,
    failed: u64,
    output: String,
    terminations: HashMap<String, Termination>,
}

impl RolloutUnderLoad {
    /// Fails unless no request failed and requests were answered while each old pod
    /// terminated (the load spanned the whole rollout).
    fn assert_no_request_failed(&self, what: &str) {
        eprintln!(
            "e2e: {} requests to target through its Service during the {what}, {} failed; \
             old pods' terminations (answers and time when it began, when it was gone): {:?}",
            self.ok,
            self.failed,
            self.terminations
                .iter()
                .map(|(name, t)| {
                    let answered = |at: &Option<(Counts, String)>| {
                        at.as_ref()
                            .map(|(counts, time)| format!("{} at {time}", counts.ok))
                    };
                    (name, answered(&t.began), answered(&t.ended))
                })
                .collect::<Vec<_>>()
        );
        assert_eq!(
            self.failed, 0,
            "requests failed during the {what}:\n{}",
            self.output
        );
        for (name, termination) in &self.terminations {
            let (Some((began, _)), Some((ended, _))) = (&termination.began, &termination.ended)
            else {
                panic!("pod {name} not followed through its termination: {termination:?}");
            };
            assert!(
                ended.ok > began.ok,
                "no request answered while pod {name} terminated: the load did not span it"
            );
        }
    }
}

/// A Microservice `target` of two pods and a load of 50 parallel request loops from a declared
/// caller; then `change` starts a rollout, which is followed until every old pod is gone and
/// the Microservice is Ready at `change`'s generation (it returns it), and the load is stopped
/// a little after.
async fn rollout_under_load<F, Fut>(ns: &kea_testkit::TestNamespace, change: F) -> RolloutUnderLoad
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Option<i64>>,
{
    let api = ns.api::<Microservice>();
    let pods = ns.api::<Pod>();
    let old_pods: Vec<String> = wait_ready_pods(&pods, "target", 2, TIMEOUT)
        .await
        .unwrap()
        .iter()
        .map(|p| p.name_any())
        .collect();

    let load = start_load(ns).await;
    let generation = change().await;
    eprintln!(
        "rollout of target to generation {generation:?} started at {}",
        clock()
    );

    // Follow every old pod until it is gone, noting the load's counts as each one begins
    // terminating and when it has gone.
    let mut terminations: HashMap<String, Termination> = old_pods
        .iter()
        .map(|name| (name.clone(), Termination::default()))
        .collect();
    let started = Instant::now();
    while terminations.values().any(|t| t.ended.is_none()) {
        assert!(
            started.elapsed() < TIMEOUT,
            "old pods still there after {TIMEOUT:?}: {terminations:?}"
        );
        let current = pods_of(&pods, "target").await.unwrap();
        let counts = load.counts().await.unwrap();
        let now = clock();
        for (name, termination) in &mut terminations {
            match current.iter().find(|p| p.name_any() == *name) {
                Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
                    termination.began.get_or_insert((counts, now.clone()));
                }
                Some(_) => {}
                None => {
                    termination.began.get_or_insert((counts, now.clone()));
                    termination.ended.get_or_insert((counts, now.clone()));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ms = wait_ready(&api, "target", TIMEOUT).await.unwrap();
    if generation.is_some() {
        assert_eq!(ms.status.as_ref().unwrap().observed_generation, generation);
    }
    // Keep the load on a little past the end of the rollout, then stop it.
    let at_end = load.counts().await.unwrap();
    load.wait_for_answers(at_end.ok + 50, Duration::from_secs(60))
        .await
        .unwrap();
    let report = load.stop().await.unwrap();
    RolloutUnderLoad {
        ok: report.counts.ok,
        failed: report.counts.failed,
        output: report.output,
        terminations,
    }
}

/// Parallel request loops to target through its Service, from a declared caller (so its
/// NetworkPolicy lets them in), once 50 requests were answered.
async fn start_load(ns: &kea_testkit::TestNamespace) -> Load {
    start_load_named(ns, "load").await
}

/// [`start_load`] from a load pod of its own name.
async fn start_load_named(ns: &kea_testkit::TestNamespace, name: &str) -> Load {
    Load::start(
        &ns.client(),
        ns.name(),
        name,
        BTreeMap::from([(
            kea_operator::children::network::calls_label("target"),
            "true".to_owned(),
        )]),
        None,
        &service_url("target", "/"),
        50,
    )
    .await
    .unwrap()
}

/// The two-pod `target` every test here rolls, with its readiness following the rollout.
fn target() -> Microservice {
    let mut target = microservice("target", 2);
    // As in the drain test: the pods keep serving until every node's proxy has dropped them,
    // with room for a test cluster whose two cores also run the other tests.
    target.spec.deregistration_seconds = kea_e2e::DEREGISTRATION_SECONDS;
    target.spec.drain_seconds = 10;
    target
}

#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn rolling_update_under_load_drops_no_request() {
    let ns = namespace("rollout").await.unwrap();
    let api = ns.api::<Microservice>();
    api.create(&PostParams::default(), &target()).await.unwrap();
    wait_ready(&api, "target", TIMEOUT).await.unwrap();

    let rollout = rollout_under_load(&ns, || async {
        let patch =
            serde_json::json!({ "spec": { "env": [{ "name": "E2E_REVISION", "value": "2" }] } });
        api.patch("target", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap()
            .metadata
            .generation
    })
    .await;
    rollout.assert_no_request_failed("rollout");
    // Every pod now runs the new spec.
    let pods = ns.api::<Pod>();
    for pod in pods_of(&pods, "target")
        .await
        .unwrap()
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        assert!(
            kea_e2e::runs_revision_2(pod.spec.as_ref()),
            "pod {} runs the old spec",
            pod.name_any()
        );
    }
    ns.cleanup().await.unwrap();
}

/// The ConfigMap versions on target's pod template, and its Deployment's generation.
async fn config_versions(ns: &kea_testkit::TestNamespace) -> (String, Option<i64>) {
    let deployment = ns.api::<Deployment>().get("target").await.unwrap();
    let annotation = stamped(&deployment).unwrap_or_default().to_owned();
    (annotation, deployment.metadata.generation)
}

/// An edit of the ConfigMap a Microservice's environment reads rolls its pods like a new
/// image, under load, with no failed request; an edit of another ConfigMap just before it
/// writes nothing (the Deployment gains one generation, not two).
#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn a_config_map_edit_rolls_the_pods_under_load() {
    let ns = namespace("config-rollout").await.unwrap();
    let maps = ns.api::<ConfigMap>();
    for name in ["target-settings", "unrelated"] {
        let map: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}, "data": {"greeting": "hello"},
        }))
        .unwrap();
        maps.create(&PostParams::default(), &map).await.unwrap();
    }
    let mut target = target();
    target.spec.env = vec![
        serde_json::from_value(serde_json::json!({
            "name": "GREETING",
            "valueFrom": {"configMapKeyRef": {"name": "target-settings", "key": "greeting"}},
        }))
        .unwrap(),
    ];
    let api = ns.api::<Microservice>();
    api.create(&PostParams::default(), &target).await.unwrap();
    wait_ready(&api, "target", TIMEOUT).await.unwrap();
    let (before, generation) = config_versions(&ns).await;
    assert!(before.starts_with("ConfigMap/target-settings@"), "{before}");

    let edit = |name: &'static str| {
        let maps = maps.clone();
        async move {
            let patch = serde_json::json!({"data": {"greeting": "hi"}});
            maps.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap()
                .resource_version()
                .unwrap()
        }
    };
    let deployments = ns.api::<Deployment>();
    let mut version = String::new();
    let mut to_template = Duration::ZERO;
    let rollout = rollout_under_load(&ns, || async {
        edit("unrelated").await;
        let edited = Instant::now();
        version = edit("target-settings").await;
        let wanted = format!("ConfigMap/target-settings@{version}");
        // The first pod of the new revision is the canary's.
        kea_testkit::wait_for(
            &deployments,
            "target-canary",
            |d: Option<&Deployment>| d.and_then(stamped) == Some(wanted.as_str()),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        to_template = edited.elapsed();
        None
    })
    .await;
    rollout.assert_no_request_failed("ConfigMap rollout");
    eprintln!("e2e: the ConfigMap edit reached the canary's pod template in {to_template:?}");
    let (after, rolled_generation) = config_versions(&ns).await;
    assert_eq!(after, format!("ConfigMap/target-settings@{version}"));
    assert_eq!(
        rolled_generation,
        generation.map(|g| g + 1),
        "one write, for the ConfigMap target reads"
    );
    ns.cleanup().await.unwrap();
}

/// The progress deadline of the rollback tests: short, so that the suite stays short; the
/// default is 90 s.
const DEADLINE_SECONDS: i32 = 30;

/// Whether target's Deployment has rolled out completely a template without `marker` in its
/// environment.
fn rolled_out_without(deployment: &Deployment, marker: &str) -> bool {
    let (Some(spec), Some(status)) = (deployment.spec.as_ref(), deployment.status.as_ref()) else {
        return false;
    };
    let complete = status.observed_generation == deployment.metadata.generation
        && status.replicas == spec.replicas
        && status.updated_replicas == spec.replicas
        && status.available_replicas == spec.replicas;
    let marked = spec.template.spec.as_ref().is_some_and(|pod| {
        pod.containers[0]
            .env
            .iter()
            .flatten()
            .any(|e| e.value.as_deref() == Some(marker))
    });
    complete && !marked
}

/// `target` created in a namespace of its own, Ready with a stable revision (waits until the
/// status keeps it).
async fn stable(prefix: &str, target: Microservice) -> kea_testkit::TestNamespace {
    let ns = namespace(prefix).await.unwrap();
    let api = ns.api::<Microservice>();
    api.create(&PostParams::default(), &target).await.unwrap();
    wait_ready(&api, "target", TIMEOUT).await.unwrap();
    kea_testkit::wait_for(
        &api,
        "target",
        |ms: Option<&Microservice>| {
            ms.and_then(|ms| ms.status.as_ref())
                .is_some_and(|s| s.stable_revision.is_some())
        },
        TIMEOUT,
    )
    .await
    .unwrap();
    ns
}

/// Waits until target's status records a rollback (within 120 s) and returns the record.
async fn wait_rolled_back(api: &kube::Api<Microservice>) -> kea_operator::api::RolledBack {
    let ms = kea_testkit::wait_for(
        api,
        "target",
        |ms: Option<&Microservice>| {
            ms.and_then(|ms| ms.status.as_ref())
                .is_some_and(|s| s.rolled_back.is_some())
        },
        Duration::from_secs(120),
    )
    .await
    .unwrap()
    .unwrap();
    ms.status.and_then(|s| s.rolled_back).unwrap()
}

/// target, Ready with a stable revision, gets `change` (which makes its new pods fail) under
/// load: the operator rolls it back, every pod runs the stable revision again, and no request
/// fails meanwhile.
async fn a_failing_revision_is_rolled_back_under_load(prefix: &str, change: serde_json::Value) {
    let mut target = target();
    target.spec.rollout = Some(RolloutSpec {
        progress_deadline_seconds: DEADLINE_SECONDS,
        ..RolloutSpec::default()
    });
    let ns = stable(prefix, target).await;
    let api = ns.api::<Microservice>();

    let load = start_load(&ns).await;
    let marker = "e2e-failing-revision";
    let mut spec = change;
    let mut env = spec["env"].as_array().cloned().unwrap_or_default();
    env.push(serde_json::json!({"name": "E2E_REVISION", "value": marker}));
    spec["env"] = serde_json::Value::Array(env);
    let started = Instant::now();
    api.patch(
        "target",
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({ "spec": spec })),
    )
    .await
    .unwrap();
    let rolled_back = wait_rolled_back(&api).await;
    let to_decision = started.elapsed();
    kea_testkit::wait_for(
        &ns.api::<Deployment>(),
        "target",
        |d: Option<&Deployment>| d.is_some_and(|d| rolled_out_without(d, marker)),
        TIMEOUT,
    )
    .await
    .unwrap();
    let to_stable = started.elapsed();
    let at_end = load.counts().await.unwrap();
    load.wait_for_answers(at_end.ok + 50, Duration::from_secs(60))
        .await
        .unwrap();
    let report = load.stop().await.unwrap();
    let message = rolled_back.message;
    eprintln!(
        "e2e: {prefix}: rolled back {to_decision:?} after the change (deadline {DEADLINE_SECONDS}s), \
         every pod on the stable revision after {to_stable:?}; {} requests, {} failed; {message}",
        report.counts.ok, report.counts.failed
    );
    assert_eq!(
        report.counts.failed, 0,
        "requests failed during the rollback:\n{}",
        report.output
    );
    ns.cleanup().await.unwrap();
}

/// A revision whose container exits at once (its listen address is not one).
#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn a_crashing_revision_is_rolled_back_under_load() {
    a_failing_revision_is_rolled_back_under_load(
        "rollback-crash",
        serde_json::json!({"env": [{"name": "KEA_LISTEN", "value": "not-an-address"}]}),
    )
    .await;
}

/// A revision whose readiness never passes (its readiness probe asks for a route the service
/// does not have), while its liveness does.
#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn a_revision_never_ready_is_rolled_back_under_load() {
    a_failing_revision_is_rolled_back_under_load(
        "rollback-unready",
        serde_json::json!({"probes": {"readiness": {"path": "/no-such-route"}}}),
    )
    .await;
}

/// The time target's canary Deployment first had its pod available.
async fn canary_available(ns: &kea_testkit::TestNamespace) -> Instant {
    kea_testkit::wait_for(
        &ns.api::<Deployment>(),
        "target-canary",
        |d: Option<&Deployment>| {
            d.and_then(|d| d.status.as_ref())
                .is_some_and(|s| s.available_replicas.unwrap_or(0) >= 1)
        },
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    Instant::now()
}

/// A revision that is Ready but answers 500 on every other `GET /`: only the canary's analysis
/// of the pods' metrics can tell. It is reverted within 60 s of the canary becoming available,
/// the stable pods never run it, and the failed requests are the canary's share of the load
/// while it ran.
#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn a_canary_answering_errors_is_reverted_under_load() {
    let ns = stable("canary-errors", target()).await;
    let api = ns.api::<Microservice>();
    let load = start_load(&ns).await;
    let before = load.counts().await.unwrap();
    let marker = "e2e-faulty-revision";
    let started = Instant::now();
    let patch = serde_json::json!({"spec": {"env": [
        {"name": "KEA_FAULT_ERROR_PERCENT", "value": "50"},
        {"name": "E2E_REVISION", "value": marker},
    ]}});
    api.patch("target", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let available = canary_available(&ns).await;
    let rolled_back = wait_rolled_back(&api).await;
    let to_revert = available.elapsed();
    kea_testkit::wait_for_deletion(
        &ns.api::<Deployment>(),
        "target-canary",
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let at_end = load.counts().await.unwrap();
    load.wait_for_answers(at_end.ok + 50, Duration::from_secs(60))
        .await
        .unwrap();
    let report = load.stop().await.unwrap();
    let deployment = ns.api::<Deployment>().get("target").await.unwrap();
    eprintln!(
        "e2e: faulty canary reverted {to_revert:?} after it was available ({:?} after the change); \
         {} requests answered during the test, {} failed ({} before the change); {}",
        started.elapsed(),
        report.counts.ok,
        report.counts.failed,
        before.failed,
        rolled_back.message
    );
    assert_eq!(rolled_back.reason, "CanaryAnalysisFailed");
    assert!(
        to_revert <= Duration::from_secs(60),
        "reverted {to_revert:?} after the canary was available"
    );
    assert!(
        rolled_out_without(&deployment, marker),
        "the stable pods ran the faulty revision"
    );
    // The canary took its share of the callers' requests (so the faults reached them)...
    assert!(report.counts.failed > 0, "{}", report.output);
    // ... and no more than its share: one pod in three, half of its answers.
    assert!(
        report.counts.failed * 6 <= report.counts.ok + report.counts.failed,
        "{} of {} requests failed:\n{}",
        report.counts.failed,
        report.counts.ok + report.counts.failed,
        report.output
    );
    ns.cleanup().await.unwrap();
}

/// Good revisions in a row (`KEA_E2E_GOOD_ROLLOUTS`, default 20), each under load: each
/// starts as a canary, is promoted within 90 s of the change, replaces the stable pods, and
/// no request fails; none is reverted.
#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn good_revisions_are_promoted_without_a_false_revert() {
    let rollouts: u32 = std::env::var("KEA_E2E_GOOD_ROLLOUTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let ns = stable("canary-good", target()).await;
    let api = ns.api::<Microservice>();
    let mut promotions = Vec::new();
    let (mut answered, mut failed) = (0, 0);
    for rollout in 1..=rollouts {
        let load = start_load_named(&ns, &format!("load-{rollout}")).await;
        let marker = format!("good-{rollout}");
        let patch =
            serde_json::json!({"spec": {"env": [{"name": "E2E_REVISION", "value": marker}]}});
        let started = Instant::now();
        let generation = api
            .patch("target", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap()
            .metadata
            .generation;
        canary_available(&ns).await;
        let promoted = kea_testkit::wait_for(
            &api,
            "target",
            |ms: Option<&Microservice>| {
                ms.and_then(|ms| ms.status.as_ref()).is_some_and(|s| {
                    s.rolled_back.is_some()
                        || s.stable_revision.as_ref().map(|r| r.generation) == generation
                })
            },
            Duration::from_secs(180),
        )
        .await
        .unwrap()
        .unwrap();
        let to_stable = started.elapsed();
        let status = promoted.status.unwrap();
        assert!(
            status.rolled_back.is_none(),
            "rollout {rollout} was reverted: {:?}",
            status.rolled_back
        );
        kea_testkit::wait_for_deletion(
            &ns.api::<Deployment>(),
            "target-canary",
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        let at_end = load.counts().await.unwrap();
        load.wait_for_answers(at_end.ok + 50, Duration::from_secs(60))
            .await
            .unwrap();
        let report = load.stop().await.unwrap();
        ns.api::<Pod>()
            .delete(&format!("load-{rollout}"), &Default::default())
            .await
            .unwrap();
        eprintln!(
            "e2e: good rollout {rollout}/{rollouts}: promoted and rolled out {to_stable:?} after the change; {} requests, {} failed",
            report.counts.ok, report.counts.failed
        );
        assert_eq!(
            report.counts.failed, 0,
            "requests failed during rollout {rollout}:\n{}",
            report.output
        );
        assert!(
            to_stable <= Duration::from_secs(90),
            "rollout {rollout} took {to_stable:?} to be promoted and rolled out"
        );
        promotions.push(to_stable);
        answered += report.counts.ok;
        failed += report.counts.failed;
    }
    promotions.sort();
    eprintln!(
        "e2e: {rollouts} good rollouts, 0 reverted; promoted and rolled out in {:?} (min) {:?} (median) {:?} (max); {answered} requests, {failed} failed",
        promotions.first(),
        promotions.get(promotions.len() / 2),
        promotions.last()
    );
    ns.cleanup().await.unwrap();
}
