//! What nodes tell each other over NATS, on which subject, and how it is checked on arrival.
//! Every message is JSON: an envelope naming the node that sent it around the news itself.
//! Nothing heard is trusted further than its checks: a message that fails them is dropped.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::model::effect::Effect;
use crate::model::{MessageView, ReadPosition};
use crate::protocol::SignalKind;

/// The subject of one group's news: followed by the nodes with members of it online.
pub fn group_subject(gid: u64) -> String {
    format!("herald.group.{gid}")
}

/// The subject of every committed change's effects: followed by every node.
pub const EFFECTS_SUBJECT: &str = "herald.effects";

/// The subject of the nodes' heartbeats: followed by every node.
pub const NODES_SUBJECT: &str = "herald.nodes";

/// A node's name in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// The configured name, or a random one when none is configured.
    pub fn new(configured: &str) -> NodeId {
        if configured.is_empty() {
            NodeId(format!("node-{:08x}", rand::random::<u32>()).into())
        } else {
            NodeId(configured.into())
        }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a node tells the others about one group, on the group's subject.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupNews {
    /// Messages the node committed in one group commit, by ascending msgid.
    Messages(Vec<MessageView>),
    /// The node committed up to `latest`, too much to carry: read it from PostgreSQL.
    Committed { latest: u64 },
    /// A member's first session on the node came online, or their last one went.
    Presence { uid: u64, online: bool },
    /// Every member online on the node: the answer to [`GroupNews::WhoIsOnline`], and a
    /// periodic refresh that repairs a lost [`GroupNews::Presence`].
    Online { uids: Vec<u64> },
    /// A node that just began following the group asks who is online elsewhere.
    WhoIsOnline,
    /// A member's signal (typing), for the online sessions on every node.
    Signal { from: u64, kind: SignalKind },
    /// Read positions that moved on the node (which writes them), coalesced.
    Reads(Vec<ReadPosition>),
}

/// [`GroupNews::Messages`] as it is sent: the same JSON, borrowing the messages.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommittedNews<'a> {
    Messages(&'a [MessageView]),
}

/// What a node tells every other about itself, on [`NODES_SUBJECT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeNews {
    /// Sent every heartbeat: a node not heard from for a few is gone, with its presence.
    Alive,
    /// The node stops (gracefully): its presence goes at once.
    Leaving,
}

/// A committed change's effects, on [`EFFECTS_SUBJECT`].
pub type EffectsNews = Vec<Effect>;

/// News as it travels: who sent it (`N`, a [`NodeId`] or a reference to one), and what.
#[derive(Serialize, Deserialize)]
struct Envelope<N, T> {
    node: N,
    news: T,
}

/// News heard from another node.
#[derive(Debug, Clone)]
pub struct Heard<T> {
    pub from: NodeId,
    pub news: T,
}

/// Why a message from the bus was dropped.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    #[error("not a Herald message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("messages of group {subject} carry group {found}")]
    WrongGroup { subject: u64, found: u64 },
    #[error("messages of group {gid} are empty, not ascending, or carry msgid 0")]
    Disordered { gid: u64 },
}

/// Encodes news from `node`.
pub fn encode<T: Serialize>(node: &NodeId, news: &T) -> Vec<u8> {
    serde_json::to_vec(&Envelope { node, news }).expect("news serialises: no maps, plain data")
}

/// Decodes news; `None` for the node's own (NATS is asked not to echo them, and this holds
/// even if a server does), so a node never applies what it sent.
pub fn decode<T: DeserializeOwned>(
    own: &NodeId,
    payload: &[u8],
) -> Result<Option<Heard<T>>, Rejected> {
    let Envelope { node, news } = serde_json::from_slice::<Envelope<NodeId, T>>(payload)?;
    Ok((node != *own).then_some(Heard { from: node, news }))
}

/// Checks news of group `gid` that types alone cannot: messages must belong to the group
/// and be dense-ready (ascending, non-zero msgids), so a wrong delivery cannot follow.
pub fn check_group_news(gid: u64, news: &GroupNews) -> Result<(), Rejected> {
    let GroupNews::Messages(msgs) = news else {
        return Ok(());
    };
    if let Some(wrong) = msgs.iter().find(|m| m.gid != gid) {
        return Err(Rejected::WrongGroup {
            subject: gid,
            found: wrong.gid,
        });
    }
    let ascending = msgs.windows(2).all(|pair| pair[0].msgid < pair[1].msgid);
    if msgs.is_empty() || !ascending || msgs[0].msgid == 0 {
        return Err(Rejected::Disordered { gid });
    }
    Ok(())
}

impl GroupNews {
    /// The kind, as the metrics' label.
    pub fn kind(&self) -> &'static str {
        match self {
            GroupNews::Messages(_) => "messages",
            GroupNews::Committed { .. } => "committed",
            GroupNews::Presence { .. } => "presence",
            GroupNews::Online { .. } => "online",
            GroupNews::WhoIsOnline => "who_is_online",
            GroupNews::Signal { .. } => "signal",
            GroupNews::Reads(_) => "reads",
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;

    fn message(gid: u64, msgid: u64) -> MessageView {
        MessageView {
            gid,
            msgid,
            from: 1,
            ts: 1_732_000_000_000,
            cmid: format!("c-{msgid}"),
            body: Some(RawValue::from_string(r#"{"text":"é \u00e9 \"q\""}"#.into()).unwrap()),
            tombstone: None,
        }
    }

    #[test]
    fn news_round_trips_exactly_and_a_node_never_hears_itself() {
        let (a, b) = (NodeId::new("a"), NodeId::new("b"));
        let msgs = [message(7, 3), message(7, 4)];
        let payload = encode(&a, &CommittedNews::Messages(&msgs));
        let news = GroupNews::Messages(msgs.to_vec());
        let heard = decode::<GroupNews>(&b, &payload).unwrap().unwrap();
        assert_eq!(heard.from, a);
        assert_eq!(
            serde_json::to_value(&heard.news).unwrap(),
            serde_json::to_value(&news).unwrap()
        );
        assert!(decode::<GroupNews>(&a, &payload).unwrap().is_none());
        let GroupNews::Messages(msgs) = heard.news else {
            unreachable!()
        };
        assert_eq!(
            msgs[0].body.as_ref().unwrap().get(),
            r#"{"text":"é \u00e9 \"q\""}"#
        );
    }

    #[test]
    fn what_is_not_herald_news_or_not_of_the_group_is_rejected() {
        let me = NodeId::new("me");
        for junk in [
            &b"not json"[..],
            br#"{"node":"x"}"#,
            br#"{"node":"x","news":"nope"}"#,
        ] {
            assert!(decode::<GroupNews>(&me, junk).is_err(), "{junk:?}");
        }
        let elsewhere = GroupNews::Messages(vec![message(8, 1)]);
        assert!(matches!(
            check_group_news(7, &elsewhere),
            Err(Rejected::WrongGroup {
                subject: 7,
                found: 8
            })
        ));
        for msgids in [vec![], vec![3, 3], vec![4, 2], vec![0, 1]] {
            let news = GroupNews::Messages(msgids.into_iter().map(|m| message(7, m)).collect());
            assert!(check_group_news(7, &news).is_err(), "{news:?}");
        }
        assert!(check_group_news(7, &GroupNews::Messages(vec![message(7, 1)])).is_ok());
    }

    #[test]
    fn an_unnamed_node_gets_a_random_name() {
        assert_eq!(NodeId::new("east-1").to_string(), "east-1");
        assert!(NodeId::new("").to_string().starts_with("node-"));
        assert_ne!(NodeId::new(""), NodeId::new(""));
    }
}
