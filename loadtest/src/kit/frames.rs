//! Herald's frames as the kit's clients see them: one decoder for what the server writes,
//! and the request frames the clients write as text.
//!
//! A frame is decoded in one pass that borrows from its text and skips, unread, every field
//! no client looks at (bodies too, unless the reader names a type for them): the load-test
//! harness decodes a million frames a second with it.

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

/// The fields of a server frame that say what it is and what it answers. `B` is how the
/// body of a `msg` is read; by default it is skipped.
#[derive(Debug, Deserialize)]
pub struct Frame<'a, B = IgnoredAny> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The request id, as the very text the client sent (a number or a string).
    #[serde(borrow)]
    pub id: Option<&'a RawValue>,
    pub gid: Option<u64>,
    pub msgid: Option<u64>,
    /// `sent`: the message had been stored before (a resend).
    pub dup: Option<bool>,
    /// `msgs`: more messages follow this page.
    pub more: Option<bool>,
    /// `error`: what went wrong, as `unavailable` or `rate_limited`.
    pub code: Option<&'a str>,
    /// `msg`: the message's body.
    pub body: Option<B>,
    /// `msgs`: the page of messages.
    pub msgs: Option<Vec<Pulled>>,
}

impl<B> Frame<'_, B> {
    /// The request id when it is a whole number, as the harness numbers its requests.
    pub fn numeric_id(&self) -> Option<u64> {
        self.id?.get().parse().ok()
    }
}

/// A message of a `msgs` page, as far as its place in the group goes.
#[derive(Debug, Deserialize)]
pub struct Pulled {
    pub msgid: u64,
}

/// The first frame of a session.
#[derive(Debug, Deserialize)]
pub struct Hello {
    pub groups: Vec<Cursor>,
}

/// Where a session stands in one of its groups.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Cursor {
    pub gid: u64,
    pub last_ack: u64,
    pub latest: u64,
}

/// Messages a pull asks for at most.
pub const PULL_LIMIT: u64 = 1000;

/// A cumulative ack of `msgid` in `gid`.
pub fn ack(gid: u64, msgid: u64) -> String {
    format!(r#"{{"type":"ack","gid":{gid},"msgid":{msgid}}}"#)
}

/// Request `id`: a page of `gid` after `after`, `PULL_LIMIT` long.
pub fn pull(id: u64, gid: u64, after: u64) -> String {
    format!(r#"{{"type":"pull","id":{id},"gid":{gid},"after":{after},"limit":{PULL_LIMIT}}}"#)
}

/// Request `id`: a ping, answered by a pong.
pub fn ping(id: u64) -> String {
    format!(r#"{{"type":"ping","id":{id}}}"#)
}
