//! Google STS token exchange (`POST sts.googleapis.com/v1/token`), IAM Credentials
//! `generateAccessToken` for service account impersonation with the federated token, and the one
//! Cloud Resource Manager call google-auth makes to find the project id (`GET /v1/projects/{number}`),
//! and STS token introspection (`POST /v1/introspect`), which gcloud calls to name the account of
//! a federated token (Node's google-auth-library runs `gcloud config config-helper` when gcloud is
//! installed).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde_json::json;

use super::jwt::Refusal;
use super::{Emulator, random_id, rfc3339};

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const RESOURCE_PREFIX: &str = "//iam.googleapis.com/";
const LIFETIME_SECONDS: i64 = 3600;

/// An access token the emulator issued: whose it is, until when, and whether it is the federated
/// token (which alone may impersonate) or a service account's.
#[derive(Debug, Clone)]
pub struct Issued {
    pub(crate) subject: String,
    /// The account the token acts as, as introspection names it: the federated principal
    /// (`principal://iam.googleapis.com/<pool>/subject/<subject>`) or the service account's e-mail.
    pub(crate) account: String,
    pub(crate) expires: i64,
    pub(crate) federated: bool,
}

/// The live token `bearer` from an `Authorization` header, if this emulator issued it.
fn issued(emulator: &Emulator, headers: &HeaderMap, now: i64) -> Option<Issued> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))?;
    emulator
        .google_tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(bearer)
        .filter(|issued| issued.expires > now)
        .cloned()
}

fn remember(emulator: &Emulator, token: &str, issued: Issued, now: i64) {
    let mut tokens = emulator.google_tokens.lock().unwrap_or_else(|p| p.into_inner());
    remember_in(&mut tokens, token, issued, now);
}

/// Live tokens kept at most: each is ~120 bytes, and a holder of one trusted token could otherwise
/// grow the map without end (the grants were kept forever).
pub(crate) const MAX_LIVE_TOKENS: usize = 10_000;

/// Keeps `token`, dropping the expired ones once the map is full and then, if still full, the one
/// that expires first.
pub(crate) fn remember_in(tokens: &mut HashMap<String, Issued>, token: &str, issued: Issued, now: i64) {
    if tokens.len() >= MAX_LIVE_TOKENS {
        tokens.retain(|_, issued| issued.expires > now);
    }
    if tokens.len() >= MAX_LIVE_TOKENS
        && let Some(first) = tokens
            .iter()
            .min_by_key(|(_, issued)| issued.expires)
            .map(|(token, _)| token.clone())
    {
        tokens.remove(&first);
    }
    tokens.insert(token.to_owned(), issued);
}

fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// `POST /v1/token`: exchanges a ServiceAccount token for a federated access token.
pub async fn sts_token(State(emulator): State<Arc<Emulator>>, Form(params): Form<HashMap<String, String>>) -> Response {
    let param = |name: &str| params.get(name).map(String::as_str).unwrap_or_default();
    if param("grant_type") != TOKEN_EXCHANGE {
        return emulator.stray(&format!("Google STS grant {:?}", param("grant_type")), || {
            oauth_error("unsupported_grant_type", "only token exchange is emulated")
        });
    }
    let Some(provider) = param("audience").strip_prefix(RESOURCE_PREFIX) else {
        return oauth_error("invalid_request", "audience must be //iam.googleapis.com/<provider>");
    };
    // A provider's default allowed audiences, as Google documents them.
    let defaults = [
        format!("https://iam.googleapis.com/{provider}"),
        format!("{RESOURCE_PREFIX}{provider}"),
    ];
    let now = super::now();
    let trusts = emulator.trusts();
    let decision = trusts.decide(
        param("subject_token"),
        &trusts.rules.google.providers,
        provider,
        &defaults,
        now,
    );
    match emulator.record("google-sts", provider, decision) {
        Ok(claims) => {
            let token = format!("emulated-google-federated-token.{}", random_id(24));
            let expires = now + LIFETIME_SECONDS;
            remember(
                &emulator,
                &token,
                Issued {
                    account: principal(provider, &claims.subject),
                    subject: claims.subject,
                    expires,
                    federated: true,
                },
                now,
            );
            Json(json!({
                "access_token": token,
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": LIFETIME_SECONDS,
            }))
            .into_response()
        }
        Err(Refusal::UnknownIdentity(_)) => oauth_error(
            "invalid_target",
            "The target service indicated by the \"audience\" parameters is invalid.",
        ),
        Err(refusal) => oauth_error("invalid_grant", &refusal.to_string()),
    }
}

fn google_error(status: StatusCode, message: &str) -> Response {
    let name = if status == StatusCode::UNAUTHORIZED {
        "UNAUTHENTICATED"
    } else {
        "PERMISSION_DENIED"
    };
    (
        status,
        Json(json!({"error": {"code": status.as_u16(), "message": message, "status": name}})),
    )
        .into_response()
}

/// `POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken` with the federated token.
pub async fn generate_access_token(
    State(emulator): State<Arc<Emulator>>,
    Path((_project, resource)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(email) = resource.strip_suffix(":generateAccessToken") else {
        return emulator.stray(&format!("IAM Credentials method {resource:?}"), || {
            google_error(StatusCode::NOT_FOUND, "only generateAccessToken is emulated")
        });
    };
    let now = super::now();
    let Some(federated) = issued(&emulator, &headers, now).filter(|issued| issued.federated) else {
        let refusal = Refusal::Malformed("not a federated token this emulator issued, or expired".to_owned());
        let _ = emulator.record("google-iam", email, Err(refusal));
        return google_error(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials.",
        );
    };
    let decision = match emulator
        .trusts()
        .rules
        .google
        .service_accounts
        .iter()
        .find(|trust| trust.name == email)
    {
        None => Err(Refusal::UnknownIdentity(email.to_owned())),
        Some(trust) if !trust.subjects.contains(&federated.subject) => Err(Refusal::UntrustedSubject {
            subject: federated.subject.clone(),
            identity: email.to_owned(),
        }),
        Some(_) => Ok(federated.subject.clone()),
    };
    match emulator.record_subject("google-iam", email, decision) {
        Ok(subject) => {
            let token = format!("emulated-google-access-token.{}", random_id(24));
            let expires = now + LIFETIME_SECONDS;
            remember(
                &emulator,
                &token,
                Issued {
                    subject,
                    account: email.to_owned(),
                    expires,
                    federated: false,
                },
                now,
            );
            Json(json!({"accessToken": token, "expireTime": rfc3339(expires)})).into_response()
        }
        Err(_) => google_error(
            StatusCode::FORBIDDEN,
            "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
        ),
    }
}

/// `GET cloudresourcemanager.googleapis.com/v1/projects/{number}`: google-auth's project id look-up.
pub async fn project(
    State(emulator): State<Arc<Emulator>>,
    Path(number): Path<String>,
    headers: HeaderMap,
) -> Response {
    if issued(&emulator, &headers, super::now()).is_none() {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials.",
        );
    }
    Json(json!({
        "projectNumber": number,
        "projectId": format!("emulated-project-{number}"),
        "lifecycleState": "ACTIVE",
    }))
    .into_response()
}

/// The principal a federated token of `provider` acts as: the provider's pool and the subject.
pub(crate) fn principal(provider: &str, subject: &str) -> String {
    let pool = provider.split_once("/providers/").map_or(provider, |(pool, _)| pool);
    format!("principal://iam.googleapis.com/{pool}/subject/{subject}")
}

/// `POST sts.googleapis.com/v1/introspect` (RFC 7662): whether `token` is a live token this
/// emulator issued, and whose. Unknown and expired tokens are `{"active": false}`, as Google answers.
pub async fn introspect(
    State(emulator): State<Arc<Emulator>>,
    Form(params): Form<HashMap<String, String>>,
) -> Response {
    let now = super::now();
    let token = params.get("token").map(String::as_str).unwrap_or_default();
    let issued = emulator
        .google_tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(token)
        .filter(|issued| issued.expires > now)
        .cloned();
    Json(introspection(issued.as_ref())).into_response()
}

pub(crate) fn introspection(issued: Option<&Issued>) -> serde_json::Value {
    match issued {
        Some(issued) => json!({
            "active": true,
            "scope": "https://www.googleapis.com/auth/cloud-platform",
            "username": issued.account,
            "sub": issued.account,
            "exp": issued.expires,
            "token_type": "Bearer",
        }),
        None => json!({"active": false}),
    }
}
