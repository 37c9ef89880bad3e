//! `mutate`: the server's code path on files, so users can preview a mutation before installing.

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::cli::{MutateArgs, Output, Show, validate};
use workload_identity_core::admission::Review;
use workload_identity_core::config::Config;
use workload_identity_core::model;
use workload_identity_core::patch;
use workload_identity_core::policy::Labels;

/// Returns the text to print on stdout and the warnings for stderr.
pub fn run(args: &MutateArgs) -> anyhow::Result<(String, Vec<String>)> {
    let object = read_manifest(&args.object, &["Pod", "ServiceAccount", "AdmissionReview"])?;
    let is_review = object.get("kind").and_then(Value::as_str) == Some("AdmissionReview");
    let body = if is_review {
        object.clone()
    } else {
        review_for(&object, args.namespace.as_deref())?
    };
    let review = Review::parse(&serde_json::to_vec(&body)?)?;

    let defaults = &args.cluster;
    let config = match &args.config {
        Some(path) => {
            Config::parse(&validate::read(path)?.text, defaults).with_context(|| format!("in {}", path.display()))?
        }
        None => Config::from_defaults(defaults)?,
    };
    let service_account: model::ServiceAccount = match &args.service_account {
        Some(path) => serde_json::from_value(read_manifest(path, &["ServiceAccount"])?)
            .with_context(|| format!("reading {}", path.display()))?,
        None => model::ServiceAccount::default(),
    };

    let labels = args.namespace_labels.as_ref().map_or(Labels::Unknown, Labels::Known);
    let mut mutation = review.mutation(Some(&service_account), labels, &config);
    let label_hint = (config.policy.selects_by_label() && args.namespace_labels.is_none()).then_some(
        "the identity policy selects namespaces by label: pass the namespace's labels with --namespace-labels",
    );
    if let Some(hint) = label_hint {
        mutation.warn(hint.to_owned());
    }
    let show = args.output.legacy_show().unwrap_or(args.show);
    if let (Some(refusal), false) = (&mutation.denied, show == Show::Review) {
        let hint = label_hint.map(|hint| format!(" ({hint})")).unwrap_or_default();
        bail!("the webhook would refuse this object: {refusal}{hint}");
    }
    let shown = match show {
        Show::Review => serde_json::from_slice::<Value>(&review.response(&mutation)?)?,
        Show::Patch => serde_json::to_value(&mutation.patch)?,
        Show::Object => {
            let mut mutated = if is_review {
                body["request"]["object"].clone()
            } else {
                object
            };
            json_patch::patch(&mut mutated, &patch::to_json_patch(&mutation.patch)?).context("applying the patch")?;
            mutated
        }
    };
    let text = match args.output {
        Output::Yaml => serde_yaml_ng::to_string(&shown)?.trim_end().to_owned(),
        _ => serde_json::to_string_pretty(&shown)?,
    };
    Ok((text, mutation.warnings))
}

/// A YAML or JSON manifest as a JSON value (JSON is read by the YAML parser too), refused when
/// its `kind` is none of `kinds` (a manifest without `kind` is taken as it is).
fn read_manifest(path: &Path, kinds: &[&str]) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let document: Value =
        serde_yaml_ng::from_str(&text).with_context(|| format!("{} is not YAML or JSON", path.display()))?;
    match document.get("kind").and_then(Value::as_str) {
        Some(kind) if !kinds.contains(&kind) => {
            bail!("{} is a {kind}, not a {}", path.display(), kinds.join(" or "))
        }
        _ => Ok(document),
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
