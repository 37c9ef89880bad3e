//! The security rules of an identity webhook, each with a test, through the public API.
//!
//! - Only the ServiceAccount and the admin's configuration decide which identity a Pod gets; Pod
//!   annotations can only narrow (skip containers, shorter tokens).
//! - A Pod cannot get another namespace's mapping.
//! - Values from annotations and the configuration are validated before they reach a Pod spec, so
//!   no annotation can inject JSON, env vars or a different identity.
//! - A credential configuration a Pod sets for itself is replaced by the webhook's own.
//! - Credential env vars never point into a volume the webhook did not project.
//! - Values from tenants are echoed in warnings only cut short.
//! - A ServiceAccount's list of managed annotations cannot make the webhook delete other ones.

use serde_json::{Value, json};
use workload_identity_core::admission::Review;
use workload_identity_core::config::Config;
use workload_identity_core::model::ServiceAccount;
use workload_identity_core::mutation::Mutation;
use workload_identity_core::patch;
use workload_identity_core::policy::Labels;
use workload_identity_core::providers::{aws, azure, gcp};

const ROLE: &str = "arn:aws:iam::111122223333:role/granted";
const POD_ROLE: &str = "arn:aws:iam::999999999999:role/pod-chosen";
const CLIENT: &str = "00000000-1111-2222-3333-444444444444";
const POD_CLIENT: &str = "99999999-9999-9999-9999-999999999999";
const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const GSA: &str = "reader@proj.iam.gserviceaccount.com";
const POD_GSA: &str = "pod-chosen@evil.iam.gserviceaccount.com";
const PROVIDER: &str = "projects/123456789/locations/global/workloadIdentityPools/pool/providers/provider";
const POD_PROVIDER: &str = "projects/666/locations/global/workloadIdentityPools/evil-pool/providers/evil";

/// Cluster settings every cloud needs, with no mappings.
fn cluster(identities: &str) -> Config {
    Config::parse(
        &format!(
            "azure: {{tenantId: \"{TENANT}\"}}\ngcp: {{workloadIdentityProvider: \"{PROVIDER}\"}}\nidentities: {identities}"
        ),
        &Default::default(),
    )
    .unwrap()
}

fn pod(annotations: Value, containers: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "team-a", "annotations": annotations},
        "spec": {"serviceAccountName": "app", "containers": containers}
    })
}

fn one_container() -> Value {
    json!([{"name": "app", "image": "busybox"}])
}

fn service_account(annotations: Value) -> ServiceAccount {
    serde_json::from_value(json!({"metadata": {"name": "app", "namespace": "team-a", "annotations": annotations}}))
        .unwrap()
}

/// Runs the webhook on `pod` as created in `request_namespace` and returns the mutation and the
/// patched Pod.
fn admit(request_namespace: &str, pod: &Value, sa: Option<&ServiceAccount>, config: &Config) -> (Mutation, Value) {
    let body = serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "namespace": request_namespace, "operation": "CREATE", "object": pod}
    }))
    .unwrap();
    let review = Review::parse(&body).unwrap();
    let mutation = review.mutation(sa, Labels::Unknown, config);
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch::to_json_patch(&mutation.patch).unwrap()).unwrap();
    (mutation, patched)
}

fn env_of(pod: &Value, container: usize) -> Vec<(String, String)> {
    pod["spec"]["containers"][container]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|env| {
            (
                env["name"].as_str().unwrap().to_owned(),
                env["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn env_value(pod: &Value, name: &str) -> Option<String> {
    env_of(pod, 0)
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

fn expiration(pod: &Value, volume: &str) -> i64 {
    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == volume)
        .unwrap_or_else(|| panic!("no volume {volume} in {pod}"));
    volume["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"]
        .as_i64()
        .unwrap()
}

#[test]
fn a_pod_cannot_give_itself_an_identity_with_its_own_annotations() {
    let annotations = json!({
        (aws::ROLE_ARN): POD_ROLE,
        (azure::CLIENT_ID): POD_CLIENT,
        (azure::TENANT_ID): TENANT,
        (gcp::GKE_SERVICE_ACCOUNT): POD_GSA,
        (gcp::SERVICE_ACCOUNT_EMAIL): POD_GSA,
        (gcp::WORKLOAD_IDENTITY_PROVIDER): POD_PROVIDER,
    });
    let config = cluster("[]");
    let sa = service_account(json!({}));
    let (mutation, patched) = admit("team-a", &pod(annotations.clone(), one_container()), Some(&sa), &config);
    assert!(mutation.patch.is_empty(), "{:?}", mutation.patch);
    assert!(mutation.identities.is_empty());
    assert!(env_of(&patched, 0).is_empty());

    // With a ServiceAccount that has its own identities, the Pod's annotations are not used either.
    let sa = service_account(json!({
        (aws::ROLE_ARN): ROLE, (azure::CLIENT_ID): CLIENT, (gcp::GKE_SERVICE_ACCOUNT): GSA,
    }));
    let (mutation, patched) = admit("team-a", &pod(annotations, one_container()), Some(&sa), &config);
    let text = serde_json::to_string(&mutation.patch).unwrap();
    for chosen in [POD_ROLE, POD_CLIENT, POD_GSA, POD_PROVIDER] {
        assert!(!text.contains(chosen), "{chosen} reached the patch: {text}");
    }
    assert_eq!(env_value(&patched, "AWS_ROLE_ARN").as_deref(), Some(ROLE));
    assert_eq!(env_value(&patched, "AZURE_CLIENT_ID").as_deref(), Some(CLIENT));
    let clouds: Vec<&str> = mutation.identities.iter().map(|(cloud, _)| *cloud).collect();
    assert_eq!(clouds, ["aws", "gcp", "azure"]);
}

#[test]
fn a_pod_cannot_lengthen_its_tokens_only_shorten_them() {
    let sa = service_account(json!({
        (aws::ROLE_ARN): ROLE, (aws::TOKEN_EXPIRATION): "3600",
        (gcp::GKE_SERVICE_ACCOUNT): GSA, (gcp::TOKEN_EXPIRATION): "3600",
        (azure::CLIENT_ID): CLIENT, (azure::TOKEN_EXPIRATION): "7200",
    }));
    let config = cluster("[]");
    let longer = json!({
        (aws::TOKEN_EXPIRATION): "86400", (gcp::TOKEN_EXPIRATION): "86400",
        (azure::TOKEN_EXPIRATION): "86400", (azure::POD_TOKEN_EXPIRATION): "86400",
    });
    let (mutation, patched) = admit("team-a", &pod(longer, one_container()), Some(&sa), &config);
    assert_eq!(expiration(&patched, "aws-iam-token"), 3600);
    assert_eq!(expiration(&patched, "gcp-workload-identity"), 3600);
    assert_eq!(expiration(&patched, "azure-identity-token"), 7200);
    assert!(
        mutation.warnings.iter().any(|w| w.contains("can only shorten")),
        "{:?}",
        mutation.warnings
    );

    let shorter = json!({
        (aws::TOKEN_EXPIRATION): "1200", (gcp::TOKEN_EXPIRATION): "900",
        (azure::POD_TOKEN_EXPIRATION): "3600",
    });
    let (_, patched) = admit("team-a", &pod(shorter, one_container()), Some(&sa), &config);
    assert_eq!(expiration(&patched, "aws-iam-token"), 1200);
    assert_eq!(expiration(&patched, "gcp-workload-identity"), 900);
    assert_eq!(expiration(&patched, "azure-identity-token"), 3600);

    // Below the apiserver's floor the token is raised to it, never refused.
    let tiny = json!({(aws::TOKEN_EXPIRATION): "1"});
    let (_, patched) = admit("team-a", &pod(tiny, one_container()), Some(&sa), &config);
    assert_eq!(expiration(&patched, "aws-iam-token"), 600);
}

#[test]
fn skip_annotations_only_remove_identities_from_containers() {
    let sa = service_account(json!({
        (aws::ROLE_ARN): ROLE, (gcp::GKE_SERVICE_ACCOUNT): GSA, (azure::CLIENT_ID): CLIENT,
    }));
    let containers = json!([{"name": "app", "image": "a"}, {"name": "sidecar", "image": "b"}]);
    let skips = json!({
        (aws::SKIP_CONTAINERS): "sidecar,unknown", (gcp::SKIP_CONTAINERS): "sidecar",
        (azure::SKIP_CONTAINERS): "sidecar;unknown",
    });
    let (_, patched) = admit("team-a", &pod(skips, containers.clone()), Some(&sa), &cluster("[]"));
    // AWS 2, Google 2 and CLOUDSDK_CONFIG, Azure 4.
    assert_eq!(env_of(&patched, 0).len(), 9, "{patched}");
    assert!(env_of(&patched, 1).is_empty(), "{patched}");
    assert!(patched["spec"]["containers"][1].get("volumeMounts").is_none());

    // Without an identity, skip lists give nothing.
    let (mutation, _) = admit(
        "team-a",
        &pod(json!({(aws::SKIP_CONTAINERS): "app"}), containers),
        Some(&service_account(json!({}))),
        &cluster("[]"),
    );
    assert!(mutation.patch.is_empty());
}

#[test]
fn a_pod_cannot_get_another_namespaces_mapping() {
    let config = cluster(&format!(
        "[{{namespace: team-a, serviceAccount: app, aws: {{roleArn: \"{ROLE}\"}}, gcp: {{serviceAccount: {GSA}}}, azure: {{clientId: \"{CLIENT}\"}}}}]"
    ));
    let sa = service_account(json!({}));
    // Created in team-a: mapped.
    let (mutation, _) = admit("team-a", &pod(json!({}), one_container()), Some(&sa), &config);
    assert_eq!(mutation.identities.len(), 3);

    // Created in team-b with a ServiceAccount of the same name, even if the object claims team-a.
    for claimed in [json!("team-a"), json!("team-b"), Value::Null] {
        let mut object = pod(json!({}), one_container());
        object["metadata"]["namespace"] = claimed.clone();
        let (mutation, patched) = admit("team-b", &object, Some(&sa), &config);
        assert!(mutation.patch.is_empty(), "claimed {claimed}: {patched}");
        assert!(mutation.identities.is_empty());
    }

    // A ServiceAccount in team-b is not annotated with team-a's mapping either.
    let body = serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "ServiceAccount"},
                    "namespace": "team-b", "operation": "CREATE",
                    "object": {"metadata": {"name": "app", "namespace": "team-a"}}}
    }))
    .unwrap();
    let review = Review::parse(&body).unwrap();
    assert!(review.mutation(None, Labels::Unknown, &config).patch.is_empty());
}

/// Attempts to smuggle JSON, env vars or another identity through each annotation.
#[test]
fn annotation_values_cannot_inject_json_env_vars_or_identities() {
    let smuggled = [
        "arn:aws:iam::111122223333:role/x\",\"name\":\"LD_PRELOAD\",\"value\":\"/evil.so",
        "arn:aws:iam::111122223333:role/x\nLD_PRELOAD=/evil.so",
        "arn:aws:iam::111122223333:role/x}],\"env\":[{\"name\":\"LD_PRELOAD",
        "00000000-1111-2222-3333-444444444444\",\"name\":\"LD_PRELOAD",
        "reader@proj.iam.gserviceaccount.com\",\"token_url\":\"https://evil.example",
        "reader@proj.iam.gserviceaccount.com:generateAccessToken?x=LD_PRELOAD",
        "projects/1/locations/global/workloadIdentityPools/pool/providers/prov\",\"LD_PRELOAD\":\"",
        "projects/1/locations/global/workloadIdentityPools/pool/providers/../../LD_PRELOAD",
        "sts.amazonaws.com\",\"LD_PRELOAD\":\"x",
        "3600\",\"LD_PRELOAD\":\"x",
    ];
    let annotation_keys = [
        aws::ROLE_ARN,
        aws::AUDIENCE,
        aws::STS_REGIONAL_ENDPOINTS,
        aws::TOKEN_EXPIRATION,
        gcp::GKE_SERVICE_ACCOUNT,
        gcp::SERVICE_ACCOUNT_EMAIL,
        gcp::WORKLOAD_IDENTITY_PROVIDER,
        gcp::AUDIENCE,
        gcp::TOKEN_EXPIRATION,
        azure::CLIENT_ID,
        azure::TENANT_ID,
        azure::TOKEN_EXPIRATION,
    ];
    // The identities themselves are valid, so every cloud is injected and every knob is read.
    let valid = json!({
        (aws::ROLE_ARN): ROLE, (gcp::GKE_SERVICE_ACCOUNT): GSA, (azure::CLIENT_ID): CLIENT,
    });
    let config = cluster("[]");
    for key in annotation_keys {
        for value in smuggled {
            let mut annotations = valid.clone();
            if key == gcp::SERVICE_ACCOUNT_EMAIL {
                // GKE's annotation wins over this one; remove it so this one is read.
                annotations.as_object_mut().unwrap().remove(gcp::GKE_SERVICE_ACCOUNT);
            }
            annotations[key] = json!(value);
            let sa = service_account(annotations);
            let (mutation, patched) = admit("team-a", &pod(json!({}), one_container()), Some(&sa), &config);
            let text = patched.to_string();
            // Values with a quote or a line break are refused outright, and nothing of them shows.
            let breaks_out = value.contains('"') || value.contains('\n');
            if breaks_out {
                assert!(!text.contains("LD_PRELOAD"), "{key}={value:?} got through: {text}");
                assert!(!text.contains("evil"), "{key}={value:?} got through: {text}");
            }
            // No object key anywhere (the credential configuration included) comes from a value.
            let credentials_text = patched["metadata"]["annotations"][gcp::CREDENTIAL_CONFIGURATION]
                .as_str()
                .unwrap_or("{}");
            let credentials: Value = serde_json::from_str(credentials_text).unwrap();
            for object in [&patched, &credentials] {
                for name in keys(object) {
                    assert!(!name.contains("LD_PRELOAD"), "{key}={value:?} added the key {name}");
                }
            }
            for (name, _) in env_of(&patched, 0) {
                assert!(
                    name.starts_with("AWS_")
                        || name.starts_with("AZURE_")
                        || name.starts_with("GOOGLE_")
                        || name.starts_with("CLOUDSDK_"),
                    "{key}={value:?} added env var {name}"
                );
            }
            if !credentials.as_object().unwrap().is_empty() {
                assert_eq!(credentials["token_url"], "https://sts.googleapis.com/v1/token");
            }
            // A refused identity value is reported, never silently half-used.
            if breaks_out && key != aws::STS_REGIONAL_ENDPOINTS {
                assert!(
                    mutation.warnings.iter().any(|w| w.contains(key)),
                    "{key}={value:?} refused without a warning: {:?}",
                    mutation.warnings
                );
            }
        }
    }
}

/// Every object key in `value`, at any depth.
fn keys(value: &Value) -> Vec<String> {
    match value {
        Value::Object(map) => map
            .iter()
            .flat_map(|(key, value)| std::iter::once(key.clone()).chain(keys(value)))
            .collect(),
        Value::Array(items) => items.iter().flat_map(keys).collect(),
        _ => Vec::new(),
    }
}

/// Google e-mails and provider names with URL or path characters are refused too: they are
/// placed into URLs and resource names.
#[test]
fn google_identities_cannot_carry_url_or_path_characters() {
    let config = cluster("[]");
    for (key, value) in [
        (
            gcp::GKE_SERVICE_ACCOUNT,
            "reader@proj.iam.gserviceaccount.com:generateAccessToken?x=y",
        ),
        (gcp::GKE_SERVICE_ACCOUNT, "reader@proj.iam.gserviceaccount.com/../../x"),
        (gcp::GKE_SERVICE_ACCOUNT, "reader@proj.iam.gserviceaccount.com#"),
        (
            gcp::WORKLOAD_IDENTITY_PROVIDER,
            "projects/1/locations/global/workloadIdentityPools/pool/providers/../../x",
        ),
        (
            gcp::WORKLOAD_IDENTITY_PROVIDER,
            "projects/1/locations/global/workloadIdentityPools/pool/providers/prov?x=y",
        ),
    ] {
        let mut annotations = json!({(gcp::GKE_SERVICE_ACCOUNT): GSA});
        annotations[key] = json!(value);
        let (mutation, patched) = admit(
            "team-a",
            &pod(json!({}), one_container()),
            Some(&service_account(annotations)),
            &config,
        );
        assert!(!patched.to_string().contains(value), "{key}={value:?} got through");
        assert!(
            mutation.warnings.iter().any(|w| w.contains(key)),
            "{key}={value:?}: {:?}",
            mutation.warnings
        );
    }
}

#[test]
fn configuration_values_are_validated_too() {
    for bad in [
        format!("identities: [{{aws: {{roleArn: '{ROLE}\",\"x\":\"y'}}}}]"),
        "identities: [{azure: {clientId: '00000000-1111-2222-3333-444444444444\"'}}]".to_owned(),
        "identities: [{gcp: {serviceAccount: 'a\"@p.iam.gserviceaccount.com'}}]".to_owned(),
        "gcp: {workloadIdentityProvider: 'projects/1/locations/global/workloadIdentityPools/p\"/providers/x'}"
            .to_owned(),
        "aws: {audience: 'a\" b'}".to_owned(),
        "aws: {region: 'us-west-2\nLD_PRELOAD'}".to_owned(),
        "azure: {tenantId: 'x'}".to_owned(),
        "identities: [{aws: {roleArn: x, extra: y}}]".to_owned(),
    ] {
        assert!(Config::parse(&bad, &Default::default()).is_err(), "{bad} was accepted");
    }
}

#[test]
fn a_preset_google_credential_configuration_is_replaced_by_ours() {
    let evil = json!({"type": "external_account", "token_url": "https://evil.example/token",
                      "credential_source": {"url": "http://evil.example"}})
    .to_string();
    let sa = service_account(json!({(gcp::GKE_SERVICE_ACCOUNT): GSA}));
    let (mutation, patched) = admit(
        "team-a",
        &pod(json!({(gcp::CREDENTIAL_CONFIGURATION): evil}), one_container()),
        Some(&sa),
        &cluster("[]"),
    );
    assert_eq!(mutation.identities, [("gcp", GSA.to_owned())]);
    let credentials: Value = serde_json::from_str(
        patched["metadata"]["annotations"][gcp::CREDENTIAL_CONFIGURATION]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(credentials["token_url"], "https://sts.googleapis.com/v1/token");
    assert_eq!(credentials["audience"], format!("//iam.googleapis.com/{PROVIDER}"));
    assert!(!patched.to_string().contains("evil"));
}

#[test]
fn a_pod_cannot_make_the_credential_env_vars_point_into_its_own_volume() {
    let sa =
        service_account(json!({(aws::ROLE_ARN): ROLE, (azure::CLIENT_ID): CLIENT, (gcp::GKE_SERVICE_ACCOUNT): GSA}));
    // Volumes named like ours that project something else (a node path, another audience), and a
    // container that mounts its own volume where our token would be.
    let mut pod = pod(
        json!({}),
        json!([{"name": "app", "image": "busybox", "volumeMounts": [{"name": "mine", "mountPath": "/var/run/secrets/azure/tokens"}]}]),
    );
    pod["spec"]["volumes"] = json!([
        {"name": "aws-iam-token", "hostPath": {"path": "/var/lib/kubelet"}},
        {"name": "gcp-workload-identity", "projected": {"sources": [
            {"serviceAccountToken": {"audience": "https://attacker.example", "path": "token"}}
        ]}},
        {"name": "mine", "emptyDir": {}}
    ]);
    let (mutation, patched) = admit("team-a", &pod, Some(&sa), &cluster("[]"));
    assert!(mutation.patch.is_empty(), "{:?}", mutation.patch);
    assert!(env_of(&patched, 0).is_empty());
    assert_eq!(mutation.warnings.len(), 3, "{:?}", mutation.warnings);
}

#[test]
fn tenant_values_are_not_echoed_whole() {
    let huge = "x".repeat(256 * 1024);
    let sa = service_account(json!({(aws::ROLE_ARN): ROLE}));
    let pod = pod(
        json!({(aws::TOKEN_EXPIRATION): huge, (aws::SKIP_CONTAINERS): huge}),
        one_container(),
    );
    let (mutation, _) = admit("team-a", &pod, Some(&sa), &cluster("[]"));
    let echoed: usize = mutation.warnings.iter().map(String::len).sum();
    assert!((1..512).contains(&echoed), "{echoed} bytes of warnings");
}

#[test]
fn the_managed_annotations_list_cannot_delete_other_annotations() {
    let config = cluster(&format!(
        "[{{namespace: team-a, serviceAccount: app, aws: {{roleArn: \"{ROLE}\"}}}}]"
    ));
    let tampered = json!({"metadata": {"name": "app", "namespace": "team-a", "annotations": {
        "owner": "security-team", (aws::ROLE_ARN): ROLE,
        "workload-identity.dev/managed-annotations": "owner,eks.amazonaws.com/role-arn",
    }}});
    let body = serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "ServiceAccount"},
                    "namespace": "team-a", "operation": "UPDATE", "object": tampered}
    }))
    .unwrap();
    let mutation = Review::parse(&body).unwrap().mutation(None, Labels::Unknown, &config);
    let text = serde_json::to_string(&mutation.patch).unwrap();
    assert!(!text.contains("owner"), "{text}");
}
