//! Item 6: the examples' namespace enforces Pod Security "restricted": everything of the
//! examples runs there, and pods that break the restricted level (not only the baseline
//! one) are refused.

use k8s_openapi::api::core::v1::Pod;
use kea_e2e::{DEMO_NAMESPACE, client, pod_ready};
use kube::ResourceExt;
use kube::api::{Api, PostParams};

#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn demo_namespace_enforces_restricted_and_everything_runs_in_it() {
    let client = client().await.unwrap();
    kea_e2e::wait_demo_settled(&client, std::time::Duration::from_secs(120))
        .await
        .unwrap();
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

/// Asks the API server to admit `pod` in the demo namespace (a server-side dry run: through
/// admission, PodSecurity included, storing nothing); returns its refusal.
async fn refusal(client: kube::Client, pod: serde_json::Value) -> String {
    let pod: Pod = serde_json::from_value(pod).unwrap();
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match Api::<Pod>::namespaced(client, DEMO_NAMESPACE)
        .create(&params, &pod)
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status
                    .message
                    .contains("violates PodSecurity \"restricted:"),
                "{}",
                status.message
            );
            status.message
        }
        Ok(_) => panic!("{DEMO_NAMESPACE} admitted {}", pod.name_any()),
        Err(other) => panic!("unexpected error: {other}"),
    }
}

#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn privileged_pod_is_rejected_in_demo_namespace() {
    let client = client().await.unwrap();
    let message = refusal(
        client,
        serde_json::json!({
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
        }),
    )
    .await;
    eprintln!("refused as expected: {message}");
}

/// A pod that Pod Security "baseline" admits (no host access, nothing privileged) but that
/// leaves what "restricted" demands unset: only the restricted level refuses it, so its
/// refusal proves the level the namespace enforces, not just that some level is enforced.
#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn a_baseline_pod_is_refused_for_what_restricted_demands() {
    let client = client().await.unwrap();
    let message = refusal(
        client,
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": { "name": "e2e-baseline" },
            "spec": {
                "containers": [{ "name": "plain", "image": kea_e2e::SERVICE_IMAGE }]
            }
        }),
    )
    .await;
    for demand in [
        "allowPrivilegeEscalation",
        "capabilities",
        "runAsNonRoot",
        "seccompProfile",
    ] {
        assert!(message.contains(demand), "{demand} not named in: {message}");
    }
    eprintln!("refused as expected: {message}");
}
