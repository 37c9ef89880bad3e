//! The HTTPS admission server and the plain-HTTP metrics server: the shared state, and [`start`],
//! which binds both ports. The routes are in `router`, the in-flight budget in `budget`, the
//! metrics and audit log of each request in `audit`.

mod audit;
mod budget;
mod router;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::sync::{Semaphore, watch};

use crate::shell::connections::{self, ConnectionLimits, Port};
use crate::shell::metrics::Metrics;
use crate::shell::namespaces::NamespaceLabels;
use crate::shell::supervisor::{self, Supervisor};
use crate::shell::watch::{LiveConfig, ServiceAccounts};
pub use router::admission_router;
use router::{REQUEST_TIMEOUT, metrics, probe_router};
use workload_identity_core::admission::config_map::ConfigMapName;

pub struct AppState {
    pub config: Arc<LiveConfig>,
    pub service_accounts: ServiceAccounts,
    /// Namespace labels for policy rules that select by label (none without a cluster).
    pub namespaces: Option<NamespaceLabels>,
    pub metrics: Arc<Metrics>,
    pub shutting_down: AtomicBool,
    pub limits: ReviewLimits,
    /// KiB of request bodies and answers held in memory, from the request's arrival until its
    /// answer has been written out.
    in_flight: Arc<Semaphore>,
    /// The budget's size in KiB.
    in_flight_kib: usize,
    /// What each client IP holds of it.
    peer_shares: budget::PeerShares,
    /// The ConfigMap the configuration comes from, which `/validate-config` checks; none when it
    /// comes from a file or the flags (then every ConfigMap is allowed).
    pub config_map: Option<ConfigMapName>,
}

/// Bounds on the work and memory one review, and all of them together, may take.
#[derive(Debug, Clone, Copy)]
pub struct ReviewLimits {
    /// Pods with more containers and init containers are allowed unchanged, with a warning.
    pub max_containers: usize,
    /// Patches whose JSON is longer are left out of the answer, with a warning.
    pub max_patch_bytes: usize,
    /// Request bodies and answers in memory at once; requests beyond it get 503.
    pub max_in_flight_bytes: usize,
}

/// The least a request is charged: small reviews are not free (headers, parsing, the answer).
impl AppState {
    pub fn new(
        config: Arc<LiveConfig>,
        service_accounts: ServiceAccounts,
        metrics: Arc<Metrics>,
        limits: ReviewLimits,
    ) -> Self {
        let kib = u32::try_from(limits.max_in_flight_bytes / 1024).unwrap_or(u32::MAX);
        AppState {
            config,
            service_accounts,
            namespaces: None,
            metrics,
            shutting_down: AtomicBool::new(false),
            limits,
            in_flight: Arc::new(Semaphore::new(kib as usize)),
            in_flight_kib: kib as usize,
            peer_shares: budget::PeerShares::default(),
            config_map: None,
        }
    }

    /// The state of a webhook that reads its configuration from this ConfigMap.
    pub fn with_config_map(mut self, config_map: ConfigMapName) -> Self {
        self.config_map = Some(config_map);
        self
    }

    /// The state of a webhook that reads namespace labels from the cluster.
    pub fn with_namespace_labels(mut self, namespaces: NamespaceLabels) -> Self {
        self.namespaces = Some(namespaces);
        self
    }

    fn is_ready(&self) -> bool {
        self.config.is_loaded() && self.service_accounts.is_synced() && !self.shutting_down.load(Ordering::Acquire)
    }
}

pub struct ServerOptions {
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub admission_connections: ConnectionLimits,
    pub metrics_connections: ConnectionLimits,
    pub max_body_bytes: usize,
    pub shutdown_timeout: Duration,
    pub shutdown_delay: Duration,
    /// Answer every review with a fixed allow, without reading the object: the ceiling of the
    /// HTTP/TLS stack, measured by the benchmark.
    pub benchmark_ceiling: bool,
}

/// Binds both ports; the metrics listener and the signal handler run under `tasks`. The future
/// returned serves the admission port until SIGTERM or Ctrl-C, then drains in-flight requests.
pub async fn start(
    state: Arc<AppState>,
    tls: rustls::ServerConfig,
    options: ServerOptions,
    tasks: &mut Supervisor,
) -> anyhow::Result<impl Future<Output = ()> + use<>> {
    let stopping = tasks.stopping();
    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "admission server listening (HTTPS)");
    if let Some(metrics_listen) = options.metrics_listen {
        let listener = tokio::net::TcpListener::bind(metrics_listen).await?;
        tracing::info!(address = %listener.local_addr()?, "metrics server listening");
        let router = Router::new()
            .route("/metrics", get(metrics))
            .merge(probe_router())
            .with_state(state.clone());
        let port = Port {
            name: "metrics",
            listener,
            tls: None,
            router,
            limits: options.metrics_connections,
        };
        tasks.spawn(
            "metrics listener",
            connections::serve(port, state.metrics.clone(), stopping.clone(), options.shutdown_timeout),
        );
    }
    tasks.spawn(
        "signal handler",
        stop_on_termination(
            state.clone(),
            tasks.stopper(),
            options.shutdown_delay,
            options.shutdown_timeout,
        ),
    );
    let port = Port {
        name: "admission",
        listener,
        tls: Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls))),
        router: admission_router(
            state.clone(),
            options.max_body_bytes,
            REQUEST_TIMEOUT,
            options.benchmark_ceiling,
        ),
        limits: options.admission_connections,
    };
    Ok(async move {
        connections::serve(port, state.metrics.clone(), stopping, options.shutdown_timeout).await;
        tracing::info!("admission server stopped");
    })
}

/// On SIGTERM: reports not-ready first and keeps serving while the Service's endpoints catch up,
/// so the apiserver stops sending new requests here before the listeners close; then stops them.
async fn stop_on_termination(state: Arc<AppState>, stop: watch::Sender<bool>, delay: Duration, timeout: Duration) {
    supervisor::termination().await;
    state.shutting_down.store(true, Ordering::Release);
    tracing::info!(?delay, "SIGTERM: not ready; still serving until endpoints update");
    tokio::time::sleep(delay).await;
    tracing::info!(?timeout, "shutting down: draining in-flight requests");
    stop.send_replace(true);
}
