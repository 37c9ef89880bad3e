//! docs/cloud-setup.md says what the emulator's trust rules say: each cloud's trust policy,
//! commands and rules block name the same issuer, audience and subjects, the rules blocks parse as
//! the emulator's rules file, and the emulator, given them, grants a token of the named
//! ServiceAccount from the real test apiserver and refuses one of another.

#[path = "../../../tests/support/control_plane.rs"]
mod control_plane;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use workload_identity_emulator::jwt::{KeySet, Refusal};
use workload_identity_emulator::rules::{Rules, Trusts};

fn page() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/cloud-setup.md");
    std::fs::read_to_string(path).unwrap()
}

/// The fenced block that follows `<!-- docs-test: NAME -->` in a Markdown text.
fn marked_block(text: &str, name: &str) -> String {
    let marker = format!("<!-- docs-test: {name} -->");
    let after = &text[text.find(&marker).unwrap_or_else(|| panic!("no block {name}")) + marker.len()..];
    let start = after.find("```").unwrap();
    let body = &after[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").unwrap()].to_owned()
}

/// The page's shell commands, continuation lines joined and spaces collapsed.
fn commands(text: &str) -> String {
    let mut out = String::new();
    let mut in_block = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_block = !in_block && trimmed == "```sh";
            continue;
        }
        if in_block {
            let code = trimmed.split(" #").next().unwrap().trim_end();
            match code.strip_suffix('\\') {
                Some(start) => {
                    out.push_str(start);
                    out.push(' ');
                }
                None => {
                    out.push_str(code);
                    out.push('\n');
                }
            }
        }
    }
    out.split('\n')
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The cloud-side examples of docs/cloud-setup.md say what the emulator's rules say: the AWS trust
/// policy's `sub` and `aud`, the gcloud attribute condition and binding member, and the az
/// federated credential's issuer, subject and audience are those of the rules blocks, which parse
/// as the emulator's rules file; and the emulator, given those rules, grants a real token of the
/// named ServiceAccount and refuses one of another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloud_setup_matches_the_emulators_rules() {
    const SUBJECT: &str = "system:serviceaccount:team-a:app";
    const ISSUER: &str = "https://oidc.example.com/cluster";
    let page = page();

    // AWS IRSA: the trust policy's conditions are the rule's subject and the default audience.
    let policy: Value = serde_json::from_str(&marked_block(&page, "aws-trust-policy")).unwrap();
    let statement = &policy["Statement"][0];
    let provider = ISSUER.trim_start_matches("https://");
    assert_eq!(statement["Action"], "sts:AssumeRoleWithWebIdentity");
    assert!(
        statement["Principal"]["Federated"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":oidc-provider/{provider}"))
    );
    let conditions = &statement["Condition"]["StringEquals"];
    assert_eq!(conditions[format!("{provider}:sub")], SUBJECT);
    assert_eq!(conditions[format!("{provider}:aud")], "sts.amazonaws.com");
    let aws = Rules::parse(&marked_block(&page, "aws-rules")).unwrap();
    assert_eq!(aws.aws.roles[0].subjects, [SUBJECT]);
    assert!(
        aws.aws.roles[0].audiences.is_empty(),
        "the rule keeps the default audience, as the policy"
    );

    // EKS Pod Identity: the association's role and ServiceAccount are the rule's.
    let pod_identity: Value = serde_json::from_str(&marked_block(&page, "aws-pod-identity-trust-policy")).unwrap();
    assert_eq!(
        pod_identity["Statement"][0]["Principal"]["Service"],
        "pods.eks.amazonaws.com"
    );
    let pods = Rules::parse(&marked_block(&page, "aws-pod-identity-rules")).unwrap();
    let association = "--namespace team-a --service-account worker --role-arn arn:aws:iam::111122223333:role/pods";
    let commands = commands(&page);
    assert!(commands.contains(association), "{commands}");
    assert_eq!(pods.aws.pod_identity[0].name, "arn:aws:iam::111122223333:role/pods");
    assert_eq!(
        pods.aws.pod_identity[0].subjects,
        ["system:serviceaccount:team-a:worker"]
    );

    // Google: the attribute condition and the binding's principal name the rules' subject.
    let google = Rules::parse(&marked_block(&page, "google-rules")).unwrap();
    assert!(commands.contains(&format!("--issuer-uri={ISSUER}")), "{commands}");
    assert!(commands.contains(&format!("--attribute-condition=\"assertion.sub in ['{SUBJECT}']\"")));
    assert!(commands.contains(&format!("workloadIdentityPools/pool/subject/{SUBJECT}\"")));
    assert!(
        google.google.providers[0]
            .name
            .ends_with("/workloadIdentityPools/pool/providers/provider")
    );
    assert_eq!(google.google.providers[0].subjects, [SUBJECT]);
    assert_eq!(google.google.service_accounts[0].subjects, [SUBJECT]);
    assert!(commands.contains(&format!(
        "add-iam-policy-binding {}",
        google.google.service_accounts[0].name
    )));

    // Azure: the federated credential's issuer, subject and audience.
    let azure = Rules::parse(&marked_block(&page, "azure-rules")).unwrap();
    for flag in [
        format!("--issuer {ISSUER}"),
        format!("--subject {SUBJECT}"),
        "--audiences api://AzureADTokenExchange".to_owned(),
    ] {
        assert!(commands.contains(&flag), "{flag}: {commands}");
    }
    assert_eq!(azure.azure[0].subjects, [SUBJECT]);
    assert!(
        azure.azure[0].audiences.is_empty(),
        "the rule keeps the default audience, as the credential"
    );

    // The emulator with these rules, on tokens of the real apiserver for team-a/app and team-a/other.
    let cp = control_plane::shared().await;
    let client = cp.client();
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team-a"}})).unwrap();
    let _ = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await;
    let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "team-a");
    for name in ["app", "other"] {
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        let _ = service_accounts.create(&PostParams::default(), &sa).await;
    }
    let get = |path: &str| axum::http::Request::get(path).body(Vec::new()).unwrap();
    let discovery: Value = serde_json::from_str(
        &client
            .request_text(get("/.well-known/openid-configuration"))
            .await
            .unwrap(),
    )
    .unwrap();
    let jwks = client.request_text(get("/openid/v1/jwks")).await.unwrap();
    let token = |name: &'static str, audience: &'static str| {
        let service_accounts = service_accounts.clone();
        async move {
            let request: TokenRequest =
                serde_json::from_value(json!({"spec": {"audiences": [audience], "expirationSeconds": 600}})).unwrap();
            service_accounts
                .create_token_request(name, &PostParams::default(), &request)
                .await
                .unwrap()
                .status
                .unwrap()
                .token
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let trusts = |rules: Rules| Trusts {
        issuer: discovery["issuer"].as_str().unwrap().to_owned(),
        keys: KeySet::from_json(jwks.as_bytes()).unwrap(),
        rules,
    };
    let untrusted = |result: Result<_, Refusal>| matches!(result, Err(Refusal::UntrustedSubject { .. }));

    let aws = trusts(aws);
    let role = aws.rules.aws.roles[0].name.clone();
    let sts = ["sts.amazonaws.com".to_owned()];
    assert!(
        aws.decide(
            &token("app", "sts.amazonaws.com").await,
            &aws.rules.aws.roles,
            &role,
            &sts,
            now
        )
        .is_ok()
    );
    assert!(untrusted(aws.decide(
        &token("other", "sts.amazonaws.com").await,
        &aws.rules.aws.roles,
        &role,
        &sts,
        now
    )));

    let azure = trusts(azure);
    let (tenant, client_id) = (
        azure.rules.azure[0].tenant_id.clone(),
        azure.rules.azure[0].client_id.clone(),
    );
    assert!(
        azure
            .azure(
                &token("app", "api://AzureADTokenExchange").await,
                &tenant,
                &client_id,
                now
            )
            .is_ok()
    );
    assert!(untrusted(azure.azure(
        &token("other", "api://AzureADTokenExchange").await,
        &tenant,
        &client_id,
        now
    )));
}
