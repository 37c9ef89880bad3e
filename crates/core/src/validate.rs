//! Validation of identity values before they can reach a Pod spec.
//!
//! Every value that comes from an annotation or the ConfigMap passes one of these checks, so no
//! annotation can smuggle extra JSON, env vars or paths into a Pod. The checks are strict on purpose:
//! a value that fails is reported as a warning to the user who wrote it.

/// A UUID in its canonical 8-4-4-4-12 hex form (Azure client and tenant ids).
pub fn is_uuid(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A token audience: printable ASCII without quotes or whitespace.
pub fn is_audience(value: &str) -> bool {
    (1..=256).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// An `http://` or `https://` URL with a host (IPv6 hosts in brackets), printable ASCII without
/// quotes or whitespace; the endpoint checks below narrow it.
pub fn is_http_url(value: &str) -> bool {
    let Some(rest) = value.strip_prefix("http://").or_else(|| value.strip_prefix("https://")) else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_ok = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').is_some_and(|(ip, port)| {
            ip.parse::<std::net::Ipv6Addr>().is_ok() && (port.is_empty() || port.starts_with(':'))
        }),
        None => !authority.is_empty() && !authority.starts_with(':'),
    };
    host_ok && value.len() <= 2048 && value.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// The name part of a Kubernetes label or annotation key: 1..63 characters, alphanumerics with
/// `-`, `_` or `.` inside.
pub fn is_qualified_name(value: &str) -> bool {
    let bytes = value.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A DNS-1123 subdomain (Kubernetes object names, TLS server names): lower-case labels of
/// alphanumerics and `-`, joined by dots, 253 characters at most.
pub fn is_dns_name(value: &str) -> bool {
    value.len() <= 253
        && value.split('.').all(|label| {
            let bytes = label.as_bytes();
            (1..=63).contains(&bytes.len())
                && bytes[0].is_ascii_alphanumeric()
                && bytes[bytes.len() - 1].is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        })
}

/// PEM text holding at least one certificate.
pub fn is_pem_certificate(value: &str) -> bool {
    value.contains("-----BEGIN CERTIFICATE-----") && value.contains("-----END CERTIFICATE-----")
}

/// The DNS domain of Service names when `clusterDomain` is not set (the kubelet's default).
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// An endpoint override (STS, token URL, token proxy ...): an `https://` URL, or `http://` only to
/// a cluster-local host (a Service name ending in `.svc` or `.svc.<cluster_domain>`, `localhost`, a
/// loopback or link-local IP), since plain http elsewhere would carry tokens and credentials in the
/// clear. No user info, query or fragment: SDKs append paths and parameters to it.
pub fn is_endpoint_url(value: &str, cluster_domain: &str) -> bool {
    endpoint_url_parts(value).is_some_and(|(scheme, host)| match scheme {
        "https" => true,
        "http" => is_cluster_local_host(&host, cluster_domain),
        _ => false,
    })
}

/// An `https://` endpoint URL: the Entra ID authority host, which azure-identity and azidentity
/// take only over TLS; the Pod Identity agent's.
pub fn is_https_endpoint_url(value: &str) -> bool {
    endpoint_url_parts(value).is_some_and(|(scheme, _)| scheme == "https")
}

/// The scheme and host of an endpoint URL ([`is_http_url`], no user info, query or fragment).
fn endpoint_url_parts(value: &str) -> Option<(&str, String)> {
    let (scheme, rest) = value.split_once("://")?;
    let authority = rest.split('/').next().unwrap_or_default();
    if !is_http_url(value) || value.contains(['?', '#']) || authority.contains('@') {
        return None;
    }
    Some((scheme, url_host(authority)?))
}

/// The host of a URL authority (`host`, `host:port`, `[v6]:port`), lower-cased; `None` if empty.
pub(crate) fn url_host(authority: &str) -> Option<String> {
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.0,
        None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Loopback and link-local IPs, `localhost`, and Service names: `*.svc` and `*.svc.<domain>`. A
/// host that merely contains `.svc.` (`sts.svc.attacker.example`) is anyone's DNS name.
fn is_cluster_local_host(host: &str, cluster_domain: &str) -> bool {
    let host = host.trim_end_matches('.');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return match ip {
            std::net::IpAddr::V4(ip) => ip.is_loopback() || ip.is_link_local(),
            std::net::IpAddr::V6(ip) => ip.is_loopback() || (ip.segments()[0] & 0xffc0) == 0xfe80,
        };
    }
    let domain = cluster_domain.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host.ends_with(".svc")
        || host
            .strip_suffix(domain.as_str())
            .is_some_and(|service| service.ends_with(".svc."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_names_dns_names_and_pem() {
        assert!(is_qualified_name("use-identity-binding"));
        assert!(is_qualified_name("use-A_b.c"));
        for bad in ["", "use-", "-use", "use/x", &"a".repeat(64)] {
            assert!(!is_qualified_name(bad), "{bad:?}");
        }
        assert!(is_dns_name("ib.aks.example"));
        assert!(is_dns_name("ca-bundle"));
        for bad in [
            "",
            "Bad",
            "a..b",
            "a_b",
            "-a",
            "a.",
            &"a".repeat(64),
            &["a"; 130].join("."),
        ] {
            assert!(!is_dns_name(bad), "{bad:?}");
        }
        assert!(is_pem_certificate(
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        ));
        assert!(!is_pem_certificate("MIIB"));
    }

    #[test]
    fn uuids() {
        assert!(is_uuid("00000000-1111-2222-3333-444444444444"));
        assert!(is_uuid("ABCDEF00-1111-2222-3333-abcdefabcdef"));
        for bad in [
            "",
            "0000-1111",
            "00000000-1111-2222-3333-44444444444g",
            "00000000-1111-2222-3333-4444444444444",
        ] {
            assert!(!is_uuid(bad), "{bad:?} must be refused");
        }
    }

    #[test]
    fn audiences() {
        assert!(is_audience("sts.amazonaws.com"));
        assert!(is_audience("https://iam.googleapis.com/projects/1/x"));
        assert!(!is_audience("a b"));
        assert!(!is_audience("a\"b"));
        assert!(!is_audience(""));
    }

    #[test]
    fn http_urls() {
        assert!(is_http_url("http://169.254.170.23/v1/credentials"));
        assert!(is_http_url("http://[fd00:ec2::23]/v1/credentials"));
        assert!(is_http_url("https://agent.local:8443/creds"));
        assert!(!is_http_url("169.254.170.23/v1/credentials"));
        assert!(!is_http_url("file:///etc/passwd"));
        assert!(!is_http_url("http:///v1/credentials"));
        assert!(!is_http_url("http://[fd00:ec2::zz]/v1"));
        assert!(!is_http_url("http://a b/"));
    }

    #[test]
    fn endpoint_urls() {
        for good in [
            "https://sts.example.com",
            "https://sts.example.com:8443/",
            "https://[2001:db8::1]:443/path",
            "http://emulator.wiw-system.svc",
            "http://emulator.wiw-system.svc:8080/",
            "http://emulator.wiw-system.svc.cluster.local/",
            "http://localhost:4566",
            "http://127.0.0.1:4566",
            "http://[::1]:4566",
            "http://169.254.170.23/v1/credentials",
            "http://[fe80::1]/",
        ] {
            assert!(
                is_endpoint_url(good, DEFAULT_CLUSTER_DOMAIN),
                "{good:?} must be accepted"
            );
        }
        for bad in [
            "",
            "sts.example.com",
            "ftp://sts.example.com",
            "http://sts.example.com",
            "http://10.0.0.1/",
            "http://svc.example.com/",
            "http://emulator.svcx/",
            "http://sts.svc.attacker.example/",
            "http://sts.svc.cluster.local.attacker.example/",
            "http://[fd00:ec2::23]/v1/credentials",
            "https://user:secret@sts.example.com/",
            "https://sts.example.com/?x=1",
            "https://sts.example.com/#x",
            "https://:443/",
            "https:///path",
            "https://a b/",
        ] {
            assert!(!is_endpoint_url(bad, DEFAULT_CLUSTER_DOMAIN), "{bad:?} must be refused");
        }
        // Another cluster domain: its Service names, not the default's, nor look-alikes.
        for (url, accepted) in [
            ("http://emulator.wiw-system.svc.corp.example", true),
            ("http://emulator.wiw-system.svc.Corp.Example.:8080/", true),
            ("http://emulator.wiw-system.svc", true),
            ("http://emulator.wiw-system.svc.cluster.local", false),
            ("http://sts.svc.attacker.example", false),
            ("http://sts.svc.xcorp.example", false),
            ("http://svc.corp.example", false),
            ("http://corp.example", false),
        ] {
            assert_eq!(is_endpoint_url(url, "corp.example"), accepted, "{url}");
        }
        assert!(is_https_endpoint_url("https://emulator.wiw-system.svc:8443"));
        assert!(!is_https_endpoint_url("http://emulator.wiw-system.svc:8443"));
        assert!(!is_https_endpoint_url("https://emulator.wiw-system.svc:8443/?x"));
    }
}
