//! The JSON patch (RFC 6902) that answers an admission request: `add` and `remove` only, with the
//! values the webhook writes typed by what they are.
//!
//! Our own type rather than `json_patch::Patch`: building a `serde_json::Value` and a parsed JSON
//! pointer for every mount and env var, then dropping them, was a third of the instructions spent
//! on a 10-container Pod. It serializes to the same JSON; [`to_json_patch`] converts it where a
//! patch is applied (the offline command, tests).

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Operation {
    Add { path: String, value: PatchValue },
    Remove { path: String },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PatchValue {
    /// Volumes and annotations.
    Json(Value),
    Mount(VolumeMount),
    Mounts(Vec<VolumeMount>),
    EnvVar(EnvVar),
    EnvVars(Vec<EnvVar>),
}

/// A read-only `volumeMounts` entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    pub name: &'static str,
    pub mount_path: &'static str,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnvVar {
    pub name: &'static str,
    pub value: String,
}

macro_rules! patch_value_from {
    ($($variant:ident($type:ty)),*) => {$(
        impl From<$type> for PatchValue {
            fn from(value: $type) -> Self {
                PatchValue::$variant(value)
            }
        }
    )*};
}
patch_value_from!(
    Json(Value),
    Mount(VolumeMount),
    Mounts(Vec<VolumeMount>),
    EnvVar(EnvVar),
    EnvVars(Vec<EnvVar>)
);

impl From<Vec<Value>> for PatchValue {
    fn from(values: Vec<Value>) -> Self {
        PatchValue::Json(Value::Array(values))
    }
}

pub fn add(path: String, value: impl Into<PatchValue>) -> Operation {
    Operation::Add {
        path,
        value: value.into(),
    }
}

// Paths are joined with `concat`, not `format!`: the formatting machinery was a tenth of the cost
// of a 10-container Pod, whose patch has a few paths per container.

/// Appends `values` to the array at `path`, creating the array in one operation when the object
/// has none.
pub fn append<T>(patch: &mut Vec<Operation>, path: String, exists: bool, values: Vec<T>)
where
    PatchValue: From<T> + From<Vec<T>>,
{
    if values.is_empty() {
        return;
    }
    if exists {
        for value in values {
            patch.push(add([path.as_str(), "/-"].concat(), value));
        }
    } else {
        patch.push(add(path, values));
    }
}

/// The JSON pointer of an annotation (keys hold `/`, which a pointer token escapes as `~1`).
pub fn annotation_path(key: &str) -> String {
    ["/metadata/annotations/", &pointer_token(key)].concat()
}

fn pointer_token(token: &str) -> Cow<'_, str> {
    if token.contains(['~', '/']) {
        Cow::Owned(token.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(token)
    }
}

/// The patch as `json_patch` operations, to apply it to a JSON document.
pub fn to_json_patch(operations: &[Operation]) -> Result<json_patch::Patch, serde_json::Error> {
    serde_json::from_value(serde_json::to_value(operations)?)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn operations_serialize_as_rfc_6902_and_escape_pointer_tokens() {
        let operations = vec![
            add(annotation_path("eks.amazonaws.com/role-arn"), json!("arn")),
            Operation::Remove {
                path: annotation_path("odd~key/x"),
            },
            add(
                "/spec/containers/0/volumeMounts/-".to_owned(),
                VolumeMount {
                    name: "v",
                    mount_path: "/m",
                    read_only: true,
                },
            ),
            add(
                "/spec/containers/0/env".to_owned(),
                vec![EnvVar {
                    name: "A",
                    value: "b".to_owned(),
                }],
            ),
        ];
        assert_eq!(
            serde_json::to_value(&operations).unwrap(),
            json!([
                {"op": "add", "path": "/metadata/annotations/eks.amazonaws.com~1role-arn", "value": "arn"},
                {"op": "remove", "path": "/metadata/annotations/odd~0key~1x"},
                {"op": "add", "path": "/spec/containers/0/volumeMounts/-", "value": {"name": "v", "mountPath": "/m", "readOnly": true}},
                {"op": "add", "path": "/spec/containers/0/env", "value": [{"name": "A", "value": "b"}]},
            ])
        );
        let applied = to_json_patch(&operations).unwrap();
        assert_eq!(applied.0.len(), 4);
        assert_eq!(applied.0[1].path().as_str(), "/metadata/annotations/odd~0key~1x");
    }
}
