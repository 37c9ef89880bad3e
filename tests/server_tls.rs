//! The `serve` binary over a real TLS socket: AdmissionReviews over HTTP/2 and HTTP/1.1, bad
//! requests, probes, metrics, and live reloads of the configuration file and the certificate.

#[path = "support/webhook.rs"]
mod webhook;

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use webhook::{Webhook, client_trusting, eventually, pod_review, write};
use workload_identity_webhook::shell::certificates::ca::GeneratedCa;

const ROLE_A: &str = "arn:aws:iam::111122223333:role/first";
const ROLE_B: &str = "arn:aws:iam::111122223333:role/second";

fn config_with_role(role: &str) -> String {
    format!("identities:\n  - namespace: team-a\n    serviceAccount: app\n    aws: {{roleArn: \"{role}\"}}\n")
}

async fn start(config: &str) -> Webhook {
    let mut webhook = Webhook::start(
        &["--standalone", "--config-file={dir}/config.yaml"],
        &[],
        &[("config.yaml", config)],
    );
    webhook.wait_ready().await;
    webhook
}

/// Posts a review and returns the HTTP version, the response review and the decoded patch.
async fn admit(client: &reqwest::Client, webhook: &Webhook, review: &Value) -> (reqwest::Version, Value, Value) {
    let response = client.post(webhook.url("/mutate")).json(review).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let version = response.version();
    let body: Value = response.json().await.unwrap();
    let patch = body["response"]["patch"]
        .as_str()
        .map(|encoded| {
            serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(encoded).unwrap()).unwrap()
        })
        .unwrap_or(Value::Null);
    (version, body, patch)
}

fn role_in_patch(patch: &Value) -> Option<String> {
    let text = patch.to_string();
    [ROLE_A, ROLE_B]
        .into_iter()
        .find(|role| text.contains(role))
        .map(str::to_owned)
}

#[tokio::test]
async fn answers_admission_reviews_over_http2_and_http1() {
    let webhook = start(&config_with_role(ROLE_A)).await;
    for (http2, expected_version) in [(true, reqwest::Version::HTTP_2), (false, reqwest::Version::HTTP_11)] {
        let client = webhook.client(http2);
        let (version, body, patch) = admit(&client, &webhook, &pod_review("uid-1")).await;
        assert_eq!(version, expected_version);
        assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(body["kind"], "AdmissionReview");
        assert_eq!(body["response"]["uid"], "uid-1");
        assert_eq!(body["response"]["allowed"], true);
        assert_eq!(body["response"]["patchType"], "JSONPatch");
        let mut pod = pod_review("x")["request"]["object"].clone();
        json_patch::patch(&mut pod, &serde_json::from_value::<json_patch::Patch>(patch).unwrap()).unwrap();
        assert_eq!(pod["spec"]["volumes"][0]["name"], "aws-iam-token");
        assert_eq!(
            pod["spec"]["containers"][0]["env"][0],
            json!({"name": "AWS_ROLE_ARN", "value": ROLE_A})
        );
    }
}

#[tokio::test]
async fn refuses_bad_requests_with_clear_errors_and_keeps_serving() {
    let webhook = start(&config_with_role(ROLE_A)).await;
    let client = webhook.client(true);
    let post = |body: Vec<u8>, content_type: &'static str| {
        client
            .post(webhook.url("/mutate"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let cases: Vec<(Vec<u8>, &str, u16, &str)> = vec![
        (b"{not json".to_vec(), "application/json", 400, "not valid JSON"),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u"#.to_vec(), "application/json", 400, "not valid JSON"),
        (br#"{"apiVersion":"v1","kind":"Pod"}"#.to_vec(), "application/json", 400, "expected apiVersion"),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"kind":{"version":"v1","kind":"Pod"}}}"#.to_vec(), "application/json", 400, "no uid"),
        (b"{}".to_vec(), "text/plain", 415, "application/json"),
        (vec![b' '; 4 * 1024 * 1024], "application/json", 413, ""),
    ];
    for (body, content_type, status, message) in cases {
        let response = post(body, content_type).await.unwrap();
        assert_eq!(response.status().as_u16(), status);
        let text = response.text().await.unwrap();
        assert!(text.contains(message), "{status}: {text}");
    }
    let wrong_method = client.get(webhook.url("/mutate")).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    // Still serving good requests.
    let (_, body, _) = admit(&client, &webhook, &pod_review("after-bad")).await;
    assert_eq!(body["response"]["uid"], "after-bad");
}

#[tokio::test]
async fn probes_and_metrics() {
    let webhook = start(&config_with_role(ROLE_A)).await;
    let client = webhook.client(true);
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            client.get(webhook.url(path)).send().await.unwrap().status(),
            200,
            "{path} over HTTPS"
        );
    }
    admit(&client, &webhook, &pod_review("m")).await;
    let metrics = reqwest::get(webhook.metrics_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Which build runs: the version, the commit build.rs passed (`unknown` in a test build), the
    // compiler and the target.
    let build_info = format!(
        r#"workload_identity_webhook_build_info{{version="{}",revision="{}",rustc="{}",target="{}"}} 1"#,
        env!("CARGO_PKG_VERSION"),
        env!("WIW_BUILD_REVISION"),
        env!("WIW_BUILD_RUSTC"),
        env!("WIW_BUILD_TARGET")
    );
    for expected in [
        r#"workload_identity_webhook_admission_requests_total{kind="Pod",result="mutated"} 1"#,
        r#"workload_identity_webhook_pod_mutations_total{cloud="aws"} 1"#,
        r#"workload_identity_webhook_config_reloads_total{result="success"} 1"#,
        "workload_identity_webhook_config_mappings 1",
        "workload_identity_webhook_admission_duration_seconds_count 1",
        &build_info,
    ] {
        assert!(metrics.contains(expected), "missing {expected:?} in\n{metrics}");
    }
    // The standard process series, unprefixed, with values that fit this process.
    let sample = |name: &str| -> f64 {
        let line = metrics
            .lines()
            .find(|line| line.split(' ').next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(sample("process_resident_memory_bytes") > 1e6, "{metrics}");
    assert!(sample("process_virtual_memory_bytes") >= sample("process_resident_memory_bytes"));
    assert!(sample("process_cpu_seconds_total") >= 0.0, "{metrics}");
    // The TLS and metrics listeners at least.
    assert!(sample("process_open_fds") >= 2.0, "{metrics}");
    assert!(sample("process_max_fds") >= sample("process_open_fds"));
    let now = std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap().as_secs_f64();
    let started = sample("process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 3600.0,
        "started {started}, now {now}"
    );
}

#[tokio::test]
async fn configuration_edits_apply_without_restart_and_broken_ones_are_refused() {
    let webhook = start(&config_with_role(ROLE_A)).await;
    let client = webhook.client(true);
    assert_eq!(
        role_in_patch(&admit(&client, &webhook, &pod_review("1")).await.2).as_deref(),
        Some(ROLE_A)
    );

    write(&webhook.path("config.yaml"), &config_with_role(ROLE_B));
    eventually(Duration::from_secs(20), "the edited mapping to apply", || async {
        role_in_patch(&admit(&client, &webhook, &pod_review("2")).await.2).as_deref() == Some(ROLE_B)
    })
    .await;

    write(
        &webhook.path("config.yaml"),
        "identities: [{namespace: team-a, serviceAccount: app, aws: {roleArn: broken}}]",
    );
    webhook
        .wait_for_metric(r#"config_reloads_total{result="failure"} 1"#)
        .await;
    assert_eq!(
        role_in_patch(&admit(&client, &webhook, &pod_review("3")).await.2).as_deref(),
        Some(ROLE_B)
    );
    assert!(
        webhook.log().contains("identities[0].aws.roleArn"),
        "the log names the broken field"
    );
}

#[tokio::test]
async fn certificate_rotates_without_restart_and_a_broken_one_is_refused() {
    let webhook = start(&config_with_role(ROLE_A)).await;
    let new_ca = GeneratedCa::new("rotated CA").unwrap();
    let (cert, key) = new_ca.issue(&["127.0.0.1"]).unwrap();
    write(&webhook.path("tls.key"), &key);
    write(&webhook.path("tls.crt"), &cert);
    let new_client = client_trusting(&new_ca.cert_pem, true);
    eventually(Duration::from_secs(20), "the new certificate to be served", || async {
        new_client.get(webhook.url("/healthz")).send().await.is_ok()
    })
    .await;

    write(
        &webhook.path("tls.crt"),
        "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
    );
    webhook
        .wait_for_metric(r#"certificate_reloads_total{result="failure"} 1"#)
        .await;
    let fresh_client = client_trusting(&new_ca.cert_pem, false);
    assert_eq!(
        fresh_client.get(webhook.url("/healthz")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly() {
    let mut webhook = start(&config_with_role(ROLE_A)).await;
    let status = webhook.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(webhook.log().contains("admission server stopped"));
}

/// A client that trusts both CAs, as the apiserver does while a caBundle holds the old and the new.
fn client_trusting_both(old: &str, new: &str, keep_alive: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(10));
    for pem in [old, new] {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
    }
    if !keep_alive {
        builder = builder.pool_max_idle_per_host(0).http1_only();
    }
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_load_fails_no_request() {
    let webhook = start(&config_with_role(ROLE_A)).await;
    let new_ca = GeneratedCa::new("next CA").unwrap();
    let review = pod_review("load");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    // Two clients reuse one HTTP/2 connection each; two open a new TLS connection per request, so
    // handshakes happen before, during and after the swap.
    let workers: Vec<_> = [true, true, false, false]
        .into_iter()
        .map(|keep_alive| {
            let client = client_trusting_both(&webhook.ca_pem, &new_ca.cert_pem, keep_alive);
            let (url, review) = (webhook.url("/mutate"), review.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, Vec::new());
                while tokio::time::Instant::now() < deadline && ok < 5_000 {
                    match client.post(&url).json(&review).send().await {
                        Ok(response) if response.status() == 200 => ok += 1,
                        Ok(response) => failed.push(response.status().to_string()),
                        Err(err) => failed.push(err.to_string()),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (cert, key) = new_ca.issue(&["127.0.0.1"]).unwrap();
    write(&webhook.path("tls.key"), &key);
    write(&webhook.path("tls.crt"), &cert);
    let (mut ok, mut failed) = (0, Vec::new());
    for worker in workers {
        let (worker_ok, worker_failed) = worker.await.unwrap();
        ok += worker_ok;
        failed.extend(worker_failed);
    }
    assert!(
        failed.is_empty(),
        "{} failed requests, first: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(ok > 100, "only {ok} requests went through");
    // The new certificate is the one served now.
    let only_new = client_trusting(&new_ca.cert_pem, false);
    assert_eq!(
        only_new.get(webhook.url("/healthz")).send().await.unwrap().status(),
        200
    );
    let metrics = reqwest::get(webhook.metrics_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"certificate_reloads_total{result="success"} 1"#),
        "{metrics}"
    );
}
