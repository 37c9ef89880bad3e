use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use workload_identity_webhook::certificates::ManagedCertificate;
use workload_identity_webhook::cli::{Cli, Command, LogArgs, LogFormat, ServeArgs};
use workload_identity_webhook::metrics::Metrics;
use workload_identity_webhook::server::{self, AppState, ServerOptions};
use workload_identity_webhook::tls::{self, CertificateFiles, ReloadingCertificate};
use workload_identity_webhook::watch::{LiveConfig, ServiceAccounts};
use workload_identity_webhook::{emulate, offline};

// glibc malloc took ~18% of the server's CPU under load (perf); mimalloc's thread-local free lists
// make the many small per-request allocations cheap, and musl's malloc (the static image) is slower still.
// Its `no_thp` feature keeps RSS where it was: with transparent huge pages it doubled (13 -> 27 MiB).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => {
            init_logging(&args.log);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| runtime.block_on(serve(*args)))
        }
        Command::Emulate(args) => {
            init_logging(&args.log);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| runtime.block_on(emulate::run(*args)))
        }
        Command::Mutate(args) => offline::run(&args).map(|(text, warnings)| {
            for warning in warnings {
                eprintln!("warning: {warning}");
            }
            println!("{text}");
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(args: &LogArgs) {
    let filter = EnvFilter::try_new(&args.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    // Written in place, one write(2) per line: a writer thread (tracing-appender) cost more than it
    // saved on 2 cores, 65-67% of the no-parse ceiling over HTTP/1.1 against 81% without it.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for a terminal, never in files or log collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let config = LiveConfig::new(args.cluster.to_defaults(), metrics.clone()).context("invalid cluster settings")?;

    let namespace = args
        .namespace
        .clone()
        .or_else(own_namespace)
        .unwrap_or_else(|| "workload-identity-system".to_owned());
    let client = if args.standalone {
        tracing::info!("standalone: no Kubernetes API; only mappings apply");
        None
    } else {
        Some(
            kube::Client::try_default()
                .await
                .context("connecting to the Kubernetes API (use --standalone to run without one)")?,
        )
    };
    let certificate = match (&client, &args.tls_cert_file, &args.tls_key_file) {
        (Some(client), _, _) if args.manage_certificate => {
            let mut names: Vec<String> = [".svc", ".svc.cluster.local"]
                .iter()
                .map(|suffix| format!("{}.{namespace}{suffix}", args.service_name))
                .collect();
            names.extend(args.certificate_sans.iter().cloned());
            let managed = ManagedCertificate::new(
                client.clone(),
                &namespace,
                args.certificate_secret.clone(),
                args.webhook_configuration.clone(),
                names,
                metrics.clone(),
            )?;
            let stored = managed.first_reconcile().await;
            let current = managed.target.clone();
            tokio::spawn(managed.run(stored, args.certificate_check_interval));
            current
        }
        (_, Some(cert), Some(key)) => {
            let files = CertificateFiles {
                cert: cert.clone(),
                key: key.clone(),
            };
            let current = ReloadingCertificate::new(files.load().await?);
            tokio::spawn(files.watch(current.clone(), metrics.clone(), args.reload_interval));
            current
        }
        _ => {
            tracing::warn!("no --tls-cert-file given: serving a self-signed certificate for localhost");
            ReloadingCertificate::new(tls::self_signed()?)
        }
    };
    let service_accounts = match client {
        None => ServiceAccounts::Standalone,
        Some(client) => {
            if args.config_file.is_none() {
                tokio::spawn(
                    config
                        .clone()
                        .watch_config_map(client.clone(), namespace, args.config_map.clone()),
                );
            }
            ServiceAccounts::start_cluster(client)
        }
    };
    match &args.config_file {
        Some(path) => {
            tokio::spawn(config.clone().watch_file(path.clone(), args.reload_interval));
        }
        None if args.standalone => config.clear("embedded defaults"),
        None => {}
    }

    let state = Arc::new(AppState {
        config,
        service_accounts,
        metrics,
        shutting_down: AtomicBool::new(false),
    });
    let options = ServerOptions {
        listen: args.listen,
        metrics_listen: args.metrics_listen.0,
        max_body_bytes: args.max_body_bytes,
        shutdown_timeout: args.shutdown_timeout,
        shutdown_delay: args.shutdown_delay,
        benchmark_ceiling: args.benchmark_ceiling,
    };
    server::serve(state, tls::server_config(certificate)?, options).await
}

/// The namespace of the Pod the webhook runs in, from its ServiceAccount mount.
fn own_namespace() -> Option<String> {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
}
