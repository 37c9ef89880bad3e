//! workload-identity-emulator: local token services that verify ServiceAccount tokens as the clouds do and answer
//! with short-lived, clearly fake credentials: AWS STS `AssumeRoleWithWebIdentity`, the EKS Pod
//! Identity agent, the Entra ID token endpoint and Google STS + IAM Credentials (+ the project
//! look-up google-auth makes). For SDK tests and
//! local clusters, where the real services cannot trust a private issuer.
//!
//! Every grant and refusal is logged (`decision` events with service, identity, subject, reason)
//! and counted (`GET /metrics`), so a test can assert who got which identity.
//!
//! In a cluster (`manifests/components/emulator`) the trust rules file is a mounted ConfigMap,
//! re-read on change (a broken edit is logged and the last good rules stay), and the HTTPS
//! certificate is self-managed like the webhook's, its CA published in a ConfigMap for workloads.

pub mod aws;
pub mod azure;
pub mod google;
pub mod jwt;
pub mod rules;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::{Args, Parser};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use ring::rand::{SecureRandom, SystemRandom};

use jwt::{Claims, KeySet, Refusal};
use rules::{Rules, Trusts};
use workload_identity_core::validate::DEFAULT_CLUSTER_DOMAIN;
use workload_identity_webhook::shell::certificates::{self, BundleTarget};
use workload_identity_webhook::shell::connections::{self, ConnectionLimits, Port};
use workload_identity_webhook::shell::duration;
use workload_identity_webhook::shell::logging::LogArgs;
use workload_identity_webhook::shell::metrics::Metrics;
use workload_identity_webhook::shell::supervisor::Supervisor;
use workload_identity_webhook::shell::tls;

#[derive(Parser, Debug)]
#[command(
    name = "workload-identity-emulator",
    version,
    about = "Local token services (AWS STS, EKS Pod Identity, Entra ID, Google STS and IAM Credentials) that verify ServiceAccount tokens as the clouds do and hand out fake credentials. For tests and local clusters only."
)]
pub struct EmulateArgs {
    /// Trust rules (YAML): which ServiceAccounts may become which role, app or service account.
    #[arg(long, env = "WIW_EMULATE_RULES")]
    pub rules: PathBuf,

    /// The issuer's JWKS document. Without it, discovery and JWKS are read from the Kubernetes API
    /// (`/.well-known/openid-configuration`, `/openid/v1/jwks`) with the in-cluster credentials.
    #[arg(long, env = "WIW_EMULATE_JWKS_FILE", requires = "issuer")]
    pub jwks_file: Option<PathBuf>,

    /// The trusted token issuer (`iss`); taken from the apiserver's discovery document when not set.
    #[arg(long, env = "WIW_EMULATE_ISSUER")]
    pub issuer: Option<String>,

    /// Start even when the issuer is a managed cloud's (EKS, GKE, AKS). Without it the emulator
    /// refuses: in such a cluster it would compete with the real services (EKS Pod Identity's
    /// 169.254.170.23:80) and receive real tokens over plain http.
    #[arg(long, env = "WIW_EMULATE_ALLOW_MANAGED_CLOUD_ISSUER")]
    pub allow_managed_cloud_issuer: bool,

    /// HTTPS listen addresses (repeatable): the cloud host names resolve here.
    #[arg(
        long = "https-listen",
        env = "WIW_EMULATE_HTTPS_LISTEN",
        value_delimiter = ',',
        default_value = "0.0.0.0:8443"
    )]
    pub https_listen: Vec<SocketAddr>,

    /// Plain-HTTP listen addresses (repeatable), e.g. the Pod Identity agent's 169.254.170.23:80.
    #[arg(
        long = "http-listen",
        env = "WIW_EMULATE_HTTP_LISTEN",
        value_delimiter = ',',
        default_value = "0.0.0.0:8080"
    )]
    pub http_listen: Vec<SocketAddr>,

    /// PEM certificate for the HTTPS listeners, with the cloud host names as SANs.
    #[arg(long, env = "WIW_EMULATE_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "WIW_EMULATE_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,

    /// How often the rules file is checked for changes (a broken edit keeps the last good rules).
    #[arg(long, env = "WIW_EMULATE_RULES_RELOAD_INTERVAL", default_value = "2s", value_parser = duration::parse)]
    pub rules_reload_interval: Duration,

    #[command(flatten)]
    pub certificate: EmulateCertificateArgs,

    #[command(flatten)]
    pub log: LogArgs,
}

/// The self-managed HTTPS certificate in a cluster, as the webhook's (`serve --manage-certificate`),
/// with the CA published in a ConfigMap instead of a webhook configuration.
#[derive(Args, Debug)]
pub struct EmulateCertificateArgs {
    /// Keep a CA and certificate for the emulator's Service names in a Secret of its namespace and
    /// publish the CA in --ca-config-map.
    #[arg(long, env = "WIW_EMULATE_MANAGE_CERTIFICATE", conflicts_with = "tls_cert_file")]
    pub manage_certificate: bool,

    /// The Secret that holds the managed certificate (it must exist; only its data is written).
    #[arg(
        long,
        env = "WIW_EMULATE_CERTIFICATE_SECRET",
        default_value = "workload-identity-emulator-tls"
    )]
    pub certificate_secret: String,

    /// The ConfigMap whose key `ca.crt` receives the CA (it must exist; only its data is written).
    #[arg(
        long,
        env = "WIW_EMULATE_CA_CONFIG_MAP",
        default_value = "workload-identity-emulator-ca"
    )]
    pub ca_config_map: String,

    /// The Service in front of the emulator: the certificate names `<service>.<namespace>.svc`.
    #[arg(long, env = "WIW_EMULATE_SERVICE_NAME", default_value = "workload-identity-emulator")]
    pub service_name: String,

    /// Extra DNS names or IP addresses for the managed certificate (repeatable).
    #[arg(
        long = "certificate-san",
        env = "WIW_EMULATE_CERTIFICATE_SANS",
        value_delimiter = ','
    )]
    pub certificate_sans: Vec<String>,

    /// Namespace of the Secret and ConfigMap; defaults to the namespace the emulator runs in.
    #[arg(long, env = "WIW_EMULATE_NAMESPACE")]
    pub namespace: Option<String>,

    /// How often the managed certificate is reconciled.
    #[arg(long, env = "WIW_EMULATE_CERTIFICATE_CHECK_INTERVAL", default_value = "60s", value_parser = duration::parse)]
    pub certificate_check_interval: Duration,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    /// `success` or `failure`.
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    service: &'static str,
    /// `grant`, `refusal` or `stray` (a request no emulated service answers).
    outcome: &'static str,
    reason: &'static str,
}

/// The shared state of every token service.
pub struct Emulator {
    /// Replaced whole when the rules file changes.
    trusts: ArcSwap<Trusts>,
    google_tokens: Mutex<HashMap<String, google::Issued>>,
    decisions: Family<DecisionLabels, Counter>,
    rules_reloads: Family<ReloadLabels, Counter>,
    registry: Registry,
}

impl Emulator {
    pub fn new(trusts: Trusts) -> Emulator {
        let mut registry = Registry::with_prefix("workload_identity_emulator");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register("decisions", "Token requests by service and outcome", decisions.clone());
        let rules_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "rules_reloads",
            "Changes of the trust rules file by result",
            rules_reloads.clone(),
        );
        Emulator {
            trusts: ArcSwap::from_pointee(trusts),
            google_tokens: Mutex::default(),
            decisions,
            rules_reloads,
            registry,
        }
    }

    /// The trust in force.
    pub fn trusts(&self) -> arc_swap::Guard<Arc<Trusts>> {
        self.trusts.load()
    }

    /// The rules file's text, applied unless it does not parse (then the rules in force stay).
    pub fn apply_rules(&self, source: &str, text: &str) {
        match Rules::parse(text) {
            Ok(rules) => {
                let current = self.trusts.load();
                self.trusts.store(Arc::new(Trusts {
                    issuer: current.issuer.clone(),
                    keys: current.keys.clone(),
                    rules,
                }));
                tracing::info!(source, "trust rules loaded");
                self.rules_reloads
                    .get_or_create(&ReloadLabels { result: "success" })
                    .inc();
            }
            Err(err) => {
                tracing::error!(source, error = %format!("{err:#}"), "trust rules refused; the last good rules stay in force");
                self.rules_reloads
                    .get_or_create(&ReloadLabels { result: "failure" })
                    .inc();
            }
        }
    }

    /// Re-reads the rules file every `interval` and applies each new text (a mounted ConfigMap
    /// changes when the kubelet swaps its `..data` link; the content is compared, not the time).
    pub async fn watch_rules(self: Arc<Self>, path: PathBuf, mut last: String, interval: Duration) {
        let source = path.display().to_string();
        let mut failing: Option<String> = None;
        loop {
            tokio::time::sleep(interval).await;
            match tokio::fs::read_to_string(&path).await {
                Ok(text) => {
                    failing = None;
                    if text != last {
                        self.apply_rules(&source, &text);
                        last = text;
                    }
                }
                Err(err) => {
                    // Each distinct failure is logged once, not at every poll.
                    let error = err.to_string();
                    if failing.as_ref() != Some(&error) {
                        tracing::error!(
                            source,
                            error,
                            "cannot read the trust rules; the last good rules stay in force"
                        );
                        self.rules_reloads
                            .get_or_create(&ReloadLabels { result: "failure" })
                            .inc();
                        failing = Some(error);
                    }
                }
            }
        }
    }

    /// Logs and counts a decision on a verified token.
    fn record(
        &self,
        service: &'static str,
        identity: &str,
        decision: Result<Claims, Refusal>,
    ) -> Result<Claims, Refusal> {
        self.log(
            service,
            identity,
            decision.as_ref().map(|claims| claims.subject.as_str()),
        );
        decision
    }

    /// Logs and counts a decision on an already known subject.
    fn record_subject(
        &self,
        service: &'static str,
        identity: &str,
        decision: Result<String, Refusal>,
    ) -> Result<String, Refusal> {
        self.log(service, identity, decision.as_ref().map(String::as_str));
        decision
    }

    fn log(&self, service: &'static str, identity: &str, decision: Result<&str, &Refusal>) {
        match decision {
            Ok(subject) => {
                tracing::info!(service, identity, subject, outcome = "grant", "decision");
                self.count(service, "grant", "");
            }
            Err(refusal) => {
                let subject = match refusal {
                    Refusal::UntrustedSubject { subject, .. } => subject.as_str(),
                    _ => "",
                };
                let reason = refusal.reason();
                tracing::warn!(service, identity, subject, outcome = "refusal", reason, detail = %refusal, "decision");
                self.count(service, "refusal", reason);
            }
        }
    }

    fn count(&self, service: &'static str, outcome: &'static str, reason: &'static str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                service,
                outcome,
                reason,
            })
            .inc();
    }

    /// A request no emulated service answers: logged and counted, and answered with `answer`.
    fn stray(&self, what: &str, answer: impl FnOnce() -> Response) -> Response {
        tracing::warn!(what, outcome = "stray", "stray request");
        self.count("stray", "stray", "");
        answer()
    }
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `2026-01-02T03:04:05Z`, the form the SDKs parse.
pub fn rfc3339(unix: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `bytes` random bytes as hex, for fake credentials and request ids.
pub fn random_id(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    // The system RNG only fails where no entropy source exists at all; zeros still mark a fake.
    let _ = SystemRandom::new().fill(&mut buffer);
    buffer.iter().map(|byte| format!("{byte:02x}")).collect()
}

async fn metrics(State(emulator): State<Arc<Emulator>>) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &emulator.registry);
    text
}

async fn fallback(
    State(emulator): State<Arc<Emulator>>,
    method: Method,
    uri: Uri,
    headers: axum::http::HeaderMap,
) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    emulator.stray(&format!("{method} {host}{uri}"), || {
        (StatusCode::NOT_FOUND, "not an emulated endpoint\n").into_response()
    })
}

/// Logs each request (debug) and gives HTTP/2 requests, whose host is the URI's authority, a
/// `Host` header, so handlers see the host the client called either way.
async fn log_request<B>(mut request: axum::http::Request<B>) -> axum::http::Request<B> {
    if !request.headers().contains_key(header::HOST)
        && let Some(authority) = request.uri().authority()
        && let Ok(value) = authority.as_str().parse()
    {
        request.headers_mut().insert(header::HOST, value);
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    tracing::debug!(method = %request.method(), host, uri = %request.uri(), "request");
    request
}

/// Every service on one router: the clouds' paths do not overlap, so one listener serves all
/// host names.
pub fn router(emulator: Arc<Emulator>) -> Router {
    Router::new()
        // AWS STS (form POST, or GET with the query)
        .route(
            "/",
            post(aws::assume_role_with_web_identity).get(aws::assume_role_with_web_identity),
        )
        // EKS Pod Identity agent
        .route("/v1/credentials", get(aws::pod_identity_credentials))
        // Entra ID
        .route("/common/discovery/instance", get(azure::instance_discovery))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(azure::tenant_discovery),
        )
        .route("/{tenant}/oauth2/v2.0/token", post(azure::token))
        // Google STS and IAM Credentials
        .route("/v1/token", post(google::sts_token))
        .route("/v1/introspect", post(google::introspect))
        .route(
            "/v1/projects/{project}/serviceAccounts/{resource}",
            post(google::generate_access_token),
        )
        // Cloud Resource Manager (google-auth's project id look-up)
        .route("/v1/projects/{project}", get(google::project))
        .route("/metrics", get(metrics))
        .fallback(fallback)
        .layer(axum::middleware::map_request(log_request))
        .with_state(emulator)
}

/// Issuer and JWKS from the Kubernetes API.
async fn discover(client: kube::Client, issuer: Option<String>) -> anyhow::Result<(String, KeySet)> {
    let get = |path: &'static str| {
        let client = client.clone();
        async move {
            let request = axum::http::Request::get(path).body(Vec::new())?;
            client
                .request_text(request)
                .await
                .with_context(|| format!("GET {path}"))
        }
    };
    let issuer = match issuer {
        Some(issuer) => issuer,
        None => {
            let discovery: serde_json::Value = serde_json::from_str(&get("/.well-known/openid-configuration").await?)?;
            discovery["issuer"]
                .as_str()
                .context("discovery document without issuer")?
                .to_owned()
        }
    };
    let keys = KeySet::from_json(get("/openid/v1/jwks").await?.as_bytes())?;
    Ok((issuer, keys))
}

/// The managed cloud whose clusters have `issuer` as their ServiceAccount token issuer: EKS
/// (`https://oidc.eks.<region>.amazonaws.com[.cn]/id/...`), GKE
/// (`https://container.googleapis.com/v1/projects/...`), AKS (`https://*.oic.prod-aks.azure.com/...`).
pub fn managed_cloud(issuer: &str) -> Option<&'static str> {
    let rest = issuer.strip_prefix("https://")?;
    let host = rest.split(['/', ':']).next()?.to_ascii_lowercase();
    let host = host.trim_end_matches('.');
    if host.starts_with("oidc.eks.") && (host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn")) {
        Some("EKS")
    } else if host == "container.googleapis.com" {
        Some("GKE")
    } else if host.ends_with(".oic.prod-aks.azure.com") {
        Some("AKS")
    } else {
        None
    }
}

/// Serves every emulated service until SIGTERM or Ctrl-C, then drains; the rules watch, the
/// certificate and the signal handler run under a [`Supervisor`].
pub async fn run(args: EmulateArgs) -> anyhow::Result<()> {
    let rules_text =
        std::fs::read_to_string(&args.rules).with_context(|| format!("reading {}", args.rules.display()))?;
    let rules = Rules::parse(&rules_text).with_context(|| format!("in {}", args.rules.display()))?;
    let discovered = args.jwks_file.is_none() || args.issuer.is_none();
    let client =
        if discovered || args.certificate.manage_certificate {
            Some(kube::Client::try_default().await.context(
                "connecting to the Kubernetes API (for OIDC discovery give --jwks-file and --issuer instead)",
            )?)
        } else {
            None
        };
    let (issuer, keys) = match (&args.jwks_file, &args.issuer) {
        (Some(path), Some(issuer)) => {
            let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let keys = KeySet::from_json(&text).with_context(|| format!("in {}", path.display()))?;
            (issuer.clone(), keys)
        }
        _ => discover(client.clone().context("no Kubernetes client")?, args.issuer.clone()).await?,
    };
    if let Some(cloud) = managed_cloud(&issuer)
        && !args.allow_managed_cloud_issuer
    {
        anyhow::bail!(
            "the cluster's token issuer {issuer:?} is {cloud}'s: the emulator is for local clusters only (it would compete with the real token services and receive real tokens); pass --allow-managed-cloud-issuer to start anyway"
        );
    }
    tracing::info!(%issuer, keys = keys.len(), "trusting the issuer");
    let emulator = Arc::new(Emulator::new(Trusts { issuer, keys, rules }));
    let mut tasks = Supervisor::default();
    tasks.spawn(
        "rules reload",
        emulator
            .clone()
            .watch_rules(args.rules.clone(), rules_text, args.rules_reload_interval),
    );
    // The emulator's own /metrics counts decisions; these hold only the connection counters.
    let connection_metrics = Arc::new(Metrics::default());
    let certificate = certificates::start(certificate_source(&args, client)?, &connection_metrics, &mut tasks).await?;
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(certificate, None)?));
    let ports = bind(&args, &tls, &router(emulator)).await?;
    let stopper = tasks.stopper();
    tasks.spawn("signal handler", async move {
        workload_identity_webhook::shell::supervisor::termination().await;
        tracing::info!("shutting down: draining open requests");
        stopper.send_replace(true);
    });
    let stopping = tasks.stopping();
    let servers = futures::future::join_all(
        ports
            .into_iter()
            .map(|port| connections::serve(port, connection_metrics.clone(), stopping.clone(), DRAIN_TIMEOUT)),
    );
    tracing::info!(https = ?args.https_listen, http = ?args.http_listen, "emulator ready");
    tokio::select! {
        _ = servers => Ok(()),
        failure = tasks.failed() => Err(failure),
    }
}

/// Files, a Secret kept like the webhook's (its CA in a ConfigMap), or self-signed.
fn certificate_source(args: &EmulateArgs, client: Option<kube::Client>) -> anyhow::Result<certificates::Source> {
    let managed = &args.certificate;
    Ok(match (&args.tls_cert_file, &args.tls_key_file, client) {
        (Some(cert), Some(key), _) => certificates::Source::Files {
            files: tls::CertificateFiles {
                cert: cert.clone(),
                key: key.clone(),
                expected_names: Vec::new(),
            },
            reload_interval: args.rules_reload_interval,
        },
        (_, _, Some(client)) if managed.manage_certificate => {
            let namespace = managed
                .namespace
                .clone()
                .or_else(certificates::own_namespace)
                .context("--manage-certificate needs --namespace outside a Pod")?;
            let mut names = certificates::service_names(&managed.service_name, &namespace, DEFAULT_CLUSTER_DOMAIN);
            names.extend(managed.certificate_sans.iter().cloned());
            certificates::Source::Managed {
                client,
                namespace,
                secret: managed.certificate_secret.clone(),
                bundle: BundleTarget::ConfigMap(managed.ca_config_map.clone()),
                names,
                check_interval: managed.certificate_check_interval,
            }
        }
        _ => certificates::Source::SelfSigned,
    })
}

/// Binds every address first, so that "ready" means every address accepts connections.
async fn bind(args: &EmulateArgs, tls: &tokio_rustls::TlsAcceptor, app: &Router) -> anyhow::Result<Vec<Port>> {
    let mut ports = Vec::new();
    for (address, tls) in args
        .https_listen
        .iter()
        .map(|address| (address, Some(tls.clone())))
        .chain(args.http_listen.iter().map(|address| (address, None)))
    {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {address}"))?;
        ports.push(Port {
            name: if tls.is_some() { "https" } else { "http" },
            listener,
            tls,
            router: app.clone(),
            limits: EMULATOR_CONNECTIONS,
        });
    }
    Ok(ports)
}

/// How long open requests may take to finish after SIGTERM.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

const EMULATOR_CONNECTIONS: ConnectionLimits = ConnectionLimits {
    max_connections: 256,
    first_request_timeout: Duration::from_secs(10),
    idle_timeout: Duration::from_secs(60),
    write_timeout: Duration::from_secs(10),
};
