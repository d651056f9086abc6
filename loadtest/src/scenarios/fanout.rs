//! Fan-out: G groups of M online members, S senders per group, open loop at a fixed offered
//! rate or closed loop; every member times and checks every message of its group. With a
//! stalled share it is the slow-consumer scenario; with one big group, big-group. Against a
//! cluster, the senders sit on its first node and every group's other members are dealt
//! round-robin over all nodes, so latency is told apart by the receiver's side.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio::sync::watch;

use crate::backend::Backend;
use crate::client::{self, Pace, Phase, Progress, Role};
use crate::kit::client::{connect, Socket};
use crate::kit::frames::Cursor;
use crate::progress;
use crate::record::{Placement, Recorder};
use crate::report::{AcrossNodes, Percentiles, Receivers, Report};
use crate::target::id_base;

/// Most WebSocket handshakes in flight while connecting.
const CONNECTS_IN_FLIGHT: usize = 256;
/// Longest wait for the last replies and deliveries after sending stops.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Groups.
    #[arg(long, default_value_t = 20)]
    pub groups: usize,
    /// Online members per group (each a session of its own user).
    #[arg(long, default_value_t = 250)]
    pub members: usize,
    /// Sending members per group.
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// Offered messages per second over all groups (open loop).
    #[arg(long, default_value_t = 400.0)]
    pub rate: f64,
    /// Closed loop instead: sends each sender keeps waiting for `sent`.
    #[arg(long)]
    pub window: Option<usize>,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// Seconds of sending before measuring.
    #[arg(long, default_value_t = 2)]
    pub warmup_s: u64,
    /// Padding bytes in each message body.
    #[arg(long, default_value_t = 64)]
    pub body_bytes: usize,
    /// Milliseconds between a member's cumulative acks.
    #[arg(long, default_value_t = 1000)]
    pub ack_ms: u64,
    /// Share of each group's members that stop reading (set by slow-consumer).
    #[arg(skip)]
    pub stalled_share: f64,
    /// Herald nodes to start. More than one make a cluster on one database, joined through
    /// a nats-server of its own: senders connect to the first node, the other members are
    /// spread over all.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
}

/// A finished run: its report and its delivery-latency histograms (for plots).
pub struct Outcome {
    pub report: Report,
    pub latency: Histogram<u64>,
    /// Against a cluster: the latency of the receivers on the senders' node, and on others.
    pub across_nodes: Option<[Histogram<u64>; 2]>,
}

impl Outcome {
    /// The report, and the latency curves to plot named after `server`.
    pub fn into_parts(self, server: &str) -> (Report, Vec<(String, Histogram<u64>)>) {
        let series = match self.across_nodes {
            None => vec![(server.to_owned(), self.latency)],
            Some([same, cross]) => vec![
                (format!("{server}, same node"), same),
                (format!("{server}, cross node"), cross),
            ],
        };
        (self.report, series)
    }
}

struct Member {
    role: Role,
    progress: Arc<Progress>,
    /// Its group's latest msgid when it connected: it expects every one after.
    joined_at: u64,
}

/// The node (an index into the backend's) member `k` of a group connects to: senders on the
/// first, the others dealt round-robin over all, so every group has receivers on every node.
fn node_of(k: usize, senders: usize, nodes: usize) -> usize {
    k.checked_sub(senders)
        .map_or(0, |receiver| receiver % nodes)
}

pub async fn run(backend: &Backend, args: &FanoutArgs, scenario: &str) -> Result<Outcome> {
    if args.groups == 0 || args.members == 0 || args.senders > args.members {
        bail!("need at least one group and member, and no more senders than members");
    }
    let stalled = ((args.members as f64) * args.stalled_share).floor() as usize;
    if args.senders + stalled > args.members {
        bail!("senders and stalled members overlap: lower --stalled-share");
    }
    let base = id_base();
    let total = args.groups * args.members;
    let uids: Vec<u64> = (0..total as u64).map(|i| base + i).collect();
    let gids: Vec<u64> = (0..args.groups as u64).map(|g| base + g).collect();
    let setup = progress::spinner(format!("creating {total} users and {} groups", args.groups));
    backend.create_users(&uids).await?;
    for (g, &gid) in gids.iter().enumerate() {
        backend
            .create_group(gid, &uids[g * args.members..(g + 1) * args.members])
            .await?;
    }
    let tokens = backend.tokens(&uids).await?;
    setup.finish_and_clear();

    let node_addrs = backend.node_addrs();
    let nodes = node_addrs.len();
    let (sockets, connect_per_s) = connect_all(&tokens, |i| {
        node_addrs[node_of(i % args.members, args.senders, nodes)]
    })
    .await?;
    let recorder = Arc::new(Recorder::new());
    let group_latest: Vec<Arc<std::sync::atomic::AtomicU64>> =
        gids.iter().map(|_| Arc::default()).collect();
    let interval =
        Duration::from_secs_f64((args.groups * args.senders) as f64 / args.rate.max(0.001));
    let pace = match args.window {
        Some(window) => Pace::Window(window),
        None => Pace::Every(interval),
    };
    let (phase_tx, phase_rx) = watch::channel(Phase::Sending);
    let mut members = Vec::with_capacity(total);
    let mut tasks = Vec::with_capacity(total);
    for (i, (ws, start)) in sockets.into_iter().enumerate() {
        let (g, k) = (i / args.members, i % args.members);
        let role = Role {
            gid: gids[g],
            group_latest: group_latest[g].clone(),
            pace: (k < args.senders).then_some(pace),
            send_limit: None,
            body_pad: args.body_bytes,
            ack_every: Duration::from_millis(args.ack_ms),
            stalled: k >= args.members - stalled,
            placement: match node_of(k, args.senders, nodes) {
                0 => Placement::SameNode,
                _ => Placement::CrossNode,
            },
        };
        let joined_at = start.latest;
        let progress = Arc::new(Progress::default());
        tasks.push(tokio::spawn(client::run(
            ws,
            start,
            role.clone(),
            recorder.clone(),
            progress.clone(),
            phase_rx.clone(),
        )));
        members.push(Member {
            role,
            progress,
            joined_at,
        });
    }

    tokio::time::sleep(Duration::from_secs(args.warmup_s)).await;
    recorder.reset_latencies();
    let server_before = backend.stats().await;
    let (deliveries_before, stored_before) = (
        Recorder::get(&recorder.deliveries),
        Recorder::get(&recorder.stored),
    );
    let started = Instant::now();
    progress::measure(&recorder, Duration::from_secs(args.duration_s)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let deliveries = Recorder::get(&recorder.deliveries) - deliveries_before;
    let stored = Recorder::get(&recorder.stored) - stored_before;
    let server_after = backend.stats().await;

    phase_tx.send_replace(Phase::Draining);
    let readers: Vec<&Member> = members.iter().filter(|m| !m.role.stalled).collect();
    wait_until(|| {
        readers
            .iter()
            .all(|m| m.progress.in_flight.load(Ordering::Relaxed) == 0)
    })
    .await;
    let caught_up = |m: &&Member| {
        m.progress.ended_early.load(Ordering::Relaxed)
            || m.progress.last.load(Ordering::Relaxed)
                >= m.role.group_latest.load(Ordering::Relaxed)
    };
    wait_until(|| readers.iter().all(caught_up)).await;
    // Stalled clients never read their 4008 close: the server's count is the one to trust.
    let server_end = backend.stats().await;
    phase_tx.send_replace(Phase::Stop);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }

    let shortfall: u64 = readers
        .iter()
        .filter(|m| !m.progress.ended_early.load(Ordering::Relaxed))
        .map(|m| {
            let last = m.progress.last.load(Ordering::Relaxed);
            m.role
                .group_latest
                .load(Ordering::Relaxed)
                .saturating_sub(last)
        })
        .sum();
    let latency = recorder.delivery_latency.lock().unwrap().clone();
    let across_nodes = (nodes > 1).then(|| {
        [Placement::SameNode, Placement::CrossNode]
            .map(|placement| recorder.latency_at(placement).lock().unwrap().clone())
    });
    let report = Report {
        scenario: scenario.into(),
        target: backend.name(),
        sessions: total as u64,
        groups: args.groups as u64,
        duration_s: elapsed,
        deliveries,
        deliveries_per_s: deliveries as f64 / elapsed,
        stored,
        stored_per_s: stored as f64 / elapsed,
        latency_ms: Percentiles::of(&latency),
        sent_latency_ms: Percentiles::of(&recorder.sent_latency.lock().unwrap()),
        connect_per_s,
        lost: Recorder::get(&recorder.gaps) + shortfall,
        duplicates: Recorder::get(&recorder.duplicates),
        errors: Recorder::get(&recorder.errors),
        closed_too_slow: server_end.map_or(Recorder::get(&recorder.closed_too_slow), |s| {
            s.slow_consumers_closed
        }),
        dropped: Recorder::get(&recorder.dropped),
        server_rss_bytes: server_after.map_or(0, |s| s.rss_bytes),
        server_cpu_percent: match (server_before, server_after) {
            (Some(before), Some(after)) => after.cpu_percent_since(&before),
            _ => 0.0,
        },
        across_nodes: across_nodes.as_ref().map(|[same, cross]| AcrossNodes {
            nodes: nodes as u64,
            same_node: receivers(&readers, Placement::SameNode, same),
            cross_node: receivers(&readers, Placement::CrossNode, cross),
        }),
        ..Report::default()
    };
    Ok(Outcome {
        report,
        latency,
        across_nodes,
    })
}

/// What the readers placed so expected and received (those the server cut off left out).
fn receivers(readers: &[&Member], placement: Placement, latency: &Histogram<u64>) -> Receivers {
    let mut side = Receivers {
        latency_ms: Percentiles::of(latency),
        ..Receivers::default()
    };
    for m in readers.iter().filter(|m| {
        m.role.placement == placement && !m.progress.ended_early.load(Ordering::Relaxed)
    }) {
        let expected = m
            .role
            .group_latest
            .load(Ordering::Relaxed)
            .saturating_sub(m.joined_at);
        let received = m.progress.received.load(Ordering::Relaxed);
        side.sessions += 1;
        side.expected += expected;
        side.received += received;
        side.lost += expected.saturating_sub(received);
    }
    side
}

/// Opens every session, the `n`th at `addr_of(n)`, `CONNECTS_IN_FLIGHT` at a time; returns
/// them in token order with the connect rate.
pub async fn connect_all(
    tokens: &[String],
    addr_of: impl Fn(usize) -> SocketAddr,
) -> Result<(Vec<(Socket, Cursor)>, f64)> {
    let bar = progress::counter(tokens.len() as u64, "connecting");
    let started = Instant::now();
    let mut connected: Vec<(usize, Socket, Cursor)> =
        futures_util::stream::iter(tokens.iter().enumerate())
            .map(|(n, token)| {
                let (bar, addr) = (bar.clone(), addr_of(n));
                async move {
                    let (ws, hello) = connect(addr, n, token).await?;
                    bar.inc(1);
                    let cursor = hello.groups.first().copied().unwrap_or(Cursor {
                        gid: 0,
                        last_ack: 0,
                        latest: 0,
                    });
                    Ok::<_, anyhow::Error>((n, ws, cursor))
                }
            })
            .buffer_unordered(CONNECTS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
    let rate = tokens.len() as f64 / started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    connected.sort_by_key(|(n, _, _)| *n);
    Ok((
        connected.into_iter().map(|(_, ws, c)| (ws, c)).collect(),
        rate,
    ))
}

/// Polls `done` until it holds or the drain deadline passes.
pub async fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DRAIN_DEADLINE;
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
