//! What came of each request: its metrics, and the audit log of every identity given.

use workload_identity_core::admission::{Review, Subject};
use workload_identity_core::echo::LogRateLimit;
use workload_identity_core::mutation::Mutation;

use super::AppState;
use super::router::{PeerText, Refused};
use crate::shell::metrics::{CloudLabels, PolicyLabels, ReasonLabels, RequestLabels, SettingLabels};

/// What came of one request: everything its metrics and its log lines report.
pub(super) enum Outcome<'a> {
    Refused(&'a Refused),
    Answered {
        review: &'a Review,
        mutation: &'a Mutation,
        mutated: bool,
        /// The bound that left the patch out (`containers`, `patch_size`).
        limited: Option<&'static str>,
    },
}

/// The one place a request is counted and logged (its duration aside, which [`mutate`] measures).
pub(super) fn record(state: &AppState, peer: PeerText, outcome: Outcome<'_>) {
    let metrics = &state.metrics;
    match outcome {
        Outcome::Refused(refused) => {
            metrics
                .requests
                .get_or_create(&RequestLabels {
                    kind: "invalid",
                    result: "rejected",
                })
                .inc();
            static REFUSAL_LINES: LogRateLimit = LogRateLimit::new(LOG_LINES_PER_SECOND);
            log_limited(&REFUSAL_LINES, "admission requests rejected", || {
                tracing::warn!(status = %refused.status, %peer, message = refused.message, "admission request rejected");
            });
        }
        Outcome::Answered {
            review,
            mutation,
            mutated,
            limited,
        } => {
            count_limited(state, limited);
            let (kind, result) = request_labels(&review.subject, !mutated);
            let result = if mutation.denied.is_some() { "denied" } else { result };
            metrics.requests.get_or_create(&RequestLabels { kind, result }).inc();
            audit(review, mutation, mutated, peer);
            let pod = matches!(review.subject, Subject::Pod(_));
            for check in mutation.policy.iter().filter(|check| check.decision.is_denied()) {
                metrics
                    .policy_denials
                    .get_or_create(&PolicyLabels {
                        cloud: check.cloud,
                        outcome: check.outcome(pod),
                    })
                    .inc();
            }
            for &cloud in &mutation.warning_clouds {
                metrics.warnings.get_or_create(&CloudLabels { cloud }).inc();
            }
            if let Subject::Pod(_) = review.subject
                && mutated
            {
                for (cloud, _) in &mutation.identities {
                    metrics.mutations.get_or_create(&CloudLabels { cloud }).inc();
                }
                for &setting in &mutation.gaps {
                    metrics
                        .mutations_missing
                        .get_or_create(&SettingLabels { setting })
                        .inc();
                }
            }
        }
    }
}

pub(super) fn count_limited(state: &AppState, limited: Option<&'static str>) {
    if let Some(reason) = limited {
        state
            .metrics
            .reviews_limited
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}

fn request_labels(subject: &Subject, unchanged: bool) -> (&'static str, &'static str) {
    let kind = match subject {
        Subject::Pod(_) => "Pod",
        Subject::ServiceAccount(_) => "ServiceAccount",
        Subject::Ignored(_) | Subject::Unreadable(_) => "other",
    };
    let result = match subject {
        Subject::Ignored(_) | Subject::Unreadable(_) => "ignored",
        _ if unchanged => "unchanged",
        _ => "mutated",
    };
    (kind, result)
}

/// The audit trail: every identity given, with who got it and who asked.
fn audit(review: &Review, mutation: &Mutation, mutated: bool, peer: PeerText) {
    let namespace = review.object_namespace();
    match &review.subject {
        Subject::Pod(pod) if mutated => tracing::info!(
            uid = review.uid,
            %peer,
            namespace,
            pod = pod.metadata.display_name(),
            service_account = pod.service_account_name(),
            identities = ?mutation.identities,
            "pod mutated"
        ),
        Subject::ServiceAccount(sa) if mutated => tracing::info!(
            uid = review.uid,
            %peer,
            namespace,
            service_account = sa.metadata.display_name(),
            identities = ?mutation.identities,
            "service account annotated"
        ),
        Subject::ServiceAccount(sa) if mutation.denied.is_some() => tracing::info!(
            uid = review.uid,
            %peer,
            namespace,
            service_account = sa.metadata.display_name(),
            refusal = mutation.denied.as_deref().unwrap_or_default(),
            "service account refused by the identity policy"
        ),
        _ => tracing::debug!(uid = review.uid, %peer, namespace, "request left untouched"),
    }
    static WARNING_LINES: LogRateLimit = LogRateLimit::new(LOG_LINES_PER_SECOND);
    for warning in &mutation.warnings {
        log_limited(&WARNING_LINES, "admission warnings", || {
            tracing::warn!(uid = review.uid, %peer, namespace, warning, "admission warning");
        });
    }
}

/// Any tenant can make each create attempt warn, and any client that reaches the port can send
/// refused requests; the log must not grow with such a flood.
const LOG_LINES_PER_SECOND: u32 = 50;

/// Writes a line with `line` unless `limit` has let [`LOG_LINES_PER_SECOND`] of its kind through
/// this second; says once a second how many `what` were left out.
fn log_limited(limit: &LogRateLimit, what: &str, line: impl FnOnce()) {
    let second = std::time::SystemTime::UNIX_EPOCH
        .elapsed()
        .map_or(0, |since| since.as_secs());
    let (allowed, left_out) = limit.allow(second);
    if left_out > 0 {
        tracing::warn!(
            left_out,
            "{what} not logged (more than {LOG_LINES_PER_SECOND} a second)"
        );
    }
    if allowed {
        line();
    }
}
