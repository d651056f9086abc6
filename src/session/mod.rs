//! Sessions: one per WebSocket, in three parts.
//!
//! - `websocket`: the glue, the only code that knows actix-web-actors: the upgrade, the
//!   actor and its `WebsocketContext`, the frames read (fragments reassembled) and written,
//!   the close frames; so a move to actix-ws would touch that one file.
//! - `state`: the per-client state machine: admission, `hello`, the dispatch of client
//!   requests and their budget, replies, acks, liveness. Plain Rust, it tells the glue what
//!   to do through a `Connection`.
//! - `outbox`: the bounded queue of frames groups push to a session, and its 4008 policy.
//!
//! Beside them, `recall`: a message's recall, which a session's `recall` and the HTTP
//! routes share.
//!
//! Nothing a client sends piles up: every request is charged before any work is done, at
//! most `max_in_flight` wait for replies, at most `READS_AT_ONCE` pulls and syncs run at
//! once, and acks are coalesced to the highest per group with one on its way at a time. The
//! frames a client sends are read only as fast as the actor handles them (actix-web-actors
//! polls the stream from the actor's own task), and replies go out through the socket
//! writer, which stops polling the actor while the peer does not read; so a client that
//! floods without reading is held back by TCP rather than by memory.

pub mod outbox;
mod recall;
mod state;
mod websocket;

use std::time::Duration;

use actix::Addr;

use crate::budget::Rate;
use crate::registry::{Directory, Publisher};
use crate::store::Store;

pub use outbox::Outbox;
pub use recall::recall;
pub use state::pull_page;
pub use websocket::start;

/// What every session shares.
pub struct SessionContext {
    pub store: Store,
    pub directory: Addr<Directory>,
    /// Where a change a session makes (a recall) is published.
    pub publisher: Addr<Publisher>,
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
    /// How long after its send a member may recall their own message.
    pub recall_window: Duration,
}
