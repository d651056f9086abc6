//! Prometheus metrics: one process-wide set, rendered by `GET /metrics`.

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::error::ErrorCode;

/// Every metric Herald exports.
pub struct Metrics {
    registry: Registry,
    pub sessions: IntGauge,
    pub groups_active: IntGauge,
    pub messages_stored: IntCounter,
    pub duplicate_sends: IntCounter,
    /// Messages the app's backend posted through the admin API (and stored).
    pub published: IntCounter,
    pub deliveries: IntCounter,
    pub acks_flushed: IntCounter,
    pub slow_consumers_closed: IntCounter,
    pub sessions_refused: IntCounter,
    pub send_batch_size: Histogram,
    pub ack_batch_size: Histogram,
    storage_seconds: HistogramVec,
    errors: IntCounterVec,
    requests_limited: IntCounterVec,
    /// The cluster bus (NATS); all stay 0 on a node that runs alone.
    pub cluster: ClusterMetrics,
    /// Webhooks to the app's backend; all stay 0 without a webhook URL.
    pub webhooks: WebhookMetrics,
    /// JWKS sources of token keys; none shows without one.
    pub jwks: JwksMetrics,
    /// The pruner; counted on the node whose run did the work.
    pub retention: RetentionMetrics,
}

/// What the pruner removed, how long its last run took, how often it failed.
pub struct RetentionMetrics {
    pub pruned: IntCounter,
    pub partitions_dropped: IntCounter,
    pub partitions_created: IntCounter,
    pub last_run_seconds: Gauge,
    pub errors: IntCounter,
}

impl RetentionMetrics {
    fn new() -> Self {
        let counter = |name: &str, help: &str| IntCounter::new(name, help).unwrap();
        RetentionMetrics {
            pruned: counter(
                "retention_pruned_messages_total",
                "Messages deleted row by row for count limits and groups' own age limits",
            ),
            partitions_dropped: counter(
                "retention_partitions_dropped_total",
                "Message partitions dropped whole, past the deployment's age limit",
            ),
            partitions_created: counter(
                "retention_partitions_created_total",
                "Message partitions made ahead of time",
            ),
            last_run_seconds: Gauge::new(
                "retention_last_run_seconds",
                "How long this node's last pruner run took",
            )
            .unwrap(),
            errors: counter("retention_errors_total", "Pruner runs that failed"),
        }
    }

    fn collectors(&self) -> [Box<dyn prometheus::core::Collector>; 5] {
        [
            Box::new(self.pruned.clone()),
            Box::new(self.partitions_dropped.clone()),
            Box::new(self.partitions_created.clone()),
            Box::new(self.last_run_seconds.clone()),
            Box::new(self.errors.clone()),
        ]
    }
}

/// The JWKS sources of token keys (`source` is `file` or `url`); none shows without one.
pub struct JwksMetrics {
    refreshes: IntCounterVec,
    keys: IntGaugeVec,
    age_seconds: GaugeVec,
    /// When each source's keys were last loaded, for the age computed at each scrape.
    loaded_at: Mutex<Vec<(&'static str, Instant)>>,
}

impl JwksMetrics {
    fn new() -> Self {
        JwksMetrics {
            refreshes: IntCounterVec::new(
                Opts::new(
                    "jwks_refreshes_total",
                    "Loads of a JWKS source, by outcome (ok; failed: the keys last loaded kept)",
                ),
                &["source", "outcome"],
            )
            .unwrap(),
            keys: IntGaugeVec::new(
                Opts::new("jwks_keys", "Usable keys of a JWKS source's last good load"),
                &["source"],
            )
            .unwrap(),
            age_seconds: GaugeVec::new(
                Opts::new(
                    "jwks_age_seconds",
                    "Seconds since a JWKS source's keys were last loaded",
                ),
                &["source"],
            )
            .unwrap(),
            loaded_at: Mutex::new(Vec::new()),
        }
    }

    fn collectors(&self) -> [Box<dyn prometheus::core::Collector>; 3] {
        [
            Box::new(self.refreshes.clone()),
            Box::new(self.keys.clone()),
            Box::new(self.age_seconds.clone()),
        ]
    }

    /// Counts a load of `source`; a good one holds `keys` usable keys.
    pub fn loaded(&self, source: &'static str, keys: Option<usize>) {
        let outcome = if keys.is_some() { "ok" } else { "failed" };
        self.refreshes.with_label_values(&[source, outcome]).inc();
        // The other outcome shows as 0, so a rate of failures can be graphed from the start.
        let other = if keys.is_some() { "failed" } else { "ok" };
        self.refreshes.with_label_values(&[source, other]);
        let Some(keys) = keys else { return };
        self.keys.with_label_values(&[source]).set(keys as i64);
        let mut loaded_at = self
            .loaded_at
            .lock()
            .expect("never poisoned: no panics inside");
        loaded_at.retain(|(s, _)| *s != source);
        loaded_at.push((source, Instant::now()));
    }

    fn update_ages(&self) {
        let loaded_at = self
            .loaded_at
            .lock()
            .expect("never poisoned: no panics inside");
        for (source, at) in loaded_at.iter() {
            let age = at.elapsed().as_secs_f64();
            self.age_seconds.with_label_values(&[source]).set(age);
        }
    }
}

/// How delivery to the app's backend keeps up.
pub struct WebhookMetrics {
    pub pending: IntGauge,
    pub oldest_pending_seconds: Gauge,
    deliveries: IntCounterVec,
}

impl WebhookMetrics {
    fn new() -> Self {
        let deliveries = IntCounterVec::new(
            Opts::new(
                "webhook_deliveries_total",
                "Webhook events posted to the backend, by outcome (delivered, failed: retried later)",
            ),
            &["outcome"],
        )
        .unwrap();
        for outcome in ["delivered", "failed"] {
            deliveries.with_label_values(&[outcome]);
        }
        WebhookMetrics {
            pending: IntGauge::new(
                "webhook_pending",
                "Webhook events recorded and not delivered yet (the whole cluster's outbox)",
            )
            .unwrap(),
            oldest_pending_seconds: Gauge::new(
                "webhook_oldest_pending_seconds",
                "Age of the oldest webhook event not delivered yet; 0 when none waits",
            )
            .unwrap(),
            deliveries,
        }
    }

    fn collectors(&self) -> [Box<dyn prometheus::core::Collector>; 3] {
        [
            Box::new(self.pending.clone()),
            Box::new(self.oldest_pending_seconds.clone()),
            Box::new(self.deliveries.clone()),
        ]
    }

    /// Counts `events` posted in one request, by whether the backend took them.
    pub fn posted(&self, events: usize, delivered: bool) {
        let outcome = if delivered { "delivered" } else { "failed" };
        self.deliveries
            .with_label_values(&[outcome])
            .inc_by(events as u64);
    }
}

/// What crosses the cluster bus, and what the node repaired from PostgreSQL.
pub struct ClusterMetrics {
    node: IntGaugeVec,
    pub nats_connected: IntGauge,
    published: IntCounterVec,
    pub publish_dropped: IntCounter,
    received: IntCounterVec,
    pub rejected: IntCounter,
    pub gaps_filled: IntCounter,
    pub gap_messages_filled: IntCounter,
    pub position_checks: IntCounter,
    pub nodes_seen: IntGauge,
}

impl ClusterMetrics {
    fn new() -> Self {
        let counters =
            |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["kind"]).unwrap();
        ClusterMetrics {
            node: IntGaugeVec::new(
                Opts::new("node_info", "This node's id (value 1)"),
                &["node"],
            )
            .unwrap(),
            nats_connected: IntGauge::new(
                "nats_connected",
                "1 while the node is connected to NATS, 0 otherwise (or alone)",
            )
            .unwrap(),
            published: counters("bus_published_total", "Messages published to NATS, by kind"),
            publish_dropped: IntCounter::new(
                "bus_publish_dropped_total",
                "Copies not published (queue full or NATS refused); other nodes repair them",
            )
            .unwrap(),
            received: counters(
                "bus_received_total",
                "Messages received from other nodes over NATS, by kind",
            ),
            rejected: IntCounter::new(
                "bus_rejected_total",
                "Messages from NATS dropped as malformed or unknown",
            )
            .unwrap(),
            gaps_filled: IntCounter::new(
                "gaps_filled_total",
                "Gaps in a group's msgids filled from PostgreSQL before pushing",
            )
            .unwrap(),
            gap_messages_filled: IntCounter::new(
                "gap_messages_filled_total",
                "Messages read from PostgreSQL to fill gaps",
            )
            .unwrap(),
            position_checks: IntCounter::new(
                "position_checks_total",
                "Batched checks of the live groups' newest msgids in PostgreSQL",
            )
            .unwrap(),
            nodes_seen: IntGauge::new("cluster_nodes", "Other nodes heard from lately").unwrap(),
        }
    }

    fn collectors(&self) -> [Box<dyn prometheus::core::Collector>; 10] {
        [
            Box::new(self.node.clone()),
            Box::new(self.nats_connected.clone()),
            Box::new(self.published.clone()),
            Box::new(self.publish_dropped.clone()),
            Box::new(self.received.clone()),
            Box::new(self.rejected.clone()),
            Box::new(self.gaps_filled.clone()),
            Box::new(self.gap_messages_filled.clone()),
            Box::new(self.position_checks.clone()),
            Box::new(self.nodes_seen.clone()),
        ]
    }

    /// Names this node, as the label of `herald_node_info`.
    pub fn name_node(&self, node: &str) {
        self.node.with_label_values(&[node]).set(1);
    }

    pub fn published(&self, kind: &str) {
        self.published.with_label_values(&[kind]).inc();
    }

    pub fn received(&self, kind: &str) {
        self.received.with_label_values(&[kind]).inc();
    }
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
            published: IntCounter::new(
                "published_total",
                "Messages posted through the admin publish API and stored",
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
            cluster: ClusterMetrics::new(),
            webhooks: WebhookMetrics::new(),
            jwks: JwksMetrics::new(),
            retention: RetentionMetrics::new(),
            registry,
        };
        // Every name above is unique and valid, so registration cannot fail.
        for collector in metrics.collectors() {
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

    /// Every metric above, as collectors to register.
    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        let own: [Box<dyn prometheus::core::Collector>; 14] = [
            Box::new(self.sessions.clone()),
            Box::new(self.groups_active.clone()),
            Box::new(self.messages_stored.clone()),
            Box::new(self.duplicate_sends.clone()),
            Box::new(self.published.clone()),
            Box::new(self.deliveries.clone()),
            Box::new(self.acks_flushed.clone()),
            Box::new(self.slow_consumers_closed.clone()),
            Box::new(self.sessions_refused.clone()),
            Box::new(self.send_batch_size.clone()),
            Box::new(self.ack_batch_size.clone()),
            Box::new(self.storage_seconds.clone()),
            Box::new(self.errors.clone()),
            Box::new(self.requests_limited.clone()),
        ];
        own.into_iter()
            .chain(self.cluster.collectors())
            .chain(self.webhooks.collectors())
            .chain(self.jwks.collectors())
            .chain(self.retention.collectors())
            .collect()
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
        self.jwks.update_ages();
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("writing to a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every family Herald exports, with its prefix, including those with labels that no
    /// scrape shows before their first use.
    fn exported() -> BTreeSet<String> {
        let process = prometheus::process_collector::ProcessCollector::for_self();
        let mut collectors = global().collectors();
        collectors.push(Box::new(process));
        collectors
            .iter()
            .flat_map(|c| {
                c.desc()
                    .into_iter()
                    .map(|d| format!("herald_{}", d.fq_name))
            })
            .collect()
    }

    /// The `herald_…` metric names a file mentions.
    fn named_in(text: &str) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let mut rest = text;
        while let Some(at) = rest.find("herald_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            names.insert(name);
        }
        names
    }

    /// Whether `name` is an exported family, or a histogram's series of one.
    fn is_exported(exported: &BTreeSet<String>, name: &str) -> bool {
        exported.contains(name)
            || ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| name.strip_suffix(suffix))
                .any(|family| exported.contains(family))
    }

    #[test]
    fn the_dashboard_and_the_alert_rules_name_only_metrics_herald_exports() {
        let exported = exported();
        let files = [
            (
                "deploy/grafana/herald.json",
                include_str!("../deploy/grafana/herald.json"),
            ),
            (
                "deploy/prometheus/herald.rules.yml",
                include_str!("../deploy/prometheus/herald.rules.yml"),
            ),
        ];
        for (file, text) in files {
            let named = named_in(text);
            assert!(named.len() > 5, "{file} names Herald's metrics: {named:?}");
            let unknown: Vec<_> = named
                .iter()
                .filter(|name| !is_exported(&exported, name))
                .collect();
            assert!(
                unknown.is_empty(),
                "{file} names metrics Herald does not export: {unknown:?}"
            );
        }
    }
}
