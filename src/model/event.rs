//! Group events: what happened to a group's members or info, as its event log keeps it and
//! clients see it (pushed as `event` frames, or in a sync's `events`).

use serde::{Deserialize, Serialize};

use super::role::Role;

/// One change of a group. `by` is the user who acted, absent when the admin API did (or
/// when nobody did: an heir's promotion, a group disbanded by its last member leaving).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum GroupEvent {
    /// The group was created; its first event. The founding members get no `member_added`.
    GroupCreated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<u64>,
        name: String,
        description: String,
        owner: u64,
        /// The founding members, the owner included.
        uids: Vec<u64>,
    },
    MemberAdded {
        uid: u64,
        role: Role,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<u64>,
    },
    MemberRemoved {
        uid: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<u64>,
        reason: Removal,
    },
    RoleChanged {
        uid: u64,
        role: Role,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<u64>,
    },
    /// The group's name or description changed: both as they are now.
    GroupUpdated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<u64>,
        name: String,
        description: String,
    },
    GroupDisbanded {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<u64>,
    },
    /// Message `msgid` was recalled: pulls now return its tombstone.
    MessageRecalled {
        msgid: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<u64>,
    },
}

/// Why a member left a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Removal {
    /// Removed by someone else (or the admin API).
    Removed,
    /// Quit.
    Left,
    /// The user was deactivated.
    Deactivated,
}

/// A group event with its place in the group's log: `version` is the group's
/// `user_list_version` after it, `ts` the server's time of the change. This is the shape of
/// `group_events.body`, of the `event` frame (with its `type`) and of a sync's `events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoggedEvent {
    pub gid: u64,
    pub version: u64,
    pub ts: i64,
    #[serde(flatten)]
    pub event: GroupEvent,
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn logged(event: GroupEvent) -> LoggedEvent {
        LoggedEvent {
            gid: 7,
            version: 12,
            ts: 1_732_000_000_000,
            event,
        }
    }

    fn as_json(event: &LoggedEvent) -> Value {
        serde_json::to_value(event).unwrap()
    }

    #[test]
    fn an_event_is_flat_with_its_kind_and_place_in_the_log() {
        let removed = logged(GroupEvent::MemberRemoved {
            uid: 20,
            by: Some(1),
            reason: Removal::Deactivated,
        });
        assert_eq!(
            as_json(&removed),
            json!({"event": "member_removed", "gid": 7, "version": 12, "uid": 20, "by": 1,
                   "reason": "deactivated", "ts": 1_732_000_000_000_i64})
        );
    }

    #[test]
    fn by_is_left_out_when_nobody_acted() {
        let promoted = logged(GroupEvent::RoleChanged {
            uid: 3,
            role: Role::Owner,
            by: None,
        });
        assert_eq!(
            as_json(&promoted),
            json!({"event": "role_changed", "gid": 7, "version": 12, "uid": 3, "role": "owner",
                   "ts": 1_732_000_000_000_i64})
        );
        let disbanded = logged(GroupEvent::GroupDisbanded { by: None });
        assert_eq!(
            as_json(&disbanded),
            json!({"event": "group_disbanded", "gid": 7, "version": 12,
                   "ts": 1_732_000_000_000_i64})
        );
    }

    /// Bodies as `herald_event` stored them (nulls stripped), before and after effects were
    /// typed: every kind reads back, and writes back as it was.
    #[test]
    fn stored_bodies_of_every_kind_read_back_as_they_were() {
        let bodies = [
            json!({"event": "group_created", "gid": 7, "version": 1, "ts": 5, "name": "g",
                   "description": "", "owner": 1, "uids": [1, 2]}),
            json!({"event": "group_created", "gid": 7, "version": 1, "ts": 5, "by": 1,
                   "name": "g", "description": "d", "owner": 1, "uids": [1]}),
            json!({"event": "member_added", "gid": 7, "version": 2, "ts": 5, "uid": 3,
                   "role": "member"}),
            json!({"event": "member_added", "gid": 7, "version": 2, "ts": 5, "uid": 3,
                   "role": "member", "by": 1}),
            json!({"event": "member_removed", "gid": 7, "version": 3, "ts": 5, "uid": 3,
                   "by": 3, "reason": "left"}),
            json!({"event": "member_removed", "gid": 7, "version": 3, "ts": 5, "uid": 3,
                   "reason": "removed"}),
            json!({"event": "role_changed", "gid": 7, "version": 4, "ts": 5, "uid": 2,
                   "role": "admin", "by": 1}),
            json!({"event": "group_updated", "gid": 7, "version": 5, "ts": 5, "by": 2,
                   "name": "g2", "description": "d"}),
            json!({"event": "group_disbanded", "gid": 7, "version": 6, "ts": 5, "by": 1}),
            json!({"event": "message_recalled", "gid": 7, "version": 7, "ts": 5, "msgid": 12,
                   "by": 1}),
            json!({"event": "message_recalled", "gid": 7, "version": 7, "ts": 5, "msgid": 12}),
        ];
        for body in bodies {
            let event: LoggedEvent =
                serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(as_json(&event), body);
        }
    }

    #[test]
    fn an_unknown_kind_or_reason_does_not_read() {
        for body in [
            json!({"event": "member_renamed", "gid": 7, "version": 1, "ts": 5, "uid": 3}),
            json!({"event": "member_removed", "gid": 7, "version": 1, "ts": 5, "uid": 3,
                   "reason": "vanished"}),
            json!({"event": "member_added", "gid": 7, "version": 1, "ts": 5, "uid": 3}),
        ] {
            assert!(
                serde_json::from_value::<LoggedEvent>(body.clone()).is_err(),
                "{body}"
            );
        }
    }
}
