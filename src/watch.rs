//! The webhook's live inputs: the identity configuration (ConfigMap or file) and the cache of
//! ServiceAccounts. Both are kept current in the background; a request only reads them.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::Value;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::model;

/// The ConfigMap key that holds the configuration.
pub const CONFIG_KEY: &str = "config.yaml";

/// Annotation prefixes the webhook reads; the cache keeps only these to stay small.
const IDENTITY_ANNOTATION_PREFIXES: &[&str] = &[
    "eks.amazonaws.com/",
    "azure.workload.identity/",
    "iam.gke.io/",
    "cloud.google.com/",
];

/// The identity configuration in force, and whether it has been read once.
pub struct LiveConfig {
    current: ArcSwap<Config>,
    /// Cluster settings from flags, under every configuration that is loaded.
    defaults: Value,
    loaded: AtomicBool,
    metrics: Arc<Metrics>,
}

impl LiveConfig {
    pub fn new(defaults: Value, metrics: Arc<Metrics>) -> anyhow::Result<Arc<Self>> {
        let initial = Config::from_defaults(&defaults)?;
        Ok(Arc::new(LiveConfig {
            current: ArcSwap::from_pointee(initial),
            defaults,
            loaded: AtomicBool::new(false),
            metrics,
        }))
    }

    pub fn current(&self) -> Arc<Config> {
        self.current.load_full()
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Puts a new `config.yaml` in force, or keeps the last good one if it is invalid.
    pub fn apply(&self, source: &str, text: &str) {
        match Config::parse(text, &self.defaults) {
            Ok(config) => {
                tracing::info!(
                    source,
                    mappings = config.identities.len(),
                    "identity configuration loaded"
                );
                self.install(config);
                Metrics::record_reload(&self.metrics.config_reloads, true);
            }
            Err(err) => {
                Metrics::record_reload(&self.metrics.config_reloads, false);
                tracing::error!(source, error = %err, "identity configuration refused; the previous one stays in force");
            }
        }
        self.loaded.store(true, Ordering::Release);
    }

    /// No configuration exists: the flags' settings and no mappings.
    pub fn clear(&self, source: &str) {
        if let Ok(config) = Config::from_defaults(&self.defaults) {
            tracing::info!(source, "no identity configuration; no mappings in force");
            self.install(config);
        }
        self.loaded.store(true, Ordering::Release);
    }

    fn install(&self, config: Config) {
        self.metrics.config_mappings.set(config.identities.len() as i64);
        self.current.store(Arc::new(config));
    }

    /// Keeps the configuration in step with one ConfigMap, through a kube-rs watcher.
    pub async fn watch_config_map(self: Arc<Self>, client: Client, namespace: String, name: String) {
        let source = format!("configmap {namespace}/{name}");
        let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
        let selector = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut seen_during_init = false;
        let mut events = watcher(api, selector).default_backoff().boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => seen_during_init = false,
                Ok(watcher::Event::InitApply(config_map) | watcher::Event::Apply(config_map)) => {
                    seen_during_init = true;
                    match config_map.data.as_ref().and_then(|data| data.get(CONFIG_KEY)) {
                        Some(text) => self.apply(&source, text),
                        None => {
                            tracing::warn!(source, key = CONFIG_KEY, "ConfigMap has no configuration key");
                            self.clear(&source);
                        }
                    }
                }
                Ok(watcher::Event::InitDone) if !seen_during_init => self.clear(&source),
                Ok(watcher::Event::InitDone) => {}
                Ok(watcher::Event::Delete(_)) => self.clear(&source),
                Err(err) => {
                    tracing::warn!(source, error = %err, "ConfigMap watch failed; retrying")
                }
            }
        }
    }

    /// Keeps the configuration in step with a file (for runs without a cluster, or a mounted file).
    pub async fn watch_file(self: Arc<Self>, path: PathBuf, interval: Duration) {
        let source = path.display().to_string();
        let mut last: Option<Option<String>> = None;
        loop {
            let text = tokio::fs::read_to_string(&path).await.ok();
            if last.as_ref() != Some(&text) {
                match &text {
                    Some(text) => self.apply(&source, text),
                    None => self.clear(&source),
                }
                last = Some(text);
            }
            tokio::time::sleep(interval).await;
        }
    }
}

/// Where the annotations of a Pod's ServiceAccount come from.
pub enum ServiceAccounts {
    /// A reflector cache of every ServiceAccount's metadata, with a direct GET on a miss.
    Cluster {
        store: Store<PartialObjectMeta<ServiceAccount>>,
        client: Client,
        synced: Arc<AtomicBool>,
        /// False while the watch is broken (e.g. the apiserver is down): look-ups use the cache.
        connected: Arc<AtomicBool>,
    },
    /// No cluster: every ServiceAccount exists and has no annotations, so only mappings apply.
    Standalone,
}

impl ServiceAccounts {
    /// Starts the reflector; the returned value serves look-ups at once (misses go to the API).
    pub fn start_cluster(client: Client) -> Self {
        let (store, writer) = reflector::store();
        let api: Api<PartialObjectMeta<ServiceAccount>> = Api::all(client.clone());
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(keep_identity_metadata)
            .reflect(writer);
        let connected = Arc::new(AtomicBool::new(true));
        let (flag, probe_client) = (connected.clone(), client.clone());
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                match stream.try_next().await {
                    Ok(Some(_)) => flag.store(true, Ordering::Release),
                    Ok(None) => break,
                    Err(err) => {
                        if flag.swap(false, Ordering::AcqRel) {
                            tracing::warn!(error = %err, "ServiceAccount watch broken; answering from the cache while it reconnects");
                            tokio::spawn(wait_for_apiserver(probe_client.clone(), flag.clone()));
                        }
                    }
                }
            }
        });
        let synced = Arc::new(AtomicBool::new(false));
        let (reader, flag) = (store.clone(), synced.clone());
        tokio::spawn(async move {
            if reader.wait_until_ready().await.is_ok() {
                tracing::info!(service_accounts = reader.len(), "ServiceAccount cache synced");
                flag.store(true, Ordering::Release);
            }
        });
        ServiceAccounts::Cluster {
            store,
            client,
            synced,
            connected,
        }
    }

    /// Whether the watch currently follows the apiserver (always true without a cluster).
    pub fn is_connected(&self) -> bool {
        match self {
            ServiceAccounts::Cluster { connected, .. } => connected.load(Ordering::Acquire),
            ServiceAccounts::Standalone => true,
        }
    }

    pub fn is_synced(&self) -> bool {
        match self {
            ServiceAccounts::Cluster { synced, .. } => synced.load(Ordering::Acquire),
            ServiceAccounts::Standalone => true,
        }
    }

    /// The ServiceAccount, `Ok(None)` if it does not exist.
    pub async fn get(&self, namespace: &str, name: &str) -> Result<Option<model::ServiceAccount>, kube::Error> {
        let ServiceAccounts::Cluster { store, client, .. } = self else {
            return Ok(Some(model::ServiceAccount::default()));
        };
        if let Some(cached) = store.get(&ObjectRef::new(name).within(namespace)) {
            return Ok(Some(to_model(&cached.metadata)));
        }
        // A Pod created right after its ServiceAccount can outrun the watch.
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
        Ok(api.get_metadata_opt(name).await?.map(|found| to_model(&found.metadata)))
    }
}

/// A resumed watch emits nothing until something changes, so the way back is seen by asking the
/// apiserver directly; the watcher itself resumes on its own backoff.
async fn wait_for_apiserver(client: Client, connected: Arc<AtomicBool>) {
    while !connected.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if client.apiserver_version().await.is_ok() {
            connected.store(true, Ordering::Release);
            tracing::info!("apiserver reachable again; the ServiceAccount watch resumes");
        }
    }
}

/// Drops everything but the name and our annotations, so 100k cached ServiceAccounts stay small.
fn keep_identity_metadata(sa: &mut PartialObjectMeta<ServiceAccount>) {
    let meta = &mut sa.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    meta.owner_references = None;
    meta.finalizers = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|key, _| {
            IDENTITY_ANNOTATION_PREFIXES
                .iter()
                .any(|prefix| key.starts_with(prefix))
        });
    }
}

fn to_model(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> model::ServiceAccount {
    model::ServiceAccount {
        metadata: model::ObjectMeta {
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            annotations: Some(meta.annotations.clone().unwrap_or_default()),
            ..model::ObjectMeta::default()
        },
    }
}
