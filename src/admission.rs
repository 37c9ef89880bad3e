//! AdmissionReview v1 in and out: which object a request is about, and the response for a patch.
//!
//! Parsing is split from answering because a Pod's answer needs its ServiceAccount, which the
//! shell looks up (cache, API, or a file for the offline command) between the two steps.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::config::Config;
use crate::model::{Pod, ServiceAccount};
use crate::mutation::{self, Mutation};

pub const API_VERSION: &str = "admission.k8s.io/v1";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(borrow)]
    request: Option<RequestIn<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<'a> {
    #[serde(default)]
    uid: String,
    kind: Option<GroupVersionKind>,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    operation: String,
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct GroupVersionKind {
    #[serde(default)]
    group: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    kind: String,
}

/// Why a body is not an AdmissionReview we can answer; the server sends it back as a 400.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReviewError {
    #[error("body is not valid JSON for an AdmissionReview: {0}")]
    Json(String),
    #[error("expected apiVersion {API_VERSION} and kind AdmissionReview, got {0:?} {1:?}")]
    NotAnAdmissionReview(String, String),
    #[error("AdmissionReview has no request")]
    NoRequest,
    #[error("AdmissionReview request has no uid")]
    NoUid,
    #[error("request.kind is missing")]
    NoKind,
}

/// The object a request asks us about.
#[derive(Debug)]
pub enum Subject {
    Pod(Pod),
    ServiceAccount(ServiceAccount),
    /// Anything we leave untouched (other kinds, operations, subresources), with a reason for logs.
    Ignored(&'static str),
    /// A Pod or ServiceAccount whose object could not be read: allowed untouched, with a warning.
    Unreadable(String),
}

#[derive(Debug)]
pub struct Review {
    pub uid: String,
    pub namespace: String,
    pub subject: Subject,
}

impl Review {
    pub fn parse(body: &[u8]) -> Result<Review, ReviewError> {
        let review: ReviewIn = serde_json::from_slice(body).map_err(|err| ReviewError::Json(err.to_string()))?;
        if review.api_version != API_VERSION || review.kind != "AdmissionReview" {
            return Err(ReviewError::NotAnAdmissionReview(review.api_version, review.kind));
        }
        let request = review.request.ok_or(ReviewError::NoRequest)?;
        if request.uid.is_empty() {
            return Err(ReviewError::NoUid);
        }
        let kind = request.kind.ok_or(ReviewError::NoKind)?;
        let namespace = request.namespace.unwrap_or_default();
        let subject = subject(
            &kind,
            &request.operation,
            request.sub_resource.as_deref(),
            request.object,
        );
        Ok(Review {
            uid: request.uid,
            namespace,
            subject,
        })
    }

    /// The mutation this review asks for, given the Pod's ServiceAccount (ignored for other kinds).
    pub fn mutation(&self, service_account: Option<&ServiceAccount>, config: &Config) -> Mutation {
        match &self.subject {
            Subject::Pod(pod) => mutation::mutate_pod(pod, self.object_namespace(), service_account, config),
            Subject::ServiceAccount(sa) => mutation::mutate_service_account(sa, self.object_namespace(), config),
            Subject::Ignored(_) => Mutation::default(),
            Subject::Unreadable(problem) => Mutation {
                warnings: vec![problem.clone()],
                ..Mutation::default()
            },
        }
    }

    /// The namespace of the object: from the request (Pods from controllers carry none themselves).
    pub fn object_namespace(&self) -> &str {
        let from_object = match &self.subject {
            Subject::Pod(pod) => pod.metadata.namespace.as_deref(),
            Subject::ServiceAccount(sa) => sa.metadata.namespace.as_deref(),
            _ => None,
        };
        Some(self.namespace.as_str())
            .filter(|ns| !ns.is_empty())
            .or(from_object)
            .unwrap_or("default")
    }

    /// The AdmissionReview that answers this request: always allowed, with the patch if any.
    pub fn response(&self, mutation: &Mutation) -> Result<Vec<u8>, serde_json::Error> {
        let patch = if mutation.patch.is_empty() {
            None
        } else {
            Some(base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&mutation.patch)?))
        };
        serde_json::to_vec(&ReviewOut {
            api_version: API_VERSION,
            kind: "AdmissionReview",
            response: ResponseOut {
                uid: &self.uid,
                allowed: true,
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
                patch,
                warnings: &mutation.warnings,
            },
        })
    }
}

fn subject(kind: &GroupVersionKind, operation: &str, sub_resource: Option<&str>, object: Option<&RawValue>) -> Subject {
    if !kind.group.is_empty() || kind.version != "v1" {
        return Subject::Ignored("not a core/v1 object");
    }
    if sub_resource.is_some_and(|sub| !sub.is_empty()) {
        return Subject::Ignored("subresource");
    }
    let wanted = match (kind.kind.as_str(), operation) {
        ("Pod", "CREATE") | ("ServiceAccount", "CREATE" | "UPDATE") => kind.kind.as_str(),
        ("Pod" | "ServiceAccount", _) => return Subject::Ignored("operation not mutated"),
        _ => return Subject::Ignored("kind not mutated"),
    };
    let Some(object) = object.filter(|raw| raw.get() != "null") else {
        return Subject::Unreadable(format!(
            "workload-identity-webhook: the {wanted} request has no object; left untouched"
        ));
    };
    let parsed = if wanted == "Pod" {
        serde_json::from_str(object.get()).map(Subject::Pod)
    } else {
        serde_json::from_str(object.get()).map(Subject::ServiceAccount)
    };
    parsed.unwrap_or_else(|err| {
        Subject::Unreadable(format!(
            "workload-identity-webhook: the {wanted} object could not be read ({err}); left untouched"
        ))
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}
