//! AWS's formats: role ARNs, account ids, partitions, regions, the Pod Identity agent URI, and
//! booleans as the AWS webhook reads them.

use crate::validate::{is_endpoint_url, url_host};

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
        return value.starts_with("https://") && is_endpoint_url(value);
    };
    let host = url_host(rest.split('/').next().unwrap_or_default());
    is_endpoint_url(&format!("https://{rest}")) && host.is_some_and(|host| is_agent_host(&host))
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
}
