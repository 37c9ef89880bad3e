//! SDK conformance: official Python, Go, Java and Node SDKs run their default credential chains with
//! exactly the env and files the webhook injects, and must end with credentials from `emulate`, whose token
//! services verify the tokens as the clouds do. Tokens come from the real test apiserver
//! (TokenRequest for the mutated Pod's ServiceAccount, audience and lifetime, bound to the Pod),
//! laid out as the kubelet lays them out at the Pod's mount paths.
//!
//! Isolation: the emulator and every SDK process run in a network namespace of this test with only
//! loopback (and 169.254.170.23, the Pod Identity agent), each SDK in a private mount namespace with
//! its own /etc/hosts (cloud names -> 127.0.0.1) and /etc/resolv.conf (no reachable DNS server), so a
//! stray request fails closed. Needs root (network namespaces), `ip`, `unshare`, python3, go, a JDK
//! (java, javac, keytool), mvn, node and npm; the SDKs are installed into
//! ~/.cache/workload-identity-webhook/sdk on first use (pinned: requirements.txt, go.sum,
//! dependencies.lock, package-lock.json under tests/sdk).
//!
//! Java (issue 26): the AWS SDK for Java v2 also runs without its `sts` module (the web-identity
//! provider is skipped: the error says so) and at 2.40.2 on the IPv6 Pod Identity agent address,
//! which it takes only with the `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6` the webhook injects.
//!
//! Beyond the grant, a case may check the hosts an SDK called (the emulator logs each request's host
//! at debug) and its answer: the regional STS of a mapping's region, and google-auth taking the
//! injected project without asking Cloud Resource Manager (issue 13 items 1 and 3).
//!
//! Endpoint overrides (issue 14): the `override-*` cases point the injected env and Google credential
//! configuration at `emulator.wiw-system.svc` (a local cluster's Service name), which only their
//! /etc/hosts resolves, to an address of the namespace; no cloud name resolves there.
//!
//! The node suite (`tests/node/run.sh`) runs the same SDK runs on the files a real kubelet wrote,
//! inside its own network namespace: `sdks_get_credentials_from_the_kubelets_files` (ignored here).

#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/webhook.rs"]
mod webhook;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use workload_identity_webhook::shell::certificates::ca::GeneratedCa;

const ROLE: &str = "arn:aws:iam::111122223333:role/app";
const POD_ROLE: &str = "arn:aws:iam::111122223333:role/pod-identity";
const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const CLIENT: &str = "00000000-1111-2222-3333-444444444444";
const PROVIDER: &str = "projects/123456789/locations/global/workloadIdentityPools/pool/providers/provider";
const GOOGLE_SA: &str = "reader@my-project.iam.gserviceaccount.com";
const POD_IDENTITY_AGENT: &str = "169.254.170.23";
/// The agent's address on an IPv6 cluster.
const POD_IDENTITY_AGENT_IPV6: &str = "fd00:ec2::23";
/// The emulator as a local cluster's Service, the host of the endpoint-override cases: only their
/// /etc/hosts resolves it (to an address of the test's namespace), and no cloud name resolves there,
/// so an SDK that gets credentials has used the override.
const EMULATOR_SERVICE: &str = "emulator.wiw-system.svc";
const EMULATOR_SERVICE_IP: &str = "10.96.0.10";
/// The overrides: plain http (a cluster-local name) for AWS STS and Google; https for Entra ID,
/// since azure-identity and azidentity refuse an http authority host.
const EMULATOR_HTTP: &str = "http://emulator.wiw-system.svc:8080";
const EMULATOR_HTTPS: &str = "https://emulator.wiw-system.svc:8443";
/// A mapping that sends Google's token exchange and impersonation to the emulator's Service.
const GOOGLE_OVERRIDE_MAPPING: &str = "gcp: {serviceAccount: 'reader@my-project.iam.gserviceaccount.com', tokenUrl: 'http://emulator.wiw-system.svc:8080/v1/token', impersonationEndpoint: 'http://emulator.wiw-system.svc:8080'}";
/// Every host name the SDKs call; all resolve to the emulator and are SANs of its certificate.
const CLOUD_HOSTS: &[&str] = &[
    "sts.amazonaws.com",
    "sts.us-west-2.amazonaws.com",
    "sts.eu-west-1.amazonaws.com",
    "login.microsoftonline.com",
    "login.chinacloudapi.cn",
    "login.microsoftonline.us",
    "sts.googleapis.com",
    "iamcredentials.googleapis.com",
    "cloudresourcemanager.googleapis.com",
];

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cache"))
        .join("workload-identity-webhook/sdk")
}

/// The SHA-256 of `bytes`, in hex.
fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A short digest of the files' contents, naming the cache folder built from them.
fn digest(files: &[PathBuf]) -> String {
    let contents: Vec<u8> = files.iter().flat_map(|file| std::fs::read(file).unwrap()).collect();
    sha256_hex(&contents)[..16].to_owned()
}

fn run_ok(command: &mut Command, what: &str) {
    let output = command.output().unwrap_or_else(|err| panic!("{what}: {err}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The path of `tool` on PATH, or a one-line failure naming what this machine lacks.
fn require(tool: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("SDK conformance needs `{tool}` on PATH (network namespaces, SDK installs)"))
}

/// Runs `install` in a new `dir` unless an earlier run finished it (its `installed` marker), and
/// says how long it took.
fn install_once(dir: &Path, what: &str, install: impl FnOnce()) {
    if dir.join("installed").exists() {
        return;
    }
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    install();
    std::fs::write(dir.join("installed"), "").unwrap();
    eprintln!("sdk: {what} installed in {:.1} s", started.elapsed().as_secs_f64());
}

/// An SDK runner: the command that runs one probe, and the versions it pins.
struct Sdk {
    name: &'static str,
    versions: String,
    command: Vec<PathBuf>,
}

/// The pinned Python SDKs in a venv keyed by the lock file's digest (installed once).
fn python_sdks() -> Sdk {
    let requirements = manifest_dir().join("tests/sdk/python/requirements.txt");
    let venv = cache_dir().join(format!("python-{}", digest(std::slice::from_ref(&requirements))));
    let python = venv.join("bin/python");
    install_once(&venv, "Python SDKs", || {
        run_ok(
            Command::new(require("python3")).args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
        );
        run_ok(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--no-deps",
                    "-r",
                ])
                .arg(&requirements),
            "pip install -r tests/sdk/python/requirements.txt",
        );
    });
    let text = std::fs::read_to_string(&requirements).unwrap();
    let pin = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}==")))
            .unwrap_or("?")
            .to_owned()
    };
    Sdk {
        name: "python",
        versions: format!(
            "boto3 {} azure-identity {} google-auth {}",
            pin("boto3"),
            pin("azure-identity"),
            pin("google-auth")
        ),
        command: vec![python, "-I".into(), manifest_dir().join("tests/sdk/python/probe.py")],
    }
}

/// The Go probe (aws-sdk-go-v2 config, azidentity, x/oauth2/google), built once per source digest.
fn go_sdks() -> Sdk {
    let module = manifest_dir().join("tests/sdk/go");
    let sources: Vec<PathBuf> = ["go.mod", "go.sum", "main.go"].iter().map(|f| module.join(f)).collect();
    let binary = cache_dir().join(format!("go-{}/sdk-probe", digest(&sources)));
    if !binary.exists() {
        let started = Instant::now();
        run_ok(
            Command::new(require("go"))
                .current_dir(&module)
                .args(["build", "-mod=readonly", "-o"])
                .arg(&binary)
                .arg("."),
            "go build tests/sdk/go",
        );
        eprintln!("sdk: Go SDK probe built in {:.1} s", started.elapsed().as_secs_f64());
    }
    let text = std::fs::read_to_string(module.join("go.mod")).unwrap();
    let pin = |path: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(&format!("{path} ")))
            .map(|rest| rest.split_whitespace().next().unwrap_or("?").to_owned())
            .unwrap_or_else(|| "?".to_owned())
    };
    Sdk {
        name: "go",
        versions: format!(
            "aws-sdk-go-v2/config {} azidentity {} x/oauth2 {}",
            pin("github.com/aws/aws-sdk-go-v2/config"),
            pin("github.com/Azure/azure-sdk-for-go/sdk/azidentity"),
            pin("golang.org/x/oauth2")
        ),
        command: vec![binary],
    }
}

/// The AWS SDK for Java v2 release the IPv6 case also runs: the last one resolved here whose
/// container credentials provider refuses the IPv6 Pod Identity agent `[fd00:ec2::23]` unless
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE` is `IPv6` (2.57.8 and later accept it without).
const JAVA_AWS_BEFORE_IPV6_FIX: &str = "2.40.2";

/// The Java probes, all from tests/sdk/java.
struct JavaSdks {
    /// AWS SDK v2 (with `sts`), azure-identity and google-auth-library at the pom's versions.
    sdk: Sdk,
    /// The same without the `sts` jar: an application that has only its service's module.
    without_sts: Sdk,
    /// The same with AWS SDK `JAVA_AWS_BEFORE_IPV6_FIX`.
    aws_before_ipv6_fix: Sdk,
}

/// The Java probe: Maven resolves tests/sdk/java/pom.xml (the clouds' BOMs) into a local repository
/// under the cache, every resolved jar is checked against tests/sdk/java/dependencies.lock, and
/// Probe.java is compiled once per source digest. The private CA reaches the JVM through a
/// truststore (`JAVA_TOOL_OPTIONS`, see `sdk_env`).
fn java_sdks() -> JavaSdks {
    let module = manifest_dir().join("tests/sdk/java");
    let java = require("java");
    let sources: Vec<PathBuf> = ["pom.xml", "Probe.java"].iter().map(|f| module.join(f)).collect();
    let dir = cache_dir().join(format!("java-{}", digest(&sources)));
    let repository = cache_dir().join("maven");
    let classpaths = [
        ("classpath", None),
        ("classpath-aws-before-ipv6-fix", Some(JAVA_AWS_BEFORE_IPV6_FIX)),
    ];
    install_once(&dir, "Java SDKs (Maven) and probe", || {
        let mvn = require("mvn");
        for (file, aws_version) in classpaths {
            let mut command = Command::new(&mvn);
            command
                .current_dir(&module)
                .args(["--batch-mode", "--quiet", "--strict-checksums", "-Dstyle.color=never"])
                .arg(format!("-Dmaven.repo.local={}", repository.display()))
                .args(aws_version.map(|version| format!("-Daws.sdk.version={version}")))
                .arg("dependency:build-classpath")
                .arg(format!("-Dmdep.outputFile={}", dir.join(file).display()));
            run_ok(&mut command, "mvn dependency:build-classpath (tests/sdk/java/pom.xml)");
        }
        run_ok(
            Command::new(require("javac"))
                .args(["-nowarn", "-d"])
                .arg(dir.join("classes"))
                .arg("-cp")
                .arg(std::fs::read_to_string(dir.join("classpath")).unwrap().trim())
                .arg(module.join("Probe.java")),
            "javac tests/sdk/java/Probe.java",
        );
    });
    let [current, before_fix] = classpaths.map(|(file, _)| {
        std::fs::read_to_string(dir.join(file))
            .unwrap()
            .trim()
            .split(':')
            .map(PathBuf::from)
            .collect::<Vec<_>>()
    });
    check_java_lock(
        &module.join("dependencies.lock"),
        &repository,
        &[&current, &before_fix],
        &dir,
    );
    let version = |jars: &[PathBuf], artifact: &str| {
        jars.iter()
            .filter_map(|jar| {
                jar.file_name()?
                    .to_str()?
                    .strip_prefix(&format!("{artifact}-"))?
                    .strip_suffix(".jar")
            })
            .next()
            .unwrap_or("?")
            .to_owned()
    };
    // <repository>/software/amazon/awssdk/sts/<version>/sts-<version>.jar
    let is_sts = |jar: &PathBuf| {
        jar.parent()
            .and_then(Path::parent)
            .is_some_and(|dir| dir.ends_with("software/amazon/awssdk/sts"))
    };
    let probe = |name, jars: Vec<PathBuf>| {
        let versions = format!(
            "aws-sdk-java-v2 {} ({}) azure-identity {} google-auth-library {}",
            version(&jars, "auth"),
            if jars.iter().any(is_sts) {
                "with sts"
            } else {
                "without sts"
            },
            version(&jars, "azure-identity"),
            version(&jars, "google-auth-library-oauth2-http"),
        );
        let classpath = std::env::join_paths(std::iter::once(dir.join("classes")).chain(jars)).unwrap();
        Sdk {
            name,
            versions,
            command: vec![java.clone(), "-cp".into(), classpath.into(), "Probe".into()],
        }
    };
    JavaSdks {
        without_sts: probe(
            "java-no-sts",
            current.iter().filter(|jar| !is_sts(jar)).cloned().collect(),
        ),
        sdk: probe("java", current),
        aws_before_ipv6_fix: probe("java-aws-2.40", before_fix),
    }
}

/// Every jar of the Java classpaths, as `sha256sum` prints it run in the Maven repository, must be
/// a line of the lock file, and every line of the lock file such a jar. When they differ, the
/// resolved list is written beside the classpaths in `dir` (to review and copy after a deliberate
/// change of tests/sdk/java/pom.xml).
fn check_java_lock(lock: &Path, repository: &Path, classpaths: &[&[PathBuf]], dir: &Path) {
    // By path, as the lock file lists them.
    let resolved: BTreeMap<String, String> = classpaths
        .iter()
        .flat_map(|jars| jars.iter())
        .map(|jar| {
            let relative = jar.strip_prefix(repository).unwrap_or_else(|_| {
                panic!(
                    "{} is outside the Maven repository {}",
                    jar.display(),
                    repository.display()
                )
            });
            let line = format!("{}  {}", sha256_hex(&std::fs::read(jar).unwrap()), relative.display());
            (relative.display().to_string(), line)
        })
        .collect();
    let resolved: Vec<&String> = resolved.values().collect();
    let text = std::fs::read_to_string(lock).unwrap_or_else(|err| panic!("{}: {err}", lock.display()));
    let pinned: Vec<&str> = text
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    let unpinned: Vec<&&String> = resolved
        .iter()
        .filter(|line| !pinned.contains(&line.as_str()))
        .collect();
    let unused: Vec<&&str> = pinned
        .iter()
        .filter(|line| !resolved.iter().any(|r| r == *line))
        .collect();
    if !unpinned.is_empty() || !unused.is_empty() {
        let written = dir.join("dependencies.lock");
        let header: String = text
            .lines()
            .take_while(|line| line.starts_with('#'))
            .map(|line| format!("{line}\n"))
            .collect();
        let body: String = resolved.iter().map(|line| format!("{line}\n")).collect();
        std::fs::write(&written, header + &body).unwrap();
        panic!(
            "the Java SDKs resolved from tests/sdk/java/pom.xml differ from {} (resolved list: {}):\n  resolved, not pinned: {unpinned:#?}\n  pinned, not resolved: {unused:#?}",
            lock.display(),
            written.display()
        );
    }
}

/// The Node probe (@aws-sdk/credential-providers, @azure/identity, google-auth-library): `npm ci`
/// installs tests/sdk/node/package-lock.json (its integrity hashes checked) into a folder of the
/// cache with the probe, once per source digest. The private CA reaches Node through
/// `NODE_EXTRA_CA_CERTS` (see `sdk_env`).
fn node_sdks() -> Sdk {
    let module = manifest_dir().join("tests/sdk/node");
    let node = require("node");
    let files = ["package.json", "package-lock.json", "probe.js"];
    let dir = cache_dir().join(format!(
        "node-{}",
        digest(&files.iter().map(|f| module.join(f)).collect::<Vec<_>>())
    ));
    install_once(&dir, "Node SDKs (npm)", || {
        for file in files {
            std::fs::copy(module.join(file), dir.join(file)).unwrap();
        }
        run_ok(
            Command::new(require("npm"))
                .current_dir(&dir)
                .args([
                    "ci",
                    "--ignore-scripts",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    "--cache",
                ])
                .arg(cache_dir().join("npm")),
            "npm ci (tests/sdk/node/package-lock.json)",
        );
    });
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(module.join("package.json")).unwrap()).unwrap();
    let pin = |name: &str| manifest["dependencies"][name].as_str().unwrap_or("?").to_owned();
    Sdk {
        name: "node",
        versions: format!(
            "@aws-sdk/credential-providers {} @azure/identity {} google-auth-library {}",
            pin("@aws-sdk/credential-providers"),
            pin("@azure/identity"),
            pin("google-auth-library")
        ),
        command: vec![node, dir.join("probe.js")],
    }
}

/// The SDKs every case runs.
const OFFICIAL: &[&str] = &["python", "go", "java", "node"];

/// The official SDKs: Python, Go, Java and Node.
fn official_sdks() -> [Sdk; 4] {
    [python_sdks(), go_sdks(), java_sdks().sdk, node_sdks()]
}

/// A network namespace with only loopback and the Pod Identity agent addresses; deleted on drop.
struct NetworkNamespace {
    name: String,
    ip: PathBuf,
}

impl NetworkNamespace {
    fn create(ip: PathBuf) -> NetworkNamespace {
        sweep_stale_namespaces(&ip);
        let name = format!("wiw-sdk-{}", std::process::id());
        let added = Command::new(&ip).args(["netns", "add", &name]).output().unwrap();
        if !added.status.success() {
            panic!(
                "SDK conformance needs network namespaces: `ip netns add` failed: {}",
                String::from_utf8_lossy(&added.stderr).trim()
            );
        }
        let namespace = NetworkNamespace { name, ip };
        namespace.ip_in(&["link", "set", "lo", "up"]);
        namespace.ip_in(&["addr", "add", &format!("{POD_IDENTITY_AGENT}/32"), "dev", "lo"]);
        namespace.ip_in(&["addr", "add", &format!("{POD_IDENTITY_AGENT_IPV6}/128"), "dev", "lo"]);
        namespace.ip_in(&["addr", "add", &format!("{EMULATOR_SERVICE_IP}/32"), "dev", "lo"]);
        namespace
    }

    fn ip_in(&self, args: &[&str]) {
        run_ok(Command::new(&self.ip).args(["-n", &self.name]).args(args), "ip -n");
    }

    /// `net:[inode]`, as /proc/<pid>/ns/net reads inside it.
    fn id(&self) -> String {
        format!(
            "net:[{}]",
            std::fs::metadata(format!("/run/netns/{}", self.name)).unwrap().ino()
        )
    }
}

impl Drop for NetworkNamespace {
    fn drop(&mut self) {
        let _ = Command::new(&self.ip).args(["netns", "del", &self.name]).status();
    }
}

/// Deletes `wiw-sdk-<pid>` namespaces whose test process is gone (killed before its Drop ran).
fn sweep_stale_namespaces(ip: &Path) {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("wiw-sdk-")
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = Command::new(ip).args(["netns", "del", &name]).status();
        }
    }
}

/// `workload-identity-webhook emulate` inside the namespace, killed on drop; or the one in the node
/// suite's cluster (no child; its log is the container log the kubelet writes).
struct Emulator {
    /// Closing it stops the emulator.
    stdin: Option<std::process::ChildStdin>,
    child: Option<Child>,
    log: PathBuf,
    /// The in-cluster emulator's log reaches its file through the container runtime, a moment
    /// after the answer: decisions are read once the file has not grown for this long.
    settle: Option<Duration>,
}

impl Emulator {
    fn decisions_since(&self, offset: usize) -> Vec<Value> {
        if let Some(quiet) = self.settle {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut length = self.log_len();
            loop {
                std::thread::sleep(quiet);
                let now = self.log_len();
                if now == length || Instant::now() > deadline {
                    break;
                }
                length = now;
            }
        }
        let text = std::fs::read_to_string(&self.log).unwrap();
        text[offset..]
            .lines()
            // A container log line starts with the time, stream and tag before the JSON.
            .filter_map(|line| serde_json::from_str::<Value>(&line[line.find('{')?..]).ok())
            .filter(|line| line["message"] == "decision" || line["message"] == "stray request")
            .collect()
    }

    /// The hosts of the requests since `offset`, in order.
    fn hosts_since(&self, offset: usize) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap();
        text[offset..]
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["message"] == "request")
            .map(|line| line["host"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    fn log_len(&self) -> usize {
        std::fs::read_to_string(&self.log).unwrap().len()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Some(child) = &mut self.child {
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "emulator log {}:\n{}",
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// What a case expects of the emulator for one cloud.
#[derive(Clone, Copy)]
enum Expect {
    /// `service` granted `identity`; the SDK prints credentials starting with `prefix`.
    Grant {
        service: &'static str,
        identity: &'static str,
        prefix: &'static str,
    },
    /// `service` refused with `reason`; the SDK ends without credentials.
    Refuse {
        service: &'static str,
        reason: &'static str,
    },
    /// The SDK ends without credentials, its error saying `says`, before asking any token service.
    FailsBeforeAsking { says: &'static str },
    /// The AWS default chain of a container without an identity: it ends without credentials, the
    /// SDK's error saying no provider found any, before asking any token service.
    NoAwsCredentials,
}

struct Case {
    name: &'static str,
    service_account: &'static str,
    annotations: Value,
    cluster_flags: &'static [&'static str],
    /// A mapping for the case's ServiceAccount (its cloud sections), before the config's others.
    mapping: Option<&'static str>,
    /// Endpoint-override case: only `EMULATOR_SERVICE` resolves, no cloud name.
    overrides: bool,
    /// The SDKs that run the case (`OFFICIAL`, or special builds of one).
    sdks: &'static [&'static str],
    clouds: Vec<(&'static str, Expect)>,
    /// More checks of the SDK runs of a cloud, beyond its expectation.
    also: Vec<(&'static str, Also)>,
}

/// What a case checks beyond the grant, from the emulator's request log and the SDK's answer.
#[derive(Clone, Copy)]
enum Also {
    /// Every request of the run went to this host (e.g. the STS of the injected region).
    Host(&'static str),
    /// No request of the run went to this host (e.g. Cloud Resource Manager, with the project injected).
    NotHost(&'static str),
    /// This SDK's answer holds this text (e.g. the project it found).
    Answer(&'static str, &'static str),
}

fn cases() -> Vec<Case> {
    let irsa = Expect::Grant {
        service: "aws-sts",
        identity: ROLE,
        prefix: "access_key=ASIAEMULATED",
    };
    let azure = |host: &'static str| Expect::Grant {
        service: "entra-id",
        identity: host,
        prefix: "token=emulated-entra-access-token.",
    };
    let impersonation = Expect::Grant {
        service: "google-iam",
        identity: GOOGLE_SA,
        prefix: "token=emulated-google-access-token.",
    };
    let azure_annotations = json!({"azure.workload.identity/client-id": CLIENT});
    vec![
        Case {
            name: "aws-irsa",
            service_account: "irsa",
            annotations: json!({"eks.amazonaws.com/role-arn": ROLE}),
            cluster_flags: &[],
            mapping: None,
            overrides: false,
            sdks: OFFICIAL,
            clouds: vec![("aws", irsa)],
            also: vec![],
        },
        // The mapping's region (not the cluster's us-west-2) and regional STS (issue 13 item 1):
        // both SDKs call the STS of that region.
        Case {
            name: "aws-regional-sts",
            service_account: "regional",
            annotations: json!({}),
            cluster_flags: &[],
            mapping: Some(
                "aws: {roleArn: 'arn:aws:iam::111122223333:role/app', region: eu-west-1, stsRegionalEndpoints: true}",
            ),
            overrides: false,
            sdks: OFFICIAL,
            clouds: vec![("aws", irsa)],
            also: vec![("aws", Also::Host("sts.eu-west-1.amazonaws.com"))],
        },
        Case {
            name: "aws-pod-identity",
            service_account: "pod-identity",
            annotations: json!({}),
            cluster_flags: &[],
            mapping: None,
            overrides: false,
            sdks: OFFICIAL,
            clouds: vec![(
                "aws",
                Expect::Grant {
                    service: "eks-pod-identity",
                    identity: POD_ROLE,
                    prefix: "access_key=ASIAEMULATED",
                },
            )],
            also: vec![],
        },
        // An IPv6 cluster's agent address: every SDK takes it, the AWS SDK for Java v2 before 2.57
        // only with AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6, which the webhook injects with it.
        Case {
            name: "aws-pod-identity-ipv6-agent",
            service_account: "pod-identity-ipv6",
            annotations: json!({}),
            cluster_flags: &[],
            mapping: Some(
                "aws: {mode: podIdentity, containerCredentialsFullUri: 'http://[fd00:ec2::23]/v1/credentials'}",
            ),
            overrides: false,
            sdks: &["python", "go", "java", "node", "java-aws-2.40"],
            clouds: vec![(
                "aws",
                Expect::Grant {
                    service: "eks-pod-identity",
                    identity: POD_ROLE,
                    prefix: "access_key=ASIAEMULATED",
                },
            )],
            also: vec![],
        },
        // The Java trap the webhook cannot fix: without the `sts` module on the class path the AWS
        // SDK for Java v2 skips the web-identity provider (docs/sdk-compatibility.md).
        Case {
            name: "aws-irsa-java-without-sts",
            service_account: "irsa",
            annotations: json!({"eks.amazonaws.com/role-arn": ROLE}),
            cluster_flags: &[],
            mapping: None,
            overrides: false,
            sdks: &["java-no-sts"],
            clouds: vec![(
                "aws",
                Expect::FailsBeforeAsking {
                    says: "the 'sts' service module must be on the class path",
                },
            )],
            also: vec![],
        },
        Case {
            name: "azure-public",
            service_account: "azure",
            annotations: azure_annotations.clone(),
            cluster_flags: &[],
            mapping: None,
            overrides: false,
            sdks: OFFICIAL,
            clouds: vec![("azure", azure("login.microsoftonline.com"))],
            also: vec![],
        },
        Case {
            name: "azure-china",
            service_account: "azure",
            annotations: azure_annotations.clone(),
            cluster_flags: &["--azure-cloud", "AzureChinaCloud"],
            mapping: None,
            overrides: false,
            sdks: OFFICIAL,
            clouds: vec![("azure", azure("login.chinacloudapi.cn"))],
            also: vec![],
        },
        Case {
            name: "azure-us-government",
            service_account: "azure",
            annotations: azure_annotations,
            cluster_flags: &["--azure-cloud", "AzureUSGovernmentCloud"],
            mapping: None,
            overrides: false,
            sdks: OFFICIAL,
            clouds: vec![("azure", azure("login.microsoftonline.us"))],
            also: vec![],
        },
        Case {
            name: "google-impersonation",
            service_account: "google-impersonation",
            annotations: json!({"iam.gke.io/gcp-service-account": GOOGLE_SA}),
            cluster_flags: &[],
            mapping: None,
            overrides: false,
            sdks: OFFICIAL,
            clouds: vec![("google", impersonation)],
            // The project of the service account's e-mail, injected (issue 13 item 3): google-auth
            // returns it without asking Cloud Resource Manager (x/oauth2 has no project look-up).
            also: vec![
                ("google", Also::NotHost("cloudresourcemanager.googleapis.com")),
                ("google", Also::Answer("python", "project=my-project")),
            ],
        },
        Case {
            name: "google-direct",
            service_account: "google-direct",
            annotations: json!({"cloud.google.com/workload-identity-provider": PROVIDER}),
            cluster_flags: &[],
            mapping: None,
            overrides: false,
            // Node: google-auth-library looks the project up with `gcloud config config-helper`
            // first where gcloud is installed, and gcloud introspects the federated token (POST
            // sts.googleapis.com/v1/introspect) to name the account: the emulator serves that too.
            sdks: OFFICIAL,
            clouds: vec![(
                "google",
                Expect::Grant {
                    service: "google-sts",
                    identity: PROVIDER,
                    prefix: "token=emulated-google-federated-token.",
                },
            )],
            // No e-mail, no project injected: google-auth asks Cloud Resource Manager about the
            // pool's project number, and the emulator answers this id.
            also: vec![("google", Also::Answer("python", "project=emulated-project-123456789"))],
        },
        Case {
            name: "all-three-on-one-pod",
            service_account: "all",
            annotations: json!({
                "eks.amazonaws.com/role-arn": ROLE,
                "azure.workload.identity/client-id": CLIENT,
                "iam.gke.io/gcp-service-account": GOOGLE_SA,
            }),
            cluster_flags: &[],
            mapping: None,
            overrides: false,
            sdks: OFFICIAL,
            clouds: vec![
                ("aws", irsa),
                ("azure", azure("login.microsoftonline.com")),
                ("google", impersonation),
            ],
            also: vec![],
        },
        Case {
            name: "other-service-account-refused",
            service_account: "other",
            annotations: json!({
                "eks.amazonaws.com/role-arn": ROLE,
                "azure.workload.identity/client-id": CLIENT,
                "iam.gke.io/gcp-service-account": GOOGLE_SA,
            }),
            cluster_flags: &[],
            mapping: None,
            overrides: false,
            sdks: OFFICIAL,
            clouds: ["aws-sts", "entra-id", "google-sts"]
                .into_iter()
                .zip(["aws", "azure", "google"])
                .map(|(service, cloud)| {
                    (
                        cloud,
                        Expect::Refuse {
                            service,
                            reason: "untrusted_subject",
                        },
                    )
                })
                .collect(),
            also: vec![],
        },
        Case {
            name: "wrong-audience-refused",
            service_account: "wrong-audience",
            annotations: json!({"eks.amazonaws.com/role-arn": ROLE, "eks.amazonaws.com/audience": "sts.example.com"}),
            cluster_flags: &[],
            mapping: None,
            overrides: false,
            sdks: OFFICIAL,
            clouds: vec![(
                "aws",
                Expect::Refuse {
                    service: "aws-sts",
                    reason: "wrong_audience",
                },
            )],
            also: vec![],
        },
        // Endpoint overrides (issue 14): the same identities through the emulator's Service name.
        Case {
            name: "override-aws-sts-endpoint",
            service_account: "irsa",
            annotations: json!({"eks.amazonaws.com/role-arn": ROLE}),
            cluster_flags: &["--aws-sts-endpoint", EMULATOR_HTTP],
            mapping: None,
            overrides: true,
            sdks: OFFICIAL,
            clouds: vec![("aws", irsa)],
            also: vec![],
        },
        Case {
            name: "override-aws-endpoint",
            service_account: "irsa",
            annotations: json!({"eks.amazonaws.com/role-arn": ROLE}),
            cluster_flags: &["--aws-endpoint", EMULATOR_HTTP],
            mapping: None,
            overrides: true,
            sdks: OFFICIAL,
            clouds: vec![("aws", irsa)],
            also: vec![],
        },
        Case {
            name: "override-pod-identity-agent",
            service_account: "pod-identity",
            annotations: json!({}),
            cluster_flags: &[],
            // A node-local agent on loopback: botocore and aws-sdk-go-v2 take plain http only to
            // loopback and the ECS/EKS agent addresses, and botocore checks an https agent only
            // against its own CA bundle (not AWS_CA_BUNDLE).
            mapping: Some(
                "aws: {mode: podIdentity, containerCredentialsFullUri: 'http://127.0.0.1:2703/v1/credentials'}",
            ),
            overrides: true,
            sdks: OFFICIAL,
            clouds: vec![(
                "aws",
                Expect::Grant {
                    service: "eks-pod-identity",
                    identity: POD_ROLE,
                    prefix: "access_key=ASIAEMULATED",
                },
            )],
            also: vec![],
        },
        Case {
            name: "override-azure-authority-host",
            service_account: "azure",
            annotations: json!({"azure.workload.identity/client-id": CLIENT}),
            cluster_flags: &["--azure-authority-host", EMULATOR_HTTPS],
            mapping: None,
            overrides: true,
            sdks: OFFICIAL,
            clouds: vec![("azure", azure("emulator.wiw-system.svc:8443/"))],
            also: vec![],
        },
        // google-auth-library for Java takes only Google's own token URLs (docs/sdk-compatibility.md).
        Case {
            name: "override-google-mapping",
            service_account: "google-impersonation",
            annotations: json!({"iam.gke.io/gcp-service-account": GOOGLE_SA}),
            cluster_flags: &[],
            mapping: Some(GOOGLE_OVERRIDE_MAPPING),
            overrides: true,
            sdks: &["python", "go", "node"],
            clouds: vec![("google", impersonation)],
            also: vec![],
        },
        Case {
            name: "override-google-mapping-java",
            service_account: "google-impersonation",
            annotations: json!({"iam.gke.io/gcp-service-account": GOOGLE_SA}),
            cluster_flags: &[],
            mapping: Some(GOOGLE_OVERRIDE_MAPPING),
            overrides: true,
            sdks: &["java"],
            clouds: vec![(
                "google",
                Expect::FailsBeforeAsking {
                    says: "The provided token URL is invalid",
                },
            )],
            also: vec![],
        },
    ]
}

/// Subjects of ServiceAccounts `names` in `namespace`.
fn trusted(namespace: &str, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|name| format!("system:serviceaccount:{namespace}:{name}"))
        .collect()
}

/// The emulator's trust rules: which subjects each identity trusts (Pod Identity: `POD_ROLE`;
/// Azure: `TENANT`/`CLIENT`; Google: `PROVIDER` and `GOOGLE_SA`).
struct Rules {
    roles: Vec<(&'static str, Vec<String>)>,
    pod_identity: Vec<String>,
    azure: Vec<String>,
    providers: Vec<String>,
    google_service_account: Vec<String>,
}

impl Rules {
    fn yaml(&self) -> String {
        let list = |subjects: &[String]| serde_json::to_string(subjects).unwrap();
        let roles: Vec<String> = self
            .roles
            .iter()
            .map(|(arn, subjects)| format!("{{arn: '{arn}', subjects: {}}}", list(subjects)))
            .collect();
        format!(
            "aws:\n  roles: [{}]\n  podIdentity: [{{arn: '{POD_ROLE}', subjects: {}}}]\n\
             azure: [{{tenantId: '{TENANT}', clientId: '{CLIENT}', subjects: {}}}]\n\
             google:\n  providers: [{{name: '{PROVIDER}', subjects: {}}}]\n  serviceAccounts: [{{email: '{GOOGLE_SA}', subjects: {}}}]\n",
            roles.join(", "),
            list(&self.pod_identity),
            list(&self.azure),
            list(&self.providers),
            list(&self.google_service_account),
        )
    }
}

/// Trust rules: each identity trusts exactly the ServiceAccounts of the cases meant to get it
/// (`other` and nobody else is missing from role X; `wrong-audience` is trusted but sends the
/// wrong audience).
fn rules(namespace: &str) -> String {
    Rules {
        roles: vec![(ROLE, trusted(namespace, &["irsa", "regional", "all", "wrong-audience"]))],
        pod_identity: trusted(namespace, &["pod-identity", "pod-identity-ipv6"]),
        azure: trusted(namespace, &["azure", "all"]),
        providers: trusted(namespace, &["google-impersonation", "google-direct", "all"]),
        google_service_account: trusted(namespace, &["google-impersonation", "all"]),
    }
    .yaml()
}

/// The webhook's answer for the case's Pod, from `mutate` (the server's code path).
fn mutated_pod(dir: &Path, namespace: &str, case: &Case) -> Value {
    let mapping = case.mapping.map_or_else(String::new, |clouds| {
        format!(
            "  - {{namespace: '{namespace}', serviceAccount: {}, {clouds}}}\n",
            case.service_account
        )
    });
    let config = format!(
        "aws: {{region: us-west-2}}\ngcp: {{workloadIdentityProvider: '{PROVIDER}'}}\nazure: {{tenantId: '{TENANT}'}}\n\
         identities:\n{mapping}  - {{namespace: '{namespace}', serviceAccount: pod-identity, aws: {{mode: podIdentity}}}}\n"
    );
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": case.name, "namespace": namespace},
        "spec": {"serviceAccountName": case.service_account, "containers": [{"name": "app", "image": "app"}]}});
    let service_account = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": case.service_account, "namespace": namespace, "annotations": case.annotations}});
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    std::fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
    std::fs::write(dir.join("sa.json"), service_account.to_string()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_workload-identity-webhook"))
        .current_dir(dir)
        .args([
            "mutate",
            "--object",
            "pod.json",
            "--service-account",
            "sa.json",
            "--config",
            "config.yaml",
        ])
        .args(case.cluster_flags)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "mutate: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Writes the files of the container's mounts as the kubelet does (`..<timestamp>/` holding the
/// files, `..data` pointing at it, one symlink per file through `..data`), with tokens from the real
/// apiserver's TokenRequest bound to the Pod. Returns `(staging dir, mount path)` pairs.
async fn kubelet_files(api: &Api<ServiceAccount>, pod: &Pod, stage: &Path) -> Vec<(PathBuf, String)> {
    let spec = pod.spec.as_ref().unwrap();
    let container = &spec.containers[0];
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let mut mounts = Vec::new();
    for (index, mount) in container.volume_mounts.iter().flatten().enumerate() {
        let volume = spec.volumes.iter().flatten().find(|v| v.name == mount.name).unwrap();
        let dir = stage.join(format!("volume-{index}"));
        // gcloud's writable config directory: an empty one, as the kubelet makes an emptyDir.
        if volume.empty_dir.is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            mounts.push((dir, mount.mount_path.clone()));
            continue;
        }
        let Some(projected) = &volume.projected else {
            panic!("{}: only projected volumes and emptyDirs are injected", volume.name)
        };
        let data = "..2026_01_01_00_00_00.000000001";
        std::fs::create_dir_all(dir.join(data)).unwrap();
        for source in projected.sources.iter().flatten() {
            let mut files: Vec<(String, String)> = Vec::new();
            if let Some(token) = &source.service_account_token {
                let request: TokenRequest = serde_json::from_value(json!({"spec": {
                    "audiences": [token.audience.clone().unwrap()],
                    "expirationSeconds": token.expiration_seconds,
                    "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                        "name": pod.metadata.name, "uid": pod.metadata.uid},
                }}))
                .unwrap();
                let issued = api
                    .create_token_request(
                        spec.service_account_name.as_deref().unwrap(),
                        &PostParams::default(),
                        &request,
                    )
                    .await
                    .unwrap();
                files.push((token.path.clone(), issued.status.unwrap().token));
            }
            for item in source.downward_api.iter().flat_map(|d| d.items.iter().flatten()) {
                let field = &item.field_ref.as_ref().unwrap().field_path;
                let key = field
                    .strip_prefix("metadata.annotations['")
                    .and_then(|rest| rest.strip_suffix("']"))
                    .unwrap_or_else(|| panic!("unexpected downward API field {field}"));
                files.push((item.path.clone(), annotations[key].clone()));
            }
            for (path, content) in files {
                std::fs::write(dir.join(data).join(&path), content).unwrap();
                std::os::unix::fs::symlink(format!("..data/{path}"), dir.join(&path)).unwrap();
            }
        }
        std::os::unix::fs::symlink(data, dir.join("..data")).unwrap();
        mounts.push((dir, mount.mount_path.clone()));
    }
    mounts
}

/// Runs inside the network namespace, in a new mount namespace: checks the isolation, puts the
/// private /etc/hosts and /etc/resolv.conf and the Pod's files in place, then runs the SDK with
/// exactly the given env. Arguments: hosts, resolv.conf, expected netns id, mounts file, a mapped
/// name and its address ("name ip"), a name that must not resolve, command...
const IN_POD: &str = r#"
set -eu
hosts=$1 resolv=$2 netns=$3 mounts=$4 mapped=$5 unmapped=$6; shift 6
fail() { echo "error isolation: $*"; exit 97; }
[ "$(readlink /proc/self/ns/net)" = "$netns" ] || fail "not in the test's network namespace"
if ip route get 192.0.2.1 >/dev/null 2>&1; then fail "a route leads out of the namespace"; fi
mount --bind "$hosts" /etc/hosts
mount --bind "$resolv" /etc/resolv.conf
getent hosts "${mapped% *}" | grep -qF "${mapped#* } " || fail "${mapped% *} does not resolve to the emulator"
if getent hosts "$unmapped" >/dev/null 2>&1; then fail "an unmapped name ($unmapped) resolves"; fi
# Pod mount paths live under /var/run/secrets: a tmpfs over its nearest existing parent hides the host's.
top=/var/run/secrets; while [ ! -d "$top" ]; do top=$(dirname "$top"); done
mount -t tmpfs wiw-sdk-secrets "$top"
while read -r source target; do mkdir -p "$target"; cp -a "$source/." "$target/"; done < "$mounts"
exec timeout 180 env -u PWD -u OLDPWD -u SHLVL -u _ "$@"
"#;

/// Needs root (network namespace, private mounts) and returns `ip`, `unshare` and `bash`.
fn require_root_tools() -> (PathBuf, PathBuf, PathBuf) {
    let uid = Command::new("id").arg("-u").output().expect("id -u");
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        panic!("SDK conformance needs root: it creates a network namespace and private mounts");
    }
    (require("ip"), require("unshare"), require("bash"))
}

/// Writes what the emulator and the SDK runs share into `d`: the test CA and the emulator's
/// certificate for the cloud host names, the JWKS and trust rules, the private /etc/hosts and
/// /etc/resolv.conf, and an empty HOME.
fn write_run_files(d: &Path, jwks: &str, rules: &str) {
    let ca = GeneratedCa::new("workload-identity-webhook SDK test CA").unwrap();
    let (cert, key) = ca.issue(&[CLOUD_HOSTS, &[EMULATOR_SERVICE]].concat()).unwrap();
    for (name, text) in [
        ("tls.crt", cert),
        ("tls.key", key),
        ("jwks.json", jwks.to_owned()),
        ("rules.yaml", rules.to_owned()),
    ] {
        std::fs::write(d.join(name), text).unwrap();
    }
    write_isolation_files(d, &ca.cert_pem, "");
}

/// The CA the SDKs trust (PEM, and a PKCS#12 truststore for Java), the private /etc/hosts (cloud
/// names on loopback, plus `extra_hosts` lines) and /etc/resolv.conf, and an empty HOME.
fn write_isolation_files(d: &Path, ca_pem: &str, extra_hosts: &str) {
    for (name, text) in [
        ("ca.pem", ca_pem.to_owned()),
        (
            "hosts",
            format!(
                "127.0.0.1 localhost\n{}\n{extra_hosts}",
                CLOUD_HOSTS
                    .iter()
                    .map(|h| format!("127.0.0.1 {h}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        ),
        (
            "hosts-overrides",
            format!("127.0.0.1 localhost\n{EMULATOR_SERVICE_IP} {EMULATOR_SERVICE}\n"),
        ),
        // Nothing listens on port 53 in the namespace: every DNS query fails at once.
        ("resolv.conf", "nameserver 127.0.0.1\n".to_owned()),
    ] {
        std::fs::write(d.join(name), text).unwrap();
    }
    run_ok(
        Command::new(require("keytool"))
            .args([
                "-importcert",
                "-noprompt",
                "-alias",
                "wiw-sdk-test-ca",
                "-storetype",
                "PKCS12",
            ])
            .args(["-storepass", TRUSTSTORE_PASSWORD, "-file"])
            .arg(d.join("ca.pem"))
            .arg("-keystore")
            .arg(d.join("truststore.p12")),
        "keytool -importcert (the Java truststore)",
    );
    std::fs::create_dir(d.join("home")).unwrap();
}

/// `command` in `netns` (`ip netns exec`), or where this process runs when `netns` is None (the
/// node suite starts this test inside its own network namespace).
fn in_namespace(netns: Option<&NetworkNamespace>, program: &Path) -> Command {
    match netns {
        Some(netns) => {
            let mut command = Command::new(&netns.ip);
            command.args(["netns", "exec", &netns.name]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Where the cloud host names and the Pod Identity agent address lead: 127.0.0.1:443 and
/// 169.254.170.23:80.
fn cloud_listeners() -> Vec<String> {
    vec![
        "--https-listen=127.0.0.1:443".to_owned(),
        format!("--http-listen={POD_IDENTITY_AGENT}:80"),
    ]
}

/// Starts `emulate` on the `listen` addresses, logging to `<name>.log`, with the files of
/// `write_run_files`, and waits until it is ready.
fn start_emulator(
    netns: Option<&NetworkNamespace>,
    bash: &Path,
    d: &Path,
    issuer: &str,
    name: &str,
    listen: &[String],
) -> Emulator {
    let log = d.join(format!("{name}.log"));
    // Through a shell that stops the emulator when its stdin closes, so that it ends with this
    // process even when the test is killed before Drop runs.
    let mut child = in_namespace(netns, bash)
        .args([
            "-c",
            r#""$@" & emulator=$!; read -r _ || true; kill "$emulator""#,
            "emulate",
        ])
        .arg(webhook::emulator_binary())
        .args(["--log-format", "json", "--issuer", issuer])
        // Debug for the emulator's own crate: one "request" line (host, uri) per request.
        .args(["--log-level", "info,workload_identity_emulator=debug"])
        .args(listen)
        .arg("--rules")
        .arg(d.join("rules.yaml"))
        .arg("--jwks-file")
        .arg(d.join("jwks.json"))
        .arg("--tls-cert-file")
        .arg(d.join("tls.crt"))
        .arg("--tls-key-file")
        .arg(d.join("tls.key"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut emulator = Emulator {
        stdin: child.stdin.take(),
        child: None,
        log,
        settle: None,
    };
    let child = emulator.child.insert(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&emulator.log)
        .unwrap()
        .contains("emulator ready")
    {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("emulator exited with {status}");
        }
        assert!(Instant::now() < deadline, "emulator not ready after 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    emulator
}

/// The password of the Java truststore holding the test CA (keytool requires one).
const TRUSTSTORE_PASSWORD: &str = "changeit";

/// Exactly the container's env as the webhook wrote it, plus the test CA and an empty HOME.
fn sdk_env(container: &Container, d: &Path) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for var in container.env.iter().flatten() {
        assert!(var.value_from.is_none(), "{}: valueFrom is not laid out here", var.name);
        env.insert(var.name.clone(), var.value.clone().unwrap_or_default());
    }
    for name in [
        "AWS_CA_BUNDLE",
        "REQUESTS_CA_BUNDLE",
        "SSL_CERT_FILE",
        "NODE_EXTRA_CA_CERTS",
    ] {
        env.insert(name.to_owned(), d.join("ca.pem").display().to_string());
    }
    // As a Java Pod gets a private CA: a truststore named on the JVM's command line, no code.
    env.insert(
        "JAVA_TOOL_OPTIONS".to_owned(),
        format!(
            "-Djavax.net.ssl.trustStore={} -Djavax.net.ssl.trustStorePassword={TRUSTSTORE_PASSWORD}",
            d.join("truststore.p12").display()
        ),
    );
    env.insert("HOME".to_owned(), d.join("home").display().to_string());
    env
}

/// Per cloud: how its SDK runs must end, and the case's further checks of them.
type Expectations<'a> = (&'a [(&'a str, Expect)], &'a [(&'a str, Also)]);

/// Where the SDK runs: the network namespace, the shared files, the emulator.
struct Runner<'a> {
    netns: Option<&'a NetworkNamespace>,
    netns_id: String,
    unshare: PathBuf,
    bash: PathBuf,
    dir: &'a Path,
    emulator: &'a Emulator,
    /// What the application itself sets besides the Pod's env (the probes' code choices).
    app_env: &'a [(&'a str, &'a str)],
}

impl Runner<'_> {
    /// Runs every SDK for every cloud of a case with the env of one of the Pod's containers and its
    /// files (`mounts`: staging folder and in-container path), prints one line each and collects
    /// the failures. With `overrides`, only the emulator's Service name resolves.
    fn run(
        &self,
        sdks: &[&Sdk],
        (case, overrides): (&str, bool),
        (pod, container): (&Pod, &Container),
        mounts: &[(PathBuf, String)],
        (clouds, also): Expectations<'_>,
        tally: &mut Tally,
    ) {
        let mounts_file = self.dir.join(format!("{case}.mounts"));
        std::fs::write(
            &mounts_file,
            mounts
                .iter()
                .map(|(source, target)| format!("{} {target}\n", source.display()))
                .collect::<String>(),
        )
        .unwrap();
        let mut env = sdk_env(container, self.dir);
        if overrides {
            // What a Go app must do itself for a private authority host (see tests/sdk/go/main.go).
            env.insert("SDK_PROBE_DISABLE_INSTANCE_DISCOVERY".to_owned(), "true".to_owned());
        }
        env.extend(
            self.app_env
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string())),
        );
        let subject = format!(
            "system:serviceaccount:{}:{}",
            pod.metadata.namespace.as_deref().unwrap(),
            pod.spec.as_ref().unwrap().service_account_name.as_deref().unwrap()
        );
        for sdk in sdks {
            for &(cloud, expect) in clouds {
                let offset = self.emulator.log_len();
                let output = in_namespace(self.netns, &self.unshare)
                    .args(["--mount", "--propagation", "private"])
                    .arg(&self.bash)
                    .args(["-c", IN_POD, "in-pod"])
                    .arg(self.dir.join(if overrides { "hosts-overrides" } else { "hosts" }))
                    .arg(self.dir.join("resolv.conf"))
                    .arg(&self.netns_id)
                    .arg(&mounts_file)
                    .args(if overrides {
                        [
                            format!("{EMULATOR_SERVICE} {EMULATOR_SERVICE_IP}"),
                            "sts.amazonaws.com".to_owned(),
                        ]
                    } else {
                        ["sts.amazonaws.com 127.0.0.1".to_owned(), "www.example.com".to_owned()]
                    })
                    .args(&sdk.command)
                    .arg(cloud)
                    .env_clear()
                    .envs(&env)
                    .output()
                    .unwrap();
                let stdout = String::from_utf8_lossy(&output.stdout);
                let answer = stdout.lines().last().unwrap_or("error (no output)").to_owned();
                let verdict = judge(
                    expect,
                    sdk.name,
                    &answer,
                    &self.emulator.decisions_since(offset),
                    &subject,
                )
                .and_then(|()| {
                    let checks = also.iter().filter(|(of, _)| *of == cloud).map(|(_, check)| *check);
                    judge_also(checks, sdk.name, &answer, &self.emulator.hosts_since(offset))
                });
                *tally.checks.entry(sdk.name).or_default() += 1;
                let shown: String = answer.chars().take(90).collect();
                println!(
                    "sdk {:<13} {:<30} {:<6} {} {shown}",
                    sdk.name,
                    case,
                    cloud,
                    if verdict.is_ok() { "PASS" } else { "FAIL" }
                );
                if let Err(problem) = verdict {
                    tally.failures.push(format!(
                        "{} {case} {cloud}: {problem}\n  stderr: {}",
                        sdk.name,
                        String::from_utf8_lossy(&output.stderr)
                            .lines()
                            .rev()
                            .take(5)
                            .collect::<Vec<_>>()
                            .join(" | ")
                    ));
                }
            }
        }
    }
}

/// What the SDK runs of a test came to: checks per SDK, and the failures.
#[derive(Default)]
struct Tally {
    checks: BTreeMap<&'static str, usize>,
    failures: Vec<String>,
}

/// The closing lines: versions, checks per SDK, total and time; fails with every failed check.
fn report(sdks: &[&Sdk], started: Instant, tally: &Tally) {
    for sdk in sdks {
        println!("sdk {:<13} versions: {}", sdk.name, sdk.versions);
    }
    let per_sdk: Vec<String> = tally.checks.iter().map(|(sdk, n)| format!("{sdk} {n}")).collect();
    println!(
        "sdk: {} checks in {:.1} s ({})",
        tally.checks.values().sum::<usize>(),
        started.elapsed().as_secs_f64(),
        per_sdk.join(", ")
    );
    assert!(
        tally.failures.is_empty(),
        "{} SDK checks failed:\n{}",
        tally.failures.len(),
        tally.failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sdks_get_credentials_from_what_the_webhook_injects() {
    let (ip, unshare, bash) = require_root_tools();
    let started = Instant::now();
    let java = java_sdks();
    let sdks = [
        python_sdks(),
        go_sdks(),
        java.sdk,
        node_sdks(),
        java.aws_before_ipv6_fix,
        java.without_sts,
    ];
    eprintln!("sdk: SDKs ready in {:.1} s", started.elapsed().as_secs_f64());

    let cp = control_plane::shared().await;
    let client = cp.client();
    let namespace = format!("sdk-team-a-{}", std::process::id());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
    let _ = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await;
    let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);

    // The issuer and keys, as a cloud reads them: the apiserver's OIDC discovery and JWKS.
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cp.ca_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let fetch = |url: String| {
        let http = http.clone();
        async move {
            http.get(url)
                .bearer_auth(cp.admin_token())
                .send()
                .await
                .unwrap()
                .error_for_status()
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let discovery: Value =
        serde_json::from_str(&fetch(format!("{}/.well-known/openid-configuration", cp.url())).await).unwrap();
    let issuer = discovery["issuer"].as_str().unwrap().to_owned();
    let jwks = fetch(format!("{}/openid/v1/jwks", cp.url())).await;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_run_files(d, &jwks, &rules(&namespace));
    let netns = NetworkNamespace::create(ip.clone());
    let listen = [
        cloud_listeners(),
        vec![format!("--http-listen=[{POD_IDENTITY_AGENT_IPV6}]:80")],
    ]
    .concat();
    let emulator = start_emulator(Some(&netns), &bash, d, &issuer, "emulator", &listen);
    // The endpoint-override cases get their own emulator, as a local cluster's Service (and a
    // node-local Pod Identity agent on loopback): a grant logged by it can only come through an
    // override, never through a cloud's default address.
    let service = [
        format!("--http-listen={EMULATOR_SERVICE_IP}:8080"),
        format!("--https-listen={EMULATOR_SERVICE_IP}:8443"),
        "--http-listen=127.0.0.1:2703".to_owned(),
    ];
    let service_emulator = start_emulator(Some(&netns), &bash, d, &issuer, "service-emulator", &service);
    let runner = Runner {
        netns: Some(&netns),
        netns_id: netns.id(),
        unshare,
        bash,
        dir: d,
        emulator: &emulator,
        app_env: &[],
    };
    let service_runner = Runner {
        emulator: &service_emulator,
        netns_id: runner.netns_id.clone(),
        unshare: runner.unshare.clone(),
        bash: runner.bash.clone(),
        ..runner
    };

    let mut tally = Tally::default();
    let mut created = std::collections::HashSet::new();
    for case in cases() {
        if created.insert(case.service_account) {
            let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {
                "name": case.service_account, "annotations": case.annotations}}))
            .unwrap();
            service_accounts.create(&PostParams::default(), &sa).await.unwrap();
        }
        let case_dir = d.join(case.name);
        std::fs::create_dir(&case_dir).unwrap();
        let mutated = mutated_pod(&case_dir, &namespace, &case);
        let created = control_plane::create_json::<Pod>(&client, Some(&namespace), &PostParams::default(), &mutated)
            .await
            .unwrap();
        let pod: Pod = serde_json::from_value(created).unwrap();
        let mounts = kubelet_files(&service_accounts, &pod, &case_dir).await;
        let runner = if case.overrides { &service_runner } else { &runner };
        let case_sdks: Vec<&Sdk> = sdks.iter().filter(|sdk| case.sdks.contains(&sdk.name)).collect();
        runner.run(
            &case_sdks,
            (case.name, case.overrides),
            (&pod, &pod.spec.as_ref().unwrap().containers[0]),
            &mounts,
            (&case.clouds, &case.also),
            &mut tally,
        );
    }
    report(&sdks.iter().collect::<Vec<_>>(), started, &tally);
    drop(emulator);
    drop(service_emulator);
    drop(netns);
}

/// A case on the node suite's files: the SDKs run with the env and identity mounts of one
/// container of a Pod in `NODE_NAMESPACE`, and what each must get per cloud.
struct NodeCase {
    pod: &'static str,
    container: &'static str,
    clouds: Vec<(&'static str, Expect)>,
}

impl NodeCase {
    /// A case of the Pod's main container (`app` in tests/node/checks.sh).
    fn app(pod: &'static str, clouds: Vec<(&'static str, Expect)>) -> NodeCase {
        NodeCase {
            pod,
            container: "app",
            clouds,
        }
    }
}

/// The node suite's cases (tests/node/checks.sh): its Pods in namespace `wiw-apps`, most of the
/// ServiceAccount of the same name, and what each SDK must get with the files the kubelet wrote.
/// `intruder` claims every identity of the others but no trust rule names it. `per-container-1`
/// maps a role to each of its containers `app`, `init` and the native sidecar `sidecar` (one
/// ServiceAccount: the role granted tells them apart); `opt-in`'s Pod lists only `app`, so its
/// `init` has no identity.
fn node_cases() -> Vec<NodeCase> {
    let irsa = |role: &'static str| Expect::Grant {
        service: "aws-sts",
        identity: role,
        prefix: "access_key=ASIAEMULATED",
    };
    let azure = Expect::Grant {
        service: "entra-id",
        identity: "login.microsoftonline.com",
        prefix: "token=emulated-entra-access-token.",
    };
    let impersonation = Expect::Grant {
        service: "google-iam",
        identity: GOOGLE_SA,
        prefix: "token=emulated-google-access-token.",
    };
    let refused = |service| Expect::Refuse {
        service,
        reason: "untrusted_subject",
    };
    let per_container = |container, role| NodeCase {
        pod: "per-container-1",
        container,
        clouds: vec![("aws", irsa(role))],
    };
    vec![
        NodeCase::app("irsa", vec![("aws", irsa(NODE_IRSA_ROLE))]),
        NodeCase::app(
            "podid",
            vec![(
                "aws",
                Expect::Grant {
                    service: "eks-pod-identity",
                    identity: POD_ROLE,
                    prefix: "access_key=ASIAEMULATED",
                },
            )],
        ),
        NodeCase::app("azure", vec![("azure", azure)]),
        NodeCase::app("gcp-impersonate", vec![("google", impersonation)]),
        NodeCase::app(
            "gcp-direct",
            vec![(
                "google",
                Expect::Grant {
                    service: "google-sts",
                    identity: PROVIDER,
                    prefix: "token=emulated-google-federated-token.",
                },
            )],
        ),
        NodeCase::app(
            "multi",
            vec![
                ("aws", irsa(NODE_MULTI_ROLE)),
                ("azure", azure),
                ("google", impersonation),
            ],
        ),
        NodeCase::app(
            "intruder",
            vec![
                ("aws", refused("aws-sts")),
                ("azure", refused("entra-id")),
                ("google", refused("google-sts")),
            ],
        ),
        per_container("app", NODE_PER_CONTAINER_APP_ROLE),
        per_container("init", NODE_PER_CONTAINER_INIT_ROLE),
        per_container("sidecar", NODE_PER_CONTAINER_SIDECAR_ROLE),
        NodeCase::app("opt-in", vec![("aws", irsa(NODE_IRSA_ROLE))]),
        NodeCase {
            pod: "opt-in",
            container: "init",
            clouds: vec![("aws", Expect::NoAwsCredentials)],
        },
    ]
}

const NODE_NAMESPACE: &str = "wiw-apps";
const NODE_IRSA_ROLE: &str = "arn:aws:iam::111122223333:role/irsa";
const NODE_MULTI_ROLE: &str = "arn:aws:iam::111122223333:role/multi";
const NODE_PER_CONTAINER_APP_ROLE: &str = "arn:aws:iam::111122223333:role/per-container-app";
const NODE_PER_CONTAINER_INIT_ROLE: &str = "arn:aws:iam::111122223333:role/per-container-init";
const NODE_PER_CONTAINER_SIDECAR_ROLE: &str = "arn:aws:iam::111122223333:role/per-container-sidecar";

/// The same SDK runs on the files the kubelet of the node suite wrote: `tests/node/run.sh` starts
/// this test inside the node's network namespace (the apiserver listens on the Service IP there,
/// so 127.0.0.1:443 is free for the emulator) with
/// - `WIW_SDK_NODE_TOKENS`: `<namespace>/<pod>/pod.json` (the Pod as stored) and
///   `<namespace>/<pod>/<volume>/` (copies of the files the kubelet wrote into each volume);
/// - `WIW_SDK_NODE_JWKS`, `WIW_SDK_NODE_ISSUER`: the node apiserver's `/openid/v1/jwks` and issuer;
/// - `WIW_SDK_NODE_NETNS`: the node's network namespace (`/run/netns/<name>`).
#[test]
#[ignore = "run by tests/node/run.sh inside the node's namespaces"]
fn sdks_get_credentials_from_the_kubelets_files() {
    let (_, unshare, bash) = require_root_tools();
    let folder = PathBuf::from(node_var("WIW_SDK_NODE_TOKENS"));
    let jwks = std::fs::read_to_string(node_var("WIW_SDK_NODE_JWKS")).unwrap();
    let issuer = node_var("WIW_SDK_NODE_ISSUER");
    let netns_id = node_netns_id();
    let started = Instant::now();
    let sdks = official_sdks();

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let trusted = |names: &[&str]| trusted(NODE_NAMESPACE, names);
    let rules = Rules {
        roles: vec![
            (NODE_IRSA_ROLE, trusted(&["irsa"])),
            (NODE_MULTI_ROLE, trusted(&["multi"])),
            (NODE_PER_CONTAINER_APP_ROLE, trusted(&["per-container"])),
            (NODE_PER_CONTAINER_INIT_ROLE, trusted(&["per-container"])),
            (NODE_PER_CONTAINER_SIDECAR_ROLE, trusted(&["per-container"])),
        ],
        pod_identity: trusted(&["podid"]),
        azure: trusted(&["azure", "multi"]),
        providers: trusted(&["gcp-impersonate", "gcp-direct", "multi"]),
        google_service_account: trusted(&["gcp-impersonate", "multi"]),
    };
    write_run_files(d, &jwks, &rules.yaml());
    let emulator = start_emulator(None, &bash, d, &issuer, "emulator", &cloud_listeners());
    let runner = Runner {
        netns: None,
        netns_id,
        unshare,
        bash,
        dir: d,
        emulator: &emulator,
        app_env: &[],
    };
    let sdks: Vec<&Sdk> = sdks.iter().collect();
    let mut tally = Tally::default();
    run_on_node_files(&runner, &sdks, &folder, &node_cases(), &mut tally);
    report(&sdks, started, &tally);
    drop(emulator);
}

/// A variable the node suite sets.
fn node_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: this test is run by tests/node/run.sh"))
}

/// The id of the node suite's network namespace (`WIW_SDK_NODE_NETNS`), which this process must be in.
fn node_netns_id() -> String {
    let netns = node_var("WIW_SDK_NODE_NETNS");
    let netns_id = format!("net:[{}]", std::fs::metadata(&netns).unwrap().ino());
    assert_eq!(
        std::fs::read_link("/proc/self/ns/net").unwrap().display().to_string(),
        netns_id,
        "not inside the node suite's network namespace {netns}"
    );
    netns_id
}

/// Runs `cases` on the files the node suite copied for each Pod of `NODE_NAMESPACE`; returns the
/// checks in `tally`.
fn run_on_node_files(runner: &Runner, sdks: &[&Sdk], folder: &Path, cases: &[NodeCase], tally: &mut Tally) {
    for case in cases {
        let pod_dir = folder.join(NODE_NAMESPACE).join(case.pod);
        let text = std::fs::read_to_string(pod_dir.join("pod.json"))
            .unwrap_or_else(|err| panic!("{}: {err}", pod_dir.join("pod.json").display()));
        let pod: Pod = serde_json::from_str(&text).unwrap();
        let spec = pod.spec.as_ref().unwrap();
        let container = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|container| container.name == case.container)
            .unwrap_or_else(|| panic!("{}: no container {}", case.pod, case.container));
        // The container's mounts whose volume the node suite copied (its identity volumes).
        let mounts: Vec<(PathBuf, String)> = container
            .volume_mounts
            .iter()
            .flatten()
            .map(|mount| (pod_dir.join(&mount.name), mount.mount_path.clone()))
            .filter(|(source, _)| source.is_dir())
            .collect();
        // A container without an identity mounts none of the Pod's identity volumes either.
        let has_identity = case
            .clouds
            .iter()
            .any(|(_, expect)| !matches!(expect, Expect::NoAwsCredentials));
        assert_eq!(
            !mounts.is_empty(),
            has_identity,
            "{}/{}: identity volume mounts {mounts:?} (files in {})",
            case.pod,
            case.container,
            pod_dir.display()
        );
        let name = format!("{}:{}", case.pod, case.container);
        runner.run(
            sdks,
            (&name, false),
            (&pod, container),
            &mounts,
            (&case.clouds, &[]),
            tally,
        );
    }
}

/// The emulator's Service names, as the local overlay's settings use them.
const IN_CLUSTER_EMULATOR: &str = "workload-identity-emulator.workload-identity-system.svc";
const NODE_EMULATED_ROLE: &str = "arn:aws:iam::111122223333:role/emulated";
const NODE_EMULATED_POD_ROLE: &str = "arn:aws:iam::111122223333:role/emulated-pod-identity";

/// The SDKs against the emulator the node suite runs in its cluster (manifests/overlays/local),
/// with the env and files the kubelet gave the Pods `emulated` (trusted by the emulator's rules
/// ConfigMap for every cloud) and `not-emulated` (the same identities, trusted by none), and
/// `emulated-podid` / `not-emulated-podid` (EKS Pod Identity mappings; only the first has an
/// association), whose SDKs call the default agent URI http://169.254.170.23/v1/credentials, served
/// on the node's network by the overlay's Pod Identity agent DaemonSet. The node has no cluster DNS
/// and no kube-proxy: the private /etc/hosts maps the Service names to the emulator Pod's IP (it
/// listens on the Service's ports itself). Besides the node-suite variables of
/// `sdks_get_credentials_from_the_kubelets_files`:
/// - `WIW_SDK_NODE_EMULATOR_IP`: the emulator Pod's IP;
/// - `WIW_SDK_NODE_EMULATOR_CA`: the CA it published (ConfigMap workload-identity-emulator-ca);
/// - `WIW_SDK_NODE_EMULATOR_LOG`: its container log as the kubelet writes it (the decisions);
/// - `WIW_SDK_NODE_AGENT_LOG`: the same of the Pod Identity agent's container.
#[test]
#[ignore = "run by tests/node/run.sh inside the node's namespaces"]
fn sdks_get_credentials_from_the_in_cluster_emulator() {
    let (_, unshare, bash) = require_root_tools();
    let netns_id = node_netns_id();
    let folder = PathBuf::from(node_var("WIW_SDK_NODE_TOKENS"));
    let ip = node_var("WIW_SDK_NODE_EMULATOR_IP");
    let ca = std::fs::read_to_string(node_var("WIW_SDK_NODE_EMULATOR_CA")).unwrap();
    let started = Instant::now();
    let sdks = official_sdks();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_isolation_files(
        d,
        &ca,
        &format!("{ip} {IN_CLUSTER_EMULATOR} {IN_CLUSTER_EMULATOR}.cluster.local\n"),
    );
    let in_cluster = |variable| Emulator {
        stdin: None,
        child: None,
        log: PathBuf::from(node_var(variable)),
        settle: Some(Duration::from_millis(300)),
    };
    let emulator = in_cluster("WIW_SDK_NODE_EMULATOR_LOG");
    let agent = in_cluster("WIW_SDK_NODE_AGENT_LOG");
    let runner = Runner {
        netns: None,
        netns_id,
        unshare,
        bash,
        dir: d,
        emulator: &emulator,
        // A Go application using azidentity with a custom authority host disables instance
        // discovery in code (there is no environment variable for it).
        app_env: &[("SDK_PROBE_DISABLE_INSTANCE_DISCOVERY", "true")],
    };
    let refused = |service| Expect::Refuse {
        service,
        reason: "untrusted_subject",
    };
    let cases = [
        NodeCase::app(
            "emulated",
            vec![
                (
                    "aws",
                    Expect::Grant {
                        service: "aws-sts",
                        identity: NODE_EMULATED_ROLE,
                        prefix: "access_key=ASIAEMULATED",
                    },
                ),
                (
                    "azure",
                    Expect::Grant {
                        service: "entra-id",
                        identity: IN_CLUSTER_EMULATOR,
                        prefix: "token=emulated-entra-access-token.",
                    },
                ),
                (
                    "google",
                    Expect::Grant {
                        service: "google-iam",
                        identity: GOOGLE_SA,
                        prefix: "token=emulated-google-access-token.",
                    },
                ),
            ],
        ),
        NodeCase::app(
            "not-emulated",
            vec![
                ("aws", refused("aws-sts")),
                ("azure", refused("entra-id")),
                ("google", refused("google-sts")),
            ],
        ),
    ];
    // The local overlay points gcp.tokenUrl at the in-cluster emulator, and google-auth-library for
    // Java takes only Google's own token URLs (docs/sdk-compatibility.md): it must fail so, first.
    let (java, others): (Vec<&Sdk>, Vec<&Sdk>) = sdks.iter().partition(|sdk| sdk.name == "java");
    let java_cases: Vec<_> = cases
        .iter()
        .map(|case| {
            let clouds = case
                .clouds
                .iter()
                .map(|&(cloud, expect)| match cloud {
                    "google" => (
                        cloud,
                        Expect::FailsBeforeAsking {
                            says: "The provided token URL is invalid",
                        },
                    ),
                    _ => (cloud, expect),
                })
                .collect();
            NodeCase {
                pod: case.pod,
                container: case.container,
                clouds,
            }
        })
        .collect();
    let mut tally = Tally::default();
    run_on_node_files(&runner, &others, &folder, &cases, &mut tally);
    run_on_node_files(&runner, &java, &folder, &java_cases, &mut tally);
    let sdks: Vec<&Sdk> = sdks.iter().collect();
    let pod_identity = [
        NodeCase::app(
            "emulated-podid",
            vec![(
                "aws",
                Expect::Grant {
                    service: "eks-pod-identity",
                    identity: NODE_EMULATED_POD_ROLE,
                    prefix: "access_key=ASIAEMULATED",
                },
            )],
        ),
        NodeCase::app("not-emulated-podid", vec![("aws", refused("eks-pod-identity"))]),
    ];
    let runner = Runner {
        emulator: &agent,
        ..runner
    };
    run_on_node_files(&runner, &sdks, &folder, &pod_identity, &mut tally);
    report(&sdks, started, &tally);
}

/// Installs the SDKs (Python venv, Go probe, Java classpaths, Node modules) outside any namespace,
/// so that the node suite's runs (no route out) find them ready.
#[test]
#[ignore = "run by tests/node/run.sh before it enters its namespaces"]
fn install_sdks() {
    official_sdks();
}

/// Checks one SDK run of `sdk` against a case's further checks and the hosts it called.
fn judge_also(checks: impl Iterator<Item = Also>, sdk: &str, answer: &str, hosts: &[String]) -> Result<(), String> {
    for check in checks {
        match check {
            Also::Host(host) if hosts.is_empty() || hosts.iter().any(|called| called != host) => {
                return Err(format!(
                    "expected every request to go to {host}, they went to {hosts:?}"
                ));
            }
            Also::NotHost(host) if hosts.iter().any(|called| called == host) => {
                return Err(format!("a request went to {host}: {hosts:?}"));
            }
            Also::Answer(of, text) if of == sdk && !answer.split_whitespace().any(|word| word == text) => {
                return Err(format!("expected {text} in the answer: {answer}"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks one SDK run of `sdk` against the expectation and the emulator's decisions during the run.
fn judge(expect: Expect, sdk: &str, answer: &str, decisions: &[Value], subject: &str) -> Result<(), String> {
    if let Some(stray) = decisions.iter().find(|d| d["message"] == "stray request") {
        return Err(format!(
            "the SDK made a request no emulated service answers: {}",
            stray["what"]
        ));
    }
    let by = |service: &str, outcome: &str| {
        decisions
            .iter()
            .filter(|d| d["service"] == service && d["outcome"] == outcome)
            .collect::<Vec<_>>()
    };
    match expect {
        Expect::Grant {
            service,
            identity,
            prefix,
        } => {
            if !answer.starts_with(&format!("ok {prefix}")) {
                return Err(format!("expected credentials ({prefix}...), got: {answer}"));
            }
            if let Some(refusal) = decisions.iter().find(|d| d["outcome"] == "refusal") {
                return Err(format!("the emulator refused a request: {refusal}"));
            }
            let granted = by(service, "grant");
            if !granted
                .iter()
                .any(|d| d["subject"] == subject && d["identity"].as_str().is_some_and(|i| i.starts_with(identity)))
            {
                return Err(format!("no {service} grant of {identity} to {subject}: {decisions:?}"));
            }
        }
        Expect::FailsBeforeAsking { says } => fails_before_asking(says, answer, decisions)?,
        Expect::NoAwsCredentials => fails_before_asking(aws_chain_found_nothing(sdk), answer, decisions)?,
        Expect::Refuse { service, reason } => {
            if !answer.starts_with("error ") {
                return Err(format!("expected no credentials, got: {answer}"));
            }
            if !by(service, "grant").is_empty() {
                return Err(format!("{service} granted: {decisions:?}"));
            }
            if !by(service, "refusal").iter().any(|d| d["reason"] == reason) {
                return Err(format!("no {service} refusal for {reason}: {decisions:?}"));
            }
        }
    }
    Ok(())
}

/// An error saying `says`, and no decision of the emulator: the SDK failed before asking.
fn fails_before_asking(says: &str, answer: &str, decisions: &[Value]) -> Result<(), String> {
    if !answer.starts_with("error ") || !answer.contains(says) {
        return Err(format!("expected an error saying {says:?}, got: {answer}"));
    }
    if !decisions.is_empty() {
        return Err(format!("a token service was asked: {decisions:?}"));
    }
    Ok(())
}

/// What each official SDK's AWS default chain says when none of its providers found credentials:
/// Go's chain ends with the instance metadata service (unreachable in the namespace); Java's error
/// lists every provider, whatever failed, so its web identity provider's own words are checked.
fn aws_chain_found_nothing(sdk: &str) -> &'static str {
    match sdk {
        "python" => "the default chain found no credentials",
        "go" => "no EC2 IMDS role found",
        "java" => {
            "Either the environment variable AWS_WEB_IDENTITY_TOKEN_FILE or the javaproperty aws.webIdentityTokenFile must be set"
        }
        "node" => "Could not load credentials from any providers",
        other => panic!("no words known for {other}'s AWS chain finding nothing"),
    }
}
