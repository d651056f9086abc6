//! The messages actors exchange: one type per intent, each with its reply type.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use bytestring::ByteString;
use serde_json::value::RawValue;

use crate::error::ApiError;
use crate::group::GroupActor;
use crate::protocol::GroupCursor;
use crate::store::{AckUpdate, Appended};
use crate::sync::{GroupVersions, SyncNotice};

/// Mailbox bound of actors every session talks to (groups, the registry): requests past it
/// wait in their senders (`send` is bounded; `do_send` is not).
pub const BUSY_ACTOR_MAILBOX: usize = 1 << 16;

/// Identifies one WebSocket session for the life of the process.
pub type SessionId = u64;

/// Close codes of the wire contract.
pub mod close {
    pub const POLICY: u16 = 1008;
    pub const GOING_AWAY_RESTART: u16 = 1012;
    pub const SERVER_FULL: u16 = 1013;
    pub const TOKEN_EXPIRED: u16 = 4001;
    pub const DEACTIVATED: u16 = 4003;
    pub const TOO_SLOW: u16 = 4008;
    pub const TOO_MANY_SESSIONS: u16 = 4029;
}

/// Everything a session is sent by the rest of the gateway.
#[derive(Message)]
#[rtype(result = "()")]
pub enum ToSession {
    /// Pre-serialised frames to write, shared by every recipient. Counted in the backlog.
    Frames(Arc<[ByteString]>),
    /// The session now belongs to this group (it was added while online).
    Joined { gid: u64, group: Addr<GroupActor> },
    /// The session no longer receives this group (its user left, or it was disbanded).
    Left { gid: u64 },
    /// New versions of something the session keeps in sync; coalesced into `sync_notify`.
    Notify(Arc<SyncNotice>),
    /// Close the session with this code.
    Close { code: u16, reason: &'static str },
    /// Time to ping the peer, or to drop it if it has been silent for two heartbeats.
    Heartbeat,
}

/// A session's outbound backlog: frames handed to it that it has not written yet.
///
/// Groups never wait on a session: they check this counter instead, and a session over
/// its bound is dropped from fan-out and closed with 4008 (it reconnects and pulls).
#[derive(Debug)]
pub struct Backlog {
    queued: AtomicUsize,
    overflowed: AtomicBool,
    bound: usize,
}

impl Backlog {
    pub fn new(bound: usize) -> Self {
        Backlog {
            queued: AtomicUsize::new(0),
            overflowed: AtomicBool::new(false),
            bound,
        }
    }

    /// Takes room for `n` frames; false, and overflowed from then on, past the bound.
    fn reserve(&self, n: usize) -> bool {
        if self.overflowed.load(Ordering::Relaxed) {
            return false;
        }
        if self.queued.fetch_add(n, Ordering::Relaxed) + n > self.bound {
            self.overflowed.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Gives back the room of `n` frames the session has written (or dropped).
    pub fn release(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
    }

    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }
}

/// How groups and the registry reach a session without knowing its actor type.
#[derive(Clone)]
pub struct SessionHandle {
    pub id: SessionId,
    pub uid: u64,
    pub inbox: Recipient<ToSession>,
    pub backlog: Arc<Backlog>,
}

impl SessionHandle {
    /// Queues frames for the session unless its backlog is over the bound; false means
    /// the session is too slow and has been told to close with 4008.
    pub fn push(&self, frames: &Arc<[ByteString]>) -> bool {
        if self.backlog.reserve(frames.len()) {
            self.inbox.do_send(ToSession::Frames(frames.clone()));
            true
        } else {
            self.backlog.release(frames.len());
            self.close(close::TOO_SLOW, "too slow: reconnect and pull");
            false
        }
    }

    pub fn close(&self, code: u16, reason: &'static str) {
        self.inbox.do_send(ToSession::Close { code, reason });
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
