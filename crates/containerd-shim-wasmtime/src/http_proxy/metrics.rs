//! The server's counters, in Prometheus text format on the metrics port (annotation
//! `wasm-shim/metrics-port`, path `/metrics`): requests by status, requests in flight, and
//! histograms of instantiation and handler time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the histogram buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

#[derive(Default)]
pub struct Metrics {
    by_status: Mutex<BTreeMap<u16, u64>>,
    in_flight: AtomicI64,
    pub instantiate: Histogram,
    pub handler: Histogram,
}

#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Counts a request as in flight while it lives.
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn enter(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    pub fn answered(&self, status: u16) {
        *self
            .by_status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(status)
            .or_default() += 1;
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP wasm_shim_http_requests_total Requests answered, by status.\n");
        out.push_str("# TYPE wasm_shim_http_requests_total counter\n");
        for (status, n) in self
            .by_status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "wasm_shim_http_requests_total{{status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP wasm_shim_http_requests_in_flight Requests being served.\n\
             # TYPE wasm_shim_http_requests_in_flight gauge\n\
             wasm_shim_http_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        self.instantiate.render(
            &mut out,
            "wasm_shim_http_instantiate_seconds",
            "Time to instantiate the component for a request.",
        );
        self.handler.render(
            &mut out,
            "wasm_shim_http_handler_seconds",
            "Time from a request's arrival to its response head.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_as_prometheus_text() {
        let m = Metrics::default();
        m.answered(200);
        m.answered(200);
        m.answered(504);
        let _busy = m.enter();
        m.handler.observe(Duration::from_micros(300));
        m.handler.observe(Duration::from_secs(2));
        let text = m.render();
        assert!(
            text.contains("wasm_shim_http_requests_total{status=\"200\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("wasm_shim_http_requests_total{status=\"504\"} 1\n"));
        assert!(text.contains("wasm_shim_http_requests_in_flight 1\n"));
        assert!(text.contains("wasm_shim_http_handler_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("wasm_shim_http_handler_seconds_bucket{le=\"5\"} 2\n"));
        assert!(text.contains("wasm_shim_http_handler_seconds_count 2\n"));
        assert!(text.contains("wasm_shim_http_instantiate_seconds_count 0\n"));
    }
}
