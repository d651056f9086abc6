//! The WebSocket glue, the only code that knows actix-web-actors: the upgrade, the session's
//! actor and its `WebsocketContext`, the frames read (fragments reassembled into whole
//! messages for the [`SessionState`]) and written, and the close frames — including the one
//! RFC 6455 asks for when the client's frames break the protocol.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use actix::fut::wrap_future;
use actix::prelude::*;
use actix_http::ws::Item;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws::{self, CloseReason, ProtocolError, WebsocketContext, WsResponseBuilder};
use bytestring::ByteString;
use futures_util::StreamExt;

use super::state::{Connection, Outcome, SessionState, Work};
use super::SessionContext;
use crate::auth::Identity;
use crate::close::Close;
use crate::messages::ToSession;

/// Upgrades the request to a WebSocket and runs a session for `identity` on it.
pub fn start(
    identity: Identity,
    shared: Arc<SessionContext>,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let max_frame_bytes = shared.limits.max_frame_bytes;
    let session = Session {
        state: SessionState::new(identity, shared),
        fragments: Fragments::new(max_frame_bytes),
    };
    // The WebSocket decoder drops the frames it has buffered when its input fails, and a peer
    // that sends its last frames and leaves (an ack, then a close) ends with such a failure:
    // ending the input at the first error lets those frames be handled first. It also keeps
    // input errors from being reported as the protocol errors of `close_for`.
    let payload = payload.take_while(|chunk| std::future::ready(chunk.is_ok()));
    WsResponseBuilder::new(session, req, payload)
        .frame_size(max_frame_bytes)
        .start()
}

/// The session's actor, one per WebSocket.
struct Session {
    state: SessionState,
    fragments: Fragments,
}

impl Actor for Session {
    type Context = WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.state.start(&mut WsConnection(ctx));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.state.stopped();
    }
}

impl Handler<ToSession> for Session {
    type Result = ();

    fn handle(&mut self, message: ToSession, ctx: &mut Self::Context) {
        self.state.on_message(message, &mut WsConnection(ctx));
    }
}

impl StreamHandler<Result<ws::Message, ProtocolError>> for Session {
    fn handle(&mut self, item: Result<ws::Message, ProtocolError>, ctx: &mut Self::Context) {
        let _span = self.state.span().entered();
        self.state.heard();
        match item {
            Ok(ws::Message::Text(text)) => self.state.on_text(&text, &mut WsConnection(ctx)),
            Ok(ws::Message::Binary(_)) => self.state.on_binary(&mut WsConnection(ctx)),
            Ok(ws::Message::Continuation(item)) => match self.fragments.add(item) {
                Ok(Reassembled::Nothing) => {}
                Ok(Reassembled::Text(text)) => self.state.on_text(&text, &mut WsConnection(ctx)),
                Ok(Reassembled::Binary) => self.state.on_binary(&mut WsConnection(ctx)),
                Err(close) => close_with(ctx, close),
            },
            Ok(ws::Message::Ping(payload)) => ctx.pong(&payload),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Err(error) => {
                let close = close_for(&error);
                tracing::debug!(%error, code = u16::from(close.code),
                    "websocket protocol error: closing");
                close_with(ctx, close);
            }
        }
    }
}

/// The close frame due for frames that break RFC 6455, which fails such a connection by
/// sending one before closing (§7.1.7).
fn close_for(error: &ProtocolError) -> Close {
    match error {
        ProtocolError::Overflow => Close::FRAME_TOO_BIG,
        // actix-web-actors reports a text frame that is not UTF-8 as an I/O error of kind
        // `Other`; actix-http's parser reports reserved bits as one of kind `InvalidData`;
        // errors of the input itself never come here (`start` ends the input first).
        ProtocolError::Io(error) if error.kind() == io::ErrorKind::Other => Close::NOT_UTF8,
        _ => Close::PROTOCOL_ERROR,
    }
}

/// Writes the close frame, then stops the actor: actix-web-actors writes what is queued, the
/// close frame last, then ends the response and with it the connection.
fn close_with(ctx: &mut WebsocketContext<Session>, close: Close) {
    ctx.close(Some(CloseReason {
        code: u16::from(close.code).into(),
        description: Some(close.reason.to_owned()),
    }));
    ctx.stop();
}

/// The session's actor context, as the state machine's [`Connection`].
struct WsConnection<'a>(&'a mut WebsocketContext<Session>);

impl Connection for WsConnection<'_> {
    fn inbox(&self) -> Recipient<ToSession> {
        self.0.address().recipient()
    }

    fn write(&mut self, frame: ByteString) {
        self.0.text(frame);
    }

    fn ping(&mut self) {
        self.0.ping(b"");
    }

    fn close(&mut self, close: Close) {
        close_with(self.0, close);
    }

    fn drop_peer(&mut self) {
        self.0.stop();
    }

    fn spawn(&mut self, work: Work) {
        self.0.spawn(handing_back(work));
    }

    fn wait(&mut self, work: Work) {
        self.0.wait(handing_back(work));
    }

    fn after(&mut self, delay: Duration, outcome: Outcome) {
        self.0.run_later(delay, |session, ctx| {
            session.state.on_outcome(outcome, &mut WsConnection(ctx));
        });
    }
}

/// `work` run in the actor's context, its outcome handed back to the state machine.
fn handing_back(work: Work) -> impl ActorFuture<Session, Output = ()> {
    wrap_future::<_, Session>(work).map(|outcome, session, ctx| {
        let _span = session.state.span().entered();
        session.state.on_outcome(outcome, &mut WsConnection(ctx))
    })
}

/// A fragmented message being reassembled, bounded by the frame limit. actix-http's codec
/// refuses a continuation with no message open and a new message inside an open one.
struct Fragments {
    limit: usize,
    /// The text message so far; `None` between messages and through a binary one.
    text: Option<Vec<u8>>,
}

/// What a fragment completes.
enum Reassembled {
    Nothing,
    Text(String),
    /// A binary message, refused at its first fragment; the rest is skipped.
    Binary,
}

impl Fragments {
    fn new(limit: usize) -> Self {
        Fragments { limit, text: None }
    }

    fn add(&mut self, item: Item) -> Result<Reassembled, Close> {
        let (data, last) = match item {
            Item::FirstText(data) => {
                self.text = Some(Vec::new());
                (data, false)
            }
            Item::FirstBinary(_) => {
                self.text = None;
                return Ok(Reassembled::Binary);
            }
            Item::Continue(data) => (data, false),
            Item::Last(data) => (data, true),
        };
        let Some(text) = self.text.as_mut() else {
            return Ok(Reassembled::Nothing);
        };
        if text.len() + data.len() > self.limit {
            return Err(Close::MESSAGE_TOO_BIG);
        }
        text.extend_from_slice(&data);
        if !last {
            return Ok(Reassembled::Nothing);
        }
        let whole = self.text.take().unwrap_or_default();
        String::from_utf8(whole)
            .map(Reassembled::Text)
            .map_err(|_| Close::NOT_UTF8)
    }
}
