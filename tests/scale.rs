//! Memory at scale: the webhook's resident memory with N ServiceAccounts in its reflector cache,
//! measured against a real kube-apiserver and etcd. It prints figures and asserts only correctness
//! (the cache holds all N, answers carry the right identity), so a noisy machine cannot fail it.
//!
//! ```text
//! cargo test --release --test scale -- --ignored --nocapture
//! WIW_SCALE_SERVICE_ACCOUNTS=2000 cargo test --test scale -- --ignored --nocapture   # quick
//! ```
//!
//! Run it in release mode for meaningful RSS figures. Two webhook processes are measured:
//! one started on the empty cluster, which then follows the N creations through its watch, and
//! one started after the creations, which fills its cache from the initial (paged) LIST.

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/webhook.rs"]
mod webhook;

use std::time::{Duration, Instant};

use base64::Engine;
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use webhook::Webhook;

const DEFAULT_SERVICE_ACCOUNTS: usize = 100_000;
const NAMESPACES: usize = 100;
/// Concurrent creations: enough to keep etcd's batched commits full on a small machine.
const CREATIONS_IN_FLIGHT: usize = 64;
const REVIEWS: usize = 5_000;
const REVIEWS_IN_FLIGHT: usize = 16;
/// Holds the webhook's (absent) ConfigMap; only annotations give identities here.
const SYSTEM_NAMESPACE: &str = "wiw-scale-system";
const READY_LIMIT: Duration = Duration::from_secs(600);

fn namespace_of(i: usize) -> String {
    format!("scale-{:03}", i % NAMESPACES)
}

fn name_of(i: usize) -> String {
    format!("app-{i:06}")
}

/// A quarter of the ServiceAccounts carry an IRSA role, each its own so answers can be checked.
fn role_of(i: usize) -> Option<String> {
    i.is_multiple_of(4)
        .then(|| format!("arn:aws:iam::111122223333:role/scale-{i:06}"))
}

/// Metadata as real clusters have it: labels, and on half of them the annotation `kubectl apply`
/// leaves (the whole manifest again), which the webhook's cache strips.
fn service_account(i: usize) -> ServiceAccount {
    let name = name_of(i);
    let labels = json!({
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/part-of": format!("team-{}", i % NAMESPACES),
        "app.kubernetes.io/managed-by": if i.is_multiple_of(2) { "kubectl" } else { "Helm" },
    });
    let mut annotations = serde_json::Map::new();
    if let Some(role) = role_of(i) {
        annotations.insert("eks.amazonaws.com/role-arn".into(), role.into());
        annotations.insert("eks.amazonaws.com/sts-regional-endpoints".into(), "true".into());
    }
    if i.is_multiple_of(2) {
        let manifest = json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace_of(i), "labels": labels, "annotations": annotations},
            "automountServiceAccountToken": false,
            "imagePullSecrets": [{"name": "registry-credentials"}],
        });
        annotations.insert(
            "kubectl.kubernetes.io/last-applied-configuration".into(),
            format!("{manifest}\n").into(),
        );
    } else {
        annotations.insert("meta.helm.sh/release-name".into(), format!("release-{}", i % 37).into());
        annotations.insert("meta.helm.sh/release-namespace".into(), namespace_of(i).into());
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "automountServiceAccountToken": false,
        "imagePullSecrets": [{"name": "registry-credentials"}],
    }))
    .unwrap()
}

async fn create_with_retry(api: Api<ServiceAccount>, sa: ServiceAccount) {
    for attempt in 1..=5 {
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => return,
            // An earlier attempt that timed out on our side got through.
            Err(kube::Error::Api(status)) if status.code == 409 && attempt > 1 => return,
            Err(err) if attempt < 5 => {
                eprintln!("scale: creating {:?} (attempt {attempt}): {err}", sa.metadata.name);
                tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
            }
            Err(err) => panic!("creating {:?}: {err}", sa.metadata.name),
        }
    }
}

/// Creates the namespaces and `n` ServiceAccounts, printing progress; returns how long it took.
async fn create_service_accounts(client: &kube::Client, n: usize) -> Duration {
    let started = Instant::now();
    for ns in 0..NAMESPACES.min(n) {
        cluster::create_namespace(client, &namespace_of(ns), json!({})).await;
    }
    let step = (n / 10).max(1);
    let mut done = 0usize;
    let mut creations = stream::iter(0..n)
        .map(|i| {
            let api = Api::namespaced(client.clone(), &namespace_of(i));
            create_with_retry(api, service_account(i))
        })
        .buffer_unordered(CREATIONS_IN_FLIGHT);
    while creations.next().await.is_some() {
        done += 1;
        if done.is_multiple_of(step) {
            let elapsed = started.elapsed().as_secs_f64();
            eprintln!(
                "scale: {done}/{n} ServiceAccounts created in {elapsed:.1} s ({:.0}/s)",
                done as f64 / elapsed
            );
        }
    }
    started.elapsed()
}

#[derive(Clone, Copy)]
struct Memory {
    /// VmRSS: resident now.
    rss: u64,
    /// VmHWM: the most that was ever resident.
    hwm: u64,
}

fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
    };
    Memory {
        rss: kib("VmRSS:") * 1024,
        hwm: kib("VmHWM:") * 1024,
    }
}

/// RSS once it has stopped moving (within 1% over 3 s; 60 s at most): decoding buffers are freed
/// and the allocator has had time to return them after the last burst of work.
async fn settled_memory(pid: u32) -> Memory {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut samples = vec![memory(pid)];
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        samples.push(memory(pid));
        let recent = &samples[samples.len().saturating_sub(7)..];
        let (low, high) = recent
            .iter()
            .fold((u64::MAX, 0), |(low, high), m| (low.min(m.rss), high.max(m.rss)));
        if (recent.len() == 7 && high - low <= high / 100) || Instant::now() > deadline {
            return *samples.last().unwrap();
        }
    }
}

/// Waits until `/readyz` answers 200 (configuration read and cache synced); returns how long.
async fn wait_ready(webhook: &Webhook, since: Instant) -> Duration {
    let http = reqwest::Client::new();
    loop {
        let state = std::fs::read_to_string(format!("/proc/{}/status", webhook.pid())).unwrap_or_default();
        assert!(
            state
                .lines()
                .any(|line| line.starts_with("State:") && !line.contains("zombie")),
            "webhook exited:\n{}",
            webhook.log()
        );
        if let Ok(response) = http.get(webhook.metrics_url("/readyz")).send().await
            && response.status().is_success()
        {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < READY_LIMIT,
            "webhook not ready after {READY_LIMIT:?}:\n{}",
            webhook.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The size the webhook logged when its initial LIST completed.
fn synced_count(webhook: &Webhook) -> usize {
    let log = webhook.log();
    let line = log
        .lines()
        .find(|line| line.contains("ServiceAccount cache synced"))
        .unwrap_or_else(|| panic!("no cache-synced line in the webhook log:\n{log}"));
    let count = line
        .split("service_accounts=")
        .nth(1)
        .unwrap_or_else(|| panic!("{line}"));
    count
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn start_webhook(cp: &control_plane::ControlPlane) -> Webhook {
    let kubeconfig = cp.kubeconfig_path().display().to_string();
    Webhook::start(
        &[&format!("--namespace={SYSTEM_NAMESPACE}")],
        &[("KUBECONFIG", kubeconfig.as_str())],
        &[],
    )
}

/// How many GETs of single ServiceAccounts the apiserver has served: the webhook's cache misses.
async fn apiserver_service_account_gets(cp: &control_plane::ControlPlane) -> u64 {
    let text = webhook::client_trusting(cp.ca_pem(), true)
        .get(format!("{}/metrics", cp.url()))
        .bearer_auth(cp.admin_token())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| {
            line.starts_with("apiserver_request_total{")
                && line.contains(r#"resource="serviceaccounts""#)
                && line.contains(r#"verb="GET""#)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn pod_review(uid: usize, i: usize) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": format!("scale-{uid}"), "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": namespace_of(i), "operation": "CREATE",
        "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "app-"},
                   "spec": {"serviceAccountName": name_of(i), "containers": [{"name": "app", "image": "registry.example/app:1"}]}}}})
}

/// Sends `REVIEWS` Pod reviews for ServiceAccounts spread over all `n`, checks every answer
/// (an IRSA patch with the right role exactly for the annotated ones) and that none needed the API.
async fn admit_pods(cp: &control_plane::ControlPlane, webhook: &Webhook, n: usize) {
    let gets_before = apiserver_service_account_gets(cp).await;
    let https = webhook.client(true);
    // A stride coprime to most n visits ServiceAccounts all over the range, not one namespace.
    let picks: Vec<usize> = (0..REVIEWS).map(|k| (k * 7919 + 13) % n).collect();
    let mutated = stream::iter(picks.iter().enumerate())
        .map(|(uid, &i)| {
            let https = https.clone();
            async move {
                let response = https
                    .post(webhook.url("/mutate"))
                    .json(&pod_review(uid, i))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["response"]["allowed"], true, "{body}");
                let patch = body["response"]["patch"].as_str().map(|encoded| {
                    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
                    serde_json::from_slice::<Value>(&bytes).unwrap()
                });
                match (role_of(i), patch) {
                    (Some(role), Some(patch)) => {
                        let role_env = json!({"name": "AWS_ROLE_ARN", "value": role});
                        let text = patch.to_string();
                        assert!(
                            text.contains(&role_env.to_string()) && text.contains("aws-iam-token"),
                            "{}/{} got {text}",
                            namespace_of(i),
                            name_of(i)
                        );
                        true
                    }
                    (None, None) => false,
                    (role, patch) => panic!("{}/{}: role {role:?}, patch {patch:?}", namespace_of(i), name_of(i)),
                }
            }
        })
        .buffer_unordered(REVIEWS_IN_FLIGHT)
        .filter(|mutated| std::future::ready(*mutated))
        .count()
        .await;
    let annotated = picks.iter().filter(|&&i| role_of(i).is_some()).count();
    assert_eq!(mutated, annotated);
    assert!(annotated > 0, "no annotated ServiceAccount among the reviews");
    let misses = apiserver_service_account_gets(cp).await - gets_before;
    assert_eq!(
        misses, 0,
        "the webhook fetched ServiceAccounts it should have had cached"
    );
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

/// (RSS − RSS of the empty-cluster webhook) / n, idle and after the reviews (which themselves add
/// a few hundred KiB of connection and TLS state, negligible at 100k).
fn per_service_account(idle: u64, after_reviews: u64, baseline: u64, n: usize) -> String {
    if n == 0 {
        return "–".into();
    }
    let per = |rss: u64| (rss as f64 - baseline as f64) / n as f64;
    format!("{:.0} B / {:.0} B", per(idle), per(after_reviews))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "creates 100k ServiceAccounts (about 1.5 min); run with --release --ignored --nocapture"]
async fn memory_with_many_service_accounts_in_the_cache() {
    let n: usize = std::env::var("WIW_SCALE_SERVICE_ACCOUNTS")
        .map(|value| value.parse().expect("WIW_SCALE_SERVICE_ACCOUNTS must be a number"))
        .unwrap_or(DEFAULT_SERVICE_ACCOUNTS);
    let run_started = Instant::now();
    // A private control plane: 100k objects in the shared one would slow every other test.
    let cp = tokio::task::spawn_blocking(control_plane::ControlPlane::start)
        .await
        .unwrap()
        .unwrap();
    let client = cp.client();
    if cfg!(debug_assertions) {
        eprintln!("scale: debug build; RSS figures are only meaningful with --release");
    }

    // Baseline: a webhook on the empty cluster. It keeps running and follows every creation.
    let watching = start_webhook(&cp);
    let empty_ready = wait_ready(&watching, Instant::now()).await;
    assert_eq!(synced_count(&watching), 0);
    let empty = settled_memory(watching.pid()).await;

    let creation = create_service_accounts(&client, n).await;
    eprintln!("scale: {n} ServiceAccounts created in {}", seconds(creation));
    let watched = settled_memory(watching.pid()).await;

    // The usual case after a restart: a webhook whose cache fills from the initial LIST.
    let started = Instant::now();
    let listing = start_webhook(&cp);
    let sync = wait_ready(&listing, started).await;
    assert_eq!(synced_count(&listing), n, "ServiceAccounts in the cache once synced");
    let listed = settled_memory(listing.pid()).await;

    let (mut listed_after, mut watched_after) = (listed, watched);
    if n > 0 {
        let load_started = Instant::now();
        admit_pods(&cp, &listing, n).await;
        eprintln!(
            "scale: {REVIEWS} reviews answered in {}",
            seconds(load_started.elapsed())
        );
        listed_after = settled_memory(listing.pid()).await;
        // The watching webhook's cache is checked the same way: no look-up may miss.
        admit_pods(&cp, &watching, n).await;
        watched_after = settled_memory(watching.pid()).await;
    }

    let build = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!(
        "\nWebhook memory with {n} ServiceAccounts in {NAMESPACES} namespaces ({build} build, \
         {REVIEWS} Pod reviews after sync; RSS = VmRSS once settled, peak = VmHWM)\n"
    );
    println!(
        "| Webhook | ServiceAccounts cached | Creating them | Start to cache synced | RSS idle after sync | Peak RSS before reviews | RSS after reviews | Peak RSS after reviews | Bytes per ServiceAccount (idle / after reviews) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| started on the empty cluster | 0 | – | {} | {} | {} | – | – | – |",
        seconds(empty_ready),
        mib(empty.rss),
        mib(empty.hwm)
    );
    println!(
        "| started after the creations (initial LIST) | {n} | {} | {} | {} | {} | {} | {} | {} |",
        seconds(creation),
        seconds(sync),
        mib(listed.rss),
        mib(listed.hwm),
        mib(listed_after.rss),
        mib(listed_after.hwm),
        per_service_account(listed.rss, listed_after.rss, empty.rss, n)
    );
    println!(
        "| running during the creations (watch events) | {n} | {} | – | {} | {} | {} | {} | {} |",
        seconds(creation),
        mib(watched.rss),
        mib(watched.hwm),
        mib(watched_after.rss),
        mib(watched_after.hwm),
        per_service_account(watched.rss, watched_after.rss, empty.rss, n)
    );
    println!("\nWhole run: {}", seconds(run_started.elapsed()));
}
