//! Unit tests of the pure core, through its public entry points.
//!
//! Every scenario builds a Pod (or ServiceAccount) as JSON, runs the webhook, APPLIES the patch to
//! the original JSON and asserts on the resulting object, which is what users see. Every result is
//! also checked to be a well-formed Pod (it deserializes into `k8s_openapi`'s Pod, names are unique,
//! every mount has its volume) and to be a fixed point: running the webhook again on its own output
//! yields an empty patch.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use serde_json::{Value, json};

use crate::admission::{MAX_UID_BYTES, Review, ReviewError, Subject};
use crate::config::{Config, ConfigError};
use crate::model::{Pod, ServiceAccount};
use crate::mutation::{MANAGED_ANNOTATIONS, Mutation, mutate_pod, mutate_service_account};
use crate::policy::{Labels, Namespace};

const NS: &str = "team-a";
const ROLE: &str = "arn:aws:iam::111122223333:role/s3-reader";
const OTHER_ROLE: &str = "arn:aws:iam::444455556666:role/other";
const CLIENT: &str = "00000000-1111-2222-3333-444444444444";
const OTHER_CLIENT: &str = "99999999-1111-2222-3333-444444444444";
const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const OTHER_TENANT: &str = "22222222-2222-3333-4444-555555555555";
const PROVIDER: &str = "projects/123456789/locations/global/workloadIdentityPools/pool/providers/provider";
const OTHER_PROVIDER: &str = "projects/42/locations/global/workloadIdentityPools/other-pool/providers/oidc";
const GSA: &str = "reader@my-project.iam.gserviceaccount.com";
const OTHER_GSA: &str = "writer@my-project.iam.gserviceaccount.com";
const UID: &str = "705ab4f5-6393-11e8-b7cc-42010a800002";

const IRSA_MOUNT: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount";
const IRSA_TOKEN: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount/token";
const POD_IDENTITY_MOUNT: &str = "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount";
const GCP_MOUNT: &str = "/var/run/secrets/sts.googleapis.com/serviceaccount";
const GCP_CREDENTIALS: &str = "/var/run/secrets/sts.googleapis.com/serviceaccount/credential-configuration.json";
const GCP_ANNOTATION: &str = "cloud.google.com/external-credentials-json";
const AZURE_MOUNT: &str = "/var/run/secrets/azure/tokens";
const AZURE_TOKEN: &str = "/var/run/secrets/azure/tokens/azure-identity-token";

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

fn config(yaml: &str) -> Config {
    Config::parse(yaml, &Default::default()).unwrap_or_else(|err| panic!("test config must parse: {err}\n{yaml}"))
}

fn no_config() -> Config {
    config("")
}

/// The cluster settings every cloud needs, and nothing else.
fn cluster() -> Config {
    config(&format!(
        "aws: {{region: eu-west-1}}\nazure: {{tenantId: \"{TENANT}\"}}\ngcp: {{workloadIdentityProvider: \"{PROVIDER}\"}}"
    ))
}

/// RFC 7396 merge: `null` removes a key, objects merge, anything else replaces.
fn merged(mut base: Value, overrides: Value) -> Value {
    json_patch::merge(&mut base, &overrides);
    base
}

/// A Pod with one container and no `env`, `volumeMounts`, `volumes` or `annotations` at all.
fn pod(overrides: Value) -> Value {
    let base = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "busybox"}]}
    });
    merged(base, overrides)
}

/// A Pod with two containers and an init container that already has annotations, volumes, mounts
/// and env vars, so the patch must append instead of create.
fn full_pod(overrides: Value) -> Value {
    pod(merged(
        json!({
            "metadata": {"annotations": {"team": "a"}},
            "spec": {
                "volumes": [{"name": "data", "emptyDir": {}}],
                "containers": [
                    {"name": "app", "image": "app", "env": [{"name": "EXISTING", "value": "1"}],
                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                    {"name": "sidecar", "image": "proxy", "env": [], "volumeMounts": []}
                ],
                "initContainers": [{"name": "init", "image": "busybox"}]
            }
        }),
        overrides,
    ))
}

/// A Pod whose only container is given.
fn pod_with_container(container: Value) -> Value {
    pod(json!({"spec": {"containers": [merged(json!({"name": "app", "image": "busybox"}), container)]}}))
}

/// The ServiceAccount `app` of namespace `team-a` with these annotations (`null`: no map at all).
fn sa(annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": NS, "annotations": annotations}})
}

/// The mapping that gives `ROLE` to `team-a/<service_account>`.
fn role_mapping(service_account: &str) -> Config {
    config(&format!(
        "identities: [{{namespace: {NS}, serviceAccount: {service_account}, aws: {{roleArn: \"{ROLE}\"}}}}]"
    ))
}

fn irsa_sa() -> Value {
    sa(json!({"eks.amazonaws.com/role-arn": ROLE}))
}

fn azure_sa() -> Value {
    sa(json!({"azure.workload.identity/client-id": CLIENT}))
}

fn gcp_sa() -> Value {
    sa(json!({"iam.gke.io/gcp-service-account": GSA}))
}

fn all_clouds_sa() -> Value {
    sa(json!({
        "eks.amazonaws.com/role-arn": ROLE,
        "iam.gke.io/gcp-service-account": GSA,
        "azure.workload.identity/client-id": CLIENT
    }))
}

// ---------------------------------------------------------------------------------------------
// Running the webhook
// ---------------------------------------------------------------------------------------------

struct Outcome {
    /// The Pod as stored by the apiserver: the original with the patch applied.
    pod: Value,
    mutation: Mutation,
}

impl Outcome {
    fn warned(&self, needle: &str) -> bool {
        self.mutation.warnings.iter().any(|warning| warning.contains(needle))
    }

    fn patch_text(&self) -> String {
        serde_json::to_string(&self.mutation.patch).expect("patch serializes")
    }

    fn assert_untouched(&self) {
        assert!(
            self.mutation.patch.is_empty(),
            "expected no patch, got {}",
            self.patch_text()
        );
        assert!(self.mutation.identities.is_empty(), "{:?}", self.mutation.identities);
    }
}

fn typed<T: serde::de::DeserializeOwned>(value: &Value) -> T {
    serde_json::from_value(value.clone()).unwrap_or_else(|err| panic!("{err}: {value:#}"))
}

/// Applies a mutation's patch to a copy of `original`.
fn apply(original: &Value, mutation: &Mutation) -> Value {
    let mut doc = original.clone();
    let patch = crate::patch::to_json_patch(&mutation.patch).expect("our patch reads as a JSON patch");
    json_patch::patch(&mut doc, &patch).unwrap_or_else(|err| {
        panic!(
            "patch does not apply: {err}\npatch: {}\nobject: {original:#}",
            serde_json::to_string_pretty(&mutation.patch).unwrap_or_default()
        )
    });
    doc
}

fn webhook(pod: &Value, namespace: &str, sa: Option<&Value>, config: &Config) -> Mutation {
    let sa: Option<ServiceAccount> = sa.map(typed);
    mutate_pod(&typed::<Pod>(pod), Namespace::named(namespace), sa.as_ref(), config)
}

/// Runs the webhook on its own output and asserts that it has nothing more to do.
fn reinvoke(mutated: &Value, namespace: &str, sa: Option<&Value>, config: &Config) {
    let again = webhook(mutated, namespace, sa, config);
    assert!(
        again.patch.is_empty(),
        "reinvocation must return an empty patch, got {}\non {mutated:#}",
        serde_json::to_string(&again.patch).unwrap_or_default()
    );
}

fn run_in(namespace: &str, pod: &Value, sa: Option<&Value>, config: &Config) -> Outcome {
    let mutation = webhook(pod, namespace, sa, config);
    let mutated = apply(pod, &mutation);
    assert_well_formed(&mutated);
    assert_volumes_are_known(pod, &mutated);
    reinvoke(&mutated, namespace, sa, config);
    Outcome { pod: mutated, mutation }
}

fn run(pod: &Value, sa: &Value, config: &Config) -> Outcome {
    run_in(NS, pod, Some(sa), config)
}

/// Every volume the webhook adds is one its cloud lists (`explain` tells injected volumes by name).
fn assert_volumes_are_known(original: &Value, mutated: &Value) {
    let known: BTreeSet<&str> = crate::providers::ALL
        .iter()
        .flat_map(|provider| provider.volume_names())
        .copied()
        .collect();
    let before = names(&original["spec"]["volumes"], "name");
    for added in names(&mutated["spec"]["volumes"], "name").difference(&before) {
        assert!(
            known.contains(added.as_str()),
            "volume {added} is not in any volume_names()"
        );
    }
}

/// What the apiserver would check: a typed Pod, unique volume / env names, unique mount paths, and
/// every mount backed by a volume.
fn assert_well_formed(pod: &Value) {
    let _: k8s_openapi::api::core::v1::Pod = typed(pod);
    let volumes = names(&pod["spec"]["volumes"], "name");
    for container in containers(pod) {
        let name = &container["name"];
        names(&container["env"], "name");
        names(&container["volumeMounts"], "mountPath");
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let volume = mount["name"].as_str().unwrap_or_default();
            assert!(
                volumes.contains(volume),
                "container {name} mounts missing volume {volume}: {pod:#}"
            );
        }
    }
}

/// The values of `key` in a list, asserted unique.
fn names(list: &Value, key: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for item in list.as_array().into_iter().flatten() {
        let value = item[key].as_str().unwrap_or_else(|| panic!("{key} missing in {item}"));
        assert!(seen.insert(value.to_owned()), "duplicate {key} {value:?} in {list:#}");
    }
    seen
}

// ---------------------------------------------------------------------------------------------
// Reading the result
// ---------------------------------------------------------------------------------------------

fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    ["containers", "initContainers"]
        .into_iter()
        .flat_map(move |list| pod["spec"][list].as_array().into_iter().flatten())
}

fn container<'p>(pod: &'p Value, name: &str) -> &'p Value {
    containers(pod)
        .find(|container| container["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {pod:#}"))
}

fn env(pod: &Value, container_name: &str) -> BTreeMap<String, String> {
    container(pod, container_name)["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|var| {
            let value = var["value"].as_str().unwrap_or_default();
            (var["name"].as_str().unwrap_or_default().to_owned(), value.to_owned())
        })
        .collect()
}

fn env_var(pod: &Value, container_name: &str, name: &str) -> Option<String> {
    env(pod, container_name).remove(name)
}

fn mounts_at<'p>(pod: &'p Value, container_name: &str, path: &str) -> Vec<&'p Value> {
    container(pod, container_name)["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|mount| mount["mountPath"] == path)
        .collect()
}

fn volume<'p>(pod: &'p Value, name: &str) -> Option<&'p Value> {
    pod["spec"]["volumes"]
        .as_array()?
        .iter()
        .find(|volume| volume["name"] == name)
}

/// The `serviceAccountToken` projection of a volume.
fn token_of<'p>(pod: &'p Value, volume_name: &str) -> &'p Value {
    let volume = volume(pod, volume_name).unwrap_or_else(|| panic!("no volume {volume_name} in {pod:#}"));
    volume["projected"]["sources"]
        .as_array()
        .and_then(|sources| sources.iter().find_map(|source| source.get("serviceAccountToken")))
        .unwrap_or_else(|| panic!("no serviceAccountToken in {volume:#}"))
}

fn expiration(pod: &Value, volume_name: &str) -> i64 {
    token_of(pod, volume_name)["expirationSeconds"]
        .as_i64()
        .expect("integer expirationSeconds")
}

fn annotation<'p>(pod: &'p Value, key: &str) -> Option<&'p str> {
    pod["metadata"]["annotations"][key].as_str()
}

/// The Google credential configuration that the Pod annotation holds, parsed.
fn gcp_credentials(pod: &Value) -> Value {
    let text = annotation(pod, GCP_ANNOTATION).unwrap_or_else(|| panic!("no {GCP_ANNOTATION} in {pod:#}"));
    serde_json::from_str(text).unwrap_or_else(|err| panic!("credential configuration is not JSON ({err}): {text}"))
}

/// What one cloud puts in a container: its volume, its mount and its env var names.
struct Injected {
    volume: &'static str,
    mount: &'static str,
    env: &'static [&'static str],
}

const IRSA: Injected = Injected {
    volume: "aws-iam-token",
    mount: IRSA_MOUNT,
    env: &["AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"],
};
const POD_IDENTITY: Injected = Injected {
    volume: "eks-pod-identity-token",
    mount: POD_IDENTITY_MOUNT,
    env: &[
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    ],
};
const GCP: Injected = Injected {
    volume: "gcp-workload-identity",
    mount: GCP_MOUNT,
    env: &[
        "GOOGLE_APPLICATION_CREDENTIALS",
        "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE",
    ],
};
const AZURE: Injected = Injected {
    volume: "azure-identity-token",
    mount: AZURE_MOUNT,
    env: &[
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_AUTHORITY_HOST",
    ],
};

fn assert_has(pod: &Value, container_name: &str, injected: &Injected) {
    assert!(
        volume(pod, injected.volume).is_some(),
        "volume {} missing: {pod:#}",
        injected.volume
    );
    let mounts = mounts_at(pod, container_name, injected.mount);
    assert_eq!(
        mounts,
        vec![&json!({"name": injected.volume, "mountPath": injected.mount, "readOnly": true})],
        "mount of {container_name} in {pod:#}"
    );
    let env = env(pod, container_name);
    for name in injected.env {
        assert!(env.contains_key(*name), "{container_name} lacks {name}: {env:?}");
    }
}

fn assert_lacks(pod: &Value, container_name: &str, injected: &Injected) {
    assert!(
        mounts_at(pod, container_name, injected.mount).is_empty(),
        "{container_name} must not mount {}",
        injected.mount
    );
    let env = env(pod, container_name);
    for name in injected.env {
        assert!(
            !env.contains_key(*name),
            "{container_name} must not get {name}: {env:?}"
        );
    }
}

fn assert_no_cloud_at_all(pod: &Value, injected: &Injected) {
    assert!(
        volume(pod, injected.volume).is_none(),
        "volume {} must not exist",
        injected.volume
    );
    for container in containers(pod) {
        assert_lacks(pod, container["name"].as_str().unwrap_or_default(), injected);
    }
}

// ---------------------------------------------------------------------------------------------
// AWS: IRSA
// ---------------------------------------------------------------------------------------------

#[test]
fn irsa_from_the_role_annotation_reaches_every_container_and_init_container() {
    let out = run(&full_pod(json!({})), &irsa_sa(), &no_config());
    assert_eq!(
        volume(&out.pod, "aws-iam-token"),
        Some(&json!({"name": "aws-iam-token", "projected": {"sources": [
            {"serviceAccountToken": {"audience": "sts.amazonaws.com", "expirationSeconds": 86400, "path": "token"}}
        ]}}))
    );
    for name in ["app", "sidecar", "init"] {
        assert_has(&out.pod, name, &IRSA);
        assert_eq!(env_var(&out.pod, name, "AWS_ROLE_ARN").as_deref(), Some(ROLE));
        assert_eq!(
            env_var(&out.pod, name, "AWS_WEB_IDENTITY_TOKEN_FILE").as_deref(),
            Some(IRSA_TOKEN)
        );
        for unset in ["AWS_REGION", "AWS_DEFAULT_REGION", "AWS_STS_REGIONAL_ENDPOINTS"] {
            assert_eq!(env_var(&out.pod, name, unset), None, "{unset} needs a setting");
        }
    }
    assert_eq!(out.mutation.identities, vec![("aws", ROLE.to_owned())]);
    // The only warning: no region is configured.
    assert_eq!(out.mutation.warnings.len(), 1, "{:?}", out.mutation.warnings);
    assert!(out.warned("no AWS region"), "{:?}", out.mutation.warnings);
    // Nothing of the other clouds.
    assert_no_cloud_at_all(&out.pod, &GCP);
    assert_no_cloud_at_all(&out.pod, &AZURE);
}

#[test]
fn irsa_audience_comes_from_the_annotation_then_the_cluster_setting() {
    let annotated = sa(json!({"eks.amazonaws.com/role-arn": ROLE, "eks.amazonaws.com/audience": "my-audience"}));
    let out = run(
        &pod(json!({})),
        &annotated,
        &config("aws: {audience: cluster-audience}"),
    );
    assert_eq!(token_of(&out.pod, "aws-iam-token")["audience"], "my-audience");

    let out = run(
        &pod(json!({})),
        &irsa_sa(),
        &config("aws: {audience: cluster-audience}"),
    );
    assert_eq!(token_of(&out.pod, "aws-iam-token")["audience"], "cluster-audience");
}

#[test]
fn region_setting_adds_both_region_variables() {
    let out = run(&full_pod(json!({})), &irsa_sa(), &config("aws: {region: eu-west-1}"));
    for name in ["app", "sidecar", "init"] {
        assert_eq!(env_var(&out.pod, name, "AWS_REGION").as_deref(), Some("eu-west-1"));
        assert_eq!(
            env_var(&out.pod, name, "AWS_DEFAULT_REGION").as_deref(),
            Some("eu-west-1")
        );
    }
}

#[test]
fn a_mapping_region_wins_over_the_cluster_region() {
    let mapped = config(&format!(
        "aws: {{region: eu-west-1}}\nidentities: [{{namespace: {NS}, serviceAccount: app, aws: {{roleArn: \"{ROLE}\", region: ap-south-1}}}}]"
    ));
    let out = run(&pod(json!({})), &sa(Value::Null), &mapped);
    assert_eq!(env_var(&out.pod, "app", "AWS_REGION").as_deref(), Some("ap-south-1"));
    assert_eq!(
        env_var(&out.pod, "app", "AWS_DEFAULT_REGION").as_deref(),
        Some("ap-south-1")
    );
    assert!(out.mutation.gaps.is_empty());
    // A bad mapping region is refused with the config.
    let err = Config::parse(
        &format!("identities: [{{serviceAccount: app, aws: {{roleArn: \"{ROLE}\", region: \"not a region\"}}}}]"),
        &Default::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("identities[0].aws.region"), "{err}");
}

#[test]
fn no_region_is_warned_about_and_counted_unless_the_containers_set_their_own() {
    let out = run(&pod(json!({})), &irsa_sa(), &no_config());
    assert_eq!(env_var(&out.pod, "app", "AWS_ROLE_ARN").as_deref(), Some(ROLE));
    assert!(out.warned("no AWS region"), "{:?}", out.mutation.warnings);
    assert_eq!(out.mutation.gaps, vec!["aws_region"]);
    // Pod Identity needs it just as much.
    let pod_identity = config(&format!(
        "identities: [{{namespace: {NS}, serviceAccount: app, aws: {{mode: podIdentity}}}}]"
    ));
    let out = run(&pod(json!({})), &sa(Value::Null), &pod_identity);
    assert!(out.warned("no AWS region"), "{:?}", out.mutation.warnings);
    assert_eq!(out.mutation.gaps, vec!["aws_region"]);
    // With a region: neither.
    let out = run(&pod(json!({})), &irsa_sa(), &config("aws: {region: eu-west-1}"));
    assert!(!out.warned("region"), "{:?}", out.mutation.warnings);
    assert!(out.mutation.gaps.is_empty());
    // Containers that set their own region need none from us.
    let own =
        pod(json!({"spec": {"containers": [{"name": "app", "env": [{"name": "AWS_REGION", "value": "us-east-2"}]}]}}));
    let out = run(&own, &irsa_sa(), &no_config());
    assert!(!out.warned("region"), "{:?}", out.mutation.warnings);
    assert!(out.mutation.gaps.is_empty());
    // Other clouds are not concerned.
    let out = run(&pod(json!({})), &gcp_sa(), &cluster());
    assert!(out.mutation.gaps.is_empty());
}

#[test]
fn the_server_is_told_at_start_when_aws_has_no_region() {
    let notices = no_config().notices();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].contains("aws.region is not set"), "{notices:?}");
    let notices = role_mapping("app").notices();
    assert!(
        notices[0].contains("1 AWS mappings (identities[0] first)"),
        "{notices:?}"
    );
    assert!(config("aws: {region: eu-west-1}").notices().is_empty());
}

#[test]
fn sts_regional_endpoints_from_annotation_or_cluster_setting() {
    let regional = |sa: &Value, config: &Config| {
        env_var(
            &run(&pod(json!({})), sa, config).pod,
            "app",
            "AWS_STS_REGIONAL_ENDPOINTS",
        )
    };
    let with = |value: &str| {
        sa(json!({"eks.amazonaws.com/role-arn": ROLE, "eks.amazonaws.com/sts-regional-endpoints": value}))
    };

    assert_eq!(regional(&with("true"), &no_config()).as_deref(), Some("regional"));
    assert_eq!(
        regional(&irsa_sa(), &config("aws: {stsRegionalEndpoints: true}")).as_deref(),
        Some("regional")
    );
    assert_eq!(
        regional(&irsa_sa(), &config("aws: {stsRegionalEndpoints: false}")),
        None
    );
    assert_eq!(regional(&with("false"), &no_config()), None);
    // The ServiceAccount's explicit choice wins over the cluster default.
    assert_eq!(
        regional(&with("false"), &config("aws: {stsRegionalEndpoints: true}")),
        None
    );
    // Go ParseBool's spellings, as the AWS webhook reads them.
    for yes in ["1", "t", "T", "TRUE", "true", "True"] {
        assert_eq!(regional(&with(yes), &no_config()).as_deref(), Some("regional"), "{yes}");
    }
    for no in ["0", "f", "F", "FALSE", "false", "False"] {
        assert_eq!(
            regional(&with(no), &config("aws: {stsRegionalEndpoints: true}")),
            None,
            "{no}"
        );
    }
    // Anything else is warned about and the cluster setting applies.
    for other in ["yes", "on", "tRUE", "2"] {
        let out = run(
            &pod(json!({})),
            &with(other),
            &config("aws: {stsRegionalEndpoints: true}"),
        );
        assert_eq!(
            env_var(&out.pod, "app", "AWS_STS_REGIONAL_ENDPOINTS").as_deref(),
            Some("regional")
        );
        assert!(
            out.warned("sts-regional-endpoints"),
            "{other}: {:?}",
            out.mutation.warnings
        );
        let out = run(&pod(json!({})), &with(other), &no_config());
        assert_eq!(env_var(&out.pod, "app", "AWS_STS_REGIONAL_ENDPOINTS"), None);
    }
}

fn aws_expiration(sa_seconds: Option<&str>, pod_seconds: Option<&str>, config: &Config) -> (i64, Vec<String>) {
    let mut annotations = json!({"eks.amazonaws.com/role-arn": ROLE});
    if let Some(seconds) = sa_seconds {
        annotations["eks.amazonaws.com/token-expiration"] = json!(seconds);
    }
    let pod = match pod_seconds {
        Some(seconds) => pod(json!({"metadata": {"annotations": {"eks.amazonaws.com/token-expiration": seconds}}})),
        None => pod(json!({})),
    };
    let out = run(&pod, &sa(annotations), config);
    (expiration(&out.pod, "aws-iam-token"), out.mutation.warnings)
}

#[test]
fn aws_token_expiration_rules() {
    let plain = config("aws: {region: eu-west-1}");
    assert_eq!(aws_expiration(None, None, &plain), (86400, vec![]));
    assert_eq!(aws_expiration(Some("3600"), None, &plain), (3600, vec![]));
    assert_eq!(
        aws_expiration(None, None, &config("aws: {tokenExpirationSeconds: 7200}")).0,
        7200
    );
    // A Pod may shorten the ServiceAccount's lifetime ...
    assert_eq!(aws_expiration(Some("3600"), Some("1800"), &plain), (1800, vec![]));
    assert_eq!(aws_expiration(None, Some("1800"), &plain), (1800, vec![]));
    // ... but not lengthen it.
    let (seconds, warnings) = aws_expiration(Some("3600"), Some("7200"), &plain);
    assert_eq!(seconds, 3600);
    assert!(warnings.iter().any(|w| w.contains("only shorten")), "{warnings:?}");
    // Below the apiserver's floor: raised to 600.
    assert_eq!(aws_expiration(Some("300"), None, &plain).0, 600);
    assert_eq!(aws_expiration(None, Some("60"), &plain).0, 600);
    // 0 and negative values ask for the shortest token, as on the AWS webhook: 600, no warning.
    for shortest in ["0", "-1", "-86400"] {
        assert_eq!(
            aws_expiration(Some(shortest), None, &plain),
            (600, vec![]),
            "{shortest}"
        );
        assert_eq!(
            aws_expiration(Some("3600"), Some(shortest), &plain),
            (600, vec![]),
            "{shortest}"
        );
    }
    // A Pod cannot lengthen a ServiceAccount's non-positive lifetime back to a longer one.
    let (seconds, warnings) = aws_expiration(Some("0"), Some("1800"), &plain);
    assert_eq!(seconds, 600);
    assert!(warnings.iter().any(|w| w.contains("only shorten")), "{warnings:?}");
    // The apiserver's ceiling is 2^32 s inclusive; one more is warned about and ignored.
    assert_eq!(aws_expiration(Some("4294967296"), None, &plain), (4294967296, vec![]));
    let (seconds, warnings) = aws_expiration(Some("4294967297"), None, &plain);
    assert_eq!(seconds, 86400);
    assert!(warnings.iter().any(|w| w.contains("up to 4294967296")), "{warnings:?}");
    assert_eq!(
        aws_expiration(None, None, &config("aws: {tokenExpirationSeconds: 4294967296}")).0,
        4294967296
    );
    // Not a number: warned and ignored.
    let (seconds, warnings) = aws_expiration(Some("soon"), None, &plain);
    assert_eq!(seconds, 86400);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("eks.amazonaws.com/token-expiration")),
        "{warnings:?}"
    );
}

#[test]
fn a_container_that_sets_half_a_pair_gets_neither_half_but_still_the_other_pairs() {
    let cases = [
        (
            "AWS_ROLE_ARN",
            OTHER_ROLE,
            ["AWS_WEB_IDENTITY_TOKEN_FILE"],
            ["AWS_REGION", "AWS_DEFAULT_REGION"],
        ),
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "/mine",
            ["AWS_ROLE_ARN"],
            ["AWS_REGION", "AWS_DEFAULT_REGION"],
        ),
        (
            "AWS_REGION",
            "ap-south-1",
            ["AWS_DEFAULT_REGION"],
            ["AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"],
        ),
        (
            "AWS_DEFAULT_REGION",
            "ap-south-1",
            ["AWS_REGION"],
            ["AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"],
        ),
    ];
    for (set, value, withheld, added) in cases {
        let pod = pod_with_container(json!({"env": [{"name": set, "value": value}]}));
        let out = run(&pod, &irsa_sa(), &config("aws: {region: eu-west-1}"));
        let env = env(&out.pod, "app");
        assert_eq!(
            env.get(set).map(String::as_str),
            Some(value),
            "{set} must not be overridden"
        );
        for name in withheld {
            assert!(!env.contains_key(name), "{set} set: {name} must not be added: {env:?}");
        }
        for name in added {
            assert!(env.contains_key(name), "{set} set: {name} must still be added: {env:?}");
        }
        assert_eq!(mounts_at(&out.pod, "app", IRSA_MOUNT).len(), 1);
    }
}

#[test]
fn windows_pods_get_the_windows_token_path() {
    for key in ["kubernetes.io/os", "beta.kubernetes.io/os"] {
        let pod = pod(json!({"spec": {"nodeSelector": {key: "windows"}}}));
        let out = run(&pod, &irsa_sa(), &no_config());
        assert_eq!(
            env_var(&out.pod, "app", "AWS_WEB_IDENTITY_TOKEN_FILE").as_deref(),
            Some(r"C:\var\run\secrets\eks.amazonaws.com\serviceaccount\token"),
            "{key}"
        );
    }
    let linux = pod(json!({"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}}));
    let out = run(&linux, &irsa_sa(), &no_config());
    assert_eq!(
        env_var(&out.pod, "app", "AWS_WEB_IDENTITY_TOKEN_FILE").as_deref(),
        Some(IRSA_TOKEN)
    );
}

#[test]
fn an_invalid_role_arn_is_warned_about_and_not_injected() {
    for bad in [
        "arn:aws:iam::123:role/short-account",
        "my-role",
        "arn:aws:iam::111122223333:user/bob",
    ] {
        let out = run(
            &pod(json!({})),
            &sa(json!({"eks.amazonaws.com/role-arn": bad})),
            &no_config(),
        );
        out.assert_untouched();
        assert!(
            out.warned("eks.amazonaws.com/role-arn"),
            "{bad}: {:?}",
            out.mutation.warnings
        );
    }
}

#[test]
fn a_mapping_gives_a_role_when_the_service_account_has_no_annotation() {
    let mapping = role_mapping("app");
    let out = run(&pod(json!({})), &sa(Value::Null), &mapping);
    assert_has(&out.pod, "app", &IRSA);
    assert_eq!(env_var(&out.pod, "app", "AWS_ROLE_ARN").as_deref(), Some(ROLE));

    // The ServiceAccount's annotation wins over the mapping.
    let out = run(
        &pod(json!({})),
        &sa(json!({"eks.amazonaws.com/role-arn": OTHER_ROLE})),
        &mapping,
    );
    assert_eq!(env_var(&out.pod, "app", "AWS_ROLE_ARN").as_deref(), Some(OTHER_ROLE));
    assert_eq!(out.mutation.identities, vec![("aws", OTHER_ROLE.to_owned())]);
}

/// A cluster `aws` section, and a mapping for `team-a/app` with these extra `aws` fields (IRSA
/// with `ROLE`, or Pod Identity when `fields` says so).
fn aws_mapping(cluster: &str, fields: &str) -> Config {
    let role = if fields.contains("podIdentity") {
        String::new()
    } else {
        format!("roleArn: \"{ROLE}\", ")
    };
    config(&format!(
        "aws: {{region: eu-west-1, {cluster}}}\nidentities: [{{namespace: {NS}, serviceAccount: app, aws: {{{role}{fields}}}}}]"
    ))
}

fn mapping_error(fields: &str) -> String {
    let yaml = format!("identities: [{{aws: {{{fields}}}}}]");
    Config::parse(&yaml, &Default::default()).expect_err(&yaml).to_string()
}

/// As the AWS webhook: its ServiceAccount annotation over its ConfigMap entry ("the annotations
/// take precedence"), and the entry over its flag; ours: annotation, mapping, cluster setting.
#[test]
fn aws_mapping_audience_sits_between_the_annotation_and_the_cluster_setting() {
    let audience = |sa: &Value, config: &Config| {
        token_of(&run(&pod(json!({})), sa, config).pod, "aws-iam-token")["audience"].clone()
    };
    let mapped = aws_mapping("audience: cluster-audience", "audience: mapping-audience");
    assert_eq!(audience(&sa(Value::Null), &mapped), "mapping-audience");
    // The mapping's audience goes with a role from the annotation too.
    assert_eq!(audience(&irsa_sa(), &mapped), "mapping-audience");
    let annotated = sa(json!({"eks.amazonaws.com/audience": "sa-audience"}));
    assert_eq!(audience(&annotated, &mapped), "sa-audience");
    // An invalid annotation is warned about and the mapping's applies.
    let out = run(
        &pod(json!({})),
        &sa(json!({"eks.amazonaws.com/audience": "two words"})),
        &mapped,
    );
    assert_eq!(token_of(&out.pod, "aws-iam-token")["audience"], "mapping-audience");
    assert!(out.warned("eks.amazonaws.com/audience"), "{:?}", out.mutation.warnings);
    let unset = aws_mapping("audience: cluster-audience", "region: eu-west-1");
    assert_eq!(audience(&sa(Value::Null), &unset), "cluster-audience");
    assert_eq!(audience(&sa(Value::Null), &aws_mapping("", "")), "sts.amazonaws.com");
    // Checked as the cluster setting is; Pod Identity tokens have their own audience.
    for bad in ["\"two words\"", "\"\""] {
        let err = mapping_error(&format!("roleArn: \"{ROLE}\", audience: {bad}"));
        assert!(
            err.contains("identities[0].aws.audience") && err.contains("is not a valid audience"),
            "{err}"
        );
    }
    let err = mapping_error("mode: podIdentity, audience: sts.amazonaws.com");
    assert!(
        err.contains("identities[0].aws.audience: not used with mode podIdentity"),
        "{err}"
    );
}

#[test]
fn aws_mapping_sts_regional_endpoints_sits_between_the_annotation_and_the_cluster_setting() {
    let regional = |sa: &Value, config: &Config| {
        env_var(
            &run(&pod(json!({})), sa, config).pod,
            "app",
            "AWS_STS_REGIONAL_ENDPOINTS",
        )
    };
    let annotated = |value: &str| sa(json!({"eks.amazonaws.com/sts-regional-endpoints": value}));
    let regional_value = Some("regional".to_owned());
    let on = aws_mapping("", "stsRegionalEndpoints: true");
    assert_eq!(regional(&sa(Value::Null), &on), regional_value);
    assert_eq!(regional(&irsa_sa(), &on), regional_value);
    // The mapping's explicit false wins over the cluster's true (the AWS webhook gives a ConfigMap
    // entry its own UseRegionalSTS, whatever its flag) ...
    let off = aws_mapping("stsRegionalEndpoints: true", "stsRegionalEndpoints: false");
    assert_eq!(regional(&sa(Value::Null), &off), None);
    // ... a mapping that says nothing leaves it to the cluster ...
    let unset = aws_mapping("stsRegionalEndpoints: true", "");
    assert_eq!(regional(&sa(Value::Null), &unset), regional_value);
    // ... and the ServiceAccount's annotation wins over both.
    assert_eq!(regional(&annotated("false"), &on), None);
    assert_eq!(regional(&annotated("true"), &off), regional_value);
    // Not a boolean: warned about, and the mapping's applies.
    let out = run(&pod(json!({})), &annotated("yes"), &on);
    assert_eq!(env_var(&out.pod, "app", "AWS_STS_REGIONAL_ENDPOINTS"), regional_value);
    assert!(out.warned("sts-regional-endpoints"), "{:?}", out.mutation.warnings);
    // Pod Identity Pods get it from the mapping too, as from the AWS webhook's ConfigMap.
    let pod_identity = aws_mapping("", "mode: podIdentity, stsRegionalEndpoints: true");
    assert_eq!(regional(&sa(Value::Null), &pod_identity), regional_value);
    // A boolean, as in the cluster settings.
    let err = mapping_error(&format!("roleArn: \"{ROLE}\", stsRegionalEndpoints: regional"));
    assert!(err.contains("stsRegionalEndpoints"), "{err}");
}

#[test]
fn aws_mapping_token_lifetime_sits_between_the_annotation_and_the_cluster_setting() {
    let lifetime = |pod: &Value, sa: &Value, config: &Config, volume: &str| {
        let out = run(pod, sa, config);
        (expiration(&out.pod, volume), out.mutation.warnings)
    };
    let irsa = |sa: &Value, config: &Config| lifetime(&pod(json!({})), sa, config, "aws-iam-token").0;
    let mapped = aws_mapping("tokenExpirationSeconds: 3600", "tokenExpirationSeconds: 7200");
    assert_eq!(irsa(&sa(Value::Null), &mapped), 7200);
    assert_eq!(irsa(&irsa_sa(), &mapped), 7200);
    let annotated = sa(json!({"eks.amazonaws.com/token-expiration": "1800"}));
    assert_eq!(irsa(&annotated, &mapped), 1800);
    let unset = aws_mapping("tokenExpirationSeconds: 3600", "");
    assert_eq!(irsa(&sa(Value::Null), &unset), 3600);
    assert_eq!(irsa(&sa(Value::Null), &aws_mapping("", "")), 86400);
    // Raised to the apiserver's floor, as the cluster setting is.
    assert_eq!(
        irsa(&sa(Value::Null), &aws_mapping("", "tokenExpirationSeconds: 300")),
        600
    );
    // A Pod may shorten the mapping's lifetime, never lengthen it.
    let shorter = pod(json!({"metadata": {"annotations": {"eks.amazonaws.com/token-expiration": "1200"}}}));
    assert_eq!(
        lifetime(&shorter, &sa(Value::Null), &mapped, "aws-iam-token"),
        (1200, vec![])
    );
    let longer = pod(json!({"metadata": {"annotations": {"eks.amazonaws.com/token-expiration": "9000"}}}));
    let (seconds, warnings) = lifetime(&longer, &sa(Value::Null), &mapped, "aws-iam-token");
    assert_eq!(seconds, 7200);
    assert!(warnings.iter().any(|w| w.contains("only shorten")), "{warnings:?}");
    // Pod Identity tokens too.
    let pod_identity = aws_mapping("", "mode: podIdentity, tokenExpirationSeconds: 5000");
    assert_eq!(
        lifetime(
            &pod(json!({})),
            &sa(Value::Null),
            &pod_identity,
            "eks-pod-identity-token"
        )
        .0,
        5000
    );
    // Checked as the cluster setting is.
    for bad in ["0", "-1", "4294967297"] {
        let err = mapping_error(&format!("roleArn: \"{ROLE}\", tokenExpirationSeconds: {bad}"));
        assert!(
            err.contains(&format!(
                "identities[0].aws.tokenExpirationSeconds: {bad} is outside 1..=4294967296"
            )),
            "{err}"
        );
    }
}

fn pod_identity_config(settings: &str) -> Config {
    config(&format!(
        "{settings}\nidentities: [{{namespace: {NS}, serviceAccount: app, aws: {{mode: podIdentity}}}}]"
    ))
}

#[test]
fn pod_identity_mapping_wins_over_the_role_annotation() {
    let out = run(
        &full_pod(json!({})),
        &irsa_sa(),
        &pod_identity_config("aws: {region: us-east-2}"),
    );
    assert_eq!(
        volume(&out.pod, "eks-pod-identity-token"),
        Some(&json!({"name": "eks-pod-identity-token", "projected": {"sources": [
            {"serviceAccountToken": {"audience": "pods.eks.amazonaws.com", "expirationSeconds": 86400, "path": "eks-pod-identity-token"}}
        ]}}))
    );
    assert_no_cloud_at_all(&out.pod, &IRSA);
    for name in ["app", "sidecar", "init"] {
        assert_has(&out.pod, name, &POD_IDENTITY);
        let env = env(&out.pod, name);
        assert_eq!(
            env["AWS_CONTAINER_CREDENTIALS_FULL_URI"],
            "http://169.254.170.23/v1/credentials"
        );
        assert_eq!(
            env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"],
            "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token"
        );
        assert_eq!(env["AWS_REGION"], "us-east-2");
        assert_eq!(env["AWS_DEFAULT_REGION"], "us-east-2");
    }
    assert_eq!(out.mutation.identities.len(), 1);
    assert_eq!(out.mutation.identities[0].0, "aws");
}

#[test]
fn pod_identity_agent_uri_and_regional_sts_follow_the_settings() {
    let out = run(
        &pod(json!({})),
        &sa(json!({"eks.amazonaws.com/sts-regional-endpoints": "true"})),
        &pod_identity_config("aws: {containerCredentialsFullUri: \"http://[fd00:ec2::23]/v1/credentials\"}"),
    );
    let env = env(&out.pod, "app");
    assert_eq!(
        env["AWS_CONTAINER_CREDENTIALS_FULL_URI"],
        "http://[fd00:ec2::23]/v1/credentials"
    );
    assert_eq!(env["AWS_STS_REGIONAL_ENDPOINTS"], "regional");

    // The cluster setting asks too; without either, no variable.
    let out = run(
        &pod(json!({})),
        &sa(Value::Null),
        &pod_identity_config("aws: {stsRegionalEndpoints: true}"),
    );
    assert_eq!(
        env_var(&out.pod, "app", "AWS_STS_REGIONAL_ENDPOINTS").as_deref(),
        Some("regional")
    );
    let out = run(&pod(json!({})), &sa(Value::Null), &pod_identity_config(""));
    assert_eq!(env_var(&out.pod, "app", "AWS_STS_REGIONAL_ENDPOINTS"), None);
}

#[test]
fn a_bare_role_name_becomes_an_arn_only_with_an_account_id() {
    let bare = sa(json!({"eks.amazonaws.com/role-arn": "s3-reader"}));
    let out = run(&pod(json!({})), &bare, &config("aws: {accountId: \"111122223333\"}"));
    assert_eq!(env_var(&out.pod, "app", "AWS_ROLE_ARN").as_deref(), Some(ROLE));
    assert_eq!(out.mutation.identities, vec![("aws", ROLE.to_owned())]);

    let out = run(
        &pod(json!({})),
        &bare,
        &config("aws: {accountId: \"111122223333\", partition: aws-cn}"),
    );
    assert_eq!(
        env_var(&out.pod, "app", "AWS_ROLE_ARN").as_deref(),
        Some("arn:aws-cn:iam::111122223333:role/s3-reader")
    );

    // A full ARN is kept as written, whatever the account setting says.
    let out = run(
        &pod(json!({})),
        &irsa_sa(),
        &config("aws: {accountId: \"999999999999\"}"),
    );
    assert_eq!(env_var(&out.pod, "app", "AWS_ROLE_ARN").as_deref(), Some(ROLE));

    // Without an account id a bare name is still an invalid ARN, warned about.
    let out = run(&pod(json!({})), &bare, &no_config());
    out.assert_untouched();
    assert!(out.warned("is not a valid IAM role ARN"), "{:?}", out.mutation.warnings);
}

#[test]
fn pod_identity_on_windows_uses_the_windows_token_path() {
    let pod = pod(json!({"spec": {"nodeSelector": {"kubernetes.io/os": "windows"}}}));
    let out = run(&pod, &sa(Value::Null), &pod_identity_config(""));
    assert_eq!(
        env_var(&out.pod, "app", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE").as_deref(),
        Some(r"C:\var\run\secrets\pods.eks.amazonaws.com\serviceaccount\eks-pod-identity-token")
    );
}

// ---------------------------------------------------------------------------------------------
// Endpoint overrides (issue 14): local and private clouds
// ---------------------------------------------------------------------------------------------

const EMULATOR: &str = "http://emulator.wiw-system.svc:8080";
const OTHER_EMULATOR: &str = "https://sts.private.example";
/// Entra ID's authority host must be https (the Azure SDKs refuse http).
const EMULATOR_TLS: &str = "https://emulator.wiw-system.svc:8443";

/// Whether the mutation warns that `target` points at `url` because of `setting`.
fn warned_override(out: &Outcome, target: &str, url: &str, setting: &str) -> bool {
    out.warned(&format!("{target}={url} (from {setting}): "))
}

#[test]
fn aws_endpoint_overrides_are_injected_only_when_set_and_warned_about() {
    let plain = run(&full_pod(json!({})), &irsa_sa(), &cluster());
    for name in ["app", "sidecar", "init"] {
        let env = env(&plain.pod, name);
        assert!(!env.contains_key("AWS_ENDPOINT_URL_STS"), "{env:?}");
        assert!(!env.contains_key("AWS_ENDPOINT_URL"), "{env:?}");
    }
    assert!(!plain.warned("talk to that endpoint"), "{:?}", plain.mutation.warnings);

    let settings = config(&format!(
        "aws: {{region: eu-west-1, stsEndpoint: \"{EMULATOR}\", endpoint: \"http://localhost:4566\"}}"
    ));
    let out = run(&full_pod(json!({})), &irsa_sa(), &settings);
    for name in ["app", "sidecar", "init"] {
        assert_eq!(
            env_var(&out.pod, name, "AWS_ENDPOINT_URL_STS").as_deref(),
            Some(EMULATOR)
        );
        assert_eq!(
            env_var(&out.pod, name, "AWS_ENDPOINT_URL").as_deref(),
            Some("http://localhost:4566")
        );
    }
    assert!(
        warned_override(&out, "AWS_ENDPOINT_URL_STS", EMULATOR, "aws.stsEndpoint"),
        "{:?}",
        out.mutation.warnings
    );
    assert!(warned_override(
        &out,
        "AWS_ENDPOINT_URL",
        "http://localhost:4566",
        "aws.endpoint"
    ));

    // aws.endpoint alone also sets AWS_ENDPOINT_URL_STS (aws-sdk-go-v2 ignores AWS_ENDPOINT_URL for
    // the STS call of its credential chain), as a pair with AWS_ENDPOINT_URL.
    let all_only = config("aws: {region: eu-west-1, endpoint: \"http://localhost:4566\"}");
    let out = run(&full_pod(json!({})), &irsa_sa(), &all_only);
    for name in ["app", "sidecar", "init"] {
        assert_eq!(
            env_var(&out.pod, name, "AWS_ENDPOINT_URL_STS").as_deref(),
            Some("http://localhost:4566")
        );
        assert_eq!(
            env_var(&out.pod, name, "AWS_ENDPOINT_URL").as_deref(),
            Some("http://localhost:4566")
        );
    }
    let own = pod_with_container(json!({"env": [{"name": "AWS_ENDPOINT_URL", "value": "http://localhost:9000"}]}));
    let out = run(&own, &irsa_sa(), &all_only);
    let env = env(&out.pod, "app");
    assert_eq!(env["AWS_ENDPOINT_URL"], "http://localhost:9000");
    assert!(!env.contains_key("AWS_ENDPOINT_URL_STS"), "{env:?}");
    assert!(!out.warned("talk to that endpoint"), "{:?}", out.mutation.warnings);
}

#[test]
fn aws_mapping_endpoints_win_over_the_cluster_settings() {
    let settings = config(&format!(
        "aws: {{region: eu-west-1, stsEndpoint: \"{OTHER_EMULATOR}\", containerCredentialsFullUri: \"{OTHER_EMULATOR}/v1/credentials\"}}\nidentities:\n  - {{namespace: {NS}, serviceAccount: app, aws: {{roleArn: \"{ROLE}\", stsEndpoint: \"{EMULATOR}\"}}}}\n  - {{namespace: {NS}, serviceAccount: agent, aws: {{mode: podIdentity, containerCredentialsFullUri: \"http://127.0.0.1:2703/v1/credentials\"}}}}"
    ));
    let out = run(&pod(json!({})), &sa(Value::Null), &settings);
    assert_eq!(
        env_var(&out.pod, "app", "AWS_ENDPOINT_URL_STS").as_deref(),
        Some(EMULATOR)
    );
    let mapping = format!("aws.stsEndpoint of the mapping for {NS}/app");
    assert!(
        warned_override(&out, "AWS_ENDPOINT_URL_STS", EMULATOR, &mapping),
        "{:?}",
        out.mutation.warnings
    );
    assert!(!out.warned(OTHER_EMULATOR), "{:?}", out.mutation.warnings);

    // Pod Identity: the mapping's agent URI over the cluster's, and the cluster's STS endpoint.
    let agent_sa =
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "agent", "namespace": NS}});
    let out = run(
        &pod(json!({"spec": {"serviceAccountName": "agent"}})),
        &agent_sa,
        &settings,
    );
    let env = env(&out.pod, "app");
    assert_eq!(
        env["AWS_CONTAINER_CREDENTIALS_FULL_URI"],
        "http://127.0.0.1:2703/v1/credentials"
    );
    assert_eq!(env["AWS_ENDPOINT_URL_STS"], OTHER_EMULATOR);
    assert!(warned_override(
        &out,
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "http://127.0.0.1:2703/v1/credentials",
        &format!("aws.containerCredentialsFullUri of the mapping for {NS}/agent"),
    ));
    assert!(warned_override(
        &out,
        "AWS_ENDPOINT_URL_STS",
        OTHER_EMULATOR,
        "aws.stsEndpoint"
    ));
}

#[test]
fn an_ipv6_agent_comes_with_the_ipv6_endpoint_mode() {
    // The AWS SDK for Java v2 before 2.57 takes an IPv6 agent only in that mode (issue 26).
    for (uri, mode) in [
        ("http://[fd00:ec2::23]/v1/credentials", Some("IPv6")),
        ("https://[2001:db8::1]:2703/v1/credentials", Some("IPv6")),
        ("http://[::1]:2703/v1/credentials", Some("IPv6")),
        ("http://169.254.170.23/v1/credentials", None),
        ("http://127.0.0.1:2703/v1/credentials", None),
        ("https://agent.example.com/v1/credentials", None),
    ] {
        let out = run(
            &pod(json!({})),
            &sa(Value::Null),
            &pod_identity_config(&format!("aws: {{containerCredentialsFullUri: \"{uri}\"}}")),
        );
        assert_eq!(
            env_var(&out.pod, "app", "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE").as_deref(),
            mode,
            "{uri}"
        );
    }
    // The default agent is IPv4; IRSA has no agent.
    let out = run(&pod(json!({})), &sa(Value::Null), &pod_identity_config(""));
    assert_eq!(env_var(&out.pod, "app", "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE"), None);
    let out = run(
        &pod(json!({})),
        &irsa_sa(),
        &config("aws: {containerCredentialsFullUri: \"http://[fd00:ec2::23]/v1/credentials\"}"),
    );
    assert_eq!(env_var(&out.pod, "app", "AWS_ROLE_ARN").as_deref(), Some(ROLE));
    assert_eq!(env_var(&out.pod, "app", "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE"), None);
    // A container's own mode is kept, and the agent variables still come.
    let own = pod(json!({"spec": {"containers": [{"name": "app", "image": "busybox",
        "env": [{"name": "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "value": "IPv4"}]}]}}));
    let out = run(
        &own,
        &sa(Value::Null),
        &pod_identity_config("aws: {containerCredentialsFullUri: \"http://[fd00:ec2::23]/v1/credentials\"}"),
    );
    let env = env(&out.pod, "app");
    assert_eq!(env["AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE"], "IPv4");
    assert_eq!(
        env["AWS_CONTAINER_CREDENTIALS_FULL_URI"],
        "http://[fd00:ec2::23]/v1/credentials"
    );
}

#[test]
fn the_eks_agent_addresses_are_no_override_worth_a_warning() {
    for uri in [
        "http://169.254.170.23/v1/credentials",
        "http://[fd00:ec2::23]/v1/credentials",
    ] {
        let out = run(
            &pod(json!({})),
            &sa(Value::Null),
            &pod_identity_config(&format!(
                "aws: {{region: eu-west-1, containerCredentialsFullUri: \"{uri}\"}}"
            )),
        );
        assert_eq!(
            env_var(&out.pod, "app", "AWS_CONTAINER_CREDENTIALS_FULL_URI").as_deref(),
            Some(uri)
        );
        assert!(!out.warned("talk to that endpoint"), "{:?}", out.mutation.warnings);
    }
    let out = run(
        &pod(json!({})),
        &sa(Value::Null),
        &pod_identity_config(&format!(
            "aws: {{region: eu-west-1, containerCredentialsFullUri: \"{OTHER_EMULATOR}/v1/credentials\"}}"
        )),
    );
    assert!(warned_override(
        &out,
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        &format!("{OTHER_EMULATOR}/v1/credentials"),
        "aws.containerCredentialsFullUri",
    ));
}

#[test]
fn a_containers_own_endpoint_variables_win_and_silence_the_warning() {
    let settings = config(&format!(
        "aws: {{region: eu-west-1, stsEndpoint: \"{EMULATOR}\", endpoint: \"{EMULATOR}\"}}\nazure: {{tenantId: \"{TENANT}\", authorityHost: \"{EMULATOR_TLS}\"}}"
    ));
    let own = json!({"env": [
        {"name": "AWS_ENDPOINT_URL_STS", "value": "https://sts.eu-west-1.amazonaws.com"},
        {"name": "AZURE_AUTHORITY_HOST", "value": "https://login.microsoftonline.com/"}
    ]});
    let sa = sa(json!({"eks.amazonaws.com/role-arn": ROLE, "azure.workload.identity/client-id": CLIENT}));
    let out = run(&pod_with_container(own), &sa, &settings);
    let env = env(&out.pod, "app");
    assert_eq!(env["AWS_ENDPOINT_URL_STS"], "https://sts.eu-west-1.amazonaws.com");
    assert_eq!(env["AZURE_AUTHORITY_HOST"], "https://login.microsoftonline.com/");
    assert_eq!(env["AWS_ENDPOINT_URL"], EMULATOR);
    assert!(!out.warned("AWS_ENDPOINT_URL_STS="), "{:?}", out.mutation.warnings);
    assert!(!out.warned("AZURE_AUTHORITY_HOST="), "{:?}", out.mutation.warnings);
    assert!(warned_override(&out, "AWS_ENDPOINT_URL", EMULATOR, "aws.endpoint"));

    // One container without its own value is enough for the override to be in force.
    let two = full_pod(json!({"spec": {"containers": [
        {"name": "app", "image": "app", "env": [{"name": "AWS_ENDPOINT_URL_STS", "value": "https://sts.eu-west-1.amazonaws.com"}]},
        {"name": "sidecar", "image": "proxy"}
    ]}}));
    let out = run(&two, &irsa_sa(), &settings);
    assert_eq!(
        env_var(&out.pod, "app", "AWS_ENDPOINT_URL_STS").as_deref(),
        Some("https://sts.eu-west-1.amazonaws.com")
    );
    assert_eq!(
        env_var(&out.pod, "sidecar", "AWS_ENDPOINT_URL_STS").as_deref(),
        Some(EMULATOR)
    );
    assert!(warned_override(
        &out,
        "AWS_ENDPOINT_URL_STS",
        EMULATOR,
        "aws.stsEndpoint"
    ));
}

#[test]
fn azure_authority_host_override_wins_over_the_cloud_and_the_mapping_over_the_cluster() {
    let cluster_only = config(&format!(
        "azure: {{tenantId: \"{TENANT}\", cloud: AzureChinaCloud, authorityHost: \"{OTHER_EMULATOR}\"}}"
    ));
    let out = run(&pod(json!({})), &azure_sa(), &cluster_only);
    assert_eq!(
        env_var(&out.pod, "app", "AZURE_AUTHORITY_HOST").as_deref(),
        Some(OTHER_EMULATOR)
    );
    assert!(warned_override(
        &out,
        "AZURE_AUTHORITY_HOST",
        OTHER_EMULATOR,
        "azure.authorityHost"
    ));

    let mapped = config(&format!(
        "azure: {{tenantId: \"{TENANT}\", authorityHost: \"{OTHER_EMULATOR}\"}}\nidentities: [{{namespace: {NS}, serviceAccount: app, azure: {{clientId: \"{CLIENT}\", authorityHost: \"{EMULATOR_TLS}\"}}}}]"
    ));
    let out = run(&pod(json!({})), &sa(Value::Null), &mapped);
    assert_eq!(
        env_var(&out.pod, "app", "AZURE_AUTHORITY_HOST").as_deref(),
        Some(EMULATOR_TLS)
    );
    assert!(warned_override(
        &out,
        "AZURE_AUTHORITY_HOST",
        EMULATOR_TLS,
        &format!("azure.authorityHost of the mapping for {NS}/app"),
    ));

    let plain = run(&pod(json!({})), &azure_sa(), &cluster());
    assert_eq!(
        env_var(&plain.pod, "app", "AZURE_AUTHORITY_HOST").as_deref(),
        Some("https://login.microsoftonline.com/")
    );
    assert!(!plain.warned("talk to that endpoint"), "{:?}", plain.mutation.warnings);
}

#[test]
fn google_token_url_and_impersonation_endpoint_go_into_the_credential_configuration() {
    let plain = run(&pod(json!({})), &gcp_sa(), &cluster());
    let credentials = gcp_credentials(&plain.pod);
    assert_eq!(credentials["token_url"], "https://sts.googleapis.com/v1/token");
    assert_eq!(
        credentials["service_account_impersonation_url"],
        format!("https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{GSA}:generateAccessToken")
    );
    assert!(!plain.warned("talk to that endpoint"), "{:?}", plain.mutation.warnings);

    let settings = config(&format!(
        "gcp: {{workloadIdentityProvider: \"{PROVIDER}\", tokenUrl: \"{OTHER_EMULATOR}/v1/token\", impersonationEndpoint: \"{OTHER_EMULATOR}/\"}}\nidentities: [{{namespace: {NS}, serviceAccount: app, gcp: {{serviceAccount: \"{GSA}\", tokenUrl: \"{EMULATOR}/v1/token\"}}}}]"
    ));
    let out = run(&pod(json!({})), &sa(Value::Null), &settings);
    let credentials = gcp_credentials(&out.pod);
    assert_eq!(credentials["token_url"], format!("{EMULATOR}/v1/token"));
    // The trailing slash of the base URL is not doubled.
    assert_eq!(
        credentials["service_account_impersonation_url"],
        format!("{OTHER_EMULATOR}/v1/projects/-/serviceAccounts/{GSA}:generateAccessToken")
    );
    assert!(warned_override(
        &out,
        "token_url",
        &format!("{EMULATOR}/v1/token"),
        &format!("gcp.tokenUrl of the mapping for {NS}/app"),
    ));
    assert!(warned_override(
        &out,
        "service_account_impersonation_url",
        &format!("{OTHER_EMULATOR}/"),
        "gcp.impersonationEndpoint",
    ));

    // Direct resource access impersonates nobody: the endpoint is unused and not warned about.
    let direct = config(&format!(
        "gcp: {{workloadIdentityProvider: \"{PROVIDER}\", impersonationEndpoint: \"{OTHER_EMULATOR}\"}}\nidentities: [{{namespace: {NS}, serviceAccount: app, gcp: {{}}}}]"
    ));
    let out = run(&pod(json!({})), &sa(Value::Null), &direct);
    assert!(
        gcp_credentials(&out.pod)
            .get("service_account_impersonation_url")
            .is_none()
    );
    assert!(!out.warned("talk to that endpoint"), "{:?}", out.mutation.warnings);
}

#[test]
fn invalid_endpoint_overrides_are_config_errors_naming_the_field() {
    let fields = [
        ("aws", "stsEndpoint"),
        ("aws", "endpoint"),
        ("aws", "containerCredentialsFullUri"),
        ("azure", "authorityHost"),
        ("gcp", "tokenUrl"),
        ("gcp", "impersonationEndpoint"),
    ];
    let mapping_base = |cloud: &str| match cloud {
        "aws" => format!("roleArn: \"{ROLE}\", "),
        _ => String::new(),
    };
    for (cloud, field) in fields {
        for bad in [
            "http://sts.example.com",
            "http://10.0.0.7:8080",
            "https://user:secret@sts.example.com",
            "https://sts.example.com/?x=1",
            "sts.example.com",
        ] {
            let yaml = format!("{cloud}: {{{field}: \"{bad}\"}}");
            let err = Config::parse(&yaml, &Default::default()).expect_err(&yaml).to_string();
            assert!(
                err.contains(&format!("{cloud}.{field}: \"{bad}\" is not a valid ")),
                "{yaml}: {err}"
            );
            let yaml = format!(
                "identities: [{{{cloud}: {{{}{field}: \"{bad}\"}}}}]",
                mapping_base(cloud)
            );
            let err = Config::parse(&yaml, &Default::default()).expect_err(&yaml).to_string();
            assert!(err.contains(&format!("identities[0].{cloud}.{field}")), "{yaml}: {err}");
        }
        let goods: &[&str] = if field == "containerCredentialsFullUri" {
            &[
                OTHER_EMULATOR,
                "http://127.0.0.1:2703",
                "http://169.254.170.23/v1/credentials",
            ]
        } else if field == "authorityHost" {
            &[OTHER_EMULATOR, EMULATOR_TLS]
        } else {
            &[
                EMULATOR,
                OTHER_EMULATOR,
                "http://127.0.0.1:4566",
                "http://emulator.wiw-system.svc.cluster.local",
            ]
        };
        for good in goods {
            let yaml = format!(
                "{cloud}: {{{field}: \"{good}\"}}\nidentities: [{{{cloud}: {{{}{field}: \"{good}\"}}}}]",
                mapping_base(cloud)
            );
            Config::parse(&yaml, &Default::default()).unwrap_or_else(|err| panic!("{yaml}: {err}"));
        }
    }
    // The agent URI: plain http only where the AWS SDKs take it (not to a Service name).
    let err = Config::parse(
        "aws: {containerCredentialsFullUri: \"http://emulator.wiw-system.svc:8080/v1/credentials\"}",
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("aws.containerCredentialsFullUri") && err.contains("as the AWS SDKs require"),
        "{err}"
    );
    // The authority host: https only.
    let err = Config::parse(
        &format!("azure: {{authorityHost: \"{EMULATOR}\"}}"),
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("azure.authorityHost") && err.contains("refuse an http authority host"),
        "{err}"
    );
    // The flags are checked alike (a flag without a ConfigMap still goes through validation).
    let mut flags = crate::config::Settings::default();
    flags.gcp.token_url = Some("http://sts.example.com/v1/token".into());
    let err = Config::from_defaults(&flags).unwrap_err().to_string();
    assert!(err.contains("gcp.tokenUrl"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Skip lists
// ---------------------------------------------------------------------------------------------

fn all_clouds_with_skips(skips: Value) -> Outcome {
    run(
        &full_pod(json!({"metadata": {"annotations": skips}})),
        &all_clouds_sa(),
        &cluster(),
    )
}

#[test]
fn aws_skip_list_is_comma_separated_and_leaves_other_clouds_alone() {
    let out = all_clouds_with_skips(json!({"eks.amazonaws.com/skip-containers": "sidecar, init"}));
    assert_has(&out.pod, "app", &IRSA);
    for skipped in ["sidecar", "init"] {
        assert_lacks(&out.pod, skipped, &IRSA);
        assert_has(&out.pod, skipped, &GCP);
        assert_has(&out.pod, skipped, &AZURE);
    }
}

#[test]
fn azure_skip_list_is_semicolon_separated_and_leaves_other_clouds_alone() {
    let out = all_clouds_with_skips(json!({"azure.workload.identity/skip-containers": "sidecar;init"}));
    assert_has(&out.pod, "app", &AZURE);
    for skipped in ["sidecar", "init"] {
        assert_lacks(&out.pod, skipped, &AZURE);
        assert_has(&out.pod, skipped, &IRSA);
        assert_has(&out.pod, skipped, &GCP);
    }
    // A comma is not Azure's separator: "sidecar,init" names no container.
    let out = all_clouds_with_skips(json!({"azure.workload.identity/skip-containers": "sidecar,init"}));
    assert_has(&out.pod, "sidecar", &AZURE);
}

#[test]
fn google_skip_list_leaves_other_clouds_alone() {
    let out = all_clouds_with_skips(json!({"cloud.google.com/skip-containers": "sidecar"}));
    assert_has(&out.pod, "app", &GCP);
    assert_has(&out.pod, "init", &GCP);
    assert_lacks(&out.pod, "sidecar", &GCP);
    assert_has(&out.pod, "sidecar", &IRSA);
    assert_has(&out.pod, "sidecar", &AZURE);
    // Several names, comma-separated.
    let out = all_clouds_with_skips(json!({"cloud.google.com/skip-containers": "sidecar,init"}));
    assert_has(&out.pod, "app", &GCP);
    assert_lacks(&out.pod, "sidecar", &GCP);
    assert_lacks(&out.pod, "init", &GCP);
}

// ---------------------------------------------------------------------------------------------
// Azure
// ---------------------------------------------------------------------------------------------

#[test]
fn azure_client_id_with_the_cluster_tenant() {
    let out = run(&full_pod(json!({})), &azure_sa(), &cluster());
    assert_eq!(
        volume(&out.pod, "azure-identity-token"),
        Some(&json!({"name": "azure-identity-token", "projected": {"sources": [
            {"serviceAccountToken": {"audience": "api://AzureADTokenExchange", "expirationSeconds": 3600, "path": "azure-identity-token"}}
        ]}}))
    );
    for name in ["app", "sidecar", "init"] {
        assert_has(&out.pod, name, &AZURE);
        let env = env(&out.pod, name);
        assert_eq!(env["AZURE_CLIENT_ID"], CLIENT);
        assert_eq!(env["AZURE_TENANT_ID"], TENANT);
        assert_eq!(env["AZURE_FEDERATED_TOKEN_FILE"], AZURE_TOKEN);
        assert_eq!(env["AZURE_AUTHORITY_HOST"], "https://login.microsoftonline.com/");
    }
    assert_eq!(out.mutation.identities, vec![("azure", CLIENT.to_owned())]);
    assert!(out.mutation.warnings.is_empty(), "{:?}", out.mutation.warnings);
}

#[test]
fn azure_tenant_comes_from_annotation_then_mapping_then_cluster() {
    let mapped_tenant = format!(
        "azure: {{tenantId: \"{TENANT}\"}}\nidentities: [{{namespace: {NS}, azure: {{clientId: \"{CLIENT}\", tenantId: \"{OTHER_TENANT}\"}}}}]"
    );
    let tenant = |sa: &Value, config: &Config| env_var(&run(&pod(json!({})), sa, config).pod, "app", "AZURE_TENANT_ID");
    let third = "33333333-2222-3333-4444-555555555555";
    let annotated =
        sa(json!({"azure.workload.identity/client-id": CLIENT, "azure.workload.identity/tenant-id": third}));
    assert_eq!(tenant(&annotated, &config(&mapped_tenant)).as_deref(), Some(third));
    assert_eq!(
        tenant(&azure_sa(), &config(&mapped_tenant)).as_deref(),
        Some(OTHER_TENANT)
    );
    assert_eq!(tenant(&azure_sa(), &cluster()).as_deref(), Some(TENANT));
    assert_eq!(tenant(&annotated, &no_config()).as_deref(), Some(third));
}

#[test]
fn azure_without_any_tenant_is_warned_about_and_not_injected() {
    let out = run(&pod(json!({})), &azure_sa(), &no_config());
    out.assert_untouched();
    assert!(out.warned("tenant"), "{:?}", out.mutation.warnings);
}

#[test]
fn azure_authority_host_follows_the_cloud() {
    for (cloud, host) in [
        ("AzurePublicCloud", "https://login.microsoftonline.com/"),
        ("AzureChinaCloud", "https://login.chinacloudapi.cn/"),
        ("AzureUSGovernmentCloud", "https://login.microsoftonline.us/"),
    ] {
        let settings = config(&format!("azure: {{tenantId: \"{TENANT}\", cloud: {cloud}}}"));
        let out = run(&pod(json!({})), &azure_sa(), &settings);
        assert_eq!(
            env_var(&out.pod, "app", "AZURE_AUTHORITY_HOST").as_deref(),
            Some(host),
            "{cloud}"
        );
    }
}

fn labelled(value: Option<&str>) -> Value {
    match value {
        Some(value) => pod(json!({"metadata": {"labels": {"azure.workload.identity/use": value}}})),
        None => pod(json!({})),
    }
}

#[test]
fn azure_use_label_false_opts_out() {
    let out = run(&labelled(Some("false")), &azure_sa(), &cluster());
    out.assert_untouched();
    assert!(out.mutation.warnings.is_empty());
    // The label only concerns Azure.
    let out = run(&labelled(Some("false")), &all_clouds_sa(), &cluster());
    assert_no_cloud_at_all(&out.pod, &AZURE);
    assert_has(&out.pod, "app", &IRSA);
    assert_has(&out.pod, "app", &GCP);
}

#[test]
fn azure_require_pod_label_injects_only_pods_labelled_true() {
    let strict = config(&format!("azure: {{tenantId: \"{TENANT}\", requirePodLabel: true}}"));
    for label in [None, Some("false"), Some("yes"), Some("True")] {
        run(&labelled(label), &azure_sa(), &strict).assert_untouched();
    }
    let out = run(&labelled(Some("true")), &azure_sa(), &strict);
    assert_has(&out.pod, "app", &AZURE);
    // Without requirePodLabel, no label is needed.
    assert_has(&run(&labelled(None), &azure_sa(), &cluster()).pod, "app", &AZURE);
}

#[test]
fn azure_use_label_true_without_client_id_injects_everything_but_the_client_id() {
    let out = run(&labelled(Some("true")), &sa(Value::Null), &cluster());
    let env = env(&out.pod, "app");
    assert!(!env.contains_key("AZURE_CLIENT_ID"), "{env:?}");
    assert_eq!(env["AZURE_TENANT_ID"], TENANT);
    assert_eq!(env["AZURE_FEDERATED_TOKEN_FILE"], AZURE_TOKEN);
    assert_eq!(mounts_at(&out.pod, "app", AZURE_MOUNT).len(), 1);
    // No label and no client id: nothing.
    run(&labelled(None), &sa(Value::Null), &cluster()).assert_untouched();
}

/// The custom token endpoint of Azure WI v1.6.0, configured with a CA from a ConfigMap (or `ca`).
fn custom_endpoint(ca: &str) -> Config {
    config(&format!(
        "azure: {{tenantId: \"{TENANT}\", customTokenEndpointAnnotationSuffix: identity-binding, customTokenEndpointAudience: \"api://AKSIdentityBinding\", kubernetesTokenProxy: \"https://10.0.0.10:443/tokens\", kubernetesSniName: ib.aks.example, {ca}}}"
    ))
}

const CUSTOM_ENDPOINT_ANNOTATION: &str = "azure.workload.identity/use-identity-binding";
const AZURE_CA_FILE: &str = "/var/run/secrets/azure/tokens/ca-cert/ca.crt";

fn custom_endpoint_pod(value: &str) -> Value {
    full_pod(json!({"metadata": {"annotations": {CUSTOM_ENDPOINT_ANNOTATION: value}}}))
}

#[test]
fn azure_custom_token_endpoint_for_pods_annotated_for_it() {
    let settings = custom_endpoint("kubernetesCaConfigMapName: ib-ca");
    // As theirs: the value is compared case-insensitively with "true".
    for value in ["true", "True"] {
        let out = run(&custom_endpoint_pod(value), &azure_sa(), &settings);
        assert_eq!(
            volume(&out.pod, "azure-identity-token"),
            Some(&json!({"name": "azure-identity-token", "projected": {"sources": [
                {"serviceAccountToken": {"audience": "api://AKSIdentityBinding", "expirationSeconds": 3600, "path": "azure-identity-token"}},
                {"configMap": {"name": "ib-ca", "items": [{"key": "ca.crt", "path": "ca-cert/ca.crt"}], "optional": false}}
            ]}}))
        );
        for name in ["app", "sidecar", "init"] {
            assert_has(&out.pod, name, &AZURE);
            let env = env(&out.pod, name);
            assert_eq!(env["AZURE_FEDERATED_TOKEN_FILE"], AZURE_TOKEN);
            assert_eq!(env["AZURE_KUBERNETES_TOKEN_PROXY"], "https://10.0.0.10:443/tokens");
            assert_eq!(env["AZURE_KUBERNETES_SNI_NAME"], "ib.aks.example");
            assert_eq!(env["AZURE_KUBERNETES_CA_FILE"], AZURE_CA_FILE);
            assert!(!env.contains_key("AZURE_KUBERNETES_CA_DATA"), "{env:?}");
        }
        // The token proxy is an endpoint override like the others: said once per Pod.
        assert_eq!(out.mutation.warnings.len(), 1, "{:?}", out.mutation.warnings);
        assert!(
            warned_override(
                &out,
                "AZURE_KUBERNETES_TOKEN_PROXY",
                "https://10.0.0.10:443/tokens",
                "azure.kubernetesTokenProxy"
            ),
            "{:?}",
            out.mutation.warnings
        );
        assert!(out.mutation.gaps.is_empty());
        // `run` checked it already; said here because it is part of the behaviour.
        assert!(webhook(&out.pod, NS, Some(&azure_sa()), &settings).patch.is_empty());
    }
}

#[test]
fn azure_custom_token_endpoint_ca_data_is_an_env_var_and_no_file() {
    let pem = "-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n";
    let out = run(
        &custom_endpoint_pod("true"),
        &azure_sa(),
        &custom_endpoint(&format!("kubernetesCaData: \"{pem}\"")),
    );
    let env = env(&out.pod, "app");
    assert_eq!(
        env["AZURE_KUBERNETES_CA_DATA"],
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    );
    assert!(!env.contains_key("AZURE_KUBERNETES_CA_FILE"), "{env:?}");
    let sources = &volume(&out.pod, "azure-identity-token").unwrap()["projected"]["sources"];
    assert_eq!(sources.as_array().map(Vec::len), Some(1), "{sources}");
}

#[test]
fn azure_pods_without_the_custom_endpoint_annotation_keep_the_default_endpoint() {
    let settings = custom_endpoint("kubernetesCaConfigMapName: ib-ca");
    for pod in [
        full_pod(json!({})),
        custom_endpoint_pod("false"),
        custom_endpoint_pod("FALSE"),
    ] {
        let out = run(&pod, &azure_sa(), &settings);
        assert_eq!(
            token_of(&out.pod, "azure-identity-token")["audience"],
            "api://AzureADTokenExchange"
        );
        let sources = &volume(&out.pod, "azure-identity-token").unwrap()["projected"]["sources"];
        assert_eq!(sources.as_array().map(Vec::len), Some(1), "{sources}");
        let env = env(&out.pod, "app");
        assert!(env.keys().all(|name| !name.starts_with("AZURE_KUBERNETES_")), "{env:?}");
        assert!(out.mutation.warnings.is_empty(), "{:?}", out.mutation.warnings);
    }
}

#[test]
fn azure_custom_endpoint_annotations_the_webhook_does_not_serve_are_warned_about() {
    // Not configured at all.
    let out = run(&custom_endpoint_pod("true"), &azure_sa(), &cluster());
    assert_eq!(
        token_of(&out.pod, "azure-identity-token")["audience"],
        "api://AzureADTokenExchange"
    );
    assert!(
        out.warned("asks for a custom token endpoint, but none is configured"),
        "{:?}",
        out.mutation.warnings
    );
    // Another suffix than the configured one.
    let other = full_pod(json!({"metadata": {"annotations": {"azure.workload.identity/use-other": "true"}}}));
    let out = run(
        &other,
        &azure_sa(),
        &custom_endpoint("kubernetesCaConfigMapName: ib-ca"),
    );
    assert_eq!(
        token_of(&out.pod, "azure-identity-token")["audience"],
        "api://AzureADTokenExchange"
    );
    assert!(
        out.warned(&format!("but this webhook's is {CUSTOM_ENDPOINT_ANNOTATION}")),
        "{:?}",
        out.mutation.warnings
    );
    // Not a boolean.
    let out = run(
        &custom_endpoint_pod("yes"),
        &azure_sa(),
        &custom_endpoint("kubernetesCaConfigMapName: ib-ca"),
    );
    assert_eq!(
        token_of(&out.pod, "azure-identity-token")["audience"],
        "api://AzureADTokenExchange"
    );
    assert!(
        out.warned("=\"yes\" is not true or false"),
        "{:?}",
        out.mutation.warnings
    );
}

/// The notices about Azure settings (the AWS one about the region is always there in these tests).
fn azure_notices(config: &Config) -> Vec<String> {
    let mut notices = config.notices();
    notices.retain(|notice| notice.starts_with("azure."));
    notices
}

#[test]
fn azure_custom_endpoint_without_its_url_is_a_gap() {
    let settings = config(&format!(
        "azure: {{tenantId: \"{TENANT}\", customTokenEndpointAnnotationSuffix: identity-binding, customTokenEndpointAudience: \"api://AKSIdentityBinding\"}}"
    ));
    assert!(
        settings
            .notices()
            .iter()
            .any(|notice| notice.contains("azure.kubernetesTokenProxy is not set"))
    );
    let out = run(&custom_endpoint_pod("true"), &azure_sa(), &settings);
    assert_eq!(
        token_of(&out.pod, "azure-identity-token")["audience"],
        "api://AKSIdentityBinding"
    );
    assert!(env_var(&out.pod, "app", "AZURE_KUBERNETES_TOKEN_PROXY").is_none());
    assert_eq!(out.mutation.gaps, vec!["azure_kubernetes_token_proxy"]);
    assert!(out.warned("azure.kubernetesTokenProxy"), "{:?}", out.mutation.warnings);
    // Pods that do not ask for it are not warned about.
    assert!(
        run(&full_pod(json!({})), &azure_sa(), &settings)
            .mutation
            .warnings
            .is_empty()
    );
    assert!(azure_notices(&custom_endpoint("kubernetesCaConfigMapName: ib-ca")).is_empty());
}

#[test]
fn azure_custom_endpoint_env_set_by_the_user_wins() {
    let pod = pod(json!({
        "metadata": {"annotations": {CUSTOM_ENDPOINT_ANNOTATION: "true"}},
        "spec": {"containers": [{"name": "app", "image": "app", "env": [
            {"name": "AZURE_KUBERNETES_TOKEN_PROXY", "value": "https://mine.example"},
            {"name": "AZURE_KUBERNETES_CA_FILE", "value": "/etc/mine/ca.crt"}
        ]}]}
    }));
    let out = run(&pod, &azure_sa(), &custom_endpoint("kubernetesCaConfigMapName: ib-ca"));
    let env = env(&out.pod, "app");
    assert_eq!(env["AZURE_KUBERNETES_TOKEN_PROXY"], "https://mine.example");
    assert_eq!(env["AZURE_KUBERNETES_CA_FILE"], "/etc/mine/ca.crt");
    assert_eq!(env["AZURE_KUBERNETES_SNI_NAME"], "ib.aks.example");
    let names = container(&out.pod, "app")["env"].as_array().unwrap().len();
    assert_eq!(names, env.len(), "no variable twice");
}

#[test]
fn azure_custom_endpoint_ca_file_never_points_at_a_file_not_projected() {
    // The Pod's own volume of our name projects the custom token but not the CA.
    let own = custom_endpoint_pod("true");
    let own = merged(
        own,
        json!({"spec": {"volumes": [{"name": "data", "emptyDir": {}}, {"name": "azure-identity-token", "projected": {"sources": [
            {"serviceAccountToken": {"audience": "api://AKSIdentityBinding", "expirationSeconds": 3600, "path": "azure-identity-token"}}
        ]}}]}}),
    );
    let out = run(&own, &azure_sa(), &custom_endpoint("kubernetesCaConfigMapName: ib-ca"));
    out.assert_untouched();
    assert!(
        out.warned("its own volume azure-identity-token"),
        "{:?}",
        out.mutation.warnings
    );
}

#[test]
fn azure_custom_endpoint_settings_are_validated() {
    let base = format!("tenantId: \"{TENANT}\"");
    let pair = "customTokenEndpointAnnotationSuffix: ib, customTokenEndpointAudience: api://ib";
    for (settings, problem) in [
        ("customTokenEndpointAnnotationSuffix: ib", "set both or neither"),
        ("customTokenEndpointAudience: api://ib", "set both or neither"),
        (
            "customTokenEndpointAnnotationSuffix: ib, customTokenEndpointAudience: API://AzureADTokenExchange",
            "must differ from the default audience",
        ),
        (
            "customTokenEndpointAnnotationSuffix: \"a/b\", customTokenEndpointAudience: api://ib",
            "is not a valid annotation key",
        ),
        (
            &format!("{pair}, kubernetesTokenProxy: \"10.0.0.1\""),
            "azure.kubernetesTokenProxy: \"10.0.0.1\" is not a valid endpoint URL",
        ),
        // Plain http only to a cluster-local host, as the other endpoint overrides.
        (
            &format!("{pair}, kubernetesTokenProxy: \"http://10.0.0.10/tokens\""),
            "azure.kubernetesTokenProxy: \"http://10.0.0.10/tokens\" is not a valid endpoint URL",
        ),
        (
            &format!("{pair}, kubernetesTokenProxy: \"http://proxy.svc.attacker.example/\""),
            "is not a valid endpoint URL",
        ),
        (
            &format!("{pair}, kubernetesSniName: \"Bad Name\""),
            "azure.kubernetesSniName",
        ),
        (
            &format!("{pair}, kubernetesCaData: \"not pem\""),
            "azure.kubernetesCaData",
        ),
        (
            &format!("{pair}, kubernetesCaConfigMapName: \"Bad_Name\""),
            "azure.kubernetesCaConfigMapName",
        ),
        (
            &format!(
                "{pair}, kubernetesCaConfigMapName: ca, kubernetesCaData: \"-----BEGIN CERTIFICATE-----\\n-----END CERTIFICATE-----\""
            ),
            "set one, not both",
        ),
    ] {
        let yaml = format!("azure: {{{base}, {settings}}}");
        let err = Config::parse(&yaml, &Default::default()).unwrap_err().to_string();
        assert!(err.contains(problem), "{yaml}: {err}");
    }
    let unused = config(&format!("azure: {{{base}, kubernetesSniName: ib.example}}"));
    assert_eq!(
        azure_notices(&unused),
        vec![
            "azure.kubernetesSniName is set but unused: the custom token endpoint also needs azure.customTokenEndpointAnnotationSuffix and azure.customTokenEndpointAudience"
        ]
    );
}

fn azure_expiration(sa_seconds: &str, pod_annotations: Value) -> (i64, Vec<String>) {
    let sa = sa(json!({
        "azure.workload.identity/client-id": CLIENT,
        "azure.workload.identity/service-account-token-expiration": sa_seconds
    }));
    let out = run(
        &pod(json!({"metadata": {"annotations": pod_annotations}})),
        &sa,
        &cluster(),
    );
    (expiration(&out.pod, "azure-identity-token"), out.mutation.warnings)
}

#[test]
fn azure_token_expiration_stays_within_its_range() {
    assert_eq!(azure_expiration("7200", json!({})), (7200, vec![]));
    assert_eq!(azure_expiration("86400", json!({})), (86400, vec![]));
    for out_of_range in ["3599", "86401", "600", "soon"] {
        let (seconds, warnings) = azure_expiration(out_of_range, json!({}));
        assert_eq!(seconds, 3600, "{out_of_range}");
        assert!(
            warnings.iter().any(|w| w.contains("service-account-token-expiration")),
            "{out_of_range}: {warnings:?}"
        );
    }
    // Pods may shorten, with Azure's own key or the generic one, within the range.
    let key = "azure.workload.identity/service-account-token-expiration";
    assert_eq!(azure_expiration("7200", json!({key: "4000"})).0, 4000);
    assert_eq!(
        azure_expiration("7200", json!({"azure.workload.identity/token-expiration": "5000"})).0,
        5000
    );
    let (seconds, warnings) = azure_expiration("7200", json!({key: "9000"}));
    assert_eq!(seconds, 7200);
    assert!(!warnings.is_empty());
    let (seconds, warnings) = azure_expiration("7200", json!({key: "100"}));
    assert_eq!(seconds, 7200);
    assert!(!warnings.is_empty());
}

#[test]
fn azure_env_vars_set_by_the_container_are_kept_and_the_others_added() {
    let pod = pod_with_container(json!({"env": [{"name": "AZURE_CLIENT_ID", "value": OTHER_CLIENT}]}));
    let out = run(&pod, &azure_sa(), &cluster());
    let env = env(&out.pod, "app");
    assert_eq!(env["AZURE_CLIENT_ID"], OTHER_CLIENT);
    assert_eq!(env["AZURE_TENANT_ID"], TENANT);
    assert_eq!(env["AZURE_FEDERATED_TOKEN_FILE"], AZURE_TOKEN);
    assert_eq!(env["AZURE_AUTHORITY_HOST"], "https://login.microsoftonline.com/");

    let pod = pod_with_container(json!({"env": [{"name": "AZURE_AUTHORITY_HOST", "value": "https://login.example/"}]}));
    let env = self::env(&run(&pod, &azure_sa(), &cluster()).pod, "app");
    assert_eq!(env["AZURE_AUTHORITY_HOST"], "https://login.example/");
    assert_eq!(env["AZURE_CLIENT_ID"], CLIENT);
}

#[test]
fn azure_invalid_client_id_is_warned_about_and_not_injected() {
    let out = run(
        &pod(json!({})),
        &sa(json!({"azure.workload.identity/client-id": "not-a-uuid"})),
        &cluster(),
    );
    out.assert_untouched();
    assert!(
        out.warned("azure.workload.identity/client-id"),
        "{:?}",
        out.mutation.warnings
    );
}

#[test]
fn azure_mapping_gives_client_and_tenant() {
    let mapping = config(&format!(
        "identities: [{{namespace: {NS}, serviceAccount: app, azure: {{clientId: \"{CLIENT}\", tenantId: \"{TENANT}\"}}}}]"
    ));
    let out = run(&pod(json!({})), &sa(Value::Null), &mapping);
    assert_eq!(env_var(&out.pod, "app", "AZURE_CLIENT_ID").as_deref(), Some(CLIENT));
    assert_eq!(env_var(&out.pod, "app", "AZURE_TENANT_ID").as_deref(), Some(TENANT));
    // The annotation wins over the mapping.
    let annotated = sa(json!({"azure.workload.identity/client-id": OTHER_CLIENT}));
    let out = run(&pod(json!({})), &annotated, &mapping);
    assert_eq!(
        env_var(&out.pod, "app", "AZURE_CLIENT_ID").as_deref(),
        Some(OTHER_CLIENT)
    );
}

// ---------------------------------------------------------------------------------------------
// Google Cloud
// ---------------------------------------------------------------------------------------------

fn expected_gcp_credentials(provider: &str, email: Option<&str>) -> Value {
    let mut expected = json!({
        "type": "external_account",
        "audience": format!("//iam.googleapis.com/{provider}"),
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": "https://sts.googleapis.com/v1/token",
        "credential_source": {"file": "/var/run/secrets/sts.googleapis.com/serviceaccount/token", "format": {"type": "text"}}
    });
    if let Some(email) = email {
        expected["service_account_impersonation_url"] = json!(format!(
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{email}:generateAccessToken"
        ));
    }
    expected
}

fn expected_gcp_volume(audience: &str, expiration: i64) -> Value {
    json!({"name": "gcp-workload-identity", "projected": {"sources": [
        {"serviceAccountToken": {"audience": audience, "expirationSeconds": expiration, "path": "token"}},
        {"downwardAPI": {"items": [{"path": "credential-configuration.json", "fieldRef": {
            "apiVersion": "v1",
            "fieldPath": "metadata.annotations['cloud.google.com/external-credentials-json']"
        }}]}}
    ]}})
}

#[test]
fn google_pods_get_a_writable_gcloud_config_directory_unless_turned_off_or_their_own() {
    const DIR: &str = "/var/run/secrets/sts.googleapis.com/gcloud-config";
    let out = run(&full_pod(json!({})), &gcp_sa(), &cluster());
    assert_eq!(
        volume(&out.pod, "gcp-gcloud-config"),
        Some(&json!({"name": "gcp-gcloud-config", "emptyDir": {}}))
    );
    for name in ["app", "sidecar", "init"] {
        assert_eq!(
            env_var(&out.pod, name, "CLOUDSDK_CONFIG").as_deref(),
            Some(DIR),
            "{name}"
        );
        let mounts = container(&out.pod, name)["volumeMounts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            mounts.contains(&json!({"name": "gcp-gcloud-config", "mountPath": DIR, "readOnly": false})),
            "{name}: {mounts:?}"
        );
    }
    assert!(out.mutation.warnings.is_empty(), "{:?}", out.mutation.warnings);
    // Other clouds get none.
    let out = run(&pod(json!({})), &irsa_sa(), &cluster());
    assert_eq!(volume(&out.pod, "gcp-gcloud-config"), None);
    // Turned off by the setting.
    let off = config(&format!(
        "gcp: {{workloadIdentityProvider: \"{PROVIDER}\", gcloudConfigVolume: false}}"
    ));
    let out = run(&pod(json!({})), &gcp_sa(), &off);
    assert_eq!(volume(&out.pod, "gcp-gcloud-config"), None);
    assert_eq!(env_var(&out.pod, "app", "CLOUDSDK_CONFIG"), None);
    assert!(env_var(&out.pod, "app", "GOOGLE_APPLICATION_CREDENTIALS").is_some());
    // A container with its own CLOUDSDK_CONFIG keeps it and gets no mount; with no other taker,
    // no volume either.
    let own = pod(
        json!({"spec": {"containers": [{"name": "app", "env": [{"name": "CLOUDSDK_CONFIG", "value": "/home/app/.gcloud"}]}]}}),
    );
    let out = run(&own, &gcp_sa(), &cluster());
    assert_eq!(
        env_var(&out.pod, "app", "CLOUDSDK_CONFIG").as_deref(),
        Some("/home/app/.gcloud")
    );
    assert_eq!(volume(&out.pod, "gcp-gcloud-config"), None);
    let mounts = container(&out.pod, "app")["volumeMounts"].to_string();
    assert!(!mounts.contains("gcloud-config"), "{mounts}");
    // (Every `run` also checks that a second pass on its output patches nothing.)
}

#[test]
fn google_project_from_the_annotation_the_mapping_or_the_service_account_email() {
    let project = |pod: &Value, sa: &Value, config: &Config| {
        let out = run(pod, sa, config);
        let google = env_var(&out.pod, "app", "GOOGLE_CLOUD_PROJECT");
        assert_eq!(google, env_var(&out.pod, "app", "CLOUDSDK_CORE_PROJECT"), "a pair");
        (google, out.mutation.warnings)
    };
    let plain = pod(json!({}));
    // From the e-mail `name@PROJECT.iam.gserviceaccount.com`.
    assert_eq!(
        project(&plain, &gcp_sa(), &cluster()),
        (Some("my-project".to_owned()), vec![])
    );
    // The ServiceAccount annotation wins; an invalid one is warned about and the e-mail's applies.
    let annotated =
        |value: &str| sa(json!({"iam.gke.io/gcp-service-account": GSA, "cloud.google.com/project-id": value}));
    assert_eq!(
        project(&plain, &annotated("workload-project"), &cluster()).0.as_deref(),
        Some("workload-project")
    );
    let (chosen, warnings) = project(&plain, &annotated("Not_A_Project"), &cluster());
    assert_eq!(chosen.as_deref(), Some("my-project"));
    assert!(
        warnings.iter().any(|w| w.contains("cloud.google.com/project-id")),
        "{warnings:?}"
    );
    // A mapping's project wins over the e-mail's.
    let mapped = config(&format!(
        "gcp: {{workloadIdentityProvider: \"{PROVIDER}\"}}\nidentities: [{{namespace: {NS}, serviceAccount: app, gcp: {{serviceAccount: {GSA}, project: mapped-project}}}}]"
    ));
    assert_eq!(
        project(&plain, &sa(Value::Null), &mapped).0.as_deref(),
        Some("mapped-project")
    );
    // No project to give: direct access, or an e-mail without a project in it.
    let direct = sa(json!({"cloud.google.com/workload-identity-provider": PROVIDER}));
    assert_eq!(project(&plain, &direct, &cluster()), (None, vec![]));
    let compute = sa(json!({"iam.gke.io/gcp-service-account": "123-compute@developer.gserviceaccount.com"}));
    assert_eq!(project(&plain, &compute, &cluster()), (None, vec![]));
    // The user's env wins: a container that names either project gets neither from us.
    for own in ["GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"] {
        let pod =
            pod(json!({"spec": {"containers": [{"name": "app", "env": [{"name": own, "value": "users-project"}]}]}}));
        let out = run(&pod, &gcp_sa(), &cluster());
        let env = env(&out.pod, "app");
        assert_eq!(env[own], "users-project");
        assert_eq!(env.len(), 4, "{env:?}");
        assert!(out.mutation.warnings.is_empty(), "{:?}", out.mutation.warnings);
    }
}

#[test]
fn google_service_account_annotation_with_the_cluster_provider() {
    let out = run(&full_pod(json!({})), &gcp_sa(), &cluster());
    assert_eq!(
        volume(&out.pod, "gcp-workload-identity"),
        Some(&expected_gcp_volume(
            &format!("https://iam.googleapis.com/{PROVIDER}"),
            3600
        ))
    );
    assert_eq!(gcp_credentials(&out.pod), expected_gcp_credentials(PROVIDER, Some(GSA)));
    assert_eq!(annotation(&out.pod, "team"), Some("a"), "existing annotations are kept");
    for name in ["app", "sidecar", "init"] {
        assert_has(&out.pod, name, &GCP);
        let env = env(&out.pod, name);
        assert_eq!(env["GOOGLE_APPLICATION_CREDENTIALS"], GCP_CREDENTIALS);
        assert_eq!(env["CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE"], GCP_CREDENTIALS);
    }
    assert_eq!(out.mutation.identities, vec![("gcp", GSA.to_owned())]);
    assert!(out.mutation.warnings.is_empty(), "{:?}", out.mutation.warnings);
    let typed: k8s_openapi::api::core::v1::Pod = typed(&out.pod);
    let volumes = typed.spec.and_then(|spec| spec.volumes).unwrap_or_default();
    let gcp = volumes
        .iter()
        .find(|v| v.name == "gcp-workload-identity")
        .expect("typed volume");
    assert_eq!(
        gcp.projected.as_ref().and_then(|p| p.sources.as_ref()).map(Vec::len),
        Some(2),
        "ONE volume, two sources"
    );
}

#[test]
fn google_federation_keys_of_the_existing_webhook() {
    let annotated = sa(json!({
        "cloud.google.com/workload-identity-provider": OTHER_PROVIDER,
        "cloud.google.com/service-account-email": OTHER_GSA,
        "cloud.google.com/audience": "custom-audience",
        "cloud.google.com/token-expiration": "1800"
    }));
    // The annotated provider wins over the cluster's; no cluster provider is needed at all.
    for settings in [cluster(), no_config()] {
        let out = run(&pod(json!({})), &annotated, &settings);
        assert_eq!(
            volume(&out.pod, "gcp-workload-identity"),
            Some(&expected_gcp_volume("custom-audience", 1800))
        );
        assert_eq!(
            gcp_credentials(&out.pod),
            expected_gcp_credentials(OTHER_PROVIDER, Some(OTHER_GSA))
        );
    }
    // A provider alone means direct access.
    let provider_only = sa(json!({"cloud.google.com/workload-identity-provider": OTHER_PROVIDER}));
    let out = run(&pod(json!({})), &provider_only, &no_config());
    assert_eq!(
        gcp_credentials(&out.pod),
        expected_gcp_credentials(OTHER_PROVIDER, None)
    );
}

#[test]
fn google_pod_annotation_shortens_the_token() {
    let pod = pod(json!({"metadata": {"annotations": {"cloud.google.com/token-expiration": "900"}}}));
    assert_eq!(
        expiration(&run(&pod, &gcp_sa(), &cluster()).pod, "gcp-workload-identity"),
        900
    );
    let settings = config(&format!(
        "gcp: {{workloadIdentityProvider: \"{PROVIDER}\", tokenExpirationSeconds: 7200, audience: cluster-aud}}"
    ));
    let out = run(&pod_with_container(json!({})), &gcp_sa(), &settings);
    assert_eq!(
        token_of(&out.pod, "gcp-workload-identity"),
        &json!({"audience": "cluster-aud", "expirationSeconds": 7200, "path": "token"})
    );
}

#[test]
fn google_mapping_with_and_without_impersonation() {
    let mapping = |gcp: &str| {
        config(&format!(
            "gcp: {{workloadIdentityProvider: \"{PROVIDER}\"}}\nidentities: [{{namespace: {NS}, serviceAccount: app, gcp: {gcp}}}]"
        ))
    };
    let out = run(&pod(json!({})), &sa(Value::Null), &mapping("{}"));
    let credentials = gcp_credentials(&out.pod);
    assert_eq!(credentials, expected_gcp_credentials(PROVIDER, None));
    assert!(credentials.get("service_account_impersonation_url").is_none());
    assert_has(&out.pod, "app", &GCP);

    let out = run(
        &pod(json!({})),
        &sa(Value::Null),
        &mapping(&format!("{{serviceAccount: \"{GSA}\"}}")),
    );
    assert_eq!(gcp_credentials(&out.pod), expected_gcp_credentials(PROVIDER, Some(GSA)));

    // The annotation wins over the mapping.
    let annotated = sa(json!({"iam.gke.io/gcp-service-account": OTHER_GSA}));
    let out = run(
        &pod(json!({})),
        &annotated,
        &mapping(&format!("{{serviceAccount: \"{GSA}\"}}")),
    );
    assert_eq!(
        gcp_credentials(&out.pod),
        expected_gcp_credentials(PROVIDER, Some(OTHER_GSA))
    );
}

#[test]
fn google_without_a_provider_is_warned_about_and_not_injected() {
    let out = run(&pod(json!({})), &gcp_sa(), &no_config());
    out.assert_untouched();
    assert!(out.warned("workload identity provider"), "{:?}", out.mutation.warnings);
}

#[test]
fn google_invalid_service_account_is_warned_about_and_not_injected() {
    let out = run(
        &pod(json!({})),
        &sa(json!({"iam.gke.io/gcp-service-account": "reader@example.com"})),
        &cluster(),
    );
    out.assert_untouched();
    assert!(
        out.warned("iam.gke.io/gcp-service-account"),
        "{:?}",
        out.mutation.warnings
    );
}

#[test]
fn gke_mode_leaves_pods_alone_but_still_annotates_service_accounts() {
    let gke = config(&format!(
        "gcp: {{mode: gke, workloadIdentityProvider: \"{PROVIDER}\"}}\nidentities: [{{namespace: {NS}, serviceAccount: app, gcp: {{serviceAccount: \"{GSA}\"}}}}]"
    ));
    let out = run(&pod(json!({})), &gcp_sa(), &gke);
    out.assert_untouched();
    assert!(out.mutation.warnings.is_empty());
    let (sa_after, _) = run_sa(&sa(Value::Null), &gke);
    assert_eq!(
        sa_after["metadata"]["annotations"],
        json!({"iam.gke.io/gcp-service-account": GSA, MANAGED_ANNOTATIONS: "iam.gke.io/gcp-service-account"})
    );
}

#[test]
fn a_preset_credential_annotation_is_replaced() {
    let forged = json!({"type": "external_account", "audience": "//iam.googleapis.com/projects/666/locations/global/workloadIdentityPools/evil/providers/evil"}).to_string();
    for pod in [
        pod(json!({"metadata": {"annotations": {GCP_ANNOTATION: forged.clone()}}})),
        full_pod(json!({"metadata": {"annotations": {GCP_ANNOTATION: forged.clone()}}})),
    ] {
        let out = run(&pod, &gcp_sa(), &cluster());
        assert_eq!(gcp_credentials(&out.pod), expected_gcp_credentials(PROVIDER, Some(GSA)));
    }
}

// ---------------------------------------------------------------------------------------------
// Combinations and patch shape
// ---------------------------------------------------------------------------------------------

#[test]
fn all_three_clouds_on_one_pod() {
    for pod in [pod(json!({})), full_pod(json!({}))] {
        let out = run(&pod, &all_clouds_sa(), &cluster());
        for container in containers(&out.pod) {
            let name = container["name"].as_str().unwrap_or_default();
            for cloud in [&IRSA, &GCP, &AZURE] {
                assert_has(&out.pod, name, cloud);
            }
        }
        let clouds: Vec<&str> = out.mutation.identities.iter().map(|(cloud, _)| *cloud).collect();
        assert_eq!(clouds, ["aws", "gcp", "azure"]);
        assert!(out.mutation.warnings.is_empty(), "{:?}", out.mutation.warnings);
    }
}

fn op_paths(mutation: &Mutation) -> Vec<String> {
    let ops: Value = serde_json::to_value(&mutation.patch).expect("patch serializes");
    ops.as_array()
        .into_iter()
        .flatten()
        .map(|op| {
            assert_eq!(op["op"], "add", "the webhook only adds: {op}");
            op["path"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

#[test]
fn missing_arrays_and_maps_are_created_in_one_operation() {
    let out = run(&pod(json!({})), &all_clouds_sa(), &cluster());
    assert_eq!(
        op_paths(&out.mutation),
        [
            "/metadata/annotations",
            "/spec/volumes",
            "/spec/containers/0/volumeMounts",
            "/spec/containers/0/env"
        ]
    );
    // Three clouds' tokens and gcloud's writable config directory.
    assert_eq!(out.pod["spec"]["volumes"].as_array().map(Vec::len), Some(4));
    assert_eq!(
        container(&out.pod, "app")["volumeMounts"].as_array().map(Vec::len),
        Some(4)
    );
}

#[test]
fn existing_arrays_and_maps_are_appended_to() {
    let original = full_pod(json!({}));
    let out = run(&original, &all_clouds_sa(), &cluster());
    let paths = op_paths(&out.mutation);
    assert!(
        paths.contains(&format!("/metadata/annotations/{}", GCP_ANNOTATION.replace('/', "~1"))),
        "{paths:?}"
    );
    assert!(paths.contains(&"/spec/volumes/-".to_owned()), "{paths:?}");
    assert!(paths.contains(&"/spec/containers/0/env/-".to_owned()), "{paths:?}");
    assert!(
        paths.contains(&"/spec/containers/1/volumeMounts/-".to_owned()),
        "{paths:?}"
    );
    // The init container has neither list: they are created.
    assert!(paths.contains(&"/spec/initContainers/0/env".to_owned()), "{paths:?}");
    // What was there is still there, first.
    assert_eq!(out.pod["spec"]["volumes"][0], original["spec"]["volumes"][0]);
    assert_eq!(
        container(&out.pod, "app")["env"][0],
        json!({"name": "EXISTING", "value": "1"})
    );
    assert_eq!(
        container(&out.pod, "app")["volumeMounts"][0],
        json!({"name": "data", "mountPath": "/data"})
    );
    assert_eq!(annotation(&out.pod, "team"), Some("a"));
    assert_eq!(out.pod["spec"]["volumes"].as_array().map(Vec::len), Some(5));
}

#[test]
fn null_lists_and_maps_are_treated_as_absent() {
    let mut with_nulls = pod(json!({}));
    with_nulls["metadata"]["annotations"] = Value::Null;
    with_nulls["metadata"]["labels"] = Value::Null;
    with_nulls["spec"]["volumes"] = Value::Null;
    with_nulls["spec"]["containers"][0]["env"] = Value::Null;
    with_nulls["spec"]["containers"][0]["volumeMounts"] = Value::Null;
    let out = run(&with_nulls, &all_clouds_sa(), &cluster());
    for cloud in [&IRSA, &GCP, &AZURE] {
        assert_has(&out.pod, "app", cloud);
    }
}

#[test]
fn a_volume_that_already_exists_is_not_added_twice() {
    let own = json!({"name": "aws-iam-token", "projected": {"sources": [
        {"serviceAccountToken": {"audience": "sts.amazonaws.com", "expirationSeconds": 3600, "path": "token"}}
    ]}});
    let original = full_pod(json!({}));
    let mut pod = original.clone();
    pod["spec"]["volumes"]
        .as_array_mut()
        .expect("volumes")
        .push(own.clone());
    let out = run(&pod, &irsa_sa(), &no_config());
    assert_eq!(
        volume(&out.pod, "aws-iam-token"),
        Some(&own),
        "the Pod's own volume is kept as is"
    );
    assert_eq!(out.pod["spec"]["volumes"].as_array().map(Vec::len), Some(2));
    assert_has(&out.pod, "app", &IRSA);
}

#[test]
fn a_container_mounting_another_volume_at_our_path_gets_nothing_and_a_warning() {
    let taken = json!({"name": "my-token", "mountPath": IRSA_MOUNT});
    let pod = full_pod(json!({"spec": {
        "volumes": [{"name": "my-token", "emptyDir": {}}],
        "containers": [
            {"name": "app", "image": "busybox", "volumeMounts": [taken.clone()]},
            {"name": "sidecar", "image": "proxy"}
        ]
    }}));
    let out = run(&pod, &irsa_sa(), &no_config());
    assert_eq!(mounts_at(&out.pod, "app", IRSA_MOUNT), vec![&taken]);
    assert_eq!(
        env_var(&out.pod, "app", "AWS_WEB_IDENTITY_TOKEN_FILE"),
        None,
        "no env pointing into a volume we did not project"
    );
    assert!(
        out.warned(r#"container "app" mounts another volume at /var/run/secrets/eks.amazonaws.com/serviceaccount"#),
        "{:?}",
        out.mutation.warnings
    );
    assert_has(&out.pod, "sidecar", &IRSA);

    // The only container: nothing at all, not even the volume.
    let mut alone = pod_with_container(json!({"volumeMounts": [taken]}));
    alone["spec"]["volumes"] = json!([{"name": "my-token", "emptyDir": {}}]);
    let out = run(&alone, &irsa_sa(), &no_config());
    out.assert_untouched();
    assert_eq!(out.mutation.warnings.len(), 1, "{:?}", out.mutation.warnings);
}

#[test]
fn a_container_mounting_our_volume_elsewhere_or_in_part_gets_no_env() {
    let own = json!({"name": "aws-iam-token", "projected": {"sources": [
        {"serviceAccountToken": {"audience": "sts.amazonaws.com", "expirationSeconds": 3600, "path": "token"}}
    ]}});
    for mount in [
        json!({"name": "aws-iam-token", "mountPath": "/token"}),
        json!({"name": "aws-iam-token", "mountPath": IRSA_MOUNT, "subPath": "token"}),
    ] {
        let mut pod = full_pod(json!({}));
        pod["spec"]["volumes"]
            .as_array_mut()
            .expect("volumes")
            .push(own.clone());
        pod["spec"]["containers"][1]["volumeMounts"] = json!([mount.clone()]);
        let out = run(&pod, &irsa_sa(), &no_config());
        assert_eq!(container(&out.pod, "sidecar")["volumeMounts"], json!([mount]));
        assert_eq!(
            env_var(&out.pod, "sidecar", "AWS_WEB_IDENTITY_TOKEN_FILE"),
            None,
            "{mount}"
        );
        assert!(
            out.warned(r#"container "sidecar" mounts"#),
            "{:?}",
            out.mutation.warnings
        );
        assert_has(&out.pod, "app", &IRSA);
    }
}

#[test]
fn a_pod_volume_with_our_name_that_is_not_our_token_blocks_that_cloud_with_a_warning() {
    let foreign = [
        json!({"name": "aws-iam-token", "emptyDir": {}}),
        json!({"name": "aws-iam-token", "hostPath": {"path": "/etc"}}),
        json!({"name": "aws-iam-token", "projected": {"sources": [
            {"serviceAccountToken": {"audience": "someone-else", "path": "token"}}
        ]}}),
        json!({"name": "aws-iam-token", "projected": {"sources": [
            {"serviceAccountToken": {"audience": "sts.amazonaws.com", "path": "other-file"}}
        ]}}),
    ];
    for volume in foreign {
        let mut pod = full_pod(json!({}));
        pod["spec"]["volumes"]
            .as_array_mut()
            .expect("volumes")
            .push(volume.clone());
        let out = run(&pod, &all_clouds_sa(), &cluster());
        assert_eq!(self::volume(&out.pod, "aws-iam-token"), Some(&volume), "kept as is");
        for container in ["app", "sidecar", "init"] {
            assert_eq!(env_var(&out.pod, container, "AWS_ROLE_ARN"), None, "{volume}");
            assert_eq!(
                env_var(&out.pod, container, "AWS_WEB_IDENTITY_TOKEN_FILE"),
                None,
                "{volume}"
            );
            assert!(mounts_at(&out.pod, container, IRSA_MOUNT).is_empty(), "{volume}");
            assert_has(&out.pod, container, &GCP);
            assert_has(&out.pod, container, &AZURE);
        }
        assert!(
            out.warned("the Pod has its own volume aws-iam-token that does not project the webhook's token; no aws credentials injected"),
            "{:?}",
            out.mutation.warnings
        );
        assert!(!out.mutation.identities.iter().any(|(cloud, _)| *cloud == "aws"));
    }
    // Google's volume must also carry the credential file from the Pod annotation.
    let mut pod = full_pod(json!({}));
    pod["spec"]["volumes"].as_array_mut().expect("volumes").push(json!({"name": "gcp-workload-identity", "projected": {"sources": [
        {"serviceAccountToken": {"audience": format!("https://iam.googleapis.com/{PROVIDER}"), "path": "token"}},
        {"downwardAPI": {"items": [{"path": "credential-configuration.json", "fieldRef": {"fieldPath": "metadata.annotations['other']"}}]}}
    ]}}));
    let out = run(&pod, &gcp_sa(), &cluster());
    out.assert_untouched();
    assert!(
        out.warned(r#"the Pod has its own volume gcp-workload-identity that holds another file "credential-configuration.json"; no gcp credentials injected"#),
        "{:?}",
        out.mutation.warnings
    );
}

#[test]
fn a_pod_volume_with_our_token_gets_the_google_credential_file_it_lacks() {
    let token =
        json!({"serviceAccountToken": {"audience": format!("https://iam.googleapis.com/{PROVIDER}"), "path": "token"}});
    let mut pod = full_pod(json!({}));
    pod["spec"]["volumes"]
        .as_array_mut()
        .expect("volumes")
        .push(json!({"name": "gcp-workload-identity", "projected": {"sources": [token]}}));
    let out = run(&pod, &gcp_sa(), &cluster());
    assert!(out.mutation.warnings.is_empty(), "{:?}", out.mutation.warnings);
    let sources = &volume(&out.pod, "gcp-workload-identity").expect("volume")["projected"]["sources"];
    assert_eq!(
        sources[1],
        json!({"downwardAPI": {"items": [{"path": "credential-configuration.json", "fieldRef": {"apiVersion": "v1", "fieldPath": format!("metadata.annotations['{GCP_ANNOTATION}']")}}]}}),
        "{sources:#}"
    );
    assert_eq!(sources[0], token);
    assert_has(&out.pod, "app", &GCP);
}

#[test]
fn our_own_volumes_stored_by_the_apiserver_count_as_ours_without_warnings() {
    let first = run(
        &full_pod(json!({"spec": {"os": {"name": "windows"}}})),
        &all_clouds_sa(),
        &cluster(),
    );
    // The apiserver stores the Pod with defaults filled in before a reinvocation.
    let mut stored = first.pod.clone();
    for volume in stored["spec"]["volumes"].as_array_mut().expect("volumes") {
        if let Some(projected) = volume.get_mut("projected") {
            projected["defaultMode"] = json!(420);
        }
    }
    let again = webhook(&stored, NS, Some(&all_clouds_sa()), &cluster());
    assert!(again.patch.is_empty(), "{:?}", again.patch);
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
    assert_eq!(again.identities.len(), 3);
}

#[test]
fn a_container_that_sets_our_token_file_itself_keeps_it_with_a_warning() {
    let pod = pod_with_container(json!({"env": [{"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": "/mine/token"}]}));
    let out = run(&pod, &irsa_sa(), &no_config());
    assert_eq!(
        env_var(&out.pod, "app", "AWS_WEB_IDENTITY_TOKEN_FILE").as_deref(),
        Some("/mine/token")
    );
    assert_eq!(env_var(&out.pod, "app", "AWS_ROLE_ARN"), None);
    assert!(
        out.warned(r#"container "app" sets AWS_WEB_IDENTITY_TOKEN_FILE itself; the webhook's AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE are not added"#),
        "{:?}",
        out.mutation.warnings
    );
    // A variable that names no file of ours (the region) is the container's choice, silently.
    let region = config("aws: {region: us-west-2}");
    let pod = pod_with_container(json!({"env": [{"name": "AWS_REGION", "value": "eu-west-1"}]}));
    let out = run(&pod, &irsa_sa(), &region);
    assert!(out.mutation.warnings.is_empty(), "{:?}", out.mutation.warnings);
}

#[test]
fn generate_name_pods_are_mutated() {
    let pod = pod(json!({"metadata": {"name": null, "namespace": null, "generateName": "web-7d4b9c-"}}));
    let mapping = role_mapping("app");
    let out = run(&pod, &sa(Value::Null), &mapping);
    assert_eq!(out.pod["metadata"].get("name"), None);
    assert_eq!(env_var(&out.pod, "app", "AWS_ROLE_ARN").as_deref(), Some(ROLE));
}

#[test]
fn pods_without_a_service_account_name_are_left_alone_with_a_warning() {
    // The ServiceAccount admission plugin names `default` before webhooks run; a Pod that reaches
    // us unnamed comes from a cluster without it, which refuses a projected token on such a Pod.
    let mapping = role_mapping("default");
    for name in [json!(""), Value::Null] {
        let pod = pod(json!({"spec": {"serviceAccountName": name}}));
        let out = run(&pod, &sa(Value::Null), &mapping);
        assert!(out.mutation.patch.is_empty(), "{name}: {}", out.patch_text());
        assert!(out.mutation.identities.is_empty(), "{name}");
        assert!(
            out.warned("no serviceAccountName"),
            "{name}: {:?}",
            out.mutation.warnings
        );
    }
    // Named `default`, the same Pod gets the mapping's role.
    let named = pod(json!({"spec": {"serviceAccountName": "default"}}));
    assert_eq!(
        env_var(&run(&named, &sa(Value::Null), &mapping).pod, "app", "AWS_ROLE_ARN").as_deref(),
        Some(ROLE)
    );
    // No identity for `default`: no warning either.
    run(
        &pod(json!({"spec": {"serviceAccountName": ""}})),
        &sa(Value::Null),
        &no_config(),
    )
    .assert_untouched();
}

fn role_of(namespace: &str, service_account: &str, config: &Config) -> Option<String> {
    let pod = pod(json!({"spec": {"serviceAccountName": service_account}}));
    let out = run_in(namespace, &pod, Some(&sa(Value::Null)), config);
    env_var(&out.pod, "app", "AWS_ROLE_ARN")
}

#[test]
fn mapping_wildcards_and_first_match_wins() {
    let role = |name: &str| format!("arn:aws:iam::111122223333:role/{name}");
    let mappings = config(&format!(
        r#"identities:
  - {{namespace: team-a, serviceAccount: app, aws: {{roleArn: "{}"}}}}
  - {{namespace: team-a, serviceAccount: "*", aws: {{roleArn: "{}"}}}}
  - {{namespace: team-a, serviceAccount: app, aws: {{roleArn: "{}"}}}}
  - {{namespace: "*", serviceAccount: batch, aws: {{roleArn: "{}"}}}}
  - {{namespace: "*", serviceAccount: "*", aws: {{roleArn: "{}"}}}}
"#,
        role("exact"),
        role("any-sa"),
        role("shadowed"),
        role("any-ns"),
        role("everything")
    ));
    assert_eq!(role_of("team-a", "app", &mappings), Some(role("exact")));
    assert_eq!(role_of("team-a", "batch", &mappings), Some(role("any-sa")));
    assert_eq!(role_of("team-b", "batch", &mappings), Some(role("any-ns")));
    assert_eq!(role_of("team-b", "web", &mappings), Some(role("everything")));

    let reversed = config(&format!(
        "identities:\n  - {{aws: {{roleArn: \"{}\"}}}}\n  - {{namespace: team-a, serviceAccount: app, aws: {{roleArn: \"{}\"}}}}",
        role("everything"),
        role("exact")
    ));
    assert_eq!(role_of("team-a", "app", &reversed), Some(role("everything")));
}

#[test]
fn a_pod_cannot_get_another_namespaces_mapping() {
    let mapping = role_mapping("app");
    assert_eq!(role_of(NS, "app", &mapping).as_deref(), Some(ROLE));
    assert_eq!(role_of("team-b", "app", &mapping), None);
    // A Pod that claims team-a in its metadata but is created in team-b gets team-b's (none).
    let body = review_body(json!({"request": {"namespace": "team-b", "object": pod(json!({}))}}));
    let review = Review::parse(&body).expect("valid review");
    assert_eq!(review.object_namespace(), "team-b");
    let sa: ServiceAccount = typed(&sa(Value::Null));
    let mutation = review.mutation(Some(&sa), Labels::Unknown, &mapping);
    assert!(mutation.patch.is_empty(), "{:?}", mutation.patch);
}

#[test]
fn a_missing_service_account_means_no_patch() {
    let unmapped = run_in(NS, &pod(json!({})), None, &cluster());
    unmapped.assert_untouched();
    assert!(unmapped.mutation.warnings.is_empty());
    let mapping = role_mapping("app");
    let mapped = run_in(NS, &pod(json!({})), None, &mapping);
    mapped.assert_untouched();
    assert!(mapped.warned("does not exist"), "{:?}", mapped.mutation.warnings);
}

#[test]
fn a_service_account_without_our_keys_means_an_empty_patch_and_no_warnings() {
    for annotations in [
        Value::Null,
        json!({}),
        json!({"kubernetes.io/description": "x", "eks.amazonaws.com/other": "y"}),
    ] {
        let out = run(&full_pod(json!({})), &sa(annotations.clone()), &cluster());
        out.assert_untouched();
        assert!(
            out.mutation.warnings.is_empty(),
            "{annotations}: {:?}",
            out.mutation.warnings
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Annotation values that try to smuggle JSON or env vars
// ---------------------------------------------------------------------------------------------

#[test]
fn annotation_values_that_try_to_inject_are_refused() {
    const MARK: &str = "INJECTED";
    let evil = [
        ("eks.amazonaws.com/role-arn", format!("{ROLE}\",\"name\":\"{MARK}")),
        ("eks.amazonaws.com/role-arn", format!("{ROLE}\n- name: {MARK}")),
        (
            "azure.workload.identity/client-id",
            format!("{CLIENT}\"}},{{\"name\":\"{MARK}"),
        ),
        ("azure.workload.identity/tenant-id", format!("{TENANT}\nAZURE_{MARK}=1")),
        (
            "iam.gke.io/gcp-service-account",
            format!("a\"@x.iam.gserviceaccount.com\",\"{MARK}\":\""),
        ),
        ("cloud.google.com/service-account-email", format!("{GSA}\n{MARK}")),
        (
            "cloud.google.com/workload-identity-provider",
            format!("{PROVIDER}\",\"{MARK}\":\""),
        ),
        ("cloud.google.com/audience", format!("aud\",\"{MARK}\":\"")),
        ("eks.amazonaws.com/audience", format!("aud\" {MARK}")),
        ("eks.amazonaws.com/token-expiration", format!("3600,\"{MARK}\"")),
    ];
    for (key, value) in evil {
        // Each hostile value sits beside valid identities for all three clouds.
        let mut annotations = json!({
            "eks.amazonaws.com/role-arn": ROLE,
            "iam.gke.io/gcp-service-account": GSA,
            "azure.workload.identity/client-id": CLIENT
        });
        if key == "cloud.google.com/service-account-email" {
            annotations
                .as_object_mut()
                .expect("map")
                .remove("iam.gke.io/gcp-service-account");
        }
        annotations[key] = json!(value);
        let out = run(&full_pod(json!({})), &sa(annotations), &cluster());
        assert!(
            !out.patch_text().contains(MARK),
            "{key}={value:?} leaked into {}",
            out.patch_text()
        );
        assert!(
            out.warned(key),
            "{key}={value:?} must be warned about: {:?}",
            out.mutation.warnings
        );
        for container in containers(&out.pod) {
            assert!(
                container["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|var| !var.to_string().contains(MARK))
            );
        }
    }
}

#[test]
fn hostile_pod_annotations_never_reach_the_patch() {
    const MARK: &str = "INJECTED";
    let pod = full_pod(json!({"metadata": {"annotations": {
        "eks.amazonaws.com/skip-containers": format!("x\",\"{MARK}"),
        "cloud.google.com/token-expiration": format!("60\n{MARK}"),
        "azure.workload.identity/skip-containers": format!("{MARK};\"}}")
    }}}));
    let out = run(&pod, &all_clouds_sa(), &cluster());
    assert!(!out.patch_text().contains(MARK), "{}", out.patch_text());
    assert!(
        out.warned("cloud.google.com/token-expiration"),
        "{:?}",
        out.mutation.warnings
    );
    assert_has(&out.pod, "sidecar", &IRSA);
}

// ---------------------------------------------------------------------------------------------
// ServiceAccount mutation
// ---------------------------------------------------------------------------------------------

/// Mutates a ServiceAccount, applies the patch, and checks that a second call has nothing to add.
fn run_sa(sa_json: &Value, config: &Config) -> (Value, Mutation) {
    let mutation = mutate_service_account(&typed(sa_json), Namespace::named(NS), config);
    let mutated = apply(sa_json, &mutation);
    let _: k8s_openapi::api::core::v1::ServiceAccount = typed(&mutated);
    let again = mutate_service_account(&typed(&mutated), Namespace::named(NS), config);
    assert!(again.patch.is_empty(), "ServiceAccount reinvocation: {:?}", again.patch);
    (mutated, mutation)
}

fn full_mapping(aws: &str) -> Config {
    config(&format!(
        "identities: [{{namespace: {NS}, serviceAccount: app, aws: {aws}, gcp: {{serviceAccount: \"{GSA}\"}}, azure: {{clientId: \"{CLIENT}\", tenantId: \"{TENANT}\"}}}}]"
    ))
}

#[test]
fn a_mapping_annotates_its_service_account() {
    let (after, mutation) = run_sa(
        &sa(json!({"owner": "team-a"})),
        &full_mapping(&format!("{{roleArn: \"{ROLE}\"}}")),
    );
    assert_eq!(
        after["metadata"]["annotations"],
        json!({
            "owner": "team-a",
            "eks.amazonaws.com/role-arn": ROLE,
            "iam.gke.io/gcp-service-account": GSA,
            "azure.workload.identity/client-id": CLIENT,
            "azure.workload.identity/tenant-id": TENANT,
            MANAGED_ANNOTATIONS: "azure.workload.identity/client-id,azure.workload.identity/tenant-id,eks.amazonaws.com/role-arn,iam.gke.io/gcp-service-account"
        })
    );
    assert_eq!(mutation.identities.len(), 4);
}

#[test]
fn pod_identity_mappings_add_no_role_annotation() {
    for aws in [
        "{mode: podIdentity}".to_owned(),
        format!("{{mode: podIdentity, roleArn: \"{ROLE}\"}}"),
    ] {
        let (after, _) = run_sa(&sa(json!({})), &full_mapping(&aws));
        let annotations = &after["metadata"]["annotations"];
        assert_eq!(annotations.get("eks.amazonaws.com/role-arn"), None, "{aws}");
        assert_eq!(annotations["iam.gke.io/gcp-service-account"], GSA);
    }
}

#[test]
fn existing_service_account_annotations_are_kept() {
    let own = sa(json!({"eks.amazonaws.com/role-arn": OTHER_ROLE, "azure.workload.identity/client-id": OTHER_CLIENT}));
    let (after, _) = run_sa(&own, &full_mapping(&format!("{{roleArn: \"{ROLE}\"}}")));
    let annotations = &after["metadata"]["annotations"];
    assert_eq!(annotations["eks.amazonaws.com/role-arn"], OTHER_ROLE);
    assert_eq!(annotations["azure.workload.identity/client-id"], OTHER_CLIENT);
    assert_eq!(annotations["azure.workload.identity/tenant-id"], TENANT);
    assert_eq!(annotations["iam.gke.io/gcp-service-account"], GSA);
}

#[test]
fn a_service_account_without_annotations_gets_a_map() {
    let (after, mutation) = run_sa(&sa(Value::Null), &full_mapping(&format!("{{roleArn: \"{ROLE}\"}}")));
    assert_eq!(op_paths(&mutation), ["/metadata/annotations"]);
    assert_eq!(
        after["metadata"]["annotations"].as_object().map(|map| map.len()),
        Some(5),
        "four identities and the list of managed keys"
    );
    let mut absent = sa(Value::Null);
    absent["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("annotations");
    let (after, _) = run_sa(&absent, &full_mapping(&format!("{{roleArn: \"{ROLE}\"}}")));
    assert_eq!(after["metadata"]["annotations"]["eks.amazonaws.com/role-arn"], ROLE);
}

#[test]
fn managed_annotations_follow_the_mapping_and_users_annotations_do_not() {
    let first = full_mapping(&format!("{{roleArn: \"{ROLE}\"}}"));
    let user_client = sa(json!({"azure.workload.identity/client-id": OTHER_CLIENT}));
    let (annotated, _) = run_sa(&user_client, &first);
    // The mapping's role changes: the copy it wrote changes with it, the user's client id stays.
    let second = full_mapping(&format!("{{roleArn: \"{OTHER_ROLE}\"}}"));
    let (updated, _) = run_sa(&annotated, &second);
    let annotations = &updated["metadata"]["annotations"];
    assert_eq!(annotations["eks.amazonaws.com/role-arn"], OTHER_ROLE);
    assert_eq!(annotations["azure.workload.identity/client-id"], OTHER_CLIENT);
    assert!(!annotations[MANAGED_ANNOTATIONS].as_str().unwrap().contains("client-id"));
    // The mapping goes away: everything it wrote goes with it, and only the user's annotation stays.
    let (removed, _) = run_sa(&updated, &no_config());
    assert_eq!(
        removed["metadata"]["annotations"],
        json!({"azure.workload.identity/client-id": OTHER_CLIENT})
    );
}

#[test]
fn pods_follow_the_current_mapping_not_an_older_copy_on_the_service_account() {
    let (annotated, _) = run_sa(&sa(json!({})), &role_mapping("app"));
    // The mapping is removed; the ServiceAccount has not been updated since and still holds the copy.
    let out = run(&pod(json!({})), &annotated, &no_config());
    out.assert_untouched();
    // A user's own annotation still works as before.
    let out = run(&pod(json!({})), &irsa_sa(), &no_config());
    assert_has(&out.pod, "app", &IRSA);
}

#[test]
fn a_service_account_without_a_mapping_is_untouched() {
    let mapping = full_mapping(&format!("{{roleArn: \"{ROLE}\"}}"));
    let other = merged(sa(json!({})), json!({"metadata": {"name": "other"}}));
    let (_, mutation) = run_sa(&other, &mapping);
    assert!(mutation.patch.is_empty());
    let elsewhere = mutate_service_account(&typed(&sa(json!({}))), Namespace::named("team-b"), &mapping);
    assert!(elsewhere.patch.is_empty());
}

// ---------------------------------------------------------------------------------------------
// AdmissionReview parsing and response
// ---------------------------------------------------------------------------------------------

/// A valid AdmissionReview for creating `pod(json!({}))`, with `overrides` merged in.
fn review_value(overrides: Value) -> Value {
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": UID,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": NS,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod(json!({})),
            "oldObject": null,
            "dryRun": false
        }
    });
    merged(review, overrides)
}

fn review_body(overrides: Value) -> Vec<u8> {
    serde_json::to_vec(&review_value(overrides)).expect("serializes")
}

fn parse(overrides: Value) -> Review {
    Review::parse(&review_body(overrides)).unwrap_or_else(|err| panic!("{err}"))
}

fn response_of(review: &Review, mutation: &Mutation) -> Value {
    serde_json::from_slice(&review.response(mutation).expect("response serializes")).expect("response is JSON")
}

#[test]
fn a_pod_create_review_is_parsed_and_answered_with_the_patch() {
    let review = parse(json!({}));
    assert_eq!(review.uid, UID);
    assert_eq!(review.namespace, NS);
    assert!(matches!(review.subject, Subject::Pod(_)), "{:?}", review.subject);
    let sa: ServiceAccount = typed(&irsa_sa());
    let mutation = review.mutation(Some(&sa), Labels::Unknown, &config("aws: {region: eu-west-1}"));
    let response = response_of(&review, &mutation);
    assert_eq!(response["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(response["kind"], "AdmissionReview");
    assert_eq!(response["response"]["uid"], UID);
    assert_eq!(response["response"]["allowed"], true);
    assert_eq!(response["response"]["patchType"], "JSONPatch");
    assert_eq!(response["response"].get("warnings"), None, "no warnings: no key");
    let encoded = response["response"]["patch"].as_str().expect("base64 patch");
    let decoded: Vec<json_patch::PatchOperation> = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("base64"),
    )
    .expect("JSON patch");
    assert_eq!(
        decoded,
        crate::patch::to_json_patch(&mutation.patch).expect("JSON patch").0
    );
    let mut object = pod(json!({}));
    json_patch::patch(&mut object, &decoded).expect("decoded patch applies");
    assert_has(&object, "app", &IRSA);
}

#[test]
fn an_empty_patch_is_answered_without_patch_and_with_warnings() {
    let review = parse(json!({}));
    let sa: ServiceAccount = typed(&sa(json!({"eks.amazonaws.com/role-arn": "nope"})));
    let mutation = review.mutation(Some(&sa), Labels::Unknown, &no_config());
    let response = response_of(&review, &mutation)["response"].clone();
    assert_eq!(response["allowed"], true);
    assert_eq!(response.get("patch"), None);
    assert_eq!(response.get("patchType"), None);
    let warnings = response["warnings"].as_array().expect("warnings");
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap_or_default().contains("eks.amazonaws.com/role-arn")),
        "{warnings:?}"
    );
}

#[test]
fn service_account_create_and_update_are_mutated() {
    let mapping = full_mapping(&format!("{{roleArn: \"{ROLE}\"}}"));
    for operation in ["CREATE", "UPDATE"] {
        let review = parse(json!({"request": {
            "kind": {"kind": "ServiceAccount"}, "resource": {"resource": "serviceaccounts"},
            "operation": operation, "object": sa(json!({}))
        }}));
        assert!(matches!(review.subject, Subject::ServiceAccount(_)), "{operation}");
        assert!(
            !review.mutation(None, Labels::Unknown, &mapping).patch.is_empty(),
            "{operation}"
        );
    }
}

#[test]
fn other_operations_kinds_and_subresources_are_ignored() {
    let ignored = [
        json!({"request": {"operation": "DELETE"}}),
        json!({"request": {"operation": "CONNECT"}}),
        json!({"request": {"operation": "UPDATE"}}),
        json!({"request": {"kind": {"kind": "ServiceAccount"}, "operation": "DELETE", "object": sa(json!({}))}}),
        json!({"request": {"kind": {"kind": "ConfigMap"}}}),
        json!({"request": {"kind": {"group": "apps", "kind": "Deployment"}}}),
        json!({"request": {"kind": {"version": "v2"}}}),
        json!({"request": {"subResource": "ephemeralcontainers"}}),
        json!({"request": {"subResource": "binding"}}),
    ];
    let sa: ServiceAccount = typed(&all_clouds_sa());
    for overrides in ignored {
        let review = parse(overrides.clone());
        assert!(
            matches!(review.subject, Subject::Ignored(_)),
            "{overrides}: {:?}",
            review.subject
        );
        let mutation = review.mutation(Some(&sa), Labels::Unknown, &cluster());
        assert!(mutation.patch.is_empty() && mutation.warnings.is_empty(), "{overrides}");
        let response = response_of(&review, &mutation);
        assert_eq!(
            response["response"],
            json!({"uid": UID, "allowed": true}),
            "{overrides}"
        );
    }
}

#[test]
fn bodies_that_are_not_admission_reviews_are_errors() {
    let error = |body: &[u8]| Review::parse(body).expect_err("must be refused");
    assert!(matches!(error(b"{not json"), ReviewError::Json(_)));
    assert!(matches!(error(b""), ReviewError::Json(_)));
    assert!(matches!(error(b"[]"), ReviewError::Json(_)));
    assert_eq!(
        error(&review_body(json!({"apiVersion": "admission.k8s.io/v1beta1"}))),
        ReviewError::NotAnAdmissionReview("admission.k8s.io/v1beta1".into(), "AdmissionReview".into())
    );
    assert_eq!(
        error(&review_body(json!({"kind": "Pod"}))),
        ReviewError::NotAnAdmissionReview("admission.k8s.io/v1".into(), "Pod".into())
    );
    assert!(matches!(
        error(&review_body(json!({"apiVersion": null}))),
        ReviewError::NotAnAdmissionReview(..)
    ));
    // The refusal repeats a cut of what it got: the server sends it back and logs it.
    let long = "x".repeat(3 * 1024 * 1024);
    let refusal = error(&review_body(json!({"apiVersion": long, "kind": long}))).to_string();
    assert!(refusal.len() < 400, "{} bytes", refusal.len());
    assert!(refusal.contains(&format!("xxx\"…({} bytes)", long.len())), "{refusal}");
    assert_eq!(error(&review_body(json!({"request": null}))), ReviewError::NoRequest);
    assert_eq!(
        error(&review_body(json!({"request": {"uid": null}}))),
        ReviewError::NoUid
    );
    assert_eq!(error(&review_body(json!({"request": {"uid": ""}}))), ReviewError::NoUid);
    let uid = "u".repeat(MAX_UID_BYTES);
    assert_eq!(parse(json!({"request": {"uid": uid}})).uid, uid, "128 bytes are a uid");
    let long = "u".repeat(3 * 1024 * 1024);
    assert_eq!(
        error(&review_body(json!({"request": {"uid": long}}))),
        ReviewError::UidTooLong(long.len())
    );
    assert_eq!(
        error(&review_body(json!({"request": {"kind": null}}))),
        ReviewError::NoKind
    );
}

/// A Pod CREATE review whose `object` is the given value (`None`: no `object` key).
fn review_with_object(object: Option<Value>) -> Review {
    let mut body = review_value(json!({}));
    let request = body["request"].as_object_mut().expect("request");
    match object {
        Some(object) => request.insert("object".to_owned(), object),
        None => request.remove("object"),
    };
    Review::parse(&serde_json::to_vec(&body).expect("serializes")).unwrap_or_else(|err| panic!("{err}"))
}

#[test]
fn a_pod_review_without_a_readable_object_is_allowed_with_a_warning() {
    let sa: ServiceAccount = typed(&irsa_sa());
    for object in [
        None,
        Some(Value::Null),
        Some(json!({"spec": {"containers": "not a list"}})),
    ] {
        let review = review_with_object(object.clone());
        assert!(
            matches!(review.subject, Subject::Unreadable(_)),
            "{object:?}: {:?}",
            review.subject
        );
        let mutation = review.mutation(Some(&sa), Labels::Unknown, &no_config());
        let response = response_of(&review, &mutation)["response"].clone();
        assert_eq!(response["allowed"], true);
        assert_eq!(response["uid"], UID);
        assert_eq!(response.get("patch"), None);
        assert_eq!(response["warnings"].as_array().map(Vec::len), Some(1), "{object:?}");
    }
}

#[test]
fn the_namespace_comes_from_the_request_when_the_object_has_none() {
    let generated = pod(json!({"metadata": {"name": null, "namespace": null, "generateName": "web-"}}));
    let review = parse(json!({"request": {"object": generated.clone()}}));
    assert_eq!(review.object_namespace(), NS);
    let mapping = role_mapping("app");
    let sa: ServiceAccount = typed(&sa(Value::Null));
    let mutation = review.mutation(Some(&sa), Labels::Unknown, &mapping);
    let mutated = apply(&generated, &mutation);
    assert_eq!(env_var(&mutated, "app", "AWS_ROLE_ARN").as_deref(), Some(ROLE));
    // Without a request namespace, the object's is used.
    let review = parse(json!({"request": {"namespace": null}}));
    assert_eq!(review.object_namespace(), NS);
}

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

#[test]
fn config_settings_are_parsed_and_checked() {
    let parsed = config(&format!(
        "azure: {{tenantId: \"{TENANT}\", cloud: AzureChinaCloud, requirePodLabel: true, tokenExpirationSeconds: 7200}}\ngcp: {{mode: gke}}"
    ));
    assert_eq!(parsed.settings.azure.require_pod_label, Some(true));
    assert_eq!(parsed.settings.azure.token_expiration_seconds, Some(7200));
    for (yaml, needle) in [
        ("azure: {cloud: AzureGermanCloud}", "AzureGermanCloud"),
        ("azure: {tokenExpirationSeconds: 100}", "azure.tokenExpirationSeconds"),
        ("azure: {tenantId: nope}", "azure.tenantId"),
        ("aws: {region: \"us west\"}", "aws.region"),
        (
            "aws: {containerCredentialsFullUri: \"169.254.170.23/v1/credentials\"}",
            "aws.containerCredentialsFullUri",
        ),
        ("aws: {accountId: \"12345\"}", "aws.accountId"),
        ("aws: {partition: gcp}", "aws.partition"),
        ("gcp: {workloadIdentityProvider: nope}", "gcp.workloadIdentityProvider"),
        ("gcp: {mode: cloudrun}", "cloudrun"),
        (
            "identities: [{aws: {mode: irsa}}]",
            "required unless mode is podIdentity",
        ),
        ("identities: [{aws: {mode: eksPodIdentity}}]", "eksPodIdentity"),
        (
            "identities: [{gcp: {serviceAccount: nope}}]",
            "identities[0].gcp.serviceAccount",
        ),
    ] {
        let err = Config::parse(yaml, &Default::default()).expect_err(yaml).to_string();
        assert!(err.contains(needle), "{yaml}: {err}");
    }
    assert!(matches!(
        Config::parse("azure: {tenantId: nope}", &Default::default()),
        Err(ConfigError::Invalid(_))
    ));
}

/// The apiserver sends `kind` and `operation` before `object` (Go's field order), and then the
/// object is decoded as it is parsed; the other tests' bodies have sorted keys, which put
/// `object` first and take the path that decodes it afterwards. Both must answer alike.
#[test]
fn a_review_in_the_apiservers_field_order_is_answered_like_one_with_sorted_keys() {
    let sa: ServiceAccount = typed(&irsa_sa());
    let answer = |review: &Review| {
        response_of(review, &review.mutation(Some(&sa), Labels::Unknown, &no_config()))["response"].clone()
    };
    for (kind, operation, object) in [
        ("Pod", "CREATE", pod(json!({}))),
        ("Pod", "CREATE", json!({"spec": {"containers": "not a list"}})),
        ("Pod", "CREATE", Value::Null),
        ("Pod", "DELETE", pod(json!({}))),
        ("ServiceAccount", "UPDATE", irsa_sa()),
    ] {
        let body = format!(
            r#"{{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{{"uid":"{UID}","kind":{{"group":"","version":"v1","kind":"{kind}"}},"namespace":"{NS}","operation":"{operation}","userInfo":{{"username":"u"}},"object":{object},"oldObject":null,"dryRun":false}}}}"#
        );
        let in_apiserver_order = Review::parse(body.as_bytes()).unwrap_or_else(|err| panic!("{err}"));
        let mut sorted = review_value(json!({"request": {"kind": {"kind": kind}, "operation": operation}}));
        sorted["request"]["object"] = object.clone();
        let sorted = Review::parse(&serde_json::to_vec(&sorted).expect("serializes")).expect("valid review");
        assert_eq!(
            answer(&in_apiserver_order),
            answer(&sorted),
            "{kind} {operation} {object}"
        );
        assert_eq!(
            format!("{:?}", in_apiserver_order.subject),
            format!("{:?}", sorted.subject),
            "{kind} {operation} {object}"
        );
    }
    let pod_review = format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"{UID}","kind":{{"group":"","version":"v1","kind":"Pod"}},"operation":"CREATE","object":{}}}}}"#,
        pod(json!({}))
    );
    let review = Review::parse(pod_review.as_bytes()).expect("valid review");
    assert!(
        answer(&review).get("patch").is_some(),
        "the Pod decoded in place gets its patch"
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile tenants and broken neighbours (issue 11)
// ---------------------------------------------------------------------------------------------

/// The answer to a Pod review with the given ServiceAccount, as bytes.
fn answer(pod: &Value, sa: &Value, config: &Config) -> Vec<u8> {
    let review = Review::parse(&pod_review(pod)).expect("review parses");
    let mutation = review.mutation(Some(&typed(sa)), Labels::Unknown, config);
    review.response(&mutation).expect("encodes")
}

fn pod_review(pod: &Value) -> Vec<u8> {
    review_body(json!({"request": {"object": pod}}))
}

#[test]
fn huge_tenant_values_are_echoed_cut_and_the_answer_stays_small() {
    let huge = "9".repeat(256 * 1024) + "x";
    let pod = pod(json!({"metadata": {"annotations": {
        "eks.amazonaws.com/token-expiration": huge,
        "azure.workload.identity/token-expiration": huge,
        "cloud.google.com/token-expiration": huge,
    }}}));
    let sa = sa(json!({
        "eks.amazonaws.com/role-arn": ROLE,
        "azure.workload.identity/client-id": huge,
        "azure.workload.identity/tenant-id": TENANT,
        "iam.gke.io/gcp-service-account": huge,
        "cloud.google.com/audience": huge,
    }));
    let mutation = webhook(&pod, NS, Some(&sa), &cluster());
    assert!(mutation.warnings.len() >= 3, "{:?}", mutation.warnings);
    for warning in &mutation.warnings {
        assert!(
            warning.len() < 256,
            "{} bytes: {}",
            warning.len(),
            &warning[..300.min(warning.len())]
        );
        assert!(warning.contains(&format!("…({} bytes)", huge.len())), "{warning}");
    }
    let answer = answer(&pod, &sa, &cluster());
    assert!(answer.len() < 8 * 1024, "answer of {} bytes", answer.len());

    // A ServiceAccount name from the Pod spec (not yet validated) is cut too.
    let missing = pod_named_sa(&huge);
    let mutation = mutate_pod(
        &typed(&missing),
        Namespace::named(NS),
        None,
        &config("identities: [{aws: {roleArn: \"arn:aws:iam::111122223333:role/r\"}}]"),
    );
    assert_eq!(mutation.warnings.len(), 1);
    assert!(mutation.warnings[0].len() < 256, "{}", mutation.warnings[0].len());
}

fn pod_named_sa(name: &str) -> Value {
    pod(json!({"spec": {"serviceAccountName": name}}))
}

#[test]
fn an_unreadable_pod_is_reported_without_quoting_its_strings() {
    let huge = "z".repeat(256 * 1024);
    let mut broken = pod(json!({}));
    broken["spec"]["containers"] = json!(huge);
    let review = Review::parse(&pod_review(&broken)).expect("the review itself is fine");
    let Subject::Unreadable(problem) = &review.subject else {
        panic!("expected an unreadable Pod, got {:?}", review.subject);
    };
    assert!(problem.len() < 400, "{} bytes", problem.len());
    assert!(problem.contains("invalid type: string"), "{problem}");
    let response = review
        .response(&review.mutation(None, Labels::Unknown, &no_config()))
        .expect("encodes");
    assert!(response.len() < 1024, "{} bytes", response.len());

    let not_json = [br#"{"apiVersion": ""#.as_slice(), huge.as_bytes(), b"\x01"].concat();
    let err = Review::parse(&not_json).unwrap_err();
    assert!(err.to_string().len() < 400, "{} bytes", err.to_string().len());
}

#[test]
fn a_long_pod_name_is_cut_for_the_logs() {
    let pod: Pod = typed(&pod(json!({"metadata": {"name": "é".repeat(1000)}})));
    assert_eq!(pod.metadata.display_name(), "é".repeat(126));
    let short: Pod = typed(&pod_named_sa("app"));
    assert_eq!(short.metadata.display_name(), "web");
}

#[test]
fn the_managed_list_names_only_keys_a_mapping_can_write() {
    // A tenant lists other annotations as managed: the webhook must not delete them.
    let tampered = sa(json!({
        "owner": "team-a",
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
        "eks.amazonaws.com/role-arn": ROLE,
        MANAGED_ANNOTATIONS: "owner,kubectl.kubernetes.io/last-applied-configuration,eks.amazonaws.com/role-arn",
    }));
    let (after, mutation) = run_sa(&tampered, &role_mapping("app"));
    assert_eq!(after["metadata"]["annotations"]["owner"], "team-a");
    assert_eq!(
        after["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        "{}"
    );
    assert!(
        !op_paths(&mutation)
            .iter()
            .any(|path| path.contains("owner") || path.contains("kubectl")),
        "{:?}",
        op_paths(&mutation)
    );
    // The mapping gone: only the role annotation (ours) goes.
    let (after, _) = run_sa(&tampered, &no_config());
    let annotations = after["metadata"]["annotations"].as_object().expect("annotations");
    assert!(
        annotations.contains_key("owner")
            && annotations.contains_key("kubectl.kubernetes.io/last-applied-configuration")
    );
    assert!(!annotations.contains_key("eks.amazonaws.com/role-arn"));
}

#[test]
fn every_provider_declares_the_service_account_keys_it_writes() {
    let mapping = full_mapping(&format!("{{roleArn: \"{ROLE}\"}}"));
    let mapping = mapping.mapping_for(NS, "app").expect("mapping");
    for provider in crate::providers::ALL {
        let written = provider.service_account_annotations(mapping);
        assert!(!written.is_empty(), "{}", provider.name());
        for (key, _) in written {
            assert!(provider.service_account_annotation_keys().contains(&key), "{key}");
        }
    }
}

#[test]
fn windows_pods_are_also_recognised_by_spec_os() {
    let windows = pod(json!({"spec": {"os": {"name": "windows"}}}));
    let out = run(&windows, &irsa_sa(), &no_config());
    assert_eq!(
        env_var(&out.pod, "app", "AWS_WEB_IDENTITY_TOKEN_FILE").as_deref(),
        Some(r"C:\var\run\secrets\eks.amazonaws.com\serviceaccount\token")
    );
    let linux = pod(json!({"spec": {"os": {"name": "linux"}}}));
    let out = run(&linux, &irsa_sa(), &no_config());
    assert_eq!(
        env_var(&out.pod, "app", "AWS_WEB_IDENTITY_TOKEN_FILE").as_deref(),
        Some(IRSA_TOKEN)
    );
}

#[test]
fn an_invalid_annotation_falls_back_to_the_mapping_on_every_cloud() {
    let mapping = config(&format!(
        "azure: {{tenantId: \"{TENANT}\"}}\ngcp: {{workloadIdentityProvider: \"{PROVIDER}\"}}\nidentities: [{{namespace: {NS}, serviceAccount: app, aws: {{roleArn: \"{ROLE}\"}}, gcp: {{serviceAccount: \"{GSA}\"}}, azure: {{clientId: \"{CLIENT}\"}}}}]"
    ));
    let broken = sa(json!({
        "eks.amazonaws.com/role-arn": "not-a-role",
        "iam.gke.io/gcp-service-account": "reader@example.com",
        "azure.workload.identity/client-id": "not-a-uuid",
    }));
    let out = run(&pod(json!({})), &broken, &mapping);
    let identities: BTreeMap<&str, &str> = out
        .mutation
        .identities
        .iter()
        .map(|(cloud, identity)| (*cloud, identity.as_str()))
        .collect();
    assert_eq!(
        identities,
        BTreeMap::from([("aws", ROLE), ("gcp", GSA), ("azure", CLIENT)])
    );
    assert_eq!(gcp_credentials(&out.pod), expected_gcp_credentials(PROVIDER, Some(GSA)));
    for key in [
        "eks.amazonaws.com/role-arn",
        "iam.gke.io/gcp-service-account",
        "azure.workload.identity/client-id",
    ] {
        assert!(out.warned(key), "{key}: {:?}", out.mutation.warnings);
    }
}

#[test]
fn skip_lists_naming_every_container_add_no_volume_and_no_annotation() {
    let every = json!({
        "eks.amazonaws.com/skip-containers": "app,sidecar,init",
        "cloud.google.com/skip-containers": "app, sidecar, init",
        "azure.workload.identity/skip-containers": "app;sidecar;init",
    });
    let out = all_clouds_with_skips(every);
    out.assert_untouched();
    assert!(out.mutation.warnings.is_empty(), "{:?}", out.mutation.warnings);

    // Google alone skipped everywhere: the others are injected, Google leaves no trace.
    let out = all_clouds_with_skips(json!({"cloud.google.com/skip-containers": "app,sidecar,init"}));
    assert_no_cloud_at_all(&out.pod, &GCP);
    assert_eq!(annotation(&out.pod, GCP_ANNOTATION), None);
    assert_has(&out.pod, "app", &IRSA);
    assert_has(&out.pod, "init", &AZURE);
    assert!(!out.mutation.identities.iter().any(|(cloud, _)| *cloud == "gcp"));
}

/// Each warning names the cloud it is about (the metrics count them by cloud), in step with the
/// warnings, whichever step of the mutation made it.
#[test]
fn warnings_are_tagged_with_their_cloud() {
    let both_invalid =
        sa(json!({"eks.amazonaws.com/role-arn": "my-role", "azure.workload.identity/client-id": "nope"}));
    let out = webhook(&pod(json!({})), NS, Some(&both_invalid), &no_config());
    assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
    assert_eq!(out.warning_clouds, ["aws", "azure"], "{:?}", out.warnings);

    // A warning of the patch step (a container that mounts something else at the token's path)
    // and one about the Pod as a whole (no such ServiceAccount) are tagged too.
    let conflicting = pod(json!({"spec": {"containers": [
        {"name": "app", "image": "app:1"},
        {"name": "other", "image": "app:1", "volumeMounts": [{"name": "mine", "mountPath": IRSA_MOUNT}]},
    ], "volumes": [{"name": "mine", "emptyDir": {}}]}}));
    let out = webhook(&conflicting, NS, Some(&irsa_sa()), &cluster());
    assert!(
        out.warnings.iter().any(|w| w.contains("mounts another volume")),
        "{:?}",
        out.warnings
    );
    assert_eq!(out.warning_clouds.len(), out.warnings.len());
    assert!(
        out.warning_clouds.iter().all(|cloud| *cloud == "aws"),
        "{:?}",
        out.warning_clouds
    );
    let mapped = config(&format!(
        "identities:\n  - namespace: {NS}\n    serviceAccount: app\n    aws: {{roleArn: \"{ROLE}\"}}\n"
    ));
    let out = webhook(&pod(json!({})), NS, None, &mapped);
    assert_eq!(out.warning_clouds, ["none"], "{:?}", out.warnings);
}

/// A Pod's `serviceAccountName` reaches the webhook before the apiserver validates it: the warning
/// that echoes it shows its terminal escapes (CSI, OSC 52 with BEL), bidi override, DEL, C1 CSI
/// and newline escaped, so `kubectl` cannot be made to recolour, forge a line or set the clipboard.
#[test]
fn a_warning_shows_the_control_characters_of_a_tenants_value_escaped() {
    let hostile = "a\x1b[2K\x1b]52;c;aGk=\x07b\u{202e}c\x7fd\u{9b}31me\nwarning: up to date";
    let config = config(&format!(
        "identities: [{{namespace: {NS}, serviceAccount: \"*\", aws: {{roleArn: \"{ROLE}\"}}}}]"
    ));
    let review = parse(json!({"request": {"object": pod(json!({"spec": {"serviceAccountName": hostile}}))}}));
    let response = response_of(&review, &review.mutation(None, Labels::Unknown, &config));
    let warnings: Vec<String> = serde_json::from_value(response["response"]["warnings"].clone()).expect("warnings");
    let warning = warnings
        .iter()
        .find(|warning| warning.contains("does not exist"))
        .unwrap_or_else(|| panic!("{warnings:?}"));
    assert!(
        warning.contains(r"a\u{1b}[2K\u{1b}]52;c;aGk=\u{7}b\u{202e}c\u{7f}d\u{9b}31me\u{a}warning: up to date"),
        "{warning}"
    );
    assert!(
        !warning.contains(|c: char| c.is_control() || c == '\u{202e}'),
        "{warning:?}"
    );
}

/// `clusterDomain` (file or flag) decides which Service names plain http may go to, for every
/// endpoint override: `*.svc.<clusterDomain>`, never `*.svc.cluster.local` then, nor a name that
/// only contains `.svc.`; a domain that is not a DNS name is refused.
#[test]
fn the_cluster_domain_setting_decides_which_service_names_take_plain_http() {
    use crate::providers::Settings;
    let proxy = |url: &str| {
        format!(
            "azure: {{tenantId: \"{TENANT}\", customTokenEndpointAnnotationSuffix: ib, customTokenEndpointAudience: api://ib, kubernetesTokenProxy: \"{url}\"}}"
        )
    };
    let fields = |url: &str| {
        [
            format!("aws: {{stsEndpoint: \"{url}\"}}"),
            format!("aws: {{endpoint: \"{url}\"}}"),
            format!("gcp: {{tokenUrl: \"{url}\"}}"),
            format!("gcp: {{impersonationEndpoint: \"{url}\"}}"),
            format!("identities: [{{aws: {{roleArn: \"{ROLE}\", stsEndpoint: \"{url}\"}}}}]"),
            format!("identities: [{{gcp: {{serviceAccount: a@p.iam.gserviceaccount.com, tokenUrl: \"{url}\"}}}}]"),
            proxy(url),
        ]
    };
    let corp = Settings {
        cluster_domain: Some("corp.example".to_owned()),
        ..Settings::default()
    };
    for (url, in_default, in_corp) in [
        ("http://emulator.wiw-system.svc.cluster.local/", true, false),
        ("http://emulator.wiw-system.svc.corp.example/", false, true),
        ("http://emulator.wiw-system.svc/", true, true),
        ("http://sts.svc.attacker.example/", false, false),
        ("http://sts.svc.corp.example.attacker.example/", false, false),
    ] {
        for yaml in fields(url) {
            let file = format!("clusterDomain: corp.example\n{yaml}");
            for (text, flags, accepted) in [
                (yaml.as_str(), &Settings::default(), in_default),
                (yaml.as_str(), &corp, in_corp),
                (file.as_str(), &Settings::default(), in_corp),
            ] {
                let parsed = Config::parse(text, flags);
                assert_eq!(
                    parsed.is_ok(),
                    accepted,
                    "{text} (flag {:?}): {parsed:?}",
                    flags.cluster_domain
                );
                if let Err(err) = parsed {
                    assert!(err.to_string().contains("*.svc.<clusterDomain>"), "{err}");
                }
            }
        }
    }
    let err = Config::parse("clusterDomain: \"Corp Example\"", &Settings::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("clusterDomain: \"Corp Example\" is not a valid DNS domain"),
        "{err}"
    );
    assert_eq!(
        Config::from_defaults(&corp).unwrap().settings.cluster_domain(),
        "corp.example"
    );
    assert_eq!(
        Config::from_defaults(&Settings::default())
            .unwrap()
            .settings
            .cluster_domain(),
        "cluster.local"
    );
}

mod per_container;
