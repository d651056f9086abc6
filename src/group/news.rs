//! What the group hears from the other nodes over the bus, and how it repairs what it
//! missed: messages read from PostgreSQL for every gap in msgids (`policy::InOrder`), and
//! the group's position read when it starts following its subject or a check says so.

use std::time::{Duration, Instant};

use actix::prelude::*;
use tracing::Instrument;

use super::GroupActor;
use crate::cluster::wire::{GroupNews, Heard};
use crate::cluster::Bus;
use crate::messages::Position;
use crate::metrics;
use crate::model::Mark;

/// How long a gap in msgids may stand before it is read from PostgreSQL: copies from
/// different nodes, and this node's own commit replies, often arrive a little out of order.
const GAP_GRACE: Duration = Duration::from_millis(10);

impl GroupActor {
    /// Reads from PostgreSQL, once the grace has passed, the msgids known committed but not
    /// pushed; one read at a time, at most a batch of them per read.
    pub(super) fn fill_gaps(&mut self, ctx: &mut Context<Self>) {
        if self.filling || self.in_order.gap(self.max_gap()).is_none() {
            return;
        }
        self.filling = true;
        ctx.run_later(GAP_GRACE, |act, ctx| act.read_gap(ctx));
    }

    pub(super) fn max_gap(&self) -> u64 {
        self.settings.max_batch as u64
    }

    pub(super) fn read_gap(&mut self, ctx: &mut Context<Self>) {
        let Some((after, before)) = self.in_order.gap(self.max_gap()) else {
            self.filling = false;
            return;
        };
        let (store, gid) = (self.store.clone(), self.gid);
        let reading = async move { store.messages_between(gid, after, before).await };
        ctx.spawn(reading.instrument(self.span.clone()).into_actor(self).map(
            move |read, act, ctx| {
                let _span = act.in_span();
                act.filling = false;
                match read {
                    Ok(msgs) if msgs.is_empty() => act.in_order.nothing_stored_above_pushed(),
                    Ok(msgs) => {
                        // msgids are dense: a read starting above the gap's start met
                        // messages retention pruned.
                        if msgs[0].msgid > after + 1 {
                            act.in_order.pruned_through(msgs[0].msgid - 1);
                        }
                        let metrics = &metrics::global().cluster;
                        metrics.gaps_filled.inc();
                        metrics.gap_messages_filled.inc_by(msgs.len() as u64);
                        tracing::debug!(after, before, read = msgs.len(), "gap filled");
                        let ready = act.in_order.admit(msgs);
                        act.push_messages(&ready);
                        act.fill_gaps(ctx);
                    }
                    // Tried again at the next position check or news of the group.
                    Err(error) => tracing::warn!(%error, after, before, "cannot fill a gap"),
                }
            },
        ));
    }

    /// Follows the group's subject on the bus, then asks who is online elsewhere and where
    /// storage stands (commits between the load and the subscription have no copy here).
    pub(super) fn follow(&mut self, bus: Bus, ctx: &mut Context<Self>) {
        let gid = self.gid;
        let following = async move { bus.follow_group(gid).await };
        ctx.spawn(following.into_actor(self).map(|followed, act, ctx| {
            let _span = act.in_span();
            match followed {
                Ok(news) => {
                    ctx.add_stream(news);
                    if let Some(bus) = act.settings.bus.as_ref().filter(|_| act.has_presence()) {
                        bus.tell_group(act.gid, &GroupNews::WhoIsOnline);
                    }
                    act.check_position(ctx);
                }
                Err(error) => tracing::warn!(%error, "cannot follow the group on NATS"),
            }
        }));
    }

    /// Reads the group's newest stored msgid, and fills what is missing below it.
    pub(super) fn check_position(&mut self, ctx: &mut Context<Self>) {
        let (store, gid) = (self.store.clone(), self.gid);
        let reading = async move { store.group_latest(gid).await };
        ctx.spawn(
            reading.instrument(self.span.clone()).into_actor(self).map(
                |read, act, ctx| match read {
                    Ok(Some(latest)) => {
                        act.in_order.committed_up_to(latest);
                        act.fill_gaps(ctx);
                    }
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "cannot read the group's position"),
                },
            ),
        );
    }
}

impl Handler<Position> for GroupActor {
    type Result = ();

    fn handle(&mut self, position: Position, ctx: &mut Self::Context) {
        self.in_order.committed_up_to(position.latest);
        self.fill_gaps(ctx);
        self.changes.exists_up_to(position.version);
        self.repair_events(ctx);
    }
}

/// News of the group from the other nodes.
impl StreamHandler<Heard<GroupNews>> for GroupActor {
    fn handle(&mut self, heard: Heard<GroupNews>, ctx: &mut Self::Context) {
        let _span = self.in_span();
        metrics::global().cluster.received(heard.news.kind());
        if self.failed.is_some() {
            return;
        }
        match heard.news {
            GroupNews::Messages(msgs) => {
                let ready = self.in_order.admit(msgs);
                self.push_messages(&ready);
                self.fill_gaps(ctx);
            }
            GroupNews::Committed { latest } => {
                self.in_order.committed_up_to(latest);
                self.fill_gaps(ctx);
            }
            GroupNews::Presence { uid, online } if self.acks.is_member(uid) => {
                self.presence.heard(heard.from, uid, online, Instant::now());
                self.announce_presence();
            }
            GroupNews::Online { mut uids } => {
                uids.retain(|uid| self.acks.is_member(*uid));
                self.presence.heard_all(heard.from, uids, Instant::now());
                self.announce_presence();
            }
            GroupNews::WhoIsOnline => self.tell_online_here(),
            GroupNews::Signal { from, kind }
                if self.acks.is_member(from) && self.has_presence() =>
            {
                self.relay_signal(from, &kind, None)
            }
            GroupNews::Signal { .. } => {}
            GroupNews::Reads(reads) => {
                let moved: Vec<_> = reads
                    .into_iter()
                    .filter(|read| self.acks.observe(read.uid, Mark::Read, read.msgid))
                    .collect();
                self.push_reads(&moved);
            }
            GroupNews::Presence { .. } => {}
        }
    }

    /// The bus closes the subscription only when the node stops; the group carries on.
    fn finished(&mut self, _: &mut Self::Context) {}
}
