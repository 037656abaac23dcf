//! The CustomResourceDefinition of `Microservice`, as the API server gets it: generated from the
//! Rust types in [`crate::api`], with descriptions folded for `kubectl explain`. `kea-operator
//! crd` prints it; the checked-in copies (`operator/crd/microservices.kea.dev.yaml`,
//! `deploy/00-crd.yaml`, the chart's template) are made from that by `cargo xtask generate`, and
//! tests fail when they drift.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use crate::api::Microservice;
use crate::error::Result;

/// The CustomResourceDefinition of `Microservice`, with descriptions that read well in
/// `kubectl explain` (see [`fold_descriptions`]).
pub fn crd() -> Result<CustomResourceDefinition> {
    let mut crd = serde_json::to_value(Microservice::crd())?;
    fold_descriptions(&mut crd);
    Ok(serde_json::from_value(crd)?)
}

/// Makes the doc comments that became descriptions read as kubebuilder's do: the hard wraps of
/// the source are joined into one line per paragraph (blank lines and list items stay), and an
/// array's items lose a description of their own when the field has one, so `kubectl explain`
/// does not run the two together.
pub fn fold_descriptions(schema: &mut Value) {
    match schema {
        Value::Object(fields) => {
            if let Some(Value::String(text)) = fields.get_mut("description") {
                *text = fold(text);
            }
            if fields.contains_key("description")
                && let Some(Value::Object(items)) = fields.get_mut("items")
            {
                items.remove("description");
            }
            fields.values_mut().for_each(fold_descriptions);
        }
        Value::Array(values) => values.iter_mut().for_each(fold_descriptions),
        _ => {}
    }
}

/// Joins the lines of each paragraph of `text` with spaces; a list item starts a line.
fn fold(text: &str) -> String {
    let paragraphs: Vec<String> = text
        .split("\n\n")
        .map(|paragraph| {
            let mut folded = String::new();
            for line in paragraph.lines().map(str::trim).filter(|l| !l.is_empty()) {
                if !folded.is_empty() {
                    let item = line.starts_with("- ") || line.starts_with("* ");
                    folded.push(if item { '\n' } else { ' ' });
                }
                folded.push_str(line);
            }
            folded
        })
        .filter(|paragraph| !paragraph.is_empty())
        .collect();
    paragraphs.join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn folds_hard_wraps_and_keeps_paragraphs_and_lists() {
        assert_eq!(fold("one\ntwo three\nfour"), "one two three four");
        assert_eq!(fold("first\npart\n\nsecond"), "first part\n\nsecond");
        assert_eq!(fold("items:\n- a\n- b\nmore b"), "items:\n- a\n- b more b");
    }

    #[test]
    fn an_arrays_items_lose_their_description_when_the_field_has_one() {
        let mut schema = json!({
            "description": "Calls.",
            "items": {"description": "A call.", "properties": {"x": {"description": "a\nb"}}}
        });
        fold_descriptions(&mut schema);
        assert_eq!(
            schema,
            json!({"description": "Calls.", "items": {"properties": {"x": {"description": "a b"}}}})
        );
    }
}
