//! The session actor: one per WebSocket. It decodes client frames, charges each request to
//! the session's budget, routes it to group actors or storage, and writes replies and pushed
//! frames to its socket.
//!
//! Nothing a client sends piles up: every request is charged before any work is done, at
//! most `max_in_flight` wait for replies, at most `READS_AT_ONCE` pulls and syncs run at
//! once, and acks are coalesced to the highest per group with one on its way at a time. The
//! frames a client sends are read only as fast as the actor handles them (actix-web-actors
//! polls the stream from the actor's own task), and replies go out through the socket
//! writer, which stops polling the actor while the peer does not read; so a client that
//! floods without reading is held back by TCP rather than by memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web_actors::ws::{self, CloseCode, CloseReason, ProtocolError, WebsocketContext};
use bytestring::ByteString;
use futures_util::future::{try_join_all, BoxFuture};
use tokio::sync::Semaphore;

use crate::auth::Identity;
use crate::budget::{Limit, Rate, RequestKind, SessionBudget, MAX_LIMITED_IN_A_ROW};
use crate::error::{ApiError, ErrorCode};
use crate::messages::{
    close, AckUpTo, Backlog, GroupHandle, GroupRequest, Join, Leave, SessionHandle, SessionId,
    Submit, ToSession,
};
use crate::metrics;
use crate::model::sync::{SyncNotice, SyncRequest};
use crate::model::GroupCursor;
use crate::protocol::{self, ClientRequest, RequestId, ServerFrame};
use crate::registry::directory::{ask_group, Connect, Directory, Disconnect, GroupFor};
use crate::store::{Membership, Store};

/// Bad frames in a row after which the session is closed with 1008. Requests refused for
/// the client's own fault (a non-member's send, an ack above the newest msgid) count too.
const MAX_BAD_FRAMES_IN_A_ROW: u32 = 10;

/// Pulls and syncs of one session that run at once; the others wait their turn, so one
/// session holds at most this many PostgreSQL connections.
const READS_AT_ONCE: usize = 2;

/// How long a session gathers sync notices into one `sync_notify`.
const NOTIFY_WINDOW: Duration = Duration::from_millis(50);

/// What every session shares.
pub struct SessionContext {
    pub store: Store,
    pub directory: Addr<Directory>,
    pub limits: SessionLimits,
}

/// Per-session limits, from the configuration.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub max_frame_bytes: usize,
    pub max_body_bytes: usize,
    pub heartbeat: Duration,
    pub outbound_queue: usize,
    /// Requests that may wait for their replies at once.
    pub max_in_flight: usize,
    /// Deepest nesting of arrays and objects in a frame.
    pub max_json_depth: usize,
    /// The request budget, in cost units per second.
    pub budget: Rate,
    /// Sends per second.
    pub send_rate: Rate,
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

pub struct Session {
    id: SessionId,
    identity: Identity,
    shared: Arc<SessionContext>,
    /// Group actors this session is online in, to send to without asking the directory.
    groups: HashMap<u64, GroupHandle>,
    backlog: Arc<Backlog>,
    last_heard: Instant,
    budget: SessionBudget,
    /// Requests waiting for their replies: sends, pulls, syncs, acks on their way.
    in_flight: usize,
    /// Requests refused `rate_limited` since the last one granted.
    limited_in_a_row: u32,
    /// Bad frames and refusals of the client's fault since the last request that succeeded.
    bad_frames: u32,
    /// Each group's acks: only the highest is kept, and one is on its way at a time.
    acks: HashMap<u64, AckState>,
    /// Turns for pulls and syncs (`READS_AT_ONCE`), made at the first one.
    reads: Option<Arc<Semaphore>>,
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
            budget: SessionBudget::default(),
            in_flight: 0,
            limited_in_a_row: 0,
            bad_frames: 0,
            acks: HashMap::new(),
            reads: None,
            fragments: None,
            notice: None,
        }
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

    /// Writes a request's reply, or its refusal. A reply means the client is behaving and
    /// resets the count of bad frames; a refusal for the client's own fault adds to it.
    fn answer(
        &mut self,
        ctx: &mut WebsocketContext<Self>,
        id: Option<RequestId>,
        reply: Result<ServerFrame<'_>, ApiError>,
    ) {
        match reply {
            Ok(frame) => {
                self.bad_frames = 0;
                self.write(ctx, frame);
            }
            Err(error) if error.code.is_clients_fault() => self.bad_frame(id, &error, ctx),
            Err(error) => self.write_error(ctx, id, &error),
        }
    }

    /// Charges a request to the session's budget. A refusal is answered `rate_limited`,
    /// logged once per burst, and closes the session when the client keeps on.
    fn charge(
        &mut self,
        ctx: &mut WebsocketContext<Self>,
        id: Option<RequestId>,
        kind: RequestKind,
    ) -> bool {
        let limits = &self.shared.limits;
        match self.budget.charge(limits.budget, limits.send_rate, kind) {
            Ok(()) => {
                self.limited_in_a_row = 0;
                true
            }
            Err(limit) => {
                self.refuse_limited(ctx, id, kind, limit);
                false
            }
        }
    }

    /// Counts a request as waiting for its reply, or refuses it past `max_in_flight`.
    fn begin_in_flight(
        &mut self,
        ctx: &mut WebsocketContext<Self>,
        id: Option<RequestId>,
        kind: RequestKind,
    ) -> bool {
        if self.in_flight >= self.shared.limits.max_in_flight {
            self.refuse_limited(ctx, id, kind, Limit::InFlight);
            return false;
        }
        self.in_flight += 1;
        true
    }

    fn refuse_limited(
        &mut self,
        ctx: &mut WebsocketContext<Self>,
        id: Option<RequestId>,
        kind: RequestKind,
        limit: Limit,
    ) {
        metrics::global().limited(kind.name(), limit.name());
        self.limited_in_a_row += 1;
        if self.limited_in_a_row == 1 {
            tracing::warn!(session = %self.name(), uid = self.uid(), kind = kind.name(),
                limit = limit.name(), "session over its limits: refusing with rate_limited");
        }
        let error = ApiError::new(ErrorCode::RateLimited, limit.explain());
        self.write_error(ctx, id, &error);
        if self.limited_in_a_row == MAX_LIMITED_IN_A_ROW {
            tracing::warn!(session = %self.name(), uid = self.uid(), kind = kind.name(),
                "session kept asking past rate_limited: closing with 1008");
            self.close(
                ctx,
                close::POLICY,
                "requests past rate_limited, persistently",
            );
        }
    }

    /// The session's turns to read from storage: a pull or sync holds one while it runs.
    fn read_turn(&mut self) -> Arc<Semaphore> {
        self.reads
            .get_or_insert_with(|| Arc::new(Semaphore::new(READS_AT_ONCE)))
            .clone()
    }

    fn close(&self, ctx: &mut WebsocketContext<Self>, code: u16, reason: &str) {
        ctx.close(Some(CloseReason {
            code: CloseCode::Other(code),
            description: Some(reason.to_owned()),
        }));
        ctx.stop();
    }

    /// Hands `msg` to the group `gid`. When this session is online in the group the message
    /// is queued at once, in the order of the session's requests (pipelined sends are stored
    /// in the order sent); otherwise the directory is asked for the group first.
    fn ask_group<M: GroupRequest>(
        &self,
        gid: u64,
        msg: M,
    ) -> BoxFuture<'static, Result<M::Result, ApiError>> {
        match self.groups.get(&gid) {
            Some(group) => {
                let queued = group.ask(msg);
                Box::pin(async move { Ok(queued.await?) })
            }
            None => {
                let directory = self.shared.directory.clone();
                Box::pin(async move { ask_group(&directory, gid, msg).await })
            }
        }
    }

    /// Registers with every group of the user, then greets the client with its cursors.
    fn greet(&mut self, ctx: &mut WebsocketContext<Self>) {
        let (uid, handle) = (self.uid(), self.session_handle(ctx));
        let (store, directory) = (self.shared.store.clone(), self.shared.directory.clone());
        let joining = async move {
            let stored = store.user_groups(uid).await?;
            let joins = stored
                .into_iter()
                .map(|stored| join_group(directory.clone(), handle.clone(), stored));
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
            Ok((id, request)) => self.dispatch(id, request, ctx),
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
        if self.bad_frames == MAX_BAD_FRAMES_IN_A_ROW {
            tracing::info!(session = %self.name(), uid = self.uid(), last = %error,
                "bad frames in a row: closing with 1008");
            self.close(ctx, close::POLICY, "too many bad frames");
        }
    }

    fn dispatch(
        &mut self,
        id: Option<RequestId>,
        request: ClientRequest,
        ctx: &mut WebsocketContext<Self>,
    ) {
        let kind = kind_of(&request);
        if !self.charge(ctx, id.clone(), kind) {
            return;
        }
        match request {
            ClientRequest::Ping => {
                let pong = ServerFrame::Pong { id: id.clone() };
                self.answer(ctx, id, Ok(pong));
            }
            ClientRequest::Send { gid, cmid, body } => self.send(id, gid, cmid, body, ctx),
            ClientRequest::Ack { gid, msgid } => self.ack(id, gid, msgid, ctx),
            ClientRequest::Pull { gid, after, limit } => self.pull(id, gid, after, limit, ctx),
            ClientRequest::Sync(request) => self.sync(id, kind, request, ctx),
        }
    }

    fn sync(
        &mut self,
        id: Option<RequestId>,
        kind: RequestKind,
        request: SyncRequest,
        ctx: &mut WebsocketContext<Self>,
    ) {
        if !self.begin_in_flight(ctx, id.clone(), kind) {
            return;
        }
        let (store, uid, turn) = (self.shared.store.clone(), self.uid(), self.read_turn());
        let syncing = async move {
            let _turn = turn.acquire().await.expect("the semaphore is never closed");
            store.sync(uid, &request).await.map_err(ApiError::from)
        };
        ctx.spawn(syncing.into_actor(self).map(move |reply, act, ctx| {
            act.in_flight -= 1;
            let reply = reply.as_ref().map(|reply| ServerFrame::Synced {
                id: id.clone(),
                reply,
            });
            act.answer(ctx, id, reply.map_err(Clone::clone));
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
        if !self.begin_in_flight(ctx, id.clone(), RequestKind::Send) {
            return;
        }
        let submit = Submit {
            uid: self.uid(),
            cmid,
            body,
        };
        let submitted = self.ask_group(gid, submit);
        let sending = async move { submitted.await? };
        ctx.spawn(sending.into_actor(self).map(move |sent, act, ctx| {
            act.in_flight -= 1;
            let reply = sent.map(|sent| ServerFrame::Sent {
                id: id.clone(),
                gid,
                msgid: sent.msgid,
                ts: sent.ts,
                dup: sent.dup,
            });
            act.answer(ctx, id, reply);
        }));
    }

    /// Takes an ack. Only the highest of each group matters (acks are cumulative): one
    /// above everything known is forwarded when none of the group's is on its way, else it
    /// waits as the group's next; anything lower is already covered and costs nothing more.
    fn ack(
        &mut self,
        id: Option<RequestId>,
        gid: u64,
        msgid: u64,
        ctx: &mut WebsocketContext<Self>,
    ) {
        let state = self.acks.get(&gid);
        if state.is_some_and(|state| msgid <= state.highest()) {
            return;
        }
        if let Some(state) = self.acks.get_mut(&gid).filter(|state| state.on_its_way) {
            state.next = Some((msgid, id));
            return;
        }
        // A new ack on its way: the first of a group not seen yet takes a place in flight
        // before any state is kept for it, so acks to ever new gids are bounded too.
        if !self.begin_in_flight(ctx, id.clone(), RequestKind::Ack) {
            return;
        }
        self.forward_ack(gid, msgid, id, ctx);
    }

    /// Hands the ack to its group; the outcome comes back to `acked`.
    fn forward_ack(
        &mut self,
        gid: u64,
        msgid: u64,
        id: Option<RequestId>,
        ctx: &mut WebsocketContext<Self>,
    ) {
        let state = self.acks.entry(gid).or_default();
        state.on_its_way = true;
        state.forwarded = (msgid, id);
        let ack = AckUpTo {
            uid: self.uid(),
            msgid,
        };
        let acking = self.ask_group(gid, ack);
        ctx.spawn(
            async move { acking.await? }
                .into_actor(self)
                .map(move |outcome, act, ctx| act.acked(gid, outcome, ctx)),
        );
    }

    /// The group answered the ack on its way: a refusal is written (and counts as a bad
    /// frame), and the group's next ack, if one came meanwhile, goes on its way.
    fn acked(&mut self, gid: u64, outcome: Result<(), ApiError>, ctx: &mut WebsocketContext<Self>) {
        self.in_flight -= 1;
        let Some(state) = self.acks.get_mut(&gid) else {
            return;
        };
        state.on_its_way = false;
        let (msgid, id) = std::mem::take(&mut state.forwarded);
        match outcome {
            Ok(()) => state.accepted = state.accepted.max(msgid),
            Err(error) => self.answer(ctx, id, Err(error)),
        }
        let Some(state) = self.acks.get_mut(&gid) else {
            return;
        };
        match state.next.take() {
            Some((next, id)) if next > state.accepted => {
                self.in_flight += 1;
                self.forward_ack(gid, next, id, ctx);
            }
            // Nothing waits: a group the session is not online in keeps no state.
            _ if !self.groups.contains_key(&gid) => {
                self.acks.remove(&gid);
            }
            _ => {}
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
        if !self.begin_in_flight(ctx, id.clone(), RequestKind::Pull { limit }) {
            return;
        }
        let (store, uid, turn) = (self.shared.store.clone(), self.uid(), self.read_turn());
        let pulling = async move {
            let _turn = turn.acquire().await.expect("the semaphore is never closed");
            pull_page(&store, gid, uid, after, limit).await
        };
        ctx.spawn(pulling.into_actor(self).map(move |page, act, ctx| {
            act.in_flight -= 1;
            let reply = page.as_ref().map(|page| ServerFrame::Msgs {
                id: id.clone(),
                gid,
                msgs: &page.msgs,
                more: page.more,
            });
            act.answer(ctx, id, reply.map_err(Clone::clone));
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

/// The acks of one group, as the session keeps them.
#[derive(Default)]
struct AckState {
    /// The highest msgid the group accepted from this session.
    accepted: u64,
    /// Whether an ack is on its way to the group; then `forwarded` is it.
    on_its_way: bool,
    forwarded: (u64, Option<RequestId>),
    /// The highest ack that came while one was on its way, forwarded when it is answered.
    next: Option<(u64, Option<RequestId>)>,
}

impl AckState {
    /// The highest msgid accepted or on its way: acks at or below it add nothing.
    fn highest(&self) -> u64 {
        let on_its_way = if self.on_its_way { self.forwarded.0 } else { 0 };
        let next = self.next.as_ref().map_or(0, |(msgid, _)| *msgid);
        self.accepted.max(on_its_way).max(next)
    }

    /// The ack a session closing now still owes its group, if any.
    fn unanswered(&self) -> Option<u64> {
        Some(self.highest()).filter(|&msgid| msgid > self.accepted)
    }
}

/// What a decoded request costs.
fn kind_of(request: &ClientRequest) -> RequestKind {
    match request {
        ClientRequest::Ping => RequestKind::Ping,
        ClientRequest::Ack { .. } => RequestKind::Ack,
        ClientRequest::Send { .. } => RequestKind::Send,
        ClientRequest::Pull { limit, .. } => RequestKind::Pull { limit: *limit },
        ClientRequest::Sync(sync) => RequestKind::sync(sync),
    }
}

/// Joins one group the store says the user belongs to. `None` when the user left it (or it
/// is gone) since the store was read; an error when the group cannot be loaded.
async fn join_group(
    directory: Addr<Directory>,
    session: SessionHandle,
    stored: GroupCursor,
) -> Result<Option<(GroupCursor, GroupHandle)>, ApiError> {
    // A group actor that stops just as we ask is replaced by the directory: ask once more.
    for _ in 0..2 {
        let group = directory.send(GroupFor(stored.gid)).await?;
        match group.ask(Join(session.clone())).await {
            Ok(Ok(live)) => return Ok(Some((stored.merge(Some(live)), group))),
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
        // Heartbeats and token expiry are driven by the registry's ticker for every session
        // at once (`registry::ticker`). The directory also admits the session within the caps; frames wait until it has.
        let admitted = self.shared.directory.send(Connect {
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
        self.shared.directory.do_send(Disconnect {
            uid: self.uid(),
            id: self.id,
        });
        // An ack followed at once by a close still counts: the highest not yet answered goes
        // to its group with `do_send`, which actix delivers although nobody awaits a reply
        // (acks are cumulative, so one that also arrives on its way changes nothing).
        for (gid, group) in &self.groups {
            if let Some(msgid) = self.acks.get(gid).and_then(AckState::unanswered) {
                group.tell(AckUpTo {
                    uid: self.uid(),
                    msgid,
                });
            }
            group.tell(Leave(self.id));
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
