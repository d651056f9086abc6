//! The clock of every session at once. Heartbeats and token expiry are driven from here for
//! all sessions together, rather than by two timers per session polled at each of its
//! wake-ups: an idle session then costs no timer and no wake-up of its own.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::messages::SessionId;

/// How often expired tokens are looked for: sessions close within this of their expiry.
pub const EXPIRY_SWEEP: Duration = Duration::from_secs(1);

/// Open sessions by the expiry of their token (seconds since the epoch).
#[derive(Debug, Default)]
pub struct Expiries(BTreeSet<(u64, SessionId, u64)>);

impl Expiries {
    pub fn track(&mut self, token_exp: u64, id: SessionId, uid: u64) {
        self.0.insert((token_exp, id, uid));
    }

    pub fn forget(&mut self, token_exp: u64, id: SessionId, uid: u64) {
        self.0.remove(&(token_exp, id, uid));
    }

    /// Takes the sessions, as (session, uid), whose token expired by `now`.
    pub fn take_due(&mut self, now: u64) -> Vec<(SessionId, u64)> {
        let mut due = Vec::new();
        while let Some(&(exp, id, uid)) = self.0.first() {
            if exp > now {
                break;
            }
            self.0.pop_first();
            due.push((id, uid));
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_fall_due_in_expiry_order_and_once() {
        let mut expiries = Expiries::default();
        expiries.track(30, 1, 100);
        expiries.track(10, 2, 200);
        expiries.track(20, 3, 300);
        expiries.forget(20, 3, 300);
        assert_eq!(expiries.take_due(9), vec![]);
        assert_eq!(expiries.take_due(30), vec![(2, 200), (1, 100)]);
        assert_eq!(expiries.take_due(1000), vec![]);
    }
}
