//! The load generator of the benchmarks (`server_load`, `compare`): hyper's client connections over
//! tokio-rustls to a webhook on loopback, a closed loop (saturation) and an open loop (fixed rate,
//! latency from the intended send time), and what /proc says about a process (RSS, CPU seconds).
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Request, Uri, header};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::sync::Mutex;

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

pub fn status_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets a process's peak RSS (`VmHWM`) to its current RSS: writing 5 to clear_refs (Linux >= 4.0).
pub fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process (`self` or a pid), in seconds.
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split(' ').collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clock_ticks()
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

// ---------------------------------------------------------------------------------------------
// The load generator: hyper's client connections over tokio-rustls.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Protocol {
    H2,
    H1,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::H2 => "HTTP/2",
            Protocol::H1 => "HTTP/1.1",
        }
    }
}

#[derive(Clone)]
pub struct Target {
    pub port: u16,
    pub tls: tokio_rustls::TlsConnector,
    pub uri: Uri,
    /// The loopback address connections come from: the webhook keeps its shares per client IP.
    pub from: std::net::Ipv4Addr,
}

impl Target {
    /// A target serving reviews at `https://127.0.0.1:<port>/mutate`.
    pub fn new(port: u16, ca_pem: &str, protocol: Protocol) -> Target {
        Target::with_path(port, ca_pem, protocol, "/mutate")
    }

    /// A target serving reviews at `path` (the peers' webhooks use their own).
    pub fn with_path(port: u16, ca_pem: &str, protocol: Protocol, path: &str) -> Target {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![match protocol {
            Protocol::H2 => b"h2".to_vec(),
            Protocol::H1 => b"http/1.1".to_vec(),
        }];
        Target {
            port,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            uri: format!("https://127.0.0.1:{port}{path}").parse().unwrap(),
            from: std::net::Ipv4Addr::LOCALHOST,
        }
    }

    /// The same target, connected to from `127.0.0.<last>` (another client IP to the webhook).
    pub fn from(&self, last: u8) -> Target {
        Target {
            from: std::net::Ipv4Addr::new(127, 0, 0, last),
            ..self.clone()
        }
    }

    pub async fn tls_stream(&self) -> anyhow::Result<TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind((self.from, 0).into())?;
        let tcp = socket.connect(([127, 0, 0, 1], self.port).into()).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        Ok(TokioIo::new(self.tls.connect(name, tcp).await?))
    }

    pub async fn h2(&self) -> http2::SendRequest<Body> {
        let io = self.tls_stream().await.expect("TLS connection");
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .handshake(io)
            .await
            .expect("HTTP/2 handshake");
        tokio::spawn(connection);
        sender
    }

    pub async fn h1(&self) -> http1::SendRequest<Body> {
        let io = self.tls_stream().await.expect("TLS connection");
        let (sender, connection) = http1::handshake(io).await.expect("HTTP/1.1 handshake");
        tokio::spawn(connection);
        sender
    }

    pub fn request(&self, body: &Bytes, protocol: Protocol) -> Request<Body> {
        let builder = match protocol {
            Protocol::H2 => Request::post(self.uri.clone()),
            Protocol::H1 => Request::post(self.uri.path()).header(header::HOST, "127.0.0.1"),
        };
        builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.clone()))
            .unwrap()
    }
}

/// The connections of one run: HTTP/2 senders are shared, HTTP/1.1 ones lent out one at a time.
pub enum Pool {
    H2(Vec<http2::SendRequest<Body>>, AtomicU64),
    H1(
        tokio::sync::mpsc::UnboundedSender<http1::SendRequest<Body>>,
        Mutex<tokio::sync::mpsc::UnboundedReceiver<http1::SendRequest<Body>>>,
    ),
}

impl Pool {
    pub async fn open(target: &Target, protocol: Protocol, connections: usize) -> Pool {
        match protocol {
            Protocol::H2 => {
                let mut senders = Vec::new();
                for _ in 0..connections {
                    senders.push(target.h2().await);
                }
                Pool::H2(senders, AtomicU64::new(0))
            }
            Protocol::H1 => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                for _ in 0..connections {
                    tx.send(target.h1().await).unwrap();
                }
                Pool::H1(tx, Mutex::new(rx))
            }
        }
    }

    /// Sends one request; `Ok(body)` for a 200, `Err` for anything else.
    pub async fn send(
        &self,
        target: &Target,
        body: &Bytes,
        protocol: Protocol,
        sent: &mut Option<Instant>,
    ) -> Result<Bytes, String> {
        let response = match self {
            Pool::H2(senders, next) => {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize % senders.len();
                let mut sender = senders[i].clone();
                sender.ready().await.map_err(|err| err.to_string())?;
                *sent = Some(Instant::now());
                sender.send_request(target.request(body, protocol)).await
            }
            Pool::H1(tx, rx) => {
                let mut sender = rx.lock().await.recv().await.expect("pool open");
                if sender.ready().await.is_err() {
                    sender = target.h1().await;
                }
                *sent = Some(Instant::now());
                let response = sender.send_request(target.request(body, protocol)).await;
                let _ = tx.send(sender);
                response
            }
        }
        .map_err(|err| err.to_string())?;
        let status = response.status();
        let bytes = axum::body::to_bytes(Body::new(response.into_body()), usize::MAX)
            .await
            .map_err(|err| err.to_string())?;
        if status != 200 {
            return Err(format!("status {status}: {}", String::from_utf8_lossy(&bytes)));
        }
        Ok(bytes)
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// Checks an answer: allowed, the request's uid, and a patch exactly when one is expected.
pub fn check_answer(answer: &[u8], patched: Option<bool>) -> Result<(), String> {
    if !contains(answer, br#""allowed":true"#) {
        return Err(format!("not allowed: {}", String::from_utf8_lossy(answer)));
    }
    if let Some(patched) = patched {
        let value: serde_json::Value = serde_json::from_slice(answer).map_err(|err| err.to_string())?;
        if value["response"]["uid"] != "705ab4f5-6393-11e8-b7cc-42010a800002" {
            return Err(format!("wrong uid: {value}"));
        }
        if value["response"]["patch"].is_string() != patched {
            return Err(format!("patch expected: {patched}, answer: {value}"));
        }
    }
    Ok(())
}

#[derive(Default)]
pub struct Run {
    pub completed: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    /// Microseconds, from the intended send time (open loop) or the send (closed loop).
    pub latencies: Vec<u32>,
    /// Microseconds from the actual send (open loop only).
    pub service_latencies: Vec<u32>,
    pub server_cpu: f64,
    pub client_cpu: f64,
}

impl Run {
    pub fn rate(&self) -> f64 {
        self.completed as f64 / self.seconds
    }
}

pub fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

pub struct Settings {
    pub duration: Duration,
    pub warmup: Duration,
    pub latency_duration: Duration,
    pub rate: f64,
    pub concurrency: usize,
    pub h2_connections: usize,
    pub h1_connections: usize,
}

/// Closed loop: `concurrency` requests always in flight; counts those that start after the
/// warm-up and end before the deadline.
pub async fn saturate(
    target: &Target,
    pool: Arc<Pool>,
    protocol: Protocol,
    body: Bytes,
    concurrency: usize,
    settings: &Settings,
    server_pid: u32,
) -> Run {
    let started = Instant::now();
    let measure_from = started + settings.warmup;
    let deadline = measure_from + settings.duration;
    let mut workers = Vec::new();
    let server_cpu = Arc::new(std::sync::Mutex::new((0.0, 0.0)));
    {
        // Samples the CPU counters at the start and end of the measured window.
        let server_cpu = server_cpu.clone();
        workers.push(tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            let begin = (cpu_seconds(&server_pid.to_string()), cpu_seconds("self"));
            tokio::time::sleep_until(deadline.into()).await;
            let end = (cpu_seconds(&server_pid.to_string()), cpu_seconds("self"));
            *server_cpu.lock().unwrap() = (end.0 - begin.0, end.1 - begin.1);
            Run::default()
        }));
    }
    for _ in 0..concurrency {
        let (pool, target, body) = (pool.clone(), target.clone(), body.clone());
        workers.push(tokio::spawn(async move {
            let mut run = Run::default();
            loop {
                let begin = Instant::now();
                if begin >= deadline {
                    break;
                }
                let mut sent = None;
                let result = pool.send(&target, &body, protocol, &mut sent).await;
                let end = Instant::now();
                if begin < measure_from || end > deadline {
                    continue;
                }
                match result.and_then(|answer| check_answer(&answer, None)) {
                    Ok(()) => {
                        run.completed += 1;
                        run.latencies.push((end - begin).as_micros() as u32);
                    }
                    Err(err) => {
                        run.errors += 1;
                        run.first_error.get_or_insert(err);
                    }
                }
            }
            run
        }));
    }
    let mut total = Run {
        seconds: settings.duration.as_secs_f64(),
        ..Run::default()
    };
    for worker in workers {
        let run = worker.await.unwrap();
        total.completed += run.completed;
        total.errors += run.errors;
        if total.first_error.is_none() {
            total.first_error = run.first_error;
        }
        total.latencies.extend(run.latencies);
    }
    (total.server_cpu, total.client_cpu) = *server_cpu.lock().unwrap();
    total.latencies.sort_unstable();
    total
}

/// Open loop: a pacing thread starts request `i` at `start + i / rate` whatever the answers do,
/// for `warmup` (not counted) then `duration`.
pub async fn fixed_rate(
    target: &Target,
    pool: Arc<Pool>,
    protocol: Protocol,
    bodies: Vec<Bytes>,
    (rate, duration, warmup): (f64, Duration, Duration),
    mut on_second: impl FnMut(u64),
) -> Run {
    let runtime = tokio::runtime::Handle::current();
    let (results_tx, mut results_rx) = tokio::sync::mpsc::unbounded_channel();
    let total_requests = ((duration + warmup).as_secs_f64() * rate) as u64;
    let warmup_requests = (warmup.as_secs_f64() * rate) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let stop = Arc::new(AtomicBool::new(false));
    let pacer = {
        let (target, stop) = (target.clone(), stop.clone());
        std::thread::spawn(move || {
            let start = Instant::now() + Duration::from_millis(5);
            for i in 0..total_requests {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let intended = start + interval * i as u32;
                let now = Instant::now();
                if intended > now {
                    std::thread::sleep(intended - now);
                }
                let (pool, target, results_tx) = (pool.clone(), target.clone(), results_tx.clone());
                let body = bodies[i as usize % bodies.len()].clone();
                runtime.spawn(async move {
                    let mut sent = None;
                    let result = pool.send(&target, &body, protocol, &mut sent).await;
                    let end = Instant::now();
                    let result = result.and_then(|answer| check_answer(&answer, None));
                    let _ = results_tx.send((
                        i,
                        result,
                        (end - intended).as_micros() as u32,
                        sent.map_or(0, |sent| (end - sent).as_micros() as u32),
                    ));
                });
            }
        })
    };
    let mut run = Run {
        seconds: duration.as_secs_f64(),
        ..Run::default()
    };
    let mut received = 0;
    let mut next_second = Instant::now() + Duration::from_secs(1);
    let mut seconds = 0;
    while received < total_requests {
        let message = tokio::time::timeout(Duration::from_millis(200), results_rx.recv()).await;
        if Instant::now() >= next_second {
            seconds += 1;
            next_second += Duration::from_secs(1);
            on_second(seconds);
        }
        let Ok(message) = message else { continue };
        let Some((i, result, latency, service)) = message else {
            break;
        };
        received += 1;
        if i < warmup_requests {
            continue;
        }
        match result {
            Ok(()) => {
                run.completed += 1;
                run.latencies.push(latency);
                run.service_latencies.push(service);
            }
            Err(err) => {
                run.errors += 1;
                run.first_error.get_or_insert(err);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    pacer.join().unwrap();
    run.latencies.sort_unstable();
    run.service_latencies.sort_unstable();
    run
}
