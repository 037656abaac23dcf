//! Item 7: invalid Microservices are refused at apply time with a readable message
//! (server-side dry run: nothing is stored).

use kea_e2e::{DEMO_NAMESPACE, client, microservice};
use kea_operator::Microservice;
use kea_operator::api::{Autoscaling, Dependency, ProbeSpec, Probes};
use kube::api::{Api, PostParams};

#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn invalid_microservices_are_rejected_with_a_readable_message() {
    let client = client().await.unwrap();
    let api: Api<Microservice> = Api::namespaced(client, DEMO_NAMESPACE);
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };

    let mut cases: Vec<(&str, Microservice, &str)> = Vec::new();
    let mut ms = microservice("e2e-self", 1);
    ms.spec.depends_on = vec![Dependency {
        name: "e2e-self".into(),
    }];
    cases.push((
        "depends on itself",
        ms,
        "spec.dependsOn must not name the Microservice itself: remove this Microservice's own name",
    ));
    let ms = microservice("e2e.dotted", 1);
    cases.push((
        "name with a dot",
        ms,
        "metadata.name must be a DNS-1035 label",
    ));
    let ms = microservice("e2e-negative", -1);
    cases.push((
        "negative replicas",
        ms,
        "spec.replicas in body should be greater than or equal to 0",
    ));
    let mut ms = microservice("e2e-space", 1);
    ms.spec.image = "kea.dev/kea-service: dev".into();
    cases.push((
        "image with a space",
        ms,
        "image must be an image reference without spaces",
    ));
    let mut ms = microservice("e2e-minmax", 1);
    ms.spec.autoscaling = Some(Autoscaling {
        min_replicas: 5,
        max_replicas: 2,
        target_cpu_utilization_percentage: 80,
    });
    cases.push((
        "autoscaling min > max",
        ms,
        "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas",
    ));
    let mut ms = microservice("e2e-probe", 1);
    ms.spec.probes = Some(Probes {
        readiness: Some(ProbeSpec {
            path: Some("readyz".into()),
            ..ProbeSpec::default()
        }),
        ..Probes::default()
    });
    cases.push((
        "probe path without /",
        ms,
        "probe path must start with '/', e.g. /healthz",
    ));

    for (case, ms, expected) in cases {
        match api.create(&params, &ms).await {
            Ok(_) => panic!("{case}: accepted, expected a rejection mentioning {expected:?}"),
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{case}: {status:?}");
                assert!(
                    status.message.contains(expected),
                    "{case}: {:?} lacks {expected:?}",
                    status.message
                );
                eprintln!("{case}: refused: {}", status.message);
            }
            Err(other) => panic!("{case}: unexpected error {other}"),
        }
    }
    // And a valid one passes the same dry run.
    api.create(&params, &microservice("e2e-valid", 1))
        .await
        .unwrap();
}
