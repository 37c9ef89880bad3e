//! AdmissionReview v1 in and out: which object a request is about, and the response for a patch.
//!
//! Parsing is split from answering because a Pod's answer needs its ServiceAccount, which the
//! shell looks up (cache, API, or a file for the offline command) between the two steps.

use std::io::Write;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::core::config::Config;
use crate::core::echo;
use crate::core::model::{self, Pod, ServiceAccount};
use crate::core::mutation::{self, Mutation};

pub const API_VERSION: &str = "admission.k8s.io/v1";

/// List and map entries (containers, env vars, mounts, volumes, labels, annotations, ...) one
/// object may hold, far above real Pods (250 containers with 100 env vars each is 25,000); bounds
/// the memory of decoding to a few MiB whatever the body.
pub const MAX_ENTRIES: usize = 50_000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<Request> {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<Request>,
}

/// `request` of an AdmissionReview. With `IN_PLACE`, the object is decoded into a Pod or
/// ServiceAccount as the parser passes it (the apiserver sends `kind` and `operation` before
/// `object`), so a Pod is read once; without, it is kept as raw JSON and decoded afterwards,
/// which lets a broken object fail on its own instead of failing the whole review.
struct RequestIn<'a, const IN_PLACE: bool> {
    uid: String,
    kind: Option<GroupVersionKind>,
    sub_resource: Option<String>,
    namespace: Option<String>,
    operation: Option<String>,
    object: ObjectIn<'a>,
}

enum ObjectIn<'a> {
    /// Absent or `null`.
    Missing,
    Raw(&'a RawValue),
    Pod(Pod),
    ServiceAccount(ServiceAccount),
    /// Not wanted for this kind and operation: skipped unread.
    Skipped,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum RequestField {
    Uid,
    Kind,
    SubResource,
    Namespace,
    Operation,
    Object,
    #[serde(other)]
    Other,
}

impl<'de, const IN_PLACE: bool> Deserialize<'de> for RequestIn<'de, IN_PLACE> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RequestVisitor::<IN_PLACE>)
    }
}

struct RequestVisitor<const IN_PLACE: bool>;

impl<'de, const IN_PLACE: bool> Visitor<'de> for RequestVisitor<IN_PLACE> {
    type Value = RequestIn<'de, IN_PLACE>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("an AdmissionReview request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut request = RequestIn {
            uid: String::new(),
            kind: None,
            sub_resource: None,
            namespace: None,
            operation: None,
            object: ObjectIn::Missing,
        };
        while let Some(field) = map.next_key()? {
            match field {
                RequestField::Uid => request.uid = map.next_value()?,
                RequestField::Kind => request.kind = map.next_value()?,
                RequestField::SubResource => request.sub_resource = map.next_value()?,
                RequestField::Namespace => request.namespace = map.next_value()?,
                RequestField::Operation => request.operation = map.next_value()?,
                RequestField::Object => {
                    let wanted = request.kind.as_ref().zip(request.operation.as_deref());
                    let wanted = wanted.map(|(kind, operation)| self::wanted(kind, operation));
                    request.object = match wanted {
                        Some(Ok(Wanted::Pod)) if IN_PLACE => map
                            .next_value::<Option<Pod>>()?
                            .map_or(ObjectIn::Missing, ObjectIn::Pod),
                        Some(Ok(Wanted::ServiceAccount)) if IN_PLACE => map
                            .next_value::<Option<ServiceAccount>>()?
                            .map_or(ObjectIn::Missing, ObjectIn::ServiceAccount),
                        Some(Err(_)) => {
                            map.next_value::<IgnoredAny>()?;
                            ObjectIn::Skipped
                        }
                        // Not decided yet (`kind` or `operation` comes later), or not in place.
                        _ => map
                            .next_value::<Option<&RawValue>>()?
                            .map_or(ObjectIn::Missing, ObjectIn::Raw),
                    }
                }
                RequestField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(request)
    }
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
        let in_place = model::with_entry_limit(MAX_ENTRIES, || {
            serde_json::from_slice::<ReviewIn<RequestIn<true>>>(body)
        });
        match in_place {
            Ok(review) => Review::from_parsed(review),
            // Read again with the object as raw JSON, to tell a broken object (allowed untouched,
            // with a warning) from a broken review (refused).
            Err(_) => Review::from_parsed(
                serde_json::from_slice::<ReviewIn<RequestIn<false>>>(body)
                    .map_err(|err| ReviewError::Json(echo::json_error(&err)))?,
            ),
        }
    }

    fn from_parsed<const IN_PLACE: bool>(review: ReviewIn<RequestIn<IN_PLACE>>) -> Result<Review, ReviewError> {
        if review.api_version != API_VERSION || review.kind != "AdmissionReview" {
            return Err(ReviewError::NotAnAdmissionReview(review.api_version, review.kind));
        }
        let request = review.request.ok_or(ReviewError::NoRequest)?;
        if request.uid.is_empty() {
            return Err(ReviewError::NoUid);
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

    /// The mutation this review asks for, given the Pod's ServiceAccount (ignored for other kinds).
    pub fn mutation(&self, service_account: Option<&ServiceAccount>, config: &Config) -> Mutation {
        let mut mutation = match &self.subject {
            Subject::Pod(pod) => mutation::mutate_pod(pod, self.object_namespace(), service_account, config),
            Subject::ServiceAccount(sa) => mutation::mutate_service_account(sa, self.object_namespace(), config),
            Subject::Ignored(_) => Mutation::default(),
            Subject::Unreadable(problem) => Mutation {
                warnings: vec![problem.clone()],
                ..Mutation::default()
            },
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

    /// The AdmissionReview that answers this request: always allowed, with the patch if any.
    pub fn response(&self, mutation: &Mutation) -> Result<Vec<u8>, serde_json::Error> {
        self.response_within(mutation, usize::MAX).map(|answer| answer.json)
    }

    /// The answer, without the patch if its JSON would exceed `max_patch_bytes` (then allowed
    /// unchanged, with a warning). The patch is serialized straight into the base64 of the answer,
    /// so the answer is the only copy of it.
    pub fn response_within(&self, mutation: &Mutation, max_patch_bytes: usize) -> Result<Answer, serde_json::Error> {
        // About what an operation takes in base64 (an env list of a container is most of them):
        // growing the buffer as it fills cost more than the encoding of a 10-container patch.
        let mut json = Vec::with_capacity(256 + mutation.patch.len() * 512);
        json.extend_from_slice(br#"{"apiVersion":""#);
        json.extend_from_slice(API_VERSION.as_bytes());
        json.extend_from_slice(br#"","kind":"AdmissionReview","response":{"uid":"#);
        serde_json::to_writer(&mut json, &self.uid)?;
        json.extend_from_slice(br#","allowed":true"#);
        let mut patch_dropped = false;
        if !mutation.patch.is_empty() {
            let before_patch = json.len();
            // Written by hand because base64 needs no JSON escaping, which was a fifth of the
            // cost of answering a large Pod when the encoded patch went through the serializer.
            json.extend_from_slice(br#","patchType":"JSONPatch","patch":""#);
            match write_patch(&mut json, &mutation.patch, max_patch_bytes) {
                Ok(()) => json.push(b'"'),
                Err(PatchError::TooLarge) => {
                    json.truncate(before_patch);
                    patch_dropped = true;
                }
                Err(PatchError::Json(err)) => return Err(err),
            }
        }
        let dropped_warning = patch_dropped.then(|| {
            format!(
                "workload-identity-webhook: the patch would exceed {max_patch_bytes} bytes; no cloud identity injected"
            )
        });
        let warnings: Vec<&str> = mutation
            .warnings
            .iter()
            .map(String::as_str)
            .chain(dropped_warning.as_deref())
            .collect();
        if !warnings.is_empty() {
            json.extend_from_slice(br#","warnings":"#);
            serde_json::to_writer(&mut json, &warnings)?;
        }
        json.extend_from_slice(b"}}");
        Ok(Answer { json, patch_dropped })
    }
}

/// An encoded answer.
#[derive(Debug)]
pub struct Answer {
    pub json: Vec<u8>,
    /// The patch was left out because it exceeded the limit.
    pub patch_dropped: bool,
}

enum PatchError {
    TooLarge,
    Json(serde_json::Error),
}

/// Serializes the patch as base64 onto `out`, failing once its JSON passes `max_bytes`.
fn write_patch(out: &mut Vec<u8>, patch: &[crate::core::patch::Operation], max_bytes: usize) -> Result<(), PatchError> {
    let encoder = base64::write::EncoderWriter::new(out, &base64::engine::general_purpose::STANDARD);
    let mut limited = Limited {
        inner: encoder,
        left: max_bytes,
        exceeded: false,
    };
    // serde_json writes many small pieces; the buffer hands them to the encoder in large chunks.
    let mut buffered = std::io::BufWriter::with_capacity(8 * 1024, &mut limited);
    let written =
        serde_json::to_writer(&mut buffered, patch).and_then(|()| buffered.flush().map_err(serde_json::Error::io));
    drop(buffered);
    match written {
        Ok(()) => {}
        Err(_) if limited.exceeded => return Err(PatchError::TooLarge),
        Err(err) => return Err(PatchError::Json(err)),
    }
    limited
        .inner
        .finish()
        .map(drop)
        .map_err(|err| PatchError::Json(serde_json::Error::io(err)))
}

/// A writer that refuses to pass on more than `left` bytes.
struct Limited<W> {
    inner: W,
    left: usize,
    exceeded: bool,
}

impl<W: Write> Write for Limited<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.left {
            self.exceeded = true;
            return Err(std::io::Error::other("patch too large"));
        }
        let written = self.inner.write(buf)?;
        self.left -= written;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[derive(Clone, Copy)]
enum Wanted {
    Pod,
    ServiceAccount,
}

/// Whether a request of this kind and operation is one we mutate, or why not.
fn wanted(kind: &GroupVersionKind, operation: &str) -> Result<Wanted, &'static str> {
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

fn subject(kind: &GroupVersionKind, operation: &str, sub_resource: Option<&str>, object: ObjectIn<'_>) -> Subject {
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
        ObjectIn::Pod(pod) => return Subject::Pod(pod),
        ObjectIn::ServiceAccount(sa) => return Subject::ServiceAccount(sa),
        ObjectIn::Raw(raw) => raw,
        ObjectIn::Missing | ObjectIn::Skipped => {
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
