//! The identity mappings and cluster settings: the `config.yaml` key of the webhook's ConfigMap.
//!
//! Cluster settings can also come from flags; the ConfigMap wins field by field. Parsing is strict
//! (unknown fields are errors) so that a typo is reported instead of silently ignored, and the
//! caller keeps the last good `Config` when parsing fails.

use std::collections::HashMap;

use serde::Deserialize;

use crate::locate::{self, Step, steps};
use crate::policy::{Labels, Mode, Namespace, Policy, PolicyFile};
use crate::providers::{self, aws, azure, gcp};
pub use crate::providers::{ANY, Mapping, Settings};

/// The key of the webhook's ConfigMap that holds `config.yaml`.
pub const CONFIG_KEY: &str = "config.yaml";

#[derive(Debug, Default)]
pub struct Config {
    /// The cluster settings: the file's over the flags', field by field.
    pub settings: Settings,
    pub identities: Vec<Mapping>,
    /// The identity policy (off when `config.yaml` has none).
    pub policy: Policy,
    /// The mappings without `containers`.
    whole_pod: MappingIndex<Option<usize>>,
    /// The mappings with `containers`.
    per_container: MappingIndex<Vec<usize>>,
}

/// `config.yaml` as written, read straight into its types (a tree of values for 100,000 mappings
/// is held several times their final size).
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with the keys clusterDomain, aws, gcp, azure, identities and policy"
)]
struct ConfigFile {
    /// The cluster's DNS domain (default cluster.local): plain http endpoint overrides may name
    /// Services as *.svc or *.svc.<clusterDomain>.
    #[serde(default, rename = "clusterDomain")]
    cluster_domain: Option<String>,
    /// AWS cluster settings.
    #[serde(default)]
    aws: Option<aws::Settings>,
    /// Azure cluster settings.
    #[serde(default)]
    azure: Option<azure::Settings>,
    /// Google Cloud cluster settings.
    #[serde(default)]
    gcp: Option<gcp::Settings>,
    /// Identity mappings: the first that matches a ServiceAccount wins.
    #[serde(default)]
    identities: Vec<Mapping>,
    /// The identity policy: which identities the ServiceAccounts of which namespaces may claim
    /// (docs/multi-tenant.md).
    #[serde(default)]
    policy: Option<PolicyFile>,
}

/// The JSON schema of `config.yaml` (every object refusing unknown keys, nested types inlined),
/// for the Helm chart's values.schema.json.
#[cfg(feature = "schema")]
pub fn schema() -> serde_json::Value {
    schemars::generate::SchemaSettings::draft2020_12()
        .with(|settings| settings.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<ConfigFile>()
        .to_value()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not YAML, or not the shape of `config.yaml` (with the line and column). Not a `source`:
    /// the message quotes it already, and error chains would print it twice.
    #[error("config.yaml cannot be read: {0}")]
    Yaml(serde_yaml_ng::Error),
    /// Values the schema takes but a check refuses, each `path: problem`, with `at line L column
    /// C` where the value is in the file.
    #[error("config.yaml has invalid values: {}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("config.yaml nests flow collections ([ ] or {{ }}) deeper than {MAX_FLOW_DEPTH} levels, at line {0}")]
    TooDeep(usize),
}

/// The deepest flow nesting (`[`, `{`) that `config.yaml` may have; its schema needs three. The
/// YAML parser's time grows with the square of the depth (20,000 levels, 80 KB: 3.6 s of CPU),
/// and a ConfigMap can hold 1 MiB.
pub const MAX_FLOW_DEPTH: usize = 64;

/// Refuses deeper flow nesting than [`MAX_FLOW_DEPTH`] before the parser sees it. Brackets in
/// comments and quoted strings are not counted; any other stray bracket counts, which can only
/// refuse text that the schema (no free-text fields) refuses anyway.
pub fn check_flow_depth(yaml: &str) -> Result<(), ConfigError> {
    let (mut depth, mut line) = (0, 1);
    let mut bytes = yaml.bytes().peekable();
    let mut previous = b'\n';
    while let Some(byte) = bytes.next() {
        match byte {
            b'\n' => line += 1,
            b'#' if previous.is_ascii_whitespace() => {
                bytes.by_ref().take_while(|&b| b != b'\n').for_each(drop);
                line += 1;
                previous = b'\n';
                continue;
            }
            b'\'' | b'"' if matches!(previous, b' ' | b'\t' | b'\n' | b'\r' | b'[' | b'{' | b',' | b':') => {
                while let Some(inner) = bytes.next() {
                    match inner {
                        b'\n' => line += 1,
                        // An escaped character (a line break included) is skipped.
                        b'\\' if byte == b'"' => line += usize::from(bytes.next() == Some(b'\n')),
                        // `''` is a quote inside a single-quoted string.
                        b'\'' if byte == b'\'' && bytes.peek() == Some(&b'\'') => {
                            bytes.next();
                        }
                        _ if inner == byte => break,
                        _ => {}
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Err(ConfigError::TooDeep(line));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = byte;
    }
    Ok(())
}

impl From<serde_yaml_ng::Error> for ConfigError {
    fn from(err: serde_yaml_ng::Error) -> Self {
        ConfigError::Yaml(err)
    }
}

impl ConfigError {
    /// Each problem on its own, as `validate` prints them.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid(problems) => problems.clone(),
            other => vec![other.to_string()],
        }
    }
}

/// `path: problem` messages with the line and column of `path` in `yaml` where it is written
/// there (a setting given only as a flag is not); a mapping's missing field is placed at its
/// mapping.
pub fn with_positions(yaml: &str, messages: Vec<String>) -> Vec<String> {
    let paths: Vec<Vec<Step>> = messages
        .iter()
        .map(|message| {
            message
                .split_once(": ")
                .map(|(path, _)| steps(path))
                .unwrap_or_default()
        })
        .collect();
    // Each path, and the mapping entry it belongs to.
    let entries: Vec<Vec<Step>> = paths
        .iter()
        .map(|path| match path.as_slice() {
            [Step::Key(key), Step::Index(_), ..] if key == "identities" => path[..2].to_vec(),
            _ => Vec::new(),
        })
        .collect();
    let wanted: Vec<Vec<Step>> = paths.iter().chain(&entries).cloned().collect();
    let found = locate::locate(yaml, &wanted);
    messages
        .into_iter()
        .enumerate()
        .map(|(i, message)| {
            let exact = found[i].filter(|_| !paths[i].is_empty());
            match exact.or(found[paths.len() + i].filter(|_| !entries[i].is_empty())) {
                Some(at) => format!("{message} at line {} column {}", at.line, at.column),
                None => message,
            }
        })
        .collect()
}

impl Config {
    /// Parses `config.yaml` over the cluster settings given as flags.
    pub fn parse(yaml: &str, flags: &Settings) -> Result<Config, ConfigError> {
        let file: Option<ConfigFile> = if yaml.trim().is_empty() {
            None
        } else {
            check_flow_depth(yaml)?;
            serde_yaml_ng::from_str(yaml)?
        };
        let Some(file) = file else {
            return Self::from_defaults(flags);
        };
        let from_file = Settings {
            cluster_domain: file.cluster_domain,
            aws: file.aws.unwrap_or_default(),
            azure: file.azure.unwrap_or_default(),
            gcp: file.gcp.unwrap_or_default(),
        };
        Self::build(from_file.overlay(flags), file.identities, file.policy).map_err(|err| match err {
            ConfigError::Invalid(problems) => ConfigError::Invalid(with_positions(yaml, problems)),
            other => other,
        })
    }

    /// The configuration when there is no ConfigMap: the flags' settings and no mappings.
    pub fn from_defaults(flags: &Settings) -> Result<Config, ConfigError> {
        Self::build(flags.clone(), Vec::new(), None)
    }

    fn build(settings: Settings, identities: Vec<Mapping>, policy: Option<PolicyFile>) -> Result<Config, ConfigError> {
        let mut problems: Vec<String> = settings
            .validate()
            .into_iter()
            .chain(
                providers::ALL
                    .iter()
                    .flat_map(|provider| provider.validate(&settings, &identities)),
            )
            .chain(
                identities
                    .iter()
                    .enumerate()
                    .filter(|(_, mapping)| mapping.namespace.is_empty() || mapping.service_account.is_empty())
                    .map(|(i, _)| {
                        format!("identities[{i}]: namespace and serviceAccount must not be empty (use \"*\" for any)")
                    }),
            )
            .chain(container_problems(&identities))
            .collect();
        let policy = Policy::compile(policy, &settings, &mut problems);
        if policy.mode == Mode::Enforce {
            problems.extend(forbidden_mappings(&policy, &settings, &identities));
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        let scoped = |(_, mapping): &(usize, &Mapping)| mapping.containers.is_some();
        Ok(Config {
            whole_pod: MappingIndex::build(identities.iter().enumerate().filter(|entry| !scoped(entry))),
            per_container: MappingIndex::build(identities.iter().enumerate().filter(scoped)),
            settings,
            identities,
            policy,
        })
    }

    /// What the server logs when this configuration comes into force: valid settings that leave
    /// SDKs short of something (each cloud's [`notices`](providers::CloudProvider::notices)).
    pub fn notices(&self) -> Vec<String> {
        let warned = if self.policy.mode == Mode::Warn {
            forbidden_mappings(&self.policy, &self.settings, &self.identities)
        } else {
            Vec::new()
        };
        providers::ALL
            .iter()
            .flat_map(|provider| provider.notices(&self.settings, &self.identities))
            .chain(warned)
            .collect()
    }

    /// The first mapping without `containers` that matches, in file order: the mapping of the
    /// ServiceAccount and of the whole Pod. Constant time whatever the number of mappings.
    pub fn mapping_for(&self, namespace: &str, service_account: &str) -> Option<&Mapping> {
        self.whole_pod
            .matching(namespace, service_account)
            .flatten()
            .min()
            .map(|&i| &self.identities[i])
    }

    /// Every mapping with `containers` that matches, in file order, with its index.
    pub fn container_mappings_for(&self, namespace: &str, service_account: &str) -> Vec<(usize, &Mapping)> {
        if self.per_container.is_empty() {
            return Vec::new();
        }
        let mut found: Vec<usize> = self
            .per_container
            .matching(namespace, service_account)
            .flatten()
            .copied()
            .collect();
        found.sort_unstable();
        found.into_iter().map(|i| (i, &self.identities[i])).collect()
    }
}

/// Problems of the mappings' `containers` lists: an empty list, a name no container can have, and
/// a container given two identities of one cloud by mappings for the same ServiceAccount.
fn container_problems(identities: &[Mapping]) -> Vec<String> {
    let mut problems = Vec::new();
    // (namespace, serviceAccount, cloud, container) -> the mapping that claims it first.
    let mut claimed: HashMap<(&str, &str, &str, &str), usize> = HashMap::new();
    for (i, mapping) in identities.iter().enumerate() {
        let Some(containers) = &mapping.containers else {
            continue;
        };
        if containers.is_empty() {
            problems.push(format!(
                "identities[{i}].containers: must not be empty (leave it out for every container)"
            ));
        }
        for (j, name) in containers.iter().enumerate() {
            if !crate::validate::is_dns_name(name) || name.contains('.') {
                problems.push(format!(
                    "identities[{i}].containers[{j}]: {name:?} is not a valid container name (a DNS label: lower case letters, digits and '-')"
                ));
            }
        }
        for provider in providers::ALL.iter().filter(|provider| provider.is_in(mapping)) {
            for name in containers {
                let key = (
                    mapping.namespace.as_str(),
                    mapping.service_account.as_str(),
                    provider.name(),
                    name.as_str(),
                );
                let first = *claimed.entry(key).or_insert(i);
                if first != i {
                    problems.push(format!(
                        "identities[{i}].containers: container {name:?} of {}/{} already gets its {} identity from identities[{first}]; a container gets one identity per cloud",
                        mapping.namespace,
                        mapping.service_account,
                        provider.name()
                    ));
                }
            }
        }
    }
    problems
}

/// The mappings that claim an identity the policy does not give their namespace, one line each
/// (a configuration error in `enforce`, logged in `warn`).
fn forbidden_mappings(policy: &Policy, settings: &Settings, identities: &[Mapping]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, mapping) in identities.iter().enumerate() {
        for provider in providers::ALL {
            let claims = provider.mapping_claims(mapping, settings);
            let namespace = Namespace {
                name: &mapping.namespace,
                labels: Labels::Any,
            };
            if let crate::policy::Decision::Denied { message, .. } = policy.decide(namespace, &claims) {
                problems.push(format!("identities[{i}].{}: {message}", provider.name()));
            }
        }
    }
    problems
}

/// The mappings of each kind of match, so lookup cost does not grow with the list: `Option<usize>`
/// keeps the first (mappings for the whole Pod), `Vec<usize>` every one (mappings with `containers`).
#[derive(Debug, Default)]
struct MappingIndex<Slot> {
    exact: HashMap<String, HashMap<String, Slot>>,
    any_service_account: HashMap<String, Slot>,
    any_namespace: HashMap<String, Slot>,
    everything: Slot,
}

trait IndexSlot: Default {
    fn put(&mut self, index: usize);
}

impl IndexSlot for Option<usize> {
    fn put(&mut self, index: usize) {
        self.get_or_insert(index);
    }
}

impl IndexSlot for Vec<usize> {
    fn put(&mut self, index: usize) {
        self.push(index);
    }
}

impl MappingIndex<Vec<usize>> {
    fn is_empty(&self) -> bool {
        self.everything.is_empty()
            && self.exact.is_empty()
            && self.any_service_account.is_empty()
            && self.any_namespace.is_empty()
    }
}

impl<Slot: IndexSlot> MappingIndex<Slot> {
    fn build<'m>(mappings: impl Iterator<Item = (usize, &'m Mapping)>) -> Self {
        let mut index = MappingIndex::default();
        for (i, mapping) in mappings {
            let (ns, sa) = (mapping.namespace.as_str(), mapping.service_account.as_str());
            let slot: &mut Slot = match (ns == ANY, sa == ANY) {
                (true, true) => &mut index.everything,
                (true, false) => index.any_namespace.entry(sa.to_owned()).or_default(),
                (false, true) => index.any_service_account.entry(ns.to_owned()).or_default(),
                (false, false) => index
                    .exact
                    .entry(ns.to_owned())
                    .or_default()
                    .entry(sa.to_owned())
                    .or_default(),
            };
            slot.put(i);
        }
        index
    }

    /// The slots of every kind of match for this ServiceAccount.
    fn matching(&self, namespace: &str, service_account: &str) -> impl Iterator<Item = &Slot> {
        [
            self.exact.get(namespace).and_then(|by_sa| by_sa.get(service_account)),
            self.any_service_account.get(namespace),
            self.any_namespace.get(service_account),
            Some(&self.everything),
        ]
        .into_iter()
        .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_EXAMPLE: &str = r#"
aws:   {region: us-west-2, stsRegionalEndpoints: true, audience: sts.amazonaws.com, tokenExpirationSeconds: 86400}
azure: {tenantId: "11111111-2222-3333-4444-555555555555", cloud: AzurePublicCloud, tokenExpirationSeconds: 3600}
gcp:   {workloadIdentityProvider: "projects/123456789/locations/global/workloadIdentityPools/pool/providers/provider", tokenExpirationSeconds: 3600}
identities:
  - namespace: team-a
    serviceAccount: s3-reader
    aws:   {roleArn: "arn:aws:iam::111122223333:role/s3-reader"}
  - namespace: analytics
    serviceAccount: "*"
    gcp:   {serviceAccount: "reader@my-project.iam.gserviceaccount.com"}
    azure: {clientId: "00000000-1111-2222-3333-444444444444", tenantId: "11111111-2222-3333-4444-555555555555"}
"#;

    #[test]
    fn parses_the_documented_schema() {
        let config = Config::parse(ISSUE_EXAMPLE, &Settings::default()).unwrap();
        assert_eq!(config.settings.aws.region.as_deref(), Some("us-west-2"));
        assert_eq!(config.identities.len(), 2);
        let mapping = config.mapping_for("analytics", "anything").unwrap();
        assert!(mapping.gcp.is_some());
        assert!(config.mapping_for("team-a", "other").is_none());
        assert!(config.mapping_for("team-a", "s3-reader").unwrap().aws.is_some());
    }

    #[test]
    fn empty_and_null_documents_mean_no_mappings() {
        for text in ["", "  \n", "null", "{}"] {
            let config = Config::parse(text, &Settings::default()).unwrap();
            assert!(config.identities.is_empty(), "{text:?}");
        }
    }

    #[test]
    fn unknown_fields_are_errors() {
        let err = Config::parse("aws: {regoin: us-west-2}", &Settings::default()).unwrap_err();
        assert!(err.to_string().contains("regoin"), "{err}");
        let err = Config::parse("identities: [{namespace: a, serviceAcount: b}]", &Settings::default()).unwrap_err();
        assert!(err.to_string().contains("serviceAcount"), "{err}");
        let err = Config::parse("extra: 1", &Settings::default()).unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
    }

    #[test]
    fn broken_yaml_and_wrong_shapes_are_errors() {
        assert!(matches!(
            Config::parse("aws: [", &Settings::default()),
            Err(ConfigError::Yaml(_))
        ));
        let err = Config::parse("- a\n- b", &Settings::default()).unwrap_err();
        assert!(err.to_string().contains("expected a mapping with the keys"), "{err}");
        let err = Config::parse("identities: 3", &Settings::default()).unwrap_err();
        assert!(
            err.to_string().contains("identities: invalid type: integer `3`"),
            "{err}"
        );
        assert!(matches!(
            Config::parse("aws: {tokenExpirationSeconds: soon}", &Settings::default()),
            Err(ConfigError::Yaml(_))
        ));
    }

    #[test]
    fn invalid_values_are_listed() {
        let err = Config::parse(
            "identities: [{namespace: a, serviceAccount: b, aws: {roleArn: nope}}, {namespace: '', azure: {clientId: x}}]",
            &Settings::default(),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("identities[0].aws.roleArn"), "{text}");
        assert!(text.contains("identities[1].azure.clientId"), "{text}");
        assert!(text.contains("identities[1]: namespace"), "{text}");
    }

    #[test]
    fn file_settings_win_over_flags_field_by_field() {
        let mut flags = Settings::default();
        flags.aws.region = Some("eu-west-1".into());
        flags.aws.audience = Some("flag-audience".into());
        flags.azure.tenant_id = Some("11111111-2222-3333-4444-555555555555".into());
        let config = Config::parse("aws: {region: us-east-1}", &flags).unwrap();
        assert_eq!(config.settings.aws.region.as_deref(), Some("us-east-1"));
        assert_eq!(config.settings.aws.audience.as_deref(), Some("flag-audience"));
        assert_eq!(
            config.settings.azure.tenant_id.as_deref(),
            Some("11111111-2222-3333-4444-555555555555")
        );
        let defaults_only = Config::from_defaults(&flags).unwrap();
        assert_eq!(defaults_only.settings.aws.region.as_deref(), Some("eu-west-1"));
    }

    #[test]
    fn first_match_wins_across_wildcards() {
        let yaml = r#"
identities:
  - {namespace: "*", serviceAccount: "*", gcp: {}}
  - {namespace: a, serviceAccount: b, aws: {mode: podIdentity}}
"#;
        let config = Config::parse(yaml, &Settings::default()).unwrap();
        assert!(config.mapping_for("a", "b").unwrap().gcp.is_some());

        let yaml = r#"
identities:
  - {namespace: a, serviceAccount: b, aws: {mode: podIdentity}}
  - {namespace: a, serviceAccount: "*", gcp: {}}
  - {namespace: "*", serviceAccount: c, azure: {clientId: "00000000-1111-2222-3333-444444444444"}}
  - {namespace: a, serviceAccount: b, gcp: {}}
"#;
        let config = Config::parse(yaml, &Settings::default()).unwrap();
        assert!(config.mapping_for("a", "b").unwrap().aws.is_some());
        assert!(config.mapping_for("a", "c").unwrap().gcp.is_some());
        assert!(config.mapping_for("z", "c").unwrap().azure.is_some());
        assert!(config.mapping_for("z", "b").is_none());
    }

    #[test]
    fn deep_flow_nesting_is_refused_before_parsing() {
        let deep = format!("identities: {}{}", "[".repeat(20_000), "]".repeat(20_000));
        assert!(matches!(
            Config::parse(&deep, &Settings::default()),
            Err(ConfigError::TooDeep(1))
        ));
        let deep = format!("aws:\n  region: x\nidentities:\n  - {}", "{a: ".repeat(100));
        let err = Config::parse(&deep, &Settings::default()).unwrap_err();
        assert!(matches!(err, ConfigError::TooDeep(4)), "{err}");
        assert!(err.to_string().contains("deeper than 64 levels, at line 4"), "{err}");
        // At the limit the parser decides (here: not the schema).
        let at_limit = format!(
            "identities: {}{}",
            "[".repeat(MAX_FLOW_DEPTH),
            "]".repeat(MAX_FLOW_DEPTH)
        );
        assert!(matches!(
            Config::parse(&at_limit, &Settings::default()),
            Err(ConfigError::Yaml(_))
        ));
    }

    #[test]
    fn brackets_in_comments_and_quoted_strings_are_not_nesting() {
        let brackets = "[{".repeat(100);
        let yaml = format!(
            "# {brackets}\nidentities: # {brackets}\n  - {{namespace: \"a{brackets}\\\"{brackets}\", serviceAccount: 'b''{brackets}', gcp: {{}}}}\n"
        );
        let config = Config::parse(&yaml, &Settings::default()).unwrap();
        assert_eq!(config.identities[0].namespace, format!("a{brackets}\"{brackets}"));
        assert_eq!(config.identities[0].service_account, format!("b'{brackets}"));
    }

    #[test]
    fn mappings_default_to_any() {
        let config = Config::parse("identities: [{gcp: {}}]", &Settings::default()).unwrap();
        assert!(config.mapping_for("x", "y").is_some());
    }
}
