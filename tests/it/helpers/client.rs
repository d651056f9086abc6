//! The tests' WebSocket client: a session of the kit's client, with waits that panic after
//! `WAIT` and replies matched to their requests by the kit's frame decoder. Frames come out
//! as JSON values to assert on, or as their very text where the bytes matter.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::SinkExt;
use herald_loadtest::kit::client::{next_text, ConnectError, End, Socket, Upgrade};
use herald_loadtest::kit::frames::Frame;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::WAIT;

/// A WebSocket session speaking the wire protocol.
pub struct Client {
    ws: Socket,
    pub hello: Value,
    /// Frames read while looking for another, handed out by later reads in order.
    skipped: VecDeque<Utf8Bytes>,
}

/// What a server frame is and answers; panics on a frame that is not one.
fn head(text: &str) -> Frame<'_> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("server frame {text}: {e}"))
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("server frames are JSON")
}

impl Client {
    /// Connects with a bearer token; Err carries the HTTP status of a refused upgrade.
    pub async fn connect(addr: SocketAddr, token: &str) -> Result<Client, u16> {
        Client::open(Upgrade::bearer(addr, token)).await
    }

    /// Opens a session and reads its hello; Err carries the HTTP status of a refused
    /// upgrade.
    pub async fn open(upgrade: Upgrade) -> Result<Client, u16> {
        let opened = tokio::time::timeout(WAIT, upgrade.open::<Value>())
            .await
            .unwrap_or_else(|_| panic!("no hello within {WAIT:?}"));
        match opened {
            Ok((ws, hello)) => Ok(Client {
                ws,
                hello,
                skipped: VecDeque::new(),
            }),
            Err(ConnectError::Refused(status)) => Err(status),
            Err(other) => panic!("WebSocket connect failed: {other}"),
        }
    }

    /// The socket itself, hello read, for tests that write and read it in their own way.
    pub fn into_socket(self) -> Socket {
        self.ws
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_text(frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.send_raw(Message::text(text)).await;
    }

    /// Any message, as a fragment or a ping.
    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.expect("WebSocket send");
    }

    /// The next JSON frame from the server; panics on close or after `WAIT`.
    pub async fn recv(&mut self) -> Value {
        json(&self.recv_text().await)
    }

    async fn recv_text(&mut self) -> Utf8Bytes {
        match self.next_text(WAIT).await {
            Some(Ok(text)) => text,
            Some(Err(close)) => panic!("session closed: {close:?}"),
            None => panic!("no frame within {WAIT:?}"),
        }
    }

    /// The next JSON frame, or the close code; None when nothing comes within `wait`.
    pub async fn next_frame(&mut self, wait: Duration) -> Option<Result<Value, Option<u16>>> {
        Some(self.next_text(wait).await?.map(|text| json(&text)))
    }

    async fn next_text(&mut self, wait: Duration) -> Option<Result<Utf8Bytes, Option<u16>>> {
        match self.skipped.pop_front() {
            Some(text) => Some(Ok(text)),
            None => self.read_socket(wait).await,
        }
    }

    async fn read_socket(&mut self, wait: Duration) -> Option<Result<Utf8Bytes, Option<u16>>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, next_text(&mut self.ws)).await {
                Err(_) => return None,
                Ok(Ok(Some(text))) => return Some(Ok(text)),
                Ok(Ok(None)) => continue,
                Ok(Err(End::Closed(code))) => return Some(Err(code)),
                Ok(Err(End::Broken)) => return Some(Err(None)),
            }
        }
    }

    /// Reads frames until one of type `kind` comes; returns it (the others are dropped).
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let text = self.recv_text().await;
            if head(&text).kind == kind {
                return json(&text);
            }
        }
    }

    /// The first frame, queued or new, that `wanted` picks, as its text; the others stay
    /// queued for later reads, in order. Panics on close or after `WAIT`.
    pub async fn take(&mut self, what: &str, wanted: impl Fn(&Frame) -> bool) -> String {
        if let Some(at) = self.skipped.iter().position(|text| wanted(&head(text))) {
            let text = self.skipped.remove(at).expect("a queued frame");
            return text.as_str().to_owned();
        }
        loop {
            match self.read_socket(WAIT).await {
                Some(Ok(text)) if wanted(&head(&text)) => return text.as_str().to_owned(),
                Some(Ok(other)) => self.skipped.push_back(other),
                Some(Err(close)) => panic!("session closed awaiting {what}: {close:?}"),
                None => panic!("no {what} within {WAIT:?}"),
            }
        }
    }

    /// The text of the frame answering request `id` (a string or a number).
    pub async fn reply_text(&mut self, id: &Value) -> String {
        let answers = |frame: &Frame| {
            frame.id.is_some_and(|echoed| {
                serde_json::from_str::<Value>(echoed.get()).ok().as_ref() == Some(id)
            })
        };
        self.take(&format!("reply to {id}"), answers).await
    }

    /// Sends a request and waits for the frame that answers its `id`; frames pushed
    /// meanwhile stay queued for later reads, in order.
    pub async fn request(&mut self, frame: Value) -> Value {
        let id = frame["id"].clone();
        assert!(!id.is_null(), "requests need an id");
        self.send(frame).await;
        json(&self.reply_text(&id).await)
    }

    /// Sends a message and returns its `sent` reply.
    pub async fn send_msg(&mut self, gid: u64, cmid: &str, body: Value) -> Value {
        self.request(json!({"type": "send", "id": cmid, "gid": gid, "cmid": cmid, "body": body}))
            .await
    }

    /// Reads until the session closes; returns the close code. Panics after `WAIT`.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match self.next_text(WAIT).await {
                Some(Ok(_)) => continue,
                Some(Err(code)) => return code,
                None => panic!("session still open after {WAIT:?}"),
            }
        }
    }

    /// Reads `msg` frames of `gid` until `count` arrived; other frames are skipped.
    pub async fn msgs(&mut self, gid: u64, count: usize) -> Vec<Value> {
        let mut got = Vec::with_capacity(count);
        while got.len() < count {
            let text = self.recv_text().await;
            let frame = head(&text);
            if frame.kind == "msg" && frame.gid == Some(gid) {
                got.push(json(&text));
            }
        }
        got
    }

    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    }
}
