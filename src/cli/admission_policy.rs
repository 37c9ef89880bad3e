//! `validating-admission-policy`: the ServiceAccount part of the identity policy as a
//! ValidatingAdmissionPolicy and its binding, CEL generated from the same `policy:` of
//! `config.yaml`, so that the apiserver itself refuses a ServiceAccount the policy forbids even
//! while the webhook is unreachable (its `failurePolicy: Ignore` then lets requests through).
//!
//! The CEL reads the identity annotations as the webhook does: every key compared trimmed and in
//! lowercase, each value trimmed and lowercased (a bare AWS role name composed with
//! `aws.accountId`), matched against the rules that select the namespace (by name, and by its
//! labels from `namespaceObject` for rules with a `namespaceSelector`).

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use serde_json::{Value, json};

use workload_identity_core::config::Config;
use workload_identity_core::policy::{CompiledRule, Mode, Operator, Policy, Selector};
use workload_identity_core::providers::claim::Field;

#[derive(Args, Debug)]
pub struct AdmissionPolicyArgs {
    /// config.yaml (or the webhook's ConfigMap manifest) holding the policy.
    #[arg(long)]
    pub config: PathBuf,
    /// Name of the ValidatingAdmissionPolicy and its binding.
    #[arg(long, default_value = "workload-identity-policy")]
    pub name: String,
}

/// The policy and binding as YAML, two documents.
pub fn run(args: &AdmissionPolicyArgs) -> anyhow::Result<String> {
    let text = super::validate::read(&args.config)?.text;
    let config = Config::parse(&text, &Default::default())?;
    if !config.policy.is_on() {
        bail!(
            "{} has no identity policy in force (policy: with mode enforce or warn)",
            args.config.display()
        );
    }
    let [policy, binding] = objects(&config, &args.name);
    Ok(format!(
        "{}---\n{}",
        serde_yaml_ng::to_string(&policy)?,
        serde_yaml_ng::to_string(&binding)?
    ))
}

/// The ValidatingAdmissionPolicy and its binding (`Deny` in mode enforce, `Warn` in mode warn).
pub fn objects(config: &Config, name: &str) -> [Value; 2] {
    let policy = &config.policy;
    let validations: Vec<Value> = Field::ALL
        .into_iter()
        .map(|field| validation(policy, config, field))
        .collect();
    let actions = match policy.mode {
        Mode::Warn => json!(["Warn", "Audit"]),
        _ => json!(["Deny", "Audit"]),
    };
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["serviceaccounts"],
            }]},
            "variables": [
                {
                    "name": "annotations",
                    "expression": "has(object.metadata.annotations) ? object.metadata.annotations : {}",
                },
                {
                    "name": "namespaceLabels",
                    "expression": "has(namespaceObject.metadata.labels) ? namespaceObject.metadata.labels : {}",
                },
            ],
            "validations": validations,
        }
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": actions},
    });
    [policy, binding]
}

/// One field's check: every annotation whose key (trimmed, lowercase) claims the field holds a
/// value a rule selecting the namespace allows.
fn validation(policy: &Policy, config: &Config, field: Field) -> Value {
    let keys = field
        .annotation_keys()
        .iter()
        .map(|key| quote(key))
        .collect::<Vec<_>>()
        .join(", ");
    let value = "variables.annotations[k].trim().lowerAscii()";
    let value = match (field, &config.settings.aws.account_id) {
        (Field::AwsRole, Some(account)) => {
            let partition = config.settings.aws.partition.as_deref().unwrap_or("aws");
            format!(
                "({value}.startsWith('arn:') ? {value} : {} + {value})",
                quote(&format!("arn:{partition}:iam::{account}:role/"))
            )
        }
        _ => value.to_owned(),
    };
    let allowed: Vec<String> = policy
        .rules
        .iter()
        .filter_map(|rule| rule_allows(rule, field, &value))
        .collect();
    let allowed = if allowed.is_empty() {
        "false".to_owned()
    } else {
        allowed.join(" || ")
    };
    json!({
        "expression": format!("variables.annotations.all(k, !(k.trim().lowerAscii() in [{keys}]) || {allowed})"),
        "messageExpression": format!(
            "'identity policy: ServiceAccounts of namespace ' + request.namespace + ' may not claim this {} (annotation {})'",
            field.what(),
            field.annotation_keys().join(" or ")
        ),
        "reason": "Forbidden",
    })
}

/// `rule` selects the namespace and allows the value, or `None` if it allows nothing of `field`.
fn rule_allows(rule: &CompiledRule, field: Field, value: &str) -> Option<String> {
    let patterns = rule.allowed.get(&field).filter(|patterns| !patterns.is_empty())?;
    let namespaces = if rule.namespaces.is_empty() {
        "true".to_owned()
    } else {
        matches_any("request.namespace", &rule.namespaces)
    };
    let labels = rule.selector.as_ref().map_or("true".to_owned(), selector_holds);
    Some(format!(
        "(({namespaces}) && ({labels}) && ({}))",
        matches_any(value, patterns)
    ))
}

/// A label selector over the namespace's labels, with Kubernetes' meaning of each operator.
fn selector_holds(selector: &Selector) -> String {
    let labels = "variables.namespaceLabels";
    let held: Vec<String> = selector
        .requirements
        .iter()
        .map(|requirement| {
            let key = quote(&requirement.key);
            let values: Vec<String> = requirement.values.iter().map(|value| quote(value)).collect();
            let values = values.join(", ");
            match requirement.operator {
                Operator::In => format!("({key} in {labels} && {labels}[{key}] in [{values}])"),
                Operator::NotIn => format!("(!({key} in {labels}) || !({labels}[{key}] in [{values}]))"),
                Operator::Exists => format!("({key} in {labels})"),
                Operator::DoesNotExist => format!("!({key} in {labels})"),
            }
        })
        .collect();
    if held.is_empty() {
        "true".to_owned()
    } else {
        held.join(" && ")
    }
}

fn matches_any(value: &str, patterns: &[String]) -> String {
    patterns
        .iter()
        .map(|pattern| format!("{value}.matches({})", quote(&regex(pattern))))
        .collect::<Vec<_>>()
        .join(" || ")
}

/// A pattern (`*` for any run of characters) as an anchored RE2 expression matching across lines,
/// as the webhook's matcher does. Patterns hold only `a-z0-9*-_.@:/=,+` (checked at load).
fn regex(pattern: &str) -> String {
    let body: String = pattern
        .chars()
        .map(|c| match c {
            '*' => ".*".to_owned(),
            '.' | '+' => format!("[{c}]"),
            c => c.to_string(),
        })
        .collect();
    format!("^(?s){body}$")
}

/// A CEL string literal (patterns, label keys and values hold no quote or backslash).
fn quote(text: &str) -> String {
    format!("'{text}'")
}
