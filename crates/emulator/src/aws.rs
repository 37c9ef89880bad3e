//! AWS STS `AssumeRoleWithWebIdentity` (query protocol, XML answer) and the EKS Pod Identity
//! agent's credentials endpoint (JSON answer), as the SDKs call them.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::jwt::{Claims, Refusal};
use super::{Emulator, random_id, rfc3339};

pub const STS_AUDIENCE: &str = "sts.amazonaws.com";
pub const POD_IDENTITY_AUDIENCE: &str = "pods.eks.amazonaws.com";
const STS_NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn xml(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

fn sts_error(status: StatusCode, code: &str, message: &str) -> Response {
    xml(
        status,
        format!(
            "<ErrorResponse xmlns=\"{STS_NAMESPACE}\"><Error><Type>Sender</Type><Code>{code}</Code>\
             <Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
            xml_escape(message),
            random_id(8)
        ),
    )
}

/// STS's code and HTTP status for a refusal.
fn sts_refusal(refusal: &Refusal) -> Response {
    match refusal {
        Refusal::UntrustedSubject { .. } | Refusal::UnknownIdentity(_) => sts_error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            &format!("Not authorized to perform sts:AssumeRoleWithWebIdentity: {refusal}"),
        ),
        Refusal::Expired(_) => sts_error(StatusCode::BAD_REQUEST, "ExpiredTokenException", &refusal.to_string()),
        _ => sts_error(StatusCode::BAD_REQUEST, "InvalidIdentityToken", &refusal.to_string()),
    }
}

/// `sts:AssumeRoleWithWebIdentity`, as a form POST or a GET with the query.
pub async fn assume_role_with_web_identity(
    State(emulator): State<Arc<Emulator>>,
    Form(params): Form<HashMap<String, String>>,
) -> Response {
    let param = |name: &str| params.get(name).map(String::as_str).unwrap_or_default();
    if param("Action") != "AssumeRoleWithWebIdentity" {
        return emulator.stray(&format!("STS action {:?}", param("Action")), || {
            sts_error(
                StatusCode::BAD_REQUEST,
                "InvalidAction",
                "only AssumeRoleWithWebIdentity is emulated",
            )
        });
    }
    let role = param("RoleArn");
    let session = param("RoleSessionName");
    if role.is_empty() || session.is_empty() || param("WebIdentityToken").is_empty() {
        return sts_error(
            StatusCode::BAD_REQUEST,
            "MissingParameter",
            "RoleArn, RoleSessionName and WebIdentityToken are required",
        );
    }
    let Some(duration) = session_duration(param("DurationSeconds")) else {
        return sts_error(
            StatusCode::BAD_REQUEST,
            "ValidationError",
            "DurationSeconds must be 900..43200",
        );
    };
    let now = super::now();
    let trusts = emulator.trusts();
    let decision = trusts.decide(
        param("WebIdentityToken"),
        &trusts.rules.aws.roles,
        role,
        &[STS_AUDIENCE.to_owned()],
        now,
    );
    let claims = match emulator.record("aws-sts", role, decision) {
        Ok(claims) => claims,
        Err(refusal) => return sts_refusal(&refusal),
    };
    assumed_role_response(&claims, role, session, &FakeCredentials::new(now + duration))
}

/// `DurationSeconds` in seconds (an hour when absent); `None` outside what STS accepts.
fn session_duration(text: &str) -> Option<i64> {
    match text {
        "" => Some(3600),
        text => text
            .parse::<i64>()
            .ok()
            .filter(|seconds| (900..=43_200).contains(seconds)),
    }
}

/// STS's answer to an allowed request: the assumed role's session and its credentials.
fn assumed_role_response(claims: &Claims, role: &str, session: &str, credentials: &FakeCredentials) -> Response {
    let account = role.split(':').nth(4).unwrap_or_default();
    let role_name = role.rsplit('/').next().unwrap_or_default();
    xml(
        StatusCode::OK,
        format!(
            "<AssumeRoleWithWebIdentityResponse xmlns=\"{STS_NAMESPACE}\"><AssumeRoleWithWebIdentityResult>\
             <SubjectFromWebIdentityToken>{subject}</SubjectFromWebIdentityToken>\
             <Audience>{audience}</Audience>\
             <AssumedRoleUser><Arn>arn:aws:sts::{account}:assumed-role/{role_name}/{session}</Arn>\
             <AssumedRoleId>AROAEMULATED:{session}</AssumedRoleId></AssumedRoleUser>\
             <Credentials><AccessKeyId>{key}</AccessKeyId><SecretAccessKey>{secret}</SecretAccessKey>\
             <SessionToken>{token}</SessionToken><Expiration>{expiration}</Expiration></Credentials>\
             <Provider>{issuer}</Provider></AssumeRoleWithWebIdentityResult>\
             <ResponseMetadata><RequestId>{request}</RequestId></ResponseMetadata>\
             </AssumeRoleWithWebIdentityResponse>",
            subject = xml_escape(&claims.subject),
            audience = xml_escape(&claims.audiences.join(",")),
            account = xml_escape(account),
            role_name = xml_escape(role_name),
            session = xml_escape(session),
            key = credentials.access_key_id,
            secret = credentials.secret_access_key,
            token = credentials.session_token,
            expiration = rfc3339(credentials.expires),
            issuer = xml_escape(&claims.issuer),
            request = random_id(8),
        ),
    )
}

/// The EKS Pod Identity agent: `GET /v1/credentials` with the token file's content as `Authorization`.
pub async fn pod_identity_credentials(State(emulator): State<Arc<Emulator>>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let now = super::now();
    let decision = emulator.trusts().pod_identity(token, now);
    let identity = decision
        .as_ref()
        .map(|(role, _)| role.clone())
        .unwrap_or_else(|_| "pod identity association".to_owned());
    match emulator.record("eks-pod-identity", &identity, decision.map(|(_, claims)| claims)) {
        Ok(_) => {
            let credentials = FakeCredentials::new(now + 3600);
            axum::Json(json!({
                "AccessKeyId": credentials.access_key_id,
                "SecretAccessKey": credentials.secret_access_key,
                "Token": credentials.session_token,
                "AccountId": identity.split(':').nth(4).unwrap_or_default(),
                "Expiration": rfc3339(credentials.expires),
            }))
            .into_response()
        }
        Err(refusal) => {
            let status = match refusal {
                Refusal::UntrustedSubject { .. } | Refusal::UnknownIdentity(_) => StatusCode::FORBIDDEN,
                _ => StatusCode::BAD_REQUEST,
            };
            (status, axum::Json(json!({"message": refusal.to_string()}))).into_response()
        }
    }
}

/// Short-lived credentials that no AWS service accepts, recognisable by their `EMULATED` marks.
struct FakeCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expires: i64,
}

impl FakeCredentials {
    fn new(expires: i64) -> FakeCredentials {
        FakeCredentials {
            access_key_id: format!("ASIAEMULATED{}", random_id(4).to_uppercase()),
            secret_access_key: format!("emulated-secret-{}", random_id(12)),
            session_token: format!("emulated-session-token-{}", random_id(24)),
            expires,
        }
    }
}
