//! Google Cloud: Workload Identity Federation with an `external_account` credential configuration,
//! delivered through the Downward API so no Secret or init container is needed.

pub mod formats;

use serde::Deserialize;
use serde_json::{Value, json};

use super::claim::{Claim, Field};
use super::{
    Annotation, CLAMPED_EXPIRATION_SECONDS, CloudProvider, ENDPOINT_URL, EndpointOverride, Mapping, PodContext,
    PodInjection, SETTING_EXPIRATION_SECONDS, ScratchDir, Settings as AllSettings, check_expiration, check_field,
    checked, cloud_settings, projected_volume, raised_expiration, token_source,
};
use crate::validate;

/// GKE's own annotation: impersonate this Google service account.
pub const GKE_SERVICE_ACCOUNT: &str = "iam.gke.io/gcp-service-account";
pub const WORKLOAD_IDENTITY_PROVIDER: &str = "cloud.google.com/workload-identity-provider";
pub const SERVICE_ACCOUNT_EMAIL: &str = "cloud.google.com/service-account-email";
pub const AUDIENCE: &str = "cloud.google.com/audience";
pub const TOKEN_EXPIRATION: &str = "cloud.google.com/token-expiration";
pub const SKIP_CONTAINERS: &str = "cloud.google.com/skip-containers";
/// The workload's Google Cloud project, for client libraries and gcloud.
pub const PROJECT_ID: &str = "cloud.google.com/project-id";
/// Pod annotation that holds the credential configuration; the volume projects it as a file.
pub const CREDENTIAL_CONFIGURATION: &str = "cloud.google.com/external-credentials-json";

const VOLUME: &str = "gcp-workload-identity";
const MOUNT: &str = "/var/run/secrets/sts.googleapis.com/serviceaccount";
const TOKEN_FILE: &str = "/var/run/secrets/sts.googleapis.com/serviceaccount/token";
const CREDENTIAL_FILE_NAME: &str = "credential-configuration.json";
const DEFAULT_EXPIRATION: i64 = 3600;
const DEFAULT_TOKEN_URL: &str = "https://sts.googleapis.com/v1/token";
const DEFAULT_IMPERSONATION_ENDPOINT: &str = "https://iamcredentials.googleapis.com";
/// gcloud writes its configuration (credential cache, logs) here; with a read-only root file
/// system and no writable CLOUDSDK_CONFIG it fails before any request ("unable to open database file").
const GCLOUD_CONFIG: ScratchDir = ScratchDir {
    volume_name: "gcp-gcloud-config",
    mount_path: "/var/run/secrets/sts.googleapis.com/gcloud-config",
    env: "CLOUDSDK_CONFIG",
};

cloud_settings! {
    /// `gcp:` at the top of `config.yaml`, and the `--gcp-*` flags.
    #[cfg_attr(feature = "clap", group(id = "gcp"), command(next_help_heading = "Google"))]
    pub struct Settings {
        /// Google workload identity provider: projects/N/locations/global/workloadIdentityPools/P/providers/R.
        #[cfg_attr(feature = "clap", arg(id = "gcp_workload_identity_provider", value_name = "PROVIDER", long = "gcp-workload-identity-provider", env = "WIW_GCP_WORKLOAD_IDENTITY_PROVIDER"))]
        pub workload_identity_provider: Option<String>,
        /// Audience of Google tokens (default https://iam.googleapis.com/<provider>).
        #[cfg_attr(feature = "clap", arg(id = "gcp_audience", value_name = "AUDIENCE", long = "gcp-audience", env = "WIW_GCP_AUDIENCE"))]
        pub audience: Option<String>,
        /// Lifetime of Google tokens in seconds (default 3600).
        #[cfg_attr(feature = "clap", arg(id = "gcp_token_expiration", value_name = "SECONDS", long = "gcp-token-expiration", env = "WIW_GCP_TOKEN_EXPIRATION"))]
        pub token_expiration_seconds: Option<i64>,
        /// Give Google Pods a writable CLOUDSDK_CONFIG (an emptyDir) for gcloud (default true).
        #[cfg_attr(feature = "clap", arg(id = "gcp_gcloud_config_volume", value_name = "BOOL", long = "gcp-gcloud-config-volume", env = "WIW_GCP_GCLOUD_CONFIG_VOLUME"))]
        pub gcloud_config_volume: Option<bool>,
        /// Google STS token URL (token_url of the credential configuration, default https://sts.googleapis.com/v1/token): an https URL, or http to a cluster-local host.
        #[cfg_attr(feature = "clap", arg(id = "gcp_token_url", value_name = "URL", long = "gcp-token-url", env = "WIW_GCP_TOKEN_URL"))]
        pub token_url: Option<String>,
        /// Base URL of IAM Credentials for service account impersonation (default https://iamcredentials.googleapis.com): an https URL, or http to a cluster-local host.
        #[cfg_attr(feature = "clap", arg(id = "gcp_impersonation_endpoint", value_name = "URL", long = "gcp-impersonation-endpoint", env = "WIW_GCP_IMPERSONATION_ENDPOINT"))]
        pub impersonation_endpoint: Option<String>,
        /// Google mode: federation (inject credentials) or gke (annotate ServiceAccounts only).
        #[cfg_attr(feature = "clap", arg(id = "gcp_mode", value_name = "MODE", long = "gcp-mode", env = "WIW_GCP_MODE"))]
        pub mode: Option<Mode>,
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum), value(rename_all = "camelCase"))]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// Outside GKE: inject the federation credential configuration.
    #[default]
    Federation,
    /// On GKE the metadata server serves Pods; only ServiceAccounts are annotated.
    Gke,
}

/// `gcp:` in an `identities` entry; without `serviceAccount` the Pod uses direct resource access.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MappedIdentity {
    /// Google service account to impersonate (without it: direct resource access).
    pub service_account: Option<String>,
    /// The workload's project id (default: the service account e-mail's project).
    pub project: Option<String>,
    /// STS token URL for this mapping's Pods, over `gcp.tokenUrl`.
    pub token_url: Option<String>,
    /// IAM Credentials base URL for this mapping's Pods, over `gcp.impersonationEndpoint`.
    pub impersonation_endpoint: Option<String>,
}

/// The annotations of [`Gcp::annotations`].
static ANNOTATIONS: &[Annotation] = &[
    Annotation {
        key: GKE_SERVICE_ACCOUNT,
        on: "ServiceAccount",
        meaning: "Google service account to impersonate",
    },
    Annotation {
        key: SERVICE_ACCOUNT_EMAIL,
        on: "ServiceAccount",
        meaning: "Google service account to impersonate (the GCP federation webhook's key)",
    },
    Annotation {
        key: WORKLOAD_IDENTITY_PROVIDER,
        on: "ServiceAccount",
        meaning: "workload identity pool provider resource name (default: gcp.workloadIdentityProvider)",
    },
    Annotation {
        key: PROJECT_ID,
        on: "ServiceAccount",
        meaning: "the workload's project: GOOGLE_CLOUD_PROJECT and CLOUDSDK_CORE_PROJECT (default: the mapping's gcp.project, then the project of the service account e-mail); a container that sets either keeps its own",
    },
    Annotation {
        key: AUDIENCE,
        on: "ServiceAccount",
        meaning: "token audience (default https://iam.googleapis.com/<provider>, or gcp.audience)",
    },
    Annotation {
        key: TOKEN_EXPIRATION,
        on: "ServiceAccount, Pod",
        meaning: "token lifetime in seconds, as for AWS (on a Pod: shorter only)",
    },
    Annotation {
        key: SKIP_CONTAINERS,
        on: "Pod",
        meaning: "containers left without the Google identity, comma separated",
    },
    Annotation {
        key: CREDENTIAL_CONFIGURATION,
        on: "Pod",
        meaning: "written by the webhook: the credential configuration the containers read (through the Downward API); the identity of a mapping identities[<i>] with containers is in ...-json-<i>; an admission policy keeps them fixed once the Pod exists",
    },
];

pub struct Gcp;

impl CloudProvider for Gcp {
    fn name(&self) -> &'static str {
        "gcp"
    }

    fn validate(&self, all: &AllSettings, identities: &[Mapping]) -> Vec<String> {
        let mut problems = Vec::new();
        validate_settings(all, &mut problems);
        for (i, mapping) in identities.iter().enumerate() {
            if let Some(gcp) = &mapping.gcp {
                validate_mapped_identity(&format!("identities[{i}].gcp"), gcp, all, &mut problems);
            }
        }
        problems
    }

    fn pod_injection(&self, ctx: &PodContext<'_>, warnings: &mut Vec<String>) -> Option<PodInjection> {
        let settings = &ctx.settings.gcp;
        if settings.mode == Some(Mode::Gke) {
            return None;
        }
        let Identity {
            email,
            provider,
            mapped,
        } = identity(ctx, warnings)?;
        let token_url = ctx.endpoint(
            "gcp.tokenUrl",
            mapped.and_then(|gcp| gcp.token_url.as_deref()),
            settings.token_url.as_deref(),
            "token_url",
            false,
        );
        // Without a service account to impersonate, the endpoint is not used.
        let impersonation = email.and_then(|_| {
            ctx.endpoint(
                "gcp.impersonationEndpoint",
                mapped.and_then(|gcp| gcp.impersonation_endpoint.as_deref()),
                settings.impersonation_endpoint.as_deref(),
                "service_account_impersonation_url",
                false,
            )
        });
        let files = CredentialFiles::of(ctx);
        Some(PodInjection {
            cloud: self.name(),
            identity: email.map_or_else(|| format!("direct access via {provider}"), str::to_owned),
            volume_name: VOLUME,
            volume: token_volume(ctx, provider, &files, warnings),
            mount_path: MOUNT,
            env: environment(ctx, mapped, email, &files.path, warnings),
            skip_containers: ctx.skip_list(SKIP_CONTAINERS, ','),
            gaps: Vec::new(),
            scratch: (settings.gcloud_config_volume != Some(false)).then_some(GCLOUD_CONFIG),
            pod_annotations: vec![(
                files.annotation,
                credential_configuration(provider, email, token_url.as_ref(), impersonation.as_ref()),
            )],
            endpoints: token_url.into_iter().chain(impersonation).collect(),
            claims: email
                .map(|email| Claim::new(Field::GcpServiceAccount, Some(email)))
                .into_iter()
                .chain([Claim::new(Field::GcpProvider, Some(provider))])
                .collect(),
        })
    }

    fn annotation_prefixes(&self) -> &'static [&'static str] {
        &["iam.gke.io/", "cloud.google.com/"]
    }

    fn skip_containers_annotation(&self) -> &'static str {
        SKIP_CONTAINERS
    }

    fn is_in(&self, mapping: &Mapping) -> bool {
        mapping.gcp.is_some()
    }

    fn mapping_claims(&self, mapping: &Mapping, settings: &AllSettings) -> Vec<Claim> {
        let Some(gcp) = &mapping.gcp else {
            return Vec::new();
        };
        let email = gcp.service_account.as_deref();
        let provider = settings.gcp.workload_identity_provider.as_deref();
        let email = email.map(|email| Claim::new(Field::GcpServiceAccount, Some(email)));
        let provider = provider.map(|provider| Claim::new(Field::GcpProvider, Some(provider)));
        email.into_iter().chain(provider).collect()
    }

    fn volume_names(&self) -> &'static [&'static str] {
        &[VOLUME, GCLOUD_CONFIG.volume_name]
    }

    fn service_account_annotation_keys(&self) -> &'static [&'static str] {
        &[GKE_SERVICE_ACCOUNT]
    }

    fn annotations(&self) -> &'static [Annotation] {
        ANNOTATIONS
    }

    fn notices(&self, settings: &AllSettings, _identities: &[Mapping]) -> Vec<String> {
        raised_expiration("gcp.tokenExpirationSeconds", settings.gcp.token_expiration_seconds)
            .into_iter()
            .collect()
    }

    fn service_account_annotations(&self, mapping: &Mapping) -> Vec<(&'static str, String)> {
        match mapping.gcp.as_ref().and_then(|gcp| gcp.service_account.as_ref()) {
            Some(email) => vec![(GKE_SERVICE_ACCOUNT, email.clone())],
            None => Vec::new(),
        }
    }
}

/// The cluster-wide `gcp` settings' problems.
fn validate_settings(all: &AllSettings, problems: &mut Vec<String>) {
    let settings = &all.gcp;
    check_field(
        problems,
        "gcp.workloadIdentityProvider",
        settings.workload_identity_provider.as_deref(),
        formats::is_workload_identity_provider,
        "workload identity provider resource name",
    );
    check_field(
        problems,
        "gcp.audience",
        settings.audience.as_deref(),
        validate::is_audience,
        "audience",
    );
    validate_endpoints(
        "gcp",
        settings.token_url.as_deref(),
        settings.impersonation_endpoint.as_deref(),
        all,
        problems,
    );
    check_expiration(
        problems,
        "gcp.tokenExpirationSeconds",
        settings.token_expiration_seconds,
        SETTING_EXPIRATION_SECONDS,
    );
}

/// A mapping's `gcp` problems, each named after `at` (`identities[i].gcp`).
fn validate_mapped_identity(at: &str, gcp: &MappedIdentity, all: &AllSettings, problems: &mut Vec<String>) {
    check_field(
        problems,
        &format!("{at}.serviceAccount"),
        gcp.service_account.as_deref(),
        formats::is_google_service_account,
        "Google service account e-mail",
    );
    check_field(
        problems,
        &format!("{at}.project"),
        gcp.project.as_deref(),
        formats::is_google_project_id,
        "Google Cloud project id",
    );
    validate_endpoints(
        at,
        gcp.token_url.as_deref(),
        gcp.impersonation_endpoint.as_deref(),
        all,
        problems,
    );
}

/// `tokenUrl` and `impersonationEndpoint` under `at`: URLs an endpoint may have.
fn validate_endpoints(
    at: &str,
    token_url: Option<&str>,
    impersonation_endpoint: Option<&str>,
    all: &AllSettings,
    problems: &mut Vec<String>,
) {
    for (name, value) in [
        ("tokenUrl", token_url),
        ("impersonationEndpoint", impersonation_endpoint),
    ] {
        check_field(
            problems,
            &format!("{at}.{name}"),
            value,
            |url: &str| validate::is_endpoint_url(url, all.cluster_domain()),
            ENDPOINT_URL,
        );
    }
}

/// The Google identity a Pod's ServiceAccount resolves to.
struct Identity<'c> {
    /// The service account to impersonate; none for direct resource access.
    email: Option<&'c str>,
    /// The workload identity provider's resource name.
    provider: &'c str,
    mapped: Option<&'c MappedIdentity>,
}

/// The identity from the ServiceAccount's annotations, then the mapping; none when none is meant
/// or it cannot be used (warnings say why).
fn identity<'c>(ctx: &'c PodContext<'_>, warnings: &mut Vec<String>) -> Option<Identity<'c>> {
    let email_annotation = [GKE_SERVICE_ACCOUNT, SERVICE_ACCOUNT_EMAIL]
        .into_iter()
        .find_map(|key| Some((key, ctx.service_account_annotation(key)?)));
    let annotated_email = email_annotation.and_then(|(key, value)| {
        checked(
            key,
            Some(value),
            formats::is_google_service_account,
            "Google service account e-mail",
            warnings,
        )
    });
    let annotated_provider = checked(
        WORKLOAD_IDENTITY_PROVIDER,
        ctx.service_account_annotation(WORKLOAD_IDENTITY_PROVIDER),
        formats::is_workload_identity_provider,
        "workload identity provider resource name",
        warnings,
    );
    let mapped = ctx.mapping.and_then(|mapping| mapping.gcp.as_ref());
    // An identity is meant when the ServiceAccount names one (even a broken one) or a mapping does.
    let meant = email_annotation.is_some()
        || ctx.service_account_annotation(WORKLOAD_IDENTITY_PROVIDER).is_some()
        || mapped.is_some();
    if !meant {
        return None;
    }
    // An invalid e-mail falls back to the mapping, as an invalid AWS role or Azure client id
    // does; without one there is no identity to give (direct access would be another one).
    if email_annotation.is_some() && annotated_email.is_none() && mapped.is_none() {
        return None;
    }
    let email = annotated_email.or_else(|| mapped?.service_account.as_deref());
    let Some(provider) = annotated_provider.or(ctx.settings.gcp.workload_identity_provider.as_deref()) else {
        warnings.push(format!(
            "no Google workload identity provider is configured (cluster setting gcp.workloadIdentityProvider or annotation {WORKLOAD_IDENTITY_PROVIDER}); no Google credentials injected"
        ));
        return None;
    };
    Some(Identity {
        email,
        provider,
        mapped,
    })
}

/// Where one identity's credential configuration goes: the Pod annotation that holds it, and its
/// file in the volume. The whole Pod's identity has the plain names; the identity of a mapping
/// with `containers` has names ending in the mapping's index, so that each identity of a Pod has
/// its own file in the one volume.
struct CredentialFiles {
    annotation: String,
    file_name: String,
    path: String,
}

impl CredentialFiles {
    fn of(ctx: &PodContext<'_>) -> CredentialFiles {
        let (annotation, file_name) = match ctx.container_mapping {
            None => (CREDENTIAL_CONFIGURATION.to_owned(), CREDENTIAL_FILE_NAME.to_owned()),
            Some(i) => (
                format!("{CREDENTIAL_CONFIGURATION}-{i}"),
                format!("credential-configuration-{i}.json"),
            ),
        };
        CredentialFiles {
            path: format!("{MOUNT}/{file_name}"),
            annotation,
            file_name,
        }
    }
}

/// The projected token for the provider's audience and the credential configuration file.
fn token_volume(ctx: &PodContext<'_>, provider: &str, files: &CredentialFiles, warnings: &mut Vec<String>) -> Value {
    let settings = &ctx.settings.gcp;
    let default_audience = format!("https://iam.googleapis.com/{provider}");
    let audience = ctx.audience(AUDIENCE, settings.audience.as_deref(), &default_audience, warnings);
    let expiration = ctx.token_expiration(
        TOKEN_EXPIRATION,
        &[TOKEN_EXPIRATION],
        settings.token_expiration_seconds.unwrap_or(DEFAULT_EXPIRATION),
        CLAMPED_EXPIRATION_SECONDS,
        warnings,
    );
    let field_path = format!("metadata.annotations['{}']", files.annotation);
    let credential_items =
        json!({"items": [{"path": files.file_name, "fieldRef": {"apiVersion": "v1", "fieldPath": field_path}}]});
    projected_volume(
        VOLUME,
        vec![
            token_source(audience, expiration, "token"),
            json!({"downwardAPI": credential_items}),
        ],
    )
}

/// The credential file for the libraries and gcloud, and the project when one is known.
fn environment(
    ctx: &PodContext<'_>,
    mapped: Option<&MappedIdentity>,
    email: Option<&str>,
    credential_file: &str,
    warnings: &mut Vec<String>,
) -> Vec<Vec<(&'static str, String)>> {
    let annotated_project = checked(
        PROJECT_ID,
        ctx.service_account_annotation(PROJECT_ID),
        formats::is_google_project_id,
        "Google Cloud project id",
        warnings,
    );
    // Without a project the libraries ask Resource Manager for the pool's project, which needs
    // a permission and may not be the workload's.
    let project = annotated_project
        .or_else(|| mapped?.project.as_deref())
        .or_else(|| formats::google_project_of(email?));
    let mut env = vec![
        vec![("GOOGLE_APPLICATION_CREDENTIALS", credential_file.to_owned())],
        vec![("CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE", credential_file.to_owned())],
    ];
    // A pair: a container that names either project keeps its own, not two different ones.
    env.extend(project.map(|project| {
        vec![
            ("GOOGLE_CLOUD_PROJECT", project.to_owned()),
            ("CLOUDSDK_CORE_PROJECT", project.to_owned()),
        ]
    }));
    env
}

/// The `external_account` credential configuration that Google's client libraries and gcloud read,
/// with the token and impersonation endpoints overridden where set.
fn credential_configuration(
    provider: &str,
    email: Option<&str>,
    token_url: Option<&EndpointOverride>,
    impersonation: Option<&EndpointOverride>,
) -> String {
    let mut configuration = json!({
        "type": "external_account",
        "audience": format!("//iam.googleapis.com/{provider}"),
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": token_url.map_or(DEFAULT_TOKEN_URL, |endpoint| endpoint.url.as_str()),
        "credential_source": {"file": TOKEN_FILE, "format": {"type": "text"}},
    });
    if let Some(email) = email {
        let base = impersonation.map_or(DEFAULT_IMPERSONATION_ENDPOINT, |endpoint| endpoint.url.as_str());
        configuration["service_account_impersonation_url"] = json!(format!(
            "{}/v1/projects/-/serviceAccounts/{email}:generateAccessToken",
            base.trim_end_matches('/')
        ));
    }
    configuration.to_string()
}
