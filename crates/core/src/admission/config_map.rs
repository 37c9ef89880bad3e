//! The validating admission of the webhook's own ConfigMap: a `config.yaml` that the webhook
//! would refuse is refused when it is applied, each problem with its field path, line and column.
//! Any other ConfigMap, and one without `config.yaml`, is allowed.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;

use super::{API_VERSION, MAX_UID_BYTES, ReviewError};
use crate::config::{CONFIG_KEY, Config, with_positions};
use crate::providers::Settings;

/// The ConfigMap the webhook reads its configuration from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMapName {
    pub namespace: String,
    pub name: String,
}

/// The answer to one review of a ConfigMap.
#[derive(Debug)]
pub struct Verdict {
    /// The AdmissionReview response.
    pub json: Vec<u8>,
    /// Why the ConfigMap is refused; none when it is allowed.
    pub refused: Option<String>,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<Request>,
}

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    object: Option<Object>,
}

#[derive(Deserialize)]
struct Object {
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    name: String,
}

/// Refuses `ours` when its `config.yaml` does not parse over the cluster settings of the flags;
/// allows everything else. Warnings name the values the webhook changes (a lifetime raised).
pub fn review(body: &[u8], ours: &ConfigMapName, flags: &Settings) -> Result<Verdict, ReviewError> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|err| ReviewError::Json(err.to_string()))?;
    if envelope.api_version != API_VERSION || envelope.kind != "AdmissionReview" {
        return Err(ReviewError::NotAnAdmissionReview(envelope.api_version, envelope.kind));
    }
    let request = envelope.request.ok_or(ReviewError::NoRequest)?;
    if request.uid.is_empty() {
        return Err(ReviewError::NoUid);
    }
    if request.uid.len() > MAX_UID_BYTES {
        return Err(ReviewError::UidTooLong(request.uid.len()));
    }
    let text = request.object.as_ref().and_then(|object| {
        let name = if request.name.is_empty() {
            &object.metadata.name
        } else {
            &request.name
        };
        (request.namespace == ours.namespace && *name == ours.name)
            .then(|| object.data.get(CONFIG_KEY))
            .flatten()
    });
    let (refused, warnings) = match text.map(|text| Config::parse(text, flags).map(|config| (text, config))) {
        None => (None, Vec::new()),
        Some(Ok((text, config))) => (None, with_positions(text, config.notices())),
        Some(Err(err)) => (
            Some(format!(
                "{CONFIG_KEY} of ConfigMap {}/{} is refused (the webhook keeps its current configuration): {}",
                ours.namespace,
                ours.name,
                err.problems().join("; ")
            )),
            Vec::new(),
        ),
    };
    let mut response = json!({"uid": request.uid, "allowed": refused.is_none()});
    if let Some(message) = &refused {
        response["status"] = json!({"code": 422, "reason": "Invalid", "message": message});
    }
    if !warnings.is_empty() {
        response["warnings"] = json!(warnings);
    }
    let json = serde_json::to_vec(&json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}))
        .map_err(|err| ReviewError::Json(err.to_string()))?;
    Ok(Verdict { json, refused })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn ours() -> ConfigMapName {
        ConfigMapName {
            namespace: "workload-identity-system".into(),
            name: "workload-identity-webhook".into(),
        }
    }

    fn review_of(namespace: &str, name: &str, config: Option<&str>) -> Vec<u8> {
        let data = config.map_or(json!({}), |text| json!({CONFIG_KEY: text}));
        serde_json::to_vec(&json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": {
            "uid": "u-1", "namespace": namespace, "name": name, "operation": "UPDATE",
            "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}, "data": data}}}))
        .unwrap()
    }

    fn answer(verdict: &Verdict) -> Value {
        serde_json::from_slice::<Value>(&verdict.json).unwrap()["response"].clone()
    }

    #[test]
    fn refuses_a_broken_config_yaml_of_its_own_configmap_only() {
        let broken = "identities:\n  - aws: {roleArn: nope}\n";
        let verdict = review(
            &review_of("workload-identity-system", "workload-identity-webhook", Some(broken)),
            &ours(),
            &Settings::default(),
        )
        .unwrap();
        let response = answer(&verdict);
        assert_eq!(response["allowed"], false);
        assert_eq!(response["uid"], "u-1");
        let message = response["status"]["message"].as_str().unwrap();
        assert!(
            message.ends_with("identities[0].aws.roleArn: \"nope\" is not a valid IAM role ARN at line 2 column 20"),
            "{message}"
        );
        assert_eq!(verdict.refused.as_deref(), Some(message));
        for (namespace, name) in [
            ("team-a", "workload-identity-webhook"),
            ("workload-identity-system", "other"),
        ] {
            let verdict = review(&review_of(namespace, name, Some(broken)), &ours(), &Settings::default()).unwrap();
            assert_eq!(answer(&verdict)["allowed"], true, "{namespace}/{name}");
            assert!(verdict.refused.is_none());
        }
    }

    #[test]
    fn allows_a_good_one_warning_about_changed_values() {
        let verdict = review(
            &review_of(
                "workload-identity-system",
                "workload-identity-webhook",
                Some("aws: {region: us-west-2, tokenExpirationSeconds: 60}"),
            ),
            &ours(),
            &Settings::default(),
        )
        .unwrap();
        let response = answer(&verdict);
        assert_eq!(response["allowed"], true);
        assert_eq!(
            response["warnings"][0],
            "aws.tokenExpirationSeconds: 60 is raised to 600, the shortest token lifetime the apiserver issues at line 1 column 50"
        );
        let empty = review(
            &review_of("workload-identity-system", "workload-identity-webhook", None),
            &ours(),
            &Settings::default(),
        )
        .unwrap();
        assert_eq!(answer(&empty)["allowed"], true);
    }

    #[test]
    fn a_body_that_is_no_review_is_an_error() {
        assert!(matches!(
            review(b"{", &ours(), &Settings::default()),
            Err(ReviewError::Json(_))
        ));
        assert_eq!(
            review(br#"{"apiVersion": "v1", "kind": "Pod"}"#, &ours(), &Settings::default()).unwrap_err(),
            ReviewError::NotAnAdmissionReview("v1".into(), "Pod".into())
        );
    }
}
