//! Azure: Microsoft Entra Workload ID, injected as the Azure Workload Identity webhook does.

use serde::Deserialize;

use super::{
    CloudProvider, ENDPOINT_URL, Mapping, PodContext, PodInjection, Settings as AllSettings, check_expiration,
    check_field, checked, cloud_settings, parse_name, projected_volume, token_source,
};
use crate::core::validate;

pub const CLIENT_ID: &str = "azure.workload.identity/client-id";
pub const TENANT_ID: &str = "azure.workload.identity/tenant-id";
pub const TOKEN_EXPIRATION: &str = "azure.workload.identity/service-account-token-expiration";
/// The generic `<cloud key>/token-expiration` spelling, accepted on Pods beside Azure's own.
pub const POD_TOKEN_EXPIRATION: &str = "azure.workload.identity/token-expiration";
pub const SKIP_CONTAINERS: &str = "azure.workload.identity/skip-containers";
/// Pod label: `"false"` opts out; with `requirePodLabel` only `"true"` opts in.
pub const USE_LABEL: &str = "azure.workload.identity/use";

const VOLUME: &str = "azure-identity-token";
const MOUNT: &str = "/var/run/secrets/azure/tokens";
const TOKEN_FILE: &str = "/var/run/secrets/azure/tokens/azure-identity-token";
const AUDIENCE: &str = "api://AzureADTokenExchange";
const DEFAULT_EXPIRATION: i64 = 3600;
/// The range the Azure webhook accepts for token lifetimes.
const EXPIRATION_RANGE: std::ops::RangeInclusive<i64> = 3600..=86400;

cloud_settings! {
    /// `azure:` at the top of `config.yaml`, and the `--azure-*` flags.
    #[group(id = "azure")]
    pub struct Settings {
        /// Azure tenant id used when neither the ServiceAccount nor the mapping names one.
        #[arg(id = "azure_tenant_id", value_name = "AZURE_TENANT_ID", long = "azure-tenant-id", env = "WIW_AZURE_TENANT_ID")]
        pub tenant_id: Option<String>,
        /// Azure cloud: AzurePublicCloud, AzureChinaCloud or AzureUSGovernmentCloud.
        #[arg(id = "azure_cloud", value_name = "AZURE_CLOUD", long = "azure-cloud", env = "WIW_AZURE_CLOUD", value_parser = parse_name::<Cloud>)]
        pub cloud: Option<Cloud>,
        /// Entra ID authority host (AZURE_AUTHORITY_HOST) over the one azure.cloud implies, e.g. a local emulator: an https URL, or http to a cluster-local host.
        #[arg(id = "azure_authority_host", value_name = "AZURE_AUTHORITY_HOST", long = "azure-authority-host", env = "WIW_AZURE_AUTHORITY_HOST")]
        pub authority_host: Option<String>,
        /// Lifetime of Azure tokens in seconds (3600..86400, default 3600).
        #[arg(id = "azure_token_expiration", value_name = "AZURE_TOKEN_EXPIRATION", long = "azure-token-expiration", env = "WIW_AZURE_TOKEN_EXPIRATION")]
        pub token_expiration_seconds: Option<i64>,
        /// Inject Azure only into Pods labelled azure.workload.identity/use: "true".
        #[arg(id = "azure_require_pod_label", value_name = "AZURE_REQUIRE_POD_LABEL", long = "azure-require-pod-label", env = "WIW_AZURE_REQUIRE_POD_LABEL")]
        pub require_pod_label: Option<bool>,
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Cloud {
    #[default]
    AzurePublicCloud,
    AzureChinaCloud,
    AzureUSGovernmentCloud,
}

impl Cloud {
    fn authority_host(self) -> &'static str {
        match self {
            Cloud::AzurePublicCloud => "https://login.microsoftonline.com/",
            Cloud::AzureChinaCloud => "https://login.chinacloudapi.cn/",
            Cloud::AzureUSGovernmentCloud => "https://login.microsoftonline.us/",
        }
    }
}

/// `azure:` in an `identities` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MappedIdentity {
    pub client_id: Option<String>,
    pub tenant_id: Option<String>,
    /// Authority host for this mapping's Pods, over `azure.authorityHost`.
    pub authority_host: Option<String>,
}

pub struct Azure;

impl CloudProvider for Azure {
    fn name(&self) -> &'static str {
        "azure"
    }

    fn validate(&self, settings: &AllSettings, identities: &[Mapping]) -> Vec<String> {
        let mut problems = Vec::new();
        check_field(
            &mut problems,
            "azure.tenantId",
            settings.azure.tenant_id.as_deref(),
            validate::is_uuid,
            "UUID",
        );
        check_field(
            &mut problems,
            "azure.authorityHost",
            settings.azure.authority_host.as_deref(),
            validate::is_endpoint_url,
            ENDPOINT_URL,
        );
        check_expiration(
            &mut problems,
            "azure.tokenExpirationSeconds",
            settings.azure.token_expiration_seconds,
            EXPIRATION_RANGE,
        );
        for (i, mapping) in identities.iter().enumerate() {
            if let Some(azure) = &mapping.azure {
                let field = |name: &str| format!("identities[{i}].azure.{name}");
                check_field(
                    &mut problems,
                    &field("clientId"),
                    azure.client_id.as_deref(),
                    validate::is_uuid,
                    "UUID",
                );
                check_field(
                    &mut problems,
                    &field("tenantId"),
                    azure.tenant_id.as_deref(),
                    validate::is_uuid,
                    "UUID",
                );
                check_field(
                    &mut problems,
                    &field("authorityHost"),
                    azure.authority_host.as_deref(),
                    validate::is_endpoint_url,
                    ENDPOINT_URL,
                );
            }
        }
        problems
    }

    fn pod_injection(&self, ctx: &PodContext<'_>, warnings: &mut Vec<String>) -> Option<PodInjection> {
        let settings = &ctx.settings.azure;
        let label = ctx.pod_label(USE_LABEL);
        if label == Some("false") || (settings.require_pod_label.unwrap_or(false) && label != Some("true")) {
            return None;
        }
        let mapped = ctx.mapping.and_then(|mapping| mapping.azure.as_ref());
        let annotated_client = ctx.service_account_annotation(CLIENT_ID);
        let client_id = checked(
            CLIENT_ID,
            annotated_client,
            validate::is_uuid,
            "client id (UUID)",
            warnings,
        )
        .or_else(|| mapped?.client_id.as_deref());
        // As with the Azure webhook, the `use: "true"` label asks for injection even without a client id.
        let meant = annotated_client.is_some() || mapped.is_some() || label == Some("true");
        if !meant || (annotated_client.is_some() && client_id.is_none() && mapped.is_none()) {
            return None;
        }
        let tenant_id = checked(
            TENANT_ID,
            ctx.service_account_annotation(TENANT_ID),
            validate::is_uuid,
            "tenant id (UUID)",
            warnings,
        )
        .or_else(|| mapped?.tenant_id.as_deref())
        .or(settings.tenant_id.as_deref());
        let Some(tenant_id) = tenant_id else {
            warnings.push(format!(
                "no Azure tenant id is configured (cluster setting azure.tenantId or annotation {TENANT_ID}); no Azure credentials injected"
            ));
            return None;
        };
        let expiration = ctx.token_expiration(
            TOKEN_EXPIRATION,
            &[TOKEN_EXPIRATION, POD_TOKEN_EXPIRATION],
            settings.token_expiration_seconds.unwrap_or(DEFAULT_EXPIRATION),
            EXPIRATION_RANGE,
            warnings,
        );
        let mut env = Vec::new();
        if let Some(client_id) = client_id {
            env.push(vec![("AZURE_CLIENT_ID", client_id.to_owned())]);
        }
        env.push(vec![("AZURE_TENANT_ID", tenant_id.to_owned())]);
        env.push(vec![("AZURE_FEDERATED_TOKEN_FILE", TOKEN_FILE.to_owned())]);
        let authority = ctx.endpoint(
            "azure.authorityHost",
            mapped.and_then(|azure| azure.authority_host.as_deref()),
            settings.authority_host.as_deref(),
            "AZURE_AUTHORITY_HOST",
            true,
        );
        let authority_host = authority.as_ref().map_or_else(
            || settings.cloud.unwrap_or_default().authority_host(),
            |authority| authority.url.as_str(),
        );
        env.push(vec![("AZURE_AUTHORITY_HOST", authority_host.to_owned())]);
        Some(PodInjection {
            cloud: self.name(),
            identity: client_id.unwrap_or("(client id set by the Pod)").to_owned(),
            volume_name: VOLUME,
            volume: projected_volume(VOLUME, vec![token_source(AUDIENCE, expiration, VOLUME)]),
            mount_path: MOUNT,
            env,
            skip_containers: ctx.skip_list(SKIP_CONTAINERS, ';'),
            gaps: Vec::new(),
            scratch: None,
            pod_annotations: Vec::new(),
            endpoints: authority.into_iter().collect(),
        })
    }

    fn annotation_prefixes(&self) -> &'static [&'static str] {
        &["azure.workload.identity/"]
    }

    fn service_account_annotation_keys(&self) -> &'static [&'static str] {
        &[CLIENT_ID, TENANT_ID]
    }

    fn service_account_annotations(&self, mapping: &Mapping) -> Vec<(&'static str, String)> {
        let Some(azure) = &mapping.azure else {
            return Vec::new();
        };
        [(CLIENT_ID, &azure.client_id), (TENANT_ID, &azure.tenant_id)]
            .into_iter()
            .filter_map(|(key, value)| Some((key, value.clone()?)))
            .collect()
    }
}
