//! Lean, read-only views of the objects the webhook mutates.
//!
//! Only the fields that decide a mutation are decoded; everything else in the request is skipped by
//! serde, which keeps decoding cheap. `Option<Vec<_>>` keeps "absent" apart from "empty", because
//! the JSON patch must create a missing array but append to an existing one.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

// A list or map entry decodes into up to 24 times its JSON size (`{}` is a 72-byte Container,
// `"a":""` a B-tree entry of two Strings), so a 3 MiB body could take hundreds of MiB. Within
// `with_entry_limit`, the lists and maps of these types together may hold at most that many
// entries; past it, decoding fails (the object is then left untouched, with a warning).
thread_local! {
    static ENTRIES_LEFT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Runs `decode` with at most `limit` list and map entries decoded on this thread.
pub fn with_entry_limit<T>(limit: usize, decode: impl FnOnce() -> T) -> T {
    let outer = ENTRIES_LEFT.replace(Some(limit));
    let decoded = decode();
    ENTRIES_LEFT.set(outer);
    decoded
}

fn take_entry<E: serde::de::Error>() -> Result<(), E> {
    match ENTRIES_LEFT.get() {
        None => Ok(()),
        Some(0) => Err(E::custom("too many list and map entries in the object")),
        Some(left) => {
            ENTRIES_LEFT.set(Some(left - 1));
            Ok(())
        }
    }
}

/// A list whose entries count against the limit.
struct Counted<C>(C);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Counted<Vec<T>> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct List<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for List<T> {
            type Value = Vec<T>;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
                let mut list = Vec::new();
                while let Some(entry) = seq.next_element()? {
                    take_entry()?;
                    list.push(entry);
                }
                Ok(list)
            }
        }
        deserializer.deserialize_seq(List(PhantomData)).map(Counted)
    }
}

impl<'de> Deserialize<'de> for Counted<BTreeMap<String, String>> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Map;
        impl<'de> Visitor<'de> for Map {
            type Value = BTreeMap<String, String>;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a map of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
                let mut map = BTreeMap::new();
                while let Some((key, value)) = entries.next_entry()? {
                    take_entry()?;
                    map.insert(key, value);
                }
                Ok(map)
            }
        }
        deserializer.deserialize_map(Map).map(Counted)
    }
}

/// A counted list or map, `None` when absent or `null`.
fn counted<'de, D, C>(deserializer: D) -> Result<Option<C>, D::Error>
where
    D: Deserializer<'de>,
    Counted<C>: Deserialize<'de>,
{
    Ok(Option::<Counted<C>>::deserialize(deserializer)?.map(|counted| counted.0))
}

/// A counted list or map, empty when absent or `null` (the apiserver sends `"annotations": null`
/// in places).
fn counted_or_default<'de, D, C>(deserializer: D) -> Result<C, D::Error>
where
    D: Deserializer<'de>,
    Counted<C>: Deserialize<'de>,
    C: Default,
{
    Ok(counted(deserializer)?.unwrap_or_default())
}

/// Decodes `null` as the type's default, for the few fields outside the counted lists and maps.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// The longest name Kubernetes accepts (a DNS subdomain).
const MAX_NAME_BYTES: usize = 253;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub generate_name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default, deserialize_with = "counted_or_default")]
    pub labels: BTreeMap<String, String>,
    /// `None` when the object has no annotation map at all (the patch must then create it).
    #[serde(default, deserialize_with = "counted")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ObjectMeta {
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }

    /// The name to show in logs: the name, or the `generateName` prefix of a Pod from a controller.
    /// Cut to the longest valid name (253 bytes): mutating admission runs before the apiserver
    /// validates names, so a tenant can send a far longer one.
    pub fn display_name(&self) -> &str {
        let name = self
            .name
            .as_deref()
            .filter(|name| !name.is_empty())
            .or(self.generate_name.as_deref())
            .unwrap_or("");
        let mut end = name.len().min(MAX_NAME_BYTES);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        &name[..end]
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
    #[serde(default, deserialize_with = "counted_or_default")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "counted")]
    pub volumes: Option<Vec<Volume>>,
    #[serde(default, deserialize_with = "counted_or_default")]
    pub containers: Vec<Container>,
    #[serde(default, deserialize_with = "counted")]
    pub init_containers: Option<Vec<Container>>,
    #[serde(default)]
    pub os: Option<PodOs>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PodOs {
    #[serde(default)]
    pub name: String,
}

impl Pod {
    /// The ServiceAccount the Pod runs as; the apiserver treats an empty name as `default`.
    pub fn service_account_name(&self) -> &str {
        match self.spec.service_account_name.as_deref() {
            None | Some("") => "default",
            Some(name) => name,
        }
    }

    /// Whether the Pod runs on Windows: `spec.os.name`, or a node selector (current or beta label).
    pub fn selects_windows(&self) -> bool {
        self.spec.os.as_ref().is_some_and(|os| os.name == "windows")
            || ["kubernetes.io/os", "beta.kubernetes.io/os"]
                .iter()
                .any(|key| self.spec.node_selector.get(*key).map(String::as_str) == Some("windows"))
    }

    /// Every container and init container.
    pub fn all_containers(&self) -> impl Iterator<Item = &Container> {
        self.spec
            .containers
            .iter()
            .chain(self.spec.init_containers.iter().flatten())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(default, deserialize_with = "counted")]
    pub env: Option<Vec<EnvVar>>,
    #[serde(default, deserialize_with = "counted")]
    pub volume_mounts: Option<Vec<VolumeMount>>,
}

impl Container {
    pub fn sets_env(&self, name: &str) -> bool {
        self.env.iter().flatten().any(|env| env.name == name)
    }

    /// How the container mounts `volume_name` or `mount_path`, if it mounts either.
    pub fn mount(&self, volume_name: &str, mount_path: &str) -> Option<Mount> {
        let mount = self
            .volume_mounts
            .iter()
            .flatten()
            .find(|mount| mount.name == volume_name || mount.mount_path == mount_path)?;
        let whole = mount.name == volume_name
            && mount.mount_path == mount_path
            && mount.sub_path.is_empty()
            && mount.sub_path_expr.is_empty();
        Some(if whole { Mount::Whole } else { Mount::Other })
    }
}

/// A container's mount that takes the volume name or the path of an injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mount {
    /// That volume, whole, at that path.
    Whole,
    /// Another volume at the path, or that volume elsewhere or in part (`subPath`).
    Other,
}

/// Only the name: values are not needed, and not decoding them saves an allocation per variable.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EnvVar {
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
    #[serde(default, deserialize_with = "null_as_default")]
    pub sub_path: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub sub_path_expr: String,
}

/// A Pod volume: its name, and a projected volume's sources as raw JSON, read only for a volume
/// with one of our names (decoding every Pod's token volume cost 4% of a 1-container admission).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Volume {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    projected: Option<Box<RawValue>>,
}

impl Volume {
    /// The projected sources, if this is a projected volume that can be read.
    pub fn projected(&self) -> Option<Projected> {
        serde_json::from_str(self.projected.as_ref()?.get()).ok()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Projected {
    #[serde(default, deserialize_with = "null_as_default")]
    pub sources: Vec<ProjectionSource>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionSource {
    #[serde(default)]
    pub service_account_token: Option<TokenProjection>,
    #[serde(default, rename = "downwardAPI")]
    pub downward_api: Option<DownwardApiProjection>,
    #[serde(default)]
    pub config_map: Option<ConfigMapProjection>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigMapProjection {
    #[serde(default)]
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub items: Vec<KeyToPath>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct KeyToPath {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub path: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenProjection {
    #[serde(default)]
    pub audience: Option<String>,
    #[serde(default)]
    pub path: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct DownwardApiProjection {
    #[serde(default, deserialize_with = "null_as_default")]
    pub items: Vec<DownwardApiFile>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DownwardApiFile {
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub field_ref: Option<FieldRef>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldRef {
    #[serde(default)]
    pub field_path: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServiceAccount {
    #[serde(default)]
    pub metadata: ObjectMeta,
}
