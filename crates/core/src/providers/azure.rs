//! Azure: Microsoft Entra Workload ID, injected as the Azure Workload Identity webhook does.

use serde::Deserialize;

use super::claim::{Claim, Field};
use super::{
    Annotation, CloudProvider, ENDPOINT_URL, EndpointOverride, HTTPS_URL, Mapping, PodContext, PodInjection,
    Settings as AllSettings, check_expiration, check_field, checked, cloud_settings, projected_volume, token_source,
};
use crate::echo::Echo;
use crate::validate;

pub const CLIENT_ID: &str = "azure.workload.identity/client-id";
pub const TENANT_ID: &str = "azure.workload.identity/tenant-id";
pub const TOKEN_EXPIRATION: &str = "azure.workload.identity/service-account-token-expiration";
/// The generic `<cloud key>/token-expiration` spelling, accepted on Pods beside Azure's own.
pub const POD_TOKEN_EXPIRATION: &str = "azure.workload.identity/token-expiration";
pub const SKIP_CONTAINERS: &str = "azure.workload.identity/skip-containers";
/// Pod label: `"false"` opts out; with `requirePodLabel` only `"true"` opts in.
pub const USE_LABEL: &str = "azure.workload.identity/use";
/// Pod annotation `<prefix><suffix>: "true"` asks for the custom token endpoint (Azure WI v1.6.0,
/// `isUsingCustomTokenEndpoint`: an annotation, not a label).
pub const CUSTOM_ENDPOINT_PREFIX: &str = "azure.workload.identity/use-";

const VOLUME: &str = "azure-identity-token";
const MOUNT: &str = "/var/run/secrets/azure/tokens";
const TOKEN_FILE: &str = "/var/run/secrets/azure/tokens/azure-identity-token";
const AUDIENCE: &str = "api://AzureADTokenExchange";
/// Where the custom endpoint's CA goes in our volume, and the ConfigMap key it comes from (theirs).
const CA_PATH: &str = "ca-cert/ca.crt";
const CA_FILE: &str = "/var/run/secrets/azure/tokens/ca-cert/ca.crt";
const CA_KEY: &str = "ca.crt";
const DEFAULT_EXPIRATION: i64 = 3600;
/// The range the Azure webhook accepts for token lifetimes.
const EXPIRATION_RANGE: std::ops::RangeInclusive<i64> = 3600..=86400;

cloud_settings! {
    /// `azure:` at the top of `config.yaml`, and the `--azure-*` flags.
    #[cfg_attr(feature = "clap", group(id = "azure"), command(next_help_heading = "Azure"))]
    pub struct Settings {
        /// Azure tenant id used when neither the ServiceAccount nor the mapping names one.
        #[cfg_attr(feature = "clap", arg(id = "azure_tenant_id", value_name = "TENANT_ID", long = "azure-tenant-id", env = "WIW_AZURE_TENANT_ID"))]
        pub tenant_id: Option<String>,
        /// Azure cloud: AzurePublicCloud, AzureChinaCloud or AzureUSGovernmentCloud.
        #[cfg_attr(feature = "clap", arg(id = "azure_cloud", value_name = "CLOUD", long = "azure-cloud", env = "WIW_AZURE_CLOUD"))]
        pub cloud: Option<Cloud>,
        /// Entra ID authority host (AZURE_AUTHORITY_HOST) over the one azure.cloud implies, e.g. a local emulator: an https URL (the Azure SDKs refuse http).
        #[cfg_attr(feature = "clap", arg(id = "azure_authority_host", value_name = "URL", long = "azure-authority-host", env = "WIW_AZURE_AUTHORITY_HOST"))]
        pub authority_host: Option<String>,
        /// Lifetime of Azure tokens in seconds (3600..86400, default 3600).
        #[cfg_attr(feature = "clap", arg(id = "azure_token_expiration", value_name = "SECONDS", long = "azure-token-expiration", env = "WIW_AZURE_TOKEN_EXPIRATION"))]
        pub token_expiration_seconds: Option<i64>,
        /// Inject Azure only into Pods labelled azure.workload.identity/use: "true".
        #[cfg_attr(feature = "clap", arg(id = "azure_require_pod_label", value_name = "BOOL", long = "azure-require-pod-label", env = "WIW_AZURE_REQUIRE_POD_LABEL"))]
        pub require_pod_label: Option<bool>,
        // The custom token endpoint (AKS identity bindings, Azure WI v1.6.0), its chart's
        // `customTokenEndpoint` values.
        /// Custom token endpoint: Pods annotated azure.workload.identity/use-<suffix>: "true" use it (with customTokenEndpointAudience).
        #[cfg_attr(feature = "clap", arg(id = "azure_custom_token_endpoint_annotation_suffix", value_name = "SUFFIX", long = "azure-custom-token-endpoint-annotation-suffix", env = "WIW_AZURE_CUSTOM_TOKEN_ENDPOINT_ANNOTATION_SUFFIX"))]
        pub custom_token_endpoint_annotation_suffix: Option<String>,
        /// Custom token endpoint: audience of those Pods' tokens (not api://AzureADTokenExchange).
        #[cfg_attr(feature = "clap", arg(id = "azure_custom_token_endpoint_audience", value_name = "AUDIENCE", long = "azure-custom-token-endpoint-audience", env = "WIW_AZURE_CUSTOM_TOKEN_ENDPOINT_AUDIENCE"))]
        pub custom_token_endpoint_audience: Option<String>,
        /// Custom token endpoint: its URL, set as AZURE_KUBERNETES_TOKEN_PROXY.
        #[cfg_attr(feature = "clap", arg(id = "azure_kubernetes_token_proxy", value_name = "URL", long = "azure-kubernetes-token-proxy", env = "WIW_AZURE_KUBERNETES_TOKEN_PROXY"))]
        pub kubernetes_token_proxy: Option<String>,
        /// Custom token endpoint: TLS server name, set as AZURE_KUBERNETES_SNI_NAME.
        #[cfg_attr(feature = "clap", arg(id = "azure_kubernetes_sni_name", value_name = "HOSTNAME", long = "azure-kubernetes-sni-name", env = "WIW_AZURE_KUBERNETES_SNI_NAME"))]
        pub kubernetes_sni_name: Option<String>,
        /// Custom token endpoint: its CA (PEM), set as AZURE_KUBERNETES_CA_DATA (or use kubernetesCaConfigMapName).
        #[cfg_attr(feature = "clap", arg(id = "azure_kubernetes_ca_data", value_name = "PEM", long = "azure-kubernetes-ca-data", env = "WIW_AZURE_KUBERNETES_CA_DATA"))]
        pub kubernetes_ca_data: Option<String>,
        /// Custom token endpoint: a ConfigMap in the Pod's namespace whose key ca.crt is projected, AZURE_KUBERNETES_CA_FILE pointing at it.
        #[cfg_attr(feature = "clap", arg(id = "azure_kubernetes_ca_config_map_name", value_name = "CONFIGMAP", long = "azure-kubernetes-ca-configmap-name", env = "WIW_AZURE_KUBERNETES_CA_CONFIGMAP_NAME"))]
        pub kubernetes_ca_config_map_name: Option<String>,
    }
}

impl Settings {
    /// The custom endpoint's annotation key and audience, when both are set.
    fn custom_endpoint(&self) -> Option<(String, &str)> {
        let suffix = self.custom_token_endpoint_annotation_suffix.as_deref()?;
        let audience = self.custom_token_endpoint_audience.as_deref()?;
        Some((format!("{CUSTOM_ENDPOINT_PREFIX}{suffix}"), audience))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum), value(rename_all = "verbatim"))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MappedIdentity {
    /// Entra application or managed identity client id.
    pub client_id: Option<String>,
    /// Its tenant (default: `azure.tenantId`).
    pub tenant_id: Option<String>,
    /// Authority host for this mapping's Pods, over `azure.authorityHost`.
    pub authority_host: Option<String>,
}

/// The annotations of [`Azure::annotations`].
static ANNOTATIONS: &[Annotation] = &[
    Annotation {
        key: CLIENT_ID,
        on: "ServiceAccount",
        meaning: "Entra application or managed identity client id",
    },
    Annotation {
        key: TENANT_ID,
        on: "ServiceAccount",
        meaning: "tenant (default: the mapping's azure.tenantId, then the cluster's)",
    },
    Annotation {
        key: TOKEN_EXPIRATION,
        on: "ServiceAccount, Pod",
        meaning: "token lifetime in seconds, 3600..86400 (on a Pod: shorter only)",
    },
    Annotation {
        key: POD_TOKEN_EXPIRATION,
        on: "Pod",
        meaning: "token lifetime in seconds, as the one above (shorter only)",
    },
    Annotation {
        key: SKIP_CONTAINERS,
        on: "Pod",
        meaning: "containers left without the Azure identity, semicolon separated",
    },
    Annotation {
        key: USE_LABEL,
        on: "Pod (label)",
        meaning: "\"false\" opts the Pod out of Azure; with azure.requirePodLabel only \"true\" opts in",
    },
    Annotation {
        key: "azure.workload.identity/use-<suffix>",
        on: "Pod",
        meaning: "\"true\" (any case): the custom token endpoint, when <suffix> is azure.customTokenEndpointAnnotationSuffix (other suffixes, or no endpoint configured: a warning, the default endpoint)",
    },
];

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
            validate::is_https_endpoint_url,
            HTTPS_URL,
        );
        check_expiration(
            &mut problems,
            "azure.tokenExpirationSeconds",
            settings.azure.token_expiration_seconds,
            EXPIRATION_RANGE,
        );
        validate_custom_endpoint(&settings.azure, settings.cluster_domain(), &mut problems);
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
                    validate::is_https_endpoint_url,
                    HTTPS_URL,
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
        let (client_id, tenant_id) = identity(ctx, label, mapped, warnings)?;
        let custom = custom_endpoint(ctx, warnings);
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
        let mut endpoints: Vec<EndpointOverride> = authority_host(ctx, mapped, &mut env).into_iter().collect();
        let mut sources = vec![token_source(custom.unwrap_or(AUDIENCE), expiration, VOLUME)];
        let mut gaps = Vec::new();
        if custom.is_some() {
            sources.extend(custom_endpoint_files(settings, &mut env, &mut gaps));
            endpoints.extend(ctx.endpoint(
                "azure.kubernetesTokenProxy",
                None,
                settings.kubernetes_token_proxy.as_deref(),
                "AZURE_KUBERNETES_TOKEN_PROXY",
                true,
            ));
        }
        Some(PodInjection {
            cloud: self.name(),
            identity: client_id.unwrap_or("(client id set by the Pod)").to_owned(),
            volume_name: VOLUME,
            volume: projected_volume(VOLUME, sources),
            mount_path: MOUNT,
            env,
            skip_containers: ctx.skip_list(SKIP_CONTAINERS, ';'),
            gaps,
            scratch: None,
            pod_annotations: Vec::new(),
            endpoints,
            claims: vec![
                Claim::new(Field::AzureClientId, client_id),
                Claim::new(Field::AzureTenantId, Some(tenant_id)),
            ],
        })
    }

    fn annotation_prefixes(&self) -> &'static [&'static str] {
        &["azure.workload.identity/"]
    }

    fn notices(&self, settings: &AllSettings, _identities: &[Mapping]) -> Vec<String> {
        let settings = &settings.azure;
        let endpoint_values = [
            ("kubernetesTokenProxy", &settings.kubernetes_token_proxy),
            ("kubernetesSniName", &settings.kubernetes_sni_name),
            ("kubernetesCaData", &settings.kubernetes_ca_data),
            ("kubernetesCaConfigMapName", &settings.kubernetes_ca_config_map_name),
        ];
        match settings.custom_endpoint() {
            Some((key, _)) if settings.kubernetes_token_proxy.is_none() => vec![format!(
                "azure.kubernetesTokenProxy is not set: Pods annotated {key}: \"true\" get the custom endpoint's token but no AZURE_KUBERNETES_TOKEN_PROXY (each is warned about and counted in workload_identity_webhook_pod_mutations_missing_total{{setting=\"azure_kubernetes_token_proxy\"}})"
            )],
            Some(_) => Vec::new(),
            None => endpoint_values
                .iter()
                .filter(|(_, value)| value.is_some())
                .map(|(field, _)| {
                    format!("azure.{field} is set but unused: the custom token endpoint also needs azure.customTokenEndpointAnnotationSuffix and azure.customTokenEndpointAudience")
                })
                .collect(),
        }
    }

    fn skip_containers_annotation(&self) -> &'static str {
        SKIP_CONTAINERS
    }

    fn is_in(&self, mapping: &Mapping) -> bool {
        mapping.azure.is_some()
    }

    fn mapping_claims(&self, mapping: &Mapping, settings: &AllSettings) -> Vec<Claim> {
        let Some(azure) = &mapping.azure else {
            return Vec::new();
        };
        let tenant = azure.tenant_id.as_deref().or(settings.azure.tenant_id.as_deref());
        let tenant = tenant.map(|tenant| Claim::new(Field::AzureTenantId, Some(tenant)));
        [Claim::new(Field::AzureClientId, azure.client_id.as_deref())]
            .into_iter()
            .chain(tenant)
            .collect()
    }

    fn volume_names(&self) -> &'static [&'static str] {
        &[VOLUME]
    }

    fn service_account_annotation_keys(&self) -> &'static [&'static str] {
        &[CLIENT_ID, TENANT_ID]
    }

    fn annotations(&self) -> &'static [Annotation] {
        ANNOTATIONS
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

/// The client id (none when only the `use` label asks for injection) and the tenant id, from the
/// ServiceAccount's annotations, then the mapping, then the cluster setting; none when no
/// identity is meant or it cannot be used (warnings say why).
fn identity<'c>(
    ctx: &'c PodContext<'_>,
    label: Option<&str>,
    mapped: Option<&'c MappedIdentity>,
    warnings: &mut Vec<String>,
) -> Option<(Option<&'c str>, &'c str)> {
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
    .or(ctx.settings.azure.tenant_id.as_deref());
    let Some(tenant_id) = tenant_id else {
        warnings.push(format!(
            "no Azure tenant id is configured (cluster setting azure.tenantId or annotation {TENANT_ID}); no Azure credentials injected"
        ));
        return None;
    };
    Some((client_id, tenant_id))
}

/// As Azure WI v1.6.0 refuses to start: suffix and audience go together, the audience is not the
/// default one, and the annotation key is a valid one; at most one CA source.
fn validate_custom_endpoint(settings: &Settings, cluster_domain: &str, problems: &mut Vec<String>) {
    let suffix = settings.custom_token_endpoint_annotation_suffix.as_deref();
    let audience = settings.custom_token_endpoint_audience.as_deref();
    if suffix.is_some() != audience.is_some() {
        problems.push(
            "azure.customTokenEndpointAnnotationSuffix and azure.customTokenEndpointAudience: set both or neither"
                .to_owned(),
        );
    }
    if let Some(suffix) = suffix
        && !validate::is_qualified_name(&format!("use-{suffix}").to_ascii_lowercase())
    {
        problems.push(format!(
            "azure.customTokenEndpointAnnotationSuffix: {CUSTOM_ENDPOINT_PREFIX}{suffix:?} is not a valid annotation key"
        ));
    }
    check_field(
        problems,
        "azure.customTokenEndpointAudience",
        audience,
        validate::is_audience,
        "audience",
    );
    if audience.is_some_and(|audience| audience.eq_ignore_ascii_case(AUDIENCE)) {
        problems.push(format!(
            "azure.customTokenEndpointAudience: must differ from the default audience {AUDIENCE}"
        ));
    }
    check_field(
        problems,
        "azure.kubernetesTokenProxy",
        settings.kubernetes_token_proxy.as_deref(),
        |url: &str| validate::is_endpoint_url(url, cluster_domain),
        ENDPOINT_URL,
    );
    check_field(
        problems,
        "azure.kubernetesSniName",
        settings.kubernetes_sni_name.as_deref(),
        validate::is_dns_name,
        "DNS name",
    );
    check_field(
        problems,
        "azure.kubernetesCaData",
        settings.kubernetes_ca_data.as_deref(),
        validate::is_pem_certificate,
        "PEM certificate",
    );
    check_field(
        problems,
        "azure.kubernetesCaConfigMapName",
        settings.kubernetes_ca_config_map_name.as_deref(),
        validate::is_dns_name,
        "ConfigMap name",
    );
    if settings.kubernetes_ca_data.is_some() && settings.kubernetes_ca_config_map_name.is_some() {
        problems.push("azure.kubernetesCaData and azure.kubernetesCaConfigMapName: set one, not both".to_owned());
    }
}

/// Whether the Pod asks for the custom token endpoint (its annotation `"true"`, any case, as
/// theirs): the endpoint's audience. An annotation of that form that the
/// webhook does not serve, or a value that is not a boolean, is warned about.
fn custom_endpoint<'s>(ctx: &PodContext<'s>, warnings: &mut Vec<String>) -> Option<&'s str> {
    let configured = ctx.settings.azure.custom_endpoint();
    let annotations = ctx.pod.metadata.annotations.iter().flatten();
    let mut asked = None;
    for (key, value) in annotations.filter(|(key, _)| key.starts_with(CUSTOM_ENDPOINT_PREFIX)) {
        let value = value.trim();
        match &configured {
            Some((ours, audience)) if key == ours => {
                if value.eq_ignore_ascii_case("true") {
                    asked = Some(*audience);
                } else if !value.eq_ignore_ascii_case("false") {
                    warnings.push(format!(
                        "annotation {key}={:?} is not true or false; the default token endpoint is used",
                        Echo(value)
                    ));
                }
            }
            _ if value.eq_ignore_ascii_case("true") => warnings.push(match &configured {
                Some((ours, _)) => format!(
                    "annotation {key} asks for a custom token endpoint, but this webhook's is {ours}; the default token endpoint is used"
                ),
                None => format!(
                    "annotation {key} asks for a custom token endpoint, but none is configured (azure.customTokenEndpointAnnotationSuffix and azure.customTokenEndpointAudience); the default token endpoint is used"
                ),
            }),
            _ => {}
        }
    }
    asked
}

/// `AZURE_AUTHORITY_HOST`: the mapping's or the cluster's override, returned for the endpoint
/// warnings, else the cloud's own authority.
fn authority_host(
    ctx: &PodContext<'_>,
    mapped: Option<&MappedIdentity>,
    env: &mut Vec<Vec<(&'static str, String)>>,
) -> Option<EndpointOverride> {
    let settings = &ctx.settings.azure;
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
    authority
}

/// The custom endpoint's env vars (each on its own, as theirs) and CA source; a missing proxy URL
/// is a gap.
fn custom_endpoint_files(
    settings: &Settings,
    env: &mut Vec<Vec<(&'static str, String)>>,
    gaps: &mut Vec<(&'static str, String)>,
) -> Option<serde_json::Value> {
    match &settings.kubernetes_token_proxy {
        Some(proxy) => env.push(vec![("AZURE_KUBERNETES_TOKEN_PROXY", proxy.clone())]),
        None => gaps.push((
            "azure_kubernetes_token_proxy",
            "no custom token endpoint URL is configured (azure.kubernetesTokenProxy): AZURE_KUBERNETES_TOKEN_PROXY is not set, so SDKs send the custom endpoint's token to Entra ID, which refuses it".to_owned(),
        )),
    }
    if let Some(sni) = &settings.kubernetes_sni_name {
        env.push(vec![("AZURE_KUBERNETES_SNI_NAME", sni.clone())]);
    }
    if let Some(ca) = &settings.kubernetes_ca_data {
        env.push(vec![("AZURE_KUBERNETES_CA_DATA", ca.clone())]);
    }
    // Only when the file is projected (theirs sets the path even when nothing is there).
    let config_map = settings.kubernetes_ca_config_map_name.as_ref()?;
    env.push(vec![("AZURE_KUBERNETES_CA_FILE", CA_FILE.to_owned())]);
    Some(serde_json::json!({"configMap": {
        "name": config_map,
        "items": [{"key": CA_KEY, "path": CA_PATH}],
        "optional": false,
    }}))
}
