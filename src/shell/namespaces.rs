//! The labels of namespaces, which identity-policy rules with a `namespaceSelector` match: a watch
//! of the namespaces' metadata, and a direct GET for a namespace it has not seen yet (one created
//! right before its first Pod can outrun the watch).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::shell::metrics::Metrics;
use crate::shell::watch::MissGuard;

/// The `watch` label of this watch's metrics.
const NAMESPACE_WATCH: &str = "namespaces";

pub struct NamespaceLabels {
    store: Store<PartialObjectMeta<Namespace>>,
    client: Client,
    misses: Mutex<MissGuard>,
}

impl NamespaceLabels {
    /// The look-ups, and the watch that fills their store, for the caller to run.
    pub fn start(client: Client, metrics: Arc<Metrics>) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (store, writer) = reflector::store();
        let api: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
        let watch_metrics = metrics;
        let watch = async move {
            let mut stream = std::pin::pin!(stream);
            let mut connected = true;
            watch_metrics.set_watch_connected(NAMESPACE_WATCH, true);
            loop {
                match stream.try_next().await {
                    Ok(Some(_)) if !connected => {
                        connected = true;
                        watch_metrics.set_watch_connected(NAMESPACE_WATCH, true);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(err) if connected => {
                        connected = false;
                        watch_metrics.set_watch_connected(NAMESPACE_WATCH, false);
                        tracing::warn!(error = %err, "namespace watch broken; namespaces it has not seen are read from the API");
                    }
                    Err(_) => {}
                }
            }
        };
        let labels = NamespaceLabels {
            store,
            client,
            misses: Mutex::default(),
        };
        (labels, watch)
    }

    /// The namespace's labels; `None` if they cannot be read now (the namespace is unknown, the
    /// API refused, or `peer` made too many look-ups), which the policy treats as selected by no
    /// label selector.
    pub async fn get(&self, namespace: &str, peer: Option<IpAddr>) -> Option<BTreeMap<String, String>> {
        if let Some(seen) = self.store.get(&ObjectRef::new(namespace)) {
            return Some(seen.metadata.labels.clone().unwrap_or_default());
        }
        let admitted =
            self.misses
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .admit(namespace, "", peer, Instant::now());
        if let Err(skip) = admitted {
            tracing::debug!(namespace, ?skip, ?peer, "namespace look-up skipped");
            return None;
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api.get_metadata_opt(namespace).await {
            Ok(Some(found)) => Some(found.metadata.labels.unwrap_or_default()),
            Ok(None) => {
                self.misses
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .missed(namespace, "", Instant::now());
                None
            }
            Err(err) => {
                tracing::error!(namespace, error = %err, "namespace look-up failed");
                None
            }
        }
    }
}
