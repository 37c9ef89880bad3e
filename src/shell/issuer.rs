//! The cluster's service-account issuer, read from its OIDC discovery document
//! (`/.well-known/openid-configuration`: every ServiceAccount may read it through the default
//! ClusterRoleBinding `system:service-account-issuer-discovery`). On EKS the issuer's host names
//! the cluster's region (`oidc.eks.<region>.amazonaws.com`), which becomes the default AWS region
//! where none is configured.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kube::Client;
use serde_json::Value;
use workload_identity_core::providers::aws::formats::eks_issuer_region;

use crate::shell::metrics::Metrics;
use crate::shell::watch::LiveConfig;

/// The discovery document's path on the API server.
const DISCOVERY: &str = "/.well-known/openid-configuration";

/// Reads the issuer at start and every `interval`; when it changes, logs the region it names (or
/// that it names none), exposes it as a metric and hands it to the configuration. Never ends: a
/// failed read is logged and tried again.
pub async fn watch(config: Arc<LiveConfig>, client: Client, metrics: Arc<Metrics>, interval: Duration) {
    let mut known: Option<String> = None;
    loop {
        match issuer(&client).await {
            Ok(issuer) if known.as_deref() != Some(issuer.as_str()) => {
                let region = eks_issuer_region(&issuer);
                match &region {
                    Some(region) => tracing::info!(
                        region,
                        issuer,
                        "AWS region detected from the cluster's service-account issuer: the default where aws.region is not set"
                    ),
                    None => tracing::info!(issuer, "the cluster's service-account issuer names no AWS region"),
                }
                metrics.set_detected_region(region.as_deref(), &issuer);
                config.set_detected_region(region);
                known = Some(issuer);
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(
                error = format!("{err:#}"),
                "cannot read the cluster's OIDC discovery document {DISCOVERY}; retrying"
            ),
        }
        tokio::time::sleep(interval).await;
    }
}

/// The `issuer` of the API server's discovery document.
async fn issuer(client: &Client) -> anyhow::Result<String> {
    let request = axum::http::Request::get(DISCOVERY).body(Vec::new())?;
    let document: Value = client.request(request).await?;
    document
        .get("issuer")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .context("the discovery document has no issuer")
}
