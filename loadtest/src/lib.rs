//! Herald's load-test harness: thousands of real WebSocket sessions against a running (or
//! self-started) Herald, measuring latency, throughput and completeness.
//!
//! # Layout
//! - [`target`]: the Herald under test, started here or reached by URL; provisioning; for
//!   the fault scenario, kill, stop and restart.
//! - [`baseline`]: a storage-free broadcast server, the ceiling of the machine.
//! - [`cluster`]: several Heralds started here on one database, joined over NATS.
//! - [`backend`]: any of these, as scenarios see them.
//! - [`client`]: one simulated session: receives, checks, times, acks, sends.
//! - [`kit`]: what the harness shares with the integration tests: the launcher, the
//!   WebSocket client, the frame decoder, PostgreSQL.
//! - [`record`]: latency histograms and counters shared by all sessions.
//! - [`scenarios`]: fan-out (and big-group, slow-consumer, baseline), reconnect-storm, idle,
//!   faults.
//! - [`progress`]: progress bars while running.
//! - [`report`]: summary table, JSON report, SVG latency plot.

pub mod backend;
pub mod baseline;
pub mod client;
pub mod cluster;
pub mod kit;
pub mod progress;
pub mod record;
pub mod report;
pub mod scenarios;
pub mod target;
