//! The committed JSON Schemas match the config types.

use crate::support::root;

#[test]
fn committed_schemas_are_current() {
    let mut stale = Vec::new();
    for (name, schema) in entrepot::schema::all() {
        let path = root().join("schemas").join(name);
        let expected = entrepot::schema::to_file_text(&schema);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != expected {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "stale schemas {stale:?}: regenerate with `cargo run -- schema --out schemas` and commit"
    );
}

#[test]
fn generated_schemas_reject_unknown_keys_and_document_fields() {
    let schema = entrepot::schema::platform_schema();
    assert_eq!(schema["additionalProperties"], false);
    let props = schema["properties"].as_object().unwrap();
    for (key, prop) in props {
        assert!(
            prop.get("description").is_some(),
            "field {key} has no description"
        );
    }
    let v = jsonschema::validator_for(&schema).unwrap();
    assert!(!v.is_valid(&serde_json::json!({"platform": "x", "bogus": 1})));
    assert!(v.is_valid(&serde_json::json!({"platform": "x"})));
}

#[test]
fn committed_reference_is_current() {
    let committed = std::fs::read_to_string(root().join("docs/reference.md")).unwrap_or_default();
    assert!(
        committed == entrepot::reference::markdown(),
        "docs/reference.md is stale: regenerate with `cargo run -- schema --out schemas --docs docs/reference.md` and commit"
    );
}
