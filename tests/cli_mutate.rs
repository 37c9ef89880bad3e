//! The offline `mutate` command: the server's code path on files, as users preview a mutation.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

const CONFIG: &str = r#"
aws: {region: us-west-2}
gcp: {workloadIdentityProvider: "projects/123456789/locations/global/workloadIdentityPools/pool/providers/provider"}
azure: {tenantId: "11111111-2222-3333-4444-555555555555"}
identities:
  - namespace: team-a
    serviceAccount: app
    gcp: {serviceAccount: "reader@my-project.iam.gserviceaccount.com"}
"#;

const POD: &str = "
apiVersion: v1
kind: Pod
metadata: {name: app, namespace: team-a}
spec:
  serviceAccountName: app
  initContainers: [{name: init, image: busybox}]
  containers: [{name: app, image: busybox}]
";

const SERVICE_ACCOUNT: &str = r#"{"apiVersion": "v1", "kind": "ServiceAccount",
  "metadata": {"name": "app", "namespace": "team-a", "annotations": {
    "eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/app",
    "azure.workload.identity/client-id": "00000000-1111-2222-3333-444444444444"}}}"#;

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_workload-identity-webhook"))
        .current_dir(dir)
        .arg("mutate")
        .args(args)
        .output()
        .unwrap()
}

fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [("config.yaml", CONFIG), ("pod.yaml", POD), ("sa.json", SERVICE_ACCOUNT)] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn json_stdout(output: &Output) -> Value {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn env_names(container: &Value) -> Vec<String> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|env| env["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn prints_the_mutated_pod_with_all_three_clouds() {
    let dir = fixture();
    let pod = json_stdout(&run(
        dir.path(),
        &[
            "--object",
            "pod.yaml",
            "--service-account",
            "sa.json",
            "--config",
            "config.yaml",
        ],
    ));
    let volumes: Vec<&str> = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        volumes,
        [
            "aws-iam-token",
            "gcp-workload-identity",
            "gcp-gcloud-config",
            "azure-identity-token"
        ]
    );
    for container in [&pod["spec"]["containers"][0], &pod["spec"]["initContainers"][0]] {
        let names = env_names(container);
        for expected in [
            "AWS_ROLE_ARN",
            "AWS_REGION",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "CLOUDSDK_CONFIG",
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
        ] {
            assert!(
                names.iter().any(|name| name == expected),
                "{expected} missing in {names:?}"
            );
        }
        // Three tokens and gcloud's writable config directory.
        assert_eq!(container["volumeMounts"].as_array().unwrap().len(), 4);
    }
    let credentials: Value = serde_json::from_str(
        pod["metadata"]["annotations"]["cloud.google.com/external-credentials-json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(credentials["type"], "external_account");
    // The result is a Pod the Kubernetes types accept.
    serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(pod).unwrap();
}

#[test]
fn prints_the_patch_or_the_review() {
    let dir = fixture();
    let patch = json_stdout(&run(
        dir.path(),
        &["--object", "pod.yaml", "--config", "config.yaml", "--show", "patch"],
    ));
    assert!(patch.as_array().unwrap().iter().all(|op| op["op"] == "add"));
    let review = json_stdout(&run(
        dir.path(),
        &["--object", "pod.yaml", "--config", "config.yaml", "--show", "review"],
    ));
    assert_eq!(review["kind"], "AdmissionReview");
    assert_eq!(review["response"]["allowed"], true);
    assert_eq!(review["response"]["patchType"], "JSONPatch");
}

#[test]
fn reads_a_configmap_manifest_and_a_whole_admission_review() {
    let dir = fixture();
    let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "workload-identity-webhook"}, "data": {"config.yaml": CONFIG}});
    std::fs::write(dir.path().join("cm.json"), config_map.to_string()).unwrap();
    let pod: Value = serde_yaml_ng::from_str(POD).unwrap();
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "namespace": "team-a", "operation": "CREATE", "object": pod}});
    std::fs::write(dir.path().join("review.json"), review.to_string()).unwrap();
    let mutated = json_stdout(&run(dir.path(), &["--object", "review.json", "--config", "cm.json"]));
    assert_eq!(mutated["spec"]["volumes"][0]["name"], "gcp-workload-identity");
}

#[test]
fn annotates_a_service_account_from_a_mapping() {
    let dir = fixture();
    std::fs::write(
        dir.path().join("new-sa.yaml"),
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: app}\n",
    )
    .unwrap();
    let sa = json_stdout(&run(
        dir.path(),
        &[
            "--object",
            "new-sa.yaml",
            "--namespace",
            "team-a",
            "--config",
            "config.yaml",
        ],
    ));
    assert_eq!(
        sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"],
        "reader@my-project.iam.gserviceaccount.com"
    );
}

#[test]
fn reports_bad_input_without_panicking() {
    let dir = fixture();
    std::fs::write(
        dir.path().join("bad-config.yaml"),
        "identities: [{aws: {roleArn: nope}}]",
    )
    .unwrap();
    std::fs::write(dir.path().join("not-yaml.yaml"), "{{{").unwrap();
    for (args, message) in [
        (
            vec!["--object", "pod.yaml", "--config", "bad-config.yaml"],
            "identities[0].aws.roleArn",
        ),
        (vec!["--object", "not-yaml.yaml"], "is not YAML or JSON"),
        (vec!["--object", "missing.yaml"], "reading missing.yaml"),
    ] {
        let output = run(dir.path(), &args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn warns_about_a_broken_annotation() {
    let dir = fixture();
    std::fs::write(
        dir.path().join("bad-sa.yaml"),
        "kind: ServiceAccount\nmetadata: {name: app, annotations: {eks.amazonaws.com/role-arn: not-an-arn}}\n",
    )
    .unwrap();
    let output = run(
        dir.path(),
        &["--object", "pod.yaml", "--service-account", "bad-sa.yaml"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("warning: annotation eks.amazonaws.com/role-arn=\"not-an-arn\" is not a valid IAM role ARN"),
        "{stderr}"
    );
    let pod = json_stdout(&output);
    assert!(pod["spec"].get("volumes").is_none());
}

/// Warnings and errors are shown with their control characters escaped: a ServiceAccount's
/// annotation and a file name with terminal escapes (OSC 52, CSI), a bidi override, DEL, a C1
/// CSI and a newline cannot write to the terminal or forge a line.
#[test]
fn warnings_and_errors_show_control_characters_escaped() {
    let dir = fixture();
    std::fs::write(
        dir.path().join("odd-sa.yaml"),
        "kind: ServiceAccount\nmetadata: {name: app, annotations: {eks.amazonaws.com/role-arn: \"\\e]52;c;aGk=\\a\\u202e\\x7f\\x9b31m\\nwarning: none\"}}\n",
    )
    .unwrap();
    let output = run(
        dir.path(),
        &["--object", "pod.yaml", "--service-account", "odd-sa.yaml"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(r#"role-arn="\u{1b}]52;c;aGk=\u{7}\u{202e}\u{7f}\u{9b}31m\nwarning: none" is not"#),
        "{stderr}"
    );
    let output = run(
        dir.path(),
        &[
            "--object",
            "pod.yaml",
            "--config",
            "x\x1b[2K\u{202e}\x7f\u{9b}\nerror: none.yaml",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.starts_with(r"error: reading x\u{1b}[2K\u{202e}\u{7f}\u{9b}\u{a}error: none.yaml: "),
        "{stderr:?}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
}

/// Endpoint overrides (issue 14) from flags, their env vars and the ConfigMap, as users preview
/// them for a local cluster: injected, mapping over cluster, and each one warned about.
#[test]
fn shows_endpoint_overrides_and_warns_about_each() {
    let dir = fixture();
    let emulator = "http://emulator.wiw-system.svc:8080";
    let mapped = format!(
        "{CONFIG}    aws: {{roleArn: \"arn:aws:iam::111122223333:role/app\", endpoint: \"http://localhost:4566\"}}\n"
    );
    std::fs::write(dir.path().join("local.yaml"), mapped).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_workload-identity-webhook"))
        .current_dir(dir.path())
        .args([
            "mutate",
            "--object",
            "pod.yaml",
            "--service-account",
            "sa.json",
            "--config",
            "local.yaml",
            "--aws-sts-endpoint",
            emulator,
        ])
        .args(["--azure-authority-host", "https://emulator.wiw-system.svc:8443"])
        .args(["--gcp-token-url", &format!("{emulator}/v1/token")])
        .args(["--gcp-impersonation-endpoint", emulator])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let pod = json_stdout(&output);
    for container in [&pod["spec"]["containers"][0], &pod["spec"]["initContainers"][0]] {
        let env: std::collections::BTreeMap<&str, &str> = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|env| (env["name"].as_str().unwrap(), env["value"].as_str().unwrap()))
            .collect();
        assert_eq!(env["AWS_ENDPOINT_URL_STS"], emulator);
        assert_eq!(env["AWS_ENDPOINT_URL"], "http://localhost:4566");
        assert_eq!(env["AZURE_AUTHORITY_HOST"], "https://emulator.wiw-system.svc:8443");
    }
    let credentials: Value = serde_json::from_str(
        pod["metadata"]["annotations"]["cloud.google.com/external-credentials-json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(credentials["token_url"], format!("{emulator}/v1/token"));
    assert_eq!(
        credentials["service_account_impersonation_url"],
        format!(
            "{emulator}/v1/projects/-/serviceAccounts/reader@my-project.iam.gserviceaccount.com:generateAccessToken"
        )
    );
    for warning in [
        format!("warning: AWS_ENDPOINT_URL_STS={emulator} (from aws.stsEndpoint)"),
        "warning: AWS_ENDPOINT_URL=http://localhost:4566 (from aws.endpoint of the mapping for team-a/app)".to_owned(),
        "warning: AZURE_AUTHORITY_HOST=https://emulator.wiw-system.svc:8443 (from azure.authorityHost)".to_owned(),
        format!("warning: token_url={emulator}/v1/token (from gcp.tokenUrl)"),
        format!("warning: service_account_impersonation_url={emulator} (from gcp.impersonationEndpoint)"),
    ] {
        assert!(stderr.contains(&warning), "{warning} missing in {stderr}");
    }
}

#[test]
fn refuses_an_endpoint_override_that_would_send_tokens_in_the_clear() {
    let dir = fixture();
    for (flag, field) in [
        ("--aws-sts-endpoint", "aws.stsEndpoint"),
        ("--aws-endpoint", "aws.endpoint"),
        ("--azure-authority-host", "azure.authorityHost"),
        ("--gcp-token-url", "gcp.tokenUrl"),
        ("--gcp-impersonation-endpoint", "gcp.impersonationEndpoint"),
    ] {
        let output = run(
            dir.path(),
            &[
                "--object",
                "pod.yaml",
                "--config",
                "config.yaml",
                flag,
                "http://sts.example.com",
            ],
        );
        assert_eq!(output.status.code(), Some(1), "{flag}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("{field}: \"http://sts.example.com\" is not a valid ")),
            "{flag}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "{flag}");
    }
}

/// kubectl's habits: `-n`, `-o yaml`; the server's `WIW_*` variables in the shell change nothing.
#[test]
fn takes_kubectl_flags_and_no_server_variables() {
    let dir = fixture();
    let output = Command::new(env!("CARGO_BIN_EXE_workload-identity-webhook"))
        .current_dir(dir.path())
        .env("WIW_AWS_REGION", "eu-north-1")
        .env("WIW_AZURE_TENANT_ID", "99999999-2222-3333-4444-555555555555")
        .args(["mutate", "--object", "pod.yaml", "--service-account", "sa.json"])
        .args(["--config", "config.yaml", "-n", "team-a", "-o", "yaml"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.starts_with("apiVersion: v1\n"), "{text}");
    let pod: Value = serde_yaml_ng::from_str(&text).unwrap();
    let env: std::collections::BTreeMap<&str, &str> = pod["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|env| Some((env["name"].as_str()?, env["value"].as_str()?)))
        .collect();
    assert_eq!(env["AWS_REGION"], "us-west-2");
    assert_eq!(env["AZURE_TENANT_ID"], "11111111-2222-3333-4444-555555555555");
    // -n is the namespace the Pod is created in: the mapping of team-a gave Google.
    assert!(env.contains_key("GOOGLE_APPLICATION_CREDENTIALS"), "{env:?}");
    let other = json_stdout(&run(
        dir.path(),
        &["--object", "pod.yaml", "--config", "config.yaml", "-n", "team-b"],
    ));
    assert!(other["spec"].get("volumes").is_none(), "{other}");
}

#[test]
fn the_output_flag_before_show_still_works_with_a_warning() {
    let dir = fixture();
    let output = run(
        dir.path(),
        &["--object", "pod.yaml", "--config", "config.yaml", "--output", "patch"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        stderr.contains("warning: --output patch is deprecated: write --show patch"),
        "{stderr}"
    );
    assert!(
        json_stdout(&output)
            .as_array()
            .unwrap()
            .iter()
            .all(|op| op["op"] == "add")
    );
}

#[test]
fn refuses_a_manifest_of_the_wrong_kind() {
    let dir = fixture();
    for (args, message) in [
        (
            vec!["--object", "pod.yaml", "--service-account", "pod.yaml"],
            "error: pod.yaml is a Pod, not a ServiceAccount\n",
        ),
        (
            vec!["--object", "pod.yaml", "--config", "pod.yaml"],
            "error: pod.yaml is a Pod, not a config.yaml or a ConfigMap\n",
        ),
    ] {
        let output = run(dir.path(), &args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&output.stderr), message, "{args:?}");
        assert!(output.stdout.is_empty());
    }
    std::fs::write(dir.path().join("cm.yaml"), "kind: ConfigMap\nmetadata: {name: x}\n").unwrap();
    let output = run(dir.path(), &["--object", "cm.yaml"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("cm.yaml is a ConfigMap, not a Pod or ServiceAccount or AdmissionReview"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `mutate ... | head -1`: the reader goes away; the command ends quietly with status 0.
#[test]
fn a_closed_pipe_ends_quietly() {
    let dir = fixture();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = Command::new(env!("CARGO_BIN_EXE_workload-identity-webhook"))
        .current_dir(dir.path())
        .args(["mutate", "--object", "pod.yaml", "--config", "config.yaml"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stderr.is_empty(), "{}", String::from_utf8_lossy(&output.stderr));
}
