//! Read receipts: a read position per member apart from the ack, cumulative and monotonic,
//! stored coalesced, told to the group (the reader's other devices included), on every node,
//! and the base of unread counts.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{eventually, sql, Client, Cluster, Server, WAIT};

/// The next `reads` frame of the group.
async fn reads_frame(client: &mut Client, gid: u64) -> Value {
    serde_json::from_str(
        &client
            .take("a reads frame", |f| f.kind == "reads" && f.gid == Some(gid))
            .await,
    )
    .unwrap()
}

/// Sends `count` messages and waits for their `sent` replies.
async fn send(client: &mut Client, gid: u64, count: u64) {
    for n in 0..count {
        let sent = client.send_msg(gid, &format!("m{n}"), json!(n)).await;
        assert_eq!(sent["type"], "sent", "{sent}");
    }
}

#[tokio::test]
async fn a_read_position_moves_forward_only_apart_from_the_ack_and_is_told_to_the_group() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2]).await;
    let mut ann = server.connect(1).await;
    let mut ann_phone = server.connect(1).await;
    let mut bob = server.connect(2).await;
    send(&mut bob, gid, 5).await;

    ann.send(json!({"type": "ack", "gid": gid, "msgid": 5}))
        .await;
    ann.send(json!({"type": "read", "gid": gid, "msgid": 3}))
        .await;
    ann.send(json!({"type": "read", "gid": gid, "msgid": 2}))
        .await;
    let told = json!({"type": "reads", "gid": gid, "reads": [{"uid": 1, "msgid": 3}]});
    assert_eq!(
        reads_frame(&mut bob, gid).await,
        told,
        "the group sees who read where"
    );
    assert_eq!(
        reads_frame(&mut ann_phone, gid).await,
        told,
        "and the reader's other devices"
    );

    let (status, body) = server
        .user(2, Method::GET, &format!("/v1/groups/{gid}/reads"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["reads"],
        json!([{"uid": 1, "msgid": 3}, {"uid": 2, "msgid": 0}])
    );

    // Stored coalesced; received and read kept apart; unread counts from the read position.
    eventually("the read position stored", WAIT, async || {
        let rows = sql(
            &server.database_url,
            &format!("SELECT last_ack_msgid, last_read_msgid FROM group_members WHERE gid = {gid} AND uid = 1"),
        )
        .await;
        let (ack, read): (i64, i64) = (rows[0].get(0), rows[0].get(1));
        ((ack, read) == (5, 3)).then_some(()).ok_or(format!("{ack} {read}"))
    })
    .await;
    let again = server.connect(1).await;
    assert_eq!(
        again.hello["groups"],
        json!([{"gid": gid, "last_ack": 5, "last_read": 3, "latest": 5}])
    );
    let refused = ann
        .request(json!({"type": "read", "id": "r", "gid": gid, "msgid": 6}))
        .await;
    assert_eq!(
        refused["code"], "bad_request",
        "above the newest msgid: {refused}"
    );
}

#[tokio::test]
async fn a_read_over_http_and_on_another_node_reaches_the_group_everywhere() {
    let cluster = Cluster::start(2).await;
    let gid = cluster.nodes[0].group(&[1, 2]).await;
    let mut ann = cluster.nodes[0].connect(1).await;
    let mut bob = cluster.nodes[1].connect(2).await;
    send(&mut ann, gid, 2).await;
    bob.msgs(gid, 2).await;

    let (status, _) = cluster.nodes[1]
        .user(
            2,
            Method::POST,
            &format!("/v1/groups/{gid}/read"),
            Some(json!({"msgid": 2})),
        )
        .await;
    assert_eq!(status, 204);
    let told = reads_frame(&mut ann, gid).await;
    assert_eq!(
        told["reads"],
        json!([{"uid": 2, "msgid": 2}]),
        "across nodes"
    );
    assert_eq!(reads_frame(&mut bob, gid).await["reads"], told["reads"]);
    let (_, body) = cluster.nodes[0]
        .user(1, Method::GET, &format!("/v1/groups/{gid}/reads"), None)
        .await;
    assert_eq!(
        body["reads"],
        json!([{"uid": 1, "msgid": 0}, {"uid": 2, "msgid": 2}])
    );
}
