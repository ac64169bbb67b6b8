//! Metric names: one constant per series family, imported by the collector and the tests.
//! Dashboards and alerts are written against these exact names.

pub const BUILD_INFO: &str = "turnd_build_info";
pub const WORKERS_RUNNING: &str = "turnd_workers_running";
pub const ALLOCATIONS_ACTIVE: &str = "turnd_allocations_active";
pub const ALLOCATIONS_TOTAL: &str = "turnd_allocations_total";
pub const ALLOCATIONS_ENDED_TOTAL: &str = "turnd_allocations_ended_total";
pub const ALLOCATIONS_REFUSED_TOTAL: &str = "turnd_allocations_refused_total";
pub const ALLOCATION_LIFETIME_SECONDS: &str = "turnd_allocation_lifetime_seconds";
pub const STUN_BINDING_REQUESTS_TOTAL: &str = "turnd_stun_binding_requests_total";
pub const ERROR_RESPONSES_TOTAL: &str = "turnd_error_responses_total";
pub const AUTH_FAILURES_TOTAL: &str = "turnd_auth_failures_total";
pub const PEER_DENIED_TOTAL: &str = "turnd_peer_denied_total";
pub const EVENTS_DROPPED_TOTAL: &str = "turnd_events_dropped_total";
pub const USAGE_RECORDS_TOTAL: &str = "turnd_usage_records_total";
pub const USAGE_RECORDS_DROPPED_TOTAL: &str = "turnd_usage_records_dropped_total";
pub const ERROR_RESPONSES_SUPPRESSED_TOTAL: &str = "turnd_error_responses_suppressed_total";
pub const RELAYED_PACKETS_TOTAL: &str = "turnd_relayed_packets_total";
pub const RELAYED_BYTES_TOTAL: &str = "turnd_relayed_bytes_total";
pub const DROPPED_PACKETS_TOTAL: &str = "turnd_dropped_packets_total";
pub const PERMISSIONS_ACTIVE: &str = "turnd_permissions_active";
pub const CHANNELS_ACTIVE: &str = "turnd_channels_active";
pub const RELAY_PORTS_FREE: &str = "turnd_relay_ports_free";
pub const RELAY_PORTS_CONFIGURED: &str = "turnd_relay_ports_configured";
pub const RELAY_BIND_FAILURES_TOTAL: &str = "turnd_relay_bind_failures_total";
pub const FAST_PATH_ACTIVE: &str = "turnd_fast_path_active";
pub const CONNECTIONS_OPEN: &str = "turnd_connections_open";
pub const CONNECTIONS_REFUSED_TOTAL: &str = "turnd_connections_refused_total";
pub const CONNECTIONS_CLOSED_TOTAL: &str = "turnd_connections_closed_total";
pub const CONNECTION_BUFFER_BYTES: &str = "turnd_connection_buffer_bytes";
pub const SELFTEST_SUCCESS: &str = "turnd_selftest_success";
pub const SELFTEST_RTT_SECONDS: &str = "turnd_selftest_rtt_seconds";
pub const SELFTEST_RUNS_TOTAL: &str = "turnd_selftest_runs_total";
pub const CREDENTIALS_ISSUED_TOTAL: &str = "turnd_credentials_issued_total";
pub const TLS_CERTIFICATE_EXPIRY_SECONDS: &str = "turnd_tls_certificate_expiry_seconds";
pub const ACME_RENEWALS_TOTAL: &str = "turnd_acme_renewals_total";
pub const HTTP_CONNECTIONS_OPEN: &str = "turnd_http_connections_open";
pub const HTTP_CONNECTIONS_REFUSED_TOTAL: &str = "turnd_http_connections_refused_total";
pub const HTTP_CONNECTIONS_CLOSED_TOTAL: &str = "turnd_http_connections_closed_total";

/// Every family, with its type and meaning: the source of the README's metric table.
pub const ALL: &[(&str, &str, &str)] = &[
    (BUILD_INFO, "info", "Build information; label `version`. Always 1."),
    (WORKERS_RUNNING, "gauge", "Relay worker threads running their loop."),
    (ALLOCATIONS_ACTIVE, "gauge", "Allocations now, by `transport` (udp, tcp, tls) and `family` (ipv4, ipv6)."),
    (ALLOCATIONS_TOTAL, "counter", "Allocations created."),
    (ALLOCATIONS_ENDED_TOTAL, "counter", "Allocations ended, by `reason`: expired, deleted (Refresh with LIFETIME 0), connection_closed, revoked and credential_removed (by a SIGHUP reload), drained (the SIGTERM drain timed out), shutdown, admin."),
    (ALLOCATIONS_REFUSED_TOTAL, "counter", "Allocate requests refused after the 401 challenge (quota, capacity, bad request, auth)."),
    (ALLOCATION_LIFETIME_SECONDS, "histogram", "How long ended allocations lived."),
    (STUN_BINDING_REQUESTS_TOTAL, "counter", "STUN Binding requests answered."),
    (ERROR_RESPONSES_TOTAL, "counter", "STUN error responses sent, by `code` (400, 401, 403, 420, 437, 438, 440, 441, 442, 443, 486, 508)."),
    (AUTH_FAILURES_TOTAL, "counter", "Failed authentications, by `reason` (unknown_user, expired, ttl_too_long, bad_integrity, stale_nonce, missing_attributes, wrong_credentials, revoked, expired_on_allocation)."),
    (PEER_DENIED_TOTAL, "counter", "Peer addresses refused by policy (403 on CreatePermission/ChannelBind, Send dropped)."),
    (EVENTS_DROPPED_TOTAL, "counter", "Session events (refusals, denials, permission and channel changes) dropped because a worker's event queue was full; an allocation's end is never dropped."),
    (USAGE_RECORDS_TOTAL, "counter", "Usage records written to `usage_log`."),
    (USAGE_RECORDS_DROPPED_TOTAL, "counter", "Usage records dropped: the writer's queue was full or a write failed."),
    (ERROR_RESPONSES_SUPPRESSED_TOTAL, "counter", "Unauthenticated error responses (401, 438, 400), and Binding answers sent elsewhere or padded (RFC 5780) or to RFC 3489 requests, not sent because their source address was over `error_rate_per_source`, or because they were too large for the request (amplification cap): a sign of reflection attempts."),
    (RELAYED_PACKETS_TOTAL, "counter", "Packets relayed, by `direction` (to_peer, to_client)."),
    (RELAYED_BYTES_TOTAL, "counter", "Application bytes relayed (no TURN framing), by `direction`."),
    (DROPPED_PACKETS_TOTAL, "counter", "Packets dropped: not STUN/TURN, no allocation, no permission, unknown channel."),
    (PERMISSIONS_ACTIVE, "gauge", "Permissions installed (0 as soon as no allocation is left)."),
    (CHANNELS_ACTIVE, "gauge", "Channel bindings live (expiries counted within a second; 0 as soon as no allocation is left)."),
    (RELAY_PORTS_FREE, "gauge", "Relay ports free to allocate."),
    (RELAY_PORTS_CONFIGURED, "gauge", "Relay ports configured (per address family)."),
    (FAST_PATH_ACTIVE, "gauge", "1 when the XDP fast path is attached and relays UDP ChannelData in the kernel (its packets and bytes are in the relayed counters), 0 when it is off or could not attach (the log says why)."),
    (RELAY_BIND_FAILURES_TOTAL, "counter", "Relay ports that could not be bound (held by another process); another port is tried."),
    (CONNECTIONS_OPEN, "gauge", "TCP and TLS client connections open."),
    (CONNECTIONS_REFUSED_TOTAL, "counter", "TCP and TLS connections refused at accept, by `reason` (per_address: `max_connections_per_ip`, an IPv6 client counted by its /`ipv6_source_prefix`; total: `max_connections`)."),
    (CONNECTIONS_CLOSED_TOTAL, "counter", "TCP and TLS connections closed by turnd to protect others, by `reason` (idle, idle_near_cap: the idle timeout shortened near `max_connections`, tls_handshake_timeout, stalled: answers unread for `tcp_idle_timeout`)."),
    (CONNECTION_BUFFER_BYTES, "gauge", "Memory held by TCP and TLS connections' frame and send buffers, bytes (measured every second; idle connections give theirs back)."),
    (SELFTEST_SUCCESS, "gauge", "1 when the last self-probe relayed data through this server over every transport, else 0."),
    (SELFTEST_RTT_SECONDS, "gauge", "Round-trip time through the relay measured by the last passing self-probe (worst transport's median)."),
    (SELFTEST_RUNS_TOTAL, "counter", "Self-probes run."),
    (CREDENTIALS_ISSUED_TOTAL, "counter", "Credentials minted by the HTTP API."),
    (TLS_CERTIFICATE_EXPIRY_SECONDS, "gauge", "When the TLS certificate served now expires, Unix seconds (notAfter); absent without TLS or before ACME's first certificate."),
    (ACME_RENEWALS_TOTAL, "counter", "ACME orders (first certificate and renewals), by `result` (success, failure, rate_limited: the CA refused for a rate limit)."),
    (HTTP_CONNECTIONS_OPEN, "gauge", "Connections held by the HTTP listeners (credential API and metrics)."),
    (HTTP_CONNECTIONS_REFUSED_TOTAL, "counter", "HTTP connections closed as soon as accepted, by `reason` (per_address: the client holds http_max_connections_per_ip; full: the listener is full and the newcomer sent nothing within 250 ms, or every held connection is busy), or not accepted (accept_error: out of file descriptors)."),
    (HTTP_CONNECTIONS_CLOSED_TOTAL, "counter", "HTTP connections closed by turnd, by `reason` (header_timeout, body_timeout: answered 408, idle_timeout, evicted: the listener was full and this was its longest-waiting idle connection)."),
];
