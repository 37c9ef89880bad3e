//! The whole admission chain against a real kube-apiserver and etcd: the apiserver calls the
//! webhook over TLS, applies its patch, validates the result and stores it. Every assertion reads
//! the object back from the apiserver.

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/sidecar_injector.rs"]
mod sidecar_injector;
#[path = "support/webhook.rs"]
mod webhook;

use std::time::Duration;

use cluster::{Install, Options, install, pod_json};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::PostParams;
use serde_json::{Value, json};

const ROLE: &str = "arn:aws:iam::111122223333:role/app";
const CLIENT_ID: &str = "00000000-1111-2222-3333-444444444444";
const TENANT_ID: &str = "11111111-2222-3333-4444-555555555555";
const GSA: &str = "app@my-project.iam.gserviceaccount.com";
const PROVIDER: &str = "projects/123456789/locations/global/workloadIdentityPools/pool-1/providers/provider-1";

fn settings() -> String {
    format!(
        "aws: {{region: us-west-2}}\ngcp: {{workloadIdentityProvider: {PROVIDER}}}\nazure: {{tenantId: {TENANT_ID}}}\n"
    )
}

fn env_value(container: &Container, name: &str) -> Option<String> {
    container
        .env
        .iter()
        .flatten()
        .find(|env| env.name == name)
        .and_then(|env| env.value.clone())
}

fn env_count(container: &Container, name: &str) -> usize {
    container.env.iter().flatten().filter(|env| env.name == name).count()
}

fn volume_names(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .flatten()
        .map(|volume| volume.name.clone())
        .collect()
}

fn mount_paths(container: &Container) -> Vec<String> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|mount| mount.mount_path.clone())
        .collect()
}

fn containers(pod: &Pod) -> Vec<&Container> {
    let spec = pod.spec.as_ref().unwrap();
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect()
}

async fn with_settings() -> Install {
    install(Options {
        config: &settings(),
        ..Options::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cloud_alone_and_all_three_at_once() {
    let cluster = with_settings().await;
    cluster
        .create_service_account("aws", json!({"eks.amazonaws.com/role-arn": ROLE}))
        .await;
    cluster
        .create_service_account("gcp", json!({"iam.gke.io/gcp-service-account": GSA}))
        .await;
    cluster
        .create_service_account("azure", json!({"azure.workload.identity/client-id": CLIENT_ID}))
        .await;
    cluster
        .create_service_account(
            "all",
            json!({"eks.amazonaws.com/role-arn": ROLE, "iam.gke.io/gcp-service-account": GSA, "azure.workload.identity/client-id": CLIENT_ID}),
        )
        .await;

    let aws = cluster.create_pod(pod_json("aws", "aws")).await;
    assert_eq!(volume_names(&aws), ["aws-iam-token"]);
    let app = containers(&aws)[0];
    assert_eq!(env_value(app, "AWS_ROLE_ARN").as_deref(), Some(ROLE));
    assert_eq!(
        env_value(app, "AWS_WEB_IDENTITY_TOKEN_FILE").as_deref(),
        Some("/var/run/secrets/eks.amazonaws.com/serviceaccount/token")
    );
    assert_eq!(env_value(app, "AWS_REGION").as_deref(), Some("us-west-2"));
    let token = aws.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0]
        .projected
        .as_ref()
        .unwrap()
        .sources
        .as_ref()
        .unwrap()[0]
        .service_account_token
        .clone()
        .unwrap();
    assert_eq!(token.audience.as_deref(), Some("sts.amazonaws.com"));
    assert_eq!(token.expiration_seconds, Some(86400));

    let gcp = cluster.create_pod(pod_json("gcp", "gcp")).await;
    // The token and gcloud's writable config directory (an emptyDir).
    assert_eq!(volume_names(&gcp), ["gcp-workload-identity", "gcp-gcloud-config"]);
    // The apiserver accepted the Downward API projection of our annotation, and stored both.
    let sources = gcp.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0]
        .projected
        .as_ref()
        .unwrap()
        .sources
        .clone()
        .unwrap();
    let field_path = &sources[1].downward_api.as_ref().unwrap().items.as_ref().unwrap()[0]
        .field_ref
        .as_ref()
        .unwrap()
        .field_path;
    assert_eq!(
        field_path,
        "metadata.annotations['cloud.google.com/external-credentials-json']"
    );
    let credentials: Value =
        serde_json::from_str(&gcp.metadata.annotations.as_ref().unwrap()["cloud.google.com/external-credentials-json"])
            .unwrap();
    assert_eq!(credentials["audience"], format!("//iam.googleapis.com/{PROVIDER}"));
    assert!(
        credentials["service_account_impersonation_url"]
            .as_str()
            .unwrap()
            .contains(GSA)
    );
    assert!(
        env_value(containers(&gcp)[0], "GOOGLE_APPLICATION_CREDENTIALS")
            .unwrap()
            .ends_with("credential-configuration.json")
    );

    let azure = cluster.create_pod(pod_json("azure", "azure")).await;
    assert_eq!(volume_names(&azure), ["azure-identity-token"]);
    assert_eq!(
        env_value(containers(&azure)[0], "AZURE_CLIENT_ID").as_deref(),
        Some(CLIENT_ID)
    );
    assert_eq!(
        env_value(containers(&azure)[0], "AZURE_TENANT_ID").as_deref(),
        Some(TENANT_ID)
    );

    let mut all = pod_json("all", "all");
    all["spec"]["initContainers"] = json!([{"name": "init", "image": "registry.example/init:1"}]);
    let all = cluster.create_pod(all).await;
    assert_eq!(
        volume_names(&all),
        [
            "aws-iam-token",
            "gcp-workload-identity",
            "gcp-gcloud-config",
            "azure-identity-token"
        ]
    );
    for container in containers(&all) {
        for name in [
            "AWS_ROLE_ARN",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "CLOUDSDK_CONFIG",
            "AZURE_CLIENT_ID",
        ] {
            assert_eq!(env_count(container, name), 1, "{name} in {}", container.name);
        }
        assert_eq!(mount_paths(container).len(), 4, "mounts of {}", container.name);
    }
    cluster.uninstall().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_lists_existing_env_and_generate_name() {
    let cluster = with_settings().await;
    cluster
        .create_service_account("app", json!({"eks.amazonaws.com/role-arn": ROLE}))
        .await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "app-", "annotations": {"eks.amazonaws.com/skip-containers": "sidecar"}},
        "spec": {"serviceAccountName": "app", "containers": [
            {"name": "app", "image": "registry.example/app:1", "env": [{"name": "AWS_ROLE_ARN", "value": "mine"}]},
            {"name": "sidecar", "image": "registry.example/sidecar:1"}]}});
    let stored = cluster.create_pod(pod).await;
    assert!(stored.metadata.name.as_deref().unwrap().starts_with("app-"));
    let spec = stored.spec.as_ref().unwrap();
    let (app, sidecar) = (&spec.containers[0], &spec.containers[1]);
    assert_eq!(
        env_value(app, "AWS_ROLE_ARN").as_deref(),
        Some("mine"),
        "a container's own value is kept"
    );
    assert_eq!(env_count(app, "AWS_WEB_IDENTITY_TOKEN_FILE"), 0, "pairs go together");
    assert_eq!(env_value(app, "AWS_REGION").as_deref(), Some("us-west-2"));
    assert!(
        sidecar.env.is_none() && sidecar.volume_mounts.is_none(),
        "skipped container untouched"
    );
    cluster.uninstall().await;
}

/// Identities per container, as the apiserver validates and stores them: two AWS roles sharing one
/// token volume, two Google credential files in one volume, a native sidecar, and a container that
/// the Pod's opt-in list leaves without anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_per_container() {
    const PROXY_ROLE: &str = "arn:aws:iam::111122223333:role/proxy";
    const PROXY_GSA: &str = "proxy@my-project.iam.gserviceaccount.com";
    let config = format!(
        "{}identities:
  - {{namespace: \"*\", serviceAccount: split, containers: [app], aws: {{roleArn: \"{ROLE}\"}}}}
  - {{namespace: \"*\", serviceAccount: split, containers: [proxy], aws: {{roleArn: \"{PROXY_ROLE}\"}}}}
  - {{namespace: \"*\", serviceAccount: split, gcp: {{serviceAccount: \"{GSA}\"}}}}
  - {{namespace: \"*\", serviceAccount: split, containers: [proxy], gcp: {{serviceAccount: \"{PROXY_GSA}\"}}}}
",
        settings()
    );
    let cluster = install(Options {
        config: &config,
        ..Options::default()
    })
    .await;
    cluster.create_service_account("split", json!({})).await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "split", "annotations": {"workload-identity.dev/containers": "app,proxy"}},
        "spec": {"serviceAccountName": "split",
            "initContainers": [{"name": "proxy", "image": "registry.example/proxy:1", "restartPolicy": "Always"}],
            "containers": [{"name": "app", "image": "registry.example/app:1"},
                           {"name": "log", "image": "registry.example/log:1"}]}});
    let stored = cluster.create_pod(pod).await;
    let by_name = |name: &str| *containers(&stored).iter().find(|c| c.name == name).unwrap();
    let (app, log, proxy) = (by_name("app"), by_name("log"), by_name("proxy"));
    assert_eq!(env_value(app, "AWS_ROLE_ARN").as_deref(), Some(ROLE));
    assert_eq!(env_value(proxy, "AWS_ROLE_ARN").as_deref(), Some(PROXY_ROLE));
    let files = "/var/run/secrets/sts.googleapis.com/serviceaccount";
    assert_eq!(
        env_value(app, "GOOGLE_APPLICATION_CREDENTIALS"),
        Some(format!("{files}/credential-configuration.json"))
    );
    assert_eq!(
        env_value(proxy, "GOOGLE_APPLICATION_CREDENTIALS"),
        Some(format!("{files}/credential-configuration-3.json"))
    );
    assert!(
        log.env.is_none() && log.volume_mounts.is_none(),
        "log is outside the opt-in list"
    );
    let volumes = volume_names(&stored);
    for name in ["aws-iam-token", "gcp-workload-identity"] {
        assert_eq!(
            volumes.iter().filter(|volume| *volume == name).count(),
            1,
            "{volumes:?}"
        );
    }
    let annotations = stored.metadata.annotations.as_ref().unwrap();
    let impersonates = |key: &str, gsa: &str| annotations[key].contains(&format!("serviceAccounts/{gsa}:"));
    assert!(impersonates("cloud.google.com/external-credentials-json", GSA));
    assert!(impersonates("cloud.google.com/external-credentials-json-3", PROXY_GSA));
    cluster.uninstall().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mappings_annotate_service_accounts_and_edits_apply_without_restart() {
    let cluster = with_settings().await;
    let mapping = |role: &str| {
        format!(
            "{}identities:\n  - {{namespace: \"*\", serviceAccount: mapped, aws: {{roleArn: \"{role}\"}}}}\n",
            settings()
        )
    };
    let first = "arn:aws:iam::111122223333:role/first";
    let second = "arn:aws:iam::111122223333:role/second";
    cluster.set_config(&mapping(first)).await;
    webhook::eventually(Duration::from_secs(20), "the mapping to load", || async {
        cluster
            .metrics()
            .await
            .contains("workload_identity_webhook_config_mappings 1")
    })
    .await;

    let sa = cluster.create_service_account("mapped", json!({})).await;
    assert_eq!(
        sa.metadata.annotations.as_ref().unwrap()["eks.amazonaws.com/role-arn"],
        first
    );
    let pod = cluster.create_pod(pod_json("first", "mapped")).await;
    assert_eq!(
        env_value(containers(&pod)[0], "AWS_ROLE_ARN").as_deref(),
        Some(first),
        "the annotation written by the mapping"
    );

    // A Pod of a ServiceAccount without annotations still gets the mapping's identity.
    let plain: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "mapped-later"}})).unwrap();
    cluster
        .service_accounts()
        .create(&PostParams::default(), &plain)
        .await
        .unwrap();
    cluster
        .set_config(&mapping(second).replace("serviceAccount: mapped", "serviceAccount: mapped-later"))
        .await;
    let mut n = 0;
    let cluster_ref = &cluster;
    webhook::eventually(Duration::from_secs(20), "the edited mapping to apply", || {
        n += 1;
        let name = format!("later-{n}");
        let cluster = cluster_ref;
        async move {
            let pod = cluster.create_pod(pod_json(&name, "mapped-later")).await;
            env_value(containers(&pod)[0], "AWS_ROLE_ARN").as_deref() == Some(second)
        }
    })
    .await;

    cluster.set_config("identities: [{aws: {roleArn: broken}}]").await;
    webhook::eventually(Duration::from_secs(20), "the broken edit to be refused", || async {
        cluster
            .metrics()
            .await
            .contains(r#"config_reloads_total{result="failure"} 1"#)
    })
    .await;
    let pod = cluster.create_pod(pod_json("after-broken", "mapped-later")).await;
    assert_eq!(
        env_value(containers(&pod)[0], "AWS_ROLE_ARN").as_deref(),
        Some(second),
        "the last good mapping stays"
    );
    cluster.uninstall().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinvocation_leaves_exactly_one_copy() {
    // Two webhooks that both mutate the Pod: each change by one makes the apiserver call the other again.
    let first = with_settings().await;
    first
        .create_service_account("app", json!({"eks.amazonaws.com/role-arn": ROLE}))
        .await;
    let second_config = format!(
        "{}identities: [{{namespace: \"*\", serviceAccount: app, azure: {{clientId: {CLIENT_ID}}}}}]\n",
        settings()
    );
    let mut second = webhook::Webhook::start(
        &[
            &format!("--namespace={}", first.system_namespace),
            "--config-file={dir}/config.yaml",
        ],
        &[(
            "KUBECONFIG",
            control_plane::shared().await.kubeconfig_path().to_str().unwrap(),
        )],
        &[("config.yaml", &second_config)],
    );
    second.wait_ready().await;
    let second_name = format!("{}-second", first.configuration);
    cluster::register(
        &first.client,
        &second_name,
        &second,
        &[&first.namespace],
        "Fail",
        Vec::new(),
    )
    .await;
    let mut n = 0;
    webhook::eventually(Duration::from_secs(30), "both webhooks to mutate one Pod", || {
        n += 1;
        let name = format!("both-{n}");
        let first = &first;
        async move { volume_names(&first.create_pod(pod_json(&name, "app")).await).len() == 2 }
    })
    .await;
    let pod = first.create_pod(pod_json("final", "app")).await;
    let mut volumes = volume_names(&pod);
    volumes.sort();
    assert_eq!(volumes, ["aws-iam-token", "azure-identity-token"]);
    for name in [
        "AWS_ROLE_ARN",
        "AWS_REGION",
        "AZURE_CLIENT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
    ] {
        assert_eq!(env_count(containers(&pod)[0], name), 1, "{name}");
    }
    assert_eq!(mount_paths(containers(&pod)[0]).len(), 2);
    let _ = kube::Api::<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration>::all(
        first.client.clone(),
    )
    .delete(&second_name, &Default::default())
    .await;
    first.uninstall().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_another_webhook_adds_gets_its_identities_on_reinvocation() {
    const PROXY_ROLE: &str = "arn:aws:iam::111122223333:role/proxy";
    const PROXY_CLIENT_ID: &str = "99999999-1111-2222-3333-444444444444";
    const PROXY_GSA: &str = "proxy@my-project.iam.gserviceaccount.com";
    let config = format!(
        "{}identities:\n  - {{namespace: \"*\", serviceAccount: app, aws: {{roleArn: \"{ROLE}\"}}, gcp: {{serviceAccount: {GSA}}}, azure: {{clientId: {CLIENT_ID}}}}}\n  - {{namespace: \"*\", serviceAccount: app, containers: [proxy], aws: {{roleArn: \"{PROXY_ROLE}\"}}, gcp: {{serviceAccount: {PROXY_GSA}}}, azure: {{clientId: {PROXY_CLIENT_ID}}}}}\n",
        settings()
    );
    let cluster = install(Options {
        config: &config,
        ..Options::default()
    })
    .await;
    cluster.create_service_account("app", json!({})).await;
    let injector = sidecar_injector::SidecarInjector::start().await;
    // Webhooks are called in the order of their configurations' names: ours first, without the
    // sidecar; its addition makes the apiserver call ours again.
    let injector_name = format!("{}-sidecar", cluster.configuration);
    cluster::register_client_config(
        &cluster.client,
        &injector_name,
        injector.client_config(),
        &[&cluster.namespace],
        "Fail",
        Vec::new(),
    )
    .await;
    let mut n = 0;
    let cluster_ref = &cluster;
    webhook::eventually(Duration::from_secs(30), "the injector to add its sidecar", || {
        n += 1;
        let name = format!("meshed-{n}");
        async move { containers(&cluster_ref.create_pod(pod_json(&name, "app")).await).len() == 2 }
    })
    .await;
    let pod = cluster.create_pod(pod_json("final", "app")).await;

    let mut volumes = volume_names(&pod);
    volumes.sort();
    assert_eq!(
        volumes,
        [
            "aws-iam-token",
            "azure-identity-token",
            "gcp-gcloud-config",
            "gcp-workload-identity"
        ]
    );
    let (app, proxy) = (containers(&pod)[0], containers(&pod)[1]);
    assert_eq!(proxy.name, sidecar_injector::SIDECAR);
    let google_file = |name: &str| format!("/var/run/secrets/sts.googleapis.com/serviceaccount/{name}");
    for (container, role, client_id, credentials) in [
        (app, ROLE, CLIENT_ID, google_file("credential-configuration.json")),
        (
            proxy,
            PROXY_ROLE,
            PROXY_CLIENT_ID,
            google_file("credential-configuration-1.json"),
        ),
    ] {
        let name = &container.name;
        assert_eq!(env_value(container, "AWS_ROLE_ARN").as_deref(), Some(role), "{name}");
        assert_eq!(
            env_value(container, "AZURE_CLIENT_ID").as_deref(),
            Some(client_id),
            "{name}"
        );
        assert_eq!(
            env_value(container, "GOOGLE_APPLICATION_CREDENTIALS"),
            Some(credentials),
            "{name}"
        );
        for var in [
            "AWS_ROLE_ARN",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AZURE_CLIENT_ID",
            "AZURE_FEDERATED_TOKEN_FILE",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "CLOUDSDK_CONFIG",
        ] {
            assert_eq!(env_count(container, var), 1, "{name} {var}");
        }
        let mut mounts = mount_paths(container);
        mounts.sort();
        assert_eq!(
            mounts,
            [
                "/var/run/secrets/azure/tokens",
                "/var/run/secrets/eks.amazonaws.com/serviceaccount",
                "/var/run/secrets/sts.googleapis.com/gcloud-config",
                "/var/run/secrets/sts.googleapis.com/serviceaccount",
            ],
            "{name}"
        );
    }
    // The proxy's credential configuration is a second file of the one Google volume.
    let spec = pod.spec.as_ref().unwrap();
    let google = spec
        .volumes
        .iter()
        .flatten()
        .find(|volume| volume.name == "gcp-workload-identity")
        .unwrap();
    let files: Vec<(String, String)> = google
        .projected
        .iter()
        .flat_map(|projected| projected.sources.iter().flatten())
        .flat_map(|source| {
            source
                .downward_api
                .iter()
                .flat_map(|downward| downward.items.iter().flatten())
        })
        .map(|item| (item.path.clone(), item.field_ref.as_ref().unwrap().field_path.clone()))
        .collect();
    let field = |key: &str| format!("metadata.annotations['{key}']");
    assert_eq!(
        files,
        [
            (
                "credential-configuration.json".to_owned(),
                field("cloud.google.com/external-credentials-json")
            ),
            (
                "credential-configuration-1.json".to_owned(),
                field("cloud.google.com/external-credentials-json-1")
            ),
        ]
    );
    let annotations = pod.metadata.annotations.as_ref().unwrap();
    assert!(annotations["cloud.google.com/external-credentials-json-1"].contains(PROXY_GSA));
    assert!(annotations["cloud.google.com/external-credentials-json"].contains(GSA));
    let _ = kube::Api::<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration>::all(
        cluster.client.clone(),
    )
    .delete(&injector_name, &Default::default())
    .await;
    cluster.uninstall().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_opt_in_and_pod_opt_out() {
    // The opt-in install's selector; the webhook configuration covers a labelled and an unlabelled namespace.
    let cluster = install(Options {
        config: &settings(),
        namespace_selector: vec![
            json!({"key": "workload-identity.dev/inject", "operator": "In", "values": ["enabled"]}),
        ],
        namespace_labels: json!({"workload-identity.dev/inject": "enabled"}),
        ..Options::default()
    })
    .await;
    let annotations = json!({"eks.amazonaws.com/role-arn": ROLE});
    cluster.create_service_account("app", annotations.clone()).await;
    cluster
        .create_service_account_in(&cluster.other_namespace, "app", annotations)
        .await;
    assert_eq!(
        volume_names(&cluster.create_pod(pod_json("mutated", "app")).await),
        ["aws-iam-token"]
    );
    let untouched = cluster
        .create_pod_in(&cluster.other_namespace, pod_json("untouched", "app"))
        .await;
    assert!(
        volume_names(&untouched).is_empty(),
        "an unlabelled namespace is not mutated"
    );
    let mut opted_out = pod_json("opted-out", "app");
    opted_out["metadata"]["labels"] = json!({"workload-identity.dev/inject": "disabled"});
    assert!(
        volume_names(&cluster.create_pod(opted_out).await).is_empty(),
        "per-Pod opt-out label"
    );
    cluster.uninstall().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_webhook_with_ignore_admits_and_with_fail_refuses() {
    for policy in ["Ignore", "Fail"] {
        let mut cluster = install(Options {
            config: &settings(),
            failure_policy: policy,
            ..Options::default()
        })
        .await;
        cluster
            .create_service_account("app", json!({"eks.amazonaws.com/role-arn": ROLE}))
            .await;
        assert_eq!(
            volume_names(&cluster.create_pod(pod_json("while-up", "app")).await),
            ["aws-iam-token"]
        );
        cluster.webhook.terminate();
        let result = control_plane::create_json::<Pod>(
            &cluster.client,
            Some(&cluster.namespace),
            &PostParams::default(),
            &pod_json("while-down", "app"),
        )
        .await;
        match policy {
            "Ignore" => {
                let pod: Pod = serde_json::from_value(result.unwrap()).unwrap();
                assert!(volume_names(&pod).is_empty(), "admitted unmutated")
            }
            _ => {
                let err = result.unwrap_err().to_string();
                assert!(
                    err.contains("failed calling webhook") && err.contains("pods.workload-identity.dev"),
                    "{err}"
                );
            }
        }
        cluster.uninstall().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutation_is_audited_and_credentials_never_logged() {
    let cluster = with_settings().await;
    cluster
        .create_service_account("audited", json!({"eks.amazonaws.com/role-arn": ROLE}))
        .await;
    cluster.create_pod(pod_json("audited-pod", "audited")).await;
    let log = cluster.webhook.log();
    let line = log
        .lines()
        .find(|line| line.contains("pod mutated"))
        .unwrap_or_else(|| panic!("no audit line in\n{log}"));
    for expected in [
        cluster.namespace.as_str(),
        "pod=\"audited-pod\"",
        "service_account=\"audited\"",
        ROLE,
        "aws",
    ] {
        assert!(
            line.contains(expected),
            "{expected:?} missing in the audit line {line:?}"
        );
    }
    let token = control_plane::shared().await.admin_token();
    assert!(!log.contains(token), "the webhook's API credential appears in its log");
    cluster.uninstall().await;
}

/// A Pod with fields newer than the compiled k8s-openapi types (`v1_33`, see Cargo.toml), on by
/// default from Kubernetes 1.35: `spec.hostnameOverride` and, on the very container the webhook
/// injects into, `restartPolicy` with `restartPolicyRules`. The Pod is sent as JSON, goes through
/// the real webhook and is stored with every one of them. Older apiservers do not know these
/// fields, so there the test only checks that they are newer than the compiled types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_newer_than_the_compiled_types_survive_the_webhook() {
    let mut pod = pod_json("newer-fields", "app");
    pod["spec"]["hostnameOverride"] = json!("custom-host");
    let rules = json!([{"action": "Restart", "exitCodes": {"operator": "In", "values": [42]}}]);
    pod["spec"]["containers"][0]["restartPolicy"] = json!("Never");
    pod["spec"]["containers"][0]["restartPolicyRules"] = rules.clone();
    // What a test helper that converts to the typed Pod would send: without them.
    let typed = serde_json::to_value(serde_json::from_value::<Pod>(pod.clone()).unwrap()).unwrap();
    assert!(
        typed["spec"].get("hostnameOverride").is_none()
            && typed["spec"]["containers"][0].get("restartPolicyRules").is_none(),
        "the compiled types know these fields now: pick fields newer than k8s-openapi's feature"
    );
    let version = control_plane::kubernetes_version();
    let minor: u32 = version.split('.').nth(1).unwrap().parse().unwrap();
    if minor < 35 {
        eprintln!("Kubernetes {version} does not have these fields (1.35 and later): not sent");
        return;
    }

    let cluster = with_settings().await;
    cluster
        .create_service_account("app", json!({"eks.amazonaws.com/role-arn": ROLE}))
        .await;
    let stored = cluster.create_pod_json_in(&cluster.namespace, &pod).await;
    let container = &stored["spec"]["containers"][0];
    assert_eq!(stored["spec"]["hostnameOverride"], "custom-host", "{stored:#}");
    assert_eq!(container["restartPolicy"], "Never", "{stored:#}");
    assert_eq!(container["restartPolicyRules"], rules, "{stored:#}");
    // And the webhook did inject into that container.
    let typed: Pod = serde_json::from_value(stored.clone()).unwrap();
    assert_eq!(volume_names(&typed), ["aws-iam-token"]);
    assert_eq!(env_value(containers(&typed)[0], "AWS_ROLE_ARN").as_deref(), Some(ROLE));
    cluster.uninstall().await;
}
