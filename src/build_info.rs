//! What this binary is: its version, the commit and date it was built from, the compiler and the
//! target. build.rs sets them at build time (the release passes the commit and its date), never git
//! at run time; a build without them (a source tarball) says `unknown`. Shown by
//! `workload-identity-webhook version` / `--version` and the metric
//! `workload_identity_webhook_build_info{version,revision,rustc,target}`.

use serde::Serialize;

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BuildInfo {
    pub version: &'static str,
    pub revision: &'static str,
    pub build_date: &'static str,
    pub rustc: &'static str,
    pub target: &'static str,
}

pub const BUILD: BuildInfo = BuildInfo {
    version: env!("CARGO_PKG_VERSION"),
    revision: env!("WIW_BUILD_REVISION"),
    build_date: env!("WIW_BUILD_DATE"),
    rustc: env!("WIW_BUILD_RUSTC"),
    target: env!("WIW_BUILD_TARGET"),
};

/// `--version` (after the program name) and `version`: the version, then one field per line.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\nrevision:   ",
    env!("WIW_BUILD_REVISION"),
    "\nbuild date: ",
    env!("WIW_BUILD_DATE"),
    "\nrustc:      ",
    env!("WIW_BUILD_RUSTC"),
    "\ntarget:     ",
    env!("WIW_BUILD_TARGET"),
);
