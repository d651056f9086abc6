//! Several nodes on one PostgreSQL, joined over a real nats-server: live messages, the
//! effects of changes and presence reach every node; NATS lost, a node cut from it and a
//! node killed lose nothing confirmed; junk on the bus harms nobody.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{eventually, metric, Client, Cluster, Server, WAIT};

// ---- helpers ----

/// Sends `count` messages as fast as the session takes them (replies awaited after), and
/// checks each was stored.
async fn send_many(client: &mut Client, gid: u64, tag: &str, count: usize) {
    for n in 0..count {
        let cmid = format!("{tag}-{n}");
        client
            .send(json!({"type": "send", "id": cmid, "gid": gid, "cmid": cmid, "body": {"n": n, "by": tag}}))
            .await;
    }
    for n in 0..count {
        let reply: Value =
            serde_json::from_str(&client.reply_text(&json!(format!("{tag}-{n}"))).await).unwrap();
        assert_eq!(reply["type"], "sent", "{reply}");
    }
}

/// The msgids of `msgs`, in the order they came.
fn msgids(msgs: &[Value]) -> Vec<u64> {
    msgs.iter().map(|m| m["msgid"].as_u64().unwrap()).collect()
}

/// Checks a session received exactly msgids 1..=count of the group, in order.
async fn receives_dense(client: &mut Client, gid: u64, count: usize, who: &str) -> Vec<Value> {
    let got = client.msgs(gid, count).await;
    assert_eq!(
        msgids(&got),
        (1..=count as u64).collect::<Vec<_>>(),
        "{who}: every message once, in msgid order"
    );
    got
}

/// Asks, on a session, who of the group is online.
async fn online(client: &mut Client, gid: u64) -> Value {
    let reply = client
        .request(json!({"type": "online", "id": "who", "gid": gid}))
        .await;
    assert_eq!(reply["type"], "online", "{reply}");
    reply["uids"].clone()
}

/// The next `presence` frame of the group.
async fn presence(client: &mut Client, gid: u64) -> (u64, bool) {
    let frame: Value = serde_json::from_str(
        &client
            .take("a presence frame", |f| {
                f.kind == "presence" && f.gid == Some(gid)
            })
            .await,
    )
    .unwrap();
    (
        frame["uid"].as_u64().unwrap(),
        frame["online"].as_bool().unwrap(),
    )
}

/// Cuts node `n` (started behind a relay) from NATS, once it knows it is off.
async fn cut_off(cluster: &Cluster, n: usize) {
    cluster.relays[&n].cut();
    eventually("the node off NATS", WAIT, async || {
        let on = node_metric(&cluster.nodes[n], "herald_nats_connected").await;
        (on == 0.0).then_some(()).ok_or(format!("{on}"))
    })
    .await;
}

/// One of a node's metrics.
async fn node_metric(node: &Server, name: &str) -> f64 {
    metric(&node.metrics().await, name)
}

// ---- live delivery ----

#[tokio::test]
async fn members_on_three_nodes_get_every_message_of_senders_on_every_node_in_order() {
    let cluster = Cluster::start(3).await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let gid = a.group(&[1, 2, 3]).await;
    let mut clients = vec![a.connect(1).await, b.connect(2).await, c.connect(3).await];
    // A second session of user 1, on another node, gets everything too.
    clients.push(c.connect(1).await);

    let senders = clients
        .iter_mut()
        .take(3)
        .enumerate()
        .map(|(n, client)| async move {
            send_many(client, gid, &format!("u{n}"), 30).await;
        });
    futures_util::future::join_all(senders).await;

    for (n, client) in clients.iter_mut().enumerate() {
        let got = receives_dense(client, gid, 90, &format!("session {n}")).await;
        for by in ["u0", "u1", "u2"] {
            let theirs: Vec<i64> = got
                .iter()
                .filter(|m| m["body"]["by"] == by)
                .map(|m| m["body"]["n"].as_i64().unwrap())
                .collect();
            assert_eq!(
                theirs,
                (0..30).collect::<Vec<_>>(),
                "{by}'s, in their order"
            );
        }
    }
    for node in &cluster.nodes {
        assert!(node_metric(node, "herald_nats_connected").await == 1.0);
        let text = node.metrics().await;
        assert!(
            metric(&text, "herald_bus_published_total{kind=\"messages\"}") >= 1.0,
            "every node published its commits"
        );
        assert!(metric(&text, "herald_bus_received_total{kind=\"messages\"}") >= 1.0);
    }
}

// ---- effects ----

#[tokio::test]
async fn events_notices_friend_requests_and_deactivation_closes_reach_every_node() {
    let cluster = Cluster::start(3).await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let gid = a.group(&[1, 2]).await;
    a.users(&[3]).await;
    let mut ann = a.connect(1).await;
    let mut bob = b.connect(2).await;
    let mut cid = c.connect(3).await;

    // Added on node a: the event and a notice on b and c, and cid's node now delivers
    // the group to cid.
    let path = format!("/v1/admin/groups/{gid}/members");
    let (status, body) = a.admin_post(&path, json!({"uids": [3]})).await;
    assert_eq!(status, 200, "{body}");
    for (who, client) in [("bob", &mut bob), ("cid", &mut cid)] {
        let added = client
            .take("member_added", |f| f.kind == "event" && f.gid == Some(gid))
            .await;
        let added: Value = serde_json::from_str(&added).unwrap();
        assert_eq!(
            (&added["event"], &added["uid"]),
            (&json!("member_added"), &json!(3)),
            "{who}: {added}"
        );
        client
            .take("a sync_notify", |f| f.kind == "sync_notify")
            .await;
    }
    ann.send_msg(gid, "to-cid", json!("hi cid")).await;
    let got = cid.msgs(gid, 1).await;
    assert_eq!(got[0]["body"], "hi cid");

    // A friend request made on node a reaches bob on node b.
    let (status, _) = a
        .user(1, Method::POST, "/v1/friends", Some(json!({"uid": 2})))
        .await;
    assert_eq!(status, 202);
    let request: Value = serde_json::from_str(
        &bob.take("friend_request", |f| f.kind == "friend_request")
            .await,
    )
    .unwrap();
    assert_eq!(request["from"], 1, "{request}");

    // Deactivated on node b: cid's session on node c closes with 4003, after the others
    // were told.
    let (status, body) = b
        .admin_post("/v1/admin/users/3/deactivate", json!({}))
        .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(cid.closed().await, Some(4003));
    let removed = loop {
        let event = ann
            .take("member_removed", |f| {
                f.kind == "event" && f.gid == Some(gid)
            })
            .await;
        let event: Value = serde_json::from_str(&event).unwrap();
        if event["event"] == "member_removed" {
            break event;
        }
    };
    assert_eq!(
        (&removed["uid"], &removed["reason"]),
        (&json!(3), &json!("deactivated")),
        "{removed}"
    );
}

// ---- presence ----

#[tokio::test]
async fn on_one_node_presence_needs_no_nats() {
    let server = Server::start_with(&[("HERALD_PRESENCE_DEBOUNCE_MS", "200")]).await;
    let gid = server.group(&[1, 2]).await;
    server.users(&[3]).await;
    let mut ann = server.connect(1).await;
    assert_eq!(online(&mut ann, gid).await, json!([1]));
    let bob = server.connect(2).await;
    assert_eq!(presence(&mut ann, gid).await, (2, true));
    bob.close().await;
    assert_eq!(presence(&mut ann, gid).await, (2, false));
    let (status, body) = server
        .user(2, Method::GET, &format!("/v1/groups/{gid}/online"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"gid": gid, "uids": [1]}));
    let (status, _) = server
        .user(3, Method::GET, &format!("/v1/groups/{gid}/online"), None)
        .await;
    assert_eq!(status, 403, "members only");
}

#[tokio::test]
async fn presence_is_off_in_groups_above_the_presence_size() {
    let server = Server::start_with(&[("HERALD_PRESENCE_MAX_GROUP", "2")]).await;
    let gid = server.group(&[1, 2, 3]).await;
    let mut ann = server.connect(1).await;
    let refused = ann
        .request(json!({"type": "online", "id": "who", "gid": gid}))
        .await;
    assert_eq!(refused["code"], "too_large", "{refused}");
    let (status, body) = server
        .user(2, Method::GET, &format!("/v1/groups/{gid}/online"), None)
        .await;
    assert_eq!((status, &body["error"]["code"]), (413, &json!("too_large")));
}

#[tokio::test]
async fn presence_answers_the_same_on_every_node_and_a_dead_node_takes_its_users_along() {
    let mut cluster = Cluster::start(3).await;
    let gid = cluster.nodes[0].group(&[1, 2, 3]).await;
    let mut ann = cluster.nodes[0].connect(1).await;
    let bob = cluster.nodes[1].connect(2).await;
    let path = format!("/v1/groups/{gid}/online");
    for node in &cluster.nodes {
        eventually("every node sees ann and bob online", WAIT, async || {
            let (status, body) = node.user(3, Method::GET, &path, None).await;
            (status == 200 && body["uids"] == json!([1, 2]))
                .then_some(())
                .ok_or(format!("{status} {body}"))
        })
        .await;
    }
    assert_eq!(online(&mut ann, gid).await, json!([1, 2]));

    let _cid = cluster.nodes[2].connect(3).await;
    assert_eq!(
        presence(&mut ann, gid).await,
        (3, true),
        "arrivals on other nodes are told"
    );
    bob.close().await;
    assert_eq!(presence(&mut ann, gid).await, (2, false), "and departures");

    // Node 2 dies with cid's session: within seconds cid is offline everywhere.
    cluster.nodes[2].kill();
    let went = tokio::time::timeout(Duration::from_secs(15), presence(&mut ann, gid)).await;
    let gone = cluster.nodes[0].logged("node gone: its members' presence goes with it");
    assert_eq!(
        went.unwrap_or_else(|_| panic!("cid not gone; node 0 saw {gone:?}")),
        (3, false)
    );
    let (_, body) = cluster.nodes[1].user(2, Method::GET, &path, None).await;
    assert_eq!(body["uids"], json!([1]));
}

// ---- faults ----

#[tokio::test]
async fn nats_killed_and_restarted_between_sends_loses_nothing_and_streams_stay_dense() {
    let mut cluster = Cluster::start(2).await;
    let gid = cluster.nodes[0].group(&[1, 2]).await;
    let mut sender = cluster.nodes[0].connect(1).await;
    let mut receiver = cluster.nodes[1].connect(2).await;

    send_many(&mut sender, gid, "before", 50).await;
    cluster.nats.kill();
    // Sends go on: NATS down never refuses one. While it is down, the only way to the other
    // node is PostgreSQL, by position check.
    send_many(&mut sender, gid, "without", 50).await;
    let got = receiver.msgs(gid, 100).await;
    assert_eq!(
        msgids(&got),
        (1..=100).collect::<Vec<_>>(),
        "dense, with NATS down"
    );
    let filled = node_metric(&cluster.nodes[1], "herald_gap_messages_filled_total").await;
    assert!(filled >= 50.0, "read from PostgreSQL: {filled}");

    cluster.nats.start_again().await.expect("nats-server again");
    send_many(&mut sender, gid, "after", 50).await;
    let got = receiver.msgs(gid, 50).await;
    assert_eq!(
        msgids(&got),
        (101..=150).collect::<Vec<_>>(),
        "dense after NATS is back"
    );
    eventually("both nodes back on NATS", WAIT, async || {
        let back = node_metric(&cluster.nodes[0], "herald_nats_connected").await
            + node_metric(&cluster.nodes[1], "herald_nats_connected").await;
        (back == 2.0).then_some(()).ok_or(format!("{back}"))
    })
    .await;
}

#[tokio::test]
async fn a_node_cut_from_nats_but_not_from_postgres_repairs_by_position_check() {
    let cluster = Cluster::start_with(2, &[1]).await;
    let gid = cluster.nodes[0].group(&[1, 2]).await;
    let mut sender = cluster.nodes[0].connect(1).await;
    let mut receiver = cluster.nodes[1].connect(2).await;
    send_many(&mut sender, gid, "before", 5).await;
    receives_dense(&mut receiver, gid, 5, "before the cut").await;

    cut_off(&cluster, 1).await;
    send_many(&mut sender, gid, "cut", 20).await;
    let got = receiver.msgs(gid, 20).await;
    assert_eq!(
        msgids(&got),
        (6..=25).collect::<Vec<_>>(),
        "dense, in order"
    );
    assert!(node_metric(&cluster.nodes[1], "herald_gap_messages_filled_total").await >= 20.0);
    assert!(node_metric(&cluster.nodes[1], "herald_position_checks_total").await >= 1.0);
    cluster.relays[&1].mend();
}

#[tokio::test]
async fn a_node_killed_with_9_loses_its_clients_to_another_node_where_they_catch_up() {
    let mut cluster = Cluster::start(2).await;
    let gid = cluster.nodes[0].group(&[1, 2]).await;
    let mut sender = cluster.nodes[0].connect(1).await;
    let mut moving = cluster.nodes[1].connect(2).await;
    send_many(&mut sender, gid, "before", 10).await;
    receives_dense(&mut moving, gid, 10, "before the kill").await;
    moving
        .send(json!({"type": "ack", "gid": gid, "msgid": 10}))
        .await;

    cluster.nodes[1].kill();
    // The others never notice: node 0 goes on storing and pushing.
    send_many(&mut sender, gid, "after", 10).await;
    receives_dense(&mut sender, gid, 20, "the sender's own session").await;

    // The moved client resumes on node 0 from its last ack, by pull, then live.
    let mut moved = cluster.nodes[0].connect(2).await;
    let pulled = moved
        .request(json!({"type": "pull", "id": "p", "gid": gid, "after": 10}))
        .await;
    assert_eq!(
        msgids(pulled["msgs"].as_array().unwrap()),
        (11..=20).collect::<Vec<_>>()
    );
    sender.send_msg(gid, "live", json!("again")).await;
    assert_eq!(moved.msgs(gid, 1).await[0]["msgid"], 21);
}

// ---- the bus is not trusted ----

#[tokio::test]
async fn junk_on_the_bus_is_dropped_counted_and_logged_once_per_burst() {
    let cluster = Cluster::start(2).await;
    let gid = cluster.nodes[0].group(&[1, 2]).await;
    let mut sender = cluster.nodes[0].connect(1).await;
    let mut receiver = cluster.nodes[1].connect(2).await;
    // The receiver's node follows the group once its session joined.
    send_many(&mut sender, gid, "first", 1).await;
    receives_dense(&mut receiver, gid, 1, "before the junk").await;

    let nats = async_nats::connect(cluster.nats.url())
        .await
        .expect("a NATS client");
    let subject = format!("herald.group.{gid}");
    let other_group = json!({"node": "intruder", "news": {"messages": [
        {"gid": gid + 1, "msgid": 2, "from": 1, "ts": 0, "cmid": "x", "body": "forged"}]}});
    let disordered = json!({"node": "intruder", "news": {"messages": [
        {"gid": gid, "msgid": 3, "from": 1, "ts": 0, "cmid": "y", "body": "forged"},
        {"gid": gid, "msgid": 2, "from": 1, "ts": 0, "cmid": "z", "body": "forged"}]}});
    for junk in [
        "not json".to_owned(),
        json!({"node": "intruder", "news": {"unknown": 1}}).to_string(),
        other_group.to_string(),
        disordered.to_string(),
    ] {
        nats.publish(subject.clone(), junk.into()).await.unwrap();
    }
    nats.publish("herald.effects", "[1,2".into()).await.unwrap();
    nats.flush().await.unwrap();

    eventually("every junk message counted", WAIT, async || {
        let rejected = node_metric(&cluster.nodes[1], "herald_bus_rejected_total").await;
        (rejected >= 5.0).then_some(()).ok_or(format!("{rejected}"))
    })
    .await;
    assert_eq!(
        cluster.nodes[1]
            .logged("dropped messages from NATS that are not Herald news")
            .len(),
        1,
        "one line for the burst"
    );
    // Nothing forged reached the receiver: the next message it gets is the real msgid 2.
    send_many(&mut sender, gid, "real", 1).await;
    let got = receiver.msgs(gid, 1).await;
    assert_eq!(
        (&got[0]["msgid"], &got[0]["cmid"]),
        (&json!(2), &json!("real-0"))
    );
}

#[tokio::test]
async fn a_rolling_restart_moves_clients_between_nodes_and_loses_nothing() {
    let mut cluster = Cluster::start(2).await;
    let gid = cluster.nodes[0].group(&[1, 2]).await;
    let mut ann = cluster.nodes[0].connect(1).await;
    let mut bob = cluster.nodes[1].connect(2).await;
    send_many(&mut ann, gid, "one", 10).await;
    receives_dense(&mut bob, gid, 10, "bob on node 1").await;

    // Node 1 stops: bob is told 1012 and moves to node 0 while ann keeps sending.
    let stopping = cluster.nodes[1].terminate();
    let (stopped, closed) = tokio::join!(stopping, bob.closed());
    assert!(stopped.success());
    assert_eq!(closed, Some(1012));
    send_many(&mut ann, gid, "two", 10).await;
    cluster.nodes[1].restart().await;
    let mut bob = cluster.nodes[0].connect(2).await;
    let pulled = bob
        .request(json!({"type": "pull", "id": "p", "gid": gid, "after": 10}))
        .await;
    assert_eq!(
        msgids(pulled["msgs"].as_array().unwrap()),
        (11..=20).collect::<Vec<_>>()
    );

    // Then node 0 stops: both move to node 1, where live delivery carries on.
    let stopping = cluster.nodes[0].terminate();
    let (stopped, ann_closed, bob_closed) = tokio::join!(stopping, ann.closed(), bob.closed());
    assert!(stopped.success());
    assert_eq!((ann_closed, bob_closed), (Some(1012), Some(1012)));
    let mut ann = cluster.nodes[1].connect(1).await;
    let mut bob = cluster.nodes[1].connect(2).await;
    send_many(&mut ann, gid, "three", 10).await;
    let got = bob.msgs(gid, 10).await;
    assert_eq!(msgids(&got), (21..=30).collect::<Vec<_>>());
    cluster.nodes[0].restart().await;

    let stored = cluster.nodes[0].stored_messages(1, gid).await;
    assert_eq!(
        msgids(&stored),
        (1..=30).collect::<Vec<_>>(),
        "nothing confirmed lost"
    );
}

// ---- group changes in version order ----

/// The versions of the `event` frames of `gid` a session gets, until it has `count`.
async fn event_versions(client: &mut Client, gid: u64, count: usize) -> Vec<u64> {
    let mut versions = Vec::with_capacity(count);
    while versions.len() < count {
        let event: Value = serde_json::from_str(
            &client
                .take("an event", |f| f.kind == "event" && f.gid == Some(gid))
                .await,
        )
        .unwrap();
        versions.push(event["version"].as_u64().unwrap());
    }
    versions
}

#[tokio::test]
async fn changes_made_at_once_on_two_nodes_reach_every_node_in_version_order() {
    let cluster = Cluster::start(3).await;
    let gid = cluster.nodes[0].group(&[1, 2, 3]).await;
    cluster.nodes[0].users(&(10..30).collect::<Vec<_>>()).await;
    let mut clients = Vec::new();
    for (n, node) in cluster.nodes.iter().enumerate() {
        clients.push(node.connect(n as u64 + 1).await);
    }
    let path = format!("/v1/admin/groups/{gid}/members");
    let adds = (10..30u64).map(|uid| {
        let node = &cluster.nodes[(uid % 2) as usize];
        let path = path.clone();
        async move {
            let (status, body) = node.admin_post(&path, json!({"uids": [uid]})).await;
            assert_eq!(status, 200, "{body}");
        }
    });
    futures_util::future::join_all(adds).await;
    // The group's log starts with its creation (version 1): the adds are 2..=21.
    for (n, client) in clients.iter_mut().enumerate() {
        assert_eq!(
            event_versions(client, gid, 20).await,
            (2..=21).collect::<Vec<_>>(),
            "session on node {n}: every event once, in version order"
        );
    }
}

#[tokio::test]
async fn a_node_that_missed_a_removal_reads_it_from_the_log_and_applies_it() {
    let cluster = Cluster::start_with(2, &[1]).await;
    let gid = cluster.nodes[0].group(&[1, 2]).await;
    let mut ann = cluster.nodes[0].connect(1).await;
    let mut bob = cluster.nodes[1].connect(2).await;
    send_many(&mut ann, gid, "before", 1).await;
    receives_dense(&mut bob, gid, 1, "before the cut").await;

    cut_off(&cluster, 1).await;
    let (status, _) = cluster.nodes[0]
        .admin(
            Method::DELETE,
            &format!("/v1/admin/groups/{gid}/members/2"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    // Node 1 heard nothing, but its position check finds the new version, reads the event
    // and carries it out: bob is told, and receives the group no more.
    let removed: Value = serde_json::from_str(
        &bob.take("member_removed", |f| {
            f.kind == "event" && f.gid == Some(gid)
        })
        .await,
    )
    .unwrap();
    assert_eq!(
        (&removed["event"], &removed["uid"]),
        (&json!("member_removed"), &json!(2))
    );
    send_many(&mut ann, gid, "after", 1).await;
    let next = bob.next_frame(Duration::from_millis(1500)).await;
    assert!(
        !matches!(&next, Some(Ok(frame)) if frame["type"] == "msg"),
        "a removed member gets no more messages: {next:?}"
    );
    cluster.relays[&1].mend();
}
