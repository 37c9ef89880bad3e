//! One module per cloud, each behind [`CloudProvider`]: its cluster settings (which are also its
//! flags), its mapping entry, the annotations it reads and what it injects. Adding a cloud means one
//! new module, one field in [`Settings`] and in [`Mapping`], and one entry in [`ALL`]; adding a
//! setting means one field (with its doc line, which is also the flag's help) in the cloud's
//! `Settings`.

pub mod aws;
pub mod azure;
pub mod claim;
pub mod gcp;

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::echo::Echo;
use crate::model::Pod;
use crate::validate;
use claim::Claim;

/// Every cloud the webhook knows, in the order their injections appear in a Pod.
pub static ALL: &[&dyn CloudProvider] = &[&aws::Aws, &gcp::Gcp, &azure::Azure];

/// The apiserver refuses projected tokens that live shorter than this.
pub const MIN_TOKEN_EXPIRATION_SECONDS: i64 = 600;

/// The apiserver refuses projected tokens that live longer than this (2^32 s, inclusive: its
/// validation checks `> 1<<32`).
pub const MAX_TOKEN_EXPIRATION_SECONDS: i64 = 1 << 32;

/// Token lifetimes a setting may hold.
pub const SETTING_EXPIRATION_SECONDS: RangeInclusive<i64> = 1..=MAX_TOKEN_EXPIRATION_SECONDS;

/// Annotation lifetimes accepted as the AWS webhook does: anything up to the apiserver's ceiling,
/// with values below its floor (0 and negative ones too) raised to the floor.
pub const CLAMPED_EXPIRATION_SECONDS: RangeInclusive<i64> = i64::MIN..=MAX_TOKEN_EXPIRATION_SECONDS;

/// The `config.yaml` key of the cluster's DNS domain.
pub const CLUSTER_DOMAIN: &str = "clusterDomain";

/// The matcher that stands for any namespace or any ServiceAccount.
pub const ANY: &str = "*";

/// The cluster settings of every cloud: the top-level sections of `config.yaml`, and the flags.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The cluster's DNS domain (default cluster.local): plain http endpoint overrides may name Services as *.svc or *.svc.<clusterDomain>.
    #[serde(default, rename = "clusterDomain")]
    #[cfg_attr(
        feature = "clap",
        arg(
            id = "cluster_domain",
            value_name = "CLUSTER_DOMAIN",
            long = "cluster-domain",
            env = "WIW_CLUSTER_DOMAIN"
        )
    )]
    pub cluster_domain: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "clap", command(flatten))]
    pub aws: aws::Settings,
    #[serde(default)]
    #[cfg_attr(feature = "clap", command(flatten))]
    pub azure: azure::Settings,
    #[serde(default)]
    #[cfg_attr(feature = "clap", command(flatten))]
    pub gcp: gcp::Settings,
}

/// One entry of `identities`: which ServiceAccounts get which cloud identities.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mapping {
    /// The namespace whose ServiceAccounts match, or `*` for any.
    #[serde(default = "any")]
    pub namespace: String,
    /// The ServiceAccount that matches, or `*` for any in the namespace.
    #[serde(default = "any")]
    pub service_account: String,
    /// The AWS identity of the matching ServiceAccounts.
    #[serde(default)]
    pub aws: Option<aws::MappedIdentity>,
    /// The Google identity of the matching ServiceAccounts.
    #[serde(default)]
    pub gcp: Option<gcp::MappedIdentity>,
    /// The Azure identity of the matching ServiceAccounts.
    #[serde(default)]
    pub azure: Option<azure::MappedIdentity>,
}

fn any() -> String {
    ANY.to_owned()
}

/// Declares one cloud's settings: every field optional, read from its `config.yaml` section and
/// from its flags, with [`overlay`](Settings::overlay) laying the file's over the flags' field
/// by field. A field is declared once, with its doc line (the flag's help) and its flag.
macro_rules! cloud_settings {
    ($(#[$meta:meta])* pub struct $name:ident {
        $($(#[$field_meta:meta])* pub $field:ident: Option<$ty:ty>,)*
    }) => {
        #[derive(Debug, Clone, Default, serde::Deserialize)]
        #[cfg_attr(feature = "clap", derive(clap::Args))]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        $(#[$meta])*
        pub struct $name {
            $($(#[$field_meta])* pub $field: Option<$ty>,)*
        }

        impl $name {
            /// The fields, in the order of their flags (the `config.yaml` keys in snake case).
            pub const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];

            /// These settings, with `under`'s wherever these have none.
            pub fn overlay(self, under: &Self) -> Self {
                Self { $($field: self.$field.or_else(|| under.$field.clone()),)* }
            }
        }
    };
}
use cloud_settings;

impl Settings {
    /// Every setting's `config.yaml` key (`aws.region`, ...), in the order of their flags.
    pub fn keys() -> Vec<String> {
        let section = |cloud: &'static str, fields: &'static [&'static str]| {
            fields.iter().map(move |field| format!("{cloud}.{}", camel_case(field)))
        };
        std::iter::once(CLUSTER_DOMAIN.to_owned())
            .chain(section("aws", aws::Settings::FIELDS))
            .chain(section("azure", azure::Settings::FIELDS))
            .chain(section("gcp", gcp::Settings::FIELDS))
            .collect()
    }

    /// The cluster's DNS domain, `cluster.local` unless set.
    pub fn cluster_domain(&self) -> &str {
        self.cluster_domain
            .as_deref()
            .unwrap_or(validate::DEFAULT_CLUSTER_DOMAIN)
    }

    /// Problems of the settings no cloud owns.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        check_field(
            &mut problems,
            CLUSTER_DOMAIN,
            self.cluster_domain.as_deref(),
            validate::is_dns_name,
            "DNS domain (lower case, like cluster.local)",
        );
        problems
    }

    /// These settings (from `config.yaml`), with `under`'s (the flags') wherever these have none.
    pub fn overlay(self, under: &Settings) -> Settings {
        Settings {
            cluster_domain: self.cluster_domain.or_else(|| under.cluster_domain.clone()),
            aws: self.aws.overlay(&under.aws),
            azure: self.azure.overlay(&under.azure),
            gcp: self.gcp.overlay(&under.gcp),
        }
    }
}

/// `token_expiration_seconds` as serde's `rename_all = "camelCase"` spells it.
fn camel_case(snake: &str) -> String {
    let mut words = snake.split('_');
    let first = words.next().unwrap_or_default().to_owned();
    words.fold(first, |mut out, word| {
        let mut chars = word.chars();
        out.extend(chars.next().map(|c| c.to_ascii_uppercase()));
        out.push_str(chars.as_str());
        out
    })
}

/// An annotation (or label) a cloud reads or writes, as docs/reference.md lists it.
pub struct Annotation {
    pub key: &'static str,
    /// What carries it: `ServiceAccount`, `Pod`, or both.
    pub on: &'static str,
    pub meaning: &'static str,
}

pub trait CloudProvider: Sync {
    /// Short name used in metrics, logs and warnings (`aws`, `gcp`, `azure`).
    fn name(&self) -> &'static str;

    /// Problems with this cloud's settings and mapping entries, each naming its field.
    fn validate(&self, settings: &Settings, identities: &[Mapping]) -> Vec<String>;

    /// Prefixes of the ServiceAccount annotations this cloud reads (the ServiceAccount cache keeps
    /// only annotations with one of these prefixes).
    fn annotation_prefixes(&self) -> &'static [&'static str];

    /// What this cloud adds to a Pod, if the Pod's ServiceAccount resolves to an identity of it.
    /// Values that look like a meant-but-broken identity produce warnings for the user.
    fn pod_injection(&self, pod: &PodContext<'_>, warnings: &mut Vec<String>) -> Option<PodInjection>;

    /// Annotations that show a mapping's identity on the ServiceAccount it matches.
    fn service_account_annotations(&self, mapping: &Mapping) -> Vec<(&'static str, String)>;

    /// The names of every volume [`CloudProvider::pod_injection`] can add (token and scratch),
    /// so that `explain` can tell what the webhook put into a running Pod.
    fn volume_names(&self) -> &'static [&'static str];

    /// The Pod annotation that leaves containers out of this cloud's identity.
    fn skip_containers_annotation(&self) -> &'static str;

    /// What `mapping` claims of this cloud (none when it gives no identity of it), for the
    /// identity policy.
    fn mapping_claims(&self, mapping: &Mapping, settings: &Settings) -> Vec<Claim>;

    /// Whether `mapping` gives an identity of this cloud.
    fn is_in(&self, mapping: &Mapping) -> bool;

    /// Every key [`CloudProvider::service_account_annotations`] can write.
    fn service_account_annotation_keys(&self) -> &'static [&'static str];

    /// The annotations and labels this cloud reads or writes, with what each means.
    fn annotations(&self) -> &'static [Annotation];

    /// Gaps in valid settings that the server logs when they come into force: injections that
    /// would leave SDKs without something they need.
    fn notices(&self, _settings: &Settings, _identities: &[Mapping]) -> Vec<String> {
        Vec::new()
    }
}

/// Everything a provider may read to decide what a Pod gets.
pub struct PodContext<'a> {
    pub pod: &'a Pod,
    pub namespace: &'a str,
    /// Annotations of the Pod's ServiceAccount.
    pub service_account_annotations: &'a BTreeMap<String, String>,
    /// The first mapping of the ConfigMap that matches the Pod's ServiceAccount.
    pub mapping: Option<&'a Mapping>,
    pub settings: &'a Settings,
}

impl PodContext<'_> {
    pub fn service_account_annotation(&self, key: &str) -> Option<&str> {
        self.service_account_annotations
            .get(key)
            .map(|value| value.trim())
            .filter(|value| !value.is_empty())
    }

    pub fn pod_annotation(&self, key: &str) -> Option<&str> {
        self.pod
            .metadata
            .annotation(key)
            .map(str::trim)
            .filter(|value| !value.is_empty())
    }

    pub fn pod_label(&self, key: &str) -> Option<&str> {
        self.pod.metadata.labels.get(key).map(String::as_str)
    }

    /// Container names listed in a skip annotation of the Pod.
    pub fn skip_list(&self, key: &str, separator: char) -> Vec<String> {
        self.pod_annotation(key)
            .map(|list| {
                list.split(separator)
                    .map(str::trim)
                    .filter(|name| !name.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A token audience: the ServiceAccount annotation `key` if valid, else `configured` (the
    /// mapping's or the cluster setting), else the cloud's default.
    pub fn audience<'v>(
        &'v self,
        key: &str,
        configured: Option<&'v str>,
        default: &'v str,
        warnings: &mut Vec<String>,
    ) -> &'v str {
        checked(
            key,
            self.service_account_annotation(key),
            crate::validate::is_audience,
            "audience",
            warnings,
        )
        .or(configured)
        .unwrap_or(default)
    }

    /// An endpoint override: the mapping's value of `cloud.field` over the cluster setting's.
    pub fn endpoint(
        &self,
        field: &str,
        mapped: Option<&str>,
        cluster: Option<&str>,
        target: &'static str,
        in_env: bool,
    ) -> Option<EndpointOverride> {
        let (setting, url) = match (mapped, cluster, self.mapping) {
            (Some(url), _, Some(mapping)) => (
                format!(
                    "{field} of the mapping for {}/{}",
                    mapping.namespace, mapping.service_account
                ),
                url,
            ),
            (_, Some(url), _) => (field.to_owned(), url),
            _ => return None,
        };
        Some(EndpointOverride {
            setting,
            target,
            in_env,
            url: url.to_owned(),
        })
    }

    /// A token lifetime: the ServiceAccount annotation (within `allowed`) or `default`, which a Pod
    /// annotation may shorten but never lengthen, each raised to the apiserver's floor (so a Pod
    /// that asks for 0 gets the shortest token, not the default).
    pub fn token_expiration(
        &self,
        service_account_key: &str,
        pod_keys: &[&str],
        default: i64,
        allowed: RangeInclusive<i64>,
        warnings: &mut Vec<String>,
    ) -> i64 {
        let bounds = if *allowed.start() == i64::MIN {
            format!("up to {}", allowed.end())
        } else {
            format!("in {}..={}", allowed.start(), allowed.end())
        };
        let parse = |key: &str, value: &str, warnings: &mut Vec<String>| match value.parse::<i64>() {
            Ok(seconds) if allowed.contains(&seconds) => Some(seconds.max(MIN_TOKEN_EXPIRATION_SECONDS)),
            _ => {
                warnings.push(format!(
                    "annotation {key}={:?} is not a whole number of seconds {bounds}; ignored",
                    Echo(value)
                ));
                None
            }
        };
        let mut seconds = self
            .service_account_annotation(service_account_key)
            .and_then(|value| parse(service_account_key, value, warnings))
            .unwrap_or(default);
        for key in pod_keys {
            let Some(value) = self.pod_annotation(key) else {
                continue;
            };
            match parse(key, value, warnings) {
                Some(shorter) if shorter <= seconds => seconds = shorter,
                Some(_) => warnings.push(format!(
                    "pod annotation {key}={value} can only shorten the token lifetime ({seconds}s); ignored"
                )),
                None => {}
            }
        }
        seconds.max(MIN_TOKEN_EXPIRATION_SECONDS)
    }
}

/// What one cloud adds to a Pod. The mutation engine adds each part only where it is missing.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInjection {
    pub cloud: &'static str,
    /// The identity as the audit log shows it (role ARN, client id, Google service account ...).
    pub identity: String,
    pub volume_name: &'static str,
    /// The whole Volume object, `name` included.
    pub volume: Value,
    pub mount_path: &'static str,
    /// Env vars in groups: a group is added whole, or not at all when a container sets any of it.
    pub env: Vec<Vec<(&'static str, String)>>,
    pub skip_containers: Vec<String>,
    /// Settings SDKs need that this injection lacks: a metric label (e.g. `aws_region`) and the
    /// warning, both given only if the injection reaches a container.
    pub gaps: Vec<(&'static str, String)>,
    /// A writable directory that goes with the credentials, if the cloud's tools need one.
    pub scratch: Option<ScratchDir>,
    /// Pod annotations the injection relies on (their values are ours and are kept in step).
    pub pod_annotations: Vec<(&'static str, String)>,
    /// Endpoint overrides in force, each warned about when it reaches a container.
    pub endpoints: Vec<EndpointOverride>,
    /// What the identity claims, for the identity policy and the audit annotations.
    pub claims: Vec<Claim>,
}

/// An endpoint override that sends a Pod's SDKs somewhere other than the cloud's own endpoint
/// (an emulator, LocalStack, a private cloud). Users are warned, so none is active unnoticed.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointOverride {
    /// The setting it came from: `aws.stsEndpoint`, or the mapping's field.
    pub setting: String,
    /// What it sets: an env var, or a field of an injected file.
    pub target: &'static str,
    /// Whether `target` is an env var (which a container's own value outranks).
    pub in_env: bool,
    pub url: String,
}

impl EndpointOverride {
    pub fn warning(&self, cloud: &str) -> String {
        format!(
            "{}={} (from {}): {cloud} SDKs in this Pod talk to that endpoint, not to the cloud's own",
            self.target, self.url, self.setting
        )
    }
}

/// An emptyDir mounted writable in every container that takes the injection, named by one env
/// var; a container that sets that var itself keeps its own and gets no mount.
#[derive(Debug, Clone, PartialEq)]
pub struct ScratchDir {
    pub volume_name: &'static str,
    pub mount_path: &'static str,
    pub env: &'static str,
}

/// The projected service-account token source that every cloud uses.
pub fn token_source(audience: &str, expiration_seconds: i64, path: &str) -> Value {
    json!({"serviceAccountToken": {"audience": audience, "expirationSeconds": expiration_seconds, "path": path}})
}

/// A projected volume made of the given sources.
pub fn projected_volume(name: &str, sources: Vec<Value>) -> Value {
    json!({"name": name, "projected": {"sources": sources}})
}

/// Reports an annotation value that fails its check, and drops it.
pub fn checked<'v>(
    key: &str,
    value: Option<&'v str>,
    is_valid: fn(&str) -> bool,
    what: &str,
    warnings: &mut Vec<String>,
) -> Option<&'v str> {
    let value = value?;
    if is_valid(value) {
        Some(value)
    } else {
        warnings.push(format!(
            "annotation {key}={:?} is not a valid {what}; ignored",
            Echo(value)
        ));
        None
    }
}

/// What an endpoint override must be, as validation errors say it.
pub const ENDPOINT_URL: &str = "endpoint URL (https, or http only to a cluster-local host: *.svc, *.svc.<clusterDomain>, localhost, a loopback or link-local IP; no user info, query or fragment)";

/// What the Entra ID authority host must be, as validation errors say it.
pub const HTTPS_URL: &str =
    "https URL (azure-identity and azidentity refuse an http authority host; no user info, query or fragment)";

/// What the Pod Identity agent URI must be, as validation errors say it.
pub const AGENT_URL: &str = "agent URL (https, or http only to localhost, a loopback IP, 169.254.170.2, 169.254.170.23 or [fd00:ec2::23], as the AWS SDKs require; no user info, query or fragment)";

/// Validates an optional settings or mapping field, naming it in the message.
pub fn check_field(
    problems: &mut Vec<String>,
    field: &str,
    value: Option<&str>,
    is_valid: impl Fn(&str) -> bool,
    what: &str,
) {
    if let Some(value) = value
        && !is_valid(value)
    {
        problems.push(format!("{field}: {value:?} is not a valid {what}"));
    }
}

/// Token lifetimes in settings must be positive; the floor is applied when tokens are made.
/// The notice for a token lifetime setting below the apiserver's floor, which Pods get instead.
pub fn raised_expiration(field: &str, value: Option<i64>) -> Option<String> {
    let seconds = value.filter(|seconds| *seconds < MIN_TOKEN_EXPIRATION_SECONDS)?;
    Some(format!(
        "{field}: {seconds} is raised to {MIN_TOKEN_EXPIRATION_SECONDS}, the shortest token lifetime the apiserver issues"
    ))
}

pub fn check_expiration(problems: &mut Vec<String>, field: &str, value: Option<i64>, allowed: RangeInclusive<i64>) {
    if let Some(seconds) = value
        && !allowed.contains(&seconds)
    {
        problems.push(format!(
            "{field}: {seconds} is outside {}..={}",
            allowed.start(),
            allowed.end()
        ));
    }
}
