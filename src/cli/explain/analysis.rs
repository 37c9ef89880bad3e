//! The pure part of `explain`: from a running Pod, its Namespace's labels, its ServiceAccount,
//! the configuration and the webhook configuration to what the Pod has, what the webhook would
//! give it now, and why. No I/O; the caller fetches the objects.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhook;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ManagedFieldsEntry, Time};
use serde::Serialize;
use serde_json::Value;

use workload_identity_core::config::{Config, Mapping};
use workload_identity_core::policy::{Decision, Labels, Namespace};
use workload_identity_core::providers;
use workload_identity_core::{model, mutation, patch};

/// The objects one Pod's explanation reads.
pub struct PodInputs<'a> {
    pub pod: &'a Pod,
    pub namespace_labels: &'a BTreeMap<String, String>,
    /// `None` when the ServiceAccount does not exist.
    pub service_account: Option<&'a ServiceAccount>,
    pub config: &'a Config,
    /// The webhook entry that admits Pods; `None` when the webhook configuration has none.
    pub webhook: Option<&'a MutatingWebhook>,
    /// When the ConfigMap's content last changed, if known.
    pub config_changed: Option<&'a Time>,
    /// The installation error that keeps the API server from calling the webhook, if any.
    pub blocker: Option<&'a str>,
}

/// One Pod: what it has, what it would get now, and why.
#[derive(Debug, Serialize)]
pub struct PodReport {
    pub namespace: String,
    pub name: String,
    pub service_account: String,
    pub created: Option<String>,
    /// The cloud identity the Pod runs with.
    pub has: Identity,
    /// What the webhook would give the Pod if it were created now.
    pub would_get: Identity,
    /// Each difference between the two; a Pod with any is stale.
    pub differences: Vec<String>,
    pub stale: bool,
    /// The Pod lacks (part of) the identity the webhook would give it now.
    pub lacks_identity: bool,
    /// Why the Pod gets (or got) what it does, in the order the API server and the webhook decide.
    pub reasons: Vec<String>,
    /// The warnings the webhook gives for this Pod (as `kubectl` shows them on create).
    pub warnings: Vec<String>,
}

/// The cloud identity parts of a Pod: token volumes, and each container's mounts of them and
/// cloud environment variables.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Identity {
    pub volumes: BTreeMap<String, TokenVolume>,
    pub containers: BTreeMap<String, ContainerIdentity>,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct TokenVolume {
    /// The audiences of its ServiceAccount tokens.
    pub audiences: Vec<String>,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct ContainerIdentity {
    /// Token volume name to mount path.
    pub mounts: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
}

/// Environment variables the clouds' SDKs read: the ones shown for each container.
const CLOUD_ENV_PREFIXES: &[&str] = &["AWS_", "AZURE_", "GOOGLE_", "CLOUDSDK_"];

/// The annotation of the webhooks' objectSelector.
const INJECT_LABEL: &str = "workload-identity.dev/inject";

/// The kubelet marks mirror Pods of static Pods so; the webhook's matchCondition leaves them out.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

pub fn explain_pod(inputs: &PodInputs<'_>) -> PodReport {
    let pod_json = serde_json::to_value(inputs.pod).unwrap_or_default();
    let core_pod: model::Pod = serde_json::from_value(pod_json.clone()).unwrap_or_default();
    let namespace = inputs.pod.metadata.namespace.clone().unwrap_or_default();
    let service_account_name = core_pod.service_account_name().to_owned();
    let core_service_account: Option<model::ServiceAccount> = inputs
        .service_account
        .and_then(|sa| serde_json::to_value(sa).ok())
        .and_then(|sa| serde_json::from_value(sa).ok());

    let mut reasons = Vec::new();
    let selected = selection(inputs, &core_pod, &mut reasons);
    let labelled_namespace = Namespace {
        name: &namespace,
        labels: Labels::Known(inputs.namespace_labels),
    };
    let (admitted, admitted_pod) = as_admitted(
        &pod_json,
        &core_pod,
        labelled_namespace,
        core_service_account.as_ref(),
        inputs.config,
    );
    let mutation = mutation::mutate_pod(
        &admitted_pod,
        labelled_namespace,
        core_service_account.as_ref(),
        inputs.config,
    );
    let would_get = would_get(selected, admitted, &mutation, &mut reasons);
    let has = identity(&pod_json);
    let differences = differences(&has, &would_get);

    identity_sources(inputs, &namespace, &service_account_name, &mutation, &mut reasons);
    skipped_containers(&core_pod, &mut reasons);
    if !differences.is_empty() {
        reasons.push(age_reason(inputs));
    }
    PodReport {
        namespace,
        name: inputs.pod.metadata.name.clone().unwrap_or_default(),
        service_account: service_account_name,
        created: inputs
            .pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|time| time.0.to_string()),
        stale: !differences.is_empty(),
        lacks_identity: lacks(&has, &would_get),
        has,
        would_get,
        differences,
        reasons,
        warnings: if selected { mutation.warnings } else { Vec::new() },
    }
}

/// The identity the Pod would have if admitted now: the admitted Pod with the webhook's patch, if
/// the API server sends it to the webhook.
fn would_get(
    selected: bool,
    mut admitted: Value,
    mutation: &mutation::Mutation,
    reasons: &mut Vec<String>,
) -> Identity {
    if !selected {
        // Not sent to the webhook: the Pod gets nothing, except what its own spec holds.
        return identity(&admitted);
    }
    match patch::to_json_patch(&mutation.patch).map(|ops| json_patch::patch(&mut admitted, &ops)) {
        Ok(Ok(())) => identity(&admitted),
        _ => {
            reasons.push("the webhook's patch does not apply to this Pod (please report this)".to_owned());
            Identity::default()
        }
    }
}

/// Whether the API server sends this Pod to the webhook, with a reason for each "no".
fn selection(inputs: &PodInputs<'_>, pod: &model::Pod, reasons: &mut Vec<String>) -> bool {
    let Some(webhook) = inputs.webhook else {
        reasons.push("no webhook for Pods is configured (MutatingWebhookConfiguration missing or without a Pod webhook): nothing is injected".to_owned());
        return false;
    };
    let namespace = inputs.pod.metadata.namespace.as_deref().unwrap_or_default();
    let mut selected = true;
    if let Some(mismatch) = selector_mismatch(webhook.namespace_selector.as_ref(), inputs.namespace_labels) {
        reasons.push(format!(
            "namespace {namespace} is not selected by the webhook's namespaceSelector: {mismatch}{}",
            if mismatch.contains(INJECT_LABEL) {
                format!(" (opt the namespace in: kubectl label namespace {namespace} {INJECT_LABEL}=enabled)")
            } else {
                String::new()
            }
        ));
        selected = false;
    }
    if let Some(mismatch) = selector_mismatch(webhook.object_selector.as_ref(), &pod.metadata.labels) {
        reasons.push(format!(
            "the Pod is opted out by the webhook's objectSelector: {mismatch}"
        ));
        selected = false;
    }
    if pod.metadata.annotation(MIRROR_ANNOTATION).is_some() {
        reasons.push("the Pod is the mirror of a static Pod, which the webhook's matchConditions leave out".to_owned());
        selected = false;
    }
    if selected {
        reasons.push(format!(
            "the webhook {} is called for this Pod (failurePolicy {})",
            webhook.name,
            webhook.failure_policy.as_deref().unwrap_or("Fail")
        ));
    }
    selected
}

/// The first requirement of a label selector that `labels` fail, or `None` if they match (an
/// absent selector matches everything, as in the API server).
pub fn selector_mismatch(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> Option<String> {
    let selector = selector?;
    for (key, value) in selector.match_labels.iter().flatten() {
        if labels.get(key) != Some(value) {
            return Some(format!("needs label {key}={value}, has {}", shown(labels.get(key))));
        }
    }
    for requirement in selector.match_expressions.iter().flatten() {
        let key = &requirement.key;
        let value = labels.get(key);
        let values = requirement.values.as_deref().unwrap_or_default();
        let matches = match requirement.operator.as_str() {
            "In" => value.is_some_and(|value| values.contains(value)),
            "NotIn" => value.is_none_or(|value| !values.contains(value)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            // The API server refuses any other operator; treat it as not matching.
            _ => false,
        };
        if !matches {
            return Some(format!(
                "label {key} must be {} {values:?}, is {}",
                requirement.operator,
                shown(value)
            ));
        }
    }
    None
}

fn shown(value: Option<&String>) -> String {
    value.map_or_else(|| "unset".to_owned(), |value| format!("{value:?}"))
}

/// The Pod as the webhook would have received it on create: without the volumes, mounts and
/// environment variables the webhook adds (those it added then, and those it would add now).
/// Returned as JSON and as the core's model.
fn as_admitted(
    pod_json: &Value,
    pod: &model::Pod,
    namespace: Namespace<'_>,
    service_account: Option<&model::ServiceAccount>,
    config: &Config,
) -> (Value, model::Pod) {
    let known: BTreeSet<&str> = providers::ALL
        .iter()
        .flat_map(|provider| provider.volume_names())
        .copied()
        .collect();
    let mut admitted = pod_json.clone();
    let mut mount_paths: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for container in containers_mut(&mut admitted) {
        let name = container["name"].as_str().unwrap_or_default().to_owned();
        if let Some(mounts) = container.get_mut("volumeMounts").and_then(Value::as_array_mut) {
            mounts.retain(|mount| {
                let ours = known.contains(mount["name"].as_str().unwrap_or_default());
                if ours {
                    let path = mount["mountPath"].as_str().unwrap_or_default().to_owned();
                    mount_paths.entry(name.clone()).or_default().push(path);
                }
                !ours
            });
        }
    }
    if let Some(volumes) = admitted.pointer_mut("/spec/volumes").and_then(Value::as_array_mut) {
        volumes.retain(|volume| !known.contains(volume["name"].as_str().unwrap_or_default()));
    }
    // The env vars the webhook would set now: found on the Pod without our volumes, where the
    // webhook's volume checks no longer stand in the way.
    let without_volumes: model::Pod = serde_json::from_value(admitted.clone()).unwrap_or_else(|_| pod.clone());
    let (injections, _) = mutation::resolve_pod(&without_volumes, namespace, service_account, config);
    let ours: BTreeSet<&str> = injections
        .iter()
        .flat_map(|injection| {
            let env = injection.env.iter().flatten().map(|(name, _)| *name);
            env.chain(injection.scratch.as_ref().map(|scratch| scratch.env))
        })
        .collect();
    for container in containers_mut(&mut admitted) {
        let name = container["name"].as_str().unwrap_or_default();
        // Only in containers that took our volume: elsewhere the values are the user's own.
        let Some(paths) = mount_paths.get(name) else {
            continue;
        };
        if let Some(env) = container.get_mut("env").and_then(Value::as_array_mut) {
            env.retain(|var| {
                let value = var["value"].as_str().unwrap_or_default();
                let points_into_ours = paths.iter().any(|path| value.starts_with(&format!("{path}/")));
                !(ours.contains(var["name"].as_str().unwrap_or_default()) || points_into_ours)
            });
        }
    }
    let model = serde_json::from_value(admitted.clone()).unwrap_or_else(|_| pod.clone());
    (admitted, model)
}

fn containers_mut(pod: &mut Value) -> impl Iterator<Item = &mut Value> {
    let spec = pod.get_mut("spec").and_then(Value::as_object_mut);
    let mut lists: Vec<&mut Value> = Vec::new();
    if let Some(spec) = spec {
        for (key, list) in spec.iter_mut() {
            if key == "containers" || key == "initContainers" {
                lists.push(list);
            }
        }
    }
    lists
        .into_iter()
        .filter_map(Value::as_array_mut)
        .flat_map(|list| list.iter_mut())
}

fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    ["containers", "initContainers"]
        .into_iter()
        .filter_map(|key| pod["spec"][key].as_array())
        .flatten()
}

/// The identity parts of a Pod (JSON): token volumes with an audience, their mounts, and every
/// container's cloud environment variables.
fn identity(pod: &Value) -> Identity {
    let mut identity = Identity::default();
    for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let audiences: Vec<String> = volume["projected"]["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|source| source["serviceAccountToken"]["audience"].as_str())
            .filter(|audience| !audience.is_empty())
            .map(str::to_owned)
            .collect();
        if !audiences.is_empty() {
            let name = volume["name"].as_str().unwrap_or_default().to_owned();
            identity.volumes.insert(name, TokenVolume { audiences });
        }
    }
    for container in containers(pod) {
        let mounts: BTreeMap<String, String> = container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|mount| {
                identity
                    .volumes
                    .contains_key(mount["name"].as_str().unwrap_or_default())
            })
            .map(|mount| (string(&mount["name"]), string(&mount["mountPath"])))
            .collect();
        let env: BTreeMap<String, String> = container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|var| {
                CLOUD_ENV_PREFIXES
                    .iter()
                    .any(|prefix| string(&var["name"]).starts_with(prefix))
            })
            .map(|var| {
                let value = match &var["value"] {
                    Value::String(value) => value.clone(),
                    _ if !var["valueFrom"].is_null() => format!("(from {})", var["valueFrom"]),
                    _ => String::new(),
                };
                (string(&var["name"]), value)
            })
            .collect();
        if !mounts.is_empty() || !env.is_empty() {
            identity
                .containers
                .insert(string(&container["name"]), ContainerIdentity { mounts, env });
        }
    }
    identity
}

fn string(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// Each difference between what a Pod has and what it would get, in words.
pub fn differences(has: &Identity, would_get: &Identity) -> Vec<String> {
    let mut found = Vec::new();
    let names: BTreeSet<&String> = has.volumes.keys().chain(would_get.volumes.keys()).collect();
    for name in names {
        match (has.volumes.get(name), would_get.volumes.get(name)) {
            (Some(_), None) => found.push(format!("volume {name}: has it, would not get it now")),
            (None, Some(new)) => found.push(format!(
                "volume {name}: missing, would get it (token audience {})",
                new.audiences.join(", ")
            )),
            (Some(old), Some(new)) if old != new => found.push(format!(
                "volume {name}: token audience {}, would be {}",
                old.audiences.join(", "),
                new.audiences.join(", ")
            )),
            _ => {}
        }
    }
    let empty = ContainerIdentity::default();
    let containers: BTreeSet<&String> = has.containers.keys().chain(would_get.containers.keys()).collect();
    for container in containers {
        let old = has.containers.get(container).unwrap_or(&empty);
        let new = would_get.containers.get(container).unwrap_or(&empty);
        for (what, old, new) in [("mount", &old.mounts, &new.mounts), ("env", &old.env, &new.env)] {
            let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
            for key in keys {
                match (old.get(key), new.get(key)) {
                    (Some(old), None) => found.push(format!(
                        "container {container}: {what} {key}={old}, would not be set now"
                    )),
                    (None, Some(new)) => {
                        found.push(format!("container {container}: {what} {key} missing, would be {new}"))
                    }
                    (Some(old), Some(new)) if old != new => {
                        found.push(format!("container {container}: {what} {key}={old}, would be {new}"))
                    }
                    _ => {}
                }
            }
        }
    }
    found
}

/// Where the identity comes from: the mapping that matched and the ServiceAccount's annotations.
fn identity_sources(
    inputs: &PodInputs<'_>,
    namespace: &str,
    service_account: &str,
    mutation: &mutation::Mutation,
    reasons: &mut Vec<String>,
) {
    let Some(sa) = inputs.service_account else {
        reasons.push(format!(
            "ServiceAccount {namespace}/{service_account} does not exist: nothing is injected"
        ));
        return;
    };
    mapping_reasons(inputs.config, namespace, service_account, reasons);
    annotation_reason(sa, namespace, service_account, reasons);
    if !mutation.identities.is_empty() {
        let identities: Vec<String> = mutation
            .identities
            .iter()
            .map(|(cloud, identity)| format!("{cloud} {identity}"))
            .collect();
        reasons.push(format!("resolved identity: {}", identities.join("; ")));
    }
    policy_reasons(inputs.config, mutation, reasons);
}

/// Which mappings of the ConfigMap match the ServiceAccount: for the whole Pod and per container.
fn mapping_reasons(config: &Config, namespace: &str, service_account: &str, reasons: &mut Vec<String>) {
    let per_container = config.container_mappings_for(namespace, service_account);
    match config.mapping_for(namespace, service_account) {
        Some(mapping) => {
            let index = config
                .identities
                .iter()
                .position(|candidate| std::ptr::eq(candidate, mapping))
                .unwrap_or_default();
            reasons.push(format!(
                "mapping identities[{index}] (namespace {}, serviceAccount {}) matches, for {}; the ServiceAccount's own annotations outrank it",
                mapping.namespace,
                mapping.service_account,
                clouds_of(mapping)
            ));
        }
        None if per_container.is_empty() => reasons.push(format!(
            "no mapping of the ConfigMap matches {namespace}/{service_account}"
        )),
        None => reasons.push(format!(
            "no mapping for every container matches {namespace}/{service_account}"
        )),
    }
    for (index, mapping) in per_container {
        reasons.push(format!(
            "mapping identities[{index}] (namespace {}, serviceAccount {}) matches for the containers {}, for {}; the ServiceAccount's own annotations outrank it",
            mapping.namespace,
            mapping.service_account,
            mapping.containers.as_deref().unwrap_or_default().join(", "),
            clouds_of(mapping)
        ));
    }
}

/// The names of the clouds a mapping gives an identity for, comma separated.
fn clouds_of(mapping: &Mapping) -> String {
    let clouds: Vec<&str> = providers::ALL
        .iter()
        .filter(|provider| provider.is_in(mapping))
        .map(|provider| provider.name())
        .collect();
    clouds.join(", ")
}

/// The identity annotations the ServiceAccount has, or that it has none.
fn annotation_reason(sa: &ServiceAccount, namespace: &str, service_account: &str, reasons: &mut Vec<String>) {
    let annotations = identity_annotations(sa);
    if annotations.is_empty() {
        reasons.push(format!(
            "ServiceAccount {namespace}/{service_account} has no identity annotations"
        ));
    } else {
        let listed: Vec<String> = annotations
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        reasons.push(format!(
            "ServiceAccount {namespace}/{service_account} has the annotations {}",
            listed.join(", ")
        ));
    }
}

/// What the identity policy decided for each cloud's identity.
fn policy_reasons(config: &Config, mutation: &mutation::Mutation, reasons: &mut Vec<String>) {
    let mode = config.policy.mode.name();
    for check in &mutation.policy {
        let cloud = check.cloud;
        reasons.push(match &check.decision {
            Decision::Denied { message, .. } => {
                format!("{message} ({cloud}, policy mode {mode}: {})", check.outcome(true))
            }
            decision => format!(
                "identity policy: rule {:?} allows the {cloud} identity (policy mode {mode})",
                decision.rule().unwrap_or_default()
            ),
        });
    }
}

/// The ServiceAccount annotations some cloud reads.
fn identity_annotations(sa: &ServiceAccount) -> BTreeMap<&str, &str> {
    sa.metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(key, _)| is_identity_annotation(key))
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect()
}

fn is_identity_annotation(key: &str) -> bool {
    providers::ALL
        .iter()
        .flat_map(|provider| provider.annotation_prefixes())
        .any(|prefix| key.starts_with(prefix))
}

/// Containers the Pod's opt-in list or a skip-containers annotation of the Pod leaves out.
fn skipped_containers(pod: &model::Pod, reasons: &mut Vec<String>) {
    if let Some(list) = pod.metadata.annotation(mutation::CONTAINERS_ANNOTATION) {
        reasons.push(format!(
            "the Pod's annotation {}={list:?} gives identities only to those containers",
            mutation::CONTAINERS_ANNOTATION
        ));
    }
    for key in providers::ALL
        .iter()
        .map(|provider| provider.skip_containers_annotation())
    {
        if let Some(list) = pod.metadata.annotation(key) {
            reasons.push(format!(
                "the Pod's annotation {key}={list:?} leaves those containers out of that cloud's identity"
            ));
        }
    }
}

/// Whether `has` misses a token volume, mount or environment variable of `would_get` (or has
/// another value).
fn lacks(has: &Identity, would_get: &Identity) -> bool {
    let volumes = would_get
        .volumes
        .iter()
        .any(|(name, volume)| has.volumes.get(name) != Some(volume));
    volumes
        || would_get.containers.iter().any(|(name, wanted)| {
            has.containers.get(name).is_none_or(|container| {
                let differs = |wanted: &BTreeMap<String, String>, has: &BTreeMap<String, String>| {
                    wanted.iter().any(|(key, value)| has.get(key) != Some(value))
                };
                differs(&wanted.mounts, &container.mounts) || differs(&wanted.env, &container.env)
            })
        })
}

/// Why a Pod differs from what it would get: identities are given at creation only, so the
/// advice is to re-create it, once the webhook can be called.
fn age_reason(inputs: &PodInputs<'_>) -> String {
    if let Some(blocker) = inputs.blocker {
        return format!(
            "the API server cannot call the webhook now ({blocker}): a Pod re-created now would again get no identity, so fix that first, then re-create the Pod"
        );
    }
    let created = inputs.pod.metadata.creation_timestamp.as_ref();
    let changed = inputs
        .service_account
        .and_then(annotations_changed)
        .into_iter()
        .chain(inputs.config_changed.cloned())
        .max();
    match (created, changed) {
        (Some(created), Some(changed)) if created <= &changed => format!(
            "the Pod was created at {} and its identity last changed at {} (ServiceAccount annotations or ConfigMap): the webhook acts only when a Pod is created, so re-create the Pod",
            created.0, changed.0
        ),
        (Some(created), _) => format!(
            "the Pod was created at {}: the webhook acts only when a Pod is created (and only if it is reachable then), so the Pod keeps what it got; re-create it",
            created.0
        ),
        (None, _) => "the webhook acts only when a Pod is created; re-create the Pod".to_owned(),
    }
}

/// When an identity annotation of the ServiceAccount was last written, from its managedFields.
/// None when they do not record it: the API server tracks no fields of an object created with
/// only a name (`kubectl create serviceaccount`), nor of any update after that, so neither the
/// creation time nor any other bounds when an annotation was added.
fn annotations_changed(sa: &ServiceAccount) -> Option<Time> {
    sa.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| writes_identity_annotation(entry))
        .filter_map(|entry| entry.time.clone())
        .max()
}

fn writes_identity_annotation(entry: &ManagedFieldsEntry) -> bool {
    let Some(fields) = &entry.fields_v1 else {
        return false;
    };
    fields.0["f:metadata"]["f:annotations"]
        .as_object()
        .is_some_and(|annotations| {
            annotations
                .keys()
                .any(|key| key.strip_prefix("f:").is_some_and(is_identity_annotation))
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use workload_identity_core::config::Config;

    const ROLE: &str = "arn:aws:iam::111122223333:role/app";
    const NEW_ROLE: &str = "arn:aws:iam::111122223333:role/new";

    fn pod(value: Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn plain_pod() -> Pod {
        pod(
            json!({"metadata": {"name": "web", "namespace": "team-a", "creationTimestamp": "2026-01-01T00:00:00Z"},
                   "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "app:1"}]}}),
        )
    }

    fn sa(annotations: Value) -> ServiceAccount {
        serde_json::from_value(json!({"metadata": {"name": "app", "namespace": "team-a", "annotations": annotations,
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "managedFields": [{"manager": "kubectl", "operation": "Update", "time": "2026-02-01T00:00:00Z",
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:annotations": {"f:eks.amazonaws.com/role-arn": {}}}}}]}}))
        .unwrap()
    }

    fn webhook() -> MutatingWebhook {
        serde_json::from_value(json!({
            "name": "pods.workload-identity.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "failurePolicy": "Ignore", "clientConfig": {},
            "namespaceSelector": {"matchExpressions": [{"key": "workload-identity.dev/inject", "operator": "In", "values": ["enabled"]}]},
            "objectSelector": {"matchExpressions": [{"key": "workload-identity.dev/inject", "operator": "NotIn", "values": ["disabled"]}]},
        }))
        .unwrap()
    }

    fn enabled() -> BTreeMap<String, String> {
        BTreeMap::from([(INJECT_LABEL.to_owned(), "enabled".to_owned())])
    }

    fn explain(
        pod: &Pod,
        labels: &BTreeMap<String, String>,
        sa: Option<&ServiceAccount>,
        config: &Config,
    ) -> PodReport {
        let webhook = webhook();
        explain_pod(&PodInputs {
            pod,
            namespace_labels: labels,
            service_account: sa,
            config,
            webhook: Some(&webhook),
            config_changed: None,
            blocker: None,
        })
    }

    /// The Pod as the webhook (core) would have mutated it with this ServiceAccount.
    fn injected(pod: &Pod, sa: &ServiceAccount) -> Pod {
        let core_pod: model::Pod = serde_json::from_value(serde_json::to_value(pod).unwrap()).unwrap();
        let core_sa: model::ServiceAccount = serde_json::from_value(serde_json::to_value(sa).unwrap()).unwrap();
        let mutation = mutation::mutate_pod(
            &core_pod,
            Namespace::named("team-a"),
            Some(&core_sa),
            &Config::default(),
        );
        let mut value = serde_json::to_value(pod).unwrap();
        json_patch::patch(&mut value, &patch::to_json_patch(&mutation.patch).unwrap()).unwrap();
        serde_json::from_value(value).unwrap()
    }

    fn has(reasons: &[String], needle: &str) -> bool {
        reasons.iter().any(|reason| reason.contains(needle))
    }

    #[test]
    fn a_pod_created_before_its_service_account_was_annotated_is_stale() {
        let annotated = sa(json!({"eks.amazonaws.com/role-arn": ROLE}));
        let report = explain(&plain_pod(), &enabled(), Some(&annotated), &Config::default());
        assert!(report.stale, "{report:#?}");
        assert!(report.has.volumes.is_empty());
        assert!(report.would_get.volumes.contains_key("aws-iam-token"), "{report:#?}");
        assert_eq!(report.would_get.containers["app"].env["AWS_ROLE_ARN"], ROLE);
        assert!(
            has(&report.differences, "volume aws-iam-token: missing"),
            "{:?}",
            report.differences
        );
        assert!(
            has(
                &report.reasons,
                "created at 2026-01-01T00:00:00Z and its identity last changed at 2026-02-01T00:00:00Z"
            ),
            "{:?}",
            report.reasons
        );
    }

    /// A ServiceAccount created with only its name and annotated later has no managedFields
    /// (the API server starts tracking an object's fields only with a field beyond its name): the
    /// reason claims no change time, even one in the Pod's creation second.
    #[test]
    fn a_service_account_without_managed_fields_gives_no_change_time() {
        let untracked: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "app", "namespace": "team-a",
            "annotations": {"eks.amazonaws.com/role-arn": ROLE}, "creationTimestamp": "2026-01-01T00:00:00Z"}}))
            .unwrap();
        let report = explain(&plain_pod(), &enabled(), Some(&untracked), &Config::default());
        assert!(report.stale, "{report:#?}");
        assert!(
            has(
                &report.reasons,
                "the Pod was created at 2026-01-01T00:00:00Z: the webhook acts only when a Pod is created"
            ),
            "{:?}",
            report.reasons
        );
        assert!(!has(&report.reasons, "last changed"), "{:?}", report.reasons);
    }

    #[test]
    fn a_pod_with_its_identity_is_current_and_a_changed_role_makes_it_stale() {
        let annotated = sa(json!({"eks.amazonaws.com/role-arn": ROLE}));
        let running = injected(&plain_pod(), &annotated);
        let report = explain(&running, &enabled(), Some(&annotated), &Config::default());
        assert!(!report.stale, "{report:#?}");
        assert_eq!(report.has, report.would_get);
        assert_eq!(report.has.containers["app"].env["AWS_ROLE_ARN"], ROLE);

        let changed = sa(json!({"eks.amazonaws.com/role-arn": NEW_ROLE}));
        let report = explain(&running, &enabled(), Some(&changed), &Config::default());
        assert!(report.stale);
        assert_eq!(
            report.differences,
            [format!("container app: env AWS_ROLE_ARN={ROLE}, would be {NEW_ROLE}")]
        );

        // The annotation removed: the volume, mount and env go.
        let report = explain(&running, &enabled(), Some(&sa(json!({}))), &Config::default());
        assert!(report.stale);
        assert!(
            has(
                &report.differences,
                "volume aws-iam-token: has it, would not get it now"
            ),
            "{:?}",
            report.differences
        );
        assert!(report.would_get.volumes.is_empty(), "{report:#?}");
    }

    #[test]
    fn each_reason_is_named() {
        let annotated = sa(json!({"eks.amazonaws.com/role-arn": ROLE}));
        // Namespace not opted in: nothing would be injected, so the plain Pod is not stale.
        let report = explain(&plain_pod(), &BTreeMap::new(), Some(&annotated), &Config::default());
        assert!(!report.stale, "{report:#?}");
        assert!(
            has(
                &report.reasons,
                "namespace team-a is not selected by the webhook's namespaceSelector: label workload-identity.dev/inject must be In [\"enabled\"], is unset"
            ),
            "{:?}",
            report.reasons
        );
        assert!(has(
            &report.reasons,
            "kubectl label namespace team-a workload-identity.dev/inject=enabled"
        ));

        let mut opted_out = plain_pod();
        opted_out.metadata.labels = Some(BTreeMap::from([(INJECT_LABEL.to_owned(), "disabled".to_owned())]));
        let report = explain(&opted_out, &enabled(), Some(&annotated), &Config::default());
        assert!(!report.stale);
        assert!(
            has(
                &report.reasons,
                "opted out by the webhook's objectSelector: label workload-identity.dev/inject must be NotIn [\"disabled\"], is \"disabled\""
            ),
            "{:?}",
            report.reasons
        );

        let typo = sa(json!({"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/short"}));
        let report = explain(&plain_pod(), &enabled(), Some(&typo), &Config::default());
        assert!(!report.stale);
        assert!(
            has(&report.warnings, "eks.amazonaws.com/role-arn"),
            "{:?}",
            report.warnings
        );

        let mapping = Config::parse(
            &format!(
                "identities:\n  - namespace: team-a\n    serviceAccount: \"*\"\n    aws: {{roleArn: \"{ROLE}\"}}\n"
            ),
            &Default::default(),
        )
        .unwrap();
        let report = explain(&plain_pod(), &enabled(), Some(&sa(json!({}))), &mapping);
        assert!(report.stale);
        assert!(
            has(
                &report.reasons,
                "mapping identities[0] (namespace team-a, serviceAccount *) matches, for aws"
            ),
            "{:?}",
            report.reasons
        );

        let mut skipping = plain_pod();
        skipping.metadata.annotations = Some(BTreeMap::from([(
            "eks.amazonaws.com/skip-containers".to_owned(),
            "app".to_owned(),
        )]));
        let report = explain(&skipping, &enabled(), Some(&annotated), &Config::default());
        assert!(
            has(
                &report.reasons,
                "annotation eks.amazonaws.com/skip-containers=\"app\" leaves those containers out"
            ),
            "{:?}",
            report.reasons
        );
        assert!(!report.stale, "{report:#?}");

        let report = explain(&plain_pod(), &enabled(), None, &mapping);
        assert!(
            has(&report.reasons, "ServiceAccount team-a/app does not exist"),
            "{:?}",
            report.reasons
        );
    }

    #[test]
    fn identities_per_container_are_shown_with_their_containers() {
        let config = Config::parse(
            &format!(
                "aws: {{region: eu-west-1}}\nidentities:\n  - {{namespace: team-a, serviceAccount: app, containers: [app], aws: {{roleArn: \"{ROLE}\"}}}}\n  - {{namespace: team-a, serviceAccount: app, containers: [proxy], aws: {{roleArn: \"{NEW_ROLE}\"}}}}\n"
            ),
            &Default::default(),
        )
        .unwrap();
        let two = pod(json!({"metadata": {"name": "web", "namespace": "team-a",
                              "annotations": {"workload-identity.dev/containers": "app,proxy"}},
                             "spec": {"serviceAccountName": "app",
                                      "containers": [{"name": "app", "image": "app:1"}, {"name": "log", "image": "log:1"}],
                                      "initContainers": [{"name": "proxy", "image": "proxy:1", "restartPolicy": "Always"}]}}));
        let report = explain(&two, &enabled(), Some(&sa(json!({}))), &config);
        for needle in [
            "mapping identities[0] (namespace team-a, serviceAccount app) matches for the containers app, for aws",
            "mapping identities[1] (namespace team-a, serviceAccount app) matches for the containers proxy, for aws",
            "no mapping for every container matches team-a/app",
            &format!("resolved identity: aws {ROLE} (containers app); aws {NEW_ROLE} (containers proxy)"),
            "workload-identity.dev/containers=\"app,proxy\" gives identities only to those containers",
        ] {
            assert!(has(&report.reasons, needle), "{needle}: {:?}", report.reasons);
        }
        let env = |name: &str| {
            report
                .would_get
                .containers
                .get(name)
                .map(|container| container.env.clone())
        };
        assert_eq!(
            env("app").unwrap_or_default().get("AWS_ROLE_ARN").map(String::as_str),
            Some(ROLE)
        );
        assert_eq!(
            env("proxy").unwrap_or_default().get("AWS_ROLE_ARN").map(String::as_str),
            Some(NEW_ROLE)
        );
        assert!(!env("log").unwrap_or_default().contains_key("AWS_ROLE_ARN"));
    }

    #[test]
    fn the_policy_rule_that_decided_is_named() {
        let policy = |mode: &str| {
            let yaml = format!(
                "policy:\n  mode: {mode}\n  rules: [{{name: tenants-a, namespaces: [\"team-*\"], aws: {{roleArns: [\"{ROLE}\"]}}}}]"
            );
            Config::parse(&yaml, &Default::default()).unwrap()
        };
        let annotated = sa(json!({"eks.amazonaws.com/role-arn": ROLE}));
        let report = explain(&plain_pod(), &enabled(), Some(&annotated), &policy("enforce"));
        assert!(
            has(
                &report.reasons,
                "identity policy: rule \"tenants-a\" allows the aws identity (policy mode enforce)"
            ),
            "{:?}",
            report.reasons
        );
        let other = sa(json!({"eks.amazonaws.com/role-arn": NEW_ROLE}));
        let report = explain(&plain_pod(), &enabled(), Some(&other), &policy("enforce"));
        assert!(report.would_get.volumes.is_empty(), "{report:#?}");
        assert!(
            has(
                &report.reasons,
                "identity policy: rule \"tenants-a\" (selecting namespace team-a) does not allow AWS role"
            ),
            "{:?}",
            report.reasons
        );
        assert!(has(&report.reasons, "(aws, policy mode enforce: withheld)"));
        let report = explain(&plain_pod(), &enabled(), Some(&other), &policy("warn"));
        assert!(report.would_get.volumes.contains_key("aws-iam-token"));
        assert!(
            has(&report.reasons, "(aws, policy mode warn: warned)"),
            "{:?}",
            report.reasons
        );
        // A rule selecting by label is judged with the namespace's labels.
        let by_label = |selector: &str| {
            let yaml = format!(
                "policy:\n  rules: [{{name: labelled, namespaceSelector: {selector}, aws: {{roleArns: [\"{ROLE}\"]}}}}]"
            );
            Config::parse(&yaml, &Default::default()).unwrap()
        };
        let selected = by_label(&format!("{{matchLabels: {{{INJECT_LABEL}: enabled}}}}"));
        let report = explain(&plain_pod(), &enabled(), Some(&annotated), &selected);
        assert!(
            has(
                &report.reasons,
                "identity policy: rule \"labelled\" allows the aws identity"
            ),
            "{:?}",
            report.reasons
        );
        let unselected = by_label("{matchLabels: {tier: gold}}");
        let report = explain(&plain_pod(), &enabled(), Some(&annotated), &unselected);
        assert!(report.would_get.volumes.is_empty(), "{report:#?}");
        assert!(
            has(&report.reasons, "no rule selects namespace team-a"),
            "{:?}",
            report.reasons
        );
    }

    #[test]
    fn label_selectors_follow_the_api_server() {
        let labels = BTreeMap::from([("a".to_owned(), "1".to_owned())]);
        let selector = |value: Value| -> LabelSelector { serde_json::from_value(value).unwrap() };
        assert_eq!(selector_mismatch(None, &labels), None);
        assert_eq!(selector_mismatch(Some(&selector(json!({}))), &labels), None);
        assert_eq!(
            selector_mismatch(Some(&selector(json!({"matchLabels": {"a": "1"}}))), &labels),
            None
        );
        assert!(selector_mismatch(Some(&selector(json!({"matchLabels": {"a": "2"}}))), &labels).is_some());
        let expression = |operator: &str, values: Value| {
            selector(json!({"matchExpressions": [{"key": "a", "operator": operator, "values": values}]}))
        };
        assert_eq!(
            selector_mismatch(Some(&expression("In", json!(["1", "2"]))), &labels),
            None
        );
        assert!(selector_mismatch(Some(&expression("In", json!(["2"]))), &labels).is_some());
        assert!(selector_mismatch(Some(&expression("NotIn", json!(["1"]))), &labels).is_some());
        assert_eq!(
            selector_mismatch(Some(&expression("NotIn", json!(["1"]))), &BTreeMap::new()),
            None
        );
        assert_eq!(
            selector_mismatch(Some(&expression("Exists", json!(null))), &labels),
            None
        );
        assert!(selector_mismatch(Some(&expression("DoesNotExist", json!(null))), &labels).is_some());
    }
}
