//! A session's outbox: the frames groups have queued for it that it has not written yet, up
//! to a bound (`HERALD_OUTBOUND_QUEUE`).
//!
//! Groups never wait on a session: they queue shared frames with `do_send` and count them
//! here, and a session over its bound is dropped from fan-out and closed with 4008 (it
//! reconnects and pulls what it missed).
//!
//! # What the bound depends on
//!
//! Frames are counted when a group queues them ([`Outbox::admit`]) and released when the
//! session's actor writes them ([`Outbox::take`]) into its context's buffer, not when they
//! reach the socket. The count bounds the session's memory only because actix-web-actors
//! polls the actor's mailbox and writes into the context buffer in the same task, driven by
//! the socket writer. Verified in actix-web-actors 4.3.1 (`src/ws.rs`) and the crates it
//! runs on:
//!
//! - `WsResponseBuilder::start` makes the actor's context into the response body
//!   (`WebsocketContextFut`, a `Stream` of bytes); the actor runs on no arbiter of its own.
//! - Each `WebsocketContextFut::poll_next` polls the actor's `ContextFut`, which handles
//!   every message ready in the mailbox (actix 0.13 `Mailbox::poll`), so each
//!   `ToSession::Frames` is released while its frames go into the context's `messages`
//!   queue (`WebsocketContext::text`); the same call then encodes that whole queue into the
//!   bytes it returns.
//! - actix-http's HTTP/1 dispatcher polls that body only while its write buffer holds less
//!   than `h1_write_buffer_size` (32 KiB; `SendPayload` in `h1/dispatcher.rs`). A peer that
//!   stops reading fills the kernel's send buffer, then the dispatcher's; the body, hence
//!   the mailbox, is not polled any more, and frames wait in the mailbox, counted, until the
//!   bound closes the session.
//!
//! So a session holds, besides its counted frames, at most one poll's worth of encoded
//! frames (within the bound) and the dispatcher's and kernel's buffers. A transport that took
//! frames from the mailbox into a queue of its own, drained by another task (as a port to
//! actix-ws could easily do), would release them before they are written and the bound would
//! hold nothing back: it must count a frame until the socket writer takes it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytestring::ByteString;

use crate::close::Close;

/// The count of a session's queued frames, against its bound.
#[derive(Debug)]
pub struct Outbox {
    /// Frames queued to the session and not written yet; shared by every group that pushes
    /// to it, so updated atomically.
    queued: AtomicUsize,
    /// Set once the bound was passed: the session was told to close and writes no more.
    overflowed: AtomicBool,
    bound: usize,
}

impl Outbox {
    pub fn new(bound: usize) -> Self {
        Outbox {
            queued: AtomicUsize::new(0),
            overflowed: AtomicBool::new(false),
            bound,
        }
    }

    /// Takes room for `n` frames a group is about to queue. Past the bound the session is too
    /// slow: it must be told to close with the close returned (4008), and it writes nothing
    /// more; the group drops it from fan-out.
    pub fn admit(&self, n: usize) -> Result<(), Close> {
        if self.reserve(n) {
            Ok(())
        } else {
            Err(Close::TOO_SLOW)
        }
    }

    /// The frames of a queued batch the session is to write now, their room given back: all
    /// of them, or none once the session was told to close for being too slow.
    pub fn take<'a>(&self, frames: &'a [ByteString]) -> &'a [ByteString] {
        self.release(frames.len());
        if self.overflowed.load(Ordering::Relaxed) {
            &[]
        } else {
            frames
        }
    }

    /// Takes room for `n` frames; none, and overflowed from then on, past the bound.
    fn reserve(&self, n: usize) -> bool {
        if self.overflowed.load(Ordering::Relaxed) {
            return false;
        }
        if self.queued.fetch_add(n, Ordering::Relaxed) + n > self.bound {
            self.release(n);
            self.overflowed.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn release(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
    }
}
