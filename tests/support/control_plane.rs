//! A real kube-apiserver backed by a real etcd, for integration tests.
//!
//! Include it from an integration test with
//!
//! ```ignore
//! #[path = "support/control_plane.rs"]
//! mod control_plane;
//!
//! #[tokio::test]
//! async fn something() {
//!     let cp = control_plane::shared().await;
//!     let client = cp.client();
//!     // ...
//! }
//! ```
//!
//! The binaries are built from source by `tests/control-plane/build.sh` (once per test
//! process; the script itself caches them outside the clone), for the Kubernetes version
//! `WIW_KUBERNETES_VERSION` names (`v1.33.13` or `1.33`; by default the newest supported one,
//! see [`kubernetes_version`]). Set `WIW_CONTROL_PLANE_BIN_DIR` to a folder holding `etcd` and
//! `kube-apiserver` of that version to skip the build.
//!
//! Both servers are started with `EXIT_ON_STDIN_EOF=1` and a piped stdin whose write end is
//! held by this process: when the test binary exits (even on SIGKILL) the pipe closes and
//! they exit too, so nothing outlives the tests. The shared control plane lives in a
//! `static` and is therefore never dropped; its temporary folder (certificates, etcd data,
//! logs) is removed by the next test process that starts a control plane, once the owning
//! process is gone. Its log files are listed on stderr at start-up.
//!
//! There is no kube-controller-manager: the `ServiceAccount` admission plugin is disabled
//! (it would require the `default` ServiceAccount that the controller-manager creates), so
//! Pods are admitted and stored in a fresh namespace (they stay Pending: no scheduler,
//! no kubelet). Namespaces that are deleted stay `Terminating` forever (no namespace
//! controller), so tests should use unique namespace names rather than delete and re-create.

#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// The Kubernetes version the control plane is built from (`v1.37.2`): the supported version
/// that `WIW_KUBERNETES_VERSION` names, by default the newest (`tests/control-plane/versions.sh`,
/// which `build.sh` uses too). Panics with that script's message on an unsupported version.
pub fn kubernetes_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let spec = std::env::var("WIW_KUBERNETES_VERSION").unwrap_or_default();
        versions_sh(&["resolve", &spec])
    })
}

/// Every supported Kubernetes version, oldest first (a folder each under
/// `tests/control-plane/versions/`).
pub fn supported_kubernetes_versions() -> Vec<String> {
    versions_sh(&["list"]).lines().map(str::to_owned).collect()
}

fn versions_sh(args: &[&str]) -> String {
    let output = run_versions_sh(args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Runs `tests/control-plane/versions.sh` with `args`.
pub fn run_versions_sh(args: &[&str]) -> std::process::Output {
    let script = script("versions.sh");
    Command::new("bash")
        .arg(&script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()))
}

/// `tests/control-plane/<name>` at the repository root: this file is shared by the crates of the
/// workspace.
fn script(name: &str) -> PathBuf {
    let path = format!("tests/control-plane/{name}");
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join(&path))
        .find(|script| script.exists())
        .unwrap_or_else(|| panic!("{path} not found above {}", env!("CARGO_MANIFEST_DIR")))
}

/// Creates an object of kind `K` from its JSON, sent as it is, and returns what the apiserver
/// stored, as JSON. No typed k8s-openapi struct sits in between: one would silently drop every
/// field newer than the Kubernetes version the types are compiled for (k8s-openapi's feature in
/// Cargo.toml), so a test would not send what it wrote.
pub async fn create_json<K>(
    client: &kube::Client,
    namespace: Option<&str>,
    params: &kube::api::PostParams,
    object: &serde_json::Value,
) -> kube::Result<serde_json::Value>
where
    K: kube::Resource<DynamicType = ()>,
{
    use kube::api::{Api, ApiResource, DynamicObject, TypeMeta};
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = match namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let mut object: DynamicObject = serde_json::from_value(object.clone()).map_err(kube::Error::SerdeError)?;
    object.types.get_or_insert(TypeMeta {
        api_version: resource.api_version,
        kind: resource.kind,
    });
    let created = api.create(params, &object).await?;
    serde_json::to_value(created).map_err(kube::Error::SerdeError)
}

/// Issuer of the service-account tokens minted by the apiserver.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Admission plugin settings. ResourceQuota: the critical priority classes only in namespaces
/// with a quota that covers them, as GKE configures its API servers (tests/manifests.rs).
const ADMISSION_CONFIGURATION: &str = r#"
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
  - name: ResourceQuota
    configuration:
      apiVersion: apiserver.config.k8s.io/v1
      kind: ResourceQuotaConfiguration
      limitedResources:
        - resource: pods
          matchScopes:
            - scopeName: PriorityClass
              operator: In
              values: ["system-node-critical", "system-cluster-critical"]
"#;

/// The audit policy: Pods and ServiceAccounts created or updated, at `Metadata` level (which
/// holds the admission webhooks' audit annotations), nothing else.
const AUDIT_POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    resources: [{group: "", resources: [pods, serviceaccounts]}]
    verbs: [create, update]
  - level: None
"#;

/// The audit log's file name in the control plane's folder.
pub const AUDIT_LOG: &str = "audit.log";

const READY_TIMEOUT: Duration = Duration::from_secs(120);
const TEMP_PREFIX: &str = "wiw-control-plane-";
const OWNER_FILE: &str = "owner.pid";

/// A running etcd + kube-apiserver pair. Dropping it stops both processes.
pub struct ControlPlane {
    url: String,
    ca_pem: String,
    token: String,
    kubeconfig: PathBuf,
    etcd_url: String,
    sa_public_key_pem: String,
    config: kube::Config,
    /// How the apiserver was started, to start it again after [`ControlPlane::stop_apiserver`].
    apiserver_command: (PathBuf, Vec<String>, PathBuf),
    // Field order matters for Drop: processes are stopped in `Drop::drop` before the
    // folder is removed.
    apiserver: Option<Server>,
    etcd: Server,
    dir: tempfile::TempDir,
}

struct Server {
    name: &'static str,
    child: Child,
    /// Write end of the child's stdin; closing it makes the child exit.
    stdin: Option<ChildStdin>,
    log: PathBuf,
}

/// The control plane shared by every test of the current test binary, started on first use.
///
/// Panics (with the tail of the server logs) if it cannot be started.
pub async fn shared() -> &'static ControlPlane {
    static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
    if let Some(cp) = SHARED.get() {
        return cp
            .as_ref()
            .unwrap_or_else(|e| panic!("control plane failed to start: {e}"));
    }
    // Start on a plain thread: no async runtime is blocked and each #[tokio::test] runtime
    // may wait here concurrently; OnceLock makes the others wait for the first.
    let cp = tokio::task::spawn_blocking(|| {
        SHARED.get_or_init(|| {
            std::thread::spawn(|| ControlPlane::start().map_err(|e| format!("{e:#}")))
                .join()
                .unwrap_or_else(|_| Err("control plane start-up panicked".to_owned()))
        })
    })
    .await
    .expect("control plane start-up task failed");
    cp.as_ref()
        .unwrap_or_else(|e| panic!("control plane failed to start: {e}"))
}

/// Folder holding the `etcd` and `kube-apiserver` binaries; runs `build.sh` once per process.
pub fn bin_dir() -> Result<PathBuf> {
    static BIN_DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN_DIR
        .get_or_init(|| build_binaries().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn build_binaries() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("WIW_CONTROL_PLANE_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let script = script("build.sh");
    eprintln!(
        "control plane: running {} (the first build takes several minutes)",
        script.display()
    );
    let output = Command::new("bash")
        .arg(&script)
        .env("WIW_KUBERNETES_VERSION", kubernetes_version())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!("{} failed with {}", script.display(), output.status);
    }
    let stdout = String::from_utf8(output.stdout).context("build.sh printed non-UTF-8")?;
    let dir = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| PathBuf::from(l.trim()))
        .context("build.sh printed no bin directory")?;
    for bin in ["etcd", "kube-apiserver"] {
        if !dir.join(bin).is_file() {
            bail!("build.sh reported {} but {bin} is not in it", dir.display());
        }
    }
    Ok(dir)
}

impl ControlPlane {
    /// Starts a new, private control plane (a few seconds with cached binaries). Most tests
    /// should use [`shared`] instead.
    pub fn start() -> Result<ControlPlane> {
        Self::start_with_issuer(SERVICE_ACCOUNT_ISSUER)
    }

    /// [`start`](Self::start) with another `--service-account-issuer` (an EKS one, say).
    pub fn start_with_issuer(issuer: &str) -> Result<ControlPlane> {
        let bin = bin_dir()?;
        sweep_stale_dirs();
        // A port picked by binding to :0 could be taken by someone else before the server
        // binds it; retry with new ports in that (rare) case.
        let mut last_err = None;
        for attempt in 1..=3 {
            match Self::start_once(&bin, issuer) {
                Ok(cp) => return Ok(cp),
                Err(e) => {
                    eprintln!("control plane: start attempt {attempt} failed: {e:#}");
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap())
    }

    fn start_once(bin: &Path, issuer: &str) -> Result<ControlPlane> {
        let dir = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempdir()
            .context("creating the control plane folder")?;
        let d = dir.path();
        fs::write(d.join(OWNER_FILE), std::process::id().to_string())?;

        // --- credentials -------------------------------------------------------------
        let pki = Pki::generate()?;
        let ca_file = d.join("ca.crt");
        let serving_cert = d.join("apiserver.crt");
        let serving_key = d.join("apiserver.key");
        let sa_pub = d.join("sa.pub");
        let sa_key = d.join("sa.key");
        let token_file = d.join("tokens.csv");
        fs::write(&ca_file, &pki.ca_pem)?;
        fs::write(&serving_cert, &pki.serving_cert_pem)?;
        fs::write(&serving_key, &pki.serving_key_pem)?;
        fs::write(&sa_pub, &pki.sa_public_pem)?;
        fs::write(&sa_key, &pki.sa_private_pem)?;
        let token = random_token();
        // token,user,uid,"group1,group2"
        fs::write(&token_file, format!("{token},admin,admin,\"system:masters\"\n"))?;

        // --- ports ---------------------------------------------------------------------
        let [etcd_client_port, etcd_peer_port, secure_port] = free_ports::<3>()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_client_port}");
        let url = format!("https://127.0.0.1:{secure_port}");

        // --- etcd ----------------------------------------------------------------------
        let etcd_log = d.join("etcd.log");
        let mut etcd = Server::spawn(
            "etcd",
            Command::new(bin.join("etcd")).args([
                format!("--data-dir={}", d.join("etcd-data").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
                "--log-level=warn".to_owned(),
            ]),
            &etcd_log,
        )?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if fs::read_to_string(&etcd_log)
                .unwrap_or_default()
                .contains("etcd ready:")
            {
                break;
            }
            etcd.check_running()?;
            if Instant::now() > deadline {
                bail!("etcd not ready after {READY_TIMEOUT:?}\n{}", etcd.log_tail(40));
            }
            std::thread::sleep(Duration::from_millis(50));
        }

        // --- kube-apiserver --------------------------------------------------------------
        let admission_config = d.join("admission.yaml");
        fs::write(&admission_config, ADMISSION_CONFIGURATION)?;
        let audit_policy = d.join("audit-policy.yaml");
        fs::write(&audit_policy, AUDIT_POLICY)?;
        let apiserver_log = d.join("kube-apiserver.log");
        let cert_dir = d.join("apiserver-cert-dir");
        fs::create_dir_all(&cert_dir)?;
        let apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--secure-port={secure_port}"),
            "--bind-address=127.0.0.1".to_owned(),
            "--advertise-address=127.0.0.1".to_owned(),
            // No `kubernetes` Service endpoints: a loopback address is not a valid
            // endpoint, and nothing in the tests needs in-cluster discovery.
            "--endpoint-reconciler-type=none".to_owned(),
            format!("--cert-dir={}", cert_dir.display()),
            format!("--tls-cert-file={}", serving_cert.display()),
            format!("--tls-private-key-file={}", serving_key.display()),
            format!("--client-ca-file={}", ca_file.display()),
            format!("--token-auth-file={}", token_file.display()),
            format!("--service-account-issuer={issuer}"),
            format!("--service-account-key-file={}", sa_pub.display()),
            format!("--service-account-signing-key-file={}", sa_key.display()),
            "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
            "--authorization-mode=RBAC".to_owned(),
            "--allow-privileged=true".to_owned(),
            // ServiceAccount needs the `default` ServiceAccount that only the
            // controller-manager creates; every other default plugin works without it.
            "--disable-admission-plugins=ServiceAccount".to_owned(),
            // On by default; listed so that the intent is explicit.
            "--enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy"
                .to_owned(),
            format!("--admission-control-config-file={}", admission_config.display()),
            format!("--audit-policy-file={}", audit_policy.display()),
            format!("--audit-log-path={}", d.join(AUDIT_LOG).display()),
            "--profiling=false".to_owned(),
            "--v=1".to_owned(),
        ];
        let apiserver_command = (bin.join("kube-apiserver"), apiserver_args, apiserver_log.clone());
        let mut apiserver = spawn_apiserver(&apiserver_command)?;

        let ready = wait_ready(&url, &pki.ca_pem, &token, &mut apiserver);
        if let Err(e) = ready {
            let etcd_tail = etcd.log_tail(20);
            drop(apiserver);
            drop(etcd);
            return Err(e.context(format!("etcd log tail:\n{etcd_tail}")));
        }

        // --- client configuration --------------------------------------------------------
        let kubeconfig = d.join("kubeconfig");
        write_kubeconfig(&kubeconfig, &url, &pki.ca_pem, &token)?;

        let mut config = kube::Config::new(url.parse().context("parsing the apiserver URL")?);
        config.root_cert = Some(vec![pki.ca_der.clone()]);
        config.auth_info =
            serde_json::from_value(serde_json::json!({ "token": token })).context("building the kube AuthInfo")?;
        config.read_timeout = Some(Duration::from_secs(60));

        eprintln!(
            "control plane: kube-apiserver {} ready at {url} (etcd {etcd_url}); \
             logs: {} {}; KUBECONFIG={}",
            kubernetes_version(),
            apiserver_log.display(),
            etcd_log.display(),
            kubeconfig.display()
        );

        Ok(ControlPlane {
            url,
            ca_pem: pki.ca_pem,
            token,
            kubeconfig,
            etcd_url,
            sa_public_key_pem: pki.sa_public_pem,
            config,
            apiserver_command,
            apiserver: Some(apiserver),
            etcd,
            dir,
        })
    }

    /// Stops the kube-apiserver (etcd keeps running), as in an apiserver outage.
    pub fn stop_apiserver(&mut self) {
        self.apiserver = None;
    }

    /// Starts the kube-apiserver again with the same flags and port, and waits until it is ready.
    pub fn start_apiserver(&mut self) -> Result<()> {
        let mut apiserver = spawn_apiserver(&self.apiserver_command)?;
        wait_ready(&self.url, &self.ca_pem, &self.token, &mut apiserver)?;
        self.apiserver = Some(apiserver);
        Ok(())
    }

    /// A new client authenticated as a member of `system:masters`.
    ///
    /// Each call builds a new client, so that it belongs to the calling test's runtime.
    /// Must be called from within a Tokio runtime.
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config.clone()).expect("building a kube client")
    }

    /// The kube client configuration behind [`Self::client`].
    pub fn config(&self) -> kube::Config {
        self.config.clone()
    }

    /// `https://127.0.0.1:<port>`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// PEM of the CA that signed the apiserver's serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Bearer token of the admin user (group `system:masters`).
    pub fn admin_token(&self) -> &str {
        &self.token
    }

    /// A kubeconfig file for the admin user, e.g. for `KUBECONFIG` of a child process.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// `http://127.0.0.1:<port>` of the etcd server.
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// PEM of the public key that verifies the service-account tokens the apiserver issues.
    pub fn service_account_public_key_pem(&self) -> &str {
        &self.sa_public_key_pem
    }

    /// The control plane's temporary folder (certificates, etcd data, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `lines` lines of both server logs.
    pub fn log_tails(&self, lines: usize) -> String {
        let apiserver = self
            .apiserver
            .as_ref()
            .map(|server| server.log_tail(lines))
            .unwrap_or_default();
        format!("{apiserver}\n{}", self.etcd.log_tail(lines))
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails(40));
        }
        // Server::drop stops the processes (apiserver first, declared first); the folder
        // is removed afterwards when `dir` is dropped.
    }
}

fn spawn_apiserver((binary, args, log): &(PathBuf, Vec<String>, PathBuf)) -> Result<Server> {
    Server::spawn("kube-apiserver", Command::new(binary).args(args), log)
}

impl Server {
    fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Result<Server> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut child = cmd
            .env("EXIT_ON_STDIN_EOF", "1")
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawning {name}"))?;
        let stdin = child.stdin.take();
        Ok(Server {
            name,
            child,
            stdin,
            log: log.to_owned(),
        })
    }

    fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early with {status}\n{}", self.name, self.log_tail(60));
        }
        Ok(())
    }

    fn log_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            text = String::from_utf8_lossy(&buf).into_owned();
        }
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!("----- last {lines} lines of {} -----\n{tail}", self.log.display())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Closing stdin asks the wrapper to exit; give it a moment, then kill.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `/readyz` until it answers `ok`.
fn wait_ready(url: &str, ca_pem: &str, token: &str, apiserver: &mut Server) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a runtime for the readiness probe")?;
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes())?)
        .timeout(Duration::from_secs(5))
        .build()
        .context("building the readiness probe client")?;
    let readyz = format!("{url}/readyz");
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last;
    loop {
        apiserver.check_running()?;
        let answer = rt.block_on(async {
            let resp = http.get(&readyz).bearer_auth(token).send().await?;
            let status = resp.status();
            let body = resp.text().await?;
            Ok::<_, reqwest::Error>((status, body))
        });
        match answer {
            Ok((status, body)) if status.is_success() && body.trim() == "ok" => return Ok(()),
            Ok((status, body)) => last = format!("{status}: {}", body.trim()),
            Err(e) => last = format!("{e}"),
        }
        if Instant::now() > deadline {
            bail!(
                "kube-apiserver not ready after {READY_TIMEOUT:?} (last /readyz answer: {last})\n{}",
                apiserver.log_tail(60)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

struct Pki {
    ca_pem: String,
    ca_der: Vec<u8>,
    serving_cert_pem: String,
    serving_key_pem: String,
    sa_public_pem: String,
    sa_private_pem: String,
}

impl Pki {
    fn generate() -> Result<Pki> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
            KeyUsagePurpose,
        };
        let now =
            rcgen::date_time_ymd(1970, 1, 1) + std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
        let day = Duration::from_secs(86_400);

        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "workload-identity-webhook test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        ca_params.not_before = now - day;
        ca_params.not_after = now + 30 * day;
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut serving_params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        serving_params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving_params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        serving_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        serving_params.use_authority_key_identifier_extension = true;
        serving_params.not_before = now - day;
        serving_params.not_after = now + 30 * day;
        let serving_key = KeyPair::generate()?;
        let serving_cert = serving_params.signed_by(&serving_key, &issuer)?;

        // ECDSA P-256 (rcgen's default); kube-apiserver signs tokens with ES256.
        let sa_key = KeyPair::generate()?;

        Ok(Pki {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().to_vec(),
            serving_cert_pem: serving_cert.pem(),
            serving_key_pem: serving_key.serialize_pem(),
            sa_public_pem: sa_key.public_key_pem(),
            sa_private_pem: sa_key.serialize_pem(),
        })
    }
}

fn write_kubeconfig(path: &Path, url: &str, ca_pem: &str, token: &str) -> Result<()> {
    use base64::Engine as _;
    let ca_data = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    // JSON is valid YAML, and every kubeconfig reader accepts it.
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "test",
            "cluster": { "server": url, "certificate-authority-data": ca_data },
        }],
        "users": [{ "name": "admin", "user": { "token": token } }],
        "contexts": [{
            "name": "test",
            "context": { "cluster": "test", "user": "admin", "namespace": "default" },
        }],
        "current-context": "test",
    });
    fs::write(path, serde_json::to_vec_pretty(&kubeconfig)?).with_context(|| format!("writing {}", path.display()))
}

/// `N` distinct free loopback ports (all bound at once, then released).
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("binding 127.0.0.1:0")?;
    let mut ports = [0u16; N];
    for (port, l) in ports.iter_mut().zip(&listeners) {
        *port = l.local_addr()?.port();
    }
    Ok(ports)
}

fn random_token() -> String {
    let mut s = String::new();
    for _ in 0..2 {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        h.write_u32(std::process::id());
        s.push_str(&format!("{:016x}", h.finish()));
    }
    s
}

/// Removes control plane folders left behind by test processes that are gone (the shared
/// control plane lives in a `static`, which Rust never drops).
fn sweep_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let path = entry.path();
        let Ok(pid) = fs::read_to_string(path.join(OWNER_FILE)) else {
            continue;
        };
        let Ok(pid) = pid.trim().parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(&path);
        }
    }
}
