//! The verification core on tokens signed here with ES256 (as kube-apiserver signs with an EC key)
//! and RS256 (a fixed test RSA key: ring cannot generate RSA keys).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};

use super::jwt::Refusal;
use super::rules::{Rules, Trusts};
use super::*;

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const APP: &str = "system:serviceaccount:team-a:app";
const ROLE: &str = "arn:aws:iam::111122223333:role/app";
const NOW: i64 = 1_800_000_000;
const RSA_KEY: &str = include_str!("testdata/rsa-2048.pem");

enum Signer {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

struct Issuer {
    signer: Signer,
    kid: &'static str,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Issuer {
    fn ec(kid: &'static str) -> Issuer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        Issuer {
            signer: Signer::Ec(pair),
            kid,
        }
    }

    fn rsa(kid: &'static str) -> Issuer {
        let PrivateKeyDer::Pkcs8(der) = PrivateKeyDer::from_pem_slice(RSA_KEY.as_bytes()).unwrap() else {
            panic!("the test RSA key is PKCS#8")
        };
        Issuer {
            signer: Signer::Rsa(RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap()),
            kid,
        }
    }

    fn jwk(&self) -> Value {
        match &self.signer {
            Signer::Ec(pair) => {
                let point = pair.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
                       "x": b64(&point[1..33]), "y": b64(&point[33..])})
            }
            Signer::Rsa(pair) => {
                let components: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public_key().into();
                json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid,
                       "n": b64(&components.n), "e": b64(&components.e)})
            }
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let alg = match self.signer {
            Signer::Ec(_) => "ES256",
            Signer::Rsa(_) => "RS256",
        };
        let header = json!({"alg": alg, "kid": self.kid});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let signature = match &self.signer {
            Signer::Ec(pair) => pair.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
            Signer::Rsa(pair) => {
                let mut signature = vec![0; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut signature)
                    .unwrap();
                signature
            }
        };
        format!("{input}.{}", b64(&signature))
    }
}

fn claims(aud: &str, sub: &str) -> Value {
    json!({"iss": ISSUER, "sub": sub, "aud": [aud], "iat": NOW - 10, "nbf": NOW - 10, "exp": NOW + 3600})
}

fn trusts(issuers: &[&Issuer]) -> Trusts {
    let jwks = json!({"keys": issuers.iter().map(|issuer| issuer.jwk()).collect::<Vec<_>>()});
    let rules = Rules::parse(&format!(
        "aws:\n  roles: [{{arn: '{ROLE}', subjects: ['{APP}']}}]\n  \
         podIdentity: [{{arn: 'arn:aws:iam::111122223333:role/pods', subjects: ['{APP}']}}]\n\
         azure: [{{tenantId: t, clientId: c, subjects: ['{APP}']}}]\n"
    ))
    .unwrap();
    Trusts {
        issuer: ISSUER.to_owned(),
        keys: KeySet::from_json(jwks.to_string().as_bytes()).unwrap(),
        rules,
    }
}

fn irsa(trusts: &Trusts, token: &str) -> Result<Claims, Refusal> {
    trusts.decide(
        token,
        &trusts.rules.aws.roles,
        ROLE,
        &[aws::STS_AUDIENCE.to_owned()],
        NOW,
    )
}

#[test]
fn a_good_token_is_granted_with_either_algorithm() {
    for issuer in [Issuer::ec("ec"), Issuer::rsa("rsa")] {
        let trusts = trusts(&[&issuer]);
        let granted = irsa(&trusts, &issuer.sign(&claims("sts.amazonaws.com", APP))).unwrap();
        assert_eq!(granted.subject, APP);
        assert_eq!(granted.audiences, ["sts.amazonaws.com"]);
    }
}

#[test]
fn wrong_audience_wrong_subject_and_unknown_role_are_refused() {
    let issuer = Issuer::ec("k1");
    let trusts = trusts(&[&issuer]);
    let wrong_audience = irsa(&trusts, &issuer.sign(&claims("api://AzureADTokenExchange", APP)));
    assert!(
        matches!(wrong_audience, Err(Refusal::WrongAudience { .. })),
        "{wrong_audience:?}"
    );
    let other = "system:serviceaccount:team-a:other";
    assert_eq!(
        irsa(&trusts, &issuer.sign(&claims("sts.amazonaws.com", other))),
        Err(Refusal::UntrustedSubject {
            subject: other.to_owned(),
            identity: ROLE.to_owned()
        })
    );
    let token = issuer.sign(&claims("sts.amazonaws.com", APP));
    assert_eq!(
        trusts.decide(&token, &trusts.rules.aws.roles, "arn:aws:iam::1:role/x", &[], NOW),
        Err(Refusal::UnknownIdentity("arn:aws:iam::1:role/x".to_owned()))
    );
    // The identity a client names is echoed bounded and with its control characters escaped.
    let hostile = format!("arn:\x1b]52;c;aGk=\x07\u{202e}\n{}", "x".repeat(100_000));
    let refusal = trusts
        .decide(&token, &trusts.rules.aws.roles, &hostile, &[], NOW)
        .unwrap_err();
    let shown = refusal.to_string();
    assert!(
        shown.starts_with(r"arn:\u{1b}]52;c;aGk=\u{7}\u{202e}\u{a}xxx"),
        "{shown}"
    );
    assert!(shown.ends_with("(100020 bytes) is not configured"), "{shown}");
}

#[test]
fn expired_and_not_yet_valid_tokens_are_refused_beyond_the_leeway() {
    let issuer = Issuer::ec("k1");
    let trusts = trusts(&[&issuer]);
    let mut expired = claims("sts.amazonaws.com", APP);
    expired["exp"] = json!(NOW - jwt::LEEWAY_SECONDS - 1);
    assert!(matches!(
        irsa(&trusts, &issuer.sign(&expired)),
        Err(Refusal::Expired(_))
    ));
    expired["exp"] = json!(NOW - jwt::LEEWAY_SECONDS + 1);
    assert!(irsa(&trusts, &issuer.sign(&expired)).is_ok());
    let mut early = claims("sts.amazonaws.com", APP);
    early["nbf"] = json!(NOW + jwt::LEEWAY_SECONDS + 1);
    assert!(matches!(
        irsa(&trusts, &issuer.sign(&early)),
        Err(Refusal::NotYetValid(_))
    ));
}

#[test]
fn bad_signature_unknown_key_wrong_issuer_and_garbage_are_refused() {
    let issuer = Issuer::ec("k1");
    let trusts = trusts(&[&issuer]);
    let good = claims("sts.amazonaws.com", APP);
    // Same kid, another key: the signature does not verify.
    let impostor = Issuer::ec("k1");
    assert_eq!(irsa(&trusts, &impostor.sign(&good)), Err(Refusal::BadSignature));
    // A payload changed after signing.
    let token = issuer.sign(&good);
    let mut parts: Vec<&str> = token.split('.').collect();
    let tampered = b64(claims("sts.amazonaws.com", "system:serviceaccount:x:y")
        .to_string()
        .as_bytes());
    parts[1] = &tampered;
    assert_eq!(irsa(&trusts, &parts.join(".")), Err(Refusal::BadSignature));
    assert_eq!(
        irsa(&trusts, &Issuer::ec("k2").sign(&good)),
        Err(Refusal::UnknownKey("k2".to_owned()))
    );
    let mut foreign = good.clone();
    foreign["iss"] = json!("https://evil.example");
    assert!(matches!(
        irsa(&trusts, &issuer.sign(&foreign)),
        Err(Refusal::WrongIssuer { .. })
    ));
    for garbage in ["", "a.b", "a.b.c", "x.y.z.w"] {
        assert!(
            matches!(irsa(&trusts, garbage), Err(Refusal::Malformed(_))),
            "{garbage}"
        );
    }
    // "none" and HMAC algorithms are never accepted, whatever the key.
    let header = b64(json!({"alg": "none", "kid": "k1"}).to_string().as_bytes());
    let unsigned = format!("{header}.{}.", b64(good.to_string().as_bytes()));
    assert_eq!(irsa(&trusts, &unsigned), Err(Refusal::Algorithm("none".to_owned())));
}

#[test]
fn pod_identity_and_entra_id_use_their_own_audiences() {
    let issuer = Issuer::rsa("r");
    let trusts = trusts(&[&issuer]);
    let (role, _) = trusts
        .pod_identity(&issuer.sign(&claims(aws::POD_IDENTITY_AUDIENCE, APP)), NOW)
        .unwrap();
    assert_eq!(role, "arn:aws:iam::111122223333:role/pods");
    assert!(
        trusts
            .pod_identity(&issuer.sign(&claims("sts.amazonaws.com", APP)), NOW)
            .is_err()
    );
    assert!(
        trusts
            .azure(&issuer.sign(&claims(azure::AUDIENCE, APP)), "t", "c", NOW)
            .is_ok()
    );
    assert!(matches!(
        trusts.azure(&issuer.sign(&claims(azure::AUDIENCE, APP)), "t", "other", NOW),
        Err(Refusal::UnknownIdentity(_))
    ));
}

#[test]
fn jwks_and_rules_errors_are_reported_not_panicked() {
    assert!(KeySet::from_json(b"{}").is_err());
    assert!(KeySet::from_json(br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).is_err());
    assert!(Rules::parse("aws: {roles: [{arn: x}]}").is_err());
    assert!(Rules::parse("azurre: []").is_err());
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(NOW), "2027-01-15T08:00:00Z");
}

/// The rules file as a mounted ConfigMap changes: a new rule applies to the next request, a
/// broken edit or a vanished file keeps the last good rules (logged and counted as failures).
#[tokio::test]
async fn rules_file_edits_apply_and_broken_ones_keep_the_last_good_rules() {
    let issuer = Issuer::ec("k1");
    let emulator = Arc::new(Emulator::new(trusts(&[&issuer])));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.yaml");
    let first = format!("aws:\n  roles: [{{arn: '{ROLE}', subjects: ['{APP}']}}]\n");
    std::fs::write(&path, &first).unwrap();
    tokio::spawn(
        emulator
            .clone()
            .watch_rules(path.clone(), first.clone(), Duration::from_millis(10)),
    );
    let other = "system:serviceaccount:team-a:other";
    let token = issuer.sign(&claims("sts.amazonaws.com", other));
    let allowed = || irsa(&emulator.trusts(), &token).is_ok();
    let reloads = |result: &str| {
        let text = metrics_text(&emulator);
        let line = format!("workload_identity_emulator_rules_reloads_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(line.as_str())?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(!allowed());

    let second = first.replace(APP, other);
    std::fs::write(&path, &second).unwrap();
    until(&allowed).await;
    assert_eq!(reloads("success"), 1);

    std::fs::write(&path, "aws: {roles: [{arn: x, subject: typo}]}\n").unwrap();
    until(|| reloads("failure") == 1).await;
    assert!(allowed(), "a broken edit dropped the rules in force");

    std::fs::remove_file(&path).unwrap();
    until(|| reloads("failure") == 2).await;
    assert!(allowed(), "a vanished file dropped the rules in force");
}

fn metrics_text(emulator: &Emulator) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &emulator.registry).unwrap();
    text
}

async fn until(check: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "not within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// F7 (issue 21): a refusal (its answer and its log line) repeats only a cut of what the token says.
#[test]
fn refusals_repeat_only_a_cut_of_what_the_token_says() {
    let issuer = Issuer::ec("k1");
    let trusts = trusts(&[&issuer]);
    let good = claims("sts.amazonaws.com", APP);
    let kid: &'static str = Box::leak("k".repeat(1_500_000).into_boxed_str());
    let refusal = irsa(&trusts, &Issuer::ec(kid).sign(&good)).expect_err("unknown key");
    assert!(matches!(refusal, Refusal::UnknownKey(_)));
    let text = refusal.to_string();
    assert!(text.len() < 300, "{} bytes", text.len());
    assert!(text.contains("…(1500000 bytes)"), "{text}");
    let mut many_audiences = good.clone();
    many_audiences["aud"] = json!(vec!["a".repeat(100_000); 50]);
    let text = irsa(&trusts, &issuer.sign(&many_audiences))
        .expect_err("wrong audience")
        .to_string();
    assert!(text.len() < 1024, "{} bytes", text.len());
    assert!(text.contains("…(50 entries)"), "{text}");
    let foreign_subject = claims(
        "sts.amazonaws.com",
        &format!("system:serviceaccount:x:{}", "y".repeat(1_000_000)),
    );
    let text = irsa(&trusts, &issuer.sign(&foreign_subject))
        .expect_err("untrusted subject")
        .to_string();
    assert!(text.len() < 1024, "{} bytes", text.len());
}

/// F7 (issue 21): the Google grants are pruned when the map is full, and never exceed the bound.
#[test]
fn google_grants_are_pruned_and_bounded() {
    use super::google::{Issued, MAX_LIVE_TOKENS, remember_in};
    let issued = |expires: i64| Issued {
        subject: "s".to_owned(),
        account: "a".to_owned(),
        expires,
        federated: false,
    };
    let mut tokens = std::collections::HashMap::new();
    for i in 0..MAX_LIVE_TOKENS {
        remember_in(&mut tokens, &format!("t{i}"), issued(100), 0);
    }
    assert_eq!(tokens.len(), MAX_LIVE_TOKENS);
    // Every one expired by 200: the next grant drops them.
    remember_in(&mut tokens, "soon", issued(300), 200);
    assert_eq!(tokens.len(), 1);
    // Full of live tokens: the one that expires first makes room.
    for i in 1..MAX_LIVE_TOKENS {
        remember_in(&mut tokens, &format!("live{i}"), issued(1000 + i as i64), 200);
    }
    remember_in(&mut tokens, "last", issued(5000), 200);
    assert_eq!(tokens.len(), MAX_LIVE_TOKENS);
    assert!(!tokens.contains_key("soon") && tokens.contains_key("last"));
}

/// S3 (issue 21): a managed cloud's issuer is recognised, so `emulate` refuses to start there.
#[test]
fn managed_cloud_issuers_are_recognised() {
    for (issuer, cloud) in [
        (
            "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE",
            "EKS",
        ),
        ("https://oidc.eks.cn-north-1.amazonaws.com.cn/id/EXAMPLE", "EKS"),
        (
            "https://container.googleapis.com/v1/projects/p/locations/europe-west1/clusters/c",
            "GKE",
        ),
        (
            "https://westeurope.oic.prod-aks.azure.com/00000000-0000-0000-0000-000000000000/11111111-1111-1111-1111-111111111111/",
            "AKS",
        ),
    ] {
        assert_eq!(managed_cloud(issuer), Some(cloud), "{issuer}");
    }
    for local in [
        "https://kubernetes.default.svc.cluster.local",
        "https://127.0.0.1:6443",
        "https://oidc.eks.example.com/id/x",
        "https://container.googleapis.com.attacker.example/v1",
        "http://oidc.eks.eu-west-1.amazonaws.com/id/x",
    ] {
        assert_eq!(managed_cloud(local), None, "{local}");
    }
}

#[tokio::test]
async fn emulate_refuses_a_managed_cloud_issuer_unless_told() {
    use clap::Parser;
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        format!("aws:\n  roles: [{{arn: '{ROLE}', subjects: ['{APP}']}}]\n"),
    )
    .expect("rules");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::to_vec(&json!({"keys": [Issuer::ec("k1").jwk()]})).expect("json"),
    )
    .expect("jwks");
    let args = EmulateArgs::try_parse_from([
        "workload-identity-emulator",
        "--rules",
        rules.to_str().expect("path"),
        "--jwks-file",
        jwks.to_str().expect("path"),
        "--issuer",
        "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE",
    ])
    .expect("arguments");
    let err = run(args).await.expect_err("must refuse to start");
    assert!(err.to_string().contains("is EKS's"), "{err}");
}

/// gcloud names a federated token's account from the introspection `username`: the pool's
/// principal for the subject, as Google answers; a token the emulator does not know is inactive.
#[test]
fn introspection_names_the_federated_principal() {
    use super::google::{Issued, introspection};
    let provider = "projects/123/locations/global/workloadIdentityPools/pool/providers/provider";
    let subject = "system:serviceaccount:apps:app";
    let issued = Issued {
        subject: subject.to_owned(),
        account: super::google::principal(provider, subject),
        expires: 99,
        federated: true,
    };
    let answer = introspection(Some(&issued));
    assert_eq!(answer["active"], true);
    assert_eq!(
        answer["username"],
        "principal://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/subject/system:serviceaccount:apps:app"
    );
    assert_eq!(introspection(None), serde_json::json!({"active": false}));
}
