//! Refusals: the changes the store turns down, and the sentences clients read for them. The
//! change functions of `sql/functions/` raise only a refusal's key and data; the words are
//! here.

use std::fmt;

use serde::Deserialize;

use super::role::Role;
use crate::error::{ApiError, ErrorCode};

/// Why the store turned a request down.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "refusal", rename_all = "snake_case")]
pub enum Refusal {
    /// The user was never created.
    UserMissing {
        uid: u64,
    },
    /// The user was deactivated.
    UserDeactivated {
        uid: u64,
    },
    /// A user the change names is not an active user.
    UserInactive {
        uid: u64,
    },
    /// The group does not exist, or was disbanded.
    GroupMissing {
        gid: u64,
    },
    /// The gid a group was to be created with is taken.
    GroupExists {
        gid: u64,
    },
    /// The user acting is not a member of the group.
    NotMember {
        gid: u64,
    },
    /// The user a change is about is not a member of the group.
    TargetNotMember {
        gid: u64,
        uid: u64,
    },
    /// The user acting has none of `roles` in the group.
    RoleRequired {
        gid: u64,
        roles: Vec<Role>,
        #[serde(flatten)]
        action: GroupAction,
    },
    /// No message `msgid` is stored in the group.
    MessageMissing {
        gid: u64,
        msgid: u64,
    },
    /// A member recalls only their own messages.
    RecallForbidden {
        gid: u64,
        msgid: u64,
    },
    /// A member recalls their own message only within the recall window.
    RecallWindowPassed {
        gid: u64,
        msgid: u64,
        window_ms: u64,
    },
    /// The owner leaves a group only by quitting it.
    OwnerNotRemovable,
    /// The owner's role changes only when they quit.
    OwnerRoleFixed,
    SelfFriendship,
}

/// What a user acting on a group asked to do, as a refusal words it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum GroupAction {
    AddMembers,
    /// Removing `uid`, whose role is `role` (`None`: not a member).
    RemoveMember {
        uid: u64,
        role: Option<Role>,
    },
    ChangeRoles,
    ChangeInfo,
    Disband,
}

impl Refusal {
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::UserMissing { .. }
            | Refusal::UserInactive { .. }
            | Refusal::GroupMissing { .. }
            | Refusal::TargetNotMember { .. }
            | Refusal::MessageMissing { .. } => ErrorCode::NotFound,
            Refusal::GroupExists { .. } => ErrorCode::Conflict,
            Refusal::NotMember { .. }
            | Refusal::UserDeactivated { .. }
            | Refusal::RoleRequired { .. }
            | Refusal::OwnerNotRemovable
            | Refusal::OwnerRoleFixed
            | Refusal::RecallForbidden { .. }
            | Refusal::RecallWindowPassed { .. } => ErrorCode::Forbidden,
            Refusal::SelfFriendship => ErrorCode::BadRequest,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::UserMissing { uid } => write!(f, "user {uid} does not exist"),
            Refusal::UserDeactivated { uid } => write!(f, "user {uid} is deactivated"),
            Refusal::UserInactive { uid } => {
                write!(f, "user {uid} does not exist or is deactivated")
            }
            Refusal::GroupMissing { gid } => write!(f, "group {gid} does not exist"),
            Refusal::GroupExists { gid } => write!(f, "group {gid} already exists"),
            Refusal::NotMember { gid } => write!(f, "not a member of group {gid}"),
            Refusal::TargetNotMember { gid, uid } => {
                write!(f, "user {uid} is not a member of group {gid}")
            }
            Refusal::RoleRequired { gid, roles, action } => {
                let roles: Vec<&str> = roles.iter().map(|role| role.as_str()).collect();
                let roles = roles.join(" or ");
                write!(f, "only the {roles} of group {gid} may {action}")
            }
            Refusal::MessageMissing { gid, msgid } => {
                write!(f, "message {msgid} of group {gid} does not exist")
            }
            Refusal::RecallForbidden { gid, msgid } => write!(
                f,
                "only its sender or an owner or admin of group {gid} may recall message {msgid}"
            ),
            Refusal::RecallWindowPassed {
                gid,
                msgid,
                window_ms,
            } => write!(
                f,
                "message {msgid} of group {gid} is past the recall window of {} s",
                window_ms / 1000
            ),
            Refusal::OwnerNotRemovable => {
                f.write_str("the owner cannot remove themself; quit instead")
            }
            Refusal::OwnerRoleFixed => f.write_str("the owner's role changes only when they quit"),
            Refusal::SelfFriendship => f.write_str("a user cannot befriend themself"),
        }
    }
}

impl fmt::Display for GroupAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupAction::AddMembers => f.write_str("add members"),
            GroupAction::RemoveMember { uid, role } => {
                let whom = role.map_or("user", Role::as_str);
                write!(f, "remove {whom} {uid}")
            }
            GroupAction::ChangeRoles => f.write_str("change roles"),
            GroupAction::ChangeInfo => f.write_str("change its info"),
            GroupAction::Disband => f.write_str("disband it"),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        ApiError::new(refusal.code(), refusal.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role_required(roles: &[Role], action: GroupAction) -> Refusal {
        Refusal::RoleRequired {
            gid: 7,
            roles: roles.to_vec(),
            action,
        }
    }

    /// The texts clients have always read, word for word.
    #[test]
    fn each_refusal_reads_as_clients_know_it() {
        let cases = [
            (Refusal::UserMissing { uid: 4 }, "user 4 does not exist"),
            (Refusal::UserDeactivated { uid: 4 }, "user 4 is deactivated"),
            (
                Refusal::UserInactive { uid: 4 },
                "user 4 does not exist or is deactivated",
            ),
            (Refusal::GroupMissing { gid: 7 }, "group 7 does not exist"),
            (Refusal::GroupExists { gid: 7 }, "group 7 already exists"),
            (Refusal::NotMember { gid: 7 }, "not a member of group 7"),
            (
                Refusal::TargetNotMember { gid: 7, uid: 4 },
                "user 4 is not a member of group 7",
            ),
            (
                role_required(&[Role::Owner, Role::Admin], GroupAction::AddMembers),
                "only the owner or admin of group 7 may add members",
            ),
            (
                role_required(
                    &[Role::Owner, Role::Admin],
                    GroupAction::RemoveMember {
                        uid: 4,
                        role: Some(Role::Member),
                    },
                ),
                "only the owner or admin of group 7 may remove member 4",
            ),
            (
                role_required(
                    &[Role::Owner, Role::Admin],
                    GroupAction::RemoveMember { uid: 4, role: None },
                ),
                "only the owner or admin of group 7 may remove user 4",
            ),
            (
                role_required(
                    &[Role::Owner],
                    GroupAction::RemoveMember {
                        uid: 4,
                        role: Some(Role::Admin),
                    },
                ),
                "only the owner of group 7 may remove admin 4",
            ),
            (
                role_required(&[Role::Owner], GroupAction::ChangeRoles),
                "only the owner of group 7 may change roles",
            ),
            (
                role_required(&[Role::Owner, Role::Admin], GroupAction::ChangeInfo),
                "only the owner or admin of group 7 may change its info",
            ),
            (
                role_required(&[Role::Owner], GroupAction::Disband),
                "only the owner of group 7 may disband it",
            ),
            (
                Refusal::OwnerNotRemovable,
                "the owner cannot remove themself; quit instead",
            ),
            (
                Refusal::OwnerRoleFixed,
                "the owner's role changes only when they quit",
            ),
            (Refusal::SelfFriendship, "a user cannot befriend themself"),
            (
                Refusal::MessageMissing { gid: 7, msgid: 9 },
                "message 9 of group 7 does not exist",
            ),
            (
                Refusal::RecallForbidden { gid: 7, msgid: 9 },
                "only its sender or an owner or admin of group 7 may recall message 9",
            ),
            (
                Refusal::RecallWindowPassed {
                    gid: 7,
                    msgid: 9,
                    window_ms: 120_000,
                },
                "message 9 of group 7 is past the recall window of 120 s",
            ),
        ];
        for (refusal, text) in cases {
            assert_eq!(refusal.to_string(), text, "{refusal:?}");
        }
    }

    #[test]
    fn each_refusal_has_the_code_of_its_kind() {
        let cases = [
            (Refusal::UserInactive { uid: 4 }, ErrorCode::NotFound),
            (Refusal::GroupExists { gid: 7 }, ErrorCode::Conflict),
            (
                role_required(&[Role::Owner], GroupAction::Disband),
                ErrorCode::Forbidden,
            ),
            (Refusal::SelfFriendship, ErrorCode::BadRequest),
        ];
        for (refusal, code) in cases {
            let error = ApiError::from(refusal.clone());
            assert_eq!((error.code, error.message), (code, refusal.to_string()));
        }
    }
}
