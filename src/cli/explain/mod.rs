//! `explain`: why a Pod has (or lacks) its cloud identity, which running Pods are stale, and
//! whether the webhook is installed so that the API server can call it. Reads the cluster with
//! the user's kubeconfig (get and list only, never a write): the reads are in [`cluster`], the
//! reasoning in [`analysis`], the certificate checks in [`certificate`]; this module runs them and
//! renders the report.

pub mod analysis;
pub mod certificate;
mod cluster;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::cli::{ExplainArgs, ExplainOutput, ExplainTarget};
use analysis::PodReport;
use anyhow::Context;
use cluster::{Cluster, Installation};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Serialize;
use workload_identity_core::echo::visible;

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
    /// `explain namespace` / `--all-namespaces`: Pods looked at (all but Succeeded, Failed and
    /// terminating ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pods_checked: Option<usize>,
    /// Those Pods by phase, as kubectl names them (`Pending`, `Running`, `Unknown`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phases: Option<BTreeMap<String, usize>>,
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
    /// A Pod of it lacks (part of) the identity the webhook would give it now.
    pub lacks_identity: bool,
}

fn check(name: &str, status: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name: name.to_owned(),
        status,
        detail: detail.into(),
    }
}

/// What `explain` prints, and whether it found a failure (exit status 1).
pub struct Outcome {
    pub text: String,
    /// An installation check failed, or a Pod explained lacks the identity it would get now.
    pub failed: bool,
}

/// A client from the kubeconfig (`--kubeconfig`, `--context`, as kubectl reads them), and the
/// context's namespace.
async fn connect(args: &ExplainArgs) -> anyhow::Result<(Client, String)> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|err| anyhow::anyhow!("reading --kubeconfig {}: {err}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|err| anyhow::anyhow!("--kubeconfig {}: {err}", path.display()))?
        }
        None if args.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|err| anyhow::anyhow!("--context: {err}"))?,
        None => kube::Config::infer().await.map_err(|err| {
            anyhow::anyhow!("no kubeconfig ($KUBECONFIG, ~/.kube/config or --kubeconfig) and not in a cluster: {err}")
        })?,
    };
    let namespace = config.default_namespace.clone();
    let client = Client::try_from(config).context("connecting to the Kubernetes API")?;
    Ok((client, namespace))
}

/// Runs `explain` and returns the text to print.
pub async fn run(args: &ExplainArgs) -> anyhow::Result<Outcome> {
    let (client, context_namespace) = connect(args).await?;
    let namespace = args.namespace.clone().unwrap_or(context_namespace);
    let installation = Installation::read(&client, args).await?;
    let mut report = Report {
        checks: installation.checks(&client, args).await,
        pod: None,
        stale: None,
        pods_checked: None,
        phases: None,
    };
    // An installation error that keeps the API server from calling the webhook: re-created Pods
    // would get no identity either, so it is fixed first.
    let blocker = report
        .checks
        .iter()
        .find(|check| check.status == "error" && check.name != "configuration")
        .map(|check| format!("{}: {}", check.name, check.detail));
    let mut cluster = Cluster::new(client, &installation, blocker);
    match (&args.target, args.all_namespaces) {
        (Some(ExplainTarget::Pod), _) => {
            let name = args.name.as_deref().context("explain pod needs a Pod name")?;
            let pod = cluster.pod(&namespace, name).await?;
            report.pod = Some(cluster.explain(&pod).await?);
        }
        (Some(ExplainTarget::Namespace), false) | (None, false) => {
            let namespace = args.name.as_deref().unwrap_or(&namespace);
            cluster.stale(Some(namespace), &mut report).await?;
        }
        (_, true) => cluster.stale(None, &mut report).await?,
    }
    let failed = report.checks.iter().any(|check| check.status == "error")
        || report.pod.as_ref().is_some_and(|pod| pod.lacks_identity)
        || report.stale.iter().flatten().any(|workload| workload.lacks_identity);
    let text = match args.output {
        ExplainOutput::Json => serde_json::to_string_pretty(&report)?,
        ExplainOutput::Yaml => serde_yaml_ng::to_string(&report)?,
        ExplainOutput::Table => table(&report, Some(WIDTH)),
        ExplainOutput::Wide => table(&report, None),
    };
    Ok(Outcome { text, failed })
}

/// The width of the table: a terminal's default.
const WIDTH: usize = 80;

/// `text` after `prefix`, wrapped at word boundaries to `width` (if any), continued lines
/// indented by `indent` spaces; a word longer than a line (a path) is cut. Control characters
/// (a tenant's env value or annotation) are shown escaped, a newline too.
fn line(out: &mut String, prefix: &str, indent: usize, text: &str, width: Option<usize>) {
    let (prefix, text) = (visible(prefix), visible(text));
    let Some(width) = width else {
        let _ = writeln!(out, "{prefix}{text}");
        return;
    };
    let mut current = prefix.into_owned();
    let mut empty = true;
    for word in text.split(' ') {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let length = current.chars().count();
            let space = usize::from(!empty);
            if length + space + word.len() <= width {
                current.extend(std::iter::repeat_n(' ', space).chain(word));
                empty = false;
                break;
            }
            if empty {
                // Cut the word at the end of this line.
                let fits = width.saturating_sub(length + space).max(1);
                let rest = word.split_off(fits.min(word.len()));
                current.extend(std::iter::repeat_n(' ', space).chain(word));
                word = rest;
            }
            let _ = writeln!(out, "{current}");
            current = " ".repeat(indent);
            empty = true;
            if word.is_empty() {
                break;
            }
        }
    }
    let _ = writeln!(out, "{current}");
}

/// The report as text for people: wrapped to `width` columns, or one line per row (`wide`).
pub fn table(report: &Report, width: Option<usize>) -> String {
    let mut out = String::new();
    installation_text(&mut out, &report.checks, width);
    if let Some(pod) = &report.pod {
        pod_text(&mut out, pod, width);
    }
    if let Some(stale) = &report.stale {
        stale_pods_text(&mut out, report, stale, width);
    }
    out
}

/// The INSTALLATION section: one status line per check.
fn installation_text(out: &mut String, checks: &[Check], width: Option<usize>) {
    let _ = writeln!(out, "INSTALLATION");
    for check in checks {
        let status = check.status.to_uppercase();
        match width {
            Some(_) => {
                let _ = writeln!(out, "  {status:<8} {}", visible(&check.name));
                line(out, "           ", 11, &check.detail, width);
            }
            None => {
                let name = visible(&check.name);
                let _ = writeln!(out, "  {status:<8} {name:<48} {}", visible(&check.detail));
            }
        }
    }
}

/// The POD section: what the Pod has, what it would get now, and why.
fn pod_text(out: &mut String, pod: &PodReport, width: Option<usize>) {
    let title = format!(
        "POD {}/{} (ServiceAccount {})",
        pod.namespace, pod.name, pod.service_account
    );
    let _ = writeln!(out);
    line(out, "", 2, &title, width);
    let _ = writeln!(out, "  has:");
    identity_text(out, &pod.has, width);
    let _ = writeln!(out, "  would get now:");
    identity_text(out, &pod.would_get, width);
    if pod.stale {
        let _ = writeln!(out, "  STALE, differences:");
        for difference in &pod.differences {
            line(out, "    - ", 6, difference, width);
        }
    } else {
        let _ = writeln!(out, "  up to date: the Pod has what the webhook would give it now");
    }
    let _ = writeln!(out, "  why:");
    for reason in &pod.reasons {
        line(out, "    - ", 6, reason, width);
    }
    for warning in &pod.warnings {
        line(out, "    - webhook warning: ", 6, warning, width);
    }
}

/// The STALE PODS section: how many Pods were checked, and the stale ones by workload.
fn stale_pods_text(out: &mut String, report: &Report, stale: &[Workload], width: Option<usize>) {
    let checked = report.pods_checked.unwrap_or_default();
    let phases = report
        .phases
        .iter()
        .flatten()
        .map(|(phase, count)| format!("{count} {phase}"))
        .collect::<Vec<_>>()
        .join(", ");
    let among = format!("{checked} Pods ({phases})");
    if stale.is_empty() {
        let _ = writeln!(out);
        line(out, "", 0, &format!("No stale Pods among {among}."), width);
        return;
    }
    let pods: usize = stale.iter().map(|workload| workload.pods.len()).sum();
    let _ = writeln!(out, "\nSTALE PODS ({pods} of {among})");
    if report.checks.iter().any(|check| check.status == "error") {
        line(
            out,
            "  ",
            2,
            "Fix the INSTALLATION errors above first: Pods re-created before that get no identity either.",
            width,
        );
    }
    match width {
        Some(_) => stale_workloads_wrapped(out, stale, width),
        None => stale_workloads_wide(out, stale),
    }
}

/// Stale workloads as wrapped paragraphs: title, fix, differences.
fn stale_workloads_wrapped(out: &mut String, stale: &[Workload], width: Option<usize>) {
    for workload in stale {
        let title = format!(
            "{} -n {} ({} Pods)",
            workload.owner,
            workload.namespace,
            workload.pods.len()
        );
        line(out, "  ", 4, &title, width);
        line(out, "    fix: ", 6, &workload.fix, width);
        for difference in &workload.differences {
            line(out, "    - ", 6, difference, width);
        }
    }
}

/// Stale workloads as a table, one row per workload, differences below it.
fn stale_workloads_wide(out: &mut String, stale: &[Workload]) {
    let _ = writeln!(out, "  {:<20} {:<40} {:>4}  FIX", "NAMESPACE", "OWNER", "PODS");
    for workload in stale {
        let _ = writeln!(
            out,
            "  {:<20} {:<40} {:>4}  {}",
            visible(&workload.namespace),
            visible(&workload.owner),
            workload.pods.len(),
            visible(&workload.fix)
        );
        for difference in &workload.differences {
            let _ = writeln!(out, "      - {}", visible(difference));
        }
    }
}

fn identity_text(out: &mut String, identity: &analysis::Identity, width: Option<usize>) {
    if identity.volumes.is_empty() && identity.containers.is_empty() {
        let _ = writeln!(out, "    (no cloud identity)");
        return;
    }
    for (name, volume) in &identity.volumes {
        let text = format!("token audience {}", volume.audiences.join(", "));
        line(out, &format!("    volume {name}: "), 6, &text, width);
    }
    for (name, container) in &identity.containers {
        let _ = writeln!(out, "    container {}:", visible(name));
        for (volume, path) in &container.mounts {
            line(out, "      ", 8, &format!("mount {volume} at {path}"), width);
        }
        for (key, value) in &container.env {
            line(out, "      ", 8, &format!("{key}={value}"), width);
        }
    }
}
