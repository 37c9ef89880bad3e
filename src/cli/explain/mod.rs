//! `explain`: why a Pod has (or lacks) its cloud identity, which running Pods are stale, and
//! whether the webhook is installed so that the API server can call it. Reads the cluster with
//! the user's kubeconfig (get and list only, never a write): the reads are in [`cluster`], the
//! reasoning in [`analysis`], the certificate checks in [`certificate`]; this module runs them and
//! renders the report.

pub mod analysis;
pub mod certificate;
mod cluster;

use std::fmt::Write as _;

use crate::cli::{ExplainArgs, ExplainOutput, ExplainTarget};
use analysis::PodReport;
use anyhow::Context;
use cluster::{Cluster, Installation};
use kube::Client;
use serde::Serialize;

/// What `explain` prints, as JSON with `-o json`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The installation checks.
    pub checks: Vec<Check>,
    /// `explain pod`: the one Pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodReport>,
    /// `explain namespace` / `--all-namespaces`: stale Pods grouped by what owns them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale: Option<Vec<Workload>>,
    /// `explain namespace` / `--all-namespaces`: running Pods looked at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pods_checked: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: String,
    /// `ok`, `warning` or `error`.
    pub status: &'static str,
    pub detail: String,
}

/// Stale Pods of one owner (Deployment, StatefulSet, DaemonSet, or the Pod itself).
#[derive(Debug, Serialize)]
pub struct Workload {
    pub namespace: String,
    /// `kind/name`, as kubectl spells it (`deployment/web`, `pod/debug`).
    pub owner: String,
    /// The command that re-creates its Pods.
    pub fix: String,
    pub pods: Vec<String>,
    /// The differences of its first Pod.
    pub differences: Vec<String>,
    pub reasons: Vec<String>,
}

fn check(name: &str, status: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name: name.to_owned(),
        status,
        detail: detail.into(),
    }
}

/// Runs `explain` and returns the text to print.
pub async fn run(args: &ExplainArgs) -> anyhow::Result<String> {
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API with your kubeconfig")?;
    let installation = Installation::read(&client, args).await?;
    let mut report = Report {
        checks: installation.checks(&client, args).await,
        pod: None,
        stale: None,
        pods_checked: None,
    };
    let mut cluster = Cluster::new(client, &installation);
    match (&args.target, args.all_namespaces) {
        (Some(ExplainTarget::Pod), _) => {
            let name = args.name.as_deref().context("explain pod needs a Pod name")?;
            let namespace = args.namespace.as_deref().unwrap_or("default");
            let pod = cluster.pod(namespace, name).await?;
            report.pod = Some(cluster.explain(&pod).await?);
        }
        (Some(ExplainTarget::Namespace), false) | (None, false) => {
            let namespace = args
                .name
                .as_deref()
                .or(args.namespace.as_deref())
                .context("name a namespace (explain namespace NAME), a Pod (explain pod NAME -n NAMESPACE) or use --all-namespaces")?;
            cluster.stale(Some(namespace), &mut report).await?;
        }
        (_, true) => cluster.stale(None, &mut report).await?,
    }
    Ok(match args.output {
        ExplainOutput::Json => serde_json::to_string_pretty(&report)?,
        ExplainOutput::Table => table(&report),
    })
}

/// The report as text for people.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "INSTALLATION");
    for check in &report.checks {
        let _ = writeln!(
            out,
            "  {:<8} {:<48} {}",
            check.status.to_uppercase(),
            check.name,
            check.detail
        );
    }
    if let Some(pod) = &report.pod {
        let _ = writeln!(
            out,
            "\nPOD {}/{} (ServiceAccount {})",
            pod.namespace, pod.name, pod.service_account
        );
        let _ = writeln!(out, "  has:\n{}", identity_text(&pod.has));
        let _ = writeln!(out, "  would get now:\n{}", identity_text(&pod.would_get));
        if pod.stale {
            let _ = writeln!(out, "  STALE, differences:");
            for difference in &pod.differences {
                let _ = writeln!(out, "    - {difference}");
            }
        } else {
            let _ = writeln!(out, "  up to date: the Pod has what the webhook would give it now");
        }
        let _ = writeln!(out, "  why:");
        for reason in &pod.reasons {
            let _ = writeln!(out, "    - {reason}");
        }
        for warning in &pod.warnings {
            let _ = writeln!(out, "    - webhook warning: {warning}");
        }
    }
    if let Some(stale) = &report.stale {
        let checked = report.pods_checked.unwrap_or_default();
        if stale.is_empty() {
            let _ = writeln!(out, "\nNo stale Pods among {checked} running Pods.");
        } else {
            let pods: usize = stale.iter().map(|workload| workload.pods.len()).sum();
            let _ = writeln!(out, "\nSTALE PODS ({pods} of {checked} running Pods)");
            let _ = writeln!(out, "  {:<20} {:<40} {:>4}  FIX", "NAMESPACE", "OWNER", "PODS");
            for workload in stale {
                let _ = writeln!(
                    out,
                    "  {:<20} {:<40} {:>4}  {}",
                    workload.namespace,
                    workload.owner,
                    workload.pods.len(),
                    workload.fix
                );
                for difference in &workload.differences {
                    let _ = writeln!(out, "      - {difference}");
                }
            }
        }
    }
    out
}

fn identity_text(identity: &analysis::Identity) -> String {
    let mut out = String::new();
    if identity.volumes.is_empty() && identity.containers.is_empty() {
        return "    (no cloud identity)".to_owned();
    }
    for (name, volume) in &identity.volumes {
        let _ = writeln!(out, "    volume {name}: token audience {}", volume.audiences.join(", "));
    }
    for (name, container) in &identity.containers {
        let _ = writeln!(out, "    container {name}:");
        for (volume, path) in &container.mounts {
            let _ = writeln!(out, "      mount {volume} at {path}");
        }
        for (key, value) in &container.env {
            let _ = writeln!(out, "      {key}={value}");
        }
    }
    out.trim_end().to_owned()
}
