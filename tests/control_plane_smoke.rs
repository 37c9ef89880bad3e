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

/// `WIW_KUBERNETES_VERSION` takes a minor or an exact supported version; anything else is refused
/// with the list of the supported ones.
#[test]
fn versions_sh_resolves_a_minor_and_refuses_an_unsupported_version() {
    let supported = control_plane::supported_kubernetes_versions();
    let newest = supported.last().unwrap();
    let resolve = |spec: &str| {
        let output = control_plane::run_versions_sh(&["resolve", spec]);
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_owned();
        (output.status.success(), text(&output.stdout), text(&output.stderr))
    };
    assert_eq!(resolve(""), (true, newest.clone(), String::new()), "the default");
    for version in &supported {
        let minor = version.rsplit_once('.').unwrap().0;
        assert_eq!(resolve(version), (true, version.clone(), String::new()));
        assert_eq!(resolve(&minor[1..]), (true, version.clone(), String::new()), "{minor}");
    }
    for unsupported in ["1.3", "1.32", "v1.37.0", "latest", "1.37.2 "] {
        let (ok, stdout, stderr) = resolve(unsupported);
        assert!(
            !ok && stdout.is_empty()
                && stderr.starts_with(&format!(
                    "unsupported Kubernetes version '{unsupported}': supported are"
                ))
                && stderr.contains(newest.as_str()),
            "{unsupported:?}: {stderr}"
        );
    }
}

/// Every folder under tests/control-plane/versions/ is a supported version, made by gen-go-mod.sh
/// for that version, and docs/kubernetes-versions.md has a row for each (and no other).
#[test]
fn the_supported_versions_are_generated_and_documented() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let supported = control_plane::supported_kubernetes_versions();
    let mut folders: Vec<String> = std::fs::read_dir(root.join("tests/control-plane/versions"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort_by_key(|v| {
        v.split('.')
            .map(|n| n.trim_start_matches('v').parse::<u32>().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(folders, supported, "a folder without both wrappers is not supported");
    for version in &supported {
        for wrapper in ["kube-apiserver", "kube-node"] {
            let go_mod =
                std::fs::read_to_string(root.join(format!("tests/control-plane/versions/{version}/{wrapper}/go.mod")))
                    .unwrap();
            assert!(
                go_mod.starts_with(&format!(
                    "// Code generated by gen-go-mod.sh for k8s.io/kubernetes {version};"
                )) && go_mod.contains(&format!("\n\tk8s.io/kubernetes {version}\n")),
                "{version}/{wrapper}/go.mod"
            );
        }
    }
    let docs = std::fs::read_to_string(root.join("docs/kubernetes-versions.md")).unwrap();
    let documented: Vec<String> = docs
        .lines()
        .filter(|line| line.starts_with("| 1."))
        .map(|row| row.split('|').nth(2).unwrap().trim().trim_matches('`').to_owned())
        .collect();
    let mut newest_first = supported.clone();
    newest_first.reverse();
    assert_eq!(documented, newest_first, "the table of docs/kubernetes-versions.md");
}
