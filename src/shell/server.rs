//! The HTTPS admission server and the plain-HTTP metrics server.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceBuilder;

use crate::shell::connections::{self, ConnectionLimits, Peer, Port};
use crate::shell::metrics::{CloudLabels, Metrics, ReasonLabels, RequestLabels, SettingLabels};
use crate::shell::supervisor::{self, Supervisor};
use crate::shell::watch::{LiveConfig, LookupError, ServiceAccounts};
use workload_identity_core::admission::{Review, Subject};
use workload_identity_core::echo::{Echo, LogRateLimit};
use workload_identity_core::model::ServiceAccount;
use workload_identity_core::mutation::Mutation;

pub struct AppState {
    pub config: Arc<LiveConfig>,
    pub service_accounts: ServiceAccounts,
    pub metrics: Arc<Metrics>,
    pub shutting_down: AtomicBool,
    pub limits: ReviewLimits,
    /// KiB of request bodies and answers held in memory, from the request's arrival until its
    /// answer has been written out.
    in_flight: Arc<Semaphore>,
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
const MIN_CHARGE_KIB: u32 = 16;

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
            metrics,
            shutting_down: AtomicBool::new(false),
            limits,
            in_flight: Arc::new(Semaphore::new(kib as usize)),
        }
    }

    /// A share of the in-flight budget for `bytes`, or `None` when it is spent.
    fn charge(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(MIN_CHARGE_KIB);
        self.in_flight.clone().try_acquire_many_owned(kib).ok()
    }

    fn shed(&self) -> Response {
        self.metrics.requests_shed.inc();
        tracing::warn!(
            budget_bytes = self.limits.max_in_flight_bytes,
            "admission request shed: in-flight budget spent"
        );
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "webhook busy: too many bytes of reviews in flight\n",
        )
            .into_response()
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

/// The admission endpoint and the probes. `request_timeout` bounds reading a request and answering it.
pub fn admission_router(
    state: Arc<AppState>,
    max_body_bytes: usize,
    request_timeout: Duration,
    benchmark_ceiling: bool,
) -> Router {
    let mutate = if benchmark_ceiling {
        post(allow_without_reading)
    } else {
        post(mutate)
    };
    let budget = state.clone();
    Router::new()
        .route("/mutate", mutate)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        // Charged before the body is read: the declared length (the apiserver always sends one),
        // else the largest body allowed.
        .route_layer(axum::middleware::from_fn(move |request: Request, next: Next| {
            let state = budget.clone();
            async move {
                let declared = request
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
                let Some(permit) = state.charge(declared.unwrap_or(max_body_bytes).min(max_body_bytes)) else {
                    return state.shed();
                };
                let (parts, body) = request.into_parts();
                let body = match read_body(body, declared, max_body_bytes).await {
                    Ok(body) => body,
                    Err(refused) => return refused,
                };
                let response = next.run(Request::from_parts(parts, Body::from(body))).await;
                drop(permit);
                response
            }
        }))
        // Bounds a client that sends its body slowly, and a slow ServiceAccount look-up; the
        // apiserver itself gives up after the webhook's timeoutSeconds (at most 30 s).
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(move |_: tower::BoxError| async move {
                    (
                        StatusCode::REQUEST_TIMEOUT,
                        format!(
                            "request not received and answered within {}\n",
                            Seconds(request_timeout)
                        ),
                    )
                }))
                .timeout(request_timeout),
        )
        .merge(probe_router())
        .with_state(state)
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A duration as the timeout message says it: `10 s`, `0.05 s`.
struct Seconds(Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} s", self.0.as_secs_f64())
    }
}

/// The whole body in one buffer of its declared length: collecting the frames and then joining
/// them held each large body twice.
async fn read_body(body: Body, declared: Option<usize>, max_bytes: usize) -> Result<Bytes, Response> {
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {max_bytes} bytes\n"),
        )
            .into_response()
    };
    if declared.is_some_and(|declared| declared > max_bytes) {
        return Err(too_large());
    }
    let mut buffer = Vec::with_capacity(declared.unwrap_or(0));
    let mut frames = body.into_data_stream();
    while let Some(frame) = futures::StreamExt::next(&mut frames).await {
        let frame =
            frame.map_err(|err| (StatusCode::BAD_REQUEST, format!("reading the body: {err}\n")).into_response())?;
        if buffer.len() + frame.len() > max_bytes {
            return Err(too_large());
        }
        buffer.extend_from_slice(&frame);
    }
    Ok(Bytes::from(buffer))
}

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

async fn mutate(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let peer = PeerText(peer.map(|Extension(Peer(address))| address));
    let response = answer(&state, peer, &headers, &body).await;
    state.metrics.request_duration.observe(started.elapsed().as_secs_f64());
    response
}

/// The client's address in logs (absent when the router is called in-process).
#[derive(Clone, Copy)]
struct PeerText(Option<SocketAddr>);

impl fmt::Display for PeerText {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(address) => address.fmt(formatter),
            None => formatter.write_str("-"),
        }
    }
}

/// Whether a Content-Type is JSON: `application/json` in any case, with no parameter but a UTF-8
/// charset (RFC 8259 JSON is UTF-8).
fn is_json(content_type: &str) -> bool {
    let mut parts = content_type.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        && parts.all(|parameter| {
            let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
            name.trim().eq_ignore_ascii_case("charset") && value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        })
}

/// The request path, one named step each: the media type, the review, the container bound, the
/// ServiceAccount, the mutation, the answer; [`record`] counts and logs what came of it.
async fn answer(state: &AppState, peer: PeerText, headers: &HeaderMap, body: &[u8]) -> Response {
    let review = match check_media_type(headers).and_then(|()| parse(body)) {
        Ok(review) => review,
        Err(refused) => return refused.into_response(state, peer),
    };
    let (mutation, limited) = match over_container_bound(state, &review) {
        Some(mutation) => (mutation, Some("containers")),
        None => (mutate_review(state, peer, &review).await, None),
    };
    respond(state, peer, &review, mutation, limited)
}

/// A request refused before it is read as a review.
struct Refused {
    status: StatusCode,
    message: String,
}

impl Refused {
    fn into_response(self, state: &AppState, peer: PeerText) -> Response {
        record(state, peer, Outcome::Refused(&self));
        (self.status, self.message + "\n").into_response()
    }
}

fn check_media_type(headers: &HeaderMap) -> Result<(), Refused> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if is_json(content_type) {
        Ok(())
    } else {
        Err(Refused {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: format!("content type must be application/json, got {content_type:?}"),
        })
    }
}

fn parse(body: &[u8]) -> Result<Review, Refused> {
    Review::parse(body).map_err(|err| Refused {
        status: StatusCode::BAD_REQUEST,
        message: err.to_string(),
    })
}

/// The answer for a Pod with more containers than the webhook patches: unchanged, with a warning.
fn over_container_bound(state: &AppState, review: &Review) -> Option<Mutation> {
    let containers = container_count(&review.subject)?;
    (containers > state.limits.max_containers).then(|| {
        let mut mutation = Mutation::default();
        mutation.warn(format!(
            "workload-identity-webhook: the Pod has {containers} containers, more than the {} the webhook patches; no cloud identity injected",
            state.limits.max_containers
        ));
        mutation
    })
}

/// The mutation, with the Pod's ServiceAccount looked up (a failed look-up is a warning).
async fn mutate_review(state: &AppState, peer: PeerText, review: &Review) -> Mutation {
    let (service_account, lookup_warning) = match &review.subject {
        Subject::Pod(pod) => {
            look_up_service_account(state, peer, review.object_namespace(), pod.service_account_name()).await
        }
        _ => (None, None),
    };
    let mut mutation = review.mutation(service_account.as_ref(), &state.config.current());
    if let Some(warning) = lookup_warning {
        mutation.warn(warning);
    }
    mutation
}

async fn look_up_service_account(
    state: &AppState,
    peer: PeerText,
    namespace: &str,
    name: &str,
) -> (Option<ServiceAccount>, Option<String>) {
    match state.service_accounts.get(namespace, name).await {
        Ok(found) => (found, None),
        Err(err) => {
            match err {
                LookupError::RateLimited => {
                    tracing::debug!(%peer, namespace, service_account = %Echo(name), "ServiceAccount look-up rate-limited")
                }
                LookupError::Api(_) => {
                    tracing::error!(%peer, namespace, service_account = %Echo(name), error = %err, "ServiceAccount look-up failed")
                }
            }
            let warning = format!(
                "workload-identity-webhook could not read ServiceAccount {namespace}/{}; no cloud identity injected",
                Echo(name)
            );
            (None, Some(warning))
        }
    }
}

fn container_count(subject: &Subject) -> Option<usize> {
    match subject {
        Subject::Pod(pod) => Some(pod.spec.containers.len() + pod.spec.init_containers.as_ref().map_or(0, Vec::len)),
        _ => None,
    }
}

/// Encodes the answer (once), has it recorded, and charges it to the in-flight budget until it
/// has been written out.
fn respond(
    state: &AppState,
    peer: PeerText,
    review: &Review,
    mutation: Mutation,
    limited: Option<&'static str>,
) -> Response {
    let answer = match review.response_within(&mutation, state.limits.max_patch_bytes) {
        Ok(answer) => answer,
        Err(err) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the response: {err}\n"),
            )
                .into_response();
        }
    };
    let limited = limited.or(answer.patch_dropped.then_some("patch_size"));
    let Some(permit) = state.charge(answer.json.len()) else {
        // A bound that left the patch out is counted even when the answer is shed.
        count_limited(state, limited);
        return state.shed();
    };
    let mutated = !mutation.patch.is_empty() && !answer.patch_dropped;
    record(
        state,
        peer,
        Outcome::Answered {
            review,
            mutation: &mutation,
            mutated,
            limited,
        },
    );
    // The permit goes back when the last reference to the bytes does, once they are written.
    let body = Bytes::from_owner(Charged {
        json: answer.json,
        _permit: permit,
    });
    ([(header::CONTENT_TYPE, "application/json")], Body::from(body)).into_response()
}

/// What came of one request: everything its metrics and its log lines report.
enum Outcome<'a> {
    Refused(&'a Refused),
    Answered {
        review: &'a Review,
        mutation: &'a Mutation,
        mutated: bool,
        /// The bound that left the patch out (`containers`, `patch_size`).
        limited: Option<&'static str>,
    },
}

/// The one place a request is counted and logged (its duration aside, which [`mutate`] measures).
fn record(state: &AppState, peer: PeerText, outcome: Outcome<'_>) {
    let metrics = &state.metrics;
    match outcome {
        Outcome::Refused(refused) => {
            metrics
                .requests
                .get_or_create(&RequestLabels {
                    kind: "invalid",
                    result: "rejected",
                })
                .inc();
            tracing::warn!(status = %refused.status, %peer, message = refused.message, "admission request rejected");
        }
        Outcome::Answered {
            review,
            mutation,
            mutated,
            limited,
        } => {
            count_limited(state, limited);
            let (kind, result) = request_labels(&review.subject, !mutated);
            metrics.requests.get_or_create(&RequestLabels { kind, result }).inc();
            audit(review, mutation, mutated, peer);
            for &cloud in &mutation.warning_clouds {
                metrics.warnings.get_or_create(&CloudLabels { cloud }).inc();
            }
            if let Subject::Pod(_) = review.subject
                && mutated
            {
                for (cloud, _) in &mutation.identities {
                    metrics.mutations.get_or_create(&CloudLabels { cloud }).inc();
                }
                for &setting in &mutation.gaps {
                    metrics
                        .mutations_missing
                        .get_or_create(&SettingLabels { setting })
                        .inc();
                }
            }
        }
    }
}

fn count_limited(state: &AppState, limited: Option<&'static str>) {
    if let Some(reason) = limited {
        state
            .metrics
            .reviews_limited
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}

struct Charged {
    json: Vec<u8>,
    _permit: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.json
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
    let json = serde_json::json!({"apiVersion": workload_identity_core::admission::API_VERSION, "kind": "AdmissionReview", "response": {"uid": uid, "allowed": true}});
    ([(header::CONTENT_TYPE, "application/json")], json.to_string()).into_response()
}

fn request_labels(subject: &Subject, unchanged: bool) -> (&'static str, &'static str) {
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

/// The audit trail: every identity given, with who got it and who asked.
fn audit(review: &Review, mutation: &Mutation, mutated: bool, peer: PeerText) {
    let namespace = review.object_namespace();
    match &review.subject {
        Subject::Pod(pod) if mutated => tracing::info!(
            uid = review.uid,
            %peer,
            namespace,
            pod = pod.metadata.display_name(),
            service_account = pod.service_account_name(),
            identities = ?mutation.identities,
            "pod mutated"
        ),
        Subject::ServiceAccount(sa) if mutated => tracing::info!(
            uid = review.uid,
            %peer,
            namespace,
            service_account = sa.metadata.display_name(),
            identities = ?mutation.identities,
            "service account annotated"
        ),
        _ => tracing::debug!(uid = review.uid, %peer, namespace, "request left untouched"),
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
            tracing::warn!(uid = review.uid, %peer, namespace, warning, "admission warning");
        }
    }
}

/// Any tenant can make each create attempt warn; the log must not grow with such a flood.
const WARNING_LINES_PER_SECOND: u32 = 50;

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

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use super::*;

    const CONFIG: &str = "identities:\n  - namespace: team-a\n    serviceAccount: app\n    aws: {roleArn: \"arn:aws:iam::111122223333:role/app\"}\n";

    fn limits() -> ReviewLimits {
        ReviewLimits {
            max_containers: 250,
            max_patch_bytes: 1024 * 1024,
            max_in_flight_bytes: 32 * 1024 * 1024,
        }
    }

    fn state(limits: ReviewLimits) -> Arc<AppState> {
        let metrics = Arc::new(Metrics::default());
        let config = LiveConfig::new(Default::default(), metrics.clone()).expect("defaults");
        config.apply("test", CONFIG);
        Arc::new(AppState::new(config, ServiceAccounts::Standalone, metrics, limits))
    }

    fn review(containers: usize) -> Vec<u8> {
        let containers: Vec<Value> = (0..containers).map(|i| json!({"name": format!("c{i}")})).collect();
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "namespace": "team-a", "operation": "CREATE",
                "object": {"metadata": {"name": "p"}, "spec": {"serviceAccountName": "app", "containers": containers}}
            }
        }))
        .expect("serializes")
    }

    fn request(content_type: &str, body: Vec<u8>) -> Request {
        Request::post("/mutate")
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .expect("request")
    }

    async fn call(state: &Arc<AppState>, request: Request) -> Response {
        call_with(state, REQUEST_TIMEOUT, request).await
    }

    async fn call_with(state: &Arc<AppState>, timeout: Duration, request: Request) -> Response {
        admission_router(state.clone(), 3 * 1024 * 1024, timeout, false)
            .oneshot(request)
            .await
            .expect("infallible")
    }

    async fn text_of(response: Response) -> (StatusCode, String) {
        let status = response.status();
        let body = to_bytes(response.into_body(), usize::MAX).await.expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_body_that_is_not_a_review_is_a_bad_request() {
        let state = state(limits());
        let (status, text) = text_of(call(&state, request("application/json", b"{\"kind\": 3".to_vec())).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert!(!text.is_empty());
        assert!(
            state
                .metrics
                .encode()
                .contains("requests_total{kind=\"invalid\",result=\"rejected\"} 1"),
            "{}",
            state.metrics.encode()
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_declared_or_streamed() {
        let state = state(limits());
        let (status, text) =
            text_of(call(&state, request("application/json", vec![b' '; 3 * 1024 * 1024 + 1])).await).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
        assert!(text.contains("larger than 3145728 bytes"), "{text}");
        // No declared length: refused once the frames read pass the limit.
        let chunks = futures::stream::iter(
            [vec![b' '; 2 * 1024 * 1024], vec![b' '; 2 * 1024 * 1024]].map(Ok::<_, std::io::Error>),
        );
        let streamed = Request::post("/mutate")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(chunks))
            .expect("request");
        assert_eq!(call(&state, streamed).await.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn a_request_not_received_in_time_is_answered_408() {
        let state = state(limits());
        let never = futures::stream::pending::<Result<Bytes, std::io::Error>>();
        let stalled = Request::post("/mutate")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, 100)
            .body(Body::from_stream(never))
            .expect("request");
        let (status, text) = text_of(call_with(&state, Duration::from_millis(50), stalled).await).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{text}");
        assert_eq!(text, "request not received and answered within 0.05 s\n");
        assert_eq!(Seconds(REQUEST_TIMEOUT).to_string(), "10 s");
    }

    #[tokio::test]
    async fn probes_answer_liveness_and_readiness() {
        let state = state(limits());
        let get = |path: &str| Request::get(path).body(Body::empty()).expect("request");
        assert_eq!(
            text_of(call(&state, get("/healthz")).await).await,
            (StatusCode::OK, "ok".to_owned())
        );
        assert_eq!(
            text_of(call(&state, get("/readyz")).await).await,
            (StatusCode::OK, "ok".to_owned())
        );
        state.shutting_down.store(true, Ordering::Release);
        let (status, text) = text_of(call(&state, get("/readyz")).await).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
        assert_eq!(
            text_of(call(&state, get("/healthz")).await).await.0,
            StatusCode::OK,
            "alive while draining"
        );
    }

    async fn json_of(response: Response) -> (StatusCode, Value) {
        let status = response.status();
        let body = to_bytes(response.into_body(), usize::MAX).await.expect("body");
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn the_media_type_is_parsed_not_prefix_matched() {
        let state = state(limits());
        for accepted in [
            "application/json",
            "APPLICATION/JSON",
            "Application/Json ; charset=UTF-8",
            "application/json; charset=\"utf-8\"",
        ] {
            let (status, answer) = json_of(call(&state, request(accepted, review(1))).await).await;
            assert_eq!(status, StatusCode::OK, "{accepted}");
            assert!(answer["response"]["patch"].is_string(), "{accepted}: {answer}");
        }
        for refused in [
            "application/jsonxyz",
            "application/json-seq",
            "application/json; charset=latin1",
            "text/json",
            "",
        ] {
            let response = call(&state, request(refused, review(1))).await;
            assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{refused:?}");
        }
    }

    #[tokio::test]
    async fn pods_over_the_container_bound_are_allowed_unchanged_with_a_warning() {
        let state = state(limits());
        let (status, answer) = json_of(call(&state, request("application/json", review(250))).await).await;
        assert_eq!(status, StatusCode::OK);
        assert!(answer["response"]["patch"].is_string(), "250 containers are patched");

        let (status, answer) = json_of(call(&state, request("application/json", review(251))).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["response"]["allowed"], true);
        assert!(answer["response"].get("patch").is_none(), "{answer}");
        let warning = answer["response"]["warnings"][0].as_str().expect("a warning");
        assert!(warning.contains("251 containers"), "{warning}");
        assert!(
            state
                .metrics
                .encode()
                .contains("workload_identity_webhook_admission_limited_total{reason=\"containers\"} 1"),
            "{}",
            state.metrics.encode()
        );
        // Warnings by cloud: the first Pod's missing AWS region, the second's container count.
        let metrics = state.metrics.encode();
        for line in [
            "workload_identity_webhook_admission_warnings_total{cloud=\"aws\"} 1",
            "workload_identity_webhook_admission_warnings_total{cloud=\"none\"} 1",
        ] {
            assert!(metrics.contains(line), "{line}: {metrics}");
        }
    }

    #[tokio::test]
    async fn objects_with_more_list_and_map_entries_than_the_bound_are_left_untouched() {
        let state = state(limits());
        let empty_containers = vec![json!({}); workload_identity_core::admission::MAX_ENTRIES + 1];
        let annotations: serde_json::Map<String, Value> = (0..=workload_identity_core::admission::MAX_ENTRIES)
            .map(|index| (format!("a{index}"), json!("")))
            .collect();
        for (what, metadata, containers) in [
            ("containers", json!({"name": "p"}), empty_containers),
            (
                "annotations",
                json!({"name": "p", "annotations": annotations}),
                vec![json!({"name": "c"})],
            ),
        ] {
            let body = serde_json::to_vec(&json!({
                "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {
                    "uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "namespace": "team-a", "operation": "CREATE",
                    "object": {"metadata": metadata, "spec": {"serviceAccountName": "app", "containers": containers}}
                }
            }))
            .expect("serializes");
            let (status, answer) = json_of(call(&state, request("application/json", body)).await).await;
            assert_eq!(status, StatusCode::OK, "{what}");
            assert!(answer["response"].get("patch").is_none(), "{what}: {answer}");
            let warning = answer["response"]["warnings"][0].as_str().expect("a warning");
            assert!(warning.contains("too many list and map entries"), "{what}: {warning}");
        }
        // A large but real Pod is still read and patched.
        let (_, answer) = json_of(call(&state, request("application/json", review(250))).await).await;
        assert!(answer["response"]["patch"].is_string());
    }

    #[tokio::test]
    async fn a_patch_over_the_size_bound_is_left_out_with_a_warning() {
        let state = state(ReviewLimits {
            max_patch_bytes: 4096,
            ..limits()
        });
        let (_, small) = json_of(call(&state, request("application/json", review(2))).await).await;
        assert!(small["response"]["patch"].is_string(), "a small patch fits: {small}");
        let (status, answer) = json_of(call(&state, request("application/json", review(60))).await).await;
        assert_eq!(status, StatusCode::OK);
        assert!(answer["response"].get("patch").is_none(), "{answer}");
        assert!(answer["response"].get("patchType").is_none(), "{answer}");
        let warnings = answer["response"]["warnings"].as_array().expect("warnings");
        assert!(
            warnings
                .iter()
                .any(|w| w.as_str().is_some_and(|w| w.contains("4096 bytes"))),
            "{warnings:?}"
        );
        assert!(
            state
                .metrics
                .encode()
                .contains("workload_identity_webhook_admission_limited_total{reason=\"patch_size\"} 1")
        );
        // Nothing counts it as mutated, nor as missing the region (CONFIG sets none).
        let metrics = state.metrics.encode();
        assert!(metrics.contains("pod_mutations_total{cloud=\"aws\"} 1"), "{metrics}");
        assert!(
            metrics.contains("workload_identity_webhook_pod_mutations_missing_total{setting=\"aws_region\"} 1"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn requests_beyond_the_in_flight_budget_are_shed_until_answers_are_written() {
        // Each small review is charged 16 KiB while it runs and its answer 16 KiB until the
        // answer's bytes are gone (written out, or here dropped): with three answers held, 16 KiB
        // are left, less than a review and its answer need.
        let state = state(ReviewLimits {
            max_in_flight_bytes: 64 * 1024,
            ..limits()
        });
        let mut held = Vec::new();
        for _ in 0..3 {
            let response = call(&state, request("application/json", review(1))).await;
            assert_eq!(response.status(), StatusCode::OK);
            held.push(response);
        }
        let shed = call(&state, request("application/json", review(1))).await;
        assert_eq!(
            shed.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "unwritten answers still count"
        );
        assert_eq!(shed.headers()[header::RETRY_AFTER], "1");
        assert!(
            state
                .metrics
                .encode()
                .contains("workload_identity_webhook_admission_shed_total 1")
        );
        let (_, answer) = json_of(held.pop().expect("held")).await;
        assert!(answer["response"]["patch"].is_string());
        let again = call(&state, request("application/json", review(1))).await;
        assert_eq!(
            again.status(),
            StatusCode::OK,
            "the budget came back with the written answer"
        );
        // A body declared larger than what is left is shed before it is read.
        drop(again);
        let mut large = request("application/json", review(1));
        large.headers_mut().insert(header::CONTENT_LENGTH, (40 * 1024).into());
        assert_eq!(call(&state, large).await.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
