//! Prometheus metrics, served as text on the plain-HTTP metrics port.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use super::process_metrics::ProcessCollector;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `Pod`, `ServiceAccount`, `other`, or `invalid` for bodies that are not an AdmissionReview.
    pub kind: &'static str,
    /// `mutated`, `unchanged`, `ignored`, `denied` (refused by the identity policy), or `rejected`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloudLabels {
    pub cloud: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `success` or `failure`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub cloud: &'static str,
    /// `refused`, `withheld` or `warned`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortLabels {
    /// `admission` or `metrics`.
    pub port: &'static str,
}

/// Declares every metric once: its field, its type, its name (after the `workload_identity_webhook_`
/// prefix), its help (the doc line) and its initial value; `Default` registers them all.
macro_rules! metrics {
    ($($(#[doc = $help:literal])+ $field:ident: $ty:ty = ($name:literal, $init:expr),)*) => {
        pub struct Metrics {
            registry: Registry,
            $($(#[doc = $help])+ pub $field: $ty,)*
        }

        impl Default for Metrics {
            fn default() -> Self {
                // The standard process_* series unprefixed, the webhook's own under its prefix.
                let mut registry = Registry::default();
                registry.register_collector(Box::new(ProcessCollector::default()));
                let ours = registry.sub_registry_with_prefix("workload_identity_webhook");
                $(
                    let $field: $ty = $init;
                    ours.register($name, concat!($($help),+).trim(), $field.clone());
                )*
                Metrics { registry, $($field,)* }
            }
        }

        impl Metrics {
            /// Every metric of the webhook as declared (name after the prefix, type, help): the
            /// reference lists them, families without a series yet included, which
            /// [`Metrics::encode`] leaves out.
            pub const DECLARED: &[(&str, MetricType, &str)] = &[
                $(($name, <$ty as TypedMetric>::TYPE, concat!($($help),+)),)*
            ];
        }
    };
}

metrics! {
    /// The running build: always 1, its version, git commit, compiler and target as labels
    build_info: Family<BuildLabels, Gauge> = ("build_info", build_info()),
    /// Admission requests by object kind and result
    requests: Family<RequestLabels, Counter> = ("admission_requests", Default::default()),
    /// Time from request body received to response encoded
    // 50 µs .. 3.2768 s: admission answers are sub-millisecond, API look-ups take longer, and the
    // last bucket is above the webhook configurations' timeoutSeconds (3), where the apiserver
    // gives up.
    request_duration: Histogram = ("admission_duration_seconds", Histogram::new(exponential_buckets(0.00005, 2.0, 17))),
    /// Pods given an identity, by cloud
    mutations: Family<CloudLabels, Counter> = ("pod_mutations", Default::default()),
    /// Identity mapping configuration loads by result
    config_reloads: Family<ResultLabels, Counter> = ("config_reloads", Default::default()),
    /// Identity mappings in force
    config_mappings: Gauge = ("config_mappings", Default::default()),
    /// Serving certificate loads by result
    certificate_reloads: Family<ResultLabels, Counter> = ("certificate_reloads", Default::default()),
    /// Expiry (notAfter, Unix seconds) of the certificate being served
    certificate_not_after: Gauge = ("serving_certificate_expiration_timestamp_seconds", Default::default()),
    /// Pods allowed unchanged because they exceed a work bound: `containers` or `patch_size`
    reviews_limited: Family<ReasonLabels, Counter> = ("admission_limited", Default::default()),
    /// Admission requests answered 503 because the in-flight budget was spent
    requests_shed: Counter = ("admission_shed", Default::default()),
    /// Connections closed at once because the port had its maximum open
    connections_refused: Family<PortLabels, Counter> = ("connections_refused", Default::default()),
    /// ServiceAccount API look-ups not made: `recent_miss` (negative cache) or `rate_limited`
    lookups_skipped: Family<ReasonLabels, Counter> = ("service_account_lookups_skipped", Default::default()),
    /// Pods given an identity without a setting their SDKs need, by setting (`aws_region`, `azure_kubernetes_token_proxy`)
    mutations_missing: Family<SettingLabels, Counter> = ("pod_mutations_missing", Default::default()),
    /// Identities the identity policy denied, by cloud and what came of it: `refused` (a ServiceAccount create or update, mode enforce), `withheld` (a Pod left without that cloud's identity, mode enforce), `warned` (mode warn)
    policy_denials: Family<PolicyLabels, Counter> = ("policy_denials", Default::default()),
    /// Warnings returned to users in admission answers, by the cloud they are about (`none`: the Pod as a whole)
    warnings: Family<CloudLabels, Counter> = ("admission_warnings", Default::default()),
    /// 1 while a watch of the Kubernetes API streams, 0 while it is broken and retrying, by watch (`service_accounts`, `namespaces`, `config_map`)
    watch_connected: Family<WatchLabels, Gauge> = ("watch_connected", Default::default()),
    /// ServiceAccounts held in the cache of the ServiceAccount watch
    service_account_cache_size: Gauge = ("service_account_cache_size", Default::default()),
    /// 1 for the AWS region the cluster's service-account issuer names (EKS), with that issuer: the default region where aws.region is not set
    aws_region_detected: Family<DetectedRegionLabels, Gauge> = ("aws_region_detected_info", Default::default()),
}

/// `build_info`: which build runs ([`crate::build_info`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
    /// The git commit, or `unknown` for a build without it.
    pub revision: &'static str,
    /// The compiler's version (as Go programs' `goversion`).
    pub rustc: &'static str,
    /// The target triple.
    pub target: &'static str,
}

/// The one series of `build_info`, set to 1.
fn build_info() -> Family<BuildLabels, Gauge> {
    let family = Family::<BuildLabels, Gauge>::default();
    let build = &crate::build_info::BUILD;
    family
        .get_or_create(&BuildLabels {
            version: build.version,
            revision: build.revision,
            rustc: build.rustc,
            target: build.target,
        })
        .set(1);
    family
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    /// `service_accounts` or `config_map`.
    pub watch: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DetectedRegionLabels {
    /// The AWS region the issuer names.
    pub region: String,
    /// Where it comes from: the cluster's service-account issuer (its URL).
    pub issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SettingLabels {
    /// A setting SDKs need that the Pod's injection lacked: `aws_region`, `azure_kubernetes_token_proxy`.
    pub setting: &'static str,
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Whether a watch streams (true) or is broken and retrying (false).
    pub fn set_watch_connected(&self, watch: &'static str, connected: bool) {
        self.watch_connected
            .get_or_create(&WatchLabels { watch })
            .set(i64::from(connected));
    }

    /// The region the cluster's issuer names, if any (the one series there is).
    pub fn set_detected_region(&self, region: Option<&str>, issuer: &str) {
        self.aws_region_detected.clear();
        if let Some(region) = region {
            self.aws_region_detected
                .get_or_create(&DetectedRegionLabels {
                    region: region.to_owned(),
                    issuer: issuer.to_owned(),
                })
                .set(1);
        }
    }

    pub fn record_reload(family: &Family<ResultLabels, Counter>, success: bool) {
        let result = if success { "success" } else { "failure" };
        family.get_or_create(&ResultLabels { result }).inc();
    }
}
