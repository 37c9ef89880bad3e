//! The emulator's verification on tokens the real test apiserver issues through TokenRequest, and the
//! binary reading issuer and JWKS from that apiserver's OIDC discovery (no network namespace
//! needed: everything is on loopback).

#[path = "../../../tests/support/control_plane.rs"]
mod control_plane;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use workload_identity_emulator::jwt::{KeySet, Refusal};
use workload_identity_emulator::rules::{Rules, Trusts};

const ROLE: &str = "arn:aws:iam::111122223333:role/app";

struct Setup {
    namespace: String,
    issuer: String,
    jwks: String,
    service_accounts: Api<ServiceAccount>,
}

async fn setup(prefix: &str) -> Setup {
    let cp = control_plane::shared().await;
    let client = cp.client();
    let namespace = format!("{prefix}-{}", std::process::id());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    for name in ["app", "other"] {
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        service_accounts.create(&PostParams::default(), &sa).await.unwrap();
    }
    let raw = |path: &str| {
        let client = client.clone();
        let request = http_get(path);
        async move { client.request_text(request).await.unwrap() }
    };
    let discovery: Value = serde_json::from_str(&raw("/.well-known/openid-configuration").await).unwrap();
    Setup {
        namespace,
        issuer: discovery["issuer"].as_str().unwrap().to_owned(),
        jwks: raw("/openid/v1/jwks").await,
        service_accounts,
    }
}

fn http_get(path: &str) -> axum::http::Request<Vec<u8>> {
    axum::http::Request::get(path).body(Vec::new()).unwrap()
}

async fn token(setup: &Setup, service_account: &str, audience: &str) -> String {
    let request: TokenRequest = serde_json::from_value(json!({"spec": {
        "audiences": [audience], "expirationSeconds": 600}}))
    .unwrap();
    setup
        .service_accounts
        .create_token_request(service_account, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
}

fn rules(namespace: &str) -> String {
    format!("aws:\n  roles: [{{arn: '{ROLE}', subjects: ['system:serviceaccount:{namespace}:app']}}]\n")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn real_apiserver_tokens_are_verified_like_aws_would() {
    let setup = setup("emulate-verify").await;
    let trusts = Trusts {
        issuer: setup.issuer.clone(),
        keys: KeySet::from_json(setup.jwks.as_bytes()).unwrap(),
        rules: Rules::parse(&rules(&setup.namespace)).unwrap(),
    };
    let decide = |token: &str, at: i64| {
        trusts.decide(
            token,
            &trusts.rules.aws.roles,
            ROLE,
            &["sts.amazonaws.com".to_owned()],
            at,
        )
    };
    let good = token(&setup, "app", "sts.amazonaws.com").await;
    let claims = decide(&good, now()).unwrap();
    assert_eq!(claims.subject, format!("system:serviceaccount:{}:app", setup.namespace));

    let wrong_audience = token(&setup, "app", "api://AzureADTokenExchange").await;
    assert!(matches!(
        decide(&wrong_audience, now()),
        Err(Refusal::WrongAudience { .. })
    ));

    let other = token(&setup, "other", "sts.amazonaws.com").await;
    assert!(matches!(decide(&other, now()), Err(Refusal::UntrustedSubject { .. })));

    // Expired: the same token, judged after its 600 s lifetime and the leeway.
    assert!(matches!(decide(&good, claims.expires + 61), Err(Refusal::Expired(_))));

    // Bad signature: one changed byte of the signature.
    let (signed, signature) = good.rsplit_once('.').unwrap();
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    assert_eq!(
        decide(&format!("{signed}.{flipped}{}", &signature[1..]), now()),
        Err(Refusal::BadSignature)
    );

    // Unknown key id: a JWKS in which the apiserver's key has another kid.
    let mut jwks: Value = serde_json::from_str(&setup.jwks).unwrap();
    jwks["keys"][0]["kid"] = json!("rotated-away");
    let rotated = Trusts {
        keys: KeySet::from_json(jwks.to_string().as_bytes()).unwrap(),
        ..trusts
    };
    assert!(matches!(
        rotated.decide(
            &good,
            &rotated.rules.aws.roles,
            ROLE,
            &["sts.amazonaws.com".to_owned()],
            now()
        ),
        Err(Refusal::UnknownKey(_))
    ));
}

/// The binary without `--jwks-file`: issuer and keys from the apiserver (KUBECONFIG), then one
/// STS call over plain HTTP on loopback granted and one refused, as the log and /metrics show.
#[tokio::test]
async fn emulate_reads_discovery_from_the_apiserver() {
    let setup = setup("emulate-discovery").await;
    let cp = control_plane::shared().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), rules(&setup.namespace)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.path().join("emulate.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_workload-identity-emulator"))
        .args(["--https-listen", "127.0.0.1:0", "--http-listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--rules")
        .arg(dir.path().join("rules.yaml"))
        .env("KUBECONFIG", cp.kubeconfig_path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log).unwrap().contains("emulator ready") {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "emulate exited with {status}: {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        assert!(Instant::now() < deadline, "emulate not ready after 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let http = reqwest::Client::new();
    let sts = |token: String| {
        let http = http.clone();
        async move {
            let response = http
                .post(format!("http://127.0.0.1:{port}/"))
                .form(&[
                    ("Action", "AssumeRoleWithWebIdentity"),
                    ("Version", "2011-06-15"),
                    ("RoleArn", ROLE),
                    ("RoleSessionName", "test"),
                    ("WebIdentityToken", &token),
                ])
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let (status, body) = sts(token(&setup, "app", "sts.amazonaws.com").await).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<AccessKeyId>ASIAEMULATED"), "{body}");
    let (status, body) = sts(token(&setup, "other", "sts.amazonaws.com").await).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("<Code>AccessDenied</Code>"), "{body}");
    let metrics = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        metrics.contains(r#"decisions_total{service="aws-sts",outcome="grant",reason=""} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"decisions_total{service="aws-sts",outcome="refusal",reason="untrusted_subject"} 1"#),
        "{metrics}"
    );
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains(&setup.issuer), "{log}");
}
