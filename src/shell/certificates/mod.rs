//! A serving certificate the webhook manages itself, for clusters without cert-manager.
//!
//! The CA and the serving certificate live in one Secret in the webhook's namespace. Every replica
//! reconciles it on a timer: the first to see it missing or due for renewal writes it (create, or
//! update at the resourceVersion it read, so concurrent writers conflict and exactly one wins), and
//! every replica loads whatever the Secret holds into its TLS resolver, with no restart. The CA
//! bundle of the MutatingWebhookConfiguration is kept in step. A new CA is published next to the
//! old one first and only used for serving certificates after a grace period, so the apiserver
//! trusts both the old and the new certificate throughout a rotation.
//!
//! The decision of what to renew is a pure function of the stored PEMs and the time ([`plan`]);
//! the certificates are made by [`ca`]; this module is the reconcile loop against the API.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

pub mod ca;
pub mod plan;

use plan::{Renewal, Stored, renew, renewal};

use crate::shell::metrics::Metrics;
use crate::shell::tls::{ReloadingCertificate, certified_key};

/// Keeps the Secret, the TLS resolver and the webhook configuration's CA bundle in step.
pub struct ManagedCertificate {
    secrets: Api<Secret>,
    webhook_configurations: Api<MutatingWebhookConfiguration>,
    secret_name: String,
    webhook_configuration: String,
    names: Vec<String>,
    target: Arc<ReloadingCertificate>,
    metrics: Arc<Metrics>,
    /// The certificate PEM last put into `target`.
    loaded: std::sync::Mutex<String>,
}

impl ManagedCertificate {
    pub fn new(
        client: Client,
        namespace: &str,
        secret_name: String,
        webhook_configuration: String,
        names: Vec<String>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        Ok(ManagedCertificate {
            secrets: Api::namespaced(client.clone(), namespace),
            webhook_configurations: Api::all(client),
            secret_name,
            webhook_configuration,
            names,
            // Replaced by the Secret's certificate before the server starts.
            target: ReloadingCertificate::new(crate::shell::certificates::ca::self_signed()?, &metrics),
            metrics,
            loaded: std::sync::Mutex::new(String::new()),
        })
    }

    /// The certificate the server hands out, kept in step with the Secret.
    pub fn current(&self) -> Arc<ReloadingCertificate> {
        self.target.clone()
    }

    /// Reconciles until a certificate is in place (the server cannot start without one).
    pub async fn first_reconcile(&self) -> Stored {
        loop {
            match self.reconcile().await {
                Ok(stored) => return stored,
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), secret = self.secret_name, "cannot set up the serving certificate yet; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }

    pub async fn run(self, mut current: Stored, interval: Duration) {
        loop {
            tokio::time::sleep(interval).await;
            match self.reconcile().await {
                Ok(stored) => current = stored,
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), serving = current.tls_cert.len(), "certificate reconcile failed; the current certificate keeps serving")
                }
            }
        }
    }

    /// One round: renew if due (one writer wins), load what the Secret holds, publish the bundle.
    pub async fn reconcile(&self) -> anyhow::Result<Stored> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let secret = self
            .secrets
            .get_opt(&self.secret_name)
            .await
            .context("reading the certificate Secret")?;
        let stored = secret.as_ref().and_then(Stored::from_secret);
        let plan = renewal(now, stored.as_ref(), &self.names);
        let stored = if plan == Renewal::Keep {
            stored.context("no certificate stored")?
        } else {
            let renewed = renew(now, stored.as_ref(), plan, &self.names)?;
            match self.write(secret, &renewed).await {
                Ok(()) => {
                    tracing::info!(secret = self.secret_name, renewal = ?plan, "serving certificate renewed");
                    renewed
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    tracing::info!(
                        secret = self.secret_name,
                        "another replica renewed the certificate; loading its one"
                    );
                    let winner = self.secrets.get(&self.secret_name).await?;
                    Stored::from_secret(&winner).context("the certificate Secret lacks keys")?
                }
                Err(err) => return Err(err).context("writing the certificate Secret"),
            }
        };
        self.load(&stored);
        self.publish_bundle(&stored.ca_bundle).await?;
        Ok(stored)
    }

    async fn write(&self, existing: Option<Secret>, stored: &Stored) -> Result<(), kube::Error> {
        match existing {
            Some(mut secret) => {
                // Replace at the resourceVersion we read: a concurrent writer makes this a 409.
                secret.data = Some(stored.to_data());
                self.secrets
                    .replace(&self.secret_name, &PostParams::default(), &secret)
                    .await
                    .map(drop)
            }
            None => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(self.secret_name.clone()),
                        labels: Some(
                            [(
                                "app.kubernetes.io/managed-by".to_owned(),
                                "workload-identity-webhook".to_owned(),
                            )]
                            .into(),
                        ),
                        ..ObjectMeta::default()
                    },
                    type_: Some("Opaque".to_owned()),
                    data: Some(stored.to_data()),
                    ..Secret::default()
                };
                self.secrets.create(&PostParams::default(), &secret).await.map(drop)
            }
        }
    }

    fn load(&self, stored: &Stored) {
        let mut loaded = self.loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *loaded == stored.tls_cert {
            return;
        }
        match certified_key(stored.tls_cert.as_bytes(), stored.tls_key.as_bytes()) {
            Ok(key) => {
                self.target.replace(key);
                loaded.clone_from(&stored.tls_cert);
                Metrics::record_reload(&self.metrics.certificate_reloads, true);
            }
            Err(err) => {
                Metrics::record_reload(&self.metrics.certificate_reloads, false);
                tracing::error!(error = %format!("{err:#}"), "stored serving certificate refused; the current one keeps serving");
            }
        }
    }

    async fn publish_bundle(&self, bundle: &str) -> anyhow::Result<()> {
        let Some(configuration) = self.webhook_configurations.get_opt(&self.webhook_configuration).await? else {
            tracing::warn!(
                name = self.webhook_configuration,
                "MutatingWebhookConfiguration not found; caBundle not published"
            );
            return Ok(());
        };
        // Webhooks merge by name in a strategic merge patch, so only their caBundle changes.
        let stale: Vec<serde_json::Value> = configuration
            .webhooks
            .iter()
            .flatten()
            .filter(|webhook| webhook.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(bundle.as_bytes()))
            .map(|webhook| json!({"name": webhook.name, "clientConfig": {"caBundle": ByteString(bundle.as_bytes().to_vec())}}))
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        self.webhook_configurations
            .patch(
                &self.webhook_configuration,
                &PatchParams::default(),
                &Patch::Strategic(json!({"webhooks": stale})),
            )
            .await
            .context("publishing the caBundle")?;
        tracing::info!(name = self.webhook_configuration, "caBundle published");
        Ok(())
    }
}
