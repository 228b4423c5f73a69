//! JSON Schemas generated from the configuration types. The committed copies under `schemas/`
//! are what editors use; a test fails when they drift from the types.

use schemars::JsonSchema;
use serde_json::Value;

use crate::config::gateway::GatewayFile;
use crate::config::platform::PlatformFile;

/// Base of the schemas' `$id`s.
pub const SCHEMA_BASE: &str = "https://entrepot.dev/schemas";

fn generate<T: JsonSchema>(id: &str, title: &str) -> Value {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>();
    let mut value = schema.to_value();
    if let Value::Object(map) = &mut value {
        map.insert("$id".into(), Value::String(format!("{SCHEMA_BASE}/{id}")));
        map.insert("title".into(), Value::String(title.into()));
    }
    value
}

/// The schema of a platform file (`platforms/*.yaml`).
pub fn platform_schema() -> Value {
    generate::<PlatformFile>("platform.schema.json", "entrepot platform file")
}

/// The schema of the gateway file (`entrepot.yaml`).
pub fn gateway_schema() -> Value {
    generate::<GatewayFile>("gateway.schema.json", "entrepot gateway file")
}

/// Every generated schema with the file name it is committed under in `schemas/`.
pub fn all() -> Vec<(&'static str, Value)> {
    vec![
        ("platform.schema.json", platform_schema()),
        ("gateway.schema.json", gateway_schema()),
    ]
}

/// A schema as committed: pretty-printed with a final newline.
pub fn to_file_text(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}
