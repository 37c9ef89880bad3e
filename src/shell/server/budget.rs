//! The in-flight budget: KiB of request bodies and answers held in memory at once. Every answer,
//! refusals included, is charged until its last byte has been written out (or the connection that
//! was to carry it is gone): a client that never reads must not hold memory the budget does not see.
//! One client IP may hold at most a [`PEER_SHARE`]th of it, so a client that sends reviews and
//! never reads their answers cannot shed the apiserver's.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError};

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::AppState;

/// The least a request is charged: small reviews are not free (headers, parsing, the answer).
const MIN_CHARGE_KIB: u32 = 16;

/// The part of the budget one client IP may hold: a quarter.
pub(super) const PEER_SHARE: usize = 4;

/// Client IPs whose share is tracked at once; beyond it, those holding nothing are forgotten,
/// and while all hold something a new client is charged to the total alone.
const MAX_PEERS: usize = 4096;

/// The budget's shares, per client IP.
#[derive(Default)]
pub(super) struct PeerShares(pub(super) std::sync::Mutex<HashMap<IpAddr, Arc<Semaphore>>>);

/// What a request or an answer holds of the budget, given back when dropped.
pub(super) struct Charge {
    _total: OwnedSemaphorePermit,
    _peer: Option<OwnedSemaphorePermit>,
}

impl AppState {
    /// A share of the in-flight budget for `bytes` asked by `peer`, or `None` when the budget, or
    /// the peer's share of it, is spent.
    pub(super) fn charge(&self, bytes: usize, peer: Option<IpAddr>) -> Option<Charge> {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(MIN_CHARGE_KIB);
        let share = peer.and_then(|peer| self.peer_share(peer));
        let peer = match share {
            Some(share) => Some(share.try_acquire_many_owned(kib).ok()?),
            None => None,
        };
        let total = self.in_flight.clone().try_acquire_many_owned(kib).ok()?;
        Some(Charge {
            _total: total,
            _peer: peer,
        })
    }

    /// The semaphore of `peer`'s share, made on first use; `None` when [`MAX_PEERS`] clients all
    /// hold part of the budget.
    fn peer_share(&self, peer: IpAddr) -> Option<Arc<Semaphore>> {
        let kib = self.in_flight_kib / PEER_SHARE;
        let mut shares = self.peer_shares.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !shares.contains_key(&peer) && shares.len() >= MAX_PEERS {
            shares.retain(|_, share| share.available_permits() < kib);
            if shares.len() >= MAX_PEERS {
                return None;
            }
        }
        Some(
            shares
                .entry(peer)
                .or_insert_with(|| Arc::new(Semaphore::new(kib)))
                .clone(),
        )
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

    /// `bytes` as a body charged to the budget (and `peer`'s share) until they are written out or
    /// dropped, or `None` when the budget is spent.
    pub(super) fn charged_body(&self, bytes: Vec<u8>, peer: Option<IpAddr>) -> Option<Body> {
        let charge = self.charge(bytes.len(), peer)?;
        // The charge goes back when the last reference to the bytes does, once they are written.
        Some(Body::from(Bytes::from_owner(Charged { bytes, _charge: charge })))
    }

    /// A plain-text refusal, charged like an answer (or shed when the budget is spent).
    pub(super) fn refusal(&self, status: StatusCode, message: &str, peer: Option<IpAddr>) -> Response {
        match self.charged_body(format!("{message}\n").into_bytes(), peer) {
            Some(body) => (status, body).into_response(),
            None => self.shed(),
        }
    }
}

struct Charged {
    bytes: Vec<u8>,
    _charge: Charge,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}
