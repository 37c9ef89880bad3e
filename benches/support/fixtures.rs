//! Inputs shared by the benchmarks: AdmissionReviews shaped like the ones kube-apiserver sends
//! (managedFields, the projected `kube-api-access` volume, default tolerations, userInfo, ...), the
//! identity configuration they are admitted under, and large mapping lists with wildcards.
#![allow(dead_code)]

use serde_json::{Value, json};

/// The namespace and ServiceAccount that the small configuration maps to an AWS role.
pub const MAPPED_NAMESPACE: &str = "team-a";
pub const MAPPED_SERVICE_ACCOUNT: &str = "app";
/// Mapped to all three clouds.
pub const MULTI_CLOUD_SERVICE_ACCOUNT: &str = "multi";

/// The configuration the scenarios run under: cluster settings for three clouds and a few mappings.
pub const SMALL_CONFIG: &str = r#"
aws:
  region: us-west-2
  stsRegionalEndpoints: true
gcp:
  workloadIdentityProvider: projects/123456789/locations/global/workloadIdentityPools/my-pool/providers/my-provider
azure:
  tenantId: 11111111-2222-3333-4444-555555555555
  cloud: AzurePublicCloud
identities:
  - namespace: team-a
    serviceAccount: app
    aws: {roleArn: "arn:aws:iam::111122223333:role/app"}
  - namespace: team-a
    serviceAccount: multi
    aws: {roleArn: "arn:aws:iam::111122223333:role/multi"}
    gcp: {serviceAccount: multi@my-project.iam.gserviceaccount.com}
    azure: {clientId: 00000000-1111-2222-3333-444444444444}
  - namespace: team-a
    serviceAccount: pod-identity
    aws: {mode: podIdentity}
  - namespace: analytics
    serviceAccount: "*"
    gcp: {serviceAccount: reader@my-project.iam.gserviceaccount.com}
"#;

/// A `config.yaml` with `count` (>= 10) mappings: 80% exact, 10% any-ServiceAccount in a
/// namespace, 10% one ServiceAccount name in any namespace, no catch-all. `team-a/app` is the LAST entry, so a
/// linear scan would pay for the whole list.
pub fn many_mappings_config(count: usize) -> String {
    let mut yaml = String::with_capacity(count * 90 + 1024);
    yaml.push_str(
        "aws: {region: us-west-2, stsRegionalEndpoints: true}\n\
         gcp: {workloadIdentityProvider: projects/123456789/locations/global/workloadIdentityPools/my-pool/providers/my-provider}\n\
         azure: {tenantId: 11111111-2222-3333-4444-555555555555}\nidentities:\n",
    );
    for i in 0..count.saturating_sub(1) {
        let (namespace, service_account) = match i % 10 {
            3 => (format!("ns-{i}"), "\"*\"".to_owned()),
            6 => ("\"*\"".to_owned(), format!("sa-{i}")),
            _ => (format!("ns-{i}"), format!("sa-{i}")),
        };
        yaml.push_str(&format!(
            "  - {{namespace: {namespace}, serviceAccount: {service_account}, aws: {{roleArn: \"arn:aws:iam::111122223333:role/r{i}\"}}}}\n"
        ));
    }
    yaml.push_str(
        "  - {namespace: team-a, serviceAccount: app, aws: {roleArn: \"arn:aws:iam::111122223333:role/app\"}}\n",
    );
    yaml
}

/// Look-up keys for a config from [`many_mappings_config`]: `(label, namespace, serviceAccount, hit)`.
pub fn lookup_keys(count: usize) -> Vec<(&'static str, String, String, bool)> {
    // Pick entries from the middle of the list for each kind of match.
    let middle = (count / 2) / 10 * 10;
    vec![
        (
            "exact-last",
            MAPPED_NAMESPACE.into(),
            MAPPED_SERVICE_ACCOUNT.into(),
            true,
        ),
        ("exact-middle", format!("ns-{middle}"), format!("sa-{middle}"), true),
        ("any-sa", format!("ns-{}", middle + 3), "whatever".into(), true),
        ("any-ns", "elsewhere".into(), format!("sa-{}", middle + 6), true),
        ("miss", "nowhere".into(), "nobody".into(), false),
    ]
}

fn container(name: &str, index: usize) -> Value {
    json!({
        "name": name,
        "image": format!("registry.example.com/team-a/{name}:1.{index}.0"),
        "command": ["/bin/app"],
        "args": ["--listen=:8080", "--log-format=json"],
        "ports": [{"name": "http", "containerPort": 8080 + index, "protocol": "TCP"}],
        "env": [
            {"name": "APP_MODE", "value": "production"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}
        ],
        "resources": {"limits": {"memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
        "volumeMounts": [
            {"name": "kube-api-access-x7k2p", "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
        ],
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
        "securityContext": {"allowPrivilegeEscalation": false, "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}}
    })
}

/// A Pod as a Deployment's ReplicaSet creates it, after the apiserver's defaulting and built-in
/// admission (projected token volume, tolerations, managedFields).
pub fn pod(namespace: &str, service_account: &str, containers: usize, init_containers: usize) -> Value {
    let container_list: Vec<Value> = (0..containers).map(|i| container(&format!("app-{i}"), i)).collect();
    let init_list: Vec<Value> = (0..init_containers)
        .map(|i| container(&format!("init-{i}"), i))
        .collect();
    let mut spec = json!({
        "volumes": [{
            "name": "kube-api-access-x7k2p",
            "projected": {"sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ], "defaultMode": 420}
        }],
        "containers": container_list,
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": service_account,
        "serviceAccount": service_account,
        "securityContext": {"fsGroup": 2000},
        "schedulerName": "default-scheduler",
        "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        ],
        "priority": 0,
        "enableServiceLinks": true,
        "preemptionPolicy": "PreemptLowerPriority"
    });
    if init_containers > 0 {
        spec["initContainers"] = Value::Array(init_list);
    }
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "generateName": "app-7d4b9c8f6d-",
            "namespace": namespace,
            "creationTimestamp": null,
            "labels": {"app.kubernetes.io/name": "app", "pod-template-hash": "7d4b9c8f6d"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "app-7d4b9c8f6d", "uid": "3c1f2a4e-5b6d-4e7f-8a9b-0c1d2e3f4a5b", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [{
                "manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                "time": "2025-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app.kubernetes.io/name": {}, "f:pod-template-hash": {}}, "f:ownerReferences": {".": {}, "k:{\"uid\":\"3c1f2a4e-5b6d-4e7f-8a9b-0c1d2e3f4a5b\"}": {}}}, "f:spec": {"f:containers": {}, "f:dnsPolicy": {}, "f:enableServiceLinks": {}, "f:restartPolicy": {}, "f:schedulerName": {}, "f:securityContext": {}, "f:terminationGracePeriodSeconds": {}}}
            }]
        },
        "spec": spec,
        "status": {}
    })
}

pub fn service_account(namespace: &str, name: &str) -> Value {
    json!({
        "kind": "ServiceAccount",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": null,
            "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "Helm"},
            "annotations": {"meta.helm.sh/release-name": name, "meta.helm.sh/release-namespace": namespace},
            "managedFields": [{
                "manager": "helm", "operation": "Update", "apiVersion": "v1",
                "time": "2025-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:meta.helm.sh/release-name": {}, "f:meta.helm.sh/release-namespace": {}}, "f:labels": {".": {}, "f:app.kubernetes.io/managed-by": {}, "f:app.kubernetes.io/name": {}}}}
            }]
        }
    })
}

/// An AdmissionReview v1 request for a CREATE of `object` in `namespace`, with its fields in the
/// order kube-apiserver writes them (Go's struct order: `kind` and `operation` before `object`),
/// which `json!` would sort away.
pub fn review(uid: &str, namespace: &str, object: Value) -> Vec<u8> {
    let kind = object["kind"].as_str().unwrap_or("Pod").to_owned();
    let resource = if kind == "Pod" { "pods" } else { "serviceaccounts" };
    let kind = json!({"group": "", "version": "v1", "kind": kind});
    let resource = json!({"group": "", "version": "v1", "resource": resource});
    let user_info = json!({
        "username": "system:serviceaccount:kube-system:replicaset-controller",
        "uid": "8e6f0d4c-1a2b-4c3d-9e8f-7a6b5c4d3e2f",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]
    });
    let uid = Value::from(uid);
    let namespace = Value::from(namespace);
    format!(
        r#"{{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{{"uid":{uid},"kind":{kind},"resource":{resource},"requestKind":{kind},"requestResource":{resource},"namespace":{namespace},"operation":"CREATE","userInfo":{user_info},"object":{object},"oldObject":null,"dryRun":false,"options":{{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1"}}}}}}"#
    )
    .into_bytes()
}

/// One benchmark scenario: a request body and what its answer must look like.
pub struct Scenario {
    pub name: &'static str,
    pub body: Vec<u8>,
    /// Whether the answer carries a patch.
    pub patched: bool,
    /// Whether the object is a Pod (its ServiceAccount is looked up).
    pub pod: bool,
}

const UID: &str = "705ab4f5-6393-11e8-b7cc-42010a800002";

fn scenario(name: &'static str, namespace: &str, object: Value, patched: bool) -> Scenario {
    let pod = object["kind"] == "Pod";
    Scenario {
        name,
        body: review(UID, namespace, object),
        patched,
        pod,
    }
}

/// The scenarios of the issue, in table order.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario(
            "pod-1-container",
            MAPPED_NAMESPACE,
            pod(MAPPED_NAMESPACE, MAPPED_SERVICE_ACCOUNT, 1, 0),
            true,
        ),
        scenario(
            "pod-10-containers+2-init",
            MAPPED_NAMESPACE,
            pod(MAPPED_NAMESPACE, MAPPED_SERVICE_ACCOUNT, 10, 2),
            true,
        ),
        scenario(
            "service-account",
            MAPPED_NAMESPACE,
            service_account(MAPPED_NAMESPACE, MAPPED_SERVICE_ACCOUNT),
            true,
        ),
        scenario("pod-no-identity", "other", pod("other", "default", 1, 0), false),
    ]
}

/// Scenarios only the core benchmark runs.
pub fn core_only_scenarios() -> Vec<Scenario> {
    vec![
        scenario(
            "pod-50-containers",
            MAPPED_NAMESPACE,
            pod(MAPPED_NAMESPACE, MAPPED_SERVICE_ACCOUNT, 50, 0),
            true,
        ),
        scenario(
            "pod-1-container-3-clouds",
            MAPPED_NAMESPACE,
            pod(MAPPED_NAMESPACE, MULTI_CLOUD_SERVICE_ACCOUNT, 1, 0),
            true,
        ),
    ]
}

pub fn scenario_named(name: &str) -> Option<Scenario> {
    scenarios()
        .into_iter()
        .chain(core_only_scenarios())
        .find(|scenario| scenario.name == name)
}
