//! `mutate`: the server's code path on files, so users can preview a mutation before installing.

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::cli::{MutateArgs, Output};
use workload_identity_core::admission::Review;
use workload_identity_core::config::{CONFIG_KEY, Config, check_flow_depth};
use workload_identity_core::model;
use workload_identity_core::patch;

/// Returns the text to print on stdout and the warnings for stderr.
pub fn run(args: &MutateArgs) -> anyhow::Result<(String, Vec<String>)> {
    let object = read_document(&args.object)?;
    let is_review = object.get("kind").and_then(Value::as_str) == Some("AdmissionReview");
    let body = if is_review {
        object.clone()
    } else {
        review_for(&object, args.namespace.as_deref())?
    };
    let review = Review::parse(&serde_json::to_vec(&body)?)?;

    let defaults = &args.cluster;
    let config = match &args.config {
        Some(path) => Config::parse(&config_text(path)?, defaults).with_context(|| format!("in {}", path.display()))?,
        None => Config::from_defaults(defaults)?,
    };
    let service_account: model::ServiceAccount = match &args.service_account {
        Some(path) => {
            serde_json::from_value(read_document(path)?).with_context(|| format!("reading {}", path.display()))?
        }
        None => model::ServiceAccount::default(),
    };

    let mutation = review.mutation(Some(&service_account), &config);
    if let (Some(refusal), false) = (&mutation.denied, args.output == Output::Review) {
        bail!("the webhook would refuse this object: {refusal}");
    }
    let text = match args.output {
        Output::Review => {
            serde_json::to_string_pretty(&serde_json::from_slice::<Value>(&review.response(&mutation)?)?)?
        }
        Output::Patch => serde_json::to_string_pretty(&mutation.patch)?,
        Output::Object => {
            let mut mutated = if is_review {
                body["request"]["object"].clone()
            } else {
                object
            };
            json_patch::patch(&mut mutated, &patch::to_json_patch(&mutation.patch)?).context("applying the patch")?;
            serde_json::to_string_pretty(&mutated)?
        }
    };
    Ok((text, mutation.warnings))
}

/// A YAML or JSON file as a JSON value (JSON is read by the YAML parser too).
fn read_document(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml_ng::from_str(&text).with_context(|| format!("{} is not YAML or JSON", path.display()))
}

/// `config.yaml` itself, or the key of a ConfigMap manifest.
pub(crate) fn config_text(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    // Before the generic parse below, which has the same quadratic cost in nesting depth.
    check_flow_depth(&text)?;
    let as_config_map = serde_yaml_ng::from_str::<Value>(&text)
        .ok()
        .filter(|doc| doc.get("kind") == Some(&json!("ConfigMap")));
    match as_config_map {
        Some(config_map) => match config_map
            .pointer(&format!("/data/{CONFIG_KEY}"))
            .and_then(Value::as_str)
        {
            Some(text) => Ok(text.to_owned()),
            None => bail!("ConfigMap {} has no data.{CONFIG_KEY}", path.display()),
        },
        None => Ok(text),
    }
}

/// The AdmissionReview the apiserver would send for creating `object`.
fn review_for(object: &Value, namespace: Option<&str>) -> anyhow::Result<Value> {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .context("the object has no kind")?;
    let namespace = namespace
        .or_else(|| object.pointer("/metadata/namespace").and_then(Value::as_str))
        .unwrap_or("default");
    Ok(json!({
        "apiVersion": workload_identity_core::admission::API_VERSION,
        "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-0000-0000-000000000000",
            "kind": {"group": "", "version": "v1", "kind": kind},
            "namespace": namespace,
            "operation": "CREATE",
            "object": object,
        }
    }))
}
