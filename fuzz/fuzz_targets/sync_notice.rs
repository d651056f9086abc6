//! `SyncNotice::merge`, which coalesces a session's notices: whatever notices arrive, in
//! whatever order or grouping, the notice written keeps per part (each group, the group
//! list, the friends, the profile) the newest version of each field, and nothing else.
#![no_main]

use std::collections::BTreeMap;

use herald::protocol::ServerFrame;
use herald::sync::{FriendVersions, GroupListVersions, GroupVersions, ProfileVersion, SyncNotice};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    if let Ok(notices) = notices(&mut u) {
        check(&notices);
    }
});

fn check(notices: &[SyncNotice]) {
    let expected = Effect::of_all(notices);

    // As a session does: the first notice kept, later ones folded in, in arrival order.
    let forward = fold(notices.iter());
    assert_eq!(Effect::of(&forward), expected);
    // A notice that names each group once still does after merging.
    if !has_repeats(&notices[0]) {
        assert!(!has_repeats(&forward));
    }
    let backward = fold(notices.iter().rev());
    assert_eq!(Effect::of(&backward), expected);

    // Grouping does not matter either: fold each half, then merge the halves.
    let (left, right) = notices.split_at(notices.len() / 2);
    let mut halves = fold(left.iter());
    halves.merge(&fold(right.iter()));
    assert_eq!(Effect::of(&halves), expected);

    // Folding into an empty notice never repeats a group.
    let mut from_empty = SyncNotice::default();
    for notice in notices {
        from_empty.merge(notice);
    }
    assert!(!has_repeats(&from_empty));
    assert_eq!(Effect::of(&from_empty), expected);

    let frame: Value = serde_json::from_str(&ServerFrame::SyncNotify(&from_empty).encode())
        .expect("sync_notify frames are JSON");
    assert_eq!(frame["type"], "sync_notify");
    let groups = frame
        .get("groups")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    assert_eq!(groups, from_empty.groups.len());
}

fn fold<'a>(mut notices: impl Iterator<Item = &'a SyncNotice>) -> SyncNotice {
    let mut merged = notices.next().cloned().unwrap_or_default();
    for notice in notices {
        merged.merge(notice);
    }
    merged
}

fn has_repeats(notice: &SyncNotice) -> bool {
    let mut gids: Vec<u64> = notice.groups.iter().map(|g| g.gid).collect();
    gids.sort_unstable();
    gids.windows(2).any(|w| w[0] == w[1])
}

/// What a client learns from a notice: per part, the newest version of each field.
#[derive(Debug, Default, PartialEq, Eq)]
struct Effect {
    groups: BTreeMap<u64, (u64, u64)>,
    group_list: Option<(u64, u64)>,
    friends: Option<(u64, u64)>,
    me: Option<u64>,
}

impl Effect {
    fn of(notice: &SyncNotice) -> Effect {
        Effect::of_all(std::slice::from_ref(notice))
    }

    fn of_all(notices: &[SyncNotice]) -> Effect {
        let max2 = |a: Option<(u64, u64)>, b: (u64, u64)| match a {
            Some(a) => (a.0.max(b.0), a.1.max(b.1)),
            None => b,
        };
        let mut effect = Effect::default();
        for notice in notices {
            for g in &notice.groups {
                let seen = effect.groups.get(&g.gid).copied();
                let newest = max2(seen, (g.user_list_version, g.user_info_version));
                effect.groups.insert(g.gid, newest);
            }
            if let Some(l) = notice.group_list {
                let newest = (l.group_list_version, l.group_info_version);
                effect.group_list = Some(max2(effect.group_list, newest));
            }
            if let Some(f) = notice.friends {
                let newest = (f.user_list_version, f.user_info_version);
                effect.friends = Some(max2(effect.friends, newest));
            }
            if let Some(me) = notice.me {
                effect.me = Some(
                    effect
                        .me
                        .map_or(me.user_info_version, |v| v.max(me.user_info_version)),
                );
            }
        }
        effect
    }
}

fn notices(u: &mut Unstructured<'_>) -> Result<Vec<SyncNotice>> {
    let count = u.int_in_range(1..=8)?;
    (0..count).map(|_| notice(u)).collect()
}

fn notice(u: &mut Unstructured<'_>) -> Result<SyncNotice> {
    let groups = u.int_in_range(0..=6)?;
    Ok(SyncNotice {
        groups: (0..groups)
            .map(|_| {
                Ok(GroupVersions {
                    // Few gids, so notices name the same groups.
                    gid: u.int_in_range(1..=8)?,
                    user_list_version: version(u)?,
                    user_info_version: version(u)?,
                })
            })
            .collect::<Result<_>>()?,
        group_list: if u.arbitrary()? {
            Some(GroupListVersions {
                group_list_version: version(u)?,
                group_info_version: version(u)?,
            })
        } else {
            None
        },
        friends: if u.arbitrary()? {
            Some(FriendVersions {
                user_list_version: version(u)?,
                user_info_version: version(u)?,
            })
        } else {
            None
        },
        me: if u.arbitrary()? {
            Some(ProfileVersion {
                user_info_version: version(u)?,
            })
        } else {
            None
        },
    })
}

/// Mostly small versions, so they tie and cross; sometimes any u64.
fn version(u: &mut Unstructured<'_>) -> Result<u64> {
    if u.ratio(1, 8)? {
        u.arbitrary()
    } else {
        u.int_in_range(0..=16)
    }
}
