//! Group messages as clients see them, and a member's position in a group.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A stored group message as clients see it, pushed or pulled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageView {
    pub gid: u64,
    pub msgid: u64,
    pub from: u64,
    pub ts: i64,
    pub cmid: String,
    pub body: Box<RawValue>,
}

/// A group the user belongs to, with what is unread in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GroupCursor {
    pub gid: u64,
    pub last_ack: u64,
    pub latest: u64,
}

impl GroupCursor {
    /// The newer of this stored cursor and a live group's view of it (acks not yet written).
    pub fn merge(self, live: Option<GroupCursor>) -> GroupCursor {
        match live {
            Some(live) => GroupCursor {
                gid: self.gid,
                last_ack: self.last_ack.max(live.last_ack),
                latest: self.latest.max(live.latest),
            },
            None => self,
        }
    }
}
