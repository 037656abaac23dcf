//! Checks that the local control plane (hack/control-plane.sh) is the real thing the
//! operator's tests rely on: the scheduler places Pods, kwok makes them Running and
//! Ready, the Deployment controller reports availability, and the garbage collector
//! removes owned objects when their owner goes.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kea_testkit::{TestNamespace, has_status_condition, wait_for, wait_for_deletion};
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};

const TIMEOUT: Duration = Duration::from_secs(60);

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": {
                    // Never pulled: kwok fakes the containers.
                    "containers": [{ "name": "app", "image": "registry.invalid/kea/web:1.0.0" }]
                }
            }
        }
    }))
    .expect("a valid Deployment")
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn deployment_becomes_available_and_its_replicaset_is_garbage_collected() {
    let ns = TestNamespace::for_test("control-plane").await;
    let deployments = ns.api::<Deployment>();
    let replica_sets = ns.api::<ReplicaSet>();
    let pods = ns.api::<Pod>();

    let apply = PatchParams::apply("kea-testkit").force();
    deployments
        .patch("web", &apply, &Patch::Apply(deployment("web", 2)))
        .await
        .expect("apply the Deployment");

    let available = wait_for(
        &deployments,
        "web",
        has_status_condition("Available", "True"),
        TIMEOUT,
    )
    .await
    .expect("the Deployment becomes Available")
    .expect("the Deployment exists");
    let ready_pods = |d: &Deployment| d.status.as_ref().and_then(|s| s.ready_replicas);
    if ready_pods(&available) != Some(2) {
        // Available can precede the last replica's readiness (maxUnavailable): wait for both.
        wait_for(
            &deployments,
            "web",
            move |d: Option<&Deployment>| d.and_then(ready_pods) == Some(2),
            TIMEOUT,
        )
        .await
        .expect("both replicas become ready");
    }

    let pod_list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list Pods");
    assert_eq!(pod_list.items.len(), 2, "two Pods");
    for pod in &pod_list.items {
        let status = pod.status.as_ref().expect("Pod status");
        assert_eq!(
            status.phase.as_deref(),
            Some("Running"),
            "Pod {} is Running",
            pod.name_any()
        );
        assert!(
            pod.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some(),
            "Pod {} was scheduled",
            pod.name_any()
        );
    }

    let owned = replica_sets
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list ReplicaSets");
    assert_eq!(owned.items.len(), 1, "one ReplicaSet");
    let replica_set = &owned.items[0];
    let deployment_uid = available.uid().expect("a uid");
    assert!(
        replica_set
            .owner_references()
            .iter()
            .any(|o| o.uid == deployment_uid && o.controller == Some(true)),
        "the ReplicaSet is controlled by the Deployment"
    );

    deployments
        .delete("web", &DeleteParams::background())
        .await
        .expect("delete the Deployment");
    wait_for_deletion(&deployments, "web", TIMEOUT)
        .await
        .expect("the Deployment is gone");
    wait_for_deletion(&replica_sets, &replica_set.name_any(), TIMEOUT)
        .await
        .expect("the garbage collector deletes the ReplicaSet");
    for pod in &pod_list.items {
        wait_for_deletion(&pods, &pod.name_any(), TIMEOUT)
            .await
            .expect("the garbage collector deletes the Pods");
    }

    ns.cleanup_and_wait()
        .await
        .expect("the namespace is deleted");
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn namespaces_are_unique_and_removed_by_cleanup() {
    let first = TestNamespace::for_test("unique").await;
    let second = TestNamespace::create("unique")
        .await
        .expect("a second namespace");
    assert_ne!(first.name(), second.name());

    let client = first.client();
    let name = first.name().to_string();
    first.cleanup_and_wait().await.expect("cleanup");
    second.cleanup().await.expect("cleanup");
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
    assert!(
        namespaces
            .get_opt(&name)
            .await
            .expect("read namespace")
            .is_none(),
        "namespace {name} is gone after cleanup"
    );
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn a_dropped_namespace_is_deleted() {
    let ns = TestNamespace::for_test("dropped").await;
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(ns.client());
    let name = ns.name().to_string();
    // What happens when a test panics before its cleanup.
    drop(ns);
    let namespace = namespaces.get_opt(&name).await.expect("read namespace");
    assert!(
        namespace.is_none_or(|n| n.metadata.deletion_timestamp.is_some()),
        "namespace {name} is being deleted after drop"
    );
}

/// `wait_for_list` follows a watch of the selected objects: it returns once the list meets
/// the condition, ignores objects outside the selector, and on timeout says what it last saw.
#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn a_list_wait_sees_the_selected_objects_arrive_and_reports_what_it_saw() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kea_testkit::wait_for_list;

    let ns = TestNamespace::for_test("list-wait").await;
    let config_maps = ns.api::<ConfigMap>();
    let make = |name: &str, team: &str| -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "team": team } },
        }))
        .expect("a valid ConfigMap")
    };
    let names = |list: &[ConfigMap]| list.iter().map(|c| c.name_any()).collect::<Vec<_>>();
    // One object now, the rest while the wait runs: the wait must see the later ones arrive.
    let apply = PatchParams::apply("kea-testkit");
    config_maps
        .patch("a", &apply, &Patch::Apply(make("a", "blue")))
        .await
        .expect("apply a");
    let writer = {
        let config_maps = config_maps.clone();
        tokio::spawn(async move {
            for (name, team) in [("other", "red"), ("b", "blue"), ("c", "blue")] {
                config_maps
                    .patch(name, &apply, &Patch::Apply(make(name, team)))
                    .await
                    .expect("apply");
            }
        })
    };
    let blue = wait_for_list(
        &config_maps,
        "team=blue",
        "three blue ConfigMaps",
        |list| list.len() == 3,
        |list| format!("saw {:?}", names(list)),
        TIMEOUT,
    )
    .await
    .expect("the three blue ConfigMaps arrive");
    assert_eq!(names(&blue), ["a", "b", "c"]);
    writer.await.expect("the writer finished");

    let never = wait_for_list(
        &config_maps,
        "team=blue",
        "four blue ConfigMaps",
        |list| list.len() == 4,
        |list| format!("saw {:?}", names(list)),
        Duration::from_secs(2),
    )
    .await
    .expect_err("there are only three");
    let message = never.to_string();
    assert!(
        message.contains("four blue ConfigMaps") && message.contains(r#"saw ["a", "b", "c"]"#),
        "{message}"
    );
    ns.cleanup().await.expect("cleanup");
}
