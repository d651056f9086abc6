//! A simulated client: one real WebSocket session speaking Herald's protocol, which
//! receives, checks and times every message of its group, acks, and optionally sends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::SinkExt;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::kit::client::{next_text, End, Socket};
use crate::kit::frames::{self, Cursor, Frame};
use crate::record::{LocalSamples, Placement, Recorder};

/// The send time a message body carries.
#[derive(Deserialize)]
struct Stamp {
    t: u64,
}

/// How a sending session sends.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Open loop: one send every interval, whatever the replies.
    Every(Duration),
    /// Closed loop: keep this many sends waiting for `sent`.
    Window(usize),
}

/// What one session does in a run.
#[derive(Clone)]
pub struct Role {
    pub gid: u64,
    /// Where this session's group's newest confirmed msgid is kept (shared by its senders).
    pub group_latest: Arc<AtomicU64>,
    /// Sending, if this session sends.
    pub pace: Option<Pace>,
    /// Most messages this session sends in the run.
    pub send_limit: Option<u64>,
    /// Bytes of padding in each body.
    pub body_pad: usize,
    /// Cumulative ack interval.
    pub ack_every: Duration,
    /// Stop reading altogether (a stalled client).
    pub stalled: bool,
    /// On the senders' node or another.
    pub placement: Placement,
}

/// The run's phases as the sessions see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Sending,
    /// Senders stop sending and wait for their last replies; everyone keeps receiving.
    Draining,
    Stop,
}

/// A session's view of its group after the run, for the completeness check.
#[derive(Debug, Default)]
pub struct Progress {
    /// Highest msgid received in order.
    pub last: AtomicU64,
    /// Messages received (each once).
    pub received: AtomicU64,
    /// Sends not yet answered.
    pub in_flight: AtomicU64,
    /// The session ended before the run did (closed by the server, or the connection broke).
    pub ended_early: std::sync::atomic::AtomicBool,
}

/// Runs one session until the phase is `Stop` or the server closes it.
pub async fn run(
    mut ws: Socket,
    start: Cursor,
    role: Role,
    recorder: Arc<Recorder>,
    progress: Arc<Progress>,
    mut phase: watch::Receiver<Phase>,
) {
    if role.stalled {
        // Hold the socket without reading: the server must cut this session off alone.
        while *phase.borrow() != Phase::Stop {
            if phase.changed().await.is_err() {
                break;
            }
        }
        return;
    }
    let mut samples = LocalSamples::new(role.placement);
    let mut next = start.latest + 1;
    progress.last.store(start.latest, Ordering::Relaxed);
    let mut acked = start.last_ack;
    let mut seq = 0u64;
    let mut waiting: HashMap<u64, Instant> = HashMap::new();
    let padding = "x".repeat(role.body_pad);
    let tick = match role.pace {
        Some(Pace::Every(interval)) => interval,
        _ => Duration::from_secs(3600),
    };
    // Senders start at a random phase of their interval: in lockstep, every group would
    // send in the same instant, a burst no real traffic has.
    let phase_offset = tick.mul_f64(rand_fraction(role.gid ^ start.latest ^ recorder.now_ns()));
    let mut send_timer = tokio::time::interval_at(tokio::time::Instant::now() + phase_offset, tick);
    send_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut ack_timer = tokio::time::interval(role.ack_every);
    ack_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let window = match role.pace {
        Some(Pace::Window(window)) => window,
        _ => 0,
    };
    let mut outgoing = Vec::new();
    loop {
        let sending =
            *phase.borrow() == Phase::Sending && role.send_limit.is_none_or(|limit| seq < limit);
        // Closed loop: top the window up before waiting.
        while sending && waiting.len() < window {
            seq += 1;
            outgoing.push(send_frame(&role, seq, &padding, &recorder));
            waiting.insert(seq, Instant::now());
        }
        if !outgoing.is_empty() {
            let frames = outgoing.drain(..).map(|f| Ok(Message::text(f)));
            if ws
                .send_all(&mut futures_util::stream::iter(frames))
                .await
                .is_err()
            {
                break;
            }
        }
        progress
            .in_flight
            .store(waiting.len() as u64, Ordering::Relaxed);
        tokio::select! {
            text = next_text(&mut ws) => {
                let text = match text {
                    Ok(Some(text)) => text,
                    Ok(None) => continue,
                    Err(End::Closed(code)) => {
                        if code == Some(4008) {
                            Recorder::count(&recorder.closed_too_slow, 1);
                        } else if *phase.borrow() != Phase::Stop {
                            Recorder::count(&recorder.dropped, 1);
                        }
                        progress.ended_early.store(*phase.borrow() != Phase::Stop, Ordering::Relaxed);
                        break;
                    }
                    Err(End::Broken) => {
                        if *phase.borrow() != Phase::Stop {
                            Recorder::count(&recorder.dropped, 1);
                            progress.ended_early.store(true, Ordering::Relaxed);
                        }
                        break;
                    }
                };
                let Ok(frame) = serde_json::from_str::<Frame<Stamp>>(&text) else {
                    Recorder::count(&recorder.errors, 1);
                    continue;
                };
                match frame.kind {
                    "msg" if frame.gid == Some(role.gid) => {
                        let msgid = frame.msgid.unwrap_or(0);
                        if msgid < next {
                            Recorder::count(&recorder.duplicates, 1);
                            continue;
                        }
                        if msgid > next {
                            Recorder::count(&recorder.gaps, msgid - next);
                        }
                        next = msgid + 1;
                        progress.last.store(msgid, Ordering::Relaxed);
                        progress.received.fetch_add(1, Ordering::Relaxed);
                        Recorder::count(&recorder.deliveries, 1);
                        if let Some(stamp) = frame.body {
                            let now = recorder.now_ns();
                            samples.delivery(&recorder, now.saturating_sub(stamp.t) / 1000);
                        }
                    }
                    "sent" => {
                        if let Some(sent_at) = frame.numeric_id().and_then(|id| waiting.remove(&id)) {
                            samples.sent(&recorder, sent_at.elapsed().as_micros() as u64);
                        }
                        if frame.dup != Some(true) {
                            Recorder::count(&recorder.stored, 1);
                        }
                        if let Some(msgid) = frame.msgid {
                            role.group_latest.fetch_max(msgid, Ordering::Relaxed);
                        }
                    }
                    "error" => {
                        if let Some(id) = frame.numeric_id() {
                            waiting.remove(&id);
                        }
                        Recorder::count(&recorder.errors, 1);
                    }
                    _ => {}
                }
            }
            _ = send_timer.tick(), if sending && matches!(role.pace, Some(Pace::Every(_))) => {
                seq += 1;
                outgoing.push(send_frame(&role, seq, &padding, &recorder));
                waiting.insert(seq, Instant::now());
            }
            _ = ack_timer.tick() => {
                if next - 1 > acked {
                    acked = next - 1;
                    outgoing.push(frames::ack(role.gid, acked));
                }
            }
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow() == Phase::Stop {
                    break;
                }
            }
        }
    }
    progress.in_flight.store(0, Ordering::Relaxed);
    samples.flush(&recorder);
    let _ = ws.close(None).await;
}

/// A number in [0, 1) from a seed (splitmix64): enough to spread senders' phases.
fn rand_fraction(seed: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as f64 / (u64::MAX as f64 + 1.0)
}

fn send_frame(role: &Role, seq: u64, padding: &str, recorder: &Recorder) -> String {
    format!(
        r#"{{"type":"send","id":{seq},"gid":{gid},"cmid":"c{seq}","body":{{"t":{t},"p":"{padding}"}}}}"#,
        gid = role.gid,
        t = recorder.now_ns(),
    )
}

/// Pulls everything after `after` in pages until the group's `latest`; returns the msgids
/// in the order received. Used to catch up after a reconnect.
pub async fn pull_until(
    ws: &mut Socket,
    gid: u64,
    mut after: u64,
    latest: u64,
) -> Result<Vec<u64>> {
    let mut msgids = Vec::new();
    let mut request = 0u64;
    while after < latest {
        request += 1;
        ws.send(Message::text(frames::pull(request, gid, after)))
            .await?;
        loop {
            let text = match next_text(ws).await {
                Ok(Some(text)) => text,
                Ok(None) => continue,
                Err(End::Closed(code)) => bail!("closed while pulling (code {code:?})"),
                Err(End::Broken) => bail!("connection ended while pulling"),
            };
            let frame: Frame = serde_json::from_str(&text)?;
            if frame.kind == "msgs" && frame.numeric_id() == Some(request) {
                let page = frame.msgs.unwrap_or_default();
                msgids.extend(page.iter().map(|m| m.msgid));
                match page.last() {
                    Some(last) => after = last.msgid,
                    None if frame.more != Some(true) => return Ok(msgids),
                    None => {}
                }
                break;
            }
            if frame.kind == "error" && frame.numeric_id() == Some(request) {
                bail!("pull refused: {text}");
            }
        }
    }
    Ok(msgids)
}

/// Sends a cumulative ack.
pub async fn ack(ws: &mut Socket, gid: u64, msgid: u64) -> Result<()> {
    ws.send(Message::text(frames::ack(gid, msgid))).await?;
    Ok(())
}
