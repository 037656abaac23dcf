//! An operator confined to one namespace (the chart's `operator.watchNamespace`): it runs
//! the Microservices of that namespace, leaves every other namespace alone, and holds no
//! permission outside it but the cluster-scoped reads. `hack/e2e.sh helm` upgrades the
//! release into this mode and runs this module with `KEA_E2E_WATCH_NAMESPACE` set.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kea_e2e::{OPERATOR_NAMESPACE, microservice, namespace, wait_ready};
use kea_operator::Microservice;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

/// The namespace the operator was confined to.
const WATCH_NAMESPACE_ENV: &str = "KEA_E2E_WATCH_NAMESPACE";

/// Whether the operator's ServiceAccount may `verb` `resource` in `namespace` (all
/// namespaces when empty), as the API server's authorizer answers.
async fn operator_may(
    client: &Client,
    account: &str,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: &str,
) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!(
                "system:serviceaccount:{OPERATOR_NAMESPACE}:{account}"
            )),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .is_some_and(|status| status.allowed)
}

#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn an_operator_confined_to_one_namespace_runs_it_and_leaves_the_rest() {
    let watched = std::env::var(WATCH_NAMESPACE_ENV).unwrap_or_else(|_| {
        panic!(
            "{WATCH_NAMESPACE_ENV} is unset: this test needs an operator confined to one \
             namespace, named there (hack/e2e.sh helm confines it and sets the variable)"
        )
    });
    let client = kea_e2e::client().await.unwrap();
    let account = Api::<Deployment>::namespaced(client.clone(), OPERATOR_NAMESPACE)
        .get("kea-operator")
        .await
        .unwrap()
        .spec
        .and_then(|spec| spec.template.spec)
        .and_then(|pod| pod.service_account_name)
        .unwrap();

    // The watched namespace is run as usual.
    let inside: Api<Microservice> = Api::namespaced(client.clone(), &watched);
    inside
        .create(&PostParams::default(), &microservice("web", 1))
        .await
        .unwrap();
    wait_ready(&inside, "web", Duration::from_secs(300))
        .await
        .unwrap();

    // Least privilege, as the authorizer sees it.
    let other = namespace("unwatched").await.unwrap();
    let checks = [
        ("patch", "apps", "deployments", watched.as_str(), true),
        ("watch", "kea.dev", "microservices", watched.as_str(), true),
        ("list", "apps", "deployments", other.name(), false),
        ("patch", "apps", "deployments", other.name(), false),
        ("list", "kea.dev", "microservices", "", false),
        ("get", "", "secrets", other.name(), false),
    ];
    for (verb, group, resource, namespace, allowed) in checks {
        assert_eq!(
            operator_may(&client, &account, verb, group, resource, namespace).await,
            allowed,
            "{verb} {resource} in namespace '{namespace}' (empty: all)"
        );
    }

    // A Microservice elsewhere gets nothing: no status, no Deployment. The one inside took
    // seconds to get both, so a window several times that long shows the operator ignores it.
    let outside = other.api::<Microservice>();
    outside
        .create(&PostParams::default(), &microservice("web", 1))
        .await
        .unwrap();
    let deployments = other.api::<Deployment>();
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(15) {
        let ms = outside.get("web").await.unwrap();
        assert!(
            ms.status.is_none(),
            "a Microservice outside {watched} got a status: {:?}",
            ms.status
        );
        assert!(
            deployments.get_opt("web").await.unwrap().is_none(),
            "a Deployment appeared outside {watched}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!(
        "e2e: operator confined to {watched}: {} Ready there, {}/web untouched for 15 s",
        inside.get("web").await.unwrap().name_any(),
        other.name()
    );
    inside.delete("web", &Default::default()).await.unwrap();
    other.cleanup().await.unwrap();
}
