//! Whether the API server can trust the webhook: the caBundle checked against the serving certificate.

use std::sync::Arc;

use anyhow::Context;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Whether a caBundle holds certificates valid at `now` and, given the serving certificate (PEM)
/// and the host the API server calls, whether that certificate chains to the bundle for the host.
pub fn ca_bundle_check(
    ca_bundle: Option<&[u8]>,
    serving: Option<&[u8]>,
    host: Option<&str>,
    now: UnixTime,
) -> (&'static str, String) {
    let Some(bundle) = ca_bundle.filter(|bundle| !bundle.is_empty()) else {
        return (
            "warning",
            "no caBundle: the API server verifies the webhook with its own trust store (cert-manager's CA injector or --manage-certificate fill it in)".to_owned(),
        );
    };
    let certificates: Vec<CertificateDer<'static>> = match CertificateDer::pem_slice_iter(bundle).collect() {
        Ok(certificates) => certificates,
        Err(err) => return ("error", format!("the caBundle is not PEM: {err}")),
    };
    if certificates.is_empty() {
        return ("error", "the caBundle holds no certificate".to_owned());
    }
    let expiries = match expiries_if_valid(&certificates, now) {
        Ok(expiries) => expiries,
        Err(problem) => return ("error", problem),
    };
    let summary = format!(
        "{} CA certificate(s), valid until {}",
        certificates.len(),
        expiries.join(", ")
    );
    let (Some(serving), Some(host)) = (serving, host) else {
        return ("ok", summary);
    };
    match verify_serving(&certificates, serving, host, now) {
        Ok(()) => (
            "ok",
            format!("{summary}; the serving certificate chains to it for {host}"),
        ),
        Err(err) => (
            "error",
            format!("{summary}; but the serving certificate does not verify against it for {host}: {err}"),
        ),
    }
}

/// When each certificate expires, or why one is not valid at `now`.
fn expiries_if_valid(certificates: &[CertificateDer<'static>], now: UnixTime) -> Result<Vec<String>, String> {
    let seconds = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let mut expiries = Vec::new();
    for der in certificates {
        let Ok((_, certificate)) = X509Certificate::from_der(der) else {
            return Err("a certificate of the caBundle cannot be read".to_owned());
        };
        let validity = certificate.validity();
        if validity.not_after.timestamp() < seconds {
            return Err(format!(
                "the caBundle certificate {} expired on {}",
                certificate.subject(),
                validity.not_after
            ));
        }
        if validity.not_before.timestamp() > seconds {
            return Err(format!(
                "the caBundle certificate {} is valid only from {}",
                certificate.subject(),
                validity.not_before
            ));
        }
        expiries.push(validity.not_after.to_string());
    }
    Ok(expiries)
}

/// Verifies a serving certificate chain (PEM) against CA certificates, as the API server does.
fn verify_serving(roots: &[CertificateDer<'static>], serving: &[u8], host: &str, now: UnixTime) -> anyhow::Result<()> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone())?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(serving).collect::<Result<_, _>>()?;
    let (leaf, intermediates) = chain
        .split_first()
        .context("the Secret's tls.crt holds no certificate")?;
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(store),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()?;
    verifier.verify_server_cert(leaf, intermediates, &ServerName::try_from(host.to_owned())?, &[], now)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::certificates::ca::{GeneratedCa, Validity};

    fn now() -> UnixTime {
        UnixTime::now()
    }

    #[test]
    fn the_ca_bundle_is_checked_against_the_serving_certificate() {
        let ca = GeneratedCa::new("webhook CA").unwrap();
        let (serving, _) = ca.issue(&["wiw.system.svc"]).unwrap();
        let bundle = ca.cert_pem.as_bytes();
        let host = Some("wiw.system.svc");
        let (status, detail) = ca_bundle_check(Some(bundle), Some(serving.as_bytes()), host, now());
        assert_eq!(status, "ok", "{detail}");
        assert!(detail.contains("chains to it for wiw.system.svc"), "{detail}");

        let (status, detail) = ca_bundle_check(Some(bundle), Some(serving.as_bytes()), Some("other.system.svc"), now());
        assert_eq!(status, "error", "another name: {detail}");
        let other = GeneratedCa::new("another CA").unwrap();
        let (status, detail) = ca_bundle_check(Some(other.cert_pem.as_bytes()), Some(serving.as_bytes()), host, now());
        assert_eq!(status, "error", "another CA: {detail}");

        let (status, detail) = ca_bundle_check(Some(b"not PEM at all"), None, host, now());
        assert_eq!(status, "error", "{detail}");
        let (status, _) = ca_bundle_check(None, None, host, now());
        assert_eq!(status, "warning");

        let expired = GeneratedCa::with_validity(
            "expired CA",
            Some(Validity {
                not_before: 1_000_000_000,
                not_after: 1_100_000_000,
            }),
        )
        .unwrap();
        let (status, detail) = ca_bundle_check(Some(expired.cert_pem.as_bytes()), None, host, now());
        assert_eq!(status, "error");
        assert!(detail.contains("expired"), "{detail}");
    }
}
