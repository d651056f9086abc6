//! Membership and authentication: who may act in a group, live removal, re-adding and
//! deactivation, every way a token or admin key is refused, token expiry and the send
//! rate limit.

use std::time::Duration;

use herald_loadtest::kit::client::Upgrade;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::helpers::{sql, Client, Server, ADMIN_KEY, JWT_SECRET, WAIT};

// ---- private helpers ----

/// Seconds since the Unix epoch, as JWT `exp` counts them.
fn now_s() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// An HS256 JWT of these claims signed with `secret`.
fn jwt(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign a test token")
}

/// A token the gateway itself would accept for `uid` (right secret, an hour to live).
fn valid_token(uid: u64) -> String {
    jwt(
        json!({"sub": uid.to_string(), "exp": now_s() + 3600}),
        JWT_SECRET,
    )
}

/// Unpadded base64url, for hand-made (unsigned) tokens.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// A WebSocket upgrade request to `/v1/ws` (plus `query`), with an optional raw
/// `Authorization` header value.
fn ws_request(server: &Server, query: &str, authorization: Option<&str>) -> Upgrade {
    let upgrade = Upgrade::to(server.addr, query);
    match authorization {
        Some(value) => upgrade.header("authorization", value),
        None => upgrade,
    }
}

/// The HTTP status of a refused upgrade; panics if the upgrade succeeded.
async fn refused_upgrade(request: Upgrade) -> u16 {
    match Client::open(request).await {
        Ok(client) => panic!("upgrade accepted, hello {}", client.hello),
        Err(status) => status,
    }
}

/// A user HTTP request with an explicit `Authorization` header value (or none).
async fn http_with(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    authorization: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = server.http.request(method, server.url(path));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    crate::helpers::respond(request).await
}

/// Asserts an HTTP error response: its status and the code in its JSON error body.
fn assert_http_error(got: &(u16, Value), status: u16, code: &str, what: &str) {
    assert_eq!(got.0, status, "{what}: {}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{what}: {}", got.1);
    assert!(
        got.1["error"]["message"].is_string(),
        "{what}: error without message: {}",
        got.1
    );
}

/// Sends a frame and reads until the frame whose `id` is `id`; returns every frame read,
/// in order, the answer last.
async fn exchange(client: &mut Client, frame: Value) -> Vec<Value> {
    let id = frame["id"].clone();
    client.send(frame).await;
    let mut seen = Vec::new();
    loop {
        let next = client.recv().await;
        let done = next["id"] == id;
        seen.push(next);
        if done {
            return seen;
        }
    }
}

/// Pings and returns every frame read up to and including the pong: a barrier that proves
/// the session is open and shows what it was sent before.
async fn ping(client: &mut Client, id: &str) -> Vec<Value> {
    let seen = exchange(client, json!({"type": "ping", "id": id})).await;
    assert_eq!(
        seen.last().unwrap(),
        &json!({"type": "pong", "id": id}),
        "ping {id}"
    );
    seen
}

/// Sends a request that must fail; asserts the error frame (code and echoed id).
async fn expect_error(client: &mut Client, frame: Value, code: &str) -> Value {
    let id = frame["id"].clone();
    let reply = client.request(frame).await;
    assert_eq!(reply["type"], "error", "expected an error: {reply}");
    assert_eq!(reply["id"], id, "{reply}");
    assert_eq!(reply["code"], code, "{reply}");
    assert!(reply["message"].is_string(), "{reply}");
    reply
}

/// Reads until an `event` frame of this kind for (gid, uid) arrives; returns it.
async fn event(client: &mut Client, kind: &str, gid: u64, uid: u64) -> Value {
    loop {
        let frame = client.recv().await;
        if frame["type"] == "event"
            && frame["event"] == kind
            && frame["gid"] == gid
            && frame["uid"] == uid
        {
            return frame;
        }
    }
}

fn is_msg_of(frame: &Value, gid: u64) -> bool {
    frame["type"] == "msg" && frame["gid"] == gid
}

fn is_event_of(frame: &Value, gid: u64) -> bool {
    frame["type"] == "event" && frame["gid"] == gid
}

/// Sends a message and asserts it was stored; returns its msgid.
async fn send_ok(client: &mut Client, gid: u64, cmid: &str) -> u64 {
    let sent = client.send_msg(gid, cmid, json!({"text": cmid})).await;
    assert_eq!(sent["type"], "sent", "send {cmid}: {sent}");
    sent["msgid"].as_u64().expect("a msgid")
}

/// The uids stored as members of `gid`, ascending.
async fn stored_members(server: &Server, gid: u64) -> Vec<i64> {
    sql(
        &server.database_url,
        &format!("SELECT uid FROM group_members WHERE gid = {gid} ORDER BY uid"),
    )
    .await
    .iter()
    .map(|row| row.get(0))
    .collect()
}

async fn stored_message_count(server: &Server, gid: u64) -> i64 {
    sql(
        &server.database_url,
        &format!("SELECT count(*) FROM group_msgs WHERE gid = {gid}"),
    )
    .await[0]
        .get(0)
}

// ---- membership ----

#[tokio::test]
async fn a_non_member_is_refused_every_group_operation_and_its_session_stays_open() {
    let server = Server::start().await;
    let gid = server.group(&[1]).await;
    server.users(&[2]).await;
    let mut owner = server.connect(1).await;
    send_ok(&mut owner, gid, "before").await;
    let mut stranger = server.connect(2).await;
    assert_eq!(stranger.hello["groups"], json!([]));

    let send = json!({"type": "send", "id": "s1", "gid": gid, "cmid": "c-1", "body": {"t": 1}});
    expect_error(&mut stranger, send, "forbidden").await;
    ping(&mut stranger, "p1").await;

    let pull = json!({"type": "pull", "id": "r1", "gid": gid, "after": 0});
    expect_error(&mut stranger, pull, "forbidden").await;
    ping(&mut stranger, "p2").await;

    let ack = json!({"type": "ack", "id": "a1", "gid": gid, "msgid": 1});
    expect_error(&mut stranger, ack, "forbidden").await;
    ping(&mut stranger, "p3").await;

    let missing = gid + 1000;
    let send = json!({"type": "send", "id": "s2", "gid": missing, "cmid": "c-2", "body": 1});
    expect_error(&mut stranger, send, "not_found").await;
    ping(&mut stranger, "p4").await;
    let pull = json!({"type": "pull", "id": "r2", "gid": missing});
    expect_error(&mut stranger, pull, "not_found").await;
    ping(&mut stranger, "p5").await;

    // The same over HTTP.
    let path = format!("/v1/groups/{gid}/messages?after=0");
    let got = server.user(2, reqwest::Method::GET, &path, None).await;
    assert_http_error(&got, 403, "forbidden", "HTTP pull by a non-member");
    let path = format!("/v1/groups/{gid}/ack");
    let got = server
        .user(2, reqwest::Method::POST, &path, Some(json!({"msgid": 1})))
        .await;
    assert_http_error(&got, 403, "forbidden", "HTTP ack by a non-member");
    let path = format!("/v1/groups/{missing}/messages");
    let got = server.user(2, reqwest::Method::GET, &path, None).await;
    assert_http_error(&got, 404, "not_found", "HTTP pull of a missing group");

    // Nothing the stranger tried was stored or reached the member.
    assert_eq!(stored_message_count(&server, gid).await, 1);
    let seen = ping(&mut owner, "p").await;
    assert!(
        seen.iter().all(|f| !is_msg_of(f, gid) || f["from"] == 1),
        "{seen:?}"
    );
    // The member is unaffected.
    let path = format!("/v1/groups/{gid}/messages?after=0");
    let (status, page) = server.user(1, reqwest::Method::GET, &path, None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["msgs"].as_array().map(Vec::len), Some(1), "{page}");
}

#[tokio::test]
async fn an_admin_removal_is_live_for_every_online_member_and_cuts_the_removed_one_off() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2, 3]).await;
    let mut ann = server.connect(1).await;
    let mut bob = server.connect(2).await;
    let mut cid_phone = server.connect(3).await;
    let mut cid_laptop = server.connect(3).await;
    send_ok(&mut ann, gid, "before").await;
    for client in [&mut ann, &mut bob, &mut cid_phone, &mut cid_laptop] {
        client.msgs(gid, 1).await;
    }

    let (status, body) = server
        .admin(
            reqwest::Method::DELETE,
            &format!("/v1/admin/groups/{gid}/members/3"),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    for client in [&mut ann, &mut bob, &mut cid_phone, &mut cid_laptop] {
        let removed = event(client, "member_removed", gid, 3).await;
        assert_eq!(removed["reason"], "removed", "{removed}");
        assert!(removed["ts"].as_i64().is_some(), "{removed}");
    }
    assert_eq!(stored_members(&server, gid).await, vec![1, 2]);

    // New messages reach the remaining members only.
    let msgid = send_ok(&mut ann, gid, "after").await;
    assert_eq!(bob.msgs(gid, 1).await[0]["msgid"], msgid);
    assert_eq!(ann.msgs(gid, 1).await[0]["msgid"], msgid);
    for (client, name) in [(&mut cid_phone, "phone"), (&mut cid_laptop, "laptop")] {
        let seen = ping(client, name).await;
        assert!(
            !seen.iter().any(|f| is_msg_of(f, gid)),
            "the removed member's {name} still gets the group: {seen:?}"
        );
        let send = json!({"type": "send", "id": "s", "gid": gid, "cmid": name, "body": 1});
        expect_error(client, send, "forbidden").await;
        let pull = json!({"type": "pull", "id": "r", "gid": gid});
        expect_error(client, pull, "forbidden").await;
        ping(client, "still open").await;
    }
    assert_eq!(stored_message_count(&server, gid).await, 2);

    // A new session of the removed user no longer lists the group.
    let cid_again = server.connect(3).await;
    assert_eq!(cid_again.hello["groups"], json!([]));
    let (status, groups) = server
        .user(3, reqwest::Method::GET, "/v1/me/groups", None)
        .await;
    assert_eq!((status, &groups["groups"]), (200, &json!([])), "{groups}");

    // Removing again changes nothing and announces nothing.
    let (status, body) = server
        .admin(
            reqwest::Method::DELETE,
            &format!("/v1/admin/groups/{gid}/members/3"),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let msgid = send_ok(&mut ann, gid, "barrier").await;
    for client in [&mut ann, &mut bob] {
        let mut seen = Vec::new();
        loop {
            let frame = client.recv().await;
            let done = is_msg_of(&frame, gid) && frame["msgid"] == msgid;
            seen.push(frame);
            if done {
                break;
            }
        }
        assert!(
            !seen.iter().any(|f| is_event_of(f, gid)),
            "a second removal was announced: {seen:?}"
        );
    }
    assert_eq!(stored_members(&server, gid).await, vec![1, 2]);
}

#[tokio::test]
async fn a_re_added_member_is_live_again_on_its_existing_session_and_adding_twice_is_a_no_op() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2]).await;
    server.users(&[3]).await;
    let mut ann = server.connect(1).await;
    let mut bob = server.connect(2).await;
    send_ok(&mut ann, gid, "m1").await;
    send_ok(&mut ann, gid, "m2").await;
    bob.msgs(gid, 2).await;

    let (status, _) = server
        .admin(
            reqwest::Method::DELETE,
            &format!("/v1/admin/groups/{gid}/members/2"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    event(&mut bob, "member_removed", gid, 2).await;
    event(&mut ann, "member_removed", gid, 2).await;
    send_ok(&mut ann, gid, "while-out").await;

    let (status, body) = server
        .admin_post(
            &format!("/v1/admin/groups/{gid}/members"),
            json!({"uids": [2]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for client in [&mut ann, &mut bob] {
        let added = event(client, "member_added", gid, 2).await;
        assert!(added["ts"].as_i64().is_some(), "{added}");
    }
    assert_eq!(stored_members(&server, gid).await, vec![1, 2]);
    // A rejoining member starts caught up, the older messages pullable.
    let (status, groups) = server
        .user(2, reqwest::Method::GET, "/v1/me/groups", None)
        .await;
    assert_eq!(status, 200, "{groups}");
    assert_eq!(
        groups["groups"],
        json!([{"gid": gid, "last_ack": 3, "last_read": 3, "latest": 3}])
    );

    // The same session, never reconnected, receives and sends again.
    let msgid = send_ok(&mut ann, gid, "welcome-back").await;
    let got = bob.msgs(gid, 1).await.remove(0);
    assert_eq!(
        (got["msgid"].as_u64(), &got["from"]),
        (Some(msgid), &json!(1))
    );
    let reply = bob.send_msg(gid, "thanks", json!({"text": "thanks"})).await;
    assert_eq!(reply["type"], "sent", "{reply}");
    let got = ann.msgs(gid, 2).await;
    assert_eq!(got[1]["msgid"], reply["msgid"]);
    assert_eq!(got[1]["from"], 2);
    let pull = json!({"type": "pull", "id": "r", "gid": gid, "after": 0});
    let page = bob.request(pull).await;
    assert_eq!(page["type"], "msgs", "{page}");
    assert_eq!(page["msgs"].as_array().map(Vec::len), Some(5), "{page}");

    // Adding a member again is a no-op: no event.
    let (status, body) = server
        .admin_post(
            &format!("/v1/admin/groups/{gid}/members"),
            json!({"uids": [2]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Ten concurrent adds of one new member: one membership, one event.
    let path = format!("/v1/admin/groups/{gid}/members");
    let adds = (0..10).map(|_| server.admin_post(&path, json!({"uids": [3]})));
    for (status, body) in futures_util::future::join_all(adds).await {
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(stored_members(&server, gid).await, vec![1, 2, 3]);
    // Every add has been answered, so its events were queued before this message.
    let barrier = send_ok(&mut bob, gid, "barrier").await;
    for client in [&mut ann, &mut bob] {
        let mut events = Vec::new();
        loop {
            let frame = client.recv().await;
            if is_msg_of(&frame, gid) && frame["msgid"] == barrier {
                break;
            }
            if is_event_of(&frame, gid) {
                events.push(frame);
            }
        }
        assert_eq!(events.len(), 1, "expected one member_added: {events:?}");
        assert_eq!(events[0]["event"], "member_added", "{events:?}");
        assert_eq!(events[0]["uid"], 3, "{events:?}");
    }
    // Added when "thanks" was the newest message: caught up to it, the barrier unread.
    let mut cid = server.connect(3).await;
    assert_eq!(
        cid.hello["groups"],
        json!([{"gid": gid, "last_ack": reply["msgid"], "last_read": reply["msgid"], "latest": barrier}])
    );
    send_ok(&mut cid, gid, "hello-all").await;
}

#[tokio::test]
async fn deactivation_closes_the_sessions_with_4003_and_removes_the_user_everywhere() {
    let server = Server::start().await;
    let g1 = server.group(&[1, 2, 3]).await;
    let g2 = server.group(&[2, 3]).await;
    let mut ann = server.connect(1).await;
    let mut bob = server.connect(2).await;
    let mut cid_phone = server.connect(3).await;
    let mut cid_laptop = server.connect(3).await;
    assert_eq!(cid_phone.hello["groups"].as_array().map(Vec::len), Some(2));

    let (status, body) = server
        .admin(reqwest::Method::POST, "/v1/admin/users/3/deactivate", None)
        .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(cid_phone.closed().await, Some(4003));
    assert_eq!(cid_laptop.closed().await, Some(4003));
    let removed = event(&mut ann, "member_removed", g1, 3).await;
    assert_eq!(removed["reason"], "deactivated", "{removed}");
    // One event per group, in whichever order the groups send them.
    let mut pending = vec![g1, g2];
    while !pending.is_empty() {
        let frame = bob.recv().await;
        if frame["type"] == "event" && frame["uid"] == 3 {
            assert_eq!(frame["event"], "member_removed", "{frame}");
            assert_eq!(frame["reason"], "deactivated", "{frame}");
            let gid = frame["gid"].as_u64().unwrap();
            assert!(pending.contains(&gid), "unexpected or repeated: {frame}");
            pending.retain(|&g| g != gid);
        }
    }
    assert_eq!(stored_members(&server, g1).await, vec![1, 2]);
    assert_eq!(stored_members(&server, g2).await, vec![2]);

    // Any token for the uid is refused now, however valid.
    let token = valid_token(3);
    assert_eq!(Client::connect(server.addr, &token).await.err(), Some(403));
    let query = format!("?token={token}");
    assert_eq!(
        refused_upgrade(ws_request(&server, &query, None)).await,
        403
    );
    let bearer = format!("Bearer {token}");
    let got = http_with(
        &server,
        reqwest::Method::GET,
        "/v1/me/groups",
        Some(&bearer),
        None,
    )
    .await;
    assert_http_error(&got, 403, "forbidden", "HTTP by a deactivated user");
    let got = http_with(
        &server,
        reqwest::Method::GET,
        &format!("/v1/groups/{g1}/messages"),
        Some(&bearer),
        None,
    )
    .await;
    assert_http_error(&got, 403, "forbidden", "HTTP pull by a deactivated user");

    // The others carry on; the user is no member anywhere.
    let msgid = send_ok(&mut ann, g1, "after").await;
    assert_eq!(bob.msgs(g1, 1).await[0]["msgid"], msgid);
    send_ok(&mut bob, g2, "after-2").await;
    let bob_again = server.connect(2).await;
    let mut groups: Vec<u64> = bob_again.hello["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["gid"].as_u64().unwrap())
        .collect();
    groups.sort_unstable();
    assert_eq!(groups, vec![g1.min(g2), g1.max(g2)]);
    let active = sql(
        &server.database_url,
        "SELECT active FROM users WHERE uid = 3",
    )
    .await;
    assert!(!active[0].get::<_, bool>(0));

    // Deactivating again is 204 and tells nobody anything.
    let (status, body) = server
        .admin(reqwest::Method::POST, "/v1/admin/users/3/deactivate", None)
        .await;
    assert_eq!(status, 204, "{body}");
    let barrier = send_ok(&mut ann, g1, "barrier").await;
    let mut seen = Vec::new();
    loop {
        let frame = bob.recv().await;
        let done = is_msg_of(&frame, g1) && frame["msgid"] == barrier;
        seen.push(frame);
        if done {
            break;
        }
    }
    assert!(
        !seen.iter().any(|f| f["type"] == "event"),
        "a second deactivation was announced: {seen:?}"
    );
}

// ---- authentication ----

#[tokio::test]
async fn every_authentication_failure_is_refused_with_401_or_403_before_the_upgrade() {
    let server = Server::start().await;
    server.users(&[1]).await;
    let exp = now_s() + 3600;
    let good = valid_token(1);
    let forged = jwt(
        json!({"sub": "1", "exp": exp}),
        "another-secret-entirely-0123",
    );
    let expired = jwt(json!({"sub": "1", "exp": now_s() - 60}), JWT_SECRET);
    let no_exp = jwt(json!({"sub": "1"}), JWT_SECRET);
    let not_a_uid = jwt(json!({"sub": "ann", "exp": exp}), JWT_SECRET);
    let unsigned = format!(
        "{}.{}.",
        base64url(br#"{"alg":"none","typ":"JWT"}"#),
        base64url(json!({"sub": "1", "exp": exp}).to_string().as_bytes())
    );
    let never_created = valid_token(4242);

    // WebSocket upgrades.
    assert_eq!(refused_upgrade(ws_request(&server, "", None)).await, 401);
    for (token, what) in [
        ("not-a-jwt", "malformed"),
        (good.as_str(), "good, mangled"),
        (forged.as_str(), "another secret"),
        (expired.as_str(), "expired"),
        (no_exp.as_str(), "without exp"),
        (not_a_uid.as_str(), "sub not a uid"),
        (unsigned.as_str(), "alg none"),
        (ADMIN_KEY, "the admin key"),
    ] {
        let token = if what == "good, mangled" {
            format!("{token}x")
        } else {
            token.to_owned()
        };
        let header = format!("Bearer {token}");
        let request = ws_request(&server, "", Some(&header));
        assert_eq!(refused_upgrade(request).await, 401, "header token {what}");
        let request = ws_request(&server, &format!("?token={token}"), None);
        assert_eq!(refused_upgrade(request).await, 401, "query token {what}");
    }
    assert_eq!(
        Client::connect(server.addr, &never_created).await.err(),
        Some(403)
    );
    let request = ws_request(&server, &format!("?token={never_created}"), None);
    assert_eq!(refused_upgrade(request).await, 403);

    // The query parameter works like the header.
    let mut by_query = Client::open(ws_request(&server, &format!("?token={good}"), None))
        .await
        .expect("?token= upgrade");
    assert_eq!(by_query.hello["uid"], 1);
    ping(&mut by_query, "q").await;
    let mut by_header = Client::connect(server.addr, &good)
        .await
        .expect("bearer upgrade");
    assert_eq!(by_header.hello["uid"], 1);
    ping(&mut by_header, "h").await;

    // User HTTP endpoints.
    let get = reqwest::Method::GET;
    let got = http_with(&server, get.clone(), "/v1/me/groups", None, None).await;
    assert_http_error(&got, 401, "unauthorized", "HTTP without token");
    for (token, what, status, code) in [
        ("not-a-jwt", "malformed", 401, "unauthorized"),
        (forged.as_str(), "another secret", 401, "unauthorized"),
        (expired.as_str(), "expired", 401, "unauthorized"),
        (unsigned.as_str(), "alg none", 401, "unauthorized"),
        (never_created.as_str(), "never created", 403, "forbidden"),
    ] {
        let header = format!("Bearer {token}");
        let got = http_with(&server, get.clone(), "/v1/me/groups", Some(&header), None).await;
        assert_http_error(&got, status, code, &format!("HTTP token {what}"));
    }
    let header = format!("Bearer {good}");
    let got = http_with(&server, get.clone(), "/v1/me/groups", Some(&header), None).await;
    assert_eq!(got, (200, json!({"groups": []})));

    // Admin endpoints.
    let body = json!({"users": [{"uid": 77}]});
    for (authorization, what) in [
        (None, "without key"),
        (
            Some("Bearer wrong-admin-key-0123456789".to_owned()),
            "wrong key",
        ),
        (Some(format!("Bearer {ADMIN_KEY}x")), "key with a suffix"),
        (Some(format!("Bearer {good}")), "a user token"),
        (Some(ADMIN_KEY.to_owned()), "key without Bearer"),
    ] {
        let got = http_with(
            &server,
            reqwest::Method::POST,
            "/v1/admin/users",
            authorization.as_deref(),
            Some(body.clone()),
        )
        .await;
        assert_http_error(&got, 401, "unauthorized", &format!("admin {what}"));
        let got = http_with(
            &server,
            reqwest::Method::POST,
            "/v1/admin/tokens",
            authorization.as_deref(),
            Some(json!({"uid": 1})),
        )
        .await;
        assert_http_error(&got, 401, "unauthorized", &format!("admin tokens {what}"));
    }
    // None of those created the user, so no token can be issued for it.
    let got = server
        .admin_post("/v1/admin/tokens", json!({"uid": 77, "ttl_s": 60}))
        .await;
    assert_http_error(&got, 404, "not_found", "token for a uid never created");
    let got = server
        .admin_post("/v1/admin/tokens", json!({"uid": 4242}))
        .await;
    assert_http_error(&got, 404, "not_found", "token for a uid never created");
}

#[tokio::test]
async fn a_session_is_closed_with_4001_when_its_token_expires() {
    // No leeway: the session ends at `exp` itself.
    let server = Server::start_with(&[("HERALD_JWT_LEEWAY_S", "0")]).await;
    server.users(&[1]).await;
    let token = jwt(json!({"sub": "1", "exp": now_s() + 3}), JWT_SECRET);
    let mut client = Client::connect(server.addr, &token)
        .await
        .expect("upgrade with a token still valid");
    ping(&mut client, "alive").await;

    // No frame is sent meanwhile; the server alone closes the session.
    assert_eq!(client.closed().await, Some(4001));
}

#[tokio::test]
async fn a_token_is_refused_from_the_second_its_exp_names() {
    // RFC 7519: the current time MUST be before `exp`; a token whose `exp` is the current
    // second is expired (HTTP 401), as the session timer already treats it. (With a
    // leeway, the same holds of `exp` + leeway.)
    let server = Server::start_with(&[("HERALD_JWT_LEEWAY_S", "0")]).await;
    server.users(&[1]).await;
    // Start just after a second boundary so the whole check runs within that second.
    let into_second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_millis();
    tokio::time::sleep(Duration::from_millis(u64::from(1000 - into_second) + 20)).await;
    let token = jwt(json!({"sub": "1", "exp": now_s()}), JWT_SECRET);
    let http = http_with(
        &server,
        reqwest::Method::GET,
        "/v1/me/groups",
        Some(&format!("Bearer {token}")),
        None,
    )
    .await;
    let upgrade = match Client::connect(server.addr, &token).await {
        Err(status) => format!("refused with {status}"),
        Ok(mut client) => {
            let hello = client.hello.clone();
            let close = client.closed().await;
            format!("accepted: hello {hello}, then close {close:?}")
        }
    };
    assert_eq!(
        (http.0, upgrade.as_str()),
        (401, "refused with 401"),
        "a token with exp = now; HTTP body {}",
        http.1
    );
    assert_http_error(&http, 401, "unauthorized", "HTTP with exp = now");
}

// ---- rate limit ----

#[tokio::test]
async fn sends_over_the_rate_limit_are_answered_rate_limited_and_the_session_stays_open() {
    let server = Server::start_with(&[("HERALD_SEND_RATE", "5")]).await;
    let gid = server.group(&[1]).await;
    let mut client = server.connect(1).await;

    for n in 0..30 {
        let cmid = format!("c-{n}");
        client
            .send(json!({"type": "send", "id": n, "gid": gid, "cmid": cmid, "body": {"n": n}}))
            .await;
    }
    let mut replies = std::collections::HashMap::new();
    while replies.len() < 30 {
        let frame = client.recv().await;
        if matches!(frame["type"].as_str(), Some("sent" | "error")) {
            let id = frame["id"].as_u64().expect("a numeric id");
            assert!(
                replies.insert(id, frame.clone()).is_none(),
                "two replies to {id}"
            );
        }
    }
    let sent = replies.values().filter(|f| f["type"] == "sent").count();
    let limited = replies
        .values()
        .filter(|f| f["type"] == "error" && f["code"] == "rate_limited")
        .count();
    assert_eq!(sent + limited, 30, "{replies:?}");
    // The bucket starts full: a burst of twice the rate passes.
    assert!(sent >= 10, "only {sent} of 30 sent");
    assert!(limited > 0, "none of 30 rate limited");
    assert_eq!(stored_message_count(&server, gid).await, sent as i64);
    ping(&mut client, "open").await;

    // A rate, not a ban: sends pass again once the bucket refills.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let reply = client.send_msg(gid, "later", json!({})).await;
        if reply["type"] == "sent" {
            break;
        }
        assert_eq!(reply["code"], "rate_limited", "{reply}");
        assert!(tokio::time::Instant::now() < deadline, "still limited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_user_creates_groups_past_the_gids_the_admin_api_chose() {
    let server = Server::start().await;
    server.users(&[1]).await;
    for gid in [1, 2] {
        let (status, body) = server
            .admin_post(
                "/v1/admin/groups",
                json!({"gid": gid, "name": "chosen", "owner": 1}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = server
        .user(
            1,
            reqwest::Method::POST,
            "/v1/groups",
            Some(json!({"name": "assigned"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["gid"], 3, "{body}");
}
