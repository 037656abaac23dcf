//! The checked-in CRD must be exactly what the Rust types generate.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

const CHECKED_IN: &str = include_str!("../../operator/crd/microservices.kea.dev.yaml");

#[test]
fn checked_in_crd_is_up_to_date() {
    let generated = kea_cli::manifests::crd_yaml().expect("the CRD serializes");
    assert!(
        generated == CHECKED_IN,
        "operator/crd/microservices.kea.dev.yaml is out of date: run `{}`",
        kea_cli::manifests::REGENERATE
    );
}

#[test]
fn checked_in_crd_parses_back_to_the_generated_object() {
    let parsed: CustomResourceDefinition =
        serde_saphyr::from_str(CHECKED_IN).expect("the CRD YAML parses");
    assert_eq!(
        parsed,
        kea_operator::api::crd::crd().expect("the CRD builds")
    );
}

#[test]
fn every_schema_property_has_a_description() {
    fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, property) in properties {
                let here = format!("{path}.{name}");
                if property.get("description").is_none() {
                    missing.push(here.clone());
                }
                walk(&here, property, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let crd = serde_json::to_value(kea_operator::Microservice::crd()).expect("CRD to JSON");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut missing = Vec::new();
    walk("", &schema["properties"]["spec"], &mut missing);
    walk("", &schema["properties"]["status"], &mut missing);
    assert!(
        missing.is_empty(),
        "properties without a description: {missing:?}"
    );
}

#[test]
fn every_cel_rule_has_a_message() {
    fn walk(schema: &serde_json::Value, rules: &mut Vec<serde_json::Value>) {
        match schema {
            serde_json::Value::Object(fields) => {
                if let Some(serde_json::Value::Array(found)) =
                    fields.get("x-kubernetes-validations")
                {
                    rules.extend(found.iter().cloned());
                }
                fields.values().for_each(|v| walk(v, rules));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, rules)),
            _ => {}
        }
    }
    let crd = serde_json::to_value(kea_operator::Microservice::crd()).expect("CRD to JSON");
    let mut rules = Vec::new();
    walk(&crd, &mut rules);
    assert!(rules.len() >= 7, "expected the CEL rules, found {rules:?}");
    for rule in rules {
        assert!(
            rule.get("message").is_some(),
            "CEL rule without a message: {rule}"
        );
    }
}

/// `kubectl explain` shows a description as written: no line breaks inside a paragraph (the
/// doc comments' hard wraps), and no array items whose description runs into the field's.
#[test]
fn descriptions_read_as_paragraphs_in_kubectl_explain() {
    fn walk(path: &str, schema: &serde_json::Value, problems: &mut Vec<String>) {
        let Some(fields) = schema.as_object() else {
            return;
        };
        if let Some(text) = fields.get("description").and_then(|d| d.as_str()) {
            let hard_wrap = text
                .split("\n\n")
                .flat_map(|paragraph| paragraph.split('\n').skip(1))
                .any(|line| !line.starts_with("- ") && !line.starts_with("* "));
            if hard_wrap {
                problems.push(format!("{path}: a line break inside a paragraph: {text:?}"));
            }
            if fields
                .get("items")
                .and_then(|i| i.get("description"))
                .is_some()
            {
                problems.push(format!("{path}: the items repeat a description"));
            }
        }
        for (name, value) in fields {
            match value {
                serde_json::Value::Array(values) => {
                    for (i, v) in values.iter().enumerate() {
                        walk(&format!("{path}.{name}[{i}]"), v, problems);
                    }
                }
                other => walk(&format!("{path}.{name}"), other, problems),
            }
        }
    }
    let crd: serde_json::Value = serde_saphyr::from_str(CHECKED_IN).expect("the CRD YAML parses");
    let mut problems = Vec::new();
    walk("", &crd, &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
}
