//! Serving reload: the certificate read from PEM files (or made self-signed for local runs, by
//! [`ca`]) and swapped in place when the files change, so no connection is dropped and no restart
//! is needed. A broken new certificate is refused and the current one keeps serving. Certificates
//! the webhook makes itself are in [`ca`]; the managed one's plan and reconcile loop in
//! [`crate::shell::certificates`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::shell::metrics::Metrics;

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM chain and key, and checks that the key belongs to the first certificate.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("reading certificate PEM")?;
    if chain.is_empty() {
        bail!("no certificate in the certificate PEM");
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("reading private key PEM")?;
    CertifiedKey::from_der(chain, key, &provider()).context("certificate and key do not belong together")
}

/// What the serving certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub not_before: i64,
    pub not_after: i64,
    /// DNS names and IP addresses of the subjectAltName.
    pub names: Vec<String>,
}

/// Clocks of the issuer and of this node may differ by this much.
const CLOCK_SKEW: i64 = 300;

impl Leaf {
    pub fn of(key: &CertifiedKey) -> anyhow::Result<Leaf> {
        let der = key.end_entity_cert().map_err(|err| anyhow::anyhow!("{err:?}"))?;
        let (_, cert) = X509Certificate::from_der(der).context("parsing the certificate")?;
        Ok(Leaf {
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            names: subject_alt_names(&cert),
        })
    }

    /// Why the certificate must not be served at `now` (Unix seconds), if it must not.
    pub fn invalid_at(&self, now: i64) -> Option<String> {
        if now + CLOCK_SKEW < self.not_before {
            Some(format!("not valid before {}", utc(self.not_before)))
        } else if now > self.not_after {
            Some(format!("expired at {}", utc(self.not_after)))
        } else {
            None
        }
    }

    /// The names in `wanted` that no subjectAltName covers (exactly or by a `*.` wildcard).
    pub fn missing<'a>(&self, wanted: &'a [String]) -> Vec<&'a str> {
        let covers = |san: &str, name: &str| {
            san.eq_ignore_ascii_case(name)
                || san.strip_prefix("*.").is_some_and(|parent| {
                    name.split_once('.')
                        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(parent))
                })
        };
        wanted
            .iter()
            .map(String::as_str)
            .filter(|name| !self.names.iter().any(|san| covers(san, name)))
            .collect()
    }
}

/// The DNS names and IP addresses a certificate is for.
pub(crate) fn subject_alt_names(cert: &X509Certificate) -> Vec<String> {
    cert.subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    GeneralName::IPAddress(bytes) => ip_text(bytes),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).to_string()),
        _ => None,
    }
}

fn utc(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|at| at.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_secs()).unwrap_or(i64::MAX))
}

/// Hands every handshake the current certificate, and exports its expiry.
#[derive(Debug)]
pub struct ReloadingCertificate {
    current: ArcSwap<CertifiedKey>,
    not_after: prometheus_client::metrics::gauge::Gauge,
}

impl ReloadingCertificate {
    pub fn new(initial: CertifiedKey, metrics: &Metrics) -> Arc<Self> {
        let reloading = ReloadingCertificate {
            current: ArcSwap::from_pointee(initial.clone()),
            not_after: metrics.certificate_not_after.clone(),
        };
        reloading.replace(initial);
        Arc::new(reloading)
    }

    pub fn replace(&self, key: CertifiedKey) {
        if let Ok(leaf) = Leaf::of(&key) {
            self.not_after.set(leaf.not_after);
        }
        self.current.store(Arc::new(key));
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// TLS 1.2 and 1.3 only, ALPN h2 and http/1.1; with `client_ca_pem`, only clients presenting a
/// certificate signed by one of its CAs get through the handshake.
pub fn server_config(
    certificate: Arc<ReloadingCertificate>,
    client_ca_pem: Option<&[u8]>,
) -> anyhow::Result<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                roots
                    .add(cert.context("reading the client CA PEM")?)
                    .context("adding a client CA")?;
            }
            if roots.is_empty() {
                bail!("no certificate in the client CA PEM");
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .context("building the client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Names the certificate should carry (the Service's): a warning names those it lacks.
    pub expected_names: Vec<String>,
}

impl CertificateFiles {
    async fn read(&self) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let cert = tokio::fs::read(&self.cert)
            .await
            .with_context(|| format!("reading {}", self.cert.display()))?;
        let key = tokio::fs::read(&self.key)
            .await
            .with_context(|| format!("reading {}", self.key.display()))?;
        Ok((cert, key))
    }

    /// The certificate at start. One that is expired or not yet valid is served all the same
    /// (there is nothing else to serve), with an error in the log and its expiry in the metrics.
    pub async fn load(&self) -> anyhow::Result<CertifiedKey> {
        let (cert, key) = self.read().await?;
        let key = certified_key(&cert, &key)?;
        if let Err(err) = self.check(&key, unix_now()) {
            tracing::error!(error = %format!("{err:#}"), "the serving certificate is not valid; serving it until a valid one is in place");
        }
        Ok(key)
    }

    /// Refuses a certificate that is unreadable, expired or not yet valid; warns about missing names.
    fn check(&self, key: &CertifiedKey, now: i64) -> anyhow::Result<()> {
        let leaf = Leaf::of(key)?;
        if let Some(problem) = leaf.invalid_at(now) {
            bail!("the certificate in {} is {problem}", self.cert.display());
        }
        let missing = leaf.missing(&self.expected_names);
        if !missing.is_empty() {
            tracing::warn!(cert = %self.cert.display(), ?missing, names = ?leaf.names, "the serving certificate does not name the webhook's Service; the apiserver will refuse it");
        }
        Ok(())
    }

    /// Polls the files and swaps in each new, valid certificate. Polling (rather than inotify)
    /// also sees the symlink swap Kubernetes does when a mounted Secret changes.
    pub async fn watch(self, target: Arc<ReloadingCertificate>, metrics: Arc<Metrics>, interval: Duration) {
        let mut last_seen = self.read().await.ok();
        loop {
            tokio::time::sleep(interval).await;
            let files = match self.read().await {
                Ok(files) => files,
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), "cannot read the serving certificate files; keeping the current certificate");
                    continue;
                }
            };
            if last_seen.as_ref() == Some(&files) {
                continue;
            }
            let checked = certified_key(&files.0, &files.1).and_then(|key| self.check(&key, unix_now()).map(|()| key));
            match checked {
                Ok(key) => {
                    target.replace(key);
                    Metrics::record_reload(&metrics.certificate_reloads, true);
                    tracing::info!(cert = %self.cert.display(), "serving certificate reloaded");
                }
                Err(err) => {
                    Metrics::record_reload(&metrics.certificate_reloads, false);
                    tracing::error!(error = %format!("{err:#}"), "new serving certificate refused; the current one keeps serving");
                }
            }
            last_seen = Some(files);
        }
    }
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::ServerName;

    use super::*;
    use crate::shell::certificates::ca::{GeneratedCa, Validity};

    const DAY: i64 = 86_400;
    const SERVICE: &str = "workload-identity-webhook.workload-identity-system.svc";

    fn write(path: &std::path::Path, text: &str) {
        let staging = path.with_extension("tmp");
        std::fs::write(&staging, text).expect("write");
        std::fs::rename(staging, path).expect("rename");
    }

    fn serving_der(certificate: &ReloadingCertificate) -> Vec<u8> {
        certificate.current().cert[0].to_vec()
    }

    fn count(metrics: &Metrics, result: &str) -> u64 {
        let line = format!("workload_identity_webhook_certificate_reloads_total{{result=\"{result}\"}} ");
        metrics
            .encode()
            .lines()
            .find_map(|found| found.strip_prefix(&line)?.parse().ok())
            .unwrap_or(0)
    }

    async fn until(what: &str, mut check: impl FnMut() -> bool) {
        for _ in 0..200 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn reload_refuses_expired_and_not_yet_valid_certificates_and_exports_the_expiry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = GeneratedCa::new("test CA").expect("CA");
        let now = unix_now();
        let files = CertificateFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            expected_names: vec![SERVICE.to_owned()],
        };
        let first_validity = Validity {
            not_before: now - DAY,
            not_after: now + 30 * DAY,
        };
        let (cert, key) = ca.issue_valid(&[SERVICE], Some(first_validity)).expect("issue");
        write(&files.key, &key);
        write(&files.cert, &cert);
        let metrics = Arc::new(Metrics::default());
        let current = ReloadingCertificate::new(files.load().await.expect("load"), &metrics);
        assert_eq!(metrics.certificate_not_after.get(), now + 30 * DAY);
        let first = serving_der(&current);
        tokio::spawn(
            files
                .clone()
                .watch(current.clone(), metrics.clone(), Duration::from_millis(20)),
        );
        // The watcher reads the files once when it starts: let it, before changing them.
        tokio::time::sleep(Duration::from_millis(100)).await;

        let refused = [
            ("expired", now - 10 * DAY, now - DAY),
            ("not yet valid", now + DAY, now + 10 * DAY),
        ];
        for (what, not_before, not_after) in refused {
            let failures = count(&metrics, "failure");
            let (cert, key) = ca
                .issue_valid(&[SERVICE], Some(Validity { not_before, not_after }))
                .expect("issue");
            write(&files.key, &key);
            write(&files.cert, &cert);
            until(what, || count(&metrics, "failure") > failures).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(serving_der(&current), first, "{what} certificate served");
            assert_eq!(metrics.certificate_not_after.get(), now + 30 * DAY);
        }

        // A valid certificate for other names is served (with a warning): the gauge follows it.
        let (cert, key) = ca
            .issue_valid(
                &["elsewhere.example"],
                Some(Validity {
                    not_before: now - DAY,
                    not_after: now + 60 * DAY,
                }),
            )
            .expect("issue");
        write(&files.key, &key);
        write(&files.cert, &cert);
        until("the valid certificate", || serving_der(&current) != first).await;
        assert_eq!(metrics.certificate_not_after.get(), now + 60 * DAY);
    }

    #[test]
    fn validity_and_names_of_a_leaf() {
        let leaf = Leaf {
            not_before: 1_000,
            not_after: 2_000,
            names: vec!["*.ns.svc".to_owned(), "10.0.0.1".to_owned()],
        };
        assert_eq!(leaf.invalid_at(1_500), None);
        assert_eq!(leaf.invalid_at(1_000 - CLOCK_SKEW), None, "a skewed clock is tolerated");
        assert!(
            leaf.invalid_at(1_000 - CLOCK_SKEW - 1)
                .is_some_and(|why| why.starts_with("not valid before"))
        );
        assert!(
            leaf.invalid_at(2_001)
                .is_some_and(|why| why.starts_with("expired at 1970"))
        );
        let wanted = ["webhook.ns.svc", "webhook.other.svc", "10.0.0.1", "a.b.ns.svc"].map(str::to_owned);
        assert_eq!(leaf.missing(&wanted), ["webhook.other.svc", "a.b.ns.svc"]);
    }

    /// Runs a TLS handshake in memory; the server's verdict decides (with TLS 1.3 the client
    /// finishes before the server has checked its certificate).
    async fn handshake(server: ServerConfig, server_ca: &str, client: Option<(String, String)>) -> Result<(), String> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(server_ca.as_bytes()) {
            roots.add(cert.expect("PEM")).expect("root");
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(cert.as_bytes())
                        .collect::<Result<_, _>>()
                        .expect("chain"),
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
                )
                .expect("client auth"),
        };
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = ServerName::try_from("localhost").expect("name");
        let (accepted, _) = tokio::join!(acceptor.accept(server_io), connector.connect(name, client_io));
        accepted.map(drop).map_err(|err| err.to_string())
    }

    #[tokio::test]
    async fn with_a_client_ca_only_clients_holding_its_certificates_get_through() {
        let metrics = Metrics::default();
        let server_ca = GeneratedCa::new("server CA").expect("CA");
        let (cert, key) = server_ca.issue(&["localhost"]).expect("issue");
        let serving =
            || ReloadingCertificate::new(certified_key(cert.as_bytes(), key.as_bytes()).expect("key"), &metrics);
        let apiserver_ca = GeneratedCa::new("apiserver client CA").expect("CA");
        let apiserver = apiserver_ca.issue_client("kube-apiserver").expect("issue");
        let intruder = GeneratedCa::new("another CA")
            .expect("CA")
            .issue_client("kube-apiserver")
            .expect("issue");
        let requiring = || server_config(serving(), Some(apiserver_ca.cert_pem.as_bytes())).expect("config");

        assert_eq!(
            handshake(requiring(), &server_ca.cert_pem, Some(apiserver)).await,
            Ok(())
        );
        let without = handshake(requiring(), &server_ca.cert_pem, None).await;
        assert!(
            without.as_ref().is_err_and(|err| err.contains("certificate")),
            "{without:?}"
        );
        let foreign = handshake(requiring(), &server_ca.cert_pem, Some(intruder)).await;
        assert!(foreign.is_err(), "a certificate of another CA got through");
        // Without the option any client gets through, as before.
        let open = server_config(serving(), None).expect("config");
        assert_eq!(handshake(open, &server_ca.cert_pem, None).await, Ok(()));
        assert!(server_config(serving(), Some(b"no PEM here")).is_err());
    }
}
