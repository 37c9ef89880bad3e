//! The serving certificate: loaded from PEM files (or made self-signed for local runs) and swapped
//! in place when the files change, so no connection is dropped and no restart is needed. A broken
//! new certificate is refused and the current one keeps serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::metrics::Metrics;

fn provider() -> Arc<CryptoProvider> {
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

/// A certificate authority made on the spot, for certificates the webhook manages itself and for
/// local runs and tests.
pub struct GeneratedCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate's validity, in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    fn apply(self, params: &mut rcgen::CertificateParams) -> anyhow::Result<()> {
        params.not_before = time::OffsetDateTime::from_unix_timestamp(self.not_before)?;
        params.not_after = time::OffsetDateTime::from_unix_timestamp(self.not_after)?;
        Ok(())
    }
}

impl GeneratedCa {
    pub fn new(common_name: &str) -> anyhow::Result<Self> {
        Self::with_validity(common_name, None)
    }

    pub fn with_validity(common_name: &str, validity: Option<Validity>) -> anyhow::Result<Self> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        if let Some(validity) = validity {
            validity.apply(&mut params)?;
        }
        let key = rcgen::KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        let key_pem = key.serialize_pem();
        Ok(GeneratedCa {
            issuer: rcgen::Issuer::new(params, key),
            cert_pem,
            key_pem,
        })
    }

    /// A CA stored earlier, to sign new serving certificates with.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> anyhow::Result<Self> {
        let key = rcgen::KeyPair::from_pem(key_pem)?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(GeneratedCa {
            issuer,
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
        })
    }

    /// A serving certificate for these DNS names or IP addresses: `(certificate PEM, key PEM)`.
    pub fn issue(&self, subject_alt_names: &[&str]) -> anyhow::Result<(String, String)> {
        self.issue_valid(subject_alt_names, None)
    }

    pub fn issue_valid(
        &self,
        subject_alt_names: &[&str],
        validity: Option<Validity>,
    ) -> anyhow::Result<(String, String)> {
        let names: Vec<String> = subject_alt_names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names)?;
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            subject_alt_names.first().copied().unwrap_or("webhook"),
        );
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        if let Some(validity) = validity {
            validity.apply(&mut params)?;
        }
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// A certificate for `localhost` and `127.0.0.1`, for running without any certificate files.
pub fn self_signed() -> anyhow::Result<CertifiedKey> {
    let (cert, key) = GeneratedCa::new("workload-identity-webhook local CA")?.issue(&["localhost", "127.0.0.1"])?;
    certified_key(cert.as_bytes(), key.as_bytes())
}

/// Hands every handshake the current certificate.
#[derive(Debug)]
pub struct ReloadingCertificate {
    current: ArcSwap<CertifiedKey>,
}

impl ReloadingCertificate {
    pub fn new(initial: CertifiedKey) -> Arc<Self> {
        Arc::new(ReloadingCertificate {
            current: ArcSwap::from_pointee(initial),
        })
    }

    pub fn replace(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// TLS 1.2 and 1.3 only, ALPN h2 and http/1.1.
pub fn server_config(certificate: Arc<ReloadingCertificate>) -> anyhow::Result<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
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

    pub async fn load(&self) -> anyhow::Result<CertifiedKey> {
        let (cert, key) = self.read().await?;
        certified_key(&cert, &key)
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
            match certified_key(&files.0, &files.1) {
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
