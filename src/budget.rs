//! The request budget: what each kind of client request costs, and the token buckets that
//! bound what one WebSocket session, or one user over HTTP, may ask of the node per second.
//!
//! Every kind is charged, so no kind can be flooded, and a kind added later gets a price
//! here or does not compile. Costs follow the work a request makes the node do: a ping is
//! answered from memory, an ack is coalesced in memory, a send is stored and fanned out, a
//! pull of 1,000 reads 1,000 rows, a full sync reads every scope of the user.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::model::sync::SyncRequest;

/// What a client asks for, as the budget prices it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Ping,
    Ack,
    Send,
    Pull {
        limit: u32,
    },
    /// `full`: some part is asked from version 0 (a snapshot of it).
    Sync {
        full: bool,
        groups: usize,
    },
    /// HTTP: a read of the user's own state (profile, groups, friends, conversations).
    Read,
    /// HTTP: a change (profile, group, friend, conversation) — one transaction each.
    Change,
    /// A WebSocket upgrade: authentication, the user's groups, a join per group.
    Connect,
    /// An ephemeral signal (typing) relayed to a group's online members.
    Signal,
    /// A read position moved (coalesced like acks).
    MarkRead,
    /// A message recalled: one transaction and a group event, like a change.
    Recall,
}

impl RequestKind {
    /// What a sync costs: more when some part is asked from version 0, which answers with a
    /// snapshot of it.
    pub fn sync(request: &SyncRequest) -> RequestKind {
        RequestKind::Sync {
            full: request.me.user_info_version == 0
                || request.group_list.group_list_version == 0
                || request.friends.user_list_version == 0
                || request.groups.iter().any(|g| g.user_list_version == 0),
            groups: request.groups.len(),
        }
    }

    /// Units the request takes from its bucket.
    pub fn cost(self) -> u32 {
        match self {
            RequestKind::Ping | RequestKind::Ack | RequestKind::MarkRead => 1,
            RequestKind::Signal => 5,
            RequestKind::Send | RequestKind::Read => 10,
            RequestKind::Pull { limit } => 10 + limit / 10,
            RequestKind::Sync { full, groups } => {
                let base = if full { 100 } else { 20 };
                base + u32::try_from(groups / 100).unwrap_or(u32::MAX)
            }
            RequestKind::Change | RequestKind::Recall => 20,
            RequestKind::Connect => 50,
        }
    }

    /// The kind's name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            RequestKind::Ping => "ping",
            RequestKind::Ack => "ack",
            RequestKind::Send => "send",
            RequestKind::Pull { .. } => "pull",
            RequestKind::Sync { .. } => "sync",
            RequestKind::Read => "read",
            RequestKind::Change => "change",
            RequestKind::Connect => "connect",
            RequestKind::Signal => "signal",
            RequestKind::MarkRead => "mark_read",
            RequestKind::Recall => "recall",
        }
    }
}

/// Which bound refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The session's (or user's) request budget.
    Budget,
    /// The per-session send rate (`HERALD_SEND_RATE`).
    SendRate,
    /// Too many of the session's requests are waiting for their replies.
    InFlight,
    /// The group's queue of sends waiting for their commit is full.
    GroupBusy,
}

impl Limit {
    pub fn name(self) -> &'static str {
        match self {
            Limit::Budget => "budget",
            Limit::SendRate => "send_rate",
            Limit::InFlight => "in_flight",
            Limit::GroupBusy => "group_busy",
        }
    }

    /// The sentence a refused client reads.
    pub fn explain(self) -> &'static str {
        match self {
            Limit::Budget => "request budget exceeded: slow down",
            Limit::SendRate => "send rate limit exceeded",
            Limit::InFlight => "too many requests waiting; wait for replies",
            Limit::GroupBusy => "group busy: retry later",
        }
    }
}

/// Refusals within `REFUSALS_WINDOW` after which a session is closed with 1008: a client
/// that keeps asking past `rate_limited` is not backing off as it should.
const MAX_REFUSALS: u32 = 50;
const REFUSALS_WINDOW: Duration = Duration::from_secs(1);

/// What a refusal means for the session.
#[derive(Debug, PartialEq, Eq)]
pub enum RefusalCount {
    /// The first of a burst: worth a log line.
    First,
    Again,
    /// `MAX_REFUSALS` within the window: the session is to be closed.
    TooMany,
}

/// The session's refusals in the current window. A request served between refusals does
/// not reset the count: the bucket refills a unit at a time, so a flood written faster than
/// the node reads it is served now and then, and would never be refused 50 times in a row.
#[derive(Default)]
pub struct Refusals {
    since: Option<Instant>,
    count: u32,
}

impl Refusals {
    pub fn refused(&mut self, now: Instant) -> RefusalCount {
        match self.since {
            Some(since) if now.duration_since(since) < REFUSALS_WINDOW => {
                self.count += 1;
                if self.count == MAX_REFUSALS {
                    RefusalCount::TooMany
                } else {
                    RefusalCount::Again
                }
            }
            _ => {
                (self.since, self.count) = (Some(now), 1);
                RefusalCount::First
            }
        }
    }
}

/// A rate in units (or sends) per second, with a burst of two seconds' worth; `None` is
/// unlimited.
#[derive(Debug, Clone, Copy)]
pub struct Rate(Option<Quota>);

impl Rate {
    /// `per_second` of 0 is unlimited.
    pub fn per_second(per_second: u32) -> Rate {
        Rate(NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(rate.get().saturating_mul(2)).unwrap_or(rate);
            Quota::per_second(rate).allow_burst(burst)
        }))
    }
}

/// The cost of `kind` as a bucket of `quota` can take it: a request dearer than the whole
/// burst costs the burst (with a tiny budget configured it is still possible, now and then).
fn cells(quota: &Quota, kind: RequestKind) -> NonZeroU32 {
    let cost = kind.cost().min(quota.burst_size().get());
    NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN)
}

/// The buckets of one WebSocket session. They are made at the first request, so idle
/// sessions do not carry them.
#[derive(Default)]
pub struct SessionBudget {
    requests: Option<Box<DefaultDirectRateLimiter>>,
    sends: Option<Box<DefaultDirectRateLimiter>>,
}

impl SessionBudget {
    /// Takes what `kind` costs from the request budget (and a send from the send rate), or
    /// says which bound refuses it; a refused request takes nothing.
    pub fn charge(
        &mut self,
        budget: Rate,
        send_rate: Rate,
        kind: RequestKind,
    ) -> Result<(), Limit> {
        if let Some(quota) = budget.0 {
            let bucket = self
                .requests
                .get_or_insert_with(|| Box::new(RateLimiter::direct(quota)));
            if !matches!(bucket.check_n(cells(&quota, kind)), Ok(Ok(()))) {
                return Err(Limit::Budget);
            }
        }
        if let (RequestKind::Send, Some(quota)) = (kind, send_rate.0) {
            let bucket = self
                .sends
                .get_or_insert_with(|| Box::new(RateLimiter::direct(quota)));
            if bucket.check().is_err() {
                return Err(Limit::SendRate);
            }
        }
        Ok(())
    }
}

/// How often a user refused over HTTP is logged, at most: once per burst, not per request.
const HTTP_LOG_EVERY: Duration = Duration::from_secs(10);

/// The request budget of each user over HTTP (the user API and WebSocket upgrades), shared
/// by every worker.
pub struct UserBudgets {
    requests: Option<DefaultKeyedRateLimiter<u64>>,
    /// Lets one log line per user through every `HTTP_LOG_EVERY`.
    logged: DefaultKeyedRateLimiter<u64>,
    budget: Rate,
}

impl UserBudgets {
    pub fn new(budget: Rate) -> UserBudgets {
        let log_quota = Quota::with_period(HTTP_LOG_EVERY).expect("the period is not zero");
        UserBudgets {
            requests: budget.0.map(RateLimiter::keyed),
            logged: RateLimiter::keyed(log_quota),
            budget,
        }
    }

    /// Takes what `kind` costs from the user's budget. A refusal is logged once per burst.
    pub fn charge(&self, uid: u64, kind: RequestKind) -> Result<(), Limit> {
        let (Some(requests), Some(quota)) = (&self.requests, self.budget.0) else {
            return Ok(());
        };
        if matches!(requests.check_key_n(&uid, cells(&quota, kind)), Ok(Ok(()))) {
            return Ok(());
        }
        crate::metrics::global().limited(kind.name(), Limit::Budget.name());
        if self.logged.check_key(&uid).is_ok() {
            tracing::warn!(
                uid,
                kind = kind.name(),
                "user over the HTTP request budget: refusing with 429"
            );
        }
        Err(Limit::Budget)
    }

    /// Forgets users whose buckets are full again, so the map holds only recent users.
    pub fn forget_idle(&self) {
        if let Some(requests) = &self.requests {
            requests.retain_recent();
            requests.shrink_to_fit();
        }
        self.logged.retain_recent();
        self.logged.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dearer_requests_cost_more() {
        let ping = RequestKind::Ping.cost();
        assert!(RequestKind::Send.cost() > ping);
        assert!(RequestKind::Pull { limit: 1000 }.cost() > RequestKind::Pull { limit: 1 }.cost());
        let full = RequestKind::Sync {
            full: true,
            groups: 0,
        };
        let incremental = RequestKind::Sync {
            full: false,
            groups: 0,
        };
        assert!(full.cost() > incremental.cost());
        assert!(incremental.cost() > ping);
    }

    #[test]
    fn fifty_refusals_within_a_second_are_too_many_however_they_are_spread() {
        let start = Instant::now();
        let mut refusals = Refusals::default();
        assert_eq!(refusals.refused(start), RefusalCount::First);
        for n in 1..49 {
            let at = start + Duration::from_millis(n * 19);
            assert_eq!(refusals.refused(at), RefusalCount::Again, "refusal {n}");
        }
        assert_eq!(
            refusals.refused(start + Duration::from_millis(990)),
            RefusalCount::TooMany
        );

        // 49 in one second, then a new window: a burst now and then is no flood.
        let mut refusals = Refusals::default();
        for _ in 0..49 {
            refusals.refused(start);
        }
        let later = start + REFUSALS_WINDOW;
        assert_eq!(refusals.refused(later), RefusalCount::First);
        assert_eq!(refusals.refused(later), RefusalCount::Again);
    }

    #[test]
    fn a_session_gets_its_burst_then_is_refused() {
        let mut budget = SessionBudget::default();
        let rate = Rate::per_second(10);
        let granted = (0..100)
            .take_while(|_| {
                budget
                    .charge(rate, Rate::per_second(0), RequestKind::Ping)
                    .is_ok()
            })
            .count();
        assert_eq!(granted, 20, "a burst of two seconds' worth");
        assert_eq!(
            budget.charge(rate, Rate::per_second(0), RequestKind::Ping),
            Err(Limit::Budget)
        );
    }

    #[test]
    fn a_request_dearer_than_the_burst_is_still_possible_once() {
        let mut budget = SessionBudget::default();
        let pull = RequestKind::Pull { limit: 1000 };
        let rate = Rate::per_second(5);
        assert_eq!(budget.charge(rate, Rate::per_second(0), pull), Ok(()));
        assert_eq!(
            budget.charge(rate, Rate::per_second(0), pull),
            Err(Limit::Budget)
        );
    }

    #[test]
    fn sends_meet_the_send_rate_as_well() {
        let mut budget = SessionBudget::default();
        let (unlimited, one) = (Rate::per_second(0), Rate::per_second(1));
        assert_eq!(budget.charge(unlimited, one, RequestKind::Send), Ok(()));
        assert_eq!(budget.charge(unlimited, one, RequestKind::Send), Ok(()));
        assert_eq!(
            budget.charge(unlimited, one, RequestKind::Send),
            Err(Limit::SendRate)
        );
        assert_eq!(budget.charge(unlimited, one, RequestKind::Ping), Ok(()));
    }

    #[test]
    fn users_have_buckets_of_their_own() {
        let users = UserBudgets::new(Rate::per_second(10));
        let change = RequestKind::Change;
        assert_eq!(users.charge(1, change), Ok(()));
        assert_eq!(users.charge(1, change), Err(Limit::Budget));
        assert_eq!(users.charge(2, change), Ok(()));
    }
}
