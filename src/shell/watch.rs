//! The webhook's live inputs: the identity configuration (ConfigMap or file) and the cache of
//! ServiceAccounts. Both are kept current in the background; a request only reads them.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::shell::metrics::{Metrics, ReasonLabels};
use workload_identity_core::config::{CONFIG_KEY, Config, Settings};
use workload_identity_core::model;
use workload_identity_core::mutation::MANAGED_ANNOTATIONS;
use workload_identity_core::providers;

/// A mutex's value, also after a panic elsewhere poisoned it.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `watch` label of each watch's metrics.
const SERVICE_ACCOUNT_WATCH: &str = "service_accounts";
const CONFIG_MAP_WATCH: &str = "config_map";

/// The identity configuration in force, and whether it has been read once.
pub struct LiveConfig {
    current: ArcSwap<Config>,
    /// Cluster settings from flags, under every configuration that is loaded.
    defaults: Settings,
    /// The AWS region the cluster's service-account issuer names (EKS), under the flags'.
    detected_region: Mutex<Option<String>>,
    /// The last configuration read (source, text; no text: none exists), put in force again when
    /// the detected region changes.
    last: Mutex<Option<(String, Option<String>)>>,
    loaded: AtomicBool,
    metrics: Arc<Metrics>,
}

impl LiveConfig {
    pub fn new(defaults: Settings, metrics: Arc<Metrics>) -> anyhow::Result<Arc<Self>> {
        let initial = Config::from_defaults(&defaults)?;
        Ok(Arc::new(LiveConfig {
            current: ArcSwap::from_pointee(initial),
            defaults,
            detected_region: Mutex::new(None),
            last: Mutex::new(None),
            loaded: AtomicBool::new(false),
            metrics,
        }))
    }

    /// The cluster settings a `config.yaml` is laid over (the validating admission of the
    /// ConfigMap checks it as it would be put in force).
    pub fn flag_settings(&self) -> Settings {
        self.defaults()
    }

    /// The flags' settings, with the detected AWS region where no `--aws-region` is given (a
    /// `config.yaml` region is laid over both).
    fn defaults(&self) -> Settings {
        let mut defaults = self.defaults.clone();
        if defaults.aws.region.is_none() {
            defaults.aws.region = lock(&self.detected_region).clone();
        }
        defaults
    }

    /// Takes `region` (detected from the cluster's issuer) as the default AWS region and puts the
    /// last configuration in force again over it.
    pub fn set_detected_region(&self, region: Option<String>) {
        *lock(&self.detected_region) = region;
        let last = lock(&self.last).clone();
        match last {
            Some((source, Some(text))) => self.apply(&source, &text),
            Some((source, None)) => self.clear(&source),
            None => {
                if let Ok(config) = Config::from_defaults(&self.defaults()) {
                    self.install(config);
                }
            }
        }
    }

    pub fn current(&self) -> Arc<Config> {
        self.current.load_full()
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Puts a new `config.yaml` in force, or keeps the last good one if it is invalid.
    pub fn apply(&self, source: &str, text: &str) {
        *lock(&self.last) = Some((source.to_owned(), Some(text.to_owned())));
        match Config::parse(text, &self.defaults()) {
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
        *lock(&self.last) = Some((source.to_owned(), None));
        if let Ok(config) = Config::from_defaults(&self.defaults()) {
            tracing::info!(source, "no identity configuration; no mappings in force");
            self.install(config);
        }
        self.loaded.store(true, Ordering::Release);
    }

    fn install(&self, config: Config) {
        for notice in config.notices() {
            tracing::warn!(notice, "identity configuration");
        }
        self.metrics.config_mappings.set(config.identities.len() as i64);
        self.current.store(Arc::new(config));
    }

    /// Keeps the configuration in step with one ConfigMap, through a kube-rs watcher.
    pub async fn watch_config_map(self: Arc<Self>, client: Client, namespace: String, name: String) {
        let source = format!("configmap {namespace}/{name}");
        let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
        // `None` when the ConfigMap is deleted or absent from a re-list.
        let mut objects = watcher::watch_object(api, &name).default_backoff().boxed();
        self.metrics.set_watch_connected(CONFIG_MAP_WATCH, true);
        while let Some(object) = objects.next().await {
            self.metrics.set_watch_connected(CONFIG_MAP_WATCH, object.is_ok());
            match object {
                Ok(Some(config_map)) => match config_map.data.as_ref().and_then(|data| data.get(CONFIG_KEY)) {
                    Some(text) => self.apply(&source, text),
                    None => {
                        tracing::warn!(source, key = CONFIG_KEY, "ConfigMap has no configuration key");
                        self.clear(&source);
                    }
                },
                Ok(None) => self.clear(&source),
                Err(err) => {
                    tracing::warn!(source, error = %err, "ConfigMap watch failed; retrying")
                }
            }
        }
    }

    /// Keeps the configuration in step with a file (for runs without a cluster, or a mounted file).
    /// Only a missing file means "no configuration": any other read error (EMFILE, EIO, not UTF-8)
    /// keeps the configuration in force, logged as an error and counted as a failed reload.
    pub async fn watch_file(self: Arc<Self>, path: PathBuf, interval: Duration) {
        let source = path.display().to_string();
        let mut last: Option<Option<String>> = None;
        // Each distinct failure is logged and counted once, not at every poll.
        let mut failing: Option<String> = None;
        loop {
            let text = match tokio::fs::read_to_string(&path).await {
                Ok(text) => Some(text),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
                Err(err) => {
                    let error = err.to_string();
                    if failing.as_ref() != Some(&error) {
                        Metrics::record_reload(&self.metrics.config_reloads, false);
                        tracing::error!(
                            source,
                            error,
                            "cannot read the configuration file; the current configuration stays in force"
                        );
                        failing = Some(error);
                    }
                    tokio::time::sleep(interval).await;
                    continue;
                }
            };
            failing = None;
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
    /// A cache of every ServiceAccount's identity annotations, with a direct GET on a miss.
    Cluster {
        cache: Arc<ServiceAccountCache>,
        client: Client,
        misses: Box<Mutex<MissGuard>>,
        metrics: Arc<Metrics>,
        synced: Arc<AtomicBool>,
        /// False while the watch is broken (e.g. the apiserver is down): look-ups use the cache.
        connected: Arc<AtomicBool>,
    },
    /// No cluster: every ServiceAccount exists and has no annotations, so only mappings apply.
    Standalone,
}

impl ServiceAccounts {
    /// The look-ups, which serve at once (misses go to the API), and the watch that fills their
    /// cache, for the caller to run (it ends only if the watch stream does).
    pub fn start_cluster(client: Client, metrics: Arc<Metrics>) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let api: Api<PartialObjectMeta<ServiceAccount>> = Api::all(client.clone());
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        let cache = Arc::new(ServiceAccountCache::default());
        let connected = Arc::new(AtomicBool::new(true));
        let synced = Arc::new(AtomicBool::new(false));
        let (writer, connected_flag, synced_flag, probe_client, watch_metrics) = (
            cache.clone(),
            connected.clone(),
            synced.clone(),
            client.clone(),
            metrics.clone(),
        );
        watch_metrics.set_watch_connected(SERVICE_ACCOUNT_WATCH, true);
        let watch = async move {
            let mut stream = std::pin::pin!(stream);
            let mut relist = None;
            loop {
                match stream.try_next().await {
                    Ok(Some(event)) => {
                        if !connected_flag.swap(true, Ordering::AcqRel) {
                            watch_metrics.set_watch_connected(SERVICE_ACCOUNT_WATCH, true);
                        }
                        let synced_count = writer.apply(event, &mut relist);
                        watch_metrics.service_account_cache_size.set(writer.count() as i64);
                        if let Some(count) = synced_count
                            && !synced_flag.swap(true, Ordering::AcqRel)
                        {
                            tracing::info!(service_accounts = count, "ServiceAccount cache synced");
                        }
                    }
                    Ok(None) => break,
                    Err(err) => {
                        if connected_flag.swap(false, Ordering::AcqRel) {
                            watch_metrics.set_watch_connected(SERVICE_ACCOUNT_WATCH, false);
                            tracing::warn!(error = %err, "ServiceAccount watch broken; answering from the cache while it reconnects");
                            tokio::spawn(wait_for_apiserver(
                                probe_client.clone(),
                                connected_flag.clone(),
                                watch_metrics.clone(),
                            ));
                        }
                    }
                }
            }
        };
        let service_accounts = ServiceAccounts::Cluster {
            cache,
            client,
            misses: Box::default(),
            metrics,
            synced,
            connected,
        };
        (service_accounts, watch)
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

    /// The ServiceAccount, `Ok(None)` if it does not exist. `peer` (the client's IP, if known) is
    /// charged for an API look-up of a name the cache lacks.
    pub async fn get(
        &self,
        namespace: &str,
        name: &str,
        peer: Option<IpAddr>,
    ) -> Result<Option<model::ServiceAccount>, LookupError> {
        let ServiceAccounts::Cluster {
            cache,
            client,
            misses,
            metrics,
            ..
        } = self
        else {
            return Ok(Some(model::ServiceAccount::default()));
        };
        if let Some(cached) = cache.get(namespace, name) {
            return Ok(Some(cached));
        }
        let admitted =
            misses
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .admit(namespace, name, peer, Instant::now());
        if let Err(skip) = admitted {
            let reason = match skip {
                Skip::RecentMiss => "recent_miss",
                Skip::RateLimited => "rate_limited",
            };
            metrics.lookups_skipped.get_or_create(&ReasonLabels { reason }).inc();
            return match skip {
                Skip::RecentMiss => Ok(None),
                Skip::RateLimited => Err(LookupError::RateLimited),
            };
        }
        // A Pod created right after its ServiceAccount can outrun the watch.
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
        let found = api.get_metadata_opt(name).await?;
        if found.is_none() {
            misses
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .missed(namespace, name, Instant::now());
        }
        Ok(found.map(|found| service_account(namespace, name, &identity_annotations(found.metadata.annotations))))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("too many look-ups of unknown ServiceAccounts; try again shortly")]
    RateLimited,
}

/// How long a ServiceAccount the API said does not exist is taken not to exist without asking
/// again. The watch's cache is read first, so one created meanwhile is found as soon as the
/// watch sees it.
const MISS_TTL: Duration = Duration::from_secs(30);
/// Names remembered at most (about 100 bytes each).
const MISS_CAPACITY: usize = 10_000;
/// API look-ups of names the cache does not hold, per client IP: a burst of this many, refilled
/// at [`PEER_PER_SECOND`]. Through the apiserver these are rare (a Pod right after its
/// ServiceAccount); a client flooding the port with made-up names is held here, and spends only
/// its own share: the apiserver's look-ups go on.
const PEER_BURST: f64 = 20.0;
const PEER_PER_SECOND: f64 = 10.0;
/// All clients together, so that many addresses cannot turn the webhook against the apiserver.
const TOTAL_BURST: f64 = 200.0;
const TOTAL_PER_SECOND: f64 = 100.0;
/// Client IPs with a bucket of their own (about 64 bytes each); beyond it the one with the most
/// tokens left (the idlest) makes room.
const MAX_PEERS: usize = 1024;

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    /// Refilled at `per_second` up to `burst` since its last use; takes a token if it has one.
    fn take(&mut self, burst: f64, per_second: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(burst);
        self.refilled = now;
        let taken = self.tokens >= 1.0;
        if taken {
            self.tokens -= 1.0;
        }
        taken
    }

    fn full(burst: f64, now: Instant) -> Self {
        Bucket {
            tokens: burst,
            refilled: now,
        }
    }
}

/// The negative cache and the rate limits of API look-ups.
#[derive(Debug, Default)]
pub struct MissGuard {
    recent: HashMap<(Box<str>, Box<str>), Instant>,
    total: Option<Bucket>,
    /// Per client IP; a request without one (not from a connection) counts as one peer.
    peers: HashMap<Option<IpAddr>, Bucket>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The API said it does not exist less than MISS_TTL ago.
    RecentMiss,
    RateLimited,
}

impl MissGuard {
    /// Whether an API look-up of this name, asked by `peer`, may go out at `now` (and takes a
    /// token of the peer's and of the total if so).
    pub fn admit(&mut self, namespace: &str, name: &str, peer: Option<IpAddr>, now: Instant) -> Result<(), Skip> {
        let key = (Box::from(namespace), Box::from(name));
        if let Some(at) = self.recent.get(&key) {
            if now.duration_since(*at) < MISS_TTL {
                return Err(Skip::RecentMiss);
            }
            self.recent.remove(&key);
        }
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_PEERS {
            self.make_room(now);
        }
        let own = self.peers.entry(peer).or_insert_with(|| Bucket::full(PEER_BURST, now));
        // The peer's token first: a peer out of tokens does not spend the total.
        if !own.take(PEER_BURST, PEER_PER_SECOND, now) {
            return Err(Skip::RateLimited);
        }
        let total = self.total.get_or_insert_with(|| Bucket::full(TOTAL_BURST, now));
        if !total.take(TOTAL_BURST, TOTAL_PER_SECOND, now) {
            return Err(Skip::RateLimited);
        }
        Ok(())
    }

    /// Drops the bucket with the most tokens once refilled: a peer idle long enough to be full
    /// again loses nothing, and a busy one keeps its debt.
    fn make_room(&mut self, now: Instant) {
        let tokens = |bucket: &Bucket| {
            bucket.tokens + now.saturating_duration_since(bucket.refilled).as_secs_f64() * PEER_PER_SECOND
        };
        let idlest = self
            .peers
            .iter()
            .max_by(|a, b| tokens(a.1).total_cmp(&tokens(b.1)))
            .map(|(peer, _)| *peer);
        if let Some(peer) = idlest {
            self.peers.remove(&peer);
        }
    }

    /// The API said this name does not exist.
    pub fn missed(&mut self, namespace: &str, name: &str, now: Instant) {
        if self.recent.len() >= MISS_CAPACITY {
            self.recent.retain(|_, at| now.duration_since(*at) < MISS_TTL);
            if self.recent.len() >= MISS_CAPACITY {
                self.recent.clear();
            }
        }
        self.recent.insert((namespace.into(), name.into()), now);
    }
}

/// The annotations a Pod's mutation reads, by namespace and ServiceAccount name, and nothing else.
/// kube's reflector store kept each whole `ObjectMeta`: ~1 KB per ServiceAccount, 115-139 MiB for
/// 100,000 of them (tests/scale.rs); this keeps a name and, for the few that have them, a list.
#[derive(Default)]
pub struct ServiceAccountCache {
    by_namespace: RwLock<Namespaces>,
    /// ServiceAccounts held, for the metrics.
    size: AtomicUsize,
}

type Namespaces = HashMap<Box<str>, HashMap<Box<str>, IdentityAnnotations>>;
type IdentityAnnotations = Box<[(Box<str>, Box<str>)]>;

impl ServiceAccountCache {
    /// ServiceAccounts held.
    pub fn count(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    fn get(&self, namespace: &str, name: &str) -> Option<model::ServiceAccount> {
        let by_namespace = self.by_namespace.read().unwrap_or_else(PoisonError::into_inner);
        let annotations = by_namespace.get(namespace)?.get(name)?;
        Some(service_account(namespace, name, annotations))
    }

    /// Applies one watch event. A (re-)list is gathered in `relist` and replaces the whole cache
    /// when it is complete, so ServiceAccounts deleted while the watch was down go away; the count
    /// of ServiceAccounts is returned then.
    fn apply(
        &self,
        event: watcher::Event<PartialObjectMeta<ServiceAccount>>,
        relist: &mut Option<Namespaces>,
    ) -> Option<usize> {
        match event {
            watcher::Event::Init => *relist = Some(Namespaces::new()),
            watcher::Event::InitApply(sa) => {
                if let Some(relist) = relist.as_mut() {
                    insert(relist, sa);
                }
            }
            watcher::Event::InitDone => {
                let complete = relist.take()?;
                let count = complete.values().map(HashMap::len).sum();
                *self.by_namespace.write().unwrap_or_else(PoisonError::into_inner) = complete;
                self.size.store(count, Ordering::Relaxed);
                return Some(count);
            }
            watcher::Event::Apply(sa) => {
                if insert(
                    &mut self.by_namespace.write().unwrap_or_else(PoisonError::into_inner),
                    sa,
                ) {
                    self.size.fetch_add(1, Ordering::Relaxed);
                }
            }
            watcher::Event::Delete(sa) => {
                let (Some(namespace), Some(name)) = (sa.metadata.namespace, sa.metadata.name) else {
                    return None;
                };
                let mut by_namespace = self.by_namespace.write().unwrap_or_else(PoisonError::into_inner);
                if let Some(names) = by_namespace.get_mut(namespace.as_str()) {
                    if names.remove(name.as_str()).is_some() {
                        self.size.fetch_sub(1, Ordering::Relaxed);
                    }
                    if names.is_empty() {
                        by_namespace.remove(namespace.as_str());
                    }
                }
            }
        }
        None
    }
}

/// Adds or replaces one ServiceAccount; true if it is new.
fn insert(by_namespace: &mut Namespaces, sa: PartialObjectMeta<ServiceAccount>) -> bool {
    let meta = sa.metadata;
    let (Some(namespace), Some(name)) = (meta.namespace, meta.name) else {
        return false;
    };
    let annotations = identity_annotations(meta.annotations);
    let replaced = match by_namespace.get_mut(namespace.as_str()) {
        Some(names) => names.insert(name.into(), annotations),
        None => by_namespace
            .entry(namespace.into())
            .or_default()
            .insert(name.into(), annotations),
    };
    replaced.is_none()
}

/// The annotations the webhook reads: identity annotations of each cloud, and the list of those
/// it wrote itself from a mapping (so the mapping in force outranks its own old copies).
fn identity_annotations(annotations: Option<BTreeMap<String, String>>) -> IdentityAnnotations {
    annotations
        .into_iter()
        .flatten()
        .filter(|(key, _)| {
            // Only what a cloud reads (and MANAGED_ANNOTATIONS) is kept.
            key == MANAGED_ANNOTATIONS
                || providers::ALL
                    .iter()
                    .flat_map(|provider| provider.annotation_prefixes())
                    .any(|prefix| key.starts_with(prefix))
        })
        .map(|(key, value)| (key.into(), value.into()))
        .collect()
}

fn service_account(namespace: &str, name: &str, annotations: &[(Box<str>, Box<str>)]) -> model::ServiceAccount {
    model::ServiceAccount {
        metadata: model::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(key, value)| (key.to_string(), value.to_string()))
                    .collect(),
            ),
            ..model::ObjectMeta::default()
        },
    }
}

/// A resumed watch emits nothing until something changes, so the way back is seen by asking the
/// apiserver directly; the watcher itself resumes on its own backoff.
async fn wait_for_apiserver(client: Client, connected: Arc<AtomicBool>, metrics: Arc<Metrics>) {
    while !connected.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if client.apiserver_version().await.is_ok() {
            connected.store(true, Ordering::Release);
            metrics.set_watch_connected(SERVICE_ACCOUNT_WATCH, true);
            tracing::info!("apiserver reachable again; the ServiceAccount watch resumes");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn sa(namespace: &str, name: &str, annotations: Value) -> PartialObjectMeta<ServiceAccount> {
        serde_json::from_value(json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"namespace": namespace, "name": name, "uid": "u", "resourceVersion": "1",
                         "labels": {"app": name}, "annotations": annotations}
        }))
        .expect("PartialObjectMeta")
    }

    fn annotations(cache: &ServiceAccountCache, namespace: &str, name: &str) -> Option<Vec<(String, String)>> {
        let found = cache.get(namespace, name)?;
        assert_eq!(found.metadata.name.as_deref(), Some(name));
        assert_eq!(found.metadata.namespace.as_deref(), Some(namespace));
        Some(found.metadata.annotations.unwrap_or_default().into_iter().collect())
    }

    #[test]
    fn the_cache_keeps_identity_annotations_and_follows_lists_applies_and_deletes() {
        let cache = ServiceAccountCache::default();
        let mut relist = None;
        let role = (
            "eks.amazonaws.com/role-arn".to_owned(),
            "arn:aws:iam::1:role/r".to_owned(),
        );
        let managed = (MANAGED_ANNOTATIONS.to_owned(), "eks.amazonaws.com/role-arn".to_owned());
        let listed = sa(
            "a",
            "app",
            json!({role.0.as_str(): role.1, managed.0.as_str(): managed.1,
                   "kubectl.kubernetes.io/last-applied-configuration": "{...}"}),
        );
        assert_eq!(cache.apply(watcher::Event::Init, &mut relist), None);
        cache.apply(watcher::Event::InitApply(listed), &mut relist);
        cache.apply(
            watcher::Event::InitApply(sa("a", "gone-later", Value::Null)),
            &mut relist,
        );
        assert_eq!(
            annotations(&cache, "a", "app"),
            None,
            "not visible before the list is complete"
        );
        assert_eq!(cache.apply(watcher::Event::InitDone, &mut relist), Some(2));
        assert_eq!(cache.count(), 2);
        let mut expected = vec![role.clone(), managed.clone()];
        expected.sort();
        assert_eq!(annotations(&cache, "a", "app"), Some(expected));
        assert_eq!(annotations(&cache, "a", "gone-later"), Some(Vec::new()));
        assert_eq!(annotations(&cache, "b", "app"), None);

        cache.apply(
            watcher::Event::Apply(sa(
                "b",
                "new",
                json!({"iam.gke.io/gcp-service-account": "x@p.iam.gserviceaccount.com"}),
            )),
            &mut relist,
        );
        assert_eq!(annotations(&cache, "b", "new").map(|list| list.len()), Some(1));
        cache.apply(watcher::Event::Apply(sa("a", "app", Value::Null)), &mut relist);
        assert_eq!(
            annotations(&cache, "a", "app"),
            Some(Vec::new()),
            "an update replaces the annotations"
        );
        assert_eq!(cache.count(), 3, "one new, one replaced");
        cache.apply(watcher::Event::Delete(sa("b", "new", Value::Null)), &mut relist);
        cache.apply(watcher::Event::Delete(sa("b", "never-seen", Value::Null)), &mut relist);
        assert_eq!(annotations(&cache, "b", "new"), None);
        assert_eq!(cache.count(), 2);

        // A re-list after the watch was down drops what was deleted meanwhile.
        cache.apply(watcher::Event::Init, &mut relist);
        cache.apply(watcher::Event::InitApply(sa("a", "app", Value::Null)), &mut relist);
        assert_eq!(
            annotations(&cache, "a", "gone-later"),
            Some(Vec::new()),
            "served until the list completes"
        );
        assert_eq!(cache.apply(watcher::Event::InitDone, &mut relist), Some(1));
        assert_eq!(cache.count(), 1);
        assert_eq!(annotations(&cache, "a", "gone-later"), None);
        assert!(annotations(&cache, "a", "app").is_some());
    }

    #[test]
    fn unknown_service_accounts_are_remembered_and_api_look_ups_rate_limited() {
        let start = Instant::now();
        let at = |millis: u64| start + Duration::from_millis(millis);
        let mut guard = MissGuard::default();
        assert_eq!(guard.admit("a", "ghost", None, at(0)), Ok(()));
        guard.missed("a", "ghost", at(0));
        assert_eq!(guard.admit("a", "ghost", None, at(29_000)), Err(Skip::RecentMiss));
        assert_eq!(guard.admit("b", "ghost", None, at(29_000)), Ok(()), "per namespace");
        assert_eq!(
            guard.admit("a", "ghost", None, at(30_000)),
            Ok(()),
            "asked again after the TTL"
        );

        let mut guard = MissGuard::default();
        for index in 0..20 {
            assert_eq!(
                guard.admit("a", &format!("n{index}"), None, at(0)),
                Ok(()),
                "burst {index}"
            );
        }
        assert_eq!(guard.admit("a", "n20", None, at(0)), Err(Skip::RateLimited));
        assert_eq!(guard.admit("a", "n20", None, at(150)), Ok(()), "10 per second refill");
        assert_eq!(guard.admit("a", "n21", None, at(150)), Err(Skip::RateLimited));
        let mut guard = MissGuard::default();
        for index in 0..MISS_CAPACITY + 5 {
            guard.missed("a", &format!("n{index}"), at(0));
        }
        assert!(guard.recent.len() <= MISS_CAPACITY, "bounded: {}", guard.recent.len());
    }

    /// S1: a client that floods the port with unknown names spends its own bucket; the
    /// apiserver's look-ups go on. Many clients together stay within the total, and the map of
    /// clients is bounded.
    #[test]
    fn api_look_ups_are_rate_limited_per_client() {
        let start = Instant::now();
        let at = |millis: u64| start + Duration::from_millis(millis);
        let ip = |last: u32| Some(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + last)));
        let (flooder, apiserver) = (ip(1), ip(2));
        let mut guard = MissGuard::default();
        let flooded = (0..1_000)
            .filter(|index| guard.admit("a", &format!("x{index}"), flooder, at(0)).is_ok())
            .count();
        assert_eq!(flooded, 20, "the flooder gets its burst");
        for index in 0..20 {
            assert_eq!(
                guard.admit("b", &format!("pod-sa-{index}"), apiserver, at(0)),
                Ok(()),
                "the apiserver's look-up {index}"
            );
        }
        assert_eq!(
            guard.admit("a", "x-late", flooder, at(100)),
            Ok(()),
            "refilled at 10 per second"
        );

        // Many clients: the total (200, 100 per second) holds, whichever client asks.
        let mut guard = MissGuard::default();
        let admitted = (0..50u32)
            .flat_map(|client| (0..20).map(move |index| (client, index)))
            .filter(|(client, index)| {
                guard
                    .admit("a", &format!("{client}-{index}"), ip(*client), at(0))
                    .is_ok()
            })
            .count();
        assert_eq!(admitted, 200);

        let mut guard = MissGuard::default();
        for client in 0..(MAX_PEERS as u32 + 100) {
            let _ = guard.admit("a", &format!("n{client}"), ip(client), at(u64::from(client) * 20));
        }
        assert_eq!(guard.peers.len(), MAX_PEERS, "bounded");
    }

    #[tokio::test]
    async fn a_config_file_that_cannot_be_read_keeps_the_configuration_in_force() {
        const CONFIG: &str = "identities:\n  - namespace: team-a\n    serviceAccount: app\n    aws: {roleArn: \"arn:aws:iam::111122223333:role/app\"}\n";
        let dir = tempfile::tempdir().expect("tempdir");
        // Mounted the way the kubelet mounts a ConfigMap: a symlink swapped in one rename.
        let path = dir.path().join("config.yaml");
        let point = |target: &str| {
            let staging = dir.path().join("staging");
            std::os::unix::fs::symlink(dir.path().join(target), &staging).expect("symlink");
            std::fs::rename(&staging, &path).expect("rename");
        };
        std::fs::write(dir.path().join("good"), CONFIG).expect("write");
        std::fs::write(dir.path().join("not-utf8"), b"identities: [\xff\xfe]").expect("write");
        std::fs::create_dir(dir.path().join("a-directory")).expect("mkdir");
        point("good");
        let metrics = Arc::new(Metrics::default());
        let live = LiveConfig::new(Settings::default(), metrics.clone()).expect("defaults");
        tokio::spawn(live.clone().watch_file(path.clone(), Duration::from_millis(20)));
        let mappings = || live.current().identities.len();
        let failures = || {
            metrics
                .encode()
                .lines()
                .find_map(|line| {
                    line.strip_prefix("workload_identity_webhook_config_reloads_total{result=\"failure\"} ")?
                        .parse::<u64>()
                        .ok()
                })
                .unwrap_or(0)
        };
        until("the configuration", || live.is_loaded() && mappings() == 1).await;

        for (failure, target) in [(1, "not-utf8"), (2, "a-directory")] {
            point(target);
            until("a failed reload", || failures() >= failure).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(mappings(), 1, "{target}: the configuration in force was dropped");
        }
        point("good");
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::remove_file(&path).expect("remove");
        until("no configuration once the file is gone", || mappings() == 0).await;
    }

    async fn until(what: &str, check: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
