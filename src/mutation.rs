//! The pure core: from a Pod or ServiceAccount, its identity inputs and the settings, to a JSON
//! patch. No I/O and no clock; the server and the offline `mutate` command both call these.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::config::Config;
use crate::model::{Container, Pod, ServiceAccount};
use crate::patch::{EnvVar, Operation, VolumeMount, add, annotation_path, append};
use crate::providers::{self, PodContext, PodInjection};

/// A patch with what it means: the identities it gives and the warnings for the user.
#[derive(Debug, Default)]
pub struct Mutation {
    pub patch: Vec<Operation>,
    /// `(cloud, identity)` for each cloud that resolved, for the audit log and metrics.
    pub identities: Vec<(&'static str, String)>,
    pub warnings: Vec<String>,
}

/// What a Pod gets. `service_account` is `None` when the ServiceAccount does not exist.
pub fn mutate_pod(pod: &Pod, namespace: &str, service_account: Option<&ServiceAccount>, config: &Config) -> Mutation {
    let service_account_name = pod.service_account_name();
    let Some(service_account) = service_account else {
        let mapped = config.mapping_for(namespace, service_account_name).is_some();
        let warnings = if mapped {
            vec![format!(
                "ServiceAccount {namespace}/{service_account_name} does not exist; no cloud identity injected"
            )]
        } else {
            Vec::new()
        };
        return Mutation {
            warnings,
            ..Mutation::default()
        };
    };
    let written_by_users = users_annotations(service_account);
    let context = PodContext {
        pod,
        namespace,
        service_account_annotations: &written_by_users,
        mapping: config.mapping_for(namespace, service_account_name),
        config,
    };
    let mut warnings = Vec::new();
    let injections: Vec<PodInjection> = providers::ALL
        .iter()
        .filter_map(|provider| provider.pod_injection(&context, &mut warnings))
        .collect();
    Mutation {
        patch: pod_patch(pod, &injections),
        identities: injections
            .into_iter()
            .map(|injection| (injection.cloud, injection.identity))
            .collect(),
        warnings,
    }
}

/// What a ServiceAccount gets: the annotations of the mapping that matches it, where it has none.
pub fn mutate_service_account(service_account: &ServiceAccount, namespace: &str, config: &Config) -> Mutation {
    let Some(name) = service_account.metadata.name.as_deref() else {
        return Mutation::default();
    };
    let managed_before = managed_keys(service_account);
    let mut identities = Vec::new();
    let mut managed_now = BTreeSet::new();
    let mut changed = Vec::new();
    for provider in providers::ALL {
        let Some(mapping) = config.mapping_for(namespace, name) else {
            break;
        };
        for (key, value) in provider.service_account_annotations(mapping) {
            let current = service_account.metadata.annotation(key);
            // A value the user wrote is theirs: it outranks the mapping and is never changed.
            if current.is_some() && !managed_before.contains(key) {
                continue;
            }
            managed_now.insert(key);
            identities.push((provider.name(), value.clone()));
            if current != Some(value.as_str()) {
                changed.push((key, value));
            }
        }
    }
    let mut patch = Vec::new();
    let stale = managed_before.iter().filter(|key| !managed_now.contains(**key));
    for key in stale.filter(|key| service_account.metadata.annotation(key).is_some()) {
        patch.push(Operation::Remove {
            path: annotation_path(key),
        });
    }
    if managed_now != managed_before {
        if managed_now.is_empty() {
            patch.push(Operation::Remove {
                path: annotation_path(MANAGED_ANNOTATIONS),
            });
        } else {
            changed.push((
                MANAGED_ANNOTATIONS,
                managed_now.iter().copied().collect::<Vec<_>>().join(","),
            ));
        }
    }
    add_annotations(&mut patch, service_account.metadata.annotations.is_some(), changed);
    Mutation {
        patch,
        identities,
        warnings: Vec::new(),
    }
}

/// The ServiceAccount annotations that the webhook wrote from a mapping, listed on the
/// ServiceAccount itself. They follow the mapping, changed or removed with it, and never outrank it.
pub const MANAGED_ANNOTATIONS: &str = "workload-identity.dev/managed-annotations";

fn managed_keys(service_account: &ServiceAccount) -> BTreeSet<&str> {
    service_account
        .metadata
        .annotation(MANAGED_ANNOTATIONS)
        .map(|list| list.split(',').map(str::trim).filter(|key| !key.is_empty()).collect())
        .unwrap_or_default()
}

/// The ServiceAccount's annotations without those the webhook copied from a mapping, so that the
/// mapping in force decides, not a copy of an older one.
fn users_annotations(service_account: &ServiceAccount) -> BTreeMap<String, String> {
    let managed = managed_keys(service_account);
    let mut annotations = service_account.metadata.annotations.clone().unwrap_or_default();
    annotations.retain(|key, _| !managed.contains(key.as_str()));
    annotations
}

fn pod_patch(pod: &Pod, injections: &[PodInjection]) -> Vec<Operation> {
    let mut patch = Vec::new();

    let changed_annotations = injections
        .iter()
        .flat_map(|injection| injection.pod_annotations.iter())
        .filter(|(key, value)| pod.metadata.annotation(key) != Some(value.as_str()))
        .map(|(key, value)| (*key, value.clone()))
        .collect();
    add_annotations(&mut patch, pod.metadata.annotations.is_some(), changed_annotations);

    let volumes = pod.spec.volumes.as_deref().unwrap_or_default();
    let new_volumes: Vec<Value> = injections
        .iter()
        .filter(|injection| !volumes.iter().any(|volume| volume.name == injection.volume_name))
        .map(|injection| injection.volume.clone())
        .collect();
    append(
        &mut patch,
        "/spec/volumes".to_owned(),
        pod.spec.volumes.is_some(),
        new_volumes,
    );

    let container_lists = [
        ("containers", Some(&pod.spec.containers)),
        ("initContainers", pod.spec.init_containers.as_ref()),
    ];
    for (list, containers) in container_lists {
        for (index, container) in containers.into_iter().flatten().enumerate() {
            patch_container(&mut patch, list, index, container, injections);
        }
    }
    patch
}

fn patch_container(
    patch: &mut Vec<Operation>,
    list: &str,
    index: usize,
    container: &Container,
    injections: &[PodInjection],
) {
    let mut mounts = Vec::new();
    let mut env: Vec<EnvVar> = Vec::new();
    for injection in injections {
        if injection.skip_containers.contains(&container.name) {
            continue;
        }
        if !container.has_mount(injection.volume_name, injection.mount_path) {
            mounts.push(VolumeMount {
                name: injection.volume_name,
                mount_path: injection.mount_path,
                read_only: true,
            });
        }
        for group in &injection.env {
            let taken = group
                .iter()
                .any(|(name, _)| container.sets_env(name) || env.iter().any(|added| added.name == *name));
            if !taken {
                env.extend(group.iter().map(|(name, value)| EnvVar {
                    name,
                    value: value.clone(),
                }));
            }
        }
    }
    let index = index.to_string();
    let path = |field: &str| ["/spec/", list, "/", &index, "/", field].concat();
    append(patch, path("volumeMounts"), container.volume_mounts.is_some(), mounts);
    append(patch, path("env"), container.env.is_some(), env);
}

/// Sets annotations, creating the annotation map in one operation when the object has none.
fn add_annotations(patch: &mut Vec<Operation>, exists: bool, annotations: Vec<(&str, String)>) {
    if annotations.is_empty() {
        return;
    }
    if exists {
        for (key, value) in annotations {
            patch.push(add(annotation_path(key), Value::String(value)));
        }
    } else {
        let map = annotations
            .into_iter()
            .map(|(key, value)| (key.to_owned(), Value::String(value)))
            .collect();
        patch.push(add("/metadata/annotations".to_owned(), Value::Object(map)));
    }
}
