//! The self-managed serving certificate against a real apiserver: two replicas start at once, one
//! writes the Secret, both serve its certificate, the caBundle is published, and the apiserver
//! trusts the webhook with it.

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/webhook.rs"]
mod webhook;

use std::time::Duration;

use cluster::{Install, create_namespace, pod_json, register, set_config, unique};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use webhook::{Webhook, client_trusting, eventually};

const SECRET: &str = "workload-identity-webhook-tls";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_managed_certificate_and_publish_its_ca() {
    let cp = control_plane::shared().await;
    let client = cp.client();
    let namespace = unique("certs");
    let system_namespace = format!("{namespace}-sys");
    create_namespace(&client, &namespace, json!({})).await;
    create_namespace(&client, &system_namespace, json!({})).await;
    set_config(&client, &system_namespace, "").await;
    let configuration = format!("wiw-{namespace}");

    let kubeconfig = cp.kubeconfig_path().display().to_string();
    let args = [
        "--manage-certificate".to_owned(),
        "--certificate-san=127.0.0.1".to_owned(),
        "--certificate-check-interval=1s".to_owned(),
        format!("--namespace={system_namespace}"),
        format!("--webhook-configuration={configuration}"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env = [("KUBECONFIG", kubeconfig.as_str())];
    // Both replicas race for the missing Secret.
    let mut replicas = [Webhook::start(&args, &env, &[]), Webhook::start(&args, &env, &[])];
    for replica in &mut replicas {
        replica.wait_ready().await;
    }
    let writers = replicas
        .iter()
        .filter(|replica| replica.log().contains("serving certificate renewed"))
        .count();
    assert_eq!(writers, 1, "exactly one replica writes the certificate");

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &system_namespace);
    let data = secrets.get(SECRET).await.unwrap().data.unwrap();
    let text = |key: &str| String::from_utf8(data[key].0.clone()).unwrap();
    let (ca, bundle) = (text("ca.crt"), text("ca-bundle.crt"));
    for replica in &replicas {
        let client = client_trusting(&ca, true);
        eventually(
            Duration::from_secs(10),
            "each replica to serve the Secret's certificate",
            || async { client.get(replica.url("/healthz")).send().await.is_ok() },
        )
        .await;
    }

    let [first, second] = replicas;
    drop(second);
    register(
        &client,
        &configuration,
        &first,
        &[namespace.as_str()],
        "Fail",
        Vec::new(),
    )
    .await;
    // The check of the ConfigMap, of the same name, without a caBundle (as manifests/base ships it).
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let check: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": configuration},
        "webhooks": [{"name": "config.workload-identity.dev", "admissionReviewVersions": ["v1"],
            "sideEffects": "None", "failurePolicy": "Ignore", "clientConfig": {"url": first.url("/validate-config")},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["configmaps"]}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": system_namespace}}}]
    }))
    .unwrap();
    validating.create(&PostParams::default(), &check).await.unwrap();
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    eventually(
        Duration::from_secs(15),
        "the caBundle to be published in both",
        || async {
            let published = |webhooks: Value| {
                webhooks.as_array().is_some_and(|webhooks| {
                    webhooks.iter().all(|webhook| {
                        webhook["clientConfig"]["caBundle"] == json!(ByteString(bundle.as_bytes().to_vec()))
                    })
                })
            };
            let mutating = serde_json::to_value(configurations.get(&configuration).await.unwrap()).unwrap();
            let validating = serde_json::to_value(validating.get(&configuration).await.unwrap()).unwrap();
            published(mutating["webhooks"].clone()) && published(validating["webhooks"].clone())
        },
    )
    .await;
    validating.delete(&configuration, &Default::default()).await.unwrap();

    let install = Install {
        client,
        namespace,
        other_namespace: String::new(),
        system_namespace,
        webhook: first,
        configuration,
    };
    install.create_service_account("app", json!({"azure.workload.identity/client-id": "00000000-1111-2222-3333-444444444444", "azure.workload.identity/tenant-id": "11111111-2222-3333-4444-555555555555"})).await;
    // The apiserver calls the webhook with the published bundle (failurePolicy Fail: an untrusted
    // certificate would refuse the Pod).
    let mut n = 0;
    let install_ref = &install;
    eventually(
        Duration::from_secs(20),
        "a Pod mutated through the managed certificate",
        || {
            n += 1;
            let name = format!("managed-{n}");
            async move {
                let created = control_plane::create_json::<k8s_openapi::api::core::v1::Pod>(
                    &install_ref.client,
                    Some(&install_ref.namespace),
                    &Default::default(),
                    &pod_json(&name, "app"),
                )
                .await;
                match created {
                    Ok(created) => created["spec"]["volumes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|v| v["name"] == "azure-identity-token"),
                    Err(_) => false,
                }
            }
        },
    )
    .await;
    install.uninstall().await;
}
