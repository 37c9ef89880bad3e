//! Every overlay under manifests/ is rendered with `kubectl kustomize` and applied server-side to
//! a real kube-apiserver, so a manifest the API would refuse fails the suite.

#[path = "support/control_plane.rs"]
mod control_plane;

use std::io::Write;
use std::process::{Command, Stdio};

/// cert-manager's kinds, as bare CRDs: enough for the apiserver to accept the overlay's objects
/// (their schema is cert-manager's business, and cert-manager is not part of this control plane).
const CERT_MANAGER_CRDS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: issuers.cert-manager.io}
spec:
  group: cert-manager.io
  names: {kind: Issuer, plural: issuers, singular: issuer, listKind: IssuerList}
  scope: Namespaced
  versions:
    - {name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: certificates.cert-manager.io}
spec:
  group: cert-manager.io
  names: {kind: Certificate, plural: certificates, singular: certificate, listKind: CertificateList}
  scope: Namespaced
  versions:
    - {name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}
"#;

fn kubectl(kubeconfig: &str, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is needed to render the Kustomize overlays");
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_overlay_is_accepted_by_the_apiserver() {
    let cp = control_plane::shared().await;
    let kubeconfig = cp.kubeconfig_path().to_str().unwrap().to_owned();
    let (ok, out) = kubectl(
        &kubeconfig,
        &["apply", "--server-side", "-f", "-"],
        Some(CERT_MANAGER_CRDS),
    );
    assert!(ok, "{out}");
    let (ok, out) = kubectl(
        &kubeconfig,
        &[
            "wait",
            "--for=condition=Established",
            "crd/issuers.cert-manager.io",
            "crd/certificates.cert-manager.io",
            "--timeout=60s",
        ],
        None,
    );
    assert!(ok, "{out}");

    let root = env!("CARGO_MANIFEST_DIR");
    for overlay in ["cluster-wide", "namespace-opt-in", "cert-manager"] {
        let (ok, rendered) = kubectl(
            &kubeconfig,
            &["kustomize", &format!("{root}/manifests/overlays/{overlay}")],
            None,
        );
        assert!(ok, "{overlay} does not render: {rendered}");
        let (ok, out) = kubectl(
            &kubeconfig,
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=wiw-tests",
                "-f",
                "-",
            ],
            Some(&rendered),
        );
        assert!(ok, "{overlay} refused by the apiserver:\n{out}");
        let objects = rendered.matches("\nkind: ").count() + usize::from(rendered.starts_with("kind: "));
        let applied = out.lines().filter(|line| line.contains("serverside-applied")).count();
        assert_eq!(applied, objects, "{overlay}: every object applied\n{out}");
    }
    // What the last overlay left: the cert-manager install serves the mounted certificate.
    let (ok, args) = kubectl(
        &kubeconfig,
        &[
            "-n",
            "workload-identity-system",
            "get",
            "deployment",
            "workload-identity-webhook",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].args}",
        ],
        None,
    );
    assert!(ok, "{args}");
    assert!(
        args.contains("--tls-cert-file=/tls/tls.crt") && !args.contains("--manage-certificate"),
        "{args}"
    );
}
