//! Runs the real `workload-identity-webhook serve` binary on loopback ports with a certificate from
//! a CA made for the test, and gives HTTPS clients that trust that CA.

// Each test binary includes this module and uses a different part of it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use workload_identity_webhook::shell::certificates::ca::GeneratedCa;

pub struct Webhook {
    child: Child,
    pub https_port: u16,
    pub metrics_port: u16,
    pub ca_pem: String,
    pub dir: tempfile::TempDir,
}

/// The `workload-identity-emulator` binary of the same build: a binary of another crate of the
/// workspace, beside this crate's (`cargo test --workspace` builds both).
pub fn emulator_binary() -> PathBuf {
    let binary =
        Path::new(env!("CARGO_BIN_EXE_workload-identity-webhook")).with_file_name("workload-identity-emulator");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p workload-identity-emulator` (scripts/test.sh does)",
        binary.display()
    );
    binary
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Webhook {
    /// Starts `serve` with a fresh CA and a certificate for 127.0.0.1, plus `args`, after writing
    /// `files` into the webhook's folder; `{dir}` in an argument stands for that folder. With
    /// `--manage-certificate` among `args` the webhook makes its own certificate and `ca_pem` is empty.
    pub fn start(args: &[&str], env: &[(&str, &str)], files: &[(&str, &str)]) -> Webhook {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let folder = dir.path().display().to_string();
        let args: Vec<String> = args.iter().map(|arg| arg.replace("{dir}", &folder)).collect();
        let mut ca_pem = String::new();
        let mut certificate_args = Vec::new();
        if !args.iter().any(|arg| arg == "--manage-certificate") {
            let ca = GeneratedCa::new("webhook test CA").unwrap();
            let (cert, key) = ca.issue(&["127.0.0.1", "localhost"]).unwrap();
            std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
            std::fs::write(dir.path().join("tls.key"), key).unwrap();
            certificate_args.push(format!("--tls-cert-file={folder}/tls.crt"));
            certificate_args.push(format!("--tls-key-file={folder}/tls.key"));
            ca_pem = ca.cert_pem;
        }
        let (https_port, metrics_port) = (free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("webhook.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_workload-identity-webhook"))
            .arg("serve")
            .arg(format!("--listen=127.0.0.1:{https_port}"))
            .arg(format!("--metrics-listen=127.0.0.1:{metrics_port}"))
            .args(certificate_args)
            .arg("--reload-interval=200ms")
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Webhook {
            child,
            https_port,
            metrics_port,
            ca_pem,
            dir,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.https_port)
    }

    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.metrics_port)
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.metrics_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits (20 s at most) until the metrics contain `line`.
    pub async fn wait_for_metric(&self, line: &str) {
        eventually(Duration::from_secs(20), line, || async {
            self.metrics().await.contains(line)
        })
        .await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("webhook.log")).unwrap_or_default()
    }

    /// A client that trusts the test CA, speaking only HTTP/1.1 or negotiating HTTP/2 by ALPN.
    pub fn client(&self, http2: bool) -> reqwest::Client {
        client_trusting(&self.ca_pem, http2)
    }

    /// The webhook's answer to an AdmissionReview (HTTP/1.1), decoded.
    pub async fn answer(&self, review: &Value) -> Value {
        let response = self.client(false).post(self.url("/mutate")).json(review).send().await;
        response.unwrap().json().await.unwrap()
    }

    /// Waits until `/readyz` answers 200, failing the test after 30 s.
    pub async fn wait_ready(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("webhook exited with {status}:\n{}", self.log());
            }
            if let Ok(response) = client.get(self.metrics_url("/readyz")).send().await
                && response.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "webhook not ready after 30 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().unwrap()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- webhook log ---\n{}", self.log());
        }
    }
}

pub fn client_trusting(ca_pem: &str, http2: bool) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10));
    let builder = if http2 { builder } else { builder.http1_only() };
    builder.build().unwrap()
}

/// Polls `check` every 100 ms until it returns true, failing after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn write(path: &Path, text: &str) {
    // Write then rename, as a mounted ConfigMap or Secret changes: readers never see half a file.
    let staging = path.with_extension("tmp");
    std::fs::write(&staging, text).unwrap();
    std::fs::rename(staging, path).unwrap();
}

/// An AdmissionReview for creating a Pod of ServiceAccount `app` in `team-a`.
pub fn pod_review(uid: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "team-a",
            "operation": "CREATE",
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "app-"},
                "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "busybox"}]}
            }
        }
    })
}
