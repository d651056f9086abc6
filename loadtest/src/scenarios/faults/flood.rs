//! The flood's clients: extra sessions of real members that write requests of one kind as
//! fast as their socket takes them, kind after kind, while a task of their own reads and
//! counts the replies. Herald must refuse them (`rate_limited`, or an error for a frame at
//! fault) and close them (1008) without the honest sessions beside them noticing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};

use super::session::{self, Member};
use crate::kit::client::{self, next_text, End, Socket};
use crate::kit::frames::{self, Frame};
use crate::report::Percentiles;

/// Pause before a flooder the server closed (or refused) connects again.
const RECONNECT_AFTER: Duration = Duration::from_millis(200);
/// Reconnects one flooder makes in a window at most, so that a server refusing or closing
/// every attempt at once does not turn the flood into a flood of connections.
const MAX_RECONNECTS: u32 = 50;
/// Frames written between flushes.
const BATCH: usize = 64;
/// How long a connection the flooder closes itself has to deliver the replies still coming.
const DRAIN_WITHIN: Duration = Duration::from_millis(500);
/// An ack above every group's newest msgid: the largest id there is (2^53 − 1).
const ACK_ABOVE_NEWEST: u64 = 9_007_199_254_740_991;

/// What a flooder writes, one kind after another.
#[derive(Clone, Copy)]
enum Kind {
    Ping,
    Ack,
    AckAboveNewest,
    Pull,
    FullSync,
    Send,
    Malformed,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::Ping,
        Kind::Ack,
        Kind::AckAboveNewest,
        Kind::Pull,
        Kind::FullSync,
        Kind::Send,
        Kind::Malformed,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Ping => "ping",
            Kind::Ack => "ack",
            Kind::AckAboveNewest => "ack above newest",
            Kind::Pull => "pull of 1000",
            Kind::FullSync => "full sync",
            Kind::Send => "send, not a member",
            Kind::Malformed => "unknown type",
        }
    }
}

/// One flooding session: the user of a reader, on a connection of its own.
pub struct Flooder {
    /// The reader whose user floods: a real member of its group.
    pub member: Arc<Member>,
    /// A group of the run the user is not in. Its sends go there, to be refused
    /// `forbidden`: the audit, which finds any stored message no sender of a group sent,
    /// would tell if one were stored.
    pub foreign_gid: u64,
    /// Its place among all sessions, which spreads source addresses.
    pub n: usize,
}

impl Flooder {
    fn frame(&self, kind: Kind, id: u64) -> String {
        let gid = self.member.gid;
        match kind {
            Kind::Ping => frames::ping(id),
            // The reader's own watermark: acking more would let the reader skip, after a
            // reconnect, messages it never got, and so hide a gap from the catch-up check.
            Kind::Ack => frames::ack(gid, self.member.acked.load(Ordering::Relaxed).max(1)),
            Kind::AckAboveNewest => frames::ack(gid, ACK_ABOVE_NEWEST),
            Kind::Pull => frames::pull(id, gid, 0),
            Kind::FullSync => format!(r#"{{"type":"sync","id":{id}}}"#),
            Kind::Send => format!(
                r#"{{"type":"send","id":{id},"gid":{},"cmid":"flood-{id}","body":{{}}}}"#,
                self.foreign_gid
            ),
            Kind::Malformed => r#"{"type":"nope"}"#.to_owned(),
        }
    }

    /// Floods on one connection until `until`; whether the server ended it (or refused it)
    /// before. A connection still open then is closed in `closing`, beside the next kind's
    /// flood: waiting for its last replies here would eat into that kind's share.
    async fn flood_once(
        &self,
        addr: SocketAddr,
        tally: &Arc<Tally>,
        until: Instant,
        closing: &mut JoinSet<()>,
    ) -> bool {
        let connected = tokio::time::timeout(
            session::CONNECT_TIMEOUT,
            client::connect(addr, self.n, &self.member.token),
        )
        .await;
        let Ok(Ok((ws, _hello))) = connected else {
            Tally::count(&tally.failed_connects);
            return true;
        };
        Tally::count(&tally.connections);
        let (mut sink, stream) = ws.split();
        // Reading runs apart from writing: a writer that never waits must not leave the
        // replies unread (the server would close it as too slow, 4008, instead).
        let mut replies = JoinSet::new();
        replies.spawn(tally.clone().read_replies(stream));
        tokio::select! {
            end = replies.join_next() => {
                tally.ended(end.and_then(Result::ok).unwrap_or(End::Broken));
                true
            }
            _refused = self.write(&mut sink, tally) => {
                // The connection is gone: its reader learns how.
                tally.ended(drain(&mut replies).await.unwrap_or(End::Broken));
                true
            }
            () = tokio::time::sleep_until(until) => {
                // The kind's share is over: close, and count the replies still coming. A
                // close the server sent just before ours still counts (the echo of ours
                // carries no code).
                let tally = tally.clone();
                closing.spawn(async move {
                    let _ = tokio::time::timeout(DRAIN_WITHIN, sink.close()).await;
                    if let Some(end @ End::Closed(Some(_))) = drain(&mut replies).await {
                        tally.ended(end);
                    }
                });
                false
            }
        }
    }

    /// Writes frames of `tally.kind` as fast as the socket takes them, flushing every
    /// `BATCH`; returns the error that stopped it.
    async fn write(
        &self,
        sink: &mut SplitSink<Socket, Message>,
        tally: &Tally,
    ) -> tungstenite::Error {
        let mut id = 0u64;
        loop {
            for _ in 0..BATCH {
                id += 1;
                if let Err(error) = sink.feed(Message::text(self.frame(tally.kind, id))).await {
                    return error;
                }
                Tally::count(&tally.written);
            }
            if let Err(error) = sink.flush().await {
                return error;
            }
            tokio::task::yield_now().await;
        }
    }
}

/// How the connection of `replies` ends, if it does within `DRAIN_WITHIN` (its reader is
/// stopped with the set otherwise).
async fn drain(replies: &mut JoinSet<End>) -> Option<End> {
    let end = tokio::time::timeout(DRAIN_WITHIN, replies.join_next()).await;
    end.ok().flatten().and_then(Result::ok)
}

/// Floods kind after kind, each for an even share of `window`; a connection the server ends
/// is opened again after `RECONNECT_AFTER` and floods the same kind.
pub async fn run(flooder: Flooder, addr: SocketAddr, tallies: Vec<Arc<Tally>>, window: Duration) {
    let began = Instant::now();
    let share = window.div_f64(tallies.len() as f64);
    let mut reconnects = 0;
    let mut closing = JoinSet::new();
    for (i, tally) in tallies.iter().enumerate() {
        let until = began + share.mul_f64(i as f64 + 1.0);
        while flooder.flood_once(addr, tally, until, &mut closing).await
            && reconnects < MAX_RECONNECTS
            && Instant::now() + RECONNECT_AFTER < until
        {
            reconnects += 1;
            tokio::time::sleep(RECONNECT_AFTER).await;
        }
        tokio::time::sleep_until(until).await;
    }
    closing.join_all().await;
}

/// What the flooders of one kind wrote and got back, over all of them.
pub struct Tally {
    kind: Kind,
    written: AtomicU64,
    /// Replies that served a request: pong, msgs, synced, sent.
    answered: AtomicU64,
    rate_limited: AtomicU64,
    /// Other refusals: bad_request, forbidden…
    refused: AtomicU64,
    connections: AtomicU64,
    /// Connections (or their hello) that failed.
    failed_connects: AtomicU64,
    /// How the server ended connections, by close code.
    ends: Mutex<BTreeMap<String, u64>>,
}

/// A tally for each kind, in the order they flood.
pub fn tallies() -> Vec<Arc<Tally>> {
    Kind::ALL
        .into_iter()
        .map(|kind| {
            Arc::new(Tally {
                kind,
                written: AtomicU64::new(0),
                answered: AtomicU64::new(0),
                rate_limited: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                connections: AtomicU64::new(0),
                failed_connects: AtomicU64::new(0),
                ends: Mutex::default(),
            })
        })
        .collect()
}

impl Tally {
    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts the replies on one connection until it ends; returns how it ended.
    async fn read_replies(self: Arc<Self>, mut stream: SplitStream<Socket>) -> End {
        loop {
            match next_text(&mut stream).await {
                Ok(Some(text)) => self.reply(&text),
                Ok(None) => {}
                Err(end) => return end,
            }
        }
    }

    fn reply(&self, text: &str) {
        let Ok(reply) = serde_json::from_str::<Frame>(text) else {
            return;
        };
        match (reply.kind, reply.code, reply.id) {
            ("error", Some("rate_limited"), _) => Tally::count(&self.rate_limited),
            ("error", ..) => Tally::count(&self.refused),
            (_, _, Some(_)) => Tally::count(&self.answered),
            // What the group pushes to every member.
            _ => {}
        }
    }

    fn ended(&self, end: End) {
        let how = match end {
            End::Closed(Some(code)) => code.to_string(),
            End::Closed(None) => "close without a code".to_owned(),
            End::Broken => "broken, no close".to_owned(),
        };
        *self.ends.lock().unwrap().entry(how).or_default() += 1;
    }

    pub fn report(&self) -> KindReport {
        KindReport {
            kind: self.kind.name().to_owned(),
            written: Tally::get(&self.written),
            answered: Tally::get(&self.answered),
            rate_limited: Tally::get(&self.rate_limited),
            refused: Tally::get(&self.refused),
            connections: Tally::get(&self.connections),
            failed_connects: Tally::get(&self.failed_connects),
            ends: self.ends.lock().unwrap().clone(),
        }
    }
}

/// One kind of flood over all flooders (or all kinds).
#[derive(Debug, Clone, Default, Serialize)]
pub struct KindReport {
    pub kind: String,
    /// Frames written.
    pub written: u64,
    /// Replies that served a request (pong, msgs, synced, sent).
    pub answered: u64,
    pub rate_limited: u64,
    /// Other error replies (bad_request, forbidden…).
    pub refused: u64,
    pub connections: u64,
    pub failed_connects: u64,
    /// Connections the server ended, by close code (or how they broke).
    pub ends: BTreeMap<String, u64>,
}

impl KindReport {
    /// Connections the server ended.
    pub fn ended(&self) -> u64 {
        self.ends.values().sum()
    }

    /// Whether the server held this kind back: refused some as `rate_limited` or closed
    /// the flooders.
    pub fn held_back(&self) -> bool {
        self.rate_limited + self.ended() > 0
    }

    fn add(mut self, other: &KindReport) -> KindReport {
        self.written += other.written;
        self.answered += other.answered;
        self.rate_limited += other.rate_limited;
        self.refused += other.refused;
        self.connections += other.connections;
        self.failed_connects += other.failed_connects;
        for (how, n) in &other.ends {
            *self.ends.entry(how.clone()).or_default() += n;
        }
        self
    }
}

/// The flood as reported: honest latency and Herald's memory without and with it, and what
/// each kind of flood met.
#[derive(Debug, Clone, Serialize)]
pub struct FloodReport {
    pub flooders: u64,
    /// Seconds of each window, calm and flooded.
    pub window_s: f64,
    /// Honest sends, from writing the frame to its `sent`.
    pub calm_sent_latency_ms: Percentiles,
    pub flood_sent_latency_ms: Percentiles,
    pub kinds: Vec<KindReport>,
    /// The kinds added up.
    pub total: KindReport,
    /// Herald's resident memory, the most any sample of the window found.
    pub calm_rss_peak_bytes: u64,
    pub flood_rss_peak_bytes: u64,
}

impl FloodReport {
    pub fn new(
        flooders: usize,
        window: Duration,
        calm: (Percentiles, u64),
        flood: (Percentiles, u64),
        tallies: &[Arc<Tally>],
    ) -> FloodReport {
        let kinds: Vec<KindReport> = tallies.iter().map(|tally| tally.report()).collect();
        let all = KindReport {
            kind: "all kinds".to_owned(),
            ..KindReport::default()
        };
        FloodReport {
            total: kinds.iter().fold(all, KindReport::add),
            flooders: flooders as u64,
            window_s: window.as_secs_f64(),
            calm_sent_latency_ms: calm.0,
            flood_sent_latency_ms: flood.0,
            kinds,
            calm_rss_peak_bytes: calm.1,
            flood_rss_peak_bytes: flood.1,
        }
    }

    pub fn print(&self) {
        println!(
            "\n  flood: {} sessions of readers' users, {} kinds in turn; {:.1} s calm, then \
             {:.1} s flooded",
            self.flooders,
            self.kinds.len(),
            self.window_s,
            self.window_s
        );
        println!(
            "\n  {:<26} {:>7} {:>8} {:>8} {:>8} {:>8}",
            "honest send → sent", "count", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        for (window, p) in [
            ("calm", &self.calm_sent_latency_ms),
            ("flooded", &self.flood_sent_latency_ms),
        ] {
            println!(
                "  {window:<26} {:>7} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                p.count, p.p50, p.p90, p.p99, p.max
            );
        }
        println!(
            "\n  {:<26} {:>9} {:>9} {:>12} {:>8} {:>11} {:>6}  ended by the server",
            "flooded with",
            "written",
            "answered",
            "rate_limited",
            "refused",
            "connections",
            "failed"
        );
        for kind in self.kinds.iter().chain([&self.total]) {
            println!(
                "  {:<26} {:>9} {:>9} {:>12} {:>8} {:>11} {:>6}  {}",
                kind.kind,
                kind.written,
                kind.answered,
                kind.rate_limited,
                kind.refused,
                kind.connections,
                kind.failed_connects,
                ends_text(&kind.ends)
            );
        }
        let mib = |bytes: u64| bytes as f64 / 1048576.0;
        println!(
            "\n  Herald's RSS at most: {:.1} MiB calm, {:.1} MiB flooded",
            mib(self.calm_rss_peak_bytes),
            mib(self.flood_rss_peak_bytes)
        );
    }
}

/// `1008 ×3, broken, no close ×1`, or `none`.
fn ends_text(ends: &BTreeMap<String, u64>) -> String {
    if ends.is_empty() {
        return "none".to_owned();
    }
    ends.iter()
        .map(|(how, n)| format!("{how} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
