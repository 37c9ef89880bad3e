use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use workload_identity_core::admission::config_map::ConfigMapName;
use workload_identity_core::echo::visible;
use workload_identity_webhook::cli::{
    self, Command, ConfigSourceArgs, ExplainArgs, ServeArgs, ValidateArgs, arguments,
};
use workload_identity_webhook::cli::{admission_policy, convert, docs, explain, mutate, validate};
#[cfg(target_os = "linux")]
use workload_identity_webhook::shell::allocator::Allocator;
use workload_identity_webhook::shell::certificates::{self, BundleTarget};
use workload_identity_webhook::shell::connections::ConnectionLimits;
use workload_identity_webhook::shell::issuer;
use workload_identity_webhook::shell::metrics::Metrics;
use workload_identity_webhook::shell::namespaces::NamespaceLabels;
use workload_identity_webhook::shell::server::{self, AppState, ReviewLimits, ServerOptions};
use workload_identity_webhook::shell::supervisor::Supervisor;
use workload_identity_webhook::shell::tls::{self, CertificateFiles, ReloadingCertificate};
use workload_identity_webhook::shell::watch::{LiveConfig, ServiceAccounts};

// Linux only (mremap); elsewhere (the kubectl plugin on macOS) the system allocator.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: Allocator = Allocator;

fn main() -> ExitCode {
    let (cli, warnings) = match cli::parse(arguments(std::env::args_os().collect())) {
        Ok(parsed) => parsed,
        // Help and --version exit 0, usage errors 2.
        Err(err) => err.exit(),
    };
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    match run(cli.command) {
        // A check that failed without an error (explain, validate): exit status 1 after the report.
        Ok(Checks::Failed) => ExitCode::FAILURE,
        Ok(Checks::Passed) => ExitCode::SUCCESS,
        // The reader of stdout went away (`... | head -1`): nothing more to say.
        Err(err) if is_closed_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", visible(&cli::error_chain(&err)));
            ExitCode::FAILURE
        }
    }
}

/// Whether the checks a command reports on all passed (commands without checks pass).
enum Checks {
    Passed,
    Failed,
}

impl From<bool> for Checks {
    fn from(failed: bool) -> Checks {
        if failed { Checks::Failed } else { Checks::Passed }
    }
}

/// Runs one command, its output to stdout and its warnings to stderr.
fn run(command: Command) -> anyhow::Result<Checks> {
    let passed = |result: anyhow::Result<()>| result.map(|()| Checks::Passed);
    match command {
        Command::Serve(args) => passed(args.log.init().and_then(|()| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| runtime.block_on(serve(*args)))
        })),
        Command::Explain(args) => run_explain(&args),
        Command::Mutate(args) => passed(mutate::run(&args).and_then(|(text, warnings)| {
            for warning in warnings {
                eprintln!("warning: {}", visible(&warning));
            }
            print(&format!("{text}\n"))
        })),
        Command::Docs(args) => passed(docs::run(&args)),
        Command::Convert(args) => passed(convert::run(&args).and_then(|conversion| {
            for warning in conversion.warnings {
                eprintln!("warning: {}", visible(&warning));
            }
            print(&conversion.yaml)
        })),
        Command::ValidatingAdmissionPolicy(args) => passed(admission_policy::run(&args).and_then(|yaml| print(&yaml))),
        Command::Validate(args) => run_validate(&args),
        Command::Version(args) => passed(print(&format!("{}\n", args.render()))),
        Command::Completion(args) => passed(print(&cli::completion(args.shell))),
    }
}

/// `explain`: the report, and whether a check failed.
fn run_explain(args: &ExplainArgs) -> anyhow::Result<Checks> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let outcome = runtime.block_on(explain::run(args))?;
    print(&format!("{}\n", outcome.text))?;
    Ok(outcome.failed.into())
}

/// `validate`: the file's warnings and errors, or that it is valid.
fn run_validate(args: &ValidateArgs) -> anyhow::Result<Checks> {
    let report = validate::run(&args.file)?;
    let file = args.file.display();
    for warning in &report.warnings {
        eprintln!("warning: {file}: {}", visible(warning));
    }
    for error in &report.errors {
        eprintln!("error: {file}: {}", visible(error));
    }
    if !report.errors.is_empty() {
        return Ok(Checks::Failed);
    }
    print(&format!("{file}: valid\n"))?;
    Ok(Checks::Passed)
}

/// Writes `text` to stdout; unlike `print!`, a closed pipe is an error, not a panic.
fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn is_closed_pipe(err: &anyhow::Error) -> bool {
    err.downcast_ref::<std::io::Error>()
        .is_some_and(|err| err.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Starts each component, then serves until SIGTERM, or until a background task dies.
async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let open_files = raise_open_file_limit();
    let metrics = Arc::new(Metrics::default());
    let mut tasks = Supervisor::default();
    let config = LiveConfig::new(args.cluster.clone(), metrics.clone()).context("invalid cluster settings")?;
    let namespace = args
        .config_source
        .namespace
        .clone()
        .or_else(certificates::own_namespace)
        .unwrap_or_else(|| "workload-identity-system".to_owned());
    let client = connect(&args.config_source).await?;
    let certificate = start_certificate(&args, client.as_ref(), &namespace, &metrics, &mut tasks).await?;
    start_config(&config, &args, client.as_ref(), &namespace, &mut tasks);
    let mut namespace_labels = None;
    let service_accounts = match client {
        None => ServiceAccounts::Standalone,
        Some(client) => {
            let (labels, watch) = NamespaceLabels::start(client.clone(), metrics.clone());
            tasks.spawn("namespace watch", watch);
            namespace_labels = Some(labels);
            tasks.spawn(
                "issuer discovery",
                issuer::watch(config.clone(), client.clone(), metrics.clone(), ISSUER_INTERVAL),
            );
            let (service_accounts, watch) = ServiceAccounts::start_cluster(client, metrics.clone());
            tasks.spawn("ServiceAccount watch", watch);
            service_accounts
        }
    };
    let limits = ReviewLimits {
        max_containers: args.limits.max_containers,
        max_patch_bytes: args.limits.max_patch_bytes,
        max_in_flight_bytes: args.limits.max_in_flight_bytes,
    };
    let mut state = AppState::new(config, service_accounts, metrics, limits);
    if let Some(labels) = namespace_labels {
        state = state.with_namespace_labels(labels);
    }
    if args.config_source.config_file.is_none() && !args.config_source.standalone {
        state = state.with_config_map(ConfigMapName {
            namespace: namespace.clone(),
            name: args.config_source.config_map.clone(),
        });
    }
    let state = Arc::new(state);
    let options = server_options(&args, open_files);
    let client_ca = match &args.tls.client_ca_file {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?),
        None => None,
    };
    let tls = tls::server_config(certificate, client_ca.as_deref()).context("--client-ca-file")?;
    let admission = server::start(state, tls, options, &mut tasks).await?;
    tokio::select! {
        () = admission => Ok(()),
        failure = tasks.failed() => Err(failure),
    }
}

/// The Kubernetes API client, or none when standalone.
async fn connect(source: &ConfigSourceArgs) -> anyhow::Result<Option<kube::Client>> {
    if source.standalone {
        tracing::info!("standalone: no Kubernetes API; only mappings apply");
        return Ok(None);
    }
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (use --standalone to run without one)")?;
    Ok(Some(client))
}

/// The serving certificate: managed in a Secret, read from files, or self-signed for local runs.
async fn start_certificate(
    args: &ServeArgs,
    client: Option<&kube::Client>,
    namespace: &str,
    metrics: &Arc<Metrics>,
    tasks: &mut Supervisor,
) -> anyhow::Result<Arc<ReloadingCertificate>> {
    let managed = &args.managed_certificate;
    let source = match (client, &args.tls.tls_cert_file, &args.tls.tls_key_file) {
        (Some(client), _, _) if managed.manage_certificate => {
            let mut names =
                certificates::service_names(&managed.service_name, namespace, args.cluster.cluster_domain());
            names.extend(managed.certificate_sans.iter().cloned());
            certificates::Source::Managed {
                client: client.clone(),
                namespace: namespace.to_owned(),
                secret: managed.certificate_secret.clone(),
                bundle: BundleTarget::WebhookConfiguration(managed.webhook_configuration.clone()),
                names,
                check_interval: managed.certificate_check_interval,
            }
        }
        (_, Some(cert), Some(key)) => certificates::Source::Files {
            files: CertificateFiles {
                cert: cert.clone(),
                key: key.clone(),
                expected_names: vec![format!("{}.{namespace}.svc", managed.service_name)],
            },
            reload_interval: args.reload_interval,
        },
        _ => certificates::Source::SelfSigned,
    };
    certificates::start(source, metrics, tasks).await
}

/// Keeps the identity configuration current: from --config-file, else the ConfigMap, else
/// (standalone) the flags alone.
fn start_config(
    config: &Arc<LiveConfig>,
    args: &ServeArgs,
    client: Option<&kube::Client>,
    namespace: &str,
    tasks: &mut Supervisor,
) {
    let source = &args.config_source;
    match (&source.config_file, client) {
        (Some(path), _) => tasks.spawn(
            "config file reload",
            config.clone().watch_file(path.clone(), args.reload_interval),
        ),
        (None, Some(client)) => tasks.spawn(
            "ConfigMap watch",
            config
                .clone()
                .watch_config_map(client.clone(), namespace.to_owned(), source.config_map.clone()),
        ),
        (None, None) => config.clear("embedded defaults"),
    }
}

/// Listeners, connection caps and shutdown timing.
fn server_options(args: &ServeArgs, open_files: Option<u64>) -> ServerOptions {
    let limits = &args.limits;
    // Both caps together stay below the open-file limit, with room for the API client, the
    // watches and the files read: else accept() would fail with EMFILE before the cap applies.
    let usable = open_files.map_or(u64::MAX, |limit| limit.saturating_sub(OTHER_FILES));
    let (max_connections, metrics_max_connections) =
        (limits.max_connections as u64, limits.metrics_max_connections as u64);
    let (max_connections, metrics_max_connections) = if max_connections + metrics_max_connections > usable {
        let metrics_share = metrics_max_connections.min(usable / 8);
        tracing::warn!(
            open_files,
            max_connections = usable - metrics_share,
            metrics_max_connections = metrics_share,
            "the open-file limit is below the connection caps; caps lowered"
        );
        (usable - metrics_share, metrics_share)
    } else {
        (max_connections, metrics_max_connections)
    };
    let connections = |max_connections: u64| ConnectionLimits {
        max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
        first_request_timeout: Duration::from_secs(10),
        idle_timeout: limits.idle_timeout,
        write_timeout: limits.write_timeout,
    };
    ServerOptions {
        listen: args.listen,
        metrics_listen: args.metrics_listen.0,
        admission_connections: connections(max_connections),
        metrics_connections: connections(metrics_max_connections),
        max_body_bytes: limits.max_body_bytes,
        shutdown_timeout: args.shutdown.shutdown_timeout,
        shutdown_delay: args.shutdown.shutdown_delay,
        benchmark_ceiling: args.benchmark_ceiling,
    }
}

/// Open files other than connections: the API client, watches, certificate and config reads.
const OTHER_FILES: u64 = 64;

/// How often the cluster's service-account issuer is read again (it changes only with the API
/// server's flags; the first read is at start).
const ISSUER_INTERVAL: Duration = Duration::from_secs(300);

/// Raises the soft limit of open files to the hard one: containerd 2.x starts containers with a
/// soft limit of 1024, which the connection caps of both ports together would exceed. Returns
/// the soft limit in force.
fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open file limit");
        return None;
    }
    let soft = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: as above.
    if soft != limit.rlim_max && unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        tracing::warn!(soft, hard = limit.rlim_max, error = %std::io::Error::last_os_error(), "cannot raise the open file limit");
        return Some(soft);
    }
    tracing::info!(
        was = soft,
        now = limit.rlim_max,
        "open file limit raised to the hard limit"
    );
    Some(limit.rlim_max)
}
