//! The audit: what storage holds, read back over HTTP (`GET /v1/groups/{gid}/messages`, paged),
//! against what the sessions saw confirmed. Between faults it reads only what was added since
//! the last audit (stored messages never change); the last audit reads everything again.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::target::Target;

/// How long an audit keeps retrying a page the server does not serve: it may be starting, or
/// the reading user's request budget may be spent (429 `rate_limited`; a page of 1000 costs
/// 110 units, so a long read back pages in bursts as the budget refills).
const PAGE_DEADLINE: Duration = Duration::from_secs(30);

/// One group as the audit knows it.
pub struct GroupAudit {
    gid: u64,
    /// A member's token, to read the group with.
    token: String,
    senders: HashSet<u64>,
    /// cmid → msgid of everything read so far.
    stored: HashMap<String, u64>,
    /// The newest msgid read so far.
    upto: u64,
    /// Msgids that broke the 1, 2, 3… sequence.
    gaps: u64,
    stored_twice: u64,
    foreign: u64,
}

impl GroupAudit {
    pub fn new(gid: u64, token: String, senders: HashSet<u64>) -> GroupAudit {
        GroupAudit {
            gid,
            token,
            senders,
            stored: HashMap::new(),
            upto: 0,
            gaps: 0,
            stored_twice: 0,
            foreign: 0,
        }
    }

    pub fn gid(&self) -> u64 {
        self.gid
    }

    /// The group's newest msgid as last read.
    pub fn latest(&self) -> u64 {
        self.upto
    }

    /// Reads the messages after `upto` and checks each one.
    async fn read_new(&mut self, target: &Target) -> Result<()> {
        loop {
            let page = self.page(target).await?;
            for message in &page.msgs {
                self.check(message);
            }
            if !page.more || page.msgs.is_empty() {
                return Ok(());
            }
        }
    }

    async fn page(&self, target: &Target) -> Result<Page> {
        let path = format!(
            "/v1/groups/{}/messages?after={}&limit=1000",
            self.gid, self.upto
        );
        let deadline = tokio::time::Instant::now() + PAGE_DEADLINE;
        loop {
            let last = match target.user_get(&self.token, &path).await {
                Ok((200, body)) => return Ok(serde_json::from_value(body)?),
                Ok((status, body)) => format!("{status} {body}"),
                Err(error) => format!("{error:#}"),
            };
            if tokio::time::Instant::now() >= deadline {
                bail!("GET {path}: not served within {PAGE_DEADLINE:?}: {last}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn check(&mut self, message: &Stored) {
        if message.msgid != self.upto + 1 {
            self.gaps += 1;
        }
        self.upto = self.upto.max(message.msgid);
        // cmids are `{sender uid}-{seq}` and bodies name their cmid.
        let sender = message
            .cmid
            .split_once('-')
            .and_then(|(uid, _)| uid.parse::<u64>().ok());
        let body_cmid = message.body.get("c").and_then(|c| c.as_str());
        if sender != Some(message.from)
            || !self.senders.contains(&message.from)
            || body_cmid != Some(message.cmid.as_str())
        {
            self.foreign += 1;
        }
        if self
            .stored
            .insert(message.cmid.clone(), message.msgid)
            .is_some()
        {
            self.stored_twice += 1;
        }
    }
}

#[derive(Deserialize)]
struct Page {
    msgs: Vec<Stored>,
    more: bool,
}

#[derive(Deserialize)]
struct Stored {
    msgid: u64,
    from: u64,
    cmid: String,
    body: serde_json::Value,
}

/// What one audit found. Anything but `stored` and `confirmed` must be 0.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Audit {
    /// Messages in storage.
    pub stored: u64,
    /// Messages confirmed (`sent`) to the senders by the time the audit began.
    pub confirmed: u64,
    /// Confirmed but not stored.
    pub lost: u64,
    /// Stored with another msgid than the one confirmed.
    pub wrong_msgid: u64,
    /// A (sender, cmid) stored more than once.
    pub stored_twice: u64,
    /// Msgids out of the dense sequence 1, 2, 3…
    pub gaps: u64,
    /// Stored messages no sender of the group sent (or with a body not their own).
    pub foreign: u64,
}

impl Audit {
    pub fn clean(&self) -> bool {
        self.lost + self.wrong_msgid + self.stored_twice + self.gaps + self.foreign == 0
    }
}

/// Checks storage against `confirmed`, a snapshot of the ledger taken before the audit
/// begins (so everything in it was committed). `from_scratch`: read every group again from
/// msgid 1 instead of only what was added since the last audit.
pub async fn audit(
    target: &Target,
    groups: &mut [GroupAudit],
    confirmed: &HashMap<(u64, String), u64>,
    from_scratch: bool,
) -> Result<Audit> {
    let mut found = Audit {
        confirmed: confirmed.len() as u64,
        ..Audit::default()
    };
    let mut by_gid = HashMap::new();
    for group in groups.iter_mut() {
        if from_scratch {
            *group = GroupAudit::new(
                group.gid,
                std::mem::take(&mut group.token),
                std::mem::take(&mut group.senders),
            );
        }
        group.read_new(target).await?;
        found.stored += group.stored.len() as u64;
        found.gaps += group.gaps;
        found.stored_twice += group.stored_twice;
        found.foreign += group.foreign;
        by_gid.insert(group.gid, &group.stored);
    }
    for ((gid, cmid), msgid) in confirmed {
        match by_gid.get(gid).and_then(|stored| stored.get(cmid)) {
            None => found.lost += 1,
            Some(stored) if stored != msgid => found.wrong_msgid += 1,
            Some(_) => {}
        }
    }
    Ok(found)
}
