//! Property tests of the pure core over generated Pods, ServiceAccounts and configurations.
//!
//! Pods have any mix of containers and init containers (odd names included), existing env vars,
//! volumes and mounts (some of them ours), arrays that are missing, `null`, empty or filled, junk
//! annotations and Windows node selectors. ServiceAccounts carry any subset of the identity
//! annotations with valid or junk values; configurations have random mappings. For every case:
//!
//! - the request parses and nothing panics;
//! - the patch applies to the Pod, and the result is still a valid `k8s_openapi` Pod;
//! - the webhook run again on its own output gives an empty patch (it is a fixed point);
//! - no volume name, mount name, mount path or env var name appears twice;
//! - only our volumes and env vars are added;
//! - an env var we add that names a file points into our projected token volume, mounted whole at
//!   our path in that container, and every volume we add is mounted by some container;
//! - no junk ServiceAccount annotation value reaches the Pod, and no identity a Pod names for
//!   itself reaches the patch.
//!
//! 256 cases per property by default (a few seconds). For a longer run:
//! `PROPTEST_CASES=20000 cargo test --release --test properties`.

use std::collections::BTreeSet;

use base64::Engine;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use serde_json::{Value, json};
use workload_identity_core::admission::{Review, Subject};
use workload_identity_core::config::Config;
use workload_identity_core::model::ServiceAccount;
use workload_identity_core::mutation::{CONTAINERS_ANNOTATION, Mutation};
use workload_identity_core::patch::to_json_patch;
use workload_identity_core::policy::Labels;
use workload_identity_core::providers::{aws, azure, gcp};

#[path = "../../../fuzz/src/plain.rs"]
mod plain;

/// In every junk ServiceAccount annotation value; must never reach the Pod.
const SA_JUNK: &str = "SAJUNK";
/// In every junk Pod annotation value; must never reach the patch.
const POD_JUNK: &str = "PODJUNK";
/// In every identity a Pod names for itself in its own annotations; must never reach the patch.
const POD_CHOSEN: &[&str] = &["999999999999", "99999999-9999-9999-9999-999999999999", "pod-chosen@"];

const NAMESPACES: &[&str] = &["team-a", "team-b", "default"];
const SERVICE_ACCOUNTS: &[&str] = &["app", "default", "other"];

/// Every env var the webhook may add.
const OUR_ENV: &[&str] = &[
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
    "CLOUDSDK_CORE_PROJECT",
    "CLOUDSDK_CONFIG",
    "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
];

/// Every volume the webhook may add.
const OUR_VOLUMES: &[&str] = &[
    "aws-iam-token",
    "eks-pod-identity-token",
    "gcp-workload-identity",
    "gcp-gcloud-config",
    "azure-identity-token",
];

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

fn odd_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(vec![
            "app", "sidecar", "init", "a~b", "a/b", "~1", "~0/", "a.b.c", "ünïcödé-容器", "",
            " spaced ", "-", "a,b", "a;b",
        ])
        .prop_map(str::to_owned),
        1 => "\\PC{0,12}",
    ]
}

/// A JSON array that is missing (`None`), `null`, empty, or has the generated items.
fn array(items: impl Strategy<Value = Vec<Value>>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(Value::Null)),
        1 => Just(Some(json!([]))),
        4 => items.prop_map(|items| Some(Value::Array(items))),
    ]
}

fn env_list() -> impl Strategy<Value = Option<Value>> {
    let names = vec![
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GOOGLE_CLOUD_PROJECT",
        "CLOUDSDK_CORE_PROJECT",
        "PATH",
        "odd~name/x",
    ];
    array(subsequence(names, 0..=4).prop_map(|names| {
        names
            .into_iter()
            .map(|name| json!({"name": name, "value": "set-by-the-pod"}))
            .collect()
    }))
}

fn mount_list() -> impl Strategy<Value = Option<Value>> {
    // Names and paths are each unique in this pool, so any subsequence is a valid mount list.
    let mounts = vec![
        ("aws-iam-token", "/custom/aws"),
        ("data", "/var/run/secrets/eks.amazonaws.com/serviceaccount"),
        ("gcp-workload-identity", "/custom/gcp"),
        ("azure-identity-token", "/var/run/secrets/azure/tokens"),
        ("other", "/var/run/secrets/sts.googleapis.com/serviceaccount"),
        ("cache", "/cache"),
        ("x~y/z", "/odd/ü"),
    ];
    array(subsequence(mounts, 0..=3).prop_map(|mounts| {
        mounts
            .into_iter()
            .map(|(name, path)| json!({"name": name, "mountPath": path}))
            .collect()
    }))
}

fn container() -> impl Strategy<Value = Value> {
    (odd_name(), env_list(), mount_list()).prop_map(|(name, env, mounts)| {
        let mut container = json!({"name": name, "image": "busybox"});
        if let Some(env) = env {
            container["env"] = env;
        }
        if let Some(mounts) = mounts {
            container["volumeMounts"] = mounts;
        }
        container
    })
}

fn volume_list() -> impl Strategy<Value = Option<Value>> {
    let names = vec![
        "aws-iam-token",
        "gcp-workload-identity",
        "azure-identity-token",
        "eks-pod-identity-token",
        "data",
        "cache",
    ];
    // Same-named volumes of the user are either foreign (emptyDir) or the token we would project.
    let ours = |name: &str| match name {
        "aws-iam-token" => Some(token_volume(name, "sts.amazonaws.com", "token")),
        "azure-identity-token" => Some(token_volume(name, "api://AzureADTokenExchange", name)),
        "eks-pod-identity-token" => Some(token_volume(name, "pods.eks.amazonaws.com", name)),
        _ => None,
    };
    array(
        (subsequence(names, 0..=3), any::<bool>()).prop_map(move |(names, projected)| {
            names
                .into_iter()
                .map(|name| match ours(name) {
                    Some(volume) if projected => volume,
                    _ => json!({"name": name, "emptyDir": {}}),
                })
                .collect()
        }),
    )
}

fn token_volume(name: &str, audience: &str, path: &str) -> Value {
    json!({"name": name, "projected": {"sources": [
        {"serviceAccountToken": {"audience": audience, "expirationSeconds": 7200, "path": path}}
    ]}})
}

fn seconds() -> impl Strategy<Value = String> {
    prop_oneof![
        (0i64..200_000).prop_map(|seconds| seconds.to_string()),
        select(vec![" 900 ", "-1", "99999999999999999999", "0x10", "3600.5"]).prop_map(str::to_owned),
        Just(format!("3600 {POD_JUNK}")),
    ]
}

/// One Pod annotation: skip lists, token lifetimes, a pre-set credential configuration, and
/// identities the Pod names for itself.
fn pod_annotation() -> impl Strategy<Value = (String, String)> {
    let skip = |separator: &'static str| {
        prop_oneof![
            prop::collection::vec(odd_name(), 0..3).prop_map(move |names| names.join(separator)),
            Just(format!("app{separator}\"{POD_JUNK}")),
        ]
    };
    prop_oneof![
        skip(",").prop_map(|value| (aws::SKIP_CONTAINERS.to_owned(), value)),
        skip(",").prop_map(|value| (gcp::SKIP_CONTAINERS.to_owned(), value)),
        skip(";").prop_map(|value| (azure::SKIP_CONTAINERS.to_owned(), value)),
        skip(",").prop_map(|value| (CONTAINERS_ANNOTATION.to_owned(), value)),
        (
            select(vec![
                aws::TOKEN_EXPIRATION,
                gcp::TOKEN_EXPIRATION,
                azure::TOKEN_EXPIRATION,
                azure::POD_TOKEN_EXPIRATION,
            ]),
            seconds()
        )
            .prop_map(|(key, value)| (key.to_owned(), value)),
        Just((
            gcp::CREDENTIAL_CONFIGURATION.to_owned(),
            format!("{{\"type\":\"{POD_JUNK}\"}}")
        )),
        Just((
            aws::ROLE_ARN.to_owned(),
            "arn:aws:iam::999999999999:role/pod-chosen".to_owned()
        )),
        Just((
            azure::CLIENT_ID.to_owned(),
            "99999999-9999-9999-9999-999999999999".to_owned()
        )),
        Just((
            gcp::GKE_SERVICE_ACCOUNT.to_owned(),
            "pod-chosen@evil.iam.gserviceaccount.com".to_owned()
        )),
        Just(("example.com/junk".to_owned(), format!("\"}}]{POD_JUNK}\n"))),
    ]
}

/// A map that is missing, `null`, or has the generated entries.
fn map(entries: impl Strategy<Value = Vec<(String, String)>>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(Value::Null)),
        4 => entries.prop_map(|entries| {
            Some(Value::Object(
                entries.into_iter().map(|(key, value)| (key, Value::String(value))).collect(),
            ))
        }),
    ]
}

fn pod() -> impl Strategy<Value = Value> {
    let labels = option::of(select(vec!["true", "false", "yes", ""]));
    let node_selector = option::of(select(vec![
        ("kubernetes.io/os", "windows"),
        ("beta.kubernetes.io/os", "windows"),
        ("kubernetes.io/os", "linux"),
    ]));
    let service_account = option::of(select(vec!["", "app", "default", "other"]));
    let os = option::of(select(vec!["windows", "linux"]));
    (
        (odd_name(), labels, map(prop::collection::vec(pod_annotation(), 0..5))),
        (service_account, (node_selector, os), volume_list()),
        prop::collection::vec(container(), 0..6),
        array(prop::collection::vec(container(), 0..6)),
    )
        .prop_map(
            |(
                (name, label, annotations),
                (service_account, (node_selector, os), volumes),
                containers,
                init_containers,
            )| {
                let mut metadata = json!({"name": name});
                if let Some(annotations) = annotations {
                    metadata["annotations"] = annotations;
                }
                if let Some(label) = label {
                    metadata["labels"] = json!({(azure::USE_LABEL): label});
                }
                let mut spec = json!({"containers": containers});
                if let Some(service_account) = service_account {
                    spec["serviceAccountName"] = json!(service_account);
                }
                if let Some((key, value)) = node_selector {
                    spec["nodeSelector"] = json!({(key): value});
                }
                if let Some(os) = os {
                    spec["os"] = json!({"name": os});
                }
                if let Some(volumes) = volumes {
                    spec["volumes"] = volumes;
                }
                if let Some(init_containers) = init_containers {
                    spec["initContainers"] = init_containers;
                }
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
            },
        )
}

/// Values that fail every check: each holds a quote, whitespace or a control character.
fn junk() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            format!("\",\"name\":\"{SA_JUNK}"),
            format!("arn:aws:iam::111122223333:role/x\",\"value\":\"{SA_JUNK}"),
            format!("arn:aws:iam::111122223333:role/x\n{SA_JUNK}"),
            format!("00000000-1111-2222-3333-444444444444\"{SA_JUNK}"),
            format!("reader@proj.iam.gserviceaccount.com\"}}],\"{SA_JUNK}\":\""),
            format!("projects/123/locations/global/workloadIdentityPools/pool-1/providers/prov-1\" {SA_JUNK}"),
            format!("sts.amazonaws.com {SA_JUNK}"),
            format!("{SA_JUNK}\u{0}"),
            format!("ünïcödé {SA_JUNK}"),
            format!("3600 {SA_JUNK}"),
        ]),
        ("[^\"]{0,8}", "[^\"]{0,8}").prop_map(|(a, b)| format!("{a}\"{SA_JUNK}{b}")),
    ]
}

/// One ServiceAccount annotation with a valid value (sometimes padded with whitespace) or junk.
fn service_account_annotation() -> impl Strategy<Value = (String, String)> {
    let valid = |key: &'static str, values: Vec<&'static str>| {
        (
            Just(key.to_owned()),
            prop_oneof![
                3 => select(values.clone()).prop_map(str::to_owned),
                1 => select(values).prop_map(|value| format!(" {value}\n")),
                2 => junk(),
            ],
        )
    };
    prop_oneof![
        valid(
            aws::ROLE_ARN,
            vec![
                "arn:aws:iam::111122223333:role/sa-role",
                "arn:aws-cn:iam::111122223333:role/path/x"
            ]
        ),
        valid(aws::AUDIENCE, vec!["sts.amazonaws.com", "custom-aud"]),
        valid(aws::STS_REGIONAL_ENDPOINTS, vec!["true", "false"]),
        valid(aws::TOKEN_EXPIRATION, vec!["3600", "86400", "100"]),
        valid(gcp::GKE_SERVICE_ACCOUNT, vec!["reader@proj.iam.gserviceaccount.com"]),
        valid(gcp::SERVICE_ACCOUNT_EMAIL, vec!["other@proj.iam.gserviceaccount.com"]),
        valid(
            gcp::WORKLOAD_IDENTITY_PROVIDER,
            vec!["projects/123/locations/global/workloadIdentityPools/pool-1/providers/prov-1"]
        ),
        valid(gcp::AUDIENCE, vec!["//iam.googleapis.com/x"]),
        valid(gcp::TOKEN_EXPIRATION, vec!["1800", "7200"]),
        valid(azure::CLIENT_ID, vec!["00000000-1111-2222-3333-444444444444"]),
        valid(azure::TENANT_ID, vec!["11111111-2222-3333-4444-555555555555"]),
        valid(azure::TOKEN_EXPIRATION, vec!["3600", "7200"]),
    ]
}

fn service_account() -> impl Strategy<Value = Option<Value>> {
    option::weighted(
        0.9,
        (
            select(SERVICE_ACCOUNTS.to_vec()),
            map(prop::collection::vec(service_account_annotation(), 0..8)),
        )
            .prop_map(|(name, annotations)| {
                let mut metadata = json!({"name": name});
                if let Some(annotations) = annotations {
                    metadata["annotations"] = annotations;
                }
                json!({"metadata": metadata})
            }),
    )
}

fn mapping() -> impl Strategy<Value = Value> {
    let mut namespaces = NAMESPACES.to_vec();
    namespaces.push("*");
    let mut service_accounts = SERVICE_ACCOUNTS.to_vec();
    service_accounts.push("*");
    let aws = select(vec![
        json!({"roleArn": "arn:aws:iam::111122223333:role/mapped"}),
        json!({"roleArn": "arn:aws:iam::111122223333:role/mapped-irsa", "mode": "irsa"}),
        json!({"mode": "podIdentity"}),
    ]);
    let gcp = select(vec![
        json!({}),
        json!({"serviceAccount": "mapped@proj.iam.gserviceaccount.com"}),
    ]);
    let azure = select(vec![
        json!({}),
        json!({"clientId": "22222222-1111-2222-3333-444444444444"}),
        json!({"clientId": "33333333-1111-2222-3333-444444444444", "tenantId": "44444444-2222-3333-4444-555555555555"}),
    ]);
    (
        select(namespaces),
        select(service_accounts),
        option::of(aws),
        option::of(gcp),
        option::of(azure),
        option::weighted(0.4, Just(())),
    )
        .prop_map(|(namespace, service_account, aws, gcp, azure, per_container)| {
            let mut mapping = json!({"namespace": namespace, "serviceAccount": service_account});
            if per_container.is_some() {
                // Named in `config()`, where the mapping's place is known.
                mapping["containers"] = json!([]);
            }
            for (key, value) in [("aws", aws), ("gcp", gcp), ("azure", azure)] {
                if let Some(value) = value {
                    mapping[key] = value;
                }
            }
            mapping
        })
}

/// The containers that mappings with `containers` name, by their place in the list.
const PER_CONTAINER_NAMES: [&str; 3] = ["app", "sidecar", "init"];

/// A valid configuration, written as JSON (which is YAML).
fn config() -> impl Strategy<Value = String> {
    let aws = (
        option::of(select(vec!["us-west-2", "eu-central-1"])),
        option::of(any::<bool>()),
        option::of(select(vec!["sts.amazonaws.com", "aud-x"])),
        option::of(select(vec![100i64, 3600, 86400])),
    )
        .prop_map(|(region, regional, audience, expiration)| {
            json!({"region": region, "stsRegionalEndpoints": regional, "audience": audience, "tokenExpirationSeconds": expiration})
        });
    let gcp = (
        option::of(select(vec![
            "projects/123456789/locations/global/workloadIdentityPools/pool/providers/provider",
        ])),
        option::weighted(0.2, Just("gke")),
        option::of(select(vec![600i64, 3600])),
    )
        .prop_map(|(provider, mode, expiration)| {
            json!({"workloadIdentityProvider": provider, "mode": mode.unwrap_or("federation"), "tokenExpirationSeconds": expiration})
        });
    let azure = (
        option::of(Just("11111111-2222-3333-4444-555555555555")),
        select(vec![
            "AzurePublicCloud",
            "AzureChinaCloud",
            "AzureUSGovernmentCloud",
        ]),
        option::of(3600i64..=86400),
        option::weighted(0.2, Just(true)),
    )
        .prop_map(|(tenant, cloud, expiration, require_label)| {
            json!({"tenantId": tenant, "cloud": cloud, "tokenExpirationSeconds": expiration, "requirePodLabel": require_label.unwrap_or(false)})
        });
    // An identity policy in warn mode (enforce would refuse some generated mappings at load): it
    // judges every identity, warns and adds audit annotations, and never changes the patch.
    let policy = option::weighted(
        0.3,
        Just(json!({"mode": "warn", "rules": [{"name": "some", "namespaces": ["*"],
            "aws": {"roleArns": ["arn:aws:iam::111122223333:*"]}, "gcp": {"projects": ["my-project"]}}]})),
    );
    (aws, gcp, azure, prop::collection::vec(mapping(), 0..5), policy).prop_map(
        |(aws, gcp, azure, mut identities, policy)| {
            // Mappings with containers name one container each, a different one per place, so
            // that no two claim the same container (a configuration error).
            for (i, mapping) in identities.iter_mut().enumerate() {
                if let Some(map) = mapping.as_object_mut().filter(|map| map.contains_key("containers")) {
                    match PER_CONTAINER_NAMES.get(i) {
                        Some(name) => map.insert("containers".to_owned(), json!([name, format!("not-in-any-pod-{i}")])),
                        None => map.remove("containers"),
                    };
                }
            }
            let mut config = json!({"aws": without_nulls(aws), "gcp": without_nulls(gcp), "azure": without_nulls(azure), "identities": identities});
            if let Some(policy) = policy {
                config["policy"] = policy;
            }
            config.to_string()
        },
    )
}

fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).collect()),
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------
// The webhook and the checks
// ---------------------------------------------------------------------------------------------

fn review_bytes(namespace: &str, pod: &Value) -> Vec<u8> {
    let mut review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
        }
    });
    // Half the bodies leave out what the webhook never reads (the apiserver always sends it), so
    // the comparison with kube-rs's types also covers bodies those types would refuse alone.
    if namespace.len().is_multiple_of(2) {
        let request = review["request"].as_object_mut().unwrap();
        request.remove("userInfo");
        request.remove("resource");
    }
    serde_json::to_vec(&review).unwrap()
}

/// Runs the webhook as the server does (parse, mutate, encode the response) and returns the
/// mutation and the patch decoded back from the response.
fn webhook(
    namespace: &str,
    pod: &Value,
    service_account: Option<&ServiceAccount>,
    config: &Config,
) -> Result<(Mutation, json_patch::Patch), TestCaseError> {
    let body = review_bytes(namespace, pod);
    // The tuned decoder and answer writer give what kube-rs's plain types give.
    let plain = plain::plain(&body, service_account, config);
    prop_assert!(plain.is_some(), "kube-rs's AdmissionReview refused the body");
    prop_assert_eq!(plain::tuned(&body, service_account, config), plain);
    let review = Review::parse(&body).map_err(|err| TestCaseError::fail(format!("review refused: {err}")))?;
    prop_assert!(
        matches!(review.subject, Subject::Pod(_)),
        "the Pod was not read: {:?}",
        review.subject
    );
    let mutation = review.mutation(service_account, Labels::Unknown, config);
    let response: Value = serde_json::from_slice(&review.response(&mutation).unwrap()).unwrap();
    prop_assert_eq!(&response["response"]["allowed"], &json!(true));
    prop_assert_eq!(
        &response["response"]["uid"],
        &json!("705ab4f5-6393-11e8-b7cc-42010a800002")
    );
    let patch = match response["response"]["patch"].as_str() {
        Some(encoded) => {
            prop_assert_eq!(&response["response"]["patchType"], &json!("JSONPatch"));
            serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(encoded).unwrap()).unwrap()
        }
        None => json_patch::Patch(Vec::new()),
    };
    prop_assert_eq!(
        serde_json::to_value(&patch).unwrap(),
        serde_json::to_value(&mutation.patch).unwrap()
    );
    Ok((mutation, patch))
}

fn items<'v>(value: &'v Value, key: &str) -> impl Iterator<Item = &'v Value> {
    value[key].as_array().into_iter().flatten()
}

fn all_containers(pod: &Value) -> impl Iterator<Item = &Value> {
    items(&pod["spec"], "containers").chain(items(&pod["spec"], "initContainers"))
}

fn strings<'v>(list: impl Iterator<Item = &'v Value>, key: &str) -> Vec<String> {
    list.map(|item| item[key].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn duplicates(values: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    values
        .iter()
        .filter(|value| !seen.insert(value.as_str()))
        .cloned()
        .collect()
}

fn assert_unique(pod: &Value) -> Result<(), TestCaseError> {
    let volumes = strings(items(&pod["spec"], "volumes"), "name");
    prop_assert!(
        duplicates(&volumes).is_empty(),
        "duplicate volumes {:?}",
        duplicates(&volumes)
    );
    for container in all_containers(pod) {
        for (list, key) in [("env", "name"), ("volumeMounts", "name"), ("volumeMounts", "mountPath")] {
            let values = strings(items(container, list), key);
            prop_assert!(
                duplicates(&values).is_empty(),
                "duplicate {list}.{key} {:?} in container {}",
                duplicates(&values),
                container["name"]
            );
        }
    }
    Ok(())
}

/// Only our env vars and volumes are added, and nothing is removed.
fn assert_only_ours_added(before: &Value, after: &Value) -> Result<(), TestCaseError> {
    let added = |before: Vec<String>, after: Vec<String>| -> Result<Vec<String>, TestCaseError> {
        prop_assert!(
            after.starts_with(&before),
            "existing entries changed: {before:?} -> {after:?}"
        );
        Ok(after[before.len()..].to_vec())
    };
    for name in added(
        strings(items(&before["spec"], "volumes"), "name"),
        strings(items(&after["spec"], "volumes"), "name"),
    )? {
        prop_assert!(OUR_VOLUMES.contains(&name.as_str()), "added volume {name}");
    }
    let before_containers: Vec<&Value> = all_containers(before).collect();
    let after_containers: Vec<&Value> = all_containers(after).collect();
    prop_assert_eq!(before_containers.len(), after_containers.len());
    for (old, new) in before_containers.into_iter().zip(after_containers) {
        prop_assert_eq!(&old["name"], &new["name"]);
        for name in added(strings(items(old, "env"), "name"), strings(items(new, "env"), "name"))? {
            prop_assert!(OUR_ENV.contains(&name.as_str()), "added env var {name}");
        }
        for name in added(
            strings(items(old, "volumeMounts"), "name"),
            strings(items(new, "volumeMounts"), "name"),
        )? {
            prop_assert!(OUR_VOLUMES.contains(&name.as_str()), "added mount {name}");
        }
    }
    Ok(())
}

/// Env vars that name a file of ours, with the volume and the path that file must come from.
const FILE_ENV: &[(&str, &str, &str)] = &[
    (
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "aws-iam-token",
        "/var/run/secrets/eks.amazonaws.com/serviceaccount",
    ),
    (
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "eks-pod-identity-token",
        "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount",
    ),
    (
        "GOOGLE_APPLICATION_CREDENTIALS",
        "gcp-workload-identity",
        "/var/run/secrets/sts.googleapis.com/serviceaccount",
    ),
    (
        "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE",
        "gcp-workload-identity",
        "/var/run/secrets/sts.googleapis.com/serviceaccount",
    ),
    (
        "AZURE_FEDERATED_TOKEN_FILE",
        "azure-identity-token",
        "/var/run/secrets/azure/tokens",
    ),
];

/// Every env var we add that names a file points into a projected token volume that the
/// container mounts whole at our path, and every volume we add is mounted by some container.
fn assert_env_points_at_projected_files(before: &Value, after: &Value) -> Result<(), TestCaseError> {
    let volume = |name: &str| items(&after["spec"], "volumes").find(|volume| volume["name"] == name);
    for (old, new) in all_containers(before).zip(all_containers(after)) {
        for (env, volume_name, path) in FILE_ENV {
            let sets = |container: &Value| items(container, "env").any(|var| var["name"] == *env);
            if sets(old) || !sets(new) {
                continue;
            }
            prop_assert!(
                items(new, "volumeMounts").any(|mount| mount["name"] == *volume_name
                    && mount["mountPath"] == *path
                    && mount.get("subPath").is_none()),
                "{env} added to container {} without our volume mounted at {path}",
                new["name"]
            );
            prop_assert!(
                volume(volume_name).is_some_and(|volume| items(&volume["projected"], "sources")
                    .any(|source| source.get("serviceAccountToken").is_some())),
                "{env} points into volume {volume_name}, which projects no token: {:?}",
                volume(volume_name)
            );
        }
    }
    let before_volumes = strings(items(&before["spec"], "volumes"), "name");
    for added in strings(items(&after["spec"], "volumes"), "name").split_off(before_volumes.len()) {
        prop_assert!(
            all_containers(after).any(|container| items(container, "volumeMounts").any(|mount| mount["name"] == added)),
            "volume {added} added but mounted by no container"
        );
    }
    Ok(())
}

fn check(
    namespace: &str,
    pod: &Value,
    service_account: Option<&Value>,
    config_text: &str,
) -> Result<(), TestCaseError> {
    let config = Config::parse(config_text, &Default::default())
        .map_err(|err| TestCaseError::fail(format!("generated config refused: {err}")))?;
    let service_account: Option<ServiceAccount> = service_account.map(|sa| serde_json::from_value(sa.clone()).unwrap());

    let (mutation, patch) = webhook(namespace, pod, service_account.as_ref(), &config)?;

    // The patch applies, and a valid Pod stays a valid Pod.
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch)
        .map_err(|err| TestCaseError::fail(format!("patch does not apply: {err}")))?;
    if serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(pod.clone()).is_ok() {
        serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(patched.clone())
            .map_err(|err| TestCaseError::fail(format!("patched Pod is not a valid Pod: {err}")))?;
    }

    // Unique names, and only ours added.
    assert_unique(&patched)?;
    assert_only_ours_added(pod, &patched)?;
    assert_env_points_at_projected_files(pod, &patched)?;
    // The answer's warnings stay within what the apiserver passes on.
    prop_assert!(mutation.warnings.iter().map(String::len).sum::<usize>() <= 4096);

    // Junk and self-chosen identities never get through.
    let patched_text = patched.to_string();
    prop_assert!(
        !patched_text.contains(SA_JUNK),
        "junk ServiceAccount annotation in the Pod"
    );
    let patch_text = serde_json::to_string(&patch).unwrap();
    prop_assert!(!patch_text.contains(POD_JUNK), "junk Pod annotation in the patch");
    for chosen in POD_CHOSEN {
        prop_assert!(
            !patch_text.contains(chosen),
            "identity {chosen} named by the Pod itself reached the patch"
        );
    }
    // A Pod without a ServiceAccount name is left alone (the apiserver would refuse a token).
    if pod["spec"]["serviceAccountName"].as_str().is_none_or(str::is_empty) {
        prop_assert!(mutation.patch.is_empty(), "an unnamed Pod was patched");
    }
    // A patch always comes with an identity (the reverse need not hold: all may be in place).
    if mutation.identities.is_empty() {
        prop_assert!(mutation.patch.is_empty(), "a patch without an identity");
    }

    // A fixed point: the webhook leaves its own output alone.
    let (again, _) = webhook(namespace, &patched, service_account.as_ref(), &config)?;
    prop_assert!(
        again.patch.is_empty(),
        "second run patched again: {}",
        serde_json::to_string(&again.patch).unwrap()
    );
    Ok(())
}

fn proptest_config() -> ProptestConfig {
    // `ProptestConfig::default()` reads PROPTEST_CASES (256 when unset). A failure prints the
    // minimal input and its seed; no regression file is written (integration tests have no lib.rs
    // for proptest to place one beside).
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn pods_are_patched_safely_and_idempotently(
        namespace in select(NAMESPACES.to_vec()),
        pod in pod(),
        service_account in service_account(),
        config in config(),
    ) {
        check(namespace, &pod, service_account.as_ref(), &config)?;
    }

    /// The ServiceAccount annotations a mapping adds apply, are valid and are a fixed point.
    #[test]
    fn service_accounts_are_patched_safely_and_idempotently(
        namespace in select(NAMESPACES.to_vec()),
        service_account in service_account(),
        config in config(),
    ) {
        let config = Config::parse(&config, &Default::default()).unwrap();
        let mut object = service_account.unwrap_or_else(|| json!({"metadata": {"name": "app"}}));
        object["metadata"]["namespace"] = json!(namespace);
        let review = |object: &Value| {
            let bytes = serde_json::to_vec(&json!({
                "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "ServiceAccount"},
                            "namespace": namespace, "operation": "UPDATE", "object": object}
            })).unwrap();
            Review::parse(&bytes).unwrap()
        };
        let first = review(&object);
        prop_assert!(matches!(first.subject, Subject::ServiceAccount(_)));
        let mutation = first.mutation(None, Labels::Unknown, &config);
        let mut patched = object.clone();
        json_patch::patch(&mut patched, &to_json_patch(&mutation.patch).unwrap())
            .map_err(|err| TestCaseError::fail(format!("patch does not apply: {err}")))?;
        serde_json::from_value::<k8s_openapi::api::core::v1::ServiceAccount>(patched.clone()).unwrap();
        // Existing annotations, junk or not, are never overwritten.
        if let Some(Value::Object(before)) = object["metadata"].get("annotations") {
            for (key, value) in before {
                prop_assert_eq!(&patched["metadata"]["annotations"][key], value);
            }
        }
        prop_assert!(review(&patched).mutation(None, Labels::Unknown, &config).patch.is_empty());
    }

    /// Review parsing never panics on arbitrary bytes or on mangled valid reviews.
    #[test]
    fn arbitrary_bodies_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        pod in pod(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let config = Config::parse(
            "gcp: {workloadIdentityProvider: projects/1/locations/global/workloadIdentityPools/pool/providers/prov}\nazure: {tenantId: 11111111-2222-3333-4444-555555555555}\nidentities: [{aws: {roleArn: 'arn:aws:iam::111122223333:role/r'}, gcp: {}, azure: {}}]",
            &Default::default(),
        ).unwrap();
        let service_account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "app"}})).unwrap();
        let valid = review_bytes("team-a", &pod);
        let truncated = valid[..cut.index(valid.len() + 1)].to_vec();
        let mut flipped = valid.clone();
        let at = flip.index(flipped.len());
        flipped[at] = byte;
        for body in [bytes, truncated, flipped] {
            if let Ok(review) = Review::parse(&body) {
                let mutation = review.mutation(Some(&service_account), Labels::Unknown, &config);
                review.response(&mutation).unwrap();
            }
        }
    }
}
