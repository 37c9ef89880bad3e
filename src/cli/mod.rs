//! Command-line interface: `serve` runs the webhook, `mutate` ([`mutate`]) previews it offline,
//! `explain` ([`explain`]) says why a Pod has or lacks its identity, `convert` ([`convert`]) reads other webhooks' configuration,
//! `validating-admission-policy` ([`admission_policy`]) prints the policy's ServiceAccount checks as CEL,
//! the hidden `docs` ([`docs`]) prints the documentation generated from the code.

pub mod admission_policy;
pub mod convert;
pub mod docs;
pub mod explain;
pub mod mutate;
pub mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

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
    /// Check a config.yaml, or the ConfigMap manifest holding one, as the webhook would read it:
    /// each problem with its field path, line and column; values the webhook changes are warned
    /// about. Exit status 1 when it would be refused.
    Validate(ValidateArgs),
    /// The project's reference documentation, generated from the code (docs/development.md).
    #[command(hide = true)]
    Docs(docs::DocsArgs),
    /// Print the version, the git commit and date it was built from, the compiler and the target.
    Version(VersionArgs),
    /// Print a shell completion script (e.g. `source <(workload-identity-webhook completion bash)`).
    Completion(CompletionArgs),
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  workload-identity-webhook validate config.yaml\n  kubectl -n workload-identity-system get configmap workload-identity-webhook -o yaml | workload-identity-webhook validate -"
)]
pub struct ValidateArgs {
    /// The file to check; `-` reads stdin.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// The shell to complete in.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
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
    #[arg(
        long,
        env = "WIW_LISTEN",
        value_name = "ADDRESS",
        default_value = "0.0.0.0:8443",
        help_heading = "Listen/TLS"
    )]
    pub listen: SocketAddr,

    /// Address of the plain-HTTP metrics endpoint (GET /metrics, /healthz, /readyz); "off" disables it.
    #[arg(long, env = "WIW_METRICS_LISTEN", value_name = "ADDRESS", default_value = "0.0.0.0:9090", value_parser = parse_optional_address, help_heading = "Listen/TLS")]
    pub metrics_listen: OptionalAddress,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub managed_certificate: ManagedCertificateArgs,

    /// How often the certificate and configuration files are checked for changes (500ms, 5s, 2m, 1h).
    #[arg(long, env = "WIW_RELOAD_INTERVAL", value_name = "DURATION", default_value = "5s", value_parser = duration::parse, help_heading = "Configuration")]
    pub reload_interval: Duration,

    #[command(flatten)]
    pub config_source: ConfigSourceArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub shutdown: ShutdownArgs,

    /// Benchmarks only: answer every review with a fixed allow without reading the object.
    #[arg(long, hide = true)]
    pub benchmark_ceiling: bool,

    #[command(flatten)]
    pub log: crate::shell::logging::LogArgs,

    #[command(flatten)]
    pub cluster: workload_identity_core::providers::Settings,
}

/// The serving certificate from files, and the client CA.
#[derive(Args, Debug)]
#[command(next_help_heading = "Listen/TLS")]
pub struct TlsArgs {
    /// PEM certificate chain to serve; re-read when it changes. Without it a self-signed
    /// certificate for localhost is made (for local runs only: the apiserver will not trust it).
    #[arg(long, env = "WIW_TLS_CERT_FILE", value_name = "PATH", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "WIW_TLS_KEY_FILE", value_name = "PATH", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,

    /// Require a client certificate signed by a CA in this PEM file on --listen (for apiservers
    /// configured to present one, e.g. self-managed clusters). Without it any client may connect.
    #[arg(long, env = "WIW_CLIENT_CA_FILE", value_name = "PATH")]
    pub client_ca_file: Option<PathBuf>,
}

/// The self-managed serving certificate.
#[derive(Args, Debug)]
#[command(next_help_heading = "Certificate")]
pub struct ManagedCertificateArgs {
    /// Manage the serving certificate: keep a CA and certificate in a Secret of the webhook's
    /// namespace, renew them before expiry, and keep the webhook configuration's caBundle in step.
    #[arg(long, env = "WIW_MANAGE_CERTIFICATE", conflicts_with_all = ["tls_cert_file", "standalone"])]
    pub manage_certificate: bool,

    /// The Secret that holds the managed certificate.
    #[arg(
        long,
        env = "WIW_CERTIFICATE_SECRET",
        value_name = "NAME",
        default_value = "workload-identity-webhook-tls"
    )]
    pub certificate_secret: String,

    /// The MutatingWebhookConfiguration whose caBundle follows the managed certificate.
    #[arg(
        long,
        env = "WIW_WEBHOOK_CONFIGURATION",
        value_name = "NAME",
        default_value = "workload-identity-webhook"
    )]
    pub webhook_configuration: String,

    /// The Service in front of the webhook: the managed certificate names `<service>.<namespace>.svc`.
    #[arg(
        long,
        env = "WIW_SERVICE_NAME",
        value_name = "NAME",
        default_value = "workload-identity-webhook"
    )]
    pub service_name: String,

    /// Extra DNS names or IP addresses for the managed certificate (repeatable).
    #[arg(
        long = "certificate-san",
        env = "WIW_CERTIFICATE_SANS",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub certificate_sans: Vec<String>,

    /// How often every replica reconciles the managed certificate (30s, 5m, 1h).
    #[arg(long, env = "WIW_CERTIFICATE_CHECK_INTERVAL", value_name = "DURATION", default_value = "60s", value_parser = duration::parse)]
    pub certificate_check_interval: Duration,
}

/// Where the identity configuration comes from: a file, the ConfigMap, or nothing (standalone).
#[derive(Args, Debug)]
#[command(next_help_heading = "Configuration")]
pub struct ConfigSourceArgs {
    /// Run without a Kubernetes API: ServiceAccounts are taken to exist with no annotations, so
    /// only the mappings of --config-file apply. For trying the webhook out.
    #[arg(long, env = "WIW_STANDALONE")]
    pub standalone: bool,

    /// Read the identity configuration from this file (the `config.yaml` format) instead of the ConfigMap.
    #[arg(long, env = "WIW_CONFIG_FILE", value_name = "PATH")]
    pub config_file: Option<PathBuf>,

    /// Name of the ConfigMap that holds `config.yaml`.
    #[arg(
        long,
        env = "WIW_CONFIG_MAP",
        value_name = "NAME",
        default_value = "workload-identity-webhook"
    )]
    pub config_map: String,

    /// Namespace of that ConfigMap; defaults to the namespace the webhook runs in.
    #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

/// Bounds on requests, answers and connections.
#[derive(Args, Debug)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// Largest request body accepted, in bytes (the apiserver's own limit is 3 MiB).
    #[arg(long, env = "WIW_MAX_BODY_BYTES", value_name = "BYTES", default_value_t = 3 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Pods with more containers and init containers than this are allowed unchanged, with a
    /// warning (bounds the work and the patch of one review).
    #[arg(long, env = "WIW_MAX_CONTAINERS", value_name = "COUNT", default_value_t = 250)]
    pub max_containers: usize,

    /// A patch whose JSON would be longer than this many bytes is left out (allowed unchanged,
    /// with a warning and the metric admission_limited_total{reason="patch_size"}).
    #[arg(long, env = "WIW_MAX_PATCH_BYTES", value_name = "BYTES", default_value_t = 1024 * 1024)]
    pub max_patch_bytes: usize,

    /// Request bodies and answers held in memory at once, in bytes, from a request's arrival until
    /// its answer is written out (each request counts at least 16 KiB; one client IP holds at most a
    /// quarter); requests beyond it get 503.
    // 24 MiB keeps the measured worst case (every hostile-client kind at once) under 128 MiB.
    #[arg(long, env = "WIW_MAX_IN_FLIGHT_BYTES", value_name = "BYTES", default_value_t = 24 * 1024 * 1024)]
    pub max_in_flight_bytes: usize,

    /// Open connections on --listen at most; more are closed as soon as they are accepted.
    #[arg(long, env = "WIW_MAX_CONNECTIONS", value_name = "COUNT", default_value_t = 2048)]
    pub max_connections: usize,

    /// Open connections on --metrics-listen at most (probes and Prometheus).
    #[arg(
        long,
        env = "WIW_METRICS_MAX_CONNECTIONS",
        value_name = "COUNT",
        default_value_t = 128
    )]
    pub metrics_max_connections: usize,

    /// A connection with no request in flight for this long is closed (HTTP/2 with GOAWAY), on
    /// both ports; the first request must come within 10 s of connecting.
    #[arg(long, env = "WIW_IDLE_TIMEOUT", value_name = "DURATION", default_value = "60s", value_parser = duration::parse)]
    pub idle_timeout: Duration,

    /// A connection whose peer accepts no data for this long while an answer waits to be written,
    /// or that has not taken an answer whole this long after it was ready, is closed, on both ports.
    #[arg(long, env = "WIW_WRITE_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = duration::parse)]
    pub write_timeout: Duration,
}

/// What happens after SIGTERM.
#[derive(Args, Debug)]
#[command(next_help_heading = "Shutdown")]
pub struct ShutdownArgs {
    /// How long to keep accepting requests after SIGTERM (not ready meanwhile), so that the
    /// Service's endpoints drop this Pod before its listener closes.
    #[arg(long, env = "WIW_SHUTDOWN_DELAY", value_name = "DURATION", default_value = "3s", value_parser = duration::parse)]
    pub shutdown_delay: Duration,

    /// How long in-flight requests may take to finish after SIGTERM (after the shutdown delay).
    #[arg(long, env = "WIW_SHUTDOWN_TIMEOUT", value_name = "DURATION", default_value = "25s", value_parser = duration::parse)]
    pub shutdown_timeout: Duration,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  workload-identity-webhook mutate --object pod.yaml --service-account sa.yaml --config config.yaml\n  workload-identity-webhook mutate --object pod.yaml -n team-a --show patch -o yaml"
)]
pub struct MutateArgs {
    /// The Pod or ServiceAccount (YAML or JSON), or a whole AdmissionReview.
    #[arg(long, value_name = "PATH")]
    pub object: PathBuf,

    /// The Pod's ServiceAccount (YAML or JSON). Without it the ServiceAccount is taken to have no annotations.
    #[arg(long, value_name = "PATH")]
    pub service_account: Option<PathBuf>,

    /// The identity configuration: a `config.yaml`, or a whole ConfigMap manifest holding one.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// The namespace the object is created in (default: its metadata.namespace, else `default`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,

    /// The namespace's labels, for identity-policy rules that select namespaces by label.
    /// Without it such rules select nothing.
    #[arg(long, value_name = "KEY=VALUE,...", value_parser = parse_labels)]
    pub namespace_labels: Option<BTreeMap<String, String>>,

    /// What to print.
    #[arg(long, value_enum, default_value_t = Show::Object)]
    pub show: Show,

    /// How to print it.
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT", default_value_t = Output::Json)]
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
    #[arg(long, value_name = "NAMESPACE", default_value = "workload-identity-system")]
    pub webhook_namespace: String,

    /// The webhook's ConfigMap.
    #[arg(long, value_name = "NAME", default_value = "workload-identity-webhook")]
    pub config_map: String,

    /// The webhook's MutatingWebhookConfiguration.
    #[arg(long, value_name = "NAME", default_value = "workload-identity-webhook")]
    pub webhook_configuration: String,

    /// The Secret holding the serving certificate (`tls.crt`), compared with the caBundle if readable.
    #[arg(long, value_name = "NAME", default_value = "workload-identity-webhook-tls")]
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

/// The commands that run on a user's machine: they read no `WIW_*` variable, so that their
/// output does not depend on the server settings exported in a shell.
const CLIENT_COMMANDS: &[&str] = &["mutate", "explain", "convert", "validate"];

/// The command line: the derived one, each boolean setting a switch with its `--no-` form, and
/// the client commands without environment variables. Help, completions and the reference
/// documentation are made from it.
pub fn command() -> clap::Command {
    let mut command = Cli::command();
    for name in CLIENT_COMMANDS {
        command = command.mut_subcommand(name, |subcommand| subcommand.mut_args(|arg| arg.env(None)));
    }
    command.mut_subcommands(|subcommand| {
        let switches: Vec<clap::Arg> = subcommand
            .get_arguments()
            .filter(|arg| is_switch(arg))
            .cloned()
            .collect();
        switches.into_iter().fold(subcommand, |subcommand, arg| {
            let (id, negation_id) = (arg.get_id().clone(), negation(arg.get_id().as_str()));
            let long = arg.get_long().unwrap_or_default().to_owned();
            let mut negation = clap::Arg::new(negation_id.clone())
                .long(format!("no-{long}"))
                .action(clap::ArgAction::SetTrue)
                .overrides_with(id.clone())
                .help(format!("Turn --{long} off."));
            if let Some(heading) = arg.get_help_heading() {
                negation = negation.help_heading(heading.to_owned());
            }
            subcommand
                .mut_arg(&id, |arg| {
                    arg.num_args(0)
                        .default_missing_value("true")
                        .overrides_with_all([id.clone(), negation_id.into()])
                })
                .arg(negation)
        })
    })
}

/// The completion script of `shell`.
pub fn completion(shell: clap_complete::Shell) -> String {
    const NAME: &str = "workload-identity-webhook";
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command(), NAME, &mut out);
    let script = String::from_utf8_lossy(&out).into_owned();
    match shell {
        // clap_complete spells the state of a hyphenated name two ways, so no subcommand's flags
        // complete (https://github.com/clap-rs/clap/issues/6421): the case labels are made the
        // loop's spelling.
        clap_complete::Shell::Bash => script.replace(
            "workload__subcmd__identity__subcmd__webhook",
            "workload__identity__webhook",
        ),
        _ => script,
    }
}

/// An error and its causes on one line, each cause once: a cause whose text its parent
/// already quotes (as kube's errors do) is left out.
pub fn error_chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain().map(ToString::to_string) {
        if out.contains(&cause) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&cause);
    }
    out
}

/// The id of a switch's `--no-` form.
fn negation(id: &str) -> String {
    format!("no_{id}")
}

/// A boolean setting: a long flag whose values are `true` and `false`.
fn is_switch(arg: &clap::Arg) -> bool {
    let values: Vec<String> = arg
        .get_value_parser()
        .possible_values()
        .into_iter()
        .flatten()
        .map(|value| value.get_name().to_owned())
        .collect();
    arg.get_long().is_some() && arg.get_action().takes_values() && values == ["true", "false"]
}

/// The parsed command line and a warning for each deprecated form it used.
pub fn parse(args: Vec<std::ffi::OsString>) -> Result<(Cli, Vec<String>), clap::Error> {
    let switches = boolean_switches();
    let mut warnings = Vec::new();
    let args = replace_old_switches(args, &switches, &mut warnings);
    let matches = command().try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let Some((_, matches)) = matches.subcommand()
        && let Some(cluster) = cli.command.cluster_mut()
    {
        *cluster = switched_off(matches, &switches)?.overlay(&*cluster);
    }
    if let Command::Mutate(args) = &cli.command
        && let Some(show) = args.output.legacy_show()
    {
        let show = show
            .to_possible_value()
            .map(|value| value.get_name().to_owned())
            .unwrap_or_default();
        warnings.push(format!(
            "--output {show} is deprecated: write --show {show} (and -o json or yaml)"
        ));
    }
    Ok((cli, warnings))
}

/// A boolean setting: its flag, its id and its `config.yaml` key.
type Switch = (String, String, String);

/// Each boolean setting of the cluster flags.
fn boolean_switches() -> Vec<Switch> {
    let settings = workload_identity_core::providers::Settings::augment_args(clap::Command::new("settings"));
    settings
        .get_arguments()
        .zip(workload_identity_core::providers::Settings::keys())
        .filter(|(arg, _)| is_switch(arg))
        .map(|(arg, key)| {
            (
                arg.get_long().unwrap_or_default().to_owned(),
                arg.get_id().to_string(),
                key,
            )
        })
        .collect()
}

/// `--X=true|false`, the form before switches, as `--X` or `--no-X`: it still works, with a warning.
fn replace_old_switches(
    args: Vec<std::ffi::OsString>,
    switches: &[Switch],
    warnings: &mut Vec<String>,
) -> Vec<std::ffi::OsString> {
    args.into_iter()
        .map(|arg| {
            let old = arg
                .to_str()
                .and_then(|text| text.strip_prefix("--")?.split_once('='))
                .filter(|(long, _)| switches.iter().any(|(switch, _, _)| switch == long));
            let replacement = match old {
                Some((long, "true")) => format!("--{long}"),
                Some((long, "false")) => format!("--no-{long}"),
                _ => return arg,
            };
            warnings.push(format!("{} is deprecated: write {replacement}", arg.to_string_lossy()));
            replacement.into()
        })
        .collect()
}

/// The settings the command's `--no-X` flags set to false, the others unset.
fn switched_off(
    matches: &clap::ArgMatches,
    switches: &[Switch],
) -> Result<workload_identity_core::providers::Settings, clap::Error> {
    let mut off = serde_json::Map::new();
    for (_, id, key) in switches {
        if matches.try_get_one::<bool>(&negation(id)).ok().flatten() == Some(&true) {
            let (section, field) = key.split_once('.').unwrap_or_default();
            off.entry(section)
                .or_insert_with(|| serde_json::json!({}))
                .as_object_mut()
                .map(|fields| fields.insert(field.to_owned(), false.into()));
        }
    }
    serde_json::from_value(off.into()).map_err(|err| clap::Error::raw(clap::error::ErrorKind::ValueValidation, err))
}

impl Command {
    /// The cluster settings a command takes as flags.
    fn cluster_mut(&mut self) -> Option<&mut workload_identity_core::providers::Settings> {
        match self {
            Command::Serve(args) => Some(&mut args.cluster),
            Command::Mutate(args) => Some(&mut args.cluster),
            Command::Explain(args) => Some(&mut args.cluster),
            _ => None,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Show {
    /// The mutated object.
    Object,
    /// The JSON patch.
    Patch,
    /// The AdmissionReview response.
    Review,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Json,
    Yaml,
    /// Before `--show`: `--output object|patch|review` still works, with a warning.
    #[value(hide = true)]
    Object,
    #[value(hide = true)]
    Patch,
    #[value(hide = true)]
    Review,
}

impl Output {
    /// What the deprecated `--output object|patch|review` asked to show.
    pub fn legacy_show(self) -> Option<Show> {
        match self {
            Output::Json | Output::Yaml => None,
            Output::Object => Some(Show::Object),
            Output::Patch => Some(Show::Patch),
            Output::Review => Some(Show::Review),
        }
    }
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

/// `KEY=VALUE,...` as kubectl writes labels (a value may be empty).
fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    text.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) => Ok((key.trim().to_owned(), value.trim().to_owned())),
            None => Err(format!("{pair:?} is not KEY=VALUE")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(args: &[&str]) -> (Cli, Vec<String>) {
        parse(arguments(args.iter().map(Into::into).collect())).unwrap()
    }

    #[test]
    fn command_line_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn as_the_kubectl_plugin_the_arguments_are_explains() {
        let Command::Explain(args) = parse_ok(&["/usr/local/bin/kubectl-workload_identity", "pod", "web", "-n", "a"])
            .0
            .command
        else {
            panic!("explain expected")
        };
        assert_eq!(
            (args.target, args.name.as_deref(), args.namespace.as_deref()),
            (Some(ExplainTarget::Pod), Some("web"), Some("a"))
        );
        let Command::Explain(args) = parse_ok(&["wiw", "explain", "-A", "-o", "json"]).0.command else {
            panic!("explain expected")
        };
        assert!(args.all_namespaces);
        assert_eq!(args.output, ExplainOutput::Json);
        assert!(matches!(
            parse_ok(&["kubectl-workload_identity.old", "mutate", "--object", "p"])
                .0
                .command,
            Command::Mutate(_)
        ));
    }

    #[test]
    fn listen_addresses() {
        assert!(parse_optional_address("off").unwrap().0.is_none());
        assert!(parse_optional_address("127.0.0.1:9090").unwrap().0.is_some());
        assert!(parse_optional_address("nowhere").is_err());
    }

    fn mutate_settings(flags: &[&str]) -> (workload_identity_core::providers::Settings, Vec<String>) {
        let mut args = vec!["wiw", "mutate", "--object", "pod.yaml"];
        args.extend(flags);
        let (cli, warnings) = parse_ok(&args);
        let Command::Mutate(args) = cli.command else {
            panic!("mutate expected")
        };
        (args.cluster, warnings)
    }

    #[test]
    fn cluster_settings_flags_are_typed() {
        let (cluster, warnings) = mutate_settings(&["--aws-region", "us-east-1", "--azure-cloud", "AzureChinaCloud"]);
        assert_eq!(cluster.aws.region.as_deref(), Some("us-east-1"));
        assert_eq!(cluster.aws.audience, None);
        assert_eq!(
            cluster.azure.cloud,
            Some(workload_identity_core::providers::azure::Cloud::AzureChinaCloud)
        );
        assert_eq!(cluster.gcp.mode, None);
        assert!(warnings.is_empty());
        let err = parse(
            ["wiw", "mutate", "--object", "p", "--gcp-mode", "gkee"]
                .map(Into::into)
                .to_vec(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("[possible values: federation, gke]"), "{err}");
    }

    #[test]
    fn boolean_settings_are_switches_with_a_no_form() {
        let (cluster, warnings) = mutate_settings(&["--azure-require-pod-label", "--no-gcp-gcloud-config-volume"]);
        assert_eq!(cluster.azure.require_pod_label, Some(true));
        assert_eq!(cluster.gcp.gcloud_config_volume, Some(false));
        assert_eq!(cluster.aws.sts_regional_endpoints, None);
        assert!(warnings.is_empty(), "{warnings:?}");
        // The last one wins.
        let (cluster, _) = mutate_settings(&["--no-aws-sts-regional-endpoints", "--aws-sts-regional-endpoints"]);
        assert_eq!(cluster.aws.sts_regional_endpoints, Some(true));
        // The form before switches, with a warning naming the new one.
        let (cluster, warnings) = mutate_settings(&["--aws-sts-regional-endpoints=false"]);
        assert_eq!(cluster.aws.sts_regional_endpoints, Some(false));
        assert_eq!(
            warnings,
            ["--aws-sts-regional-endpoints=false is deprecated: write --no-aws-sts-regional-endpoints"]
        );
        let (cluster, warnings) = mutate_settings(&["--gcp-gcloud-config-volume=true"]);
        assert_eq!(cluster.gcp.gcloud_config_volume, Some(true));
        assert_eq!(
            warnings,
            ["--gcp-gcloud-config-volume=true is deprecated: write --gcp-gcloud-config-volume"]
        );
        // A switch takes no separate value, nor another word.
        for args in [
            ["--azure-require-pod-label", "true"],
            ["--azure-require-pod-label=yes", "-n=a"],
        ] {
            let mut all = vec!["wiw", "mutate", "--object", "p"];
            all.extend(args);
            assert!(parse(all.into_iter().map(Into::into).collect()).is_err(), "{args:?}");
        }
    }

    #[test]
    fn client_commands_read_no_environment() {
        let command = command();
        for name in CLIENT_COMMANDS {
            let subcommand = command.find_subcommand(name).unwrap();
            let reading: Vec<_> = subcommand
                .get_arguments()
                .filter(|arg| arg.get_env().is_some())
                .collect();
            assert!(reading.is_empty(), "{name} reads {reading:?}");
        }
        let serve = command.find_subcommand("serve").unwrap();
        let names: Vec<String> = serve
            .get_arguments()
            .filter_map(|arg| arg.get_env())
            .map(|name| name.to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"WIW_AWS_REGION".to_owned()));
        let foreign: Vec<&String> = names
            .iter()
            .filter(|name| !name.starts_with("WIW_") && *name != "POD_NAMESPACE")
            .collect();
        assert!(foreign.is_empty(), "{foreign:?}");
    }

    #[test]
    fn an_error_chain_names_each_cause_once() {
        let err = anyhow::anyhow!("no such file")
            .context("failed to read kubeconfig: no such file")
            .context("connecting");
        assert_eq!(error_chain(&err), "connecting: failed to read kubeconfig: no such file");
    }
}
