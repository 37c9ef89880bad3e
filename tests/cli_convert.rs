//! `convert aws-configmap`: the AWS webhook's ConfigMap in, our `config.yaml` out, and that file
//! taken by `mutate` (the server's parse and validation) to give the role, token audience, token
//! lifetime and regional STS setting of each entry.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_workload-identity-webhook");

/// As the AWS webhook's README shows it: an entry with a role only, and one with every field.
const AWS_CONFIG_MAP: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: pod-identity-webhook
  namespace: kube-system
data:
  config: |
    {"team-a/s3-reader": {"RoleARN": "arn:aws:iam::111122223333:role/s3-reader"},
     "*/batch": {"RoleARN": "arn:aws:iam::111122223333:role/batch", "Audience": "amazonaws.com",
                 "UseRegionalSTS": true, "TokenExpiration": 20000}}
"#;

const POD: &str = "
apiVersion: v1
kind: Pod
metadata: {name: app, namespace: team-a}
spec:
  serviceAccountName: s3-reader
  containers: [{name: app, image: busybox}]
";

fn convert(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .current_dir(dir)
        .args(["convert", "aws-configmap"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn env_of(pod: &Value) -> Vec<(String, String)> {
    pod["spec"]["containers"][0]["env"]
        .as_array()
        .map(|env| {
            env.iter()
                .map(|var| {
                    (
                        var["name"].as_str().unwrap().into(),
                        var["value"].as_str().unwrap().into(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_converted_file_drives_mutate() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("aws-cm.yaml"), AWS_CONFIG_MAP).unwrap();
    std::fs::write(dir.path().join("pod.yaml"), POD).unwrap();

    let from_file = convert(dir.path(), &["aws-cm.yaml"], None);
    assert!(
        from_file.status.success(),
        "{}",
        String::from_utf8_lossy(&from_file.stderr)
    );
    let from_stdin = convert(dir.path(), &[], Some(AWS_CONFIG_MAP));
    assert!(
        from_stdin.status.success(),
        "{}",
        String::from_utf8_lossy(&from_stdin.stderr)
    );
    assert_eq!(from_file.stdout, from_stdin.stdout);
    // Every field has a place in our mappings: nothing to warn about.
    assert!(
        from_file.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&from_file.stderr)
    );
    std::fs::write(dir.path().join("config.yaml"), &from_file.stdout).unwrap();

    // The cluster flags the AWS webhook would have run with: an entry's own values win over them.
    let mutate = |pod: &str| -> Injected {
        std::fs::write(dir.path().join("pod.yaml"), pod).unwrap();
        let output = Command::new(BIN)
            .current_dir(dir.path())
            .args(["mutate", "--object", "pod.yaml", "--config", "config.yaml"])
            .args(["--aws-sts-regional-endpoints", "--aws-token-expiration", "7200"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        injected(&serde_json::from_slice(&output.stdout).unwrap())
    };
    let s3_reader = mutate(POD);
    assert_eq!(
        s3_reader.role.as_deref(),
        Some("arn:aws:iam::111122223333:role/s3-reader")
    );
    // No Audience or TokenExpiration: the defaults (a lifetime flag applies, as on theirs); no
    // UseRegionalSTS: false, as theirs gives a ConfigMap entry whatever its flag says.
    assert_eq!(s3_reader.token, Some(("sts.amazonaws.com".into(), 7200)));
    assert_eq!(s3_reader.regional, None);

    let batch = mutate(&POD.replace("team-a", "jobs").replace("s3-reader", "batch"));
    assert_eq!(batch.role.as_deref(), Some("arn:aws:iam::111122223333:role/batch"));
    assert_eq!(batch.token, Some(("amazonaws.com".into(), 20000)));
    assert_eq!(batch.regional.as_deref(), Some("regional"));

    let unmapped = mutate(&POD.replace("s3-reader", "other"));
    assert_eq!(unmapped.role, None);
}

/// What IRSA gave a mutated Pod: role, token (audience, lifetime) and AWS_STS_REGIONAL_ENDPOINTS.
struct Injected {
    role: Option<String>,
    token: Option<(String, i64)>,
    regional: Option<String>,
}

fn injected(pod: &Value) -> Injected {
    let env = env_of(pod);
    let var = |wanted: &str| {
        env.iter()
            .find(|(name, _)| name == wanted)
            .map(|(_, value)| value.clone())
    };
    let token = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|volume| volume["name"] == "aws-iam-token")
        .map(|volume| {
            let token = &volume["projected"]["sources"][0]["serviceAccountToken"];
            (
                token["audience"].as_str().unwrap().to_owned(),
                token["expirationSeconds"].as_i64().unwrap(),
            )
        });
    Injected {
        role: var("AWS_ROLE_ARN"),
        token,
        regional: var("AWS_STS_REGIONAL_ENDPOINTS"),
    }
}

#[test]
fn bad_input_is_an_error_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    for (args, stdin, message) in [
        (&["missing.yaml"][..], None, "reading missing.yaml"),
        (
            &[][..],
            Some("{\"no-slash\": {}}"),
            "key \"no-slash\" is not \"namespace/serviceAccount\"",
        ),
        (
            &[][..],
            Some("kind: ConfigMap\nmetadata: {name: pod-identity-webhook}"),
            "has no data.config",
        ),
        (
            &[][..],
            Some("{\"a/b\": {\"RoleARN\": 1}}"),
            "RoleARN is 1, not a string",
        ),
    ] {
        let output = convert(dir.path(), args, stdin);
        assert_eq!(output.status.code(), Some(1), "{args:?} {stdin:?}");
        assert!(output.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.starts_with("error: ") && stderr.contains(message), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
