//! AWS's formats: role ARNs, account ids, partitions, regions, the Pod Identity agent URI, and
//! booleans as the AWS webhook reads them, and the region in an EKS cluster's issuer.

use crate::validate::{is_https_endpoint_url, url_host};

/// `arn:<partition>:iam::<12-digit account>:role/<path/name>`.
pub fn is_role_arn(value: &str) -> bool {
    let Some(rest) = value.strip_prefix("arn:") else {
        return false;
    };
    let Some((partition, rest)) = rest.split_once(':') else {
        return false;
    };
    let Some(rest) = rest.strip_prefix("iam::") else {
        return false;
    };
    let Some((account, role)) = rest.split_once(':') else {
        return false;
    };
    let Some(role_path) = role.strip_prefix("role/") else {
        return false;
    };
    is_aws_partition(partition)
        && is_aws_account_id(account)
        && (1..=512).contains(&role_path.len())
        && !role_path.ends_with('/')
        && role_path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b))
}

/// An AWS account id: 12 digits.
pub fn is_aws_account_id(value: &str) -> bool {
    value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit())
}

/// An AWS partition such as `aws`, `aws-cn` or `aws-us-gov`.
pub fn is_aws_partition(value: &str) -> bool {
    value.len() <= 32 && value.starts_with("aws") && value.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
}

/// An AWS region name such as `us-west-2` or `us-gov-east-1`.
pub fn is_aws_region(value: &str) -> bool {
    (4..=32).contains(&value.len())
        && value.contains('-')
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The EKS Pod Identity agent URI: an https endpoint URL, or http only to a host that the SDKs
/// accept plain http for (botocore and aws-sdk-go-v2 both refuse any other): localhost, a loopback
/// IP, the ECS agent's 169.254.170.2 or the EKS agent's 169.254.170.23 and fd00:ec2::23.
pub fn is_agent_url(value: &str) -> bool {
    let Some(rest) = value.strip_prefix("http://") else {
        return is_https_endpoint_url(value);
    };
    let host = url_host(rest.split('/').next().unwrap_or_default());
    is_https_endpoint_url(&format!("https://{rest}")) && host.is_some_and(|host| is_agent_host(&host))
}

fn is_agent_host(host: &str) -> bool {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            ip.is_loopback()
                || ["169.254.170.2", "169.254.170.23", "fd00:ec2::23"]
                    .iter()
                    .any(|agent| agent.parse() == Ok(ip))
        }
        Err(_) => host == "localhost",
    }
}

/// A boolean as Go's `strconv.ParseBool` reads it, which is what the AWS webhook accepts.
pub fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The AWS partitions as the SDKs' endpoint rules (partitions.json) describe them: the prefixes of
/// their region names, and the DNS suffix of their hosts, IPv4 and dual-stack. Longer prefixes
/// first, so that `us-gov-`, `us-iso-`... are not taken for `us-`.
const PARTITIONS: &[(&[&str], &str, &str)] = &[
    (&["us-gov-"], "amazonaws.com", "api.aws"),
    (&["us-isob-"], "sc2s.sgov.gov", "api.aws.scloud"),
    (&["us-isof-"], "csp.hci.ic.gov", "api.aws.hci.ic.gov"),
    (&["us-iso-"], "c2s.ic.gov", "api.aws.ic.gov"),
    (&["eu-isoe-"], "cloud.adc-e.uk", "api.cloud-aws.adc-e.uk"),
    (&["eusc-de-"], "amazonaws.eu", "api.amazonwebservices.eu"),
    (&["cn-"], "amazonaws.com.cn", "api.amazonwebservices.com.cn"),
    (
        &["af-", "ap-", "ca-", "eu-", "il-", "me-", "mx-", "sa-", "us-"],
        "amazonaws.com",
        "api.aws",
    ),
];

/// The region of an EKS cluster's service-account issuer, `https://oidc.eks.<region>.<suffix>/id/<ID>`
/// or, dual-stack, `https://oidc-eks.<region>.<dual-stack suffix>/id/<ID>`, where the suffix is the
/// DNS suffix of the region's own partition (`amazonaws.com`, `amazonaws.com.cn`, `api.aws`, ...).
/// The host compares without case and without a final dot. None for every other issuer.
pub fn eks_issuer_region(issuer: &str) -> Option<String> {
    let (host, path) = issuer.strip_prefix("https://")?.split_once('/')?;
    let id = path.strip_prefix("id/")?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let host = host.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host);
    let (dual_stack, rest) = match (host.strip_prefix("oidc.eks."), host.strip_prefix("oidc-eks.")) {
        (Some(rest), _) => (false, rest),
        (None, Some(rest)) => (true, rest),
        (None, None) => return None,
    };
    let (region, suffix) = rest.split_once('.')?;
    let numbered = region
        .rsplit_once('-')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let (_, dns, dual) = PARTITIONS
        .iter()
        .find(|(prefixes, _, _)| prefixes.iter().any(|prefix| region.starts_with(prefix)))?;
    let expected = if dual_stack { dual } else { dns };
    (numbered && is_aws_region(region) && suffix == *expected).then(|| region.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns() {
        assert!(is_role_arn("arn:aws:iam::111122223333:role/s3-reader"));
        assert!(is_role_arn("arn:aws-cn:iam::111122223333:role/path/to/Role_1+=,.@-"));
        assert!(is_role_arn("arn:aws-us-gov:iam::111122223333:role/x"));
        for bad in [
            "",
            "arn:aws:iam::11112222333:role/short-account",
            "arn:aws:iam::111122223333:user/not-a-role",
            "arn:aws:iam::111122223333:role/",
            "arn:aws:iam::111122223333:role/a\"b",
            "arn:aws:iam::111122223333:role/a b",
            "arn:gcp:iam::111122223333:role/x",
            "arn:aws:s3::111122223333:role/x",
            "arn:aws:iam::111122223333:role/x/",
        ] {
            assert!(!is_role_arn(bad), "{bad:?} must be refused");
        }
    }

    #[test]
    fn regions() {
        assert!(is_aws_region("us-west-2"));
        assert!(!is_aws_region("US-WEST-2"));
        assert!(!is_aws_region("uswest"));
    }

    #[test]
    fn agent_urls() {
        for good in [
            "http://[fd00:ec2::23]/v1/credentials",
            "http://169.254.170.23/v1/credentials",
            "http://169.254.170.2/v2/credentials",
            "http://127.0.0.1:2703/v1/credentials",
            "http://localhost:2703/v1/credentials",
            "https://emulator.wiw-system.svc:8443/v1/credentials",
            "https://agent.example.com/v1/credentials",
        ] {
            assert!(is_agent_url(good), "{good:?} must be accepted");
        }
        for bad in [
            "http://[fd00:ec2::23]/v1/credentials?x",
            "http://[fd00:ec2::24]/v1/credentials",
            "http://169.254.170.24/v1/credentials",
            "http://emulator.wiw-system.svc:8080/v1/credentials",
            "http://agent.example.com/v1/credentials",
            "http://user@127.0.0.1/v1/credentials",
            "ftp://127.0.0.1/v1/credentials",
        ] {
            assert!(!is_agent_url(bad), "{bad:?} must be refused");
        }
    }

    #[test]
    fn the_region_of_an_eks_issuer_in_every_partition() {
        let id = "EXAMPLED539D4633E53DE1B71EXAMPLE";
        for (host, region) in [
            ("oidc.eks.us-west-2.amazonaws.com", "us-west-2"),
            ("oidc.eks.eu-central-1.amazonaws.com", "eu-central-1"),
            ("oidc.eks.ap-southeast-4.amazonaws.com", "ap-southeast-4"),
            ("oidc.eks.il-central-1.amazonaws.com", "il-central-1"),
            ("oidc.eks.mx-central-1.amazonaws.com", "mx-central-1"),
            ("oidc.eks.us-gov-west-1.amazonaws.com", "us-gov-west-1"),
            ("oidc.eks.cn-north-1.amazonaws.com.cn", "cn-north-1"),
            ("oidc.eks.cn-northwest-1.amazonaws.com.cn", "cn-northwest-1"),
            ("oidc.eks.eusc-de-east-1.amazonaws.eu", "eusc-de-east-1"),
            ("oidc.eks.us-iso-east-1.c2s.ic.gov", "us-iso-east-1"),
            ("oidc.eks.us-isob-east-1.sc2s.sgov.gov", "us-isob-east-1"),
            ("oidc.eks.eu-isoe-west-1.cloud.adc-e.uk", "eu-isoe-west-1"),
            ("oidc.eks.us-isof-south-1.csp.hci.ic.gov", "us-isof-south-1"),
            // Dual-stack issuers.
            ("oidc-eks.us-west-2.api.aws", "us-west-2"),
            ("oidc-eks.us-gov-east-1.api.aws", "us-gov-east-1"),
            ("oidc-eks.cn-north-1.api.amazonwebservices.com.cn", "cn-north-1"),
            ("oidc-eks.eusc-de-east-1.api.amazonwebservices.eu", "eusc-de-east-1"),
            ("oidc-eks.us-iso-east-1.api.aws.ic.gov", "us-iso-east-1"),
            ("oidc-eks.us-isob-east-1.api.aws.scloud", "us-isob-east-1"),
            ("oidc-eks.eu-isoe-west-1.api.cloud-aws.adc-e.uk", "eu-isoe-west-1"),
            ("oidc-eks.us-isof-south-1.api.aws.hci.ic.gov", "us-isof-south-1"),
            // Host names have no case, and may end with the root's dot.
            ("OIDC.EKS.US-WEST-2.AMAZONAWS.COM", "us-west-2"),
            ("oidc.eks.us-west-2.amazonaws.com.", "us-west-2"),
        ] {
            assert_eq!(
                eks_issuer_region(&format!("https://{host}/id/{id}")).as_deref(),
                Some(region),
                "{host}"
            );
        }
        for issuer in [
            // Not EKS: the test apiserver's, a self-hosted S3 issuer, AKS, GKE.
            "https://kubernetes.default.svc.cluster.local".to_owned(),
            "https://my-bucket.s3.us-west-2.amazonaws.com".to_owned(),
            "https://eastus.oic.prod-aks.azure.com/11111111-2222-3333-4444-555555555555/66666666-7777/".to_owned(),
            "https://container.googleapis.com/v1/projects/p/locations/us-central1/clusters/c".to_owned(),
            // EKS's shape, but wrong in one part.
            format!("http://oidc.eks.us-west-2.amazonaws.com/id/{id}"),
            format!("https://oidc.eks.us-west-2.amazonaws.com/{id}"),
            format!("https://oidc.eks.us-west-2.amazonaws.com/id/{id}/"),
            "https://oidc.eks.us-west-2.amazonaws.com/id/".to_owned(),
            "https://oidc.eks.us-west-2.amazonaws.com".to_owned(),
            format!("https://oidc.eks.us-west-2.amazonaws.com:443/id/{id}"),
            format!("https://oidc.eks.amazonaws.com/id/{id}"),
            format!("https://oidc.eks.us-west.amazonaws.com/id/{id}"),
            format!("https://oidc.eks.us-west-2a.amazonaws.com/id/{id}"),
            format!("https://oidc.eks.xx-west-2.amazonaws.com/id/{id}"),
            format!("https://eks.us-west-2.amazonaws.com/id/{id}"),
            format!("https://oidc.eks.us-west-2.example.amazonaws.com/id/{id}"),
            format!("https://oidc.eks.us-west-2.amazonaws.com.example.com/id/{id}"),
            format!("https://oidc-eks.us-west-2.api.aws.example.com/id/{id}"),
            // A region with another partition's suffix, or the other stack's suffix.
            format!("https://oidc.eks.cn-north-1.amazonaws.com/id/{id}"),
            format!("https://oidc.eks.us-west-2.amazonaws.com.cn/id/{id}"),
            format!("https://oidc.eks.us-iso-east-1.amazonaws.com/id/{id}"),
            format!("https://oidc.eks.us-west-2.api.aws/id/{id}"),
            format!("https://oidc-eks.us-west-2.amazonaws.com/id/{id}"),
            // Not a plain id, and not text a region could come from.
            format!("https://oidc.eks.us-west-2.amazonaws.com/id/{id}?x=1"),
            "https://oidc.eks.us-west-2.amazonaws.com/id/EX AMPLE".to_owned(),
            "https://oidc.eks.ünïcode-1.amazonaws.com/id/X".to_owned(),
            String::new(),
            "oidc.eks.us-west-2.amazonaws.com/id/X".to_owned(),
        ] {
            assert_eq!(eks_issuer_region(&issuer), None, "{issuer}");
        }
    }
}
