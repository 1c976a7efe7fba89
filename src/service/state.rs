//! Shared service state: configuration, the SQLite store, the job queue, metrics.

use super::config::ServiceConfig;
use super::jobs::JobQueue;
use super::store::Store;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Request counters for `/metrics`.
#[derive(Default)]
pub struct Metrics {
    /// (action, status) → count.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// (count, sum of seconds) per action.
    durations: Mutex<BTreeMap<String, (u64, f64)>>,
}

impl Metrics {
    /// Records one request.
    pub fn record(&self, action: &str, status: u16, seconds: f64) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((action.to_string(), status))
            .or_default() += 1;
        let mut durations = self.durations.lock().unwrap_or_else(|p| p.into_inner());
        let entry = durations.entry(action.to_string()).or_default();
        entry.0 += 1;
        entry.1 += seconds;
    }

    /// Prometheus text exposition of the request counters.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP pedinorm_http_requests_total HTTP requests by action and status.\n\
             # TYPE pedinorm_http_requests_total counter\n",
        );
        for ((action, status), count) in self.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            out.push_str(&format!(
                "pedinorm_http_requests_total{{action=\"{action}\",status=\"{status}\"}} {count}\n"
            ));
        }
        out.push_str(
            "# HELP pedinorm_http_request_duration_seconds Time spent answering requests.\n\
             # TYPE pedinorm_http_request_duration_seconds summary\n",
        );
        for (action, (count, sum)) in self.durations.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            out.push_str(&format!(
                "pedinorm_http_request_duration_seconds_sum{{action=\"{action}\"}} {sum}\n"
            ));
            out.push_str(&format!(
                "pedinorm_http_request_duration_seconds_count{{action=\"{action}\"}} {count}\n"
            ));
        }
        out
    }
}

/// Everything a request handler needs.
#[derive(Clone)]
pub struct AppState {
    /// Configuration.
    pub config: Arc<ServiceConfig>,
    /// State store.
    pub store: Store,
    /// Job queue.
    pub jobs: Arc<JobQueue>,
    /// Request metrics.
    pub metrics: Arc<Metrics>,
    /// Group-committing writer of the request audit log.
    pub audit: Arc<super::audit::AuditWriter>,
    /// Start time.
    pub started: Instant,
    /// Rate limit and aggregated audit of requests without a valid token.
    pub anonymous: Arc<super::anonymous::AnonymousGate>,
    /// Open sessions of the web viewer.
    pub viewer_sessions: Arc<super::viewer::session::Sessions>,
    /// The similar-case index of the A1 signatures, kept until one changes.
    pub similar_index: Arc<super::similar::IndexCache>,
}
