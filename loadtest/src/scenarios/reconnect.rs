//! Reconnect storm: N members go away, messages pile up in their groups, then all come back
//! at once and catch up by pulling from their `last_ack`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::backend::Backend;
use crate::client::{self, Pace, Phase, Progress, Role};
use crate::kit::client::connect;
use crate::progress;
use crate::record::{Placement, Recorder};
use crate::report::{Percentiles, Report};
use crate::scenarios::fanout::{connect_all, wait_until};
use crate::target::id_base;

/// Handshakes in flight during the storm: "all at once", within the listen backlog.
const STORM_CONNECTS_IN_FLIGHT: usize = 1024;

#[derive(Debug, Clone, clap::Args)]
pub struct ReconnectArgs {
    /// Members that go away and come back.
    #[arg(long, default_value_t = 10_000)]
    pub sessions: usize,
    /// Groups they are spread over.
    #[arg(long, default_value_t = 100)]
    pub groups: usize,
    /// Messages each group receives while they are away.
    #[arg(long, default_value_t = 100)]
    pub missed: u64,
}

pub async fn run(backend: &Backend, args: &ReconnectArgs) -> Result<Report> {
    if args.groups == 0 || args.sessions < args.groups {
        bail!("need at least one member per group");
    }
    let per_group = args.sessions / args.groups;
    let base = id_base();
    // Per group: one sender (the owner) then its members.
    let uids: Vec<u64> = (0..(args.groups * (per_group + 1)) as u64)
        .map(|i| base + i)
        .collect();
    let gids: Vec<u64> = (0..args.groups as u64).map(|g| base + g).collect();
    let setup = progress::spinner(format!(
        "creating {} users and {} groups",
        uids.len(),
        args.groups
    ));
    backend.create_users(&uids).await?;
    let groups: Vec<&[u64]> = uids.chunks(per_group + 1).collect();
    for (members, &gid) in groups.iter().zip(&gids) {
        backend.create_group(gid, members).await?;
    }
    let member_uids: Vec<u64> = groups.iter().flat_map(|m| m[1..].iter().copied()).collect();
    let sender_uids: Vec<u64> = groups.iter().map(|m| m[0]).collect();
    let member_tokens = backend.tokens(&member_uids).await?;
    let sender_tokens = backend.tokens(&sender_uids).await?;
    setup.finish_and_clear();

    // Everyone is online once, then goes away.
    let (members, connect_per_s) = connect_all(&member_tokens, |_| backend.addr()).await?;
    for (mut ws, _) in members {
        let _ = ws.close(None).await;
    }

    // The groups move on without them.
    let recorder = Arc::new(Recorder::new());
    let (senders, _) = connect_all(&sender_tokens, |_| backend.addr()).await?;
    let (phase_tx, phase_rx) = watch::channel(Phase::Sending);
    let mut tasks = Vec::new();
    for ((ws, start), &gid) in senders.into_iter().zip(&gids) {
        let role = Role {
            gid,
            group_latest: Arc::default(),
            pace: Some(Pace::Window(16)),
            send_limit: Some(args.missed),
            body_pad: 64,
            ack_every: Duration::from_secs(1),
            stalled: false,
            placement: Placement::SameNode,
        };
        tasks.push(tokio::spawn(client::run(
            ws,
            start,
            role,
            recorder.clone(),
            Arc::new(Progress::default()),
            phase_rx.clone(),
        )));
    }
    let sending = progress::spinner(format!("sending {} messages to each group", args.missed));
    let started = Instant::now();
    let target = args.missed * args.groups as u64;
    wait_until(|| Recorder::get(&recorder.stored) + Recorder::get(&recorder.errors) >= target)
        .await;
    phase_tx.send_replace(Phase::Stop);
    let stored = Recorder::get(&recorder.stored);
    let stored_per_s = stored as f64 / started.elapsed().as_secs_f64();
    for task in tasks {
        let _ = task.await;
    }
    sending.finish_and_clear();

    // The storm: every member reconnects at once and pulls what it missed.
    let bar = progress::counter(member_tokens.len() as u64, "catching up");
    let addr = backend.addr();
    let storm = Instant::now();
    let caught_up: Vec<Result<CatchUp>> =
        futures_util::stream::iter(member_tokens.iter().enumerate())
            .map(|(n, token)| {
                let bar = bar.clone();
                async move {
                    let (mut ws, hello) = connect(addr, n, token).await?;
                    let cursor = *hello
                        .groups
                        .first()
                        .ok_or_else(|| anyhow::anyhow!("no group in hello"))?;
                    let msgids =
                        client::pull_until(&mut ws, cursor.gid, cursor.last_ack, cursor.latest)
                            .await?;
                    client::ack(&mut ws, cursor.gid, cursor.latest).await?;
                    let done = storm.elapsed();
                    let _ = ws.close(None).await;
                    bar.inc(1);
                    Ok(CatchUp {
                        from: cursor.last_ack,
                        to: cursor.latest,
                        msgids,
                        done,
                    })
                }
            })
            .buffer_unordered(STORM_CONNECTS_IN_FLIGHT)
            .collect()
            .await;
    bar.finish_and_clear();
    let mut catch_up = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut report = Report {
        scenario: "reconnect-storm".into(),
        target: backend.name(),
        sessions: member_tokens.len() as u64,
        groups: args.groups as u64,
        stored,
        stored_per_s,
        connect_per_s,
        ..Report::default()
    };
    for result in caught_up {
        let done = match result {
            Ok(done) => done,
            Err(error) => {
                report.errors += 1;
                eprintln!("a session failed to catch up: {error:#}");
                continue;
            }
        };
        let expected = done.to - done.from;
        let mut next = done.from + 1;
        for &msgid in &done.msgids {
            if msgid < next {
                report.duplicates += 1;
            } else {
                report.lost += msgid - next;
                next = msgid + 1;
            }
        }
        report.lost += done.to.saturating_sub(next - 1);
        report.deliveries += expected.min(done.msgids.len() as u64);
        catch_up.record(done.done.as_micros().max(1) as u64)?;
    }
    report.lost += report.errors * args.missed;
    let total = storm.elapsed().as_secs_f64();
    report.catch_up_s = Some(catch_up.max() as f64 / 1e6);
    report.duration_s = total;
    report.deliveries_per_s = report.deliveries as f64 / total;
    report.catch_up_ms = Some(Percentiles::of(&catch_up));
    if let Some(stats) = backend.stats().await {
        report.server_rss_bytes = stats.rss_bytes;
    }
    Ok(report)
}

struct CatchUp {
    from: u64,
    to: u64,
    msgids: Vec<u64>,
    done: Duration,
}
