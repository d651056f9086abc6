//! The group's decisions — what to commit next, how acks coalesce, what an ack is worth, which
//! messages to load before a push — as plain state and functions apart from the actor that
//! carries them out, so that each is tested on its own.

use std::collections::HashMap;
use std::time::Duration;

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

/// Every member's highest ack, and those not yet handed to the ack writer: one entry per
/// member however many acks came, and an ack only ever moves forward.
#[derive(Debug, Default)]
pub struct MemberAcks {
    acked: HashMap<u64, u64>,
    unflushed: HashMap<u64, u64>,
}

impl MemberAcks {
    pub fn new(members: impl IntoIterator<Item = (u64, u64)>) -> Self {
        MemberAcks {
            acked: members.into_iter().collect(),
            unflushed: HashMap::new(),
        }
    }

    pub fn is_member(&self, uid: u64) -> bool {
        self.acked.contains_key(&uid)
    }

    /// The member's highest ack, written or not.
    pub fn acked(&self, uid: u64) -> Option<u64> {
        self.acked.get(&uid).copied()
    }

    /// A new member, caught up to `latest`; a member already known keeps their ack.
    pub fn join(&mut self, uid: u64, latest: u64) {
        self.acked.entry(uid).or_insert(latest);
    }

    /// A member left: their ack not yet written is dropped with them.
    pub fn leave(&mut self, uid: u64) {
        self.acked.remove(&uid);
        self.unflushed.remove(&uid);
    }

    pub fn members(&self) -> impl Iterator<Item = u64> + '_ {
        self.acked.keys().copied()
    }

    pub fn clear(&mut self) {
        self.acked.clear();
        self.unflushed.clear();
    }

    /// Records a member's ack if it moves theirs forward; false if it does not (lower,
    /// equal, or not a member).
    pub fn record(&mut self, uid: u64, msgid: u64) -> bool {
        match self.acked.get_mut(&uid) {
            Some(acked) if msgid > *acked => {
                *acked = msgid;
                self.unflushed.insert(uid, msgid);
                true
            }
            _ => false,
        }
    }

    pub fn has_unflushed(&self) -> bool {
        !self.unflushed.is_empty()
    }

    /// The acks not yet written, as (uid, msgid), each once.
    pub fn take_unflushed(&mut self) -> Vec<(u64, u64)> {
        self.unflushed.drain().collect()
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

/// The msgids, as the range `after < msgid < before`, committed by someone else (another
/// node, or a commit whose reply was lost) between what this actor knew and the first msgid
/// of its own commit: loaded before the push so pushes stay dense. `None` when there is no
/// gap, or when it is larger than `max_gap` (left to the clients' pull).
pub fn gap_before(known: u64, first_new: u64, max_gap: u64) -> Option<(u64, u64)> {
    let missing = first_new.checked_sub(known + 1)?;
    (missing > 0 && missing <= max_gap).then_some((known, first_new))
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
    fn acks_only_move_forward_and_coalesce_to_one_write_per_member() {
        let mut acks = MemberAcks::new([(1, 5), (2, 0)]);
        assert!(acks.record(1, 7));
        assert!(acks.record(1, 9));
        assert!(!acks.record(1, 8), "lower than the member's ack");
        assert!(!acks.record(1, 9), "equal to it");
        assert!(!acks.record(3, 9), "not a member");
        assert!(acks.record(2, 1));
        let mut written = acks.take_unflushed();
        written.sort();
        assert_eq!(written, [(1, 9), (2, 1)]);
        assert!(!acks.has_unflushed());
        assert_eq!(acks.acked(1), Some(9));
    }

    #[test]
    fn a_member_who_leaves_takes_their_unwritten_ack_along_and_a_rejoin_starts_caught_up() {
        let mut acks = MemberAcks::new([(1, 5)]);
        acks.record(1, 6);
        acks.leave(1);
        assert!(!acks.has_unflushed());
        assert!(!acks.is_member(1));
        acks.join(1, 40);
        assert_eq!(acks.acked(1), Some(40));
        acks.join(1, 50);
        assert_eq!(acks.acked(1), Some(40), "a known member keeps their ack");
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

    #[test]
    fn a_gap_before_a_commit_is_loaded_only_when_small() {
        assert_eq!(gap_before(10, 11, 5), None, "no gap");
        assert_eq!(gap_before(10, 9, 5), None, "a dup-only view behind");
        assert_eq!(gap_before(10, 13, 5), Some((10, 13)));
        assert_eq!(gap_before(10, 16, 5), Some((10, 16)));
        assert_eq!(gap_before(10, 17, 5), None, "left to the pull");
    }
}
