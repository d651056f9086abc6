//! The messages actors exchange — one type per intent, each with its reply type — and the
//! handles actors reach each other by. Handles are made of `Recipient`s, so no actor names
//! another's type: this module is the leaf the actors all stand on.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::prelude::*;
use bytestring::ByteString;
use serde_json::value::RawValue;

use crate::close::Close;
use crate::cluster::wire::NodeId;
use crate::error::ApiError;
use crate::model::sync::{GroupVersions, SyncNotice};
use crate::model::{GroupCursor, Mark, ReadPosition};
use crate::protocol::SignalKind;
use crate::session::outbox::Outbox;
use crate::store::{AckUpdate, Appended};

/// Mailbox bound of actors every session talks to (groups, the directory): requests past it
/// wait in their senders (`send` is bounded; `do_send` is not).
pub const BUSY_ACTOR_MAILBOX: usize = 1 << 16;

/// Identifies one WebSocket session for the life of the process.
pub type SessionId = u64;

/// Everything a session is sent by the rest of the gateway.
#[derive(Message)]
#[rtype(result = "()")]
pub enum ToSession {
    /// Pre-serialised frames to write, shared by every recipient. Counted in the outbox.
    Frames(Arc<[ByteString]>),
    /// The session now belongs to this group (it was added while online).
    Joined { gid: u64, group: GroupHandle },
    /// The session no longer receives this group (its user left, or it was disbanded).
    Left { gid: u64 },
    /// New versions of something the session keeps in sync; coalesced into `sync_notify`.
    Notify(Arc<SyncNotice>),
    /// Close the session.
    Close(Close),
    /// Time to ping the peer, or to drop it if it has been silent for two heartbeats.
    Heartbeat,
}

/// How groups and the directory reach a session without knowing its actor type.
#[derive(Clone)]
pub struct SessionHandle {
    pub id: SessionId,
    pub uid: u64,
    pub inbox: Recipient<ToSession>,
    pub outbox: Arc<Outbox>,
}

impl SessionHandle {
    /// Queues frames for the session within its outbox's bound; false means the session is
    /// too slow and has been told to close.
    pub fn push(&self, frames: &Arc<[ByteString]>) -> bool {
        match self.outbox.admit(frames.len()) {
            Ok(()) => {
                self.inbox.do_send(ToSession::Frames(frames.clone()));
                true
            }
            Err(too_slow) => {
                self.close(too_slow);
                false
            }
        }
    }

    pub fn close(&self, close: Close) {
        self.inbox.do_send(ToSession::Close(close));
    }

    /// Whether the session's actor still runs.
    pub fn alive(&self) -> bool {
        self.inbox.connected()
    }
}

// ---- to a group ----

/// How sessions, the directory and HTTP handlers reach a group actor: one inbox per request
/// type, shared by everyone who holds the handle (cloning it is one reference count).
#[derive(Clone)]
pub struct GroupHandle(Arc<GroupInbox>);

/// The recipients a group actor answers on; built by the group itself.
pub struct GroupInbox {
    pub join: Recipient<Join>,
    pub leave: Recipient<Leave>,
    pub submit: Recipient<Submit>,
    pub ack: Recipient<AckUpTo>,
    pub cursor: Recipient<CursorOf>,
    pub change: Recipient<GroupChange>,
    pub flush: Recipient<FlushAcks>,
    pub position: Recipient<Position>,
    pub node_gone: Recipient<NodeGone>,
    pub online: Recipient<OnlineIn>,
    pub signal: Recipient<Relay>,
    pub reads: Recipient<ReadsOf>,
}

/// A message a group answers, and which of its recipients takes it.
pub trait GroupRequest: Message<Result: Send> + Send + Sized + 'static {
    fn inbox(group: &GroupInbox) -> &Recipient<Self>;
}

impl GroupHandle {
    pub fn new(inbox: GroupInbox) -> Self {
        GroupHandle(Arc::new(inbox))
    }

    /// Sends `msg` and waits for the group's reply (bounded by its mailbox).
    pub fn ask<M: GroupRequest>(&self, msg: M) -> RecipientRequest<M> {
        M::inbox(&self.0).send(msg)
    }

    /// Sends `msg` without waiting: for what must reach the group even when its mailbox is
    /// full (a session leaving, a committed change).
    pub fn tell<M: GroupRequest>(&self, msg: M) {
        M::inbox(&self.0).do_send(msg)
    }

    /// Whether the group's actor still runs.
    pub fn alive(&self) -> bool {
        self.0.join.connected()
    }
}

macro_rules! group_requests {
    ($($message:ty => $field:ident),* $(,)?) => {
        $(impl GroupRequest for $message {
            fn inbox(group: &GroupInbox) -> &Recipient<Self> {
                &group.$field
            }
        })*
    };
}

group_requests! {
    Join => join,
    Leave => leave,
    Submit => submit,
    AckUpTo => ack,
    CursorOf => cursor,
    GroupChange => change,
    FlushAcks => flush,
    Position => position,
    NodeGone => node_gone,
    OnlineIn => online,
    Relay => signal,
    ReadsOf => reads,
}

/// A session of a member comes online in the group. Replies with the member's cursor.
#[derive(Message)]
#[rtype(result = "Result<GroupCursor, ApiError>")]
pub struct Join {
    pub session: SessionHandle,
    /// The group's newest msgid as the session read it from the store: a group that pushed
    /// less (another node committed, and no copy came) reads and pushes the rest.
    pub stored_latest: u64,
}

/// A session goes away.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave(pub SessionId);

/// A message is sent to the group; the reply comes once it is committed.
#[derive(Message)]
#[rtype(result = "Result<Appended, ApiError>")]
pub struct Submit {
    pub author: Author,
    pub cmid: String,
    pub body: Box<RawValue>,
}

/// Who a message is from: a member of the group (a client's send, or the app's backend
/// posting as a user), or the app itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Author {
    Member(u64),
    /// A system message, posted by the app's backend: stored and shown as `from` 0, which is
    /// no user's id.
    System,
}

impl Author {
    /// The sender as stored and shown.
    pub fn uid(self) -> u64 {
        match self {
            Author::Member(uid) => uid,
            Author::System => 0,
        }
    }
}

/// A member has received (or read) everything up to `msgid` (cumulative).
#[derive(Message)]
#[rtype(result = "Result<(), ApiError>")]
pub struct AckUpTo {
    pub uid: u64,
    pub msgid: u64,
    pub mark: Mark,
}

/// How far each member has read the group, asked by member `uid`.
#[derive(Message)]
#[rtype(result = "Result<Vec<ReadPosition>, ApiError>")]
pub struct ReadsOf {
    pub uid: u64,
}

/// The member's cursor as the live group knows it (acks not yet written included).
#[derive(Message)]
#[rtype(result = "Option<GroupCursor>")]
pub struct CursorOf(pub u64);

/// A committed change to the group, to carry out in order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GroupChange(pub Vec<GroupStep>);

pub enum GroupStep {
    /// A member joined; `sessions` are their online sessions, which start receiving.
    Join {
        uid: u64,
        sessions: Vec<SessionHandle>,
    },
    /// An event, with its version in the group's log, as a frame for every online session.
    Event { version: u64, frame: ByteString },
    /// A member left: their sessions stop receiving.
    Leave(u64),
    /// The group was disbanded: nobody receives it any more.
    Disband,
    /// The group's new versions, for its online sessions' `sync_notify`.
    Notify(GroupVersions),
}

/// Where the group stood in PostgreSQL (a position check): messages and events up to it
/// that this node has not seen were lost on the way, and are read before what follows.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Position {
    pub latest: u64,
    pub version: u64,
}

/// A node of the cluster stopped or went silent: its members' presence goes with it.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct NodeGone(pub NodeId);

/// Who of the group is online, asked by member `uid`: their uids, ascending. Asked from
/// a session online in the group, it also has that session told of every change after, in
/// `presence` frames, until it leaves.
#[derive(Message)]
#[rtype(result = "Result<Vec<u64>, ApiError>")]
pub struct OnlineIn {
    pub uid: u64,
    pub session: Option<SessionId>,
}

/// A member's signal (typing) from one of their sessions, for every other online session of
/// the group, on every node; never stored.
#[derive(Message)]
#[rtype(result = "Result<(), ApiError>")]
pub struct Relay {
    pub from: u64,
    pub session: SessionId,
    pub kind: SignalKind,
}

/// Hand every ack not yet written to the ack writer and wait until it is stored.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FlushAcks;

// ---- to the directory ----

/// A group actor stopped; `generation` tells it apart from a newer actor of the same gid.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GroupStopped {
    pub gid: u64,
    pub generation: u64,
}

/// The open sessions of these users on this node (a group that read members' arrivals
/// from the log attaches them).
#[derive(Message)]
#[rtype(result = "Vec<SessionHandle>")]
pub struct SessionsOf(pub Vec<u64>);

/// What committed changes ask of the live gateway, made from their effects by the publisher.
#[derive(Default)]
pub struct Deliveries {
    /// Steps for each group's actor, in the order they happened. A `Join` step's sessions are
    /// filled in by the directory, which knows who is online.
    pub groups: BTreeMap<u64, Vec<GroupStep>>,
    /// Versions that moved, for every session of a user.
    pub notices: Vec<(u64, Arc<SyncNotice>)>,
    /// A frame for every session of a user.
    pub frames: Vec<(u64, Arc<[ByteString]>)>,
    /// Users whose sessions close, with 4003, once their groups were told.
    pub deactivated: Vec<u64>,
}

/// Carry out deliveries; replies once every group concerned has queued its steps.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver(pub Deliveries);

// ---- to an ack writer ----

/// Ack watermarks to write; the reply comes once they (and all queued before) are stored.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WriteAcks(pub Vec<AckUpdate>);
