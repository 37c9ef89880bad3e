//! Lean, read-only views of the objects the webhook mutates.
//!
//! Only the fields that decide a mutation are decoded; everything else in the request is skipped by
//! serde, which keeps decoding cheap. `Option<Vec<_>>` keeps "absent" apart from "empty", because
//! the JSON patch must create a missing array but append to an existing one.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// Decodes `null` as the type's default (the apiserver sends `"annotations": null` in places).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub generate_name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    /// `None` when the object has no annotation map at all (the patch must then create it).
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ObjectMeta {
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }

    /// The name to show in logs: the name, or the `generateName` prefix of a Pod from a controller.
    pub fn display_name(&self) -> &str {
        self.name
            .as_deref()
            .filter(|name| !name.is_empty())
            .or(self.generate_name.as_deref())
            .unwrap_or("")
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    /// Required (the apiserver always sends both): the patch adds under them, so a Pod without
    /// them is left untouched as unreadable rather than answered with a patch that cannot apply.
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub service_account_name: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub volumes: Option<Vec<Named>>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub containers: Vec<Container>,
    #[serde(default)]
    pub init_containers: Option<Vec<Container>>,
}

impl Pod {
    /// The ServiceAccount the Pod runs as; the apiserver treats an empty name as `default`.
    pub fn service_account_name(&self) -> &str {
        match self.spec.service_account_name.as_deref() {
            None | Some("") => "default",
            Some(name) => name,
        }
    }

    /// Whether the Pod selects Windows nodes (current or beta node label).
    pub fn selects_windows(&self) -> bool {
        ["kubernetes.io/os", "beta.kubernetes.io/os"]
            .iter()
            .any(|key| self.spec.node_selector.get(*key).map(String::as_str) == Some("windows"))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub env: Option<Vec<Named>>,
    #[serde(default)]
    pub volume_mounts: Option<Vec<VolumeMount>>,
}

impl Container {
    pub fn sets_env(&self, name: &str) -> bool {
        self.env.iter().flatten().any(|env| env.name == name)
    }

    /// A mount counts as present when either its volume or its path is already taken: adding a
    /// second mount at the same path would make the apiserver refuse the Pod.
    pub fn has_mount(&self, volume_name: &str, mount_path: &str) -> bool {
        self.volume_mounts
            .iter()
            .flatten()
            .any(|mount| mount.name == volume_name || mount.mount_path == mount_path)
    }
}

/// Any list entry identified by its `name` (volumes, env vars).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Named {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub mount_path: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServiceAccount {
    #[serde(default)]
    pub metadata: ObjectMeta,
}
