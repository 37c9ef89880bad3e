//! The documentation agrees with the code: the generated reference tables, the chart's schema and
//! values table (`docs check`), the alert table, the commands of the README and docs/ that run
//! offline, relative links, and the README's length. The cloud-side examples are checked against
//! the emulator in crates/emulator/tests/cloud_setup.rs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

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
            // JSON, or YAML with `-o yaml`: an object or a list either way.
            let printed = serde_yaml_ng::from_slice::<Value>(&output.stdout).unwrap_or_default();
            assert!(
                output.status.success() && (printed.is_object() || printed.is_array()),
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
            &[
                "mutate",
                "--object",
                "pod.json",
                "--config",
                "config.yaml",
                "--namespace",
                namespace,
            ],
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains(expected), "{namespace}/{service_account}: {stdout}");
        assert!(
            output.stderr.is_empty(),
            "{namespace}/{service_account}: warnings {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The alert table of docs/monitoring.md is monitoring/alerts.yaml's.
#[test]
fn the_alert_table_lists_every_alert() {
    let alerts: Value = serde_yaml_ng::from_str(&read("monitoring/alerts.yaml")).unwrap();
    let mut rows = vec!["| alert | severity | summary |".to_owned(), "|---|---|---|".to_owned()];
    for group in alerts["groups"].as_array().unwrap() {
        // Recording rules aside.
        for rule in group["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|rule| rule["alert"].is_string())
        {
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
    assert_eq!(
        table,
        rows.join("\n"),
        "docs/monitoring.md: the alert table differs from monitoring/alerts.yaml"
    );
}

/// Every relative link of the README, docs/ and the chart README names a file that exists.
#[test]
fn relative_links_point_at_files() {
    let mut pages: Vec<PathBuf> = vec![
        root().join("README.md"),
        root().join("charts/workload-identity-webhook/README.md"),
    ];
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
            if resolved.canonicalize().is_err() {
                broken.insert(format!("{}: {target}", page.strip_prefix(root()).unwrap().display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}

/// The files under `dir` (recursively) whose name ends with one of `extensions`.
fn files_under(dir: &Path, extensions: &[&str], found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, extensions, found);
        } else if extensions
            .iter()
            .any(|extension| path.to_string_lossy().ends_with(extension))
        {
            found.push(path);
        }
    }
}

/// Every metric a page, an alert, the dashboard, the chart or a message of the code names (the
/// start-up notices among them) is one the webhook exports, as the reference lists them: a renamed
/// metric is renamed everywhere. The changelog keeps old names on purpose.
#[test]
fn every_metric_named_anywhere_exists() {
    let reference = read("docs/reference.md");
    let mut files = vec![root().join("README.md")];
    for dir in ["docs", "monitoring", "charts", "manifests", "src", "crates/core/src"] {
        files_under(
            &root().join(dir),
            &[".md", ".yaml", ".json", ".rs", ".tpl", ".txt"],
            &mut files,
        );
    }
    let mut unknown = BTreeSet::new();
    let mut named = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let words = text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
        for word in words.filter(|word| word.starts_with("workload_identity_webhook_") && !word.ends_with('_')) {
            let metric = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(word);
            named += 1;
            if !reference.contains(&format!("| `{metric}` |")) {
                unknown.insert(format!("{}: {word}", file.strip_prefix(root()).unwrap().display()));
            }
        }
    }
    assert!(named >= 50, "{named} mentions");
    assert!(unknown.is_empty(), "metrics the webhook does not export: {unknown:#?}");
}

/// Every generated table, the chart's schema and its values table are what the code generates.
#[test]
fn the_generated_documentation_is_current() {
    let output = webhook(root(), &["docs", "check"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // And the check sees a change: a copy with one table row edited fails, naming the file.
    let copy = tempfile::tempdir().unwrap();
    for path in [
        "docs/reference.md",
        "charts/workload-identity-webhook/values.schema.json",
        "charts/workload-identity-webhook/values.yaml",
        "charts/workload-identity-webhook/README.md",
        "docs/config.schema.json",
        "monitoring/alerts.yaml",
        "manifests/components/prometheus-rule/prometheusrule.yaml",
    ] {
        let target = copy.path().join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        let mut text = read(path);
        if path == "docs/reference.md" {
            text = text.replacen("| `aws.region` |", "| `aws.regoin` |", 1);
        }
        std::fs::write(target, text).unwrap();
    }
    let root = copy.path().to_str().unwrap();
    let output = webhook(Path::new("/"), &["docs", "check", "--root", root]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("docs/reference.md"),
        "{stderr}"
    );
    assert!(!stderr.contains("values.schema.json"), "{stderr}");
    // `docs update` puts it right.
    assert!(
        webhook(Path::new("/"), &["docs", "update", "--root", root])
            .status
            .success()
    );
    assert!(
        webhook(Path::new("/"), &["docs", "check", "--root", root])
            .status
            .success()
    );
}

/// docs/multi-tenant.md: its policy is the one of examples/multi-tenant/config.yaml, and its
/// `workload-identity-webhook` commands run as written: the preview in team-a is refused naming
/// the rule, the one in team-b is admitted, the data-platform role only with the namespace's label, and the admission policy is printed (tests/policy.rs
/// applies that output to a real apiserver).
#[test]
fn the_multi_tenant_page_runs() {
    let page = read("docs/multi-tenant.md");
    let block = &page[page.find("```yaml\npolicy:").unwrap() + "```yaml\n".len()..];
    let shown: Value = serde_yaml_ng::from_str(&block[..block.find("```").unwrap()]).unwrap();
    let example: Value = serde_yaml_ng::from_str(&read("examples/multi-tenant/config.yaml")).unwrap();
    assert_eq!(shown["policy"], example["policy"]);
    let dir = tempfile::tempdir().unwrap();
    let mut ran = 0;
    for command in shell_commands(&page) {
        let words: Vec<&str> = command.split_whitespace().collect();
        let (args, redirect) = match words.as_slice() {
            ["workload-identity-webhook", rest @ .., ">", file] => (rest, Some(*file)),
            ["workload-identity-webhook", rest @ ..] => (rest, None),
            ["kubectl", "apply", "-f", "identity-policy.yaml"] => continue,
            _ => panic!("docs/multi-tenant.md runs {command}, which no test runs"),
        };
        let output = webhook(root(), args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if command.contains("--namespace team-a") {
            assert!(!output.status.success(), "{command}");
            assert!(stderr.contains(r#"identity policy: rule "team-a" (selecting namespace team-a) does not allow AWS role arn:aws:iam::111122223333:role/team-b-app"#), "{stderr}");
        } else if command.contains("--namespace etl") && !command.contains("--namespace-labels") {
            assert!(!output.status.success(), "{command}");
            assert!(
                stderr.contains("identity policy: no rule selects namespace etl"),
                "{stderr}"
            );
            assert!(stderr.contains("--namespace-labels"), "{stderr}");
        } else {
            assert!(output.status.success(), "{command}: {stderr}");
        }
        if let Some(file) = redirect {
            std::fs::write(dir.path().join(file), &output.stdout).unwrap();
            assert!(String::from_utf8_lossy(&output.stdout).contains("kind: ValidatingAdmissionPolicyBinding"));
        }
        ran += 1;
    }
    assert_eq!(ran, 5);
}
