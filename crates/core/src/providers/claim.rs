//! What an identity source claims, value by value, as the identity policy
//! ([`crate::policy`]) checks it: every provider says what its injections claim.

use crate::echo::Echo;
use crate::providers::{aws, azure, gcp};

/// What an identity source claims, one value at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    /// An IAM role ARN; no value: EKS Pod Identity (the role comes from the EKS association).
    AwsRole,
    GcpServiceAccount,
    GcpProvider,
    /// An Azure client id; no value: one the Pod sets itself.
    AzureClientId,
    AzureTenantId,
}

impl Field {
    pub const ALL: [Field; 5] = [
        Field::AwsRole,
        Field::GcpServiceAccount,
        Field::GcpProvider,
        Field::AzureClientId,
        Field::AzureTenantId,
    ];

    pub fn cloud(self) -> &'static str {
        match self {
            Field::AwsRole => "aws",
            Field::GcpServiceAccount | Field::GcpProvider => "gcp",
            Field::AzureClientId | Field::AzureTenantId => "azure",
        }
    }

    /// What the value is, as messages say it.
    pub fn what(self) -> &'static str {
        match self {
            Field::AwsRole => "AWS role",
            Field::GcpServiceAccount => "Google service account",
            Field::GcpProvider => "Google workload identity provider",
            Field::AzureClientId => "Azure client id",
            Field::AzureTenantId => "Azure tenant",
        }
    }

    /// The ServiceAccount annotation keys that claim this field, every convention the webhook reads.
    pub fn annotation_keys(self) -> &'static [&'static str] {
        match self {
            Field::AwsRole => &[aws::ROLE_ARN],
            Field::GcpServiceAccount => &[gcp::GKE_SERVICE_ACCOUNT, gcp::SERVICE_ACCOUNT_EMAIL],
            Field::GcpProvider => &[gcp::WORKLOAD_IDENTITY_PROVIDER],
            Field::AzureClientId => &[azure::CLIENT_ID],
            Field::AzureTenantId => &[azure::TENANT_ID],
        }
    }

    /// The audit annotation key that records a value of this field.
    pub fn audit_key(self) -> &'static str {
        match self {
            Field::AwsRole => "aws-role-arn",
            Field::GcpServiceAccount => "gcp-service-account",
            Field::GcpProvider => "gcp-workload-identity-provider",
            Field::AzureClientId => "azure-client-id",
            Field::AzureTenantId => "azure-tenant-id",
        }
    }

    /// The field an annotation key claims, compared trimmed and in lowercase: a key only in
    /// another spelling is read by nothing, but is held to the policy all the same.
    pub fn of_annotation(key: &str) -> Option<Field> {
        let key = key.trim().to_ascii_lowercase();
        Field::ALL
            .into_iter()
            .find(|field| field.annotation_keys().contains(&key.as_str()))
    }
}

/// One identity value claimed by a source, trimmed (`None`: chosen outside the webhook, see
/// [`Field`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub field: Field,
    pub value: Option<String>,
}

impl Claim {
    pub fn new(field: Field, value: Option<&str>) -> Claim {
        Claim {
            field,
            value: value.map(|value| value.trim().to_owned()),
        }
    }

    pub fn describe(&self) -> String {
        match (self.field, &self.value) {
            (field, Some(value)) => format!("{} {}", field.what(), Echo(value)),
            (Field::AwsRole, None) => "EKS Pod Identity".to_owned(),
            (Field::AzureClientId, None) => "an Azure client id set by the Pod".to_owned(),
            (field, None) => field.what().to_owned(),
        }
    }
}

/// A value as the policy compares it: trimmed, ASCII lowercase.
pub fn normalize(value: &str) -> String {
    value.trim().to_ascii_lowercase()
}
