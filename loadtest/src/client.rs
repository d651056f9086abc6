//! A simulated client: one real WebSocket session speaking Herald's protocol, which
//! receives, checks and times every message of its group, acks, and optionally sends.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::record::{LocalSamples, Recorder};

pub type Socket = WebSocketStream<TcpStream>;

/// Loopback source addresses connections are spread over, so 20,000+ sessions do not run
/// out of ephemeral ports on one (source, destination) pair.
const SOURCE_ADDRESSES: u8 = 8;

/// Client buffers sized on purpose: small frames, many sessions.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

/// Opens a session for the `n`-th simulated client and reads its `hello`.
pub async fn connect(target: SocketAddr, n: usize, token: &str) -> Result<(Socket, Hello)> {
    let source = IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        1 + (n % SOURCE_ADDRESSES as usize) as u8,
    ));
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket
        .connect(target)
        .await
        .with_context(|| format!("connect to {target}"))?;
    stream.set_nodelay(true)?;
    let mut request = format!("ws://{target}/v1/ws").into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(socket_config()))
            .await
            .context("WebSocket handshake")?;
    let hello = match ws.next().await {
        Some(Ok(Message::Text(text))) => serde_json::from_str::<Hello>(&text).context("hello")?,
        other => bail!("expected hello, got {other:?}"),
    };
    Ok((ws, hello))
}

#[derive(Debug, Deserialize)]
pub struct Hello {
    pub groups: Vec<Cursor>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Cursor {
    pub gid: u64,
    pub last_ack: u64,
    pub latest: u64,
}

/// The fields of any server frame this client looks at.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    id: Option<u64>,
    gid: Option<u64>,
    msgid: Option<u64>,
    body: Option<Stamp>,
    dup: Option<bool>,
    more: Option<bool>,
    msgs: Option<Vec<Pulled>>,
}

/// The send time a message body carries.
#[derive(Deserialize)]
struct Stamp {
    t: u64,
}

#[derive(Deserialize)]
struct Pulled {
    msgid: u64,
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
    let mut samples = LocalSamples::default();
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
            frame = ws.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(close))) => {
                        let code = close.map(|c| u16::from(c.code));
                        if code == Some(4008) {
                            Recorder::count(&recorder.closed_too_slow, 1);
                        } else if *phase.borrow() != Phase::Stop {
                            Recorder::count(&recorder.dropped, 1);
                        }
                        progress.ended_early.store(*phase.borrow() != Phase::Stop, Ordering::Relaxed);
                        break;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => {
                        if *phase.borrow() != Phase::Stop {
                            Recorder::count(&recorder.dropped, 1);
                            progress.ended_early.store(true, Ordering::Relaxed);
                        }
                        break;
                    }
                };
                let Ok(frame) = serde_json::from_str::<Frame>(&text) else {
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
                        Recorder::count(&recorder.deliveries, 1);
                        if let Some(stamp) = frame.body {
                            let now = recorder.now_ns();
                            samples.delivery(&recorder, now.saturating_sub(stamp.t) / 1000);
                        }
                    }
                    "sent" => {
                        if let Some(sent_at) = frame.id.and_then(|id| waiting.remove(&id)) {
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
                        if let Some(id) = frame.id {
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
                    let ack = format!(r#"{{"type":"ack","gid":{},"msgid":{acked}}}"#, role.gid);
                    outgoing.push(ack);
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
        let pull =
            format!(r#"{{"type":"pull","id":{request},"gid":{gid},"after":{after},"limit":1000}}"#);
        ws.send(Message::text(pull)).await?;
        loop {
            let text = match ws.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(close))) => bail!("closed while pulling: {close:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => bail!("connection ended while pulling"),
            };
            let frame: Frame = serde_json::from_str(&text)?;
            if frame.kind == "msgs" && frame.id == Some(request) {
                let page = frame.msgs.unwrap_or_default();
                msgids.extend(page.iter().map(|m| m.msgid));
                match page.last() {
                    Some(last) => after = last.msgid,
                    None if frame.more != Some(true) => return Ok(msgids),
                    None => {}
                }
                break;
            }
            if frame.kind == "error" && frame.id == Some(request) {
                bail!("pull refused: {text}");
            }
        }
    }
    Ok(msgids)
}

/// Sends a cumulative ack.
pub async fn ack(ws: &mut Socket, gid: u64, msgid: u64) -> Result<()> {
    let ack = format!(r#"{{"type":"ack","gid":{gid},"msgid":{msgid}}}"#);
    ws.send(Message::text(ack)).await?;
    Ok(())
}
