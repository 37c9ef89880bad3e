//! This webhook side by side with the peers it replaces, in one run on one machine, alternating
//! between them: the AWS pod-identity-webhook and Azure Workload Identity's webhook (built by
//! `scripts/compare.sh`, which runs this and says why the GCP federation webhook is left out). All
//! get the same certificate, run against the same real kube-apiserver (they read ServiceAccounts from it)
//! and are driven over loopback only. The peers listen on every interface, so with a peer this runs
//! only in a network namespace that has loopback alone (`scripts/compare.sh` makes one).
//!
//! (a) Direct load: the same AdmissionReviews (typical Pod; 10 containers + 2 init) sent by the
//!     load generator of `server_load` (benches/support/load.rs) to each webhook: req/s at
//!     saturation, CPU seconds per 10k admissions, latency at a fixed rate, peak RSS. Each peer is
//!     compared with ours on a Pod of a ServiceAccount annotated for its cloud.
//! (b) Through the apiserver: server-side dry-run creates of the same Pods, closed loop, with one
//!     webhook registered at a time (and none): creates/s, the apiserver's own
//!     `apiserver_admission_webhook_admission_duration_seconds` for the webhook, the webhook's CPU.
//!
//! Settings (env):
//!   WIW_BIN                 our release binary (default: <target>/release/workload-identity-webhook)
//!   WIW_PEER_AWS            amazon-eks-pod-identity-webhook binary (unset: left out)
//!   WIW_PEER_AZURE          Azure Workload Identity's webhook binary (unset: left out); it
//!                           serves on port 9443 (controller-runtime's, no flag for it)
//!   WIW_COMPARE_ROUNDS      rounds, each webhook measured once per round (2)
//!   WIW_DURATION_SECONDS    saturation run per measurement (5)
//!   WIW_LATENCY_SECONDS     fixed-rate run per measurement (5)
//!   WIW_RATE                offered load of the fixed-rate run, req/s (100: under every
//!                           webhook's capacity here, about what the apiserver sends below)
//!   WIW_CREATE_SECONDS      dry-run creates per webhook and round (10)
//!   WIW_CREATE_CONCURRENCY  creates in flight (16)

#[path = "../tests/support/control_plane.rs"]
mod control_plane;
#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/load.rs"]
mod load;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use load::{Pool, Protocol, Run, Settings, Target, check_answer, env_or, fixed_rate, mib, percentile, saturate};
use serde_json::{Value, json};
use workload_identity_webhook::shell::certificates::ca::GeneratedCa;

const ROLE_ARN: &str = "arn:aws:iam::111122223333:role/app";
const AZURE_CLIENT_ID: &str = "00000000-0000-0000-0000-0000000000c1";
const AZURE_TENANT_ID: &str = "00000000-0000-0000-0000-0000000000a1";
const UID: &str = "705ab4f5-6393-11e8-b7cc-42010a800002";

/// Which cloud a measurement is about: the peer of that cloud, and the ServiceAccount of its Pods.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Cloud {
    Aws,
    Azure,
}

impl Cloud {
    fn service_account(self) -> &'static str {
        match self {
            Cloud::Aws => "aws-app",
            Cloud::Azure => "azure-app",
        }
    }

    fn annotations(self) -> Value {
        match self {
            Cloud::Aws => json!({"eks.amazonaws.com/role-arn": ROLE_ARN}),
            Cloud::Azure => json!({
                "azure.workload.identity/client-id": AZURE_CLIENT_ID,
                "azure.workload.identity/tenant-id": AZURE_TENANT_ID,
            }),
        }
    }

    /// The variable every webhook sets in the containers for this cloud, proof that it mutated
    /// (the volumes' names differ: Azure Workload Identity's is a hash of the Pod's name).
    fn identity_variable(self) -> &'static str {
        match self {
            Cloud::Aws => "AWS_ROLE_ARN",
            Cloud::Azure => "AZURE_CLIENT_ID",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Ours,
    Peer(Cloud),
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Ours => "workload-identity-webhook",
            Kind::Peer(Cloud::Aws) => "amazon-eks-pod-identity-webhook",
            Kind::Peer(Cloud::Azure) => "azure-workload-identity webhook",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::Peer(Cloud::Aws) => "aws",
            Kind::Peer(Cloud::Azure) => "azure",
        }
    }
}

/// A Pod as a ReplicaSet creates it, of the ServiceAccount annotated for `cloud`, valid for the
/// apiserver; an Azure one carries the label that Azure Workload Identity asks of the Pods it mutates.
fn pod(namespace: &str, cloud: Cloud, containers: usize, init_containers: usize) -> Value {
    let mut pod = fixtures::pod(namespace, cloud.service_account(), containers, init_containers);
    // The apiserver refuses probes on init containers (the direct load never validates them).
    for init in pod["spec"]["initContainers"].as_array_mut().into_iter().flatten() {
        if let Some(init) = init.as_object_mut() {
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                init.remove(probe);
            }
        }
    }
    if cloud == Cloud::Azure {
        pod["metadata"]["labels"]["azure.workload.identity/use"] = json!("true");
    }
    pod
}

#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    containers: usize,
    init_containers: usize,
}

const SHAPES: [Shape; 2] = [
    Shape {
        name: "Pod, 1 container",
        containers: 1,
        init_containers: 0,
    },
    Shape {
        name: "Pod, 10 + 2 init",
        containers: 10,
        init_containers: 2,
    },
];

// ---------------------------------------------------------------------------------------------
// The webhook processes.

struct Webhook {
    kind: Kind,
    child: Child,
    port: u16,
    path: &'static str,
    dir: tempfile::TempDir,
}

impl Webhook {
    fn start(kind: Kind, binary: &Path, ca: &GeneratedCa, kubeconfig: &Path) -> Webhook {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ca.issue(&["127.0.0.1", "localhost"]).unwrap();
        let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert_file, cert).unwrap();
        std::fs::write(&key_file, key).unwrap();
        let (cert_file, key_file) = (cert_file.display(), key_file.display());
        let [mut port, metrics_port, health_port] = [free_port(), free_port(), free_port()];
        let mut command = Command::new(binary);
        command.env("KUBECONFIG", kubeconfig);
        let path = match kind {
            // As the chart runs it, JSON logs at info: one audit line per mutated Pod.
            Kind::Ours => {
                command.args([
                    "serve".to_owned(),
                    format!("--listen=127.0.0.1:{port}"),
                    format!("--metrics-listen=127.0.0.1:{metrics_port}"),
                    format!("--tls-cert-file={cert_file}"),
                    format!("--tls-key-file={key_file}"),
                    "--namespace=wiw-compare-system".to_owned(),
                    "--log-format=json".to_owned(),
                ]);
                command.env("RUST_LOG", "info");
                "/mutate"
            }
            // Its own flags for running outside a cluster (main.go); it listens on all interfaces
            // (no flag for the address).
            Kind::Peer(Cloud::Aws) => {
                command.args([
                    "--in-cluster=false".to_owned(),
                    format!("--kubeconfig={}", kubeconfig.display()),
                    format!("--tls-cert={cert_file}"),
                    format!("--tls-key={key_file}"),
                    format!("--port={port}"),
                    format!("--metrics-port={metrics_port}"),
                    "--logtostderr".to_owned(),
                ]);
                "/mutate"
            }
            // controller-runtime's webhook server: tls.crt and tls.key in a folder, port 9443.
            Kind::Peer(Cloud::Azure) => {
                port = 9443;
                command.args([
                    format!("--webhook-cert-dir={}", dir.path().display()),
                    "--disable-cert-rotation".to_owned(),
                    format!("--health-addr=127.0.0.1:{health_port}"),
                    format!("--metrics-addr=127.0.0.1:{metrics_port}"),
                ]);
                command.env("AZURE_TENANT_ID", AZURE_TENANT_ID);
                command.env("POD_NAMESPACE", "wiw-compare-system");
                "/mutate-v1-pod"
            }
        };
        let log = std::fs::File::create(dir.path().join("webhook.log")).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", binary.display()));
        Webhook {
            kind,
            child,
            port,
            path,
            dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("webhook.log")).unwrap_or_default()
    }

    fn target(&self, ca: &GeneratedCa, protocol: Protocol) -> Target {
        Target::with_path(self.port, &ca.cert_pem, protocol, self.path)
    }

    /// Waits until the webhook patches `body` (its ServiceAccount cache filled), 120 s at most.
    async fn wait_patching(&mut self, ca: &GeneratedCa, body: &Bytes) {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < Duration::from_secs(120) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited with {status}:\n{}", self.kind.label(), self.log());
            }
            let target = self.target(ca, Protocol::H1);
            if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(2), target.tls_stream()).await {
                drop(stream);
                let pool = Pool::open(&target, Protocol::H1, 1).await;
                match pool.send(&target, body, Protocol::H1, &mut None).await {
                    Ok(answer) => match check_answer(&answer, Some(true)) {
                        Ok(()) => return,
                        Err(err) => last = err,
                    },
                    Err(err) => last = err,
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "{} does not patch the Pod after 120 s (last: {last}):\n{}",
            self.kind.label(),
            self.log()
        );
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The network interfaces of this process's network namespace.
fn network_interfaces() -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/net/dev").expect("/proc/self/net/dev");
    // Two header lines, then `name: counters` a line.
    table
        .lines()
        .skip(2)
        .filter_map(|line| Some(line.split_once(':')?.0.trim().to_owned()))
        .collect()
}

fn our_binary() -> PathBuf {
    std::env::var_os("WIW_BIN").map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
            .join("release/workload-identity-webhook")
    })
}

// ---------------------------------------------------------------------------------------------
// (a) Direct load.

/// What the rounds of one (webhook, cloud, shape) measured, summed.
#[derive(Default)]
struct Direct {
    completed: u64,
    seconds: f64,
    server_cpu: f64,
    errors: u64,
    first_error: Option<String>,
    latencies: Vec<u32>,
    peak_rss_kib: u64,
}

impl Direct {
    fn add(&mut self, saturation: &Run, latency: Run, peak_rss_kib: u64) {
        self.completed += saturation.completed;
        self.seconds += saturation.seconds;
        self.server_cpu += saturation.server_cpu;
        self.errors += saturation.errors + latency.errors;
        if self.first_error.is_none() {
            self.first_error = saturation.first_error.clone().or(latency.first_error);
        }
        self.latencies.extend(latency.latencies);
        self.peak_rss_kib = self.peak_rss_kib.max(peak_rss_kib);
    }

    fn rate(&self) -> f64 {
        self.completed as f64 / self.seconds
    }

    fn cpu_per_10k(&self) -> f64 {
        self.server_cpu / self.completed.max(1) as f64 * 10_000.0
    }
}

async fn measure_direct(webhook: &Webhook, ca: &GeneratedCa, body: &Bytes, settings: &Settings) -> (Run, Run, u64) {
    let target = webhook.target(ca, Protocol::H2);
    let pool = Arc::new(Pool::open(&target, Protocol::H2, settings.h2_connections).await);
    load::reset_peak(webhook.pid());
    let saturation = saturate(
        &target,
        pool.clone(),
        Protocol::H2,
        body.clone(),
        settings.concurrency,
        settings,
        webhook.pid(),
    )
    .await;
    let latency = fixed_rate(
        &target,
        pool,
        Protocol::H2,
        vec![body.clone()],
        (settings.rate, settings.latency_duration, settings.warmup),
        |_| {},
    )
    .await;
    let (_, peak) = load::status_kib(webhook.pid());
    (saturation, latency, peak)
}

// ---------------------------------------------------------------------------------------------
// (b) Through the apiserver.

const DURATION_METRIC: &str = "apiserver_admission_webhook_admission_duration_seconds";

/// The apiserver's histogram of one webhook's admission durations: bucket bounds to counts, sum.
#[derive(Default, Clone)]
struct Histogram {
    buckets: BTreeMap<u64, f64>,
    sum: f64,
    count: f64,
}

impl Histogram {
    /// Sums the series of `webhook` (every operation and result) in a /metrics text.
    fn parse(metrics: &str, webhook: &str) -> Histogram {
        let mut histogram = Histogram::default();
        let name_label = format!("name=\"{webhook}\"");
        for line in metrics.lines() {
            if !line.starts_with(DURATION_METRIC) || !line.contains(&name_label) {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value: f64 = value.parse().unwrap_or(0.0);
            let rest = &series[DURATION_METRIC.len()..];
            if rest.starts_with("_bucket") {
                let le = series
                    .split("le=\"")
                    .nth(1)
                    .and_then(|tail| tail.split('"').next())
                    .unwrap_or("+Inf");
                let bound = if le == "+Inf" {
                    u64::MAX
                } else {
                    (le.parse::<f64>().unwrap_or(f64::MAX) * 1e6) as u64
                };
                *histogram.buckets.entry(bound).or_default() += value;
            } else if rest.starts_with("_sum") {
                histogram.sum += value;
            } else if rest.starts_with("_count") {
                histogram.count += value;
            }
        }
        histogram
    }

    fn minus(&self, before: &Histogram) -> Histogram {
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|(bound, count)| (*bound, count - before.buckets.get(bound).copied().unwrap_or(0.0)))
                .collect(),
            sum: self.sum - before.sum,
            count: self.count - before.count,
        }
    }

    /// The quantile in milliseconds, interpolated inside its bucket as Prometheus's
    /// `histogram_quantile` does (so no finer than the apiserver's buckets: 5 ms, 25 ms, 100 ms...).
    fn quantile_ms(&self, q: f64) -> f64 {
        let rank = q * self.count;
        let mut lower = 0.0;
        let mut below = 0.0;
        for (bound, cumulative) in &self.buckets {
            if *cumulative >= rank {
                if *bound == u64::MAX {
                    return lower * 1e3;
                }
                let upper = *bound as f64 / 1e6;
                let inside = cumulative - below;
                let fraction = if inside > 0.0 { (rank - below) / inside } else { 1.0 };
                return (lower + (upper - lower) * fraction) * 1e3;
            }
            lower = *bound as f64 / 1e6;
            below = *cumulative;
        }
        f64::NAN
    }

    fn mean_ms(&self) -> f64 {
        self.sum / self.count * 1e3
    }
}

#[derive(Default)]
struct Creates {
    completed: u64,
    errors: u64,
    first_error: Option<String>,
    seconds: f64,
    latencies: Vec<u32>,
    admission: Histogram,
    webhook_cpu: f64,
}

impl Creates {
    fn rate(&self) -> f64 {
        self.completed as f64 / self.seconds
    }
}

/// A server-side dry-run create: admitted (so through the webhooks) and validated, not stored.
async fn dry_run_create(client: &kube::Client, namespace: &str, pod: &Value) -> Result<Value, String> {
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    control_plane::create_json::<Pod>(client, Some(namespace), &dry_run, pod)
        .await
        .map_err(|err| err.to_string())
}

struct Apiserver {
    client: kube::Client,
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Apiserver {
    async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("apiserver /metrics")
            .text()
            .await
            .expect("apiserver /metrics text")
    }

    async fn create_namespace(&self, name: &str) {
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
        for cloud in [Cloud::Aws, Cloud::Azure] {
            let service_account: ServiceAccount = serde_json::from_value(
                json!({"metadata": {"name": cloud.service_account(), "annotations": cloud.annotations()}}),
            )
            .unwrap();
            Api::<ServiceAccount>::namespaced(self.client.clone(), name)
                .create(&PostParams::default(), &service_account)
                .await
                .unwrap();
        }
    }

    /// Registers `webhook` for Pods of `namespace` only, as the peers' own manifests do (Fail, no
    /// side effects so dry-run creates call it), and waits until the apiserver calls it.
    async fn register(&self, webhook: &Webhook, ca: &GeneratedCa, namespace: &str, cloud: Cloud) -> String {
        let name = format!("{}.compare.workload-identity.dev", webhook.kind.short());
        // The AWS webhook answers with a v1beta1 review that names no apiVersion and kind, which the
        // apiserver accepts for v1beta1 only: its own manifest registers it so.
        let review_version = match webhook.kind {
            Kind::Peer(Cloud::Aws) => "v1beta1",
            _ => "v1",
        };
        let configuration: MutatingWebhookConfiguration = serde_json::from_value(json!({
            "metadata": {"name": namespace},
            "webhooks": [{
                "name": name,
                "admissionReviewVersions": [review_version],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 10,
                "clientConfig": {
                    "url": format!("https://127.0.0.1:{}{}", webhook.port, webhook.path),
                    "caBundle": k8s_openapi::ByteString(ca.cert_pem.as_bytes().to_vec()),
                },
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}],
                "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": [namespace]}]},
            }]
        }))
        .unwrap();
        Api::<MutatingWebhookConfiguration>::all(self.client.clone())
            .create(&PostParams::default(), &configuration)
            .await
            .unwrap();
        let probe = pod(namespace, cloud, 1, 0);
        let started = Instant::now();
        loop {
            let created = dry_run_create(&self.client, namespace, &probe).await;
            if let Ok(created) = &created
                && created["spec"]["containers"][0]["env"]
                    .as_array()
                    .is_some_and(|env| env.iter().any(|v| v["name"] == cloud.identity_variable()))
            {
                return name;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the apiserver does not call {} after 60 s: {created:?}\n{}",
                webhook.kind.label(),
                webhook.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn unregister(&self, namespace: &str) {
        let _ = Api::<MutatingWebhookConfiguration>::all(self.client.clone())
            .delete(namespace, &DeleteParams::default())
            .await;
    }

    /// Closed loop of dry-run creates of `pod` for `duration`, `concurrency` in flight.
    async fn creates(
        &self,
        namespace: &str,
        pod: &Value,
        (duration, concurrency): (Duration, usize),
        webhook: Option<(&Webhook, &str)>,
    ) -> Creates {
        let before = match webhook {
            Some((_, name)) => Histogram::parse(&self.metrics().await, name),
            None => Histogram::default(),
        };
        let cpu_before = webhook.map(|(webhook, _)| load::cpu_seconds(&webhook.pid().to_string()));
        let deadline = Instant::now() + duration;
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (client, namespace, pod) = (self.client.clone(), namespace.to_owned(), pod.clone());
            tasks.push(tokio::spawn(async move {
                let mut run = Creates::default();
                while Instant::now() < deadline {
                    let begin = Instant::now();
                    match dry_run_create(&client, &namespace, &pod).await {
                        Ok(_) => {
                            run.completed += 1;
                            run.latencies.push(begin.elapsed().as_micros() as u32);
                        }
                        Err(err) => {
                            run.errors += 1;
                            run.first_error.get_or_insert(err);
                        }
                    }
                }
                run
            }));
        }
        let started = Instant::now();
        let mut total = Creates::default();
        for task in tasks {
            let run = task.await.unwrap();
            total.completed += run.completed;
            total.errors += run.errors;
            if total.first_error.is_none() {
                total.first_error = run.first_error;
            }
            total.latencies.extend(run.latencies);
        }
        total.seconds = started.elapsed().as_secs_f64();
        if let (Some((webhook, name)), Some(cpu_before)) = (webhook, cpu_before) {
            total.webhook_cpu = load::cpu_seconds(&webhook.pid().to_string()) - cpu_before;
            total.admission = Histogram::parse(&self.metrics().await, name).minus(&before);
        }
        total
    }
}

// ---------------------------------------------------------------------------------------------

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return; // `cargo bench -- --list`
    }
    // Started before the runtime: its readiness probe runs a runtime of its own.
    let control_plane = control_plane::ControlPlane::start().expect("control plane");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
        .block_on(compare(&control_plane));
}

async fn compare(control_plane: &control_plane::ControlPlane) {
    let ours = our_binary();
    assert!(
        ours.exists(),
        "{} not found: run `cargo build --release` (scripts/compare.sh does), or set WIW_BIN",
        ours.display()
    );
    let mut binaries = vec![(Kind::Ours, ours)];
    for (cloud, variable) in [(Cloud::Aws, "WIW_PEER_AWS"), (Cloud::Azure, "WIW_PEER_AZURE")] {
        match std::env::var_os(variable) {
            Some(path) => binaries.push((Kind::Peer(cloud), PathBuf::from(path))),
            None => eprintln!("compare: {variable} not set: {} left out", Kind::Peer(cloud).label()),
        }
    }
    let clouds: Vec<Cloud> = binaries
        .iter()
        .filter_map(|(kind, _)| match kind {
            Kind::Peer(cloud) => Some(*cloud),
            Kind::Ours => None,
        })
        .collect();
    let interfaces = network_interfaces();
    assert!(
        clouds.is_empty() || interfaces == ["lo"],
        "the peers listen on every interface: run them in a network namespace with loopback alone \
         (scripts/compare.sh does); this one has {interfaces:?}"
    );
    let rounds: usize = env_or("WIW_COMPARE_ROUNDS", 2);
    let settings = Settings {
        duration: Duration::from_secs_f64(env_or("WIW_DURATION_SECONDS", 5.0)),
        warmup: Duration::from_secs(1),
        latency_duration: Duration::from_secs_f64(env_or("WIW_LATENCY_SECONDS", 5.0)),
        rate: env_or("WIW_RATE", 100.0),
        concurrency: 64,
        h2_connections: 2,
        h1_connections: 32,
    };
    let create_settings = (
        Duration::from_secs_f64(env_or("WIW_CREATE_SECONDS", 10.0)),
        env_or("WIW_CREATE_CONCURRENCY", 16usize),
    );

    let apiserver = Apiserver {
        client: control_plane.client(),
        url: control_plane.url().to_owned(),
        token: control_plane.admin_token().to_owned(),
        http: reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(control_plane.ca_pem().as_bytes()).unwrap())
            .build()
            .unwrap(),
    };
    // The namespace of the direct load's reviews: the webhooks look its ServiceAccounts up.
    let direct_namespace = fixtures::MAPPED_NAMESPACE;
    apiserver.create_namespace(direct_namespace).await;
    apiserver.create_namespace("wiw-compare-system").await;

    let ca = GeneratedCa::new("compare CA").unwrap();
    let mut webhooks = Vec::new();
    for (kind, binary) in &binaries {
        let mut webhook = Webhook::start(*kind, binary, &ca, control_plane.kubeconfig_path());
        let cloud = match kind {
            Kind::Peer(cloud) => *cloud,
            Kind::Ours => Cloud::Aws,
        };
        let body = Bytes::from(fixtures::review(
            UID,
            direct_namespace,
            pod(direct_namespace, cloud, 1, 0),
        ));
        webhook.wait_patching(&ca, &body).await;
        eprintln!(
            "compare: {} ready (pid {}, {}, RSS {})",
            kind.label(),
            webhook.pid(),
            binary.display(),
            mib(load::status_kib(webhook.pid()).0)
        );
        webhooks.push(webhook);
    }
    let load_average = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!("compare: load average at start {}", load_average().trim());

    // (a) Direct load: in each round, for each shape and cloud, ours and that cloud's peer in
    // turn, ours first in even rounds and second in odd ones.
    let mut direct: BTreeMap<(Kind, Cloud, usize), Direct> = BTreeMap::new();
    for round in 0..rounds {
        for (shape_index, shape) in SHAPES.iter().enumerate() {
            for &cloud in &clouds {
                let body = Bytes::from(fixtures::review(
                    UID,
                    direct_namespace,
                    pod(direct_namespace, cloud, shape.containers, shape.init_containers),
                ));
                let mut order = [Kind::Ours, Kind::Peer(cloud)];
                if round % 2 == 1 {
                    order.reverse();
                }
                for kind in order {
                    let webhook = webhooks.iter().find(|w| w.kind == kind).unwrap();
                    let (saturation, latency, peak) = measure_direct(webhook, &ca, &body, &settings).await;
                    eprintln!(
                        "  round {round} {:<18} {:<8} {:<32} {:>7.0} req/s  {:.3} CPU s/10k  p99 {:.2} ms  peak {}  errors {}",
                        shape.name,
                        format!("{cloud:?}"),
                        kind.label(),
                        saturation.rate(),
                        saturation.server_cpu / saturation.completed.max(1) as f64 * 1e4,
                        percentile(&latency.latencies, 99.0),
                        mib(peak),
                        saturation.errors + latency.errors
                    );
                    direct
                        .entry((kind, cloud, shape_index))
                        .or_default()
                        .add(&saturation, latency, peak);
                }
            }
        }
    }

    // (b) Through the apiserver: no webhook, then each webhook registered alone, rotated by round.
    let mut through: BTreeMap<(Option<Kind>, Cloud, usize), Creates> = BTreeMap::new();
    for round in 0..rounds {
        for (shape_index, shape) in SHAPES.iter().enumerate() {
            for &cloud in &clouds {
                let mut order = [None, Some(Kind::Ours), Some(Kind::Peer(cloud))];
                order.rotate_left(round % 3);
                for kind in order {
                    let namespace = format!(
                        "compare-{}-{}-{shape_index}-{round}",
                        kind.map_or("none", Kind::short),
                        cloud.service_account()
                    );
                    apiserver.create_namespace(&namespace).await;
                    let webhook = kind.map(|kind| webhooks.iter().find(|w| w.kind == kind).unwrap());
                    let name = match webhook {
                        Some(webhook) => Some(apiserver.register(webhook, &ca, &namespace, cloud).await),
                        None => None,
                    };
                    let pod = pod(&namespace, cloud, shape.containers, shape.init_containers);
                    let run = apiserver
                        .creates(&namespace, &pod, create_settings, webhook.zip(name.as_deref()))
                        .await;
                    apiserver.unregister(&namespace).await;
                    let mut latencies = run.latencies.clone();
                    latencies.sort_unstable();
                    eprintln!(
                        "  round {round} {:<18} {:<8} through the apiserver, {:<32} {:>6.0} creates/s  p99 {:.1} ms  errors {}{}",
                        shape.name,
                        format!("{cloud:?}"),
                        kind.map_or("no webhook", Kind::label),
                        run.rate(),
                        percentile(&latencies, 99.0),
                        run.errors,
                        run.first_error
                            .as_deref()
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default()
                    );
                    let total = through.entry((kind, cloud, shape_index)).or_default();
                    total.completed += run.completed;
                    total.errors += run.errors;
                    total.seconds += run.seconds;
                    total.webhook_cpu += run.webhook_cpu;
                    total.latencies.extend(run.latencies);
                    if total.first_error.is_none() {
                        total.first_error = run.first_error;
                    }
                    let admission = std::mem::take(&mut total.admission);
                    total.admission = sum_histograms(&admission, &run.admission);
                }
            }
        }
    }
    eprintln!("compare: load average at end {}", load_average().trim());
    for webhook in &webhooks {
        eprintln!(
            "compare: {} peak RSS over the whole run {}",
            webhook.kind.label(),
            mib(load::status_kib(webhook.pid()).1)
        );
    }
    print_table(&clouds, &mut direct, &mut through, &settings, create_settings, rounds);
}

fn sum_histograms(a: &Histogram, b: &Histogram) -> Histogram {
    let mut sum = a.clone();
    for (bound, count) in &b.buckets {
        *sum.buckets.entry(*bound).or_default() += count;
    }
    sum.sum += b.sum;
    sum.count += b.count;
    sum
}

fn ratio(value: f64, ours: f64) -> String {
    format!("{value:.3} ({:.1}x)", value / ours)
}

fn print_table(
    clouds: &[Cloud],
    direct: &mut BTreeMap<(Kind, Cloud, usize), Direct>,
    through: &mut BTreeMap<(Option<Kind>, Cloud, usize), Creates>,
    settings: &Settings,
    (create_duration, create_concurrency): (Duration, usize),
    rounds: usize,
) {
    println!(
        "\n### Side by side ({rounds} rounds, alternating; direct: {} s closed loop over HTTP/2, {} connections x {} streams, latency at {:.0} req/s for {} s; through the apiserver: dry-run creates, {} in flight, {} s per webhook and round)\n",
        settings.duration.as_secs_f64(),
        settings.h2_connections,
        settings.concurrency,
        settings.rate,
        settings.latency_duration.as_secs_f64(),
        create_concurrency,
        create_duration.as_secs_f64()
    );
    println!(
        "| Pod | webhook | direct req/s | CPU s / 10k admissions (x ours) | p50 | p99 | peak RSS (x ours) | creates/s (no webhook) | admission p50 / p99 / mean, apiserver | create p99 | webhook CPU s / 10k creates | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (shape_index, shape) in SHAPES.iter().enumerate() {
        for &cloud in clouds {
            let baseline = through
                .get_mut(&(None, cloud, shape_index))
                .map(|run| run.rate())
                .unwrap_or(f64::NAN);
            let ours_cpu = direct[&(Kind::Ours, cloud, shape_index)].cpu_per_10k();
            let ours_rss = direct[&(Kind::Ours, cloud, shape_index)].peak_rss_kib as f64;
            for kind in [Kind::Ours, Kind::Peer(cloud)] {
                let run = direct.get_mut(&(kind, cloud, shape_index)).unwrap();
                run.latencies.sort_unstable();
                let created = through.get_mut(&(Some(kind), cloud, shape_index)).unwrap();
                created.latencies.sort_unstable();
                println!(
                    "| {} | {}{} | {:.0} | {} | {:.2} ms | {:.2} ms | {} ({:.1}x) | {:.0} ({:.0}) | {:.1} / {:.1} / {:.1} ms | {:.1} ms | {:.3} | {} |",
                    shape.name,
                    kind.label(),
                    if kind == Kind::Ours {
                        format!(" ({cloud:?} ServiceAccount)")
                    } else {
                        String::new()
                    },
                    run.rate(),
                    ratio(run.cpu_per_10k(), ours_cpu),
                    percentile(&run.latencies, 50.0),
                    percentile(&run.latencies, 99.0),
                    mib(run.peak_rss_kib),
                    run.peak_rss_kib as f64 / ours_rss,
                    created.rate(),
                    baseline,
                    created.admission.quantile_ms(0.5),
                    created.admission.quantile_ms(0.99),
                    created.admission.mean_ms(),
                    percentile(&created.latencies, 99.0),
                    created.webhook_cpu / created.completed.max(1) as f64 * 1e4,
                    run.errors + created.errors,
                );
            }
        }
    }
    for (label, error) in direct
        .iter()
        .filter_map(|((kind, _, _), run)| run.first_error.as_ref().map(|e| (kind.label(), e)))
        .chain(through.iter().filter_map(|((kind, _, _), run)| {
            run.first_error
                .as_ref()
                .map(|e| (kind.map_or("no webhook", Kind::label), e))
        }))
    {
        println!("\nFirst error of {label}: {error}");
    }
}
