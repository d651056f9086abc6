//! Pulling what was missed (WebSocket and HTTP, paged) and acking it: cursors in `hello`
//! and `GET /v1/me/groups`, the stored watermark, its monotonicity, its coalescing, and
//! its survival across reconnects, graceful stops and late joins.

use std::ops::RangeInclusive;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::helpers::{eventually, metric, sql, Client, Server, WAIT};

/// The body of the numbered message `n`: nested, with non-ASCII text and floats.
fn body_of(n: u64) -> Value {
    json!({"text": format!("message {n} é✓"), "n": n, "nested": {"list": [n, 1.5, null, "x"]}})
}

fn cmid_of(n: u64) -> String {
    format!("c-{n}")
}

/// Sends messages `first..=last` one after another (each waits for its `sent`) and returns
/// the `sent` replies, index 0 being message `first`. The group must have had `first - 1`
/// messages, so message n gets msgid n.
async fn send_numbered(client: &mut Client, gid: u64, first: u64, last: u64) -> Vec<Value> {
    let mut replies = Vec::new();
    for n in first..=last {
        let sent = client.send_msg(gid, &cmid_of(n), body_of(n)).await;
        assert_eq!(sent["type"], "sent", "{sent}");
        assert_eq!(sent["msgid"], n, "msgids are dense from 1: {sent}");
        replies.push(sent);
    }
    replies
}

/// Checks that `msgs` holds exactly the numbered messages `expected`, ascending, as sent by
/// `from` (`sent[n - 1]` is the `sent` reply of message n).
fn assert_msgs(msgs: &Value, gid: u64, expected: RangeInclusive<u64>, from: u64, sent: &[Value]) {
    let msgs = msgs.as_array().unwrap_or_else(|| panic!("msgs: {msgs}"));
    let got: Vec<u64> = msgs.iter().filter_map(|m| m["msgid"].as_u64()).collect();
    let want: Vec<u64> = expected.collect();
    assert_eq!(got, want, "msgids of the page");
    for msg in msgs {
        let n = msg["msgid"].as_u64().unwrap();
        assert_eq!(msg["gid"], gid, "{msg}");
        assert_eq!(msg["from"], from, "{msg}");
        assert_eq!(msg["cmid"], cmid_of(n), "{msg}");
        assert_eq!(msg["body"], body_of(n), "{msg}");
        assert_eq!(msg["ts"], sent[n as usize - 1]["ts"], "{msg}");
    }
}

/// The member's row in `group_members`: its stored ack watermark.
async fn stored_ack(server: &Server, gid: u64, uid: u64) -> i64 {
    let rows = sql(
        &server.database_url,
        &format!("SELECT last_ack_msgid FROM group_members WHERE gid = {gid} AND uid = {uid}"),
    )
    .await;
    assert_eq!(rows.len(), 1, "one membership row for ({gid}, {uid})");
    rows[0].get(0)
}

async fn wait_stored_ack(server: &Server, gid: u64, uid: u64, want: i64) {
    eventually(
        &format!("stored last_ack_msgid of {uid} = {want}"),
        WAIT,
        async || {
            let got = stored_ack(server, gid, uid).await;
            (got == want).then_some(()).ok_or(got.to_string())
        },
    )
    .await
}

/// The user's entry for `gid` in `GET /v1/me/groups`.
async fn my_cursor(server: &Server, uid: u64, gid: u64) -> Value {
    let (status, body) = server.user(uid, Method::GET, "/v1/me/groups", None).await;
    assert_eq!(status, 200, "{body}");
    body["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("groups: {body}"))
        .iter()
        .find(|g| g["gid"] == gid)
        .cloned()
        .unwrap_or_else(|| panic!("group {gid} missing from {body}"))
}

async fn wait_cursor(server: &Server, uid: u64, gid: u64, want: Value) {
    eventually(
        &format!("/v1/me/groups of {uid} = {want}"),
        WAIT,
        async || {
            let got = my_cursor(server, uid, gid).await;
            (got == want).then_some(()).ok_or(got.to_string())
        },
    )
    .await
}

async fn ack(client: &mut Client, gid: u64, msgid: u64) {
    client
        .send(json!({"type": "ack", "gid": gid, "msgid": msgid}))
        .await;
}

/// An ack above the group's newest msgid, with an id: its error reply comes after every
/// ack the session forwarded before it reached the group, so it also works as a barrier.
/// (Acks of a burst are coalesced into the highest, so lower ones just before it are not
/// forwarded at all.)
async fn ack_too_high(client: &mut Client, gid: u64, msgid: u64) {
    let reply = client
        .request(json!({"type": "ack", "id": "too-high", "gid": gid, "msgid": msgid}))
        .await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "bad_request", "{reply}");
}

async fn get(server: &Server, uid: u64, path: &str) -> (u16, Value) {
    server.user(uid, Method::GET, path, None).await
}

#[tokio::test]
async fn an_offline_member_pages_through_everything_it_missed_over_websocket() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2]).await;
    let mut ann = server.connect(1).await;
    let sent = send_numbered(&mut ann, gid, 1, 250).await;

    let mut bob = server.connect(2).await;
    assert_eq!(
        bob.hello["groups"],
        json!([{"gid": gid, "last_ack": 0, "last_read": 0, "latest": 250}])
    );

    for (after, expected, more) in [
        (0, 1..=100, true),
        (100, 101..=200, true),
        (200, 201..=250, false),
    ] {
        let id = format!("page-after-{after}");
        let page = bob
            .request(json!({"type": "pull", "id": id, "gid": gid, "after": after, "limit": 100}))
            .await;
        assert_eq!(page["type"], "msgs", "{page}");
        assert_eq!(page["gid"], gid, "{page}");
        assert_eq!(page["more"], more, "after {after}");
        assert_msgs(&page["msgs"], gid, expected, 1, &sent);
    }

    // Without a limit a page holds 100; a numeric id is echoed as a number.
    let page = bob
        .request(json!({"type": "pull", "id": 7, "gid": gid, "after": 120}))
        .await;
    assert_eq!((&page["type"], &page["id"]), (&json!("msgs"), &json!(7)));
    assert_eq!(page["more"], true);
    assert_msgs(&page["msgs"], gid, 121..=220, 1, &sent);

    // The cap is 1000: one page holds all 250; past it the request is refused.
    let page = bob
        .request(json!({"type": "pull", "id": "all", "gid": gid, "after": 0, "limit": 1000}))
        .await;
    assert_eq!(page["more"], false);
    assert_msgs(&page["msgs"], gid, 1..=250, 1, &sent);
    let refused = bob
        .request(json!({"type": "pull", "id": "big", "gid": gid, "after": 0, "limit": 1001}))
        .await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "bad_request", "{refused}");

    // Past the newest: an empty last page.
    let page = bob
        .request(json!({"type": "pull", "id": "end", "gid": gid, "after": 250, "limit": 100}))
        .await;
    assert_eq!(page["msgs"], json!([]));
    assert_eq!(page["more"], false);

    // A group that does not exist is not found; only members may read.
    let refused = bob
        .request(json!({"type": "pull", "id": "nowhere", "gid": 987654, "after": 0}))
        .await;
    assert_eq!(
        (&refused["type"], &refused["code"]),
        (&json!("error"), &json!("not_found")),
        "{refused}"
    );
    server.users(&[3]).await;
    let mut carol = server.connect(3).await;
    let refused = carol
        .request(json!({"type": "pull", "id": "peek", "gid": gid, "after": 0}))
        .await;
    assert_eq!(
        (&refused["type"], &refused["code"]),
        (&json!("error"), &json!("forbidden")),
        "{refused}"
    );

    // The session is still usable after the refused pulls.
    let pong = bob
        .request(json!({"type": "ping", "id": "still-open"}))
        .await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test]
async fn an_offline_member_pages_through_everything_it_missed_over_http() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2]).await;
    server.users(&[3]).await;
    let mut ann = server.connect(1).await;
    let sent = send_numbered(&mut ann, gid, 1, 250).await;

    for (after, expected, more) in [
        (0, 1..=100, true),
        (100, 101..=200, true),
        (200, 201..=250, false),
    ] {
        let path = format!("/v1/groups/{gid}/messages?after={after}&limit=100");
        let (status, page) = get(&server, 2, &path).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["gid"], gid, "{page}");
        assert_eq!(page["more"], more, "after {after}");
        assert_msgs(&page["msgs"], gid, expected, 1, &sent);
    }

    // Without a limit a page holds 100.
    let (status, page) = get(&server, 2, &format!("/v1/groups/{gid}/messages?after=120")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["more"], true);
    assert_msgs(&page["msgs"], gid, 121..=220, 1, &sent);

    // The cap is 1000.
    let path = format!("/v1/groups/{gid}/messages?after=0&limit=1000");
    let (status, page) = get(&server, 2, &path).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["more"], false);
    assert_msgs(&page["msgs"], gid, 1..=250, 1, &sent);

    let path = format!("/v1/groups/{gid}/messages?after=0&limit=1001");
    let (status, body) = get(&server, 2, &path).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");

    // Only members may read; a group that does not exist is not found.
    let path = format!("/v1/groups/{gid}/messages?after=0&limit=100");
    let (status, body) = get(&server, 3, &path).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden", "{body}");

    let (status, body) = get(&server, 2, "/v1/groups/987654/messages?after=0&limit=100").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
}

#[tokio::test]
async fn acks_never_move_the_watermark_backwards_or_past_the_newest_message() {
    let server = Server::start_with(&[("HERALD_ACK_FLUSH_MS", "100")]).await;
    let gid = server.group(&[1, 2]).await;
    server.users(&[3]).await;
    let mut ann = server.connect(1).await;
    send_numbered(&mut ann, gid, 1, 10).await;
    let mut bob = server.connect(2).await;

    ack(&mut bob, gid, 5).await;
    wait_cursor(
        &server,
        2,
        gid,
        json!({"gid": gid, "last_ack": 5, "last_read": 0, "latest": 10}),
    )
    .await;
    wait_stored_ack(&server, gid, 2, 5).await;

    // A lower ack, then one above the newest msgid: the latter is refused, neither moves
    // anything.
    ack(&mut bob, gid, 3).await;
    ack_too_high(&mut bob, gid, 11).await;
    assert_eq!(
        my_cursor(&server, 2, gid).await,
        json!({"gid": gid, "last_ack": 5, "last_read": 0, "latest": 10})
    );
    // Several flush intervals later the stored row still says 5.
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until {
        assert_eq!(stored_ack(&server, gid, 2).await, 5);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        my_cursor(&server, 2, gid).await,
        json!({"gid": gid, "last_ack": 5, "last_read": 0, "latest": 10})
    );

    // Over HTTP: 204 and the same rules.
    let path = format!("/v1/groups/{gid}/ack");
    let (status, body) = server
        .user(2, Method::POST, &path, Some(json!({"msgid": 8})))
        .await;
    assert_eq!((status, &body), (204, &Value::Null));
    assert_eq!(my_cursor(&server, 2, gid).await["last_ack"], 8);
    let (status, body) = server
        .user(2, Method::POST, &path, Some(json!({"msgid": 6})))
        .await;
    assert_eq!((status, &body), (204, &Value::Null));
    assert_eq!(my_cursor(&server, 2, gid).await["last_ack"], 8);
    let (status, body) = server
        .user(2, Method::POST, &path, Some(json!({"msgid": 11})))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    wait_stored_ack(&server, gid, 2, 8).await;
    assert_eq!(
        my_cursor(&server, 2, gid).await,
        json!({"gid": gid, "last_ack": 8, "last_read": 0, "latest": 10})
    );

    // Acks of non-members and of unknown groups are refused.
    let (status, body) = server
        .user(3, Method::POST, &path, Some(json!({"msgid": 1})))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden", "{body}");
    let (status, body) = server
        .user(
            2,
            Method::POST,
            "/v1/groups/987654/ack",
            Some(json!({"msgid": 1})),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");

    let mut carol = server.connect(3).await;
    let refused = carol
        .request(json!({"type": "ack", "id": "not-mine", "gid": gid, "msgid": 1}))
        .await;
    assert_eq!(
        (&refused["type"], &refused["code"]),
        (&json!("error"), &json!("forbidden")),
        "{refused}"
    );

    // Other members' watermarks were never touched.
    assert_eq!(stored_ack(&server, gid, 1).await, 0);
}

#[tokio::test]
async fn after_a_reconnect_hello_shows_the_last_ack_and_the_newest_msgid() {
    let mut server = Server::start_with(&[("HERALD_ACK_FLUSH_MS", "100")]).await;
    let gid = server.group(&[1, 2]).await;
    let mut bob = server.connect(2).await;
    let mut ann = server.connect(1).await;
    let sent = send_numbered(&mut ann, gid, 1, 10).await;

    // Bob reads what was pushed and acks up to 7.
    let pushed = bob.msgs(gid, 10).await;
    assert_eq!(pushed[9]["msgid"], 10);
    ack(&mut bob, gid, 7).await;
    wait_cursor(
        &server,
        2,
        gid,
        json!({"gid": gid, "last_ack": 7, "last_read": 0, "latest": 10}),
    )
    .await;
    bob.close().await;

    let mut bob = server.connect(2).await;
    assert_eq!(
        bob.hello["groups"],
        json!([{"gid": gid, "last_ack": 7, "last_read": 0, "latest": 10}])
    );
    // What the client does next: pull from its last ack.
    let page = bob
        .request(json!({"type": "pull", "id": "resume", "gid": gid, "after": 7}))
        .await;
    assert_eq!(page["more"], false);
    assert_msgs(&page["msgs"], gid, 8..=10, 1, &sent);
    bob.close().await;
    ann.close().await;

    // And after the server restarts, from what it stored.
    wait_stored_ack(&server, gid, 2, 7).await;
    server.restart().await;
    let bob = server.connect(2).await;
    assert_eq!(
        bob.hello["groups"],
        json!([{"gid": gid, "last_ack": 7, "last_read": 0, "latest": 10}])
    );
}

#[tokio::test]
async fn a_graceful_stop_writes_the_acks_still_held_in_memory() {
    let mut server = Server::start_with(&[("HERALD_ACK_FLUSH_MS", "600000")]).await;
    let gid = server.group(&[1, 2]).await;
    let mut ann = server.connect(1).await;
    send_numbered(&mut ann, gid, 1, 5).await;
    let mut bob = server.connect(2).await;

    ack(&mut bob, gid, 4).await;
    wait_cursor(
        &server,
        2,
        gid,
        json!({"gid": gid, "last_ack": 4, "last_read": 0, "latest": 5}),
    )
    .await;
    // Not written yet: the flush interval is ten minutes.
    assert_eq!(stored_ack(&server, gid, 2).await, 0);

    // SIGTERM while both clients keep reading, so they can answer the close handshake.
    let (status, bob_code, ann_code) = tokio::join!(server.terminate(), bob.closed(), ann.closed());
    assert!(
        status.success(),
        "exit status {status}; logs:\n{}",
        server.logs()
    );
    assert_eq!(bob_code, Some(1012));
    assert_eq!(ann_code, Some(1012));
    assert_eq!(stored_ack(&server, gid, 2).await, 4);

    // A new process starts from what was written.
    server.restart().await;
    let bob = server.connect(2).await;
    assert_eq!(
        bob.hello["groups"],
        json!([{"gid": gid, "last_ack": 4, "last_read": 0, "latest": 5}])
    );
}

#[tokio::test]
async fn a_member_added_later_starts_caught_up_and_can_still_pull_older_messages() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2]).await;
    server.users(&[3, 4]).await;
    let mut ann = server.connect(1).await;
    let mut sent = send_numbered(&mut ann, gid, 1, 30).await;

    // Carl is offline when added.
    let members = format!("/v1/admin/groups/{gid}/members");
    let (status, body) = server.admin_post(&members, json!({"uids": [3]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stored_ack(&server, gid, 3).await, 30);
    let mut carl = server.connect(3).await;
    assert_eq!(
        carl.hello["groups"],
        json!([{"gid": gid, "last_ack": 30, "last_read": 30, "latest": 30}])
    );
    let page = carl
        .request(json!({"type": "pull", "id": "history", "gid": gid, "after": 0}))
        .await;
    assert_eq!(page["more"], false);
    assert_msgs(&page["msgs"], gid, 1..=30, 1, &sent);
    let (status, page) = get(
        &server,
        3,
        &format!("/v1/groups/{gid}/messages?after=10&limit=5"),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["more"], true);
    assert_msgs(&page["msgs"], gid, 11..=15, 1, &sent);

    // Dan is online when added: he hears of it and starts at the newest msgid too.
    let mut dan = server.connect(4).await;
    assert_eq!(dan.hello["groups"], json!([]));
    let (status, body) = server.admin_post(&members, json!({"uids": [4]})).await;
    assert_eq!(status, 200, "{body}");
    let event = dan.recv_type("event").await;
    assert_eq!(
        (&event["event"], &event["gid"], &event["uid"]),
        (&json!("member_added"), &json!(gid), &json!(4))
    );
    assert_eq!(
        my_cursor(&server, 4, gid).await,
        json!({"gid": gid, "last_ack": 30, "last_read": 30, "latest": 30})
    );

    // New messages reach both; their acks work like anyone's.
    sent.extend(send_numbered(&mut ann, gid, 31, 35).await);
    for client in [&mut carl, &mut dan] {
        let got: Vec<Value> = client.msgs(gid, 5).await;
        let msgids: Vec<u64> = got.iter().filter_map(|m| m["msgid"].as_u64()).collect();
        assert_eq!(msgids, vec![31, 32, 33, 34, 35]);
    }
    ack(&mut carl, gid, 32).await;
    ack(&mut dan, gid, 35).await;
    wait_cursor(
        &server,
        3,
        gid,
        json!({"gid": gid, "last_ack": 32, "last_read": 30, "latest": 35}),
    )
    .await;
    wait_cursor(
        &server,
        4,
        gid,
        json!({"gid": gid, "last_ack": 35, "last_read": 30, "latest": 35}),
    )
    .await;

    // Adding a member twice changes nothing: Carl's watermark stays where he acked.
    let (status, body) = server.admin_post(&members, json!({"uids": [3]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        my_cursor(&server, 3, gid).await,
        json!({"gid": gid, "last_ack": 32, "last_read": 30, "latest": 35})
    );
    wait_stored_ack(&server, gid, 3, 32).await;

    // Rejoining after a removal starts at the newest msgid again.
    let (status, body) = server
        .admin(Method::DELETE, &format!("{members}/3"), None)
        .await;
    assert_eq!(status, 204, "{body}");
    sent.extend(send_numbered(&mut ann, gid, 36, 40).await);
    let (status, body) = server.admin_post(&members, json!({"uids": [3]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        my_cursor(&server, 3, gid).await,
        json!({"gid": gid, "last_ack": 40, "last_read": 40, "latest": 40})
    );
    let carl = server.connect(3).await;
    assert_eq!(
        carl.hello["groups"],
        json!([{"gid": gid, "last_ack": 40, "last_read": 40, "latest": 40}])
    );
    let (status, page) = get(
        &server,
        3,
        &format!("/v1/groups/{gid}/messages?after=0&limit=1000"),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_msgs(&page["msgs"], gid, 1..=40, 1, &sent);
}

#[tokio::test]
async fn a_burst_of_acks_within_one_flush_interval_writes_the_row_once() {
    let server = Server::start_with(&[
        ("HERALD_ACK_FLUSH_MS", "1000"),
        ("HERALD_GROUP_IDLE_S", "1"),
    ])
    .await;
    let gid = server.group(&[1, 2]).await;
    let mut ann = server.connect(1).await;
    send_numbered(&mut ann, gid, 1, 200).await;
    ann.close().await;

    // Let the group go idle, so Bob's connection starts it afresh: its first flush is then
    // a whole interval after his hello, and the burst below cannot straddle two flushes.
    eventually("the idle group actor stops", WAIT, async || {
        let active = metric(&server.metrics().await, "herald_groups_active");
        (active == 0.0).then_some(()).ok_or(active.to_string())
    })
    .await;
    let mut bob = server.connect(2).await;
    assert_eq!(
        bob.hello["groups"],
        json!([{"gid": gid, "last_ack": 0, "last_read": 0, "latest": 200}])
    );
    for msgid in 1..=200 {
        ack(&mut bob, gid, msgid).await;
    }
    // The session forwards only the highest of a burst; the group holds it in memory.
    eventually("the group has the last ack", WAIT, async || {
        let cursor = my_cursor(&server, 2, gid).await;
        (cursor["last_ack"] == 200)
            .then_some(())
            .ok_or(cursor.to_string())
    })
    .await;

    eventually("the first ack flush", WAIT, async || {
        let flushed = metric(&server.metrics().await, "herald_acks_flushed_total");
        (flushed >= 1.0).then_some(()).ok_or(flushed.to_string())
    })
    .await;
    assert_eq!(stored_ack(&server, gid, 2).await, 200);
    // Another flush interval and a half: nothing more to write.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = server.metrics().await;
    assert_eq!(metric(&metrics, "herald_acks_flushed_total"), 1.0);
    assert_eq!(stored_ack(&server, gid, 2).await, 200);
    assert_eq!(
        my_cursor(&server, 2, gid).await,
        json!({"gid": gid, "last_ack": 200, "last_read": 0, "latest": 200})
    );
}

#[tokio::test]
async fn an_ack_sent_just_before_closing_the_socket_still_counts() {
    let server = Server::start_with(&[("HERALD_ACK_FLUSH_MS", "100")]).await;
    let gid = server.group(&[1, 2]).await;
    let mut ann = server.connect(1).await;
    send_numbered(&mut ann, gid, 1, 5).await;

    // A phone reads, acks and goes to the background: the ack frame precedes the close
    // frame on the same connection, so the server has it before it sees the close.
    for msgid in 1..=5 {
        let mut bob = server.connect(2).await;
        ack(&mut bob, gid, msgid).await;
        bob.close().await;
        wait_cursor(
            &server,
            2,
            gid,
            json!({"gid": gid, "last_ack": msgid, "last_read": 0, "latest": 5}),
        )
        .await;
    }
    wait_stored_ack(&server, gid, 2, 5).await;
}

#[tokio::test]
async fn an_ack_sent_just_before_the_connection_drops_still_counts() {
    let server = Server::start_with(&[("HERALD_ACK_FLUSH_MS", "100")]).await;
    let gid = server.group(&[1, 2]).await;
    let mut ann = server.connect(1).await;
    send_numbered(&mut ann, gid, 1, 5).await;

    // No close frame this time: the app is killed right after acking, the socket just ends.
    for msgid in 1..=5 {
        let mut bob = server.connect(2).await;
        ack(&mut bob, gid, msgid).await;
        drop(bob);
        wait_cursor(
            &server,
            2,
            gid,
            json!({"gid": gid, "last_ack": msgid, "last_read": 0, "latest": 5}),
        )
        .await;
    }
    wait_stored_ack(&server, gid, 2, 5).await;
}
