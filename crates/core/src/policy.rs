//! The identity policy (`policy:` in `config.yaml`): which identities the ServiceAccounts of which
//! namespaces may claim, per cloud. The platform team writes it; tenants who may edit their own
//! ServiceAccounts cannot claim an identity it does not give their namespace, by any source:
//! annotations of every convention (checked in any case and spacing of key and value), mappings
//! (checked when the configuration loads) and EKS Pod Identity mode.
//!
//! Matching is on values trimmed and lowercased (IAM role names, Google e-mails and Azure ids are
//! all case-insensitive to their clouds), against patterns in which `*` matches any run of
//! characters. Once a policy is in force a namespace may claim only what a rule selecting it
//! allows: a namespace no rule selects may claim nothing. A rule selects namespaces by name
//! pattern, by label selector, or by both (then both must match).

mod selector;

use std::collections::BTreeMap;

use serde::Deserialize;

pub use selector::{LabelRequirement, LabelSelector, Operator, Requirement, Selector};

use crate::providers::claim::{Claim, Field, normalize};
use crate::providers::{ANY, Settings, aws, gcp};

/// `policy:` in `config.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyFile {
    /// `enforce` (the default once a policy is written: refuse ServiceAccounts, leave Pods
    /// without the identity), `warn` (admit with warnings) or `off`.
    #[serde(default)]
    pub mode: Mode,
    /// Rules: a namespace may claim what any rule selecting it allows, and nothing else.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    #[default]
    Enforce,
    Warn,
    Off,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
            Mode::Off => "off",
        }
    }
}

/// One rule of the identity policy.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    /// The rule's name, shown in refusals, warnings, audit annotations and `explain`.
    pub name: String,
    /// Namespace name patterns the rule selects (`*` matches any run of characters: `team-a-*`);
    /// omitted, any name (then `namespaceSelector` is required).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// The labels of the namespaces the rule selects, as a Kubernetes label selector
    /// (`matchLabels`, `matchExpressions`); with `namespaces`, both must match.
    #[serde(default)]
    pub namespace_selector: Option<LabelSelector>,
    /// The AWS identities the selected namespaces may claim.
    #[serde(default)]
    pub aws: Option<AwsAllowed>,
    /// The Google identities the selected namespaces may claim.
    #[serde(default)]
    pub gcp: Option<GcpAllowed>,
    /// The Azure identities the selected namespaces may claim.
    #[serde(default)]
    pub azure: Option<AzureAllowed>,
}

/// `aws:` in a policy rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AwsAllowed {
    /// IAM role ARN patterns (`arn:aws:iam::111122223333:role/team-a-*`).
    #[serde(default)]
    pub role_arns: Vec<String>,
    /// AWS accounts (12 digits) any of whose roles may be claimed.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Whether mappings may give EKS Pod Identity (the role then comes from the EKS association).
    #[serde(default)]
    pub pod_identity: bool,
}

/// `gcp:` in a policy rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GcpAllowed {
    /// Google service-account e-mail patterns (`*@team-a.iam.gserviceaccount.com`).
    #[serde(default)]
    pub service_accounts: Vec<String>,
    /// Projects any of whose service accounts (`NAME@PROJECT.iam.gserviceaccount.com`) may be claimed.
    #[serde(default)]
    pub projects: Vec<String>,
    /// Workload identity provider patterns (default: only `gcp.workloadIdentityProvider`); direct
    /// resource access (no service account) is allowed through an allowed provider.
    #[serde(default)]
    pub workload_identity_providers: Vec<String>,
}

/// `azure:` in a policy rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AzureAllowed {
    /// Client id patterns (`*` also allows a client id the Pod sets itself, with the
    /// `azure.workload.identity/use` label).
    #[serde(default)]
    pub client_ids: Vec<String>,
    /// Tenant ids (default: only `azure.tenantId`).
    #[serde(default)]
    pub tenant_ids: Vec<String>,
}

/// The policy in force, its patterns checked and lowercased.
#[derive(Debug, Clone)]
pub struct Policy {
    pub mode: Mode,
    pub rules: Vec<CompiledRule>,
}

/// No policy: off (a written policy without `mode` enforces; see [`Mode`]).
impl Default for Policy {
    fn default() -> Self {
        Policy {
            mode: Mode::Off,
            rules: Vec::new(),
        }
    }
}

/// A namespace as the policy selects it: its name and what is known of its labels.
#[derive(Debug, Clone, Copy)]
pub struct Namespace<'a> {
    pub name: &'a str,
    pub labels: Labels<'a>,
}

#[derive(Debug, Clone, Copy)]
pub enum Labels<'a> {
    Known(&'a BTreeMap<String, String>),
    /// Not read (no cluster, or the look-up failed): a rule with a selector does not select it.
    Unknown,
    /// A mapping checked at load, before any namespace is seen: a rule with a selector may select
    /// it. Every identity is checked again, with the labels, when a Pod is admitted.
    Any,
}

impl<'a> Namespace<'a> {
    /// A namespace whose labels were not read.
    pub fn named(name: &'a str) -> Self {
        Namespace {
            name,
            labels: Labels::Unknown,
        }
    }
}

/// A rule as the policy matches it: per field, the patterns a selected namespace may claim.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub name: String,
    /// Name patterns (empty: any name).
    pub namespaces: Vec<String>,
    pub selector: Option<Selector>,
    pub allowed: BTreeMap<Field, Vec<String>>,
    pub pod_identity: bool,
}

/// What the policy says about one claim, or about every claim of one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No policy in force.
    Off,
    Allowed {
        rule: String,
    },
    Denied {
        /// The rules that select the namespace (none: no rule does), for the audit log.
        rules: Vec<String>,
        message: String,
    },
}

impl Decision {
    pub fn is_denied(&self) -> bool {
        matches!(self, Decision::Denied { .. })
    }

    /// The rule that decided, as the audit log and `explain` show it.
    pub fn rule(&self) -> Option<String> {
        match self {
            Decision::Off => None,
            Decision::Allowed { rule } => Some(rule.clone()),
            Decision::Denied { rules, .. } if rules.is_empty() => Some("(no rule selects the namespace)".to_owned()),
            Decision::Denied { rules, .. } => Some(rules.join(",")),
        }
    }
}

/// Checks one rule of `policy.rules`, naming the rule's fields in its problems.
struct RuleChecker<'a> {
    index: usize,
    problems: &'a mut Vec<String>,
}

impl RuleChecker<'_> {
    /// The rule compiled: its patterns normalized, the cluster settings filling omitted lists.
    fn compile(&mut self, rule: &Rule, settings: &Settings) -> CompiledRule {
        if rule.name.trim().is_empty() {
            let at = self.at("name");
            self.problems.push(format!("{at}: must not be empty"));
        }
        if rule.namespaces.is_empty() && rule.namespace_selector.is_none() {
            let at = self.at("namespaces");
            self.problems.push(format!(
                "{at}: list at least one namespace pattern (\"*\" for all) or give a namespaceSelector"
            ));
        }
        let namespaces = self.patterns("namespaces", &rule.namespaces, |_| true);
        let at = self.at("namespaceSelector");
        let selector = rule
            .namespace_selector
            .as_ref()
            .map(|selector| Selector::compile(selector, &at, self.problems));
        let mut allowed = BTreeMap::new();
        if let Some(aws) = &rule.aws {
            self.aws(aws, &mut allowed);
        }
        if let Some(google) = &rule.gcp {
            self.gcp(google, settings, &mut allowed);
        }
        if let Some(entra) = &rule.azure {
            self.azure(entra, settings, &mut allowed);
        }
        CompiledRule {
            name: rule.name.trim().to_owned(),
            namespaces,
            selector,
            allowed,
            pod_identity: rule.aws.as_ref().is_some_and(|aws| aws.pod_identity),
        }
    }

    /// Role patterns: those listed and every role of the accounts listed.
    fn aws(&mut self, aws: &AwsAllowed, allowed: &mut BTreeMap<Field, Vec<String>>) {
        let mut roles = self.patterns("aws.roleArns", &aws.role_arns, |_| true);
        let accounts = self.patterns("aws.accounts", &aws.accounts, aws::formats::is_aws_account_id);
        roles.extend(accounts.iter().map(|account| format!("arn:*:iam::{account}:role/*")));
        allowed.insert(Field::AwsRole, roles);
    }

    /// Service account patterns (those listed and every one of the projects listed) and
    /// workload identity providers (the cluster's when none is listed).
    fn gcp(&mut self, google: &GcpAllowed, settings: &Settings, allowed: &mut BTreeMap<Field, Vec<String>>) {
        let mut emails = self.patterns("gcp.serviceAccounts", &google.service_accounts, |_| true);
        let projects = self.patterns("gcp.projects", &google.projects, gcp::formats::is_google_project_id);
        emails.extend(
            projects
                .iter()
                .map(|project| format!("*@{project}.iam.gserviceaccount.com")),
        );
        allowed.insert(Field::GcpServiceAccount, emails);
        let mut providers = self.patterns(
            "gcp.workloadIdentityProviders",
            &google.workload_identity_providers,
            |_| true,
        );
        if google.workload_identity_providers.is_empty() {
            providers.extend(settings.gcp.workload_identity_provider.as_deref().map(normalize));
        }
        allowed.insert(Field::GcpProvider, providers);
    }

    /// Client ID patterns and tenants (the cluster's when none is listed).
    fn azure(&mut self, entra: &AzureAllowed, settings: &Settings, allowed: &mut BTreeMap<Field, Vec<String>>) {
        allowed.insert(
            Field::AzureClientId,
            self.patterns("azure.clientIds", &entra.client_ids, |_| true),
        );
        let mut tenants = self.patterns("azure.tenantIds", &entra.tenant_ids, |_| true);
        if entra.tenant_ids.is_empty() {
            tenants.extend(settings.azure.tenant_id.as_deref().map(normalize));
        }
        allowed.insert(Field::AzureTenantId, tenants);
    }

    /// The valid patterns of a list, normalized; each invalid one is a problem.
    fn patterns(&mut self, field: &str, values: &[String], is_valid: fn(&str) -> bool) -> Vec<String> {
        values
            .iter()
            .map(|value| normalize(value))
            .filter(|value| {
                let ok = is_pattern(value) && is_valid(value);
                if !ok {
                    let at = self.at(field);
                    self.problems.push(format!("{at}: {value:?} is not a valid pattern"));
                }
                ok
            })
            .collect()
    }

    fn at(&self, field: &str) -> String {
        format!("policy.rules[{}].{field}", self.index)
    }
}

/// The characters a pattern may hold (once lowercased): those of the values it matches, and `*`.
fn is_pattern(pattern: &str) -> bool {
    !pattern.is_empty()
        && pattern
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"*-_.@:/=,+".contains(&b))
}

impl Policy {
    /// Checks and compiles `policy:`, with the cluster settings that stand for an omitted
    /// provider or tenant list. Problems name their field.
    pub fn compile(file: Option<PolicyFile>, settings: &Settings, problems: &mut Vec<String>) -> Policy {
        let Some(file) = file else {
            return Policy::default();
        };
        let rules = file
            .rules
            .into_iter()
            .enumerate()
            .map(|(index, rule)| {
                let mut checker = RuleChecker { index, problems };
                checker.compile(&rule, settings)
            })
            .collect();
        Policy { mode: file.mode, rules }
    }

    pub fn is_on(&self) -> bool {
        self.mode != Mode::Off
    }

    /// Whether any rule selects by label: then the shell looks the namespace's labels up.
    pub fn selects_by_label(&self) -> bool {
        self.is_on() && self.rules.iter().any(|rule| rule.selector.is_some())
    }

    /// The rules that select `namespace`; a mapping's `*` only by a rule selecting every name.
    fn selecting<'p>(&'p self, namespace: Namespace<'p>) -> impl Iterator<Item = &'p CompiledRule> + 'p {
        self.rules.iter().filter(move |rule| rule.selects(namespace))
    }

    /// Whether `namespace` may claim every one of `claims`: the first claim refused decides, else the
    /// rule that allowed the first claim.
    pub fn decide(&self, namespace: Namespace<'_>, claims: &[Claim]) -> Decision {
        if !self.is_on() || claims.is_empty() {
            return Decision::Off;
        }
        let mut allowed_by = None;
        for claim in claims {
            let rule = self.selecting(namespace).find(|rule| rule.allows(claim));
            match rule {
                Some(rule) => {
                    allowed_by.get_or_insert_with(|| rule.name.clone());
                }
                None => return self.denial(namespace, claim),
            }
        }
        Decision::Allowed {
            rule: allowed_by.unwrap_or_default(),
        }
    }

    fn denial(&self, namespace: Namespace<'_>, claim: &Claim) -> Decision {
        let rules: Vec<String> = self.selecting(namespace).map(|rule| rule.name.clone()).collect();
        let name = namespace.name;
        let mut message = if rules.is_empty() {
            format!(
                "identity policy: no rule selects namespace {name}, so it may not claim {}",
                claim.describe()
            )
        } else {
            let quoted: Vec<String> = rules.iter().map(|rule| format!("{rule:?}")).collect();
            format!(
                "identity policy: rule {} (selecting namespace {name}) does not allow {}",
                quoted.join(", "),
                claim.describe()
            )
        };
        let by_label = self
            .rules
            .iter()
            .any(|rule| rule.selector.is_some() && rule.selects_name(name));
        if by_label && matches!(namespace.labels, Labels::Unknown) {
            message.push_str(
                " (the namespace's labels could not be read, so no rule with a namespaceSelector selects it)",
            );
        }
        Decision::Denied { rules, message }
    }

    /// The claims of a ServiceAccount's annotations (keys and values in any case and spacing),
    /// a bare AWS role name composed as the webhook composes it.
    pub fn annotation_claims(annotations: &BTreeMap<String, String>, settings: &Settings) -> Vec<Claim> {
        let mut claims: Vec<Claim> = annotations
            .iter()
            .filter_map(|(key, value)| {
                let field = Field::of_annotation(key)?;
                let mut value = value.trim().to_owned();
                if field == Field::AwsRole
                    && !normalize(&value).starts_with("arn:")
                    && let Some(account) = &settings.aws.account_id
                {
                    let partition = settings.aws.partition.as_deref().unwrap_or("aws");
                    value = format!("arn:{partition}:iam::{account}:role/{value}");
                }
                Some(Claim {
                    field,
                    value: Some(value),
                })
            })
            .collect();
        claims.sort_by_key(|claim| claim.field);
        claims
    }
}

impl CompiledRule {
    fn selects(&self, namespace: Namespace<'_>) -> bool {
        self.selects_name(namespace.name)
            && match (&self.selector, namespace.labels) {
                (None, _) | (Some(_), Labels::Any) => true,
                (Some(selector), Labels::Known(labels)) => selector.matches(labels),
                (Some(_), Labels::Unknown) => false,
            }
    }

    /// Whether the name patterns select `name` (a mapping's `*`: only a rule for every name).
    fn selects_name(&self, name: &str) -> bool {
        self.namespaces.is_empty()
            || self.namespaces.iter().any(|pattern| {
                if name == ANY {
                    pattern == ANY
                } else {
                    glob_match(pattern, name)
                }
            })
    }

    fn allows(&self, claim: &Claim) -> bool {
        let patterns = self.allowed.get(&claim.field).map(Vec::as_slice).unwrap_or_default();
        match (&claim.value, claim.field) {
            (Some(value), _) => {
                let value = normalize(value);
                patterns.iter().any(|pattern| glob_match(pattern, &value))
            }
            (None, Field::AwsRole) => self.pod_identity,
            (None, _) => patterns.iter().any(|pattern| pattern == ANY),
        }
    }
}

/// Whether `value` matches `pattern`, in which `*` matches any run of characters (none too).
/// Linear in practice, quadratic at worst (no backtracking blow-up).
pub fn glob_match(pattern: &str, value: &str) -> bool {
    let (pattern, value) = (pattern.as_bytes(), value.as_bytes());
    let (mut p, mut v) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, v));
            p += 1;
        } else if p < pattern.len() && pattern[p] == value[v] {
            p += 1;
            v += 1;
        } else if let Some((star_p, star_v)) = star {
            p = star_p + 1;
            v = star_v + 1;
            star = Some((star_p, star_v + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests;
