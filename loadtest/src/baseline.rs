//! The ceiling of this machine: a minimal WebSocket broadcast server with no storage, no
//! acks and no checks, speaking just enough of Herald's protocol for the same clients and
//! frames. It runs in this process on its own threads.
//!
//! Like Herald it serialises each message once and shares it with every member, and each
//! connection's writer batches whatever is queued into one flush.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

#[derive(Default)]
struct Group {
    latest: u64,
    online: Vec<mpsc::UnboundedSender<Utf8Bytes>>,
}

/// Who is in which group; filled before sessions connect.
#[derive(Default)]
struct State {
    groups: Mutex<HashMap<u64, Arc<Mutex<Group>>>>,
    group_of: Mutex<HashMap<u64, u64>>,
}

/// A running broadcast server.
pub struct Broadcast {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Broadcast {
    /// Starts the server on 127.0.0.1 on a runtime of `threads` threads of its own.
    pub fn start(threads: usize) -> Result<Broadcast> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state: Arc<State> = Arc::default();
        let shared = state.clone();
        std::thread::Builder::new()
            .name("baseline".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    // Its own name, so a profile tells the server's threads from the clients'.
                    .thread_name("baseline")
                    .enable_all()
                    .build()
                    .expect("a runtime for the baseline server");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("a tokio listener");
                    while let Ok((stream, _)) = listener.accept().await {
                        tokio::spawn(serve(stream, shared.clone()));
                    }
                });
            })?;
        Ok(Broadcast { addr, state })
    }

    /// Defines a group.
    pub fn create_group(&self, gid: u64, members: &[u64]) {
        let mut group_of = self.state.group_of.lock().unwrap();
        for &uid in members {
            group_of.insert(uid, gid);
        }
        let group = Arc::new(Mutex::new(Group::default()));
        self.state.groups.lock().unwrap().insert(gid, group);
    }
}

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    id: Option<u64>,
    cmid: Option<&'a str>,
    #[serde(borrow)]
    body: Option<&'a RawValue>,
}

/// The uid in a JWT's `sub`, unverified: the baseline checks nothing.
fn uid_of(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&json).ok()?;
    claims["sub"].as_str()?.parse().ok()
}

// The handshake callback's signature, with its large error type, is tungstenite's.
#[allow(clippy::result_large_err)]
async fn serve(stream: TcpStream, state: Arc<State>) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut uid = None;
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(64 * 1024);
    let ws = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        |request: &Request, response: Response| {
            uid = request
                .headers()
                .get("authorization")
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.strip_prefix("Bearer "))
                .and_then(uid_of);
            Ok(response)
        },
        Some(config),
    )
    .await?;
    let uid = uid.context("no uid in the token")?;
    let gid = *state
        .group_of
        .lock()
        .unwrap()
        .get(&uid)
        .context("not in any group")?;
    let group = state
        .groups
        .lock()
        .unwrap()
        .get(&gid)
        .cloned()
        .context("no such group")?;
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Utf8Bytes>();
    let latest = {
        let mut group = group.lock().unwrap();
        group.online.push(tx.clone());
        group.latest
    };
    let hello = format!(
        r#"{{"type":"hello","uid":{uid},"session":"b","heartbeat_s":25,"groups":[{{"gid":{gid},"last_ack":{latest},"latest":{latest}}}]}}"#
    );
    let _ = tx.send(hello.into());
    // The writer: everything queued goes out in one flush.
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            sink.feed(Message::Text(frame)).await?;
            while let Ok(more) = rx.try_recv() {
                sink.feed(Message::Text(more)).await?;
            }
            sink.flush().await?;
        }
        Ok::<_, tokio_tungstenite::tungstenite::Error>(())
    });
    while let Some(Ok(message)) = source.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let Ok(frame) = serde_json::from_str::<Incoming>(&text) else {
            continue;
        };
        if frame.kind != "send" {
            continue;
        }
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let mut group = group.lock().unwrap();
        group.latest += 1;
        let msgid = group.latest;
        let id = frame.id.unwrap_or(0);
        let sent = format!(
            r#"{{"type":"sent","id":{id},"gid":{gid},"msgid":{msgid},"ts":{ts},"dup":false}}"#
        );
        let _ = tx.send(sent.into());
        let msg: Utf8Bytes = format!(
            r#"{{"type":"msg","gid":{gid},"msgid":{msgid},"from":{uid},"ts":{ts},"cmid":"{}","body":{}}}"#,
            frame.cmid.unwrap_or(""),
            frame.body.map(RawValue::get).unwrap_or("null"),
        )
        .into();
        group
            .online
            .retain(|member| member.send(msg.clone()).is_ok());
    }
    drop(tx);
    writer.abort();
    Ok(())
}
