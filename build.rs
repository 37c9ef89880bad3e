//! Build information for `workload-identity-webhook version` and the metric
//! `workload_identity_webhook_build_info` (src/build_info.rs). The release sets the commit and its
//! date (scripts/release.sh: WIW_BUILD_REVISION, WIW_BUILD_DATE); any other build, a source
//! tarball's included, says `unknown`. Nothing here runs git: a build outside a clone works the same.

use std::process::Command;

fn main() {
    for var in ["WIW_BUILD_REVISION", "WIW_BUILD_DATE"] {
        println!("cargo:rerun-if-env-changed={var}");
        let value = std::env::var(var).ok().filter(|v| !v.trim().is_empty());
        println!(
            "cargo:rustc-env={var}={}",
            value.as_deref().map_or("unknown", str::trim)
        );
    }
    // The compiler and target of this build (Cargo gives build scripts both).
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown".to_owned(), |v| v.trim().to_owned());
    println!("cargo:rustc-env=WIW_BUILD_RUSTC={version}");
    println!(
        "cargo:rustc-env=WIW_BUILD_TARGET={}",
        std::env::var("TARGET").unwrap_or_else(|_| "unknown".into())
    );
}
