//! The book a fault run keeps, whatever it breaks: the simulated sessions, the status line,
//! the checks made, a row per fault kind with its recovery times, and the audits of storage
//! against the ledger; and the drain that ends every run.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::audit::{self, Audit, GroupAudit};
use super::session::{self, Control, Member, Shared};
use super::{Check, FaultArgs, FaultReport, FaultRow, Spread};
use crate::progress;
use crate::target::{id_base, Target};

/// Longest wait for every session to be connected, or to have passed an ack barrier.
pub(super) const SESSIONS_WITHIN: Duration = Duration::from_secs(30);
/// Longest wait, at the end, for the last sends to be confirmed and readers to catch up.
const DRAIN_WITHIN: Duration = Duration::from_secs(30);

/// The simulated members and their tasks; the tasks end when this is dropped.
pub(super) struct Sessions {
    pub members: Vec<Arc<Member>>,
    pub control: watch::Sender<Control>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Sessions {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Sessions {
    pub fn readers(&self) -> impl Iterator<Item = &Arc<Member>> {
        self.members.iter().filter(|m| !m.sender)
    }

    pub fn connected(&self) -> usize {
        self.members
            .iter()
            .filter(|m| m.connected.load(Ordering::SeqCst))
            .count()
    }

    pub fn set(&self, change: impl FnOnce(&mut Control)) {
        self.control.send_modify(change);
    }
}

/// A line of live status under the results printed so far.
pub(super) struct Status {
    bar: indicatif::ProgressBar,
    phase: Arc<Mutex<String>>,
    ticker: JoinHandle<()>,
}

impl Status {
    fn new(shared: Arc<Shared>, sessions: usize) -> Status {
        let bar = progress::spinner("starting".into());
        let phase = Arc::new(Mutex::new(String::from("starting")));
        let ticker = {
            let (bar, phase) = (bar.clone(), phase.clone());
            tokio::spawn(async move {
                loop {
                    let c = &shared.counters;
                    bar.set_message(format!(
                        "{}  confirmed {}  unavailable {}  resends {}  connected {}/{sessions}",
                        phase.lock().unwrap(),
                        Shared::count(&c.confirmed),
                        Shared::count(&c.unavailable),
                        Shared::count(&c.resends),
                        Shared::count(&c.connected),
                    ));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        Status { bar, phase, ticker }
    }

    pub fn phase(&self, phase: String) {
        *self.phase.lock().unwrap() = phase;
    }

    /// Prints a line above the status (also when stderr is not a terminal).
    pub fn say(&self, line: String) {
        self.bar.suspend(|| println!("{line}"));
    }
}

impl Drop for Status {
    fn drop(&mut self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

/// A fault's phase while it runs: where the counters stood when it began.
pub(super) struct PhaseStart {
    confirmed: u64,
    unavailable: u64,
    breaks: Breaks,
}

/// What the sessions saw break, counted over the run or since a phase began.
#[derive(Debug, Clone, Copy)]
pub(super) struct Breaks {
    /// Connections that ended.
    pub ends: u64,
    /// Pushes past a gap in their connection's stream…
    pub stream_gaps: u64,
    /// …and pushes repeated or out of order.
    pub stream_repeats: u64,
}

/// What a fault run keeps. Fields drop in order: the sessions end first.
pub(super) struct Book {
    sessions: Option<Sessions>,
    pub status: Status,
    pub shared: Arc<Shared>,
    pub groups: Vec<GroupAudit>,
    rows: Vec<FaultRow>,
    checks: Vec<Check>,
    pub lost: u64,
    started: Instant,
}

impl Book {
    /// A book for `sessions` sessions over the nodes at `nodes`, started at `started`.
    pub fn new(nodes: Vec<std::net::SocketAddr>, sessions: usize, started: Instant) -> Book {
        let shared = Arc::new(Shared::new(nodes));
        Book {
            sessions: None,
            status: Status::new(shared.clone(), sessions),
            shared,
            groups: Vec::new(),
            rows: Vec::new(),
            checks: Vec::new(),
            lost: 0,
            started,
        }
    }

    pub fn sessions(&self) -> &Sessions {
        self.sessions
            .as_ref()
            .expect("sessions run from fault 1 on")
    }

    pub fn check(&mut self, name: impl Into<String>, passed: bool, detail: impl Into<String>) {
        let (name, detail) = (name.into(), detail.into());
        if !passed {
            self.status.say(format!("  FAILED {name}: {detail}"));
        }
        self.checks.push(Check {
            name,
            passed,
            detail,
        });
    }

    pub fn phase_start(&self) -> PhaseStart {
        let c = &self.shared.counters;
        PhaseStart {
            confirmed: Shared::count(&c.confirmed),
            unavailable: Shared::count(&c.unavailable),
            breaks: self.breaks(),
        }
    }

    fn breaks(&self) -> Breaks {
        let c = &self.shared.counters;
        Breaks {
            ends: Shared::count(&c.ends),
            stream_gaps: Shared::count(&c.stream_gaps),
            stream_repeats: Shared::count(&c.stream_repeats),
        }
    }

    /// What broke since `since` began.
    pub fn breaks_since(&self, since: &PhaseStart) -> Breaks {
        let (now, then) = (self.breaks(), since.breaks);
        Breaks {
            ends: now.ends - then.ends,
            stream_gaps: now.stream_gaps - then.stream_gaps,
            stream_repeats: now.stream_repeats - then.stream_repeats,
        }
    }

    /// Adds the row of a fault kind, or adds a cycle to it; returns the row.
    pub fn record(
        &mut self,
        fault: &str,
        recovery_is: &str,
        since: &PhaseStart,
        recovery: Duration,
    ) -> &mut FaultRow {
        let c = &self.shared.counters;
        let (confirmed, unavailable) = (
            Shared::count(&c.confirmed) - since.confirmed,
            Shared::count(&c.unavailable) - since.unavailable,
        );
        let lost = self.lost;
        let at = match self.rows.iter().position(|r| r.fault == fault) {
            Some(at) => at,
            None => {
                self.rows.push(FaultRow {
                    fault: fault.into(),
                    cycles: 0,
                    confirmed: 0,
                    unavailable: 0,
                    lost: 0,
                    recovery_is: recovery_is.into(),
                    recovery_ms: Vec::new(),
                    recovery: Spread::default(),
                    cross_node_delay_ms: None,
                });
                self.rows.len() - 1
            }
        };
        let row = &mut self.rows[at];
        row.cycles += 1;
        row.confirmed += confirmed;
        row.unavailable += unavailable;
        row.lost = row.lost.max(lost);
        row.recovery_ms.push(recovery.as_secs_f64() * 1000.0);
        row.recovery = Spread::of(&row.recovery_ms);
        row
    }

    /// Audits storage, read through `target`, against the ledger as it is now; records a
    /// check named after `after`.
    pub async fn audit(
        &mut self,
        target: &Target,
        after: &str,
        from_scratch: bool,
    ) -> Result<Audit> {
        let confirmed = self.shared.ledger.lock().unwrap().clone();
        let found = audit::audit(target, &mut self.groups, &confirmed, from_scratch)
            .await
            .with_context(|| format!("reading storage back after {after}"))?;
        self.lost = self.lost.max(found.lost);
        self.check(
            format!("complete after {after}"),
            found.clean(),
            format!("{found:?}"),
        );
        Ok(found)
    }

    pub async fn wait_connected(&self) -> Result<()> {
        let sessions = self.sessions();
        wait_for(SESSIONS_WITHIN, || {
            sessions.connected() == sessions.members.len()
        })
        .await
        .with_context(|| {
            format!(
                "only {} of {} sessions connected",
                sessions.connected(),
                sessions.members.len()
            )
        })
    }

    /// Creates the users and groups through `target`, and starts every member's session,
    /// their homes dealt round-robin over the nodes.
    pub async fn provision(&mut self, target: &Target, args: &FaultArgs) -> Result<()> {
        let nodes = self.shared.node_count();
        let base = id_base();
        let uids: Vec<u64> = (0..(args.groups * args.members) as u64)
            .map(|i| base + i)
            .collect();
        target.create_users(&uids).await?;
        let tokens = target.tokens(&uids).await?;
        let (control, control_rx) = watch::channel(Control {
            sending: true,
            acking: true,
            barrier: 0,
            stop: false,
        });
        let interval =
            Duration::from_secs_f64((args.groups * args.senders) as f64 / args.rate.max(0.001));
        let mut members = Vec::new();
        let mut tasks = Vec::new();
        for g in 0..args.groups {
            let gid = base + g as u64;
            let in_group = &uids[g * args.members..(g + 1) * args.members];
            target.create_group(gid, in_group).await?;
            let senders: HashSet<u64> = in_group[..args.senders].iter().copied().collect();
            let first = g * args.members;
            // Member k of group g lives on node g + k: each group's senders and readers are
            // spread, and the groups' first senders too.
            self.groups
                .push(GroupAudit::new(gid, tokens[first].clone(), senders));
            for (k, &uid) in in_group.iter().enumerate() {
                let n = first + k;
                let member = Arc::new(Member::new(
                    uid,
                    gid,
                    k < args.senders,
                    tokens[n].clone(),
                    n,
                    (g + k) % nodes,
                ));
                tasks.push(tokio::spawn(session::run(
                    self.shared.clone(),
                    member.clone(),
                    interval,
                    args.body_bytes,
                    Duration::from_millis(args.ack_ms),
                    control_rx.clone(),
                )));
                members.push(member);
            }
        }
        self.sessions = Some(Sessions {
            members,
            control,
            tasks,
        });
        Ok(())
    }

    /// Stops sending, waits for the last confirmations, reads storage again from scratch
    /// and waits for every reader to catch up.
    pub async fn finish(&mut self, target: &Target) -> Result<()> {
        self.status.phase("draining".into());
        self.sessions().set(|c| c.sending = false);
        let sessions = self.sessions();
        let unconfirmed = || -> u64 {
            sessions
                .members
                .iter()
                .map(|m| m.unconfirmed.load(Ordering::SeqCst))
                .sum()
        };
        let _ = wait_for(DRAIN_WITHIN, || unconfirmed() == 0).await;
        let left = unconfirmed();
        self.check(
            "every send confirmed in the end",
            left == 0,
            format!("{left} still unconfirmed after {DRAIN_WITHIN:?}"),
        );
        let found = self
            .audit(target, "the run (read again from msgid 1)", true)
            .await?;
        let latest: HashMap<u64, u64> = self.groups.iter().map(|g| (g.gid(), g.latest())).collect();
        let sessions = self.sessions();
        let behind = || -> Vec<String> {
            sessions
                .readers()
                .filter(|m| {
                    m.contiguous.load(Ordering::SeqCst) < latest.get(&m.gid).copied().unwrap_or(0)
                })
                .map(|m| format!("uid {} at {}", m.uid, m.contiguous.load(Ordering::SeqCst)))
                .collect()
        };
        let _ = wait_for(DRAIN_WITHIN, || behind().is_empty()).await;
        let behind = behind();
        self.check(
            "every reader caught up by push and pull",
            behind.is_empty(),
            format!("{} messages stored; behind: {behind:?}", found.stored),
        );
        let problems = self.shared.problems.lock().unwrap().clone();
        self.check(
            "no contradictory reply and no refusal",
            problems.is_empty(),
            format!(
                "{} problems: {:?}",
                problems.len(),
                &problems[..problems.len().min(5)]
            ),
        );
        self.sessions().set(|c| c.stop = true);
        if let Some(mut sessions) = self.sessions.take() {
            for task in sessions.tasks.drain(..) {
                let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            }
        }
        Ok(())
    }

    /// The report of the run so far, of `scenario` against `target`.
    pub fn report(&self, args: &FaultArgs, scenario: String, target: String) -> FaultReport {
        let c = &self.shared.counters;
        FaultReport {
            scenario,
            target,
            finished_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            groups: args.groups as u64,
            sessions: (args.groups * args.members) as u64,
            senders: (args.groups * args.senders) as u64,
            rate: args.rate,
            duration_s: self.started.elapsed().as_secs_f64(),
            confirmed: Shared::count(&c.confirmed),
            unavailable: Shared::count(&c.unavailable),
            rate_limited: Shared::count(&c.rate_limited),
            resends: Shared::count(&c.resends),
            dup_replies: Shared::count(&c.dup_replies),
            unanswered: Shared::count(&c.unanswered),
            lost: self.lost,
            faults: self.rows.clone(),
            flood: None,
            checks: self.checks.clone(),
        }
    }
}

/// The load that runs before each fault.
pub(super) async fn load(args: &FaultArgs) {
    tokio::time::sleep(Duration::from_secs_f64(args.load_s)).await;
}

/// Polls `done` every 20 ms until it holds (Ok) or `within` passes (Err).
pub(super) async fn wait_for(within: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() >= deadline {
            bail!("not within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
