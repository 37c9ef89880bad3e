//! The tuned request decoder and answer writer, each justified by a measurement (see the comments).
//! Fenced here so that the rest of the core reads as plain code; the property tests and the fuzz
//! target check them against a plain path on kube-rs's types.

use std::io::Write;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{API_VERSION, Answer, GroupVersionKind, Wanted};
use crate::model::{Pod, ServiceAccount};
use crate::mutation::Mutation;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ReviewIn<Request> {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    pub request: Option<Request>,
}

/// The first reading of every review: a wanted Pod or ServiceAccount decoded in place.
pub(super) type InPlaceReview<'a> = ReviewIn<RequestIn<'a, InPlace>>;
/// The second reading, only when the first failed: the object kept raw, to be decoded on its own.
pub(super) type RawObjectReview<'a> = ReviewIn<RequestIn<'a, RawObject>>;

/// How the `object` of a request is read, once its kind and operation say whether it is wanted.
pub(super) trait ObjectDecoding {
    fn object<'de, A: MapAccess<'de>>(wanted: Wanted, map: &mut A) -> Result<ObjectIn<'de>, A::Error>;
}

/// Decodes a wanted object into a Pod or ServiceAccount as the parser passes it, so a Pod is
/// read once.
pub(super) struct InPlace;

/// Keeps the object as raw JSON, so that a broken object fails on its own instead of failing
/// the whole review.
pub(super) struct RawObject;

impl ObjectDecoding for InPlace {
    #[inline]
    fn object<'de, A: MapAccess<'de>>(wanted: Wanted, map: &mut A) -> Result<ObjectIn<'de>, A::Error> {
        Ok(match wanted {
            Wanted::Pod => map
                .next_value::<Option<Pod>>()?
                .map_or(ObjectIn::Missing, ObjectIn::Pod),
            Wanted::ServiceAccount => map
                .next_value::<Option<ServiceAccount>>()?
                .map_or(ObjectIn::Missing, ObjectIn::ServiceAccount),
        })
    }
}

impl ObjectDecoding for RawObject {
    #[inline]
    fn object<'de, A: MapAccess<'de>>(_: Wanted, map: &mut A) -> Result<ObjectIn<'de>, A::Error> {
        raw(map)
    }
}

#[inline]
fn raw<'de, A: MapAccess<'de>>(map: &mut A) -> Result<ObjectIn<'de>, A::Error> {
    Ok(map
        .next_value::<Option<&RawValue>>()?
        .map_or(ObjectIn::Missing, ObjectIn::Raw))
}

/// `request` of an AdmissionReview, its object read as `D` says (the apiserver sends `kind` and
/// `operation` before `object`, so whether it is wanted is known by then).
pub(super) struct RequestIn<'a, D> {
    pub uid: String,
    pub kind: Option<GroupVersionKind>,
    pub sub_resource: Option<String>,
    pub namespace: Option<String>,
    pub operation: Option<String>,
    pub object: ObjectIn<'a>,
    decoding: PhantomData<D>,
}

pub(super) enum ObjectIn<'a> {
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

impl<'de, D: ObjectDecoding> Deserialize<'de> for RequestIn<'de, D> {
    fn deserialize<De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        deserializer.deserialize_map(RequestVisitor::<D>(PhantomData))
    }
}

struct RequestVisitor<D>(PhantomData<D>);

impl<'de, D: ObjectDecoding> Visitor<'de> for RequestVisitor<D> {
    type Value = RequestIn<'de, D>;

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
            decoding: PhantomData,
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
                    let wanted = wanted.map(|(kind, operation)| super::wanted(kind, operation));
                    request.object = match wanted {
                        Some(Ok(wanted)) => D::object(wanted, &mut map)?,
                        Some(Err(_)) => {
                            map.next_value::<IgnoredAny>()?;
                            ObjectIn::Skipped
                        }
                        // Not decided yet: `kind` or `operation` comes later.
                        None => raw(&mut map)?,
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

/// The answer to the review `uid`, without the patch if its JSON would exceed `max_patch_bytes`.
/// Written by hand, the patch serialized straight into its base64: the answer is the only copy.
#[inline]
pub(super) fn write_answer(
    uid: &str,
    mutation: &Mutation,
    max_patch_bytes: usize,
) -> Result<Answer, serde_json::Error> {
    // About what an operation takes in base64 (an env list of a container is most of them):
    // growing the buffer as it fills cost more than the encoding of a 10-container patch.
    let mut json = Vec::with_capacity(256 + mutation.patch.len() * 512);
    json.extend_from_slice(br#"{"apiVersion":""#);
    json.extend_from_slice(API_VERSION.as_bytes());
    json.extend_from_slice(br#"","kind":"AdmissionReview","response":{"uid":"#);
    serde_json::to_writer(&mut json, uid)?;
    let mut patch_dropped = false;
    if let Some(message) = &mutation.denied {
        json.extend_from_slice(br#","allowed":false,"status":{"code":403,"reason":"Forbidden","message":"#);
        serde_json::to_writer(&mut json, message)?;
        json.push(b'}');
    } else {
        json.extend_from_slice(br#","allowed":true"#);
    }
    if !mutation.patch.is_empty() && mutation.denied.is_none() {
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
        format!("workload-identity-webhook: the patch would exceed {max_patch_bytes} bytes; no cloud identity injected")
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
    // Keys are unique (one per cloud and kind, `mutation.rs`): written as they come.
    for (i, (key, value)) in mutation.audit.iter().enumerate() {
        json.extend_from_slice(if i == 0 { br#","auditAnnotations":{"# } else { b"," });
        serde_json::to_writer(&mut json, key)?;
        json.push(b':');
        serde_json::to_writer(&mut json, value)?;
    }
    if !mutation.audit.is_empty() {
        json.push(b'}');
    }
    json.extend_from_slice(b"}}");
    Ok(Answer { json, patch_dropped })
}

enum PatchError {
    TooLarge,
    Json(serde_json::Error),
}

/// Serializes the patch as base64 onto `out`, failing once its JSON passes `max_bytes`.
fn write_patch(out: &mut Vec<u8>, patch: &[crate::patch::Operation], max_bytes: usize) -> Result<(), PatchError> {
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
