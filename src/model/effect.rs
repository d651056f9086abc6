//! The effects of a committed change: what it means for the live gateway. The store decodes
//! them from what the change functions of `sql/functions/` return; the publisher turns them
//! into deliveries. They serialise too, to be carried between nodes.

use serde::{Deserialize, Serialize};

use super::event::LoggedEvent;
use super::sync::{GroupVersions, UserVersions};

/// One effect of a change; a change reports them in the order they happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// A user became a member: their sessions start receiving the group.
    Joined { gid: u64, uid: u64 },
    /// An event was appended to a group's log: its online members are told.
    Event(LoggedEvent),
    /// A member left: after the events before it, their sessions stop receiving the group.
    Left { gid: u64, uid: u64 },
    /// The group was disbanded: nobody receives it any more.
    Disbanded { gid: u64 },
    /// A group's new versions, for its online members' `sync_notify`.
    GroupVersions(GroupVersions),
    /// A user's new versions, for their sessions' `sync_notify`.
    UserVersions(UserVersions),
    /// `from` asked `to` to be friends: `to`'s sessions are told.
    FriendRequest { from: u64, to: u64, ts: i64 },
    /// The user was deactivated: their sessions close with 4003.
    Deactivated { uid: u64 },
}

impl Effect {
    /// The uids of the members a change added.
    pub fn joined(effects: &[Effect]) -> Vec<u64> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Joined { uid, .. } => Some(*uid),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::event::{GroupEvent, Removal};
    use crate::model::Role;

    fn every_kind() -> Vec<Effect> {
        vec![
            Effect::Joined { gid: 7, uid: 3 },
            Effect::Event(LoggedEvent {
                gid: 7,
                version: 4,
                ts: 1_732_000_000_000,
                event: GroupEvent::MemberAdded {
                    uid: 3,
                    role: Role::Member,
                    by: Some(1),
                },
            }),
            Effect::Event(LoggedEvent {
                gid: 7,
                version: 5,
                ts: 1_732_000_000_001,
                event: GroupEvent::MemberRemoved {
                    uid: 3,
                    by: None,
                    reason: Removal::Removed,
                },
            }),
            Effect::Left { gid: 7, uid: 3 },
            Effect::Disbanded { gid: 7 },
            Effect::GroupVersions(GroupVersions {
                gid: 7,
                user_list_version: 5,
                user_info_version: 2,
            }),
            Effect::UserVersions(UserVersions {
                uid: 3,
                user_info_version: 1,
                group_list_version: 2,
                group_info_version: 3,
                friend_list_version: 4,
                friend_info_version: 5,
            }),
            Effect::FriendRequest {
                from: 3,
                to: 4,
                ts: 1_732_000_000_002,
            },
            Effect::Deactivated { uid: 3 },
            Effect::Event(LoggedEvent {
                gid: 7,
                version: 6,
                ts: 1_732_000_000_003,
                event: GroupEvent::MessageRecalled {
                    msgid: 12,
                    by: Some(3),
                },
            }),
        ]
    }

    #[test]
    fn every_effect_survives_a_round_trip() {
        for effect in every_kind() {
            let text = serde_json::to_string(&effect).unwrap();
            let back: Effect =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(back, effect, "{text}");
        }
    }

    /// Effects exactly as the change functions build them (`sql/functions/`).
    #[test]
    fn effects_decode_from_what_the_sql_returns() {
        let from_sql = [
            json!({"effect": "joined", "gid": 7, "uid": 3}),
            json!({"effect": "event", "event": "member_added", "gid": 7, "version": 4,
                   "ts": 1_732_000_000_000_i64, "uid": 3, "role": "member", "by": 1}),
            json!({"effect": "event", "event": "member_removed", "gid": 7, "version": 5,
                   "ts": 1_732_000_000_001_i64, "uid": 3, "reason": "removed"}),
            json!({"effect": "left", "gid": 7, "uid": 3}),
            json!({"effect": "disbanded", "gid": 7}),
            json!({"effect": "group_versions", "gid": 7, "user_list_version": 5,
                   "user_info_version": 2}),
            json!({"effect": "user_versions", "uid": 3, "user_info_version": 1,
                   "group_list_version": 2, "group_info_version": 3, "friend_list_version": 4,
                   "friend_info_version": 5}),
            json!({"effect": "friend_request", "from": 3, "to": 4, "ts": 1_732_000_000_002_i64}),
            json!({"effect": "deactivated", "uid": 3}),
            json!({"effect": "event", "event": "message_recalled", "gid": 7, "version": 6,
                   "ts": 1_732_000_000_003_i64, "msgid": 12, "by": 3}),
        ];
        let decoded: Vec<Effect> = from_sql
            .iter()
            .map(|value| {
                serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{value}: {e}"))
            })
            .collect();
        assert_eq!(decoded, every_kind());
    }

    #[test]
    fn an_unknown_or_incomplete_effect_does_not_decode() {
        for value in [
            json!({"effect": "frame", "uid": 3, "frame": {"type": "friend_request"}}),
            json!({"effect": "joined", "gid": 7}),
            json!({"effect": "event", "gid": 7, "version": 4, "ts": 1}),
            json!({"gid": 7, "uid": 3}),
        ] {
            assert!(
                serde_json::from_value::<Effect>(value.clone()).is_err(),
                "{value}"
            );
        }
    }

    #[test]
    fn joined_lists_the_members_added() {
        assert_eq!(Effect::joined(&every_kind()), [3]);
    }
}
