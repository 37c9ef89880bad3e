//! A serving certificate the webhook (and `emulate`) manages itself, for clusters without
//! cert-manager.
//!
//! The CA and the serving certificate live in one Secret in the server's namespace. Every replica
//! reconciles it on a timer: the first to see it missing or due for renewal writes it (create, or
//! update at the resourceVersion it read, so concurrent writers conflict and exactly one wins), and
//! every replica loads whatever the Secret holds into its TLS resolver, with no restart. The CA
//! bundle is kept in step where the clients read it ([`BundleTarget`]). A new CA is published next to the
//! old one first and only used for serving certificates after a grace period, so the apiserver
//! trusts both the old and the new certificate throughout a rotation.
//!
//! The decision of what to renew is a pure function of the stored PEMs and the time ([`plan`]);
//! the certificates are made by [`ca`]; this module is the reconcile loop against the API.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

pub mod ca;
pub mod plan;

use plan::{Renewal, Stored, renew, renewal};

use crate::shell::metrics::Metrics;
use crate::shell::supervisor::Supervisor;
use crate::shell::tls::{CertificateFiles, ReloadingCertificate, certified_key};

/// Where the CA bundle is published, so that clients trust the managed certificate.
#[derive(Debug, Clone)]
pub enum BundleTarget {
    /// The caBundle of every webhook of this MutatingWebhookConfiguration (the apiserver's trust).
    WebhookConfiguration(String),
    /// The key `ca.crt` of this ConfigMap, in the Secret's namespace, for workloads to mount. The
    /// ConfigMap must exist: only its data is written.
    ConfigMap(String),
}

/// The key of the CA bundle in a [`BundleTarget::ConfigMap`].
pub const CONFIG_MAP_KEY: &str = "ca.crt";

/// The DNS names of a Service, as clients in the cluster call it: `.svc` and `.svc.<cluster_domain>`.
pub fn service_names(service: &str, namespace: &str, cluster_domain: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.{cluster_domain}"),
    ]
}

/// The namespace of the Pod this process runs in, from its ServiceAccount mount.
pub fn own_namespace() -> Option<String> {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
}

/// Where a server's certificate comes from.
pub enum Source {
    /// Kept in a Secret by every replica ([`ManagedCertificate`]).
    Managed {
        client: Client,
        namespace: String,
        secret: String,
        bundle: BundleTarget,
        names: Vec<String>,
        check_interval: Duration,
    },
    /// PEM files, re-read every `reload_interval` (cert-manager or a mounted Secret).
    Files {
        files: CertificateFiles,
        reload_interval: Duration,
    },
    /// Made at start for `localhost`, for local runs.
    SelfSigned,
}

/// The serving certificate at start, with the task that keeps it current under `tasks`.
pub async fn start(
    source: Source,
    metrics: &Arc<Metrics>,
    tasks: &mut Supervisor,
) -> anyhow::Result<Arc<ReloadingCertificate>> {
    match source {
        Source::Managed {
            client,
            namespace,
            secret,
            bundle,
            names,
            check_interval,
        } => {
            let certificate = ManagedCertificate::new(client, &namespace, secret, bundle, names, metrics.clone())?;
            let stored = certificate.first_reconcile().await;
            let current = certificate.current();
            tasks.spawn("certificate reconcile", certificate.run(stored, check_interval));
            Ok(current)
        }
        Source::Files { files, reload_interval } => {
            let current = ReloadingCertificate::new(files.load().await?, metrics);
            tasks.spawn(
                "certificate file reload",
                files.watch(current.clone(), metrics.clone(), reload_interval),
            );
            Ok(current)
        }
        Source::SelfSigned => {
            tracing::warn!("no --tls-cert-file given: serving a self-signed certificate for localhost");
            Ok(ReloadingCertificate::new(ca::self_signed()?, metrics))
        }
    }
}

/// Keeps the Secret, the TLS resolver and the published CA bundle in step.
pub struct ManagedCertificate {
    client: Client,
    namespace: String,
    secrets: Api<Secret>,
    secret_name: String,
    bundle: BundleTarget,
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
        bundle: BundleTarget,
        names: Vec<String>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        Ok(ManagedCertificate {
            secrets: Api::namespaced(client.clone(), namespace),
            client,
            namespace: namespace.to_owned(),
            secret_name,
            bundle,
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
        match &self.bundle {
            BundleTarget::WebhookConfiguration(name) => self.publish_to_webhook_configuration(name, bundle).await,
            BundleTarget::ConfigMap(name) => self.publish_to_config_map(name, bundle).await,
        }
    }

    async fn publish_to_config_map(&self, name: &str, bundle: &str) -> anyhow::Result<()> {
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let Some(config_map) = config_maps.get_opt(name).await? else {
            tracing::warn!(name, "CA ConfigMap not found; the CA is not published");
            return Ok(());
        };
        if config_map
            .data
            .as_ref()
            .and_then(|data| data.get(CONFIG_MAP_KEY))
            .map(String::as_str)
            == Some(bundle)
        {
            return Ok(());
        }
        config_maps
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {CONFIG_MAP_KEY: bundle}})),
            )
            .await
            .context("publishing the CA in its ConfigMap")?;
        tracing::info!(name, "CA published in its ConfigMap");
        Ok(())
    }

    /// The caBundle of the MutatingWebhookConfiguration `name` and of the
    /// ValidatingWebhookConfiguration of the same name (the check of the webhook's ConfigMap),
    /// where it exists.
    async fn publish_to_webhook_configuration(&self, name: &str, bundle: &str) -> anyhow::Result<()> {
        if !self.publish_to::<MutatingWebhookConfiguration>(name, bundle).await? {
            tracing::warn!(name, "MutatingWebhookConfiguration not found; caBundle not published");
        }
        if !self.publish_to::<ValidatingWebhookConfiguration>(name, bundle).await? {
            tracing::debug!(
                name,
                "no ValidatingWebhookConfiguration: the ConfigMap is not checked at apply"
            );
        }
        Ok(())
    }

    /// Publishes `bundle` in every webhook of the configuration `name` of kind `K`; false when
    /// there is none.
    async fn publish_to<K>(&self, name: &str, bundle: &str) -> anyhow::Result<bool>
    where
        K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + serde::Serialize,
    {
        let configurations: Api<K> = Api::all(self.client.clone());
        let Some(configuration) = configurations.get_opt(name).await? else {
            return Ok(false);
        };
        let encoded = json!(ByteString(bundle.as_bytes().to_vec()));
        // Webhooks merge by name in a strategic merge patch, so only their caBundle changes.
        let stale: Vec<serde_json::Value> = serde_json::to_value(&configuration)?["webhooks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|webhook| webhook["clientConfig"]["caBundle"] != encoded)
            .map(|webhook| json!({"name": webhook["name"], "clientConfig": {"caBundle": encoded}}))
            .collect();
        if !stale.is_empty() {
            configurations
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Strategic(json!({"webhooks": stale})),
                )
                .await
                .with_context(|| format!("publishing the caBundle in {}", K::kind(&())))?;
            tracing::info!(name, kind = %K::kind(&()), "caBundle published");
        }
        Ok(true)
    }
}
