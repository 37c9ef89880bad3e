//! The release `serve` binary on a loopback TLS port under load, as the apiserver drives it:
//! HTTP/2 with a few multiplexed connections, or HTTP/1.1 with keep-alive connections.
//!
//! For each scenario and protocol: requests/s at saturation (closed loop), the same against the
//! server's no-parse ceiling (`serve --benchmark-ceiling`, when the binary has it), latency at a
//! fixed offered load (open loop, paced from its own thread, measured from the intended send
//! time so a slow answer cannot hide the requests queued behind it), errors, the webhook's peak
//! RSS and its CPU seconds per 10k requests. Then memory with 100,000 mappings, and a soak run
//! that samples RSS every second. Prints markdown tables.
//!
//! Build the binary first (scripts/bench.sh does): `cargo build --release`. Settings (env):
//!   WIW_BIN                path of the binary (default: $CARGO_TARGET_DIR or ./target, /release/)
//!   WIW_DURATION_SECONDS   saturation run per scenario (5)
//!   WIW_LATENCY_SECONDS    fixed-load run per scenario (10)
//!   WIW_RATE               offered load of the fixed-load run, req/s (2000)
//!   WIW_CONCURRENCY        requests in flight at saturation over HTTP/2 (64)
//!   WIW_H2_CONNECTIONS     HTTP/2 connections (2)
//!   WIW_H1_CONNECTIONS     HTTP/1.1 keep-alive connections = requests in flight (32)
//!   WIW_LOAD_THREADS       load generator threads (1)
//!   WIW_SCENARIOS          comma-separated subset of scenario names
//!   WIW_PROTOCOLS          h2,h1 (both)
//!   WIW_SOAK_SECONDS       soak run at WIW_RATE, sampling RSS each second (60; 0 skips)
//!   WIW_SCALE_MAPPINGS     mappings of the memory-at-scale run (100000; 0 skips)
//!   WIW_WORST_SECONDS      worst-case memory run (20; 0 skips): WIW_WORST_SENDERS streams (16)
//!                          sending the largest reviews, plus WIW_WORST_STALLED clients (64, half
//!                          HTTP/2 with 32 streams each, half HTTP/1.1) that never read their answers,
//!                          WIW_WORST_IDLE idle HTTP/2 connections (1000), WIW_WORST_REFUSED
//!                          HTTP/1.1 clients (32) sending a 3 MiB apiVersion and never reading
//!                          (issue 21 F1), and WIW_WORST_ZERO_WINDOW HTTP/2 connections (9) with a
//!                          stream window of 0 and 240 reviews each (F4); the clients come from
//!                          127.0.0.1-8 (an attacker with several addresses), the good review
//!                          checked at the end from 127.0.0.100

#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/load.rs"]
mod load;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use hyper::client::conn::http2;
use hyper_util::rt::TokioExecutor;
use load::{
    Pool, Protocol, Run, Settings, Target, check_answer, contains, env_or, fixed_rate, mib, percentile, saturate,
    status_kib,
};
use workload_identity_webhook::shell::certificates::ca::GeneratedCa;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("WIW_BIN") {
        return path.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("release/workload-identity-webhook")
}

/// Newest modification time of the sources, to warn about a stale binary.
fn newest_source() -> Option<std::time::SystemTime> {
    let mut newest = None;
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(modified) = entry.metadata().and_then(|meta| meta.modified()) {
                newest = newest.max(Some(modified));
            }
        }
    }
    newest
}

// ---------------------------------------------------------------------------------------------
// The webhook process.

struct Server {
    child: Child,
    port: u16,
    metrics_port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(bin: &Path, ca: &GeneratedCa, config: &str, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ca.issue(&["127.0.0.1", "localhost"]).unwrap();
        std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), key).unwrap();
        std::fs::write(dir.path().join("config.yaml"), config).unwrap();
        let (port, metrics_port) = (free_port(), free_port());
        // Logs as in the shipped Deployment (JSON, info: one audit line per mutated object).
        let log = std::fs::File::create(dir.path().join("webhook.log")).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(format!("--metrics-listen=127.0.0.1:{metrics_port}"))
            .arg(format!("--tls-cert-file={}", dir.path().join("tls.crt").display()))
            .arg(format!("--tls-key-file={}", dir.path().join("tls.key").display()))
            .arg(format!("--config-file={}", dir.path().join("config.yaml").display()))
            .arg("--standalone")
            .arg("--log-format=json")
            .args(extra)
            .env("RUST_LOG", std::env::var("WIW_SERVER_LOG").unwrap_or("info".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", bin.display()));
        Server {
            child,
            port,
            metrics_port,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("webhook.log")).unwrap_or_default()
    }

    async fn wait_ready(&mut self) -> Duration {
        let started = Instant::now();
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{}/readyz", self.metrics_port);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("webhook exited with {status}:\n{}", self.log());
            }
            if let Ok(response) = client.get(&url).send().await
                && response.status().is_success()
            {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "webhook not ready after 120 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `VmRSS` and `VmHWM` (peak RSS since start or the last `reset_peak`), in KiB.
    fn memory(&self) -> (u64, u64) {
        status_kib(self.pid())
    }

    fn reset_peak(&self) {
        load::reset_peak(self.pid());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------

struct Row {
    scenario: &'static str,
    protocol: Protocol,
    ours: Run,
    ceiling: Option<Run>,
    latency: Run,
    peak_rss_kib: u64,
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return; // `cargo bench -- --list`
    }
    let threads = env_or("WIW_LOAD_THREADS", 1usize);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run_all());
}

async fn run_all() {
    let bin = binary();
    if !bin.exists() {
        eprintln!(
            "server_load: {} not found: run `cargo build --release` first (scripts/bench.sh does), or set WIW_BIN",
            bin.display()
        );
        std::process::exit(1);
    }
    if let (Ok(built), Some(source)) = (
        std::fs::metadata(&bin).and_then(|meta| meta.modified()),
        newest_source(),
    ) && built < source
    {
        eprintln!(
            "server_load: WARNING {} is older than src/: run `cargo build --release`",
            bin.display()
        );
    }
    let help = Command::new(&bin)
        .args(["serve", "--help"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    let has_ceiling = help.contains("--benchmark-ceiling");

    let settings = Settings {
        duration: Duration::from_secs_f64(env_or("WIW_DURATION_SECONDS", 5.0)),
        warmup: Duration::from_secs(1),
        latency_duration: Duration::from_secs_f64(env_or("WIW_LATENCY_SECONDS", 10.0)),
        rate: env_or("WIW_RATE", 2000.0),
        concurrency: env_or("WIW_CONCURRENCY", 64),
        h2_connections: env_or("WIW_H2_CONNECTIONS", 2),
        h1_connections: env_or("WIW_H1_CONNECTIONS", 32),
    };
    let wanted: Option<Vec<String>> = std::env::var("WIW_SCENARIOS")
        .ok()
        .map(|list| list.split(',').map(str::to_owned).collect());
    let protocols: Vec<Protocol> = std::env::var("WIW_PROTOCOLS")
        .unwrap_or_else(|_| "h2,h1".into())
        .split(',')
        .filter_map(|p| match p.trim() {
            "h2" => Some(Protocol::H2),
            "h1" => Some(Protocol::H1),
            _ => None,
        })
        .collect();
    let scenarios: Vec<fixtures::Scenario> = fixtures::scenarios()
        .into_iter()
        .filter(|s| wanted.as_ref().is_none_or(|w| w.iter().any(|n| n == s.name)))
        .collect();

    let ca = GeneratedCa::new("benchmark CA").unwrap();
    let mut server = Server::start(&bin, &ca, fixtures::SMALL_CONFIG, &[]);
    let mut ceiling = has_ceiling.then(|| Server::start(&bin, &ca, fixtures::SMALL_CONFIG, &["--benchmark-ceiling"]));
    server.wait_ready().await;
    if let Some(ceiling) = ceiling.as_mut() {
        ceiling.wait_ready().await;
    }
    let (idle_rss, _) = server.memory();
    eprintln!(
        "server_load: {} (pid {}), ceiling: {}, load threads {}, {} s saturation / {} s at {} req/s per scenario",
        bin.display(),
        server.pid(),
        if has_ceiling {
            "--benchmark-ceiling"
        } else {
            "not in this binary: pod-no-identity stands in"
        },
        env_or("WIW_LOAD_THREADS", 1usize),
        settings.duration.as_secs_f64(),
        settings.latency_duration.as_secs_f64(),
        settings.rate
    );

    let mut rows = Vec::new();
    for scenario in &scenarios {
        let body = Bytes::from(scenario.body.clone());
        for &protocol in &protocols {
            let (connections, concurrency) = match protocol {
                Protocol::H2 => (settings.h2_connections, settings.concurrency),
                Protocol::H1 => (settings.h1_connections, settings.h1_connections),
            };
            // One careful check of the answer before the load.
            let target = Target::new(server.port, &ca.cert_pem, protocol);
            let pool = Arc::new(Pool::open(&target, protocol, connections).await);
            let answer = pool
                .send(&target, &body, protocol, &mut None)
                .await
                .expect("first request");
            check_answer(&answer, Some(scenario.patched)).unwrap_or_else(|err| panic!("{}: {err}", scenario.name));

            server.reset_peak();
            let ours = saturate(
                &target,
                pool.clone(),
                protocol,
                body.clone(),
                concurrency,
                &settings,
                server.pid(),
            )
            .await;
            let ceiling_run = match ceiling.as_ref() {
                Some(ceiling) => {
                    let target = Target::new(ceiling.port, &ca.cert_pem, protocol);
                    let pool = Arc::new(Pool::open(&target, protocol, connections).await);
                    Some(
                        saturate(
                            &target,
                            pool,
                            protocol,
                            body.clone(),
                            concurrency,
                            &settings,
                            ceiling.pid(),
                        )
                        .await,
                    )
                }
                None => None,
            };
            let latency = fixed_rate(
                &target,
                pool.clone(),
                protocol,
                vec![body.clone()],
                (settings.rate, settings.latency_duration, settings.warmup),
                |_| {},
            )
            .await;
            let (_, peak) = server.memory();
            eprintln!(
                "  {:<26} {:<8} {:>8.0} req/s{}  p99 {:.2} ms  errors {}",
                scenario.name,
                protocol.label(),
                ours.rate(),
                ceiling_run
                    .as_ref()
                    .map(|c| format!(" (ceiling {:.0})", c.rate()))
                    .unwrap_or_default(),
                percentile(&latency.latencies, 99.0),
                ours.errors + latency.errors
            );
            for error in [&ours.first_error, &latency.first_error].into_iter().flatten() {
                eprintln!("    first error: {error}");
            }
            rows.push(Row {
                scenario: scenario.name,
                protocol,
                ours,
                ceiling: ceiling_run,
                latency,
                peak_rss_kib: peak,
            });
        }
    }
    let (_, overall_peak) = status_kib(server.pid());

    print_main_table(&rows, &settings, has_ceiling, idle_rss);

    // Soak: fixed load, the four scenarios in turn over HTTP/2, RSS sampled each second.
    let soak_seconds: u64 = env_or("WIW_SOAK_SECONDS", 60);
    if soak_seconds > 0 {
        let target = Target::new(server.port, &ca.cert_pem, Protocol::H2);
        let pool = Arc::new(Pool::open(&target, Protocol::H2, settings.h2_connections).await);
        let bodies: Vec<Bytes> = fixtures::scenarios().into_iter().map(|s| Bytes::from(s.body)).collect();
        let pid = server.pid();
        let mut samples = vec![status_kib(pid).0];
        let run = fixed_rate(
            &target,
            pool,
            Protocol::H2,
            bodies,
            (settings.rate, Duration::from_secs(soak_seconds), Duration::ZERO),
            |_| samples.push(status_kib(pid).0),
        )
        .await;
        samples.push(status_kib(pid).0);
        let first = samples[1.min(samples.len() - 1)];
        let last = *samples.last().unwrap();
        let max = *samples.iter().max().unwrap();
        // Growth over the second half, where a leak would show as a steady climb.
        let half = &samples[samples.len() / 2..];
        println!(
            "\n### Soak: {soak_seconds} s at {:.0} req/s over HTTP/2 (the four scenarios in turn)\n",
            settings.rate
        );
        println!("| requests | errors | RSS after 1 s | RSS at end | max RSS | change over 2nd half | p99 |");
        println!("|---|---|---|---|---|---|---|");
        println!(
            "| {} | {} | {} | {} | {} | {:+.1} MiB | {:.2} ms |",
            run.completed,
            run.errors,
            mib(first),
            mib(last),
            mib(max),
            (*half.last().unwrap() as f64 - half[0] as f64) / 1024.0,
            percentile(&run.latencies, 99.0)
        );
        let per_second: Vec<String> = samples
            .iter()
            .map(|kib| format!("{:.1}", *kib as f64 / 1024.0))
            .collect();
        println!("\nRSS samples (MiB, one per second): {}", per_second.join(" "));
    }
    println!(
        "\nPeak RSS of the webhook over the whole run (VmHWM since the last reset): {}",
        mib(overall_peak)
    );
    drop(server);
    drop(ceiling);

    let worst_seconds: u64 = env_or("WIW_WORST_SECONDS", 20);
    if worst_seconds > 0 {
        worst_case_memory(&bin, &ca, Duration::from_secs(worst_seconds)).await;
    }

    // Memory at scale: the same server with many mappings in --config-file.
    let mappings: usize = env_or("WIW_SCALE_MAPPINGS", 100_000);
    if mappings > 0 {
        let yaml = fixtures::many_mappings_config(mappings);
        let mut small = Server::start(&bin, &ca, fixtures::SMALL_CONFIG, &[]);
        let small_ready = small.wait_ready().await;
        let (small_rss, _) = small.memory();
        let mut big = Server::start(&bin, &ca, &yaml, &[]);
        let big_ready = big.wait_ready().await;
        let (big_rss, big_peak_load) = big.memory();
        // Then serve load with it: the mapped ServiceAccount is the last of the list.
        let target = Target::new(big.port, &ca.cert_pem, Protocol::H2);
        let pool = Arc::new(Pool::open(&target, Protocol::H2, settings.h2_connections).await);
        let body = Bytes::from(fixtures::scenario_named("pod-1-container").unwrap().body);
        let answer = pool.send(&target, &body, Protocol::H2, &mut None).await.unwrap();
        check_answer(&answer, Some(true)).unwrap();
        big.reset_peak();
        let short = Settings {
            duration: Duration::from_secs(3),
            ..settings
        };
        let run = saturate(&target, pool, Protocol::H2, body, short.concurrency, &short, big.pid()).await;
        let (_, big_peak_serving) = big.memory();
        println!(
            "\n### Memory at scale: {mappings} mappings in --config-file ({:.1} MiB of YAML)\n",
            yaml.len() as f64 / 1048576.0
        );
        println!(
            "| server | start to ready | RSS when ready | peak RSS while loading | peak RSS serving pod-1-container (HTTP/2) | req/s |"
        );
        println!("|---|---|---|---|---|---|");
        println!(
            "| {} mappings (example config) | {:.2} s | {} | - | - | - |",
            fixtures::SMALL_CONFIG.matches("serviceAccount:").count(),
            small_ready.as_secs_f64(),
            mib(small_rss)
        );
        println!(
            "| {mappings} mappings | {:.2} s | {} | {} | {} | {:.0} |",
            big_ready.as_secs_f64(),
            mib(big_rss),
            mib(big_peak_load),
            mib(big_peak_serving),
            run.rate()
        );
    }
}

fn print_main_table(rows: &[Row], settings: &Settings, has_ceiling: bool, idle_rss: u64) {
    println!(
        "\n### Server: saturation ({} s closed loop; HTTP/2: {} connections x {} streams in flight, HTTP/1.1: {} keep-alive connections) and latency at {:.0} req/s offered (open loop, {} s)\n",
        settings.duration.as_secs_f64(),
        settings.h2_connections,
        settings.concurrency,
        settings.h1_connections,
        settings.rate,
        settings.latency_duration.as_secs_f64()
    );
    let ceiling_note = if has_ceiling {
        "no-parse ceiling"
    } else {
        "ceiling (stand-in: pod-no-identity)"
    };
    println!(
        "| scenario | protocol | req/s at saturation | {ceiling_note} req/s | % of ceiling | p50 | p99 | p99.9 | achieved rate | errors | peak RSS | webhook CPU s / 10k req |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let stand_in = rows
            .iter()
            .find(|r| r.scenario == "pod-no-identity" && r.protocol == row.protocol)
            .map(|r| &r.ours);
        let ceiling = row.ceiling.as_ref().or(if has_ceiling { None } else { stand_in });
        let (ceiling_rate, ratio) = match ceiling {
            Some(c) => (
                format!("{:.0}", c.rate()),
                format!("{:.0}%", 100.0 * row.ours.rate() / c.rate()),
            ),
            None => ("-".into(), "-".into()),
        };
        println!(
            "| {} | {} | {:.0} | {} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} req/s | {} | {} | {:.3} |",
            row.scenario,
            row.protocol.label(),
            row.ours.rate(),
            ceiling_rate,
            ratio,
            percentile(&row.latency.latencies, 50.0),
            percentile(&row.latency.latencies, 99.0),
            percentile(&row.latency.latencies, 99.9),
            row.latency.completed as f64 / row.latency.seconds,
            row.ours.errors + row.latency.errors,
            mib(row.peak_rss_kib),
            row.ours.server_cpu / row.ours.completed.max(1) as f64 * 10_000.0,
        );
    }
    println!(
        "\nLatency is measured from the intended send time of each request (so generator lag counts against us); from the actual send:"
    );
    println!("\n| scenario | protocol | p50 | p99 | p99.9 | load generator CPU s / 10k req (saturation) |");
    println!("|---|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.3} |",
            row.scenario,
            row.protocol.label(),
            percentile(&row.latency.service_latencies, 50.0),
            percentile(&row.latency.service_latencies, 99.0),
            percentile(&row.latency.service_latencies, 99.9),
            row.ours.client_cpu / row.ours.completed.max(1) as f64 * 10_000.0,
        );
    }
    println!("\nWebhook RSS idle after start: {}", mib(idle_rss));
}

// ---------------------------------------------------------------------------------------------
// Worst-case memory: what tenants can send at once, with the server's default limits.

/// A review of a Pod of ServiceAccount `multi` (all three clouds) whose containers are `container`
/// repeated `count` times.
fn minimal_pod_review(container: &str, count: usize) -> Bytes {
    let mut containers = String::with_capacity(count * (container.len() + 1));
    for index in 0..count {
        if index > 0 {
            containers.push(',');
        }
        containers.push_str(container);
    }
    let object = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"generateName":"amp-"}},"spec":{{"serviceAccountName":"{}","containers":[{containers}]}}}}"#,
        fixtures::MULTI_CLOUD_SERVICE_ACCOUNT
    );
    let object: serde_json::Value = serde_json::from_str(&object).expect("valid Pod");
    Bytes::from(fixtures::review(
        "705ab4f5-6393-11e8-b7cc-42010a800002",
        fixtures::MAPPED_NAMESPACE,
        object,
    ))
}

/// The most containers of this shape under the 3 MiB body limit.
fn largest_review(container: &str) -> Bytes {
    let limit = 3 * 1024 * 1024 - 4096;
    minimal_pod_review(container, limit / (container.len() + 1))
}

#[derive(Default)]
struct Tally {
    answered: AtomicU64,
    patched: AtomicU64,
    shed: AtomicU64,
    failed: AtomicU64,
    first_failure: std::sync::Mutex<Option<String>>,
}

impl Tally {
    /// Keeps an answered response unread (holding its budget on the server), counting 503s and failures.
    fn hold_unread<E>(
        &self,
        outcome: Result<hyper::Response<hyper::body::Incoming>, E>,
        held: &mut Vec<hyper::Response<hyper::body::Incoming>>,
    ) {
        match outcome {
            Ok(response) if response.status() == 200 => held.push(response),
            Ok(response) if response.status() == 503 => {
                self.shed.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// An HTTP/1.1 client that sends `body` and never reads the answer, holding its connection open
/// until `deadline`.
async fn send_unread_http1(target: &Target, body: &[u8], deadline: Instant) {
    use tokio::io::AsyncWriteExt;
    if let Ok(mut io) = target.tls_stream().await {
        let head = format!(
            "POST /mutate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let _ = io.inner_mut().write_all(head.as_bytes()).await;
        let _ = io.inner_mut().write_all(body).await;
        tokio::time::sleep_until(deadline.into()).await;
    }
}

async fn worst_case_memory(bin: &Path, ca: &GeneratedCa, duration: Duration) {
    let senders: usize = env_or("WIW_WORST_SENDERS", 16);
    let stalled: usize = env_or("WIW_WORST_STALLED", 64);
    let idle_connections: usize = env_or("WIW_WORST_IDLE", 1000);
    let refused: usize = env_or("WIW_WORST_REFUSED", 32);
    let zero_window: usize = env_or("WIW_WORST_ZERO_WINDOW", 9);
    // Attackers' addresses: eight, so that per-client shares do not hide what the whole budget holds.
    let attacker = |index: usize| 1 + (index % 8) as u8;
    let mut server = Server::start(bin, ca, fixtures::SMALL_CONFIG, &[]);
    server.wait_ready().await;
    let (idle, _) = server.memory();
    // Idle connections, each through the TLS and HTTP/2 handshakes.
    let h2 = Target::new(server.port, &ca.cert_pem, Protocol::H2);
    let mut idle_senders = Vec::new();
    for index in 0..idle_connections {
        idle_senders.push(h2.from(attacker(index)).h2().await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (with_idle, _) = server.memory();
    // The shapes that cost the most per byte: empty containers (each a 72-byte struct from 3 bytes
    // of JSON) and named ones, just under the body limit; and a Pod at the container bound, which
    // gets the largest patch the bounds allow (all three clouds).
    let bodies = [
        largest_review("{}"),
        largest_review(r#"{"name":"c"}"#),
        minimal_pod_review(r#"{"name":"c"}"#, 250),
    ];
    // WIW_WORST_SHAPES picks some of them (e.g. "0,2"), for finding what costs the memory.
    let picked: Vec<usize> = std::env::var("WIW_WORST_SHAPES")
        .unwrap_or_else(|_| "0,1,2".into())
        .split(',')
        .filter_map(|index| index.trim().parse().ok())
        .filter(|index| *index < bodies.len())
        .collect();
    let bodies: Vec<Bytes> = picked.iter().map(|index| bodies[*index].clone()).collect();
    let sizes: Vec<String> = bodies
        .iter()
        .map(|body| format!("{:.2} MiB", body.len() as f64 / 1048576.0))
        .collect();
    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + duration;

    // Clients that never read: HTTP/2 with the smallest flow-control windows (the server can send
    // 64 KiB and must hold the rest), and HTTP/1.1 that send a request and stop reading.
    let patched = minimal_pod_review(r#"{"name":"c"}"#, 250);
    let mut held = Vec::new();
    for index in 0..stalled {
        let target = h2.from(attacker(index));
        let body = patched.clone();
        let tally = tally.clone();
        held.push(tokio::spawn(async move {
            if index % 2 == 0 {
                let Ok(io) = target.tls_stream().await else {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    return Vec::new();
                };
                let Ok((sender, connection)) = http2::Builder::new(TokioExecutor::new())
                    .initial_stream_window_size(65_535)
                    .initial_connection_window_size(65_535)
                    .handshake::<_, Body>(io)
                    .await
                else {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    return Vec::new();
                };
                tokio::spawn(connection);
                let mut responses = Vec::new();
                for _ in 0..32 {
                    let outcome = sender.clone().send_request(target.request(&body, Protocol::H2)).await;
                    tally.hold_unread(outcome, &mut responses);
                }
                responses
            } else {
                send_unread_http1(&target, &body, deadline).await;
                Vec::new()
            }
        }));
    }

    // F1: a body whose apiVersion is 3 MiB, its refusal never read (it repeats 64 characters).
    let huge_api_version = Bytes::from(format!(
        r#"{{"apiVersion":"{}","kind":"AdmissionReview","request":{{}}}}"#,
        "x".repeat(3 * 1024 * 1024 - 1024)
    ));
    for index in 0..refused {
        let target = h2.from(attacker(index));
        let body = huge_api_version.clone();
        held.push(tokio::spawn(async move {
            send_unread_http1(&target, &body, deadline).await;
            Vec::new()
        }));
    }
    // F4: HTTP/2 connections announcing a stream window of 0, so no answer body is ever sent.
    for index in 0..zero_window {
        let target = h2.from(attacker(index));
        let body = patched.clone();
        let tally = tally.clone();
        held.push(tokio::spawn(async move {
            let Ok(io) = target.tls_stream().await else {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                return Vec::new();
            };
            let Ok((sender, connection)) = http2::Builder::new(TokioExecutor::new())
                .initial_stream_window_size(0)
                .handshake::<_, Body>(io)
                .await
            else {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                return Vec::new();
            };
            tokio::spawn(connection);
            let sends = (0..240).map(|_| sender.clone().send_request(target.request(&body, Protocol::H2)));
            let mut responses = Vec::new();
            for outcome in futures::future::join_all(sends).await {
                tally.hold_unread(outcome, &mut responses);
            }
            responses
        }));
    }

    // Senders of the largest reviews, reading their answers, until the deadline.
    let mut pools = Vec::new();
    for index in 0..4 {
        pools.push(Arc::new(Pool::open(&h2.from(attacker(index)), Protocol::H2, 1).await));
    }
    let mut running = Vec::new();
    for index in 0..senders {
        let pool = pools[index % pools.len()].clone();
        let (target, tally) = (h2.from(attacker(index % pools.len())), tally.clone());
        let bodies = bodies.clone();
        running.push(tokio::spawn(async move {
            let mut turn = index;
            while Instant::now() < deadline {
                let body = &bodies[turn % bodies.len()];
                turn += 1;
                match pool.send(&target, body, Protocol::H2, &mut None).await {
                    Ok(answer) => {
                        tally.answered.fetch_add(1, Ordering::Relaxed);
                        if contains(&answer, b"\"patch\":") {
                            tally.patched.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(err) if err.starts_with("status 503") => {
                        tally.shed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(err) => {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                        tally.first_failure.lock().unwrap().get_or_insert(err);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }
    let mut samples = Vec::new();
    while Instant::now() < deadline {
        samples.push(server.memory().0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for task in running {
        let _ = task.await;
    }
    let (rss_end, peak) = server.memory();
    // A good review, from another address (the apiserver's), while the stalled clients hold theirs.
    let good = Bytes::from(fixtures::scenario_named("pod-1-container").expect("scenario").body);
    let apiserver = h2.from(100);
    let good_answer = Pool::open(&apiserver, Protocol::H2, 1)
        .await
        .send(&apiserver, &good, Protocol::H2, &mut None)
        .await;
    let held_responses: usize = {
        let mut count = 0;
        for task in held {
            count += task.await.map(|responses| responses.len()).unwrap_or(0);
        }
        count
    };
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", server.metrics_port))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let limited: Vec<&str> = metrics
        .lines()
        .filter(|line| line.contains("admission_limited_total{") || line.contains("admission_shed_total "))
        .collect();
    drop(idle_senders);
    println!(
        "\n### Worst-case memory: {idle_connections} idle HTTP/2 connections, {senders} streams sending the largest reviews ({}), {stalled} clients that never read, {refused} that send a 3 MiB apiVersion and never read, {zero_window} HTTP/2 connections with a zero window and 240 reviews each, from 8 addresses (default limits, {} s)\n",
        sizes.join(", "),
        duration.as_secs()
    );
    println!(
        "RSS idle {}, with the idle connections {} ({:.1} KiB each)\n",
        mib(idle),
        mib(with_idle),
        (with_idle.saturating_sub(idle)) as f64 / idle_connections.max(1) as f64
    );
    println!(
        "| idle RSS | max RSS sampled | peak RSS (VmHWM) | RSS at end | answered | patched | shed (503) | failed | answers held unread | good review after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        mib(idle),
        mib(samples.iter().copied().max().unwrap_or(0)),
        mib(peak),
        mib(rss_end),
        tally.answered.load(Ordering::Relaxed),
        tally.patched.load(Ordering::Relaxed),
        tally.shed.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        held_responses,
        match good_answer {
            Ok(answer) if check_answer(&answer, Some(true)).is_ok() => "patched".to_owned(),
            Ok(_) => "wrong answer".to_owned(),
            Err(err) => err,
        }
    );
    println!("\nServer counters: {}", limited.join("; "));
    if let Some(failure) = tally.first_failure.lock().unwrap().as_ref() {
        println!("First failure: {failure}");
        let log = server.log();
        let errors: std::collections::BTreeSet<&str> = log
            .lines()
            .filter(|line| line.contains("connection"))
            .map(|line| line.split("\"message\":").nth(1).unwrap_or(line))
            .take(2000)
            .collect();
        for line in errors.iter().take(8) {
            eprintln!("  server: {line}");
        }
    }
    println!("Peak RSS of the worst case (VmHWM): {}", mib(peak));
}
