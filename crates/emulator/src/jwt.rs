//! Verifying a ServiceAccount token as a cloud's token service does: signature against the issuer's
//! JWKS, issuer, audience, expiry and not-before. A pure function of token, keys, expectation and
//! time, so every refusal is unit-tested without a server.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::Value;
use workload_identity_core::echo::{self, Echo};

/// Clock skew the clouds tolerate on `nbf` and `exp` (AWS and Entra ID allow a few minutes).
pub const LEEWAY_SECONDS: i64 = 60;

/// Why a token is refused. The text is what the emulator logs and answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("signing algorithm {:?} is not accepted", Echo(.0))]
    Algorithm(String),
    #[error("no key {:?} in the issuer's JWKS", Echo(.0))]
    UnknownKey(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("issuer {:?} is not the trusted issuer {expected:?}", Echo(.found))]
    WrongIssuer { found: String, expected: String },
    #[error("audience {} does not contain {expected:?}", EchoList(.found))]
    WrongAudience { found: Vec<String>, expected: Vec<String> },
    #[error("token expired at {0}")]
    Expired(i64),
    #[error("token not valid before {0}")]
    NotYetValid(i64),
    #[error("subject {:?} is not trusted by {}", Echo(.subject), Echo(.identity))]
    UntrustedSubject { subject: String, identity: String },
    #[error("{} is not configured", Echo(.0))]
    UnknownIdentity(String),
}

/// A token's list (its audiences), as refusals repeat it: at most four entries, each cut by the
/// echo rules, and how many there were.
struct EchoList<'a>(&'a [String]);

impl std::fmt::Display for EchoList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: Vec<Echo<'_>> = self.0.iter().take(4).map(|entry| Echo(entry)).collect();
        write!(f, "{shown:?}")?;
        if self.0.len() > shown.len() {
            write!(f, "…({} entries)", self.0.len())?;
        }
        Ok(())
    }
}

impl Refusal {
    /// A short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "malformed",
            Refusal::Algorithm(_) => "algorithm",
            Refusal::UnknownKey(_) => "unknown_key",
            Refusal::BadSignature => "bad_signature",
            Refusal::WrongIssuer { .. } => "wrong_issuer",
            Refusal::WrongAudience { .. } => "wrong_audience",
            Refusal::Expired(_) => "expired",
            Refusal::NotYetValid(_) => "not_yet_valid",
            Refusal::UntrustedSubject { .. } => "untrusted_subject",
            Refusal::UnknownIdentity(_) => "unknown_identity",
        }
    }
}

#[derive(Debug, Clone)]
enum PublicKey {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed SEC1 point (0x04 || x || y) on P-256.
    P256(Vec<u8>),
}

/// The issuer's signing keys, from its JWKS document (`/openid/v1/jwks` of a kube-apiserver).
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<(String, PublicKey)>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: String,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

fn decode(field: &str, value: Option<&String>) -> anyhow::Result<Vec<u8>> {
    let value = value.ok_or_else(|| anyhow::anyhow!("JWK without {field}"))?;
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|err| anyhow::anyhow!("JWK field {field}: {err}"))
}

impl KeySet {
    /// Parses a JWKS document. Keys of unsupported types are skipped with a warning (a cloud
    /// ignores keys it cannot use); a document without any usable key is an error.
    pub fn from_json(text: &[u8]) -> anyhow::Result<KeySet> {
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<Value>,
        }
        let document: Document = serde_json::from_slice(text).map_err(|err| anyhow::anyhow!("JWKS: {err}"))?;
        let mut keys = Vec::new();
        for raw in document.keys {
            let parsed = serde_json::from_value::<Jwk>(raw)
                .map_err(anyhow::Error::from)
                .and_then(|jwk| {
                    let key = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
                        ("RSA", _) => PublicKey::Rsa {
                            n: decode("n", jwk.n.as_ref())?,
                            e: decode("e", jwk.e.as_ref())?,
                        },
                        ("EC", Some("P-256")) => {
                            let mut point = vec![4];
                            point.extend(decode("x", jwk.x.as_ref())?);
                            point.extend(decode("y", jwk.y.as_ref())?);
                            PublicKey::P256(point)
                        }
                        (kty, crv) => anyhow::bail!("unsupported key type {kty} {crv:?}"),
                    };
                    Ok((jwk.kid, key))
                });
            match parsed {
                Ok(key) => keys.push(key),
                Err(err) => tracing::warn!(error = %err, "JWKS key skipped"),
            }
        }
        if keys.is_empty() {
            anyhow::bail!("JWKS holds no RSA or P-256 key");
        }
        Ok(KeySet { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// What the token service expects of a token.
#[derive(Debug, Clone)]
pub struct Expectation<'a> {
    pub issuer: &'a str,
    /// The token's `aud` must contain one of these.
    pub audiences: &'a [String],
}

/// The claims the services look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
    pub expires: i64,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: String,
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    iss: String,
    #[serde(default)]
    sub: String,
    #[serde(default)]
    aud: Audience,
    exp: Option<i64>,
    nbf: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Audience {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

fn part<T: for<'de> Deserialize<'de>>(name: &str, text: &str) -> Result<T, Refusal> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|err| Refusal::Malformed(format!("{name}: {err}")))?;
    serde_json::from_slice(&bytes).map_err(|err| Refusal::Malformed(format!("{name}: {}", echo::json_error(&err))))
}

/// Verifies a compact JWS (RS256 or ES256) and its claims at `now` (Unix seconds).
pub fn verify(token: &str, keys: &KeySet, expected: &Expectation<'_>, now: i64) -> Result<Claims, Refusal> {
    let token = token.trim();
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed("not three dot-separated parts".to_owned()));
    };
    let header: Header = part("header", header)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|err| Refusal::Malformed(format!("signature: {err}")))?;
    let signed = &token.as_bytes()[..token.rfind('.').unwrap_or(0)];
    check_signature(&header, keys, signed, &signature)?;
    check_claims(part("payload", payload)?, expected, now)
}

/// Whether `signature` over `signed` is valid for the key and algorithm the header names.
fn check_signature(header: &Header, keys: &KeySet, signed: &[u8], signature: &[u8]) -> Result<(), Refusal> {
    let key = keys
        .keys
        .iter()
        .find(|(kid, _)| *kid == header.kid)
        .map(|(_, key)| key)
        .ok_or_else(|| Refusal::UnknownKey(header.kid.clone()))?;
    let verified = match (header.alg.as_str(), key) {
        ("RS256", PublicKey::Rsa { n, e }) => RsaPublicKeyComponents { n, e }
            .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, signature)
            .is_ok(),
        ("ES256", PublicKey::P256(point)) => UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
            .verify(signed, signature)
            .is_ok(),
        (alg, _) => return Err(Refusal::Algorithm(alg.to_owned())),
    };
    if !verified {
        return Err(Refusal::BadSignature);
    }
    Ok(())
}

/// The verified token's claims checked against what the caller expects, at `now` (Unix seconds).
fn check_claims(claims: RawClaims, expected: &Expectation<'_>, now: i64) -> Result<Claims, Refusal> {
    if claims.iss != expected.issuer {
        return Err(Refusal::WrongIssuer {
            found: claims.iss,
            expected: expected.issuer.to_owned(),
        });
    }
    let audiences = match claims.aud {
        Audience::None => Vec::new(),
        Audience::One(one) => vec![one],
        Audience::Many(many) => many,
    };
    if !audiences.iter().any(|aud| expected.audiences.contains(aud)) {
        return Err(Refusal::WrongAudience {
            found: audiences,
            expected: expected.audiences.to_vec(),
        });
    }
    let expires = claims
        .exp
        .ok_or_else(|| Refusal::Malformed("no exp claim".to_owned()))?;
    if now > expires + LEEWAY_SECONDS {
        return Err(Refusal::Expired(expires));
    }
    if let Some(nbf) = claims.nbf
        && nbf > now + LEEWAY_SECONDS
    {
        return Err(Refusal::NotYetValid(nbf));
    }
    if claims.sub.is_empty() {
        return Err(Refusal::Malformed("no sub claim".to_owned()));
    }
    Ok(Claims {
        issuer: claims.iss,
        subject: claims.sub,
        audiences,
        expires,
    })
}
