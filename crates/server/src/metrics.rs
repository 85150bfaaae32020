//! Metrics in the Prometheus text format: HTTP requests and latency by
//! route, collection and vector gauges, and, with the Hub enabled, its
//! health, API calls, quota checks and usage reports. Labels are routes,
//! statuses and fixed names only: no label grows with tenants or data,
//! unless per-tenant gauges are switched on, and then for a capped number
//! of tenants.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{LazyLock, Mutex};

use vectorizer_engine::RecallReport;
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
    /// MCP tool calls by (tool, outcome).
    tool_calls: Mutex<BTreeMap<(String, String), u64>>,
    tool_latency: Mutex<BTreeMap<String, Histogram>>,
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let i = BOUNDS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BOUNDS.len());
        self.counts[i] += 1;
        self.sum += seconds;
    }
}

impl Metrics {
    /// Counts one request on `route` (a matched route template).
    pub fn observe(&self, route: &str, status: u16, seconds: f64) {
        *lock(&self.requests)
            .entry((route.to_owned(), status))
            .or_default() += 1;
        lock(&self.latency)
            .entry(route.to_owned())
            .or_default()
            .observe(seconds);
    }

    /// Counts one MCP tool call (`outcome`: `ok` or the error's code; tool
    /// names and codes are fixed sets).
    pub fn observe_tool(&self, tool: &str, outcome: &str, seconds: f64) {
        *lock(&self.tool_calls)
            .entry((tool.to_owned(), outcome.to_owned()))
            .or_default() += 1;
        lock(&self.tool_latency)
            .entry(tool.to_owned())
            .or_default()
            .observe(seconds);
    }
}

/// A histogram family, one series per label value of `label`.
fn histograms(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    series: &BTreeMap<String, Histogram>,
) {
    family(
        out,
        name,
        "histogram",
        help,
        std::iter::empty::<(String, u64)>(),
    );
    // Histogram samples carry suffixes, so they are written by hand.
    for (key, h) in series {
        let k = esc(key);
        let mut cumulative = 0;
        for (i, count) in h.counts.iter().enumerate() {
            cumulative += count;
            let le = BOUNDS.get(i).map_or("+Inf".to_owned(), f64::to_string);
            let _ = writeln!(
                out,
                "{name}_bucket{{{label}=\"{k}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(out, "{name}_sum{{{label}=\"{k}\"}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{{label}=\"{k}\"}} {cumulative}");
    }
}

/// One metric family: its header, then a sample per (labels, value), the
/// labels already written as `k="v",...` (empty for none).
fn family<V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, V)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// A family with one unlabelled sample.
fn single<V: std::fmt::Display>(out: &mut String, name: &str, kind: &str, help: &str, v: V) {
    family(out, name, kind, help, [(String::new(), v)]);
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
    family(
        &mut out,
        "vectorizer_http_requests_total",
        "counter",
        "HTTP requests by route and status.",
        lock(&m.requests).iter().map(|((route, status), n)| {
            (format!("route=\"{}\",status=\"{status}\"", esc(route)), *n)
        }),
    );
    histograms(
        &mut out,
        "vectorizer_http_request_duration_seconds",
        "HTTP request latency by route.",
        "route",
        &lock(&m.latency),
    );
    if let Some(node) = &state.cluster {
        let figures = node.raft_figures();
        let by_group = |f: fn(&(String, bool, u64, u64, u64)) -> u64| {
            figures
                .iter()
                .map(move |g| (format!("group=\"{}\"", esc(&g.0)), f(g)))
                .collect::<Vec<_>>()
        };
        family(
            &mut out,
            "vectorizer_raft_leader",
            "gauge",
            "1 where this node leads the Raft group.",
            by_group(|g| u64::from(g.1)),
        );
        family(
            &mut out,
            "vectorizer_raft_term",
            "gauge",
            "The Raft group's current term on this node.",
            by_group(|g| g.2),
        );
        family(
            &mut out,
            "vectorizer_raft_last_log_index",
            "gauge",
            "The last entry of the group's log on this node.",
            by_group(|g| g.3),
        );
        family(
            &mut out,
            "vectorizer_raft_applied_index",
            "gauge",
            "The last entry this node applied to the group's state.",
            by_group(|g| g.4),
        );
    }
    if let Some(mcp) = &state.mcp {
        family(
            &mut out,
            "mcp_tool_calls_total",
            "counter",
            "MCP tool calls by tool and outcome (ok, or the error's code).",
            lock(&m.tool_calls).iter().map(|((tool, outcome), n)| {
                (
                    format!("tool=\"{}\",outcome=\"{}\"", esc(tool), esc(outcome)),
                    *n,
                )
            }),
        );
        histograms(
            &mut out,
            "mcp_tool_call_duration_seconds",
            "MCP tool call latency by tool.",
            "tool",
            &lock(&m.tool_latency),
        );
        single(
            &mut out,
            "mcp_oplog_records_written_total",
            "counter",
            "MCP operation log records written.",
            mcp.oplog.written(),
        );
        single(
            &mut out,
            "mcp_oplog_records_dropped_total",
            "counter",
            "MCP operation log records dropped (queue full or the disk refused them).",
            mcp.oplog.dropped(),
        );
        if state.auth.is_some() {
            single(
                &mut out,
                "mcp_hub_registered",
                "gauge",
                "1 while this node's MCP server is registered with the Hub.",
                u8::from(mcp.registration.is_registered()),
            );
        }
    }
    let (collections, vectors, bytes) = state.service.totals();
    single(
        &mut out,
        "vectorizer_collections",
        "gauge",
        "Collections stored.",
        collections,
    );
    single(
        &mut out,
        "vectorizer_vectors",
        "gauge",
        "Points stored, over all collections.",
        vectors,
    );
    single(
        &mut out,
        "vectorizer_storage_bytes",
        "gauge",
        "Bytes on disk, over all collections.",
        bytes,
    );
    if let Some(cap) = state.metrics.tenant_labels {
        tenants(&mut out, &state.service.usage_by_owner(), cap);
    }
    let r = state.service.residency();
    single(
        &mut out,
        "vectorizer_open_collections",
        "gauge",
        "Collections open in memory now (they open on first use and close when idle).",
        r.open,
    );
    single(
        &mut out,
        "vectorizer_open_collections_memory_bytes",
        "gauge",
        "Memory the open collections hold.",
        r.memory_bytes,
    );
    single(
        &mut out,
        "vectorizer_collection_opens_total",
        "counter",
        "Collections opened.",
        r.opens,
    );
    single(
        &mut out,
        "vectorizer_collection_open_failures_total",
        "counter",
        "Collections that could not be opened (damaged or unreadable files).",
        r.open_failures,
    );
    single(
        &mut out,
        "vectorizer_collection_evictions_total",
        "counter",
        "Idle collections closed to stay within the cap or the memory budget.",
        r.evictions,
    );
    single(
        &mut out,
        "vectorizer_collection_open_seconds_total",
        "counter",
        "Time spent opening collections (divide by the opens for the mean).",
        r.open_seconds,
    );
    single(
        &mut out,
        "vectorizer_link_queue",
        "gauge",
        "Graph-linking jobs waiting for a worker.",
        r.link_queue,
    );

    recall(&mut out, state.service.recall_reports(), r.tunings);

    let backups = state.service.backup_stats();
    family(
        &mut out,
        "hub_backup_operations_total",
        "counter",
        "Backup operations by operation and result (ok, refused: the caller's error, failed: ours).",
        backups
            .ops()
            .into_iter()
            .map(|((op, result), n)| (format!("op=\"{op}\",result=\"{result}\""), n)),
    );
    single(
        &mut out,
        "vectorizer_backup_bytes",
        "gauge",
        "Bytes of the backup archives stored on this node.",
        backups.bytes(),
    );

    let Some(auth) = &state.auth else { return out };
    let hub = auth.hub();
    let now = hub.health();
    family(
        &mut out,
        "hub_health",
        "gauge",
        "The Hub's state as seen from here (1 for the current one).",
        vectorizer_hub::HubHealth::ALL.map(|s| (format!("state=\"{s}\""), u8::from(s == now))),
    );
    family(
        &mut out,
        "hub_api_requests_total",
        "counter",
        "Calls to the Hub by call and outcome.",
        hub.outcomes()
            .into_iter()
            .map(|((call, status), n)| (format!("call=\"{call}\",status=\"{status}\""), n)),
    );
    let checks = state.service.quota_checks();
    family(
        &mut out,
        "hub_quota_checks_total",
        "counter",
        "Quota checks by quota and result.",
        checks
            .iter()
            .map(|((quota, result), n)| (format!("quota=\"{quota}\",result=\"{result}\""), *n)),
    );
    family(
        &mut out,
        "hub_quota_exceeded_total",
        "counter",
        "Writes refused for a quota.",
        checks
            .iter()
            .filter(|((_, result), _)| *result == "exceeded")
            .map(|((quota, _), n)| (format!("quota=\"{quota}\""), *n)),
    );
    family(
        &mut out,
        "hub_quota_usage",
        "gauge",
        "Usage counted against quotas, over all tenants.",
        [
            ("quota=\"collections\"".to_owned(), collections as u64),
            ("quota=\"vectors\"".to_owned(), vectors),
            ("quota=\"storage\"".to_owned(), bytes),
        ],
    );
    if let Some(c) = state.service.report_counts() {
        family(
            &mut out,
            "hub_usage_reports_total",
            "counter",
            "Usage reports by result (drift: the Hub did not know a collection that lives here).",
            [
                ("result=\"delivered\"".to_owned(), c.delivered),
                ("result=\"failed\"".to_owned(), c.failed),
                ("result=\"drift\"".to_owned(), c.drift),
            ],
        );
        single(
            &mut out,
            "hub_usage_reports_pending",
            "gauge",
            "Usage reports waiting for the Hub.",
            c.pending,
        );
    }
    single(
        &mut out,
        "vectorizer_active_tenants",
        "gauge",
        "Tenants with requests in flight.",
        state.service.active_tenants(),
    );
    out
}

/// A gauge family of per-tenant figures: name, help, the figure.
/// A recall gauge: name, help, and its value in a measurement.
type RecallFamily = (&'static str, &'static str, fn(&RecallReport) -> f64);

/// Collections given series of their own in the recall gauges.
const RECALL_LABELS: usize = 20;

/// Recall tuning: tunings done, open collections below their target, and
/// per collection the measurement of the [`RECALL_LABELS`] furthest below
/// (or least above) their targets, so the label set stays bounded.
fn recall(out: &mut String, mut reports: Vec<(String, RecallReport)>, tunings: u64) {
    single(
        out,
        "vectorizer_recall_tunings_total",
        "counter",
        "Measurements of a collection's recall (each picks its default search breadth).",
        tunings,
    );
    single(
        out,
        "vectorizer_recall_below_target_collections",
        "gauge",
        "Open collections whose last measured recall is below their target.",
        reports
            .iter()
            .filter(|(_, r)| r.estimate < r.target)
            .count(),
    );
    reports.sort_by(|a, b| (a.1.estimate - a.1.target).total_cmp(&(b.1.estimate - b.1.target)));
    reports.truncate(RECALL_LABELS);
    let label = |name: &str| format!("collection=\"{}\"", esc(name));
    let families: [RecallFamily; 4] = [
        (
            "vectorizer_recall_estimate",
            "Last measured recall@10 at the chosen breadth.",
            |r| r.estimate,
        ),
        ("vectorizer_recall_target", "Recall target.", |r| r.target),
        (
            "vectorizer_recall_ef",
            "Search breadth chosen for the target.",
            |r| r.ef as f64,
        ),
        (
            "vectorizer_recall_measured_at_seconds",
            "When the recall was last measured (Unix time).",
            |r| r.measured_at_ms as f64 / 1000.0,
        ),
    ];
    for (name, help, value) in families {
        let samples = reports.iter().map(|(n, r)| (label(n), value(r)));
        family(out, name, "gauge", help, samples);
    }
}

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
        let samples = rows
            .iter()
            .map(|(user, a)| (format!("user_id=\"{}\"", esc(user)), value(a)));
        family(out, name, "gauge", help, samples);
    }
}
