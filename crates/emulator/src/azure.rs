//! The Entra ID token endpoint for client assertions (`POST /{tenant}/oauth2/v2.0/token`), and the
//! tenant and instance discovery documents MSAL reads first, for every cloud's authority host.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde_json::json;

use super::jwt::Refusal;
use super::{Emulator, random_id};

pub const AUDIENCE: &str = "api://AzureADTokenExchange";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The authority host the client called, from `Host` (one emulator serves every cloud).
fn host(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("login.microsoftonline.com")
        .to_owned()
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`
pub async fn tenant_discovery(Path(tenant): Path<String>, headers: HeaderMap) -> Json<serde_json::Value> {
    let base = format!("https://{}/{tenant}", host(&headers));
    Json(json!({
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
        "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
        "issuer": format!("{base}/v2.0"),
        "jwks_uri": format!("https://{}/{tenant}/discovery/v2.0/keys", host(&headers)),
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "tenant_region_scope": "NA",
    }))
}

/// `GET /common/discovery/instance`: MSAL asks the public cloud's host about any authority
/// (`authorization_endpoint`), so the answer points at that authority's own host.
pub async fn instance_discovery(
    headers: HeaderMap,
    Form(params): Form<HashMap<String, String>>,
) -> Json<serde_json::Value> {
    let endpoint: Vec<&str> = params
        .get("authorization_endpoint")
        .map(|url| url.split('/').collect())
        .unwrap_or_default();
    let own_host = host(&headers);
    let host = endpoint.get(2).copied().unwrap_or(&own_host);
    let tenant = endpoint.get(3).copied().unwrap_or("common");
    Json(json!({
        "tenant_discovery_endpoint": format!("https://{host}/{tenant}/v2.0/.well-known/openid-configuration"),
        "api-version": "1.1",
        "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
    }))
}

fn oauth_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    (
        status,
        Json(json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description} Trace ID: {}", random_id(8)),
            "error_codes": [code],
            "trace_id": random_id(8),
            "correlation_id": random_id(8),
        })),
    )
        .into_response()
}

/// `POST /{tenant}/oauth2/v2.0/token` with `grant_type=client_credentials` and a client assertion.
pub async fn token(
    State(emulator): State<Arc<Emulator>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Form(params): Form<HashMap<String, String>>,
) -> Response {
    let param = |name: &str| params.get(name).map(String::as_str).unwrap_or_default();
    if param("grant_type") != "client_credentials" || param("client_assertion_type") != ASSERTION_TYPE {
        return emulator.stray(&format!("Entra ID grant {:?}", param("grant_type")), || {
            oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                "only client_credentials with a client assertion is emulated.",
            )
        });
    }
    let client_id = param("client_id");
    let decision = emulator
        .trusts()
        .azure(param("client_assertion"), &tenant, client_id, super::now());
    // The authority host is part of the identity, so a test sees which cloud the SDK called.
    let identity = format!("{}/{tenant}/{client_id}", host(&headers));
    match emulator.record("entra-id", &identity, decision) {
        Ok(_) => Json(json!({
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": format!("emulated-entra-access-token.{}", random_id(24)),
        }))
        .into_response(),
        Err(refusal) => {
            let (code, description) = match &refusal {
                Refusal::UnknownIdentity(_) => (700016, "Application not found in the directory."),
                Refusal::Expired(_) => (700024, "Client assertion is not within its valid time range."),
                Refusal::WrongIssuer { .. } => (
                    700211,
                    "No matching federated identity record found for presented assertion issuer.",
                ),
                Refusal::WrongAudience { .. } => (
                    700212,
                    "No matching federated identity record found for presented assertion audience.",
                ),
                Refusal::UntrustedSubject { .. } => (
                    700213,
                    "No matching federated identity record found for presented assertion subject.",
                ),
                _ => (50027, "JWT token is invalid or malformed."),
            };
            oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                code,
                &format!("{description} ({refusal})"),
            )
        }
    }
}
