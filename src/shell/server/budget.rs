//! The in-flight budget: KiB of request bodies and answers held in memory at once. Every answer,
//! refusals included, is charged until its last byte has been written out (or the connection that
//! was to carry it is gone): a client that never reads must not hold memory the budget does not see.

use axum::body::{Body, Bytes};
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

    /// The answer when the budget is spent: a fixed text, which costs no allocation.
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

    /// `bytes` as a body charged to the budget until they are written out or dropped, or `None`
    /// when the budget is spent.
    pub(super) fn charged_body(&self, bytes: Vec<u8>) -> Option<Body> {
        let permit = self.charge(bytes.len())?;
        // The permit goes back when the last reference to the bytes does, once they are written.
        Some(Body::from(Bytes::from_owner(Charged { bytes, _permit: permit })))
    }

    /// A plain-text refusal, charged like an answer (or shed when the budget is spent).
    pub(super) fn refusal(&self, status: StatusCode, message: &str) -> Response {
        match self.charged_body(format!("{message}\n").into_bytes()) {
            Some(body) => (status, body).into_response(),
            None => self.shed(),
        }
    }
}

struct Charged {
    bytes: Vec<u8>,
    _permit: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}
