//! One webhook installed into the shared control plane for one test: its own namespaces, its own
//! mappings ConfigMap, its own `serve` process and its own MutatingWebhookConfiguration that only
//! covers the test's namespace. Tests therefore run in parallel without seeing each other.

// Each test binary includes this module and uses a different part of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::control_plane;
use crate::webhook::{Webhook, eventually};

pub const CONFIG_MAP: &str = "workload-identity-webhook";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or earlier run against the same etcd) uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{:x}{}",
        std::process::id() % 10_000,
        nanos % 0xffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct Install {
    pub client: Client,
    /// The namespace the test's Pods and ServiceAccounts live in.
    pub namespace: String,
    /// A second, unlabelled namespace the webhook configuration also covers (for opt-in tests).
    pub other_namespace: String,
    /// The webhook's own namespace, holding its ConfigMap.
    pub system_namespace: String,
    pub webhook: Webhook,
    pub configuration: String,
}

pub struct Options<'a> {
    pub config: &'a str,
    pub failure_policy: &'a str,
    /// Extra namespaceSelector expressions, beside the one that limits the webhook to this test.
    pub namespace_selector: Vec<Value>,
    pub namespace_labels: Value,
    pub extra_args: Vec<String>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            config: "",
            failure_policy: "Fail",
            namespace_selector: Vec::new(),
            namespace_labels: json!({}),
            extra_args: Vec::new(),
        }
    }
}

pub async fn create_namespace(client: &Client, name: &str, labels: Value) {
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
}

/// Starts a webhook against the shared control plane and registers it for a new namespace.
pub async fn install(options: Options<'_>) -> Install {
    let cp = control_plane::shared().await;
    let client = cp.client();
    let namespace = unique("ns");
    let system_namespace = format!("{namespace}-sys");
    let other_namespace = format!("{namespace}-other");
    create_namespace(&client, &namespace, options.namespace_labels.clone()).await;
    create_namespace(&client, &other_namespace, json!({})).await;
    create_namespace(&client, &system_namespace, json!({})).await;
    set_config(&client, &system_namespace, options.config).await;

    let kubeconfig = cp.kubeconfig_path().display().to_string();
    let mut args = vec![format!("--namespace={system_namespace}")];
    args.extend(options.extra_args.iter().cloned());
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut webhook = Webhook::start(&arg_refs, &[("KUBECONFIG", kubeconfig.as_str())], &[]);
    webhook.wait_ready().await;

    let configuration = format!("wiw-{namespace}");
    let covered = [namespace.as_str(), other_namespace.as_str()];
    register(
        &client,
        &configuration,
        &webhook,
        &covered,
        options.failure_policy,
        options.namespace_selector,
    )
    .await;
    let install = Install {
        client,
        namespace,
        other_namespace,
        system_namespace,
        webhook,
        configuration,
    };
    install.wait_until_called().await;
    install
}

/// A MutatingWebhookConfiguration like the one in manifests/, pointing at the test's webhook by URL.
pub async fn register(
    client: &Client,
    name: &str,
    webhook: &Webhook,
    namespaces: &[&str],
    failure_policy: &str,
    selector: Vec<Value>,
) {
    register_client_config(
        client,
        name,
        client_config(webhook),
        namespaces,
        failure_policy,
        selector,
    )
    .await;
}

/// A MutatingWebhookConfiguration like [`register`]'s, for any webhook that `client_config` reaches.
pub async fn register_client_config(
    client: &Client,
    name: &str,
    client_config: Value,
    namespaces: &[&str],
    failure_policy: &str,
    mut selector: Vec<Value>,
) {
    selector.push(json!({"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}));
    let entry = |name: &str, resource: &str, operations: Value| {
        json!({
            "name": name,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": failure_policy,
            "reinvocationPolicy": "IfNeeded",
            "timeoutSeconds": 5,
            "clientConfig": client_config,
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": operations, "resources": [resource], "scope": "Namespaced"}],
            "namespaceSelector": {"matchExpressions": selector},
            "objectSelector": {"matchExpressions": [{"key": "workload-identity.dev/inject", "operator": "NotIn", "values": ["disabled"]}]},
        })
    };
    let configuration: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": name},
        "webhooks": [
            entry("pods.workload-identity.dev", "pods", json!(["CREATE"])),
            entry("serviceaccounts.workload-identity.dev", "serviceaccounts", json!(["CREATE", "UPDATE"])),
        ]
    }))
    .unwrap();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &configuration)
        .await
        .unwrap();
}

/// The webhook's URL and, unless it manages its own certificate (and publishes it), its CA.
fn client_config(webhook: &Webhook) -> Value {
    if webhook.ca_pem.is_empty() {
        json!({"url": webhook.url("/mutate")})
    } else {
        json!({"url": webhook.url("/mutate"), "caBundle": k8s_openapi::ByteString(webhook.ca_pem.as_bytes().to_vec())})
    }
}

pub async fn set_config(client: &Client, namespace: &str, text: &str) {
    let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CONFIG_MAP}, "data": {"config.yaml": text}});
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .patch(
            CONFIG_MAP,
            &PatchParams::apply("wiw-tests").force(),
            &Patch::Apply(config_map),
        )
        .await
        .unwrap();
}

pub fn pod_json(name: &str, service_account: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"serviceAccountName": service_account, "containers": [{"name": "app", "image": "registry.example/app:1"}]}})
}

impl Install {
    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn service_accounts(&self) -> Api<ServiceAccount> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub async fn create_service_account(&self, name: &str, annotations: Value) -> ServiceAccount {
        self.create_service_account_in(&self.namespace, name, annotations).await
    }

    pub async fn create_service_account_in(&self, namespace: &str, name: &str, annotations: Value) -> ServiceAccount {
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": name, "annotations": annotations}})).unwrap();
        Api::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &sa)
            .await
            .unwrap()
    }

    /// Creates the Pod through the apiserver (so through the webhook) and returns what was stored.
    pub async fn create_pod(&self, pod: Value) -> Pod {
        self.create_pod_in(&self.namespace, pod).await
    }

    pub async fn create_pod_in(&self, namespace: &str, pod: Value) -> Pod {
        serde_json::from_value(self.create_pod_json_in(namespace, &pod).await).unwrap()
    }

    /// [`Install::create_pod_in`], the Pod sent and returned as JSON, every field kept.
    pub async fn create_pod_json_in(&self, namespace: &str, pod: &Value) -> Value {
        control_plane::create_json::<Pod>(&self.client, Some(namespace), &PostParams::default(), pod)
            .await
            .unwrap()
    }

    /// The webhook's URL and, unless it manages its own certificate (and publishes it), its CA.
    fn client_config(webhook: &Webhook) -> Value {
        if webhook.ca_pem.is_empty() {
            json!({"url": webhook.url("/mutate")})
        } else {
            json!({"url": webhook.url("/mutate"), "caBundle": k8s_openapi::ByteString(webhook.ca_pem.as_bytes().to_vec())})
        }
    }

    pub async fn set_config(&self, text: &str) {
        set_config(&self.client, &self.system_namespace, text).await;
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.webhook.metrics_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The apiserver picks webhook configurations up asynchronously: wait until it calls ours.
    async fn wait_until_called(&self) {
        let probe = pod_json("probe", "probe");
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        eventually(Duration::from_secs(30), "the apiserver to call the webhook", || async {
            let _ = control_plane::create_json::<Pod>(&self.client, Some(&self.namespace), &dry_run, &probe).await;
            self.metrics().await.contains("admission_requests_total{kind=\"Pod\"")
        })
        .await;
    }

    pub async fn uninstall(&self) {
        let _ = Api::<MutatingWebhookConfiguration>::all(self.client.clone())
            .delete(&self.configuration, &DeleteParams::default())
            .await;
    }
}
