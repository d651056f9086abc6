//! Sending, fan-out, order, idempotency.

use serde_json::json;

use crate::helpers::Server;

#[tokio::test]
async fn a_message_reaches_every_session_of_every_member_including_the_sender() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2]).await;
    let mut ann_phone = server.connect(1).await;
    let mut ann_laptop = server.connect(1).await;
    let mut bob = server.connect(2).await;
    assert_eq!(
        ann_phone.hello["groups"],
        json!([{"gid": gid, "last_ack": 0, "last_read": 0, "latest": 0}])
    );

    let body = json!({"text": "hi", "n": 12345678901234567u64, "nested": [1.5, null, "é"]});
    let sent = ann_phone.send_msg(gid, "c-1", body.clone()).await;
    assert_eq!(sent["type"], "sent");
    assert_eq!(
        (sent["gid"].as_u64(), sent["msgid"].as_u64(), &sent["dup"]),
        (Some(gid), Some(1), &json!(false))
    );

    for client in [&mut ann_phone, &mut ann_laptop, &mut bob] {
        let msg = client.msgs(gid, 1).await.remove(0);
        assert_eq!(msg["msgid"], 1);
        assert_eq!(msg["from"], 1);
        assert_eq!(msg["cmid"], "c-1");
        assert_eq!(msg["body"], body);
        assert_eq!(msg["ts"], sent["ts"]);
    }
}

#[tokio::test]
async fn pipelined_sends_of_one_session_are_stored_in_the_order_sent() {
    // 200 in flight: under the default bound of 256 sends waiting per session.
    let server = Server::start().await;
    let gid = server.group(&[1, 2]).await;
    let mut ann = server.connect(1).await;
    for n in 0..200 {
        let frame =
            json!({"type": "send", "id": n, "gid": gid, "cmid": format!("c-{n}"), "body": n});
        ann.send(frame).await;
    }
    let mut msgid_of = vec![0; 200];
    let mut replies = 0;
    while replies < 200 {
        let frame = ann.recv().await;
        if frame["type"] == "sent" {
            msgid_of[frame["id"].as_u64().unwrap() as usize] = frame["msgid"].as_u64().unwrap();
            replies += 1;
        }
    }
    let expected: Vec<u64> = (1..=200).collect();
    assert_eq!(msgid_of, expected, "msgid n+1 for the n-th send");
}
