//! `workload-identity-webhook version`, `--version` and `version -o json`: what build this is.
//! A build without WIW_BUILD_REVISION and WIW_BUILD_DATE (this test's, as a source tarball's)
//! says `unknown`; the release's binaries carry the commit and its date (tests/release.rs).

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

fn run(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_workload-identity-webhook"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Whether this test build was given build information (scripts/release.sh sets it; cargo test does not).
fn built_without_revision() -> bool {
    std::env::var_os("WIW_BUILD_REVISION").is_none() && std::env::var_os("WIW_BUILD_DATE").is_none()
}

#[test]
fn version_as_json_for_scripts() {
    let json: Value = serde_json::from_str(&run(&["version", "-o", "json"])).unwrap();
    let fields: BTreeSet<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        fields,
        BTreeSet::from(["version", "revision", "buildDate", "rustc", "target"])
    );
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    assert!(json["rustc"].as_str().unwrap().starts_with("rustc 1."), "{json}");
    let target = json["target"].as_str().unwrap();
    assert!(
        target.starts_with(std::env::consts::ARCH) && target.contains(std::env::consts::OS),
        "{json}"
    );
    if built_without_revision() {
        assert_eq!(json["revision"], "unknown");
        assert_eq!(json["buildDate"], "unknown");
    }
}

#[test]
fn version_and_dash_dash_version_print_the_same_fields() {
    let text = run(&["version"]);
    assert_eq!(run(&["--version"]), text);
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(concat!("workload-identity-webhook ", env!("CARGO_PKG_VERSION")))
    );
    let labels: Vec<&str> = lines.map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(labels, ["revision", "build date", "rustc", "target"]);
    if built_without_revision() {
        assert!(text.contains("\nrevision:   unknown\nbuild date: unknown\n"), "{text}");
    }
    // -V stays one line.
    assert_eq!(
        run(&["-V"]),
        concat!("workload-identity-webhook ", env!("CARGO_PKG_VERSION"), "\n")
    );
}

#[test]
fn an_unknown_output_format_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_workload-identity-webhook"))
        .args(["version", "-o", "yaml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid value 'yaml'"));
}
