//! Checking live answers against an OpenAPI description (docs/openapi.json for the credential
//! API, docs/admin-openapi.json for the admin API): `$ref`s resolved, and the subset of JSON
//! Schema those documents use (type, required, properties, items, oneOf, enum, minimum).

use serde_json::Value;

/// `v`, or what its `$ref` points to in `spec`.
pub fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let mut cur = spec;
            for part in r.trim_start_matches("#/").split('/') {
                cur = &cur[part];
            }
            resolve(spec, cur)
        }
        None => v,
    }
}

/// Checks `v` against the subset of JSON Schema the spec uses.
pub fn conforms(spec: &Value, schema: &Value, v: &Value) -> Result<(), String> {
    let schema = resolve(spec, schema);
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = options
            .iter()
            .filter(|o| conforms(spec, o, v).is_ok())
            .count();
        return if matching == 1 {
            Ok(())
        } else {
            Err(format!("{v} matches {matching} of oneOf"))
        };
    }
    let ok = match schema.get("type").and_then(Value::as_str) {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_u64() || v.is_i64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        _ => true,
    };
    if !ok {
        return Err(format!("{v} is not {}", schema["type"]));
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            return Err(format!("{v} is not one of {}", schema["enum"]));
        }
    }
    if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if n < min {
            return Err(format!("{v} is below the minimum {min}"));
        }
    }
    for r in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = r.as_str().unwrap();
        if v.get(key).is_none() {
            return Err(format!("missing `{key}` in {v}"));
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, s) in props {
            if let Some(x) = v.get(k) {
                conforms(spec, s, x)?;
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for x in arr {
            conforms(spec, items, x)?;
        }
    }
    Ok(())
}
