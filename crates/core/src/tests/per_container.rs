//! Identities per container: mappings with `containers`, and the Pod's opt-in list
//! `workload-identity.dev/containers`. Every scenario also checks reinvocation ([`run`]).

use super::*;

const CLUSTER: &str = "aws: {region: eu-west-1}\nazure: {tenantId: \"11111111-2222-3333-4444-555555555555\"}\ngcp: {workloadIdentityProvider: \"projects/123456789/locations/global/workloadIdentityPools/pool/providers/provider\"}\n";

/// The cluster settings and these mappings (YAML list entries, one a line).
fn mappings(entries: &[String]) -> Config {
    config(&format!("{CLUSTER}identities:\n{}", lines(entries)))
}

fn lines(entries: &[String]) -> String {
    entries.iter().map(|entry| format!("  - {entry}\n")).collect()
}

/// `config.yaml` with these mappings, as the parser answers it.
fn parsed(entries: &[String]) -> Result<Config, ConfigError> {
    Config::parse(
        &format!("{CLUSTER}identities:\n{}", lines(entries)),
        &Default::default(),
    )
}

fn aws_for(containers: &str, role: &str) -> String {
    format!("{{namespace: {NS}, serviceAccount: app, containers: {containers}, aws: {{roleArn: \"{role}\"}}}}")
}

/// `full_pod` (containers app and sidecar, init container init) with a native sidecar `proxy`.
fn pod_with_native_sidecar() -> Value {
    let mut pod = full_pod(json!({}));
    pod["spec"]["initContainers"]
        .as_array_mut()
        .expect("init containers")
        .push(json!({"name": "proxy", "image": "proxy", "restartPolicy": "Always"}));
    pod
}

fn no_annotations() -> Value {
    sa(json!({}))
}

fn audit<'m>(mutation: &'m Mutation, key: &str) -> Option<&'m str> {
    mutation
        .audit
        .iter()
        .find(|(seen, _)| *seen == key)
        .map(|(_, value)| value.as_str())
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

#[test]
fn an_empty_container_list_is_an_error() {
    let err = parsed(&[aws_for("[]", ROLE)]).unwrap_err().to_string();
    assert!(err.contains("identities[0].containers: must not be empty"), "{err}");
}

#[test]
fn a_container_name_that_no_container_can_have_is_an_error() {
    let err = parsed(&[aws_for("[App_1]", ROLE)]).unwrap_err().to_string();
    assert!(
        err.contains("identities[0].containers[0]: \"App_1\" is not a valid container name"),
        "{err}"
    );
}

#[test]
fn names_no_pod_has_yet_are_fine() {
    let config = mappings(&[aws_for("[not-in-any-pod-yet]", ROLE)]);
    let out = run(&full_pod(json!({})), &no_annotations(), &config);
    out.assert_untouched();
}

#[test]
fn two_mappings_claiming_one_container_for_one_cloud_are_an_error() {
    let err = parsed(&[aws_for("[app, worker]", ROLE), aws_for("[sidecar, app]", OTHER_ROLE)])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "identities[1].containers: container \"app\" of {NS}/app already gets its aws identity from identities[0]"
        )),
        "{err}"
    );
    // Placed in the file.
    assert!(err.contains("at line"), "{err}");
    assert!(!err.contains("\"sidecar\""), "{err}");
}

#[test]
fn one_container_may_get_one_identity_of_each_cloud_from_several_mappings() {
    let azure =
        format!("{{namespace: {NS}, serviceAccount: app, containers: [app], azure: {{clientId: \"{CLIENT}\"}}}}");
    let config = mappings(&[aws_for("[app]", ROLE), azure]);
    let out = run(&full_pod(json!({})), &no_annotations(), &config);
    assert_has(&out.pod, "app", &IRSA);
    assert_has(&out.pod, "app", &AZURE);
    for other in ["sidecar", "init"] {
        assert_lacks(&out.pod, other, &IRSA);
        assert_lacks(&out.pod, other, &AZURE);
    }
}

#[test]
fn mappings_for_other_service_accounts_may_name_the_same_container() {
    let other =
        format!("{{namespace: {NS}, serviceAccount: other, containers: [app], aws: {{roleArn: \"{OTHER_ROLE}\"}}}}");
    assert!(parsed(&[aws_for("[app]", ROLE), other]).is_ok());
}

// ---------------------------------------------------------------------------------------------
// AWS
// ---------------------------------------------------------------------------------------------

#[test]
fn irsa_roles_per_container_share_one_token_volume() {
    let config = mappings(&[aws_for("[app]", ROLE), aws_for("[sidecar, proxy]", OTHER_ROLE)]);
    let out = run(&pod_with_native_sidecar(), &no_annotations(), &config);
    assert_eq!(env_var(&out.pod, "app", "AWS_ROLE_ARN").as_deref(), Some(ROLE));
    for name in ["sidecar", "proxy"] {
        assert_has(&out.pod, name, &IRSA);
        assert_eq!(env_var(&out.pod, name, "AWS_ROLE_ARN").as_deref(), Some(OTHER_ROLE));
        assert_eq!(
            env_var(&out.pod, name, "AWS_WEB_IDENTITY_TOKEN_FILE").as_deref(),
            Some(IRSA_TOKEN)
        );
    }
    // The init container is named by no mapping, and there is no mapping for the whole Pod.
    assert_lacks(&out.pod, "init", &IRSA);
    let volumes = out.pod["spec"]["volumes"].as_array().expect("volumes");
    assert_eq!(
        volumes
            .iter()
            .filter(|volume| volume["name"] == "aws-iam-token")
            .count(),
        1
    );
    assert_eq!(
        out.mutation.identities,
        vec![
            ("aws", format!("{ROLE} (containers app)")),
            ("aws", format!("{OTHER_ROLE} (containers sidecar,proxy)"))
        ]
    );
    assert_eq!(
        audit(&out.mutation, "aws-identity"),
        Some(format!("{ROLE} (containers app); {OTHER_ROLE} (containers sidecar,proxy)").as_str())
    );
    assert_eq!(audit(&out.mutation, "aws-audience"), Some("sts.amazonaws.com"));
    assert_eq!(
        out.mutation
            .audit
            .iter()
            .filter(|(key, _)| *key == "aws-audience")
            .count(),
        1
    );
    assert!(out.mutation.warnings.is_empty(), "{:?}", out.mutation.warnings);
}

#[test]
fn a_mapping_for_the_whole_pod_covers_the_containers_no_other_mapping_names() {
    let whole = format!("{{namespace: {NS}, serviceAccount: app, aws: {{roleArn: \"{ROLE}\"}}}}");
    // The mapping with `containers` comes after the whole Pod's: each container still gets the
    // mapping that names it.
    let config = mappings(&[whole, aws_for("[sidecar]", OTHER_ROLE)]);
    let out = run(&full_pod(json!({})), &no_annotations(), &config);
    for name in ["app", "init"] {
        assert_eq!(env_var(&out.pod, name, "AWS_ROLE_ARN").as_deref(), Some(ROLE), "{name}");
    }
    assert_eq!(
        env_var(&out.pod, "sidecar", "AWS_ROLE_ARN").as_deref(),
        Some(OTHER_ROLE)
    );
    // The ServiceAccount shows the whole Pod's role only.
    let sa_mutation = mutate_service_account(&typed(&no_annotations()), Namespace::named(NS), &config);
    assert_eq!(sa_mutation.identities, vec![("aws", ROLE.to_owned())]);
}

#[test]
fn the_service_account_annotation_still_outranks_every_mapping() {
    let config = mappings(&[aws_for("[sidecar]", OTHER_ROLE)]);
    let out = run(&full_pod(json!({})), &irsa_sa(), &config);
    for name in ["app", "sidecar", "init"] {
        assert_eq!(env_var(&out.pod, name, "AWS_ROLE_ARN").as_deref(), Some(ROLE), "{name}");
    }
}

#[test]
fn pod_identity_for_one_container_and_irsa_for_another() {
    let pod_identity =
        format!("{{namespace: {NS}, serviceAccount: app, containers: [sidecar], aws: {{mode: podIdentity}}}}");
    let config = mappings(&[aws_for("[app]", ROLE), pod_identity]);
    let out = run(&full_pod(json!({})), &no_annotations(), &config);
    assert_has(&out.pod, "app", &IRSA);
    assert_lacks(&out.pod, "app", &POD_IDENTITY);
    assert_has(&out.pod, "sidecar", &POD_IDENTITY);
    assert_lacks(&out.pod, "sidecar", &IRSA);
    assert_lacks(&out.pod, "init", &IRSA);
    assert_lacks(&out.pod, "init", &POD_IDENTITY);
}

#[test]
fn an_identity_needing_another_token_in_the_same_volume_is_left_out_with_a_warning() {
    let other_audience = format!(
        "{{namespace: {NS}, serviceAccount: app, containers: [sidecar], aws: {{roleArn: \"{OTHER_ROLE}\", audience: other.example}}}}"
    );
    let config = mappings(&[aws_for("[app]", ROLE), other_audience]);
    let out = run(&full_pod(json!({})), &no_annotations(), &config);
    assert_eq!(env_var(&out.pod, "app", "AWS_ROLE_ARN").as_deref(), Some(ROLE));
    assert_lacks(&out.pod, "sidecar", &IRSA);
    assert!(
        out.warned("needs a token of another audience or lifetime"),
        "{:?}",
        out.mutation.warnings
    );
    assert_eq!(
        out.mutation.identities,
        vec![("aws", format!("{ROLE} (containers app)"))]
    );
}

#[test]
fn shared_warnings_are_given_once() {
    // No region: each identity's resolution finds it missing; the Pod is told once.
    let config = config(&format!(
        "identities:\n  - {}\n  - {}\n",
        aws_for("[app]", ROLE),
        aws_for("[sidecar]", OTHER_ROLE)
    ));
    let out = run(&full_pod(json!({})), &no_annotations(), &config);
    let region: Vec<_> = out
        .mutation
        .warnings
        .iter()
        .filter(|w| w.contains("no AWS region"))
        .collect();
    assert_eq!(region.len(), 1, "{:?}", out.mutation.warnings);
    assert_eq!(out.mutation.warnings.len(), out.mutation.warning_clouds.len());
    assert_eq!(out.mutation.gaps, vec!["aws_region"]);
}

// ---------------------------------------------------------------------------------------------
// Azure and Google
// ---------------------------------------------------------------------------------------------

#[test]
fn azure_client_ids_per_container_share_one_token_volume() {
    let entry = |containers: &str, client: &str| {
        format!("{{namespace: {NS}, serviceAccount: app, containers: {containers}, azure: {{clientId: \"{client}\"}}}}")
    };
    let config = mappings(&[entry("[app, init]", CLIENT), entry("[proxy]", OTHER_CLIENT)]);
    let out = run(&pod_with_native_sidecar(), &no_annotations(), &config);
    for (name, client) in [("app", CLIENT), ("init", CLIENT), ("proxy", OTHER_CLIENT)] {
        assert_has(&out.pod, name, &AZURE);
        assert_eq!(
            env_var(&out.pod, name, "AZURE_CLIENT_ID").as_deref(),
            Some(client),
            "{name}"
        );
        assert_eq!(
            env_var(&out.pod, name, "AZURE_FEDERATED_TOKEN_FILE").as_deref(),
            Some(AZURE_TOKEN)
        );
    }
    assert_lacks(&out.pod, "sidecar", &AZURE);
    assert_eq!(
        audit(&out.mutation, "azure-identity"),
        Some(format!("{CLIENT} (containers app,init); {OTHER_CLIENT} (containers proxy)").as_str())
    );
}

#[test]
fn google_identities_per_container_get_a_credential_file_each_in_one_volume() {
    let entry = |containers: &str, gsa: &str| {
        format!(
            "{{namespace: {NS}, serviceAccount: app, containers: {containers}, gcp: {{serviceAccount: \"{gsa}\"}}}}"
        )
    };
    let whole = format!("{{namespace: {NS}, serviceAccount: app, gcp: {{serviceAccount: \"{GSA}\"}}}}");
    let config = mappings(&[whole, entry("[sidecar]", OTHER_GSA)]);
    let out = run(&full_pod(json!({})), &no_annotations(), &config);
    for name in ["app", "sidecar", "init"] {
        assert_has(&out.pod, name, &GCP);
    }
    let file_2 = format!("{GCP_MOUNT}/credential-configuration-1.json");
    assert_eq!(
        env_var(&out.pod, "app", "GOOGLE_APPLICATION_CREDENTIALS").as_deref(),
        Some(GCP_CREDENTIALS)
    );
    assert_eq!(
        env_var(&out.pod, "sidecar", "GOOGLE_APPLICATION_CREDENTIALS"),
        Some(file_2.clone())
    );
    assert_eq!(
        env_var(&out.pod, "sidecar", "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE"),
        Some(file_2)
    );
    // Each file impersonates its own service account.
    let impersonated = |key: &str| {
        let text = annotation(&out.pod, key).unwrap_or_else(|| panic!("no {key}"));
        let configuration: Value = serde_json::from_str(text).expect("JSON");
        configuration["service_account_impersonation_url"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(impersonated(GCP_ANNOTATION).contains(GSA));
    assert!(impersonated(&format!("{GCP_ANNOTATION}-1")).contains(OTHER_GSA));
    // One volume, one token, both files.
    let volume = volume(&out.pod, "gcp-workload-identity").expect("volume");
    let sources = volume["projected"]["sources"].as_array().expect("sources");
    assert_eq!(sources.len(), 2, "{volume:#}");
    // Each source holds one volume type (the apiserver refuses more).
    for source in sources {
        assert_eq!(source.as_object().map(serde_json::Map::len), Some(1), "{volume:#}");
    }
    let items = sources[1]["downwardAPI"]["items"].as_array().expect("items");
    let paths: Vec<&str> = items.iter().filter_map(|item| item["path"].as_str()).collect();
    assert_eq!(
        paths,
        ["credential-configuration.json", "credential-configuration-1.json"]
    );
    assert_eq!(
        items[1]["fieldRef"]["fieldPath"],
        format!("metadata.annotations['{GCP_ANNOTATION}-1']")
    );
}

// ---------------------------------------------------------------------------------------------
// Reinvocation
// ---------------------------------------------------------------------------------------------

#[test]
fn a_container_another_webhook_adds_gets_its_identities_when_the_apiserver_reinvokes_us() {
    let whole = format!(
        "{{namespace: {NS}, serviceAccount: app, aws: {{roleArn: \"{ROLE}\"}}, gcp: {{serviceAccount: \"{GSA}\"}}, azure: {{clientId: \"{CLIENT}\"}}}}"
    );
    let proxy = format!(
        "{{namespace: {NS}, serviceAccount: app, containers: [proxy], aws: {{roleArn: \"{OTHER_ROLE}\"}}, gcp: {{serviceAccount: \"{OTHER_GSA}\"}}, azure: {{clientId: \"{OTHER_CLIENT}\"}}}}"
    );
    let config = mappings(&[whole, proxy]);
    let first = run(&full_pod(json!({})), &no_annotations(), &config);
    // A mesh's webhook appends its sidecar after ours ran; the apiserver then calls us again.
    let mut meshed = first.pod.clone();
    meshed["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .push(json!({"name": "proxy", "image": "envoy"}));
    let again = webhook(&meshed, NS, Some(&no_annotations()), &config);
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
    let out = apply(&meshed, &again);
    assert_well_formed(&out);
    reinvoke(&out, NS, Some(&no_annotations()), &config);

    for injected in [&IRSA, &GCP, &AZURE] {
        assert_has(&out, "proxy", injected);
    }
    assert_eq!(env_var(&out, "proxy", "AWS_ROLE_ARN").as_deref(), Some(OTHER_ROLE));
    assert_eq!(env_var(&out, "proxy", "AZURE_CLIENT_ID").as_deref(), Some(OTHER_CLIENT));
    let proxy_file = format!("{GCP_MOUNT}/credential-configuration-1.json");
    assert_eq!(
        env_var(&out, "proxy", "GOOGLE_APPLICATION_CREDENTIALS"),
        Some(proxy_file.clone())
    );
    assert_eq!(
        env_var(&out, "proxy", "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE"),
        Some(proxy_file)
    );
    let proxy_configuration =
        annotation(&out, &format!("{GCP_ANNOTATION}-1")).expect("the proxy's credential configuration");
    assert!(proxy_configuration.contains(OTHER_GSA), "{proxy_configuration}");
    // The proxy's file is added to the Google volume the first call made, beside the Pod's.
    let google = volume(&out, "gcp-workload-identity").expect("volume");
    let files: Vec<(&str, &str)> = google["projected"]["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .flat_map(|source| source["downwardAPI"]["items"].as_array().into_iter().flatten())
        .map(|item| {
            let field = item["fieldRef"]["fieldPath"].as_str().unwrap_or_default();
            (item["path"].as_str().unwrap_or_default(), field)
        })
        .collect();
    let proxy_field = format!("metadata.annotations['{GCP_ANNOTATION}-1']");
    let pod_field = format!("metadata.annotations['{GCP_ANNOTATION}']");
    assert_eq!(
        files,
        [
            ("credential-configuration.json", pod_field.as_str()),
            ("credential-configuration-1.json", proxy_field.as_str())
        ]
    );
    // Nothing else changes: the other containers, the token and the scratch volume are as the
    // first call left them.
    for name in ["app", "sidecar", "init"] {
        assert_eq!(container(&out, name), container(&first.pod, name), "{name}");
    }
    assert_eq!(
        names(&out["spec"]["volumes"], "name"),
        names(&first.pod["spec"]["volumes"], "name")
    );
    for volume_name in ["aws-iam-token", "azure-identity-token", "gcp-gcloud-config"] {
        assert_eq!(
            volume(&out, volume_name),
            volume(&first.pod, volume_name),
            "{volume_name}"
        );
    }
    assert_eq!(
        token_of(&out, "gcp-workload-identity"),
        token_of(&first.pod, "gcp-workload-identity")
    );
}

// ---------------------------------------------------------------------------------------------
// The Pod's opt-in list
// ---------------------------------------------------------------------------------------------

fn opting_in(list: &str) -> Value {
    let mut pod = pod_with_native_sidecar();
    pod["metadata"]["annotations"]["workload-identity.dev/containers"] = json!(list);
    pod
}

#[test]
fn the_opt_in_list_narrows_every_cloud_to_the_listed_containers() {
    let out = run(&opting_in(" app , proxy"), &all_clouds_sa(), &cluster());
    for cloud in [&IRSA, &GCP, &AZURE] {
        assert_has(&out.pod, "app", cloud);
        assert_has(&out.pod, "proxy", cloud);
        assert_lacks(&out.pod, "sidecar", cloud);
        assert_lacks(&out.pod, "init", cloud);
    }
    assert_eq!(
        audit(&out.mutation, "aws-identity"),
        Some(format!("{ROLE} (containers app,proxy)").as_str())
    );
}

#[test]
fn the_opt_in_list_cannot_widen_a_mapping() {
    let config = mappings(&[aws_for("[app]", ROLE)]);
    let out = run(&opting_in("sidecar,app"), &no_annotations(), &config);
    assert_has(&out.pod, "app", &IRSA);
    assert_lacks(&out.pod, "sidecar", &IRSA);
    // Listing only containers no mapping names gives nothing.
    let out = run(&opting_in("sidecar"), &no_annotations(), &config);
    out.assert_untouched();
}

#[test]
fn the_opt_in_list_and_a_skip_list_both_narrow() {
    let mut pod = opting_in("app,sidecar");
    pod["metadata"]["annotations"]["eks.amazonaws.com/skip-containers"] = json!("sidecar");
    let out = run(&pod, &irsa_sa(), &cluster());
    assert_has(&out.pod, "app", &IRSA);
    for name in ["sidecar", "init", "proxy"] {
        assert_lacks(&out.pod, name, &IRSA);
    }
}

#[test]
fn unknown_names_in_the_opt_in_list_are_warned_about() {
    let out = run(&opting_in("app,ap"), &irsa_sa(), &cluster());
    assert_has(&out.pod, "app", &IRSA);
    assert!(
        out.warned("names \"ap\", which is no container of the Pod"),
        "{:?}",
        out.mutation.warnings
    );
    // Nobody listed that exists: nothing.
    let out = run(&opting_in("ap"), &irsa_sa(), &cluster());
    out.assert_untouched();
}

#[test]
fn an_opt_in_list_naming_nobody_is_ignored_with_a_warning() {
    let out = run(&opting_in(" , "), &irsa_sa(), &cluster());
    for name in ["app", "sidecar", "init", "proxy"] {
        assert_has(&out.pod, name, &IRSA);
    }
    assert!(out.warned("names no container; ignored"), "{:?}", out.mutation.warnings);
}

#[test]
fn a_missing_service_account_is_warned_about_for_mappings_with_containers_too() {
    let config = mappings(&[aws_for("[app]", ROLE)]);
    let out = run_in(NS, &full_pod(json!({})), None, &config);
    out.assert_untouched();
    assert!(out.warned("does not exist"), "{:?}", out.mutation.warnings);
}

// ---------------------------------------------------------------------------------------------
// The identity policy
// ---------------------------------------------------------------------------------------------

fn with_policy(mode: &str, entries: &[String]) -> Result<Config, ConfigError> {
    let policy = format!(
        "policy:\n  mode: {mode}\n  rules:\n    - name: team-a\n      namespaces: [{NS}]\n      aws: {{roleArns: [\"{ROLE}\"]}}\n"
    );
    Config::parse(
        &format!("{CLUSTER}identities:\n{}{policy}", lines(entries)),
        &Default::default(),
    )
}

#[test]
fn the_policy_refuses_a_mapping_with_containers_that_claims_a_forbidden_identity() {
    let err = with_policy("enforce", &[aws_for("[app]", ROLE), aws_for("[sidecar]", OTHER_ROLE)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("identities[1].aws"), "{err}");
    assert!(!err.contains("identities[0].aws"), "{err}");
}

#[test]
fn the_policy_judges_each_identity_of_a_pod_and_the_audit_names_each() {
    let config = with_policy("warn", &[aws_for("[app]", ROLE), aws_for("[sidecar]", OTHER_ROLE)]).expect("warn loads");
    let out = run(&full_pod(json!({})), &no_annotations(), &config);
    assert_eq!(
        env_var(&out.pod, "sidecar", "AWS_ROLE_ARN").as_deref(),
        Some(OTHER_ROLE)
    );
    let outcomes: Vec<&str> = out.mutation.policy.iter().map(|check| check.outcome(true)).collect();
    assert_eq!(outcomes, ["allowed", "warned"]);
    let warned: Vec<_> = out
        .mutation
        .warnings
        .iter()
        .filter(|w| w.contains("policy mode warn"))
        .collect();
    assert_eq!(warned.len(), 1, "{:?}", out.mutation.warnings);
    assert!(warned[0].contains(OTHER_ROLE), "{warned:?}");
    let policy = audit(&out.mutation, "aws-policy").expect("aws-policy");
    assert!(
        policy.starts_with("warned: ") && policy.contains(OTHER_ROLE),
        "{policy}"
    );
    assert_eq!(audit(&out.mutation, "aws-policy-rule"), Some("team-a"));
}

#[test]
fn a_forbidden_annotation_is_withheld_from_every_container_whatever_their_mappings() {
    // The ServiceAccount's annotation outranks the app's mapping too, and the policy judges the
    // identity each container would get.
    let config = with_policy("enforce", &[aws_for("[app]", ROLE)]).expect("enforce loads");
    let sa = sa(json!({"eks.amazonaws.com/role-arn": OTHER_ROLE}));
    let out = run(&full_pod(json!({})), &sa, &config);
    let outcomes: Vec<&str> = out.mutation.policy.iter().map(|check| check.outcome(true)).collect();
    assert_eq!(outcomes, ["withheld", "withheld"], "{:?}", out.mutation.policy);
    assert_no_cloud_at_all(&out.pod, &IRSA);
    let allowed = run(&full_pod(json!({})), &irsa_sa(), &config);
    assert_has(&allowed.pod, "app", &IRSA);
    assert_has(&allowed.pod, "sidecar", &IRSA);
}

#[test]
fn across_wildcards_the_first_mapping_naming_a_container_wins() {
    let any_namespace =
        format!("{{namespace: \"*\", serviceAccount: app, containers: [app], aws: {{roleArn: \"{OTHER_ROLE}\"}}}}");
    let config = mappings(&[any_namespace.clone(), aws_for("[app, sidecar]", ROLE)]);
    let out = run(&full_pod(json!({})), &no_annotations(), &config);
    assert_eq!(env_var(&out.pod, "app", "AWS_ROLE_ARN").as_deref(), Some(OTHER_ROLE));
    assert_eq!(env_var(&out.pod, "sidecar", "AWS_ROLE_ARN").as_deref(), Some(ROLE));
    // In the other order, the exact mapping comes first for both.
    let config = mappings(&[aws_for("[app, sidecar]", ROLE), any_namespace]);
    let out = run(&full_pod(json!({})), &no_annotations(), &config);
    assert_eq!(env_var(&out.pod, "app", "AWS_ROLE_ARN").as_deref(), Some(ROLE));
    // Another namespace gets only the wildcard's.
    let out = run_in("team-b", &full_pod(json!({})), Some(&no_annotations()), &config);
    assert_eq!(env_var(&out.pod, "app", "AWS_ROLE_ARN").as_deref(), Some(OTHER_ROLE));
    assert_lacks(&out.pod, "sidecar", &IRSA);
}
