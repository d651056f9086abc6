//! Who of the group is online, here and on the other nodes, as the actor keeps it
//! (`policy::Presence`): telling the other nodes, answering who is online, and announcing
//! arrivals and departures to the sessions that asked; and the signals (typing) of those
//! online, relayed to the others and never stored. Both are off in groups too big for them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::GroupActor;
use crate::cluster::wire::GroupNews;
use crate::error::{ApiError, ErrorCode};
use crate::messages::{NodeGone, OnlineIn, Relay, SessionId};
use crate::protocol::{ServerFrame, SignalKind};

/// How long a newly started group waits for the other nodes to say who is online there
/// before it answers who is online.
const PRESENCE_SETTLE: Duration = Duration::from_millis(300);

/// How often a group tells the other nodes everyone online here, which repairs a lost
/// presence change.
const PRESENCE_REFRESH: Duration = Duration::from_secs(10);

/// What a node told of its members' presence is forgotten when it has not been refreshed for
/// this long (its death is normally noticed sooner, by its heartbeats).
const PRESENCE_SILENCE: Duration = Duration::from_secs(30);

impl GroupActor {
    /// Announces departures once their debounce is over, and (in a cluster) tells the other
    /// nodes everyone online here, periodically.
    pub(super) fn keep_presence(&self, ctx: &mut Context<Self>) {
        let announce_every = (self.settings.presence_debounce / 4).max(Duration::from_millis(50));
        ctx.run_interval(announce_every, |act, _| act.announce_presence());
        if self.settings.bus.is_some() {
            ctx.run_interval(PRESENCE_REFRESH, |act, _| act.tell_online_here());
        }
    }

    /// Whether the group is small enough for presence and signals.
    pub(super) fn has_presence(&self) -> bool {
        self.acks.len() <= self.settings.presence_max_group
    }

    /// The refusal of presence and signals in a group too big for them.
    fn presence_off(&self) -> ApiError {
        ApiError::new(
            ErrorCode::TooLarge,
            format!(
                "group {} has more than {} members: presence and signals are off for it",
                self.gid, self.settings.presence_max_group
            ),
        )
    }

    /// Pushes a member's signal to the online sessions here, but the one it came from.
    pub(super) fn relay_signal(&mut self, from: u64, kind: &SignalKind, except: Option<SessionId>) {
        let gid = self.gid;
        let frame = ServerFrame::Signal { gid, from, kind }.encode().into();
        self.push_to(Arc::from([frame]), |id| Some(*id) != except);
    }

    /// A session of `uid` came online here.
    pub(super) fn session_came(&mut self, uid: u64) {
        if self.presence.session_joined(uid) {
            self.tell_presence(uid, true);
        }
        self.announce_presence();
    }

    /// Sessions of these members went (each uid once per session).
    pub(super) fn sessions_went(&mut self, uids: Vec<u64>) {
        for uid in uids {
            if self.presence.session_left(uid) {
                self.tell_presence(uid, false);
            }
        }
    }

    /// Tells the other nodes that `uid` came online here, or went.
    pub(super) fn tell_presence(&self, uid: u64, online: bool) {
        if let Some(bus) = self.settings.bus.as_ref().filter(|_| self.has_presence()) {
            bus.tell_group(self.gid, &GroupNews::Presence { uid, online });
        }
    }

    /// Tells the online sessions who came and who went (departures after the debounce).
    pub(super) fn announce_presence(&mut self) {
        if !self.has_presence() {
            return;
        }
        let now = Instant::now();
        self.presence.forget_silent(now, PRESENCE_SILENCE);
        let told = self
            .presence
            .announcements(now, self.settings.presence_debounce);
        if told.is_empty() {
            return;
        }
        let frames = told
            .into_iter()
            .map(|(uid, online)| {
                let frame = ServerFrame::Presence {
                    gid: self.gid,
                    uid,
                    online,
                };
                frame.encode().into()
            })
            .collect();
        let watching = std::mem::take(&mut self.watching);
        self.push_to(frames, |id| watching.contains(id));
        self.watching = watching
            .into_iter()
            .filter(|id| self.online.contains_key(id))
            .collect();
    }

    /// Tells the other nodes everyone online here.
    pub(super) fn tell_online_here(&self) {
        if let Some(bus) = self.settings.bus.as_ref().filter(|_| self.has_presence()) {
            let uids = self.presence.here();
            bus.tell_group(self.gid, &GroupNews::Online { uids });
        }
    }
}

impl Handler<NodeGone> for GroupActor {
    type Result = ();

    fn handle(&mut self, NodeGone(node): NodeGone, _: &mut Self::Context) {
        self.presence.node_gone(&node);
    }
}

impl Handler<OnlineIn> for GroupActor {
    type Result = ResponseActFuture<Self, Result<Vec<u64>, ApiError>>;

    fn handle(&mut self, asked: OnlineIn, _: &mut Self::Context) -> Self::Result {
        let OnlineIn { uid, session } = asked;
        // A group just started has not heard the other nodes yet.
        let settle = match &self.settings.bus {
            Some(_) => PRESENCE_SETTLE.saturating_sub(self.started.elapsed()),
            None => Duration::ZERO,
        };
        let answer = actix::clock::sleep(settle)
            .into_actor(self)
            .map(move |(), act, _| {
                if let Some(refusal) = act.refusal(uid) {
                    return Err(refusal);
                }
                if !act.has_presence() {
                    return Err(act.presence_off());
                }
                if let Some(session) = session.filter(|id| act.online.contains_key(id)) {
                    act.watching.insert(session);
                }
                Ok(act.presence.online())
            });
        Box::pin(answer)
    }
}

impl Handler<Relay> for GroupActor {
    type Result = Result<(), ApiError>;

    fn handle(&mut self, relay: Relay, _: &mut Self::Context) -> Self::Result {
        if let Some(refusal) = self.refusal(relay.from) {
            return Err(refusal);
        }
        if !self.has_presence() {
            return Err(self.presence_off());
        }
        if let Some(bus) = &self.settings.bus {
            let news = GroupNews::Signal {
                from: relay.from,
                kind: relay.kind.clone(),
            };
            bus.tell_group(self.gid, &news);
        }
        self.relay_signal(relay.from, &relay.kind, Some(relay.session));
        Ok(())
    }
}
