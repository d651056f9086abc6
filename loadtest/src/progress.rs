//! Progress while a run goes on (indicatif).

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::record::Recorder;

/// A spinner for a set-up step.
pub fn spinner(message: String) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A bar counting to `total`.
pub fn counter(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total).with_message(what.to_owned());
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({per_sec})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar
}

/// Shows throughput and latency for `duration`, then returns.
pub async fn measure(recorder: &Recorder, duration: Duration) {
    let bar = ProgressBar::new(duration.as_secs().max(1));
    bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut last = (
        Instant::now(),
        Recorder::get(&recorder.deliveries),
        Recorder::get(&recorder.stored),
    );
    while started.elapsed() < duration {
        tokio::time::sleep(
            Duration::from_millis(500).min(duration.saturating_sub(started.elapsed())),
        )
        .await;
        let now = (
            Instant::now(),
            Recorder::get(&recorder.deliveries),
            Recorder::get(&recorder.stored),
        );
        let seconds = now.0.duration_since(last.0).as_secs_f64().max(1e-6);
        let p99 = recorder
            .delivery_latency
            .lock()
            .unwrap()
            .value_at_quantile(0.99) as f64
            / 1000.0;
        bar.set_message(format!(
            "{:>9.0} deliveries/s {:>7.0} stored/s  p99 {p99:.1} ms  errors {}",
            (now.1 - last.1) as f64 / seconds,
            (now.2 - last.2) as f64 / seconds,
            Recorder::get(&recorder.errors),
        ));
        bar.set_position(started.elapsed().as_secs());
        last = now;
    }
    bar.finish_and_clear();
}
