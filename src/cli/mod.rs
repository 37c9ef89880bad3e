//! Command-line interface: `serve` runs the webhook, `mutate` ([`mutate`]) previews it offline,
//! `explain` ([`explain`]) says why a Pod has or lacks its identity, `convert` ([`convert`]) reads other webhooks' configuration,
//! `validating-admission-policy` ([`admission_policy`]) prints the policy's ServiceAccount checks as CEL,
//! the hidden `docs` ([`docs`]) prints the documentation generated from the code.

pub mod admission_policy;
pub mod convert;
pub mod docs;
pub mod explain;
pub mod mutate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::shell::duration;

#[derive(Parser, Debug)]
#[command(
    name = "workload-identity-webhook",
    version,
    long_version = crate::build_info::LONG_VERSION,
    about = "Gives Kubernetes Pods AWS, Google Cloud and Azure workload identities, with no stored credentials"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the admission webhook (HTTPS on --listen, Prometheus metrics on --metrics-listen).
    Serve(Box<ServeArgs>),
    /// Show what the webhook would do to a Pod or ServiceAccount manifest, without a cluster.
    Mutate(Box<MutateArgs>),
    /// Why a Pod has (or lacks) its cloud identity, which running Pods are stale, and whether the
    /// webhook is installed right. Reads the cluster with your kubeconfig; never changes it.
    /// Also runs as the kubectl plugin `kubectl workload-identity` (installed as
    /// `kubectl-workload_identity` on the PATH).
    Explain(Box<ExplainArgs>),
    /// Print our config.yaml from another webhook's configuration (warnings on stderr).
    Convert(ConvertArgs),
    /// Print the identity policy's ServiceAccount checks as a ValidatingAdmissionPolicy and its
    /// binding, for `kubectl apply -f -`: the apiserver then refuses what the policy forbids even
    /// while the webhook is down.
    ValidatingAdmissionPolicy(admission_policy::AdmissionPolicyArgs),
    /// The project's reference documentation, generated from the code (docs/development.md).
    #[command(hide = true)]
    Docs(docs::DocsArgs),
    /// Print the version, the git commit and date it was built from, the compiler and the target.
    Version(VersionArgs),
}

#[derive(Args, Debug)]
pub struct VersionArgs {
    /// `text` for people, `json` for scripts.
    #[arg(short = 'o', long, value_enum, default_value_t = VersionOutput::Text)]
    pub output: VersionOutput,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionOutput {
    /// One field per line, as `--version`.
    Text,
    /// One JSON object: version, revision, buildDate, rustc, target.
    Json,
}

impl VersionArgs {
    /// What `version` prints.
    pub fn render(&self) -> String {
        match self.output {
            VersionOutput::Text => format!("workload-identity-webhook {}", crate::build_info::LONG_VERSION),
            // Serializing a struct of strings cannot fail.
            VersionOutput::Json => serde_json::to_string_pretty(&crate::build_info::BUILD).unwrap_or_default(),
        }
    }
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    #[command(subcommand)]
    pub from: ConvertFrom,
}

#[derive(Subcommand, Debug)]
pub enum ConvertFrom {
    /// The AWS pod-identity-webhook's ConfigMap `pod-identity-webhook` (YAML or JSON manifest), or
    /// the JSON of its `config` key: {"namespace/serviceAccount": {"RoleARN": ...}}.
    AwsConfigmap {
        /// The file to read; `-` reads stdin.
        #[arg(default_value = "-")]
        input: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address of the HTTPS admission endpoint (POST /mutate, GET /healthz, GET /readyz).
    #[arg(long, env = "WIW_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,

    /// Address of the plain-HTTP metrics endpoint (GET /metrics, /healthz, /readyz); "off" disables it.
    #[arg(long, env = "WIW_METRICS_LISTEN", default_value = "0.0.0.0:9090", value_parser = parse_optional_address)]
    pub metrics_listen: OptionalAddress,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub managed_certificate: ManagedCertificateArgs,

    /// How often the certificate and configuration files are checked for changes.
    #[arg(long, env = "WIW_RELOAD_INTERVAL", default_value = "5s", value_parser = duration::parse)]
    pub reload_interval: Duration,

    #[command(flatten)]
    pub config_source: ConfigSourceArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub shutdown: ShutdownArgs,

    /// Benchmarks only: answer every review with a fixed allow without reading the object.
    #[arg(long)]
    pub benchmark_ceiling: bool,

    #[command(flatten)]
    pub log: crate::shell::logging::LogArgs,

    #[command(flatten)]
    pub cluster: workload_identity_core::providers::Settings,
}

/// The serving certificate from files, and the client CA.
#[derive(Args, Debug)]
pub struct TlsArgs {
    /// PEM certificate chain to serve; re-read when it changes. Without it a self-signed
    /// certificate for localhost is made (for local runs only: the apiserver will not trust it).
    #[arg(long, env = "WIW_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "WIW_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,

    /// Require a client certificate signed by a CA in this PEM file on --listen (for apiservers
    /// configured to present one, e.g. self-managed clusters). Without it any client may connect.
    #[arg(long, env = "WIW_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
}

/// The self-managed serving certificate.
#[derive(Args, Debug)]
pub struct ManagedCertificateArgs {
    /// Manage the serving certificate: keep a CA and certificate in a Secret of the webhook's
    /// namespace, renew them before expiry, and keep the webhook configuration's caBundle in step.
    #[arg(long, env = "WIW_MANAGE_CERTIFICATE", conflicts_with_all = ["tls_cert_file", "standalone"])]
    pub manage_certificate: bool,

    /// The Secret that holds the managed certificate.
    #[arg(
        long,
        env = "WIW_CERTIFICATE_SECRET",
        default_value = "workload-identity-webhook-tls"
    )]
    pub certificate_secret: String,

    /// The MutatingWebhookConfiguration whose caBundle follows the managed certificate.
    #[arg(long, env = "WIW_WEBHOOK_CONFIGURATION", default_value = "workload-identity-webhook")]
    pub webhook_configuration: String,

    /// The Service in front of the webhook: the managed certificate names `<service>.<namespace>.svc`.
    #[arg(long, env = "WIW_SERVICE_NAME", default_value = "workload-identity-webhook")]
    pub service_name: String,

    /// Extra DNS names or IP addresses for the managed certificate (repeatable).
    #[arg(long = "certificate-san", env = "WIW_CERTIFICATE_SANS", value_delimiter = ',')]
    pub certificate_sans: Vec<String>,

    /// How often every replica reconciles the managed certificate.
    #[arg(long, env = "WIW_CERTIFICATE_CHECK_INTERVAL", default_value = "60s", value_parser = duration::parse)]
    pub certificate_check_interval: Duration,
}

/// Where the identity configuration comes from: a file, the ConfigMap, or nothing (standalone).
#[derive(Args, Debug)]
pub struct ConfigSourceArgs {
    /// Run without a Kubernetes API: ServiceAccounts are taken to exist with no annotations, so
    /// only the mappings of --config-file apply. For trying the webhook out.
    #[arg(long, env = "WIW_STANDALONE")]
    pub standalone: bool,

    /// Read the identity configuration from this file (the `config.yaml` format) instead of the ConfigMap.
    #[arg(long, env = "WIW_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,

    /// Name of the ConfigMap that holds `config.yaml`.
    #[arg(long, env = "WIW_CONFIG_MAP", default_value = "workload-identity-webhook")]
    pub config_map: String,

    /// Namespace of that ConfigMap; defaults to the namespace the webhook runs in.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
}

/// Bounds on requests, answers and connections.
#[derive(Args, Debug)]
pub struct LimitArgs {
    /// Largest request body accepted, in bytes (the apiserver's own limit is 3 MiB).
    #[arg(long, env = "WIW_MAX_BODY_BYTES", default_value_t = 3 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Pods with more containers and init containers than this are allowed unchanged, with a
    /// warning (bounds the work and the patch of one review).
    #[arg(long, env = "WIW_MAX_CONTAINERS", default_value_t = 250)]
    pub max_containers: usize,

    /// A patch whose JSON would be longer than this many bytes is left out (allowed unchanged,
    /// with a warning and the metric admission_limited_total{reason="patch_size"}).
    #[arg(long, env = "WIW_MAX_PATCH_BYTES", default_value_t = 1024 * 1024)]
    pub max_patch_bytes: usize,

    /// Request bodies and answers held in memory at once, in bytes, from a request's arrival until
    /// its answer is written out (each request counts at least 16 KiB; one client IP holds at most a
    /// quarter); requests beyond it get 503.
    #[arg(long, env = "WIW_MAX_IN_FLIGHT_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_in_flight_bytes: usize,

    /// Open connections on --listen at most; more are closed as soon as they are accepted.
    #[arg(long, env = "WIW_MAX_CONNECTIONS", default_value_t = 2048)]
    pub max_connections: usize,

    /// Open connections on --metrics-listen at most (probes and Prometheus).
    #[arg(long, env = "WIW_METRICS_MAX_CONNECTIONS", default_value_t = 128)]
    pub metrics_max_connections: usize,

    /// A connection with no request in flight for this long is closed (HTTP/2 with GOAWAY), on
    /// both ports; the first request must come within 10 s of connecting.
    #[arg(long, env = "WIW_IDLE_TIMEOUT", default_value = "60s", value_parser = duration::parse)]
    pub idle_timeout: Duration,

    /// A connection whose peer accepts no data for this long while an answer waits to be written,
    /// or that has not taken an answer whole this long after it was ready, is closed, on both ports.
    #[arg(long, env = "WIW_WRITE_TIMEOUT", default_value = "10s", value_parser = duration::parse)]
    pub write_timeout: Duration,
}

/// What happens after SIGTERM.
#[derive(Args, Debug)]
pub struct ShutdownArgs {
    /// How long to keep accepting requests after SIGTERM (not ready meanwhile), so that the
    /// Service's endpoints drop this Pod before its listener closes.
    #[arg(long, env = "WIW_SHUTDOWN_DELAY", default_value = "3s", value_parser = duration::parse)]
    pub shutdown_delay: Duration,

    /// How long in-flight requests may take to finish after SIGTERM (after the shutdown delay).
    #[arg(long, env = "WIW_SHUTDOWN_TIMEOUT", default_value = "25s", value_parser = duration::parse)]
    pub shutdown_timeout: Duration,
}

#[derive(Args, Debug)]
pub struct MutateArgs {
    /// The Pod or ServiceAccount (YAML or JSON), or a whole AdmissionReview.
    #[arg(long)]
    pub object: PathBuf,

    /// The Pod's ServiceAccount (YAML or JSON). Without it the ServiceAccount is taken to have no annotations.
    #[arg(long)]
    pub service_account: Option<PathBuf>,

    /// The identity configuration: a `config.yaml`, or a whole ConfigMap manifest holding one.
    #[arg(long)]
    pub config: Option<PathBuf>,

    /// The namespace the object is created in (default: its metadata.namespace, else `default`).
    #[arg(long)]
    pub namespace: Option<String>,

    /// What to print.
    #[arg(long, value_enum, default_value_t = Output::Object)]
    pub output: Output,

    #[command(flatten)]
    pub cluster: workload_identity_core::providers::Settings,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Exit status: 0 when every installation check passes and no Pod explained lacks the identity the\nwebhook would give it now; 1 otherwise, or on an error; 2 on a usage error.\n\nExamples:\n  workload-identity-webhook explain pod web-7d4b9 -n team-a\n  workload-identity-webhook explain namespace team-a\n  workload-identity-webhook explain --all-namespaces -o json\n  kubectl workload-identity pod web-7d4b9 -n team-a"
)]
pub struct ExplainArgs {
    /// What to explain: one Pod, or the running Pods of a namespace (with --all-namespaces: of all).
    #[arg(value_enum)]
    pub target: Option<ExplainTarget>,

    /// The Pod's or the namespace's name.
    pub name: Option<String>,

    /// The Pod's namespace (default: the kubeconfig context's namespace, else `default`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,

    /// Every namespace's Pods.
    #[arg(short = 'A', long, conflicts_with = "name")]
    pub all_namespaces: bool,

    /// `table` for people (fits 80 columns), `wide` (one line per row), `json` or `yaml` for scripts.
    #[arg(short = 'o', long, value_enum, default_value_t = ExplainOutput::Table)]
    pub output: ExplainOutput,

    /// The kubeconfig file to use (default: $KUBECONFIG, else ~/.kube/config, else in-cluster).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,

    /// The namespace the webhook is installed in (its ConfigMap and serving Secret).
    #[arg(long, default_value = "workload-identity-system")]
    pub webhook_namespace: String,

    /// The webhook's ConfigMap.
    #[arg(long, default_value = "workload-identity-webhook")]
    pub config_map: String,

    /// The webhook's MutatingWebhookConfiguration.
    #[arg(long, default_value = "workload-identity-webhook")]
    pub webhook_configuration: String,

    /// The Secret holding the serving certificate (`tls.crt`), compared with the caBundle if readable.
    #[arg(long, default_value = "workload-identity-webhook-tls")]
    pub certificate_secret: String,

    /// Cluster settings the webhook runs with as flags (the ConfigMap's win, as in the webhook).
    #[command(flatten)]
    pub cluster: workload_identity_core::providers::Settings,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExplainTarget {
    Pod,
    Namespace,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExplainOutput {
    Table,
    Wide,
    Json,
    Yaml,
}

/// The file name under which the binary is a kubectl plugin (`kubectl workload-identity ...`).
pub const KUBECTL_PLUGIN: &str = "kubectl-workload_identity";

/// The command line to parse: invoked as the kubectl plugin, the arguments are `explain`'s.
pub fn arguments(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let program = args
        .first()
        .map(std::path::Path::new)
        .and_then(std::path::Path::file_name);
    if program.is_some_and(|name| name == KUBECTL_PLUGIN) {
        args.insert(1, "explain".into());
    }
    args
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The mutated object (JSON).
    Object,
    /// The JSON patch.
    Patch,
    /// The AdmissionReview response.
    Review,
}

/// A listen address, or none for "off".
#[derive(Debug, Clone, Copy)]
pub struct OptionalAddress(pub Option<SocketAddr>);

fn parse_optional_address(text: &str) -> Result<OptionalAddress, String> {
    if text == "off" {
        return Ok(OptionalAddress(None));
    }
    text.parse()
        .map(|address| OptionalAddress(Some(address)))
        .map_err(|err| format!("{text:?}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn as_the_kubectl_plugin_the_arguments_are_explains() {
        let parse = |args: &[&str]| Cli::parse_from(arguments(args.iter().map(Into::into).collect()));
        let Command::Explain(args) =
            parse(&["/usr/local/bin/kubectl-workload_identity", "pod", "web", "-n", "a"]).command
        else {
            panic!("explain expected")
        };
        assert_eq!(
            (args.target, args.name.as_deref(), args.namespace.as_deref()),
            (Some(ExplainTarget::Pod), Some("web"), Some("a"))
        );
        let Command::Explain(args) = parse(&["wiw", "explain", "-A", "-o", "json"]).command else {
            panic!("explain expected")
        };
        assert!(args.all_namespaces);
        assert_eq!(args.output, ExplainOutput::Json);
        assert!(matches!(
            parse(&["kubectl-workload_identity.old", "mutate", "--object", "p"]).command,
            Command::Mutate(_)
        ));
    }

    #[test]
    fn listen_addresses() {
        assert!(parse_optional_address("off").unwrap().0.is_none());
        assert!(parse_optional_address("127.0.0.1:9090").unwrap().0.is_some());
        assert!(parse_optional_address("nowhere").is_err());
    }

    #[test]
    fn cluster_settings_flags_are_typed() {
        let cli = Cli::parse_from([
            "wiw",
            "mutate",
            "--object",
            "pod.yaml",
            "--aws-region",
            "us-east-1",
            "--azure-require-pod-label",
            "true",
            "--azure-cloud",
            "AzureChinaCloud",
        ]);
        let Command::Mutate(args) = cli.command else {
            panic!("mutate expected")
        };
        assert_eq!(args.cluster.aws.region.as_deref(), Some("us-east-1"));
        assert_eq!(args.cluster.aws.audience, None);
        assert_eq!(args.cluster.azure.require_pod_label, Some(true));
        assert_eq!(
            args.cluster.azure.cloud,
            Some(workload_identity_core::providers::azure::Cloud::AzureChinaCloud)
        );
        assert_eq!(args.cluster.gcp.mode, None);
        let err = Cli::try_parse_from(["wiw", "mutate", "--object", "p", "--gcp-mode", "gkee"]).unwrap_err();
        assert!(err.to_string().contains("unknown variant `gkee`"), "{err}");
    }
}
