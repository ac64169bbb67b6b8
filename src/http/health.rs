//! `/healthz` (the process answers) and `/readyz` (listeners bound and every worker running).

use super::HttpState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<Arc<HttpState>>) -> (StatusCode, Json<Value>) {
    let running = state.workers_running.load(Ordering::Relaxed);
    let probe = &state.probe;
    let draining = state.ledger.is_draining();
    let ready = running == state.workers_expected && running > 0 && probe.healthy() && !draining;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "ready": ready,
            "draining": draining,
            "workers": { "running": running, "expected": state.workers_expected },
            "listeners": { "udp": state.listeners.udp, "tcp": state.listeners.tcp, "tls": state.listeners.tls },
            "selftest": {
                "enabled": probe.enabled.load(Ordering::Relaxed),
                "runs": probe.runs.load(Ordering::Relaxed),
                "passing": probe.passing.load(Ordering::Relaxed),
                "consecutive_failures": probe.consecutive_failures.load(Ordering::Relaxed),
                "last_cause": probe.last_cause.lock().map(|c| c.clone()).unwrap_or_default(),
            },
            "acme": state.acme.as_ref().map(|a| a.readiness()),
        })),
    )
}
