//! `validate`: a `config.yaml` (or the ConfigMap manifest holding one) checked offline, as the
//! webhook would read it, each problem with its field path, line and column.

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::Value;

use workload_identity_core::config::{CONFIG_KEY, Config, check_flow_depth, with_positions};
use workload_identity_core::locate::{self, Step};
use workload_identity_core::providers::Settings;

/// `config.yaml` as read from a file.
pub struct ConfigText {
    pub text: String,
    /// Where the text starts in the file, when it is a ConfigMap's block scalar (`config.yaml: |`):
    /// positions in the text are moved by it to be the file's.
    pub start: Option<locate::Position>,
    /// `data.config.yaml of ` when the text came from a ConfigMap and positions are its own.
    pub within: &'static str,
}

/// `config.yaml` itself, or the key of a ConfigMap manifest; a manifest of another kind is refused.
pub fn read(path: &Path) -> anyhow::Result<ConfigText> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    // Before the generic parse below, which has the same quadratic cost in nesting depth.
    check_flow_depth(&text)?;
    let document = serde_yaml_ng::from_str::<Value>(&text).ok();
    let kind = document
        .as_ref()
        .and_then(|doc| doc.get("kind"))
        .and_then(Value::as_str);
    match kind {
        Some("ConfigMap") => {
            let Some(config) = document
                .as_ref()
                .and_then(|doc| doc.pointer(&format!("/data/{CONFIG_KEY}")))
                .and_then(Value::as_str)
            else {
                bail!("ConfigMap {} has no data.{CONFIG_KEY}", path.display());
            };
            let key = [Step::Key("data".into()), Step::Key(CONFIG_KEY.into())];
            let start = locate::locate(&text, &[key.to_vec()])[0].filter(|at| is_block_scalar(&text, at.line));
            Ok(ConfigText {
                text: config.to_owned(),
                start,
                within: if start.is_some() { "" } else { "data.config.yaml of " },
            })
        }
        Some(kind) => bail!("{} is a {kind}, not a config.yaml or a ConfigMap", path.display()),
        None => Ok(ConfigText {
            text,
            start: None,
            within: "",
        }),
    }
}

/// Whether the value starting on `line` is a literal block (`key: |` on the line before).
fn is_block_scalar(text: &str, line: usize) -> bool {
    line >= 2
        && text
            .lines()
            .nth(line - 2)
            .map(str::trim_end)
            .is_some_and(|before| before.ends_with('|') || before.ends_with("|-") || before.ends_with("|+"))
}

impl ConfigText {
    /// `message` with its `at line L column C` moved to the file's lines, or saying whose they are.
    fn in_file(&self, message: &str) -> String {
        let Some((before, position)) = message.rsplit_once(" at line ") else {
            return message.to_owned();
        };
        let Some((line, column)) = position
            .split_once(" column ")
            .and_then(|(line, column)| Some((line.parse::<usize>().ok()?, column.parse::<usize>().ok()?)))
        else {
            return message.to_owned();
        };
        let (line, column) = match self.start {
            Some(start) => (line + start.line - 1, column + start.column - 1),
            None => (line, column),
        };
        format!("{before} at {}line {line} column {column}", self.within)
    }
}

/// What `validate` found: the problems (none when the file is valid) and the warnings.
pub struct Report {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

pub fn run(file: &Path) -> anyhow::Result<Report> {
    let config = read(file)?;
    Ok(match Config::parse(&config.text, &Settings::default()) {
        Ok(parsed) => Report {
            errors: Vec::new(),
            warnings: with_positions(&config.text, parsed.notices())
                .iter()
                .map(|warning| config.in_file(warning))
                .collect(),
        },
        Err(err) => Report {
            errors: err.problems().iter().map(|problem| config.in_file(problem)).collect(),
            warnings: Vec::new(),
        },
    })
}
