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
    /// The body byte for byte as sent (`null` included); absent once the message is a
    /// tombstone.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_body"
    )]
    #[schema(value_type = Option<serde_json::Value>)]
    pub body: Option<Box<RawValue>>,
    /// Why the body is gone, on a tombstone; absent on a message as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tombstone: Option<Tombstone>,
}

/// Why a stored message lost its body. Its row and msgid stay, so msgids stay dense.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Tombstone {
    /// Its sender, or an owner or admin of the group, recalled it.
    Recalled,
    /// Its sender's data was erased.
    Erased,
}

impl Tombstone {
    /// As `group_msgs.tombstone` stores it.
    pub fn as_str(self) -> &'static str {
        match self {
            Tombstone::Recalled => "recalled",
            Tombstone::Erased => "erased",
        }
    }

    pub fn parse(stored: &str) -> Option<Tombstone> {
        [Tombstone::Recalled, Tombstone::Erased]
            .into_iter()
            .find(|kind| kind.as_str() == stored)
    }
}

/// A present body, `null` included, is `Some`: only an absent one is `None` (serde's own
/// `Option` would read a `null` body as absent).
fn present_body<'de, D: serde::Deserializer<'de>>(
    value: D,
) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(value).map(Some)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn view(body: Option<&str>, tombstone: Option<Tombstone>) -> MessageView {
        MessageView {
            gid: 7,
            msgid: 3,
            from: 42,
            ts: 1,
            cmid: "c".into(),
            body: body.map(|text| RawValue::from_string(text.into()).unwrap()),
            tombstone,
        }
    }

    #[test]
    fn a_null_body_and_a_tombstone_survive_a_round_trip_apart() {
        for message in [
            view(Some("null"), None),
            view(Some(r#"{"b":1e400, "a":[1]}"#), None),
            view(None, Some(Tombstone::Recalled)),
        ] {
            let text = serde_json::to_string(&message).unwrap();
            let back: MessageView = serde_json::from_str(&text).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), text);
        }
        let tombstone = serde_json::to_string(&view(None, Some(Tombstone::Erased))).unwrap();
        assert_eq!(
            tombstone,
            r#"{"gid":7,"msgid":3,"from":42,"ts":1,"cmid":"c","tombstone":"erased"}"#
        );
    }
}
