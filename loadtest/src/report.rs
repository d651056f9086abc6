//! The run's results: a table for people, a JSON report for machines, an SVG latency plot.

use std::path::Path;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde::Serialize;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub count: u64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            count: histogram.len(),
        }
    }
}

/// A fan-out over a cluster: its receivers on the senders' node against those on the others.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AcrossNodes {
    pub nodes: u64,
    pub same_node: Receivers,
    /// Every delivery here crossed the bus between nodes.
    pub cross_node: Receivers,
}

/// Reading sessions on one side of that split, over the whole run (warm-up included).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Receivers {
    pub sessions: u64,
    /// Of the measured window only.
    pub latency_ms: Percentiles,
    /// Messages their groups stored while they were connected, summed over the sessions.
    pub expected: u64,
    pub received: u64,
    /// Expected but not received, summed per session.
    pub lost: u64,
}

/// Everything a run reports. Fields that a scenario does not measure are left out of the JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub target: String,
    pub sessions: u64,
    pub groups: u64,
    pub duration_s: f64,
    pub deliveries: u64,
    pub deliveries_per_s: f64,
    pub stored: u64,
    pub stored_per_s: f64,
    pub latency_ms: Percentiles,
    pub sent_latency_ms: Percentiles,
    pub connect_per_s: f64,
    pub lost: u64,
    pub duplicates: u64,
    pub errors: u64,
    pub closed_too_slow: u64,
    pub dropped: u64,
    pub server_rss_bytes: u64,
    pub server_cpu_percent: f64,
    /// Reconnect storm: when the last session was caught up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catch_up_s: Option<f64>,
    /// Reconnect storm: each session's time from the storm's start to caught up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catch_up_ms: Option<Percentiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_per_session_bytes: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub across_nodes: Option<AcrossNodes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Box<Report>>,
    /// Herald's deliveries/s as a share of the baseline's, in the same run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_baseline: Option<f64>,
}

impl Report {
    /// Prints the summary table; latencies a scenario does not measure are left out.
    pub fn print(&self) {
        println!("\n== {} against {} ==", self.scenario, self.target);
        let mut rows: Vec<(&str, String)> = vec![
            (
                "sessions",
                format!("{} in {} groups", self.sessions, self.groups),
            ),
            (
                "connect rate",
                format!("{:.0} sessions/s", self.connect_per_s),
            ),
            ("measured for", format!("{:.1} s", self.duration_s)),
            (
                "deliveries",
                format!("{} ({:.0}/s)", self.deliveries, self.deliveries_per_s),
            ),
            (
                "stored messages",
                format!("{} ({:.0}/s)", self.stored, self.stored_per_s),
            ),
        ];
        let split = self.across_nodes.as_ref();
        let latencies = [
            ("delivery latency", Some(&self.latency_ms)),
            ("  same node", split.map(|s| &s.same_node.latency_ms)),
            ("  cross node", split.map(|s| &s.cross_node.latency_ms)),
            ("sent-reply latency", Some(&self.sent_latency_ms)),
            ("catch-up per session", self.catch_up_ms.as_ref()),
        ];
        for (name, percentiles) in latencies {
            if let Some(p) = percentiles.filter(|p| p.count > 0) {
                rows.push((name, latency_row(p)));
            }
        }
        if let Some(split) = split {
            rows.push((
                "cross / same node p99",
                format!(
                    "{:.2} over {} nodes",
                    split.cross_node.latency_ms.p99 / split.same_node.latency_ms.p99.max(0.001),
                    split.nodes
                ),
            ));
            for (name, side) in [
                ("same-node receivers", &split.same_node),
                ("cross-node receivers", &split.cross_node),
            ] {
                rows.push((
                    name,
                    format!(
                        "{} sessions: {} expected, {} received, {} lost",
                        side.sessions, side.expected, side.received, side.lost
                    ),
                ));
            }
        }
        rows.extend([
            ("lost", self.lost.to_string()),
            ("duplicates", self.duplicates.to_string()),
            ("errors", self.errors.to_string()),
            ("closed too slow (4008)", self.closed_too_slow.to_string()),
            ("dropped otherwise", self.dropped.to_string()),
            (
                "server RSS",
                format!("{:.1} MiB", self.server_rss_bytes as f64 / 1048576.0),
            ),
            (
                "server CPU",
                format!("{:.0} % of a core", self.server_cpu_percent),
            ),
        ]);
        for (name, value) in rows {
            println!("  {name:<24} {value}");
        }
        if let Some(catch_up) = self.catch_up_s {
            println!("  {:<24} {catch_up:.2} s", "catch-up time (last)");
        }
        if let Some(per_session) = self.rss_per_session_bytes {
            println!(
                "  {:<24} {:.1} KiB",
                "server RSS per session",
                per_session / 1024.0
            );
        }
        if let (Some(baseline), Some(share)) = (&self.baseline, self.vs_baseline) {
            println!(
                "  {:<24} {:.0}/s deliveries, p99 {:.1} ms; Herald reaches {:.0} % of it",
                "baseline (no storage)",
                baseline.deliveries_per_s,
                baseline.latency_ms.p99,
                share * 100.0
            );
        }
        println!(
            "  verdict: {}",
            if self.lost_anywhere() == 0 {
                "complete (nothing lost)"
            } else {
                "LOSS"
            }
        );
    }

    /// Messages lost: by the sessions' own count of gaps and shortfalls, or on a cluster by
    /// each receiver's expected against received, whichever is more (both count the same
    /// losses, in two ways).
    pub fn lost_anywhere(&self) -> u64 {
        let by_receiver = self
            .across_nodes
            .as_ref()
            .map_or(0, |split| split.same_node.lost + split.cross_node.lost);
        self.lost.max(by_receiver)
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

fn latency_row(p: &Percentiles) -> String {
    format!(
        "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ms",
        p.p50, p.p90, p.p99, p.p999, p.max
    )
}

/// Draws latency by percentile (HDR style: x is 1/(1-p), log scale) for each series.
pub fn plot(path: &Path, title: &str, series: &[(&str, &Histogram<u64>)]) -> Result<()> {
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let curves: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(name, h)| {
            let points = h
                .iter_quantiles(1)
                .map(|v| {
                    let q = v.quantile_iterated_to().min(0.99999);
                    (1.0 / (1.0 - q), v.value_iterated_to() as f64 / 1000.0)
                })
                .collect();
            (*name, points)
        })
        .collect();
    let max_ms = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, ms)| ms))
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((1.0f64..100_000.0f64).log_scale(), 0.0..max_ms * 1.05)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| format!("{:.3}%", 100.0 * (1.0 - 1.0 / x)))
        .draw()?;
    for (i, (name, points)) in curves.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}
