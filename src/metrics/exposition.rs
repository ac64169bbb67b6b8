//! Serving `/metrics`: OpenMetrics when the scraper asks for it (`Accept:
//! application/openmetrics-text`, as Prometheus does), otherwise the classic text format 0.0.4
//! that older tools such as Debian's promtool check. prometheus-client writes OpenMetrics; the
//! classic form is derived from it by [`to_classic`].

use super::Sources;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Arc;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The registry with turnd's collector.
pub fn registry(sources: Arc<Sources>) -> Arc<Registry> {
    let mut r = Registry::default();
    r.register_collector(Box::new(sources));
    Arc::new(r)
}

/// The whole exposition in OpenMetrics text.
pub fn openmetrics(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// OpenMetrics text → classic 0.0.4: counters' HELP/TYPE use the sample name (`_total`), info
/// becomes a gauge named `_info`, and `# UNIT`/`# EOF` lines go.
pub fn to_classic(om: &str) -> String {
    let types: HashMap<&str, &str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    let rename = |name: &str| -> String {
        match types.get(name) {
            Some(&"counter") => format!("{name}_total"),
            Some(&"info") => format!("{name}_info"),
            _ => name.to_owned(),
        }
    };
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let ty = if ty == "info" { "gauge" } else { ty };
            out.push_str(&format!("# TYPE {} {ty}\n", rename(name)));
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str(&format!("# HELP {} {text}\n", rename(name)));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

async fn metrics(State(registry): State<Arc<Registry>>, headers: HeaderMap) -> Response {
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let om = openmetrics(&registry);
    let (body, ctype) = if wants_openmetrics {
        (om, OPENMETRICS)
    } else {
        (to_classic(&om), CLASSIC)
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(ctype))],
        body,
    )
        .into_response()
}

/// The metrics listener's routes: `/metrics` only.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(crate::http::error::not_found)
        .with_state(registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_names_counters_and_info_by_sample_name() {
        let om = "# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests_total 3\n\
                  # HELP x_build Build.\n# TYPE x_build info\nx_build_info{version=\"1\"} 1\n\
                  # HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n# EOF\n";
        let c = to_classic(om);
        assert!(c.contains("# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\nx_requests_total 3\n"));
        assert!(c.contains("# TYPE x_build_info gauge\nx_build_info{version=\"1\"} 1\n"));
        assert!(c.contains("# TYPE x_up gauge\n"));
        assert!(!c.contains("EOF"));
    }
}
