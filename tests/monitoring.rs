//! The alerts (monitoring/alerts.yaml) and the Grafana dashboard (monitoring/dashboard.json):
//! the alerts pass their `promtool test rules` unit tests, and every metric the alerts and the
//! dashboard query exists under that name: the webhook's own in the real binary's /metrics, the
//! API server's fail-open count in a real kube-apiserver's /metrics after a fail-open.

#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/tools.rs"]
mod tools;
#[path = "support/webhook.rs"]
mod webhook;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use serde_json::json;
use webhook::{Webhook, eventually, pod_review, write};

const ALERTS: &str = "monitoring/alerts.yaml";
const ALERT_TESTS: &str = "monitoring/alerts.test.yaml";
const DASHBOARD: &str = "monitoring/dashboard.json";

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The metric names (ours and the API server's) an expression text mentions.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("workload_identity_webhook_") || word.starts_with("apiserver_"))
        .map(str::to_owned)
        .collect()
}

/// The sample names of a Prometheus text exposition.
fn exported_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| line.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

/// The `name{label="value"}` equality matchers of our metrics in queries (Prometheus' own
/// `job` and `instance` aside): each label value must be one the webhook really uses.
fn label_matchers(text: &str) -> BTreeSet<(String, String)> {
    let mut matchers = BTreeSet::new();
    for (start, _) in text.match_indices("workload_identity_webhook_") {
        let rest = &text[start..];
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let Some(selector) = rest[name_end..].strip_prefix('{') else {
            continue;
        };
        let selector = &selector[..selector.find('}').unwrap()];
        for matcher in selector.split(',').map(str::trim) {
            if let Some((label, value)) = matcher.split_once("=\"")
                && !label.ends_with(['!', '=', '~'])
                && label != "job"
                && label != "instance"
            {
                let pair = format!("{label}=\"{}\"", value.trim_end_matches('"'));
                matchers.insert((rest[..name_end].to_owned(), pair));
            }
        }
    }
    matchers
}

/// The alerting rules of every group (recording rules aside).
fn alert_rules(alerts: &serde_yaml_ng::Value) -> impl Iterator<Item = &serde_yaml_ng::Value> {
    alerts["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_sequence().unwrap())
        .filter(|rule| rule["alert"].is_string())
}

/// The anchors GitHub gives a Markdown page's headings.
fn heading_anchors(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter_map(|line| {
            line.trim_start_matches('#')
                .strip_prefix(' ')
                .filter(|_| line.starts_with('#'))
        })
        .map(|heading| {
            heading
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

/// Every alert links its own section of docs/troubleshooting.md, and that section exists.
#[test]
fn every_alert_has_a_runbook_url_to_a_troubleshooting_section() {
    let alerts: serde_yaml_ng::Value = serde_yaml_ng::from_str(&read(ALERTS)).unwrap();
    let anchors = heading_anchors(&read("docs/troubleshooting.md"));
    let page =
        "https://github.com/workload-identity-webhook/workload-identity-webhook/blob/main/docs/troubleshooting.md#";
    let mut count = 0;
    for rule in alert_rules(&alerts) {
        let name = rule["alert"].as_str().unwrap();
        let url = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no runbook_url"));
        let anchor = url
            .strip_prefix(page)
            .unwrap_or_else(|| panic!("{name}: {url} is not a section of docs/troubleshooting.md"));
        assert_eq!(anchor, name.to_lowercase(), "{name} links another alert's section");
        assert!(
            anchors.contains(anchor),
            "{name}: docs/troubleshooting.md has no #{anchor}"
        );
        count += 1;
    }
    assert!(count >= 10, "{count} alerts");
}

/// Which targets are the webhook is said once, by the first rule, which the chart's
/// prometheusRule.selector and the Kustomize component's documented patch replace; its default
/// is the chart's.
#[test]
fn the_alerts_select_the_webhook_through_one_recording_rule() {
    let alerts: serde_yaml_ng::Value = serde_yaml_ng::from_str(&read(ALERTS)).unwrap();
    let first = &alerts["groups"][0]["rules"][0];
    assert_eq!(first["record"].as_str(), Some("workload_identity_webhook:up"));
    let values: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read("charts/workload-identity-webhook/values.yaml")).unwrap();
    let selector = values["prometheusRule"]["selector"].as_str().unwrap();
    assert_eq!(first["expr"].as_str(), Some(format!("up{{{selector}}}").as_str()));
    // No other rule names a job or reads `up` itself.
    for rule in alert_rules(&alerts) {
        let expr = rule["expr"].as_str().unwrap();
        assert!(
            !expr.contains("job=") && !expr.contains("up{") && !expr.starts_with("up "),
            "{}: {expr}",
            rule["alert"].as_str().unwrap()
        );
    }
    let component = read("manifests/components/prometheus-rule/kustomization.yaml");
    assert!(
        component.contains("path: /spec/groups/0/rules/0/expr"),
        "the component documents the patch of the first rule"
    );
}

/// A slow answer lands in a bucket of its own: the latency histogram's last finite bucket is above
/// the timeoutSeconds of every webhook the manifests install, after which the apiserver gives up.
#[test]
fn the_latency_buckets_reach_the_webhook_timeout() {
    let exposition = workload_identity_webhook::shell::metrics::Metrics::default().encode();
    let last_bucket = exposition
        .lines()
        .filter(|line| line.starts_with("workload_identity_webhook_admission_duration_seconds_bucket{"))
        .filter_map(|line| line.split('"').nth(1)?.parse::<f64>().ok())
        .fold(0.0, f64::max);
    let mut timeouts = Vec::new();
    for manifest in [
        "manifests/base/mutatingwebhookconfiguration.yaml",
        "manifests/base/validatingwebhookconfiguration.yaml",
    ] {
        timeouts.extend(
            read(manifest)
                .lines()
                .filter_map(|line| line.trim().strip_prefix("timeoutSeconds: "))
                .map(|seconds| seconds.parse::<f64>().unwrap()),
        );
    }
    assert!(timeouts.len() >= 3, "{timeouts:?}");
    for timeout in timeouts {
        assert!(
            last_bucket > timeout,
            "last bucket {last_bucket} s, timeout {timeout} s"
        );
    }
}

// In a module of their own so that scripts/test.sh runs them as one phase (`--skip operations::`).
mod operations {
    use super::*;

    #[test]
    fn the_alerts_pass_their_promtool_unit_tests() {
        let promtool = tools::tool("promtool");
        let (ok, _, text) = tools::run(&promtool, &["check", "rules", ALERTS]);
        assert!(ok, "promtool check rules:\n{text}");
        let (ok, _, text) = tools::run(&promtool, &["test", "rules", ALERT_TESTS]);
        assert!(ok, "promtool test rules:\n{text}");

        // Every alert has at least one unit test.
        let alerts: serde_yaml_ng::Value = serde_yaml_ng::from_str(&read(ALERTS)).unwrap();
        let tests = read(ALERT_TESTS);
        let names: Vec<&str> = alert_rules(&alerts)
            .map(|rule| rule["alert"].as_str().unwrap())
            .collect();
        assert!(names.len() >= 8, "{names:?}");
        for name in names {
            assert!(
                tests.contains(&format!("alertname: {name}\n")),
                "{name} has no test in {ALERT_TESTS}"
            );
        }
    }

    #[tokio::test]
    async fn every_metric_of_the_alerts_and_the_dashboard_is_exported_by_the_webhook() {
        let used: BTreeSet<String> = metric_names(&read(ALERTS))
            .into_iter()
            .chain(metric_names(&read(DASHBOARD)))
            .filter(|name| name.starts_with("workload_identity_webhook_"))
            .collect();
        assert!(used.len() >= 7, "{used:?}");

        // The real binary, watching the ServiceAccounts of a real apiserver (which holds the
        // Pod's ServiceAccount), with one Pod mutated (with a warning: no AWS region), one invalid
        // body rejected, and a broken configuration and a broken certificate refused: every
        // family has a sample.
        let cp = control_plane::shared().await;
        let client = cp.client();
        let create = kube::api::PostParams::default();
        let namespace = serde_json::from_value(json!({"metadata": {"name": "team-a"}})).unwrap();
        kube::Api::<Namespace>::all(client.clone())
            .create(&create, &namespace)
            .await
            .unwrap();
        let service_account = serde_json::from_value(json!({"metadata": {"name": "app"}})).unwrap();
        kube::Api::<ServiceAccount>::namespaced(client, "team-a")
            .create(&create, &service_account)
            .await
            .unwrap();
        let config = "identities:\n  - namespace: team-a\n    serviceAccount: app\n    aws: {roleArn: \"arn:aws:iam::111122223333:role/app\"}\n";
        let kubeconfig = cp.kubeconfig_path().display().to_string();
        let mut webhook = Webhook::start(
            &["--config-file={dir}/config.yaml"],
            &[("KUBECONFIG", kubeconfig.as_str())],
            &[("config.yaml", config)],
        );
        webhook.wait_ready().await;
        let client = webhook.client(true);
        let mutated = client
            .post(webhook.url("/mutate"))
            .json(&pod_review("m"))
            .send()
            .await
            .unwrap();
        assert_eq!(mutated.status(), 200);
        let invalid = client
            .post(webhook.url("/mutate"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert!(invalid.status().is_client_error(), "{}", invalid.status());
        write(&webhook.path("config.yaml"), "identities: 3");
        webhook
            .wait_for_metric(r#"config_reloads_total{result="failure"} 1"#)
            .await;
        write(
            &webhook.path("tls.crt"),
            "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
        );
        webhook
            .wait_for_metric(r#"certificate_reloads_total{result="failure"} 1"#)
            .await;

        let exposition = webhook.metrics().await;
        let exported = exported_names(&exposition);
        let dashboard: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
        let dashboard_queries: Vec<&str> = dashboard["panels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|panel| panel["targets"].as_array().unwrap())
            .map(|target| target["expr"].as_str().unwrap())
            .collect();
        let matchers: BTreeSet<_> = label_matchers(&read(ALERTS))
            .into_iter()
            .chain(label_matchers(&dashboard_queries.join("\n")))
            .collect();
        assert!(matchers.len() >= 3, "{matchers:?}");
        for (name, pair) in &matchers {
            assert!(
                exposition
                    .lines()
                    .any(|line| line.starts_with(&format!("{name}{{")) && line.contains(pair.as_str())),
                "no sample {name}{{{pair}}} in the webhook's /metrics:\n{exposition}"
            );
        }
        for name in &used {
            assert!(
                exported.contains(name),
                "{name} is not in the webhook's /metrics:\n{exposition}"
            );
        }
    }

    /// The fail-open alert counts `apiserver_admission_webhook_fail_open_count` by webhook `name`:
    /// a webhook of this name that cannot be reached, with failurePolicy Ignore, makes the real
    /// kube-apiserver admit the Pod and count it under that metric and label.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_apiserver_counts_a_fail_open_under_the_names_the_alerts_use() {
        let cp = control_plane::shared().await;
        let kubectl = |args: &[&str], stdin: Option<&str>| {
            use std::io::Write;
            let mut child = std::process::Command::new("kubectl")
                .env("KUBECONFIG", cp.kubeconfig_path())
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("kubectl");
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
            assert!(output.status.success(), "kubectl {args:?}: {text}");
            String::from_utf8_lossy(&output.stdout).into_owned()
        };
        let namespace = format!("failopen-{}", std::process::id());
        kubectl(&["create", "namespace", &namespace], None);
        // Nothing listens on this port.
        let port = webhook::free_port();
        let configuration = json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": namespace},
            "webhooks": [{
                "name": "pods.workload-identity.dev",
                "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Ignore", "timeoutSeconds": 3,
                "clientConfig": {"url": format!("https://127.0.0.1:{port}/mutate")},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            }]
        });
        kubectl(&["apply", "-f", "-"], Some(&configuration.to_string()));
        let pod =
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "app-", "namespace": namespace},
                         "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}})
            .to_string();
        let counted = r#"apiserver_admission_webhook_fail_open_count{name="pods.workload-identity.dev",type="admit"}"#;
        // The API server picks the configuration up asynchronously: create Pods until one fails open.
        eventually(Duration::from_secs(60), "a fail-open to be counted", || async {
            kubectl(&["create", "-f", "-"], Some(&pod));
            kubectl(&["get", "--raw", "/metrics"], None).contains(counted)
        })
        .await;

        let exposition = kubectl(&["get", "--raw", "/metrics"], None);
        let exported = exported_names(&exposition);
        let used: BTreeSet<String> = metric_names(&read(ALERTS))
            .into_iter()
            .chain(metric_names(&read(DASHBOARD)))
            .filter(|name| name.starts_with("apiserver_"))
            .collect();
        assert!(!used.is_empty(), "the alerts count fail-opens");
        for name in &used {
            assert!(exported.contains(name), "{name} is not in the apiserver's /metrics");
        }
        kubectl(&["delete", "mutatingwebhookconfiguration", &namespace], None);
        kubectl(&["delete", "namespace", &namespace, "--wait=false"], None);
    }
}
