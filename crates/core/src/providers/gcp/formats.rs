//! Google Cloud's formats: service-account e-mails, project ids, workload identity providers.

/// A Google service account e-mail: `name@project.iam.gserviceaccount.com` and the older
/// `...@developer.gserviceaccount.com` / `...@appspot.gserviceaccount.com` forms.
pub fn is_google_service_account(value: &str) -> bool {
    let Some((local, domain)) = value.split_once('@') else {
        return false;
    };
    let domain_ok = domain.ends_with(".gserviceaccount.com")
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    domain_ok
        && (1..=100).contains(&local.len())
        && local
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// A Google Cloud project id: 6-30 lowercase letters, digits and hyphens, starting with a letter
/// and not ending with a hyphen.
pub fn is_google_project_id(value: &str) -> bool {
    (6..=30).contains(&value.len())
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && !value.ends_with('-')
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The project of a user-managed service account, `name@PROJECT.iam.gserviceaccount.com`; other
/// forms (`...@developer.gserviceaccount.com`, domain-scoped projects) name none.
pub fn google_project_of(email: &str) -> Option<&str> {
    let (_, domain) = email.split_once('@')?;
    let project = domain.strip_suffix(".iam.gserviceaccount.com")?;
    is_google_project_id(project).then_some(project)
}

/// `projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>`.
pub fn is_workload_identity_provider(value: &str) -> bool {
    let parts: Vec<&str> = value.split('/').collect();
    let id_ok = |id: &str| {
        (4..=32).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    parts.len() == 8
        && parts[0] == "projects"
        && !parts[1].is_empty()
        && parts[1].bytes().all(|b| b.is_ascii_digit())
        && parts[2] == "locations"
        && parts[3] == "global"
        && parts[4] == "workloadIdentityPools"
        && id_ok(parts[5])
        && parts[6] == "providers"
        && id_ok(parts[7])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_projects() {
        assert!(is_google_project_id("my-project-123"));
        for bad in [
            "short",
            "1starts-with-digit",
            "ends-with-",
            "Upper-case",
            "a-project-id-longer-than-30-chars",
        ] {
            assert!(!is_google_project_id(bad), "{bad:?} must be refused");
        }
        assert_eq!(
            google_project_of("reader@my-project.iam.gserviceaccount.com"),
            Some("my-project")
        );
        assert_eq!(google_project_of("123-compute@developer.gserviceaccount.com"), None);
        assert_eq!(google_project_of("reader@x.iam.gserviceaccount.com"), None);
    }

    #[test]
    fn google_service_accounts() {
        assert!(is_google_service_account("reader@my-project.iam.gserviceaccount.com"));
        assert!(is_google_service_account("123-compute@developer.gserviceaccount.com"));
        for bad in [
            "reader",
            "reader@example.com",
            "Reader@p.iam.gserviceaccount.com",
            "a\"@p.iam.gserviceaccount.com",
            "@p.iam.gserviceaccount.com",
        ] {
            assert!(!is_google_service_account(bad), "{bad:?} must be refused");
        }
    }

    #[test]
    fn workload_identity_providers() {
        assert!(is_workload_identity_provider(
            "projects/123456789/locations/global/workloadIdentityPools/pool-1/providers/provider-1"
        ));
        for bad in [
            "projects/abc/locations/global/workloadIdentityPools/pool/providers/prov",
            "projects/1/locations/us/workloadIdentityPools/pool/providers/prov",
            "projects/1/locations/global/workloadIdentityPools/pool/providers/prov/extra",
            "projects/1/locations/global/workloadIdentityPools/POOL/providers/prov",
        ] {
            assert!(!is_workload_identity_provider(bad), "{bad:?} must be refused");
        }
    }
}
