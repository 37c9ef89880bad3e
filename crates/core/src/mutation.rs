//! The pure core: from a Pod or ServiceAccount, its identity inputs and the settings, to a JSON
//! patch. No I/O and no clock; the server and the offline `mutate` command both call these.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::config::Config;
use crate::echo::Echo;
use crate::model::{Container, Mount, Pod, ServiceAccount, Volume};
use crate::patch::{EnvVar, Operation, VolumeMount, add, annotation_path, append};
use crate::policy::{Decision, Mode, Namespace, Policy};
use crate::providers::claim::Claim;
use crate::providers::{self, CloudProvider, EndpointOverride, Mapping, PodContext, PodInjection, ScratchDir};

/// A patch with what it means: the identities it gives and the warnings for the user.
#[derive(Debug, Default)]
pub struct Mutation {
    pub patch: Vec<Operation>,
    /// `(cloud, identity)` for each identity given, for the audit log, metrics and `explain`; an
    /// identity only some containers get names them: `<identity> (containers app,worker)`.
    pub identities: Vec<(&'static str, String)>,
    pub warnings: Vec<String>,
    /// The cloud each warning is about (`none`: the Pod as a whole), in step with `warnings`
    /// before they are bounded, for the metrics.
    pub warning_clouds: Vec<&'static str>,
    /// Settings SDKs need that the injected identities lack, for the metrics.
    pub gaps: Vec<&'static str>,
    /// The identity policy's decision for each cloud an identity was claimed of.
    pub policy: Vec<PolicyCheck>,
    /// Set when the request is refused (a ServiceAccount the policy forbids, in `enforce`): the
    /// message for the user. The answer then carries no patch.
    pub denied: Option<String>,
    /// The answer's `auditAnnotations` (the apiserver prefixes each key with the webhook's name):
    /// what each cloud gave (identity, audience, lifetime) and the policy's decisions.
    pub audit: Vec<(&'static str, String)>,
}

/// What an audit annotation of one cloud records.
#[derive(Clone, Copy)]
enum Audit {
    Identity,
    Audience,
    Lifetime,
    PolicyRule,
    Policy,
}

/// The audit annotation key `<cloud>-<what>`, written out so that no answer allocates its keys.
fn audit_key(cloud: &str, what: Audit) -> &'static str {
    const KEYS: &[(&str, [&str; 5])] = &[
        (
            "aws",
            [
                "aws-identity",
                "aws-audience",
                "aws-token-expiration-seconds",
                "aws-policy-rule",
                "aws-policy",
            ],
        ),
        (
            "gcp",
            [
                "gcp-identity",
                "gcp-audience",
                "gcp-token-expiration-seconds",
                "gcp-policy-rule",
                "gcp-policy",
            ],
        ),
        (
            "azure",
            [
                "azure-identity",
                "azure-audience",
                "azure-token-expiration-seconds",
                "azure-policy-rule",
                "azure-policy",
            ],
        ),
    ];
    KEYS.iter()
        .find(|(name, _)| *name == cloud)
        .map_or("unknown-cloud", |(_, keys)| keys[what as usize])
}

/// The identity policy's decision about one cloud of a Pod or ServiceAccount.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyCheck {
    pub cloud: &'static str,
    pub decision: Decision,
    /// Whether a denial took effect (`enforce`) rather than being only warned about (`warn`).
    pub enforced: bool,
}

impl PolicyCheck {
    fn new(cloud: &'static str, decision: Decision, mode: Mode) -> PolicyCheck {
        PolicyCheck {
            cloud,
            enforced: decision.is_denied() && mode == Mode::Enforce,
            decision,
        }
    }

    /// What happened, for the metric and the audit log: `refused` (a ServiceAccount), `withheld`
    /// (a Pod's identity), `warned`, or `allowed`.
    pub fn outcome(&self, pod: bool) -> &'static str {
        match (self.decision.is_denied(), self.enforced, pod) {
            (false, _, _) => "allowed",
            (true, false, _) => "warned",
            (true, true, true) => "withheld",
            (true, true, false) => "refused",
        }
    }

    /// The audit annotations of this decision: the rule, and what happened when it denied.
    fn audit(&self, pod: bool, audit: &mut Vec<(&'static str, String)>) {
        if let Some(rule) = self.decision.rule() {
            audit.push((audit_key(self.cloud, Audit::PolicyRule), rule));
        }
        if let Decision::Denied { message, .. } = &self.decision {
            audit.push((
                audit_key(self.cloud, Audit::Policy),
                format!("{}: {message}", self.outcome(pod)),
            ));
        }
    }
}

impl Mutation {
    /// Adds a warning about the Pod as a whole.
    pub fn warn(&mut self, warning: String) {
        self.warnings.push(warning);
        self.warning_clouds.push(NO_CLOUD);
    }
}

/// The cloud label of a warning that is about no one cloud.
pub const NO_CLOUD: &str = "none";

/// Warnings being gathered, each tagged with its cloud once the step that made it is known.
#[derive(Default)]
struct Warnings {
    texts: Vec<String>,
    clouds: Vec<&'static str>,
}

impl Warnings {
    /// Tags the warnings added since the last call.
    fn tag(&mut self, cloud: &'static str) {
        self.clouds.resize(self.texts.len(), cloud);
    }
}

/// What a Pod gets. `service_account` is `None` when the ServiceAccount does not exist.
pub fn mutate_pod(
    pod: &Pod,
    namespace: Namespace<'_>,
    service_account: Option<&ServiceAccount>,
    config: &Config,
) -> Mutation {
    let mut warnings = Warnings::default();
    let mut mutation = Mutation::default();
    let injections = pod_injections(
        pod,
        namespace,
        service_account,
        config,
        &mut warnings,
        &mut mutation.policy,
    );
    for check in &mutation.policy {
        check.audit(true, &mut mutation.audit);
    }
    if !injections.is_empty() {
        warn_of_gaps_and_endpoints(pod, &injections, &mut warnings);
        mutation.gaps = injections
            .iter()
            .flat_map(|injection| injection.gaps.iter().map(|(setting, _)| *setting))
            .collect();
        mutation.patch = pod_patch(pod, &injections, &mut warnings);
        mutation.identities = injections
            .iter()
            .map(|injection| (injection.cloud, described_identity(pod, injection)))
            .collect();
        for (injection, (_, identity)) in injections.iter().zip(&mutation.identities) {
            injection_audit(injection, identity, &mut mutation.audit);
        }
    }
    warnings.tag(NO_CLOUD);
    // Each identity of a cloud is resolved on its own, and says the same of shared inputs.
    for (text, cloud) in warnings.texts.into_iter().zip(warnings.clouds) {
        if !mutation.warnings.contains(&text) {
            mutation.warnings.push(text);
            mutation.warning_clouds.push(cloud);
        }
    }
    mutation.gaps.sort_unstable();
    mutation.gaps.dedup();
    mutation.audit = merged_audit(mutation.audit);
    mutation
}

/// Warnings of what the injections lack (settings SDKs need) and of the endpoint overrides that
/// reach a container.
fn warn_of_gaps_and_endpoints(pod: &Pod, injections: &[PodInjection], warnings: &mut Warnings) {
    for injection in injections {
        warnings
            .texts
            .extend(injection.gaps.iter().map(|(_, warning)| warning.clone()));
        warnings.tag(injection.cloud);
    }
    for injection in injections {
        let overridden = |endpoint: &&EndpointOverride| {
            // An env var that every container taking the injection sets itself is not overridden.
            !endpoint.in_env
                || pod
                    .all_containers()
                    .any(|container| takes(container, injection) && !container.sets_env(endpoint.target))
        };
        let endpoints = injection.endpoints.iter().filter(overridden);
        warnings
            .texts
            .extend(endpoints.map(|endpoint| endpoint.warning(injection.cloud)));
        warnings.tag(injection.cloud);
    }
}

/// The audit annotations with one value per key: the distinct values of a key (one per identity
/// of a cloud) joined by `; `.
fn merged_audit(audit: Vec<(&'static str, String)>) -> Vec<(&'static str, String)> {
    let repeated = |(i, (key, _)): (usize, &(&str, String))| audit[..i].iter().any(|(seen, _)| seen == key);
    if !audit.iter().enumerate().any(repeated) {
        return audit;
    }
    let mut merged: Vec<(&'static str, String)> = Vec::with_capacity(audit.len());
    for (key, value) in audit {
        match merged.iter_mut().find(|(seen, _)| *seen == key) {
            None => merged.push((key, value)),
            Some((_, values)) => {
                if !values.split("; ").any(|seen| seen == value) {
                    values.push_str("; ");
                    values.push_str(&value);
                }
            }
        }
    }
    merged
}

/// The injections a Pod gets, as [`mutate_pod`] resolves them before patching: each cloud whose
/// identity resolves and that fits the Pod, with the warnings of resolving them. `explain`
/// compares a running Pod with these.
pub fn resolve_pod(
    pod: &Pod,
    namespace: Namespace<'_>,
    service_account: Option<&ServiceAccount>,
    config: &Config,
) -> (Vec<PodInjection>, Vec<String>) {
    let mut warnings = Warnings::default();
    let injections = pod_injections(pod, namespace, service_account, config, &mut warnings, &mut Vec::new());
    (injections, warnings.texts)
}

/// An injection's identity, with the containers that get it when not all of the Pod's do.
fn described_identity(pod: &Pod, injection: &PodInjection) -> String {
    if pod.all_containers().all(|container| takes(container, injection)) {
        return injection.identity.clone();
    }
    let taking: Vec<String> = pod
        .all_containers()
        .filter(|container| takes(container, injection))
        .map(|container| Echo(&container.name).to_string())
        .collect();
    format!("{} (containers {})", injection.identity, taking.join(","))
}

/// The audit annotations of one cloud's injection: its identity as [described](described_identity),
/// token audience and lifetime, and the other values it claims (Google provider, Azure tenant).
fn injection_audit(injection: &PodInjection, identity: &str, audit: &mut Vec<(&'static str, String)>) {
    let cloud = injection.cloud;
    audit.push((audit_key(cloud, Audit::Identity), identity.to_owned()));
    let sources = injection.volume["projected"]["sources"]
        .as_array()
        .into_iter()
        .flatten();
    if let Some(token) = sources
        .map(|source| &source["serviceAccountToken"])
        .find(|token| token.is_object())
    {
        if let Some(audience) = token["audience"].as_str() {
            audit.push((audit_key(cloud, Audit::Audience), audience.to_owned()));
        }
        audit.push((
            audit_key(cloud, Audit::Lifetime),
            token["expirationSeconds"].to_string(),
        ));
    }
    for claim in &injection.claims {
        if let Some(value) = claim.value.as_ref().filter(|value| **value != injection.identity) {
            audit.push((claim.field.audit_key(), value.clone()));
        }
    }
}

fn pod_injections(
    pod: &Pod,
    namespace: Namespace<'_>,
    service_account: Option<&ServiceAccount>,
    config: &Config,
    warnings: &mut Warnings,
    policy: &mut Vec<PolicyCheck>,
) -> Vec<PodInjection> {
    let service_account_name = pod.service_account_name();
    let Namespace {
        name: namespace_name, ..
    } = namespace;
    let Some(service_account) = service_account else {
        warn_if_mapped_without_service_account(namespace_name, service_account_name, config, warnings);
        return Vec::new();
    };
    let mut injections = resolved_injections(
        pod,
        namespace_name,
        service_account_name,
        service_account,
        config,
        warnings,
    );
    apply_policy(&mut injections, namespace, config, warnings, policy);
    injections.retain(|injection| {
        let fits = fits(pod, injection, &mut warnings.texts);
        warnings.tag(injection.cloud);
        fits
    });
    drop_clashing_volumes(&mut injections, warnings);
    // Only a cluster without the ServiceAccount admission plugin (which names `default` before any
    // webhook runs) sends an unnamed Pod; it would refuse our token volume, so leave the Pod alone.
    if pod.spec.service_account_name.as_deref().is_none_or(str::is_empty) && !injections.is_empty() {
        warnings.texts.push(format!(
            "the Pod has no serviceAccountName (is the ServiceAccount admission plugin off?); no cloud identity injected for {namespace_name}/{service_account_name}"
        ));
        return Vec::new();
    }
    injections
}

/// A mapping names a ServiceAccount that does not exist: say why the Pod gets no identity.
fn warn_if_mapped_without_service_account(
    namespace: &str,
    service_account_name: &str,
    config: &Config,
    warnings: &mut Warnings,
) {
    if config.mapping_for(namespace, service_account_name).is_some()
        || !config
            .container_mappings_for(namespace, service_account_name)
            .is_empty()
    {
        warnings.texts.push(format!(
            "ServiceAccount {namespace}/{} does not exist; no cloud identity injected",
            Echo(service_account_name)
        ));
    }
}

/// Each cloud's identity for each group of containers, from the ServiceAccount's annotations and
/// the mappings, before the policy and the fit are checked.
fn resolved_injections(
    pod: &Pod,
    namespace: &str,
    service_account_name: &str,
    service_account: &ServiceAccount,
    config: &Config,
    warnings: &mut Warnings,
) -> Vec<PodInjection> {
    let written_by_users = users_annotations(service_account);
    let whole_pod = config.mapping_for(namespace, service_account_name);
    let per_container = config.container_mappings_for(namespace, service_account_name);
    let opted_in = opt_in_list(pod, &mut warnings.texts);
    warnings.tag(NO_CLOUD);
    let mut injections: Vec<PodInjection> = Vec::new();
    for provider in providers::ALL {
        for group in container_groups(pod, *provider, whole_pod, &per_container, opted_in.as_deref()) {
            let context = PodContext {
                pod,
                namespace,
                service_account_annotations: &written_by_users,
                mapping: group.mapping,
                container_mapping: group.container_mapping,
                left_out: &group.left_out,
                settings: &config.settings,
            };
            injections.extend(provider.pod_injection(&context, &mut warnings.texts));
        }
        warnings.tag(provider.name());
    }
    injections
}

/// Drops the identities the policy denies (in enforce mode), warns of every denial and records
/// each decision in `policy`. The policy judges the identity as resolved, whichever source gave it.
fn apply_policy(
    injections: &mut Vec<PodInjection>,
    namespace: Namespace<'_>,
    config: &Config,
    warnings: &mut Warnings,
    policy: &mut Vec<PolicyCheck>,
) {
    injections.retain(|injection| {
        let check = PolicyCheck::new(
            injection.cloud,
            config.policy.decide(namespace, &injection.claims),
            config.policy.mode,
        );
        if let Decision::Denied { message, .. } = &check.decision {
            warnings.texts.push(if check.enforced {
                format!("{message}; no {} credentials injected", injection.cloud)
            } else {
                format!("{message} (policy mode warn: injected all the same)")
            });
            warnings.tag(injection.cloud);
        }
        let keep = !check.enforced;
        if check.decision != Decision::Off {
            policy.push(check);
        }
        keep
    });
}

/// Drops each identity whose token volume clashes with an earlier one's. Runs after the policy
/// and the fit: only identities that are injected share a volume.
fn drop_clashing_volumes(injections: &mut Vec<PodInjection>, warnings: &mut Warnings) {
    let mut kept = 0;
    while kept < injections.len() {
        let (earlier, rest) = injections.split_at(kept);
        let cloud = rest[0].cloud;
        if shares_the_volume(&rest[0], earlier, &mut warnings.texts) {
            kept += 1;
        } else {
            injections.remove(kept);
        }
        warnings.tag(cloud);
    }
}

/// The Pod annotation that lists the only containers that get identities (comma separated): an
/// opt-in list, which can only narrow what the mappings and skip lists give.
pub const CONTAINERS_ANNOTATION: &str = "workload-identity.dev/containers";

/// The containers the Pod opts in with [`CONTAINERS_ANNOTATION`] (`None`: every container).
/// Names the Pod has no container of are warned about.
fn opt_in_list(pod: &Pod, warnings: &mut Vec<String>) -> Option<Vec<String>> {
    let value = pod.metadata.annotation(CONTAINERS_ANNOTATION)?;
    let names: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect();
    if names.is_empty() {
        warnings.push(format!(
            "annotation {CONTAINERS_ANNOTATION}={:?} names no container; ignored",
            Echo(value)
        ));
        return None;
    }
    for name in &names {
        if !pod.all_containers().any(|container| container.name == *name) {
            warnings.push(format!(
                "annotation {CONTAINERS_ANNOTATION} names {:?}, which is no container of the Pod",
                Echo(name)
            ));
        }
    }
    Some(names)
}

/// Containers of a Pod that get one cloud's identity from the same mapping.
struct ContainerGroup<'c> {
    mapping: Option<&'c Mapping>,
    /// The index of `mapping` when it is one with `containers`.
    container_mapping: Option<usize>,
    /// The Pod's other containers.
    left_out: Vec<String>,
}

/// The Pod's containers grouped by the mapping that gives them `provider`'s identity: each
/// container by the first mapping with `containers` that names it and gives that cloud, else by
/// the whole Pod's mapping (or none: the ServiceAccount's annotations alone). Containers outside
/// the opt-in list are in no group; groups without containers are left out.
fn container_groups<'c>(
    pod: &Pod,
    provider: &dyn CloudProvider,
    whole_pod: Option<&'c Mapping>,
    per_container: &[(usize, &'c Mapping)],
    opted_in: Option<&[String]>,
) -> Vec<ContainerGroup<'c>> {
    let of_cloud: Vec<(usize, &Mapping)> = per_container
        .iter()
        .filter(|(_, mapping)| provider.is_in(mapping))
        .copied()
        .collect();
    if of_cloud.is_empty() && opted_in.is_none() {
        // The whole Pod, as one group.
        return vec![ContainerGroup {
            mapping: whole_pod,
            container_mapping: None,
            left_out: Vec::new(),
        }];
    }
    let group_of = |name: &str| {
        of_cloud
            .iter()
            .find(|(_, mapping)| mapping.names_container(name))
            .map(|(i, _)| *i)
    };
    let names: Vec<&str> = pod.all_containers().map(|container| container.name.as_str()).collect();
    let opted_in = |name: &str| opted_in.is_none_or(|list| list.iter().any(|listed| listed == name));
    let groups =
        std::iter::once((None, whole_pod)).chain(of_cloud.iter().map(|(i, mapping)| (Some(*i), Some(*mapping))));
    groups
        .filter_map(|(container_mapping, mapping)| {
            let member = |name: &&str| group_of(name) == container_mapping && opted_in(name);
            if !names.iter().any(member) {
                return None;
            }
            let left_out = names
                .iter()
                .filter(|name| !member(name))
                .map(|name| (*name).to_owned())
                .collect();
            Some(ContainerGroup {
                mapping,
                container_mapping,
                left_out,
            })
        })
        .collect()
}

/// Whether an injection can share the token volume of an earlier one of its name (another
/// identity of its cloud for other containers): only with the same token. A mapping's own audience
/// or lifetime can make it differ; its containers then get nothing of that cloud.
fn shares_the_volume(injection: &PodInjection, earlier: &[PodInjection], warnings: &mut Vec<String>) -> bool {
    let token = |volume: &Value| {
        sources(volume)
            .find(|source| source.get("serviceAccountToken").is_some())
            .cloned()
    };
    let Some(first) = earlier.iter().find(|other| other.volume_name == injection.volume_name) else {
        return true;
    };
    if token(&first.volume) == token(&injection.volume) {
        return true;
    }
    warnings.push(format!(
        "{} identity {} needs a token of another audience or lifetime than {} in the same Pod (one volume {} holds the token of both); no {} credentials injected for it",
        injection.cloud, Echo(&injection.identity), Echo(&first.identity), injection.volume_name, injection.cloud
    ));
    false
}

/// The sources of a projected volume.
fn sources(volume: &Value) -> impl Iterator<Item = &Value> {
    volume["projected"]["sources"].as_array().into_iter().flatten()
}

/// One volume for the injections of one name: the first's, with the files (Downward API items)
/// of the others added.
fn merged_volume<'i>(mut sharing: impl Iterator<Item = &'i PodInjection>) -> Option<Value> {
    let mut volume = sharing.next()?.volume.clone();
    for other in sharing {
        for item in
            sources(&other.volume).flat_map(|source| source["downwardAPI"]["items"].as_array().into_iter().flatten())
        {
            let items = volume["projected"]["sources"]
                .as_array_mut()
                .into_iter()
                .flatten()
                // `get_mut`, not `[...]`: indexing a JSON object for writing adds the key.
                .find_map(|source| source.get_mut("downwardAPI")?.get_mut("items")?.as_array_mut());
            if let Some(items) = items.filter(|items| !items.contains(item)) {
                items.push(item.clone());
            }
        }
    }
    Some(volume)
}

/// What a ServiceAccount gets: the annotations of the mapping that matches it, where it has none.
pub fn mutate_service_account(service_account: &ServiceAccount, namespace: Namespace<'_>, config: &Config) -> Mutation {
    let Some(name) = service_account.metadata.name.as_deref() else {
        // No mapping can match (a `generateName` ServiceAccount); the policy still judges it.
        let mut mutation = Mutation::default();
        let annotations = service_account.metadata.annotations.clone().unwrap_or_default();
        service_account_policy(&annotations, namespace, config, &mut mutation);
        return mutation;
    };
    let managed_before = managed_keys(service_account);
    let MappedAnnotations {
        identities,
        managed_now,
        mut changed,
    } = mapped_annotations(service_account, name, namespace.name, config, &managed_before);
    let mut patch = Vec::new();
    forget_unmapped(service_account, &managed_before, &managed_now, &mut patch, &mut changed);
    let mut mutation = Mutation {
        identities,
        ..Mutation::default()
    };
    if config.policy.is_on() {
        // The policy judges the annotations as they will be stored: with the mapping's applied.
        let stored = stored_annotations(service_account, &managed_before, &managed_now, &changed);
        service_account_policy(&stored, namespace, config, &mut mutation);
    }
    if mutation.denied.is_none() {
        add_annotations(&mut patch, service_account.metadata.annotations.is_some(), changed);
        mutation.patch = patch;
    }
    mutation
}

/// What the mapping matching a ServiceAccount gives it.
struct MappedAnnotations {
    /// Each cloud's identity, as the annotations name it.
    identities: Vec<(&'static str, String)>,
    /// The annotations the webhook manages once this request is stored.
    managed_now: BTreeSet<&'static str>,
    /// The annotations to write: new ones and those whose value changes.
    changed: Vec<(&'static str, String)>,
}

/// The mapping's annotations for a ServiceAccount, leaving out those the user wrote.
fn mapped_annotations(
    service_account: &ServiceAccount,
    name: &str,
    namespace: &str,
    config: &Config,
    managed_before: &BTreeSet<&str>,
) -> MappedAnnotations {
    let mut mapped = MappedAnnotations {
        identities: Vec::new(),
        managed_now: BTreeSet::new(),
        changed: Vec::new(),
    };
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
            mapped.managed_now.insert(key);
            mapped.identities.push((provider.name(), value.clone()));
            if current != Some(value.as_str()) {
                mapped.changed.push((key, value));
            }
        }
    }
    mapped
}

/// Removes the annotations the webhook wrote that no mapping gives any more, and updates the
/// list of the annotations it manages.
fn forget_unmapped(
    service_account: &ServiceAccount,
    managed_before: &BTreeSet<&str>,
    managed_now: &BTreeSet<&'static str>,
    patch: &mut Vec<Operation>,
    changed: &mut Vec<(&'static str, String)>,
) {
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
}

/// The ServiceAccount's annotations as they will be stored: the unmapped ones gone, the changed
/// ones written.
fn stored_annotations(
    service_account: &ServiceAccount,
    managed_before: &BTreeSet<&str>,
    managed_now: &BTreeSet<&str>,
    changed: &[(&str, String)],
) -> BTreeMap<String, String> {
    let mut stored = service_account.metadata.annotations.clone().unwrap_or_default();
    for key in managed_before.iter().filter(|key| !managed_now.contains(**key)) {
        stored.remove(*key);
    }
    stored.extend(changed.iter().map(|(key, value)| ((*key).to_owned(), value.clone())));
    stored
}

/// The policy's decision on a ServiceAccount's identity annotations, cloud by cloud: in `enforce`
/// a denial refuses the request, in `warn` it is a warning.
fn service_account_policy(
    annotations: &BTreeMap<String, String>,
    namespace: Namespace<'_>,
    config: &Config,
    mutation: &mut Mutation,
) {
    let claims = Policy::annotation_claims(annotations, &config.settings);
    let mut refusals = Vec::new();
    for provider in providers::ALL {
        let cloud = provider.name();
        let of_cloud: Vec<Claim> = claims
            .iter()
            .filter(|claim| claim.field.cloud() == cloud)
            .cloned()
            .collect();
        let check = PolicyCheck::new(cloud, config.policy.decide(namespace, &of_cloud), config.policy.mode);
        if check.decision == Decision::Off {
            continue;
        }
        check.audit(false, &mut mutation.audit);
        if let Decision::Denied { message, .. } = &check.decision {
            if check.enforced {
                refusals.push(message.clone());
            } else {
                mutation
                    .warnings
                    .push(format!("{message} (policy mode warn: admitted)"));
                mutation.warning_clouds.push(cloud);
            }
        }
        mutation.policy.push(check);
    }
    if !refusals.is_empty() {
        mutation.denied = Some(refusals.join("; "));
    }
}

/// The ServiceAccount annotations that the webhook wrote from a mapping, listed on the
/// ServiceAccount itself. They follow the mapping, changed or removed with it, and never outrank it.
pub const MANAGED_ANNOTATIONS: &str = "workload-identity.dev/managed-annotations";

/// The keys listed in [`MANAGED_ANNOTATIONS`] that a mapping can write: the list is on an object
/// its users can edit, so any other key in it (which the webhook would then remove) is ignored.
fn managed_keys(service_account: &ServiceAccount) -> BTreeSet<&str> {
    let writable = |key: &&str| {
        providers::ALL
            .iter()
            .any(|provider| provider.service_account_annotation_keys().contains(key))
    };
    service_account
        .metadata
        .annotation(MANAGED_ANNOTATIONS)
        .map(|list| list.split(',').map(str::trim).filter(writable).collect())
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

/// Whether an injection goes into the Pod at all. Not when the Pod has a volume of its name that
/// is not ours (the env vars would point into the user's volume), nor when no container takes it
/// (a volume and annotations nobody uses).
fn fits(pod: &Pod, injection: &PodInjection, warnings: &mut Vec<String>) -> bool {
    let mut volumes = pod.spec.volumes.iter().flatten();
    if let Some(volume) = volumes.find(|volume| volume.name == injection.volume_name)
        && let Err(why) = missing_files(volume, &injection.volume)
    {
        warnings.push(format!(
            "the Pod has its own volume {} that {why}; no {} credentials injected",
            injection.volume_name, injection.cloud
        ));
        return false;
    }
    if pod.all_containers().any(|container| takes(container, injection)) {
        return true;
    }
    // Left out everywhere: a container the skip list does not name mounts something else there.
    let conflicts = pod
        .all_containers()
        .filter(|container| !injection.skip_containers.contains(&container.name));
    warnings.extend(conflicts.map(|container| mount_conflict(container, injection)));
    false
}

fn mount_conflict(container: &Container, injection: &PodInjection) -> String {
    format!(
        "container {:?} mounts another volume at {} or the volume {} elsewhere; it gets no {} credentials",
        Echo(&container.name),
        injection.mount_path,
        injection.volume_name,
        injection.cloud
    )
}

/// The Downward API files of ours that a Pod volume of our name lacks, to be added to it: the
/// file of an identity whose containers came after the volume (a sidecar another webhook added
/// before the apiserver reinvoked us). An error says why the volume is not ours: it does not
/// project our token (same audience and file; the lifetime may differ) or our ConfigMap files, or
/// it holds another file where one of ours goes. Our own volume, once the apiserver has stored and
/// defaulted it, is ours.
fn missing_files<'o>(volume: &Volume, ours: &'o Value) -> Result<Vec<&'o Value>, String> {
    let not_our_token = || "does not project the webhook's token".to_owned();
    let projected = volume.projected().ok_or_else(not_our_token)?;
    let theirs = &projected.sources;
    let mut missing = Vec::new();
    for source in sources(ours) {
        let token = &source["serviceAccountToken"];
        let token_found = token.is_null()
            || theirs
                .iter()
                .filter_map(|source| source.service_account_token.as_ref())
                .any(|theirs| theirs.path == token["path"] && theirs.audience.as_deref() == token["audience"].as_str());
        if !token_found {
            return Err(not_our_token());
        }
        let config_map = &source["configMap"];
        for item in config_map["items"].as_array().into_iter().flatten() {
            let found = theirs
                .iter()
                .filter_map(|source| source.config_map.as_ref())
                .filter(|theirs| theirs.name == config_map["name"])
                .any(|theirs| {
                    theirs
                        .items
                        .iter()
                        .any(|theirs| theirs.key == item["key"] && theirs.path == item["path"])
                });
            if !found {
                return Err(format!(
                    "does not project the webhook's ConfigMap {} key {}",
                    config_map["name"], item["key"]
                ));
            }
        }
        for file in source["downwardAPI"]["items"].as_array().into_iter().flatten() {
            let at_path = theirs
                .iter()
                .filter_map(|source| source.downward_api.as_ref())
                .flat_map(|downward| &downward.items)
                .find(|theirs| theirs.path == file["path"]);
            match at_path {
                None => missing.push(file),
                Some(theirs)
                    if theirs
                        .field_ref
                        .as_ref()
                        .is_some_and(|field| field.field_path == file["fieldRef"]["fieldPath"]) => {}
                Some(_) => return Err(format!("holds another file {}", file["path"])),
            }
        }
    }
    Ok(missing)
}

/// Whether a container gets an injection: not when a skip list names it, nor when it mounts
/// something else at our path or our volume elsewhere (the env vars would point at a file we did
/// not project there).
fn takes(container: &Container, injection: &PodInjection) -> bool {
    !injection.skip_containers.contains(&container.name)
        && container.mount(injection.volume_name, injection.mount_path) != Some(Mount::Other)
}

fn pod_patch(pod: &Pod, injections: &[PodInjection], warnings: &mut Warnings) -> Vec<Operation> {
    let mut patch = Vec::new();

    let changed_annotations = injections
        .iter()
        .flat_map(|injection| injection.pod_annotations.iter())
        .filter(|(key, value)| pod.metadata.annotation(key) != Some(value.as_str()))
        .map(|(key, value)| (key.as_str(), value.clone()))
        .collect();
    add_annotations(&mut patch, pod.metadata.annotations.is_some(), changed_annotations);

    let volumes = pod.spec.volumes.as_deref().unwrap_or_default();
    let missing = |name: &str| !volumes.iter().any(|volume| volume.name == name);
    // Each injection's volumes together: its token (once for all the injections that share it),
    // then its scratch directory (once) if any container takes it.
    let mut added = BTreeSet::new();
    let new_volumes: Vec<Value> = injections
        .iter()
        .flat_map(|injection| {
            let sharing = injections
                .iter()
                .filter(|other| other.volume_name == injection.volume_name);
            let token = (missing(injection.volume_name) && added.insert(injection.volume_name))
                .then(|| merged_volume(sharing))
                .flatten();
            let scratch = injection.scratch.as_ref().filter(|scratch| {
                missing(scratch.volume_name)
                    && !added.contains(scratch.volume_name)
                    && pod
                        .all_containers()
                        .any(|container| takes(container, injection) && scratch_mount(container, scratch) == Some(None))
            });
            let scratch = scratch.map(|scratch| {
                added.insert(scratch.volume_name);
                serde_json::json!({"name": scratch.volume_name, "emptyDir": {}})
            });
            token.into_iter().chain(scratch)
        })
        .collect();
    append(
        &mut patch,
        "/spec/volumes".to_owned(),
        pod.spec.volumes.is_some(),
        new_volumes,
    );
    for (index, volume) in volumes.iter().enumerate() {
        add_missing_files(&mut patch, index, volume, injections);
    }

    let container_lists = [
        ("containers", Some(&pod.spec.containers)),
        ("initContainers", pod.spec.init_containers.as_ref()),
    ];
    for (list, containers) in container_lists {
        for (index, container) in containers.into_iter().flatten().enumerate() {
            patch_container(&mut patch, list, index, container, injections, warnings);
        }
    }
    patch
}

/// Adds to a volume of ours that the Pod has the files it lacks of the injections sharing it
/// (all of which [fit](fits) it).
fn add_missing_files(patch: &mut Vec<Operation>, index: usize, volume: &Volume, injections: &[PodInjection]) {
    let mut files: Vec<Value> = Vec::new();
    let sharing = injections
        .iter()
        .filter(|injection| injection.volume_name == volume.name);
    for file in sharing.flat_map(|injection| missing_files(volume, &injection.volume).unwrap_or_default()) {
        if !files.contains(file) {
            files.push(file.clone());
        }
    }
    // Only then read the volume's sources: that parses them, and most Pods' volumes are not ours.
    if files.is_empty() {
        return;
    }
    let Some(projected) = volume.projected() else {
        return;
    };
    let sources = ["/spec/volumes/", &index.to_string(), "/projected/sources"].concat();
    match projected
        .sources
        .iter()
        .position(|source| source.downward_api.is_some())
    {
        Some(at) => {
            let items_exist = projected.sources[at]
                .downward_api
                .as_ref()
                .is_some_and(|downward| !downward.items.is_empty());
            let items = [sources.as_str(), "/", &at.to_string(), "/downwardAPI/items"].concat();
            append(patch, items, items_exist, files);
        }
        None => append(
            patch,
            sources,
            true,
            vec![serde_json::json!({"downwardAPI": {"items": files}})],
        ),
    }
}

fn patch_container(
    patch: &mut Vec<Operation>,
    list: &str,
    index: usize,
    container: &Container,
    injections: &[PodInjection],
    warnings: &mut Warnings,
) {
    let mut mounts = Vec::new();
    let mut env: Vec<EnvVar> = Vec::new();
    for injection in injections {
        add_injection(container, injection, &mut mounts, &mut env, &mut warnings.texts);
        warnings.tag(injection.cloud);
    }
    let index = index.to_string();
    let path = |field: &str| ["/spec/", list, "/", &index, "/", field].concat();
    append(patch, path("volumeMounts"), container.volume_mounts.is_some(), mounts);
    append(patch, path("env"), container.env.is_some(), env);
}

/// One injection's mounts and env vars for one container.
fn add_injection(
    container: &Container,
    injection: &PodInjection,
    mounts: &mut Vec<VolumeMount>,
    env: &mut Vec<EnvVar>,
    warnings: &mut Vec<String>,
) {
    if injection.skip_containers.contains(&container.name) {
        return;
    }
    let mount = container.mount(injection.volume_name, injection.mount_path);
    match mount {
        Some(Mount::Whole) => {}
        Some(Mount::Other) => {
            warnings.push(mount_conflict(container, injection));
            return;
        }
        None => mounts.push(VolumeMount {
            name: injection.volume_name,
            mount_path: injection.mount_path,
            read_only: true,
        }),
    }
    add_env_groups(container, injection, mount.is_some(), env, warnings);
    if let Some(scratch) = &injection.scratch {
        add_scratch(container, scratch, mounts, env);
    }
}

/// The injection's env var groups the container does not set; a warning when the container's own
/// value keeps ours from naming our token file.
fn add_env_groups(
    container: &Container,
    injection: &PodInjection,
    token_mounted: bool,
    env: &mut Vec<EnvVar>,
    warnings: &mut Vec<String>,
) {
    for group in &injection.env {
        let taken = group
            .iter()
            .any(|(name, _)| container.sets_env(name) || env.iter().any(|added| added.name == *name));
        if !taken {
            env.extend(group.iter().map(|(name, value)| EnvVar {
                name,
                value: value.clone(),
            }));
            continue;
        }
        // The container's own values are kept; say so when ours would name our token file
        // and the container has not mounted our token yet (as it has on reinvocation).
        let own = group.iter().find(|(name, _)| container.sets_env(name));
        if !token_mounted
            && let Some((name, _)) = own
            && group.iter().any(|(_, value)| points_into(value, injection.mount_path))
        {
            warnings.push(format!(
                "container {:?} sets {name} itself; the webhook's {} are not added",
                Echo(&container.name),
                group.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
            ));
        }
    }
}

/// The scratch directory's mount and env var, where the container gets them.
fn add_scratch(container: &Container, scratch: &ScratchDir, mounts: &mut Vec<VolumeMount>, env: &mut Vec<EnvVar>) {
    if let Some(mount) = scratch_mount(container, scratch) {
        if mount.is_none() {
            mounts.push(VolumeMount {
                name: scratch.volume_name,
                mount_path: scratch.mount_path,
                read_only: false,
            });
        }
        env.push(EnvVar {
            name: scratch.env,
            value: scratch.mount_path.to_owned(),
        });
    }
}

/// Whether a container gets the scratch directory, and then the mount it has of it already (`None`:
/// to add). Not when it sets the env var itself (its own value wins) nor when it mounts something
/// else at the path or the volume elsewhere.
fn scratch_mount(container: &Container, scratch: &ScratchDir) -> Option<Option<Mount>> {
    if container.sets_env(scratch.env) {
        return None;
    }
    match container.mount(scratch.volume_name, scratch.mount_path) {
        Some(Mount::Other) => None,
        mount => Some(mount),
    }
}

/// Whether an env value is a file under `mount_path`, in Linux or Windows (`C:\\...`) form.
fn points_into(value: &str, mount_path: &str) -> bool {
    let linux = value.strip_prefix("C:").unwrap_or(value).replace('\\', "/");
    linux.strip_prefix(mount_path).is_some_and(|rest| rest.starts_with('/'))
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
