//! Certificate authorities and the certificates they sign, made on the spot: for the managed
//! certificate, for local runs (self-signed `localhost`) and for tests.

use rustls::sign::CertifiedKey;

use crate::shell::tls::certified_key;

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
        self.issue_for(subject_alt_names, validity, rcgen::ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate (as the apiserver presents to webhooks): `(certificate PEM, key PEM)`.
    pub fn issue_client(&self, name: &str) -> anyhow::Result<(String, String)> {
        self.issue_for(&[name], None, rcgen::ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue_for(
        &self,
        subject_alt_names: &[&str],
        validity: Option<Validity>,
        usage: rcgen::ExtendedKeyUsagePurpose,
    ) -> anyhow::Result<(String, String)> {
        let names: Vec<String> = subject_alt_names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names)?;
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            subject_alt_names.first().copied().unwrap_or("webhook"),
        );
        params.extended_key_usages = vec![usage];
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
