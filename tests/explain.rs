//! `explain` against a real kube-apiserver: the real binary, run with a kubeconfig that
//! impersonates a user who may only get, list and watch (so any write it tried would fail),
//! over objects created through the API as a cluster would hold them.

#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/webhook.rs"]
mod webhook;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde_json::{Value, json};
use workload_identity_webhook::shell::certificates::ca::{GeneratedCa, Validity};

const ROLE: &str = "arn:aws:iam::111122223333:role/app";
const READER: &str = "explain-reader";

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A webhook installation for one test: its system namespace with the ConfigMap, a namespace the
/// webhook selects (opted in) and one it does not, and a MutatingWebhookConfiguration like the
/// shipped one in namespace opt-in mode. Nothing listens at its URL and it fails open, so Pods
/// are created without injection, as when the webhook was down or the identity came later.
struct Fixture {
    client: Client,
    system: String,
    selected: String,
    unselected: String,
    configuration: String,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

/// Creates an object from its JSON, sent as it is (`control_plane::create_json`), and returns it
/// as the apiserver stored it.
async fn create<K>(client: &Client, namespace: Option<&str>, value: Value) -> K
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + serde::de::DeserializeOwned,
{
    let namespace = Some(namespace.unwrap_or("default"));
    let created = control_plane::create_json::<K>(client, namespace, &PostParams::default(), &value)
        .await
        .unwrap();
    serde_json::from_value(created).unwrap()
}

async fn create_cluster<K>(client: &Client, value: Value) -> K
where
    K: Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()> + serde::de::DeserializeOwned,
{
    let created = control_plane::create_json::<K>(client, None, &PostParams::default(), &value)
        .await
        .unwrap();
    serde_json::from_value(created).unwrap()
}

fn pod_webhook(name: &str, namespaces: &[&str], client_config: Value, object_selector: bool) -> Value {
    let mut entry = json!({
        "name": "pods.workload-identity.dev",
        "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Ignore", "timeoutSeconds": 2,
        "clientConfig": client_config,
        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}],
        "namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces},
            {"key": "workload-identity.dev/inject", "operator": "In", "values": ["enabled"]},
        ]},
    });
    if object_selector {
        entry["objectSelector"] = json!({"matchExpressions": [{"key": "workload-identity.dev/inject", "operator": "NotIn", "values": ["disabled"]}]});
    }
    json!({"metadata": {"name": name}, "webhooks": [entry]})
}

async fn fixture(config: &str) -> Fixture {
    let cp = control_plane::shared().await;
    let client = cp.client();
    let base = unique("explain");
    let (system, selected, unselected) = (format!("{base}-sys"), format!("{base}-on"), format!("{base}-off"));
    for (name, labels) in [
        (&system, json!({})),
        (&selected, json!({"workload-identity.dev/inject": "enabled"})),
        (&unselected, json!({})),
    ] {
        create_cluster::<Namespace>(&client, json!({"metadata": {"name": name, "labels": labels}})).await;
    }
    create::<ConfigMap>(
        &client,
        Some(&system),
        json!({"metadata": {"name": "workload-identity-webhook"}, "data": {"config.yaml": config}}),
    )
    .await;
    let closed_port = webhook::free_port();
    let configuration = format!("{base}-webhook");
    create_cluster::<MutatingWebhookConfiguration>(
        &client,
        pod_webhook(
            &configuration,
            &[&selected, &unselected],
            json!({"url": format!("https://127.0.0.1:{closed_port}/mutate")}),
            true,
        ),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = reader_kubeconfig(&client, cp.kubeconfig_path(), dir.path()).await;
    Fixture {
        client,
        system,
        selected,
        unselected,
        configuration,
        kubeconfig,
        _dir: dir,
    }
}

/// A kubeconfig that impersonates a user allowed only get, list and watch on everything.
async fn reader_kubeconfig(client: &Client, admin: &Path, dir: &Path) -> PathBuf {
    let apply = PatchParams::apply("explain-tests").force();
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": READER},
        "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]}]});
    Api::<ClusterRole>::all(client.clone())
        .patch(READER, &apply, &Patch::Apply(role))
        .await
        .unwrap();
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": READER},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": READER},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": READER}]});
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch(READER, &apply, &Patch::Apply(binding))
        .await
        .unwrap();
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(admin).unwrap()).unwrap();
    config["users"][0]["user"]["as"] = json!(READER);
    let path = dir.join("reader.kubeconfig");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

impl Fixture {
    /// This installation's flags, then `extra` (which may name another webhook configuration).
    fn args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["--webhook-namespace", &self.system];
        if !extra.contains(&"--webhook-configuration") {
            args.extend(["--webhook-configuration", &self.configuration]);
        }
        args.extend_from_slice(extra);
        args
    }

    /// `explain ARGS` as the reader; panics unless it ends with its report (exit status 0, or 1
    /// for a failed check). Returns stdout.
    fn explain(&self, extra: &[&str]) -> String {
        self.explain_status(extra).1
    }

    /// `explain ARGS` as the reader: its exit status and stdout.
    fn explain_status(&self, extra: &[&str]) -> (i32, String) {
        let mut all = vec!["explain"];
        all.extend(self.args(extra));
        let (status, stdout, stderr) = run_status(
            Path::new(env!("CARGO_BIN_EXE_workload-identity-webhook")),
            &self.kubeconfig,
            &all,
        );
        assert!(
            stderr.is_empty() && (status == 0 || status == 1),
            "explain {all:?} did not report (exit {status}):\n{stderr}\n{stdout}"
        );
        (status, stdout)
    }

    fn explain_json(&self, extra: &[&str]) -> Value {
        let mut all = extra.to_vec();
        all.extend(["-o", "json"]);
        let text = self.explain(&all);
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("-o json is not JSON ({err}):\n{text}"))
    }

    async fn service_account(&self, namespace: &str, name: &str, annotations: Value) {
        create::<ServiceAccount>(
            &self.client,
            Some(namespace),
            json!({"metadata": {"name": name, "annotations": annotations}}),
        )
        .await;
    }

    async fn annotate(&self, namespace: &str, name: &str, annotations: Value) {
        Api::<ServiceAccount>::namespaced(self.client.clone(), namespace)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
            )
            .await
            .unwrap();
    }

    async fn pod(&self, namespace: &str, pod: Value) -> Pod {
        create::<Pod>(&self.client, Some(namespace), pod).await
    }
}

/// Runs `program ARGS` with `KUBECONFIG`; panics unless it exits 0 or 1 with nothing on stderr
/// (explain's exit status 1 is a failed check). Returns stdout.
fn run(program: &Path, kubeconfig: &Path, args: &[&str]) -> String {
    let (status, stdout, stderr) = run_status(program, kubeconfig, args);
    assert!(
        status == 0 || (status == 1 && stderr.is_empty()),
        "{program:?} {args:?} failed (exit {status}):\n{stderr}\n{stdout}"
    );
    stdout
}

/// Runs `program ARGS` with `KUBECONFIG`: exit status, stdout, stderr.
fn run_status(program: &Path, kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    let output = tokio::task::block_in_place(|| {
        Command::new(program)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .output()
            .unwrap()
    });
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn pod_json(name: &str, service_account: &str, owner: Option<Value>, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels, "ownerReferences": owner.into_iter().collect::<Vec<_>>()},
           "spec": {"serviceAccountName": service_account, "containers": [{"name": "app", "image": "registry.example/app:1"}]}})
}

fn owner_reference(kind: &str, api_version: &str, name: &str, uid: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": true})
}

fn texts(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|text| text.as_str().unwrap().to_owned())
        .collect()
}

fn contains(list: &Value, needle: &str) -> bool {
    texts(list).iter().any(|text| text.contains(needle))
}

/// A Pod created before its ServiceAccount was annotated is stale: grouped under its Deployment
/// (through its ReplicaSet) with the `kubectl rollout restart` that fixes it, while a Pod created
/// with its identity is not. Also through the kubectl plugin name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_pod_is_grouped_by_its_owner_with_the_restart_command() {
    let fixture = fixture("").await;
    let namespace = fixture.selected.clone();
    let client = &fixture.client;
    // `app` has a label, so the API server records when each of its fields changes; `bare`, made
    // and annotated as users do with kubectl, has only its name, so it records nothing for it,
    // not even its later annotation.
    let admin = control_plane::shared().await.kubeconfig_path();
    let kubectl = |args: &[&str]| {
        let args = [args, &["-n", &namespace]].concat();
        let (status, _, stderr) = run_status(Path::new("kubectl"), admin, &args);
        assert_eq!(status, 0, "kubectl {args:?}: {stderr}");
    };
    create::<ServiceAccount>(
        client,
        Some(&namespace),
        json!({"metadata": {"name": "app", "labels": {"team": "web"}}}),
    )
    .await;
    kubectl(&["create", "serviceaccount", "bare"]);
    let template = json!({"metadata": {"labels": {"app": "web"}},
        "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "registry.example/app:1"}]}});
    let deployment: Deployment = create(
        client,
        Some(&namespace),
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template}}),
    )
    .await;
    let replica_set: ReplicaSet = create(
        client,
        Some(&namespace),
        json!({"metadata": {"name": "web-5d9", "ownerReferences": [owner_reference("Deployment", "apps/v1", "web", deployment.metadata.uid.as_deref().unwrap())]},
               "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template}}),
    )
    .await;
    let by_replica_set = owner_reference(
        "ReplicaSet",
        "apps/v1",
        "web-5d9",
        replica_set.metadata.uid.as_deref().unwrap(),
    );
    for name in ["web-5d9-a", "web-5d9-b"] {
        fixture
            .pod(
                &namespace,
                pod_json(name, "app", Some(by_replica_set.clone()), json!({"app": "web"})),
            )
            .await;
    }
    fixture
        .pod(&namespace, pod_json("debug", "bare", None, json!({})))
        .await;

    let before = fixture.explain_json(&["namespace", &namespace]);
    assert_eq!(before["pods_checked"], 3, "{before:#}");
    assert_eq!(before["stale"], json!([]), "nothing to inject yet: {before:#}");

    fixture
        .annotate(&namespace, "app", json!({"eks.amazonaws.com/role-arn": ROLE}))
        .await;
    kubectl(&[
        "annotate",
        "serviceaccount",
        "bare",
        &format!("eks.amazonaws.com/role-arn={ROLE}"),
    ]);
    // A Pod created now with what the webhook gives (the offline `mutate` of the same binary).
    let dir = tempfile::tempdir().unwrap();
    let (pod_file, sa_file) = (dir.path().join("pod.json"), dir.path().join("sa.json"));
    std::fs::write(&pod_file, pod_json("fresh", "app", None, json!({})).to_string()).unwrap();
    std::fs::write(
        &sa_file,
        json!({"metadata": {"name": "app", "annotations": {"eks.amazonaws.com/role-arn": ROLE}}}).to_string(),
    )
    .unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_workload-identity-webhook"));
    let mutated = run(
        binary,
        &fixture.kubeconfig,
        &[
            "mutate",
            "--object",
            pod_file.to_str().unwrap(),
            "--service-account",
            sa_file.to_str().unwrap(),
            "--namespace",
            &namespace,
        ],
    );
    fixture.pod(&namespace, serde_json::from_str(&mutated).unwrap()).await;

    let after = fixture.explain_json(&["namespace", &namespace]);
    assert_eq!(after["pods_checked"], 4, "{after:#}");
    let stale = after["stale"].as_array().unwrap();
    assert_eq!(
        stale.len(),
        2,
        "the Deployment and the bare Pod, not `fresh`: {after:#}"
    );
    let deployment = stale
        .iter()
        .find(|workload| workload["owner"] == "deployment/web")
        .unwrap();
    assert_eq!(
        deployment["fix"],
        format!("kubectl rollout restart deployment/web -n {namespace}")
    );
    assert_eq!(deployment["pods"], json!(["web-5d9-a", "web-5d9-b"]));
    assert!(
        contains(&deployment["differences"], "volume aws-iam-token: missing"),
        "{deployment:#}"
    );
    let bare = stale.iter().find(|workload| workload["owner"] == "pod/debug").unwrap();
    assert_eq!(bare["pods"], json!(["debug"]));

    // Across the cluster (other tests' namespaces included) the same group is found.
    let everywhere = fixture.explain_json(&["--all-namespaces"]);
    assert!(
        everywhere["stale"]
            .as_array()
            .unwrap()
            .iter()
            .any(|workload| workload["namespace"] == namespace.as_str() && workload["owner"] == "deployment/web"),
        "{everywhere:#}"
    );

    let table = fixture.explain(&["namespace", &namespace]);
    assert!(
        table.contains(&format!("kubectl rollout restart deployment/web -n {namespace}")),
        "{table}"
    );

    // The same binary as the kubectl plugin `kubectl workload-identity pod ...`.
    let plugin = dir.path().join("kubectl-workload_identity");
    std::os::unix::fs::symlink(binary, &plugin).unwrap();
    let mut args = vec!["pod", "web-5d9-a", "-n", &namespace, "-o", "json"];
    args.extend(fixture.args(&[]));
    let report: Value = serde_json::from_str(&run(&plugin, &fixture.kubeconfig, &args)).unwrap();
    let pod = &report["pod"];
    assert_eq!(pod["stale"], true, "{report:#}");
    assert_eq!(pod["would_get"]["containers"]["app"]["env"]["AWS_ROLE_ARN"], ROLE);
    assert_eq!(pod["has"]["volumes"], json!({}));
    assert!(contains(&pod["reasons"], "its identity last changed at"), "{report:#}");
    // Why `app` has a label: the API server kept no record of `bare`'s annotation (explain's
    // unit tests cover the reason given then), while `app`'s names it.
    let service_accounts = Api::<ServiceAccount>::namespaced(client.clone(), &namespace);
    for (name, records_annotation) in [("bare", false), ("app", true)] {
        let managed_fields = service_accounts.get(name).await.unwrap().metadata.managed_fields;
        assert_eq!(
            serde_json::to_string(&managed_fields)
                .unwrap()
                .contains("f:eks.amazonaws.com/role-arn"),
            records_annotation,
            "{name}: {managed_fields:?}"
        );
    }
    let fresh = fixture.explain_json(&["pod", "fresh", "-n", &namespace]);
    assert_eq!(fresh["pod"]["stale"], false, "{fresh:#}");
    assert_eq!(fresh["pod"]["has"]["containers"]["app"]["env"]["AWS_ROLE_ARN"], ROLE);
}

/// Each reason a Pod lacks its identity is named: namespace not selected, opt-out label, invalid
/// annotation (with the webhook's warning), and which mapping matched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_reason_for_a_missing_identity_is_named() {
    let config_text = "identities:\n  - namespace: \"*\"\n    serviceAccount: mapped\n    aws: {roleArn: \"arn:aws:iam::111122223333:role/mapped\"}\n";
    let fixture = fixture(config_text).await;
    let (on, off) = (fixture.selected.clone(), fixture.unselected.clone());
    let annotated = json!({"eks.amazonaws.com/role-arn": ROLE});
    fixture.service_account(&off, "app", annotated.clone()).await;
    fixture.service_account(&on, "app", annotated).await;
    fixture
        .service_account(
            &on,
            "typo",
            json!({"eks.amazonaws.com/role-arn": "arn:aws:iam::1111:role/app"}),
        )
        .await;
    fixture.service_account(&on, "mapped", json!({})).await;
    fixture.pod(&off, pod_json("unselected", "app", None, json!({}))).await;
    fixture
        .pod(
            &on,
            pod_json(
                "opted-out",
                "app",
                None,
                json!({"workload-identity.dev/inject": "disabled"}),
            ),
        )
        .await;
    fixture.pod(&on, pod_json("typo", "typo", None, json!({}))).await;
    fixture.pod(&on, pod_json("mapped", "mapped", None, json!({}))).await;

    let explain = |name: &str, namespace: &str| fixture.explain_json(&["pod", name, "-n", namespace])["pod"].clone();
    let pod = explain("unselected", &off);
    assert_eq!(
        pod["stale"], false,
        "not selected, so nothing would be injected: {pod:#}"
    );
    assert!(
        contains(
            &pod["reasons"],
            &format!(
                "namespace {off} is not selected by the webhook's namespaceSelector: label workload-identity.dev/inject must be In [\"enabled\"], is unset"
            )
        ),
        "{pod:#}"
    );
    let pod = explain("opted-out", &on);
    assert!(
        contains(&pod["reasons"], "opted out by the webhook's objectSelector"),
        "{pod:#}"
    );
    let pod = explain("typo", &on);
    assert_eq!(pod["stale"], false, "{pod:#}");
    assert!(contains(&pod["warnings"], "eks.amazonaws.com/role-arn"), "{pod:#}");
    let pod = explain("mapped", &on);
    assert_eq!(pod["stale"], true, "{pod:#}");
    assert!(
        contains(
            &pod["reasons"],
            "mapping identities[0] (namespace *, serviceAccount mapped) matches, for aws"
        ),
        "{pod:#}"
    );
    assert_eq!(
        pod["would_get"]["containers"]["app"]["env"]["AWS_ROLE_ARN"],
        "arn:aws:iam::111122223333:role/mapped"
    );
    let pod = explain("unselected", &off);
    assert!(!contains(&pod["reasons"], "is called for this Pod"), "{pod:#}");
}

/// The installation checks: a missing webhook configuration, an expired caBundle, a serving
/// certificate from another CA, and a Service without ready endpoints are errors; the fixed
/// installation passes. The webhook configurations here select no namespace, so the API server
/// never calls their Service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installation_checks_find_a_missing_configuration_a_bad_ca_bundle_and_no_endpoints() {
    let fixture = fixture("").await;
    let system = fixture.system.clone();
    let check = |report: &Value, suffix: &str| -> (String, String) {
        let found = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|check| check["name"].as_str().unwrap().ends_with(suffix))
            .unwrap_or_else(|| panic!("no check {suffix}: {report:#}"));
        (
            found["status"].as_str().unwrap().to_owned(),
            found["detail"].as_str().unwrap().to_owned(),
        )
    };
    let explain = |configuration: &str| {
        fixture.explain_json(&["namespace", &fixture.selected, "--webhook-configuration", configuration])
    };

    let report = explain("not-installed");
    let (status, detail) = check(&report, "webhook configuration");
    assert_eq!(status, "error", "{detail}");
    assert!(detail.contains("not found"), "{detail}");

    let service = json!({"service": {"namespace": system, "name": "wiw", "path": "/mutate", "port": 443}});
    let install = |name: &str, ca: &str| {
        let mut client_config = service.clone();
        client_config["caBundle"] = json!(k8s_openapi::ByteString(ca.as_bytes().to_vec()));
        let configuration = pod_webhook(name, &["no-such-namespace"], client_config, false);
        let client = fixture.client.clone();
        async move { create_cluster::<MutatingWebhookConfiguration>(&client, configuration).await }
    };
    let expired = GeneratedCa::with_validity(
        "expired CA",
        Some(Validity {
            not_before: 1_000_000_000,
            not_after: 1_100_000_000,
        }),
    )
    .unwrap();
    let expired_name = format!("{system}-expired");
    install(&expired_name, &expired.cert_pem).await;
    let (status, detail) = check(&explain(&expired_name), "caBundle");
    assert_eq!(status, "error", "{detail}");
    assert!(detail.contains("expired"), "{detail}");

    let ca = GeneratedCa::new("webhook CA").unwrap();
    let good_name = format!("{system}-good");
    install(&good_name, &ca.cert_pem).await;
    let (status, detail) = check(&explain(&good_name), "caBundle");
    assert_eq!(status, "ok", "no Secret to compare with yet: {detail}");
    assert!(detail.contains("not compared"), "{detail}");

    let other_ca = GeneratedCa::new("another CA").unwrap();
    let host = format!("wiw.{system}.svc");
    let (wrong, _) = other_ca.issue(&[&host]).unwrap();
    let secrets: Api<Secret> = Api::namespaced(fixture.client.clone(), &system);
    let secret = |cert: &str| -> Secret {
        serde_json::from_value(json!({"metadata": {"name": "workload-identity-webhook-tls"},
            "data": {"tls.crt": k8s_openapi::ByteString(cert.as_bytes().to_vec())}}))
        .unwrap()
    };
    secrets.create(&PostParams::default(), &secret(&wrong)).await.unwrap();
    let (status, detail) = check(&explain(&good_name), "caBundle");
    assert_eq!(status, "error", "{detail}");
    assert!(detail.contains("does not verify"), "{detail}");
    let (right, _) = ca.issue(&[&host]).unwrap();
    secrets
        .replace("workload-identity-webhook-tls", &PostParams::default(), &{
            let mut fixed = secret(&right);
            fixed.metadata.resource_version = secrets
                .get("workload-identity-webhook-tls")
                .await
                .unwrap()
                .metadata
                .resource_version;
            fixed
        })
        .await
        .unwrap();
    let report = explain(&good_name);
    let (status, detail) = check(&report, "caBundle");
    assert_eq!(status, "ok", "{detail}");
    assert!(detail.contains(&format!("chains to it for {host}")), "{detail}");

    let (status, detail) = check(&report, "endpoints");
    assert_eq!(status, "error", "{detail}");
    create::<Service>(
        &fixture.client,
        Some(&system),
        json!({"metadata": {"name": "wiw"}, "spec": {"ports": [{"port": 443, "targetPort": 8443}]}}),
    )
    .await;
    let (status, detail) = check(&explain(&good_name), "endpoints");
    assert_eq!(status, "error", "{detail}");
    assert!(detail.contains("no ready endpoint"), "{detail}");
    // A documentation address (RFC 5737): nothing ever connects to it.
    create::<EndpointSlice>(
        &fixture.client,
        Some(&system),
        json!({"metadata": {"name": "wiw-1", "labels": {"kubernetes.io/service-name": "wiw"}},
               "addressType": "IPv4",
               "endpoints": [{"addresses": ["192.0.2.10"], "conditions": {"ready": true}}],
               "ports": [{"port": 8443, "protocol": "TCP"}]}),
    )
    .await;
    let report = explain(&good_name);
    let (status, detail) = check(&report, "endpoints");
    assert_eq!(status, "ok", "{detail}");
    assert!(detail.contains("1 ready endpoint"), "{detail}");
    let (status, detail) = check(&report, "failurePolicy");
    assert_eq!(status, "ok");
    assert!(detail.starts_with("Ignore"), "{detail}");
}

/// The reader the tests run `explain` as cannot write: what passes above passes read-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tests_run_explain_as_a_user_who_cannot_write() {
    let fixture = fixture("").await;
    let reader_config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&fixture.kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let reader = Client::try_from(reader_config).unwrap();
    let config_maps: Api<ConfigMap> = Api::namespaced(reader, &fixture.system);
    assert!(config_maps.get("workload-identity-webhook").await.is_ok());
    let refused = config_maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "written"}})).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("forbidden"), "{refused}");
}

/// A kubeconfig like `base` with one more context, `team`, whose namespace is `namespace` (the
/// current context stays the first, without a namespace), and another user, `as`.
fn team_kubeconfig(base: &Path, namespace: &str, user: &str, dir: &Path) -> PathBuf {
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(base).unwrap()).unwrap();
    let mut team = config["contexts"][0].clone();
    team["name"] = json!("team");
    team["context"]["namespace"] = json!(namespace);
    config["contexts"].as_array_mut().unwrap().push(team);
    config["users"][0]["user"]["as"] = json!(user);
    let path = dir.join(format!("{user}.kubeconfig"));
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

/// explain as kubectl's plugins behave: `--kubeconfig` and `--context` select the connection, the
/// context's namespace is the default of `-n`; exit status 1 when the Pod lacks the identity it
/// would get now, 0 when it has it; `-o yaml` is the JSON report; a missing Pod is one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_follows_the_kubeconfig_context_and_fails_a_pipeline() {
    let fixture = fixture("").await;
    let namespace = fixture.selected.clone();
    fixture
        .service_account(&namespace, "app", json!({"eks.amazonaws.com/role-arn": ROLE}))
        .await;
    fixture.pod(&namespace, pod_json("web", "app", None, json!({}))).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = team_kubeconfig(&fixture.kubeconfig, &namespace, READER, dir.path());
    let kubeconfig = kubeconfig.to_str().unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_workload-identity-webhook"));
    // KUBECONFIG names nothing: the flags alone select the connection.
    let nowhere = dir.path().join("absent");
    let explain = |extra: &[&str]| {
        let mut args = vec!["explain", "--kubeconfig", kubeconfig, "--context", "team"];
        args.extend(fixture.args(extra));
        run_status(binary, &nowhere, &args)
    };

    let (status, stdout, stderr) = explain(&["pod", "web", "-o", "json"]);
    assert_eq!(status, 1, "the Pod lacks its identity:\n{stderr}\n{stdout}");
    assert!(stderr.is_empty(), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["pod"]["namespace"], namespace.as_str());
    assert_eq!(report["pod"]["lacks_identity"], true, "{report:#}");
    let (status, yaml, _) = explain(&["pod", "web", "-o", "yaml"]);
    assert_eq!(status, 1);
    assert_eq!(serde_yaml_ng::from_str::<Value>(&yaml).unwrap(), report);

    // The same Pod with what the webhook gives (offline mutate): nothing lacks, exit 0.
    let pod_file = dir.path().join("pod.json");
    std::fs::write(&pod_file, pod_json("fresh", "app", None, json!({})).to_string()).unwrap();
    let sa_file = dir.path().join("sa.json");
    std::fs::write(
        &sa_file,
        json!({"metadata": {"name": "app", "annotations": {"eks.amazonaws.com/role-arn": ROLE}}}).to_string(),
    )
    .unwrap();
    let mutated = run(
        binary,
        &nowhere,
        &[
            "mutate",
            "--object",
            pod_file.to_str().unwrap(),
            "--service-account",
            sa_file.to_str().unwrap(),
            "--namespace",
            &namespace,
        ],
    );
    fixture.pod(&namespace, serde_json::from_str(&mutated).unwrap()).await;
    let (status, stdout, stderr) = explain(&["pod", "fresh"]);
    assert_eq!(status, 0, "{stderr}\n{stdout}");

    // Without --context the current context has no namespace: `default`, where there is no web.
    let mut args = vec!["explain", "--kubeconfig", kubeconfig, "pod", "web"];
    args.extend(fixture.args(&[]));
    let (status, stdout, stderr) = run_status(binary, &nowhere, &args);
    assert_eq!(status, 1, "{stdout}");
    assert_eq!(
        stderr.trim(),
        "error: Pod web not found in namespace default (name another with -n)"
    );
}

/// A user without a right gets one line naming it and the shipped ClusterRole; bound to that
/// ClusterRole (manifests/base/rbac-explain.yaml, its resourceNames set to this test's webhook
/// configuration), explain reads all it needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_rights_is_told_which_and_the_shipped_role_suffices() {
    let fixture = fixture("").await;
    let namespace = fixture.selected.clone();
    fixture.service_account(&namespace, "app", json!({})).await;
    fixture.pod(&namespace, pod_json("web", "app", None, json!({}))).await;
    let dir = tempfile::tempdir().unwrap();
    let user = unique("explain-user");
    let kubeconfig = team_kubeconfig(&fixture.kubeconfig, &namespace, &user, dir.path());
    let binary = Path::new(env!("CARGO_BIN_EXE_workload-identity-webhook"));
    let explain = || {
        let mut args = vec!["explain", "--context", "team", "pod", "web"];
        args.extend(fixture.args(&[]));
        run_status(binary, &kubeconfig, &args)
    };
    let (status, stdout, stderr) = explain();
    assert_eq!(status, 1, "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: you may not get configmaps in namespace {} (403 Forbidden): explain needs the ClusterRole workload-identity-webhook-explain",
            fixture.system
        )),
        "{stderr}"
    );

    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/base/rbac-explain.yaml")).unwrap();
    let mut role: Value = serde_yaml_ng::from_str(&shipped).unwrap();
    role["metadata"]["name"] = json!(user);
    for rule in role["rules"].as_array_mut().unwrap() {
        if rule["resources"] == json!(["mutatingwebhookconfigurations"]) {
            rule["resourceNames"] = json!([fixture.configuration]);
        }
    }
    let apply = PatchParams::apply("explain-tests").force();
    Api::<ClusterRole>::all(fixture.client.clone())
        .patch(&user, &apply, &Patch::Apply(role))
        .await
        .unwrap();
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]});
    Api::<ClusterRoleBinding>::all(fixture.client.clone())
        .patch(&user, &apply, &Patch::Apply(binding))
        .await
        .unwrap();
    let (status, stdout, stderr) = explain();
    assert_eq!(status, 0, "{stderr}\n{stdout}");
    assert!(stdout.contains(&format!("POD {namespace}/web")), "{stdout}");
}

/// While the API server cannot call the webhook (its Service has no endpoints), a Pod lacking its
/// identity is told to fix that first, not only to be re-created; the table fits 80 columns and
/// counts Pods by kubectl's phase names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_advice_follows_the_cause_and_the_table_fits_80_columns() {
    let fixture = fixture("").await;
    let namespace = fixture.selected.clone();
    fixture
        .service_account(&namespace, "app", json!({"eks.amazonaws.com/role-arn": ROLE}))
        .await;
    let down = format!("{}-down", fixture.system);
    create_cluster::<MutatingWebhookConfiguration>(
        &fixture.client,
        pod_webhook(
            &down,
            &[&namespace],
            json!({"service": {"namespace": fixture.system, "name": "wiw", "path": "/mutate", "port": 443}}),
            true,
        ),
    )
    .await;
    // Admitted without identity: the webhook fails open while its Service is missing.
    fixture.pod(&namespace, pod_json("web", "app", None, json!({}))).await;
    let (status, json_text) = fixture.explain_status(&[
        "pod",
        "web",
        "-n",
        &namespace,
        "--webhook-configuration",
        &down,
        "-o",
        "json",
    ]);
    assert_eq!(status, 1);
    let report: Value = serde_json::from_str(&json_text).unwrap();
    assert!(
        contains(
            &report["pod"]["reasons"],
            "a Pod re-created now would again get no identity, so fix that first"
        ),
        "{report:#}"
    );
    let (_, table) = fixture.explain_status(&["pod", "web", "-n", &namespace, "--webhook-configuration", &down]);
    for line in table.lines() {
        assert!(
            line.chars().count() <= 80,
            "{} columns: {line}\n{table}",
            line.chars().count()
        );
    }
    assert!(table.contains("fix that first"), "{table}");
    let (_, wide) = fixture.explain_status(&[
        "pod",
        "web",
        "-n",
        &namespace,
        "--webhook-configuration",
        &down,
        "-o",
        "wide",
    ]);
    assert!(wide.lines().any(|line| line.chars().count() > 80), "{wide}");

    let (status, stale) = fixture.explain_status(&["namespace", &namespace, "--webhook-configuration", &down]);
    assert_eq!(status, 1, "{stale}");
    assert!(stale.contains("STALE PODS (1 of 1 Pods (1 Pending))"), "{stale}");
    assert!(stale.contains("Fix the INSTALLATION errors above first"), "{stale}");
    for line in stale.lines() {
        assert!(line.chars().count() <= 80, "{line}\n{stale}");
    }
}

/// A tenant's env value and ServiceAccount annotation holding terminal escapes (CSI erase line,
/// OSC 52 clipboard write ended by BEL), a bidi override, DEL, a C1 CSI and a newline that forges
/// an "up to date" line are shown escaped in the table and the wide table of `explain pod`;
/// `-o json` keeps them as they are (its serialiser escapes them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_control_characters_are_shown_escaped() {
    const HOSTILE: &str = "x\x1b[2K\x1b]52;c;aGk=\x07\u{202e}y\x7f\u{9b}31m\n  up to date: the Pod has what the webhook would give it now";
    const SHOWN: &str = r"x\u{1b}[2K\u{1b}]52;c;aGk=\u{7}\u{202e}y\u{7f}\u{9b}31m\u{a}";
    let fixture = fixture("").await;
    let namespace = fixture.selected.clone();
    fixture
        .service_account(
            &namespace,
            "app",
            json!({"eks.amazonaws.com/role-arn": ROLE, "eks.amazonaws.com/sts-regional-endpoints": HOSTILE}),
        )
        .await;
    let mut pod = pod_json("web", "app", None, json!({}));
    pod["spec"]["containers"][0]["env"] = json!([{"name": "AWS_REGION", "value": HOSTILE}]);
    fixture.pod(&namespace, pod).await;

    let report = fixture.explain_json(&["pod", "web", "-n", &namespace]);
    assert_eq!(
        report["pod"]["has"]["containers"]["app"]["env"]["AWS_REGION"], HOSTILE,
        "JSON keeps the value: {report:#}"
    );
    for args in [
        &["pod", "web", "-n", &namespace][..],
        &["pod", "web", "-n", &namespace, "-o", "wide"],
    ] {
        let (_, text) = fixture.explain_status(args);
        let hidden: Vec<char> = text
            .chars()
            .filter(|c| (c.is_control() && *c != '\n') || ('\u{202a}'..='\u{202e}').contains(c))
            .collect();
        assert!(hidden.is_empty(), "explain {args:?} printed {hidden:?}:\n{text}");
        assert!(
            !text.lines().any(|line| line.starts_with("  up to date")),
            "explain {args:?} printed a forged line:\n{text}"
        );
        assert!(text.contains(SHOWN), "explain {args:?}:\n{text}");
    }
}
