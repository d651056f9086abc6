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
        json!([{"gid": gid, "last_ack": 0, "latest": 0}])
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
