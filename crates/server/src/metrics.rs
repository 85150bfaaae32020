//! Metrics in the Prometheus text format: HTTP requests and latency by
//! route, collection and vector gauges, and, with the Hub enabled, its
//! health, API calls, quota checks and usage reports. Labels are routes,
//! statuses and fixed names only: no label grows with tenants or data,
//! unless per-tenant gauges are switched on, and then for a capped number
//! of tenants.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{LazyLock, Mutex};

use vectorizer_service::quota::Amount;

use crate::app::AppState;

/// Latency bucket bounds, in seconds.
const BOUNDS: [f64; 11] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

/// Who may scrape, and what the scrape shows.
#[derive(Debug, Clone, Copy)]
pub struct MetricsOptions {
    /// With the Hub enabled, scraping needs no key.
    pub public: bool,
    /// Per-tenant gauges for at most this many tenants (the largest by
    /// vectors; the rest summed as `other`); `None`: no tenant labels.
    pub tenant_labels: Option<usize>,
}

#[derive(Default, Clone)]
struct Histogram {
    /// Per bucket (not cumulative); the last is +Inf.
    counts: [u64; BOUNDS.len() + 1],
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    /// Counts one request on `route` (a matched route template).
    pub fn observe(&self, route: &str, status: u16, seconds: f64) {
        *lock(&self.requests)
            .entry((route.to_owned(), status))
            .or_default() += 1;
        let mut l = lock(&self.latency);
        let h = l.entry(route.to_owned()).or_default();
        let i = BOUNDS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BOUNDS.len());
        h.counts[i] += 1;
        h.sum += seconds;
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Label values come from route templates and fixed names; escape anyway.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition, gathered now.
pub fn render(state: &AppState) -> String {
    let mut out = String::new();
    let m = &*METRICS;
    header(
        &mut out,
        "vectorizer_http_requests_total",
        "counter",
        "HTTP requests by route and status.",
    );
    for ((route, status), n) in lock(&m.requests).iter() {
        let _ = writeln!(
            out,
            "vectorizer_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
            esc(route)
        );
    }
    header(
        &mut out,
        "vectorizer_http_request_duration_seconds",
        "histogram",
        "HTTP request latency by route.",
    );
    for (route, h) in lock(&m.latency).iter() {
        let r = esc(route);
        let mut cumulative = 0;
        for (i, b) in BOUNDS.iter().enumerate() {
            cumulative += h.counts[i];
            let _ = writeln!(
                out,
                "vectorizer_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"{b}\"}} {cumulative}"
            );
        }
        cumulative += h.counts[BOUNDS.len()];
        let _ = writeln!(
            out,
            "vectorizer_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "vectorizer_http_request_duration_seconds_sum{{route=\"{r}\"}} {}",
            h.sum
        );
        let _ = writeln!(
            out,
            "vectorizer_http_request_duration_seconds_count{{route=\"{r}\"}} {cumulative}"
        );
    }
    let (collections, vectors, bytes) = state.service.totals();
    header(
        &mut out,
        "vectorizer_collections",
        "gauge",
        "Collections stored.",
    );
    let _ = writeln!(out, "vectorizer_collections {collections}");
    header(
        &mut out,
        "vectorizer_vectors",
        "gauge",
        "Points stored, over all collections.",
    );
    let _ = writeln!(out, "vectorizer_vectors {vectors}");
    header(
        &mut out,
        "vectorizer_storage_bytes",
        "gauge",
        "Bytes on disk, over all collections.",
    );
    let _ = writeln!(out, "vectorizer_storage_bytes {bytes}");
    if let Some(cap) = state.metrics.tenant_labels {
        tenants(&mut out, &state.service.usage_by_owner(), cap);
    }

    let Some(auth) = &state.auth else { return out };
    let hub = auth.hub();
    header(
        &mut out,
        "hub_health",
        "gauge",
        "The Hub's state as seen from here (1 for the current one).",
    );
    let now = hub.health();
    for s in [
        vectorizer_hub::HubHealth::Up,
        vectorizer_hub::HubHealth::Degraded,
        vectorizer_hub::HubHealth::Down,
    ] {
        let name = serde_json::to_value(s)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let _ = writeln!(out, "hub_health{{state=\"{name}\"}} {}", u8::from(s == now));
    }
    header(
        &mut out,
        "hub_api_requests_total",
        "counter",
        "Calls to the Hub by call and outcome.",
    );
    for ((call, status), n) in hub.outcomes() {
        let _ = writeln!(
            out,
            "hub_api_requests_total{{call=\"{call}\",status=\"{status}\"}} {n}"
        );
    }
    let checks = state.service.quota_checks();
    header(
        &mut out,
        "hub_quota_checks_total",
        "counter",
        "Quota checks by quota and result.",
    );
    for ((quota, result), n) in &checks {
        let _ = writeln!(
            out,
            "hub_quota_checks_total{{quota=\"{quota}\",result=\"{result}\"}} {n}"
        );
    }
    header(
        &mut out,
        "hub_quota_exceeded_total",
        "counter",
        "Writes refused for a quota.",
    );
    for ((quota, result), n) in &checks {
        if *result == "exceeded" {
            let _ = writeln!(out, "hub_quota_exceeded_total{{quota=\"{quota}\"}} {n}");
        }
    }
    header(
        &mut out,
        "hub_quota_usage",
        "gauge",
        "Usage counted against quotas, over all tenants.",
    );
    let _ = writeln!(
        out,
        "hub_quota_usage{{quota=\"collections\"}} {collections}"
    );
    let _ = writeln!(out, "hub_quota_usage{{quota=\"vectors\"}} {vectors}");
    let _ = writeln!(out, "hub_quota_usage{{quota=\"storage\"}} {bytes}");
    if let Some((delivered, failed, pending)) = state.service.report_counts() {
        header(
            &mut out,
            "hub_usage_reports_total",
            "counter",
            "Usage reports by result.",
        );
        let _ = writeln!(
            out,
            "hub_usage_reports_total{{result=\"delivered\"}} {delivered}"
        );
        let _ = writeln!(out, "hub_usage_reports_total{{result=\"failed\"}} {failed}");
        header(
            &mut out,
            "hub_usage_reports_pending",
            "gauge",
            "Usage reports waiting for the Hub.",
        );
        let _ = writeln!(out, "hub_usage_reports_pending {pending}");
    }
    // Backups are not built yet: the family is declared with no samples.
    header(
        &mut out,
        "hub_backup_operations_total",
        "counter",
        "Backup operations by operation and result.",
    );
    out
}

/// A gauge family of per-tenant figures: name, help, the figure.
type Family = (&'static str, &'static str, fn(&Amount) -> u64);

/// Per-tenant gauges: the `cap` largest tenants by vectors, the rest as one
/// `other` series, so the label set stays bounded.
fn tenants(out: &mut String, by_owner: &[(String, Amount)], cap: usize) {
    let mut rows: Vec<(String, Amount)> = by_owner.iter().take(cap).cloned().collect();
    if by_owner.len() > cap {
        let rest = by_owner[cap..]
            .iter()
            .fold(Amount::default(), |a, (_, b)| a.plus(*b));
        rows.push(("other".to_owned(), rest));
    }
    let families: [Family; 3] = [
        (
            "vectorizer_tenant_collections",
            "Collections per tenant.",
            |a| a.collections,
        ),
        ("vectorizer_tenant_vectors", "Points per tenant.", |a| {
            a.vectors
        }),
        (
            "vectorizer_tenant_storage_bytes",
            "Bytes on disk per tenant.",
            |a| a.bytes,
        ),
    ];
    for (name, help, value) in families {
        header(out, name, "gauge", help);
        for (user, a) in &rows {
            let _ = writeln!(out, "{name}{{user_id=\"{}\"}} {}", esc(user), value(a));
        }
    }
}
