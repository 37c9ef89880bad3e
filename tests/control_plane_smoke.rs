//! Starts the real kube-apiserver + etcd (built from source by tests/control-plane/build.sh)
//! and checks that a Pod is admitted and stored without a controller-manager.

#[path = "support/control_plane.rs"]
mod control_plane;

use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::json;

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_is_admitted_and_stored() {
    let cp = control_plane::shared().await;
    let client = cp.client();
    let ns = unique("smoke");

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.clone()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("create namespace");

    let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    service_accounts
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some("app".into()),
                    annotations: Some([("example.com/role".to_owned(), "test".to_owned())].into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("create service account");

    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app"},
                     "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "registry.example/none:1"}]}});
    control_plane::create_json::<Pod>(&client, Some(&ns), &PostParams::default(), &pod)
        .await
        .expect("create pod");

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = pods.get("app").await.expect("read pod back");
    assert_eq!(pod.metadata.namespace.as_deref(), Some(ns.as_str()));
    assert_eq!(pod.metadata.name.as_deref(), Some("app"));
    assert_eq!(
        pod.spec.as_ref().and_then(|s| s.service_account_name.as_deref()),
        Some("app")
    );
    assert!(cp.kubeconfig_path().is_file());
    assert!(cp.url().starts_with("https://127.0.0.1:"));
    assert!(cp.ca_pem().contains("BEGIN CERTIFICATE"));
}

/// A second test in the same binary: same control plane, a client on another runtime, running
/// the Kubernetes version the tests asked for (`WIW_KUBERNETES_VERSION`, by default the newest).
#[tokio::test]
async fn control_plane_is_shared() {
    let a = control_plane::shared().await;
    let b = control_plane::shared().await;
    assert!(std::ptr::eq(a, b));
    let version = a.client().apiserver_version().await.expect("GET /version");
    let expected = control_plane::kubernetes_version();
    assert_eq!(version.git_version, expected);
    assert!(
        expected.starts_with(&format!("v{}.{}.", version.major, version.minor)),
        "/version says {}.{}, expected {expected}",
        version.major,
        version.minor
    );
}
