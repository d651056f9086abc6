//! Message recall: the sender within the window, owners and admins at any time; a tombstone
//! keeps the msgid, the group is told `message_recalled`, pulls show the tombstone and every
//! other body stays byte for byte.

use serde_json::{json, Value};

use crate::helpers::{Client, Cluster, Server};

/// Bodies written with their own spacing, escapes and number forms, which must come back as
/// they were sent.
const BODIES: [&str; 3] = [
    r#"{"text": "first",  "n": 1.50}"#,
    r#"{"text":"é\u00e9 \"second\"","big":12345678901234567890}"#,
    r#"[ 3, {"z":null ,"a":true} ]"#,
];

/// Sends the three bodies to `gid` as `client`, raw; returns their msgids.
async fn send_bodies(client: &mut Client, gid: u64) -> Vec<u64> {
    let mut msgids = Vec::new();
    for (n, body) in BODIES.iter().enumerate() {
        let frame =
            format!(r#"{{"type":"send","id":"s{n}","gid":{gid},"cmid":"c{n}","body":{body}}}"#);
        client.send_text(frame).await;
        let sent: Value = serde_json::from_str(&client.reply_text(&json!(format!("s{n}"))).await)
            .expect("a JSON reply");
        assert_eq!(sent["type"], "sent", "{sent}");
        msgids.push(sent["msgid"].as_u64().expect("a msgid"));
    }
    msgids
}

fn recall_frame(id: &str, gid: u64, msgid: u64) -> Value {
    json!({"type": "recall", "id": id, "gid": gid, "msgid": msgid})
}

fn recall_path(gid: u64, msgid: u64) -> String {
    format!("/v1/groups/{gid}/messages/{msgid}/recall")
}

/// The next `message_recalled` event `client` gets, other frames skipped.
async fn recalled_event(client: &mut Client) -> Value {
    loop {
        let event = client.recv_type("event").await;
        if event["event"] == "message_recalled" {
            return event;
        }
    }
}

/// The text of a WebSocket pull's reply of every message of `gid`.
async fn pulled_text(client: &mut Client, gid: u64) -> String {
    let id = json!("pull-all");
    client
        .send(json!({"type": "pull", "id": id, "gid": gid, "after": 0, "limit": 1000}))
        .await;
    client.reply_text(&id).await
}

#[tokio::test]
async fn a_sender_recalls_and_members_see_the_tombstone_in_place() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2, 3]).await;
    let mut ann = server.connect(1).await;
    let mut bob = server.connect(2).await;
    let msgids = send_bodies(&mut ann, gid).await;
    assert_eq!(msgids, [1, 2, 3]);

    let reply = ann.request(recall_frame("r1", gid, 2)).await;
    assert_eq!(
        reply,
        json!({"type": "recalled", "id": "r1", "gid": gid, "msgid": 2})
    );
    for client in [&mut ann, &mut bob] {
        let event = recalled_event(client).await;
        assert_eq!(
            (&event["gid"], &event["msgid"], &event["by"]),
            (&json!(gid), &json!(2), &json!(1)),
            "{event}"
        );
        assert!(event["version"].is_u64(), "{event}");
    }

    // WebSocket pull: msgids dense, the tombstone without a body, the neighbours' bodies as
    // they were sent, byte for byte.
    let text = pulled_text(&mut bob, gid).await;
    assert!(text.contains(&format!(r#""body":{}"#, BODIES[0])), "{text}");
    assert!(text.contains(&format!(r#""body":{}"#, BODIES[2])), "{text}");
    assert!(
        !text.contains("second"),
        "the recalled body is gone: {text}"
    );
    let pulled: Value = serde_json::from_str(&text).unwrap();
    let msgs = pulled["msgs"].as_array().unwrap();
    let ids: Vec<u64> = msgs.iter().map(|m| m["msgid"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3], "{text}");
    assert_eq!(
        msgs[1],
        json!({"gid": gid, "msgid": 2, "from": 1, "ts": msgs[1]["ts"], "cmid": "c1",
               "tombstone": "recalled"})
    );
    assert!(msgs[0].get("tombstone").is_none(), "{text}");

    // HTTP pull: the same.
    let stored = server.stored_messages(3, gid).await;
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[1]["tombstone"], "recalled");
    assert!(stored[1].get("body").is_none(), "{}", stored[1]);
    assert_eq!(stored[2]["body"], json!([3, {"z": null, "a": true}]));

    // Recalling it again answers the same, and tells nobody twice: the next event members
    // get is the next recall's.
    let again = ann.request(recall_frame("r2", gid, 2)).await;
    assert_eq!(
        again,
        json!({"type": "recalled", "id": "r2", "gid": gid, "msgid": 2})
    );
    let (status, body) = server
        .user(1, reqwest::Method::POST, &recall_path(gid, 2), None)
        .await;
    assert_eq!(status, 204, "{body}");
    ann.request(recall_frame("r3", gid, 3)).await;
    assert_eq!(recalled_event(&mut bob).await["msgid"], 3);

    // A resend of a recalled message's cmid is still a resend: nothing new is stored.
    let resent = ann.send_msg(gid, "c1", json!("again")).await;
    assert_eq!(
        (&resent["msgid"], &resent["dup"]),
        (&json!(2), &json!(true))
    );
}

#[tokio::test]
async fn owners_and_admins_recall_anyones_members_only_their_own() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2, 3, 4]).await;
    let (status, body) = server
        .admin(
            reqwest::Method::PUT,
            &format!("/v1/admin/groups/{gid}/members/4/role"),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let mut cat = server.connect(3).await;
    let msgids = send_bodies(&mut cat, gid).await;
    let mut bob = server.connect(2).await;

    // A member recalls only their own.
    let refused = bob.request(recall_frame("r1", gid, msgids[0])).await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let (status, body) = server
        .user(2, reqwest::Method::POST, &recall_path(gid, msgids[0]), None)
        .await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")));

    // The owner (1) and an admin (4) recall anyone's.
    let (status, body) = server
        .user(1, reqwest::Method::POST, &recall_path(gid, msgids[0]), None)
        .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(recalled_event(&mut bob).await["by"], 1);
    let mut dan = server.connect(4).await;
    let reply = dan.request(recall_frame("r2", gid, msgids[1])).await;
    assert_eq!(reply["type"], "recalled", "{reply}");
    assert_eq!(recalled_event(&mut bob).await["by"], 4);

    // The admin API too; the event names nobody.
    let (status, body) = server
        .admin(
            reqwest::Method::POST,
            &format!("/v1/admin/groups/{gid}/messages/{}/recall", msgids[2]),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let event = recalled_event(&mut bob).await;
    assert_eq!(event["msgid"], msgids[2]);
    assert!(event.get("by").is_none(), "{event}");

    let stored = server.stored_messages(2, gid).await;
    assert!(
        stored.iter().all(|m| m["tombstone"] == "recalled"),
        "{stored:?}"
    );

    // No such message; not a member; no such group.
    let missing = bob.request(recall_frame("r3", gid, 99)).await;
    assert_eq!(missing["code"], "not_found", "{missing}");
    let other = server.group(&[5]).await;
    let outsider = bob.request(recall_frame("r4", other, 1)).await;
    assert_eq!(outsider["code"], "forbidden", "{outsider}");
    let nowhere = bob.request(recall_frame("r5", 999_999, 1)).await;
    assert_eq!(nowhere["code"], "not_found", "{nowhere}");
}

#[tokio::test]
async fn past_the_window_the_sender_cannot_recall_but_an_owner_can() {
    // A window of 0: no message is young enough for its sender.
    let server = Server::start_with(&[("HERALD_RECALL_WINDOW_S", "0")]).await;
    let gid = server.group(&[1, 2]).await;
    let mut bob = server.connect(2).await;
    let sent = bob.send_msg(gid, "late", json!("oops")).await;
    let msgid = sent["msgid"].as_u64().unwrap();

    let refused = bob.request(recall_frame("r1", gid, msgid)).await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("recall window"),
        "{refused}"
    );
    assert_eq!(server.stored_messages(2, gid).await[0]["body"], "oops");

    let mut ann = server.connect(1).await;
    let reply = ann.request(recall_frame("r2", gid, msgid)).await;
    assert_eq!(reply["type"], "recalled", "{reply}");
    assert_eq!(
        server.stored_messages(2, gid).await[0]["tombstone"],
        "recalled"
    );
}

#[tokio::test]
async fn a_recall_on_one_node_reaches_members_on_another() {
    let cluster = Cluster::start(2).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let gid = a.group(&[1, 2]).await;
    let mut ann = a.connect(1).await;
    let mut bob = b.connect(2).await;
    let msgids = send_bodies(&mut ann, gid).await;

    let reply = ann.request(recall_frame("r1", gid, msgids[0])).await;
    assert_eq!(reply["type"], "recalled", "{reply}");
    let event = recalled_event(&mut bob).await;
    assert_eq!(
        (&event["msgid"], &event["by"]),
        (&json!(msgids[0]), &json!(1))
    );

    let text = pulled_text(&mut bob, gid).await;
    let pulled: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(pulled["msgs"][0]["tombstone"], "recalled", "{text}");
    assert!(text.contains(&format!(r#""body":{}"#, BODIES[1])), "{text}");
}
