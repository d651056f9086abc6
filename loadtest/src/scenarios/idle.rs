//! Idle: hold N sessions that do nothing, and report the server's memory per session.

use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::StreamExt;

use crate::backend::Backend;
use crate::progress;
use crate::report::Report;
use crate::scenarios::fanout::connect_all;
use crate::target::id_base;

#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    /// Sessions to hold.
    #[arg(long, default_value_t = 20_000)]
    pub sessions: usize,
    /// Seconds to hold them before measuring.
    #[arg(long, default_value_t = 10)]
    pub hold_s: u64,
}

pub async fn run(backend: &Backend, args: &IdleArgs) -> Result<Report> {
    let base = id_base();
    let uids: Vec<u64> = (0..args.sessions as u64).map(|i| base + i).collect();
    let setup = progress::spinner(format!("creating {} users", uids.len()));
    backend.create_users(&uids).await?;
    let tokens = backend.tokens(&uids).await?;
    setup.finish_and_clear();
    let before = backend
        .stats()
        .await
        .context("idle needs the server's /metrics")?;
    let (sessions, connect_per_s) = connect_all(&tokens, |_| backend.addr()).await?;
    // Read in the background so the server's pings are answered.
    let readers: Vec<_> = sessions
        .into_iter()
        .map(|(mut ws, _)| tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} }))
        .collect();
    let hold = progress::spinner(format!(
        "holding {} idle sessions for {} s",
        args.sessions, args.hold_s
    ));
    tokio::time::sleep(Duration::from_secs(args.hold_s)).await;
    let after = backend
        .stats()
        .await
        .context("idle needs the server's /metrics")?;
    hold.finish_and_clear();
    for reader in &readers {
        reader.abort();
    }
    let held = after.sessions;
    Ok(Report {
        scenario: "idle".into(),
        target: backend.name(),
        sessions: held,
        connect_per_s,
        dropped: (args.sessions as u64).saturating_sub(held),
        server_rss_bytes: after.rss_bytes,
        server_cpu_percent: after.cpu_percent_since(&before),
        rss_per_session_bytes: Some(
            after.rss_bytes.saturating_sub(before.rss_bytes) as f64 / held.max(1) as f64,
        ),
        duration_s: args.hold_s as f64,
        ..Report::default()
    })
}
