//! The admission endpoint and the probes: each request from its bytes to its answer.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use tower::ServiceBuilder;

use super::AppState;
use super::audit::{Outcome, count_limited, record};
use crate::shell::connections::Peer;
use crate::shell::watch::LookupError;
use workload_identity_core::admission::config_map::{self, ConfigMapName};
use workload_identity_core::admission::{Review, Subject};
use workload_identity_core::config::Config;
use workload_identity_core::echo::{Echo, visible};
use workload_identity_core::model::ServiceAccount;
use workload_identity_core::mutation::Mutation;
use workload_identity_core::policy::Labels;

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
    let (budget, timeouts) = (state.clone(), state.clone());
    Router::new()
        .route("/mutate", mutate)
        .route("/validate-config", post(validate_config))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .route_layer(axum::middleware::from_fn(move |request: Request, next: Next| {
            charge_and_read(budget.clone(), max_body_bytes, request, next)
        }))
        // Bounds a client that sends its body slowly, and a slow ServiceAccount look-up; the
        // apiserver itself gives up after the webhook's timeoutSeconds (at most 30 s).
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(move |_: tower::BoxError| {
                    let state = timeouts.clone();
                    async move {
                        // Charged to the total only: the timeout layer does not see the client.
                        state.refusal(
                            StatusCode::REQUEST_TIMEOUT,
                            &format!("request not received and answered within {}", Seconds(request_timeout)),
                            None,
                        )
                    }
                }))
                .timeout(request_timeout),
        )
        .merge(probe_router())
        .with_state(state)
}

/// Charges the request to the in-flight budget before its body is read: the declared length (the
/// apiserver always sends one), else the largest body allowed; then reads it whole.
async fn charge_and_read(state: Arc<AppState>, max_body_bytes: usize, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
    let peer = request.extensions().get::<Peer>().map(|Peer(address)| address.ip());
    let Some(charge) = state.charge(declared.unwrap_or(max_body_bytes).min(max_body_bytes), peer) else {
        return state.shed();
    };
    let (parts, body) = request.into_parts();
    let body = match read_body(body, declared, max_body_bytes).await {
        Ok(body) => body,
        Err((status, message)) => return state.refusal(status, &message, peer),
    };
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    drop(charge);
    response
}

pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A duration as the timeout message says it: `10 s`, `0.05 s`.
pub(super) struct Seconds(pub(super) Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} s", self.0.as_secs_f64())
    }
}

/// The whole body in one buffer of its declared length: collecting the frames and then joining
/// them held each large body twice.
async fn read_body(body: Body, declared: Option<usize>, max_bytes: usize) -> Result<Bytes, (StatusCode, String)> {
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {max_bytes} bytes"),
        )
    };
    if declared.is_some_and(|declared| declared > max_bytes) {
        return Err(too_large());
    }
    let mut buffer = Vec::with_capacity(declared.unwrap_or(0));
    let mut frames = body.into_data_stream();
    while let Some(frame) = futures::StreamExt::next(&mut frames).await {
        let frame = frame.map_err(|err| (StatusCode::BAD_REQUEST, format!("reading the body: {err}")))?;
        if buffer.len() + frame.len() > max_bytes {
            return Err(too_large());
        }
        buffer.extend_from_slice(&frame);
    }
    Ok(Bytes::from(buffer))
}

pub(super) fn probe_router() -> Router<Arc<AppState>> {
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

pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
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

/// The validating admission of the webhook's ConfigMap: a `config.yaml` the webhook would refuse
/// is refused at `kubectl apply`, with each problem; the running configuration is not touched.
async fn validate_config(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer = PeerText(peer.map(|Extension(Peer(address))| address));
    if let Err(refused) = check_media_type(&headers) {
        return refused.into_response(&state, peer);
    }
    // Without a ConfigMap to guard, a name no ConfigMap has: every one is allowed.
    let unguarded = ConfigMapName {
        namespace: String::new(),
        name: String::new(),
    };
    let ours = state.config_map.as_ref().unwrap_or(&unguarded);
    match config_map::review(&body, ours, &state.config.flag_settings()) {
        Ok(verdict) => {
            if let Some(reason) = &verdict.refused {
                tracing::warn!(%peer, namespace = %ours.namespace, config_map = %ours.name, reason = %visible(reason), "ConfigMap refused at admission");
            }
            match state.charged_body(verdict.json, peer.ip()) {
                Some(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
                None => state.shed(),
            }
        }
        Err(err) => Refused {
            status: StatusCode::BAD_REQUEST,
            message: err.to_string(),
        }
        .into_response(&state, peer),
    }
}

/// The client's address in logs (absent when the router is called in-process).
#[derive(Clone, Copy)]
pub(super) struct PeerText(Option<SocketAddr>);

impl PeerText {
    /// The client's IP: what its shares of the budget and of the look-ups are kept by.
    pub(super) fn ip(self) -> Option<IpAddr> {
        self.0.map(|address| address.ip())
    }
}

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
pub(super) struct Refused {
    pub(super) status: StatusCode,
    pub(super) message: String,
}

impl Refused {
    fn into_response(self, state: &AppState, peer: PeerText) -> Response {
        record(state, peer, Outcome::Refused(&self));
        state.refusal(self.status, &self.message, peer.ip())
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
            message: format!("content type must be application/json, got {:?}", Echo(content_type)),
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
    let config = state.config.current();
    let labels = namespace_labels(state, peer, review, &config).await;
    let labels = labels.as_ref().map_or(Labels::Unknown, Labels::Known);
    let mut mutation = review.mutation(service_account.as_ref(), labels, &config);
    if let Some(warning) = lookup_warning {
        mutation.warn(warning);
    }
    mutation
}

/// The labels of the object's namespace, read only when a policy rule selects by label.
async fn namespace_labels(
    state: &AppState,
    peer: PeerText,
    review: &Review,
    config: &Config,
) -> Option<BTreeMap<String, String>> {
    let namespaces = state.namespaces.as_ref()?;
    let judged = matches!(review.subject, Subject::Pod(_) | Subject::ServiceAccount(_));
    if !judged || !config.policy.selects_by_label() {
        return None;
    }
    namespaces.get(review.object_namespace(), peer.ip()).await
}

async fn look_up_service_account(
    state: &AppState,
    peer: PeerText,
    namespace: &str,
    name: &str,
) -> (Option<ServiceAccount>, Option<String>) {
    match state.service_accounts.get(namespace, name, peer.ip()).await {
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
            return state.refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot encode the response: {err}"),
                peer.ip(),
            );
        }
    };
    let limited = limited.or(answer.patch_dropped.then_some("patch_size"));
    let mutated = !mutation.patch.is_empty() && !answer.patch_dropped;
    let Some(body) = state.charged_body(answer.json, peer.ip()) else {
        // A bound that left the patch out is counted even when the answer is shed.
        count_limited(state, limited);
        return state.shed();
    };
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
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
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
