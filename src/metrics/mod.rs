//! Prometheus metrics: per-worker counters gathered at scrape time.
//!
//! The workers never touch a metric: each counts in its own `turnd_proto::stats::Stats` (plain
//! integers) and copies them out a few times a second. A scrape sums the copies and encodes
//! them with prometheus-client. Every label value is a bounded enum, never a username, an
//! address or a port, so the number of series is fixed at start-up.

pub mod exposition;
pub mod names;

use crate::http::HttpState;
use crate::relay::limits::Shed;
use names::*;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use turnd_proto::auth::AuthFailure;
use turnd_proto::server::reject::Reject;
use turnd_proto::server::EndReason;
use turnd_proto::stats::{Stats, LIFETIME_BUCKETS};
use turnd_proto::Transport;

/// Where a scrape reads from.
#[derive(Debug)]
pub struct Sources {
    pub workers: Vec<Arc<Mutex<Stats>>>,
    pub workers_running: Arc<AtomicUsize>,
    pub http: Option<Arc<HttpState>>,
    pub connections: Arc<crate::relay::limits::ConnLimits>,
    pub probe: Arc<crate::selftest::probe::ProbeState>,
    /// The HTTP listeners' connection counters.
    pub http_edge: Arc<crate::http::edge::EdgeStats>,
    /// The TLS certificate, for its expiry.
    pub certs: Option<Arc<crate::tls::CertStore>>,
    /// Built-in ACME, for its renewals.
    pub acme: Option<Arc<crate::acme::Acme>>,
    /// The usage log's counters, when `usage_log` is set.
    pub usage: Option<Arc<crate::events::usage_log::UsageCounters>>,
    /// The kernel fast path, when attached.
    pub fast_path: Option<Arc<crate::fast_path::FastPath>>,
}

impl Sources {
    /// The workers' counters, summed, with what the kernel fast path relayed added in: the
    /// relayed packet and byte counters count every relayed packet, whichever path took it.
    pub fn total(&self) -> Stats {
        let mut t = total(
            self.workers
                .iter()
                .map(|w| w.lock().map(|s| s.clone()).unwrap_or_default()),
        );
        if let Some(fp) = &self.fast_path {
            let k = fp.totals();
            t.packets_to_peer += k.to_peer.packets;
            t.bytes_to_peer += k.to_peer.bytes;
            t.packets_to_client += k.to_client.packets;
            t.bytes_to_client += k.to_client.bytes;
        }
        t
    }
}

/// Per-worker counters, summed.
pub fn total(workers: impl IntoIterator<Item = Stats>) -> Stats {
    let mut t = Stats::default();
    for s in workers {
        add(&mut t, &s);
    }
    t
}

/// Adds one worker's counters into the total. `from` is destructured without `..`: a field
/// added to [`Stats`] does not compile until it is summed here.
fn add(into: &mut Stats, from: &Stats) {
    fn sum<const N: usize>(a: &mut [u64; N], b: &[u64; N]) {
        for (a, b) in a.iter_mut().zip(b) {
            *a += b;
        }
    }
    let Stats {
        binding_requests,
        allocations_created,
        allocations_ended,
        allocations_refused,
        allocations_active,
        permissions_active,
        channels_active,
        relay_ports_free,
        relay_ports_total,
        error_responses,
        error_responses_suppressed,
        auth_failures,
        peer_denied,
        packets_to_peer,
        bytes_to_peer,
        packets_to_client,
        bytes_to_client,
        dropped_packets,
        relay_bind_failures,
        lifetime_buckets,
        lifetime_sum_secs,
        lifetime_count,
        events_dropped,
    } = from;
    into.binding_requests += binding_requests;
    into.allocations_created += allocations_created;
    sum(&mut into.allocations_ended, allocations_ended);
    into.allocations_refused += allocations_refused;
    for (a, b) in into.allocations_active.iter_mut().zip(allocations_active) {
        sum(a, b);
    }
    into.permissions_active += permissions_active;
    into.channels_active += channels_active;
    into.relay_ports_free += relay_ports_free;
    into.relay_ports_total += relay_ports_total;
    sum(&mut into.error_responses, error_responses);
    into.error_responses_suppressed += error_responses_suppressed;
    sum(&mut into.auth_failures, auth_failures);
    into.peer_denied += peer_denied;
    into.packets_to_peer += packets_to_peer;
    into.bytes_to_peer += bytes_to_peer;
    into.packets_to_client += packets_to_client;
    into.bytes_to_client += bytes_to_client;
    into.dropped_packets += dropped_packets;
    into.relay_bind_failures += relay_bind_failures;
    sum(&mut into.lifetime_buckets, lifetime_buckets);
    into.lifetime_sum_secs += lifetime_sum_secs;
    into.lifetime_count += lifetime_count;
    into.events_dropped += events_dropped;
}

/// Counter families are registered without `_total`; OpenMetrics adds it to the sample.
fn base(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

fn help(name: &str) -> &'static str {
    ALL.iter()
        .find(|(n, _, _)| *n == name)
        .map_or("", |(_, _, h)| h)
}

fn counter(enc: &mut DescriptorEncoder, name: &str, v: u64) -> fmt::Result {
    let m = enc.encode_descriptor(base(name), help(name), None, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    label: &str,
    rows: &[(&str, u64)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(base(name), help(name), None, MetricType::Counter)?;
    for (value, v) in rows {
        let labels = [(label, *value)];
        ConstCounter::new(*v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, v: u64) -> fmt::Result {
    let m = enc.encode_descriptor(name, help(name), None, MetricType::Gauge)?;
    ConstGauge::new(v as i64).encode(m)
}

impl Collector for Sources {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = self.total();
        let e = &mut enc;

        let m = e.encode_descriptor(
            base(BUILD_INFO).trim_end_matches("_info"),
            help(BUILD_INFO),
            None,
            MetricType::Info,
        )?;
        let mut m = m;
        m.encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        gauge(
            e,
            WORKERS_RUNNING,
            self.workers_running.load(Ordering::Relaxed) as u64,
        )?;

        let mut m = e.encode_descriptor(
            ALLOCATIONS_ACTIVE,
            help(ALLOCATIONS_ACTIVE),
            None,
            MetricType::Gauge,
        )?;
        for t in Transport::ALL {
            for (f, family) in ["ipv4", "ipv6"].iter().enumerate() {
                let labels = [("transport", t.label()), ("family", family)];
                ConstGauge::new(s.allocations_active[t as usize][f] as i64)
                    .encode(m.encode_family(&labels)?)?;
            }
        }
        counter(e, ALLOCATIONS_TOTAL, s.allocations_created)?;
        let ended: Vec<(&str, u64)> = EndReason::ALL
            .iter()
            .map(|r| (r.label(), s.ended_count(*r)))
            .collect();
        counters(e, ALLOCATIONS_ENDED_TOTAL, "reason", &ended)?;
        counter(e, ALLOCATIONS_REFUSED_TOTAL, s.allocations_refused)?;

        let mut buckets: Vec<(f64, u64)> = LIFETIME_BUCKETS
            .iter()
            .copied()
            .zip(s.lifetime_buckets)
            .collect();
        buckets.push((f64::MAX, s.lifetime_buckets[LIFETIME_BUCKETS.len()]));
        e.encode_descriptor(
            ALLOCATION_LIFETIME_SECONDS,
            help(ALLOCATION_LIFETIME_SECONDS),
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(
            s.lifetime_sum_secs,
            s.lifetime_count,
            &buckets,
            None,
        )?;

        counter(e, STUN_BINDING_REQUESTS_TOTAL, s.binding_requests)?;
        // One series per code: rejects that share a code (two kinds of 400) are summed.
        let mut by_code: Vec<(u16, u64)> = Vec::new();
        for r in Reject::ALL {
            match by_code.iter_mut().find(|(c, _)| *c == r.code()) {
                Some((_, v)) => *v += s.error_responses[r.index()],
                None => by_code.push((r.code(), s.error_responses[r.index()])),
            }
        }
        let codes: Vec<(String, u64)> = by_code.iter().map(|(c, v)| (c.to_string(), *v)).collect();
        let rows: Vec<(&str, u64)> = codes.iter().map(|(c, v)| (c.as_str(), *v)).collect();
        counters(e, ERROR_RESPONSES_TOTAL, "code", &rows)?;
        let rows: Vec<(&str, u64)> = AuthFailure::ALL
            .iter()
            .map(|f| (f.label(), s.auth_failures[f.index()]))
            .collect();
        counters(e, AUTH_FAILURES_TOTAL, "reason", &rows)?;
        counter(e, PEER_DENIED_TOTAL, s.peer_denied)?;
        counter(e, EVENTS_DROPPED_TOTAL, s.events_dropped)?;
        let (written, dropped) = self.usage.as_ref().map_or((0, 0), |u| {
            (
                u.written.load(Ordering::Relaxed),
                u.dropped.load(Ordering::Relaxed),
            )
        });
        counter(e, USAGE_RECORDS_TOTAL, written)?;
        counter(e, USAGE_RECORDS_DROPPED_TOTAL, dropped)?;
        counter(
            e,
            ERROR_RESPONSES_SUPPRESSED_TOTAL,
            s.error_responses_suppressed,
        )?;
        counters(
            e,
            RELAYED_PACKETS_TOTAL,
            "direction",
            &[
                ("to_peer", s.packets_to_peer),
                ("to_client", s.packets_to_client),
            ],
        )?;
        counters(
            e,
            RELAYED_BYTES_TOTAL,
            "direction",
            &[
                ("to_peer", s.bytes_to_peer),
                ("to_client", s.bytes_to_client),
            ],
        )?;
        counter(e, DROPPED_PACKETS_TOTAL, s.dropped_packets)?;
        gauge(e, PERMISSIONS_ACTIVE, s.permissions_active)?;
        gauge(e, CHANNELS_ACTIVE, s.channels_active)?;
        gauge(e, RELAY_PORTS_FREE, s.relay_ports_free)?;
        gauge(e, RELAY_PORTS_CONFIGURED, s.relay_ports_total)?;
        counter(e, RELAY_BIND_FAILURES_TOTAL, s.relay_bind_failures)?;
        gauge(e, FAST_PATH_ACTIVE, u64::from(self.fast_path.is_some()))?;
        gauge(e, CONNECTIONS_OPEN, u64::from(self.connections.open()))?;
        let shed = |reasons: &[Shed]| -> Vec<(&str, u64)> {
            reasons
                .iter()
                .map(|r| (r.label(), self.connections.counted(*r)))
                .collect()
        };
        counters(
            e,
            CONNECTIONS_REFUSED_TOTAL,
            "reason",
            &shed(&Shed::REFUSED),
        )?;
        counters(e, CONNECTIONS_CLOSED_TOTAL, "reason", &shed(&Shed::CLOSED))?;
        gauge(e, CONNECTION_BUFFER_BYTES, self.connections.buffer_bytes())?;
        gauge(
            e,
            SELFTEST_SUCCESS,
            u64::from(self.probe.passing.load(Ordering::Relaxed)),
        )?;
        let m = e.encode_descriptor(
            SELFTEST_RTT_SECONDS,
            help(SELFTEST_RTT_SECONDS),
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.probe.rtt_seconds()).encode(m)?;
        counter(
            e,
            SELFTEST_RUNS_TOTAL,
            self.probe.runs.load(Ordering::Relaxed),
        )?;
        let issued = self
            .http
            .as_ref()
            .map_or(0, |h| h.credentials_issued.load(Ordering::Relaxed));
        // The families are always described; their series only exist with a certificate /
        // with ACME: an absent series is "no TLS", not "expired in 1970".
        let m = e.encode_descriptor(
            TLS_CERTIFICATE_EXPIRY_SECONDS,
            help(TLS_CERTIFICATE_EXPIRY_SECONDS),
            None,
            MetricType::Gauge,
        )?;
        if let Some((_, not_after)) = self.certs.as_ref().and_then(|c| c.validity()) {
            let secs = not_after
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            ConstGauge::new(secs as i64).encode(m)?;
        }
        let rows = self.acme.as_ref().map(|a| {
            let st = &a.status;
            [
                ("success", st.succeeded.load(Ordering::Relaxed)),
                ("failure", st.failed.load(Ordering::Relaxed)),
                ("rate_limited", st.rate_limited.load(Ordering::Relaxed)),
            ]
        });
        counters(
            e,
            ACME_RENEWALS_TOTAL,
            "result",
            rows.as_ref().map_or(&[][..], |r| &r[..]),
        )?;
        counter(e, CREDENTIALS_ISSUED_TOTAL, issued)?;
        let edge = &self.http_edge;
        let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        gauge(e, HTTP_CONNECTIONS_OPEN, edge.open())?;
        counters(
            e,
            HTTP_CONNECTIONS_REFUSED_TOTAL,
            "reason",
            &[
                ("per_address", n(&edge.refused_per_address)),
                ("full", n(&edge.refused_full)),
                ("accept_error", n(&edge.accept_errors)),
            ],
        )?;
        counters(
            e,
            HTTP_CONNECTIONS_CLOSED_TOTAL,
            "reason",
            &[
                ("header_timeout", n(&edge.closed_header_timeout)),
                ("body_timeout", n(&edge.closed_body_timeout)),
                ("idle_timeout", n(&edge.closed_idle_timeout)),
                ("evicted", n(&edge.closed_evicted)),
            ],
        )?;
        Ok(())
    }
}
