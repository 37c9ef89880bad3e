//! The in-flight budget: KiB of request bodies and answers held in memory at once.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::OwnedSemaphorePermit;

use super::AppState;

/// The least a request is charged: small reviews are not free (headers, parsing, the answer).
const MIN_CHARGE_KIB: u32 = 16;

impl AppState {
    /// A share of the in-flight budget for `bytes`, or `None` when it is spent.
    pub(super) fn charge(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(MIN_CHARGE_KIB);
        self.in_flight.clone().try_acquire_many_owned(kib).ok()
    }

    pub(super) fn shed(&self) -> Response {
        self.metrics.requests_shed.inc();
        tracing::warn!(
            budget_bytes = self.limits.max_in_flight_bytes,
            "admission request shed: in-flight budget spent"
        );
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "webhook busy: too many bytes of reviews in flight\n",
        )
            .into_response()
    }
}

pub(super) struct Charged {
    pub(super) json: Vec<u8>,
    pub(super) _permit: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.json
    }
}
