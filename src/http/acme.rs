//! HTTP-01 (RFC 8555 §8.3): the CA fetches `/.well-known/acme-challenge/<token>` from port 80
//! and expects the key authorization as the whole body. Only tokens of the order in flight
//! are known; anything else is a 404 like any unknown path.

use super::error::ApiError;
use super::HttpState;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

pub async fn http01(State(state): State<Arc<HttpState>>, Path(token): Path<String>) -> Response {
    match state.acme.as_ref().and_then(|a| a.challenges.http(&token)) {
        Some(key_authorization) => {
            tracing::info!(token = %token, "HTTP-01 challenge answered");
            (
                [(CONTENT_TYPE, "application/octet-stream")],
                key_authorization,
            )
                .into_response()
        }
        None => ApiError::new(StatusCode::NOT_FOUND, "no such ACME challenge").into_response(),
    }
}
