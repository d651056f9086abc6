//! Prometheus metrics: one process-wide set, rendered by `GET /metrics`.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::error::ErrorCode;

/// Every metric Herald exports.
pub struct Metrics {
    registry: Registry,
    pub sessions: IntGauge,
    pub groups_active: IntGauge,
    pub messages_stored: IntCounter,
    pub duplicate_sends: IntCounter,
    pub deliveries: IntCounter,
    pub acks_flushed: IntCounter,
    pub slow_consumers_closed: IntCounter,
    pub sessions_refused: IntCounter,
    pub send_batch_size: Histogram,
    pub ack_batch_size: Histogram,
    storage_seconds: HistogramVec,
    errors: IntCounterVec,
    requests_limited: IntCounterVec,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let registry =
            Registry::new_custom(Some("herald".into()), None).expect("a fixed, valid prefix");
        let batch_buckets = vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];
        let metrics = Metrics {
            sessions: IntGauge::new("sessions", "Open WebSocket sessions").unwrap(),
            groups_active: IntGauge::new("groups_active", "Group actors running").unwrap(),
            messages_stored: IntCounter::new("messages_stored_total", "Messages committed")
                .unwrap(),
            duplicate_sends: IntCounter::new(
                "duplicate_sends_total",
                "Sends answered dup:true (same sender and cmid stored before)",
            )
            .unwrap(),
            deliveries: IntCounter::new("deliveries_total", "Message frames queued to sessions")
                .unwrap(),
            acks_flushed: IntCounter::new("acks_flushed_total", "Member ack rows written").unwrap(),
            slow_consumers_closed: IntCounter::new(
                "slow_consumers_closed_total",
                "Sessions closed with 4008 for an outbound backlog over its bound",
            )
            .unwrap(),
            sessions_refused: IntCounter::new(
                "sessions_refused_total",
                "Sessions closed at once for the caps (1013 server full, 4029 per user)",
            )
            .unwrap(),
            send_batch_size: Histogram::with_opts(
                HistogramOpts::new("send_batch_size", "Messages per group-commit transaction")
                    .buckets(batch_buckets.clone()),
            )
            .unwrap(),
            ack_batch_size: Histogram::with_opts(
                HistogramOpts::new("ack_batch_size", "Member rows per ack flush statement")
                    .buckets(batch_buckets),
            )
            .unwrap(),
            storage_seconds: HistogramVec::new(
                HistogramOpts::new("storage_seconds", "PostgreSQL operation latency").buckets(
                    vec![
                        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
                    ],
                ),
                &["op"],
            )
            .unwrap(),
            errors: IntCounterVec::new(
                Opts::new("errors_total", "Errors answered to clients, by code"),
                &["code"],
            )
            .unwrap(),
            requests_limited: IntCounterVec::new(
                Opts::new(
                    "requests_limited_total",
                    "Client requests refused rate_limited, by kind and by the bound that refused them",
                ),
                &["kind", "limit"],
            )
            .unwrap(),
            registry,
        };
        // Every name above is unique and valid, so registration cannot fail.
        let collectors: [Box<dyn prometheus::core::Collector>; 13] = [
            Box::new(metrics.sessions.clone()),
            Box::new(metrics.groups_active.clone()),
            Box::new(metrics.messages_stored.clone()),
            Box::new(metrics.duplicate_sends.clone()),
            Box::new(metrics.deliveries.clone()),
            Box::new(metrics.acks_flushed.clone()),
            Box::new(metrics.slow_consumers_closed.clone()),
            Box::new(metrics.sessions_refused.clone()),
            Box::new(metrics.send_batch_size.clone()),
            Box::new(metrics.ack_batch_size.clone()),
            Box::new(metrics.storage_seconds.clone()),
            Box::new(metrics.errors.clone()),
            Box::new(metrics.requests_limited.clone()),
        ];
        for collector in collectors {
            metrics
                .registry
                .register(collector)
                .expect("unique metric names");
        }
        // process_resident_memory_bytes, process_cpu_seconds_total, open fds: what the load
        // test reads when the server is not its child.
        metrics
            .registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("one process collector");
        for code in ErrorCode::ALL {
            metrics.errors.with_label_values(&[code.as_str()]);
        }
        metrics
    }

    /// Counts an error answered to a client.
    pub fn error(&self, code: ErrorCode) {
        self.errors.with_label_values(&[code.as_str()]).inc();
    }

    /// Counts a request refused `rate_limited`: its kind and the bound that refused it.
    pub fn limited(&self, kind: &str, limit: &str) {
        self.requests_limited
            .with_label_values(&[kind, limit])
            .inc();
    }

    /// Records how long one storage operation took.
    pub fn storage(&self, op: &str, took: Duration) {
        self.storage_seconds
            .with_label_values(&[op])
            .observe(took.as_secs_f64());
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("writing to a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}
