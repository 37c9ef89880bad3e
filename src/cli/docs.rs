//! `docs` (hidden): the documentation generated from the code. The reference tables of
//! docs/reference.md (settings, mappings, annotations, flags, environment variables, metrics),
//! the `config` and `clusterSettings` schemas of the chart's values.schema.json and the chart
//! README's values table, and docs/config.schema.json. `docs print PART` prints one, `docs update` writes them into their
//! files, `docs check` names each file that differs (tests/docs.rs runs it).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};

use workload_identity_core::config;
use workload_identity_core::mutation::MANAGED_ANNOTATIONS;
use workload_identity_core::providers;

#[derive(Args, Debug)]
pub struct DocsArgs {
    #[command(subcommand)]
    pub action: DocsAction,

    /// The repository's root folder (docs/ and charts/ are under it).
    #[arg(long, default_value = ".", global = true)]
    pub root: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum DocsAction {
    /// Print one generated part.
    Print {
        #[arg(value_enum)]
        part: Part,
    },
    /// Write every generated part into its file.
    Update,
    /// Exit with an error naming each file that differs from what the code generates.
    Check,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Settings,
    Mappings,
    Policy,
    Annotations,
    Flags,
    Env,
    Metrics,
    ConfigSchema,
    ClusterSettingsSchema,
}

const REFERENCE: &str = "docs/reference.md";
const SCHEMA: &str = "charts/workload-identity-webhook/values.schema.json";
const VALUES: &str = "charts/workload-identity-webhook/values.yaml";
const CHART_README: &str = "charts/workload-identity-webhook/README.md";
/// The JSON schema of `config.yaml` for editors (docs/configuration.md#editing-configyaml).
const CONFIG_FILE_SCHEMA: &str = "docs/config.schema.json";

/// The tables of docs/reference.md, by the name of their markers.
const REFERENCE_PARTS: &[(&str, Part)] = &[
    ("settings", Part::Settings),
    ("mappings", Part::Mappings),
    ("policy", Part::Policy),
    ("annotations", Part::Annotations),
    ("flags", Part::Flags),
    ("env", Part::Env),
    ("metrics", Part::Metrics),
];

pub fn run(args: &DocsArgs) -> anyhow::Result<()> {
    match args.action {
        DocsAction::Print { part } => {
            print!("{}", generate(part));
            Ok(())
        }
        DocsAction::Update => {
            for (path, text) in files(&args.root)? {
                std::fs::write(args.root.join(path), text).with_context(|| format!("writing {path}"))?;
            }
            Ok(())
        }
        DocsAction::Check => {
            let mut stale = Vec::new();
            for (path, text) in files(&args.root)? {
                if read(&args.root, path)? != text {
                    stale.push(path);
                }
            }
            if stale.is_empty() {
                return Ok(());
            }
            bail!(
                "generated from the code but out of date: {} (run `workload-identity-webhook docs update`)",
                stale.join(", ")
            )
        }
    }
}

fn read(root: &Path, path: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(root.join(path)).with_context(|| format!("reading {path}"))
}

/// Every generated file as it should read: (path under the root, text).
fn files(root: &Path) -> anyhow::Result<Vec<(&'static str, String)>> {
    let mut reference = read(root, REFERENCE)?;
    for (name, part) in REFERENCE_PARTS {
        reference = replace_block(&reference, name, &generate(*part)).context(REFERENCE)?;
    }
    let mut schema: Value = serde_json::from_str(&read(root, SCHEMA)?).context(SCHEMA)?;
    let properties = schema["properties"]
        .as_object_mut()
        .context("values.schema.json has no properties")?;
    properties.insert("config".to_owned(), config_schema());
    properties.insert("clusterSettings".to_owned(), cluster_settings_schema());
    let values: serde_yaml_ng::Value = serde_yaml_ng::from_str(&read(root, VALUES)?).context(VALUES)?;
    let table = values_table(&schema, &values);
    let readme = replace_block(&read(root, CHART_README)?, "values", &table).context(CHART_README)?;
    let mut file_schema = config_schema();
    file_schema["$schema"] = config::schema()["$schema"].clone();
    file_schema["title"] = json!("config.yaml of workload-identity-webhook");
    Ok(vec![
        (REFERENCE, reference),
        (
            CONFIG_FILE_SCHEMA,
            format!("{}\n", serde_json::to_string_pretty(&file_schema)?),
        ),
        (SCHEMA, format!("{}\n", serde_json::to_string_pretty(&schema)?)),
        (CHART_README, readme),
    ])
}

/// `text` with the lines between `<!-- BEGIN GENERATED: name ... -->` and
/// `<!-- END GENERATED: name -->` replaced by `content`.
fn replace_block(text: &str, name: &str, content: &str) -> anyhow::Result<String> {
    let begin = format!("<!-- BEGIN GENERATED: {name}");
    let end = format!("<!-- END GENERATED: {name} -->");
    let start = text.find(&begin).with_context(|| format!("no marker {begin}"))?;
    let start = start + text[start..].find('\n').context("marker without a line end")? + 1;
    let stop = text[start..].find(&end).with_context(|| format!("no marker {end}"))? + start;
    Ok(format!("{}{content}{}", &text[..start], &text[stop..]))
}

fn generate(part: Part) -> String {
    match part {
        Part::Settings => settings_table(),
        Part::Mappings => mappings_table(),
        Part::Policy => policy_table(),
        Part::Annotations => annotations_table(),
        Part::Flags => flags_tables(),
        Part::Env => env_table(),
        Part::Metrics => metrics_table(),
        Part::ConfigSchema => format!("{}\n", serde_json::to_string_pretty(&config_schema()).unwrap()),
        Part::ClusterSettingsSchema => {
            format!(
                "{}\n",
                serde_json::to_string_pretty(&cluster_settings_schema()).unwrap()
            )
        }
    }
}

/// A table cell: one line, no unescaped `|`.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut out = format!("| {} |\n|{}\n", header.join(" | "), "---|".repeat(header.len()));
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out
}

/// Each cluster setting: its `config.yaml` key, its clap argument and its schema.
struct Setting {
    key: String,
    arg: clap::Arg,
    schema: Value,
}

fn settings() -> Vec<Setting> {
    let command = <providers::Settings as clap::Args>::augment_args(clap::Command::new("settings"));
    let schema = config_schema();
    let keys = providers::Settings::keys();
    let args: Vec<clap::Arg> = command.get_arguments().cloned().collect();
    assert_eq!(keys.len(), args.len(), "one flag per setting");
    keys.into_iter()
        .zip(args)
        .map(|(key, arg)| {
            let schema = match key.split_once('.') {
                Some((section, field)) => &schema["properties"][section]["properties"][field],
                None => &schema["properties"][key.as_str()],
            };
            let schema = without_null(schema);
            Setting { key, arg, schema }
        })
        .collect()
}

fn help(arg: &clap::Arg) -> String {
    arg.get_help().map(ToString::to_string).unwrap_or_default()
}

fn long(arg: &clap::Arg) -> String {
    format!("--{}", arg.get_long().unwrap_or_else(|| arg.get_id().as_str()))
}

fn env(arg: &clap::Arg) -> Option<String> {
    arg.get_env().map(|name| name.to_string_lossy().into_owned())
}

fn settings_table() -> String {
    table(
        &["`config.yaml`", "flag", "environment", "type", "meaning"],
        settings().iter().map(|setting| {
            vec![
                format!("`{}`", setting.key),
                format!("`{}`", long(&setting.arg)),
                env(&setting.arg).map(|name| format!("`{name}`")).unwrap_or_default(),
                type_name(&setting.schema),
                cell(&help(&setting.arg)),
            ]
        }),
    )
}

/// The schema's type, as a reader says it: `string`, `integer`, `boolean`, `one of a, b`.
fn type_name(schema: &Value) -> String {
    if let Some(value) = schema.get("const") {
        return format!("`{}`", value.as_str().unwrap_or_default());
    }
    if let Some(values) = schema["enum"].as_array() {
        let values: Vec<String> = values
            .iter()
            .map(|value| format!("`{}`", value.as_str().unwrap_or_default()))
            .collect();
        return format!("one of {}", values.join(", "));
    }
    match &schema["type"] {
        Value::String(name) => name.clone(),
        Value::Array(names) => names
            .iter()
            .filter_map(Value::as_str)
            .filter(|name| *name != "null")
            .collect::<Vec<_>>()
            .join(" or "),
        _ if schema["oneOf"].is_array() || schema["anyOf"].is_array() => {
            let alternatives: Vec<String> = schema["oneOf"]
                .as_array()
                .or(schema["anyOf"].as_array())
                .unwrap()
                .iter()
                .filter(|alternative| alternative["type"] != "null")
                .map(type_name)
                .collect();
            alternatives.join(" or ")
        }
        _ => String::new(),
    }
}

/// A schema without the `null` that an optional field allows.
fn without_null(schema: &Value) -> Value {
    let mut schema = schema.clone();
    if let Some(types) = schema["type"].as_array() {
        let types: Vec<Value> = types.iter().filter(|name| *name != "null").cloned().collect();
        schema["type"] = if types.len() == 1 {
            types[0].clone()
        } else {
            Value::Array(types)
        };
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alternatives) = schema[key].as_array() {
            let alternatives: Vec<Value> = alternatives
                .iter()
                .filter(|alternative| alternative["type"] != "null")
                .cloned()
                .collect();
            if alternatives.len() == 1 {
                let description = schema.get("description").cloned();
                schema = alternatives[0].clone();
                if let Some(description) = description {
                    schema["description"] = description;
                }
                break;
            }
            schema[key] = Value::Array(alternatives);
        }
    }
    if let Some(enum_values) = schema["enum"].as_array() {
        schema["enum"] = Value::Array(enum_values.iter().filter(|value| !value.is_null()).cloned().collect());
    }
    schema
}

/// The JSON schema of `config.yaml` (the chart's `config`): unknown keys refused at every level.
fn config_schema() -> Value {
    let mut schema = config::schema();
    let object = schema.as_object_mut().unwrap();
    object.remove("$schema");
    object.remove("title");
    object.insert(
        "description".to_owned(),
        json!("config.yaml of the webhook's ConfigMap: cluster settings per cloud (aws, gcp, azure) and identity mappings (identities). Generated from the webhook's code."),
    );
    schema
}

/// The chart's `clusterSettings`: each setting as its flag without the dashes, typed as in
/// `config.yaml`, nothing else.
fn cluster_settings_schema() -> Value {
    let properties: Map<String, Value> = settings()
        .into_iter()
        .map(|setting| {
            let mut schema = setting.schema;
            schema["description"] = json!(cell(&help(&setting.arg)));
            (setting.arg.get_long().unwrap().to_owned(), schema)
        })
        .collect();
    json!({
        "type": "object",
        "description": "Cluster settings as serve flags, without the leading dashes (a field in config wins over its flag). Generated from the webhook's code.",
        "additionalProperties": false,
        "properties": properties,
    })
}

/// The properties of an object schema, also when it is optional (`anyOf` with null).
fn object_properties(schema: &Value) -> Option<&Map<String, Value>> {
    schema["properties"].as_object().or_else(|| {
        schema["anyOf"]
            .as_array()
            .or(schema["oneOf"].as_array())?
            .iter()
            .find_map(|alternative| alternative["properties"].as_object())
    })
}

fn mappings_table() -> String {
    let schema = config_schema();
    let entry = &schema["properties"]["identities"]["items"];
    let properties = object_properties(entry).expect("identities entries are objects");
    // The matchers first, then each cloud's keys.
    let matchers = properties
        .iter()
        .filter(|(_, property)| object_properties(property).is_none())
        .map(|(name, property)| mapping_row(name, property));
    let clouds = properties.iter().flat_map(|(name, property)| {
        object_properties(property)
            .into_iter()
            .flatten()
            .map(move |(field, schema)| mapping_row(&format!("{name}.{field}"), schema))
    });
    table(&["key", "type", "meaning"], matchers.chain(clouds).collect::<Vec<_>>())
}

/// Every key under `policy:`, nested keys by their path (`rules[].aws.roleArns`).
fn policy_table() -> String {
    fn rows(prefix: &str, properties: &Map<String, Value>, out: &mut Vec<Vec<String>>) {
        for (name, property) in properties {
            let key = format!("{prefix}{name}");
            let items = &without_null(property)["items"];
            if let Some(nested) = object_properties(items) {
                out.push(mapping_row(&format!("{key}[]"), property));
                rows(&format!("{key}[]."), nested, out);
            } else if let Some(nested) = object_properties(property) {
                out.push(mapping_row(&key, property));
                rows(&format!("{key}."), nested, out);
            } else {
                out.push(mapping_row(&key, property));
            }
        }
    }
    let schema = config_schema();
    let policy = object_properties(&schema["properties"]["policy"]).expect("policy is an object");
    let mut out = Vec::new();
    rows("policy.", policy, &mut out);
    table(&["key", "type", "meaning"], out)
}

fn mapping_row(key: &str, schema: &Value) -> Vec<String> {
    let schema = without_null(schema);
    let mut meaning = cell(schema["description"].as_str().unwrap_or_default());
    if let Some(default) = schema.get("default").filter(|default| !default.is_null()) {
        meaning.push_str(&format!(" (default `{default}`)"));
    }
    vec![format!("`{key}`"), type_name(&schema), meaning.trim().to_owned()]
}

fn annotations_table() -> String {
    let managed = providers::Annotation {
        key: MANAGED_ANNOTATIONS,
        on: "ServiceAccount",
        meaning: "written by the webhook: the annotations a mapping wrote there, which follow the mapping",
    };
    let rows = providers::ALL
        .iter()
        .flat_map(|provider| provider.annotations())
        .chain(std::iter::once(&managed))
        .map(|annotation| {
            vec![
                format!("`{}`", annotation.key),
                annotation.on.to_owned(),
                cell(annotation.meaning),
            ]
        });
    table(&["key", "on", "meaning"], rows)
}

/// The flags of each command, without the cluster settings (their own table).
fn flags_tables() -> String {
    // A setting's `--no-` form (cli::command) goes with it.
    let settings: Vec<String> = settings()
        .iter()
        .flat_map(|setting| [setting.arg.get_id().to_string(), format!("no_{}", setting.arg.get_id())])
        .collect();
    let command = super::command();
    let mut out = String::new();
    for subcommand in command.get_subcommands().filter(|subcommand| !subcommand.is_hide_set()) {
        let rows: Vec<Vec<String>> = subcommand
            .get_arguments()
            .filter(|arg| !arg.is_hide_set() && !settings.contains(&arg.get_id().to_string()))
            .filter(|arg| !matches!(arg.get_id().as_str(), "help" | "version"))
            .map(|arg| {
                let name = if arg.is_positional() {
                    format!("`<{}>`", arg.get_id())
                } else {
                    format!("`{}`", long(arg))
                };
                let default: Vec<String> = arg
                    .get_default_values()
                    .iter()
                    .map(|value| value.to_string_lossy().into_owned())
                    .collect();
                let mut meaning = cell(&help(arg));
                let values: Vec<String> = arg
                    .get_possible_values()
                    .iter()
                    .filter(|value| !value.is_hide_set())
                    .map(|value| format!("`{}`", value.get_name()))
                    .collect();
                if !values.is_empty() && arg.get_action().takes_values() {
                    meaning.push_str(&format!(" (one of {})", values.join(", ")));
                }
                vec![
                    name,
                    env(arg).map(|name| format!("`{name}`")).unwrap_or_default(),
                    if default.is_empty() {
                        String::new()
                    } else {
                        format!("`{}`", default.join(","))
                    },
                    meaning,
                ]
            })
            .collect();
        if rows.is_empty() {
            continue;
        }
        out.push_str(&format!("### `{}`\n\n", subcommand.get_name()));
        out.push_str(&table(&["flag", "environment", "default", "meaning"], rows));
        out.push('\n');
    }
    out.trim_end().to_owned() + "\n"
}

fn env_table() -> String {
    let command = super::command();
    let serve = command.find_subcommand("serve").expect("serve");
    let rows = serve.get_arguments().filter_map(|arg| {
        let name = env(arg)?;
        Some(vec![format!("`{name}`"), format!("`{}`", long(arg))])
    });
    table(&["variable", "flag of `serve`"], rows)
}

fn metrics_table() -> String {
    let text = crate::shell::metrics::Metrics::default().encode();
    let mut rows = Vec::new();
    let mut help = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = rest
                .split_once(' ')
                .map(|(_, help)| help.to_owned())
                .unwrap_or_default();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            rows.push(vec![format!("`{name}`"), kind.to_owned(), cell(&help)]);
        }
    }
    table(&["metric", "type", "meaning"], rows)
}

/// The chart README's table: every value, in the order of values.yaml, with its type, default and
/// description from the schema.
fn values_table(schema: &Value, values: &serde_yaml_ng::Value) -> String {
    let mut rows = Vec::new();
    value_rows("", schema, Some(values), &mut rows);
    table(&["value", "type", "default", "description"], rows)
}

fn value_rows(prefix: &str, schema: &Value, values: Option<&serde_yaml_ng::Value>, rows: &mut Vec<Vec<String>>) {
    let Some(properties) = schema["properties"].as_object() else {
        return;
    };
    // values.yaml's order first, then what only the schema names.
    let mut names: Vec<String> = values
        .and_then(serde_yaml_ng::Value::as_mapping)
        .map(|mapping| {
            mapping
                .keys()
                .filter_map(|key| key.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let only_in_schema: Vec<String> = properties.keys().filter(|key| !names.contains(key)).cloned().collect();
    names.extend(only_in_schema);
    for name in names {
        let Some(property) = properties.get(&name) else {
            continue;
        };
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let value = values.and_then(|values| values.get(name.as_str()));
        // The generated parts are documented where they are generated; nested chart values get a
        // row each.
        let nested = property["properties"].is_object() && !matches!(name.as_str(), "config" | "clusterSettings");
        if nested {
            value_rows(&path, property, value, rows);
            continue;
        }
        let default = match value {
            None => String::new(),
            Some(value) => format!("`{}`", serde_json::to_string(value).unwrap_or_default()),
        };
        rows.push(vec![
            format!("`{path}`"),
            type_name(property),
            default,
            cell(property["description"].as_str().unwrap_or_default()),
        ]);
    }
}
