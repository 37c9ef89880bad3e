//! Trust rules: which ServiceAccount tokens may become which cloud identity, as the clouds' trust
//! policies, Pod Identity associations, federated identity credentials and workload identity
//! pool bindings say it.

use serde::Deserialize;

use super::jwt::{Claims, Expectation, KeySet, Refusal, verify};

/// The rules file (YAML), e.g.
///
/// ```yaml
/// aws:
///   roles:          # AssumeRoleWithWebIdentity: the role's trust policy
///     - {arn: "arn:aws:iam::111122223333:role/app", subjects: ["system:serviceaccount:team-a:app"]}
///   podIdentity:    # EKS Pod Identity associations
///     - {arn: "arn:aws:iam::111122223333:role/pods", subjects: ["system:serviceaccount:team-a:pods"]}
/// azure:            # federated identity credentials of app registrations
///   - {tenantId: "…", clientId: "…", subjects: ["system:serviceaccount:team-a:app"]}
/// google:
///   providers:      # workload identity pool providers; subjects = the attribute condition
///     - {name: "projects/1/locations/global/workloadIdentityPools/p/providers/r", subjects: ["…"]}
///   serviceAccounts: # roles/iam.workloadIdentityUser bindings for the pool's principals
///     - {email: "reader@my-project.iam.gserviceaccount.com", subjects: ["…"]}
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rules {
    #[serde(default)]
    pub aws: AwsRules,
    #[serde(default)]
    pub azure: Vec<AzureApp>,
    #[serde(default)]
    pub google: GoogleRules,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsRules {
    #[serde(default)]
    pub roles: Vec<Trust>,
    #[serde(default)]
    pub pod_identity: Vec<Trust>,
}

/// An identity (role ARN, Azure client id, Google provider or service account) and who may take it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Trust {
    /// Role ARN, provider resource name or service account e-mail.
    #[serde(alias = "arn", alias = "email")]
    pub name: String,
    /// Token audiences accepted; the cloud's default when empty.
    #[serde(default)]
    pub audiences: Vec<String>,
    pub subjects: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureApp {
    pub tenant_id: String,
    pub client_id: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub subjects: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GoogleRules {
    #[serde(default)]
    pub providers: Vec<Trust>,
    #[serde(default)]
    pub service_accounts: Vec<Trust>,
}

impl Rules {
    pub fn parse(text: &str) -> anyhow::Result<Rules> {
        Ok(serde_yaml_ng::from_str(text)?)
    }
}

/// Everything a token service decides with: the issuer it trusts, its keys and the rules.
#[derive(Debug)]
pub struct Trusts {
    pub issuer: String,
    pub keys: KeySet,
    pub rules: Rules,
}

fn audiences_or(configured: &[String], default: &[String]) -> Vec<String> {
    if configured.is_empty() {
        default.to_vec()
    } else {
        configured.to_vec()
    }
}

impl Trusts {
    /// Verifies the token for the named identity of `candidates`, whose audiences default to
    /// `default_audiences`, and checks the subject against its trust.
    pub fn decide(
        &self,
        token: &str,
        candidates: &[Trust],
        identity: &str,
        default_audiences: &[String],
        now: i64,
    ) -> Result<Claims, Refusal> {
        let trust = candidates
            .iter()
            .find(|trust| trust.name == identity)
            .ok_or_else(|| Refusal::UnknownIdentity(identity.to_owned()))?;
        let audiences = audiences_or(&trust.audiences, default_audiences);
        self.verify_subject(token, &audiences, &trust.subjects, identity, now)
    }

    /// Verifies the token and checks its subject against `subjects`.
    pub fn verify_subject(
        &self,
        token: &str,
        audiences: &[String],
        subjects: &[String],
        identity: &str,
        now: i64,
    ) -> Result<Claims, Refusal> {
        let claims = self.verify(token, audiences, now)?;
        if !subjects.contains(&claims.subject) {
            return Err(Refusal::UntrustedSubject {
                subject: claims.subject,
                identity: identity.to_owned(),
            });
        }
        Ok(claims)
    }

    /// Verifies signature, issuer, audience and time only.
    pub fn verify(&self, token: &str, audiences: &[String], now: i64) -> Result<Claims, Refusal> {
        verify(
            token,
            &self.keys,
            &Expectation {
                issuer: &self.issuer,
                audiences,
            },
            now,
        )
    }

    /// EKS Pod Identity: the association of the token's ServiceAccount decides the role.
    pub fn pod_identity(&self, token: &str, now: i64) -> Result<(String, Claims), Refusal> {
        let claims = self.verify(token, &[super::aws::POD_IDENTITY_AUDIENCE.to_owned()], now)?;
        self.rules
            .aws
            .pod_identity
            .iter()
            .find(|trust| trust.subjects.contains(&claims.subject))
            .map(|trust| (trust.name.clone(), claims.clone()))
            .ok_or_else(|| Refusal::UntrustedSubject {
                subject: claims.subject.clone(),
                identity: "any Pod Identity association".to_owned(),
            })
    }

    /// Entra ID: the federated identity credentials of the app registration `client_id` in `tenant`.
    pub fn azure(&self, token: &str, tenant: &str, client_id: &str, now: i64) -> Result<Claims, Refusal> {
        let identity = format!("app {client_id} in tenant {tenant}");
        let app = self
            .rules
            .azure
            .iter()
            .find(|app| app.tenant_id == tenant && app.client_id == client_id)
            .ok_or_else(|| Refusal::UnknownIdentity(identity.clone()))?;
        let audiences = audiences_or(&app.audiences, &[super::azure::AUDIENCE.to_owned()]);
        self.verify_subject(token, &audiences, &app.subjects, &identity, now)
    }
}
