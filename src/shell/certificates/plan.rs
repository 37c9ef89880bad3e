//! The renewal plan of the managed certificate: a pure function of the stored PEMs, the names
//! and the time (what to renew), and the renewal itself (new PEMs). No I/O.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::ca::{GeneratedCa, Validity};
use crate::shell::tls::certified_key;

const DAY: i64 = 86_400;
pub const CA_LIFETIME: i64 = 10 * 365 * DAY;
pub const SERVING_LIFETIME: i64 = 365 * DAY;
/// Serving certificates are renewed when this much of their life is left.
pub const SERVING_RENEW_BEFORE: i64 = 90 * DAY;
pub const CA_RENEW_BEFORE: i64 = 365 * DAY;
/// Certificates start this far in the past, so a skewed clock elsewhere still accepts them.
const BACKDATE: i64 = 3600;
/// How long a new CA is published in the bundle before serving certificates are signed by it.
pub const CA_PUBLISH_GRACE: i64 = 300;

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const TLS_CERT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
/// Every CA the apiserver must trust: the current one, and the previous one during a rotation.
const CA_BUNDLE: &str = "ca-bundle.crt";

/// The PEMs stored in the Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub ca_cert: String,
    pub ca_key: String,
    pub tls_cert: String,
    pub tls_key: String,
    pub ca_bundle: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    Keep,
    /// A new serving certificate from the stored CA.
    Serving,
    /// A new CA; on first install also its serving certificate.
    Authority,
}

/// What a certificate says about itself.
struct Inspected {
    not_before: i64,
    not_after: i64,
    subject: String,
    issuer: String,
    names: Vec<String>,
}

fn inspect(pem: &str) -> Option<Inspected> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let (_, cert) = X509Certificate::from_der(&pem.contents).ok()?;
    Some(Inspected {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        names: crate::shell::tls::subject_alt_names(&cert),
    })
}

/// What to renew at `now` (Unix seconds) for a certificate that must name `names`.
pub fn renewal(now: i64, stored: Option<&Stored>, names: &[String]) -> Renewal {
    let Some(stored) = stored else {
        return Renewal::Authority;
    };
    let (Some(ca), Some(serving)) = (inspect(&stored.ca_cert), inspect(&stored.tls_cert)) else {
        return Renewal::Authority;
    };
    if certified_key(stored.tls_cert.as_bytes(), stored.tls_key.as_bytes()).is_err() {
        return Renewal::Authority;
    }
    if ca.not_after - now < CA_RENEW_BEFORE {
        return Renewal::Authority;
    }
    let ca_published = now >= ca.not_before + BACKDATE + CA_PUBLISH_GRACE;
    let mut wanted = names.to_vec();
    let mut present = serving.names.clone();
    wanted.sort();
    present.sort();
    let due = serving.not_after - now < SERVING_RENEW_BEFORE || wanted != present;
    // A CA younger than the grace period signs nothing yet: the apiserver may not trust it.
    if (due || serving.issuer != ca.subject) && ca_published {
        return Renewal::Serving;
    }
    Renewal::Keep
}

/// The Secret contents after `renewal`.
pub fn renew(now: i64, stored: Option<&Stored>, renewal: Renewal, names: &[String]) -> anyhow::Result<Stored> {
    let serving_validity = Some(Validity {
        not_before: now - BACKDATE,
        not_after: now + SERVING_LIFETIME,
    });
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    match (renewal, stored) {
        (Renewal::Keep, Some(stored)) => Ok(stored.clone()),
        (Renewal::Serving, Some(stored)) => {
            let ca = GeneratedCa::from_pem(&stored.ca_cert, &stored.ca_key)?;
            let (tls_cert, tls_key) = ca.issue_valid(&name_refs, serving_validity)?;
            Ok(Stored {
                tls_cert,
                tls_key,
                ..stored.clone()
            })
        }
        (_, previous) => {
            let ca = GeneratedCa::with_validity(
                &format!("workload-identity-webhook CA {now}"),
                Some(Validity {
                    not_before: now - BACKDATE,
                    not_after: now + CA_LIFETIME,
                }),
            )?;
            // Keep the previous CA trusted while serving certificates it signed are still out there.
            let previous_ca = previous
                .filter(|old| inspect(&old.ca_cert).is_some_and(|old_ca| old_ca.not_after > now))
                .map(|old| old.ca_cert.clone());
            let ca_bundle = format!("{}{}", ca.cert_pem, previous_ca.as_deref().unwrap_or(""));
            let serving =
                match previous.filter(|old| certified_key(old.tls_cert.as_bytes(), old.tls_key.as_bytes()).is_ok()) {
                    // Rotation: keep serving the old certificate until the new CA is published.
                    Some(old) if previous_ca.is_some() => (old.tls_cert.clone(), old.tls_key.clone()),
                    _ => ca.issue_valid(&name_refs, serving_validity)?,
                };
            Ok(Stored {
                ca_cert: ca.cert_pem,
                ca_key: ca.key_pem,
                tls_cert: serving.0,
                tls_key: serving.1,
                ca_bundle,
            })
        }
    }
}

impl Stored {
    pub(super) fn from_secret(secret: &Secret) -> Option<Stored> {
        let data = secret.data.as_ref()?;
        let text = |key: &str| String::from_utf8(data.get(key)?.0.clone()).ok();
        Some(Stored {
            ca_cert: text(CA_CERT)?,
            ca_key: text(CA_KEY)?,
            tls_cert: text(TLS_CERT)?,
            tls_key: text(TLS_KEY)?,
            ca_bundle: text(CA_BUNDLE)?,
        })
    }

    pub(super) fn to_data(&self) -> std::collections::BTreeMap<String, ByteString> {
        [
            (CA_CERT, &self.ca_cert),
            (CA_KEY, &self.ca_key),
            (TLS_CERT, &self.tls_cert),
            (TLS_KEY, &self.tls_key),
            (CA_BUNDLE, &self.ca_bundle),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), ByteString(value.as_bytes().to_vec())))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn names() -> Vec<String> {
        vec![
            "workload-identity-webhook.workload-identity-system.svc".to_owned(),
            "127.0.0.1".to_owned(),
        ]
    }

    fn installed(at: i64) -> Stored {
        renew(at, None, Renewal::Authority, &names()).unwrap()
    }

    #[test]
    fn first_install_makes_a_ca_and_a_serving_certificate() {
        assert_eq!(renewal(NOW, None, &names()), Renewal::Authority);
        let stored = installed(NOW);
        certified_key(stored.tls_cert.as_bytes(), stored.tls_key.as_bytes()).unwrap();
        assert_eq!(stored.ca_bundle, stored.ca_cert);
        let serving = inspect(&stored.tls_cert).unwrap();
        assert_eq!(serving.not_after, NOW + SERVING_LIFETIME);
        assert_eq!(serving.issuer, inspect(&stored.ca_cert).unwrap().subject);
        let mut found = serving.names.clone();
        found.sort();
        let mut expected = names();
        expected.sort();
        assert_eq!(found, expected);
        assert_eq!(renewal(NOW, Some(&stored), &names()), Renewal::Keep);
    }

    #[test]
    fn serving_certificate_is_renewed_before_expiry_with_the_same_ca() {
        let stored = installed(NOW);
        let due = NOW + SERVING_LIFETIME - SERVING_RENEW_BEFORE + 1;
        assert_eq!(renewal(due - 2, Some(&stored), &names()), Renewal::Keep);
        assert_eq!(renewal(due, Some(&stored), &names()), Renewal::Serving);
        let renewed = renew(due, Some(&stored), Renewal::Serving, &names()).unwrap();
        assert_ne!(renewed.tls_cert, stored.tls_cert);
        assert_eq!(
            renewed.ca_bundle, stored.ca_bundle,
            "same CA, so the bundle does not change"
        );
        assert_eq!(renewal(due, Some(&renewed), &names()), Renewal::Keep);
    }

    #[test]
    fn changed_names_renew_the_serving_certificate() {
        let stored = installed(NOW);
        let later = NOW + CA_PUBLISH_GRACE;
        assert_eq!(renewal(later, Some(&stored), &names()), Renewal::Keep);
        assert_eq!(
            renewal(later, Some(&stored), &["other.svc".to_owned()]),
            Renewal::Serving
        );
    }

    #[test]
    fn ca_rotation_publishes_both_cas_before_switching_the_serving_certificate() {
        let stored = installed(NOW);
        let due = NOW + CA_LIFETIME - CA_RENEW_BEFORE + 1;
        // The serving certificate would be due too by then; the CA comes first.
        assert_eq!(renewal(due, Some(&stored), &names()), Renewal::Authority);
        let rotated = renew(due, Some(&stored), Renewal::Authority, &names()).unwrap();
        assert_ne!(rotated.ca_cert, stored.ca_cert);
        assert!(rotated.ca_bundle.contains(&rotated.ca_cert) && rotated.ca_bundle.contains(&stored.ca_cert));
        assert_eq!(
            rotated.tls_cert, stored.tls_cert,
            "the old certificate keeps serving while the bundle spreads"
        );
        // The old serving certificate is due, but waits until the new CA has been published.
        assert_eq!(renewal(due + 10, Some(&rotated), &names()), Renewal::Keep);
        assert_eq!(
            renewal(due + CA_PUBLISH_GRACE, Some(&rotated), &names()),
            Renewal::Serving
        );
        let after_grace = renew(due + CA_PUBLISH_GRACE, Some(&rotated), Renewal::Serving, &names()).unwrap();
        assert_eq!(
            inspect(&after_grace.tls_cert).unwrap().issuer,
            inspect(&rotated.ca_cert).unwrap().subject
        );
        assert_eq!(after_grace.ca_bundle, rotated.ca_bundle);
    }

    #[test]
    fn a_fresh_ca_waits_for_the_grace_period_before_signing() {
        // A rotation where the old serving certificate is still far from expiry.
        let old = installed(NOW);
        let rotated = renew(NOW + 10, Some(&old), Renewal::Authority, &names()).unwrap();
        assert_eq!(renewal(NOW + 20, Some(&rotated), &names()), Renewal::Keep);
        assert_eq!(
            renewal(NOW + 10 + CA_PUBLISH_GRACE, Some(&rotated), &names()),
            Renewal::Serving
        );
    }

    #[test]
    fn broken_stored_material_is_replaced() {
        let mut stored = installed(NOW);
        stored.tls_key = installed(NOW).tls_key;
        assert_eq!(
            renewal(NOW, Some(&stored), &names()),
            Renewal::Authority,
            "key does not match the certificate"
        );
        let mut stored = installed(NOW);
        stored.ca_cert = "garbage".to_owned();
        assert_eq!(renewal(NOW, Some(&stored), &names()), Renewal::Authority);
    }
}
