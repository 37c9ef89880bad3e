//! Prometheus metrics, served as text on the plain-HTTP metrics port.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `Pod`, `ServiceAccount`, `other`, or `invalid` for bodies that are not an AdmissionReview.
    pub kind: &'static str,
    /// `mutated`, `unchanged`, `ignored`, or `rejected`.
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
pub struct PortLabels {
    /// `admission` or `metrics`.
    pub port: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Histogram,
    pub mutations: Family<CloudLabels, Counter>,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub config_mappings: Gauge,
    pub certificate_reloads: Family<ResultLabels, Counter>,
    pub certificate_not_after: Gauge,
    pub reviews_limited: Family<ReasonLabels, Counter>,
    pub requests_shed: Counter,
    pub connections_refused: Family<PortLabels, Counter>,
    pub lookups_skipped: Family<ReasonLabels, Counter>,
    pub mutations_missing: Family<SettingLabels, Counter>,
    pub warnings: Family<CloudLabels, Counter>,
    pub watch_connected: Family<WatchLabels, Gauge>,
    pub service_account_cache_size: Gauge,
    pub aws_region_detected: Family<DetectedRegionLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DetectedRegionLabels {
    /// The AWS region the issuer names.
    pub region: String,
    /// Where it comes from: the cluster's service-account issuer (its URL).
    pub issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    /// `service_accounts` or `config_map`.
    pub watch: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SettingLabels {
    /// A setting SDKs need that the Pod's injection lacked: `aws_region`, `azure_kubernetes_token_proxy`.
    pub setting: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("workload_identity_webhook");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission requests by object kind and result",
            requests.clone(),
        );
        // 50 µs .. ~1.6 s: admission answers are sub-millisecond, API look-ups take longer.
        let request_duration = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        registry.register(
            "admission_duration_seconds",
            "Time from request body received to response encoded",
            request_duration.clone(),
        );
        let mutations = Family::<CloudLabels, Counter>::default();
        registry.register("pod_mutations", "Pods given an identity, by cloud", mutations.clone());
        let config_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Identity mapping configuration loads by result",
            config_reloads.clone(),
        );
        let config_mappings = Gauge::default();
        registry.register("config_mappings", "Identity mappings in force", config_mappings.clone());
        let certificate_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Serving certificate loads by result",
            certificate_reloads.clone(),
        );
        let certificate_not_after = Gauge::default();
        registry.register(
            "serving_certificate_not_after_seconds",
            "Expiry (notAfter, Unix seconds) of the certificate being served",
            certificate_not_after.clone(),
        );
        let reviews_limited = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "admission_limited",
            "Pods allowed unchanged because they exceed a work bound: `containers` or `patch_size`",
            reviews_limited.clone(),
        );
        let requests_shed = Counter::default();
        registry.register(
            "admission_shed",
            "Admission requests answered 503 because the in-flight budget was spent",
            requests_shed.clone(),
        );
        let connections_refused = Family::<PortLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed at once because the port had its maximum open",
            connections_refused.clone(),
        );
        let lookups_skipped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "service_account_lookups_skipped",
            "ServiceAccount API look-ups not made: `recent_miss` (negative cache) or `rate_limited`",
            lookups_skipped.clone(),
        );
        let mutations_missing = Family::<SettingLabels, Counter>::default();
        registry.register(
            "pod_mutations_missing",
            "Pods given an identity without a setting their SDKs need, by setting (`aws_region`, `azure_kubernetes_token_proxy`)",
            mutations_missing.clone(),
        );
        let warnings = Family::<CloudLabels, Counter>::default();
        registry.register(
            "admission_warnings",
            "Warnings returned to users in admission answers, by the cloud they are about (`none`: the Pod as a whole)",
            warnings.clone(),
        );
        let watch_connected = Family::<WatchLabels, Gauge>::default();
        registry.register(
            "watch_connected",
            "1 while a watch of the Kubernetes API streams, 0 while it is broken and retrying, by watch (`service_accounts`, `config_map`)",
            watch_connected.clone(),
        );
        let service_account_cache_size = Gauge::default();
        registry.register(
            "service_account_cache_size",
            "ServiceAccounts held in the cache of the ServiceAccount watch",
            service_account_cache_size.clone(),
        );
        let aws_region_detected = Family::<DetectedRegionLabels, Gauge>::default();
        registry.register(
            "aws_region_detected",
            "1 for the AWS region the cluster's service-account issuer names (EKS), with that issuer: the default region where aws.region is not set",
            aws_region_detected.clone(),
        );
        Metrics {
            registry,
            requests,
            request_duration,
            mutations,
            config_reloads,
            config_mappings,
            certificate_reloads,
            certificate_not_after,
            reviews_limited,
            requests_shed,
            connections_refused,
            lookups_skipped,
            mutations_missing,
            warnings,
            watch_connected,
            service_account_cache_size,
            aws_region_detected,
        }
    }
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
