//! The cluster faults (`faults --nodes N`, N ≥ 2): N nodes on one fresh database of
//! `--postgres-url`, over a nats-server of their own, under the load and with the book of the
//! single-node faults. Member k of group g lives on node (g + k) mod N (senders too); every
//! reader checks that what is pushed on each connection is dense and in msgid order, and times
//! the pushes that crossed nodes. In turn:
//!
//! 1. **nats-server killed** under load, down for `--nats-down-s`, started again: every node
//!    must lose the bus, sessions stay open and streams dense, members on other nodes than a
//!    sender's still get its messages while the bus is down (by position check), and every
//!    member catches up once it is back (repair: NATS start → every reader caught up);
//! 2. **the first node cut from NATS** (its NATS connection goes through a relay) for
//!    `--cut-s`, not from PostgreSQL: the same checks, for that node's members (repair: mend →
//!    every reader caught up);
//! 3. **the last node killed -9** and started again: its clients reconnect to the next node,
//!    resume from their last ack by pull and catch up; sessions on the other nodes stay open
//!    (recovery: kill → every reader caught up);
//! 4. **a rolling restart**: every node in turn stopped with SIGTERM and started again, the load
//!    running throughout: each node exits 0, its clients are closed with 1012 and move to
//!    another node, every live stream stays dense, and every reader catches up (recovery: the
//!    last node back → every reader caught up).
//!
//! The cut comes before the kill: the killed node's clients move to the next node, the first
//! when it is the last, and stay there, so a cut after the kill could find no sender on another
//! node than the cut one.
//!
//! After each fault storage is audited; the run ends with the drain of the single-node run.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::book::{self, wait_for, Book, PhaseStart, SESSIONS_WITHIN};
use super::session::{End, Member};
use super::{FaultArgs, FaultReport, ACK_FLUSH_MS, EXIT_WITHIN};
use crate::cluster::{Breakable, Cluster};
use crate::report::Percentiles;
use crate::target::TargetArgs;

/// Longest wait for every reader to hold what was confirmed when a fault ended.
const CAUGHT_UP_WITHIN: Duration = Duration::from_secs(30);
/// Longest wait for a node killed -9 to serve again.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// What takes the bus away from some nodes, and gives it back.
#[derive(Clone, Copy)]
enum Outage {
    /// The nats-server is killed: every node loses the bus.
    NatsKilled,
    /// The relay in front of the first node is cut: it alone loses the bus.
    FirstNodeCut,
}

impl Outage {
    fn name(self, args: &FaultArgs) -> String {
        match self {
            Outage::NatsKilled => format!("nats-server down {} s", args.nats_down_s),
            Outage::FirstNodeCut => format!("node0 cut from NATS {} s", args.cut_s),
        }
    }

    fn lasts(self, args: &FaultArgs) -> Duration {
        Duration::from_secs_f64(match self {
            Outage::NatsKilled => args.nats_down_s,
            Outage::FirstNodeCut => args.cut_s,
        })
    }

    /// The nodes whose members it delays: readers on them are timed.
    fn timed_node(self) -> Option<usize> {
        match self {
            Outage::NatsKilled => None,
            Outage::FirstNodeCut => Some(0),
        }
    }

    fn begin(self, cluster: &mut Cluster) -> Result<()> {
        match self {
            Outage::NatsKilled => cluster.nats_mut().kill(),
            Outage::FirstNodeCut => cluster.relay().context("no relay")?.cut(),
        }
        Ok(())
    }

    async fn end(self, cluster: &mut Cluster) -> Result<()> {
        match self {
            Outage::NatsKilled => cluster.nats_mut().start_again().await?,
            Outage::FirstNodeCut => cluster.relay().context("no relay")?.mend(),
        }
        Ok(())
    }

    /// Whether node `n` is meant to be off the bus during it.
    fn cuts_off(self, n: usize) -> bool {
        matches!(self, Outage::NatsKilled) || n == 0
    }
}

/// The run's state. Fields drop in order: the sessions end first, then the cluster.
struct ClusterRun<'a> {
    book: Book,
    cluster: Cluster,
    args: &'a FaultArgs,
}

/// Runs the cluster faults; the nodes log to `dir`.
pub(super) async fn go(target: &TargetArgs, args: &FaultArgs, dir: &Path) -> Result<FaultReport> {
    if args.nats_down_s <= 0.0 || args.cut_s <= 0.0 {
        bail!("--nats-down-s and --cut-s must be positive");
    }
    let started = Instant::now();
    let setup = crate::progress::spinner(format!("starting {} nodes and NATS", args.nodes));
    let cluster = Cluster::start_breakable(
        target,
        args.nodes,
        &Breakable {
            env: &[("HERALD_ACK_FLUSH_MS", ACK_FLUSH_MS)],
            logs: dir,
        },
    )
    .await?;
    setup.finish_and_clear();
    let addrs = cluster.nodes().iter().map(|node| node.addr).collect();
    let mut run = ClusterRun {
        book: Book::new(addrs, args.groups * args.members, started),
        cluster,
        args,
    };
    run.book.status.phase("provisioning".into());
    // Provisioning and the audits go through the first node, which no fault kills.
    run.book.provision(&run.cluster.nodes()[0], args).await?;
    run.book.wait_connected().await?;
    run.bus_outage(Outage::NatsKilled).await?;
    run.bus_outage(Outage::FirstNodeCut).await?;
    run.kill_node().await?;
    run.rolling_restart().await?;
    run.book.finish(&run.cluster.nodes()[0]).await?;
    let urls: Vec<&str> = run
        .cluster
        .nodes()
        .iter()
        .map(|node| node.base_url.as_str())
        .collect();
    Ok(run.book.report(
        args,
        format!("faults --nodes {}", args.nodes),
        format!("Herald cluster at {} on one database", urls.join(", ")),
    ))
}

impl ClusterRun<'_> {
    /// Faults 1 and 2: load, the bus taken away for a while, given back, load again.
    async fn bus_outage(&mut self, outage: Outage) -> Result<()> {
        let fault = outage.name(self.args);
        self.book.wait_connected().await?;
        self.book.status.phase(format!("{fault}: load"));
        let since = self.book.phase_start();
        book::load(self.args).await;

        self.book
            .shared
            .start_timing_cross_node(outage.timed_node());
        outage.begin(&mut self.cluster)?;
        self.book.status.phase(format!("{fault}: bus down"));
        tokio::time::sleep(outage.lasts(self.args)).await;
        // Each node must have noticed by now (a closed connection is seen at once).
        let mut bus = Vec::new();
        for node in self.cluster.nodes() {
            bus.push(node.scrape().await?.value("herald_nats_connected"));
        }
        let during = self.book.shared.cross_node_delay.take();

        self.book
            .shared
            .start_timing_cross_node(outage.timed_node());
        let back = Instant::now();
        outage.end(&mut self.cluster).await?;
        self.book.status.phase(format!("{fault}: bus back"));
        let latest = self.confirmed_latest();
        // Position checks go on without the bus: readers may hold all this before the nodes
        // are back on it.
        let repair = self.wait_caught_up(&latest, back).await;
        self.cluster.wait_joined().await?;
        let rejoined = back.elapsed();
        book::load(self.args).await;
        let mut delay = self.book.shared.cross_node_delay.take();
        delay.add(&during).expect("histograms of one shape");

        let off: Vec<bool> = bus.iter().map(|&connected| connected == 0.0).collect();
        let expected: Vec<bool> = (0..off.len()).map(|n| outage.cuts_off(n)).collect();
        self.book.check(
            format!("{fault}: the nodes meant to lose the bus lost it, and only they"),
            off == expected,
            format!("herald_nats_connected per node at the end of the outage: {bus:?}"),
        );
        let on = if outage.timed_node().is_some() {
            "on node0 from senders on other nodes"
        } else {
            "on other nodes than their sender's"
        };
        let during = Percentiles::of(&during);
        self.book.check(
            format!("{fault}: members {on} got messages while it lasted (position checks)"),
            during.count > 0,
            format!(
                "{} pushes across nodes during the outage, written → pushed max {:.0} ms",
                during.count, during.max
            ),
        );
        self.check_sessions(&fault, &since);
        let repair = self
            .check_caught_up(&fault, "after it", repair, "the bus came back")
            .await?;
        let delay = Percentiles::of(&delay);
        self.book
            .record(&fault, "bus back → every reader caught up", &since, repair)
            .cross_node_delay_ms = Some(delay);
        self.book.status.say(format!(
            "{fault}: every node back on NATS {:.2} s and every reader caught up {:.2} s after \
             the bus came back; {} pushes across nodes during the outage (max {:.0} ms), max \
             {:.0} ms over the fault",
            rejoined.as_secs_f64(),
            repair.as_secs_f64(),
            during.count,
            during.max,
            delay.max
        ));
        Ok(())
    }

    /// Fault 3: load, the last node killed -9; its clients move to the next node; it is
    /// started again.
    async fn kill_node(&mut self) -> Result<()> {
        let killed = self.args.nodes - 1;
        let fault = format!("node{killed} killed -9");
        self.book.wait_connected().await?;
        self.book.status.phase(format!("{fault}: load"));
        let since = self.book.phase_start();
        book::load(self.args).await;

        let on_killed = |m: &&Arc<Member>| m.node.load(Ordering::SeqCst) == killed;
        let moving: Vec<Arc<Member>> = self
            .book
            .sessions()
            .members
            .iter()
            .filter(on_killed)
            .cloned()
            .collect();
        let at = Instant::now();
        self.cluster.nodes_mut()[killed].kill()?;
        let latest = self.confirmed_latest();
        self.book.status.phase(format!("{fault}: clients moving"));
        let moved = wait_for(SESSIONS_WITHIN, || {
            moving.iter().all(|m| {
                m.connected.load(Ordering::SeqCst) && m.node.load(Ordering::SeqCst) != killed
            })
        })
        .await
        .map(|()| at.elapsed());
        let caught_up = self.wait_caught_up(&latest, at).await;
        self.book.status.phase(format!("{fault}: restarting"));
        let restarted = Instant::now();
        let node = &mut self.cluster.nodes_mut()[killed];
        node.restart().await?;
        node.wait_ready(READY_WITHIN).await?;
        self.cluster.wait_joined().await?;
        let rejoined = restarted.elapsed();
        book::load(self.args).await;

        self.book.check(
            format!(
                "{fault}: its {} clients reconnected to other nodes",
                moving.len()
            ),
            moved.is_ok() && !moving.is_empty(),
            match &moved {
                Ok(after) => format!("all within {:.3} s of the kill", after.as_secs_f64()),
                Err(error) => format!("{error:#}"),
            },
        );
        let stayed: Vec<&Arc<Member>> = self
            .book
            .sessions()
            .members
            .iter()
            .filter(|m| !moving.iter().any(|moved| Arc::ptr_eq(m, moved)))
            .collect();
        let ended: Vec<String> = stayed
            .iter()
            .filter_map(|m| {
                let end = *m.last_end.lock().unwrap();
                end.filter(|(when, _)| *when >= at)
                    .map(|(_, end)| format!("uid {}: {end:?}", m.uid))
            })
            .collect();
        self.book.check(
            format!("{fault}: sessions on the other nodes stayed open"),
            ended.is_empty(),
            format!("{} sessions; ended: {ended:?}", stayed.len()),
        );
        self.check_streams(&fault, &since);
        let recovery = self
            .check_caught_up(&fault, "by pull and push", caught_up, "the kill")
            .await?;
        self.book
            .record(&fault, "kill → every reader caught up", &since, recovery);
        self.book.status.say(format!(
            "{fault}: {} clients moved to other nodes within {:.2} s and every reader caught up \
             {:.2} s after the kill; restarted, the node was back in the cluster in {:.2} s",
            moving.len(),
            moved.map_or(f64::NAN, |after| after.as_secs_f64()),
            recovery.as_secs_f64(),
            rejoined.as_secs_f64()
        ));
        Ok(())
    }

    /// Fault 4: every node in turn stopped with SIGTERM and started again, under load.
    async fn rolling_restart(&mut self) -> Result<()> {
        let fault = "rolling restart".to_string();
        self.book.wait_connected().await?;
        self.book.status.phase(format!("{fault}: load"));
        let since = self.book.phase_start();
        book::load(self.args).await;
        let mut exits = Vec::new();
        let mut moves = Vec::new();
        for n in 0..self.args.nodes {
            self.book.status.phase(format!("{fault}: node{n} stopping"));
            let moving: Vec<Arc<Member>> = self
                .book
                .sessions()
                .members
                .iter()
                .filter(|m| m.node.load(Ordering::SeqCst) == n)
                .cloned()
                .collect();
            let signalled = Instant::now();
            let exit = self.cluster.nodes_mut()[n].terminate(EXIT_WITHIN).await?;
            exits.push(format!("node{n}: {exit}"));
            let moved = wait_for(SESSIONS_WITHIN, || {
                moving.iter().all(|m| {
                    m.connected.load(Ordering::SeqCst) && m.node.load(Ordering::SeqCst) != n
                })
            })
            .await;
            let told_1012 = moving
                .iter()
                .filter(|m| {
                    let end = *m.last_end.lock().unwrap();
                    end.is_some_and(|(at, end)| at >= signalled && end == End::Closed(Some(1012)))
                })
                .count();
            moves.push((n, moving.len(), told_1012, moved.is_ok()));
            self.book.status.phase(format!("{fault}: node{n} starting"));
            let node = &mut self.cluster.nodes_mut()[n];
            node.restart().await?;
            node.wait_ready(READY_WITHIN).await?;
            self.cluster.wait_joined().await?;
            book::load(self.args).await;
        }
        let back = Instant::now();
        let latest = self.confirmed_latest();
        let caught_up = self.wait_caught_up(&latest, back).await;

        self.book.check(
            format!("{fault}: every node exited 0 on SIGTERM"),
            exits.iter().all(|e| e.ends_with("exit status: 0")),
            exits.join(", "),
        );
        let describe = |&(n, count, told, moved): &(usize, usize, usize, bool)| {
            format!("node{n}: {told} of {count} told 1012, moved: {moved}")
        };
        self.book.check(
            format!("{fault}: each node's clients were told 1012 and moved to another node"),
            moves
                .iter()
                .all(|&(_, count, told, moved)| count > 0 && told == count && moved),
            moves.iter().map(describe).collect::<Vec<_>>().join("; "),
        );
        self.check_streams(&fault, &since);
        let recovery = self
            .check_caught_up(
                &fault,
                "by pull and push",
                caught_up,
                "the last node was back",
            )
            .await?;
        self.book.record(
            &fault,
            "last node back → every reader caught up",
            &since,
            recovery,
        );
        self.book.status.say(format!(
            "{fault}: {} nodes stopped with SIGTERM and started in turn under load, {} clients \
             moved in all; every reader caught up {:.2} s after the last node was back",
            self.args.nodes,
            moves.iter().map(|&(_, count, _, _)| count).sum::<usize>(),
            recovery.as_secs_f64()
        ));
        Ok(())
    }

    /// Checks that no session ended since `since` and that every live stream stayed dense.
    fn check_sessions(&mut self, fault: &str, since: &PhaseStart) {
        let ends = self.book.breaks_since(since).ends;
        self.book.check(
            format!("{fault}: sessions stayed open"),
            ends == 0,
            format!("{ends} connections ended"),
        );
        self.check_streams(fault, since);
    }

    /// Checks that what was pushed on every connection since `since` was dense and in order.
    fn check_streams(&mut self, fault: &str, since: &PhaseStart) {
        let breaks = self.book.breaks_since(since);
        let (gaps, repeats) = (breaks.stream_gaps, breaks.stream_repeats);
        self.book.check(
            format!("{fault}: every live stream dense and in msgid order"),
            gaps + repeats == 0,
            format!("{gaps} pushes past a gap, {repeats} pushes repeated or out of order"),
        );
    }

    /// Checks that every reader caught up (`caught_up`: how long after `from`), audits
    /// storage; returns the time to record (the longest wait if they did not).
    async fn check_caught_up(
        &mut self,
        fault: &str,
        how: &str,
        caught_up: Result<Duration>,
        from: &str,
    ) -> Result<Duration> {
        self.book.check(
            format!("{fault}: every reader caught up {how}"),
            caught_up.is_ok(),
            match &caught_up {
                Ok(after) => format!("{:.3} s after {from}", after.as_secs_f64()),
                Err(error) => format!("{error:#}"),
            },
        );
        self.book
            .audit(&self.cluster.nodes()[0], fault, false)
            .await?;
        Ok(caught_up.unwrap_or(CAUGHT_UP_WITHIN))
    }

    /// The newest msgid confirmed in each group so far.
    fn confirmed_latest(&self) -> HashMap<u64, u64> {
        let mut latest = HashMap::new();
        for (&(gid, _), &msgid) in self.book.shared.ledger.lock().unwrap().iter() {
            let newest = latest.entry(gid).or_insert(0);
            *newest = msgid.max(*newest);
        }
        latest
    }

    /// Waits until every reader holds its group's `latest`; returns how long after `from`.
    async fn wait_caught_up(&self, latest: &HashMap<u64, u64>, from: Instant) -> Result<Duration> {
        let sessions = self.book.sessions();
        wait_for(CAUGHT_UP_WITHIN, || {
            sessions.readers().all(|m| {
                m.contiguous.load(Ordering::SeqCst) >= latest.get(&m.gid).copied().unwrap_or(0)
            })
        })
        .await?;
        Ok(from.elapsed())
    }
}
