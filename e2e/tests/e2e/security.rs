//! Item 6: the examples' namespace enforces Pod Security "restricted", and a violating
//! pod is refused there.

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kea_e2e::{DEMO_NAMESPACE, client, enabled, pod_ready, restricted_labels};
use kube::ResourceExt;
use kube::api::{Api, PostParams};

#[tokio::test]
async fn demo_namespace_enforces_restricted_and_everything_runs_in_it() {
    if !enabled("demo_namespace_enforces_restricted_and_everything_runs_in_it") {
        return;
    }
    let client = client().await.unwrap();
    kea_e2e::wait_demo_settled(&client, std::time::Duration::from_secs(120))
        .await
        .unwrap();
    let namespace = Api::<Namespace>::all(client.clone())
        .get(DEMO_NAMESPACE)
        .await
        .unwrap();
    let labels = namespace.labels();
    for (key, value) in restricted_labels() {
        assert_eq!(
            labels.get(&key),
            Some(&value),
            "namespace {DEMO_NAMESPACE} label {key}"
        );
    }
    // Every pod of the demo runs (admitted under "restricted") and is Ready.
    let pods = Api::<Pod>::namespaced(client.clone(), DEMO_NAMESPACE)
        .list(&Default::default())
        .await
        .unwrap();
    let live: Vec<&Pod> = pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    assert!(
        live.len() >= 4,
        "users, orders and 2 frontend pods expected, got {}",
        live.len()
    );
    for pod in live {
        assert!(pod_ready(pod), "pod {} is not Ready", pod.name_any());
        let security = pod
            .spec
            .as_ref()
            .unwrap()
            .security_context
            .clone()
            .unwrap_or_default();
        assert_eq!(
            security.run_as_non_root,
            Some(true),
            "pod {}",
            pod.name_any()
        );
    }
}

#[tokio::test]
async fn privileged_pod_is_rejected_in_demo_namespace() {
    if !enabled("privileged_pod_is_rejected_in_demo_namespace") {
        return;
    }
    let client = client().await.unwrap();
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "e2e-privileged" },
        "spec": {
            "hostNetwork": true,
            "containers": [{
                "name": "root",
                "image": kea_e2e::SERVICE_IMAGE,
                "securityContext": { "privileged": true, "runAsUser": 0 }
            }]
        }
    }))
    .unwrap();
    // A server-side dry run goes through admission (PodSecurity included) and stores nothing.
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let error = Api::<Pod>::namespaced(client, DEMO_NAMESPACE)
        .create(&params, &pod)
        .await
        .expect_err("a privileged pod must be refused in a restricted namespace");
    match error {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status.message.contains("violates PodSecurity"),
                "{}",
                status.message
            );
            assert!(status.message.contains("restricted"), "{}", status.message);
            eprintln!("refused as expected: {}", status.message);
        }
        other => panic!("unexpected error: {other}"),
    }
}
