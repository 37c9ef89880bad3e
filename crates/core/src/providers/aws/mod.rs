//! AWS: IAM Roles for Service Accounts (IRSA) and EKS Pod Identity, as the EKS webhooks inject them.

pub mod formats;

use serde::Deserialize;

use super::claim::{Claim, Field};
use super::{
    AGENT_URL, Annotation, CLAMPED_EXPIRATION_SECONDS, CloudProvider, ENDPOINT_URL, EndpointOverride, Mapping,
    PodContext, PodInjection, SETTING_EXPIRATION_SECONDS, Settings as AllSettings, check_expiration, check_field,
    checked, cloud_settings, projected_volume, raised_expiration, token_source,
};
use crate::echo::Echo;
use crate::validate;

pub const ROLE_ARN: &str = "eks.amazonaws.com/role-arn";
pub const AUDIENCE: &str = "eks.amazonaws.com/audience";
pub const STS_REGIONAL_ENDPOINTS: &str = "eks.amazonaws.com/sts-regional-endpoints";
pub const TOKEN_EXPIRATION: &str = "eks.amazonaws.com/token-expiration";
pub const SKIP_CONTAINERS: &str = "eks.amazonaws.com/skip-containers";

const IRSA_VOLUME: &str = "aws-iam-token";
const IRSA_MOUNT: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount";
const IRSA_TOKEN_FILE: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount/token";
const IRSA_TOKEN_FILE_WINDOWS: &str = r"C:\var\run\secrets\eks.amazonaws.com\serviceaccount\token";
const DEFAULT_AUDIENCE: &str = "sts.amazonaws.com";
const DEFAULT_EXPIRATION: i64 = 86400;

const POD_IDENTITY_VOLUME: &str = "eks-pod-identity-token";
const POD_IDENTITY_MOUNT: &str = "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount";
const POD_IDENTITY_TOKEN_FILE: &str = "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token";
const POD_IDENTITY_TOKEN_FILE_WINDOWS: &str =
    r"C:\var\run\secrets\pods.eks.amazonaws.com\serviceaccount\eks-pod-identity-token";
const POD_IDENTITY_AUDIENCE: &str = "pods.eks.amazonaws.com";
const DEFAULT_POD_IDENTITY_CREDENTIALS_URI: &str = "http://169.254.170.23/v1/credentials";
/// The EKS Pod Identity agent's IPv4 and IPv6 URIs.
const EKS_AGENT_URIS: [&str; 2] = [
    DEFAULT_POD_IDENTITY_CREDENTIALS_URI,
    "http://[fd00:ec2::23]/v1/credentials",
];

cloud_settings! {
    /// `aws:` at the top of `config.yaml`, and the `--aws-*` flags.
    #[cfg_attr(feature = "clap", group(id = "aws"), command(next_help_heading = "AWS"))]
    pub struct Settings {
        /// AWS region: sets AWS_REGION and AWS_DEFAULT_REGION.
        #[cfg_attr(feature = "clap", arg(id = "aws_region", value_name = "REGION", long = "aws-region", env = "WIW_AWS_REGION"))]
        pub region: Option<String>,
        /// Set AWS_STS_REGIONAL_ENDPOINTS=regional for every IRSA Pod.
        #[cfg_attr(feature = "clap", arg(id = "aws_sts_regional_endpoints", value_name = "BOOL", long = "aws-sts-regional-endpoints", env = "WIW_AWS_STS_REGIONAL_ENDPOINTS"))]
        pub sts_regional_endpoints: Option<bool>,
        /// Audience of IRSA tokens (default sts.amazonaws.com).
        #[cfg_attr(feature = "clap", arg(id = "aws_audience", value_name = "AUDIENCE", long = "aws-audience", env = "WIW_AWS_AUDIENCE"))]
        pub audience: Option<String>,
        /// Lifetime of IRSA and Pod Identity tokens in seconds (default 86400).
        #[cfg_attr(feature = "clap", arg(id = "aws_token_expiration", value_name = "SECONDS", long = "aws-token-expiration", env = "WIW_AWS_TOKEN_EXPIRATION"))]
        pub token_expiration_seconds: Option<i64>,
        /// EKS Pod Identity agent URI (default http://169.254.170.23/v1/credentials; IPv6 clusters: http://[fd00:ec2::23]/v1/credentials): https, or http only to localhost, a loopback IP, 169.254.170.2, 169.254.170.23 or [fd00:ec2::23] (the AWS SDKs refuse others).
        #[cfg_attr(feature = "clap", arg(id = "aws_container_credentials_full_uri", value_name = "URL", long = "aws-container-credentials-full-uri", env = "WIW_AWS_CONTAINER_CREDENTIALS_FULL_URI"))]
        pub container_credentials_full_uri: Option<String>,
        /// AWS STS endpoint (AWS_ENDPOINT_URL_STS), e.g. a local emulator: an https URL, or http to a cluster-local host.
        #[cfg_attr(feature = "clap", arg(id = "aws_sts_endpoint", value_name = "URL", long = "aws-sts-endpoint", env = "WIW_AWS_STS_ENDPOINT"))]
        pub sts_endpoint: Option<String>,
        /// Endpoint of every AWS service (AWS_ENDPOINT_URL, and AWS_ENDPOINT_URL_STS unless --aws-sts-endpoint is set), e.g. LocalStack: an https URL, or http to a cluster-local host.
        #[cfg_attr(feature = "clap", arg(id = "aws_endpoint", value_name = "URL", long = "aws-endpoint", env = "WIW_AWS_ENDPOINT"))]
        pub endpoint: Option<String>,
        /// AWS account id (12 digits): a bare role name in eks.amazonaws.com/role-arn becomes arn:<partition>:iam::<accountId>:role/<name>.
        #[cfg_attr(feature = "clap", arg(id = "aws_account_id", value_name = "ACCOUNT_ID", long = "aws-account-id", env = "WIW_AWS_ACCOUNT_ID"))]
        pub account_id: Option<String>,
        /// AWS partition of composed role ARNs (default aws; aws-cn, aws-us-gov, ...).
        #[cfg_attr(feature = "clap", arg(id = "aws_partition", value_name = "PARTITION", long = "aws-partition", env = "WIW_AWS_PARTITION"))]
        pub partition: Option<String>,
    }
}

/// `aws:` in an `identities` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MappedIdentity {
    /// IAM role (required unless `mode: podIdentity`).
    pub role_arn: Option<String>,
    /// Region for this mapping's Pods, over `aws.region`.
    pub region: Option<String>,
    /// `irsa`, or `podIdentity` (EKS Pod Identity; wins over `eks.amazonaws.com/role-arn`, as on EKS).
    #[serde(default)]
    pub mode: Mode,
    /// STS endpoint for this mapping's Pods, over `aws.stsEndpoint`.
    pub sts_endpoint: Option<String>,
    /// Endpoint of every AWS service for this mapping's Pods, over `aws.endpoint`.
    pub endpoint: Option<String>,
    /// Pod Identity agent URI for this mapping's Pods, over `aws.containerCredentialsFullUri`.
    pub container_credentials_full_uri: Option<String>,
    /// IRSA token audience for this mapping's Pods, over `aws.audience`.
    pub audience: Option<String>,
    /// AWS_STS_REGIONAL_ENDPOINTS=regional (true) or not (false) for this mapping's Pods, over
    /// `aws.stsRegionalEndpoints`.
    pub sts_regional_endpoints: Option<bool>,
    /// Token lifetime for this mapping's Pods, over `aws.tokenExpirationSeconds`.
    pub token_expiration_seconds: Option<i64>,
}

impl Settings {
    fn shared(&self) -> Shared<'_> {
        Shared {
            region: self.region.as_deref(),
            audience: self.audience.as_deref(),
            token_expiration_seconds: self.token_expiration_seconds,
            endpoints: endpoint_fields(
                self.sts_endpoint.as_deref(),
                self.endpoint.as_deref(),
                self.container_credentials_full_uri.as_deref(),
            ),
        }
    }
}

impl MappedIdentity {
    fn shared(&self) -> Shared<'_> {
        Shared {
            region: self.region.as_deref(),
            audience: self.audience.as_deref(),
            token_expiration_seconds: self.token_expiration_seconds,
            endpoints: endpoint_fields(
                self.sts_endpoint.as_deref(),
                self.endpoint.as_deref(),
                self.container_credentials_full_uri.as_deref(),
            ),
        }
    }
}

/// The fields cluster settings and mappings share, so that both are checked alike.
struct Shared<'v> {
    region: Option<&'v str>,
    audience: Option<&'v str>,
    token_expiration_seconds: Option<i64>,
    endpoints: [EndpointField<'v>; 3],
}

impl Shared<'_> {
    /// Checks every field, naming it under `prefix` (`aws` or `identities[i].aws`).
    fn check(&self, problems: &mut Vec<String>, prefix: &str, cluster_domain: &str) {
        check_field(
            problems,
            &format!("{prefix}.region"),
            self.region,
            formats::is_aws_region,
            "AWS region",
        );
        check_field(
            problems,
            &format!("{prefix}.audience"),
            self.audience,
            validate::is_audience,
            "audience",
        );
        for (name, value, is_valid, what) in self.endpoints {
            let is_valid = |value: &str| is_valid(value, cluster_domain);
            check_field(problems, &format!("{prefix}.{name}"), value, is_valid, what);
        }
        check_expiration(
            problems,
            &format!("{prefix}.tokenExpirationSeconds"),
            self.token_expiration_seconds,
            SETTING_EXPIRATION_SECONDS,
        );
    }
}

/// An endpoint override field: its name, its value, its check (of a value in a cluster domain)
/// and what the check wants.
type EndpointField<'v> = (&'static str, Option<&'v str>, fn(&str, &str) -> bool, &'static str);

fn endpoint_fields<'v>(sts: Option<&'v str>, all: Option<&'v str>, agent: Option<&'v str>) -> [EndpointField<'v>; 3] {
    [
        ("stsEndpoint", sts, validate::is_endpoint_url, ENDPOINT_URL),
        ("endpoint", all, validate::is_endpoint_url, ENDPOINT_URL),
        // Plain http only to the agent's own addresses, whatever the cluster domain.
        (
            "containerCredentialsFullUri",
            agent,
            |value, _| formats::is_agent_url(value),
            AGENT_URL,
        ),
    ]
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    #[default]
    Irsa,
    PodIdentity,
}

/// The annotations of [`Aws::annotations`].
static ANNOTATIONS: &[Annotation] = &[
    Annotation {
        key: ROLE_ARN,
        on: "ServiceAccount",
        meaning: "IAM role for IRSA; with aws.accountId set, a bare role name becomes arn:<aws.partition>:iam::<aws.accountId>:role/<name> (the AWS webhook's --compose-role-arn); without it a bare name is an invalid ARN, ignored with a warning",
    },
    Annotation {
        key: AUDIENCE,
        on: "ServiceAccount",
        meaning: "token audience (default sts.amazonaws.com, or aws.audience)",
    },
    Annotation {
        key: STS_REGIONAL_ENDPOINTS,
        on: "ServiceAccount",
        meaning: "Go ParseBool's set, as the AWS webhook: 1, t, T, TRUE, true, True set AWS_STS_REGIONAL_ENDPOINTS=regional; 0, f, F, FALSE, false, False turn the cluster setting off for this ServiceAccount; anything else is warned about and the cluster setting applies",
    },
    Annotation {
        key: TOKEN_EXPIRATION,
        on: "ServiceAccount, Pod",
        meaning: "token lifetime in seconds, up to 4294967296; below 600 (0 and negative too) means 600 (on a Pod: shorter only)",
    },
    Annotation {
        key: SKIP_CONTAINERS,
        on: "Pod",
        meaning: "containers left without the AWS identity, comma separated",
    },
];

pub struct Aws;

impl CloudProvider for Aws {
    fn name(&self) -> &'static str {
        "aws"
    }

    fn validate(&self, all: &AllSettings, identities: &[Mapping]) -> Vec<String> {
        let mut problems = Vec::new();
        let settings = &all.aws;
        let cluster_domain = all.cluster_domain();
        settings.shared().check(&mut problems, "aws", cluster_domain);
        check_field(
            &mut problems,
            "aws.accountId",
            settings.account_id.as_deref(),
            formats::is_aws_account_id,
            "AWS account id (12 digits)",
        );
        check_field(
            &mut problems,
            "aws.partition",
            settings.partition.as_deref(),
            formats::is_aws_partition,
            "AWS partition",
        );
        for (i, mapping) in identities.iter().enumerate() {
            if let Some(aws) = &mapping.aws {
                let field = format!("identities[{i}].aws.roleArn");
                check_field(
                    &mut problems,
                    &field,
                    aws.role_arn.as_deref(),
                    formats::is_role_arn,
                    "IAM role ARN",
                );
                aws.shared()
                    .check(&mut problems, &format!("identities[{i}].aws"), cluster_domain);
                if aws.mode == Mode::Irsa && aws.role_arn.is_none() {
                    problems.push(format!("{field}: required unless mode is podIdentity"));
                }
                if aws.mode == Mode::PodIdentity && aws.audience.is_some() {
                    problems.push(format!(
                        "identities[{i}].aws.audience: not used with mode podIdentity (its tokens are for {POD_IDENTITY_AUDIENCE})"
                    ));
                }
            }
        }
        problems
    }

    fn pod_injection(&self, ctx: &PodContext<'_>, warnings: &mut Vec<String>) -> Option<PodInjection> {
        let mapped = mapped(ctx);
        // EKS lets a Pod Identity association win over the IRSA annotation; so do we.
        if mapped.is_some_and(|aws| aws.mode == Mode::PodIdentity) {
            return Some(self.pod_identity(ctx, warnings));
        }
        let written = ctx.service_account_annotation(ROLE_ARN);
        let composed = written.and_then(|value| composed_role_arn(value, &ctx.settings.aws));
        let annotated = checked(
            ROLE_ARN,
            composed.as_deref().or(written),
            formats::is_role_arn,
            "IAM role ARN",
            warnings,
        );
        let role_arn = annotated.or_else(|| mapped?.role_arn.as_deref())?;
        Some(self.irsa(ctx, role_arn, warnings))
    }

    fn annotation_prefixes(&self) -> &'static [&'static str] {
        &["eks.amazonaws.com/"]
    }

    fn skip_containers_annotation(&self) -> &'static str {
        SKIP_CONTAINERS
    }

    fn is_in(&self, mapping: &Mapping) -> bool {
        mapping.aws.is_some()
    }

    fn mapping_claims(&self, mapping: &Mapping, _settings: &AllSettings) -> Vec<Claim> {
        let Some(aws) = &mapping.aws else {
            return Vec::new();
        };
        let role_arn = match aws.mode {
            Mode::Irsa => aws.role_arn.as_deref(),
            Mode::PodIdentity => None,
        };
        vec![Claim::new(Field::AwsRole, role_arn)]
    }

    fn volume_names(&self) -> &'static [&'static str] {
        &[IRSA_VOLUME, POD_IDENTITY_VOLUME]
    }

    fn service_account_annotation_keys(&self) -> &'static [&'static str] {
        &[ROLE_ARN]
    }

    fn annotations(&self) -> &'static [Annotation] {
        ANNOTATIONS
    }

    fn service_account_annotations(&self, mapping: &Mapping) -> Vec<(&'static str, String)> {
        match &mapping.aws {
            Some(MappedIdentity {
                role_arn: Some(role_arn),
                mode: Mode::Irsa,
                ..
            }) => vec![(ROLE_ARN, role_arn.clone())],
            _ => Vec::new(),
        }
    }

    fn notices(&self, settings: &AllSettings, identities: &[Mapping]) -> Vec<String> {
        let lifetimes = identities.iter().enumerate().filter_map(|(i, mapping)| {
            Some((
                format!("identities[{i}].aws"),
                mapping.aws.as_ref()?.token_expiration_seconds,
            ))
        });
        let mut notices: Vec<String> = std::iter::once(("aws".to_owned(), settings.aws.token_expiration_seconds))
            .chain(lifetimes)
            .filter_map(|(prefix, seconds)| raised_expiration(&format!("{prefix}.tokenExpirationSeconds"), seconds))
            .collect();
        if settings.aws.region.is_some() {
            return notices;
        }
        let unset = identities
            .iter()
            .enumerate()
            .filter(|(_, mapping)| mapping.aws.as_ref().is_some_and(|aws| aws.region.is_none()))
            .map(|(i, _)| format!("identities[{i}]"))
            .collect::<Vec<_>>();
        let which = match unset.as_slice() {
            [] => "Pods given a role by a ServiceAccount annotation".to_owned(),
            [first, ..] => format!(
                "{} AWS mappings ({first} first) and annotated ServiceAccounts",
                unset.len()
            ),
        };
        notices.push(format!(
            "aws.region is not set: {which} get no AWS_REGION, and the Go v2 and Rust SDKs then cannot get credentials; set aws.region or a mapping's aws.region (each such Pod is warned about and counted in pod_mutations_missing{{setting=\"aws_region\"}})"
        ));
        notices
    }
}

impl Aws {
    fn irsa(&self, ctx: &PodContext<'_>, role_arn: &str, warnings: &mut Vec<String>) -> PodInjection {
        let configured = mapped(ctx)
            .and_then(|aws| aws.audience.as_deref())
            .or(ctx.settings.aws.audience.as_deref());
        let audience = ctx.audience(AUDIENCE, configured, DEFAULT_AUDIENCE, warnings);
        let expiration = token_expiration(ctx, warnings);
        let token_file = if ctx.pod.selects_windows() {
            IRSA_TOKEN_FILE_WINDOWS
        } else {
            IRSA_TOKEN_FILE
        };
        let mut env = vec![vec![
            ("AWS_ROLE_ARN", role_arn.to_owned()),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_owned()),
        ]];
        let (region, gaps) = region_env(ctx);
        env.extend(region);
        env.extend(sts_regional_env(ctx, warnings));
        let (endpoints, endpoint_env) = service_endpoints(ctx);
        env.extend(endpoint_env);
        PodInjection {
            cloud: self.name(),
            identity: role_arn.to_owned(),
            volume_name: IRSA_VOLUME,
            volume: projected_volume(IRSA_VOLUME, vec![token_source(audience, expiration, "token")]),
            mount_path: IRSA_MOUNT,
            env,
            skip_containers: ctx.skip_list(SKIP_CONTAINERS, ','),
            gaps,
            scratch: None,
            pod_annotations: Vec::new(),
            endpoints,
            claims: vec![Claim::new(Field::AwsRole, Some(role_arn))],
        }
    }

    fn pod_identity(&self, ctx: &PodContext<'_>, warnings: &mut Vec<String>) -> PodInjection {
        let expiration = token_expiration(ctx, warnings);
        let token_file = if ctx.pod.selects_windows() {
            POD_IDENTITY_TOKEN_FILE_WINDOWS
        } else {
            POD_IDENTITY_TOKEN_FILE
        };
        let agent = ctx.endpoint(
            "aws.containerCredentialsFullUri",
            mapped(ctx).and_then(|aws| aws.container_credentials_full_uri.as_deref()),
            ctx.settings.aws.container_credentials_full_uri.as_deref(),
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            true,
        );
        let agent_uri = agent
            .as_ref()
            .map_or(DEFAULT_POD_IDENTITY_CREDENTIALS_URI, |agent| agent.url.as_str());
        let mut env = vec![vec![
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", agent_uri.to_owned()),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_file.to_owned()),
        ]];
        let (region, gaps) = region_env(ctx);
        env.extend(region);
        env.extend(endpoint_mode_env(agent_uri));
        // As the AWS webhook does: SDKs that also call STS themselves use the regional endpoint.
        env.extend(sts_regional_env(ctx, warnings));
        let (mut endpoints, endpoint_env) = service_endpoints(ctx);
        env.extend(endpoint_env);
        // The EKS agent's own addresses are no override worth a warning.
        endpoints.extend(agent.filter(|agent| !EKS_AGENT_URIS.contains(&agent.url.as_str())));
        PodInjection {
            cloud: self.name(),
            identity: "eks-pod-identity".to_owned(),
            volume_name: POD_IDENTITY_VOLUME,
            volume: projected_volume(
                POD_IDENTITY_VOLUME,
                vec![token_source(POD_IDENTITY_AUDIENCE, expiration, POD_IDENTITY_VOLUME)],
            ),
            mount_path: POD_IDENTITY_MOUNT,
            env,
            skip_containers: ctx.skip_list(SKIP_CONTAINERS, ','),
            gaps,
            scratch: None,
            pod_annotations: Vec::new(),
            endpoints,
            claims: vec![Claim::new(Field::AwsRole, None)],
        }
    }
}

/// `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6` with an agent URI whose host is an IPv6 address:
/// the AWS SDK for Java v2 before 2.57 (2.40.2 checked: `ContainerCredentialsEndpointProvider`)
/// allows the IPv6 agent `[fd00:ec2::23]` only when that variable (or the system property
/// `aws.ec2MetadataServiceEndpointMode`) says IPv6, and refuses it otherwise. The other SDKs take
/// the agent as it is; for them the variable only points instance metadata at its IPv6 address,
/// which is where an IPv6 node serves it. A container that sets the variable keeps its value.
fn endpoint_mode_env(agent_uri: &str) -> Option<EnvGroup> {
    let (_, rest) = agent_uri.split_once("://")?;
    rest.starts_with('[')
        .then(|| vec![("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv6".to_owned())])
}

/// The STS and all-services endpoint overrides and their env vars (a container's own win). With
/// only `endpoint` set, AWS_ENDPOINT_URL_STS comes with AWS_ENDPOINT_URL as a pair: aws-sdk-go-v2's
/// config (v1.33.18) makes the STS client of its credential chain before it reads
/// AWS_ENDPOINT_URL, so Go apps would otherwise send their tokens to the real STS.
fn service_endpoints(ctx: &PodContext<'_>) -> (Vec<EndpointOverride>, Vec<EnvGroup>) {
    let mapped = mapped(ctx);
    let settings = &ctx.settings.aws;
    let sts = ctx.endpoint(
        "aws.stsEndpoint",
        mapped.and_then(|aws| aws.sts_endpoint.as_deref()),
        settings.sts_endpoint.as_deref(),
        "AWS_ENDPOINT_URL_STS",
        true,
    );
    let all = ctx.endpoint(
        "aws.endpoint",
        mapped.and_then(|aws| aws.endpoint.as_deref()),
        settings.endpoint.as_deref(),
        "AWS_ENDPOINT_URL",
        true,
    );
    let mut env: Vec<EnvGroup> = sts.iter().map(|sts| vec![(sts.target, sts.url.clone())]).collect();
    if let Some(all) = &all {
        let mut group = vec![(all.target, all.url.clone())];
        if sts.is_none() {
            group.push(("AWS_ENDPOINT_URL_STS", all.url.clone()));
        }
        env.push(group);
    }
    (sts.into_iter().chain(all).collect(), env)
}

/// A bare role name made into an ARN, as the AWS webhook's `--compose-role-arn` does: only when
/// `aws.accountId` is set (else the name stays an invalid ARN, warned about).
fn composed_role_arn(value: &str, settings: &Settings) -> Option<String> {
    if value.starts_with("arn:") {
        return None;
    }
    let account = settings.account_id.as_deref()?;
    let partition = settings.partition.as_deref().unwrap_or("aws");
    Some(format!("arn:{partition}:iam::{account}:role/{value}"))
}

type EnvGroup = Vec<(&'static str, String)>;
type Gaps = Vec<(&'static str, String)>;

/// The `aws` part of the Pod's mapping, if any.
fn mapped<'c>(ctx: &PodContext<'c>) -> Option<&'c MappedIdentity> {
    ctx.mapping?.aws.as_ref()
}

/// The token lifetime: the ServiceAccount annotation, else the mapping's, else the cluster
/// setting's (the AWS webhook's order: "the annotations take precedence" over its ConfigMap,
/// whose entries fall back to its `--token-expiration`); a Pod annotation may shorten it.
fn token_expiration(ctx: &PodContext<'_>, warnings: &mut Vec<String>) -> i64 {
    let configured = mapped(ctx)
        .and_then(|aws| aws.token_expiration_seconds)
        .or(ctx.settings.aws.token_expiration_seconds);
    ctx.token_expiration(
        TOKEN_EXPIRATION,
        &[TOKEN_EXPIRATION],
        configured.unwrap_or(DEFAULT_EXPIRATION),
        CLAMPED_EXPIRATION_SECONDS,
        warnings,
    )
}

/// `AWS_STS_REGIONAL_ENDPOINTS=regional` when the ServiceAccount annotation, else the mapping,
/// else the cluster setting asks for it (an explicit false at one level wins over the next).
fn sts_regional_env(ctx: &PodContext<'_>, warnings: &mut Vec<String>) -> Option<EnvGroup> {
    let annotated = ctx.service_account_annotation(STS_REGIONAL_ENDPOINTS).and_then(|value| {
        let parsed = formats::parse_go_bool(value);
        if parsed.is_none() {
            warnings.push(format!(
                "annotation {STS_REGIONAL_ENDPOINTS}={:?} is not a boolean (true/false, 1/0, t/f, True/False, TRUE/FALSE); ignored",
                Echo(value)
            ));
        }
        parsed
    });
    let regional = annotated
        .or_else(|| mapped(ctx)?.sts_regional_endpoints)
        .or(ctx.settings.aws.sts_regional_endpoints)
        == Some(true);
    regional.then(|| vec![("AWS_STS_REGIONAL_ENDPOINTS", "regional".to_owned())])
}

/// The region pair, from the mapping or the cluster setting. Without one, SDKs that need a region
/// (Go v2, Rust) cannot get credentials: warned about, unless every container sets its own.
fn region_env(ctx: &PodContext<'_>) -> (Option<EnvGroup>, Gaps) {
    let mapped = mapped(ctx).and_then(|aws| aws.region.as_ref());
    if let Some(region) = mapped.or(ctx.settings.aws.region.as_ref()) {
        let pair = vec![("AWS_REGION", region.clone()), ("AWS_DEFAULT_REGION", region.clone())];
        return (Some(pair), Vec::new());
    }
    let own = |container: &crate::model::Container| {
        container.sets_env("AWS_REGION") || container.sets_env("AWS_DEFAULT_REGION")
    };
    let skipped = ctx.skip_list(SKIP_CONTAINERS, ',');
    let mut ours = ctx
        .pod
        .all_containers()
        .filter(|container| !skipped.contains(&container.name));
    if ours.all(own) {
        return (None, Vec::new());
    }
    let warning = "no AWS region is configured (aws.region or the mapping's aws.region): AWS_REGION is not set, and the Go v2 and Rust SDKs cannot get credentials without it";
    (None, vec![("aws_region", warning.to_owned())])
}
