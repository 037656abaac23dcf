//! A release upgraded under load: the example system runs on the previous release, requests
//! flow to frontend all along, and `helm upgrade` to this release fails none of them, rewrites
//! no Microservice and updates the CRD. `hack/e2e.sh release` installs the previous release
//! (the previous commit, released by hack/release.sh) and runs this test with the upgrade
//! command in KEA_E2E_UPGRADE, this release's CRD in KEA_E2E_RELEASE_CRD and its operator
//! image in KEA_E2E_RELEASE_OPERATOR_IMAGE.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kea_e2e::load::Load;
use kea_e2e::{
    DEMO_NAMESPACE, EXAMPLES, OPERATOR_NAMESPACE, client, service_url, wait_demo_settled,
};
use kea_operator::Microservice;
use kube::Api;
use kube::api::ListParams;

const TIMEOUT: Duration = Duration::from_secs(300);

/// (generation, spec) of each example Microservice: what an upgrade must leave as it was.
async fn specs(api: &Api<Microservice>) -> BTreeMap<String, (Option<i64>, serde_json::Value)> {
    let mut specs = BTreeMap::new();
    for name in EXAMPLES {
        let ms = api.get(name).await.unwrap();
        specs.insert(
            name.to_owned(),
            (
                ms.metadata.generation,
                serde_json::to_value(&ms.spec).unwrap(),
            ),
        );
    }
    specs
}

/// The operator's image: what the upgrade changes.
async fn operator_image(client: &kube::Client) -> String {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let list = deployments
        .list(&ListParams::default().labels("app.kubernetes.io/name=kea-operator"))
        .await
        .unwrap();
    let pod = list
        .items
        .into_iter()
        .next()
        .and_then(|deployment| deployment.spec?.template.spec)
        .expect("the operator's Deployment");
    pod.containers[0].image.clone().unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs kind with the previous release installed: hack/e2e.sh release"]
async fn helm_upgrade_under_load_fails_no_request() {
    let upgrade = std::env::var("KEA_E2E_UPGRADE").expect("KEA_E2E_UPGRADE: the upgrade command");
    let crd_file =
        std::env::var("KEA_E2E_RELEASE_CRD").expect("KEA_E2E_RELEASE_CRD: the release's CRD");
    let released_image = std::env::var("KEA_E2E_RELEASE_OPERATOR_IMAGE")
        .expect("KEA_E2E_RELEASE_OPERATOR_IMAGE: the release's operator image, by digest");
    let client = client().await.unwrap();
    wait_demo_settled(&client, TIMEOUT).await.unwrap();
    let microservices: Api<Microservice> = Api::namespaced(client.clone(), DEMO_NAMESPACE);
    let before = specs(&microservices).await;
    let image_before = operator_image(&client).await;

    // A declared caller of frontend, so that its NetworkPolicy lets the load in.
    let labels = BTreeMap::from([("calls.kea.dev/frontend".to_owned(), "true".to_owned())]);
    let load = Load::start(
        &client,
        DEMO_NAMESPACE,
        "upgrade-load",
        labels,
        None,
        &service_url("frontend", "/"),
        50,
    )
    .await
    .unwrap();

    let started = Instant::now();
    let status = tokio::process::Command::new("sh")
        .args(["-c", &upgrade])
        .status()
        .await
        .unwrap();
    assert!(status.success(), "`{upgrade}` failed: {status}");
    let upgraded_in = started.elapsed();
    // The new operator reconciles everything it finds; the system settles again, and the
    // load goes on a while after that.
    wait_demo_settled(&client, TIMEOUT).await.unwrap();
    let counts = load.counts().await.unwrap();
    load.wait_for_answers(counts.ok + 200, Duration::from_secs(60))
        .await
        .unwrap();
    let report = load.stop().await.unwrap();
    let image_after = operator_image(&client).await;
    eprintln!(
        "e2e: helm upgrade in {upgraded_in:.1?} under load: {} answered, {} failed; operator {image_before} -> {image_after}",
        report.counts.ok, report.counts.failed
    );
    assert_eq!(
        report.counts.failed, 0,
        "requests failed:\n{}",
        report.output
    );
    // The operator runs this release's image (the same as before when the previous commit
    // built the same one).
    assert_eq!(image_after, released_image);

    // The user's objects are as they were: no spec rewritten, no generation bumped.
    assert_eq!(specs(&microservices).await, before);

    // The CRD is this release's.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let live = crds.get("microservices.kea.dev").await.unwrap();
    let wanted: CustomResourceDefinition =
        serde_saphyr::from_str(&std::fs::read_to_string(&crd_file).unwrap()).unwrap();
    assert_eq!(
        serde_json::to_value(&live.spec.versions).unwrap(),
        serde_json::to_value(&wanted.spec.versions).unwrap(),
        "the live CRD is not the one of {crd_file}"
    );
}
