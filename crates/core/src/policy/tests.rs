//! The identity policy against every source of identity: a namespace cannot obtain an identity
//! the policy gives only to another, by any annotation convention, spelling, case or spacing, by
//! a mapping or by EKS Pod Identity. Each refusal is paired with the same claim allowed where the
//! policy gives it, so that every assertion can fail.

use serde_json::{Value, json};

use super::*;
use crate::admission::Review;
use crate::config::{Config, ConfigError};
use crate::model::{Pod, ServiceAccount};
use crate::mutation::{Mutation, mutate_pod, mutate_service_account};

const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const OTHER_TENANT: &str = "22222222-2222-3333-4444-555555555555";
const CLIENT_A: &str = "00000000-1111-2222-3333-00000000000a";
const CLIENT_B: &str = "00000000-1111-2222-3333-00000000000b";
const PROVIDER: &str = "projects/123456789/locations/global/workloadIdentityPools/pool/providers/provider";
const OTHER_PROVIDER: &str = "projects/42/locations/global/workloadIdentityPools/other-pool/providers/oidc";
const ROLE_A: &str = "arn:aws:iam::111122223333:role/team-a-app";
const ROLE_B: &str = "arn:aws:iam::111122223333:role/team-b-app";
const GSA_A: &str = "app@team-a-project.iam.gserviceaccount.com";
const GSA_B: &str = "app@team-b-project.iam.gserviceaccount.com";

/// The cluster settings of every test here.
fn settings() -> String {
    format!(
        r#"
aws: {{region: eu-west-1, accountId: "111122223333"}}
azure: {{tenantId: "{TENANT}"}}
gcp: {{workloadIdentityProvider: "{PROVIDER}"}}"#
    )
}

/// Cluster settings, the two tenants' rules, and `extra` (mappings, a mode).
fn yaml(extra: &str) -> String {
    format!(
        r#"{}
{extra}
policy:
  MODE
  rules:
    - name: team-a
      namespaces: [team-a]
      aws: {{roleArns: ["arn:aws:iam::111122223333:role/team-a-*"]}}
      gcp: {{serviceAccounts: ["*@team-a-project.iam.gserviceaccount.com"]}}
      azure: {{clientIds: ["{CLIENT_A}"]}}
    - name: team-b
      namespaces: [team-b, "team-b-*"]
      aws: {{roleArns: ["arn:aws:iam::111122223333:role/team-b-*"], podIdentity: true}}
      gcp: {{projects: [team-b-project], workloadIdentityProviders: ["{PROVIDER}", "{OTHER_PROVIDER}"]}}
      azure: {{clientIds: ["{CLIENT_B}", "*"], tenantIds: ["{TENANT}", "{OTHER_TENANT}"]}}
"#,
        settings()
    )
}

fn config_in(mode: &str, extra: &str) -> Result<Config, ConfigError> {
    Config::parse(&yaml(extra).replace("MODE", mode), &Default::default())
}

fn enforce() -> Config {
    config_in("", "").expect("the policy parses")
}

fn warn() -> Config {
    config_in("mode: warn", "").expect("the policy parses")
}

fn service_account(namespace: &str, annotations: Value) -> ServiceAccount {
    serde_json::from_value(json!({"metadata": {"name": "app", "namespace": namespace, "annotations": annotations}}))
        .unwrap()
}

fn pod(namespace: &str, labels: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": namespace, "labels": labels},
        "spec": {"serviceAccountName": "app", "containers": [{"name": "app"}]}
    }))
    .unwrap()
}

/// The Pod's mutation in `namespace`, its ServiceAccount annotated so.
fn pod_in(namespace: &str, annotations: Value, config: &Config) -> Mutation {
    mutate_pod(
        &pod(namespace, json!({})),
        Namespace::named(namespace),
        Some(&service_account(namespace, annotations)),
        config,
    )
}

fn clouds(mutation: &Mutation) -> Vec<&'static str> {
    mutation.identities.iter().map(|(cloud, _)| *cloud).collect()
}

fn audit<'m>(mutation: &'m Mutation, key: &str) -> Option<&'m str> {
    mutation
        .audit
        .iter()
        .find(|(name, _)| *name == key)
        .map(|(_, value)| value.as_str())
}

/// Every annotation convention the webhook reads, each claiming team-b's identity of its cloud
/// (with the other values it needs from team-a), in every spelling the webhook reads it in.
fn team_b_claims() -> Vec<(&'static str, Value)> {
    vec![
        ("aws", json!({"eks.amazonaws.com/role-arn": ROLE_B})),
        ("aws", json!({"eks.amazonaws.com/role-arn": "team-b-app"})),
        (
            "aws",
            json!({"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/Team-B-App"}),
        ),
        ("aws", json!({"eks.amazonaws.com/role-arn": format!(" \t{ROLE_B}\n")})),
        ("aws", json!({"eks.amazonaws.com/role-arn": " TEAM-B-APP "})),
        ("gcp", json!({"iam.gke.io/gcp-service-account": GSA_B})),
        ("gcp", json!({"cloud.google.com/service-account-email": GSA_B})),
        ("gcp", json!({"iam.gke.io/gcp-service-account": format!("  {GSA_B} ")})),
        // Direct resource access through another pool's provider.
        (
            "gcp",
            json!({"cloud.google.com/workload-identity-provider": OTHER_PROVIDER}),
        ),
        ("azure", json!({"azure.workload.identity/client-id": CLIENT_B})),
        (
            "azure",
            json!({"azure.workload.identity/client-id": format!(" {} ", CLIENT_B.to_uppercase())}),
        ),
        (
            "azure",
            json!({"azure.workload.identity/client-id": CLIENT_A, "azure.workload.identity/tenant-id": OTHER_TENANT}),
        ),
    ]
}

#[test]
fn patterns_match_runs_of_characters() {
    assert!(glob_match("team-*", "team-a"));
    assert!(glob_match("team-*", "team-"));
    assert!(glob_match("*", ""));
    assert!(glob_match("a*b*c", "aXXbYYc"));
    assert!(glob_match("arn:*:iam::1:role/*", "arn:aws:iam::1:role/x/y"));
    assert!(!glob_match("team-*", "team"));
    assert!(!glob_match("team-a", "team-ab"));
    assert!(!glob_match("a*b", "ac"));
    assert!(!glob_match(
        "*@p.iam.gserviceaccount.com",
        "x@q.iam.gserviceaccount.com"
    ));
    // No exponential backtracking.
    assert!(!glob_match(&"*a".repeat(50), &"a".repeat(49)));
}

#[test]
fn without_a_policy_nothing_is_checked_and_a_written_policy_enforces() {
    let off = Config::parse(&format!("azure: {{tenantId: \"{TENANT}\"}}"), &Default::default()).unwrap();
    assert_eq!(off.policy.mode, Mode::Off);
    assert_eq!(Config::default().policy.mode, Mode::Off);
    let mutation = pod_in("team-a", json!({"eks.amazonaws.com/role-arn": ROLE_B}), &off);
    assert_eq!(clouds(&mutation), ["aws"]);
    assert!(mutation.policy.is_empty());
    assert_eq!(enforce().policy.mode, Mode::Enforce);
    assert_eq!(warn().policy.mode, Mode::Warn);
    let explicit_off = config_in("mode: off", "").unwrap();
    assert_eq!(
        clouds(&pod_in(
            "team-a",
            json!({"eks.amazonaws.com/role-arn": ROLE_B}),
            &explicit_off
        )),
        ["aws"]
    );
}

#[test]
fn a_pod_gets_its_own_namespaces_identities_with_the_rule_in_the_audit_log() {
    let config = enforce();
    let own = json!({
        "eks.amazonaws.com/role-arn": ROLE_A,
        "iam.gke.io/gcp-service-account": GSA_A,
        "azure.workload.identity/client-id": CLIENT_A,
    });
    let mutation = pod_in("team-a", own, &config);
    assert_eq!(clouds(&mutation), ["aws", "gcp", "azure"]);
    assert!(mutation.warnings.is_empty(), "{:?}", mutation.warnings);
    for cloud in ["aws", "gcp", "azure"] {
        assert_eq!(
            audit(&mutation, &format!("{cloud}-policy-rule")),
            Some("team-a"),
            "{cloud}"
        );
    }
    assert_eq!(audit(&mutation, "aws-identity"), Some(ROLE_A));
    assert_eq!(audit(&mutation, "aws-audience"), Some("sts.amazonaws.com"));
    assert_eq!(audit(&mutation, "aws-token-expiration-seconds"), Some("86400"));
    assert_eq!(audit(&mutation, "gcp-identity"), Some(GSA_A));
    assert_eq!(audit(&mutation, "gcp-workload-identity-provider"), Some(PROVIDER));
    assert_eq!(
        audit(&mutation, "gcp-audience"),
        Some(format!("https://iam.googleapis.com/{PROVIDER}").as_str())
    );
    assert_eq!(audit(&mutation, "gcp-token-expiration-seconds"), Some("3600"));
    assert_eq!(audit(&mutation, "azure-identity"), Some(CLIENT_A));
    assert_eq!(audit(&mutation, "azure-tenant-id"), Some(TENANT));
    assert_eq!(audit(&mutation, "azure-audience"), Some("api://AzureADTokenExchange"));
}

#[test]
fn a_pod_never_gets_another_namespaces_identity_by_any_annotation() {
    let config = enforce();
    for (cloud, annotations) in team_b_claims() {
        // Where the policy gives it, the identity is injected ...
        let allowed = pod_in("team-b", annotations.clone(), &config);
        assert_eq!(
            clouds(&allowed),
            [cloud],
            "team-b {annotations}: {:?}",
            allowed.warnings
        );
        assert_eq!(audit(&allowed, &format!("{cloud}-policy-rule")), Some("team-b"));
        // ... and in team-a it is withheld, with a warning and an audit annotation naming the rule.
        let refused = pod_in("team-a", annotations.clone(), &config);
        assert!(
            clouds(&refused).is_empty(),
            "team-a {annotations}: {:?}",
            refused.identities
        );
        assert!(refused.patch.is_empty(), "{annotations}");
        let warning = refused.warnings.join("\n");
        assert!(
            warning.contains("identity policy: rule \"team-a\" (selecting namespace team-a) does not allow"),
            "{warning}"
        );
        assert!(
            warning.contains(&format!("no {cloud} credentials injected")),
            "{warning}"
        );
        let recorded = audit(&refused, &format!("{cloud}-policy")).unwrap_or_default();
        assert!(
            recorded.starts_with("withheld: identity policy: rule \"team-a\""),
            "{recorded}"
        );
        assert_eq!(refused.policy[0].outcome(true), "withheld");
        // A namespace no rule selects may claim nothing.
        let unselected = pod_in("team-c", annotations.clone(), &config);
        assert!(clouds(&unselected).is_empty(), "team-c {annotations}");
        assert!(
            unselected
                .warnings
                .join("\n")
                .contains("no rule selects namespace team-c")
        );
    }
}

#[test]
fn warn_mode_injects_and_warns() {
    let config = warn();
    for (cloud, annotations) in team_b_claims() {
        let mutation = pod_in("team-a", annotations.clone(), &config);
        assert_eq!(clouds(&mutation), [cloud], "{annotations}");
        assert!(
            mutation
                .warnings
                .join("\n")
                .contains("(policy mode warn: injected all the same)")
        );
        assert_eq!(mutation.policy[0].outcome(true), "warned");
        assert!(
            audit(&mutation, &format!("{cloud}-policy"))
                .unwrap()
                .starts_with("warned: ")
        );
    }
}

#[test]
fn a_pod_set_client_id_needs_a_wildcard_rule() {
    let config = enforce();
    let labelled = |namespace: &str| {
        mutate_pod(
            &pod(namespace, json!({"azure.workload.identity/use": "true"})),
            Namespace::named(namespace),
            Some(&service_account(namespace, json!({}))),
            &config,
        )
    };
    assert_eq!(clouds(&labelled("team-b")), ["azure"]);
    let refused = labelled("team-a");
    assert!(clouds(&refused).is_empty());
    assert!(
        refused
            .warnings
            .join("\n")
            .contains("an Azure client id set by the Pod")
    );
}

#[test]
fn a_service_account_cannot_claim_another_namespaces_identity() {
    let config = enforce();
    let mut claims = team_b_claims();
    // Keys in other spellings are read by nothing, and refused all the same.
    claims.push(("aws", json!({"eks.amazonaws.com/Role-Arn": ROLE_B})));
    claims.push(("gcp", json!({"iam.gke.io/GCP-Service-Account": GSA_B})));
    claims.push(("azure", json!({" azure.workload.identity/client-id": CLIENT_B})));
    claims.push(("aws", json!({"eks.amazonaws.com/role-arn": "not an arn"})));
    for (cloud, annotations) in claims {
        let allowed = mutate_service_account(
            &service_account("team-b", annotations.clone()),
            Namespace::named("team-b"),
            &config,
        );
        let invalid = annotations.to_string().contains("not an arn");
        if !invalid {
            assert_eq!(allowed.denied, None, "team-b {annotations}");
            assert_eq!(audit(&allowed, &format!("{cloud}-policy-rule")), Some("team-b"));
        }
        let refused = mutate_service_account(
            &service_account("team-a", annotations.clone()),
            Namespace::named("team-a"),
            &config,
        );
        let message = refused
            .denied
            .clone()
            .unwrap_or_else(|| panic!("team-a {annotations} admitted"));
        assert!(
            message.starts_with("identity policy: rule \"team-a\" (selecting namespace team-a) does not allow"),
            "{message}"
        );
        assert!(refused.patch.is_empty());
        assert!(
            audit(&refused, &format!("{cloud}-policy"))
                .unwrap()
                .starts_with("refused: "),
            "{annotations}"
        );
        let unnamed: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"generateName": "app-", "annotations": annotations}})).unwrap();
        assert!(
            mutate_service_account(&unnamed, Namespace::named("team-a"), &config)
                .denied
                .is_some(),
            "generateName {annotations}"
        );

        let warned = mutate_service_account(
            &service_account("team-a", annotations.clone()),
            Namespace::named("team-a"),
            &warn(),
        );
        assert_eq!(warned.denied, None);
        assert!(
            warned.warnings.join("\n").contains("(policy mode warn: admitted)"),
            "{annotations}"
        );
    }
    let plain = mutate_service_account(
        &service_account("team-c", json!({"team": "c"})),
        Namespace::named("team-c"),
        &config,
    );
    assert_eq!(plain.denied, None, "no identity claimed: nothing to refuse");
    assert!(plain.audit.is_empty());
}

#[test]
fn the_refusal_is_the_admission_answer() {
    let body = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u1", "kind": {"group": "", "version": "v1", "kind": "ServiceAccount"},
            "operation": "CREATE", "namespace": "team-a",
            "object": {"metadata": {"name": "app", "annotations": {"eks.amazonaws.com/role-arn": ROLE_B}}}}
    });
    let review = Review::parse(body.to_string().as_bytes()).unwrap();
    let answer: Value = serde_json::from_slice(
        &review
            .response(&review.mutation(None, Labels::Unknown, &enforce()))
            .unwrap(),
    )
    .unwrap();
    let response = &answer["response"];
    assert_eq!(response["allowed"], false, "{answer}");
    assert_eq!(response["status"]["code"], 403);
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("rule \"team-a\"")
    );
    assert_eq!(response["auditAnnotations"]["aws-policy-rule"], "team-a");
    assert!(response.get("patch").is_none());
}

#[test]
fn mappings_the_policy_forbids_are_configuration_errors() {
    let mapping = |namespace: &str, identity: &str| {
        format!("identities: [{{namespace: \"{namespace}\", serviceAccount: app, {identity}}}]")
    };
    let cases = [
        format!("aws: {{roleArn: \"{ROLE_B}\"}}"),
        "aws: {mode: podIdentity}".to_owned(),
        format!("gcp: {{serviceAccount: \"{GSA_B}\"}}"),
        format!("azure: {{clientId: \"{CLIENT_B}\"}}"),
        format!("azure: {{clientId: \"{CLIENT_B}\", tenantId: \"{OTHER_TENANT}\"}}"),
        "azure: {}".to_owned(),
    ];
    for identity in &cases {
        config_in("", &mapping("team-b", identity)).unwrap_or_else(|err| panic!("team-b {identity}: {err}"));
        config_in("", &mapping("team-b-x", identity)).unwrap_or_else(|err| panic!("team-b-x {identity}: {err}"));
        let err = config_in("", &mapping("team-a", identity)).unwrap_err().to_string();
        assert!(err.contains("identities[0]."), "{err}");
        assert!(err.contains("rule \"team-a\""), "{identity}: {err}");
        // A mapping for every namespace needs a rule for every namespace.
        let err = config_in("", &mapping("*", identity)).unwrap_err().to_string();
        assert!(err.contains("no rule selects namespace *"), "{err}");
        // In warn mode the mapping loads, is logged, and its Pods are warned about.
        let config = config_in("mode: warn", &mapping("team-a", identity)).unwrap();
        assert!(config.notices().join("\n").contains("rule \"team-a\""), "{identity}");
        let mutation = pod_in("team-a", json!({}), &config);
        assert!(mutation.warnings.join("\n").contains("policy mode warn"), "{identity}");
    }
    // The mapping's own namespace's identities load; Google direct access through the cluster's
    // provider is any namespace's own principal.
    config_in("", &mapping("team-a", &format!("aws: {{roleArn: \"{ROLE_A}\"}}"))).unwrap();
    config_in("", &mapping("team-a", "gcp: {}")).unwrap();
}

#[test]
fn pod_identity_only_where_a_rule_allows_it() {
    let config = config_in(
        "mode: warn",
        "identities: [{namespace: team-a, aws: {mode: podIdentity}}, {namespace: team-b, aws: {mode: podIdentity}}]",
    )
    .unwrap();
    let b = pod_in("team-b", json!({}), &config);
    assert_eq!(b.policy[0].outcome(true), "allowed");
    let a = pod_in("team-a", json!({}), &config);
    assert_eq!(a.policy[0].outcome(true), "warned");
    assert!(a.warnings.join("\n").contains("EKS Pod Identity"));
}

#[test]
fn a_policy_with_mistakes_is_refused_field_by_field() {
    let bad = r#"
policy:
  mode: strict
"#;
    assert!(
        Config::parse(bad, &Default::default())
            .unwrap_err()
            .to_string()
            .contains("strict")
    );
    let bad = r#"
policy:
  rules:
    - {name: "", namespaces: []}
    - {name: x, namespaces: ["team a"], aws: {accounts: ["12"], roleArns: ["arn:aws:iam::1:role/a b"]}, gcp: {projects: [TEAM-B-PROJECT]}}
    - {name: y, namespaces: [a], azure: {clientId: "x"}}
"#;
    let err = Config::parse(bad, &Default::default()).unwrap_err().to_string();
    assert!(err.contains("unknown field `clientId`"), "{err}");
    let bad = bad.replace("    - {name: y, namespaces: [a], azure: {clientId: \"x\"}}\n", "");
    let err = Config::parse(&bad, &Default::default()).unwrap_err().to_string();
    for field in [
        "policy.rules[0].name: must not be empty",
        "policy.rules[0].namespaces: list at least one",
        "policy.rules[1].namespaces: \"team a\"",
        "policy.rules[1].aws.accounts: \"12\"",
        "policy.rules[1].aws.roleArns: \"arn:aws:iam::1:role/a b\"",
    ] {
        assert!(err.contains(field), "{field}: {err}");
    }
    // A project id in capitals is lowercased, as every value is.
    assert!(!err.contains("gcp.projects"), "{err}");
}

/// Rule `labelled` gives team-b's identities to the namespaces labelled `tenant: b` (and, with a
/// name pattern too, only to those of them named `shop-*`).
fn by_label(extra: &str) -> Config {
    by_label_parsed(extra).expect("the policy parses")
}

fn by_label_parsed(extra: &str) -> Result<Config, ConfigError> {
    let yaml = format!(
        r#"{}
{extra}
policy:
  rules:
    - name: labelled
      namespaceSelector:
        matchLabels: {{tenant: b}}
        matchExpressions:
          - {{key: example.com/stage, operator: NotIn, values: [sandbox]}}
      aws: {{roleArns: ["arn:aws:iam::111122223333:role/team-b-*"], podIdentity: true}}
      gcp: {{projects: [team-b-project], workloadIdentityProviders: ["{PROVIDER}", "{OTHER_PROVIDER}"]}}
      azure: {{clientIds: ["{CLIENT_B}", "*"], tenantIds: ["{TENANT}", "{OTHER_TENANT}"]}}
    - name: shops
      namespaces: ["shop-*"]
      namespaceSelector:
        matchExpressions: [{{key: pci, operator: Exists}}, {{key: frozen, operator: DoesNotExist}}]
      aws: {{roleArns: ["arn:aws:iam::111122223333:role/shop"]}}
"#,
        settings()
    );
    Config::parse(&yaml, &Default::default())
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn pod_labelled(namespace: &str, labels: Labels<'_>, annotations: Value, config: &Config) -> Mutation {
    mutate_pod(
        &pod(namespace, json!({})),
        Namespace {
            name: namespace,
            labels,
        },
        Some(&service_account(namespace, annotations)),
        config,
    )
}

#[test]
fn label_selectors_select_by_the_namespaces_labels() {
    let config = by_label("");
    let tenant_b = labels(&[("tenant", "b")]);
    let sandbox = labels(&[("tenant", "b"), ("example.com/stage", "sandbox")]);
    let staged = labels(&[("tenant", "b"), ("example.com/stage", "prod")]);
    let other = labels(&[("tenant", "a")]);
    for (cloud, annotations) in team_b_claims() {
        for (allowed, namespace_labels) in [(true, &tenant_b), (true, &staged), (false, &sandbox), (false, &other)] {
            let mutation = pod_labelled(
                "any-name",
                Labels::Known(namespace_labels),
                annotations.clone(),
                &config,
            );
            let expected: &[&str] = if allowed { &[cloud] } else { &[] };
            assert_eq!(clouds(&mutation), expected, "{annotations} in {namespace_labels:?}");
            let account = mutate_service_account(
                &service_account("any-name", annotations.clone()),
                Namespace {
                    name: "any-name",
                    labels: Labels::Known(namespace_labels),
                },
                &config,
            );
            assert_eq!(
                account.denied.is_none(),
                allowed,
                "{annotations} in {namespace_labels:?}"
            );
        }
        // Labels that could not be read select nothing, and the warning says why.
        let unknown = pod_labelled("any-name", Labels::Unknown, annotations.clone(), &config);
        assert!(clouds(&unknown).is_empty(), "{annotations}");
        let warning = unknown.warnings.join("\n");
        assert!(warning.contains("labels could not be read"), "{warning}");
    }
    // Name patterns and selector together: both must match.
    let role = json!({"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/shop"});
    let pci = labels(&[("pci", "")]);
    let frozen = labels(&[("pci", "yes"), ("frozen", "true")]);
    let shop = |name: &str, namespace_labels: &BTreeMap<String, String>| {
        clouds(&pod_labelled(
            name,
            Labels::Known(namespace_labels),
            role.clone(),
            &config,
        ))
    };
    assert_eq!(shop("shop-1", &pci), ["aws"]);
    assert!(shop("shop-1", &frozen).is_empty());
    assert!(shop("shop-1", &BTreeMap::new()).is_empty());
    assert!(shop("books", &pci).is_empty());
}

#[test]
fn a_mapping_for_labelled_namespaces_loads_and_is_judged_at_admission() {
    let mapping = format!("identities: [{{namespace: shop-1, serviceAccount: app, aws: {{roleArn: \"{ROLE_B}\"}}}}]");
    let config = by_label(&mapping);
    let tenant_b = labels(&[("tenant", "b")]);
    let given = pod_labelled("shop-1", Labels::Known(&tenant_b), json!({}), &config);
    assert_eq!(clouds(&given), ["aws"]);
    let withheld = pod_labelled("shop-1", Labels::Known(&labels(&[("tenant", "a")])), json!({}), &config);
    assert!(clouds(&withheld).is_empty());
    assert!(
        withheld
            .warnings
            .join("\n")
            .contains("no rule selects namespace shop-1")
    );
    // No rule could ever allow it: refused at load, as before.
    let never = by_label_parsed("identities: [{namespace: shop-1, serviceAccount: app, aws: {roleArn: \"arn:aws:iam::111122223333:role/root\"}}]")
        .unwrap_err()
        .to_string();
    assert!(never.contains("identities[0].aws"), "{never}");
}

#[test]
fn selectors_with_mistakes_are_refused_field_by_field() {
    let bad = r#"
policy:
  rules:
    - name: a
    - name: b
      namespaceSelector:
        matchLabels: {"bad key!": x, ok: "bad value!", "-x.io/a": y}
        matchExpressions:
          - {key: a, operator: In}
          - {key: b, operator: Exists, values: [x]}
          - {key: "", operator: NotIn, values: [x]}
"#;
    let err = Config::parse(bad, &Default::default()).unwrap_err().to_string();
    for field in [
        "policy.rules[0].namespaces: list at least one namespace pattern (\"*\" for all) or give a namespaceSelector",
        "policy.rules[1].namespaceSelector.matchLabels: \"bad key!\" is not a label key",
        "policy.rules[1].namespaceSelector.matchLabels: \"-x.io/a\" is not a label key",
        "policy.rules[1].namespaceSelector.matchLabels: \"bad value!\" is not a label value",
        "policy.rules[1].namespaceSelector.matchExpressions[0].operator: In needs at least one value in values",
        "policy.rules[1].namespaceSelector.matchExpressions[1].values: Exists takes no values",
        "policy.rules[1].namespaceSelector.matchExpressions[2].key: \"\" is not a label key",
    ] {
        assert!(err.contains(field), "{field}: {err}");
    }
    let unknown =
        "policy:\n  rules:\n    - {name: a, namespaceSelector: {matchExpressions: [{key: a, operator: Equals}]}}\n";
    let err = Config::parse(unknown, &Default::default()).unwrap_err().to_string();
    assert!(err.contains("Equals"), "{err}");
}
