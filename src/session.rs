//! The session actor: one per WebSocket. It decodes client frames, routes them to group
//! actors or storage, and writes replies and pushed frames to its socket.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web_actors::ws::{self, CloseCode, CloseReason, ProtocolError, WebsocketContext};
use bytestring::ByteString;
use futures_util::future::{try_join_all, BoxFuture};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::auth::Identity;
use crate::error::{ApiError, ErrorCode};
use crate::group::GroupActor;
use crate::messages::{
    close, AckUpTo, Backlog, Join, Leave, ReplyTo, SessionHandle, SessionId, Submit, ToSession,
};
use crate::metrics;
use crate::protocol::{self, ClientRequest, GroupCursor, RequestId, ServerFrame};
use crate::registry::{ask_group, merge_cursors, Connect, Disconnect, GroupFor, RegistryActor};
use crate::store::{Membership, Store};
use crate::sync::{SyncNotice, SyncRequest};

/// Bad frames in a row after which the session is closed with 1008.
const MAX_BAD_FRAMES_IN_A_ROW: u32 = 10;

/// Sends refused by the rate limit in a row after which the session is closed with 1008: a
/// client that keeps sending past `rate_limited` is not waiting as it should.
const MAX_RATE_LIMITED_IN_A_ROW: u32 = 50;

/// How long a session gathers sync notices into one `sync_notify`.
const NOTIFY_WINDOW: Duration = Duration::from_millis(50);

/// What every session shares.
pub struct SessionContext {
    pub store: Store,
    pub registry: Addr<RegistryActor>,
    pub limits: SessionLimits,
}

/// Per-session limits, from the configuration.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub max_frame_bytes: usize,
    pub max_body_bytes: usize,
    pub heartbeat: Duration,
    pub outbound_queue: usize,
    pub max_pending: usize,
    /// Deepest nesting of arrays and objects in a frame.
    pub max_json_depth: usize,
    /// Sends per second; 0 is unlimited.
    pub send_rate: u32,
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

pub struct Session {
    id: SessionId,
    identity: Identity,
    shared: Arc<SessionContext>,
    /// Group actors this session is online in, to send to without asking the registry.
    groups: HashMap<u64, Addr<GroupActor>>,
    backlog: Arc<Backlog>,
    last_heard: Instant,
    /// Made at the first send, so idle sessions do not carry it.
    send_limiter: Option<Box<DefaultDirectRateLimiter>>,
    /// Sends and pulls waiting for storage.
    pending: usize,
    bad_frames: u32,
    /// Sends refused by the rate limit since the last one accepted.
    rate_limited_in_a_row: u32,
    /// A fragmented text message being reassembled.
    fragments: Option<Vec<u8>>,
    /// A `sync_notify` gathering notices until it is written.
    notice: Option<Box<SyncNotice>>,
}

impl Session {
    pub fn new(identity: Identity, shared: Arc<SessionContext>) -> Self {
        let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
        let limits = &shared.limits;
        Session {
            id,
            identity,
            backlog: Arc::new(Backlog::new(limits.outbound_queue)),
            shared,
            groups: HashMap::new(),
            last_heard: Instant::now(),
            send_limiter: None,
            pending: 0,
            bad_frames: 0,
            rate_limited_in_a_row: 0,
            fragments: None,
            notice: None,
        }
    }

    /// Takes a token from the send rate limiter (none when the rate is unlimited).
    fn may_send(&mut self) -> bool {
        let Some(rate) = NonZeroU32::new(self.shared.limits.send_rate) else {
            return true;
        };
        let limiter = self.send_limiter.get_or_insert_with(|| {
            let burst = NonZeroU32::new(rate.get().saturating_mul(2)).unwrap_or(rate);
            Box::new(RateLimiter::direct(
                Quota::per_second(rate).allow_burst(burst),
            ))
        });
        limiter.check().is_ok()
    }

    /// The session's id as clients see it.
    fn name(&self) -> String {
        format!("s-{:x}", self.id)
    }

    fn uid(&self) -> u64 {
        self.identity.uid
    }

    fn session_handle(&self, ctx: &mut WebsocketContext<Self>) -> SessionHandle {
        SessionHandle {
            id: self.id,
            uid: self.uid(),
            inbox: ctx.address().recipient(),
            backlog: self.backlog.clone(),
        }
    }

    fn write(&self, ctx: &mut WebsocketContext<Self>, frame: ServerFrame) {
        ctx.text(frame.encode());
    }

    fn write_error(
        &self,
        ctx: &mut WebsocketContext<Self>,
        id: Option<RequestId>,
        error: &ApiError,
    ) {
        metrics::global().error(error.code);
        self.write(
            ctx,
            ServerFrame::Error {
                id,
                code: error.code,
                message: &error.message,
            },
        );
    }

    fn close(&self, ctx: &mut WebsocketContext<Self>, code: u16, reason: &str) {
        ctx.close(Some(CloseReason {
            code: CloseCode::Other(code),
            description: Some(reason.to_owned()),
        }));
        ctx.stop();
    }

    /// Hands `msg` to the group `gid`. When this session is online in the group the message
    /// is queued at once, so it is not lost if the session closes before the reply (an ack
    /// followed by a close); otherwise the registry is asked for the group first.
    fn ask_group<M>(&self, gid: u64, msg: M) -> BoxFuture<'static, Result<M::Result, ApiError>>
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        GroupActor: Handler<M>,
    {
        match self.groups.get(&gid) {
            Some(group) => {
                let queued = group.send(msg);
                Box::pin(async move { Ok(queued.await?) })
            }
            None => {
                let registry = self.shared.registry.clone();
                Box::pin(async move { ask_group(&registry, gid, msg).await })
            }
        }
    }

    /// Counts a request waiting for storage; refuses it past the bound.
    fn begin_pending(&mut self) -> Result<(), ApiError> {
        if self.pending >= self.shared.limits.max_pending {
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                "too many requests waiting; wait for replies",
            ));
        }
        self.pending += 1;
        Ok(())
    }

    /// Registers with every group of the user, then greets the client with its cursors.
    fn greet(&mut self, ctx: &mut WebsocketContext<Self>) {
        let (uid, handle) = (self.uid(), self.session_handle(ctx));
        let (store, registry) = (self.shared.store.clone(), self.shared.registry.clone());
        let joining = async move {
            let stored = store.user_groups(uid).await?;
            let joins = stored
                .into_iter()
                .map(|stored| join_group(registry.clone(), handle.clone(), stored));
            let joined = try_join_all(joins).await?;
            Ok::<_, ApiError>(joined.into_iter().flatten().collect::<Vec<_>>())
        };
        ctx.wait(joining.into_actor(self).map(|joined, act, ctx| match joined {
            Ok(joined) => {
                let cursors: Vec<GroupCursor> = joined.iter().map(|(c, _)| *c).collect();
                act.groups = joined.into_iter().map(|(c, g)| (c.gid, g)).collect();
                act.write(
                    ctx,
                    ServerFrame::Hello {
                        uid: act.uid(),
                        session: &act.name(),
                        heartbeat_s: act.shared.limits.heartbeat.as_secs(),
                        groups: &cursors,
                    },
                );
            }
            Err(error) => {
                tracing::warn!(uid = act.uid(), %error, "session could not join its groups");
                act.close(ctx, 1011, "storage unavailable, reconnect later");
            }
        }));
    }

    fn on_text(&mut self, text: &str, ctx: &mut WebsocketContext<Self>) {
        if let Err(bad) = protocol::check_depth(text, self.shared.limits.max_json_depth) {
            return self.bad_frame(bad.id, &bad.error, ctx);
        }
        match protocol::decode(text, self.shared.limits.max_body_bytes) {
            Ok((id, request)) => {
                self.bad_frames = 0;
                self.dispatch(id, request, ctx);
            }
            Err(bad) => self.bad_frame(bad.id, &bad.error, ctx),
        }
    }

    fn bad_frame(
        &mut self,
        id: Option<RequestId>,
        error: &ApiError,
        ctx: &mut WebsocketContext<Self>,
    ) {
        self.write_error(ctx, id, error);
        self.bad_frames += 1;
        if self.bad_frames >= MAX_BAD_FRAMES_IN_A_ROW {
            ctx.close(Some(CloseReason {
                code: CloseCode::Policy,
                description: Some("too many bad frames".into()),
            }));
            ctx.stop();
        }
    }

    fn dispatch(
        &mut self,
        id: Option<RequestId>,
        request: ClientRequest,
        ctx: &mut WebsocketContext<Self>,
    ) {
        match request {
            ClientRequest::Ping => self.write(ctx, ServerFrame::Pong { id }),
            ClientRequest::Send { gid, cmid, body } => self.send(id, gid, cmid, body, ctx),
            ClientRequest::Ack { gid, msgid } => self.ack(id, gid, msgid, ctx),
            ClientRequest::Pull { gid, after, limit } => self.pull(id, gid, after, limit, ctx),
            ClientRequest::Sync(request) => self.sync(id, request, ctx),
        }
    }

    fn sync(
        &mut self,
        id: Option<RequestId>,
        request: SyncRequest,
        ctx: &mut WebsocketContext<Self>,
    ) {
        if let Err(error) = self.begin_pending() {
            return self.write_error(ctx, id, &error);
        }
        let (store, uid) = (self.shared.store.clone(), self.uid());
        let syncing = async move { store.sync(uid, &request).await };
        ctx.spawn(syncing.into_actor(self).map(move |reply, act, ctx| {
            act.pending -= 1;
            match reply {
                Ok(reply) => act.write(ctx, ServerFrame::Synced { id, reply: &reply }),
                Err(error) => act.write_error(ctx, id, &error.into()),
            }
        }));
    }

    /// Gathers a notice into the session's next `sync_notify`, written `NOTIFY_WINDOW` after
    /// the first notice it holds.
    fn notify(&mut self, notice: &SyncNotice, ctx: &mut WebsocketContext<Self>) {
        match self.notice.as_mut() {
            Some(pending) => pending.merge(notice),
            None => {
                self.notice = Some(Box::new(notice.clone()));
                ctx.run_later(NOTIFY_WINDOW, |act, ctx| {
                    if let Some(notice) = act.notice.take() {
                        act.write(ctx, ServerFrame::SyncNotify(&notice));
                    }
                });
            }
        }
    }

    fn send(
        &mut self,
        id: Option<RequestId>,
        gid: u64,
        cmid: String,
        body: Box<serde_json::value::RawValue>,
        ctx: &mut WebsocketContext<Self>,
    ) {
        if !self.may_send() {
            let error = ApiError::new(ErrorCode::RateLimited, "send rate limit exceeded");
            self.write_error(ctx, id, &error);
            self.rate_limited_in_a_row += 1;
            if self.rate_limited_in_a_row >= MAX_RATE_LIMITED_IN_A_ROW {
                self.close(ctx, close::POLICY, "sending too fast, persistently");
            }
            return;
        }
        self.rate_limited_in_a_row = 0;
        if let Err(error) = self.begin_pending() {
            return self.write_error(ctx, id, &error);
        }
        let submit = Submit {
            uid: self.uid(),
            cmid,
            body,
        };
        let submitted = self.ask_group(gid, submit);
        let sending = async move { submitted.await? };
        ctx.spawn(sending.into_actor(self).map(move |sent, act, ctx| {
            act.pending -= 1;
            match sent {
                Ok(sent) => act.write(
                    ctx,
                    ServerFrame::Sent {
                        id,
                        gid,
                        msgid: sent.msgid,
                        ts: sent.ts,
                        dup: sent.dup,
                    },
                ),
                Err(error) => act.write_error(ctx, id, &error),
            }
        }));
    }

    fn ack(
        &mut self,
        id: Option<RequestId>,
        gid: u64,
        msgid: u64,
        ctx: &mut WebsocketContext<Self>,
    ) {
        let uid = self.uid();
        match self.groups.get(&gid) {
            // Fire and forget: actix skips a message whose reply future was dropped, and an
            // ack followed at once by a close must still count. Refusals come back as
            // `ToSession::Refused`.
            Some(group) => group.do_send(AckUpTo {
                uid,
                msgid,
                refusals: Some(ReplyTo {
                    session: ctx.address().recipient(),
                    id,
                }),
            }),
            None => {
                let ack = AckUpTo {
                    uid,
                    msgid,
                    refusals: None,
                };
                let acked = self.ask_group(gid, ack);
                let acking = async move { acked.await? };
                ctx.spawn(acking.into_actor(self).map(move |acked, act, ctx| {
                    if let Err(error) = acked {
                        act.write_error(ctx, id, &error);
                    }
                }));
            }
        }
    }

    fn pull(
        &mut self,
        id: Option<RequestId>,
        gid: u64,
        after: u64,
        limit: u32,
        ctx: &mut WebsocketContext<Self>,
    ) {
        if let Err(error) = self.begin_pending() {
            return self.write_error(ctx, id, &error);
        }
        let (store, uid) = (self.shared.store.clone(), self.uid());
        let pulling = async move { pull_page(&store, gid, uid, after, limit).await };
        ctx.spawn(pulling.into_actor(self).map(move |page, act, ctx| {
            act.pending -= 1;
            match page {
                Ok(page) => act.write(
                    ctx,
                    ServerFrame::Msgs {
                        id,
                        gid,
                        msgs: &page.msgs,
                        more: page.more,
                    },
                ),
                Err(error) => act.write_error(ctx, id, &error),
            }
        }));
    }

    /// Reassembles fragmented messages, bounded by the frame limit.
    fn on_continuation(&mut self, item: actix_http::ws::Item, ctx: &mut WebsocketContext<Self>) {
        let limit = self.shared.limits.max_frame_bytes;
        let (first, data, last) = match item {
            actix_http::ws::Item::FirstText(data) => (Some(true), data, false),
            actix_http::ws::Item::FirstBinary(data) => (Some(false), data, false),
            actix_http::ws::Item::Continue(data) => (None, data, false),
            actix_http::ws::Item::Last(data) => (None, data, true),
        };
        match first {
            Some(true) => self.fragments = Some(Vec::new()),
            Some(false) => {
                self.fragments = None;
                let error = ApiError::bad_request("binary frames are not supported");
                return self.bad_frame(None, &error, ctx);
            }
            None => {}
        }
        let Some(buffer) = self.fragments.as_mut() else {
            // The rest of a binary message, already answered; or a stray continuation.
            return;
        };
        if buffer.len() + data.len() > limit {
            return self.close(ctx, 1009, "message too big");
        }
        buffer.extend_from_slice(&data);
        if last {
            let whole = self.fragments.take().unwrap_or_default();
            match String::from_utf8(whole) {
                Ok(text) => self.on_text(&text, ctx),
                Err(_) => self.close(ctx, 1007, "text message is not UTF-8"),
            }
        }
    }
}

/// Joins one group the store says the user belongs to. `None` when the user left it (or it
/// is gone) since the store was read; an error when the group cannot be loaded.
async fn join_group(
    registry: Addr<RegistryActor>,
    session: SessionHandle,
    stored: GroupCursor,
) -> Result<Option<(GroupCursor, Addr<GroupActor>)>, ApiError> {
    // A group actor that stops just as we ask is replaced by the registry: ask once more.
    for _ in 0..2 {
        let group = registry.send(GroupFor(stored.gid)).await?;
        match group.send(Join(session.clone())).await {
            Ok(Ok(live)) => return Ok(Some((merge_cursors(stored, Some(live)), group))),
            Ok(Err(refused))
                if matches!(refused.code, ErrorCode::Forbidden | ErrorCode::NotFound) =>
            {
                return Ok(None)
            }
            Ok(Err(error)) => return Err(error),
            Err(_stopped) => continue,
        }
    }
    Err(ApiError::unavailable())
}

/// A page of a group's messages for a member.
pub async fn pull_page(
    store: &Store,
    gid: u64,
    uid: u64,
    after: u64,
    limit: u32,
) -> Result<crate::store::Page, ApiError> {
    let (membership, page) = futures_util::try_join!(
        store.membership(gid, uid),
        store.messages_after(gid, after, limit)
    )?;
    match membership {
        Membership::Member => Ok(page),
        Membership::NotMember => Err(ApiError::not_a_member(gid)),
        Membership::NoSuchGroup => Err(ApiError::not_found(format!("group {gid} does not exist"))),
    }
}

impl Actor for Session {
    type Context = WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        metrics::global().sessions.inc();
        // Heartbeats and token expiry are driven by the registry for every session at once,
        // rather than by two timers per session polled at each of its wake-ups. The registry
        // also admits the session within the caps; frames wait until it has.
        let admitted = self.shared.registry.send(Connect {
            session: self.session_handle(ctx),
            token_exp: self.identity.exp,
        });
        ctx.wait(
            admitted
                .into_actor(self)
                .map(|admitted, act, ctx| match admitted {
                    Ok(Ok(())) => act.greet(ctx),
                    Ok(Err((code, reason))) => act.close(ctx, code, reason),
                    Err(_) => act.close(ctx, 1011, "service stopping, reconnect later"),
                }),
        );
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        metrics::global().sessions.dec();
        self.shared.registry.do_send(Disconnect {
            uid: self.uid(),
            id: self.id,
        });
        for group in self.groups.values() {
            group.do_send(Leave(self.id));
        }
    }
}

impl Handler<ToSession> for Session {
    type Result = ();

    fn handle(&mut self, msg: ToSession, ctx: &mut Self::Context) {
        match msg {
            ToSession::Frames(frames) => {
                // A session told to close for its backlog writes no more.
                if !self.backlog.overflowed() {
                    for frame in frames.iter() {
                        ctx.text(ByteString::clone(frame));
                    }
                }
                self.backlog.release(frames.len());
            }
            ToSession::Joined { gid, group } => {
                self.groups.insert(gid, group);
            }
            ToSession::Left { gid } => {
                self.groups.remove(&gid);
            }
            ToSession::Notify(notice) => self.notify(&notice, ctx),
            ToSession::Close { code, reason } => self.close(ctx, code, reason),
            ToSession::Refused { id, error } => self.write_error(ctx, id, &error),
            ToSession::Heartbeat => {
                if self.last_heard.elapsed() > self.shared.limits.heartbeat * 2 {
                    tracing::debug!(session = %self.name(), "peer silent for two heartbeats; dropping");
                    ctx.stop();
                } else {
                    ctx.ping(b"");
                }
            }
        }
    }
}

impl StreamHandler<Result<ws::Message, ProtocolError>> for Session {
    fn handle(&mut self, item: Result<ws::Message, ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match item {
            Ok(ws::Message::Text(text)) => self.on_text(&text, ctx),
            Ok(ws::Message::Binary(_)) => {
                let error =
                    ApiError::bad_request("binary frames are not supported; send JSON text");
                self.bad_frame(None, &error, ctx);
            }
            Ok(ws::Message::Continuation(item)) => self.on_continuation(item, ctx),
            Ok(ws::Message::Ping(payload)) => ctx.pong(&payload),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Err(ProtocolError::Overflow) => self.close(ctx, 1009, "frame too big"),
            Err(error) => {
                tracing::debug!(session = %self.name(), %error, "websocket protocol error");
                ctx.stop();
            }
        }
    }
}
