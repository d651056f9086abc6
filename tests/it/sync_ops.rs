//! Versioned sync and the operations that feed it: profiles with per-field versions, group
//! operations by users (roles, quits, disbanding, succession), friends, conversations and
//! deactivation. Each test checks what an online session is pushed and what `sync` returns
//! afterwards, and that concurrent duplicates collapse into one.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{eventually, respond, sql, Client, Server, WAIT};

// ---- profiles ----

/// Only the changed field's version moves, to the profile's new `user_info_version`.
#[tokio::test]
async fn changing_the_nickname_bumps_the_profile_and_nickname_versions_only() {
    let server = Server::start().await;
    server.users(&[1]).await;
    let before = me(&server, 1).await;
    assert_eq!(before["uid"], 1, "{before}");
    assert_eq!(before["active"], true, "{before}");

    let after = patch_me(&server, 1, json!({"nickname": "ann"})).await;
    assert_eq!(after["nickname"], "ann", "{after}");
    assert!(
        number(&after, "user_info_version") > number(&before, "user_info_version"),
        "the profile version did not move: {before} -> {after}"
    );
    assert_eq!(
        after["nickname_version"], after["user_info_version"],
        "the nickname carries the version it changed at: {after}"
    );
    for field in ["avatar", "signature", "avatar_version", "signature_version"] {
        assert_eq!(after[field], before[field], "{field}: {before} -> {after}");
    }
    assert_eq!(me(&server, 1).await, after, "GET /v1/me after the PATCH");
    let synced = sync(&server, 1, json!({})).await;
    assert_eq!(synced["me"], after, "sync's me after the PATCH");

    // Two fields at once, beside an unchanged one: both carry the one new version.
    let both = patch_me(
        &server,
        1,
        json!({"nickname": "ann", "avatar": "https://img/1.png", "signature": "hi"}),
    )
    .await;
    let now = number(&both, "user_info_version");
    assert!(
        now > number(&after, "user_info_version"),
        "{after} -> {both}"
    );
    assert_eq!(number(&both, "avatar_version"), now, "{both}");
    assert_eq!(number(&both, "signature_version"), now, "{both}");
    assert_eq!(
        both["nickname_version"], after["nickname_version"],
        "an unchanged nickname kept its version: {both}"
    );
    assert_eq!(
        (&both["avatar"], &both["signature"]),
        (&json!("https://img/1.png"), &json!("hi"))
    );
}

#[tokio::test]
async fn an_edit_that_changes_nothing_moves_no_version() {
    let server = Server::start().await;
    server.users(&[1]).await;
    let edited = patch_me(&server, 1, json!({"nickname": "ann", "avatar": "a.png"})).await;

    for body in [
        json!({"nickname": "ann"}),
        json!({"avatar": "a.png", "nickname": "ann"}),
        json!({"nickname": "ann", "avatar": "a.png", "signature": edited["signature"]}),
    ] {
        let again = patch_me(&server, 1, body.clone()).await;
        assert_eq!(
            again, edited,
            "PATCH {body} changed nothing but moved a version"
        );
    }
    let (status, body) = server
        .admin_post(
            "/v1/admin/users",
            json!({"users": [{"uid": 1, "nickname": "ann"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        me(&server, 1).await,
        edited,
        "an admin upsert of the same nickname"
    );
}

#[tokio::test]
async fn bad_profile_edits_are_refused_with_400_and_change_nothing() {
    let server = Server::start().await;
    server.users(&[1]).await;
    let edited = patch_me(&server, 1, json!({"nickname": "ann"})).await;

    for (body, what) in [
        (
            json!({"nickname": "a".repeat(65)}),
            "a 65-character nickname",
        ),
        (
            json!({"avatar": "a".repeat(1025)}),
            "a 1025-character avatar",
        ),
        (
            json!({"signature": "a".repeat(257)}),
            "a 257-character signature",
        ),
        (json!({"nick": "bo"}), "an unknown field"),
        (
            json!({"nickname": "bo", "age": 3}),
            "an unknown field beside a known one",
        ),
        (json!({"nickname": 5}), "a number for a nickname"),
    ] {
        let got = server.user(1, Method::PATCH, "/v1/me", Some(body)).await;
        assert_http_error(&got, 400, "bad_request", what);
    }
    assert_eq!(
        me(&server, 1).await,
        edited,
        "a refused edit changed the profile"
    );

    // The limits count characters, not bytes.
    let longest = patch_me(
        &server,
        1,
        json!({"nickname": "é".repeat(64), "signature": "字".repeat(256)}),
    )
    .await;
    assert_eq!(longest["nickname"], "é".repeat(64), "{longest}");
    assert_eq!(longest["signature"], "字".repeat(256), "{longest}");
}

/// The admin API's profile upsert versions fields as `PATCH /v1/me` does, keeps absent fields
/// and notifies the user's sessions.
#[tokio::test]
async fn an_admin_upsert_with_a_new_nickname_bumps_the_versions_as_patch_does() {
    let server = Server::start().await;
    server.users(&[1]).await;
    let mut ann = server.connect(1).await;
    let before = patch_me(&server, 1, json!({"avatar": "a.png"})).await;

    let (status, body) = server
        .admin_post(
            "/v1/admin/users",
            json!({"users": [{"uid": 1, "nickname": "ann"}]}),
        )
        .await;
    assert_eq!((status, &body), (200, &json!({"upserted": 1})), "{body}");
    let after = me(&server, 1).await;
    assert_eq!(after["nickname"], "ann", "{after}");
    assert_eq!(after["avatar"], "a.png", "an absent field is kept: {after}");
    let now = number(&after, "user_info_version");
    assert!(
        now > number(&before, "user_info_version"),
        "{before} -> {after}"
    );
    assert_eq!(number(&after, "nickname_version"), now, "{after}");
    assert_eq!(after["avatar_version"], before["avatar_version"], "{after}");
    assert_eq!(
        after["signature_version"], before["signature_version"],
        "{after}"
    );
    frames_until(
        &mut ann,
        "a sync_notify of the new profile version",
        |seen| {
            seen.last()
                .is_some_and(|f| f["type"] == "sync_notify" && f["me"]["user_info_version"] == now)
        },
    )
    .await;
}

// ---- group operations by users ----

/// The creator owns the new group; `group_created` opens its log at version 1.
#[tokio::test]
async fn a_user_creates_a_group_owns_it_and_its_log_opens_with_group_created() {
    let server = Server::start().await;
    server.users(&[1, 2, 3]).await;
    let mut ann = server.connect(1).await;
    let mut bob = server.connect(2).await;

    let body = json!({"name": "trip", "description": "june", "members": [2, 3]});
    let (status, info) = server.user(1, Method::POST, "/v1/groups", Some(body)).await;
    assert_eq!(status, 201, "{info}");
    let gid = info["gid"].as_u64().expect("a gid");
    assert_eq!(
        (&info["name"], &info["description"], &info["owner"]),
        (&json!("trip"), &json!("june"), &json!(1)),
        "{info}"
    );
    assert!(info["info_version"].is_u64(), "{info}");

    for client in [&mut ann, &mut bob] {
        let created = event(client, "group_created", gid, None).await;
        assert_eq!(created["version"], 1, "the log's first event: {created}");
        assert_eq!(created["owner"], 1, "{created}");
        assert_eq!(created["by"], 1, "{created}");
        assert_eq!(
            (&created["name"], &created["description"]),
            (&json!("trip"), &json!("june")),
            "{created}"
        );
        assert_eq!(ids(&created["uids"]), vec![1, 2, 3], "{created}");
        assert!(created["ts"].is_u64(), "{created}");
    }
    let seen = ping(&mut bob, "after-create").await;
    assert!(
        !seen.iter().any(|f| is_event(f, "member_added", gid, None)),
        "founders get no member_added: {seen:?}"
    );

    let synced = sync(&server, 2, json!({})).await;
    let listed = listed_group(&synced, gid).expect("the group in bob's group list");
    assert_eq!(
        (&listed["name"], &listed["description"], &listed["owner"]),
        (&json!("trip"), &json!("june"), &json!(1)),
        "{listed}"
    );
    let entry = group_entry(&synced, gid).expect("the group among bob's groups");
    assert_eq!(entry["snapshot"], true, "{entry}");
    assert_eq!(entry["user_list_version"], 1, "only group_created: {entry}");
    assert_eq!(
        roles(entry),
        vec![
            (1, "owner".into()),
            (2, "member".into()),
            (3, "member".into())
        ]
    );
    assert_eq!(uids(&entry["users"]), vec![1, 2, 3], "{entry}");
    assert!(
        list(&entry["events"]).is_empty(),
        "a snapshot has no events"
    );

    // The founders' open sessions are in the group at once.
    let sent = ann.send_msg(gid, "c-1", json!({"text": "hi"})).await;
    assert_eq!(sent["type"], "sent", "{sent}");
    assert_eq!(bob.msgs(gid, 1).await[0]["msgid"], sent["msgid"]);

    // A member that is no user: 404 and no group.
    let body = json!({"name": "x", "description": "", "members": [2, 99]});
    let got = server.user(1, Method::POST, "/v1/groups", Some(body)).await;
    assert_http_error(&got, 404, "not_found", "a group with an unknown member");
    assert_eq!(my_gids(&server, 1).await, vec![gid]);
}

#[tokio::test]
async fn the_owner_and_admins_edit_the_group_info_and_a_plain_member_is_refused() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2, 3]).await;
    let mut cid = server.connect(3).await;
    let path = format!("/v1/groups/{gid}");

    let role = json!({"role": "admin"});
    let got = server
        .user(
            1,
            Method::PUT,
            &format!("/v1/groups/{gid}/members/2/role"),
            Some(role),
        )
        .await;
    assert_eq!(got.0, 204, "{}", got.1);
    let changed = event(&mut cid, "role_changed", gid, Some(2)).await;
    assert_eq!(
        (&changed["role"], &changed["by"], &changed["version"]),
        (&json!("admin"), &json!(1), &json!(2)),
        "{changed}"
    );

    let by_owner = ok(
        server
            .user(1, Method::PATCH, &path, Some(json!({"name": "renamed"})))
            .await,
        200,
        "PATCH by the owner",
    );
    assert_eq!(
        (&by_owner["gid"], &by_owner["name"], &by_owner["owner"]),
        (&json!(gid), &json!("renamed"), &json!(1)),
        "{by_owner}"
    );
    let updated = event(&mut cid, "group_updated", gid, None).await;
    assert_eq!(
        (&updated["name"], &updated["by"], &updated["version"]),
        (&json!("renamed"), &json!(1), &json!(3)),
        "{updated}"
    );
    assert_eq!(updated["description"], by_owner["description"], "{updated}");

    let by_admin = ok(
        server
            .user(
                2,
                Method::PATCH,
                &path,
                Some(json!({"description": "about"})),
            )
            .await,
        200,
        "PATCH by an admin",
    );
    assert_eq!(
        (&by_admin["name"], &by_admin["description"]),
        (&json!("renamed"), &json!("about")),
        "{by_admin}"
    );
    assert!(
        number(&by_admin, "info_version") > number(&by_owner, "info_version"),
        "{by_owner} -> {by_admin}"
    );
    let updated = event(&mut cid, "group_updated", gid, None).await;
    assert_eq!(
        (
            &updated["name"],
            &updated["description"],
            &updated["by"],
            &updated["version"]
        ),
        (&json!("renamed"), &json!("about"), &json!(2), &json!(4)),
        "{updated}"
    );

    let got = server
        .user(3, Method::PATCH, &path, Some(json!({"name": "mine"})))
        .await;
    assert_http_error(&got, 403, "forbidden", "PATCH by a plain member");

    // The same values again: 200, nothing logged.
    let same = json!({"name": "renamed", "description": "about"});
    let unchanged = ok(
        server.user(1, Method::PATCH, &path, Some(same)).await,
        200,
        "PATCH with the same values",
    );
    assert_eq!(unchanged, by_admin, "nothing changed");
    let synced = sync(&server, 3, json!({})).await;
    let entry = group_entry(&synced, gid).expect("the group");
    assert_eq!(entry["user_list_version"], 4, "no event logged: {entry}");
    let listed = listed_group(&synced, gid).expect("the group listed");
    assert_eq!(
        (&listed["name"], &listed["description"]),
        (&json!("renamed"), &json!("about")),
        "{listed}"
    );
}

#[tokio::test]
async fn the_owner_and_admins_add_members_and_a_plain_member_is_refused() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2, 3]).await;
    server.users(&[4, 5]).await;
    make_admin(&server, gid, 2).await;
    let mut ann = server.connect(1).await;
    let path = format!("/v1/groups/{gid}/members");

    let got = server
        .user(3, Method::POST, &path, Some(json!({"uids": [4]})))
        .await;
    assert_http_error(&got, 403, "forbidden", "an add by a plain member");

    let added = ok(
        server
            .user(2, Method::POST, &path, Some(json!({"uids": [4]})))
            .await,
        200,
        "an add by an admin",
    );
    assert_eq!(added, json!({"added": [4]}));
    let event4 = event(&mut ann, "member_added", gid, Some(4)).await;
    assert_eq!(
        (&event4["role"], &event4["by"]),
        (&json!("member"), &json!(2)),
        "{event4}"
    );

    let added = ok(
        server
            .user(1, Method::POST, &path, Some(json!({"uids": [4, 5]})))
            .await,
        200,
        "an add by the owner",
    );
    assert_eq!(added, json!({"added": [5]}), "only those not yet members");
    let event5 = event(&mut ann, "member_added", gid, Some(5)).await;
    assert_eq!(event5["by"], 1, "{event5}");
    assert_eq!(
        number(&event5, "version"),
        number(&event4, "version") + 1,
        "{event4} then {event5}"
    );

    assert_eq!(
        roles_in_full_sync(&server, 1, gid).await,
        vec![
            (1, "owner".into()),
            (2, "admin".into()),
            (3, "member".into()),
            (4, "member".into()),
            (5, "member".into())
        ]
    );
}

#[tokio::test]
async fn the_owner_removes_admins_admins_remove_only_members_and_a_self_removal_is_a_quit() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2, 3, 4, 5]).await;
    make_admin(&server, gid, 2).await;
    make_admin(&server, gid, 3).await;
    let mut ann = server.connect(1).await;
    let remove = |uid: u64| format!("/v1/groups/{gid}/members/{uid}");

    for (by, target, what) in [
        (2, 3, "an admin removing an admin"),
        (2, 1, "an admin removing the owner"),
        (4, 5, "a member removing a member"),
        (4, 2, "a member removing an admin"),
    ] {
        let got = server.user(by, Method::DELETE, &remove(target), None).await;
        assert_http_error(&got, 403, "forbidden", what);
    }

    let got = server.user(2, Method::DELETE, &remove(4), None).await;
    assert_eq!(got.0, 204, "an admin removes a member: {}", got.1);
    let removed = event(&mut ann, "member_removed", gid, Some(4)).await;
    assert_eq!(
        (&removed["reason"], &removed["by"]),
        (&json!("removed"), &json!(2)),
        "{removed}"
    );

    let got = server.user(1, Method::DELETE, &remove(3), None).await;
    assert_eq!(got.0, 204, "the owner removes an admin: {}", got.1);
    let removed = event(&mut ann, "member_removed", gid, Some(3)).await;
    assert_eq!(
        (&removed["reason"], &removed["by"]),
        (&json!("removed"), &json!(1)),
        "{removed}"
    );

    // Removing a non-member is a no-op; removing oneself is a quit.
    let got = server.user(2, Method::DELETE, &remove(4), None).await;
    assert_eq!(got.0, 204, "removing a non-member: {}", got.1);
    let got = server.user(5, Method::DELETE, &remove(5), None).await;
    assert_eq!(got.0, 204, "a self-removal: {}", got.1);
    let seen = frames_until(&mut ann, "member 5's quit", |seen| {
        seen.last()
            .is_some_and(|f| is_event(f, "member_removed", gid, Some(5)))
    })
    .await;
    let quit = seen.last().unwrap();
    assert_eq!(quit["reason"], "left", "{quit}");
    assert!(
        !seen
            .iter()
            .any(|f| is_event(f, "member_removed", gid, Some(4))),
        "removing a non-member was announced: {seen:?}"
    );

    assert_eq!(
        roles_in_full_sync(&server, 1, gid).await,
        vec![(1, "owner".into()), (2, "admin".into())]
    );
}

#[tokio::test]
async fn only_the_owner_changes_roles_and_never_the_owner_s_own() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2, 3]).await;
    let mut cid = server.connect(3).await;
    let role = |uid: u64| format!("/v1/groups/{gid}/members/{uid}/role");
    let admin = json!({"role": "admin"});

    let got = server
        .user(2, Method::PUT, &role(3), Some(admin.clone()))
        .await;
    assert_http_error(&got, 403, "forbidden", "a role change by a member");

    let got = server
        .user(1, Method::PUT, &role(2), Some(admin.clone()))
        .await;
    assert_eq!(got.0, 204, "{}", got.1);
    let changed = event(&mut cid, "role_changed", gid, Some(2)).await;
    assert_eq!(
        (&changed["role"], &changed["by"]),
        (&json!("admin"), &json!(1)),
        "{changed}"
    );

    let got = server
        .user(2, Method::PUT, &role(3), Some(admin.clone()))
        .await;
    assert_http_error(&got, 403, "forbidden", "a role change by an admin");

    let got = server
        .user(1, Method::PUT, &role(2), Some(json!({"role": "member"})))
        .await;
    assert_eq!(got.0, 204, "{}", got.1);
    let changed = event(&mut cid, "role_changed", gid, Some(2)).await;
    assert_eq!(changed["role"], "member", "{changed}");

    let got = server
        .user(1, Method::PUT, &role(1), Some(json!({"role": "member"})))
        .await;
    assert!(
        (400..500).contains(&got.0),
        "a role change on the owner: {} {}",
        got.0,
        got.1
    );
    let got = server
        .user(1, Method::PUT, &role(3), Some(json!({"role": "owner"})))
        .await;
    assert_http_error(&got, 400, "bad_request", "the role owner");

    assert_eq!(
        roles_in_full_sync(&server, 1, gid).await,
        vec![
            (1, "owner".into()),
            (2, "member".into()),
            (3, "member".into())
        ]
    );
}

#[tokio::test]
async fn a_member_who_quits_is_announced_to_everyone_as_removed_with_reason_left() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2, 3]).await;
    let mut ann = server.connect(1).await;
    let mut cid = server.connect(3).await;
    let before = sync(&server, 3, json!({})).await;

    let path = format!("/v1/groups/{gid}/leave");
    let got = server.user(3, Method::POST, &path, None).await;
    assert_eq!(got.0, 204, "{}", got.1);
    for client in [&mut ann, &mut cid] {
        let left = event(client, "member_removed", gid, Some(3)).await;
        assert_eq!(
            (&left["reason"], &left["by"], &left["version"]),
            (&json!("left"), &json!(3), &json!(2)),
            "{left}"
        );
    }
    let send = json!({"type": "send", "id": "s", "gid": gid, "cmid": "c", "body": 1});
    let reply = cid.request(send).await;
    assert_eq!(
        (&reply["type"], &reply["code"]),
        (&json!("error"), &json!("forbidden")),
        "{reply}"
    );

    let after = sync(&server, 3, next_versions(&json!({}), &before)).await;
    assert_eq!(ids(&after["group_list"]["left"]), vec![gid], "{after}");
    assert!(group_entry(&after, gid).is_none(), "{after}");
    assert_eq!(
        roles_in_full_sync(&server, 1, gid).await,
        vec![(1, "owner".into()), (2, "member".into())]
    );
}

#[tokio::test]
async fn the_owner_disbands_the_group_and_afterwards_every_request_about_it_is_not_found() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2, 3]).await;
    make_admin(&server, gid, 2).await;
    let mut bob = server.connect(2).await;
    let mut cid = server.connect(3).await;
    let sent = bob.send_msg(gid, "kept", json!({"text": "kept"})).await;
    assert_eq!(sent["type"], "sent", "{sent}");
    let before = sync(&server, 3, json!({})).await;
    let path = format!("/v1/groups/{gid}");

    for (uid, what) in [(2, "a disband by an admin"), (3, "a disband by a member")] {
        let got = server.user(uid, Method::DELETE, &path, None).await;
        assert_http_error(&got, 403, "forbidden", what);
    }
    let got = server.user(1, Method::DELETE, &path, None).await;
    assert_eq!(got.0, 204, "a disband by the owner: {}", got.1);
    for client in [&mut bob, &mut cid] {
        let disbanded = event(client, "group_disbanded", gid, None).await;
        assert!(disbanded["version"].is_u64(), "{disbanded}");
        assert_eq!(disbanded["by"], 1, "{disbanded}");
    }

    let send = json!({"type": "send", "id": "s", "gid": gid, "cmid": "c", "body": 1});
    let reply = cid.request(send).await;
    assert_eq!(
        reply["code"], "not_found",
        "a send after the disband: {reply}"
    );
    let pull = json!({"type": "pull", "id": "p", "gid": gid, "after": 0});
    let reply = bob.request(pull).await;
    assert_eq!(
        reply["code"], "not_found",
        "a pull after the disband: {reply}"
    );
    let got = server
        .user(3, Method::GET, &format!("{path}/messages"), None)
        .await;
    assert_http_error(&got, 404, "not_found", "an HTTP pull after the disband");
    let got = server
        .admin_post(
            &format!("/v1/admin/groups/{gid}/members"),
            json!({"uids": [3]}),
        )
        .await;
    assert_http_error(&got, 404, "not_found", "an admin add after the disband");
    let got = server.user(1, Method::DELETE, &path, None).await;
    assert_http_error(&got, 404, "not_found", "disbanding twice");
    for uid in [1, 2, 3] {
        assert_eq!(my_gids(&server, uid).await, Vec::<u64>::new(), "uid {uid}");
    }
    let after = sync(&server, 3, next_versions(&json!({}), &before)).await;
    assert_eq!(ids(&after["group_list"]["left"]), vec![gid], "{after}");
    assert!(group_entry(&after, gid).is_none(), "{after}");
}

/// Ownership passes to the longest-standing admin, not the first one promoted.
#[tokio::test]
async fn an_owner_who_quits_passes_ownership_to_the_longest_standing_admin() {
    let server = Server::start().await;
    let gid = server.group(&[1]).await;
    server.users(&[2, 3, 4]).await;
    for uid in [2, 3, 4] {
        admin_add(&server, gid, uid).await;
    }
    make_admin(&server, gid, 4).await;
    make_admin(&server, gid, 3).await;
    let mut bob = server.connect(2).await;

    let got = server
        .user(1, Method::POST, &format!("/v1/groups/{gid}/leave"), None)
        .await;
    assert_eq!(got.0, 204, "{}", got.1);
    let seen = frames_until(&mut bob, "the owner's quit and the heir", |seen| {
        find(seen, |f| is_event(f, "member_removed", gid, Some(1))).is_some()
            && find(seen, |f| is_event(f, "role_changed", gid, None)).is_some()
    })
    .await;
    let left = find(&seen, |f| is_event(f, "member_removed", gid, Some(1))).unwrap();
    assert_eq!(left["reason"], "left", "{left}");
    let heir = find(&seen, |f| is_event(f, "role_changed", gid, None)).unwrap();
    assert_eq!(
        (&heir["uid"], &heir["role"]),
        (&json!(3), &json!("owner")),
        "the longest-standing admin inherits: {heir}"
    );

    let synced = sync(&server, 2, json!({})).await;
    let entry = group_entry(&synced, gid).expect("the group");
    assert_eq!(
        roles(entry),
        vec![
            (2, "member".into()),
            (3, "owner".into()),
            (4, "admin".into())
        ]
    );
    assert_eq!(listed_group(&synced, gid).unwrap()["owner"], 3, "{synced}");
    let renamed = server
        .user(
            3,
            Method::PATCH,
            &format!("/v1/groups/{gid}"),
            Some(json!({"name": "mine now"})),
        )
        .await;
    assert_eq!(renamed.0, 200, "the heir acts as owner: {}", renamed.1);
    assert_eq!(renamed.1["owner"], 3, "{}", renamed.1);
}

/// Without admins the longest-standing member inherits; the last one out disbands the group.
#[tokio::test]
async fn without_admins_the_longest_standing_member_inherits_and_the_last_one_out_disbands() {
    let server = Server::start().await;
    let gid = server.group(&[1]).await;
    server.users(&[2, 3]).await;
    admin_add(&server, gid, 2).await;
    admin_add(&server, gid, 3).await;
    let mut cid = server.connect(3).await;
    let before = sync(&server, 3, json!({})).await;
    let leave = format!("/v1/groups/{gid}/leave");

    for (quitter, heir) in [(1, 2), (2, 3)] {
        let got = server.user(quitter, Method::POST, &leave, None).await;
        assert_eq!(got.0, 204, "{quitter} quits: {}", got.1);
        let changed = event(&mut cid, "role_changed", gid, Some(heir)).await;
        assert_eq!(changed["role"], "owner", "{changed}");
    }
    let got = server.user(3, Method::POST, &leave, None).await;
    assert_eq!(got.0, 204, "the last member quits: {}", got.1);

    let got = server
        .admin_post(
            &format!("/v1/admin/groups/{gid}/members"),
            json!({"uids": [1]}),
        )
        .await;
    assert_http_error(&got, 404, "not_found", "an add to the emptied group");
    let got = server
        .user(3, Method::GET, &format!("/v1/groups/{gid}/messages"), None)
        .await;
    assert_http_error(&got, 404, "not_found", "a pull of the emptied group");
    let logged = count(
        &server,
        &format!(
            "SELECT count(*) FROM group_events WHERE gid = {gid} \
             AND body->>'event' = 'group_disbanded'"
        ),
    )
    .await;
    assert_eq!(logged, 1, "group_disbanded in the log");
    let after = sync(&server, 3, next_versions(&json!({}), &before)).await;
    assert_eq!(ids(&after["group_list"]["left"]), vec![gid], "{after}");
}

/// Each refusal a change function raises reaches the client with its code and the very
/// sentence clients have always read (the words are the gateway's, the SQL raises keys).
#[tokio::test]
async fn every_refusal_of_a_change_reads_as_it_always_did() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2]).await;
    server.users(&[3]).await;
    let group = format!("/v1/groups/{gid}");
    let refusals = [
        (
            server
                .admin_post(
                    "/v1/admin/groups",
                    json!({"gid": gid, "name": "again", "owner": 1, "members": [1]}),
                )
                .await,
            409,
            format!("group {gid} already exists"),
        ),
        (
            server
                .admin_post("/v1/admin/groups/999999/members", json!({"uids": [3]}))
                .await,
            404,
            "group 999999 does not exist".into(),
        ),
        (
            server
                .admin_post(
                    &format!("/v1/admin/groups/{gid}/members"),
                    json!({"uids": [77]}),
                )
                .await,
            404,
            "user 77 does not exist or is deactivated".into(),
        ),
        (
            server
                .admin_post("/v1/admin/users/88/deactivate", json!({}))
                .await,
            404,
            "user 88 does not exist".into(),
        ),
        (
            server
                .user(3, Method::PATCH, &group, Some(json!({"name": "mine"})))
                .await,
            403,
            format!("not a member of group {gid}"),
        ),
        (
            server
                .user(
                    2,
                    Method::POST,
                    &format!("{group}/members"),
                    Some(json!({"uids": [3]})),
                )
                .await,
            403,
            format!("only the owner or admin of group {gid} may add members"),
        ),
        (
            server
                .user(2, Method::DELETE, &format!("{group}/members/1"), None)
                .await,
            403,
            format!("only the owner of group {gid} may remove owner 1"),
        ),
        (
            server
                .user(2, Method::DELETE, &format!("{group}/members/3"), None)
                .await,
            403,
            format!("only the owner or admin of group {gid} may remove user 3"),
        ),
        (
            server
                .user(
                    2,
                    Method::PUT,
                    &format!("{group}/members/1/role"),
                    Some(json!({"role": "admin"})),
                )
                .await,
            403,
            format!("only the owner of group {gid} may change roles"),
        ),
        (
            server
                .user(2, Method::PATCH, &group, Some(json!({"name": "mine"})))
                .await,
            403,
            format!("only the owner or admin of group {gid} may change its info"),
        ),
        (
            server.user(2, Method::DELETE, &group, None).await,
            403,
            format!("only the owner of group {gid} may disband it"),
        ),
        (
            server
                .user(
                    1,
                    Method::PUT,
                    &format!("{group}/members/3/role"),
                    Some(json!({"role": "admin"})),
                )
                .await,
            404,
            format!("user 3 is not a member of group {gid}"),
        ),
        (
            server
                .user(
                    1,
                    Method::PUT,
                    &format!("{group}/members/1/role"),
                    Some(json!({"role": "admin"})),
                )
                .await,
            403,
            "the owner's role changes only when they quit".into(),
        ),
        (
            server
                .user(1, Method::POST, "/v1/friends", Some(json!({"uid": 1})))
                .await,
            400,
            "a user cannot befriend themself".into(),
        ),
    ];
    for ((status, body), expected_status, expected_message) in refusals {
        assert_eq!(
            (status, &body["error"]["message"]),
            (expected_status, &json!(expected_message)),
            "{body}"
        );
    }
}

// ---- live pushes ----

#[tokio::test]
async fn an_add_pushes_the_event_and_a_sync_notify_with_the_new_user_list_version() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2]).await;
    server.users(&[3]).await;
    let mut bob = server.connect(2).await;
    let mut cid = server.connect(3).await;

    let added = ok(
        server
            .user(
                1,
                Method::POST,
                &format!("/v1/groups/{gid}/members"),
                Some(json!({"uids": [3]})),
            )
            .await,
        200,
        "an add by the owner",
    );
    assert_eq!(added, json!({"added": [3]}));

    let seen = frames_until(&mut bob, "the event and its notice", |seen| {
        find(seen, |f| is_event(f, "member_added", gid, Some(3))).is_some()
            && find(seen, |f| {
                notified_group(f, gid).is_some_and(|g| g["user_list_version"] == 2)
            })
            .is_some()
    })
    .await;
    let added = find(&seen, |f| is_event(f, "member_added", gid, Some(3))).unwrap();
    assert_eq!(
        (&added["version"], &added["role"], &added["by"]),
        (&json!(2), &json!("member"), &json!(1)),
        "{added}"
    );
    assert!(added["ts"].is_u64(), "{added}");

    // The new member gets its own event and a notice that its group list changed.
    let seen = frames_until(&mut cid, "the new member's event and notice", |seen| {
        find(seen, |f| is_event(f, "member_added", gid, Some(3))).is_some()
            && find(seen, |f| {
                f["type"] == "sync_notify" && f["group_list"]["group_list_version"].is_u64()
            })
            .is_some()
    })
    .await;
    let own = find(&seen, |f| is_event(f, "member_added", gid, Some(3))).unwrap();
    assert_eq!(own["version"], 2, "{own}");
}

/// Members see it through their group's user_info_version, friends through their friend
/// list's, the user through `me`; each incremental sync then returns the new profile.
#[tokio::test]
async fn a_profile_change_reaches_members_friends_and_the_user_as_sync_notify() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2]).await;
    server.users(&[3]).await;
    let made = server
        .admin_post("/v1/admin/friends", json!({"uids": [2, 3]}))
        .await;
    assert_eq!(made.0, 204, "{}", made.1);
    let ann_before = sync(&server, 1, json!({})).await;
    let cid_before = sync(&server, 3, json!({})).await;
    let group_info_before = number(group_entry(&ann_before, gid).unwrap(), "user_info_version");
    let friend_info_before = number(&cid_before["friends"], "user_info_version");
    let mut ann = server.connect(1).await;
    let mut bob = server.connect(2).await;
    let mut cid = server.connect(3).await;

    let profile = patch_me(&server, 2, json!({"nickname": "bo"})).await;
    let seen = frames_until(&mut ann, "the group's new user_info_version", |seen| {
        seen.last().is_some_and(|f| {
            notified_group(f, gid)
                .is_some_and(|g| g["user_info_version"].as_u64() > Some(group_info_before))
        })
    })
    .await;
    let group_info = number(
        notified_group(seen.last().unwrap(), gid).unwrap(),
        "user_info_version",
    );
    let seen = frames_until(
        &mut cid,
        "the friend list's new user_info_version",
        |seen| {
            seen.last().is_some_and(|f| {
                f["type"] == "sync_notify"
                    && f["friends"]["user_info_version"].as_u64() > Some(friend_info_before)
            })
        },
    )
    .await;
    let friend_info = number(&seen.last().unwrap()["friends"], "user_info_version");
    frames_until(&mut bob, "the user's own new version", |seen| {
        seen.last().is_some_and(|f| {
            f["type"] == "sync_notify"
                && f["me"]["user_info_version"] == profile["user_info_version"]
        })
    })
    .await;

    let ann_after = sync(&server, 1, next_versions(&json!({}), &ann_before)).await;
    let entry = group_entry(&ann_after, gid).expect("the group, its profiles changed");
    assert_eq!(entry["snapshot"], false, "{entry}");
    assert_eq!(number(entry, "user_info_version"), group_info, "{entry}");
    assert!(
        list(&entry["events"]).is_empty(),
        "no membership change: {entry}"
    );
    assert_eq!(entry["users"], json!([profile]), "{entry}");
    let cid_after = sync(&server, 3, next_versions(&json!({}), &cid_before)).await;
    let friends = &cid_after["friends"];
    assert_eq!(
        number(friends, "user_info_version"),
        friend_info,
        "{friends}"
    );
    assert_eq!(friends["users"], json!([profile]), "{friends}");
    assert!(list(&friends["added"]).is_empty(), "{friends}");
    assert!(list(&friends["removed"]).is_empty(), "{friends}");
}

// ---- sync ----

#[tokio::test]
async fn a_full_sync_returns_snapshots_of_everything_the_user_keeps_over_http_and_websocket() {
    let server = Server::start().await;
    let (g1, g2) = ann_s_world(&server).await;

    let synced = sync(&server, 1, json!({})).await;
    assert_eq!(synced["me"]["uid"], 1, "{synced}");
    assert_eq!(synced["me"]["nickname"], "ann", "{synced}");
    let group_list = &synced["group_list"];
    assert_eq!(group_list["snapshot"], true, "{group_list}");
    assert!(list(&group_list["left"]).is_empty(), "{group_list}");
    let mut listed: Vec<(u64, u64)> = list(&group_list["groups"])
        .iter()
        .map(|g| (number(g, "gid"), number(g, "owner")))
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, vec![(g1, 1), (g2, 3)], "{group_list}");

    let groups = list(&synced["groups"]);
    assert_eq!(groups.len(), 2, "{synced}");
    let entry = group_entry(&synced, g1).expect("g1");
    assert_eq!(entry["snapshot"], true, "{entry}");
    assert_eq!(
        roles(entry),
        vec![(1, "owner".into()), (2, "member".into())]
    );
    assert_eq!(uids(&entry["users"]), vec![1, 2], "{entry}");
    let bob = list(&entry["users"])
        .into_iter()
        .find(|u| u["uid"] == 2)
        .unwrap();
    assert_eq!(bob["nickname"], "bo", "{bob}");
    assert!(list(&entry["events"]).is_empty(), "{entry}");
    let entry = group_entry(&synced, g2).expect("g2");
    assert_eq!(entry["snapshot"], true, "{entry}");
    assert_eq!(roles(entry), vec![(1, "admin".into()), (3, "owner".into())]);
    assert_eq!(uids(&entry["users"]), vec![1, 3], "{entry}");

    let friends = &synced["friends"];
    assert_eq!(friends["snapshot"], true, "{friends}");
    assert_eq!(ids(&friends["added"]), vec![4], "{friends}");
    assert_eq!(uids(&friends["users"]), vec![4], "{friends}");

    // The WebSocket says the same.
    let mut ann = server.connect(1).await;
    let reply = ann.request(json!({"type": "sync", "id": "s1"})).await;
    assert_eq!(
        (&reply["type"], &reply["id"]),
        (&json!("synced"), &json!("s1")),
        "{reply}"
    );
    let mut over_ws = reply.clone();
    over_ws.as_object_mut().unwrap().remove("type");
    over_ws.as_object_mut().unwrap().remove("id");
    assert_eq!(
        canonical(&over_ws),
        canonical(&synced),
        "WebSocket against HTTP"
    );
}

#[tokio::test]
async fn syncing_again_with_the_returned_versions_returns_no_changes() {
    let server = Server::start().await;
    ann_s_world(&server).await;
    let full = sync(&server, 1, json!({})).await;
    let versions = next_versions(&json!({}), &full);

    for again in [sync(&server, 1, versions.clone()).await, {
        let mut ann = server.connect(1).await;
        let mut frame = versions.clone();
        frame["type"] = json!("sync");
        frame["id"] = json!(7);
        ann.request(frame).await
    }] {
        assert!(
            list(&again["groups"]).is_empty(),
            "no group changed: {again}"
        );
        let group_list = &again["group_list"];
        assert_eq!(group_list["snapshot"], false, "{again}");
        assert!(list(&group_list["groups"]).is_empty(), "{again}");
        assert!(list(&group_list["left"]).is_empty(), "{again}");
        let friends = &again["friends"];
        assert_eq!(friends["snapshot"], false, "{again}");
        for part in ["added", "removed", "users"] {
            assert!(list(&friends[part]).is_empty(), "friends {part}: {again}");
        }
        assert_eq!(again["me"], full["me"], "me is always there");
        assert_eq!(
            next_versions(&versions, &again),
            versions,
            "no version moved: {again}"
        );
    }
}

#[tokio::test]
async fn after_one_add_an_incremental_sync_returns_exactly_that_event_and_that_user() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2]).await;
    let (status, body) = server
        .admin_post(
            "/v1/admin/users",
            json!({"users": [{"uid": 3, "nickname": "cid"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let before = sync(&server, 1, json!({})).await;
    let versions = next_versions(&json!({}), &before);
    admin_add(&server, gid, 3).await;

    let after = sync(&server, 1, versions.clone()).await;
    let entry = group_entry(&after, gid).expect("the changed group");
    assert_eq!(entry["snapshot"], false, "{entry}");
    assert_eq!(entry["user_list_version"], 2, "{entry}");
    assert!(
        entry["members"].is_null(),
        "no members when incremental: {entry}"
    );
    let events = list(&entry["events"]);
    assert_eq!(events.len(), 1, "exactly the add: {entry}");
    let added = &events[0];
    assert_eq!(
        (
            &added["event"],
            &added["gid"],
            &added["uid"],
            &added["role"],
            &added["version"]
        ),
        (
            &json!("member_added"),
            &json!(gid),
            &json!(3),
            &json!("member"),
            &json!(2)
        ),
        "{added}"
    );
    assert!(added["by"].is_null(), "the admin API acted: {added}");
    assert_eq!(
        uids(&entry["users"]),
        vec![3],
        "the new member's profile: {entry}"
    );
    assert_eq!(list(&entry["users"])[0]["nickname"], "cid", "{entry}");
    assert!(list(&after["group_list"]["groups"]).is_empty(), "{after}");
    assert_eq!(
        list(&after["groups"]).len(),
        1,
        "only the changed group: {after}"
    );

    let settled = sync(&server, 1, next_versions(&versions, &after)).await;
    assert!(list(&settled["groups"]).is_empty(), "{settled}");
}

#[tokio::test]
async fn a_group_the_user_was_removed_from_is_listed_in_left() {
    let server = Server::start().await;
    let g1 = server.group(&[1, 2]).await;
    let g2 = server.group(&[1, 2]).await;
    let before = sync(&server, 2, json!({})).await;
    let versions = next_versions(&json!({}), &before);
    let got = server
        .admin(
            Method::DELETE,
            &format!("/v1/admin/groups/{g2}/members/2"),
            None,
        )
        .await;
    assert_eq!(got.0, 204, "{}", got.1);

    let after = sync(&server, 2, versions.clone()).await;
    let group_list = &after["group_list"];
    assert_eq!(group_list["snapshot"], false, "{group_list}");
    assert_eq!(ids(&group_list["left"]), vec![g2], "{group_list}");
    assert!(list(&group_list["groups"]).is_empty(), "{group_list}");
    assert!(
        list(&after["groups"]).is_empty(),
        "g1 is unchanged, g2 left: {after}"
    );

    let next = next_versions(&versions, &after);
    let kept: Vec<u64> = list(&next["groups"])
        .iter()
        .map(|g| number(g, "gid"))
        .collect();
    assert_eq!(kept, vec![g1], "the versions a client keeps: {next}");
    let settled = sync(&server, 2, next).await;
    assert!(list(&settled["group_list"]["left"]).is_empty(), "{settled}");
}

#[tokio::test]
async fn a_renamed_group_shows_in_the_group_list_and_its_log_incrementally() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2]).await;
    let before = sync(&server, 2, json!({})).await;
    let info_before = number(&before["group_list"], "group_info_version");

    let renamed = ok(
        server
            .user(
                1,
                Method::PATCH,
                &format!("/v1/groups/{gid}"),
                Some(json!({"name": "renamed"})),
            )
            .await,
        200,
        "a rename by the owner",
    );
    let after = sync(&server, 2, next_versions(&json!({}), &before)).await;
    let group_list = &after["group_list"];
    assert_eq!(group_list["snapshot"], false, "{group_list}");
    assert!(
        number(group_list, "group_info_version") > info_before,
        "{group_list}"
    );
    assert_eq!(
        list(&group_list["groups"]),
        vec![renamed.clone()],
        "the renamed group's info: {group_list}"
    );
    assert!(list(&group_list["left"]).is_empty(), "{group_list}");
    let entry = group_entry(&after, gid).expect("the group's log moved");
    let events = list(&entry["events"]);
    assert_eq!(events.len(), 1, "{entry}");
    assert_eq!(
        (&events[0]["event"], &events[0]["name"], &events[0]["by"]),
        (&json!("group_updated"), &json!("renamed"), &json!(1)),
        "{entry}"
    );
}

/// With `HERALD_EVENTS_KEPT=2` a client far behind gets a snapshot, one a step behind
/// still gets the event.
#[tokio::test]
async fn a_sync_from_before_trimmed_events_is_a_snapshot_and_a_recent_one_stays_incremental() {
    let server =
        Server::start_with(&[("HERALD_EVENTS_KEPT", "2"), ("HERALD_EVENTS_TRIM_S", "1")]).await;
    let gid = server.group(&[1]).await;
    server.users(&[2, 3, 4, 5, 6]).await;
    for uid in 2..=6 {
        admin_add(&server, gid, uid).await;
    }
    let full = sync(&server, 1, json!({})).await;
    assert_eq!(
        group_entry(&full, gid).unwrap()["user_list_version"],
        6,
        "{full}"
    );

    let from = |version: u64| json!({"groups": [{"gid": gid, "user_list_version": version, "user_info_version": 0}]});
    let trimmed = eventually(
        "events below the newest two trimmed",
        Duration::from_secs(15),
        async || {
            let synced = sync(&server, 1, from(1)).await;
            let entry = group_entry(&synced, gid).cloned().unwrap_or(Value::Null);
            match entry["snapshot"] == true {
                true => Ok(entry),
                false => Err(entry.to_string()),
            }
        },
    )
    .await;
    assert_eq!(trimmed["user_list_version"], 6, "{trimmed}");
    assert_eq!(
        roles(&trimmed),
        (1..=6)
            .map(|uid| (uid, if uid == 1 { "owner" } else { "member" }.to_owned()))
            .collect::<Vec<_>>()
    );
    assert_eq!(uids(&trimmed["users"]), vec![1, 2, 3, 4, 5, 6], "{trimmed}");
    assert!(list(&trimmed["events"]).is_empty(), "{trimmed}");

    let recent = sync(&server, 1, from(5)).await;
    let entry = group_entry(&recent, gid).expect("the group");
    assert_eq!(entry["snapshot"], false, "one step behind: {entry}");
    let events = list(&entry["events"]);
    assert_eq!(events.len(), 1, "{entry}");
    assert_eq!(
        (
            &events[0]["event"],
            &events[0]["uid"],
            &events[0]["version"]
        ),
        (&json!("member_added"), &json!(6), &json!(6)),
        "{entry}"
    );
}

// ---- friends ----

#[tokio::test]
async fn a_friend_request_and_its_acceptance_make_both_users_friends() {
    let server = Server::start().await;
    server.users(&[1, 2, 3]).await;
    // A past friendship, so ann's friend list version is above 0 (0 would ask for a snapshot).
    let made = server
        .admin_post("/v1/admin/friends", json!({"uids": [1, 3]}))
        .await;
    assert_eq!(made.0, 204, "{}", made.1);
    let ended = server
        .admin(Method::DELETE, "/v1/admin/friends/1/3", None)
        .await;
    assert_eq!(ended.0, 204, "{}", ended.1);
    let mut bob = server.connect(2).await;
    let before = sync(&server, 1, json!({})).await;
    assert!(
        number(&before["friends"], "user_list_version") > 0,
        "{before}"
    );

    let asked = server
        .user(1, Method::POST, "/v1/friends", Some(json!({"uid": 2})))
        .await;
    assert_eq!(asked, (202, json!({"status": "requested"})));
    let pushed = frames_until(&mut bob, "the friend request", |seen| {
        seen.last().is_some_and(|f| f["type"] == "friend_request")
    })
    .await
    .pop()
    .unwrap();
    assert_eq!(pushed["from"], 1, "{pushed}");
    assert!(pushed["ts"].is_u64(), "{pushed}");
    let bobs = friends_of(&server, 2).await;
    assert_eq!(
        (
            uids(&bobs["friends"]),
            ids(&bobs["requests_in"]),
            ids(&bobs["requests_out"])
        ),
        (vec![], vec![1], vec![]),
        "{bobs}"
    );
    let anns = friends_of(&server, 1).await;
    assert_eq!(
        (
            uids(&anns["friends"]),
            ids(&anns["requests_in"]),
            ids(&anns["requests_out"])
        ),
        (vec![], vec![], vec![2]),
        "{anns}"
    );

    let accepted = server
        .user(2, Method::POST, "/v1/friends", Some(json!({"uid": 1})))
        .await;
    assert_eq!(accepted, (200, json!({"status": "friends"})));
    for (uid, friend) in [(1, 2), (2, 1)] {
        let listed = friends_of(&server, uid).await;
        assert_eq!(
            (
                uids(&listed["friends"]),
                ids(&listed["requests_in"]),
                ids(&listed["requests_out"])
            ),
            (vec![friend], vec![], vec![]),
            "uid {uid}: {listed}"
        );
    }
    let again = server
        .user(1, Method::POST, "/v1/friends", Some(json!({"uid": 2})))
        .await;
    assert_eq!(
        again,
        (200, json!({"status": "friends"})),
        "already friends"
    );

    let after = sync(&server, 1, next_versions(&json!({}), &before)).await;
    let friends = &after["friends"];
    assert_eq!(friends["snapshot"], false, "{friends}");
    assert_eq!(ids(&friends["added"]), vec![2], "{friends}");
    assert!(list(&friends["removed"]).is_empty(), "{friends}");
    assert_eq!(uids(&friends["users"]), vec![2], "{friends}");
}

/// Each pair asks each other at the same moment; both requests meeting must not leave two
/// pending requests.
#[tokio::test]
async fn concurrent_mutual_requests_always_end_as_friends() {
    let server = Server::start().await;
    let pairs: Vec<(u64, u64)> = (0..10).map(|n| (10 + 2 * n, 11 + 2 * n)).collect();
    let all: Vec<u64> = pairs.iter().flat_map(|&(a, b)| [a, b]).collect();
    server.users(&all).await;
    let mut tokens = BTreeMap::new();
    for &uid in &all {
        tokens.insert(uid, server.token(uid).await);
    }
    let ask = |from: u64, to: u64| {
        let request = server
            .http
            .post(server.url("/v1/friends"))
            .bearer_auth(&tokens[&from])
            .json(&json!({"uid": to}));
        respond(request)
    };
    let replies = join_all(
        pairs
            .iter()
            .map(|&(a, b)| futures_util::future::join(ask(a, b), ask(b, a))),
    )
    .await;

    for (&(a, b), (ab, ba)) in pairs.iter().zip(replies) {
        let mut statuses = [ab.0, ba.0];
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [200, 202],
            "{a} and {b}: one request, one acceptance: {ab:?} {ba:?}"
        );
        for (uid, friend) in [(a, b), (b, a)] {
            let listed = friends_of(&server, uid).await;
            assert_eq!(
                (
                    uids(&listed["friends"]),
                    ids(&listed["requests_in"]),
                    ids(&listed["requests_out"])
                ),
                (vec![friend], vec![], vec![]),
                "uid {uid}: {listed}"
            );
        }
    }
}

#[tokio::test]
async fn ending_a_friendship_ends_it_on_both_sides_and_sync_lists_it_as_removed() {
    let server = Server::start().await;
    server.users(&[1, 2, 3]).await;
    let made = server
        .admin_post("/v1/admin/friends", json!({"uids": [1, 2]}))
        .await;
    assert_eq!(made.0, 204, "{}", made.1);
    let ann_before = sync(&server, 1, json!({})).await;
    let bob_before = sync(&server, 2, json!({})).await;
    assert_eq!(
        ids(&ann_before["friends"]["added"]),
        vec![2],
        "{ann_before}"
    );

    let got = server.user(2, Method::DELETE, "/v1/friends/1", None).await;
    assert_eq!(got.0, 204, "{}", got.1);
    for uid in [1, 2] {
        let listed = friends_of(&server, uid).await;
        assert!(list(&listed["friends"]).is_empty(), "uid {uid}: {listed}");
    }
    for (uid, before, gone) in [(1, &ann_before, 2), (2, &bob_before, 1)] {
        let after = sync(&server, uid, next_versions(&json!({}), before)).await;
        let friends = &after["friends"];
        assert_eq!(ids(&friends["removed"]), vec![gone], "uid {uid}: {friends}");
        assert!(list(&friends["added"]).is_empty(), "uid {uid}: {friends}");
    }

    // DELETE also declines a request.
    let asked = server
        .user(1, Method::POST, "/v1/friends", Some(json!({"uid": 3})))
        .await;
    assert_eq!(asked.0, 202, "{}", asked.1);
    let got = server.user(3, Method::DELETE, "/v1/friends/1", None).await;
    assert_eq!(got.0, 204, "a decline: {}", got.1);
    assert!(list(&friends_of(&server, 1).await["requests_out"]).is_empty());
    assert!(list(&friends_of(&server, 3).await["requests_in"]).is_empty());
    let asked = server
        .user(3, Method::POST, "/v1/friends", Some(json!({"uid": 1})))
        .await;
    assert_eq!(
        asked,
        (202, json!({"status": "requested"})),
        "a declined request does not count as consent"
    );
}

#[tokio::test]
async fn the_admin_makes_and_ends_friendships_directly() {
    let server = Server::start().await;
    server.users(&[1, 2]).await;
    for attempt in ["first", "again"] {
        let made = server
            .admin_post("/v1/admin/friends", json!({"uids": [1, 2]}))
            .await;
        assert_eq!(made.0, 204, "{attempt}: {}", made.1);
    }
    for (uid, friend) in [(1, 2), (2, 1)] {
        let listed = friends_of(&server, uid).await;
        assert_eq!(uids(&listed["friends"]), vec![friend], "{listed}");
        assert!(list(&listed["requests_in"]).is_empty(), "{listed}");
    }

    let ended = server
        .admin(Method::DELETE, "/v1/admin/friends/1/2", None)
        .await;
    assert_eq!(ended.0, 204, "{}", ended.1);
    for uid in [1, 2] {
        let listed = friends_of(&server, uid).await;
        assert!(list(&listed["friends"]).is_empty(), "uid {uid}: {listed}");
    }
}

// ---- races ----

#[tokio::test]
async fn fifty_concurrent_creations_of_one_conversation_make_one_row() {
    let server = Server::start().await;
    server.users(&[1]).await;
    let token = server.token(1).await;
    let body = json!({"channel_id": "ac43789cca9f4d298ceee040b02a797b____cmd", "channel_type": 1});
    let creations = (0..50).map(|_| {
        let request = server
            .http
            .post(server.url("/v1/conversations"))
            .bearer_auth(&token)
            .json(&body);
        respond(request)
    });
    let replies = join_all(creations).await;

    let created: Vec<&(u16, Value)> = replies.iter().filter(|r| r.0 == 201).collect();
    assert_eq!(created.len(), 1, "exactly one 201: {replies:?}");
    let id = &created[0].1["id"];
    assert!(id.is_u64(), "{:?}", created[0]);
    for (status, conversation) in &replies {
        assert!(matches!(status, 200 | 201), "{status} {conversation}");
        assert_eq!(&conversation["id"], id, "{conversation}");
    }
    let rows = count(&server, "SELECT count(*) FROM conversations WHERE uid = 1").await;
    assert_eq!(rows, 1, "one stored conversation");
    let listed = ok(
        server.user(1, Method::GET, "/v1/conversations", None).await,
        200,
        "the list",
    );
    assert_eq!(list(&listed["conversations"]).len(), 1, "{listed}");
}

#[tokio::test]
async fn twenty_concurrent_admin_adds_of_one_member_log_one_event() {
    let server = Server::start().await;
    let gid = server.group(&[1]).await;
    server.users(&[2]).await;
    let before = sync(&server, 1, json!({})).await;
    let path = format!("/v1/admin/groups/{gid}/members");
    let replies = join_all((0..20).map(|_| server.admin_post(&path, json!({"uids": [2]})))).await;

    for (status, body) in &replies {
        assert_eq!(*status, 200, "{body}");
    }
    let added: Vec<&Value> = replies
        .iter()
        .filter(|(_, body)| body["added"] == json!([2]))
        .map(|(_, body)| body)
        .collect();
    assert_eq!(added.len(), 1, "one add reported the member: {replies:?}");
    let logged = count(
        &server,
        &format!(
            "SELECT count(*) FROM group_events WHERE gid = {gid} \
             AND body->>'event' = 'member_added'"
        ),
    )
    .await;
    assert_eq!(logged, 1, "member_added events in the log");
    let rows = count(
        &server,
        &format!("SELECT count(*) FROM group_members WHERE gid = {gid} AND uid = 2"),
    )
    .await;
    assert_eq!(rows, 1, "membership rows");
    let after = sync(&server, 1, next_versions(&json!({}), &before)).await;
    let entry = group_entry(&after, gid).expect("the group");
    let events = list(&entry["events"]);
    assert_eq!(events.len(), 1, "one event synced: {entry}");
    assert_eq!(events[0]["event"], "member_added", "{entry}");
}

/// Seed 000: the version row is upserted, so a missing one does not fail the change.
#[tokio::test]
async fn a_group_whose_version_row_is_missing_still_takes_a_member_and_gets_the_row_back() {
    let server = Server::start().await;
    let gid = server.group(&[1]).await;
    server.users(&[2]).await;
    let mut ann = server.connect(1).await;
    sql(
        &server.database_url,
        &format!("DELETE FROM group_versions WHERE gid = {gid}"),
    )
    .await;
    let rows = format!("SELECT count(*) FROM group_versions WHERE gid = {gid}");
    assert_eq!(count(&server, &rows).await, 0);

    let (status, body) = server
        .admin_post(
            &format!("/v1/admin/groups/{gid}/members"),
            json!({"uids": [2]}),
        )
        .await;
    assert_eq!((status, &body), (200, &json!({"added": [2]})), "{body}");
    let added = event(&mut ann, "member_added", gid, Some(2)).await;
    assert_eq!(added["version"], 2, "the log's second event: {added}");
    let logged = count(
        &server,
        &format!(
            "SELECT count(*) FROM group_events WHERE gid = {gid} \
             AND body->>'event' = 'member_added'"
        ),
    )
    .await;
    assert_eq!(logged, 1, "the add is logged");
    assert_eq!(count(&server, &rows).await, 1, "the version row is back");
    assert_eq!(
        roles_in_full_sync(&server, 2, gid).await,
        vec![(1, "owner".into()), (2, "member".into())]
    );
}

// ---- conversations ----

#[tokio::test]
async fn conversations_are_listed_oldest_first_with_unread_for_group_channels_only() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2]).await;
    let mut ann = server.connect(1).await;
    let channel = format!("g{gid}");
    let create = |channel_id: &str, channel_type: u64| json!({"channel_id": channel_id, "channel_type": channel_type});

    let direct = ok(
        server
            .user(2, Method::POST, "/v1/conversations", Some(create("u1", 1)))
            .await,
        201,
        "a new direct conversation",
    );
    let group = ok(
        server
            .user(
                2,
                Method::POST,
                "/v1/conversations",
                Some(create(&channel, 2)),
            )
            .await,
        201,
        "a new group conversation",
    );
    let again = ok(
        server
            .user(
                2,
                Method::POST,
                "/v1/conversations",
                Some(create(&channel, 2)),
            )
            .await,
        200,
        "the group conversation again",
    );
    assert_eq!(again["id"], group["id"], "{group} then {again}");
    assert_eq!(
        (&group["channel_id"], &group["channel_type"]),
        (&json!(channel), &json!(2)),
        "{group}"
    );
    assert!(group["created_at"].is_u64(), "{group}");

    for n in 1..=3 {
        let sent = ann.send_msg(gid, &format!("c-{n}"), json!({"n": n})).await;
        assert_eq!(sent["msgid"], n, "{sent}");
    }
    let listed = conversations(&server, 2).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["id"], direct["id"], "oldest first: {listed:?}");
    assert!(
        listed[0]["unread"].is_null(),
        "no unread for type 1: {listed:?}"
    );
    assert_eq!(listed[1]["id"], group["id"], "{listed:?}");
    assert_eq!(listed[1]["channel_id"], channel, "{listed:?}");
    assert_eq!(listed[1]["unread"], 3, "latest 3 - last_read 0: {listed:?}");

    // Received is not read: an ack leaves the count, a read moves it.
    for (mark, unread) in [("ack", 3), ("read", 2)] {
        let moved = server
            .user(
                2,
                Method::POST,
                &format!("/v1/groups/{gid}/{mark}"),
                Some(json!({"msgid": 1})),
            )
            .await;
        assert_eq!(moved.0, 204, "{}", moved.1);
        unread_becomes(&server, 2, unread).await;
    }
    let left = server
        .user(2, Method::POST, &format!("/v1/groups/{gid}/leave"), None)
        .await;
    assert_eq!(left.0, 204, "{}", left.1);
    unread_becomes(&server, 2, 0).await;
}

#[tokio::test]
async fn conversations_of_bad_channels_or_of_groups_the_user_is_not_in_are_refused() {
    let server = Server::start().await;
    let gid = server.group(&[1]).await;
    server.users(&[2]).await;

    let foreign = json!({"channel_id": format!("g{gid}"), "channel_type": 2});
    let got = server
        .user(2, Method::POST, "/v1/conversations", Some(foreign))
        .await;
    assert_http_error(&got, 403, "forbidden", "a group the user is not in");
    for (body, what) in [
        (
            json!({"channel_id": "", "channel_type": 1}),
            "an empty channel_id",
        ),
        (
            json!({"channel_id": "x7", "channel_type": 2}),
            "a group channel not g<gid>",
        ),
        (
            json!({"channel_id": "gx", "channel_type": 2}),
            "a group channel g<not a number>",
        ),
        (
            json!({"channel_id": "a".repeat(129), "channel_type": 1}),
            "a 129-character channel_id",
        ),
        (
            json!({"channel_id": "u1", "channel_type": 0}),
            "channel_type 0",
        ),
        (
            json!({"channel_id": "u1", "channel_type": 256}),
            "channel_type 256",
        ),
        (json!({"channel_type": 1}), "no channel_id"),
    ] {
        let got = server
            .user(2, Method::POST, "/v1/conversations", Some(body))
            .await;
        assert_http_error(&got, 400, "bad_request", what);
    }
    assert!(conversations(&server, 2).await.is_empty());

    let longest = json!({"channel_id": "a".repeat(128), "channel_type": 255});
    let got = server
        .user(2, Method::POST, "/v1/conversations", Some(longest))
        .await;
    assert_eq!(
        got.0, 201,
        "the longest channel_id and the highest type: {}",
        got.1
    );
}

// ---- deactivation (seed 003) ----

/// Every group logs and pushes `member_removed` (deactivated) as a removal would, ownership
/// passes on, friends lose the user, and the user's sessions close with 4003.
#[tokio::test]
async fn deactivating_a_user_removes_them_from_every_group_and_friend_list_and_closes_their_sessions(
) {
    let server = Server::start().await;
    let g1 = server.group(&[1, 3]).await;
    let g2 = server.group(&[3, 2]).await;
    server.users(&[4, 5]).await;
    let made = server
        .admin_post("/v1/admin/friends", json!({"uids": [3, 4]}))
        .await;
    assert_eq!(made.0, 204, "{}", made.1);
    let asked = server
        .user(3, Method::POST, "/v1/friends", Some(json!({"uid": 5})))
        .await;
    assert_eq!(asked.0, 202, "{}", asked.1);
    let ann_before = sync(&server, 1, json!({})).await;
    let bob_before = sync(&server, 2, json!({})).await;
    let dan_before = sync(&server, 4, json!({})).await;
    let mut ann = server.connect(1).await;
    let mut bob = server.connect(2).await;
    let mut dan = server.connect(4).await;
    let mut cid = server.connect(3).await;

    let got = server
        .admin(Method::POST, "/v1/admin/users/3/deactivate", None)
        .await;
    assert_eq!(got.0, 204, "{}", got.1);
    assert_eq!(cid.closed().await, Some(4003));

    let removed = event(&mut ann, "member_removed", g1, Some(3)).await;
    assert_eq!(removed["reason"], "deactivated", "{removed}");
    assert!(removed["by"].is_null(), "the admin API acted: {removed}");
    let seen = frames_until(&mut bob, "the removal and the heir in g2", |seen| {
        find(seen, |f| is_event(f, "member_removed", g2, Some(3))).is_some()
            && find(seen, |f| is_event(f, "role_changed", g2, Some(2))).is_some()
    })
    .await;
    let removed = find(&seen, |f| is_event(f, "member_removed", g2, Some(3))).unwrap();
    assert_eq!(removed["reason"], "deactivated", "{removed}");
    let heir = find(&seen, |f| is_event(f, "role_changed", g2, Some(2))).unwrap();
    assert_eq!(heir["role"], "owner", "{heir}");
    frames_until(&mut dan, "a notice that the friend list changed", |seen| {
        seen.last()
            .is_some_and(|f| f["type"] == "sync_notify" && f["friends"].is_object())
    })
    .await;

    // Each group's log has the removal.
    let after = sync(&server, 1, next_versions(&json!({}), &ann_before)).await;
    let events = list(&group_entry(&after, g1).expect("g1 changed")["events"]);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (&events[0]["event"], &events[0]["uid"], &events[0]["reason"]),
        (&json!("member_removed"), &json!(3), &json!("deactivated")),
        "{events:?}"
    );
    let after = sync(&server, 2, next_versions(&json!({}), &bob_before)).await;
    let events = list(&group_entry(&after, g2).expect("g2 changed")["events"]);
    assert!(
        events.iter().any(|e| e["event"] == "member_removed"
            && e["uid"] == 3
            && e["reason"] == "deactivated"),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "role_changed" && e["uid"] == 2 && e["role"] == "owner"),
        "{events:?}"
    );
    for gid in [g1, g2] {
        let logged = count(
            &server,
            &format!(
                "SELECT count(*) FROM group_events WHERE gid = {gid} \
                 AND body->>'event' = 'member_removed' AND body->>'reason' = 'deactivated'"
            ),
        )
        .await;
        assert_eq!(logged, 1, "the removal in g{gid}'s log");
    }
    let synced = sync(&server, 2, json!({})).await;
    assert_eq!(
        roles(group_entry(&synced, g2).unwrap()),
        vec![(2, "owner".into())]
    );

    // The friend lost them; the pending request is gone.
    let after = sync(&server, 4, next_versions(&json!({}), &dan_before)).await;
    assert_eq!(ids(&after["friends"]["removed"]), vec![3], "{after}");
    assert!(list(&friends_of(&server, 4).await["friends"]).is_empty());
    assert!(list(&friends_of(&server, 5).await["requests_in"]).is_empty());
}

// ---- private helpers ----

/// Ann (1, "ann") owns g1 with bob (2, "bo"), is an admin of g2 owned by cid (3), and is a
/// friend of dan (4). Returns (g1, g2).
async fn ann_s_world(server: &Server) -> (u64, u64) {
    let users = json!({"users": [
        {"uid": 1, "nickname": "ann"}, {"uid": 2, "nickname": "bo"},
        {"uid": 3, "nickname": "cid"}, {"uid": 4, "nickname": "dan"}
    ]});
    let (status, body) = server.admin_post("/v1/admin/users", users).await;
    assert_eq!(status, 200, "{body}");
    let g1 = server.group(&[1, 2]).await;
    let g2 = server.group(&[3, 1]).await;
    make_admin(server, g2, 1).await;
    let made = server
        .admin_post("/v1/admin/friends", json!({"uids": [1, 4]}))
        .await;
    assert_eq!(made.0, 204, "{}", made.1);
    (g1, g2)
}

/// `POST /v1/sync` as `uid`; asserts 200.
async fn sync(server: &Server, uid: u64, body: Value) -> Value {
    ok(
        server.user(uid, Method::POST, "/v1/sync", Some(body)).await,
        200,
        "POST /v1/sync",
    )
}

/// The versions a client holds after applying `reply` to the state `sent` described.
fn next_versions(sent: &Value, reply: &Value) -> Value {
    let mut groups: BTreeMap<u64, Value> = list(&sent["groups"])
        .into_iter()
        .map(|g| (number(&g, "gid"), g))
        .collect();
    for gid in ids(&reply["group_list"]["left"]) {
        groups.remove(&gid);
    }
    for g in list(&reply["groups"]) {
        let versions = json!({
            "gid": g["gid"],
            "user_list_version": g["user_list_version"],
            "user_info_version": g["user_info_version"],
        });
        groups.insert(number(&g, "gid"), versions);
    }
    json!({
        "me": {"user_info_version": reply["me"]["user_info_version"]},
        "group_list": {
            "group_list_version": reply["group_list"]["group_list_version"],
            "group_info_version": reply["group_list"]["group_info_version"],
        },
        "groups": groups.into_values().collect::<Vec<_>>(),
        "friends": {
            "user_list_version": reply["friends"]["user_list_version"],
            "user_info_version": reply["friends"]["user_info_version"],
        },
    })
}

/// A sync reply's entry for `gid` in `groups`.
fn group_entry(reply: &Value, gid: u64) -> Option<&Value> {
    reply["groups"].as_array()?.iter().find(|g| g["gid"] == gid)
}

/// A sync reply's group info for `gid` in `group_list.groups`.
fn listed_group(reply: &Value, gid: u64) -> Option<&Value> {
    reply["group_list"]["groups"]
        .as_array()?
        .iter()
        .find(|g| g["gid"] == gid)
}

/// The members of `gid` as (uid, role), by uid, in a full sync by `uid`.
async fn roles_in_full_sync(server: &Server, uid: u64, gid: u64) -> Vec<(u64, String)> {
    let synced = sync(server, uid, json!({})).await;
    roles(group_entry(&synced, gid).expect("the group"))
}

/// A snapshot's members as (uid, role), by uid.
fn roles(entry: &Value) -> Vec<(u64, String)> {
    let mut roles: Vec<(u64, String)> = list(&entry["members"])
        .iter()
        .map(|m| {
            let role = m["role"].as_str().unwrap_or("<none>").to_owned();
            (number(m, "uid"), role)
        })
        .collect();
    roles.sort_unstable();
    roles
}

/// The uids of an array of profiles, ascending.
fn uids(users: &Value) -> Vec<u64> {
    let mut uids: Vec<u64> = list(users).iter().map(|u| number(u, "uid")).collect();
    uids.sort_unstable();
    uids
}

/// An array of ids, ascending.
fn ids(array: &Value) -> Vec<u64> {
    let mut ids: Vec<u64> = list(array)
        .iter()
        .map(|id| id.as_u64().unwrap_or_else(|| panic!("an id: {array}")))
        .collect();
    ids.sort_unstable();
    ids
}

/// The elements of an array; an absent (null) list is empty.
fn list(value: &Value) -> Vec<Value> {
    match value {
        Value::Null => Vec::new(),
        Value::Array(items) => items.clone(),
        other => panic!("expected an array: {other}"),
    }
}

/// A number field; panics naming it when it is missing.
fn number(value: &Value, field: &str) -> u64 {
    value[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing in {value}"))
}

/// The value with every array sorted, for comparing replies whose list order is free.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(canonical).collect();
            items.sort_by_key(|item| item.to_string());
            Value::Array(items)
        }
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), canonical(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        other => other.clone(),
    }
}

async fn me(server: &Server, uid: u64) -> Value {
    ok(
        server.user(uid, Method::GET, "/v1/me", None).await,
        200,
        "GET /v1/me",
    )
}

async fn patch_me(server: &Server, uid: u64, body: Value) -> Value {
    let what = format!("PATCH /v1/me {body}");
    ok(
        server.user(uid, Method::PATCH, "/v1/me", Some(body)).await,
        200,
        &what,
    )
}

async fn friends_of(server: &Server, uid: u64) -> Value {
    ok(
        server.user(uid, Method::GET, "/v1/friends", None).await,
        200,
        "GET /v1/friends",
    )
}

async fn conversations(server: &Server, uid: u64) -> Vec<Value> {
    let listed = ok(
        server
            .user(uid, Method::GET, "/v1/conversations", None)
            .await,
        200,
        "GET /v1/conversations",
    );
    list(&listed["conversations"])
}

/// Waits until the user's only group conversation shows `unread`.
async fn unread_becomes(server: &Server, uid: u64, unread: u64) {
    eventually(&format!("unread {unread}"), WAIT, async || {
        let listed = conversations(server, uid).await;
        let group = listed.iter().find(|c| c["channel_type"] == 2);
        match group.is_some_and(|c| c["unread"] == unread) {
            true => Ok(()),
            false => Err(format!("{listed:?}")),
        }
    })
    .await;
}

/// The gids of `GET /v1/me/groups`, ascending.
async fn my_gids(server: &Server, uid: u64) -> Vec<u64> {
    let listed = ok(
        server.user(uid, Method::GET, "/v1/me/groups", None).await,
        200,
        "GET /v1/me/groups",
    );
    let mut gids: Vec<u64> = list(&listed["groups"])
        .iter()
        .map(|g| number(g, "gid"))
        .collect();
    gids.sort_unstable();
    gids
}

async fn make_admin(server: &Server, gid: u64, uid: u64) {
    let got = server
        .admin(
            Method::PUT,
            &format!("/v1/admin/groups/{gid}/members/{uid}/role"),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(got.0, 204, "make {uid} an admin of {gid}: {}", got.1);
}

async fn admin_add(server: &Server, gid: u64, uid: u64) {
    let got = server
        .admin_post(
            &format!("/v1/admin/groups/{gid}/members"),
            json!({"uids": [uid]}),
        )
        .await;
    assert_eq!(got, (200, json!({"added": [uid]})), "add {uid} to {gid}");
}

/// `SELECT count(*) …` on the server's database.
async fn count(server: &Server, statement: &str) -> i64 {
    sql(&server.database_url, statement).await[0].get(0)
}

/// Asserts the status of an HTTP reply and returns its body.
fn ok(got: (u16, Value), status: u16, what: &str) -> Value {
    assert_eq!(got.0, status, "{what}: {}", got.1);
    got.1
}

/// Asserts an HTTP error reply: its status and the code in its JSON error body.
fn assert_http_error(got: &(u16, Value), status: u16, code: &str, what: &str) {
    assert_eq!(got.0, status, "{what}: {}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{what}: {}", got.1);
}

/// Reads frames until `done` holds for those read so far; returns them. Panics naming
/// `what` on a close or when nothing comes for `WAIT`.
async fn frames_until(
    client: &mut Client,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        match client.next_frame(WAIT).await {
            Some(Ok(frame)) => {
                seen.push(frame);
                if done(&seen) {
                    return seen;
                }
            }
            Some(Err(close)) => panic!("{what}: session closed ({close:?}) after {seen:?}"),
            None => panic!("{what}: not within {WAIT:?}; got {seen:?}"),
        }
    }
}

fn find(seen: &[Value], matches: impl Fn(&Value) -> bool) -> Option<&Value> {
    seen.iter().find(|f| matches(f))
}

/// Reads until an `event` of this kind for `gid` (and `uid`, if given) arrives.
async fn event(client: &mut Client, kind: &str, gid: u64, uid: Option<u64>) -> Value {
    let what = format!("{kind} of group {gid} for {uid:?}");
    let mut seen = frames_until(client, &what, |seen| {
        seen.last().is_some_and(|f| is_event(f, kind, gid, uid))
    })
    .await;
    seen.pop().expect("the matching frame is the last read")
}

fn is_event(frame: &Value, kind: &str, gid: u64, uid: Option<u64>) -> bool {
    frame["type"] == "event"
        && frame["event"] == kind
        && frame["gid"] == gid
        && uid.is_none_or(|uid| frame["uid"] == uid)
}

/// The entry for `gid` in a `sync_notify` frame's groups.
fn notified_group(frame: &Value, gid: u64) -> Option<&Value> {
    if frame["type"] != "sync_notify" {
        return None;
    }
    frame["groups"].as_array()?.iter().find(|g| g["gid"] == gid)
}

/// Pings and returns the frames read before the pong.
async fn ping(client: &mut Client, id: &str) -> Vec<Value> {
    client.send(json!({"type": "ping", "id": id})).await;
    let mut seen = frames_until(client, "the pong", |seen| {
        seen.last()
            .is_some_and(|f| f["type"] == "pong" && f["id"] == id)
    })
    .await;
    seen.pop();
    seen
}
