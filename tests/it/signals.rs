//! Signals (typing): relayed to a group's other online sessions, on every node, never
//! stored; members only, off in groups too big for presence.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{Client, Cluster, Server};

/// The frames a session gets before the reply to a ping: what was pushed to it by then.
async fn pushed_before_a_ping(client: &mut Client) -> Vec<Value> {
    client.send(json!({"type": "ping", "id": "barrier"})).await;
    let mut pushed = Vec::new();
    loop {
        let frame = client.recv().await;
        if frame["type"] == "pong" {
            return pushed;
        }
        pushed.push(frame);
    }
}

fn typing(gid: u64) -> Value {
    json!({"type": "signal", "gid": gid, "kind": "typing"})
}

#[tokio::test]
async fn a_signal_reaches_every_other_online_session_of_the_group_and_is_not_stored() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2]).await;
    let mut ann = server.connect(1).await;
    let mut ann_phone = server.connect(1).await;
    let mut bob = server.connect(2).await;

    ann.send(typing(gid)).await;
    let relayed = json!({"type": "signal", "gid": gid, "from": 1, "kind": "typing"});
    assert_eq!(bob.recv_type("signal").await, relayed);
    assert_eq!(
        ann_phone.recv_type("signal").await,
        relayed,
        "the sender's other devices too"
    );
    assert!(
        pushed_before_a_ping(&mut ann).await.is_empty(),
        "not the session it came from"
    );
    assert!(
        server.stored_messages(1, gid).await.is_empty(),
        "never stored"
    );
}

#[tokio::test]
async fn a_signal_from_a_non_member_or_of_a_bad_kind_is_refused_and_relayed_to_nobody() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2]).await;
    server.users(&[3]).await;
    let mut bob = server.connect(2).await;
    let mut eve = server.connect(3).await;

    let refused = eve
        .request(json!({"type": "signal", "id": "s", "gid": gid, "kind": "typing"}))
        .await;
    assert_eq!(
        (&refused["type"], &refused["code"]),
        (&json!("error"), &json!("forbidden"))
    );
    let mut ann = server.connect(1).await;
    for kind in [json!(""), json!("Typing!"), json!("x".repeat(33)), json!(7)] {
        let refused = ann
            .request(json!({"type": "signal", "id": "s", "gid": gid, "kind": kind}))
            .await;
        assert_eq!(refused["code"], "bad_request", "{kind}: {refused}");
    }
    assert!(pushed_before_a_ping(&mut bob).await.is_empty());
}

#[tokio::test]
async fn signals_are_off_in_groups_above_the_presence_size() {
    let server = Server::start_with(&[("HERALD_PRESENCE_MAX_GROUP", "2")]).await;
    let gid = server.group(&[1, 2, 3]).await;
    let mut ann = server.connect(1).await;
    let refused = ann
        .request(json!({"type": "signal", "id": "s", "gid": gid, "kind": "typing"}))
        .await;
    assert_eq!(refused["code"], "too_large", "{refused}");
}

#[tokio::test]
async fn a_signal_crosses_nodes() {
    let cluster = Cluster::start(2).await;
    let gid = cluster.nodes[0].group(&[1, 2]).await;
    let mut ann = cluster.nodes[0].connect(1).await;
    let mut bob = cluster.nodes[1].connect(2).await;
    // Bob's node follows the group once his session joined it; a message shows it does.
    ann.send_msg(gid, "first", json!("hi")).await;
    bob.msgs(gid, 1).await;

    ann.send(typing(gid)).await;
    let relayed = tokio::time::timeout(Duration::from_secs(5), bob.recv_type("signal")).await;
    assert_eq!(
        relayed.expect("the signal within seconds"),
        json!({"type": "signal", "gid": gid, "from": 1, "kind": "typing"})
    );
}
