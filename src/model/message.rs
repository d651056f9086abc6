//! Group messages as clients see them, and a member's position in a group.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A stored group message as clients see it, pushed or pulled.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageView {
    pub gid: u64,
    pub msgid: u64,
    pub from: u64,
    pub ts: i64,
    pub cmid: String,
    #[schema(value_type = serde_json::Value)]
    pub body: Box<RawValue>,
}

/// A group the user belongs to, with how far they received it (`last_ack`), how far they
/// read it (`last_read`: unread = latest − last_read), and its newest msgid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct GroupCursor {
    pub gid: u64,
    pub last_ack: u64,
    pub last_read: u64,
    pub latest: u64,
}

/// How far a member has read a group, as the group's members see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReadPosition {
    pub uid: u64,
    pub msgid: u64,
}

/// A member's two positions in a group, each only moving forward: how far they received it
/// (their ack) and how far they read it (seed 004 keeps the two apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mark {
    Received,
    Read,
}

/// Where a member stands in a group: their two marks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks {
    pub received: u64,
    pub read: u64,
}

impl Marks {
    /// Both at `msgid`: where a member who joins starts.
    pub fn at(msgid: u64) -> Marks {
        Marks {
            received: msgid,
            read: msgid,
        }
    }

    pub fn get(&self, mark: Mark) -> u64 {
        match mark {
            Mark::Received => self.received,
            Mark::Read => self.read,
        }
    }

    /// Moves `mark` to `msgid` if that is forward; false if it is not.
    pub fn advance(&mut self, mark: Mark, msgid: u64) -> bool {
        let at = match mark {
            Mark::Received => &mut self.received,
            Mark::Read => &mut self.read,
        };
        let forward = msgid > *at;
        *at = (*at).max(msgid);
        forward
    }
}

impl GroupCursor {
    /// The newer of this stored cursor and a live group's view of it (acks not yet written).
    pub fn merge(self, live: Option<GroupCursor>) -> GroupCursor {
        match live {
            Some(live) => GroupCursor {
                gid: self.gid,
                last_ack: self.last_ack.max(live.last_ack),
                last_read: self.last_read.max(live.last_read),
                latest: self.latest.max(live.latest),
            },
            None => self,
        }
    }
}
