//! A small Prometheus registry of atomics, rendered in the text exposition format 0.0.4.
//!
//! Request series are keyed by the matched route *pattern* (never the raw path) and a bounded set
//! of methods, so cardinality stays bounded whatever clients send.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::http::Method;
use depot_broker::log::FileCacheStats;
use depot_broker::station::StationView;

/// Upper bounds of the latency buckets, in seconds (long polls go up to 20 s).
pub const LATENCY_BUCKETS: [f64; 15] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0];

/// The route label of requests that matched no route.
pub const UNMATCHED: &str = "unmatched";

#[derive(Default)]
struct Series {
    /// Responses by status class: 1xx..5xx.
    by_class: [AtomicU64; 5],
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// Every metric the gateway exposes.
#[derive(Default)]
pub struct Metrics {
    /// By route pattern, then method: looked up by `&str`, so a request allocates nothing.
    requests: RwLock<HashMap<String, HashMap<&'static str, Arc<Series>>>>,
    pub produced: AtomicU64,
    pub fetched: AtomicU64,
    pub acked: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Password logins refused: wrong username or password.
    pub login_failures: AtomicU64,
    /// Password logins refused: the username used up its failures.
    pub login_locked_out: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

pub(crate) fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Records one answered request.
    pub fn observe(&self, route: Option<&str>, method: &Method, status: u16, latency: Duration) {
        let (route, method) = (route.unwrap_or(UNMATCHED), method_label(method));
        let found = self.requests.read().ok().and_then(|m| m.get(route).and_then(|by| by.get(method)).cloned());
        let series = match found {
            Some(s) => s,
            None => match self.requests.write() {
                Ok(mut m) => m.entry(route.to_owned()).or_default().entry(method).or_default().clone(),
                Err(_) => return,
            },
        };
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        series.by_class[class].fetch_add(1, Ordering::Relaxed);
        let secs = latency.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|le| secs <= *le) {
            series.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        series.count.fetch_add(1, Ordering::Relaxed);
        series.sum_nanos.fetch_add(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The exposition text; per-group gauges come from `stations` and file gauges from
    /// `files`, read at scrape time.
    pub fn render(&self, stations: &[StationView], files: FileCacheStats) -> String {
        let mut out = String::new();
        let mut series: Vec<((String, &'static str), Arc<Series>)> = match self.requests.read() {
            Ok(m) => m
                .iter()
                .flat_map(|(route, by)| by.iter().map(|(method, s)| ((route.clone(), *method), s.clone())))
                .collect(),
            Err(_) => Vec::new(),
        };
        series.sort_by(|a, b| a.0.cmp(&b.0));
        let _ = writeln!(
            out,
            "# HELP depot_http_requests_total HTTP requests answered, by route pattern, method and status class."
        );
        let _ = writeln!(out, "# TYPE depot_http_requests_total counter");
        for ((route, method), s) in &series {
            for (i, c) in s.by_class.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "depot_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{}xx\"}} {n}",
                        escape(route),
                        i + 1
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP depot_http_request_duration_seconds HTTP request latency, by route pattern and method."
        );
        let _ = writeln!(out, "# TYPE depot_http_request_duration_seconds histogram");
        for ((route, method), s) in &series {
            let labels = format!("route=\"{}\",method=\"{method}\"", escape(route));
            let mut cumulative = 0;
            for (le, b) in LATENCY_BUCKETS.iter().zip(&s.buckets) {
                cumulative += b.load(Ordering::Relaxed);
                let _ =
                    writeln!(out, "depot_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}");
            }
            let count = s.count.load(Ordering::Relaxed);
            let sum = s.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "depot_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}");
            let _ = writeln!(out, "depot_http_request_duration_seconds_sum{{{labels}}} {sum}");
            let _ = writeln!(out, "depot_http_request_duration_seconds_count{{{labels}}} {count}");
        }
        for (name, help, counter) in [
            (
                "depot_messages_produced_total",
                "Messages stored by produce requests (duplicates excluded).",
                &self.produced,
            ),
            ("depot_messages_fetched_total", "Messages delivered by fetch requests.", &self.fetched),
            ("depot_messages_acked_total", "Deliveries acked.", &self.acked),
            ("depot_messages_dead_lettered_total", "Deliveries dead-lettered through the API.", &self.dead_lettered),
            ("depot_rate_limited_total", "Requests refused with 429.", &self.rate_limited),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", counter.load(Ordering::Relaxed));
        }
        let _ = writeln!(out, "# HELP depot_login_failures_total Password logins refused, by reason.");
        let _ = writeln!(out, "# TYPE depot_login_failures_total counter");
        for (reason, counter) in
            [("wrong_credentials", &self.login_failures), ("too_many_failures", &self.login_locked_out)]
        {
            let _ =
                writeln!(out, "depot_login_failures_total{{reason=\"{reason}\"}} {}", counter.load(Ordering::Relaxed));
        }
        let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
        for (name, kind, help, value) in [
            ("depot_open_fds", "gauge", "File descriptors the process holds open.", fds as u64),
            ("depot_station_files_open", "gauge", "Station-log files and directories held open.", files.open as u64),
            (
                "depot_station_files_open_max",
                "gauge",
                "Station-log files kept open at most (least recently used closed first).",
                files.cap as u64,
            ),
            (
                "depot_station_file_reopens_total",
                "counter",
                "Station-log files opened again after being closed to make room.",
                files.reopens,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        }
        type Pick = fn(&depot_broker::station::GroupView) -> u64;
        let gauges: [(&str, &str, Pick); 3] = [
            ("depot_consumer_group_lag", "Messages a group has not yet acked or dead-lettered.", |g| g.lag),
            ("depot_consumer_group_pending", "Deliveries in flight for a group.", |g| g.pending),
            (
                "depot_consumer_group_dead_lettered",
                "Messages a group has dead-lettered (API and max deliveries).",
                |g| g.dead_lettered,
            ),
        ];
        for (name, help, pick) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for station in stations {
                for group in &station.groups {
                    let _ = writeln!(
                        out,
                        "{name}{{station=\"{}\",group=\"{}\"}} {}",
                        escape(&station.name),
                        escape(&group.name),
                        pick(group)
                    );
                }
            }
        }
        out
    }
}

/// Tiering's figures on this node (present when the node has a `[tiering]` bucket).
pub fn render_tier(out: &mut String, s: &depot_broker::tier::TierStatus) {
    let reachable = match s.reachable {
        Some(true) => 1,
        Some(false) => 0,
        None => -1,
    };
    for (name, kind, help, value) in [
        (
            "depot_tier_uploads_total",
            "counter",
            "Segments uploaded to the bucket and catalogued.",
            s.uploads_total as i64,
        ),
        ("depot_tier_uploaded_bytes_total", "counter", "Bytes of objects uploaded.", s.uploaded_bytes_total as i64),
        (
            "depot_tier_upload_failures_total",
            "counter",
            "Uploads that failed (retried with backoff).",
            s.upload_failures_total as i64,
        ),
        (
            "depot_tier_deletes_total",
            "counter",
            "Objects deleted (retention, deleted stations).",
            s.deletes_total as i64,
        ),
        (
            "depot_tier_delete_failures_total",
            "counter",
            "Object deletions that failed (retried).",
            s.delete_failures_total as i64,
        ),
        (
            "depot_tier_orphans_deleted_total",
            "counter",
            "Objects no catalog entry named, deleted by the sweep.",
            s.orphans_deleted_total as i64,
        ),
        (
            "depot_tier_lag_bytes",
            "gauge",
            "Bytes of sealed segments old enough to tier that are not in the bucket yet (on the leader).",
            s.lag_bytes as i64,
        ),
        ("depot_tier_cache_bytes", "gauge", "Bytes of tiered data in the local read cache.", s.cache.bytes as i64),
        ("depot_tier_cache_hits_total", "counter", "Reads of tiered data the cache served.", s.cache.hits as i64),
        (
            "depot_tier_cache_misses_total",
            "counter",
            "Reads of tiered data that had to go to the bucket.",
            s.cache.misses as i64,
        ),
        (
            "depot_tier_read_bytes_total",
            "counter",
            "Bytes read from the bucket (ranged GETs).",
            s.cache.fetched_bytes as i64,
        ),
        (
            "depot_tier_bucket_reachable",
            "gauge",
            "1 when the last request to the bucket succeeded, 0 when it failed, -1 before the first.",
            reachable,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_and_method_is_its_own_series_in_order() {
        let m = Metrics::default();
        let ms = Duration::from_millis(1);
        m.observe(Some("/v1/stations/{station}"), &Method::PUT, 201, ms);
        m.observe(Some("/v1/stations/{station}"), &Method::GET, 200, ms);
        m.observe(Some("/v1/stations/{station}"), &Method::GET, 404, ms);
        m.observe(None, &Method::GET, 404, ms);
        let text = m.render(&[], FileCacheStats::default());
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("depot_http_requests_total{")).collect();
        assert_eq!(
            lines,
            [
                "depot_http_requests_total{route=\"/v1/stations/{station}\",method=\"GET\",status=\"2xx\"} 1"
                    .to_owned(),
                "depot_http_requests_total{route=\"/v1/stations/{station}\",method=\"GET\",status=\"4xx\"} 1"
                    .to_owned(),
                "depot_http_requests_total{route=\"/v1/stations/{station}\",method=\"PUT\",status=\"2xx\"} 1"
                    .to_owned(),
                format!("depot_http_requests_total{{route=\"{UNMATCHED}\",method=\"GET\",status=\"4xx\"}} 1"),
            ]
        );
        assert!(text.contains(
            "depot_http_request_duration_seconds_count{route=\"/v1/stations/{station}\",method=\"GET\"} 2\n"
        ));
    }
}
