//! The group's decisions — what to commit next, how acks coalesce, what an ack is worth, which
//! messages to load before a push — as plain state and functions apart from the actor that
//! carries them out, so that each is tested on its own.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::cluster::wire::NodeId;
use crate::model::{Mark, Marks, MessageView};

/// Sends waiting for their group commit: bounded, and committed one batch at a time so
/// msgids reach sessions in order.
#[derive(Debug)]
pub struct CommitQueue<T> {
    waiting: Vec<T>,
    /// Most sends that may wait; past it sends are refused (a flood cannot grow the queue).
    bound: usize,
    max_batch: usize,
    committing: bool,
}

impl<T> CommitQueue<T> {
    pub fn new(bound: usize, max_batch: usize) -> Self {
        CommitQueue {
            waiting: Vec::new(),
            bound,
            max_batch,
            committing: false,
        }
    }

    /// Queues a send, or gives it back when the queue is full.
    pub fn push(&mut self, send: T) -> Result<(), T> {
        if self.waiting.len() >= self.bound {
            return Err(send);
        }
        self.waiting.push(send);
        Ok(())
    }

    /// The next batch to commit — everything waiting, oldest first, up to the batch size —
    /// unless a commit is running or nothing waits. Until [`CommitQueue::committed`], no other.
    pub fn next_batch(&mut self) -> Option<Vec<T>> {
        if self.committing || self.waiting.is_empty() {
            return None;
        }
        self.committing = true;
        let take = self.waiting.len().min(self.max_batch);
        Some(self.waiting.drain(..take).collect())
    }

    /// The running commit finished (stored or failed).
    pub fn committed(&mut self) {
        self.committing = false;
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Nothing waits and nothing is being committed.
    pub fn is_idle(&self) -> bool {
        !self.committing && self.waiting.is_empty()
    }

    /// Takes every send still waiting (the actor is stopping).
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.waiting.drain(..)
    }
}

/// Every member's two marks (received, read), and those not yet handed to the ack writer:
/// one entry per member and mark however many came, and a mark only ever moves forward.
#[derive(Debug, Default)]
pub struct MemberAcks {
    marks: HashMap<u64, Marks>,
    unflushed: HashMap<(u64, Mark), u64>,
}

impl MemberAcks {
    pub fn new(members: impl IntoIterator<Item = (u64, Marks)>) -> Self {
        MemberAcks {
            marks: members.into_iter().collect(),
            unflushed: HashMap::new(),
        }
    }

    pub fn is_member(&self, uid: u64) -> bool {
        self.marks.contains_key(&uid)
    }

    /// The member's marks, written or not.
    pub fn marks(&self, uid: u64) -> Option<Marks> {
        self.marks.get(&uid).copied()
    }

    /// Every member's marks.
    pub fn all(&self) -> impl Iterator<Item = (u64, Marks)> + '_ {
        self.marks.iter().map(|(&uid, &marks)| (uid, marks))
    }

    /// A new member, caught up to `latest` in both marks; a member already known keeps theirs.
    pub fn join(&mut self, uid: u64, latest: u64) {
        self.marks.entry(uid).or_insert(Marks::at(latest));
    }

    /// A member left: their marks not yet written are dropped with them.
    pub fn leave(&mut self, uid: u64) {
        self.marks.remove(&uid);
        self.unflushed.retain(|(member, _), _| *member != uid);
    }

    /// How many members the group has.
    pub fn len(&self) -> usize {
        self.marks.len()
    }

    pub fn members(&self) -> impl Iterator<Item = u64> + '_ {
        self.marks.keys().copied()
    }

    pub fn clear(&mut self) {
        self.marks.clear();
        self.unflushed.clear();
    }

    /// Records a member's mark, to be written, if it moves theirs forward; false if it does
    /// not (lower, equal, or not a member).
    pub fn record(&mut self, uid: u64, mark: Mark, msgid: u64) -> bool {
        if !self.observe(uid, mark, msgid) {
            return false;
        }
        self.unflushed.insert((uid, mark), msgid);
        true
    }

    /// Moves a member's mark forward without writing it: another node recorded it, and
    /// writes it. False if it does not move.
    pub fn observe(&mut self, uid: u64, mark: Mark, msgid: u64) -> bool {
        self.marks
            .get_mut(&uid)
            .is_some_and(|marks| marks.advance(mark, msgid))
    }

    pub fn has_unflushed(&self) -> bool {
        !self.unflushed.is_empty()
    }

    /// The marks not yet written, as (uid, mark, msgid), each once.
    pub fn take_unflushed(&mut self) -> Vec<(u64, Mark, u64)> {
        self.unflushed
            .drain()
            .map(|((uid, mark), msgid)| (uid, mark, msgid))
            .collect()
    }
}

/// What an ack is worth, from what the group knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckVerdict {
    /// At or below a msgid known to be stored: record it.
    Record,
    /// Above the newest msgid storage held when last read, and that read is fresh: refuse.
    Refuse { known: u64 },
    /// Above everything known, and only a fresh read of storage can tell (another node may
    /// have stored more).
    AskStorage,
}

/// Judges an ack of `msgid` against the newest msgid this actor committed (`latest`) and
/// the last read of storage's newest (`stored`: the msgid and how long ago it was read). A
/// read younger than `fresh` is trusted, so bogus acks cost at most one read per period.
pub fn judge_ack(
    msgid: u64,
    latest: u64,
    stored: Option<(u64, Duration)>,
    fresh: Duration,
) -> AckVerdict {
    let known = latest.max(stored.map_or(0, |(msgid, _)| msgid));
    if msgid <= known {
        AckVerdict::Record
    } else if stored.is_some_and(|(_, age)| age < fresh) {
        AckVerdict::Refuse { known }
    } else {
        AckVerdict::AskStorage
    }
}

/// Messages on their way to the group's online sessions, pushed strictly in msgid order with
/// no gap: msgids are dense, so a gap shows, and what arrives above one waits until the gap
/// is read from PostgreSQL. Messages come from this node's commits, from other nodes (over
/// NATS, at most once, in any order between nodes) and from those reads.
#[derive(Debug)]
pub struct InOrder {
    /// Every msgid up to this one was pushed, in order.
    pushed: u64,
    /// The newest msgid known committed, by anyone.
    known: u64,
    /// Messages above a gap. Bounded: past the bound the newest are dropped, to be read
    /// from PostgreSQL with the gap (they are committed: `known` covers them).
    waiting: BTreeMap<u64, MessageView>,
    bound: usize,
}

impl InOrder {
    /// Everything up to `latest` (the group's newest msgid when loaded) counts as pushed.
    pub fn new(latest: u64, bound: usize) -> Self {
        InOrder {
            pushed: latest,
            known: latest,
            waiting: BTreeMap::new(),
            bound,
        }
    }

    /// Every msgid up to this one went to the online sessions: where a joining session
    /// starts.
    pub fn pushed(&self) -> u64 {
        self.pushed
    }

    /// The newest msgid known committed.
    pub fn known(&self) -> u64 {
        self.known
    }

    /// Takes committed messages in, and gives back those that may be pushed now, in order.
    /// Messages at or below `pushed` were pushed before and are dropped.
    pub fn admit(&mut self, msgs: impl IntoIterator<Item = MessageView>) -> Vec<MessageView> {
        for msg in msgs {
            if msg.msgid <= self.pushed {
                continue;
            }
            self.known = self.known.max(msg.msgid);
            self.waiting.insert(msg.msgid, msg);
        }
        let mut ready = Vec::new();
        while let Some(next) = self.waiting.remove(&(self.pushed + 1)) {
            self.pushed = next.msgid;
            ready.push(next);
        }
        while self.waiting.len() > self.bound {
            self.waiting.pop_last();
        }
        ready
    }

    /// Someone (a node, a read of storage) says messages up to `latest` are committed.
    pub fn committed_up_to(&mut self, latest: u64) {
        self.known = self.known.max(latest);
    }

    /// The msgids to read from PostgreSQL next, as the range `after < msgid < before`: from
    /// the first one missing to the next one held or known, at most `max` of them. `None`
    /// when nothing committed is missing.
    pub fn gap(&self, max: u64) -> Option<(u64, u64)> {
        if self.known <= self.pushed {
            return None;
        }
        let held = self.waiting.keys().next().copied();
        let before = held.unwrap_or(self.known + 1).min(self.pushed + 1 + max);
        Some((self.pushed, before))
    }

    /// A read of a gap found its first messages gone: retention pruned everything up to
    /// `msgid` (pruning takes a prefix), which no session can be given any more, so what
    /// follows may go.
    pub fn pruned_through(&mut self, msgid: u64) {
        self.pushed = self.pushed.max(msgid);
        self.known = self.known.max(msgid);
        self.waiting = self.waiting.split_off(&(self.pushed + 1));
    }

    /// A read of the gap found nothing: storage holds nothing above `pushed`, whatever was
    /// claimed (commit order is msgid order, so nothing above can be committed either).
    /// What waits above it cannot be checked, so it goes.
    pub fn nothing_stored_above_pushed(&mut self) {
        self.known = self.pushed;
        self.waiting.clear();
    }
}

/// The group's changes, carried out in the order of the group's versions (each event is
/// one version; versions are dense). A change that comes ahead of a missing one is held until
/// the missing one arrives or is read from the event log; a change already covered (by the
/// state the group was loaded with, or by such a read) is stale. `T` is the change.
#[derive(Debug)]
pub struct VersionOrder<T> {
    /// Every version up to this one was carried out.
    applied: u64,
    /// The newest version known to exist (a position check may know of more than arrived).
    known: u64,
    /// Changes ahead of a gap, by their first version, with their last.
    held: BTreeMap<u64, (u64, T)>,
}

/// A change the order hands back to be carried out.
#[derive(Debug, PartialEq, Eq)]
pub enum InTurn<T> {
    /// Its turn: carry out all of it.
    Next(T),
    /// Covered already: only what is idempotent in it still applies.
    Stale(T),
}

impl<T> VersionOrder<T> {
    pub fn new(applied: u64) -> Self {
        VersionOrder {
            applied,
            known: applied,
            held: BTreeMap::new(),
        }
    }

    /// Takes a change of versions `first..=last` in, and gives back what may be carried out
    /// now, in order.
    pub fn offer(&mut self, first: u64, last: u64, change: T) -> Vec<InTurn<T>> {
        self.known = self.known.max(last);
        if first > self.applied + 1 {
            self.held.insert(first, (last, change));
            return Vec::new();
        }
        let mut out = vec![self.place(last, change)];
        self.drain_into(&mut out);
        out
    }

    /// Versions up to `version` are done (read from the log, or no longer in it): what is held
    /// comes out in order.
    pub fn done_up_to(&mut self, version: u64) -> Vec<InTurn<T>> {
        self.applied = self.applied.max(version);
        self.known = self.known.max(version);
        let mut out = Vec::new();
        self.drain_into(&mut out);
        out
    }

    /// Every version up to this one was carried out. A read of the log may find versions
    /// that arrived live while it ran: those at or below this are done already.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// A position check says versions up to `version` exist.
    pub fn exists_up_to(&mut self, version: u64) {
        self.known = self.known.max(version);
    }

    /// The versions to read from the event log, as `after < version < before`: those missing
    /// before the first change held, or up to the newest known.
    pub fn gap(&self) -> Option<(u64, u64)> {
        let before = match self.held.keys().next() {
            Some(&first) => first,
            None if self.known > self.applied => self.known + 1,
            None => return None,
        };
        Some((self.applied, before))
    }

    fn place(&mut self, last: u64, change: T) -> InTurn<T> {
        if last <= self.applied {
            return InTurn::Stale(change);
        }
        self.applied = last;
        InTurn::Next(change)
    }

    fn drain_into(&mut self, out: &mut Vec<InTurn<T>>) {
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() > self.applied + 1 {
                break;
            }
            let (last, change) = entry.remove();
            out.push(self.place(last, change));
        }
    }
}

/// Who of the group is online — here, and on the other nodes as they told — and what the
/// members were last told of it. A member comes online in the telling at once, and goes
/// offline only after staying away for the debounce, so a reconnect announces nothing.
#[derive(Debug, Default)]
pub struct Presence {
    /// Members with sessions on this node, and how many.
    local: HashMap<u64, usize>,
    /// Members online on each other node, and when that node last told of them.
    remote: HashMap<NodeId, (Instant, HashSet<u64>)>,
    /// Members last announced online.
    announced: HashSet<u64>,
    /// Members announced online who are not any more, and since when.
    away_since: HashMap<u64, Instant>,
    /// Whether anything changed since the last announcements (most ticks have nothing to do).
    changed: bool,
}

impl Presence {
    /// A session of `uid` came online here; true if it is their first here (tell the others).
    pub fn session_joined(&mut self, uid: u64) -> bool {
        let sessions = self.local.entry(uid).or_default();
        *sessions += 1;
        self.changed |= *sessions == 1;
        *sessions == 1
    }

    /// A session of `uid` went; true if it was their last here (tell the others).
    pub fn session_left(&mut self, uid: u64) -> bool {
        let Some(sessions) = self.local.get_mut(&uid) else {
            return false;
        };
        *sessions -= 1;
        if *sessions > 0 {
            return false;
        }
        self.local.remove(&uid);
        self.changed = true;
        true
    }

    /// Another node told, at `now`, that `uid` came online there, or went.
    pub fn heard(&mut self, node: NodeId, uid: u64, online: bool, now: Instant) {
        let (heard, there) = self
            .remote
            .entry(node)
            .or_insert_with(|| (now, HashSet::new()));
        *heard = now;
        self.changed = true;
        if online {
            there.insert(uid);
        } else {
            there.remove(&uid);
        }
    }

    /// Another node told, at `now`, everyone online there.
    pub fn heard_all(&mut self, node: NodeId, uids: Vec<u64>, now: Instant) {
        self.remote.insert(node, (now, uids.into_iter().collect()));
        self.changed = true;
    }

    /// Forgets what nodes told that have said nothing for `max_silence` (they refresh
    /// periodically): a node's news that came after its death was noticed cannot linger.
    pub fn forget_silent(&mut self, now: Instant, max_silence: Duration) {
        let before = self.remote.len();
        self.remote
            .retain(|_, (heard, _)| now.duration_since(*heard) < max_silence);
        self.changed |= self.remote.len() != before;
    }

    /// A node stopped or went silent: its members are online there no more.
    pub fn node_gone(&mut self, node: &NodeId) {
        self.changed |= self.remote.remove(node).is_some();
    }

    /// Whether `uid` has a session online anywhere.
    pub fn is_online(&self, uid: u64) -> bool {
        self.local.contains_key(&uid) || self.remote.values().any(|(_, uids)| uids.contains(&uid))
    }

    /// Members with a session on this node.
    pub fn here(&self) -> Vec<u64> {
        self.local.keys().copied().collect()
    }

    /// Every member online anywhere, ascending.
    pub fn online(&self) -> Vec<u64> {
        let mut online: BTreeSet<u64> = self.local.keys().copied().collect();
        online.extend(self.remote.values().flat_map(|(_, uids)| uids));
        online.into_iter().collect()
    }

    /// What to announce now, as (uid, online): arrivals at once, departures once the member
    /// has been away for `debounce`.
    pub fn announcements(&mut self, now: Instant, debounce: Duration) -> Vec<(u64, bool)> {
        if !self.changed && self.away_since.is_empty() {
            return Vec::new();
        }
        self.changed = false;
        let online: HashSet<u64> = self.online().into_iter().collect();
        let mut told = Vec::new();
        for &uid in &online {
            self.away_since.remove(&uid);
            if self.announced.insert(uid) {
                told.push((uid, true));
            }
        }
        let away: Vec<u64> = self.announced.difference(&online).copied().collect();
        for uid in away {
            let since = *self.away_since.entry(uid).or_insert(now);
            if now.duration_since(since) >= debounce {
                self.announced.remove(&uid);
                self.away_since.remove(&uid);
                told.push((uid, false));
            }
        }
        told.sort_unstable();
        told
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_takes_what_waits_up_to_the_batch_and_one_commit_runs_at_a_time() {
        let mut queue = CommitQueue::new(10, 3);
        assert!(queue.is_idle());
        for send in 1..=5 {
            queue.push(send).unwrap();
        }
        assert_eq!(queue.next_batch(), Some(vec![1, 2, 3]));
        queue.push(6).unwrap();
        assert_eq!(queue.next_batch(), None, "a commit is running");
        assert!(!queue.is_idle());
        queue.committed();
        assert_eq!(queue.next_batch(), Some(vec![4, 5, 6]));
        queue.committed();
        assert_eq!(queue.next_batch(), None);
        assert!(queue.is_idle());
    }

    #[test]
    fn a_full_queue_gives_the_send_back() {
        let mut queue = CommitQueue::new(2, 100);
        queue.push("a").unwrap();
        queue.push("b").unwrap();
        assert_eq!(queue.push("c"), Err("c"));
        // Sends being committed no longer count against the bound.
        assert_eq!(queue.next_batch(), Some(vec!["a", "b"]));
        assert_eq!(queue.push("c"), Ok(()));
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn marks_only_move_forward_and_coalesce_to_one_write_per_member_and_mark() {
        let mut acks = MemberAcks::new([(1, Marks::at(5)), (2, Marks::at(0))]);
        assert!(acks.record(1, Mark::Received, 7));
        assert!(acks.record(1, Mark::Received, 9));
        assert!(
            !acks.record(1, Mark::Received, 8),
            "lower than the member's ack"
        );
        assert!(!acks.record(1, Mark::Received, 9), "equal to it");
        assert!(!acks.record(3, Mark::Received, 9), "not a member");
        assert!(acks.record(1, Mark::Read, 6), "read apart from received");
        assert!(acks.record(2, Mark::Received, 1));
        let mut written = acks.take_unflushed();
        written.sort();
        assert_eq!(
            written,
            [
                (1, Mark::Received, 9),
                (1, Mark::Read, 6),
                (2, Mark::Received, 1)
            ]
        );
        assert!(!acks.has_unflushed());
        assert_eq!(
            acks.marks(1),
            Some(Marks {
                received: 9,
                read: 6
            })
        );
        assert!(
            acks.observe(1, Mark::Read, 8),
            "another node's read moves it here"
        );
        assert!(!acks.has_unflushed(), "and is not written here");
    }

    #[test]
    fn a_member_who_leaves_takes_their_unwritten_marks_along_and_a_rejoin_starts_caught_up() {
        let mut acks = MemberAcks::new([(1, Marks::at(5))]);
        acks.record(1, Mark::Received, 6);
        acks.record(1, Mark::Read, 6);
        acks.leave(1);
        assert!(!acks.has_unflushed());
        assert!(!acks.is_member(1));
        acks.join(1, 40);
        assert_eq!(acks.marks(1), Some(Marks::at(40)));
        acks.join(1, 50);
        assert_eq!(
            acks.marks(1),
            Some(Marks::at(40)),
            "a known member keeps their marks"
        );
    }

    #[test]
    fn an_ack_is_judged_by_what_is_known_stored_and_how_fresh_that_is() {
        let fresh = Duration::from_millis(250);
        let young = Some((20, Duration::from_millis(10)));
        let old = Some((20, Duration::from_secs(1)));
        assert_eq!(judge_ack(10, 10, None, fresh), AckVerdict::Record);
        assert_eq!(judge_ack(11, 10, None, fresh), AckVerdict::AskStorage);
        assert_eq!(judge_ack(20, 10, old, fresh), AckVerdict::Record);
        assert_eq!(
            judge_ack(21, 10, young, fresh),
            AckVerdict::Refuse { known: 20 }
        );
        assert_eq!(judge_ack(21, 10, old, fresh), AckVerdict::AskStorage);
        assert_eq!(judge_ack(25, 30, young, fresh), AckVerdict::Record);
    }

    fn message(msgid: u64) -> MessageView {
        MessageView {
            gid: 1,
            msgid,
            from: 2,
            ts: 0,
            cmid: format!("c{msgid}"),
            body: Some(serde_json::value::RawValue::from_string("{}".into()).unwrap()),
            tombstone: None,
        }
    }

    fn msgids(msgs: &[MessageView]) -> Vec<u64> {
        msgs.iter().map(|m| m.msgid).collect()
    }

    #[test]
    fn messages_go_out_in_msgid_order_and_those_above_a_gap_wait_for_it() {
        let mut in_order = InOrder::new(10, 100);
        assert_eq!(
            msgids(&in_order.admit([message(11), message(12)])),
            [11, 12]
        );
        assert_eq!(in_order.gap(5), None);
        // 13 and 14 were committed on another node, and their copy is late or lost.
        assert!(in_order.admit([message(15), message(16)]).is_empty());
        assert_eq!((in_order.pushed(), in_order.known()), (12, 16));
        assert_eq!(in_order.gap(5), Some((12, 15)));
        assert_eq!(
            msgids(&in_order.admit([message(13), message(14)])),
            [13, 14, 15, 16]
        );
        assert_eq!(in_order.gap(5), None);
        assert!(in_order.admit([message(14)]).is_empty(), "pushed before");
    }

    #[test]
    fn a_lost_last_message_shows_by_position_and_is_read_in_bounded_steps() {
        let mut in_order = InOrder::new(10, 100);
        in_order.committed_up_to(30);
        assert_eq!(in_order.gap(5), Some((10, 16)), "at most 5 at a time");
        in_order.admit((11..=15).map(message));
        assert_eq!(in_order.gap(5), Some((15, 21)));
        in_order.committed_up_to(20);
        assert_eq!(in_order.known(), 30, "only forward");
    }

    #[test]
    fn the_wait_above_a_gap_is_bounded_and_what_it_drops_is_read_later() {
        let mut in_order = InOrder::new(0, 2);
        assert!(in_order
            .admit([message(3), message(4), message(5)])
            .is_empty());
        assert_eq!(in_order.gap(100), Some((0, 3)));
        assert_eq!(
            msgids(&in_order.admit([message(1), message(2)])),
            [1, 2, 3, 4]
        );
        assert_eq!(in_order.gap(100), Some((4, 6)), "5 was dropped: read it");
    }

    #[test]
    fn a_gap_retention_pruned_is_skipped_and_what_follows_goes_out() {
        let mut in_order = InOrder::new(10, 100);
        assert!(in_order.admit([message(20), message(21)]).is_empty());
        assert_eq!(in_order.gap(100), Some((10, 20)));
        // The read of 11..19 found 11..16 pruned.
        in_order.pruned_through(16);
        assert_eq!(
            msgids(&in_order.admit((17..=19).map(message))),
            [17, 18, 19, 20, 21]
        );
        assert_eq!(in_order.gap(100), None);
    }

    #[test]
    fn a_claim_storage_does_not_back_is_forgotten() {
        let mut in_order = InOrder::new(10, 100);
        in_order.admit([message(1_000_000)]);
        in_order.committed_up_to(2_000_000);
        in_order.nothing_stored_above_pushed();
        assert_eq!(in_order.gap(5), None);
        assert_eq!(msgids(&in_order.admit([message(11)])), [11]);
    }

    #[test]
    fn presence_counts_sessions_here_and_hears_other_nodes() {
        let (b, c) = (NodeId::new("b"), NodeId::new("c"));
        let now = Instant::now();
        let mut presence = Presence::default();
        assert!(
            presence.session_joined(1),
            "first session here: tell the others"
        );
        assert!(!presence.session_joined(1));
        assert!(!presence.session_left(1));
        assert!(presence.session_left(1), "last session here");
        assert!(!presence.session_left(1), "no sessions left to go");
        presence.session_joined(2);
        presence.heard(b.clone(), 3, true, now);
        presence.heard(c.clone(), 3, true, now);
        presence.heard_all(c.clone(), vec![4, 5], now);
        assert_eq!(presence.online(), [2, 3, 4, 5]);
        presence.heard(b.clone(), 3, false, now);
        assert_eq!(presence.online(), [2, 4, 5]);
        presence.node_gone(&c);
        assert_eq!(presence.online(), [2]);
        assert_eq!(presence.here(), [2]);
        presence.heard(b.clone(), 6, true, now);
        let silence = Duration::from_secs(30);
        presence.forget_silent(now + Duration::from_secs(29), silence);
        assert_eq!(presence.online(), [2, 6]);
        presence.forget_silent(now + Duration::from_secs(30), silence);
        assert_eq!(
            presence.online(),
            [2],
            "a node silent too long is forgotten"
        );
    }

    #[test]
    fn arrivals_are_told_at_once_and_departures_only_after_the_debounce() {
        let debounce = Duration::from_secs(2);
        let t0 = Instant::now();
        let later = |s: u64| t0 + Duration::from_secs(s);
        let mut presence = Presence::default();
        presence.session_joined(1);
        presence.session_joined(2);
        assert_eq!(presence.announcements(t0, debounce), [(1, true), (2, true)]);
        assert!(presence.announcements(t0, debounce).is_empty(), "told once");
        presence.session_left(1);
        assert!(presence.announcements(later(1), debounce).is_empty());
        presence.session_joined(1);
        assert!(
            presence.announcements(later(2), debounce).is_empty(),
            "back in time"
        );
        presence.session_left(1);
        assert!(presence.announcements(later(3), debounce).is_empty());
        assert_eq!(presence.announcements(later(5), debounce), [(1, false)]);
        assert!(presence.announcements(later(9), debounce).is_empty());
    }

    #[test]
    fn changes_are_carried_out_in_version_order_and_one_ahead_of_a_gap_waits() {
        let mut order = VersionOrder::new(4);
        assert_eq!(order.offer(5, 5, "a"), [InTurn::Next("a")]);
        assert!(order.offer(8, 9, "c").is_empty(), "6 and 7 are missing");
        assert_eq!(order.gap(), Some((5, 8)));
        assert_eq!(
            order.offer(6, 7, "b"),
            [InTurn::Next("b"), InTurn::Next("c")]
        );
        assert_eq!(order.gap(), None);
        assert_eq!(order.offer(3, 3, "old"), [InTurn::Stale("old")]);
    }

    #[test]
    fn a_change_arriving_while_its_gap_is_read_is_carried_out_once() {
        let mut order = VersionOrder::new(4);
        assert!(order.offer(6, 6, "b").is_empty());
        assert_eq!(order.gap(), Some((4, 6)), "the read of 5 starts");
        assert_eq!(
            order.offer(5, 5, "a"),
            [InTurn::Next("a"), InTurn::Next("b")]
        );
        assert_eq!(order.applied(), 6, "the read's 5 is done already");
    }

    #[test]
    fn a_gap_read_from_the_log_lets_what_waits_out_and_covers_what_comes_late() {
        let mut order = VersionOrder::new(0);
        assert!(order.offer(3, 3, "c").is_empty());
        assert_eq!(order.done_up_to(2), [InTurn::Next("c")]);
        assert_eq!(order.offer(1, 2, "late"), [InTurn::Stale("late")]);
        order.exists_up_to(6);
        assert_eq!(order.gap(), Some((3, 7)), "a position check knows of more");
        assert!(order.done_up_to(6).is_empty());
        assert_eq!(order.gap(), None);
    }
}
