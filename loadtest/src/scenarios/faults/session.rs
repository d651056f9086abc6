//! The fault scenario's clients: sessions that outlive their connections, as real clients do.
//!
//! Each one reconnects with backoff whenever its connection drops (or is refused). A sender
//! keeps every message it has not seen confirmed and resends it with the same cmid — after
//! `unavailable`, after a connection loss, or when no reply came — so a message that was stored
//! before the fault must come back `dup:true` with its original msgid. A reader receives pushes,
//! catches up by pull after each reconnect, and acks what it holds. Every confirmation goes into
//! one ledger, (gid, cmid) → msgid, which the audit checks storage against.
//!
//! Over a cluster every member has a home node and reconnects there first, then to the next
//! nodes in turn; readers check that what is pushed on one connection is dense and in msgid
//! order, and time pushes that crossed nodes (each body names when and from which node it was
//! written).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

pub use crate::kit::client::End;
use crate::kit::client::{self, next_text, Socket};
use crate::kit::frames::{self, Cursor, Frame};
use crate::record;

/// First and longest pause between attempts to reconnect: short, so that recovery times
/// measure the server more than the client's patience.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Longest wait for a connection and its hello.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A send unanswered this long on a live connection is sent again (same cmid).
pub(super) const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before resending a send refused as `unavailable` or `rate_limited`.
const RETRY_DELAY: Duration = Duration::from_millis(250);
/// Messages one sender keeps unconfirmed at most: while storage is down it resends these
/// instead of piling up new ones.
const WINDOW: usize = 8;

/// What the scenario tells every session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// Senders start new messages; resends of unconfirmed ones go on regardless.
    pub sending: bool,
    /// Readers ack what they hold.
    pub acking: bool,
    /// Raised (with `acking` false) when the scenario needs to know which acks the server
    /// has read: each reader writes its last ack, then a ping, and passes the barrier at the
    /// pong (the server handles a session's frames in order).
    pub barrier: u64,
    pub stop: bool,
}

/// One simulated member, as the scenario watches it.
pub struct Member {
    pub uid: u64,
    pub gid: u64,
    pub sender: bool,
    pub(super) token: String,
    /// Its n-th place among all sessions, which spreads source addresses.
    n: usize,
    /// The node it connects to first, every time.
    home: usize,
    /// The node of its current (or last) connection.
    pub node: AtomicUsize,
    pub connected: AtomicBool,
    /// When and how its latest connection ended.
    pub last_end: Mutex<Option<(Instant, End)>>,
    /// Reader: every msgid of the group up to this one received, pushed or pulled.
    pub contiguous: AtomicU64,
    /// Reader: its watermark as last written on the current connection (or told by hello).
    pub acked: AtomicU64,
    /// Reader: the last barrier passed.
    pub barrier_passed: AtomicU64,
    /// Sender: its messages not confirmed yet.
    pub unconfirmed: AtomicU64,
    /// Sender: when the oldest of its sends still waiting for a reply on the current
    /// connection was written.
    pub waiting_since: Mutex<Option<Instant>>,
}

impl Member {
    pub fn new(uid: u64, gid: u64, sender: bool, token: String, n: usize, home: usize) -> Member {
        Member {
            uid,
            gid,
            sender,
            token,
            n,
            home,
            node: AtomicUsize::new(home),
            connected: AtomicBool::new(false),
            last_end: Mutex::new(None),
            contiguous: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            barrier_passed: AtomicU64::new(0),
            unconfirmed: AtomicU64::new(0),
            waiting_since: Mutex::new(None),
        }
    }
}

/// Counts every session adds to.
#[derive(Default)]
pub struct Counters {
    /// (gid, cmid) pairs confirmed for the first time.
    pub confirmed: AtomicU64,
    pub unavailable: AtomicU64,
    pub rate_limited: AtomicU64,
    /// `sent` replies with `dup:true`: resends of messages that had been stored.
    pub dup_replies: AtomicU64,
    /// Sends written again with the same cmid.
    pub resends: AtomicU64,
    /// Sends that got no reply within `REPLY_TIMEOUT` on a live connection.
    pub unanswered: AtomicU64,
    /// Connections that ended, however.
    pub ends: AtomicU64,
    /// Sessions connected now.
    pub connected: AtomicU64,
    /// Pushes on one connection above the next msgid due (a gap in the live stream)…
    pub stream_gaps: AtomicU64,
    /// …and at or below the last one pushed (a repeat, or out of order).
    pub stream_repeats: AtomicU64,
}

/// A latency histogram filled only while a window is being timed.
#[derive(Default)]
pub struct Timing(Mutex<Option<Histogram<u64>>>);

impl Timing {
    /// Starts timing afresh.
    pub fn start(&self) {
        *self.0.lock().unwrap() = Some(record::histogram());
    }

    /// Stops timing; returns the latencies since the start.
    pub fn take(&self) -> Histogram<u64> {
        self.0
            .lock()
            .unwrap()
            .take()
            .unwrap_or_else(record::histogram)
    }

    fn record(&self, latency: Duration) {
        if let Some(histogram) = self.0.lock().unwrap().as_mut() {
            histogram.saturating_record(latency.as_micros() as u64);
        }
    }
}

/// What a sender writes in each body besides its cmid, for readers to time the delivery.
#[derive(serde::Deserialize)]
struct Stamp {
    /// When the send was written, in ns since the run's epoch.
    t: Option<u64>,
    /// The node the sender was connected to.
    n: Option<usize>,
}

/// The sessions' shared state: the ledger, the counters, and the recovery mark.
pub struct Shared {
    epoch: Instant,
    /// Every node's address (one for a single Herald).
    nodes: Vec<SocketAddr>,
    /// (gid, cmid) → msgid of every confirmed message.
    pub ledger: Mutex<HashMap<(u64, String), u64>>,
    /// Contradictions the sessions saw: a cmid confirmed with two msgids, a refusal other
    /// than `unavailable` or `rate_limited`.
    pub problems: Mutex<Vec<String>>,
    pub counters: Counters,
    /// While timing (the flood's windows): the latency of every `sent`, from the writing of
    /// its send.
    pub sent_latency: Timing,
    /// While timing (cluster faults): how long after its send was written a message was
    /// pushed to a reader on another node than its sender's…
    pub cross_node_delay: Timing,
    /// …a reader on this node only, if it is not `usize::MAX`.
    cross_node_to: AtomicUsize,
    /// Recovery is timed from this mark (ns since `epoch`) to the first `sent` after it…
    mark_ns: AtomicU64,
    /// …on a connection opened after it, when the server was restarted (a `sent` the old
    /// process wrote may still sit unread in a client's socket).
    mark_new_connections: AtomicBool,
    first_sent_ns: AtomicU64,
}

impl Shared {
    pub fn new(nodes: Vec<SocketAddr>) -> Shared {
        Shared {
            epoch: Instant::now(),
            nodes,
            ledger: Mutex::default(),
            problems: Mutex::default(),
            counters: Counters::default(),
            sent_latency: Timing::default(),
            cross_node_delay: Timing::default(),
            cross_node_to: AtomicUsize::new(usize::MAX),
            mark_ns: AtomicU64::new(u64::MAX),
            mark_new_connections: AtomicBool::new(false),
            first_sent_ns: AtomicU64::new(u64::MAX),
        }
    }

    /// How many nodes the sessions are spread over.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Starts timing a recovery now; `new_connections`: only replies on connections opened
    /// from now on count.
    pub fn mark(&self, new_connections: bool) {
        self.first_sent_ns.store(u64::MAX, Ordering::SeqCst);
        self.mark_new_connections
            .store(new_connections, Ordering::SeqCst);
        self.mark_ns.store(self.now_ns(), Ordering::SeqCst);
    }

    /// When the first `sent` after the mark came, once there is one.
    pub fn recovered(&self) -> Option<Instant> {
        let first = self.first_sent_ns.load(Ordering::SeqCst);
        (first != u64::MAX).then(|| self.epoch + Duration::from_nanos(first))
    }

    /// A `sent` arrived on a connection opened at `opened_ns`.
    fn on_sent(&self, opened_ns: u64) {
        let now = self.now_ns();
        let mark = self.mark_ns.load(Ordering::SeqCst);
        if now >= mark && (opened_ns >= mark || !self.mark_new_connections.load(Ordering::SeqCst)) {
            self.first_sent_ns.fetch_min(now, Ordering::SeqCst);
        }
    }

    /// Starts timing pushes across nodes afresh: to readers on `to` only, or on any node.
    pub fn start_timing_cross_node(&self, to: Option<usize>) {
        self.cross_node_to
            .store(to.unwrap_or(usize::MAX), Ordering::SeqCst);
        self.cross_node_delay.start();
    }

    /// A push stamped `stamp` reached a reader on `node`.
    fn on_push(&self, stamp: &Stamp, node: usize) {
        let (Some(written), Some(from)) = (stamp.t, stamp.n) else {
            return;
        };
        let to = self.cross_node_to.load(Ordering::Relaxed);
        if from != node && (to == usize::MAX || to == node) {
            let delay = self.now_ns().saturating_sub(written);
            self.cross_node_delay.record(Duration::from_nanos(delay));
        }
    }

    fn problem(&self, what: String) {
        self.problems.lock().unwrap().push(what);
    }

    pub fn count(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn count_one(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs `member` until `stop`: connects, runs its role, reconnects, and so on.
pub async fn run(
    shared: Arc<Shared>,
    member: Arc<Member>,
    interval: Duration,
    padding: usize,
    ack_every: Duration,
    mut control: watch::Receiver<Control>,
) {
    let mut sender = Outbox::new(padding);
    let mut reader = Tracker::default();
    while let Some((ws, cursor)) = open(&shared, &member, &mut control).await {
        let opened_ns = shared.now_ns();
        member.connected.store(true, Ordering::SeqCst);
        Shared::count_one(&shared.counters.connected);
        let end = if member.sender {
            sender
                .run(&shared, &member, ws, opened_ns, interval, &mut control)
                .await
        } else {
            reader
                .run(&shared, &member, ws, cursor, ack_every, &mut control)
                .await
        };
        member.connected.store(false, Ordering::SeqCst);
        shared.counters.connected.fetch_sub(1, Ordering::Relaxed);
        let Some(end) = end else { break };
        Shared::count_one(&shared.counters.ends);
        *member.last_end.lock().unwrap() = Some((Instant::now(), end));
    }
}

/// Connects with backoff until a session is open (its hello read), or `stop`.
async fn open(
    shared: &Shared,
    member: &Member,
    control: &mut watch::Receiver<Control>,
) -> Option<(Socket, Cursor)> {
    let mut backoff = BACKOFF_FIRST;
    let mut attempt = 0;
    loop {
        if control.borrow().stop {
            return None;
        }
        let node = (member.home + attempt) % shared.nodes.len();
        attempt += 1;
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT,
            client::connect(shared.nodes[node], member.n, &member.token),
        )
        .await;
        if let Ok(Ok((ws, hello))) = connected {
            match hello.groups.iter().find(|c| c.gid == member.gid) {
                Some(cursor) => {
                    member.node.store(node, Ordering::SeqCst);
                    return Some((ws, *cursor));
                }
                None => shared.problem(format!(
                    "uid {}: hello without its group {}",
                    member.uid, member.gid
                )),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            changed = control.changed() => if changed.is_err() { return None },
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// A sender's unconfirmed messages, kept across connections.
struct Outbox {
    padding: String,
    next_seq: u64,
    pending: BTreeMap<u64, Pending>,
}

struct Pending {
    /// When it was last written on the current connection; None: waiting to be (re)sent.
    in_flight_since: Option<Instant>,
    not_before: Instant,
    attempts: u32,
}

impl Outbox {
    fn new(padding: usize) -> Outbox {
        Outbox {
            padding: "x".repeat(padding),
            next_seq: 0,
            pending: BTreeMap::new(),
        }
    }

    fn cmid(uid: u64, seq: u64) -> String {
        format!("{uid}-{seq}")
    }

    /// The frames due now: resends whose time came, sends left unanswered too long, and one
    /// new message if `sending` and the window has room.
    fn due(&mut self, shared: &Shared, member: &Member, sending: bool) -> Vec<String> {
        let now = Instant::now();
        let (written, node) = (shared.now_ns(), member.node.load(Ordering::Relaxed));
        let mut frames = Vec::new();
        if sending && self.pending.len() < WINDOW {
            self.next_seq += 1;
            self.pending.insert(
                self.next_seq,
                Pending {
                    in_flight_since: None,
                    not_before: now,
                    attempts: 0,
                },
            );
        }
        for (&seq, pending) in &mut self.pending {
            match pending.in_flight_since {
                Some(since) if now.duration_since(since) >= REPLY_TIMEOUT => {
                    Shared::count_one(&shared.counters.unanswered);
                }
                Some(_) => continue,
                None if pending.not_before > now => continue,
                None => {}
            }
            if pending.attempts > 0 {
                Shared::count_one(&shared.counters.resends);
            }
            pending.attempts += 1;
            pending.in_flight_since = Some(now);
            let cmid = Outbox::cmid(member.uid, seq);
            // The body names its cmid, so the audit can tell a stored body belongs to it, and
            // when and from which node it was written, so a reader can time its delivery.
            frames.push(format!(
                r#"{{"type":"send","id":{seq},"gid":{gid},"cmid":"{cmid}","body":{{"c":"{cmid}","t":{written},"n":{node},"p":"{pad}"}}}}"#,
                gid = member.gid,
                pad = self.padding,
            ));
        }
        self.publish(member);
        frames
    }

    /// Tells the scenario how many messages wait to be confirmed, and since when the oldest
    /// send written on this connection waits for its reply.
    fn publish(&self, member: &Member) {
        member
            .unconfirmed
            .store(self.pending.len() as u64, Ordering::Relaxed);
        *member.waiting_since.lock().unwrap() = self
            .pending
            .values()
            .filter_map(|pending| pending.in_flight_since)
            .min();
    }

    /// Handles a `sent` or `error` reply to send `seq`.
    fn reply(&mut self, shared: &Shared, member: &Member, frame: &Frame, seq: u64) {
        let cmid = Outbox::cmid(member.uid, seq);
        match frame.kind {
            "sent" => {
                let Some(msgid) = frame.msgid else {
                    return shared.problem(format!("a sent reply without msgid for {cmid}"));
                };
                if frame.gid != Some(member.gid) {
                    shared.problem(format!("{cmid} confirmed for group {:?}", frame.gid));
                }
                if frame.dup == Some(true) {
                    Shared::count_one(&shared.counters.dup_replies);
                }
                if let Some(Pending {
                    in_flight_since: Some(written),
                    ..
                }) = self.pending.remove(&seq)
                {
                    shared.sent_latency.record(written.elapsed());
                }
                let mut ledger = shared.ledger.lock().unwrap();
                match ledger.insert((member.gid, cmid.clone()), msgid) {
                    None => Shared::count_one(&shared.counters.confirmed),
                    Some(earlier) if earlier != msgid => shared.problem(format!(
                        "{cmid} confirmed as msgid {earlier}, then as {msgid}"
                    )),
                    Some(_) => {}
                }
            }
            "error" => {
                let code = frame.code.unwrap_or_default();
                match code {
                    "unavailable" => Shared::count_one(&shared.counters.unavailable),
                    "rate_limited" => Shared::count_one(&shared.counters.rate_limited),
                    other => {
                        // Not retried: the message is refused for good.
                        self.pending.remove(&seq);
                        return shared.problem(format!("send of {cmid} refused: {other}"));
                    }
                }
                if let Some(pending) = self.pending.get_mut(&seq) {
                    pending.in_flight_since = None;
                    pending.not_before = Instant::now() + RETRY_DELAY;
                }
            }
            _ => {}
        }
    }

    /// Sends on one connection until it ends (`Some(end)`) or the scenario stops (None).
    async fn run(
        &mut self,
        shared: &Shared,
        member: &Member,
        mut ws: Socket,
        opened_ns: u64,
        interval: Duration,
        control: &mut watch::Receiver<Control>,
    ) -> Option<End> {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let end = loop {
            tokio::select! {
                text = next_text(&mut ws) => match text {
                    Ok(Some(text)) => {
                        let Ok(frame) = serde_json::from_str::<Frame>(&text) else { continue };
                        if let (Some(seq), "sent" | "error") = (frame.numeric_id(), frame.kind) {
                            let sent = frame.kind == "sent";
                            self.reply(shared, member, &frame, seq);
                            if sent {
                                shared.on_sent(opened_ns);
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(end) => break Some(end),
                },
                _ = tick.tick() => {
                    let frames = self.due(shared, member, control.borrow().sending);
                    let frames = frames.into_iter().map(|f| Ok(Message::text(f)));
                    if ws.send_all(&mut futures_util::stream::iter(frames)).await.is_err() {
                        break Some(End::Broken);
                    }
                }
                changed = control.changed() => {
                    if changed.is_err() || control.borrow().stop {
                        let _ = ws.close(None).await;
                        break None;
                    }
                }
            }
        };
        // What was in flight on this connection is resent on the next one.
        for pending in self.pending.values_mut() {
            if pending.in_flight_since.take().is_some() {
                pending.not_before = Instant::now();
            }
        }
        self.publish(member);
        end
    }
}

/// A reader's view of its group: which msgids it holds.
#[derive(Default)]
struct Tracker {
    /// Every msgid below this one is held.
    next: u64,
    /// Held msgids above `next` (pushed while a pull was still catching up).
    above: BTreeSet<u64>,
}

impl Tracker {
    fn contiguous(&self) -> u64 {
        self.next.saturating_sub(1)
    }

    fn receive(&mut self, msgid: u64) {
        if msgid < self.next {
            return;
        }
        if msgid > self.next {
            self.above.insert(msgid);
            return;
        }
        self.next += 1;
        while self.above.remove(&self.next) {
            self.next += 1;
        }
    }

    /// Reads on one connection until it ends (`Some(end)`) or the scenario stops (None).
    async fn run(
        &mut self,
        shared: &Shared,
        member: &Member,
        mut ws: Socket,
        cursor: Cursor,
        ack_every: Duration,
        control: &mut watch::Receiver<Control>,
    ) -> Option<End> {
        // A member holds nothing below its watermark that it needs again; what it holds it
        // keeps across reconnects (a client with local storage), and pulls only the rest.
        self.next = self.next.max(cursor.last_ack + 1);
        let mut acked = cursor.last_ack;
        member.acked.store(acked, Ordering::SeqCst);
        // Pushes on this connection begin right after what hello says was pushed.
        let mut pushed = cursor.latest;
        let node = member.node.load(Ordering::SeqCst);
        let mut pull_id = 0u64;
        let mut outgoing = Vec::new();
        if cursor.latest > self.contiguous() {
            pull_id += 1;
            outgoing.push(frames::pull(pull_id, member.gid, self.contiguous()));
        }
        // A pull refused as `unavailable` is asked again at the next tick.
        let mut pull_again = false;
        let mut barrier_sent = 0u64;
        let mut ack_tick = tokio::time::interval(ack_every);
        ack_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end = loop {
            let now = *control.borrow_and_update();
            if now.stop {
                let _ = ws.close(None).await;
                break None;
            }
            if !now.acking
                && now.barrier > member.barrier_passed.load(Ordering::SeqCst)
                && now.barrier > barrier_sent
            {
                if self.contiguous() > acked {
                    acked = self.contiguous();
                    outgoing.push(frames::ack(member.gid, acked));
                }
                barrier_sent = now.barrier;
                outgoing.push(frames::ping(barrier_sent));
            }
            if !outgoing.is_empty() {
                let frames = outgoing.drain(..).map(|f| Ok(Message::text(f)));
                if ws
                    .send_all(&mut futures_util::stream::iter(frames))
                    .await
                    .is_err()
                {
                    break Some(End::Broken);
                }
                member.acked.store(acked, Ordering::SeqCst);
            }
            tokio::select! {
                text = next_text(&mut ws) => match text {
                    Ok(Some(text)) => {
                        let Ok(frame) = serde_json::from_str::<Frame<Stamp>>(&text) else {
                            continue;
                        };
                        match frame.kind {
                            "msg" if frame.gid == Some(member.gid) => {
                                let msgid = frame.msgid.unwrap_or(0);
                                match msgid.cmp(&(pushed + 1)) {
                                    std::cmp::Ordering::Greater => {
                                        Shared::count_one(&shared.counters.stream_gaps);
                                    }
                                    std::cmp::Ordering::Less => {
                                        Shared::count_one(&shared.counters.stream_repeats);
                                    }
                                    std::cmp::Ordering::Equal => {}
                                }
                                pushed = pushed.max(msgid);
                                if let Some(stamp) = &frame.body {
                                    shared.on_push(stamp, node);
                                }
                                self.receive(msgid);
                            }
                            "msgs" if frame.numeric_id() == Some(pull_id) => {
                                let page = frame.msgs.unwrap_or_default();
                                for pulled in &page {
                                    self.receive(pulled.msgid);
                                }
                                if let (Some(true), Some(last)) = (frame.more, page.last()) {
                                    pull_id += 1;
                                    outgoing.push(frames::pull(pull_id, member.gid, last.msgid));
                                }
                            }
                            "pong" if frame.numeric_id() == Some(barrier_sent) => {
                                member.barrier_passed.store(barrier_sent, Ordering::SeqCst);
                            }
                            "error" if frame.numeric_id() == Some(pull_id)
                                && frame.code == Some("unavailable") =>
                            {
                                pull_again = true;
                            }
                            "error" => shared.problem(format!(
                                "uid {}: refused: {text}", member.uid
                            )),
                            _ => {}
                        }
                        member.contiguous.store(self.contiguous(), Ordering::SeqCst);
                    }
                    Ok(None) => {}
                    Err(end) => break Some(end),
                },
                _ = ack_tick.tick() => {
                    if pull_again {
                        pull_again = false;
                        pull_id += 1;
                        outgoing.push(frames::pull(pull_id, member.gid, self.contiguous()));
                    }
                    if control.borrow().acking && self.contiguous() > acked {
                        acked = self.contiguous();
                        outgoing.push(frames::ack(member.gid, acked));
                    }
                }
                changed = control.changed() => {
                    if changed.is_err() {
                        break None;
                    }
                }
            }
        };
        self.above.clear();
        end
    }
}
