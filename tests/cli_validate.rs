//! `validate`: a `config.yaml` or its ConfigMap manifest checked offline, each problem once with
//! its field path, line and column; values the webhook changes warned about.

use std::path::Path;
use std::process::{Command, Output};

fn validate(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_workload-identity-webhook"));
    command.current_dir(dir).arg("validate").args(args);
    if let Some(text) = stdin {
        let path = dir.join("stdin.yaml");
        std::fs::write(&path, text).unwrap();
        command.stdin(std::fs::File::open(path).unwrap());
    }
    command.output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

const BROKEN: &str = r#"aws:
  region: us-west-2
identities:
  - namespace: team-a
    serviceAccount: app
    aws: {roleArn: nope}
  - namespace: ""
    gcp: {serviceAccount: "reader@my-project.iam.gserviceaccount.com"}
"#;

#[test]
fn each_problem_once_with_its_path_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), BROKEN).unwrap();
    let output = validate(dir.path(), &["config.yaml"], None);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(
        stderr(&output),
        "error: config.yaml: identities[0].aws.roleArn: \"nope\" is not a valid IAM role ARN at line 6 column 20\n\
         error: config.yaml: identities[1]: namespace and serviceAccount must not be empty (use \"*\" for any) at line 7 column 5\n"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn a_yaml_error_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), "aws:\n  regoin: us-west-2\n").unwrap();
    let output = validate(dir.path(), &["config.yaml"], None);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert_eq!(text.matches("unknown field `regoin`").count(), 1, "{text}");
    assert!(text.ends_with("at line 2 column 3\n"), "{text}");
}

/// In a ConfigMap manifest, the lines are the manifest's (a `config.yaml: |` block).
#[test]
fn reads_a_configmap_manifest_from_stdin_with_the_manifests_lines() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: workload-identity-webhook}}\ndata:\n  config.yaml: |\n{}",
        BROKEN.lines().map(|line| format!("    {line}\n")).collect::<String>()
    );
    let output = validate(dir.path(), &["-"], Some(&manifest));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with(
            "error: -: identities[0].aws.roleArn: \"nope\" is not a valid IAM role ARN at line 11 column 24\n"
        ),
        "{}",
        stderr(&output)
    );
    // The same ConfigMap as JSON (`kubectl get -o json`): the lines are config.yaml's own.
    let json = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"},
        "data": {"config.yaml": BROKEN}});
    std::fs::write(dir.path().join("cm.json"), json.to_string()).unwrap();
    let output = validate(dir.path(), &["cm.json"], None);
    assert!(
        stderr(&output).contains("at data.config.yaml of line 6 column 20\n"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_changed_value_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        "aws:\n  region: us-west-2\n  tokenExpirationSeconds: 100\ngcp: {tokenExpirationSeconds: 600}\n",
    )
    .unwrap();
    let output = validate(dir.path(), &["config.yaml"], None);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stderr(&output),
        "warning: config.yaml: aws.tokenExpirationSeconds: 100 is raised to 600, the shortest token lifetime the apiserver issues at line 3 column 27\n"
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "config.yaml: valid\n");
}

#[test]
fn refuses_a_manifest_of_another_kind() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pod.yaml"), "kind: Pod\nmetadata: {name: a}\n").unwrap();
    let output = validate(dir.path(), &["pod.yaml"], None);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        "error: pod.yaml is a Pod, not a config.yaml or a ConfigMap\n"
    );
}

/// The example and the documented editor line: the example is valid, and the schema it and
/// docs/configuration.md name is the generated one, at this release's tag.
#[test]
fn the_example_is_valid_and_names_the_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = validate(root, &["examples/config.yaml"], None);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).is_empty(), "{}", stderr(&output));
    let example = std::fs::read_to_string(root.join("examples/config.yaml")).unwrap();
    let schema = example
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("# yaml-language-server: $schema="))
        .expect("examples/config.yaml starts with the modeline");
    assert!(root.join("examples").join(schema).is_file(), "{schema}");
    let docs = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let url = format!(
        "# yaml-language-server: $schema=https://raw.githubusercontent.com/workload-identity-webhook/workload-identity-webhook/v{}/docs/config.schema.json",
        env!("CARGO_PKG_VERSION")
    );
    assert!(docs.contains(&url), "docs/configuration.md does not show {url}");
    let generated: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("docs/config.schema.json")).unwrap()).unwrap();
    assert_eq!(generated["properties"]["identities"]["type"], "array");
}
