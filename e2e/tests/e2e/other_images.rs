//! Images from elsewhere (docs/README.md, "Bring your own image"), in namespaces that enforce
//! Pod Security "restricted": a tutorial-style Python web app (images/pyweb: port 80, no
//! health routes, root by default) runs as non-root and answers through its Service; when it
//! crashes or fails its probes, the Microservice's Ready condition says why, in the words of
//! the program and of the kubelet, within 60 s.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kea_e2e::{ClusterClient, client, namespace, pods_of, wait_ready, wait_ready_pods};
use kea_operator::Microservice;
use kea_operator::api::conditions;
use kea_testkit::microservices::{condition, microservice};
use kube::api::{Api, PostParams};

/// The image of images/pyweb, built by hack/store-images.sh and loaded into kind.
const PYWEB_IMAGE: &str = "kea.dev/kea-pyweb:dev";
/// What the issue promises: the reason on the status within a minute.
const EXPLAINED_WITHIN: Duration = Duration::from_secs(60);

fn pyweb(name: &str, extra: serde_json::Value) -> Microservice {
    let mut spec = serde_json::json!({
        "image": PYWEB_IMAGE,
        "port": 80,
        "drainSeconds": 1,
        "deregistrationSeconds": 0,
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    microservice(name, spec)
}

/// Waits until the Microservice's Ready condition is False with `reason` and a message
/// that contains every one of `expected`; returns the message and how long it took from
/// `since`.
async fn wait_explained(
    api: &Api<Microservice>,
    name: &str,
    reasons: &[&str],
    expected: &[&str],
    since: Instant,
) -> (String, String, Duration) {
    let explained = |ms: Option<&Microservice>| {
        ms.and_then(|ms| condition(ms, conditions::READY))
            .is_some_and(|c| {
                c.status == "False"
                    && reasons.contains(&c.reason.as_str())
                    && expected.iter().all(|e| c.message.contains(e))
            })
    };
    let found = kea_testkit::wait_for(api, name, explained, EXPLAINED_WITHIN)
        .await
        .unwrap_or_else(|error| {
            panic!("Ready=False with a reason of {reasons:?} and a message containing {expected:?}: {error}")
        })
        .expect("the Microservice exists");
    let ready = condition(&found, conditions::READY).expect("a Ready condition");
    (ready.reason.clone(), ready.message.clone(), since.elapsed())
}

#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn an_image_listening_on_port_80_runs_as_non_root_and_answers_through_its_service() {
    let client = client().await.unwrap();
    let ns = namespace("port80").await.unwrap();
    let api = ns.api::<Microservice>();
    // No health routes: readiness GETs the home page, liveness only connects.
    let ms = pyweb(
        "web",
        serde_json::json!({ "probes": { "path": "/", "liveness": { "type": "TCP" } } }),
    );
    api.create(&PostParams::default(), &ms).await.unwrap();
    wait_ready(&api, "web", Duration::from_secs(180))
        .await
        .unwrap();
    let pods = wait_ready_pods(&ns.api::<Pod>(), "web", 1, Duration::from_secs(60))
        .await
        .unwrap();
    let security = pods[0]
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    assert_eq!(security.run_as_non_root, Some(true));
    assert_ne!(security.run_as_user, Some(0));

    // Through the Service, from a pod the NetworkPolicy admits as a declared caller.
    let caller = ClusterClient::caller_at(&client, ns.name(), "web", "http://web/")
        .await
        .unwrap();
    let answer = caller.http("http://web/", None).await.unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, "Hello from Python!\n");
    ns.cleanup().await.unwrap();
}

#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn a_crash_looping_image_shows_its_last_log_line_on_the_status() {
    let ns = namespace("crash").await.unwrap();
    let api = ns.api::<Microservice>();
    let ms = pyweb(
        "crashes",
        serde_json::json!({
            "probes": { "path": "/" },
            "env": [{ "name": "GREETING_FILE", "value": "/etc/pyweb/greeting.txt" }],
        }),
    );
    let start = Instant::now();
    api.create(&PostParams::default(), &ms).await.unwrap();
    let (reason, message, took) = wait_explained(
        &api,
        "crashes",
        &["CrashLoopBackOff"],
        &[
            "exited with code 1",
            "FileNotFoundError: [Errno 2] No such file or directory: '/etc/pyweb/greeting.txt'",
        ],
        start,
    )
    .await;
    eprintln!("explained after {took:?}: {reason}: {message}");
    ns.cleanup().await.unwrap();
}

#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn an_image_without_readyz_shows_the_failing_probe_on_the_status() {
    let ns = namespace("noreadyz").await.unwrap();
    let api = ns.api::<Microservice>();
    // The default probes: GET /healthz and /readyz, which this image does not serve.
    let ms = pyweb("noreadyz", serde_json::json!({}));
    let start = Instant::now();
    api.create(&PostParams::default(), &ms).await.unwrap();
    let (reason, message, took) = wait_explained(
        &api,
        "noreadyz",
        &["ReadinessProbeFailed", "LivenessProbeFailed"],
        &[
            "readiness probe GET /readyz on port 80 failed",
            "statuscode: 404",
            "spec.probes",
        ],
        start,
    )
    .await;
    eprintln!("explained after {took:?}: {reason}: {message}");
    // Nothing of it is Ready, and the pods say the same as the status.
    let pods = pods_of(&ns.api::<Pod>(), "noreadyz").await.unwrap();
    assert!(!pods.is_empty() && !pods.iter().any(kea_e2e::pod_ready));
    ns.cleanup().await.unwrap();
}
