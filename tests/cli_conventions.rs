//! The conventions every subcommand follows (docs/reference.md#exit-status): grouped help with
//! value names that say what they are, switches, allowed values listed, completions, exit
//! status 0 / 1 / 2, and each cause of an error printed once.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_workload-identity-webhook"))
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn serve_help_is_grouped_and_names_values() {
    let help = stdout(&run(&["serve", "--help"]));
    let headings: Vec<&str> = help
        .lines()
        .filter(|line| line.ends_with(':') && !line.starts_with(' '))
        .collect();
    assert_eq!(
        headings,
        [
            "Options:",
            "Listen/TLS:",
            "Certificate:",
            "Configuration:",
            "Limits:",
            "Shutdown:",
            "Logging:",
            "AWS:",
            "Azure:",
            "Google:"
        ],
        "{help}"
    );
    for line in [
        "--aws-region <REGION>",
        "--aws-token-expiration <SECONDS>",
        "--reload-interval <DURATION>",
        "--aws-sts-regional-endpoints",
        "--no-aws-sts-regional-endpoints",
        "--azure-cloud <CLOUD>",
        "[possible values: AzurePublicCloud, AzureChinaCloud, AzureUSGovernmentCloud]",
        "- federation: Outside GKE",
        "- gke:",
        "[env: WIW_LOG_LEVEL=]",
        "[env: POD_NAMESPACE=]",
    ] {
        assert!(help.contains(line), "{line} missing in\n{help}");
    }
    assert!(!help.contains("<AWS_REGION>"), "{help}");
    assert!(!help.contains("benchmark"), "{help}");
    assert!(!help.contains("RUST_LOG="), "{help}");
}

#[test]
fn client_commands_show_no_environment_variables() {
    for command in ["mutate", "explain", "convert"] {
        let help = stdout(&run(&[command, "--help"]));
        assert!(!help.contains("[env:"), "{command}:\n{help}");
    }
}

#[test]
fn usage_errors_exit_2_naming_what_is_allowed() {
    for (args, message) in [
        (
            vec!["serve", "--log-level", "verbose"],
            "\"verbose\" is not a level (trace, debug, info, warn, error, off)",
        ),
        (
            vec!["serve", "--gcp-mode", "gkee"],
            "[possible values: federation, gke]",
        ),
        (
            vec!["serve", "--reload-interval", "1d"],
            "a duration such as 500ms, 5s, 2m or 1h",
        ),
        // A switch takes no separate value; the form with `=` is still accepted (cli.rs unit tests).
        (
            vec!["mutate", "--object", "p", "--azure-require-pod-label", "true"],
            "unexpected argument 'true'",
        ),
        // `1h` is accepted: the error is the next flag's.
        (
            vec!["serve", "--reload-interval", "1h", "--log-level", "loud"],
            "\"loud\" is not a level",
        ),
        (vec!["completion", "tcsh"], "invalid value 'tcsh'"),
    ] {
        let output = run(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(message), "{args:?}: {}", stderr(&output));
    }
}

#[test]
fn an_error_exits_1_with_each_cause_once() {
    let output = run(&["explain", "pod", "web", "--kubeconfig", "/nonexistent/kubeconfig"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert_eq!(text.matches("No such file or directory").count(), 1, "{text}");
    assert!(text.len() < 200, "{text}");
}

#[test]
fn completion_scripts_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _workload__identity__webhook"),
        ("zsh", "#compdef workload-identity-webhook"),
        ("fish", "complete -c workload-identity-webhook"),
    ] {
        let script = stdout(&run(&["completion", shell]));
        assert!(script.contains(marker), "{shell}: {marker} missing");
        assert!(script.contains("no-aws-sts-regional-endpoints"), "{shell}");
    }
}

/// `source <(workload-identity-webhook completion bash)`, then TAB after a subcommand's flag.
#[test]
fn bash_completes_a_subcommands_flags() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("completion.bash");
    std::fs::write(&script, stdout(&run(&["completion", "bash"]))).unwrap();
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(workload-identity-webhook mutate --no-aws); COMP_CWORD=2; \
             _workload__identity__webhook workload-identity-webhook --no-aws mutate; echo \"${{COMPREPLY[*]}}\"",
            script.display()
        ))
        .output()
        .unwrap();
    assert_eq!(stdout(&output).trim(), "--no-aws-sts-regional-endpoints");
}
