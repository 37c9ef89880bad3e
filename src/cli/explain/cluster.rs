//! `explain`'s reads of the cluster: the installation (ConfigMap, webhook configuration, Service,
//! endpoints, serving certificate) and the Pods with what owns them and their ServiceAccounts.

use std::collections::{BTreeMap, HashMap};

use super::analysis::{self, PodInputs, PodReport};
use crate::cli::ExplainArgs;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, MutatingWebhookConfiguration};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::ListParams;
use kube::{Api, Client};
use rustls_pki_types::UnixTime;
use workload_identity_core::config::{CONFIG_KEY, Config};

use super::certificate::ca_bundle_check;
use super::{Check, Report, Workload, check};

/// The webhook's configuration as installed: its ConfigMap and MutatingWebhookConfiguration.
pub(super) struct Installation {
    config: Config,
    config_check: Check,
    config_changed: Option<Time>,
    webhook_configuration: Option<MutatingWebhookConfiguration>,
}

impl Installation {
    pub(super) async fn read(client: &Client, args: &ExplainArgs) -> anyhow::Result<Self> {
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &args.webhook_namespace);
        let source = format!("ConfigMap {}/{}", args.webhook_namespace, args.config_map);
        let config_map = config_maps
            .get_opt(&args.config_map)
            .await
            .map_err(|err| refused(&err, "get", "configmaps", Some(&args.webhook_namespace)))?;
        let text = config_map
            .as_ref()
            .and_then(|config_map| config_map.data.as_ref()?.get(CONFIG_KEY).cloned());
        // The server's loader: an invalid file is refused there too (which keeps its last good
        // configuration, unknown here: the flags' settings and no mappings are used instead).
        let (config, config_check) = match text.map(|text| Config::parse(&text, &args.cluster)) {
            Some(Ok(config)) => {
                let detail = format!("{source}: {} identity mappings", config.identities.len());
                (config, check("configuration", "ok", detail))
            }
            Some(Err(err)) => (
                Config::from_defaults(&args.cluster)?,
                check(
                    "configuration",
                    "error",
                    format!(
                        "{source} is refused by the webhook ({err}); it keeps its previous configuration, which explain cannot see: mappings are left out below"
                    ),
                ),
            ),
            None => (
                Config::from_defaults(&args.cluster)?,
                check(
                    "configuration",
                    "warning",
                    format!(
                        "{source} not found or without {CONFIG_KEY}: no mappings, only ServiceAccount annotations give identities"
                    ),
                ),
            ),
        };
        let config_changed = config_map
            .as_ref()
            .and_then(|config_map| last_write(&config_map.metadata));
        let webhook_configuration = Api::<MutatingWebhookConfiguration>::all(client.clone())
            .get_opt(&args.webhook_configuration)
            .await
            .map_err(|err| refused(&err, "get", "mutatingwebhookconfigurations", None))?;
        Ok(Installation {
            config,
            config_check,
            config_changed,
            webhook_configuration,
        })
    }

    /// The entry that admits Pods.
    fn pod_webhook(&self) -> Option<&MutatingWebhook> {
        self.webhook_configuration
            .as_ref()?
            .webhooks
            .iter()
            .flatten()
            .find(|webhook| {
                webhook.rules.iter().flatten().any(|rule| {
                    rule.resources
                        .iter()
                        .flatten()
                        .any(|resource| resource == "pods" || resource == "*")
                })
            })
    }

    pub(super) async fn checks(&self, client: &Client, args: &ExplainArgs) -> Vec<Check> {
        let mut checks = vec![check(
            "configuration",
            self.config_check.status,
            self.config_check.detail.clone(),
        )];
        let Some(configuration) = &self.webhook_configuration else {
            checks.push(check(
                "webhook configuration",
                "error",
                format!(
                    "MutatingWebhookConfiguration {} not found: the API server never calls the webhook",
                    args.webhook_configuration
                ),
            ));
            return checks;
        };
        let webhooks = configuration.webhooks.as_deref().unwrap_or_default();
        checks.push(check(
            "webhook configuration",
            if self.pod_webhook().is_some() { "ok" } else { "error" },
            format!(
                "MutatingWebhookConfiguration {}: {}",
                args.webhook_configuration,
                webhooks
                    .iter()
                    .map(|webhook| webhook.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
        for webhook in webhooks {
            checks.extend(webhook_checks(client, args, webhook).await);
        }
        checks
    }
}

/// The failure policy, the caBundle against the serving certificate, and the Service's endpoints
/// of one webhook entry.
async fn webhook_checks(client: &Client, args: &ExplainArgs, webhook: &MutatingWebhook) -> Vec<Check> {
    let name = &webhook.name;
    let mut checks = Vec::new();
    let policy = webhook.failure_policy.as_deref().unwrap_or("Fail");
    checks.push(check(
        &format!("{name} failurePolicy"),
        "ok",
        match policy {
            "Ignore" => "Ignore: when the webhook cannot be called, objects are admitted without it (Pods without identity; the API server counts them in apiserver_admission_webhook_fail_open_count)".to_owned(),
            _ => format!("{policy}: when the webhook cannot be called, objects are refused"),
        },
    ));
    let client_config = &webhook.client_config;
    let ca_bundle = client_config.ca_bundle.as_ref().map(|bundle| bundle.0.as_slice());
    let service = client_config.service.as_ref();
    let host = service.map(|service| format!("{}.{}.svc", service.name, service.namespace));
    let secret = match service {
        Some(service) => read_serving_certificate(client, &service.namespace, &args.certificate_secret).await,
        None => Err("the webhook is called by URL, not through a Service".to_owned()),
    };
    let (status, detail) = ca_bundle_check(ca_bundle, secret.as_deref().ok(), host.as_deref(), UnixTime::now());
    let detail = match &secret {
        Err(why) if status == "ok" => format!("{detail}; serving certificate not compared ({why})"),
        _ => detail,
    };
    checks.push(check(&format!("{name} caBundle"), status, detail));
    let (status, detail) = match (service, &client_config.url) {
        (Some(service), _) => endpoints(client, &service.namespace, &service.name).await,
        (None, Some(url)) => ("ok", format!("called at {url} (endpoints not checked)")),
        (None, None) => ("error", "clientConfig has neither service nor url".to_owned()),
    };
    checks.push(check(&format!("{name} endpoints"), status, detail));
    checks
}

/// The serving certificate (PEM) from its Secret, or why it cannot be read.
async fn read_serving_certificate(client: &Client, namespace: &str, name: &str) -> Result<Vec<u8>, String> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|err| {
            format!(
                "Secret {namespace}/{name} not readable: {}",
                refused(&err, "get", "secrets", Some(namespace))
            )
        })?
        .ok_or_else(|| format!("no Secret {namespace}/{name}"))?;
    secret
        .data
        .and_then(|mut data| data.remove("tls.crt"))
        .map(|bytes| bytes.0)
        .ok_or_else(|| format!("Secret {namespace}/{name} has no tls.crt"))
}

/// The ready endpoints of a Service, from its EndpointSlices.
async fn endpoints(client: &Client, namespace: &str, service: &str) -> (&'static str, String) {
    match Api::<Service>::namespaced(client.clone(), namespace)
        .get_opt(service)
        .await
    {
        Ok(Some(_)) => {}
        Ok(None) => {
            return (
                "error",
                format!("Service {namespace}/{service} not found: the API server cannot reach the webhook"),
            );
        }
        Err(err) => return ("warning", refused(&err, "get", "services", Some(namespace)).to_string()),
    }
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await;
    match slices {
        Err(err) => (
            "warning",
            refused(&err, "list", "endpointslices.discovery.k8s.io", Some(namespace)).to_string(),
        ),
        Ok(slices) => {
            let all: Vec<_> = slices.items.iter().flat_map(|slice| &slice.endpoints).collect();
            // A ready condition left out means ready (discovery/v1).
            let ready = all
                .iter()
                .filter(|endpoint| endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
                .count();
            if ready == 0 {
                (
                    "error",
                    format!(
                        "Service {namespace}/{service} has no ready endpoint ({} not ready): the API server cannot reach the webhook",
                        all.len()
                    ),
                )
            } else {
                (
                    "ok",
                    format!(
                        "Service {namespace}/{service}: {ready} ready endpoint(s) of {}",
                        all.len()
                    ),
                )
            }
        }
    }
}

/// The cluster's objects, read once per run and shared by the Pods explained.
pub(super) struct Cluster<'a> {
    client: Client,
    installation: &'a Installation,
    /// The installation error that keeps the API server from calling the webhook, if any.
    blocker: Option<String>,
    namespaces: HashMap<String, BTreeMap<String, String>>,
    service_accounts: HashMap<(String, String), Option<ServiceAccount>>,
    replica_sets: HashMap<(String, String), Option<ReplicaSet>>,
}

impl<'a> Cluster<'a> {
    /// One Pod, by namespace and name.
    pub(super) async fn pod(&self, namespace: &str, name: &str) -> anyhow::Result<Pod> {
        Api::<Pod>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|err| refused(&err, "get", "pods", Some(namespace)))?
            .ok_or_else(|| anyhow::anyhow!("Pod {name} not found in namespace {namespace} (name another with -n)"))
    }

    pub(super) fn new(client: Client, installation: &'a Installation, blocker: Option<String>) -> Self {
        Cluster {
            client,
            installation,
            blocker,
            namespaces: HashMap::new(),
            service_accounts: HashMap::new(),
            replica_sets: HashMap::new(),
        }
    }

    pub(super) async fn explain(&mut self, pod: &Pod) -> anyhow::Result<PodReport> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        if !self.namespaces.contains_key(&namespace) {
            let found = Api::<Namespace>::all(self.client.clone())
                .get(&namespace)
                .await
                .map_err(|err| refused(&err, "get", "namespaces", None))?;
            self.namespaces
                .insert(namespace.clone(), found.metadata.labels.unwrap_or_default());
        }
        let service_account = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.service_account_name.clone())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        let key = (namespace.clone(), service_account);
        if !self.service_accounts.contains_key(&key) {
            let found = Api::<ServiceAccount>::namespaced(self.client.clone(), &namespace)
                .get_opt(&key.1)
                .await
                .map_err(|err| refused(&err, "get", "serviceaccounts", Some(&namespace)))?;
            self.service_accounts.insert(key.clone(), found);
        }
        Ok(analysis::explain_pod(&PodInputs {
            pod,
            namespace_labels: &self.namespaces[&namespace],
            service_account: self.service_accounts[&key].as_ref(),
            config: &self.installation.config,
            webhook: self.installation.pod_webhook(),
            config_changed: self.installation.config_changed.as_ref(),
            blocker: self.blocker.as_deref(),
        }))
    }

    /// The stale running Pods of one namespace or all, grouped by owner.
    pub(super) async fn stale(&mut self, namespace: Option<&str>, report: &mut Report) -> anyhow::Result<()> {
        let pods: Api<Pod> = match namespace {
            Some(namespace) => Api::namespaced(self.client.clone(), namespace),
            None => Api::all(self.client.clone()),
        };
        let pods = pods
            .list(&ListParams::default())
            .await
            .map_err(|err| refused(&err, "list", "pods", namespace))?;
        let mut groups: BTreeMap<(String, String), Workload> = BTreeMap::new();
        let mut phases: BTreeMap<String, usize> = BTreeMap::new();
        for pod in &pods.items {
            // A Pod without a phase yet is Pending, as kubectl shows it.
            let phase = pod
                .status
                .as_ref()
                .and_then(|status| status.phase.as_deref())
                .unwrap_or("Pending");
            if matches!(phase, "Succeeded" | "Failed") || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            *phases.entry(phase.to_owned()).or_default() += 1;
            let explained = self.explain(pod).await?;
            if !explained.stale {
                continue;
            }
            let (owner, fix) = self.owner(pod).await;
            let namespace = explained.namespace.clone();
            let workload = groups
                .entry((namespace.clone(), owner.clone()))
                .or_insert_with(|| Workload {
                    namespace,
                    owner,
                    fix,
                    pods: Vec::new(),
                    differences: explained.differences.clone(),
                    reasons: explained.reasons.clone(),
                    lacks_identity: false,
                });
            workload.lacks_identity |= explained.lacks_identity;
            workload.pods.push(explained.name);
        }
        report.pods_checked = Some(phases.values().sum());
        report.phases = Some(phases);
        report.stale = Some(groups.into_values().collect());
        Ok(())
    }

    /// The Pod's owner as `kind/name` and the command that re-creates its Pods.
    async fn owner(&mut self, pod: &Pod) -> (String, String) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut owner = controller(&pod.metadata);
        if let Some((kind, replica_set)) = &owner
            && kind == "ReplicaSet"
        {
            let key = (namespace.clone(), replica_set.clone());
            if !self.replica_sets.contains_key(&key) {
                let found = Api::<ReplicaSet>::namespaced(self.client.clone(), &namespace)
                    .get_opt(replica_set)
                    .await
                    .ok()
                    .flatten();
                self.replica_sets.insert(key.clone(), found);
            }
            if let Some(deployment) = self.replica_sets[&key]
                .as_ref()
                .and_then(|replica_set| controller(&replica_set.metadata))
            {
                owner = Some(deployment);
            }
        }
        match owner {
            Some((kind, owner)) if matches!(kind.as_str(), "Deployment" | "StatefulSet" | "DaemonSet") => {
                let resource = format!("{}/{owner}", kind.to_lowercase());
                let fix = format!("kubectl rollout restart {resource} -n {namespace}");
                (resource, fix)
            }
            Some((kind, owner)) => (
                format!("{}/{owner}", kind.to_lowercase()),
                format!("kubectl delete pod {name} -n {namespace}  # {kind} {owner} creates it again"),
            ),
            None => (
                format!("pod/{name}"),
                format!(
                    "kubectl get pod {name} -n {namespace} -o yaml > pod.yaml && kubectl replace --force -f pod.yaml"
                ),
            ),
        }
    }
}

/// The controlling owner reference: kind and name.
fn controller(metadata: &ObjectMeta) -> Option<(String, String)> {
    metadata
        .owner_references
        .iter()
        .flatten()
        .find(|owner| owner.controller == Some(true))
        .map(|owner| (owner.kind.clone(), owner.name.clone()))
}

/// When an object was last written, from its managedFields; None without them (an object created
/// with only its name has none, nor after its later writes: its creation is no bound on those).
fn last_write(metadata: &ObjectMeta) -> Option<Time> {
    metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|entry| entry.time.clone())
        .max()
}

/// A read the API server refused, in one line: for 401 and 403 the credentials or the right
/// that is missing (and the ClusterRole that grants explain's reads), else its status and message.
fn refused(err: &kube::Error, verb: &str, resource: &str, namespace: Option<&str>) -> anyhow::Error {
    let scope = namespace.map_or_else(String::new, |namespace| format!(" -n {namespace}"));
    let message = match err {
        kube::Error::Api(status) if status.code == 401 => {
            "the API server does not accept your credentials (401 Unauthorized): check the kubeconfig's user".to_owned()
        }
        kube::Error::Api(status) if status.code == 403 => format!(
            "you may not {verb} {resource}{} (403 Forbidden): explain needs the ClusterRole {EXPLAIN_ROLE} (check with kubectl auth can-i {verb} {resource}{scope})",
            namespace.map_or_else(
                || " (cluster-wide)".to_owned(),
                |namespace| format!(" in namespace {namespace}")
            )
        ),
        kube::Error::Api(status) => format!(
            "{verb} {resource}{scope}: {} ({} {})",
            status.message, status.code, status.reason
        ),
        other => format!("{verb} {resource}{scope}: {other}"),
    };
    anyhow::anyhow!(message)
}

/// The read-only ClusterRole shipped for the users of explain (manifests/base/rbac-explain.yaml).
const EXPLAIN_ROLE: &str = "workload-identity-webhook-explain";
