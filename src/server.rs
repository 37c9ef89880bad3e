//! The HTTPS admission server and the plain-HTTP metrics server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_server::tls_rustls::RustlsConfig;
use tower::ServiceBuilder;

use crate::admission::{Review, Subject};
use crate::echo::{Echo, LogRateLimit};
use crate::metrics::{CloudLabels, Metrics, RequestLabels};
use crate::watch::{LiveConfig, ServiceAccounts};

pub struct AppState {
    pub config: Arc<LiveConfig>,
    pub service_accounts: ServiceAccounts,
    pub metrics: Arc<Metrics>,
    pub shutting_down: AtomicBool,
}

impl AppState {
    fn is_ready(&self) -> bool {
        self.config.is_loaded() && self.service_accounts.is_synced() && !self.shutting_down.load(Ordering::Acquire)
    }
}

pub struct ServerOptions {
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub max_body_bytes: usize,
    pub shutdown_timeout: Duration,
    pub shutdown_delay: Duration,
    /// Answer every review with a fixed allow, without reading the object: the ceiling of the
    /// HTTP/TLS stack, measured by the benchmark.
    pub benchmark_ceiling: bool,
}

pub fn admission_router(state: Arc<AppState>, max_body_bytes: usize, benchmark_ceiling: bool) -> Router {
    let mutate = if benchmark_ceiling {
        post(allow_without_reading)
    } else {
        post(mutate)
    };
    Router::new()
        .route("/mutate", mutate)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        // Bounds a client that sends its body slowly, and a slow ServiceAccount look-up; the
        // apiserver itself gives up after the webhook's timeoutSeconds (at most 30 s).
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    (
                        StatusCode::REQUEST_TIMEOUT,
                        "request not received and answered within 10 s\n",
                    )
                }))
                .timeout(REQUEST_TIMEOUT),
        )
        .merge(probe_router())
        .with_state(state)
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn probe_router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
}

/// Ready once the configuration is read and the cache has synced. A broken watch (apiserver down)
/// keeps the webhook ready, since it answers from its cache, but the body says so.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.is_ready() && !state.service_accounts.is_connected() {
        "ok: ServiceAccount watch reconnecting, answering from the cache\n".into_response()
    } else if state.is_ready() {
        "ok".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for the configuration and ServiceAccount cache\n",
        )
            .into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn mutate(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let response = answer(&state, &headers, &body).await;
    state.metrics.request_duration.observe(started.elapsed().as_secs_f64());
    response
}

async fn answer(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Response {
    let rejected = |status: StatusCode, message: String| {
        state
            .metrics
            .requests
            .get_or_create(&RequestLabels {
                kind: "invalid",
                result: "rejected",
            })
            .inc();
        tracing::warn!(%status, message, "admission request rejected");
        (status, message + "\n").into_response()
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/json") {
        return rejected(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content type must be application/json, got {content_type:?}"),
        );
    }
    let review = match Review::parse(body) {
        Ok(review) => review,
        Err(err) => return rejected(StatusCode::BAD_REQUEST, err.to_string()),
    };
    let config = state.config.current();
    let mut lookup_warning = None;
    let service_account = match &review.subject {
        Subject::Pod(pod) => {
            let name = pod.service_account_name();
            match state.service_accounts.get(review.object_namespace(), name).await {
                Ok(found) => found,
                Err(err) => {
                    tracing::error!(namespace = review.object_namespace(), service_account = %Echo(name), error = %err, "ServiceAccount look-up failed");
                    lookup_warning = Some(format!(
                        "workload-identity-webhook could not read ServiceAccount {}/{}; no cloud identity injected",
                        review.object_namespace(),
                        Echo(name)
                    ));
                    None
                }
            }
        }
        _ => None,
    };
    let mut mutation = review.mutation(service_account.as_ref(), &config);
    mutation.warnings.extend(lookup_warning);
    let (kind, result) = outcome(&review.subject, mutation.patch.is_empty());
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels { kind, result })
        .inc();
    audit(&review, &mutation);
    if let Subject::Pod(_) = review.subject
        && !mutation.patch.is_empty()
    {
        for (cloud, _) in &mutation.identities {
            state.metrics.mutations.get_or_create(&CloudLabels { cloud }).inc();
        }
    }
    match review.response(&mutation) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the response: {err}\n"),
        )
            .into_response(),
    }
}

async fn allow_without_reading(body: Bytes) -> Response {
    #[derive(serde::Deserialize)]
    struct Uid<'a> {
        #[serde(borrow)]
        request: Option<UidOnly<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct UidOnly<'a> {
        #[serde(borrow)]
        uid: &'a str,
    }
    let uid = serde_json::from_slice::<Uid>(&body)
        .ok()
        .and_then(|review| review.request)
        .map_or("", |request| request.uid);
    let json = serde_json::json!({"apiVersion": crate::admission::API_VERSION, "kind": "AdmissionReview", "response": {"uid": uid, "allowed": true}});
    ([(header::CONTENT_TYPE, "application/json")], json.to_string()).into_response()
}

fn outcome(subject: &Subject, unchanged: bool) -> (&'static str, &'static str) {
    let kind = match subject {
        Subject::Pod(_) => "Pod",
        Subject::ServiceAccount(_) => "ServiceAccount",
        Subject::Ignored(_) | Subject::Unreadable(_) => "other",
    };
    let result = match subject {
        Subject::Ignored(_) | Subject::Unreadable(_) => "ignored",
        _ if unchanged => "unchanged",
        _ => "mutated",
    };
    (kind, result)
}

/// The audit trail: every identity given, with who got it.
fn audit(review: &Review, mutation: &crate::mutation::Mutation) {
    let namespace = review.object_namespace();
    match &review.subject {
        Subject::Pod(pod) if !mutation.patch.is_empty() => tracing::info!(
            uid = review.uid,
            namespace,
            pod = pod.metadata.display_name(),
            service_account = pod.service_account_name(),
            identities = ?mutation.identities,
            "pod mutated"
        ),
        Subject::ServiceAccount(sa) if !mutation.patch.is_empty() => tracing::info!(
            uid = review.uid,
            namespace,
            service_account = sa.metadata.display_name(),
            identities = ?mutation.identities,
            "service account annotated"
        ),
        _ => tracing::debug!(uid = review.uid, namespace, "request left untouched"),
    }
    static WARNING_LINES: LogRateLimit = LogRateLimit::new(WARNING_LINES_PER_SECOND);
    let second = std::time::SystemTime::UNIX_EPOCH
        .elapsed()
        .map_or(0, |since| since.as_secs());
    for warning in &mutation.warnings {
        let (allowed, left_out) = WARNING_LINES.allow(second);
        if left_out > 0 {
            tracing::warn!(
                left_out,
                "admission warnings not logged (more than {WARNING_LINES_PER_SECOND} a second)"
            );
        }
        if allowed {
            tracing::warn!(uid = review.uid, namespace, warning, "admission warning");
        }
    }
}

/// Any tenant can make each create attempt warn; the log must not grow with such a flood.
const WARNING_LINES_PER_SECOND: u32 = 50;

/// Serves until SIGTERM or Ctrl-C, then drains in-flight requests.
pub async fn serve(state: Arc<AppState>, tls: rustls::ServerConfig, options: ServerOptions) -> anyhow::Result<()> {
    let handle = axum_server::Handle::new();
    if let Some(metrics_listen) = options.metrics_listen {
        let listener = tokio::net::TcpListener::bind(metrics_listen).await?;
        tracing::info!(address = %listener.local_addr()?, "metrics server listening");
        let router = Router::new()
            .route("/metrics", get(metrics))
            .merge(probe_router())
            .with_state(state.clone());
        tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, router).await {
                tracing::error!(error = %err, "metrics server stopped");
            }
        });
    }
    let shutdown_handle = handle.clone();
    let shutdown_state = state.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        // Report not-ready first and keep serving while the Service's endpoints catch up, so the
        // apiserver stops sending new requests here before the listener closes.
        shutdown_state.shutting_down.store(true, Ordering::Release);
        tracing::info!(delay = ?options.shutdown_delay, "SIGTERM: not ready; still serving until endpoints update");
        tokio::time::sleep(options.shutdown_delay).await;
        tracing::info!(timeout = ?options.shutdown_timeout, "shutting down: draining in-flight requests");
        shutdown_handle.graceful_shutdown(Some(options.shutdown_timeout));
    });
    let listening = handle.clone();
    tokio::spawn(async move {
        if let Some(address) = listening.listening().await {
            tracing::info!(%address, "admission server listening (HTTPS)");
        }
    });
    let mut server = axum_server::bind_rustls(options.listen, RustlsConfig::from_config(Arc::new(tls)))
        // Without TCP_NODELAY, Nagle and delayed ACKs stall small HTTP/2 frames (measured p99 27 ms).
        .map(|acceptor| acceptor.acceptor(axum_server::accept::NoDelayAcceptor::new()))
        .handle(handle)
        // Bounds slow clients: the handshake has 10 s (axum-server's default), the first request 10 s more.
        .first_request_timeout(Duration::from_secs(10));
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    server
        .http_builder()
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(250)
        .keep_alive_interval(Duration::from_secs(30));
    server
        .serve(admission_router(state, options.max_body_bytes, options.benchmark_ceiling).into_make_service())
        .await?;
    tracing::info!("admission server stopped");
    Ok(())
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
