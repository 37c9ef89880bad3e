//! The running `serve` binary against bad input: malformed and truncated JSON, wrong envelopes,
//! `object: null`, a 50 MiB body, slow-loris clients, a thousand idle connections, plain HTTP to the
//! TLS port and TLS 1.0/1.1 clients. Each gets a clear, bounded answer, and after each the server
//! still answers a good AdmissionReview correctly and quickly. Loopback only; every loop is bounded.

#[path = "support/webhook.rs"]
mod webhook;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use webhook::{Webhook, pod_review as review};

const ROLE: &str = "arn:aws:iam::111122223333:role/app";
const CONFIG: &str = "identities:\n  - namespace: team-a\n    serviceAccount: app\n    aws: {roleArn: \"arn:aws:iam::111122223333:role/app\"}\n";

/// How long a good request may take while the server is under abuse (generous for shared CI).
const GOOD_REQUEST_LIMIT: Duration = Duration::from_secs(3);

async fn start() -> Webhook {
    let mut webhook = Webhook::start(
        &["--standalone", "--config-file={dir}/config.yaml"],
        &[],
        &[("config.yaml", CONFIG)],
    );
    webhook.wait_ready().await;
    webhook
}

/// A good review gets the right patch, within [`GOOD_REQUEST_LIMIT`].
async fn assert_serving(webhook: &Webhook, client: &reqwest::Client, uid: &str) {
    let started = Instant::now();
    let response = client
        .post(webhook.url("/mutate"))
        .json(&review(uid))
        .send()
        .await
        .unwrap_or_else(|err| panic!("good request {uid} failed: {err}"));
    assert_eq!(response.status(), 200, "good request {uid}");
    let body: Value = response.json().await.unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed < GOOD_REQUEST_LIMIT, "good request {uid} took {elapsed:?}");
    assert_eq!(body["response"]["uid"], uid);
    assert_eq!(body["response"]["allowed"], true);
    let patch = base64::engine::general_purpose::STANDARD
        .decode(body["response"]["patch"].as_str().expect("a patch"))
        .unwrap();
    assert!(
        String::from_utf8(patch).unwrap().contains(ROLE),
        "good request {uid} lost its role"
    );
}

async fn post(webhook: &Webhook, client: &reqwest::Client, body: Vec<u8>) -> (u16, String, Duration) {
    let started = Instant::now();
    let response = client
        .post(webhook.url("/mutate"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, text, started.elapsed())
}

// ---------------------------------------------------------------------------------------------
// Raw clients
// ---------------------------------------------------------------------------------------------

fn tls_connector(webhook: &Webhook, alpn: &[u8]) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(webhook.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls_connect(webhook: &Webhook, alpn: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", webhook.https_port)).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tls_connector(webhook, alpn).connect(name, tcp).await.unwrap()
}

/// Writes `message` one byte per second until the server closes the connection (a read ends or
/// fails, or a write fails); returns how long that took, or `None` if still open after `limit`.
async fn drip<S: AsyncRead + AsyncWrite + Unpin>(stream: S, message: &[u8], limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let read_to_end = async move {
        let mut buffer = [0u8; 1024];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let write_slowly = async move {
        for byte in message.iter().cycle() {
            if writer.write_all(&[*byte]).await.is_err() || writer.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let closed = async {
        tokio::select! {
            () = read_to_end => {},
            () = write_slowly => {},
        }
    };
    tokio::time::timeout(limit, closed)
        .await
        .ok()
        .map(|()| started.elapsed())
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_and_truncated_json_get_400() {
    let webhook = start().await;
    let client = webhook.client(true);
    let valid = serde_json::to_vec(&review("truncated")).unwrap();
    let mut bodies: Vec<(Vec<u8>, &str)> = (0..valid.len())
        .step_by(7)
        .map(|cut| (valid[..cut].to_vec(), "not valid JSON"))
        .collect();
    let deep_array = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = "{\"a\":".repeat(50_000);
    let mut invalid_utf8 = valid.clone();
    invalid_utf8[20] = 0xff;
    bodies.extend([
        (b"{not json".to_vec(), "not valid JSON"),
        (b"null".to_vec(), "not valid JSON"),
        (b"[]".to_vec(), "not valid JSON"),
        (b"\"AdmissionReview\"".to_vec(), "not valid JSON"),
        (b"12345".to_vec(), "not valid JSON"),
        (b"\0\0\0\0".to_vec(), "not valid JSON"),
        (deep_array.into_bytes(), "not valid JSON"),
        (deep_object.into_bytes(), "not valid JSON"),
        (invalid_utf8, "not valid JSON"),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"\ud800"}}"#.to_vec(),
            "not valid JSON",
        ),
        (
            [&b"\xef\xbb\xbf"[..], &serde_json::to_vec(&review("bom")).unwrap()].concat(),
            "not valid JSON",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7}}"#.to_vec(),
            "not valid JSON",
        ),
    ]);
    let answers = futures::future::join_all(bodies.iter().map(|(body, _)| post(&webhook, &client, body.clone()))).await;
    for ((body, expected), (status, text, elapsed)) in bodies.iter().zip(answers) {
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]);
        assert_eq!(status, 400, "{shown:?}: {text}");
        assert!(text.contains(expected), "{shown:?}: {text}");
        assert!(elapsed < Duration::from_secs(5), "{shown:?} took {elapsed:?}");
    }
    assert_serving(&webhook, &client, "after-malformed").await;
}

#[tokio::test]
async fn wrong_envelopes_get_clear_answers() {
    let webhook = start().await;
    let client = webhook.client(true);
    let with = |path: &[&str], value: Value| {
        let mut review = review("envelope");
        let mut target = &mut review;
        for key in &path[..path.len() - 1] {
            target = &mut target[*key];
        }
        let last = path[path.len() - 1];
        if value.is_null() && last != "object" {
            target.as_object_mut().unwrap().remove(last);
        } else {
            target[last] = value;
        }
        serde_json::to_vec(&review).unwrap()
    };
    // (body, status, text in the answer)
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            with(&["apiVersion"], json!("admission.k8s.io/v1beta1")),
            400,
            "expected apiVersion",
        ),
        (with(&["apiVersion"], Value::Null), 400, "expected apiVersion"),
        (with(&["kind"], json!("Pod")), 400, "expected apiVersion"),
        (with(&["request"], Value::Null), 400, "has no request"),
        (with(&["request", "uid"], Value::Null), 400, "no uid"),
        (with(&["request", "uid"], json!("")), 400, "no uid"),
        (with(&["request", "kind"], Value::Null), 400, "request.kind is missing"),
        // Requests we cannot read the object of are allowed untouched, with a warning.
        (with(&["request", "object"], Value::Null), 200, "has no object"),
        (with(&["request", "object"], json!(42)), 200, "could not be read"),
        (
            with(&["request", "object"], json!({"spec": {"containers": "x"}})),
            200,
            "could not be read",
        ),
        (
            with(&["request", "object"], json!({"metadata": {"annotations": {"a": 1}}})),
            200,
            "could not be read",
        ),
        // Other kinds and operations are allowed untouched.
        (
            with(
                &["request", "kind"],
                json!({"group": "apps", "version": "v1", "kind": "Deployment"}),
            ),
            200,
            "\"allowed\":true",
        ),
        (
            with(&["request", "operation"], json!("DELETE")),
            200,
            "\"allowed\":true",
        ),
        (with(&["request", "operation"], json!(null)), 200, "\"allowed\":true"),
    ];
    for (body, status, expected) in cases {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let (got, text, _) = post(&webhook, &client, body).await;
        assert_eq!(got, status, "{shown}: {text}");
        assert!(text.contains(expected), "{shown}: {text}");
        if status == 200 {
            let answer: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(answer["response"]["uid"], "envelope");
            assert_eq!(answer["response"]["allowed"], true);
            assert!(answer["response"].get("patch").is_none(), "{text}");
        }
    }
    assert_serving(&webhook, &client, "after-envelopes").await;
}

#[tokio::test]
async fn a_50_mib_body_gets_413_quickly_and_the_server_stays_up() {
    let webhook = start().await;
    let body = vec![b' '; 50 * 1024 * 1024];
    // HTTP/2: the stream is refused with 413 while the rest of the body is discarded.
    let client = webhook.client(true);
    let (status, _, elapsed) = post(&webhook, &client, body.clone()).await;
    assert_eq!(status, 413);
    assert!(elapsed < Duration::from_secs(10), "413 took {elapsed:?}");
    assert_serving(&webhook, &client, "after-50-mib-h2").await;

    // HTTP/1.1: a 413, or the connection closed before the whole body is sent; either way quickly.
    let http1 = webhook.client(false);
    let started = Instant::now();
    let result = http1
        .post(webhook.url("/mutate"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    let elapsed = started.elapsed();
    match result {
        Ok(response) => assert_eq!(response.status(), 413),
        Err(err) => eprintln!("HTTP/1.1 50 MiB: connection closed before the answer was read ({err})"),
    }
    assert!(elapsed < Duration::from_secs(10), "HTTP/1.1 50 MiB took {elapsed:?}");
    assert_serving(&webhook, &webhook.client(false), "after-50-mib-h1").await;
    assert_serving(&webhook, &client, "after-50-mib").await;
}

#[tokio::test]
async fn slow_loris_clients_are_cut_off_in_bounded_time() {
    let webhook = start().await;
    let limit = Duration::from_secs(25);
    let headers = b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Slow: ";
    // During the TLS handshake: a TLS record header trickled in byte by byte.
    let handshake = async {
        let tcp = TcpStream::connect(("127.0.0.1", webhook.https_port)).await.unwrap();
        drip(tcp, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", limit).await
    };
    // After the handshake: HTTP/1.1 headers a byte a second.
    let http1 = async {
        let tls = tls_connect(&webhook, b"http/1.1").await;
        drip(tls, headers, limit).await
    };
    // After the handshake with HTTP/2 negotiated: the connection preface a byte a second.
    let http2 = async {
        let tls = tls_connect(&webhook, b"h2").await;
        drip(tls, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", limit).await
    };
    // Meanwhile good requests keep being answered quickly.
    let good = async {
        let client = webhook.client(true);
        for i in 0..5 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert_serving(&webhook, &client, &format!("during-slow-loris-{i}")).await;
        }
    };
    let (handshake, http1, http2, ()) = tokio::join!(handshake, http1, http2, good);
    for (what, closed) in [
        ("TLS handshake", handshake),
        ("HTTP/1.1 headers", http1),
        ("HTTP/2 preface", http2),
    ] {
        let took = closed.unwrap_or_else(|| panic!("slow {what} still open after {limit:?}"));
        eprintln!("slow {what}: closed after {took:?}");
    }
    assert_serving(&webhook, &webhook.client(false), "after-slow-loris").await;
}

#[tokio::test]
async fn a_thousand_idle_connections_do_not_slow_good_requests() {
    let webhook = start().await;
    let mut idle = Vec::new();
    for _ in 0..10 {
        let batch =
            futures::future::join_all((0..100).map(|_| TcpStream::connect(("127.0.0.1", webhook.https_port)))).await;
        idle.extend(batch.into_iter().map(Result::unwrap));
    }
    // And some that finished the TLS handshake and then say nothing.
    let tls_idle = futures::future::join_all((0..50).map(|_| tls_connect(&webhook, b"h2"))).await;
    assert_eq!(idle.len(), 1000);
    for i in 0..5 {
        assert_serving(&webhook, &webhook.client(i % 2 == 0), &format!("idle-{i}")).await;
    }
    drop(tls_idle);
    drop(idle);
    assert_serving(&webhook, &webhook.client(true), "after-idle").await;
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_refused() {
    let webhook = start().await;
    let body = serde_json::to_vec(&review("plain")).unwrap();
    let mut tcp = TcpStream::connect(("127.0.0.1", webhook.https_port)).await.unwrap();
    let request = format!(
        "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let _ = tcp.write_all(request.as_bytes()).await;
    let _ = tcp.write_all(&body).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "plain HTTP connection still open after 15 s");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "answered plain HTTP: {:?}",
        String::from_utf8_lossy(&answer)
    );
    // A client speaking plain HTTP gets an error, not an answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let result = plain
        .post(format!("http://127.0.0.1:{}/mutate", webhook.https_port))
        .json(&review("plain"))
        .send()
        .await;
    assert!(result.is_err(), "plain HTTP answered: {result:?}");
    assert_serving(&webhook, &webhook.client(true), "after-plain-http").await;
}

/// Runs `openssl s_client` with `flags`; `None` when the binary is missing.
fn s_client(port: u16, flags: &[&str]) -> Option<(bool, String)> {
    let output = std::process::Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(format!("127.0.0.1:{port}"))
        .args(flags)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    Some((output.status.success(), text))
}

#[tokio::test]
async fn tls_1_0_and_1_1_clients_are_refused() {
    let webhook = start().await;
    let port = webhook.https_port;
    let checked = tokio::task::spawn_blocking(move || {
        let Some((ok, text)) = s_client(port, &["-tls1_2"]) else {
            eprintln!("openssl not installed: TLS 1.0/1.1 refusal not checked");
            return false;
        };
        assert!(
            ok && text.contains("TLSv1.2"),
            "openssl control: TLS 1.2 must work:\n{text}"
        );
        let (ok, text) = s_client(port, &["-tls1_3"]).unwrap();
        assert!(
            ok && text.contains("TLSv1.3"),
            "openssl control: TLS 1.3 must work:\n{text}"
        );
        for flag in ["-tls1", "-tls1_1"] {
            // SECLEVEL=0 lets OpenSSL 3 offer the old versions at all.
            let (ok, text) = s_client(port, &[flag, "-cipher", "DEFAULT:@SECLEVEL=0"]).unwrap();
            if text.contains("no protocols available") || text.contains("unknown option") {
                eprintln!("this openssl cannot speak {flag}: refusal not checked\n{text}");
                continue;
            }
            assert!(!ok, "{flag} handshake succeeded:\n{text}");
            // rustls answers an old ClientHello with a fatal alert (handshake_failure, 40).
            assert!(
                text.contains("alert handshake failure") || text.contains("alert protocol version"),
                "{flag}: no refusal alert:\n{text}"
            );
            assert!(
                text.contains("Cipher is (NONE)"),
                "{flag}: a cipher was agreed:\n{text}"
            );
        }
        true
    })
    .await
    .unwrap();
    eprintln!("TLS 1.0/1.1 refusal checked with openssl: {checked}");
    assert_serving(&webhook, &webhook.client(true), "after-old-tls").await;
}

#[tokio::test]
async fn the_audit_log_names_the_identity_and_never_the_private_key() {
    let webhook = start().await;
    assert_serving(&webhook, &webhook.client(true), "audited").await;
    let key = std::fs::read_to_string(webhook.path("tls.key")).unwrap();
    webhook::eventually(Duration::from_secs(5), "the audit line", || async {
        webhook.log().contains("pod mutated")
    })
    .await;
    let log = webhook.log();
    let audit = log.lines().find(|line| line.contains("pod mutated")).unwrap();
    // The peer, so that a forged review (any Pod can reach the port) can be traced to its sender.
    for expected in ["audited", "team-a", "app-", "app", ROLE, "peer=127.0.0.1:"] {
        assert!(audit.contains(expected), "{expected} missing in {audit}");
    }
    for line in key.lines().filter(|line| !line.starts_with("-----")) {
        assert!(!log.contains(line), "private key material in the log");
    }
}

/// Headers sent in full, then the body a byte a second ("R.U.D.Y."): the request timeout (10 s)
/// answers 408 and closes the connection.
#[tokio::test]
async fn slow_body_clients_are_cut_off_in_bounded_time() {
    let webhook = start().await;
    let limit = Duration::from_secs(25);
    let mut tls = tls_connect(&webhook, b"http/1.1").await;
    tls.write_all(
        b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n",
    )
    .await
    .unwrap();
    let closed = drip(tls, b" ", limit).await;
    eprintln!("slow body: {closed:?}");
    assert!(closed.is_some(), "a slow body is still being read after {limit:?}");
    assert_serving(&webhook, &webhook.client(true), "after-slow-body").await;
}

/// containerd 2.x starts containers with a soft limit of 1,024 open files, less than the connection
/// caps of both ports together: the webhook raises its soft limit to the hard one at start.
#[tokio::test]
async fn the_open_file_limit_is_raised_to_the_hard_limit() {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let hard: u64 = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(4)?.parse().ok())
        .expect("a numeric hard limit of open files");
    let soft = 256.min(hard);
    assert!(soft < hard, "the hard limit ({hard}) leaves nothing to raise");
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut child = std::process::Command::new("sh")
        .args(["-c", &format!("ulimit -S -n {soft} && exec \"$0\" \"$@\"")])
        .arg(env!("CARGO_BIN_EXE_workload-identity-webhook"))
        .args(["serve", "--standalone", "--listen=127.0.0.1:0", "--metrics-listen=off"])
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id();
    let soft_now = || {
        std::fs::read_to_string(format!("/proc/{pid}/limits"))
            .ok()?
            .lines()
            .find(|line| line.starts_with("Max open files"))?
            .split_whitespace()
            .nth(3)?
            .parse::<u64>()
            .ok()
    };
    let read_log = || std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    webhook::eventually(Duration::from_secs(20), "the server listening", || async {
        read_log().contains("admission server listening")
    })
    .await;
    let raised = soft_now();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        raised,
        Some(hard),
        "soft limit after start (was {soft}):\n{}",
        read_log()
    );
}

/// In JSON logs, each identity given is one audit line whose cloud, identity, namespace, Pod and
/// ServiceAccount are keys of their own (for Loki, Elasticsearch, ...), and so are a warning's.
#[tokio::test]
async fn audit_and_warning_lines_have_one_key_per_field() {
    let config = format!(
        "gcp: {{workloadIdentityProvider: \"projects/123456789/locations/global/workloadIdentityPools/pool/providers/provider\"}}\n\
         identities:\n  - namespace: team-a\n    serviceAccount: app\n    aws: {{roleArn: \"{ROLE}\"}}\n    \
         gcp: {{serviceAccount: \"reader@my-project.iam.gserviceaccount.com\"}}\n"
    );
    let mut webhook = Webhook::start(
        &["--standalone", "--config-file={dir}/config.yaml", "--log-format=json"],
        &[],
        &[("config.yaml", &config)],
    );
    webhook.wait_ready().await;
    let client = webhook.client(true);
    let response = client
        .post(webhook.url("/mutate"))
        .json(&review("json-audit"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    webhook::eventually(Duration::from_secs(5), "the audit lines", || async {
        webhook.log().matches("pod mutated").count() == 2
    })
    .await;
    let lines: Vec<Value> = webhook
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["uid"] == "json-audit")
        .collect();
    let audit: Vec<(&str, &str)> = lines
        .iter()
        .filter(|line| line["message"] == "pod mutated")
        .map(|line| {
            assert_eq!(line["namespace"], "team-a", "{line}");
            assert_eq!(line["service_account"], "app", "{line}");
            assert!(line["pod"].as_str().unwrap().starts_with("app-"), "{line}");
            (line["cloud"].as_str().unwrap(), line["identity"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        audit,
        [("aws", ROLE), ("gcp", "reader@my-project.iam.gserviceaccount.com")]
    );
    // No aws.region: the Pod is warned about it, the warning line names the cloud.
    let warning = lines
        .iter()
        .find(|line| line["message"] == "admission warning")
        .expect("a warning line");
    assert_eq!(
        (&warning["cloud"], &warning["service_account"]),
        (&json!("aws"), &json!("app")),
        "{warning}"
    );
}
