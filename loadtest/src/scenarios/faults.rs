//! Faults: a steady send load from sessions that reconnect and resend like real clients,
//! while the faults Herald must survive are injected one after another, each followed by an
//! audit of storage against every `sent` the clients received.
//!
//! The run owns everything it breaks: a private PostgreSQL cluster (`scripts/pg.sh` in a
//! folder under `.herald/`) and a Herald process on it at a fixed loopback port, both removed
//! at the end, on error and on Ctrl-C. In order:
//!
//! 1. **start before PostgreSQL**: Herald starts while PostgreSQL is down; it must listen,
//!    answer `/healthz` 200, `/readyz`, requests and upgrades 503 `unavailable`, and be ready
//!    soon after PostgreSQL starts (recovery: PostgreSQL start → `/readyz` 200);
//! 2. **kill -9 under load**, N times: Herald is killed and started again on the same port
//!    (recovery: restart → first `sent` on a new connection);
//! 3. **PostgreSQL stopped** for D seconds under load: sends must be answered `unavailable`,
//!    `/readyz` must fail, sessions must stay open, and the same process must serve again
//!    once PostgreSQL is back (recovery: PostgreSQL start → first `sent`);
//! 4. **flood** (once PostgreSQL is back, so that the flood meets a node in working order):
//!    a calm window of load, then as long again with extra sessions of readers' users
//!    writing every request kind as fast as their sockets allow, a kind at a time. The
//!    flooders must be refused `rate_limited` or closed, `/readyz` must answer 200 at once
//!    after, every honest send must be answered and no honest session dropped, and Herald's
//!    memory may grow only so much; honest `sent` latency is reported for both windows
//!    (recovery: flood end → `/readyz` 200);
//! 5. **SIGTERM under load**: every session must be closed with 1012, the process must exit 0,
//!    and every ack the server had read must be stored (it flushes acks held in memory); then
//!    it is started again (recovery: restart → first `sent`).
//!
//! After each fault, every group is read back: every confirmed (gid, cmid) must be stored
//! once with its confirmed msgid, msgids dense from 1, nothing stored twice (`lost` counts
//! confirmed messages missing and must be 0). At the end senders stop, their last
//! unconfirmed messages are resent until confirmed, storage is read again from scratch and
//! every member must have caught up by push and pull.
//!
//! With `--nodes N` (N ≥ 2) the run breaks a cluster instead (`faults/cluster.rs`); both keep
//! their sessions, checks, rows and audits in a book (`faults/book.rs`).

mod audit;
mod book;
mod cluster;
mod flood;
mod session;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::json;
use tokio::task::JoinSet;

use crate::kit::client::{self, ConnectError};
use crate::kit::postgres::{work_dir, PrivatePostgres};
use crate::progress;
use crate::report::Percentiles;
use crate::target::{Target, TargetArgs};
use book::{wait_for, Book, SESSIONS_WITHIN};
use flood::{FloodReport, Flooder};
use session::{End, Member, Shared, REPLY_TIMEOUT};

/// Herald's ack flush interval in this run (default 500 ms): long enough that at the SIGTERM
/// most acks are held only in memory, so the flush on a graceful stop is what is tested.
/// A kill -9 loses up to this much of acks, which is redelivery, not loss.
const ACK_FLUSH_MS: &str = "2000";
/// Herald's defaults for the per-session limits, which a Herald this harness starts runs
/// without unless told (they would cap benchmarks). Here the flood must meet them, while the
/// honest load stays well below: with the defaults a sender offers ~37 msgs/s, 37 of its 100
/// sends/s and 370 of its 1000 units/s.
const SEND_RATE: &str = "100";
const REQUEST_BUDGET: &str = "1000";
/// Longest wait for Herald to be ready after PostgreSQL starts (its retries back off to 10 s).
const READY_WITHIN: Duration = Duration::from_secs(60);
/// Longest wait for the first `sent` after a fault ends.
const RECOVERY_WITHIN: Duration = Duration::from_secs(60);
/// Longest wait for Herald to exit after SIGTERM: its shutdown timeout (10 s) and slack.
pub(super) const EXIT_WITHIN: Duration = Duration::from_secs(25);
/// How soon after the flood `/readyz` must answer 200.
const READY_AFTER_FLOOD: Duration = Duration::from_secs(2);
/// How much more memory Herald may hold under the flood than at most in the calm window.
const FLOOD_RSS_GROWTH: u64 = 256 << 20;
/// How often Herald's memory is sampled during the flood's windows.
const RSS_EVERY: Duration = Duration::from_millis(100);
/// Longest wait for the flooders to end after their window: they end with it.
const FLOODERS_END_WITHIN: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, clap::Args)]
pub struct FaultArgs {
    /// Groups.
    #[arg(long, default_value_t = 4)]
    pub groups: usize,
    /// Members per group, each online in a session of its own.
    #[arg(long, default_value_t = 20)]
    pub members: usize,
    /// Sending members per group; the others read and ack.
    #[arg(long, default_value_t = 2)]
    pub senders: usize,
    /// Offered messages per second over all groups.
    #[arg(long, default_value_t = 300.0)]
    pub rate: f64,
    /// Padding bytes in each message body.
    #[arg(long, default_value_t = 64)]
    pub body_bytes: usize,
    /// Milliseconds between a reader's cumulative acks.
    #[arg(long, default_value_t = 250)]
    pub ack_ms: u64,
    /// Seconds Herald runs before PostgreSQL is started (fault 1).
    #[arg(long, default_value_t = 3.0)]
    pub pg_late_s: f64,
    /// kill -9 cycles (fault 2).
    #[arg(long, default_value_t = 20)]
    pub kill_cycles: usize,
    /// Seconds of load before each fault.
    #[arg(long, default_value_t = 1.5)]
    pub load_s: f64,
    /// Seconds PostgreSQL stays stopped under load (fault 3).
    #[arg(long, default_value_t = 30.0)]
    pub outage_s: f64,
    /// Seconds of each of the flood's windows: the load alone, then the load and the
    /// flooders (fault 4).
    #[arg(long, default_value_t = 5.0)]
    pub flood_s: f64,
    /// Extra sessions flooding every request kind, each with a reader's token (fault 4;
    /// 0 skips it).
    #[arg(long, default_value_t = 8)]
    pub flooders: usize,
    /// Nodes: 2 or more run the cluster faults instead (a nats-server killed, a node cut from
    /// NATS, a node killed -9) on one database of `--postgres-url`; the options of faults
    /// 1 to 5 other than --load-s then do not apply.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Seconds the nats-server stays down (cluster fault 1).
    #[arg(long, default_value_t = 4.0)]
    pub nats_down_s: f64,
    /// Seconds a node stays cut from NATS (cluster fault 2).
    #[arg(long, default_value_t = 4.0)]
    pub cut_s: f64,
}

/// Everything the fault run reports.
#[derive(Debug, Clone, Serialize)]
pub struct FaultReport {
    pub scenario: String,
    pub target: String,
    /// When the run ended, seconds since the Unix epoch.
    pub finished_unix_s: u64,
    pub groups: u64,
    pub sessions: u64,
    pub senders: u64,
    /// Offered messages per second.
    pub rate: f64,
    pub duration_s: f64,
    /// Messages confirmed (`sent`) over the run.
    pub confirmed: u64,
    pub unavailable: u64,
    pub rate_limited: u64,
    /// Sends written again with the same cmid, and how many of those had been stored
    /// (answered `dup:true`).
    pub resends: u64,
    pub dup_replies: u64,
    /// Sends left without a reply on a live connection (then resent).
    pub unanswered: u64,
    /// Confirmed messages missing from storage, the most any audit found.
    pub lost: u64,
    pub faults: Vec<FaultRow>,
    /// Fault 4, unless skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flood: Option<FloodReport>,
    pub checks: Vec<Check>,
}

/// One kind of fault over the run.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRow {
    pub fault: String,
    pub cycles: u64,
    /// Messages confirmed from the start of this fault's phase to the end of its last audit.
    pub confirmed: u64,
    pub unavailable: u64,
    pub lost: u64,
    /// What the recovery time is measured between.
    pub recovery_is: String,
    pub recovery_ms: Vec<f64>,
    pub recovery: Spread,
    /// Cluster faults: how long after its send was written each message reached a member on
    /// another node than its sender's, from the fault until every member caught up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cross_node_delay_ms: Option<Percentiles>,
}

/// Smallest, median and largest of some durations, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Spread {
    pub min_ms: f64,
    pub median_ms: f64,
    pub max_ms: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Spread {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        match sorted.len() {
            0 => Spread::default(),
            n => Spread {
                min_ms: sorted[0],
                median_ms: if n % 2 == 1 {
                    sorted[n / 2]
                } else {
                    (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
                },
                max_ms: sorted[n - 1],
            },
        }
    }
}

/// One thing the run verified.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

impl FaultReport {
    /// The checks that failed.
    pub fn failed(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.passed).collect()
    }

    pub fn passed(&self) -> bool {
        self.lost == 0 && self.failed().is_empty()
    }

    pub fn print(&self) {
        println!("\n== {} against {} ==", self.scenario, self.target);
        println!(
            "  {} sessions in {} groups, {} senders offering {:.0} msgs/s; ran {:.1} s",
            self.sessions, self.groups, self.senders, self.rate, self.duration_s
        );
        println!(
            "\n  {:<26} {:>6} {:>10} {:>12} {:>5}  {:<28} recovery is",
            "fault", "cycles", "confirmed", "unavailable", "lost", "recovery min / median / max"
        );
        for row in &self.faults {
            let r = row.recovery;
            println!(
                "  {:<26} {:>6} {:>10} {:>12} {:>5}  {:<28} {}",
                row.fault,
                row.cycles,
                row.confirmed,
                row.unavailable,
                row.lost,
                format!(
                    "{:.2} / {:.2} / {:.2} s",
                    r.min_ms / 1000.0,
                    r.median_ms / 1000.0,
                    r.max_ms / 1000.0
                ),
                row.recovery_is
            );
        }
        println!(
            "  {:<26} {:>6} {:>10} {:>12} {:>5}",
            "whole run", "", self.confirmed, self.unavailable, self.lost
        );
        println!(
            "\n  resends {} ({} found already stored: dup:true), unanswered sends {}, \
             rate-limited {}",
            self.resends, self.dup_replies, self.unanswered, self.rate_limited
        );
        for row in &self.faults {
            if let Some(delay) = row.cross_node_delay_ms {
                println!(
                    "  {}: {} pushes across nodes, written → pushed p50 {:.1} ms, p99 {:.1} ms, \
                     max {:.1} ms",
                    row.fault, delay.count, delay.p50, delay.p99, delay.max
                );
            }
        }
        if let Some(flood) = &self.flood {
            flood.print();
        }
        let failed = self.failed();
        println!(
            "  checks: {} passed, {} failed",
            self.checks.len() - failed.len(),
            failed.len()
        );
        for check in &failed {
            println!("    FAILED {}: {}", check.name, check.detail);
        }
        println!(
            "  verdict: {}",
            match (self.lost, failed.len()) {
                (0, 0) => "nothing lost, every check passed",
                (0, _) => "nothing lost, but CHECKS FAILED",
                _ => "LOSS",
            }
        );
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

/// Runs the whole fault sequence. Herald's log is kept (its path printed) unless everything
/// passed.
pub async fn run(target: &TargetArgs, args: &FaultArgs) -> Result<FaultReport> {
    if args.groups == 0 || args.senders == 0 || args.senders >= args.members {
        bail!("need at least one group, one sender and one reader per group");
    }
    if args.rate <= 0.0 || args.load_s <= 0.0 || args.outage_s <= 0.0 || args.pg_late_s <= 0.0 {
        bail!("--rate, --load-s, --outage-s and --pg-late-s must be positive");
    }
    if args.flooders > 0 && (args.flood_s <= 0.0 || args.groups < 2) {
        bail!(
            "a flood needs a positive --flood-s and two groups (flooders send to a group their \
             user is not in)"
        );
    }
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let mut logs = RunLogs::create(work_dir(&format!(
        "faults-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    )))?;
    // Dropping the run (on an error, or a signal that drops this future) stops Herald, the
    // sessions and PostgreSQL (or the nodes, the nats-server and the database) before the
    // logs are told.
    let outcome = match args.nodes {
        1 => Run::go(target, args, &logs.dir).await,
        _ => cluster::go(target, args, &logs.dir).await,
    };
    logs.passed = outcome.as_ref().is_ok_and(FaultReport::passed);
    outcome
}

/// The directory of a fault run's Herald logs: removed if the run passed, else kept and its
/// path told, also when the run ends half-way.
struct RunLogs {
    dir: PathBuf,
    passed: bool,
}

impl RunLogs {
    fn create(dir: PathBuf) -> Result<RunLogs> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(RunLogs { dir, passed: false })
    }
}

impl Drop for RunLogs {
    fn drop(&mut self) {
        if self.passed {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("herald's logs are kept in {}", self.dir.display());
        }
    }
}

/// The run's state. Fields drop in order: the sessions end first, then Herald stops
/// gracefully while PostgreSQL still runs (so it can flush its acks), then PostgreSQL.
struct Run<'a> {
    book: Book,
    target: Target,
    postgres: PrivatePostgres,
    args: &'a FaultArgs,
    flood: Option<FloodReport>,
}

impl<'a> Run<'a> {
    async fn go(target: &TargetArgs, args: &'a FaultArgs, dir: &Path) -> Result<FaultReport> {
        let started = Instant::now();
        let setup = progress::spinner("starting a private PostgreSQL".into());
        let postgres = PrivatePostgres::start(dir.join("pg")).await?;
        postgres.stop().await?;
        setup.set_message("starting Herald with PostgreSQL down");
        let herald = Target::launch(
            target,
            &postgres.url,
            &[
                ("HERALD_ACK_FLUSH_MS", ACK_FLUSH_MS),
                ("HERALD_SEND_RATE", SEND_RATE),
                ("HERALD_REQUEST_BUDGET", REQUEST_BUDGET),
            ],
            &dir.join("herald.log"),
        )
        .await?;
        setup.finish_and_clear();
        let mut run = Run {
            book: Book::new(vec![herald.addr], args.groups * args.members, started),
            args,
            postgres,
            target: herald,
            flood: None,
        };
        run.start_before_postgres().await?;
        for cycle in 1..=args.kill_cycles {
            run.kill_cycle(cycle).await?;
        }
        run.postgres_outage().await?;
        if args.flooders > 0 {
            run.flood().await?;
        }
        run.sigterm().await?;
        run.book.finish(&run.target).await?;
        let mut report = run.book.report(
            args,
            "faults".into(),
            format!("Herald at {} on a private PostgreSQL", run.target.base_url),
        );
        report.flood = run.flood.take();
        Ok(report)
    }

    /// Waits for the first `sent` after the mark; returns how long after `from` it came (0 if
    /// before).
    async fn wait_recovered(&self, from: Instant, what: &str) -> Result<Duration> {
        let deadline = Instant::now() + RECOVERY_WITHIN;
        loop {
            if let Some(at) = self.book.shared.recovered() {
                return Ok(at.saturating_duration_since(from));
            }
            if Instant::now() >= deadline {
                bail!("no send was confirmed within {RECOVERY_WITHIN:?} after {what}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Polls `/readyz` until it answers 200, for at most `within`; returns how long after
    /// `from` that was.
    async fn wait_readyz(&self, from: Instant, within: Duration) -> Result<Duration> {
        let ready = async {
            while self.target.probe("/readyz").await? != 200 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(within, ready)
            .await
            .map_err(|_| anyhow!("/readyz not 200 within {within:?}"))??;
        Ok(from.elapsed())
    }

    /// Fault 1, then the provisioning and the load that every later fault runs under.
    async fn start_before_postgres(&mut self) -> Result<()> {
        const FAULT: &str = "start before PostgreSQL";
        self.book
            .status
            .phase(format!("{FAULT}: Herald up, PostgreSQL down"));
        let since = self.book.phase_start();
        let down_for = Duration::from_secs_f64(self.args.pg_late_s);
        let began = Instant::now();
        let (mut probes, mut wrong) = (0u64, Vec::new());
        while began.elapsed() < down_for {
            let health = self.target.probe("/healthz").await?;
            let ready = self.target.probe("/readyz").await?;
            probes += 1;
            if (health, ready) != (200, 503) {
                wrong.push(format!("/healthz {health}, /readyz {ready}"));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.book.check(
            format!("{FAULT}: /healthz 200 and /readyz 503 while PostgreSQL is down"),
            wrong.is_empty(),
            format!("{probes} probes; wrong: {wrong:?}"),
        );
        let (status, body) = self
            .target
            .admin_post("/v1/admin/users", json!({"users": [{"uid": 1}]}))
            .await?;
        let token = self.target.token(1).await?;
        let upgrade = match client::connect(self.target.addr, 0, &token).await {
            Ok(_) => "opened".to_owned(),
            Err(ConnectError::Refused(status)) => status.to_string(),
            Err(other) => other.to_string(),
        };
        self.book.check(
            format!("{FAULT}: requests and WebSocket upgrades answered 503 unavailable"),
            status == 503 && body["error"]["code"] == "unavailable" && upgrade.starts_with("503"),
            format!("POST /v1/admin/users: {status} {body}; WebSocket upgrade: {upgrade}"),
        );

        let started = Instant::now();
        self.postgres.start_again().await?;
        let postgres_took = started.elapsed();
        let ready_after = self
            .wait_readyz(started, READY_WITHIN)
            .await
            .context("after PostgreSQL started")?;
        self.target.wait_ready(READY_WITHIN).await?;
        let running = self.target.running();
        self.book.check(
            format!("{FAULT}: the process started first is the one that becomes ready"),
            running,
            format!(
                "/readyz 200 {:.2} s after PostgreSQL was started (which took {:.2} s)",
                ready_after.as_secs_f64(),
                postgres_took.as_secs_f64()
            ),
        );
        self.book.status.say(format!(
            "{FAULT}: /readyz 200 {:.2} s after PostgreSQL was started (its own start-up took \
             {:.2} s); {probes} probes found it not ready before",
            ready_after.as_secs_f64(),
            postgres_took.as_secs_f64()
        ));

        self.book.status.phase("provisioning".into());
        self.book.provision(&self.target, self.args).await?;
        self.book.wait_connected().await?;
        self.book.status.phase(format!("{FAULT}: load"));
        book::load(self.args).await;
        self.book.audit(&self.target, FAULT, false).await?;
        self.book
            .record(FAULT, "PostgreSQL start → /readyz 200", &since, ready_after);
        Ok(())
    }

    /// Fault 2, one cycle: load, kill -9, restart on the same port.
    async fn kill_cycle(&mut self, cycle: usize) -> Result<()> {
        const FAULT: &str = "kill -9 under load";
        let of = self.args.kill_cycles;
        self.book
            .status
            .phase(format!("kill -9 {cycle}/{of}: load"));
        let since = self.book.phase_start();
        book::load(self.args).await;
        self.target.kill()?;
        self.book.shared.mark(true);
        let restarted = Instant::now();
        self.book
            .status
            .phase(format!("kill -9 {cycle}/{of}: restarting"));
        self.target.restart().await?;
        let recovery = self
            .wait_recovered(restarted, &format!("kill -9 {cycle}"))
            .await?;
        self.book
            .audit(&self.target, &format!("kill -9 {cycle}"), false)
            .await?;
        self.book
            .record(FAULT, "restart → first sent", &since, recovery);
        self.book.status.say(format!(
            "kill -9 {cycle}/{of}: first send confirmed {:.2} s after the restart; {} confirmed \
             so far, lost {}",
            recovery.as_secs_f64(),
            Shared::count(&self.book.shared.counters.confirmed),
            self.book.lost
        ));
        Ok(())
    }

    /// Fault 3: PostgreSQL stopped under load, then started again; Herald is not restarted.
    async fn postgres_outage(&mut self) -> Result<()> {
        let fault = format!("PostgreSQL stopped {} s", self.args.outage_s);
        self.book.wait_connected().await?;
        self.book.status.phase(format!("{fault}: load"));
        let since = self.book.phase_start();
        book::load(self.args).await;
        let pid = self.target.pid();
        let unavailable_before = Shared::count(&self.book.shared.counters.unavailable);
        let ends_before = Shared::count(&self.book.shared.counters.ends);
        self.postgres.stop().await?;
        self.book.status.phase(format!("{fault}: PostgreSQL down"));
        let down = Instant::now();
        let (mut probes, mut wrong) = (0u64, Vec::new());
        while down.elapsed() < Duration::from_secs_f64(self.args.outage_s) {
            let ready = self.target.probe("/readyz").await?;
            probes += 1;
            if ready != 503 {
                wrong.push(ready);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let unavailable =
            Shared::count(&self.book.shared.counters.unavailable) - unavailable_before;
        // Timed from the start command, as PostgreSQL's own start-up is part of the outage a
        // client sees (and Herald may confirm sends before the command has returned).
        self.book.shared.mark(false);
        let started = Instant::now();
        self.postgres.start_again().await?;
        let postgres_took = started.elapsed();
        self.book.status.phase(format!("{fault}: PostgreSQL back"));
        let recovery = self.wait_recovered(started, "PostgreSQL came back").await?;
        let ends = Shared::count(&self.book.shared.counters.ends) - ends_before;
        self.book.check(
            format!("{fault}: sends answered unavailable"),
            unavailable > 0,
            format!("{unavailable} unavailable answers"),
        );
        self.book.check(
            format!("{fault}: /readyz 503 throughout"),
            wrong.is_empty(),
            format!("{probes} probes; other answers: {wrong:?}"),
        );
        self.book.check(
            format!("{fault}: sessions stayed open"),
            ends == 0,
            format!("{ends} connections ended"),
        );
        let ready_after = self
            .wait_readyz(started, READY_WITHIN)
            .await
            .context("after PostgreSQL started")?;
        let same = self.target.running() && self.target.pid() == pid;
        self.book.check(
            format!("{fault}: the same process serves again, not restarted"),
            same,
            format!(
                "pid before {pid:?}, after {:?}; first send confirmed {:.2} s and /readyz 200 \
                 {:.2} s after PostgreSQL was started (which took {:.2} s)",
                self.target.pid(),
                recovery.as_secs_f64(),
                ready_after.as_secs_f64(),
                postgres_took.as_secs_f64()
            ),
        );
        self.book.audit(&self.target, &fault, false).await?;
        self.book
            .record(&fault, "PostgreSQL start → first sent", &since, recovery);
        self.book.status.say(format!(
            "{fault}: {unavailable} sends answered unavailable; first send confirmed {:.2} s \
             after PostgreSQL was started (its own start-up took {:.2} s)",
            recovery.as_secs_f64(),
            postgres_took.as_secs_f64()
        ));
        Ok(())
    }

    /// Fault 4: a calm window of load, then as long again with flooders beside it.
    async fn flood(&mut self) -> Result<()> {
        let args = self.args;
        let fault = format!("flood by {} sessions", args.flooders);
        let window = Duration::from_secs_f64(args.flood_s);
        self.book.wait_connected().await?;
        let since = self.book.phase_start();
        let c = &self.book.shared.counters;
        let (unanswered_before, ends_before) =
            (Shared::count(&c.unanswered), Shared::count(&c.ends));
        self.book.status.phase(format!("{fault}: calm"));
        let calm = self.measure(window).await;

        self.book.status.phase(format!("{fault}: flooding"));
        let tallies = flood::tallies();
        let mut flooders = JoinSet::new();
        for flooder in self.flooders() {
            flooders.spawn(flood::run(
                flooder,
                self.target.addr,
                tallies.clone(),
                window,
            ));
        }
        let flooded = self.measure(window).await;
        let _ = tokio::time::timeout(FLOODERS_END_WITHIN, flooders.join_all()).await;
        let ended = Instant::now();
        let report = FloodReport::new(args.flooders, window, calm, flooded, &tallies);

        let ready = self.wait_readyz(ended, READY_AFTER_FLOOD).await;
        self.book.check(
            format!("{fault}: /readyz 200 within {READY_AFTER_FLOOD:?} after it"),
            ready.is_ok(),
            match &ready {
                Ok(after) => format!("after {:.3} s", after.as_secs_f64()),
                Err(error) => format!("{error:#}"),
            },
        );
        let recovery = match ready {
            Ok(after) => after,
            Err(_) => self.wait_readyz(ended, READY_WITHIN).await?,
        };
        // Every send written by the end of the flood has its reply within the reply timeout.
        let sessions = self.book.sessions();
        let waiting = || {
            sessions
                .members
                .iter()
                .filter(|m| m.waiting_since.lock().unwrap().is_some_and(|at| at < ended))
                .count()
        };
        let _ = wait_for(REPLY_TIMEOUT, || waiting() == 0).await;
        let (waiting, c) = (waiting(), &self.book.shared.counters);
        let unanswered = Shared::count(&c.unanswered) - unanswered_before;
        let ends = Shared::count(&c.ends) - ends_before;
        self.book.check(
            format!("{fault}: every honest send answered"),
            waiting == 0 && unanswered == 0,
            format!(
                "{unanswered} sends unanswered for {REPLY_TIMEOUT:?}; {waiting} senders still \
                 waiting then for a reply to a send written by the end of the flood"
            ),
        );
        self.book.check(
            format!("{fault}: honest sessions stayed open"),
            ends == 0,
            format!("{ends} connections ended"),
        );
        let free: Vec<&str> = report
            .kinds
            .iter()
            .filter(|kind| !kind.held_back())
            .map(|kind| kind.kind.as_str())
            .collect();
        self.book.check(
            format!("{fault}: every kind refused rate_limited or closed"),
            free.is_empty(),
            format!(
                "kinds neither refused rate_limited nor closed: {free:?}; closes: {:?}",
                report.total.ends
            ),
        );
        let (calm_rss, flood_rss) = (report.calm_rss_peak_bytes, report.flood_rss_peak_bytes);
        self.book.check(
            format!(
                "{fault}: memory under the flood at most {} MiB above the calm peak",
                FLOOD_RSS_GROWTH >> 20
            ),
            flood_rss <= calm_rss + FLOOD_RSS_GROWTH,
            format!("RSS at most {calm_rss} bytes calm, {flood_rss} bytes flooded"),
        );
        self.book.audit(&self.target, &fault, false).await?;
        self.book
            .record(&fault, "flood end → /readyz 200", &since, recovery);
        self.book.status.say(format!(
            "{fault}: {} frames written, {} refused rate_limited, {} connections ended by \
             Herald; honest sent p99 {:.1} ms calm, {:.1} ms flooded; /readyz 200 {:.3} s after",
            report.total.written,
            report.total.rate_limited,
            report.total.ended(),
            report.calm_sent_latency_ms.p99,
            report.flood_sent_latency_ms.p99,
            recovery.as_secs_f64()
        ));
        self.flood = Some(report);
        Ok(())
    }

    /// The flood's sessions: each the user of a reader, spread over the groups, sending to
    /// the next group.
    fn flooders(&self) -> Vec<Flooder> {
        let args = self.args;
        let readers_per_group = args.members - args.senders;
        (0..args.flooders)
            .map(|i| {
                let g = i % args.groups;
                let gid = self.book.groups[g].gid();
                let member = self
                    .book
                    .sessions()
                    .readers()
                    .filter(|m| m.gid == gid)
                    .nth(i / args.groups % readers_per_group)
                    .expect("every group has readers")
                    .clone();
                Flooder {
                    member,
                    foreign_gid: self.book.groups[(g + 1) % args.groups].gid(),
                    n: args.groups * args.members + i,
                }
            })
            .collect()
    }

    /// Runs the load for `window`, timing every honest `sent` and sampling Herald's memory
    /// every `RSS_EVERY`; returns the latencies and the largest sample.
    async fn measure(&self, window: Duration) -> (Percentiles, u64) {
        self.book.shared.sent_latency.start();
        let end = Instant::now() + window;
        let mut peak = 0;
        loop {
            peak = peak.max(self.target.rss_bytes().unwrap_or(0));
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(left.min(RSS_EVERY)).await;
        }
        (Percentiles::of(&self.book.shared.sent_latency.take()), peak)
    }

    /// Fault 5: SIGTERM under load, then a restart.
    async fn sigterm(&mut self) -> Result<()> {
        const FAULT: &str = "SIGTERM under load";
        self.book.wait_connected().await?;
        self.book.status.phase(format!("{FAULT}: load"));
        let since = self.book.phase_start();
        book::load(self.args).await;

        // Readers stop acking and pass a barrier: every ack they wrote has been read.
        let barrier = self.book.sessions().control.borrow().barrier + 1;
        self.book.sessions().set(|c| {
            c.acking = false;
            c.barrier = barrier;
        });
        let sessions = self.book.sessions();
        wait_for(SESSIONS_WITHIN, || {
            sessions
                .readers()
                .all(|m| m.barrier_passed.load(Ordering::SeqCst) >= barrier)
        })
        .await
        .context("readers did not pass the ack barrier")?;
        let acked: HashMap<(u64, u64), u64> = sessions
            .readers()
            .map(|m| ((m.gid, m.uid), m.acked.load(Ordering::SeqCst)))
            .collect();
        let stored_before = self.stored_acks().await?;
        let in_memory = acked
            .iter()
            .filter(|(key, &ack)| stored_before.get(key).copied().unwrap_or(0) < ack)
            .count();

        self.book.status.phase(format!("{FAULT}: stopping"));
        let signalled = Instant::now();
        let exit = self.target.terminate(EXIT_WITHIN).await?;
        self.book.check(
            format!("{FAULT}: the process exited 0"),
            exit.success(),
            format!("{exit} after {:.2} s", signalled.elapsed().as_secs_f64()),
        );
        let sessions = self.book.sessions();
        let ended = |m: &Arc<Member>| {
            let end = *m.last_end.lock().unwrap();
            end.filter(|(at, _)| *at >= signalled).map(|(_, end)| end)
        };
        let _ = wait_for(SESSIONS_WITHIN, || {
            sessions.members.iter().all(|m| ended(m).is_some())
        })
        .await;
        let ends: Vec<Option<End>> = sessions.members.iter().map(ended).collect();
        let closed_1012 = ends
            .iter()
            .filter(|e| **e == Some(End::Closed(Some(1012))))
            .count();
        let others: Vec<_> = ends
            .iter()
            .filter(|e| **e != Some(End::Closed(Some(1012))))
            .collect();
        let total = ends.len();
        self.book.check(
            format!("{FAULT}: every session closed with 1012"),
            closed_1012 == total,
            format!("{closed_1012} of {total}; others: {others:?}"),
        );
        let stored_after = self.stored_acks().await?;
        let behind: Vec<_> = acked
            .iter()
            .filter(|(key, &ack)| stored_after.get(key).copied().unwrap_or(0) < ack)
            .map(|((gid, uid), ack)| {
                format!(
                    "gid {gid} uid {uid}: acked {ack}, stored {:?}",
                    stored_after.get(&(*gid, *uid))
                )
            })
            .collect();
        self.book.check(
            format!("{FAULT}: every ack read before the signal is stored"),
            behind.is_empty(),
            format!(
                "{} readers; {in_memory} of their acks were only in memory at the signal; \
                 behind: {behind:?}",
                acked.len()
            ),
        );

        self.book.shared.mark(true);
        let restarted = Instant::now();
        self.target.restart().await?;
        self.book.sessions().set(|c| c.acking = true);
        let recovery = self
            .wait_recovered(restarted, "the restart after SIGTERM")
            .await?;
        self.book.audit(&self.target, FAULT, false).await?;
        self.book
            .record(FAULT, "restart → first sent", &since, recovery);
        self.book.status.say(format!(
            "{FAULT}: {closed_1012}/{total} sessions closed 1012, herald {exit}, {in_memory} acks \
             flushed from memory; first send confirmed {:.2} s after the restart",
            recovery.as_secs_f64()
        ));
        Ok(())
    }

    /// Every member's stored watermark: (gid, uid) → last_ack_msgid.
    async fn stored_acks(&self) -> Result<HashMap<(u64, u64), u64>> {
        let gids: Vec<String> = self
            .book
            .groups
            .iter()
            .map(|g| g.gid().to_string())
            .collect();
        let rows = self
            .postgres
            .query(&format!(
                "SELECT gid, uid, last_ack_msgid FROM group_members WHERE gid IN ({})",
                gids.join(",")
            ))
            .await?;
        rows.iter()
            .map(|row| {
                let field = |i: usize| -> Result<u64> {
                    row.get(i)
                        .context("a short row")?
                        .parse()
                        .context("a number")
                };
                Ok(((field(0)?, field(1)?), field(2)?))
            })
            .collect()
    }
}
