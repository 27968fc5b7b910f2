//! The compatibility classifier: what changed between two payload schemas, and whether a
//! reader of one can read the other.
//!
//! Compatible: a new optional field. Breaking: a field removed, a type changed (including
//! its format, range or allowed values), a new required field, a field that became
//! required or optional. Annotations (`title`, `description`, `examples`, ...) are ignored.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

/// What kind of change a [`Change`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// A field that is not required was added (compatible).
    OptionalFieldAdded,
    /// A required field was added (breaking: old payloads lack it).
    RequiredFieldAdded,
    /// A field was removed (breaking: old readers need it).
    FieldRemoved,
    /// A field that was optional is required now (breaking).
    BecameRequired,
    /// A field that was required is optional now (breaking for readers that rely on it).
    BecameOptional,
    /// The type changed, from the first description to the second (breaking).
    TypeChanged(String, String),
}

/// One difference between two schemas, at a field path (`book_id`, `items[].sku`; empty
/// for the payload itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The path of the field.
    pub path: String,
    /// What changed.
    pub kind: ChangeKind,
}

impl Change {
    /// Whether a reader of one schema may fail on payloads of the other.
    pub fn is_breaking(&self) -> bool {
        !matches!(self.kind, ChangeKind::OptionalFieldAdded)
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.path;
        match &self.kind {
            ChangeKind::OptionalFieldAdded => write!(f, "new optional field `{p}`"),
            ChangeKind::RequiredFieldAdded => write!(f, "new required field `{p}`"),
            ChangeKind::FieldRemoved => write!(f, "field `{p}` removed"),
            ChangeKind::BecameRequired => write!(f, "field `{p}` became required"),
            ChangeKind::BecameOptional => write!(f, "field `{p}` became optional"),
            ChangeKind::TypeChanged(from, to) if p.is_empty() => {
                write!(f, "the payload's type changed from {from} to {to}")
            }
            ChangeKind::TypeChanged(from, to) => {
                write!(f, "type of `{p}` changed from {from} to {to}")
            }
        }
    }
}

/// Keywords that describe rather than constrain; changing them changes nothing.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// The changes from `old` to `new`, in field order; empty when they accept the same
/// payloads as far as the classifier can tell.
///
/// ```
/// use serde_json::json;
/// use tidings_core::catalog::compare;
/// let v1 = json!({"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]});
/// let v2 = json!({"type": "object", "properties": {"id": {"type": "integer"},
///                 "note": {"type": ["string", "null"]}}, "required": ["id"]});
/// let changes = compare(&v1, &v2);
/// assert_eq!(changes.len(), 1);
/// assert_eq!(changes[0].to_string(), "new optional field `note`");
/// assert!(!changes[0].is_breaking());
/// assert!(compare(&v2, &v1)[0].is_breaking()); // `note` removed
/// ```
pub fn compare(old: &Value, new: &Value) -> Vec<Change> {
    let mut changes = Vec::new();
    diff("", old, new, &mut changes);
    changes
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// The object's keywords without annotations.
fn constraints(v: &Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m
            .iter()
            .filter(|(k, _)| !ANNOTATIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        // `true`/`false` schemas: anything / nothing.
        other => {
            let mut m = Map::new();
            m.insert("$bool".into(), other.clone());
            m
        }
    }
}

fn required(m: &Map<String, Value>) -> BTreeSet<String> {
    m.get("required")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn diff(path: &str, old: &Value, new: &Value, changes: &mut Vec<Change>) {
    let mut old = constraints(old);
    let mut new = constraints(new);
    if old == new {
        return;
    }
    let before = changes.len();
    // Objects: field by field.
    if let (Some(Value::Object(op)), Some(Value::Object(np))) = (
        old.get("properties").cloned(),
        new.get("properties").cloned(),
    ) {
        let (oreq, nreq) = (required(&old), required(&new));
        for (field, oschema) in &op {
            let p = join(path, field);
            match np.get(field) {
                None => changes.push(Change {
                    path: p,
                    kind: ChangeKind::FieldRemoved,
                }),
                Some(nschema) => {
                    diff(&p, oschema, nschema, changes);
                    match (oreq.contains(field), nreq.contains(field)) {
                        (false, true) => changes.push(Change {
                            path: p,
                            kind: ChangeKind::BecameRequired,
                        }),
                        (true, false) => changes.push(Change {
                            path: p,
                            kind: ChangeKind::BecameOptional,
                        }),
                        _ => {}
                    }
                }
            }
        }
        for field in np.keys().filter(|f| !op.contains_key(*f)) {
            let kind = match nreq.contains(field) {
                true => ChangeKind::RequiredFieldAdded,
                false => ChangeKind::OptionalFieldAdded,
            };
            changes.push(Change {
                path: join(path, field),
                kind,
            });
        }
        for m in [&mut old, &mut new] {
            m.remove("properties");
            m.remove("required");
        }
    }
    // Arrays: the items.
    if let (Some(oi), Some(ni)) = (old.get("items").cloned(), new.get("items").cloned()) {
        diff(&format!("{path}[]"), &oi, &ni, changes);
        old.remove("items");
        new.remove("items");
    }
    // Alternatives (enums with data, nullable references): pairwise when the count holds.
    for key in ["oneOf", "anyOf", "allOf"] {
        if let (Some(Value::Array(oa)), Some(Value::Array(na))) =
            (old.get(key).cloned(), new.get(key).cloned())
        {
            if oa.len() == na.len() {
                for (i, (o, n)) in oa.iter().zip(&na).enumerate() {
                    let p = format!("{path}<{key} {}>", i + 1);
                    diff(&p, o, n, changes);
                }
                old.remove(key);
                new.remove(key);
            }
        }
    }
    if old != new {
        // Something else differs here (type, format, range, enum values, ...); report it
        // once, unless the nested changes already explain it.
        let nested_only = changes.len() > before && same_kind(&old, &new);
        if !nested_only {
            changes.push(Change {
                path: path.to_string(),
                kind: ChangeKind::TypeChanged(describe(&old), describe(&new)),
            });
        }
    }
}

/// Whether two constraint maps agree on `type`, `format` and `enum` (their differences are
/// elsewhere, e.g. `additionalProperties` following a field change).
fn same_kind(old: &Map<String, Value>, new: &Map<String, Value>) -> bool {
    ["type", "format", "enum", "const"]
        .iter()
        .all(|k| old.get(*k) == new.get(*k))
}

/// A short description of a schema for messages: `integer (uint32)`, `string or null`,
/// `one of "a", "b"`.
fn describe(m: &Map<String, Value>) -> String {
    let ty = match m.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => String::new(),
    };
    let mut out = ty;
    if let Some(Value::String(f)) = m.get("format") {
        out = format!("{out} ({f})");
    }
    if let Some(Value::Array(values)) = m.get("enum") {
        let values: Vec<String> = values.iter().map(Value::to_string).collect();
        out = format!("{out} one of {}", values.join(", "));
    }
    if let Some(c) = m.get("const") {
        out = format!("{out} = {c}");
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(Value::Array(a)) = m.get(key) {
            out = format!("{out} {key} of {} alternatives", a.len());
        }
    }
    let out = out.trim().to_string();
    if out.is_empty() {
        "a schema with other constraints".into()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(props: Value, req: &[&str]) -> Value {
        json!({"type": "object", "properties": props, "required": req})
    }

    fn described(old: &Value, new: &Value) -> Vec<(String, bool)> {
        compare(old, new)
            .into_iter()
            .map(|c| (c.to_string(), c.is_breaking()))
            .collect()
    }

    #[test]
    fn the_same_schema_with_other_descriptions_has_no_changes() {
        let a = object(
            json!({"id": {"type": "integer", "description": "old"}}),
            &["id"],
        );
        let b = object(json!({"id": {"type": "integer", "title": "Id"}}), &["id"]);
        assert!(compare(&a, &b).is_empty());
    }

    #[test]
    fn each_kind_of_change_is_classified() {
        let v1 = object(
            json!({"id": {"type": "integer", "format": "uint64", "minimum": 0},
                   "name": {"type": "string"}, "note": {"type": ["string", "null"]}}),
            &["id", "name"],
        );
        let added_optional = object(
            json!({"id": {"type": "integer", "format": "uint64", "minimum": 0},
                   "name": {"type": "string"}, "note": {"type": ["string", "null"]},
                   "tag": {"type": ["string", "null"]}}),
            &["id", "name"],
        );
        assert_eq!(
            described(&v1, &added_optional),
            [("new optional field `tag`".to_string(), false)]
        );
        let breaking = object(
            json!({"id": {"type": "string"}, "note": {"type": ["string", "null"]},
                   "shelf": {"type": "integer"}}),
            &["id", "note", "shelf"],
        );
        assert_eq!(
            described(&v1, &breaking),
            [
                (
                    "type of `id` changed from integer (uint64) to string".to_string(),
                    true
                ),
                ("field `name` removed".to_string(), true),
                ("field `note` became required".to_string(), true),
                ("new required field `shelf`".to_string(), true),
            ]
        );
    }

    #[test]
    fn nested_objects_arrays_and_enums_have_paths() {
        let old = object(
            json!({"items": {"type": "array", "items": object(json!({"sku": {"type": "string"}}), &["sku"])},
                   "state": {"type": "string", "enum": ["open", "closed"]}}),
            &["items", "state"],
        );
        let new = object(
            json!({"items": {"type": "array", "items": object(json!({"sku": {"type": "integer"}}), &["sku"])},
                   "state": {"type": "string", "enum": ["open", "closed", "lost"]}}),
            &["items", "state"],
        );
        assert_eq!(
            described(&old, &new),
            [
                (
                    "type of `items[].sku` changed from string to integer".to_string(),
                    true
                ),
                (
                    "type of `state` changed from string one of \"open\", \"closed\" to string one of \"open\", \"closed\", \"lost\"".to_string(),
                    true
                ),
            ]
        );
    }

    #[test]
    fn a_whole_payload_of_another_type_is_one_change() {
        let changes = described(&json!({"type": "integer"}), &json!({"type": "string"}));
        assert_eq!(
            changes,
            [(
                "the payload's type changed from integer to string".to_string(),
                true
            )]
        );
    }
}
