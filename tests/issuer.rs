//! The AWS region from the cluster's service-account issuer (issue 26 item 3). A private API server
//! runs with an EKS issuer (`--service-account-issuer=https://oidc.eks.eu-west-3.amazonaws.com/id/...`):
//! `serve`, with no `aws.region` anywhere, reads the OIDC discovery document at start, logs the
//! region and where it came from, exposes it as a metric, and an IRSA Pod gets it as AWS_REGION
//! without the missing-region warning. On the shared API server (issuer
//! `https://kubernetes.default.svc.cluster.local`) nothing is detected and the warning stays.
//! The discovery document is readable by a ServiceAccount that no role binding names (the default
//! `system:service-account-issuer-discovery` binding), which cannot read a ConfigMap.

#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/webhook.rs"]
mod webhook;

use base64::Engine;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

const ISSUER: &str = "https://oidc.eks.eu-west-3.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE";
const ROLE: &str = "arn:aws:iam::111122223333:role/app";

/// Namespace `team-a` with ServiceAccounts `app` (an IRSA role) and `plain` (nothing).
async fn service_accounts(client: &kube::Client) -> Api<ServiceAccount> {
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": "team-a"}})).unwrap();
    let _ = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await;
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), "team-a");
    for (name, annotations) in [
        ("app", json!({"eks.amazonaws.com/role-arn": ROLE})),
        ("plain", json!({})),
    ] {
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": name, "annotations": annotations}})).unwrap();
        let _ = api.create(&PostParams::default(), &sa).await;
    }
    api
}

/// `serve` against the API server of `kubeconfig`, with no AWS region configured.
async fn webhook_on(kubeconfig: &str) -> webhook::Webhook {
    let mut webhook = webhook::Webhook::start(
        &["--config-file={dir}/config.yaml"],
        &[("KUBECONFIG", kubeconfig)],
        &[("config.yaml", "")],
    );
    webhook.wait_ready().await;
    webhook
}

/// The AWS_REGION the webhook gives a Pod of `team-a/app`, and its admission warnings.
async fn admitted(webhook: &webhook::Webhook) -> (Option<String>, Vec<String>) {
    let answer = webhook.answer(&webhook::pod_review("region")).await;
    let response = &answer["response"];
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("a patch"))
        .unwrap();
    let patch: Value = serde_json::from_slice(&patch).unwrap();
    let region = patch
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|op| match &op["value"] {
            Value::Array(values) => values.clone(),
            value => vec![value.clone()],
        })
        .find(|value| value["name"] == "AWS_REGION")
        .and_then(|value| value["value"].as_str().map(str::to_owned));
    let warnings = response["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w.as_str().map(str::to_owned))
        .collect();
    (region, warnings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_region_of_an_eks_issuer_is_the_default() {
    let cp = tokio::task::spawn_blocking(|| control_plane::ControlPlane::start_with_issuer(ISSUER))
        .await
        .unwrap()
        .expect("private control plane");
    let client = cp.client();
    let accounts = service_accounts(&client).await;

    // Any ServiceAccount reads the discovery document, and only that.
    let request: TokenRequest = serde_json::from_value(json!({"spec": {"audiences": [ISSUER]}})).unwrap();
    let token = accounts
        .create_token_request("plain", &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let http = webhook::client_trusting(cp.ca_pem(), false);
    let get = |path: &str| http.get(format!("{}{path}", cp.url())).bearer_auth(&token).send();
    let discovery = get("/.well-known/openid-configuration").await.unwrap();
    assert_eq!(discovery.status(), 200);
    assert_eq!(discovery.json::<Value>().await.unwrap()["issuer"], ISSUER);
    assert_eq!(get("/api/v1/namespaces/team-a/configmaps").await.unwrap().status(), 403);

    let eks = webhook_on(cp.kubeconfig_path().to_str().unwrap()).await;
    eks.wait_for_metric(&format!(
        "workload_identity_webhook_aws_region_detected_info{{region=\"eu-west-3\",issuer=\"{ISSUER}\"}} 1"
    ))
    .await;
    let log = eks.log();
    assert!(
        log.lines()
            .any(|line| line.contains("AWS region detected") && line.contains("eu-west-3") && line.contains(ISSUER)),
        "{log}"
    );
    let (region, warnings) = admitted(&eks).await;
    assert_eq!(region.as_deref(), Some("eu-west-3"), "{warnings:?}");
    assert!(!warnings.iter().any(|w| w.contains("region")), "{warnings:?}");

    // Not EKS: no region, and the warning stays.
    let shared = control_plane::shared().await;
    service_accounts(&shared.client()).await;
    let plain = webhook_on(shared.kubeconfig_path().to_str().unwrap()).await;
    webhook::eventually(std::time::Duration::from_secs(20), "the issuer read", || async {
        plain.log().contains("names no AWS region")
    })
    .await;
    assert!(!plain.metrics().await.contains("aws_region_detected_info{"));
    let (region, warnings) = admitted(&plain).await;
    assert_eq!(region, None);
    assert!(warnings.iter().any(|w| w.contains("no AWS region")), "{warnings:?}");
}
