//! `convert`: other webhooks' configuration as our `config.yaml`, for teams moving over.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Context;
use serde_json::Value;

use crate::cli::{ConvertArgs, ConvertFrom};
use workload_identity_core::config::check_flow_depth;
use workload_identity_core::providers::aws;
use workload_identity_core::providers::{ANY, SETTING_EXPIRATION_SECONDS, check_expiration, check_field};
use workload_identity_core::validate;

/// The ConfigMap the AWS pod-identity-webhook reads (`pkg/cache/cache.go`: any other name is ignored).
pub const AWS_CONFIG_MAP: &str = "pod-identity-webhook";
/// Its key holding the JSON map `{"namespace/serviceAccount": Entry}`.
pub const AWS_CONFIG_KEY: &str = "config";

/// Our `config.yaml`, and what the conversion could not carry over (for stderr).
#[derive(Debug)]
pub struct Conversion {
    pub yaml: String,
    pub warnings: Vec<String>,
}

/// Returns the `config.yaml` to print on stdout and the warnings for stderr.
pub fn run(args: &ConvertArgs) -> anyhow::Result<Conversion> {
    match &args.from {
        ConvertFrom::AwsConfigmap { input } => {
            let text = if input.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading stdin")?
            } else {
                std::fs::read_to_string(input).with_context(|| format!("reading {}", input.display()))?
            };
            aws_config_map(&text).with_context(|| format!("converting {}", input.display()))
        }
    }
}

/// One entry of the AWS ConfigMap, as their `cache.Entry` reads it (Go's JSON field names match
/// case-insensitively; unknown fields are ignored there, and warned about here).
#[derive(Debug, Default, PartialEq)]
struct AwsEntry {
    role_arn: String,
    audience: String,
    use_regional_sts: bool,
    token_expiration: i64,
}

/// Converts the AWS pod-identity-webhook's ConfigMap (YAML or JSON manifest) or the JSON of its
/// `config` key into `config.yaml`, each entry's fields into its mapping's. What cannot be carried
/// over is never dropped silently: it becomes a comment in the output and a warning naming the entry.
pub fn aws_config_map(text: &str) -> anyhow::Result<Conversion> {
    let mut warnings = Vec::new();
    let entries = aws_entries(text, &mut warnings)?;
    let ordered = exact_entries_first(&entries, &mut warnings)?;
    let mut yaml = String::from(
        "# Converted from the AWS pod-identity-webhook ConfigMap (workload-identity-webhook convert aws-configmap).\n\
         # Exact ServiceAccounts come before \"*\" namespaces: the AWS webhook prefers them, our first match wins.\n\
         # stsRegionalEndpoints is written for every entry: the AWS webhook gives an entry its own UseRegionalSTS\n\
         # (false when absent) whatever its --sts-regional-endpoint flag. An entry without Audience gets\n\
         # aws.audience (default sts.amazonaws.com), one without TokenExpiration aws.tokenExpirationSeconds.\n",
    );
    if ordered.is_empty() {
        yaml.push_str("identities: []\n");
        return Ok(Conversion { yaml, warnings });
    }
    yaml.push_str("identities:\n");
    for ((namespace, service_account), (key, entry)) in ordered {
        write_mapping(&mut yaml, &mut warnings, namespace, service_account, key, &entry);
    }
    Ok(Conversion { yaml, warnings })
}

/// The AWS webhook's entries, keyed `namespace/serviceAccount`: the input itself, or the JSON in
/// the ConfigMap's `config` key.
fn aws_entries(text: &str, warnings: &mut Vec<String>) -> anyhow::Result<serde_json::Map<String, Value>> {
    // JSON first, read as Go reads it (a repeated key: the last one counts); else YAML.
    let document: Value = match serde_json::from_str(text) {
        Ok(document) => document,
        Err(_) => {
            check_flow_depth(text)?;
            serde_yaml_ng::from_str(text).map_err(|err| anyhow::anyhow!("the input is not YAML or JSON: {err}"))?
        }
    };
    let entries = if document.get("kind") == Some(&Value::from("ConfigMap")) {
        let name = document.pointer("/metadata/name").and_then(Value::as_str);
        if name != Some(AWS_CONFIG_MAP) {
            warnings.push(format!(
                "the ConfigMap is named {name:?}; the AWS webhook reads only the one named {AWS_CONFIG_MAP:?}"
            ));
        }
        let config = document
            .pointer(&format!("/data/{AWS_CONFIG_KEY}"))
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow::anyhow!("the ConfigMap has no data.{AWS_CONFIG_KEY} (a JSON string)"))?;
        serde_json::from_str(config).map_err(|err| anyhow::anyhow!("data.{AWS_CONFIG_KEY} is not JSON: {err}"))?
    } else {
        document
    };
    let Value::Object(entries) = entries else {
        anyhow::bail!(
            "expected a JSON object {{\"namespace/serviceAccount\": {{\"RoleARN\": ...}}}} or a ConfigMap holding one"
        );
    };
    Ok(entries)
}

/// A ServiceAccount (namespace, name) and the AWS entry (key, fields) for it.
type KeyedEntry<'a> = ((&'a str, &'a str), (&'a str, AwsEntry));

/// The entries read and ordered as the AWS webhook prefers them. Their lookup tries
/// `namespace/name` before `*/name`, whatever the order; ours takes the first match, so exact
/// entries go first (each group sorted, for a stable output).
fn exact_entries_first<'a>(
    entries: &'a serde_json::Map<String, Value>,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Vec<KeyedEntry<'a>>> {
    let mut exact = BTreeMap::new();
    let mut any_namespace = BTreeMap::new();
    for (key, value) in entries {
        let (namespace, service_account) = split_key(key)?;
        let entry = aws_entry(key, value, warnings)?;
        let group = if namespace == ANY {
            &mut any_namespace
        } else {
            &mut exact
        };
        group.insert((namespace, service_account), (key.as_str(), entry));
    }
    Ok(exact.into_iter().chain(any_namespace).collect())
}

/// One entry as a mapping of `config.yaml`, preceded by comments for what is not carried over
/// (each also a warning naming the entry); only the comments when the entry is left out.
fn write_mapping(
    yaml: &mut String,
    warnings: &mut Vec<String>,
    namespace: &str,
    service_account: &str,
    key: &str,
    entry: &AwsEntry,
) {
    let mut notes = Vec::new();
    let fields = match left_out(key, service_account, entry) {
        Some(why) => {
            notes.push(why);
            None
        }
        None => Some(mapping_fields(entry, &mut notes)),
    };
    for note in &notes {
        let _ = writeln!(yaml, "  # {note}");
    }
    warnings.extend(notes.iter().map(|note| format!("entry {key:?}: {note}")));
    if let Some(fields) = fields {
        let _ = writeln!(
            yaml,
            "  - namespace: {}\n    serviceAccount: {}\n    aws: {{{}}}",
            quoted(namespace),
            quoted(service_account),
            fields.join(", ")
        );
    }
}

/// `namespace/serviceAccount`, as their key is split (a key without exactly one `/` makes their
/// webhook index out of range or match something else, so it is refused here).
fn split_key(key: &str) -> anyhow::Result<(&str, &str)> {
    match key.split_once('/') {
        Some((namespace, service_account))
            if !namespace.is_empty() && !service_account.is_empty() && !service_account.contains('/') =>
        {
            Ok((namespace, service_account))
        }
        _ => anyhow::bail!("key {key:?} is not \"namespace/serviceAccount\""),
    }
}

fn aws_entry(key: &str, value: &Value, warnings: &mut Vec<String>) -> anyhow::Result<AwsEntry> {
    let Value::Object(fields) = value else {
        anyhow::bail!("entry {key:?} is not a JSON object");
    };
    let mut entry = AwsEntry::default();
    for (field, value) in fields {
        let wrong = |kind: &str| anyhow::anyhow!("entry {key:?}: {field} is {value}, not {kind}");
        // A JSON null leaves Go's field at its zero value.
        if value.is_null() {
            continue;
        }
        match field.to_ascii_lowercase().as_str() {
            "rolearn" => entry.role_arn = value.as_str().ok_or_else(|| wrong("a string"))?.to_owned(),
            "audience" => entry.audience = value.as_str().ok_or_else(|| wrong("a string"))?.to_owned(),
            "useregionalsts" => entry.use_regional_sts = value.as_bool().ok_or_else(|| wrong("true or false"))?,
            "tokenexpiration" => entry.token_expiration = value.as_i64().ok_or_else(|| wrong("a whole number"))?,
            _ => warnings.push(format!(
                "entry {key:?}: unknown field {field:?} ignored (as the AWS webhook does)"
            )),
        }
    }
    Ok(entry)
}

/// Why an entry gets no mapping, if it gets none.
fn left_out(key: &str, service_account: &str, entry: &AwsEntry) -> Option<String> {
    if service_account == ANY {
        // Their `ns/*` names a ServiceAccount called "*", which cannot exist; ours would match all.
        return Some(format!(
            "{key:?} left out: the AWS webhook reads it as a ServiceAccount named \"*\" (none can exist), here \"*\" would match every ServiceAccount"
        ));
    }
    if entry.role_arn.is_empty() {
        return Some(format!(
            "{key:?} left out: it has no RoleARN, so the AWS webhook injects nothing for it"
        ));
    }
    if !aws::formats::is_role_arn(&entry.role_arn) {
        return Some(format!(
            "{key:?} left out: RoleARN {:?} is not an IAM role ARN (a bare role name needs eks.amazonaws.com/role-arn on the ServiceAccount and aws.accountId)",
            entry.role_arn
        ));
    }
    None
}

/// The mapping's `aws` fields. A value our configuration refuses (checked as the mapping itself
/// is) is left out with a note saying what the Pods get instead.
fn mapping_fields(entry: &AwsEntry, notes: &mut Vec<String>) -> Vec<String> {
    let mut fields = vec![format!("roleArn: {}", quoted(&entry.role_arn))];
    let mut problems = Vec::new();
    if !entry.audience.is_empty() {
        check_field(
            &mut problems,
            "Audience",
            Some(&entry.audience),
            validate::is_audience,
            "audience",
        );
        match problems.pop() {
            None => fields.push(format!("audience: {}", quoted(&entry.audience))),
            Some(problem) => notes.push(format!(
                "{problem}; left out: the Pods get aws.audience (default sts.amazonaws.com)"
            )),
        }
    }
    fields.push(format!("stsRegionalEndpoints: {}", entry.use_regional_sts));
    // 0 is Go's "not set": their webhook then applies its --token-expiration.
    if entry.token_expiration != 0 {
        check_expiration(
            &mut problems,
            "TokenExpiration",
            Some(entry.token_expiration),
            SETTING_EXPIRATION_SECONDS,
        );
        match problems.pop() {
            None => fields.push(format!("tokenExpirationSeconds: {}", entry.token_expiration)),
            Some(problem) => notes.push(format!(
                "{problem}; left out (the apiserver refuses such a token lifetime): the Pods get aws.tokenExpirationSeconds (default 86400)"
            )),
        }
    }
    fields
}

/// A YAML double-quoted scalar (JSON's string syntax is a subset of it).
fn quoted(text: &str) -> String {
    Value::from(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use workload_identity_core::config::{Config, Settings};

    const ARN: &str = "arn:aws:iam::111122223333:role/s3-reader";

    fn converted(text: &str) -> (Config, Conversion) {
        let conversion = aws_config_map(text).unwrap();
        let config = Config::parse(&conversion.yaml, &Settings::default())
            .unwrap_or_else(|err| panic!("{err}\n{}", conversion.yaml));
        (config, conversion)
    }

    fn role_of<'c>(config: &'c Config, namespace: &str, service_account: &str) -> Option<&'c str> {
        config
            .mapping_for(namespace, service_account)?
            .aws
            .as_ref()?
            .role_arn
            .as_deref()
    }

    #[test]
    fn the_json_of_the_config_key_becomes_mappings() {
        let (config, conversion) = converted(&format!(
            r#"{{"team-a/s3-reader": {{"RoleARN": "{ARN}"}}, "team-b/app": {{"RoleARN": "arn:aws-cn:iam::111122223333:role/app"}}}}"#
        ));
        assert_eq!(role_of(&config, "team-a", "s3-reader"), Some(ARN));
        assert_eq!(
            role_of(&config, "team-b", "app"),
            Some("arn:aws-cn:iam::111122223333:role/app")
        );
        assert!(config.mapping_for("team-a", "other").is_none());
        assert!(conversion.warnings.is_empty(), "{:?}", conversion.warnings);
    }

    #[test]
    fn a_whole_config_map_in_yaml_or_json_is_read() {
        let json = format!(r#"{{"*/mysa": {{"RoleARN": "{ARN}"}}}}"#);
        let yaml = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: pod-identity-webhook, namespace: default}}\ndata:\n  config: '{json}'\n"
        );
        let manifest = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "pod-identity-webhook"}, "data": {"config": json}});
        for text in [yaml, manifest.to_string()] {
            let (config, conversion) = converted(&text);
            assert_eq!(role_of(&config, "any-namespace", "mysa"), Some(ARN), "{text}");
            assert!(conversion.warnings.is_empty(), "{:?}", conversion.warnings);
        }
        let other = serde_json::json!({"kind": "ConfigMap", "metadata": {"name": "other"}, "data": {"config": "{}"}});
        let conversion = aws_config_map(&other.to_string()).unwrap();
        assert!(conversion.warnings[0].contains("reads only the one named \"pod-identity-webhook\""));
    }

    #[test]
    fn exact_entries_win_over_any_namespace_as_on_the_aws_webhook() {
        // Sorted by key, "*/app" would come first and win for every namespace.
        let (config, _) = converted(&format!(
            r#"{{"*/app": {{"RoleARN": "{ARN}"}}, "team-a/app": {{"RoleARN": "arn:aws:iam::111122223333:role/team-a"}}}}"#
        ));
        assert_eq!(
            role_of(&config, "team-a", "app"),
            Some("arn:aws:iam::111122223333:role/team-a")
        );
        assert_eq!(role_of(&config, "team-b", "app"), Some(ARN));
    }

    #[test]
    fn field_names_match_case_insensitively_as_go_json_does() {
        let (config, conversion) = converted(&format!(
            r#"{{"a/b": {{"rolearn": "{ARN}", "AUDIENCE": "x", "useRegionalSts": true, "tokenexpiration": 900, "Extra": 1}}}}"#
        ));
        assert_eq!(role_of(&config, "a", "b"), Some(ARN));
        assert_eq!(fields_of(&config, "a", "b"), (Some("x".into()), Some(true), Some(900)));
        assert_eq!(
            conversion.warnings,
            ["entry \"a/b\": unknown field \"Extra\" ignored (as the AWS webhook does)"]
        );
    }

    /// (audience, stsRegionalEndpoints, tokenExpirationSeconds) of a converted mapping.
    fn fields_of(
        config: &Config,
        namespace: &str,
        service_account: &str,
    ) -> (Option<String>, Option<bool>, Option<i64>) {
        let aws = config
            .mapping_for(namespace, service_account)
            .and_then(|mapping| mapping.aws.clone())
            .unwrap_or_else(|| panic!("no mapping for {namespace}/{service_account}"));
        (aws.audience, aws.sts_regional_endpoints, aws.token_expiration_seconds)
    }

    #[test]
    fn audience_regional_sts_and_token_expiration_become_mapping_fields() {
        let (config, conversion) = converted(&format!(
            r#"{{"a/b": {{"RoleARN": "{ARN}", "Audience": "custom", "UseRegionalSTS": true, "TokenExpiration": 20000}},
               "a/c": {{"RoleARN": "{ARN}", "Audience": "", "UseRegionalSTS": false, "TokenExpiration": 0}},
               "a/d": {{"RoleARN": "{ARN}"}},
               "a/e": {{"RoleARN": "{ARN}", "TokenExpiration": 300}}}}"#
        ));
        assert!(conversion.warnings.is_empty(), "{:?}", conversion.warnings);
        assert_eq!(
            fields_of(&config, "a", "b"),
            (Some("custom".into()), Some(true), Some(20000))
        );
        // Their zero values: no audience or lifetime of its own (the cluster's applies), and an
        // explicit false, which their webhook gives the entry whatever its flag says.
        assert_eq!(fields_of(&config, "a", "c"), (None, Some(false), None));
        assert_eq!(fields_of(&config, "a", "d"), (None, Some(false), None));
        // Below the apiserver's floor: kept, and raised to 600 when tokens are made.
        assert_eq!(fields_of(&config, "a", "e"), (None, Some(false), Some(300)));
        assert!(
            conversion
                .yaml
                .contains(&format!("aws: {{roleArn: \"{ARN}\", audience: \"custom\", stsRegionalEndpoints: true, tokenExpirationSeconds: 20000}}")),
            "{}",
            conversion.yaml
        );
    }

    #[test]
    fn field_values_our_configuration_refuses_are_left_out_with_a_warning() {
        let (config, conversion) = converted(&format!(
            r#"{{"a/b": {{"RoleARN": "{ARN}", "Audience": "two words", "UseRegionalSTS": true, "TokenExpiration": -5}},
               "a/c": {{"RoleARN": "{ARN}", "TokenExpiration": 4294967297}}}}"#
        ));
        assert_eq!(fields_of(&config, "a", "b"), (None, Some(true), None));
        assert_eq!(fields_of(&config, "a", "c"), (None, Some(false), None));
        assert_eq!(conversion.warnings.len(), 3, "{:?}", conversion.warnings);
        for (key, message) in [
            ("a/b", "Audience: \"two words\" is not a valid audience; left out"),
            ("a/b", "TokenExpiration: -5 is outside 1..=4294967296; left out"),
            ("a/c", "TokenExpiration: 4294967297 is outside 1..=4294967296; left out"),
        ] {
            assert!(
                conversion
                    .warnings
                    .iter()
                    .any(|warning| warning.starts_with(&format!("entry {key:?}: {message}"))),
                "{key}: {message}: {:?}",
                conversion.warnings
            );
            assert!(
                conversion.yaml.contains(&format!("  # {message}")),
                "{}",
                conversion.yaml
            );
        }
    }

    #[test]
    fn entries_it_cannot_map_are_left_out_with_a_warning() {
        let (config, conversion) = converted(&format!(
            r#"{{"a/*": {{"RoleARN": "{ARN}"}}, "a/none": {{"Audience": "x"}}, "a/name": {{"RoleARN": "s3-reader"}}}}"#
        ));
        assert!(config.identities.is_empty());
        assert_eq!(conversion.warnings.len(), 3, "{:?}", conversion.warnings);
        for (key, why) in [
            ("a/*", "a ServiceAccount named \"*\""),
            ("a/none", "has no RoleARN"),
            ("a/name", "is not an IAM role ARN"),
        ] {
            assert!(
                conversion.warnings.iter().any(|warning| warning
                    .starts_with(&format!("entry {key:?}: {key:?} left out: "))
                    && warning.contains(why)),
                "{key}: {:?}",
                conversion.warnings
            );
        }
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        for (text, message) in [
            ("[1, 2]", "expected a JSON object"),
            (
                "{\"a\": {\"RoleARN\": \"x\"}}",
                "key \"a\" is not \"namespace/serviceAccount\"",
            ),
            ("{\"a/b/c\": {}}", "key \"a/b/c\" is not"),
            ("{\"/b\": {}}", "key \"/b\" is not"),
            ("{\"a/b\": \"arn\"}", "entry \"a/b\" is not a JSON object"),
            (
                "{\"a/b\": {\"RoleARN\": 3}}",
                "entry \"a/b\": RoleARN is 3, not a string",
            ),
            (
                "{\"a/b\": {\"TokenExpiration\": 1.5}}",
                "TokenExpiration is 1.5, not a whole number",
            ),
            (
                "{\"a/b\": {\"UseRegionalSTS\": \"yes\"}}",
                "UseRegionalSTS is \"yes\", not true or false",
            ),
            ("{\"a/b\": ", "not YAML or JSON"),
            ("kind: ConfigMap\ndata: {}", "has no data.config"),
            ("kind: ConfigMap\ndata: {config: '{'}", "data.config is not JSON"),
        ] {
            let err = aws_config_map(text).unwrap_err().to_string();
            assert!(err.contains(message), "{text}: {err}");
        }
        assert!(aws_config_map(&"[".repeat(100_000)).is_err());
    }

    #[test]
    fn an_empty_config_gives_an_empty_but_valid_file() {
        let (config, conversion) = converted("{}");
        assert!(config.identities.is_empty());
        assert!(conversion.yaml.contains("identities: []"));
    }

    #[test]
    fn names_that_need_quotes_stay_exact() {
        let (config, _) = converted(&format!(r#"{{"yes/null": {{"RoleARN": "{ARN}"}}}}"#));
        assert_eq!(role_of(&config, "yes", "null"), Some(ARN));
    }
}
