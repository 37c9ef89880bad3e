//! Namespace label selectors in policy rules (`namespaceSelector:`), with the meaning and syntax
//! of Kubernetes label selectors: `matchLabels` and `matchExpressions` (`In`, `NotIn`, `Exists`,
//! `DoesNotExist`), all of them required; `{}` selects every namespace.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `namespaceSelector:` in a policy rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels the namespace must carry with exactly these values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements on the namespace's labels.
    #[serde(default)]
    pub match_expressions: Vec<LabelRequirement>,
}

/// One of `matchExpressions`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelRequirement {
    /// The label key (`team`, `example.com/tenant`).
    pub key: String,
    /// `In`, `NotIn` (also true where the label is missing), `Exists` or `DoesNotExist`.
    pub operator: Operator,
    /// The values for `In` and `NotIn` (at least one); none for `Exists` and `DoesNotExist`.
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// A checked selector: every requirement must hold (`matchLabels` entries are `In` with one value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

/// A checked requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

impl Requirement {
    fn holds(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|value| self.values.contains(value)),
            // As in Kubernetes: a namespace without the key is not in the set.
            Operator::NotIn => value.is_none_or(|value| !self.values.contains(value)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

impl Selector {
    /// Checks the selector; each problem names its field under `at`.
    pub fn compile(selector: &LabelSelector, at: &str, problems: &mut Vec<String>) -> Selector {
        let mut requirements = Vec::new();
        for (key, value) in &selector.match_labels {
            let at = format!("{at}.matchLabels");
            check_key(key, &at, problems);
            check_value(value, &at, problems);
            requirements.push(Requirement {
                key: key.clone(),
                operator: Operator::In,
                values: vec![value.clone()],
            });
        }
        for (i, requirement) in selector.match_expressions.iter().enumerate() {
            let at = format!("{at}.matchExpressions[{i}]");
            check_key(&requirement.key, &format!("{at}.key"), problems);
            let wants_values = matches!(requirement.operator, Operator::In | Operator::NotIn);
            if wants_values && requirement.values.is_empty() {
                problems.push(format!(
                    "{at}.operator: {:?} needs at least one value in values",
                    requirement.operator
                ));
            }
            if !wants_values && !requirement.values.is_empty() {
                problems.push(format!("{at}.values: {:?} takes no values", requirement.operator));
            }
            for value in &requirement.values {
                check_value(value, &format!("{at}.values"), problems);
            }
            requirements.push(Requirement {
                key: requirement.key.clone(),
                operator: requirement.operator,
                values: requirement.values.clone(),
            });
        }
        Selector { requirements }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|requirement| requirement.holds(labels))
    }
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name of up to 63 characters.
fn check_key(key: &str, at: &str, problems: &mut Vec<String>) {
    let (prefix, name) = key
        .rsplit_once('/')
        .map_or((None, key), |(prefix, name)| (Some(prefix), name));
    let prefix_ok = prefix.is_none_or(|prefix| {
        !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    });
    if !prefix_ok || name.is_empty() || !is_label_text(name) {
        problems.push(format!(
            "{at}: {key:?} is not a label key (an optional DNS prefix and \"/\", then up to 63 of a-z, A-Z, 0-9, -, _, . starting and ending with a letter or digit)"
        ));
    }
}

/// A label value: empty, or up to 63 characters as a key's name.
fn check_value(value: &str, at: &str, problems: &mut Vec<String>) {
    if !value.is_empty() && !is_label_text(value) {
        problems.push(format!(
            "{at}: {value:?} is not a label value (up to 63 of a-z, A-Z, 0-9, -, _, . starting and ending with a letter or digit)"
        ));
    }
}

fn is_label_text(text: &str) -> bool {
    let bytes = text.as_bytes();
    let edge = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    text.len() <= 63
        && edge(bytes.first())
        && edge(bytes.last())
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
}
