//! What the fuzz targets run, shared with `tests/fuzz_corpus.rs`, which replays the committed
//! corpus through the same functions on stable Rust (so every crash once found stays a test).
//!
//! Beyond "does not panic", each function checks what the webhook promises about its answer.

pub mod plain;

use std::sync::OnceLock;

use serde_json::{Value, json};
use workload_identity_core::admission::{Review, Subject};
use workload_identity_core::config::{Config, Settings};
use workload_identity_core::model::ServiceAccount;
use workload_identity_core::patch::to_json_patch;
use workload_identity_core::policy::Labels;

/// Mappings and settings for every cloud, so any Pod or ServiceAccount gets the most patching.
pub const CONFIG: &str = r#"
aws: {region: us-west-2, stsRegionalEndpoints: true}
azure: {tenantId: "11111111-2222-3333-4444-555555555555"}
gcp: {workloadIdentityProvider: "projects/123456789/locations/global/workloadIdentityPools/pool/providers/provider"}
identities:
  - namespace: pod-identity
    aws: {mode: podIdentity}
  - aws: {roleArn: "arn:aws:iam::111122223333:role/mapped"}
    gcp: {serviceAccount: "mapped@proj.iam.gserviceaccount.com"}
    azure: {clientId: "00000000-1111-2222-3333-444444444444"}
"#;

fn config_for_reviews() -> &'static Config {
    static CONFIG_FOR_REVIEWS: OnceLock<Config> = OnceLock::new();
    CONFIG_FOR_REVIEWS.get_or_init(|| Config::parse(CONFIG, &Default::default()).unwrap())
}

fn annotated_service_account() -> &'static ServiceAccount {
    static SERVICE_ACCOUNT: OnceLock<ServiceAccount> = OnceLock::new();
    SERVICE_ACCOUNT.get_or_init(|| {
        serde_json::from_value(json!({"metadata": {"name": "app", "annotations": {
            "eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/annotated",
            "eks.amazonaws.com/token-expiration": "3600",
            "iam.gke.io/gcp-service-account": "annotated@proj.iam.gserviceaccount.com",
            "azure.workload.identity/client-id": "99999999-1111-2222-3333-444444444444",
        }}}))
        .unwrap()
    })
}

/// A raw `/mutate` body: parse it, mutate, encode the answer; the answer is JSON with the request's
/// uid, the patch applies to the object, and the webhook leaves its own output alone.
pub fn review(data: &[u8]) {
    let Ok(review) = Review::parse(data) else {
        return;
    };
    let config = config_for_reviews();
    for service_account in [Some(annotated_service_account()), None] {
        // The tuned decoder and writer agree with kube-rs's types wherever those read the body.
        if let Some(plain) = plain::plain(data, service_account, config) {
            assert_eq!(plain::tuned(data, service_account, config), Some(plain));
        }
        let mutation = review.mutation(service_account, Labels::Unknown, config);
        let answer = review.response(&mutation).expect("the answer encodes");
        let answer: Value = serde_json::from_slice(&answer).expect("the answer is JSON");
        assert_eq!(answer["response"]["uid"], review.uid.as_str());
        assert_eq!(answer["response"]["allowed"], true);
        if mutation.patch.is_empty() {
            continue;
        }
        assert!(matches!(review.subject, Subject::Pod(_) | Subject::ServiceAccount(_)));
        // The review parser skips fields it does not read without checking them (they may even hold
        // invalid UTF-8); such a body cannot be edited as a `Value`, so the patch is not replayed.
        let Ok(mut body) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        let mut object = body["request"]["object"].take();
        let patch = to_json_patch(&mutation.patch).expect("the patch reads as a JSON patch");
        json_patch::patch(&mut object, &patch).unwrap_or_else(|err| {
            panic!(
                "the patch does not apply: {err}\n{}",
                serde_json::to_string(&mutation.patch).unwrap()
            )
        });
        body["request"]["object"] = object;
        let again = Review::parse(&serde_json::to_vec(&body).unwrap()).expect("the patched review parses");
        let second = again.mutation(service_account, Labels::Unknown, config);
        assert!(
            second.patch.is_empty(),
            "not a fixed point: {}",
            serde_json::to_string(&second.patch).unwrap()
        );
    }
}

/// A `config.yaml`: parse it over flag defaults and without; whatever parses is used on a Pod and
/// a ServiceAccount, and the patches apply.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut flags = Settings::default();
    flags.aws.region = Some("eu-west-1".into());
    flags.azure.tenant_id = Some("11111111-2222-3333-4444-555555555555".into());
    for defaults in [Settings::default(), flags] {
        let Ok(config) = Config::parse(text, &defaults) else {
            continue;
        };
        for (kind, operation, object) in [
            (
                "Pod",
                "CREATE",
                json!({"metadata": {"name": "p"}, "spec": {"serviceAccountName": "app",
                        "containers": [{"name": "app"}], "initContainers": [{"name": "init", "env": []}]}}),
            ),
            ("ServiceAccount", "CREATE", json!({"metadata": {"name": "app"}})),
        ] {
            for namespace in ["team-a", "default", "*"] {
                let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                    "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": kind},
                                "namespace": namespace, "operation": operation, "object": object}});
                let review = Review::parse(&serde_json::to_vec(&body).unwrap()).unwrap();
                for service_account in [Some(annotated_service_account()), None] {
                    let mutation = review.mutation(service_account, Labels::Unknown, &config);
                    review.response(&mutation).expect("the answer encodes");
                    let mut patched = object.clone();
                    let patch = to_json_patch(&mutation.patch).expect("the patch reads as a JSON patch");
                    json_patch::patch(&mut patched, &patch).expect("the patch applies");
                }
            }
        }
    }
}
