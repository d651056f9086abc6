//! A group's changes — membership, events, notices — carried out in the order of the
//! group's versions (`policy::VersionOrder`), with the versions that never arrived read from
//! the event log.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tracing::Instrument;

use super::policy::InTurn;
use super::GroupActor;
use crate::messages::{GroupChange, GroupStep, SessionHandle, SessionsOf, ToSession};
use crate::model::event::{GroupEvent, LoggedEvent};
use crate::model::refusal::Refusal;
use crate::model::sync::SyncNotice;
use crate::protocol::ServerFrame;
use crate::store::StoreError;

/// How long a change may wait for one of an earlier version before the versions missing are
/// read from the event log: changes made at once (on one node or several) often arrive a
/// little out of order.
const EVENT_GRACE: Duration = Duration::from_millis(100);

impl Handler<GroupChange> for GroupActor {
    type Result = ();

    fn handle(&mut self, GroupChange(steps): GroupChange, ctx: &mut Self::Context) {
        let _span = self.in_span();
        if self.failed.is_some() {
            return;
        }
        let versions = steps.iter().filter_map(|step| match step {
            GroupStep::Event { version, .. } => Some(*version),
            _ => None,
        });
        let (first, last) = (versions.clone().min(), versions.max());
        let (Some(first), Some(last)) = (first, last) else {
            // Notices of versions that are not events (profiles): no order to keep.
            self.carry_out(InTurn::Next(steps), ctx);
            return;
        };
        for change in self.changes.offer(first, last, steps) {
            self.carry_out(change, ctx);
        }
        self.repair_events(ctx);
    }
}

impl GroupActor {
    /// Carries out a change in its turn; of a stale one (its versions were covered by the
    /// state loaded, or read from the log), only what cannot be out of date: the sessions of
    /// members who are members now start receiving, and notices go out.
    pub(super) fn carry_out(&mut self, change: InTurn<Vec<GroupStep>>, ctx: &mut Context<Self>) {
        if self.failed.is_some() {
            return;
        }
        let (steps, stale) = match change {
            InTurn::Next(steps) => (steps, false),
            InTurn::Stale(steps) => (steps, true),
        };
        for step in steps {
            match step {
                GroupStep::Join { uid, sessions } => {
                    if stale && !self.acks.is_member(uid) {
                        continue;
                    }
                    self.acks.join(uid, self.in_order.pushed());
                    for session in sessions {
                        session.inbox.do_send(ToSession::Joined {
                            gid: self.gid,
                            group: GroupActor::handle(&ctx.address()),
                        });
                        if self.online.insert(session.id, session).is_none() {
                            self.session_came(uid);
                        }
                    }
                }
                GroupStep::Notify(versions) => {
                    let notice = Arc::new(SyncNotice::group(versions));
                    for session in self.online.values() {
                        session.inbox.do_send(ToSession::Notify(notice.clone()));
                    }
                }
                _ if stale => {}
                GroupStep::Event { frame, .. } => self.push(Arc::from([frame])),
                GroupStep::Leave(uid) => {
                    self.acks.leave(uid);
                    self.drop_sessions_of(uid);
                }
                GroupStep::Disband => {
                    let uids: Vec<u64> = self.acks.members().collect();
                    for uid in uids {
                        self.drop_sessions_of(uid);
                    }
                    self.acks.clear();
                    let gone = Refusal::GroupMissing { gid: self.gid }.into();
                    self.fail(gone, ctx);
                    return;
                }
            }
        }
    }

    /// Reads from the event log, once the grace has passed, the versions missing before a
    /// change held or below a version a position check found; carries them out as their
    /// effects would have been, then what was held.
    pub(super) fn repair_events(&mut self, ctx: &mut Context<Self>) {
        if self.repairing || self.changes.gap().is_none() {
            return;
        }
        self.repairing = true;
        ctx.run_later(EVENT_GRACE, |act, ctx| act.read_events(ctx));
    }

    pub(super) fn read_events(&mut self, ctx: &mut Context<Self>) {
        let Some((after, before)) = self.changes.gap() else {
            self.repairing = false;
            return;
        };
        let (store, gid, sessions) = (self.store.clone(), self.gid, self.links.sessions.clone());
        let reading = async move {
            let events = store.events_between(gid, after, before).await?;
            let arrivals: Vec<u64> = events.iter().filter_map(arrival).collect();
            // The directory stops only with the system; then nobody is online to attach.
            let online = match arrivals.is_empty() {
                true => Vec::new(),
                false => sessions
                    .send(SessionsOf(arrivals))
                    .await
                    .unwrap_or_default(),
            };
            Ok::<_, StoreError>((events, online))
        };
        ctx.spawn(reading.instrument(self.span.clone()).into_actor(self).map(
            move |read, act, ctx| {
                let _span = act.in_span();
                act.repairing = false;
                let (events, online) = match read {
                    Ok(read) => read,
                    Err(error) => {
                        // Tried again at the next change or position check.
                        tracing::warn!(%error, after, before, "cannot read missing events");
                        return;
                    }
                };
                let full_page = events.len() >= 1000;
                let done = match events.last() {
                    Some(last) if full_page => last.version,
                    // Whatever the log no longer holds is gone for good: clients sync.
                    _ => before - 1,
                };
                tracing::debug!(after, before, read = events.len(), "events repaired");
                // Changes that arrived live while the log was read were carried out then.
                let applied = act.changes.applied();
                let missing = events.into_iter().filter(|e| e.version > applied).collect();
                act.carry_out(InTurn::Next(repaired_steps(missing, online)), ctx);
                for change in act.changes.done_up_to(done) {
                    act.carry_out(change, ctx);
                }
                act.repair_events(ctx);
            },
        ));
    }
}

/// The member an event brings, if it brings one.
fn arrival(event: &LoggedEvent) -> Option<u64> {
    match event.event {
        GroupEvent::MemberAdded { uid, .. } => Some(uid),
        _ => None,
    }
}

/// Events read from the log as the steps their change's effects would have made; `online`
/// are the sessions here of the members they bring.
fn repaired_steps(events: Vec<LoggedEvent>, online: Vec<SessionHandle>) -> Vec<GroupStep> {
    let mut steps = Vec::with_capacity(events.len() * 2);
    for event in events {
        let frame = ServerFrame::Event(&event).encode().into();
        steps.push(GroupStep::Event {
            version: event.version,
            frame,
        });
        match event.event {
            GroupEvent::MemberAdded { uid, .. } => steps.push(GroupStep::Join {
                uid,
                sessions: online.iter().filter(|s| s.uid == uid).cloned().collect(),
            }),
            GroupEvent::MemberRemoved { uid, .. } => steps.push(GroupStep::Leave(uid)),
            GroupEvent::GroupDisbanded { .. } => steps.push(GroupStep::Disband),
            _ => {}
        }
    }
    steps
}
