//! The Go command-line tools of the chart and monitoring tests (helm, promtool), built once per
//! machine by tests/tools/build.sh into a cache outside the clone.

// Each test binary includes this module and uses a different part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The path of `name` (helm or promtool); runs build.sh once per process (unless
/// WIW_TOOLS_BIN_DIR names a folder holding both) and panics if it fails.
pub fn tool(name: &str) -> PathBuf {
    static BIN_DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = BIN_DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("WIW_TOOLS_BIN_DIR") {
            return PathBuf::from(dir);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/build.sh");
        eprintln!("tools: running {} (the first build takes minutes)", script.display());
        let output = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("bash runs tests/tools/build.sh");
        assert!(
            output.status.success(),
            "{} failed with {}",
            script.display(),
            output.status
        );
        let stdout = String::from_utf8(output.stdout).unwrap();
        PathBuf::from(stdout.lines().last().expect("build.sh prints its bin directory").trim())
    });
    let path = dir.join(name);
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// Runs `tool` with `args` in the repository root; returns (success, stdout, stdout + stderr).
pub fn run(tool_path: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(tool_path)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", tool_path.display()));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let text = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    (output.status.success(), stdout, text)
}
