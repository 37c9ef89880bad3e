//! The plain reference path the tuned decoder and answer writer are pinned to: the request read
//! as kube-rs's `AdmissionReview<DynamicObject>`, the object converted with serde, the answer made
//! with `AdmissionResponse::with_patch`. Used by the fuzz target and `tests/properties.rs`.

use base64::Engine;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;
use workload_identity_core::admission::{Review, Subject};
use workload_identity_core::config::Config;
use workload_identity_core::model::ServiceAccount;
use workload_identity_core::mutation::{self, Mutation};
use workload_identity_core::policy::{Labels, Namespace};

/// What both paths must agree on: the uid, what the request is about, the patch (JSON), whether
/// it is allowed (and the refusal's message) and the audit annotations.
#[derive(Debug, PartialEq)]
pub struct Answered {
    pub uid: String,
    pub subject: &'static str,
    pub patch: Option<Value>,
    pub allowed: bool,
    pub message: Option<String>,
    pub audit: Value,
}

/// The webhook's own path, as the server runs it.
pub fn tuned(body: &[u8], service_account: Option<&ServiceAccount>, config: &Config) -> Option<Answered> {
    let review = Review::parse(body).ok()?;
    let mutation = review.mutation(service_account, Labels::Unknown, config);
    let subject = match &review.subject {
        Subject::Pod(_) => "Pod",
        Subject::ServiceAccount(_) => "ServiceAccount",
        Subject::Ignored(_) => "ignored",
        Subject::Unreadable(_) => "unreadable",
    };
    Some(answered(&review.response(&mutation).ok()?, subject))
}

/// The same request through kube-rs's types; `None` when they refuse the body. The fields they
/// require and the webhook never reads (`userInfo`, `resource`) are filled in when absent, so the
/// comparison also reaches bodies without them.
pub fn plain(body: &[u8], service_account: Option<&ServiceAccount>, config: &Config) -> Option<Answered> {
    let filled = with_unread_fields(body);
    let body = filled.as_deref().unwrap_or(body);
    // DynamicObject makes up an empty `metadata` where the object has none: it cannot stand for such
    // an object (the apiserver never sends one).
    let raw: Value = serde_json::from_slice(body).ok()?;
    if raw["request"]["object"].is_object() && raw["request"]["object"].get("metadata").is_none() {
        return None;
    }
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body).ok()?;
    let request: AdmissionRequest<DynamicObject> = review.try_into().ok()?;
    let core_v1 = request.kind.group.is_empty() && request.kind.version == "v1";
    let wanted = match (core_v1, request.kind.kind.as_str(), &request.operation) {
        (true, "Pod", Operation::Create) => Some("Pod"),
        (true, "ServiceAccount", Operation::Create | Operation::Update) => Some("ServiceAccount"),
        _ => None,
    };
    let subresource = request.sub_resource.as_deref().is_some_and(|sub| !sub.is_empty());
    let (subject, mutation) = match (wanted, &request.object) {
        (Some(kind), Some(object)) if !subresource => {
            let object = serde_json::to_value(object).ok()?;
            let from_object = object["metadata"]["namespace"].as_str().map(str::to_owned);
            let namespace = request
                .namespace
                .clone()
                .filter(|namespace| !namespace.is_empty())
                .or(from_object)
                .unwrap_or_else(|| "default".to_owned());
            let mutation = if kind == "Pod" {
                let pod = serde_json::from_value(object).ok()?;
                mutation::mutate_pod(&pod, Namespace::named(&namespace), service_account, config)
            } else {
                let account = serde_json::from_value(object).ok()?;
                mutation::mutate_service_account(&account, Namespace::named(&namespace), config)
            };
            (kind, mutation)
        }
        (Some(_), None) if !subresource => ("unreadable", Mutation::default()),
        _ => ("ignored", Mutation::default()),
    };
    let mut response = AdmissionResponse::from(&request);
    response.audit_annotations = mutation
        .audit
        .iter()
        .map(|(key, value)| ((*key).to_owned(), value.clone()))
        .collect();
    if let Some(message) = &mutation.denied {
        response = response.deny(message);
    } else if !mutation.patch.is_empty() {
        let patch = serde_json::from_value(serde_json::to_value(&mutation.patch).ok()?).ok()?;
        response = response.with_patch(patch).ok()?;
    }
    Some(answered(&serde_json::to_vec(&response.into_review()).ok()?, subject))
}

/// The body with `request.userInfo` and `request.resource` added where absent; `None` when it is not
/// a JSON object with unique keys (re-encoding would change what a duplicate key means) or has
/// both already.
fn with_unread_fields(body: &[u8]) -> Option<Vec<u8>> {
    serde_json::from_slice::<UniqueKeys>(body).ok()?;
    let mut review: Value = serde_json::from_slice(body).ok()?;
    let request = review.get_mut("request")?.as_object_mut()?;
    let mut changed = false;
    for (key, absent) in [
        ("userInfo", serde_json::json!({})),
        (
            "resource",
            serde_json::json!({"group": "", "version": "", "resource": ""}),
        ),
    ] {
        if !request.contains_key(key) {
            request.insert(key.to_owned(), absent);
            changed = true;
        }
    }
    changed.then(|| serde_json::to_vec(&review).ok()).flatten()
}

/// Any JSON in which no object repeats a key.
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("JSON without repeated keys")
    }

    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<UniqueKeys, A::Error> {
        while items.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut entries: A) -> Result<UniqueKeys, A::Error> {
        let mut keys = std::collections::HashSet::new();
        while let Some(key) = entries.next_key::<String>()? {
            if !keys.insert(key) {
                return Err(serde::de::Error::custom("repeated key"));
            }
            entries.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }
}

fn answered(answer: &[u8], subject: &'static str) -> Answered {
    let answer: Value = serde_json::from_slice(answer).expect("the answer is JSON");
    // The webhook writes the patch's bytes as base64; kube-rs as an array of numbers (the
    // apiserver's Go decoder takes either).
    let bytes = match &answer["response"]["patch"] {
        Value::String(encoded) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .expect("the patch is base64"),
        ),
        Value::Array(numbers) => Some(
            numbers
                .iter()
                .map(|number| {
                    number
                        .as_u64()
                        .and_then(|byte| u8::try_from(byte).ok())
                        .expect("a byte")
                })
                .collect(),
        ),
        _ => None,
    };
    let patch = bytes.map(|bytes| serde_json::from_slice(&bytes).expect("the patch is JSON"));
    Answered {
        uid: answer["response"]["uid"].as_str().unwrap_or_default().to_owned(),
        subject,
        patch,
        allowed: answer["response"]["allowed"] == true,
        message: answer["response"]["status"]["message"].as_str().map(str::to_owned),
        audit: match &answer["response"]["auditAnnotations"] {
            Value::Null => Value::Object(Default::default()),
            audit => audit.clone(),
        },
    }
}
