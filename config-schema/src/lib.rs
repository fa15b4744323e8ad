//! The JSON Schema of `pluginConfig`, generated from `mesh_authn::config::PluginConfig`.

pub mod convert;
pub mod reference;

use mesh_authn::config::PluginConfig;

pub const SCHEMA_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/plugin-config.schema.json");

pub fn schema_json() -> Result<String, serde_json::Error> {
    let schema = schemars::schema_for!(PluginConfig);
    serde_json::to_string_pretty(&schema).map(|s| s + "\n")
}

/// `docs/configuration.md`, from the same schema.
pub fn reference() -> Result<String, serde_json::Error> {
    let schema = serde_json::to_value(schemars::schema_for!(PluginConfig))?;
    Ok(reference::reference_markdown(&schema))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_schema_is_current() {
        let committed = std::fs::read_to_string(SCHEMA_FILE).unwrap_or_default();
        assert!(
            committed == schema_json().unwrap(),
            "config-schema/plugin-config.schema.json is stale: run `make schema`"
        );
    }

    #[test]
    fn committed_reference_is_current() {
        let committed = std::fs::read_to_string(reference::REFERENCE_FILE).unwrap_or_default();
        assert!(
            committed == reference().unwrap(),
            "docs/configuration.md is stale: run `make schema`"
        );
    }
}
