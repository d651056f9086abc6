//! Test helpers on top of the load-test harness's kit (`herald_loadtest::kit`): a migrated
//! database per test on the PostgreSQL `scripts/test` starts, the real `herald` binary on
//! 127.0.0.1 port 0, and real HTTP and WebSocket clients.
//!
//! - [`database`]: URLs, SQL, each test's database cloned from a migrated template.
//! - [`server`]: the server under test and its HTTP API.
//! - [`client`]: a WebSocket session with waits and request matching.
//! - [`cluster`]: a real nats-server and several nodes on one database.

mod client;
mod cluster;
mod database;
mod server;

use std::time::Duration;

pub use client::Client;
pub use cluster::Cluster;
pub use database::{fresh_database, postgres_url, sql};
pub use herald_loadtest::kit::launcher::{ADMIN_KEY, JWT_SECRET};
pub use server::{respond, Server};

/// How long a test waits for any one frame or reply.
pub const WAIT: Duration = Duration::from_secs(10);

/// Polls `probe` until it yields a value; panics with `what` and the last observation
/// after `within`.
pub async fn eventually<T>(
    what: &str,
    within: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match probe().await {
            Ok(found) => return found,
            Err(last) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: not within {within:?}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// One metric's value from Prometheus text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing"))
}
