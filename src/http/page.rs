//! The browser relay test page at `/`: one HTML file, no build step, embedded in the binary.
//! It fetches ICE servers from the credential endpoint, connects two RTCPeerConnections
//! relay-only through turnd and shows the candidates, the selected pair, a timeline and the
//! likely cause of a failure. `?transport=udp|tcp|tls`, `?key=` and `?autorun` configure it.

use axum::http::header;
use axum::response::IntoResponse;

pub const PAGE: &str = include_str!("page.html");

pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
}
