//! The documentation agrees with the code: the generated reference tables, the chart's schema and
//! values table (`docs check`), the cloud-side examples against the emulator's trust rules, the
//! alert table, the commands of the README and docs/ that run offline, and the README's length.

#[path = "support/control_plane.rs"]
mod control_plane;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use workload_identity_webhook::emulate::jwt::{KeySet, Refusal};
use workload_identity_webhook::emulate::rules::{Rules, Trusts};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|err| panic!("{path}: {err}"))
}

fn webhook(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_workload-identity-webhook"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

/// The fenced block that follows `<!-- docs-test: NAME -->` in a Markdown text.
fn marked_block(text: &str, name: &str) -> String {
    let marker = format!("<!-- docs-test: {name} -->");
    let after = &text[text.find(&marker).unwrap_or_else(|| panic!("no block {name}")) + marker.len()..];
    let start = after.find("```").unwrap();
    let body = &after[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").unwrap()].to_owned()
}

/// The shell commands of a Markdown text's `sh` blocks, with continuation lines joined.
fn shell_commands(text: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_block = !in_block && trimmed == "```sh";
            continue;
        }
        if !in_block {
            continue;
        }
        let code = trimmed.split(" #").next().unwrap().trim_end();
        match code.strip_suffix('\\') {
            Some(start) => {
                pending.push_str(start);
                pending.push(' ');
            }
            None => {
                pending.push_str(code);
                let command = pending.split_whitespace().collect::<Vec<_>>().join(" ");
                pending.clear();
                commands.push(command);
            }
        }
    }
    commands
}

#[test]
fn the_readme_stays_short() {
    let lines = read("README.md").lines().count();
    assert!(lines <= 200, "README.md has {lines} lines; move detail into docs/");
}

/// Every `mutate` command of the README and docs/configuration.md runs as written (from the
/// repository root, on the files of examples/).
#[test]
fn the_mutate_commands_of_the_docs_run() {
    let mut ran = 0;
    for page in ["README.md", "docs/configuration.md"] {
        for command in shell_commands(&read(page)) {
            let words: Vec<&str> = command.split_whitespace().collect();
            let args = match words.as_slice() {
                ["workload-identity-webhook", "mutate", rest @ ..] | ["$B", "mutate", rest @ ..] => rest,
                _ => continue,
            };
            let mut all = vec!["mutate"];
            all.extend_from_slice(args);
            let output = webhook(root(), &all);
            assert!(
                output.status.success() && output.stdout.starts_with(b"{") || output.stdout.starts_with(b"["),
                "{page}: {command}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            ran += 1;
        }
    }
    assert!(ran >= 6, "only {ran} mutate commands found");
}

/// The README's `my-values.yaml`: its `config` is a valid `config.yaml` that gives each example
/// ServiceAccount the identity the README says.
#[test]
fn the_readme_mapping_per_cloud_is_valid() {
    let readme = read("README.md");
    let values = &readme[readme.find("# my-values.yaml").unwrap()..];
    let values: Value = serde_yaml_ng::from_str(&values[..values.find("```").unwrap()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        serde_yaml_ng::to_string(&values["config"]).unwrap(),
    )
    .unwrap();
    for (namespace, service_account, expected) in [
        ("team-a", "s3-reader", "arn:aws:iam::111122223333:role/s3-reader"),
        ("analytics", "anything", "reader@my-project.iam.gserviceaccount.com"),
        ("billing", "api", "00000000-1111-2222-3333-444444444444"),
    ] {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"serviceAccountName": service_account, "containers": [{"name": "app", "image": "app"}]}});
        std::fs::write(dir.path().join("pod.json"), pod.to_string()).unwrap();
        let output = webhook(
            dir.path(),
            &["mutate", "--object", "pod.json", "--config", "config.yaml", "--namespace", namespace],
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains(expected), "{namespace}/{service_account}: {stdout}");
        assert!(output.stderr.is_empty(), "{namespace}/{service_account}: warnings {}", String::from_utf8_lossy(&output.stderr));
    }
}

/// The alert table of docs/monitoring.md is monitoring/alerts.yaml's.
#[test]
fn the_alert_table_lists_every_alert() {
    let alerts: Value = serde_yaml_ng::from_str(&read("monitoring/alerts.yaml")).unwrap();
    let mut rows = vec!["| alert | severity | summary |".to_owned(), "|---|---|---|".to_owned()];
    for group in alerts["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            rows.push(format!(
                "| `{}` | {} | {} |",
                rule["alert"].as_str().unwrap(),
                rule["labels"]["severity"].as_str().unwrap(),
                rule["annotations"]["summary"].as_str().unwrap()
            ));
        }
    }
    let page = read("docs/monitoring.md");
    let begin = "<!-- BEGIN GENERATED: alerts (monitoring/alerts.yaml; tests/docs.rs checks it) -->\n";
    let table = &page[page.find(begin).unwrap() + begin.len()..page.find("\n<!-- END GENERATED: alerts -->").unwrap()];
    assert_eq!(table, rows.join("\n"), "docs/monitoring.md: the alert table differs from monitoring/alerts.yaml");
}

/// Pages written on other branches (issue 22, 25, 26); remove a name once its page is merged.
const PAGES_OF_OTHER_BRANCHES: &[&str] = &["docs/install.md", "docs/kubernetes-versions.md", "docs/sdk-compatibility.md"];

/// Every relative link of the README, docs/ and the chart README names a file that exists.
#[test]
fn relative_links_point_at_files() {
    let mut pages: Vec<PathBuf> = vec![root().join("README.md"), root().join("charts/workload-identity-webhook/README.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        pages.push(entry.unwrap().path());
    }
    let mut broken = BTreeSet::new();
    for page in pages {
        let text = std::fs::read_to_string(&page).unwrap();
        for link in text.split("](").skip(1) {
            let target = &link[..link.find(')').unwrap()];
            let file = target.split('#').next().unwrap();
            if file.is_empty() || target.starts_with("http") {
                continue;
            }
            let resolved = page.parent().unwrap().join(file);
            let relative = resolved.canonicalize().ok();
            let pending = PAGES_OF_OTHER_BRANCHES
                .iter()
                .any(|other| resolved.ends_with(other.trim_start_matches("docs/")) && resolved.parent().unwrap().ends_with("docs"));
            if relative.is_none() && !pending {
                broken.insert(format!("{}: {target}", page.strip_prefix(root()).unwrap().display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}

/// The cloud-side examples of docs/cloud-setup.md say what the emulator's rules say: the AWS trust
/// policy's `sub` and `aud`, the gcloud attribute condition and binding member, and the az
/// federated credential's issuer, subject and audience are those of the rules blocks, which parse
/// as the emulator's rules file; and the emulator, given those rules, grants a real token of the
/// named ServiceAccount and refuses one of another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloud_setup_matches_the_emulators_rules() {
    const SUBJECT: &str = "system:serviceaccount:team-a:app";
    const ISSUER: &str = "https://oidc.example.com/cluster";
    let page = read("docs/cloud-setup.md");

    // AWS IRSA: the trust policy's conditions are the rule's subject and the default audience.
    let policy: Value = serde_json::from_str(&marked_block(&page, "aws-trust-policy")).unwrap();
    let statement = &policy["Statement"][0];
    let provider = ISSUER.trim_start_matches("https://");
    assert_eq!(statement["Action"], "sts:AssumeRoleWithWebIdentity");
    assert!(statement["Principal"]["Federated"].as_str().unwrap().ends_with(&format!(":oidc-provider/{provider}")));
    let conditions = &statement["Condition"]["StringEquals"];
    assert_eq!(conditions[format!("{provider}:sub")], SUBJECT);
    assert_eq!(conditions[format!("{provider}:aud")], "sts.amazonaws.com");
    let aws = Rules::parse(&marked_block(&page, "aws-rules")).unwrap();
    assert_eq!(aws.aws.roles[0].subjects, [SUBJECT]);
    assert!(aws.aws.roles[0].audiences.is_empty(), "the rule keeps the default audience, as the policy");

    // EKS Pod Identity: the association's role and ServiceAccount are the rule's.
    let pod_identity: Value = serde_json::from_str(&marked_block(&page, "aws-pod-identity-trust-policy")).unwrap();
    assert_eq!(pod_identity["Statement"][0]["Principal"]["Service"], "pods.eks.amazonaws.com");
    let pods = Rules::parse(&marked_block(&page, "aws-pod-identity-rules")).unwrap();
    let association = "--namespace team-a --service-account worker --role-arn arn:aws:iam::111122223333:role/pods";
    let commands = shell_commands(&page).join("\n");
    assert!(commands.contains(association), "{commands}");
    assert_eq!(pods.aws.pod_identity[0].name, "arn:aws:iam::111122223333:role/pods");
    assert_eq!(pods.aws.pod_identity[0].subjects, ["system:serviceaccount:team-a:worker"]);

    // Google: the attribute condition and the binding's principal name the rules' subject.
    let google = Rules::parse(&marked_block(&page, "google-rules")).unwrap();
    assert!(commands.contains(&format!("--issuer-uri={ISSUER}")), "{commands}");
    assert!(commands.contains(&format!("--attribute-condition=\"assertion.sub in ['{SUBJECT}']\"")));
    assert!(commands.contains(&format!("workloadIdentityPools/pool/subject/{SUBJECT}\"")));
    assert!(google.google.providers[0].name.ends_with("/workloadIdentityPools/pool/providers/provider"));
    assert_eq!(google.google.providers[0].subjects, [SUBJECT]);
    assert_eq!(google.google.service_accounts[0].subjects, [SUBJECT]);
    assert!(commands.contains(&format!("add-iam-policy-binding {}", google.google.service_accounts[0].name)));

    // Azure: the federated credential's issuer, subject and audience.
    let azure = Rules::parse(&marked_block(&page, "azure-rules")).unwrap();
    for flag in [format!("--issuer {ISSUER}"), format!("--subject {SUBJECT}"), "--audiences api://AzureADTokenExchange".to_owned()] {
        assert!(commands.contains(&flag), "{flag}: {commands}");
    }
    assert_eq!(azure.azure[0].subjects, [SUBJECT]);
    assert!(azure.azure[0].audiences.is_empty(), "the rule keeps the default audience, as the credential");

    // The emulator with these rules, on tokens of the real apiserver for team-a/app and team-a/other.
    let cp = control_plane::shared().await;
    let client = cp.client();
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team-a"}})).unwrap();
    let _ = Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await;
    let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "team-a");
    for name in ["app", "other"] {
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        let _ = service_accounts.create(&PostParams::default(), &sa).await;
    }
    let get = |path: &str| axum::http::Request::get(path).body(Vec::new()).unwrap();
    let discovery: Value =
        serde_json::from_str(&client.request_text(get("/.well-known/openid-configuration")).await.unwrap()).unwrap();
    let jwks = client.request_text(get("/openid/v1/jwks")).await.unwrap();
    let token = |name: &'static str, audience: &'static str| {
        let service_accounts = service_accounts.clone();
        async move {
            let request: TokenRequest =
                serde_json::from_value(json!({"spec": {"audiences": [audience], "expirationSeconds": 600}})).unwrap();
            service_accounts
                .create_token_request(name, &PostParams::default(), &request)
                .await
                .unwrap()
                .status
                .unwrap()
                .token
        }
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let trusts = |rules: Rules| Trusts {
        issuer: discovery["issuer"].as_str().unwrap().to_owned(),
        keys: KeySet::from_json(jwks.as_bytes()).unwrap(),
        rules,
    };
    let untrusted = |result: Result<_, Refusal>| matches!(result, Err(Refusal::UntrustedSubject { .. }));

    let aws = trusts(aws);
    let role = aws.rules.aws.roles[0].name.clone();
    let sts = ["sts.amazonaws.com".to_owned()];
    assert!(aws.decide(&token("app", "sts.amazonaws.com").await, &aws.rules.aws.roles, &role, &sts, now).is_ok());
    assert!(untrusted(aws.decide(&token("other", "sts.amazonaws.com").await, &aws.rules.aws.roles, &role, &sts, now)));

    let azure = trusts(azure);
    let (tenant, client_id) = (azure.rules.azure[0].tenant_id.clone(), azure.rules.azure[0].client_id.clone());
    assert!(azure.azure(&token("app", "api://AzureADTokenExchange").await, &tenant, &client_id, now).is_ok());
    assert!(untrusted(azure.azure(&token("other", "api://AzureADTokenExchange").await, &tenant, &client_id, now)));
}
