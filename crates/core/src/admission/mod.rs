//! AdmissionReview v1 in and out: which object a request is about, and the response for a patch.
//!
//! Parsing is split from answering because a Pod's answer needs its ServiceAccount, which the
//! shell looks up (cache, API, or a file for the offline command) between the two steps.
//!
//! The request decoder and the answer writer are tuned by measurement and fenced in `tuned.rs`;
//! the property tests and the fuzz target pin them to a plain path on kube-rs's
//! `AdmissionReview<DynamicObject>` and `AdmissionResponse::with_patch`.

pub mod config_map;
mod tuned;

use serde::Deserialize;

use crate::config::Config;
use crate::echo;
use crate::model::{self, Pod, ServiceAccount};
use crate::mutation::{self, Mutation};
use crate::policy::{Labels, Namespace};

pub const API_VERSION: &str = "admission.k8s.io/v1";

/// List and map entries (containers, env vars, mounts, volumes, labels, annotations, ...) one
/// object may hold, far above real Pods (250 containers with 100 env vars each is 25,000); bounds
/// the memory of decoding to a few MiB whatever the body.
pub const MAX_ENTRIES: usize = 50_000;

/// The apiserver's uids are UUIDs (36 bytes); a longer one is not from it, and each answer and
/// audit line repeats the uid whole (it must come back unchanged, so it cannot be cut).
pub const MAX_UID_BYTES: usize = 128;

#[derive(Deserialize, Default)]
pub(crate) struct GroupVersionKind {
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
    #[error("expected apiVersion {API_VERSION} and kind AdmissionReview, got {:?} {:?}", echo::Echo(.0), echo::Echo(.1))]
    NotAnAdmissionReview(String, String),
    #[error("AdmissionReview has no request")]
    NoRequest,
    #[error("AdmissionReview request has no uid")]
    NoUid,
    #[error("AdmissionReview request uid is {0} bytes, more than {MAX_UID_BYTES}")]
    UidTooLong(usize),
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
        let in_place = model::with_entry_limit(MAX_ENTRIES, || serde_json::from_slice::<tuned::InPlaceReview>(body));
        match in_place {
            Ok(review) => Review::from_parsed(review),
            // Read again with the object as raw JSON, to tell a broken object (allowed untouched,
            // with a warning) from a broken review (refused).
            Err(_) => Review::from_parsed(
                serde_json::from_slice::<tuned::RawObjectReview>(body)
                    .map_err(|err| ReviewError::Json(echo::json_error(&err)))?,
            ),
        }
    }

    fn from_parsed<D: tuned::ObjectDecoding>(
        review: tuned::ReviewIn<tuned::RequestIn<'_, D>>,
    ) -> Result<Review, ReviewError> {
        if review.api_version != API_VERSION || review.kind != "AdmissionReview" {
            return Err(ReviewError::NotAnAdmissionReview(review.api_version, review.kind));
        }
        let request = review.request.ok_or(ReviewError::NoRequest)?;
        if request.uid.is_empty() {
            return Err(ReviewError::NoUid);
        }
        if request.uid.len() > MAX_UID_BYTES {
            return Err(ReviewError::UidTooLong(request.uid.len()));
        }
        let kind = request.kind.ok_or(ReviewError::NoKind)?;
        Ok(Review {
            uid: request.uid,
            namespace: request.namespace.unwrap_or_default(),
            subject: subject(
                &kind,
                request.operation.as_deref().unwrap_or_default(),
                request.sub_resource.as_deref(),
                request.object,
            ),
        })
    }

    /// The mutation this review asks for, given the Pod's ServiceAccount (ignored for other kinds)
    /// and what is known of the namespace's labels.
    pub fn mutation(&self, service_account: Option<&ServiceAccount>, labels: Labels<'_>, config: &Config) -> Mutation {
        let namespace = Namespace {
            name: self.object_namespace(),
            labels,
        };
        let mut mutation = match &self.subject {
            Subject::Pod(pod) => mutation::mutate_pod(pod, namespace, service_account, config),
            Subject::ServiceAccount(sa) => mutation::mutate_service_account(sa, namespace, config),
            Subject::Ignored(_) => Mutation::default(),
            Subject::Unreadable(problem) => {
                let mut mutation = Mutation::default();
                mutation.warn(problem.clone());
                mutation
            }
        };
        echo::bound_warnings(&mut mutation.warnings);
        mutation
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

    /// The AdmissionReview that answers this request: allowed with the patch if any, or refused
    /// (a ServiceAccount the identity policy forbids).
    pub fn response(&self, mutation: &Mutation) -> Result<Vec<u8>, serde_json::Error> {
        self.response_within(mutation, usize::MAX).map(|answer| answer.json)
    }

    /// The answer, without the patch if its JSON would exceed `max_patch_bytes` (then allowed
    /// unchanged, with a warning). The patch is serialized straight into the base64 of the answer,
    /// so the answer is the only copy of it.
    pub fn response_within(&self, mutation: &Mutation, max_patch_bytes: usize) -> Result<Answer, serde_json::Error> {
        tuned::write_answer(&self.uid, mutation, max_patch_bytes)
    }
}

/// An encoded answer.
#[derive(Debug)]
pub struct Answer {
    pub json: Vec<u8>,
    /// The patch was left out because it exceeded the limit.
    pub patch_dropped: bool,
}

#[derive(Clone, Copy)]
pub(crate) enum Wanted {
    Pod,
    ServiceAccount,
}

/// Whether a request of this kind and operation is one we mutate, or why not.
pub(crate) fn wanted(kind: &GroupVersionKind, operation: &str) -> Result<Wanted, &'static str> {
    if !kind.group.is_empty() || kind.version != "v1" {
        return Err("not a core/v1 object");
    }
    match (kind.kind.as_str(), operation) {
        ("Pod", "CREATE") => Ok(Wanted::Pod),
        ("ServiceAccount", "CREATE" | "UPDATE") => Ok(Wanted::ServiceAccount),
        ("Pod" | "ServiceAccount", _) => Err("operation not mutated"),
        _ => Err("kind not mutated"),
    }
}

fn subject(
    kind: &GroupVersionKind,
    operation: &str,
    sub_resource: Option<&str>,
    object: tuned::ObjectIn<'_>,
) -> Subject {
    let wanted = match wanted(kind, operation) {
        Ok(wanted) => wanted,
        Err(reason) => return Subject::Ignored(reason),
    };
    if sub_resource.is_some_and(|sub| !sub.is_empty()) {
        return Subject::Ignored("subresource");
    }
    let name = match wanted {
        Wanted::Pod => "Pod",
        Wanted::ServiceAccount => "ServiceAccount",
    };
    let raw = match object {
        tuned::ObjectIn::Pod(pod) => return Subject::Pod(pod),
        tuned::ObjectIn::ServiceAccount(sa) => return Subject::ServiceAccount(sa),
        tuned::ObjectIn::Raw(raw) => raw,
        tuned::ObjectIn::Missing | tuned::ObjectIn::Skipped => {
            return Subject::Unreadable(format!(
                "workload-identity-webhook: the {name} request has no object; left untouched"
            ));
        }
    };
    let parsed = model::with_entry_limit(MAX_ENTRIES, || match wanted {
        Wanted::Pod => serde_json::from_str(raw.get()).map(Subject::Pod),
        Wanted::ServiceAccount => serde_json::from_str(raw.get()).map(Subject::ServiceAccount),
    });
    parsed.unwrap_or_else(|err| {
        Subject::Unreadable(format!(
            "workload-identity-webhook: the {name} object could not be read ({}); left untouched",
            echo::json_error(&err)
        ))
    })
}
