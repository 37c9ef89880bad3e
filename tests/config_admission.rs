//! The webhook's own ConfigMap against the real kube-apiserver: a broken `config.yaml` is refused
//! at `kubectl apply` by the webhook's `/validate-config` (registered as in manifests/base:
//! matched by namespace and name, failurePolicy Ignore), with the field path, line and column;
//! the running webhook keeps its configuration; other ConfigMaps are not judged.

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/webhook.rs"]
mod webhook;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cluster::{CONFIG_MAP, Options, install, pod_json};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

const ROLE: &str = "arn:aws:iam::111122223333:role/app";

/// `kubectl apply -f -` of a ConfigMap holding `config`: (succeeded, stdout + stderr).
fn kubectl_apply(kubeconfig: &Path, namespace: &str, name: &str, config: &str) -> (bool, String) {
    let indented: String = config.lines().map(|line| format!("    {line}\n")).collect();
    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}\ndata:\n  config.yaml: |\n{indented}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("configmap.yaml");
    std::fs::write(&path, manifest).unwrap();
    let output = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["apply", "-f"])
        .arg(&path)
        .output()
        .expect("kubectl on the PATH");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_yaml_is_refused_at_kubectl_apply() {
    let good =
        format!("aws: {{region: us-west-2}}\nidentities:\n  - {{serviceAccount: app, aws: {{roleArn: \"{ROLE}\"}}}}\n");
    let cluster = install(Options {
        config: &good,
        ..Options::default()
    })
    .await;
    let cp = control_plane::shared().await;
    let kubeconfig = cp.kubeconfig_path();
    let system = cluster.system_namespace.clone();
    let configurations = Api::<ValidatingWebhookConfiguration>::all(cluster.client.clone());
    let configuration: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": format!("{}-config", cluster.configuration)},
        "webhooks": [{
            "name": "config.workload-identity.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Ignore",
            "timeoutSeconds": 5,
            "clientConfig": {
                "url": cluster.webhook.url("/validate-config"),
                "caBundle": k8s_openapi::ByteString(cluster.webhook.ca_pem.as_bytes().to_vec()),
            },
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                       "resources": ["configmaps"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": system}},
            "matchConditions": [{"name": "the-webhook-configmap",
                                 "expression": format!("object.metadata.name == '{CONFIG_MAP}'")}],
        }]
    }))
    .unwrap();
    let name = configuration.metadata.name.clone().unwrap();
    configurations
        .create(&PostParams::default(), &configuration)
        .await
        .unwrap();

    let broken = "aws: {region: us-west-2}\nidentities:\n  - {serviceAccount: app, aws: {roleArn: nope}}\n";
    let mut refusal = String::new();
    // The apiserver takes a moment to call a new webhook configuration.
    webhook::eventually(Duration::from_secs(20), "kubectl apply to be refused", || {
        let (applied, text) = kubectl_apply(kubeconfig, &system, CONFIG_MAP, broken);
        if applied {
            // Put the good one back before the next try.
            kubectl_apply(kubeconfig, &system, CONFIG_MAP, &good);
        }
        refusal = text;
        async move { !applied }
    })
    .await;
    for expected in [
        "admission webhook \"config.workload-identity.dev\" denied the request",
        &format!("config.yaml of ConfigMap {system}/{CONFIG_MAP} is refused"),
        "identities[0].aws.roleArn: \"nope\" is not a valid IAM role ARN at line 3 column 42",
    ] {
        assert!(refusal.contains(expected), "{expected} not in:\n{refusal}");
    }
    assert_eq!(refusal.matches("is not a valid IAM role ARN").count(), 1, "{refusal}");

    // The webhook never saw the broken version: the mapping still applies, no reload failed.
    cluster.create_service_account("app", json!({})).await;
    let pod = cluster.create_pod(pod_json("after-refusal", "app")).await;
    let env = serde_json::to_value(&pod.spec.unwrap().containers[0].env).unwrap();
    assert!(env.to_string().contains(ROLE), "{env}");
    assert!(
        !cluster
            .metrics()
            .await
            .contains(r#"config_reloads_total{result="failure"} 1"#)
    );

    // Another ConfigMap of the namespace is not judged; a good edit passes, warned about what
    // the webhook changes.
    let (applied, text) = kubectl_apply(kubeconfig, &system, "unrelated", broken);
    assert!(applied, "{text}");
    let (applied, text) = kubectl_apply(
        kubeconfig,
        &system,
        CONFIG_MAP,
        &good.replace(
            "{region: us-west-2}",
            "{region: us-west-2, tokenExpirationSeconds: 100}",
        ),
    );
    assert!(applied, "{text}");
    assert!(
        text.contains("Warning: aws.tokenExpirationSeconds: 100 is raised to 600"),
        "{text}"
    );

    configurations.delete(&name, &DeleteParams::default()).await.unwrap();
    cluster.uninstall().await;
}
