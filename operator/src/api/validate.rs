//! Checks of a spec that the CRD schema cannot express. The API server enforces the schema
//! rules (bounds, patterns, CEL); what is here is reported by the operator in the `Ready`
//! condition (reason `InvalidSpec`) and as an event, and nothing is applied for that spec.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::api::MicroserviceSpec;

/// Every problem found in `spec`, as sentences that say what to fix. Empty when it is valid.
pub fn spec_problems(spec: &MicroserviceSpec) -> Vec<String> {
    let mut problems = Vec::new();
    if spec.image.trim().is_empty() {
        problems.push("spec.image must name a container image".to_owned());
    }
    if let Some(resources) = &spec.resources {
        let empty = BTreeMap::new();
        let requests = resources.requests.as_ref().unwrap_or(&empty);
        let limits = resources.limits.as_ref().unwrap_or(&empty);
        for (resource, limit) in limits {
            let Some(request) = requests.get(resource) else {
                continue;
            };
            match (parse_quantity(request), parse_quantity(limit)) {
                (Some(request_value), Some(limit_value)) if request_value > limit_value => {
                    problems.push(format!(
                        "spec.resources.requests.{resource} ({}) must not exceed spec.resources.limits.{resource} ({})",
                        request.0, limit.0
                    ));
                }
                (None, _) => problems.push(format!(
                    "spec.resources.requests.{resource} is not a quantity: {}",
                    request.0
                )),
                (_, None) => problems.push(format!(
                    "spec.resources.limits.{resource} is not a quantity: {}",
                    limit.0
                )),
                _ => {}
            }
        }
        if spec.autoscaling.is_some() && !requests.contains_key("cpu") {
            problems.push(
                "spec.autoscaling scales on CPU use relative to the CPU request: set spec.resources.requests.cpu"
                    .to_owned(),
            );
        }
    }
    if let Some(stores) = &spec.stores {
        let places = [
            (
                "sql",
                stores.sql.as_ref().map(|s| (&s.backup, &s.restore_from)),
            ),
            (
                "nosql",
                stores.nosql.as_ref().map(|s| (&s.backup, &s.restore_from)),
            ),
        ];
        for (role, store) in places {
            let Some((backup, restore_from)) = store else {
                continue;
            };
            if backup
                .as_ref()
                .is_some_and(|b| b.target.location().is_none())
            {
                problems.push(format!(
                    "spec.stores.{role}.backup.target must name exactly one of persistentVolumeClaim or s3"
                ));
            }
            if restore_from
                .as_ref()
                .is_some_and(|r| r.location().is_none())
            {
                problems.push(format!(
                    "spec.stores.{role}.restoreFrom must name exactly one of persistentVolumeClaim or s3"
                ));
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for dependency in &spec.depends_on {
        if !seen.insert(dependency.name.as_str()) {
            problems.push(format!(
                "spec.dependsOn names {} twice: list each dependency once",
                dependency.name
            ));
        }
    }
    problems
}

/// The value of a Kubernetes quantity (`250m`, `1.5`, `128Mi`, `1e3`) as a float, or None
/// when it is not one.
pub fn parse_quantity(quantity: &Quantity) -> Option<f64> {
    let text = quantity.0.trim();
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("Pi", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("Ei", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, factor) = SUFFIXES
        .iter()
        .find_map(|(suffix, factor)| text.strip_suffix(suffix).map(|n| (n, *factor)))
        .unwrap_or((text, 1.0));
    if number.is_empty() || number.starts_with('e') || number.starts_with('E') {
        return None;
    }
    number
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v * factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Autoscaling, Dependency};
    use k8s_openapi::api::core::v1::ResourceRequirements;

    fn quantity(text: &str) -> Quantity {
        Quantity(text.to_owned())
    }

    #[test]
    fn parses_quantities() {
        assert_eq!(parse_quantity(&quantity("250m")), Some(0.25));
        assert_eq!(parse_quantity(&quantity("2")), Some(2.0));
        assert_eq!(parse_quantity(&quantity("1Ki")), Some(1024.0));
        assert_eq!(parse_quantity(&quantity("1e3")), Some(1000.0));
        assert_eq!(parse_quantity(&quantity("1G")), Some(1e9));
        assert_eq!(parse_quantity(&quantity("lots")), None);
        assert_eq!(parse_quantity(&quantity("")), None);
    }

    #[test]
    fn a_default_spec_is_valid() {
        assert!(spec_problems(&MicroserviceSpec::with_image("img:1")).is_empty());
    }

    #[test]
    fn requests_above_limits_are_reported() {
        let mut spec = MicroserviceSpec::with_image("img:1");
        spec.resources = Some(ResourceRequirements {
            requests: Some(BTreeMap::from([("memory".to_owned(), quantity("1Gi"))])),
            limits: Some(BTreeMap::from([("memory".to_owned(), quantity("128Mi"))])),
            ..Default::default()
        });
        let problems = spec_problems(&spec);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("must not exceed"));
    }

    #[test]
    fn autoscaling_needs_a_cpu_request() {
        let mut spec = MicroserviceSpec::with_image("img:1");
        spec.autoscaling = Some(Autoscaling {
            min_replicas: 1,
            max_replicas: 3,
            target_cpu_utilization_percentage: 80,
        });
        assert!(
            spec_problems(&spec).is_empty(),
            "default resources have a CPU request"
        );
        spec.resources = Some(ResourceRequirements::default());
        assert!(spec_problems(&spec)[0].contains("requests.cpu"));
    }

    #[test]
    fn duplicate_dependencies_and_blank_images_are_reported() {
        let mut spec = MicroserviceSpec::with_image(" ");
        spec.depends_on = vec![
            Dependency { name: "a".into() },
            Dependency { name: "a".into() },
        ];
        assert_eq!(spec_problems(&spec).len(), 2);
    }
}
