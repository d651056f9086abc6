//! The publisher: the one place where the effects of a committed change become deliveries
//! to live groups and sessions. Every change (HTTP handlers, the admin API) publishes here,
//! after its transaction committed. In a cluster it also tells the other nodes, and carries
//! out what they tell, the same way: a change made on any node reaches the sessions it
//! concerns on every node.

use std::sync::Arc;

use actix::prelude::*;
use bytestring::ByteString;

use crate::cluster::wire::{EffectsNews, Heard};
use crate::cluster::Bus;
use crate::messages::{Deliver, Deliveries, GroupStep};
use crate::metrics;
use crate::model::effect::Effect;
use crate::model::sync::SyncNotice;
use crate::protocol::ServerFrame;

/// A committed change's effects, in the order they happened. Replies once the groups
/// concerned have queued them, so a reply to the change's caller comes after its events.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish(pub Vec<Effect>);

pub struct Publisher {
    directory: Recipient<Deliver>,
    /// The cluster bus; `None` on a node that runs alone.
    bus: Option<Bus>,
}

impl Publisher {
    pub fn new(directory: Recipient<Deliver>, bus: Option<Bus>) -> Self {
        Publisher { directory, bus }
    }
}

impl Actor for Publisher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::messages::BUSY_ACTOR_MAILBOX);
        let Some(bus) = self.bus.clone() else {
            return;
        };
        // Nothing is published before the node follows the others' effects.
        ctx.wait(
            async move { bus.follow_effects().await }
                .into_actor(self)
                .map(|followed, _, ctx| match followed {
                    Ok(effects) => {
                        ctx.add_stream(effects);
                    }
                    Err(error) => tracing::error!(%error, "cannot follow the cluster's changes"),
                }),
        );
    }
}

impl Handler<Publish> for Publisher {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, Publish(effects): Publish, _: &mut Self::Context) -> Self::Result {
        if let Some(bus) = &self.bus {
            bus.tell_effects(&effects);
        }
        let delivered = self.directory.send(Deliver(deliveries(effects)));
        Box::pin(async move {
            // The directory stops only with the system, when nobody waits for this.
            let _ = delivered.await;
        })
    }
}

/// Another node's committed change: carried out here as if it were made here, one change
/// at a time, in the order that node published them.
impl StreamHandler<Heard<EffectsNews>> for Publisher {
    fn handle(&mut self, heard: Heard<EffectsNews>, ctx: &mut Self::Context) {
        metrics::global().cluster.received("effects");
        let delivered = self.directory.send(Deliver(deliveries(heard.news)));
        ctx.wait(
            async move {
                // The directory stops only with the system.
                let _ = delivered.await;
            }
            .into_actor(self),
        );
    }

    /// The bus closes the subscription only when the node stops.
    fn finished(&mut self, _: &mut Self::Context) {}
}

/// What each effect asks of the live gateway: group steps per group in order, notices and
/// frames per user, and last the closing of deactivated users' sessions. Frames are encoded
/// here, once, for every session they go to.
pub fn deliveries(effects: Vec<Effect>) -> Deliveries {
    let mut out = Deliveries::default();
    for effect in effects {
        let (gid, step) = match effect {
            Effect::Joined { gid, uid } => (
                gid,
                GroupStep::Join {
                    uid,
                    sessions: Vec::new(),
                },
            ),
            Effect::Event(event) => (
                event.gid,
                GroupStep::Event {
                    version: event.version,
                    frame: ServerFrame::Event(&event).encode().into(),
                },
            ),
            Effect::Left { gid, uid } => (gid, GroupStep::Leave(uid)),
            Effect::Disbanded { gid } => (gid, GroupStep::Disband),
            Effect::GroupVersions(versions) => (versions.gid, GroupStep::Notify(versions)),
            Effect::UserVersions(versions) => {
                let notice = Arc::new(SyncNotice::user(versions));
                out.notices.push((versions.uid, notice));
                continue;
            }
            Effect::FriendRequest { from, to, ts } => {
                let frame: ByteString = ServerFrame::FriendRequest { from, ts }.encode().into();
                out.frames.push((to, Arc::from([frame])));
                continue;
            }
            Effect::Deactivated { uid } => {
                out.deactivated.push(uid);
                continue;
            }
        };
        out.groups.entry(gid).or_default().push(step);
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::model::event::{GroupEvent, LoggedEvent, Removal};
    use crate::model::sync::{GroupVersions, UserVersions};

    fn parsed(frame: &str) -> Value {
        serde_json::from_str(frame).unwrap()
    }

    fn steps(deliveries: &Deliveries, gid: u64) -> Vec<String> {
        deliveries.groups[&gid]
            .iter()
            .map(|step| match step {
                GroupStep::Join { uid, sessions } => {
                    assert!(sessions.is_empty(), "the directory fills sessions in");
                    format!("join {uid}")
                }
                GroupStep::Event { version, frame } => format!("event {version} {}", parsed(frame)),
                GroupStep::Leave(uid) => format!("leave {uid}"),
                GroupStep::Disband => "disband".into(),
                GroupStep::Notify(v) => format!("notify {}", v.user_list_version),
            })
            .collect()
    }

    #[test]
    fn each_group_gets_its_steps_in_the_order_they_happened() {
        let effects = vec![
            Effect::Joined { gid: 1, uid: 10 },
            Effect::Event(LoggedEvent {
                gid: 2,
                version: 3,
                ts: 1_732_000_000_000,
                event: GroupEvent::MemberRemoved {
                    uid: 20,
                    by: Some(1),
                    reason: Removal::Removed,
                },
            }),
            Effect::Left { gid: 2, uid: 20 },
            Effect::GroupVersions(GroupVersions {
                gid: 1,
                user_list_version: 7,
                user_info_version: 0,
            }),
            Effect::Disbanded { gid: 2 },
        ];
        let deliveries = deliveries(effects);
        assert_eq!(steps(&deliveries, 1), ["join 10", "notify 7"]);
        let event = json!({"type": "event", "event": "member_removed", "gid": 2, "version": 3,
                           "uid": 20, "by": 1, "reason": "removed", "ts": 1_732_000_000_000_i64});
        assert_eq!(
            steps(&deliveries, 2),
            [
                format!("event 3 {event}"),
                "leave 20".into(),
                "disband".into()
            ]
        );
    }

    #[test]
    fn users_get_notices_and_frames_and_the_deactivated_are_listed_for_closing() {
        let versions = UserVersions {
            uid: 5,
            user_info_version: 3,
            group_list_version: 0,
            group_info_version: 0,
            friend_list_version: 0,
            friend_info_version: 0,
        };
        let effects = vec![
            Effect::UserVersions(versions),
            Effect::FriendRequest {
                from: 5,
                to: 6,
                ts: 1_732_000_000_000,
            },
            Effect::Deactivated { uid: 5 },
        ];
        let deliveries = deliveries(effects);
        assert!(deliveries.groups.is_empty());
        assert_eq!(deliveries.notices.len(), 1);
        assert_eq!(deliveries.notices[0].0, 5);
        assert_eq!(deliveries.frames.len(), 1);
        assert_eq!(deliveries.frames[0].0, 6);
        assert_eq!(
            parsed(&deliveries.frames[0].1[0]),
            json!({"type": "friend_request", "from": 5, "ts": 1_732_000_000_000_i64})
        );
        assert_eq!(deliveries.deactivated, [5]);
    }
}
