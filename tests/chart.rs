//! The Helm chart (charts/workload-identity-webhook): `helm lint --strict` is clean, every mode
//! renders to objects the real kube-apiserver accepts (server-side apply), and for each overlay
//! under manifests/ the chart renders the same objects, so the two cannot drift apart.
//! `helm` is built from its Go module by tests/tools/build.sh.

#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/tools.rs"]
mod tools;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

const CHART: &str = "charts/workload-identity-webhook";
const NAMESPACE: &str = "workload-identity-system";

/// Bare CRDs of the optional kinds (cert-manager, Prometheus Operator): enough for the API server
/// to accept the chart's objects; their schemas are those projects' business.
fn bare_crds() -> String {
    let items: Vec<Value> = [
        ("cert-manager.io", "Issuer", "issuers"),
        ("cert-manager.io", "Certificate", "certificates"),
        ("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
        ("monitoring.coreos.com", "PrometheusRule", "prometheusrules"),
    ]
    .iter()
    .map(|(group, kind, plural)| {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.{group}")},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
                     "versions": [{"name": "v1", "served": true, "storage": true,
                                   "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
        })
    })
    .collect();
    json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

/// The chart's modes: (what, `--set` values).
const MODES: &[(&str, &[&str])] = &[
    ("cluster-wide, self-managed certificate", &[]),
    (
        "namespace opt-in, cert-manager",
        &["installMode=namespace-opt-in", "certificate.mode=cert-manager"],
    ),
    (
        "renamed, self-managed certificate, no scrape annotations",
        &[
            "fullnameOverride=wiw",
            "nameOverride=identity",
            "prometheusScrapeAnnotations=false",
        ],
    ),
    (
        "existing Secret, every option",
        &[
            "certificate.mode=existing-secret",
            "certificate.caBundle=-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----",
            "serviceMonitor.enabled=true",
            "prometheusRule.enabled=true",
            "grafanaDashboard.enabled=true",
            "networkPolicy.enabled=true",
            "networkPolicy.controlPlaneCidrs={10.0.0.0/28}",
            "replicas=3",
            "criticalPodQuota=12",
            "priorityClassName=system-node-critical",
            "nodeSelector.kubernetes\\.io/os=linux",
            "tolerations[0].key=dedicated,tolerations[0].operator=Exists,tolerations[0].effect=NoSchedule",
            "commonLabels.team=platform",
            "commonAnnotations.owner=platform@example.com",
            "podLabels.tier=admission",
            "podAnnotations.note=test",
            "clusterSettings.aws-region=us-west-2",
            "config.aws.region=eu-west-1",
            "config.identities[0].namespace=team-a,config.identities[0].serviceAccount=app,config.identities[0].aws.roleArn=arn:aws:iam::111122223333:role/app",
        ],
    ),
];

/// The labels every object and the Pod template carry (Helm's and Kubernetes' recommended ones).
const RECOMMENDED_LABELS: &[&str] = &[
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
];

fn set_args(values: &[&str]) -> Vec<String> {
    values
        .iter()
        .flat_map(|value| ["--set".to_owned(), (*value).to_owned()])
        .collect()
}

fn helm(args: &[String]) -> String {
    let helm = tools::tool("helm");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, stdout, text) = tools::run(&helm, &args);
    assert!(ok, "helm {args:?} failed:\n{text}");
    stdout
}

fn template(values: &[&str]) -> String {
    let mut args = vec![
        "template".to_owned(),
        "workload-identity-webhook".to_owned(),
        CHART.to_owned(),
        "--namespace".to_owned(),
        NAMESPACE.to_owned(),
        // Offline, helm assumes an old Kubernetes: render for the test control plane's.
        format!("--kube-version={}", control_plane::kubernetes_version()),
    ];
    args.extend(set_args(values));
    helm(&args)
}

/// The installed MutatingWebhookConfiguration, as JSON.
fn webhook_configuration(kubeconfig: &std::path::Path) -> Value {
    serde_json::from_str(&kubectl(
        kubeconfig,
        &[
            "get",
            "mutatingwebhookconfiguration",
            "workload-identity-webhook",
            "-o",
            "json",
        ],
        None,
    ))
    .unwrap()
}

fn kubectl(kubeconfig: &std::path::Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is needed");
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "kubectl {args:?} failed:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The objects of a multi-document YAML stream, by "Kind namespace/name".
fn objects(rendered: &str) -> BTreeMap<String, Value> {
    serde_yaml_ng::Deserializer::from_str(rendered)
        .filter_map(|document| {
            let object: Value = serde::Deserialize::deserialize(document).unwrap();
            (!object.is_null()).then(|| {
                let mut object = object;
                // Kustomize (v5.5) puts its namespace on these cluster-scoped kinds; the API
                // server drops it.
                if object["kind"]
                    .as_str()
                    .unwrap()
                    .starts_with("ValidatingAdmissionPolicy")
                {
                    object["metadata"].as_object_mut().unwrap().remove("namespace");
                }
                let key = format!(
                    "{} {}/{}",
                    object["kind"].as_str().unwrap(),
                    object["metadata"]["namespace"].as_str().unwrap_or(""),
                    object["metadata"]["name"].as_str().unwrap()
                );
                (key, object)
            })
        })
        .collect()
}

// In a module of their own so that scripts/test.sh runs them as one phase (`--skip operations::`).
mod operations {
    use super::*;

    #[test]
    fn the_chart_lints_clean_in_every_mode() {
        for (what, values) in MODES {
            let mut args = vec![
                "lint".to_owned(),
                "--strict".to_owned(),
                format!("--kube-version={}", control_plane::kubernetes_version()),
                CHART.to_owned(),
            ];
            args.extend(set_args(values));
            let out = helm(&args);
            assert!(out.contains("0 chart(s) failed"), "{what}: {out}");
        }
        // A wrong mode is refused by values.schema.json, naming the key and the modes.
        let helm_path = tools::tool("helm");
        let (ok, _, text) = tools::run(
            &helm_path,
            &[
                "template",
                CHART,
                "--kube-version",
                control_plane::kubernetes_version(),
                "--set",
                "installMode=everywhere",
            ],
        );
        assert!(
            !ok && text.contains("/installMode") && text.contains("'cluster-wide', 'namespace-opt-in'"),
            "{text}"
        );
    }

    /// The chart's `kubeVersion` admits the supported minors (docs/kubernetes-versions.md: a
    /// folder each under tests/control-plane/versions/) and refuses the minor before the oldest.
    #[test]
    fn the_chart_installs_on_the_supported_kubernetes_minors_only() {
        let helm_path = tools::tool("helm");
        let render = |version: &str| tools::run(&helm_path, &["template", CHART, "--kube-version", version]);
        let supported = control_plane::supported_kubernetes_versions();
        for version in &supported {
            let (ok, _, text) = render(version);
            assert!(ok, "helm template --kube-version {version}: {text}");
        }
        let oldest_minor: u32 = supported[0].split('.').nth(1).unwrap().parse().unwrap();
        let older = format!("v1.{}.99", oldest_minor - 1);
        let (ok, _, text) = render(&older);
        assert!(
            !ok && text.contains("incompatible with Kubernetes"),
            "helm template --kube-version {older}: {text}"
        );
    }

    /// The typos of issue 23, each refused by values.schema.json with a message naming the key
    /// (before the schema, each rendered: a crash-looping flag, a string replica count, an unknown
    /// key in the ConfigMap, a silently ignored value).
    #[test]
    fn the_chart_refuses_typos_naming_the_key() {
        let helm_path = tools::tool("helm");
        let cases: &[(&str, &[&str])] = &[
            ("clusterSettings.aws-regoin=us-west-2", &["aws-regoin"]),
            ("replicas=two", &["replicas", "integer"]),
            (
                "config.identities[0].namespace=a,config.identities[0].aws.roleArnn=arn:aws:iam::111122223333:role/app",
                &["roleArnn"],
            ),
            ("replicaCount=2", &["replicaCount"]),
            ("config.aws.regoin=us-west-2", &["regoin"]),
            (
                "clusterSettings.aws-sts-regional-endpoints=yes",
                &["aws-sts-regional-endpoints", "boolean"],
            ),
            ("clusterSettings.gcp-mode=gkee", &["gcp-mode"]),
        ];
        for (value, named) in cases {
            let (ok, _, text) = tools::run(
                &helm_path,
                &[
                    "template",
                    CHART,
                    "--kube-version",
                    control_plane::kubernetes_version(),
                    "--set",
                    value,
                ],
            );
            assert!(!ok, "{value} was rendered");
            for word in *named {
                assert!(text.contains(word), "{value}: the error does not name {word}:\n{text}");
            }
        }
        // What they meant is accepted, and each setting becomes its flag.
        let rendered = template(&[
            "clusterSettings.aws-region=us-west-2",
            "clusterSettings.aws-sts-regional-endpoints=true",
            "clusterSettings.gcp-gcloud-config-volume=false",
            "clusterSettings.gcp-mode=gke",
            "replicas=3",
        ]);
        // A boolean setting becomes its switch or its `--no-` form.
        for flag in [
            "\"--aws-region=us-west-2\"",
            "\"--aws-sts-regional-endpoints\"",
            "\"--no-gcp-gcloud-config-volume\"",
            "\"--gcp-mode=gke\"",
        ] {
            assert!(rendered.contains(flag), "{flag} not rendered:\n{rendered}");
        }
    }

    #[test]
    fn every_object_and_the_pods_carry_the_recommended_labels() {
        for (what, values) in MODES {
            let mut values = values.to_vec();
            values.push("commonLabels.team=platform");
            for (key, object) in objects(&template(&values)) {
                let mut label_sets = vec![("metadata", &object["metadata"]["labels"])];
                if let Some(template) = object.pointer("/spec/template/metadata/labels") {
                    label_sets.push(("Pod template", template));
                }
                for (place, labels) in label_sets {
                    for label in RECOMMENDED_LABELS.iter().chain(&["team"]) {
                        assert!(
                            labels[*label].is_string(),
                            "{what}: {key} {place} lacks {label}: {labels}"
                        );
                    }
                }
            }
        }
        // nameOverride names the app, fullnameOverride the objects; the webhook is told the names.
        let renamed = objects(&template(&["fullnameOverride=wiw", "nameOverride=identity"]));
        for (key, object) in &renamed {
            let name = object["metadata"]["name"].as_str().unwrap();
            assert!(name.starts_with("wiw"), "{key} is not renamed");
            assert_eq!(
                object["metadata"]["labels"]["app.kubernetes.io/name"], "identity",
                "{key}"
            );
        }
        let deployment = &renamed[&format!("Deployment {NAMESPACE}/wiw")];
        let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
        for flag in [
            "--config-map=wiw",
            "--certificate-secret=wiw-tls",
            "--webhook-configuration=wiw",
            "--service-name=wiw",
        ] {
            assert!(args.contains(flag), "{flag} missing: {args}");
        }
        let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        let unscraped = objects(&template(&["prometheusScrapeAnnotations=false"]));
        let pod = &unscraped[&format!("Deployment {NAMESPACE}/workload-identity-webhook")]["spec"]["template"];
        assert!(pod["metadata"]["annotations"].is_null(), "{pod}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_chart_mode_is_accepted_by_the_apiserver() {
        let cp = control_plane::shared().await;
        let kubeconfig = cp.kubeconfig_path();
        kubectl(kubeconfig, &["apply", "--server-side", "-f", "-"], Some(&bare_crds()));
        kubectl(
            kubeconfig,
            &["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"],
            None,
        );
        let selector = |kubeconfig| webhook_configuration(kubeconfig)["webhooks"][0]["namespaceSelector"].to_string();

        // The README's commands: install, upgrade to another mode, uninstall.
        let release = |verb: &str, values: &[&str]| {
            let mut args: Vec<String> = [verb, "workload-identity-webhook"].map(str::to_owned).to_vec();
            if verb != "uninstall" {
                args.extend([CHART.to_owned(), "--create-namespace".to_owned()]);
            }
            args.extend(["-n", NAMESPACE, "--kubeconfig", kubeconfig.to_str().unwrap()].map(str::to_owned));
            args.extend(set_args(values));
            helm(&args)
        };
        release("install", &[]);
        assert!(!selector(kubeconfig).contains("enabled"));
        // What the self-managed webhook (or cert-manager's CA injector) does after the install:
        // the upgrade must keep it, or the API server stops trusting the webhook.
        let ca_bundle = r#"[{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "Y2E="}]"#;
        kubectl(
            kubeconfig,
            &[
                "patch",
                "mutatingwebhookconfiguration",
                "workload-identity-webhook",
                "--type=json",
                "-p",
                ca_bundle,
            ],
            None,
        );
        let notes = release("upgrade", &["installMode=namespace-opt-in"]);
        assert!(selector(kubeconfig).contains(r#""values":["enabled"]"#));
        // NOTES.txt says what namespace opt-in needs.
        assert!(
            notes.contains("kubectl label namespace <namespace> workload-identity.dev/inject=enabled"),
            "{notes}"
        );
        let published = kubectl(
            kubeconfig,
            &[
                "get",
                "mutatingwebhookconfiguration",
                "workload-identity-webhook",
                "-o",
                "jsonpath={.webhooks[0].clientConfig.caBundle}",
            ],
            None,
        );
        assert_eq!(published, "Y2E=", "helm upgrade dropped the caBundle");
        release("uninstall", &[]);
        let left = kubectl(
            kubeconfig,
            &[
                "get",
                "mutatingwebhookconfiguration,validatingadmissionpolicy",
                "-o",
                "name",
            ],
            None,
        );
        assert!(!left.contains("workload-identity-webhook"), "{left}");

        for (what, values) in MODES {
            let rendered = template(values);
            let count = objects(&rendered).len();
            let out = kubectl(
                kubeconfig,
                &[
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "--field-manager=wiw-chart-tests",
                    "-f",
                    "-",
                ],
                Some(&rendered),
            );
            let applied = out.lines().filter(|line| line.contains("serverside-applied")).count();
            assert_eq!(applied, count, "{what}: every object applied\n{out}");
        }
        // What the last mode left: its options took effect in the stored objects.
        let deployment: Value = serde_json::from_str(&kubectl(
            kubeconfig,
            &[
                "-n",
                NAMESPACE,
                "get",
                "deployment",
                "workload-identity-webhook",
                "-o",
                "json",
            ],
            None,
        ))
        .unwrap();
        let spec = &deployment["spec"]["template"]["spec"];
        assert_eq!(deployment["spec"]["replicas"], 3);
        assert_eq!(spec["priorityClassName"], "system-node-critical");
        assert_eq!(spec["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
        let args = spec["containers"][0]["args"].to_string();
        assert!(
            args.contains("--aws-region=us-west-2") && args.contains("--tls-cert-file=/tls/tls.crt"),
            "{args}"
        );
        let configuration = webhook_configuration(kubeconfig);
        assert!(configuration["webhooks"][0]["clientConfig"]["caBundle"].is_string());
        assert_eq!(configuration["metadata"]["labels"]["team"], "platform");
    }

    /// The chart's labels on every object and Pod that Kustomize's overlays do not set.
    const BOOKKEEPING_LABELS: &[&str] = &[
        "app.kubernetes.io/instance",
        "app.kubernetes.io/version",
        "app.kubernetes.io/part-of",
        "app.kubernetes.io/managed-by",
        "helm.sh/chart",
    ];

    /// Removes what legitimately differs between the chart and Kustomize: their bookkeeping labels
    /// (`helm.sh/chart`, `app.kubernetes.io/managed-by`, ...), the comments of config.yaml, and
    /// white space in CEL expressions (Kustomize re-folds a `>-` block with indented lines into a
    /// different, equivalent run of spaces and line breaks).
    fn normalise(mut object: Value) -> Value {
        object["metadata"].as_object_mut().unwrap().remove("labels");
        if let Some(labels) = object
            .pointer_mut("/spec/template/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            labels.retain(|key, _| !BOOKKEEPING_LABELS.contains(&key.as_str()));
        }
        if object["kind"] == "ValidatingAdmissionPolicy" {
            for list in ["validations", "matchConditions"] {
                for entry in object["spec"][list].as_array_mut().into_iter().flatten() {
                    let expression = entry["expression"]
                        .as_str()
                        .unwrap()
                        .split_whitespace()
                        .collect::<Vec<_>>();
                    entry["expression"] = json!(expression.join(" "));
                }
            }
        }
        if object["kind"] == "ConfigMap" {
            let config = object["data"]["config.yaml"].as_str().unwrap();
            let parsed: Value = serde_yaml_ng::from_str(config).unwrap();
            object["data"]["config.yaml"] = parsed;
        }
        object
    }

    #[test]
    fn the_chart_renders_the_same_objects_as_the_overlays() {
        let kubeconfig = std::path::Path::new("/dev/null");
        let pairs: &[(&str, &[&str])] = &[
            ("manifests/overlays/cluster-wide", &[]),
            ("manifests/overlays/namespace-opt-in", &["installMode=namespace-opt-in"]),
            ("manifests/overlays/cert-manager", &["certificate.mode=cert-manager"]),
            (
                "tests/kustomize/network-policy",
                &[
                    "networkPolicy.enabled=true",
                    "networkPolicy.controlPlaneCidrs={10.0.0.0/28}",
                    "networkPolicy.monitoringNamespace=observability",
                ],
            ),
        ];
        for (overlay, values) in pairs {
            let mut expected = objects(&kubectl(kubeconfig, &["kustomize", overlay], None));
            // Helm does not own the namespace it installs into (`--create-namespace`).
            expected.retain(|key, _| !key.starts_with("Namespace "));
            let actual = objects(&template(values));
            assert_eq!(
                actual.keys().collect::<Vec<_>>(),
                expected.keys().collect::<Vec<_>>(),
                "{overlay}: the chart renders other objects"
            );
            for (key, object) in expected {
                let expected = normalise(object);
                let actual = normalise(actual[&key].clone());
                assert!(
                    actual == expected,
                    "{overlay}: {key} differs\nchart:     {actual}\noverlay:   {expected}"
                );
            }
        }
    }
}
