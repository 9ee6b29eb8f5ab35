//! One tenant's table inside the tenants file, as the admin API shows and replaces it.
//!
//! Consumes the file's TOML text and a tenant's settings as a JSON object (the same fields
//! as its `[[tenant]]` table); produces that table as JSON, and the file's text with the
//! table replaced or added. Validation is the store's ([`crate::store`]): this module only
//! moves tables. No I/O, no state.

use serde_json::{Map, Value};

/// Why a tenant's table cannot be read from or written into the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The body says something the file cannot hold (the message names the field).
    #[error("{0}")]
    Body(String),
    /// The stored file is not TOML with a `tenant` array (never written by the API).
    #[error("the stored tenants file cannot be edited: {0}")]
    File(String),
}

fn tables(text: &str) -> Result<toml::Table, EditError> {
    toml::from_str(text).map_err(|e| EditError::File(e.to_string()))
}

fn tenants_mut(doc: &mut toml::Table) -> Result<&mut Vec<toml::Value>, EditError> {
    match doc
        .entry("tenant")
        .or_insert_with(|| toml::Value::Array(Vec::new()))
    {
        toml::Value::Array(list) => Ok(list),
        _ => Err(EditError::File("`tenant` is not an array of tables".into())),
    }
}

fn is_tenant(value: &toml::Value, id: &str) -> bool {
    value.get("id").and_then(toml::Value::as_str) == Some(id)
}

/// The tenant's table as a JSON object; `None` when the file has no such tenant.
pub fn tenant(text: &str, id: &str) -> Result<Option<Value>, EditError> {
    let mut doc = tables(text)?;
    let list = tenants_mut(&mut doc)?;
    let Some(table) = list.iter().find(|t| is_tenant(t, id)) else {
        return Ok(None);
    };
    serde_json::to_value(table)
        .map(Some)
        .map_err(|e| EditError::File(e.to_string()))
}

/// The file with tenant `id`'s table replaced by `settings` (added when it is new).
/// `settings` may name the id; another id than the path's is refused.
pub fn with_tenant(
    text: &str,
    id: &str,
    mut settings: Map<String, Value>,
) -> Result<String, EditError> {
    match settings.get("id") {
        None => {}
        Some(Value::String(named)) if named == id => {}
        Some(other) => {
            return Err(EditError::Body(format!(
                "field `id`: {other} is not the tenant of the path ({id:?})"
            )));
        }
    }
    if let Some(field) = find_null(&settings) {
        return Err(EditError::Body(format!(
            "field `{field}`: null is not a value (leave the field out for its default)"
        )));
    }
    settings.insert("id".into(), Value::String(id.to_owned()));
    let table = toml::Value::try_from(Value::Object(settings))
        .map_err(|e| EditError::Body(format!("the settings cannot be a TOML table: {e}")))?;
    let mut doc = tables(text)?;
    let list = tenants_mut(&mut doc)?;
    match list.iter_mut().find(|t| is_tenant(t, id)) {
        Some(slot) => *slot = table,
        None => list.push(table),
    }
    toml::to_string(&doc).map_err(|e| EditError::File(e.to_string()))
}

/// The dotted path of the first `null` in `settings` (TOML has no null).
fn find_null(settings: &Map<String, Value>) -> Option<String> {
    fn walk(value: &Value, path: String) -> Option<String> {
        match value {
            Value::Null => Some(path),
            Value::Object(map) => map.iter().find_map(|(k, v)| walk(v, format!("{path}.{k}"))),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| walk(v, format!("{path}[{i}]"))),
            _ => None,
        }
    }
    settings.iter().find_map(|(k, v)| walk(v, k.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[tiers.standard]
llm_concurrency = 4
webhook_rate_limit = 60

[[tenant]]
id = "acme"
numbers = ["+15005550006"]
greeting = "Hello."

[[tenant]]
id = "globex"
numbers = ["+15005550007"]
greeting = "Globex."
"#;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn reads_one_tenant_as_json() {
        let acme = tenant(FILE, "acme").unwrap().unwrap();
        assert_eq!(acme["greeting"], "Hello.");
        assert_eq!(acme["numbers"][0], "+15005550006");
        assert_eq!(tenant(FILE, "initech").unwrap(), None);
    }

    #[test]
    fn replaces_one_tenant_and_leaves_the_others() {
        let settings = object(serde_json::json!({"numbers": ["+15005550006"], "greeting": "Hi!"}));
        let text = with_tenant(FILE, "acme", settings).unwrap();
        assert_eq!(tenant(&text, "acme").unwrap().unwrap()["greeting"], "Hi!");
        assert_eq!(
            tenant(&text, "globex").unwrap().unwrap()["greeting"],
            "Globex."
        );
        let doc: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(doc["tenant"].as_array().unwrap().len(), 2);
        assert_eq!(
            doc["tiers"]["standard"]["llm_concurrency"].as_integer(),
            Some(4)
        );
    }

    #[test]
    fn adds_a_new_tenant() {
        let settings = object(serde_json::json!({"numbers": ["+15005550009"]}));
        let text = with_tenant(FILE, "initech", settings).unwrap();
        assert_eq!(tenant(&text, "initech").unwrap().unwrap()["id"], "initech");
    }

    #[test]
    fn refuses_another_id_and_nulls_naming_the_field() {
        let other = object(serde_json::json!({"id": "globex"}));
        let error = with_tenant(FILE, "acme", other).unwrap_err();
        assert!(error.to_string().contains("field `id`"), "{error}");
        let null = object(serde_json::json!({"barge_in": {"mode": null}}));
        let error = with_tenant(FILE, "acme", null).unwrap_err();
        assert!(
            error.to_string().contains("field `barge_in.mode`"),
            "{error}"
        );
    }
}
