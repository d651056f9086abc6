//! The versioned sync model (seed 002, `docs/sync.md`): what a client keeps — its profile,
//! its group list, each group's members, its friends — the versions it compares, and the
//! shapes of `sync` requests, replies and `sync_notify` notices.

use serde::{Deserialize, Serialize};

use super::event::LoggedEvent;
use super::ids::{check_length, valid_id};
use super::role::Role;
use crate::error::ApiError;

/// A user's profile: each field carries the `user_info_version` at which it last changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UserInfo {
    pub uid: u64,
    pub nickname: String,
    pub avatar: String,
    pub signature: String,
    pub active: bool,
    pub user_info_version: u64,
    pub nickname_version: u64,
    pub avatar_version: u64,
    pub signature_version: u64,
}

/// A group's info; `info_version` counts changes of its name and description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct GroupInfo {
    pub gid: u64,
    pub name: String,
    pub description: String,
    pub owner: u64,
    pub info_version: u64,
}

/// A member of a group, as a snapshot lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Member {
    pub uid: u64,
    pub role: Role,
}

/// The versions of one group's member list and of its members' profiles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupVersions {
    pub gid: u64,
    #[serde(default)]
    pub user_list_version: u64,
    #[serde(default)]
    pub user_info_version: u64,
}

/// The versions of a user's group list and of the info of their groups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupListVersions {
    #[serde(default)]
    pub group_list_version: u64,
    #[serde(default)]
    pub group_info_version: u64,
}

/// The versions of a user's friend list and of their friends' profiles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FriendVersions {
    #[serde(default)]
    pub user_list_version: u64,
    #[serde(default)]
    pub user_info_version: u64,
}

/// The version of a user's own profile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileVersion {
    #[serde(default)]
    pub user_info_version: u64,
}

/// What a client holds, by version; anything absent is 0, "give me all of it".
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    #[serde(default)]
    pub me: ProfileVersion,
    #[serde(default)]
    pub group_list: GroupListVersions,
    #[serde(default)]
    pub groups: Vec<GroupVersions>,
    #[serde(default)]
    pub friends: FriendVersions,
}

/// Groups a client may name in one `sync`: more than any user belongs to.
pub const MAX_SYNC_GROUPS: usize = 10_000;

impl SyncRequest {
    pub fn validate(self) -> Result<SyncRequest, ApiError> {
        if self.groups.len() > MAX_SYNC_GROUPS {
            return Err(ApiError::bad_request(format!(
                "at most {MAX_SYNC_GROUPS} groups per sync"
            )));
        }
        self.groups
            .iter()
            .try_for_each(|g| valid_id(g.gid).map(drop))?;
        Ok(self)
    }
}

/// The answer to a `sync`: what changed since the client's versions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SyncReply {
    pub me: UserInfo,
    pub group_list: GroupListSync,
    pub groups: Vec<GroupSync>,
    pub friends: FriendSync,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GroupListSync {
    #[serde(flatten)]
    pub versions: GroupListVersions,
    pub snapshot: bool,
    /// Incremental: the groups joined, or whose info changed. Snapshot: every group.
    pub groups: Vec<GroupInfo>,
    /// Groups left (or disbanded) since the client's version.
    pub left: Vec<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GroupSync {
    #[serde(flatten)]
    pub versions: GroupVersions,
    pub snapshot: bool,
    /// Incremental only: the group's events since the client's version, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<LoggedEvent>>,
    /// Snapshot only: every member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<Member>>,
    /// Members whose profile changed (or who joined) since the client's version; all of
    /// them in a snapshot.
    pub users: Vec<UserInfo>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FriendSync {
    #[serde(flatten)]
    pub versions: FriendVersions,
    pub snapshot: bool,
    pub added: Vec<u64>,
    pub removed: Vec<u64>,
    pub users: Vec<UserInfo>,
}

/// A user's versions after a change, as the store reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserVersions {
    pub uid: u64,
    pub user_info_version: u64,
    pub group_list_version: u64,
    pub group_info_version: u64,
    pub friend_list_version: u64,
    pub friend_info_version: u64,
}

/// A `sync_notify`: new versions of what a session keeps in sync. Notices to one session
/// are merged, keeping the newest version of each part.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncNotice {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupVersions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_list: Option<GroupListVersions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub friends: Option<FriendVersions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub me: Option<ProfileVersion>,
}

impl SyncNotice {
    pub fn group(versions: GroupVersions) -> SyncNotice {
        SyncNotice {
            groups: vec![versions],
            ..SyncNotice::default()
        }
    }

    pub fn user(v: UserVersions) -> SyncNotice {
        SyncNotice {
            groups: Vec::new(),
            group_list: Some(GroupListVersions {
                group_list_version: v.group_list_version,
                group_info_version: v.group_info_version,
            }),
            friends: Some(FriendVersions {
                user_list_version: v.friend_list_version,
                user_info_version: v.friend_info_version,
            }),
            me: Some(ProfileVersion {
                user_info_version: v.user_info_version,
            }),
        }
    }

    /// Folds a later notice into this one.
    pub fn merge(&mut self, other: &SyncNotice) {
        for theirs in &other.groups {
            match self.groups.iter_mut().find(|g| g.gid == theirs.gid) {
                Some(ours) => {
                    ours.user_list_version = ours.user_list_version.max(theirs.user_list_version);
                    ours.user_info_version = ours.user_info_version.max(theirs.user_info_version);
                }
                None => self.groups.push(*theirs),
            }
        }
        if let Some(theirs) = other.group_list {
            let ours = self.group_list.get_or_insert(theirs);
            ours.group_list_version = ours.group_list_version.max(theirs.group_list_version);
            ours.group_info_version = ours.group_info_version.max(theirs.group_info_version);
        }
        if let Some(theirs) = other.friends {
            let ours = self.friends.get_or_insert(theirs);
            ours.user_list_version = ours.user_list_version.max(theirs.user_list_version);
            ours.user_info_version = ours.user_info_version.max(theirs.user_info_version);
        }
        if let Some(theirs) = other.me {
            let ours = self.me.get_or_insert(theirs);
            ours.user_info_version = ours.user_info_version.max(theirs.user_info_version);
        }
    }
}

/// Longest profile fields, in characters.
pub const MAX_NICKNAME_CHARS: usize = 64;
pub const MAX_AVATAR_CHARS: usize = 1024;
pub const MAX_SIGNATURE_CHARS: usize = 256;
/// Longest group name and description, in characters.
pub const MAX_GROUP_NAME_CHARS: usize = 128;
pub const MAX_GROUP_DESCRIPTION_CHARS: usize = 1024;

/// New values for some of a profile's fields; absent fields are left as they are.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileEdit {
    pub nickname: Option<String>,
    pub avatar: Option<String>,
    pub signature: Option<String>,
}

impl ProfileEdit {
    pub fn validate(self) -> Result<ProfileEdit, ApiError> {
        check_length("nickname", self.nickname.as_deref(), MAX_NICKNAME_CHARS)?;
        check_length("avatar", self.avatar.as_deref(), MAX_AVATAR_CHARS)?;
        check_length("signature", self.signature.as_deref(), MAX_SIGNATURE_CHARS)?;
        Ok(self)
    }
}

/// New values for a group's name and/or description.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupEdit {
    pub name: Option<String>,
    pub description: Option<String>,
}

impl GroupEdit {
    pub fn validate(self) -> Result<GroupEdit, ApiError> {
        check_length("name", self.name.as_deref(), MAX_GROUP_NAME_CHARS)?;
        check_length(
            "description",
            self.description.as_deref(),
            MAX_GROUP_DESCRIPTION_CHARS,
        )?;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(gid: u64, list: u64, info: u64) -> GroupVersions {
        GroupVersions {
            gid,
            user_list_version: list,
            user_info_version: info,
        }
    }

    #[test]
    fn merged_notices_keep_the_newest_version_of_each_part() {
        let mut notice = SyncNotice::group(group(7, 5, 2));
        notice.merge(&SyncNotice::group(group(7, 4, 3)));
        notice.merge(&SyncNotice::group(group(8, 1, 1)));
        assert_eq!(notice.groups, vec![group(7, 5, 3), group(8, 1, 1)]);
        assert_eq!(notice.me, None);
    }

    #[test]
    fn a_notice_names_only_the_parts_it_has() {
        let notice = SyncNotice::group(group(7, 5, 2));
        assert_eq!(
            serde_json::to_string(&notice).unwrap(),
            r#"{"groups":[{"gid":7,"user_list_version":5,"user_info_version":2}]}"#
        );
    }

    #[test]
    fn profile_fields_are_bounded_in_characters() {
        let edit = ProfileEdit {
            nickname: Some("é".repeat(MAX_NICKNAME_CHARS)),
            ..ProfileEdit::default()
        };
        assert!(edit.validate().is_ok());
        let edit = ProfileEdit {
            nickname: Some("é".repeat(MAX_NICKNAME_CHARS + 1)),
            ..ProfileEdit::default()
        };
        assert!(edit.validate().is_err());
    }
}
