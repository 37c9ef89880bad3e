//! Faults: the apiserver goes away and comes back, the ConfigMap is deleted, corrupted and
//! restored, and SIGTERM arrives while a request is in flight.

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/webhook.rs"]
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webhook::{Webhook, eventually};

const ROLE: &str = "arn:aws:iam::111122223333:role/app";
const LATER_ROLE: &str = "arn:aws:iam::111122223333:role/later";

fn review(namespace: &str, service_account: &str) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "fault", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "namespace": namespace, "operation": "CREATE",
        "object": {"metadata": {"generateName": "app-"}, "spec": {"serviceAccountName": service_account, "containers": [{"name": "app", "image": "x"}]}}}})
}

/// Posts a review straight to the webhook and returns the decoded patch as text ("" for none).
async fn patch_for(client: &reqwest::Client, webhook: &Webhook, review: &Value) -> Result<String, String> {
    let response = client
        .post(webhook.url("/mutate"))
        .json(review)
        .send()
        .await
        .map_err(|err| err.to_string())?;
    if response.status() != 200 {
        return Err(response.status().to_string());
    }
    let body: Value = response.json().await.map_err(|err| err.to_string())?;
    let patch = body["response"]["patch"].as_str().unwrap_or("");
    Ok(String::from_utf8(base64::engine::general_purpose::STANDARD.decode(patch).unwrap()).unwrap())
}

async fn readyz(webhook: &Webhook) -> String {
    match reqwest::get(webhook.metrics_url("/readyz")).await {
        Ok(response) => format!(
            "{} {}",
            response.status().as_u16(),
            response.text().await.unwrap_or_default()
        ),
        Err(err) => err.to_string(),
    }
}

async fn create<K>(api: &Api<K>, value: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), &serde_json::from_value(value).unwrap())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_outage_is_served_from_the_cache_and_the_watch_reconnects() {
    // A private control plane: this test stops its apiserver.
    let mut cp = tokio::task::spawn_blocking(control_plane::ControlPlane::start)
        .await
        .unwrap()
        .unwrap();
    let client = cp.client();
    let namespace = cluster::unique("outage");
    create(
        &Api::<Namespace>::all(client.clone()),
        json!({"metadata": {"name": namespace}}),
    )
    .await;
    let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    create(
        &service_accounts,
        json!({"metadata": {"name": "app", "annotations": {"eks.amazonaws.com/role-arn": ROLE}}}),
    )
    .await;

    let kubeconfig = cp.kubeconfig_path().display().to_string();
    let mut webhook = Webhook::start(
        &[&format!("--namespace={namespace}")],
        &[("KUBECONFIG", kubeconfig.as_str())],
        &[],
    );
    webhook.wait_ready().await;
    let https = webhook.client(true);
    assert!(
        patch_for(&https, &webhook, &review(&namespace, "app"))
            .await
            .unwrap()
            .contains(ROLE)
    );
    assert_eq!(readyz(&webhook).await, "200 ok");
    let watch_connected =
        |value: u8| format!("workload_identity_webhook_watch_connected{{watch=\"service_accounts\"}} {value}");
    let metrics = webhook.metrics().await;
    assert!(metrics.contains(&watch_connected(1)), "{metrics}");
    assert!(
        metrics.contains("workload_identity_webhook_service_account_cache_size 1\n"),
        "the one ServiceAccount: {metrics}"
    );

    tokio::task::block_in_place(|| cp.stop_apiserver());
    eventually(Duration::from_secs(30), "readyz to report the broken watch", || async {
        readyz(&webhook).await.contains("reconnecting")
    })
    .await;
    webhook.wait_for_metric(&watch_connected(0)).await;
    for _ in 0..50 {
        let patch = patch_for(&https, &webhook, &review(&namespace, "app")).await;
        assert!(
            patch.as_deref().is_ok_and(|patch| patch.contains(ROLE)),
            "during the outage: {patch:?}"
        );
    }

    tokio::task::block_in_place(|| cp.start_apiserver()).unwrap();
    eventually(Duration::from_secs(60), "the watch to reconnect", || async {
        readyz(&webhook).await == "200 ok"
    })
    .await;
    webhook.wait_for_metric(&watch_connected(1)).await;
    // A ServiceAccount made after the outage reaches the webhook.
    let service_accounts: Api<ServiceAccount> = Api::namespaced(cp.client(), &namespace);
    create(
        &service_accounts,
        json!({"metadata": {"name": "later", "annotations": {"eks.amazonaws.com/role-arn": LATER_ROLE}}}),
    )
    .await;
    assert!(
        patch_for(&https, &webhook, &review(&namespace, "later"))
            .await
            .unwrap()
            .contains(LATER_ROLE)
    );
    assert!(webhook.log().contains("apiserver reachable again"), "{}", webhook.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_deleted_corrupted_and_restored() {
    let install = cluster::install(cluster::Options::default()).await;
    install.create_service_account("app", json!({})).await;
    let https = install.webhook.client(true);
    let mapping = format!("identities: [{{serviceAccount: app, aws: {{roleArn: \"{ROLE}\"}}}}]");
    let gets_role = || async {
        patch_for(&https, &install.webhook, &review(&install.namespace, "app"))
            .await
            .unwrap()
            .contains(ROLE)
    };

    install.set_config(&mapping).await;
    eventually(Duration::from_secs(20), "the mapping to apply", gets_role).await;

    let config_maps: Api<ConfigMap> = Api::namespaced(install.client.clone(), &install.system_namespace);
    config_maps
        .delete(cluster::CONFIG_MAP, &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "a deleted ConfigMap to mean no mappings",
        || async { !gets_role().await },
    )
    .await;

    install.set_config(&mapping).await;
    eventually(Duration::from_secs(20), "the restored ConfigMap to apply", gets_role).await;

    install.set_config("identities: [{{{").await;
    eventually(
        Duration::from_secs(20),
        "the corrupted ConfigMap to be refused",
        || async {
            install
                .metrics()
                .await
                .contains(r#"config_reloads_total{result="failure"} 1"#)
        },
    )
    .await;
    assert!(gets_role().await, "the last good mapping stays after a corrupted edit");
    install.uninstall().await;
}

/// A TLS client that trusts the webhook's CA and speaks HTTP/1.1 by hand.
async fn raw_tls(webhook: &Webhook) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(webhook.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", webhook.https_port))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_request_in_flight() {
    let config = format!("identities: [{{namespace: team-a, serviceAccount: app, aws: {{roleArn: \"{ROLE}\"}}}}]");
    let mut webhook = Webhook::start(
        &[
            "--standalone",
            "--config-file={dir}/config.yaml",
            "--shutdown-delay=200ms",
        ],
        &[],
        &[("config.yaml", config.as_str())],
    );
    webhook.wait_ready().await;
    let body = review("team-a", "app").to_string();
    let (first_half, second_half) = body.split_at(body.len() / 2);
    let mut stream = raw_tls(&webhook).await;
    let head = format!(
        "POST /mutate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(first_half.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // SIGTERM while the request is half sent.
    std::process::Command::new("kill")
        .args(["-TERM", &webhook.pid().to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stream.write_all(second_half.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut response))
        .await
        .unwrap()
        .ok();
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "in-flight request answered: {response:?}"
    );
    assert!(response.contains("JSONPatch"));

    let status = webhook.terminate();
    assert!(status.success(), "clean exit after the drain: {status}");
    // After the drain the listener is closed.
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", webhook.https_port))
            .await
            .is_err()
    );
}
