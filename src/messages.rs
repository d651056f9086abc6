//! The messages actors exchange: one type per intent, each with its reply type.

use std::sync::Arc;

use actix::prelude::*;
use bytestring::ByteString;
use serde_json::value::RawValue;

use crate::close::Close;
use crate::error::ApiError;
use crate::group::GroupActor;
use crate::protocol::GroupCursor;
use crate::session::Outbox;
use crate::store::{AckUpdate, Appended};
use crate::sync::{GroupVersions, SyncNotice};

/// Mailbox bound of actors every session talks to (groups, the registry): requests past it
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
    Joined { gid: u64, group: Addr<GroupActor> },
    /// The session no longer receives this group (its user left, or it was disbanded).
    Left { gid: u64 },
    /// New versions of something the session keeps in sync; coalesced into `sync_notify`.
    Notify(Arc<SyncNotice>),
    /// Close the session.
    Close(Close),
    /// Time to ping the peer, or to drop it if it has been silent for two heartbeats.
    Heartbeat,
}

/// How groups and the registry reach a session without knowing its actor type.
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
        self.outbox.queue(frames, &self.inbox)
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

/// A session of a member comes online in the group. Replies with the member's cursor.
#[derive(Message)]
#[rtype(result = "Result<GroupCursor, ApiError>")]
pub struct Join(pub SessionHandle);

/// A session goes away.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave(pub SessionId);

/// A member sends a message; the reply comes once it is committed.
#[derive(Message)]
#[rtype(result = "Result<Appended, ApiError>")]
pub struct Submit {
    pub uid: u64,
    pub cmid: String,
    pub body: Box<RawValue>,
}

/// A member has everything up to `msgid` (cumulative).
#[derive(Message)]
#[rtype(result = "Result<(), ApiError>")]
pub struct AckUpTo {
    pub uid: u64,
    pub msgid: u64,
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
    /// A frame (an event) for every online session.
    Push(ByteString),
    /// A member left: their sessions stop receiving.
    Leave(u64),
    /// The group was disbanded: nobody receives it any more.
    Disband,
    /// The group's new versions, for its online sessions' `sync_notify`.
    Notify(GroupVersions),
}

/// Hand every ack not yet written to the ack writer and wait until it is stored.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FlushAcks;

// ---- to an ack writer ----

/// Ack watermarks to write; the reply comes once they (and all queued before) are stored.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WriteAcks(pub Vec<AckUpdate>);
