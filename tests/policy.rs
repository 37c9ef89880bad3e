//! The identity policy on the real apiserver: a ServiceAccount claiming another namespace's
//! identity refused through `kubectl`, a Pod whose ServiceAccount predates the policy left
//! without that identity (warning, metric), the audit annotations on the apiserver's audit log,
//! and the generated ValidatingAdmissionPolicy refusing the same ServiceAccounts as the webhook.

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/webhook.rs"]
mod webhook;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use cluster::{Install, Options, create_namespace, install, pod_json};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use serde_json::{Value, json};

const ROLE_OWN: &str = "arn:aws:iam::111122223333:role/tenant-app";
const ROLE_OTHER: &str = "arn:aws:iam::111122223333:role/other-app";
const GSA_OWN: &str = "app@tenant-project.iam.gserviceaccount.com";
const GSA_OTHER: &str = "app@other-project.iam.gserviceaccount.com";
const CLIENT_OWN: &str = "00000000-1111-2222-3333-00000000000a";
const CLIENT_OTHER: &str = "00000000-1111-2222-3333-00000000000b";
const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const PROVIDER: &str = "projects/123456789/locations/global/workloadIdentityPools/pool/providers/provider";

/// Rule `tenant` for the namespaces `tenant_selects` selects (`namespaces: [...]` or a
/// `namespaceSelector`), rule `other` for the other namespace.
fn config(tenant_selects: &str, other: &str) -> String {
    format!(
        r#"
aws: {{region: us-west-2, accountId: "111122223333"}}
gcp: {{workloadIdentityProvider: "{PROVIDER}"}}
azure: {{tenantId: "{TENANT}"}}
policy:
  rules:
    - name: tenant
      {tenant_selects}
      aws: {{roleArns: ["arn:aws:iam::111122223333:role/tenant-*"]}}
      gcp: {{projects: [tenant-project]}}
      azure: {{clientIds: ["{CLIENT_OWN}"]}}
    - name: other
      namespaces: ["{other}"]
      aws: {{roleArns: ["{ROLE_OTHER}"]}}
      gcp: {{serviceAccounts: ["{GSA_OTHER}"]}}
      azure: {{clientIds: ["{CLIENT_OTHER}"]}}
"#
    )
}

async fn kubectl(args: &[&str], stdin: &str) -> (bool, String) {
    let kubeconfig = control_plane::shared().await.kubeconfig_path().to_owned();
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is needed");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn service_account_json(name: &str, annotations: &Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "annotations": annotations}})
}

/// Puts the policy in force (rule `tenant` for `tenant_namespaces`) and waits until the webhook
/// refuses by it.
async fn enable_policy(cluster: &Install, tenant_namespaces: &[&str]) {
    enable(cluster, &config(&names(tenant_namespaces), &cluster.other_namespace)).await;
}

fn names(namespaces: &[&str]) -> String {
    format!("namespaces: {namespaces:?}")
}

/// Puts `config` in force and waits until the webhook refuses another namespace's role in the
/// test's namespace.
async fn enable(cluster: &Install, config: &str) {
    cluster.set_config(config).await;
    let probe = service_account_json("probe", &json!({"eks.amazonaws.com/role-arn": ROLE_OTHER}));
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    webhook::eventually(Duration::from_secs(20), "the policy to be in force", || async {
        control_plane::create_json::<ServiceAccount>(&cluster.client, Some(&cluster.namespace), &dry_run, &probe)
            .await
            .is_err()
    })
    .await;
}

/// The audit event (stage ResponseComplete) of creating `resource` `namespace/name`.
async fn audit_event(resource: &str, namespace: &str, name: &str) -> Value {
    let log = control_plane::shared().await.dir().join(control_plane::AUDIT_LOG);
    let find = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|event| {
                let object = &event["objectRef"];
                event["stage"] == "ResponseComplete"
                    && event["verb"] == "create"
                    && object["resource"] == resource
                    && object["namespace"] == namespace
                    && object["name"] == name
            })
    };
    webhook::eventually(Duration::from_secs(10), "the audit event", || {
        let found = find().is_some();
        async move { found }
    })
    .await;
    find().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_withheld_identities_and_audit_annotations() {
    let cluster = install(Options {
        config: "aws: {region: us-west-2}",
        ..Options::default()
    })
    .await;
    let namespace = cluster.namespace.clone();
    // Annotated before the policy: only the Pod check stands between it and the other role.
    cluster
        .create_service_account("before", json!({"eks.amazonaws.com/role-arn": ROLE_OTHER}))
        .await;
    enable_policy(&cluster, &[&namespace]).await;

    // kubectl: the other namespace's role, in any spelling, refused with the rule named.
    for (name, annotations) in [
        ("claims-other", json!({"eks.amazonaws.com/role-arn": ROLE_OTHER})),
        (
            "claims-other-bare",
            json!({"eks.amazonaws.com/role-arn": " Other-App "}),
        ),
        (
            "claims-other-gsa",
            json!({"cloud.google.com/service-account-email": GSA_OTHER}),
        ),
    ] {
        let manifest = service_account_json(name, &annotations).to_string();
        let (created, text) = kubectl(&["create", "-n", &namespace, "-f", "-"], &manifest).await;
        assert!(!created, "{name}: {text}");
        assert!(
            text.contains(r#"admission webhook "serviceaccounts.workload-identity.dev" denied the request: identity policy: rule "tenant""#),
            "{name}: {text}"
        );
        let event = audit_event("serviceaccounts", &namespace, name).await;
        assert_eq!(event["responseStatus"]["code"], 403, "{event}");
        let cloud = if name.ends_with("gsa") { "gcp" } else { "aws" };
        let refusal = event["annotations"][format!("serviceaccounts.workload-identity.dev/{cloud}-policy")]
            .as_str()
            .unwrap_or_default();
        assert!(
            refusal.starts_with("refused: identity policy: rule \"tenant\""),
            "{event}"
        );
    }
    // Its own role is admitted.
    let manifest = service_account_json("own", &json!({"eks.amazonaws.com/role-arn": ROLE_OWN})).to_string();
    let (created, text) = kubectl(&["create", "-n", &namespace, "-f", "-"], &manifest).await;
    assert!(created, "{text}");

    // A Pod of the ServiceAccount annotated before: no AWS identity, a warning, a metric.
    let manifest = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-before"},
        "spec": {"serviceAccountName": "before", "containers": [{"name": "app", "image": "registry.example/app:1"}]}});
    let (created, text) = kubectl(&["create", "-n", &namespace, "-f", "-"], &manifest.to_string()).await;
    assert!(created, "{text}");
    assert!(
        text.contains(r#"Warning: identity policy: rule "tenant" (selecting namespace"#)
            && text.contains("no aws credentials injected"),
        "{text}"
    );
    let stored = cluster.pods().get("web-before").await.unwrap();
    assert!(
        stored
            .spec
            .unwrap()
            .volumes
            .unwrap_or_default()
            .iter()
            .all(|volume| volume.name != "aws-iam-token")
    );
    let metrics = cluster.metrics().await;
    assert!(
        metrics.contains(r#"workload_identity_webhook_policy_denials_total{cloud="aws",outcome="withheld"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"workload_identity_webhook_policy_denials_total{cloud="aws",outcome="refused"}"#));
    let event = audit_event("pods", &namespace, "web-before").await;
    let withheld = event["annotations"]["pods.workload-identity.dev/aws-policy"]
        .as_str()
        .unwrap_or_default();
    assert!(
        withheld.starts_with("withheld: identity policy: rule \"tenant\""),
        "{event}"
    );

    // A Pod given its identity: cloud, identity, audience, lifetime and rule on the audit event.
    cluster.create_pod(pod_json("web-own", "own")).await;
    let event = audit_event("pods", &namespace, "web-own").await;
    let annotations = &event["annotations"];
    for (key, value) in [
        ("aws-identity", ROLE_OWN),
        ("aws-audience", "sts.amazonaws.com"),
        ("aws-token-expiration-seconds", "86400"),
        ("aws-policy-rule", "tenant"),
    ] {
        assert_eq!(
            annotations[format!("pods.workload-identity.dev/{key}")],
            value,
            "{key}: {event}"
        );
    }

    // A mapping the policy forbids is a configuration error: refused, the policy stays in force.
    let forbidden = format!(
        "{}identities: [{{namespace: \"{namespace}\", serviceAccount: mapped, aws: {{roleArn: \"{ROLE_OTHER}\"}}}}]\n",
        config(&names(&[&namespace]), &cluster.other_namespace)
    );
    cluster.set_config(&forbidden).await;
    webhook::eventually(
        Duration::from_secs(20),
        "the forbidden mapping to be refused",
        || async {
            cluster
                .metrics()
                .await
                .contains(r#"config_reloads_total{result="failure"} 1"#)
        },
    )
    .await;
    let manifest = service_account_json("after-refused-edit", &json!({"eks.amazonaws.com/role-arn": ROLE_OTHER}));
    let (created, text) = kubectl(&["create", "-n", &namespace, "-f", "-"], &manifest.to_string()).await;
    assert!(!created && text.contains(r#"identity policy: rule "tenant""#), "{text}");

    // In warn mode the same ServiceAccount is admitted, with the refusal as a warning.
    cluster
        .set_config(
            &config(&names(&[&namespace]), &cluster.other_namespace).replace("  rules:", "  mode: warn\n  rules:"),
        )
        .await;
    webhook::eventually(Duration::from_secs(20), "warn mode", || async {
        let (created, text) = kubectl(
            &["create", "--dry-run=server", "-n", &namespace, "-f", "-"],
            &manifest.to_string(),
        )
        .await;
        created
            && text.contains(r#"Warning: identity policy: rule "tenant""#)
            && text.contains("(policy mode warn: admitted)")
    })
    .await;
    cluster.uninstall().await;
}

/// Every convention and spelling, claiming the namespace's own identities and the other's.
fn cases() -> Vec<(Value, bool)> {
    vec![
        (json!({"eks.amazonaws.com/role-arn": ROLE_OWN}), true),
        (json!({"eks.amazonaws.com/role-arn": "tenant-app"}), true),
        (json!({"eks.amazonaws.com/role-arn": ROLE_OTHER}), false),
        (json!({"eks.amazonaws.com/role-arn": "other-app"}), false),
        (
            json!({"eks.amazonaws.com/role-arn": format!("  {}\n", ROLE_OTHER.to_uppercase().replace("ARN:AWS:IAM", "arn:aws:iam"))}),
            false,
        ),
        (json!({"eks.amazonaws.com/Role-Arn": ROLE_OTHER}), false),
        (json!({"iam.gke.io/gcp-service-account": GSA_OWN}), true),
        (json!({"iam.gke.io/gcp-service-account": GSA_OTHER}), false),
        (
            json!({"cloud.google.com/service-account-email": format!(" {} ", GSA_OTHER.to_uppercase())}),
            false,
        ),
        (json!({"cloud.google.com/workload-identity-provider": PROVIDER}), true),
        (
            json!({"cloud.google.com/workload-identity-provider": "projects/1/locations/global/workloadIdentityPools/p/providers/x"}),
            false,
        ),
        (json!({"azure.workload.identity/client-id": CLIENT_OWN}), true),
        (json!({"azure.workload.identity/client-id": CLIENT_OTHER}), false),
        (
            json!({"azure.workload.identity/Client-ID": CLIENT_OTHER.to_uppercase()}),
            false,
        ),
        (json!({"azure.workload.identity/tenant-id": TENANT}), true),
        (
            json!({"azure.workload.identity/tenant-id": "22222222-2222-3333-4444-555555555555"}),
            false,
        ),
        (json!({"team": "no identity at all"}), true),
    ]
}

/// The ValidatingAdmissionPolicy generated from `config`, bound to `namespaces` only (other tests
/// share the apiserver), in force once this returns. Returns its name.
async fn apply_admission_policy(cluster: &Install, config: &str, namespaces: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("config.yaml");
    std::fs::write(&config_file, config).unwrap();
    let name = format!("wiw-{}", cluster.namespace);
    let output = Command::new(env!("CARGO_BIN_EXE_workload-identity-webhook"))
        .args(["validating-admission-policy", "--config"])
        .arg(&config_file)
        .args(["--name", &name])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let yaml = String::from_utf8(output.stdout).unwrap();
    let mut objects: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|document| serde::Deserialize::deserialize(document).unwrap())
        .collect();
    assert_eq!(objects.len(), 2, "{yaml}");
    objects[1]["spec"]["matchResources"] = json!({"namespaceSelector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}
    ]}});
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    let (applied, text) = kubectl(&["apply", "-f", "-"], &list.to_string()).await;
    assert!(applied, "{text}\n{yaml}");

    let probe = service_account_json("probe", &json!({"eks.amazonaws.com/role-arn": ROLE_OTHER}));
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    webhook::eventually(
        Duration::from_secs(30),
        "the admission policy to be in force",
        || async {
            control_plane::create_json::<ServiceAccount>(&cluster.client, Some(namespaces[0]), &dry_run, &probe)
                .await
                .is_err()
        },
    )
    .await;
    name
}

async fn delete_admission_policy(name: &str) {
    for kind in ["validatingadmissionpolicybinding", "validatingadmissionpolicy"] {
        kubectl(&["delete", kind, name], "").await;
    }
}

/// Creates each case's ServiceAccount in the webhook's namespace and in the admission policy's,
/// expecting `allowed(case)` from both; returns the differences.
async fn compare_refusals(
    cluster: &Install,
    by_webhook_in: &str,
    by_policy_in: &str,
    policy_name: &str,
    allowed: impl Fn(bool) -> bool,
) -> Vec<String> {
    let mut differences = Vec::new();
    for (i, (annotations, own)) in cases().into_iter().enumerate() {
        let allowed = allowed(own) || annotations.get("team").is_some();
        let object = service_account_json(&format!("case-{i}"), &annotations);
        let mut outcomes = Vec::new();
        for ns in [by_webhook_in, by_policy_in] {
            let created = control_plane::create_json::<ServiceAccount>(
                &cluster.client,
                Some(ns),
                &PostParams::default(),
                &object,
            )
            .await;
            outcomes.push(created.map(drop).map_err(|err| err.to_string()));
        }
        let [by_webhook, by_policy] = [&outcomes[0], &outcomes[1]];
        if by_webhook.is_ok() != allowed || by_policy.is_ok() != allowed {
            differences.push(format!(
                "{annotations} in {by_webhook_in} and {by_policy_in}: expected allowed={allowed}, webhook {by_webhook:?}, admission policy {by_policy:?}"
            ));
        }
        if let Err(refusal) = by_policy {
            let expected = format!(
                "ValidatingAdmissionPolicy '{policy_name}' with binding '{policy_name}' denied request: identity policy: ServiceAccounts of namespace {by_policy_in} may not claim this"
            );
            assert!(refusal.contains(&expected), "{refusal}");
        }
    }
    differences
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_validating_admission_policy_refuses_what_the_webhook_refuses() {
    let cluster = install(Options {
        config: "aws: {region: us-west-2}",
        ..Options::default()
    })
    .await;
    let namespace = cluster.namespace.clone();
    // Not covered by the webhook: only the ValidatingAdmissionPolicy judges it.
    let vap_namespace = format!("{namespace}-vap");
    create_namespace(&cluster.client, &vap_namespace, json!({})).await;
    enable_policy(&cluster, &[&namespace, &vap_namespace]).await;
    let config = config(&names(&[&namespace, &vap_namespace]), &cluster.other_namespace);
    let name = apply_admission_policy(&cluster, &config, &[&vap_namespace]).await;
    let differences = compare_refusals(&cluster, &namespace, &vap_namespace, &name, |own| own).await;
    delete_admission_policy(&name).await;
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    cluster.uninstall().await;
}

/// Rule `tenant` selects namespaces by label: the webhook (reading labels from its namespace
/// watch) and the generated admission policy (from `namespaceObject`) refuse the same
/// ServiceAccounts in a labelled and an unlabelled namespace, a Pod in the unlabelled one is left
/// without the identity, and labelling the namespace later gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_selectors_select_the_same_namespaces_in_the_webhook_and_the_admission_policy() {
    let tenant = cluster::unique("tenant");
    let label = json!({"policy.example.com/tenant": tenant});
    let cluster = install(Options {
        config: "aws: {region: us-west-2}",
        namespace_labels: label.clone(),
        ..Options::default()
    })
    .await;
    let (labelled, plain) = (cluster.namespace.clone(), cluster.other_namespace.clone());
    // Annotated before the policy: only the Pod check stands between it and the role.
    cluster
        .create_service_account_in(&plain, "before", json!({"eks.amazonaws.com/role-arn": ROLE_OWN}))
        .await;
    let selects = format!(
        "namespaceSelector: {{matchLabels: {{policy.example.com/tenant: {tenant}}}, matchExpressions: [\
         {{key: frozen, operator: DoesNotExist}}, {{key: policy.example.com/tenant, operator: Exists}}, \
         {{key: policy.example.com/tenant, operator: In, values: [{tenant}]}}, {{key: stage, operator: NotIn, values: [sandbox]}}]}}"
    );
    let config = config(&selects, "no-such-namespace");
    enable(&cluster, &config).await;
    let vap_labelled = format!("{labelled}-vap");
    let vap_plain = format!("{plain}-vap");
    create_namespace(&cluster.client, &vap_labelled, label.clone()).await;
    create_namespace(&cluster.client, &vap_plain, json!({})).await;
    let name = apply_admission_policy(&cluster, &config, &[&vap_labelled, &vap_plain]).await;
    let mut differences = compare_refusals(&cluster, &labelled, &vap_labelled, &name, |own| own).await;
    differences.extend(compare_refusals(&cluster, &plain, &vap_plain, &name, |_| false).await);
    delete_admission_policy(&name).await;
    assert!(differences.is_empty(), "{}", differences.join("\n"));

    // A namespace the webhook may not have seen yet (its labels then come from a GET), and one
    // that does not exist (no labels: no rule selects it), asked of the webhook directly.
    let fresh = format!("{labelled}-new");
    create_namespace(&cluster.client, &fresh, label.clone()).await;
    let review = |namespace: &str| {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "1", "namespace": namespace, "operation": "CREATE",
            "kind": {"group": "", "version": "v1", "kind": "ServiceAccount"},
            "resource": {"group": "", "version": "v1", "resource": "serviceaccounts"},
            "object": service_account_json("app", &json!({"eks.amazonaws.com/role-arn": ROLE_OWN})),
        }})
    };
    for (namespace, allowed) in [(fresh.as_str(), true), ("no-such-namespace", false)] {
        let answer = cluster.webhook.answer(&review(namespace)).await;
        assert_eq!(answer["response"]["allowed"], allowed, "{namespace}: {answer}");
    }

    let pod = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"serviceAccountName": "before", "containers": [{"name": "app", "image": "registry.example/app:1"}]}})
    };
    let (created, text) = kubectl(&["create", "-n", &plain, "-f", "-"], &pod("web-1").to_string()).await;
    assert!(created, "{text}");
    assert!(
        text.contains(&format!("Warning: identity policy: no rule selects namespace {plain}")),
        "{text}"
    );
    // Labelled now: the watch brings the label, and the next Pod gets the role.
    let (labelled_now, text) = kubectl(
        &[
            "label",
            "namespace",
            &plain,
            &format!("policy.example.com/tenant={tenant}"),
        ],
        "",
    )
    .await;
    assert!(labelled_now, "{text}");
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    webhook::eventually(Duration::from_secs(20), "the label to reach the webhook", || async {
        let created = control_plane::create_json::<k8s_openapi::api::core::v1::Pod>(
            &cluster.client,
            Some(&plain),
            &dry_run,
            &pod("web-2"),
        )
        .await;
        created.is_ok_and(|pod| pod["spec"]["containers"][0]["env"].to_string().contains(ROLE_OWN))
    })
    .await;
    cluster.uninstall().await;
}
