//! The admin API (issue 16), served on the metrics listener only, never on `http_listen`:
//!
//! * `GET /admin/v1/allocations[?user=ID]`: every live allocation, or one user's (user id or
//!   full username), with its addresses, age, remaining lifetime and counters.
//! * `DELETE /admin/v1/allocations?user=ID`: ends that user's allocations now, over every
//!   transport; TCP/TLS connections close with them. Combine with `revoke` (and SIGHUP) to
//!   keep the user out: ending allocations does not invalidate a credential.
//! * `GET /admin/v1/stats`: the workers' counters summed, as JSON.
//!
//! Access: with `admin_key` set, every request needs `Authorization: Bearer KEY` (401 when
//! missing, 403 when wrong). Without it, the API answers only when the listener is bound to a
//! loopback address; bound beyond loopback it answers 403 (and start-up warns).
//!
//! Workers own their allocations, so each request goes to every worker through its
//! [`AdminSlot`] and waits at most [`WORKER_TIMEOUT`] for all answers (else 503).

use super::error::{method_not_allowed, ApiError};
use crate::relay::admin::{AdminReply, AdminRequest, AdminSlot};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use turnd_proto::server::SessionInfo;

/// How long the admin API waits for every worker to answer.
pub const WORKER_TIMEOUT: Duration = Duration::from_secs(2);

/// One worker, as the admin API reaches it.
pub struct WorkerLink {
    pub slot: Arc<AdminSlot>,
    pub waker: Arc<mio::Waker>,
}

/// What the admin handlers read.
pub struct AdminState {
    pub workers: Vec<WorkerLink>,
    /// `admin_key`, replaced on SIGHUP.
    pub live: Arc<crate::reload::Live>,
    /// The metrics listener is bound to a non-loopback address.
    pub beyond_loopback: bool,
    /// For `/admin/v1/stats`.
    pub sources: Arc<crate::metrics::Sources>,
}

/// The admin routes; merged into the metrics listener's router.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route(
            "/admin/v1/allocations",
            get(list).delete(end_user).fallback(method_not_allowed),
        )
        .route("/admin/v1/stats", get(stats).fallback(method_not_allowed))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .with_state(state)
}

/// The key check, before any handler (and before 405: an unauthenticated caller learns
/// nothing about the routes).
async fn authorize(
    State(state): State<Arc<AdminState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match check_key(&state, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn check_key(state: &AdminState, headers: &HeaderMap) -> Result<(), ApiError> {
    let live = state.live.get();
    let Some(key) = live.admin_key.as_deref() else {
        return if state.beyond_loopback {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the admin API is refused: metrics_listen is beyond loopback and no admin_key is configured",
            ))
        } else {
            Ok(())
        };
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // RFC 9110 §11.1: the scheme name is case-insensitive.
        .and_then(|v| {
            let (scheme, credentials) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(credentials)
        })
        .map(str::trim);
    match given {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing admin key (Authorization: Bearer KEY)",
        )),
        Some(g) if bool::from(g.as_bytes().ct_eq(key.as_bytes())) => Ok(()),
        Some(_) => Err(ApiError::new(StatusCode::FORBIDDEN, "wrong admin key")),
    }
}

/// The `user` query parameter: absent is None; present and empty (or repeated) is a 400.
fn user_param(query: Option<&str>) -> Result<Option<String>, ApiError> {
    let mut user = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if k == "user" {
            if v.is_empty() {
                return Err(ApiError::bad_request("user: must not be empty"));
            }
            if user.replace(v.into_owned()).is_some() {
                return Err(ApiError::bad_request("user: give it once"));
            }
        }
    }
    Ok(user)
}

/// Sends `request` to every worker and collects their answers, in worker order.
async fn ask_workers(
    workers: &[WorkerLink],
    request: AdminRequest,
) -> Result<Vec<AdminReply>, ApiError> {
    let busy = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "a relay worker is busy; try again (a DELETE may have ended part of the user's allocations already)",
        )
    };
    let mut waiting = Vec::with_capacity(workers.len());
    for w in workers {
        let (tx, rx) = tokio::sync::oneshot::channel();
        w.slot.offer(request.clone(), tx).map_err(|_| busy())?;
        let _ = w.waker.wake();
        waiting.push(rx);
    }
    let all = async {
        let mut replies = Vec::with_capacity(waiting.len());
        for rx in waiting {
            replies.push(rx.await.ok()?);
        }
        Some(replies)
    };
    match tokio::time::timeout(WORKER_TIMEOUT, all).await {
        Ok(Some(replies)) => Ok(replies),
        Ok(None) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "a relay worker stopped; is turnd shutting down?",
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "a relay worker did not answer within {} s",
                WORKER_TIMEOUT.as_secs()
            ),
        )),
    }
}

fn sessions_json(replies: Vec<AdminReply>) -> Vec<Value> {
    let now = crate::clock::unix_now();
    let mut out = Vec::new();
    for (worker, reply) in replies.into_iter().enumerate() {
        let (AdminReply::Sessions(s) | AdminReply::Ended(s)) = reply;
        out.extend(s.iter().map(|s| session_json(s, worker, now)));
    }
    out
}

/// One allocation as JSON (the `Allocation` schema of docs/admin-openapi.json).
pub fn session_json(s: &SessionInfo, worker: usize, unix_now: u64) -> Value {
    json!({
        "user_id": s.user_id,
        "username": s.username,
        "realm": s.realm,
        "transport": s.transport.label(),
        "client": s.client.to_string(),
        "server": s.server.to_string(),
        "relayed": s.relayed.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "created": unix_now.saturating_sub(s.age.as_secs()),
        "age_secs": s.age.as_secs(),
        "lifetime_remaining_secs": s.remaining.as_secs(),
        "ready": s.ready,
        "permissions": s.permissions,
        "channels": s.channels,
        "worker": worker,
        "to_peer": { "packets": s.usage.to_peer.packets, "bytes": s.usage.to_peer.bytes },
        "to_client": { "packets": s.usage.to_client.packets, "bytes": s.usage.to_client.bytes },
    })
}

async fn list(
    State(state): State<Arc<AdminState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let user = user_param(query.as_deref())?;
    let replies = ask_workers(&state.workers, AdminRequest::List { user }).await?;
    let allocations = sessions_json(replies);
    Ok(Json(
        json!({ "count": allocations.len(), "allocations": allocations }),
    ))
}

async fn end_user(
    State(state): State<Arc<AdminState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let Some(user) = user_param(query.as_deref())? else {
        return Err(ApiError::bad_request(
            "user: required (DELETE /admin/v1/allocations?user=ID ends that user's allocations)",
        ));
    };
    let replies = ask_workers(&state.workers, AdminRequest::EndUser { user: user.clone() }).await?;
    let ended = sessions_json(replies);
    tracing::info!(user, ended = ended.len(), "admin: user's allocations ended");
    Ok(Json(
        json!({ "user": user, "ended": ended.len(), "allocations": ended }),
    ))
}

async fn stats(State(state): State<Arc<AdminState>>) -> Json<Value> {
    let s = state.sources.total();
    let sources = &state.sources;
    let active: serde_json::Map<String, Value> = turnd_proto::Transport::ALL
        .iter()
        .map(|t| {
            let [v4, v6] = s.allocations_active[*t as usize];
            (t.label().to_owned(), json!(v4 + v6))
        })
        .collect();
    let ended: serde_json::Map<String, Value> = turnd_proto::server::EndReason::ALL
        .iter()
        .map(|r| (r.label().to_owned(), json!(s.ended_count(*r))))
        .collect();
    Json(json!({
        "workers": sources.workers.len(),
        "workers_running": sources.workers_running.load(std::sync::atomic::Ordering::Relaxed),
        "allocations_active": active,
        "allocations_created": s.allocations_created,
        "allocations_ended": ended,
        "allocations_refused": s.allocations_refused,
        "permissions_active": s.permissions_active,
        "channels_active": s.channels_active,
        "relay_ports_free": s.relay_ports_free,
        "relay_ports_total": s.relay_ports_total,
        "connections_open": sources.connections.open(),
        "to_peer": { "packets": s.packets_to_peer, "bytes": s.bytes_to_peer },
        "to_client": { "packets": s.packets_to_client, "bytes": s.bytes_to_client },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker that never answers (wedged, or gone) costs the caller 2 s and a 503, not a
    /// hung request; a full queue is a 503 at once.
    #[tokio::test]
    async fn a_worker_that_does_not_answer_is_a_503_after_two_seconds() {
        let poll = mio::Poll::new().unwrap();
        let link = WorkerLink {
            slot: Arc::new(AdminSlot::default()),
            waker: Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap()),
        };
        let workers = [link];
        let t0 = tokio::time::Instant::now();
        let e = ask_workers(&workers, AdminRequest::List { user: None })
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        let waited = t0.elapsed();
        assert!(waited >= WORKER_TIMEOUT && waited < WORKER_TIMEOUT + Duration::from_secs(1));
        for _ in 1..crate::relay::admin::MAX_QUEUED {
            let (tx, _rx) = tokio::sync::oneshot::channel();
            workers[0]
                .slot
                .offer(AdminRequest::List { user: None }, tx)
                .unwrap();
        }
        let t0 = tokio::time::Instant::now();
        let e = ask_workers(&workers, AdminRequest::List { user: None })
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.message.contains("busy"), "{}", e.message);
        assert!(t0.elapsed() < Duration::from_millis(500), "refused at once");
    }

    #[test]
    fn the_user_parameter_is_optional_but_never_empty_or_repeated() {
        assert_eq!(user_param(None).unwrap(), None);
        assert_eq!(user_param(Some("other=1")).unwrap(), None);
        assert_eq!(
            user_param(Some("user=al%20ice")).unwrap().as_deref(),
            Some("al ice")
        );
        assert_eq!(user_param(Some("user=")).unwrap_err().status, 400);
        assert_eq!(user_param(Some("user=a&user=b")).unwrap_err().status, 400);
    }
}
