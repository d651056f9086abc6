//! What a run measures: latency histograms and counters shared by every session task.
//!
//! Tasks record latencies into a small local buffer and hand it to the shared histograms
//! in batches, so 20,000 sessions neither contend on one lock per delivery nor carry a
//! histogram each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use hdrhistogram::Histogram;

/// Latencies are kept in microseconds, up to this many (a minute).
const MAX_LATENCY_US: u64 = 60_000_000;
/// Samples a task buffers before taking the shared lock.
const LOCAL_BATCH: usize = 512;

/// An empty latency histogram: microseconds, from 1 to a minute, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Where a session is against its group's senders: on their node, or (in a cluster) on
/// another, whose deliveries cross the bus between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    SameNode,
    CrossNode,
}

pub struct Recorder {
    /// The run's clock: send times travel in message bodies as nanoseconds since this.
    pub epoch: Instant,
    /// Send → receipt of every delivery.
    pub delivery_latency: Mutex<Histogram<u64>>,
    /// The same, of deliveries to sessions on the senders' node only.
    pub same_node_latency: Mutex<Histogram<u64>>,
    /// The same, of deliveries to sessions on other nodes only.
    pub cross_node_latency: Mutex<Histogram<u64>>,
    /// Send → `sent` reply.
    pub sent_latency: Mutex<Histogram<u64>>,
    pub deliveries: AtomicU64,
    pub stored: AtomicU64,
    pub duplicates: AtomicU64,
    /// Msgids a session saw skipped (each one missing).
    pub gaps: AtomicU64,
    pub errors: AtomicU64,
    /// Sessions the server closed with 4008 (too slow).
    pub closed_too_slow: AtomicU64,
    /// Sessions that ended for another reason before the run did.
    pub dropped: AtomicU64,
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            epoch: Instant::now(),
            delivery_latency: Mutex::new(histogram()),
            same_node_latency: Mutex::new(histogram()),
            cross_node_latency: Mutex::new(histogram()),
            sent_latency: Mutex::new(histogram()),
            deliveries: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            closed_too_slow: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since the run's epoch.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    pub fn count(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Empties the histograms (between a warm-up and a run).
    pub fn reset_latencies(&self) {
        for histogram in [
            &self.delivery_latency,
            &self.same_node_latency,
            &self.cross_node_latency,
            &self.sent_latency,
        ] {
            histogram.lock().unwrap().reset();
        }
    }

    /// The delivery latency of sessions placed so.
    pub fn latency_at(&self, placement: Placement) -> &Mutex<Histogram<u64>> {
        match placement {
            Placement::SameNode => &self.same_node_latency,
            Placement::CrossNode => &self.cross_node_latency,
        }
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// One task's unflushed samples.
pub struct LocalSamples {
    /// Where the task's session is: its deliveries count there too.
    placement: Placement,
    delivery_us: Vec<u64>,
    sent_us: Vec<u64>,
}

impl LocalSamples {
    pub fn new(placement: Placement) -> Self {
        LocalSamples {
            placement,
            delivery_us: Vec::new(),
            sent_us: Vec::new(),
        }
    }

    pub fn delivery(&mut self, recorder: &Recorder, us: u64) {
        self.delivery_us.push(us.clamp(1, MAX_LATENCY_US));
        if self.delivery_us.len() >= LOCAL_BATCH {
            self.flush(recorder);
        }
    }

    pub fn sent(&mut self, recorder: &Recorder, us: u64) {
        self.sent_us.push(us.clamp(1, MAX_LATENCY_US));
        if self.sent_us.len() >= LOCAL_BATCH {
            self.flush(recorder);
        }
    }

    pub fn flush(&mut self, recorder: &Recorder) {
        for (samples, shared) in [
            (&self.delivery_us, &recorder.delivery_latency),
            (&self.delivery_us, recorder.latency_at(self.placement)),
            (&self.sent_us, &recorder.sent_latency),
        ] {
            if samples.is_empty() {
                continue;
            }
            let mut histogram = shared.lock().unwrap();
            for &us in samples {
                // In bounds by the clamp above.
                let _ = histogram.record(us);
            }
        }
        self.delivery_us.clear();
        self.sent_us.clear();
    }
}
