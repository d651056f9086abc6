//! Bad frames and bad HTTP input, limits, byte-exact bodies, fragmented messages and
//! idempotent resends.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Client, Server, ADMIN_KEY, WAIT};

/// 2^53, the first uid or gid out of range.
const TWO_POW_53: u64 = 1 << 53;

// ---- helpers ----

/// Sends a frame that must be refused as `bad_request`; checks the error echoes `id` (or
/// carries none), then that the session still answers a ping.
async fn assert_bad_frame(client: &mut Client, frame: Message, id: Option<Value>) {
    let shown = format!("{frame:?}");
    client.send_raw(frame).await;
    let error = client.recv().await;
    assert_eq!(error["type"], "error", "reply to {shown}: {error}");
    assert_eq!(error["code"], "bad_request", "reply to {shown}: {error}");
    assert!(
        error["message"].is_string(),
        "reply to {shown} has a message: {error}"
    );
    assert_eq!(
        error.get("id"),
        id.as_ref(),
        "id echoed for {shown}: {error}"
    );
    assert_alive(client).await;
}

/// A ping still gets its pong.
async fn assert_alive(client: &mut Client) {
    let pong = client.request(json!({"type": "ping", "id": "p1"})).await;
    assert_eq!(pong, json!({"type": "pong", "id": "p1"}));
}

/// One data frame: a fragment of a message, or a whole message when `last` and not a
/// continuation.
fn fragment(data: &[u8], opcode: Data, last: bool) -> Message {
    Message::Frame(Frame::message(data.to_vec(), OpCode::Data(opcode), last))
}

/// A `send` frame with the body spliced in as raw text, surrounded by whitespace.
fn send_frame(id: &str, gid: u64, cmid: &str, raw_body: &str) -> String {
    format!(r#"{{"type":"send","id":"{id}","gid":{gid},"cmid":"{cmid}","body": {raw_body} }}"#)
}

/// A pushed `msg` frame, with its body as the raw text the server wrote.
#[derive(Deserialize)]
struct RawMsg {
    msgid: u64,
    cmid: String,
    body: Box<RawValue>,
}

/// A page of messages (WS `msgs` frame or HTTP pull), bodies as raw text.
#[derive(Deserialize)]
struct RawPage {
    msgs: Vec<RawMsg>,
    more: bool,
}

/// An HTTP request with a raw body; returns the status and the JSON body (Null when
/// empty, a string when not JSON).
async fn http(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let mut request = server.http.request(method, server.url(path));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    crate::helpers::respond(request).await
}

async fn admin_raw(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    body: &str,
) -> (u16, Value) {
    http(server, method, path, Some(ADMIN_KEY), Some(body)).await
}

/// Checks an HTTP error: the status and `{"error":{"code":…,"message":…}}`.
fn assert_http_error(what: &str, (status, body): &(u16, Value), want_status: u16, code: &str) {
    assert_eq!(*status, want_status, "{what}: {body}");
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert!(
        body["error"]["message"].is_string(),
        "{what} has a message: {body}"
    );
}

/// The group's stored messages, read over HTTP as `uid`.
async fn stored(server: &Server, uid: u64, gid: u64) -> Vec<Value> {
    let (status, page) = server
        .user(
            uid,
            reqwest::Method::GET,
            &format!("/v1/groups/{gid}/messages?after=0&limit=1000"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["msgs"].as_array().expect("msgs").clone()
}

/// Reads until both the `sent` reply to request `id` and the `msg` of `gid` it caused
/// arrived, in whichever order they come.
async fn sent_and_msg(client: &mut Client, id: &str, gid: u64) -> (Value, Value) {
    let (mut sent, mut msg) = (None, None);
    while sent.is_none() || msg.is_none() {
        let frame = client.recv().await;
        if frame["type"] == "sent" && frame["id"] == id {
            sent = Some(frame);
        } else if frame["type"] == "msg" && frame["gid"] == gid {
            msg = Some(frame);
        } else {
            panic!("unexpected frame {frame}");
        }
    }
    (sent.unwrap(), msg.unwrap())
}

/// Reads `msg` frames of `gid` until `last` arrives; returns every msgid seen, in order.
async fn msgids_until(client: &mut Client, gid: u64, last: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    loop {
        let frame = client.recv().await;
        if frame["type"] == "msg" && frame["gid"] == gid {
            let msgid = frame["msgid"].as_u64().expect("a msgid");
            seen.push(msgid);
            if msgid == last {
                return seen;
            }
        }
    }
}

// ---- bad frames ----

#[tokio::test]
async fn every_malformed_frame_gets_a_bad_request_error_and_the_session_lives_on() {
    let server = Server::start().await;
    let gid = server.group(&[1]).await;
    let mut client = server.connect(1).await;

    let long_cmid = "é".repeat(65);
    let cases: Vec<(String, Option<Value>)> = vec![
        // Not JSON, or JSON that is not an object.
        ("not json".into(), None),
        (r#"{"type":"ping","id":"x1""#.into(), None),
        ("".into(), None),
        ("[1,2]".into(), None),
        ("[]".into(), None),
        (r#""ping""#.into(), None),
        ("42".into(), None),
        ("null".into(), None),
        // No type, an ill-typed type, an unknown type.
        ("{}".into(), None),
        (r#"{"id":"t0"}"#.into(), Some(json!("t0"))),
        (r#"{"type":5,"id":"t1"}"#.into(), Some(json!("t1"))),
        (r#"{"type":"dance","id":"t2"}"#.into(), Some(json!("t2"))),
        (r#"{"type":"dance","id":17}"#.into(), Some(json!(17))),
        // A send missing each required field.
        (
            r#"{"type":"send","id":"s1","cmid":"c","body":1}"#.into(),
            Some(json!("s1")),
        ),
        (
            format!(r#"{{"type":"send","id":"s2","gid":{gid},"body":1}}"#),
            Some(json!("s2")),
        ),
        (
            format!(r#"{{"type":"send","id":"s3","gid":{gid},"cmid":"c"}}"#),
            Some(json!("s3")),
        ),
        // Ill-typed or out-of-range gids: the id is still echoed.
        (
            format!(r#"{{"type":"send","id":"s4","gid":"{gid}","cmid":"c","body":1}}"#),
            Some(json!("s4")),
        ),
        (
            r#"{"type":"send","id":9,"gid":"seven","cmid":"c","body":1}"#.into(),
            Some(json!(9)),
        ),
        (
            r#"{"type":"send","id":"s5","gid":-1,"cmid":"c","body":1}"#.into(),
            Some(json!("s5")),
        ),
        (
            r#"{"type":"send","id":"s6","gid":0,"cmid":"c","body":1}"#.into(),
            Some(json!("s6")),
        ),
        (
            format!(r#"{{"type":"send","id":"s7","gid":{gid}.5,"cmid":"c","body":1}}"#),
            Some(json!("s7")),
        ),
        (
            format!(r#"{{"type":"send","id":"s8","gid":{TWO_POW_53},"cmid":"c","body":1}}"#),
            Some(json!("s8")),
        ),
        (
            r#"{"type":"send","id":"s9","gid":null,"cmid":"c","body":1}"#.into(),
            Some(json!("s9")),
        ),
        // Bad cmids.
        (
            format!(r#"{{"type":"send","id":"c1","gid":{gid},"cmid":"","body":1}}"#),
            Some(json!("c1")),
        ),
        (
            format!(r#"{{"type":"send","id":"c2","gid":{gid},"cmid":"{long_cmid}","body":1}}"#),
            Some(json!("c2")),
        ),
        (
            format!(
                r#"{{"type":"send","id":"c3","gid":{gid},"cmid":"{}","body":1}}"#,
                "a".repeat(65)
            ),
            Some(json!("c3")),
        ),
        (
            format!(r#"{{"type":"send","id":"c4","gid":{gid},"cmid":7,"body":1}}"#),
            Some(json!("c4")),
        ),
        // Other frame types with missing or ill-typed fields.
        (
            format!(r#"{{"type":"ack","id":"a1","gid":{gid}}}"#),
            Some(json!("a1")),
        ),
        (
            format!(r#"{{"type":"ack","id":"a2","gid":{gid},"msgid":"1"}}"#),
            Some(json!("a2")),
        ),
        (r#"{"type":"pull","id":"l1"}"#.into(), Some(json!("l1"))),
        (
            format!(r#"{{"type":"pull","id":"l2","gid":{gid},"limit":0}}"#),
            Some(json!("l2")),
        ),
        (
            format!(r#"{{"type":"pull","id":"l3","gid":{gid},"limit":1001}}"#),
            Some(json!("l3")),
        ),
        (
            format!(r#"{{"type":"pull","id":"l4","gid":{gid},"after":-1}}"#),
            Some(json!("l4")),
        ),
    ];
    for (text, id) in cases {
        assert_bad_frame(&mut client, Message::text(text), id).await;
    }
    assert_bad_frame(
        &mut client,
        Message::binary(b"{\"type\":\"ping\"}".to_vec()),
        None,
    )
    .await;
    assert_bad_frame(&mut client, Message::binary(Vec::new()), None).await;

    // Nothing of the above was stored.
    assert_eq!(stored(&server, 1, gid).await, Vec::<Value>::new());

    // 64 characters is a valid cmid, however many bytes they take.
    for (n, cmid) in [(1, "é".repeat(64)), (2, "a".repeat(64)), (3, "x".into())] {
        let sent = client.send_msg(gid, &cmid, json!({"n": n})).await;
        assert_eq!(sent["type"], "sent", "cmid {cmid}: {sent}");
        assert_eq!(sent["msgid"], n, "{sent}");
        let msg = client.msgs(gid, 1).await.remove(0);
        assert_eq!(msg["cmid"], cmid.as_str());
    }
}

#[tokio::test]
async fn a_json_array_is_refused_even_when_it_lines_up_with_a_frame_s_fields() {
    let server = Server::start().await;
    let gid = server.group(&[1]).await;
    let mut client = server.connect(1).await;
    // Eight elements, one per field a client frame may carry, in the order the server
    // declares them: a decoder that accepts sequences as structs takes these for frames.
    let arrays = [
        format!(r#"["send","a1",{gid},"c-1",{{"text":"hi"}},null,null,null]"#),
        r#"["ping","a2",null,null,null,null,null,null]"#.to_owned(),
    ];
    let mut replies = Vec::new();
    for array in &arrays {
        client.send_text(array.clone()).await;
        // The answer: an error, or what the array was taken for (pushes skipped).
        loop {
            let frame = client.recv().await;
            if frame["type"] != "msg" {
                replies.push(frame);
                break;
            }
        }
    }
    let stored = stored(&server, 1, gid).await;
    for (array, reply) in arrays.iter().zip(&replies) {
        assert_eq!(
            (&reply["type"], &reply["code"]),
            (&json!("error"), &json!("bad_request")),
            "reply to {array}: {reply}; stored: {stored:?}"
        );
        assert_eq!(reply.get("id"), None, "reply to {array}: {reply}");
    }
    assert_eq!(stored, Vec::<Value>::new());
    assert_alive(&mut client).await;
}

#[tokio::test]
async fn ten_bad_frames_in_a_row_close_the_session_with_1008() {
    let server = Server::start().await;
    server.users(&[1]).await;
    let mut client = server.connect(1).await;
    for i in 0..10 {
        client
            .send_text(format!(r#"{{"type":"dance","id":{i}}}"#))
            .await;
    }
    let mut errors = Vec::new();
    let code = loop {
        match client.next_frame(WAIT).await {
            Some(Ok(frame)) => {
                assert_eq!(frame["type"], "error", "{frame}");
                assert_eq!(frame["code"], "bad_request", "{frame}");
                errors.push(frame["id"].clone());
            }
            Some(Err(code)) => break code,
            None => panic!("session still open after {WAIT:?}"),
        }
    };
    assert_eq!(code, Some(1008));
    assert_eq!(errors, (0..10).map(|i| json!(i)).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_good_frame_resets_the_count_of_bad_frames() {
    let server = Server::start().await;
    let gid = server.group(&[1]).await;
    let mut client = server.connect(1).await;
    let bad = [
        "not json".to_owned(),
        "[1]".to_owned(),
        r#"{"type":"dance"}"#.to_owned(),
        format!(r#"{{"type":"send","gid":{gid},"cmid":"","body":1}}"#),
        r#"{"type":"send","gid":0,"cmid":"c","body":1}"#.to_owned(),
        "{}".to_owned(),
        r#"{"type":"pull"}"#.to_owned(),
        r#"{"type":"ack","gid":"1","msgid":1}"#.to_owned(),
        "9".to_owned(),
    ];
    for round in 0..2 {
        for text in &bad {
            client.send_text(text.clone()).await;
        }
        for text in &bad {
            let error = client.recv().await;
            assert_eq!(
                (&error["type"], &error["code"]),
                (&json!("error"), &json!("bad_request")),
                "round {round}, reply to {text}: {error}"
            );
        }
        // The good frame in between: a send.
        if round == 0 {
            let sent = client.send_msg(gid, "good", json!("ok")).await;
            assert_eq!(sent["type"], "sent", "{sent}");
            client.msgs(gid, 1).await;
        }
    }
    assert_alive(&mut client).await;
    // A session that came this close is not closed by the next bad frame either.
    assert_bad_frame(&mut client, Message::text("nope"), None).await;
}

// ---- size limits ----

#[tokio::test]
async fn a_body_over_16_kib_is_too_large_and_not_stored_while_16_kib_exactly_is_accepted() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2]).await;
    let mut client = server.connect(1).await;

    // A string body: its JSON text is the characters plus two quotes.
    let over = format!("\"{}\"", "a".repeat(16 * 1024 - 1));
    assert_eq!(over.len(), 16 * 1024 + 1);
    client
        .send_text(send_frame("big", gid, "c-big", &over))
        .await;
    let error = client.recv().await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], "too_large", "{error}");
    assert_eq!(error["id"], "big", "{error}");

    // Size is in bytes, not characters: 8192 two-byte characters are 16386 bytes.
    let over_in_bytes = format!("\"{}\"", "é".repeat(8192));
    assert_eq!(over_in_bytes.len(), 16 * 1024 + 2);
    client
        .send_text(send_frame("big2", gid, "c-big2", &over_in_bytes))
        .await;
    let error = client.recv().await;
    assert_eq!(
        (&error["code"], &error["id"]),
        (&json!("too_large"), &json!("big2")),
        "{error}"
    );

    // Whitespace inside an object counts too: this object is 16385 bytes of JSON.
    let padded = format!("{{\"a\":1{}}}", " ".repeat(16 * 1024 - 6));
    assert_eq!(padded.len(), 16 * 1024 + 1);
    client
        .send_text(send_frame("big3", gid, "c-big3", &padded))
        .await;
    let error = client.recv().await;
    assert_eq!(
        (&error["code"], &error["id"]),
        (&json!("too_large"), &json!("big3")),
        "{error}"
    );

    assert_alive(&mut client).await;
    assert_eq!(stored(&server, 2, gid).await, Vec::<Value>::new());
    let pulled = client
        .request(json!({"type": "pull", "id": "pl", "gid": gid, "after": 0}))
        .await;
    assert_eq!(pulled["msgs"], json!([]), "{pulled}");

    // Exactly 16 KiB: stored and delivered whole.
    let exact = format!("\"{}\"", "b".repeat(16 * 1024 - 2));
    assert_eq!(exact.len(), 16 * 1024);
    client
        .send_text(send_frame("ok", gid, "c-ok", &exact))
        .await;
    let sent = client.recv_type("sent").await;
    assert_eq!(
        (&sent["id"], &sent["msgid"], &sent["dup"]),
        (&json!("ok"), &json!(1), &json!(false)),
        "{sent}"
    );
    let exact_bytes = format!("\"{}\"", "é".repeat(8191));
    assert_eq!(exact_bytes.len(), 16 * 1024);
    client
        .send_text(send_frame("ok2", gid, "c-ok2", &exact_bytes))
        .await;
    let sent = client.recv_type("sent").await;
    assert_eq!((&sent["id"], &sent["msgid"]), (&json!("ok2"), &json!(2)));

    let stored = stored(&server, 2, gid).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(
        stored[0]["body"].as_str().map(str::len),
        Some(16 * 1024 - 2)
    );
    assert_eq!(stored[1]["body"], json!("é".repeat(8191)));
}

#[tokio::test]
async fn a_frame_over_the_configured_limit_closes_the_session_with_1009() {
    let server = Server::start_with(&[("HERALD_MAX_FRAME_BYTES", "4096")]).await;
    server.users(&[1]).await;

    // Exactly at the limit is fine.
    let mut client = server.connect(1).await;
    let ping = r#"{"type":"ping","id":"p1"}"#;
    let at_limit = format!("{ping}{}", " ".repeat(4096 - ping.len()));
    assert_eq!(at_limit.len(), 4096);
    client.send_text(at_limit.clone()).await;
    assert_eq!(client.recv().await, json!({"type": "pong", "id": "p1"}));

    // One byte more closes it.
    client.send_text(format!("{at_limit} ")).await;
    assert_eq!(client.closed().await, Some(1009));

    // The frame limit also bounds a message reassembled from fragments.
    let mut client = server.connect(1).await;
    client
        .send_raw(fragment(&[b' '; 3000], Data::Text, false))
        .await;
    client
        .send_raw(fragment(&[b' '; 3000], Data::Continue, true))
        .await;
    assert_eq!(client.closed().await, Some(1009));

    // Other sessions are not affected.
    let mut other = server.connect(1).await;
    assert_alive(&mut other).await;
}

#[tokio::test]
async fn a_frame_over_64_kib_closes_the_session_with_1009_by_default() {
    let server = Server::start().await;
    server.users(&[1]).await;
    let mut client = server.connect(1).await;
    let ping = r#"{"type":"ping","id":"p1"}"#;
    let at_limit = format!("{ping}{}", " ".repeat(64 * 1024 - ping.len()));
    client.send_text(at_limit.clone()).await;
    assert_eq!(client.recv().await, json!({"type": "pong", "id": "p1"}));
    client.send_text(format!("{at_limit} ")).await;
    assert_eq!(client.closed().await, Some(1009));
}

// ---- exact bodies ----

/// Bodies whose JSON text a parse-and-reserialise would change.
const EXACT_BODIES: &[&str] = &[
    "12345678901234567890",
    "123456789012345678901234567890123456789",
    "-12345678901234567890",
    "1e400",
    "-1E-400",
    "1.0E+2",
    "0.1000000000000000055511151231257827",
    "-0.0",
    "1.50",
    r#""\u00e9\u00E9 é \ud83d\ude00 😀 \/ \\ \" \n\t \u0000""#,
    r#"[[1,[2,[3,[[],{}]]]],[[]]]"#,
    "{ \"a\" : [ 1 , 2 ] ,\n\t\"b\" :\r\n { }   , \"c\":\"x y\"}",
    r#"{"dup":1,"dup":2}"#,
    r#"{"z":1,"a":2,"m":{"y":[],"b":null}}"#,
    r#""just a string""#,
    r#""""#,
    "[null]",
    "true",
    "false",
    "0",
    r#"{"n":12345678901234567890,"f":1.5e-400,"t":"\u2028"}"#,
];

#[tokio::test]
async fn bodies_come_back_byte_for_byte_pushed_and_pulled() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2]).await;
    let mut sender = server.connect(1).await;
    let mut reader = server.connect(2).await;

    for (i, body) in EXACT_BODIES.iter().enumerate() {
        let id = format!("r{i}");
        sender
            .send_text(send_frame(&id, gid, &format!("c-{i}"), body))
            .await;
        let sent: Value = serde_json::from_str(&sender.reply_text(&json!(id)).await).unwrap();
        assert_eq!(sent["type"], "sent", "body {body}: {sent}");
        assert_eq!(sent["msgid"], i + 1, "{sent}");
        for client in [&mut sender, &mut reader] {
            let text = client.take("a msg", |frame| frame.kind == "msg").await;
            let msg: RawMsg = serde_json::from_str(&text).expect("a msg frame");
            assert_eq!(msg.msgid, i as u64 + 1, "{text}");
            assert_eq!(msg.body.get(), *body, "pushed frame: {text}");
        }
    }

    let check = |page: &RawPage, how: &str| {
        assert!(!page.more, "{how}");
        assert_eq!(page.msgs.len(), EXACT_BODIES.len(), "{how}");
        for (i, (msg, body)) in page.msgs.iter().zip(EXACT_BODIES).enumerate() {
            assert_eq!(msg.msgid, i as u64 + 1, "{how}");
            assert_eq!(msg.cmid, format!("c-{i}"), "{how}");
            assert_eq!(msg.body.get(), *body, "{how}, msgid {}", msg.msgid);
        }
    };

    reader
        .send_text(format!(
            r#"{{"type":"pull","id":"pl","gid":{gid},"after":0,"limit":1000}}"#
        ))
        .await;
    let text = reader.reply_text(&json!("pl")).await;
    let page: RawPage = serde_json::from_str(&text).expect("a msgs frame");
    check(&page, "WebSocket pull");

    let response = server
        .http
        .get(server.url(&format!("/v1/groups/{gid}/messages?after=0")))
        .bearer_auth(server.token(2).await)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.unwrap();
    let page: RawPage = serde_json::from_str(&text).expect("a page");
    check(&page, "HTTP pull");
}

#[tokio::test]
async fn a_null_body_is_a_body_and_comes_back_as_null() {
    let server = Server::start().await;
    let gid = server.group(&[1]).await;
    let mut client = server.connect(1).await;
    client
        .send_text(send_frame("n1", gid, "c-null", "null"))
        .await;
    let sent = client.reply_text(&json!("n1")).await;
    assert!(sent.starts_with(r#"{"type":"sent""#), "{sent}");
    let msg: RawMsg =
        serde_json::from_str(&client.take("a msg", |frame| frame.kind == "msg").await).unwrap();
    assert_eq!((msg.msgid, msg.body.get()), (1, "null"));
    let stored = stored(&server, 1, gid).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["body"], Value::Null);
    assert!(stored[0].as_object().unwrap().contains_key("body"));
}

#[tokio::test]
async fn a_body_s_text_survives_a_server_restart_exactly() {
    let mut server = Server::start().await;
    let gid = server.group(&[1]).await;
    let body = r#"{"big":12345678901234567890, "e":1e400 ,"s":"\ud83d\ude00"}"#;
    let mut sender = server.connect(1).await;
    sender.send_text(send_frame("r1", gid, "c-1", body)).await;
    assert!(sender
        .reply_text(&json!("r1"))
        .await
        .contains(r#""type":"sent""#));
    drop(sender);

    server.restart().await;
    let mut reader = server.connect(1).await;
    reader
        .send_text(format!(r#"{{"type":"pull","id":"pl","gid":{gid}}}"#))
        .await;
    let page: RawPage = serde_json::from_str(&reader.reply_text(&json!("pl")).await).unwrap();
    assert_eq!(page.msgs.len(), 1);
    assert_eq!(page.msgs[0].body.get(), body);
}

// ---- fragmented messages ----

#[tokio::test]
async fn a_fragmented_text_message_is_reassembled() {
    let server = Server::start().await;
    let gid = server.group(&[1]).await;
    let mut client = server.connect(1).await;

    // A send split in three, one cut inside the two bytes of "é", with a ping between.
    let text = format!(r#"{{"type":"send","id":"f1","gid":{gid},"cmid":"frag","body":"café"}}"#);
    let bytes = text.as_bytes();
    let cut = text.find('é').unwrap() + 1;
    client
        .send_raw(fragment(&bytes[..10], Data::Text, false))
        .await;
    client
        .send_raw(fragment(&bytes[10..cut], Data::Continue, false))
        .await;
    client.send_raw(Message::Ping(b"mid".to_vec().into())).await;
    client
        .send_raw(fragment(&bytes[cut..], Data::Continue, true))
        .await;
    let (sent, msg) = sent_and_msg(&mut client, "f1", gid).await;
    assert_eq!(
        (&sent["msgid"], &sent["dup"]),
        (&json!(1), &json!(false)),
        "{sent}"
    );
    assert_eq!((&msg["msgid"], &msg["body"]), (&json!(1), &json!("café")));

    // A fragmented ping, each byte its own frame.
    let ping = br#"{"type":"ping","id":"p2"}"#;
    for (i, byte) in ping.iter().enumerate() {
        let opcode = if i == 0 { Data::Text } else { Data::Continue };
        client
            .send_raw(fragment(&[*byte], opcode, i == ping.len() - 1))
            .await;
    }
    assert_eq!(client.recv().await, json!({"type": "pong", "id": "p2"}));

    // A fragmented binary message is refused once, and the session lives.
    client
        .send_raw(fragment(b"{\"type\":", Data::Binary, false))
        .await;
    client
        .send_raw(fragment(b"\"ping\"}", Data::Continue, true))
        .await;
    let error = client.recv().await;
    assert_eq!(
        (&error["type"], &error["code"]),
        (&json!("error"), &json!("bad_request")),
        "{error}"
    );
    assert_alive(&mut client).await;

    // A fragmented bad frame is a bad frame like any other.
    client
        .send_raw(fragment(br#"{"type":"da"#, Data::Text, false))
        .await;
    client
        .send_raw(fragment(br#"nce","id":"b1"}"#, Data::Continue, true))
        .await;
    let error = client.recv().await;
    assert_eq!(
        (&error["code"], &error["id"]),
        (&json!("bad_request"), &json!("b1")),
        "{error}"
    );
    assert_alive(&mut client).await;
}

// ---- protocol errors ----

/// Sends `frames`, which break RFC 6455, from one session of a group's member: the session
/// gets a close frame with `code`, then its connection ends; the member's other session and
/// the group's other member still send and receive.
async fn assert_protocol_error_closes_with(frames: Vec<Message>, code: u16) {
    let server = Server::start().await;
    let gid = server.group(&[1, 2]).await;
    let mut offender = server.connect(1).await;
    let mut sender = server.connect(1).await;
    let mut receiver = server.connect(2).await;

    for frame in frames {
        offender.send_raw(frame).await;
    }
    assert_eq!(
        offender.closed().await,
        Some(code),
        "the close frame's code"
    );
    assert_eq!(
        offender.next_frame(WAIT).await,
        Some(Err(None)),
        "the connection ends after the close frame"
    );

    let sent = sender.send_msg(gid, "after", json!("still here")).await;
    assert_eq!(
        (&sent["type"], &sent["msgid"]),
        (&json!("sent"), &json!(1)),
        "{sent}"
    );
    for bystander in [&mut sender, &mut receiver] {
        let msg = &bystander.msgs(gid, 1).await[0];
        assert_eq!(
            (&msg["msgid"], &msg["body"]),
            (&json!(1), &json!("still here"))
        );
    }
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_closes_the_session_with_1007() {
    let frames = vec![fragment(b"{\"type\":\"ping\xff\"}", Data::Text, true)];
    assert_protocol_error_closes_with(frames, 1007).await;
}

#[tokio::test]
async fn a_continuation_frame_with_no_message_open_closes_the_session_with_1002() {
    let frames = vec![fragment(b"{\"type\":\"ping\"}", Data::Continue, true)];
    assert_protocol_error_closes_with(frames, 1002).await;
}

#[tokio::test]
async fn a_frame_with_a_reserved_bit_set_closes_the_session_with_1002() {
    let mut frame = Frame::message(
        b"{\"type\":\"ping\"}".to_vec(),
        OpCode::Data(Data::Text),
        true,
    );
    frame.header_mut().rsv1 = true;
    assert_protocol_error_closes_with(vec![Message::Frame(frame)], 1002).await;
}

#[tokio::test]
async fn a_new_text_frame_inside_a_fragmented_message_closes_the_session_with_1002() {
    let frames = vec![
        fragment(b"{\"type\":", Data::Text, false),
        fragment(b"{\"type\":\"ping\"}", Data::Text, true),
    ];
    assert_protocol_error_closes_with(frames, 1002).await;
}

// ---- bad HTTP input ----

#[tokio::test]
async fn malformed_admin_requests_get_400_with_the_json_error_shape() {
    let server = Server::start().await;
    server.users(&[1]).await;
    let post = reqwest::Method::POST;
    let cases = [
        ("/v1/admin/users", "not json"),
        ("/v1/admin/users", r#"{"users":[{"uid":1}"#),
        ("/v1/admin/users", ""),
        ("/v1/admin/users", "{}"),
        ("/v1/admin/users", r#"{"users":{"uid":2}}"#),
        ("/v1/admin/users", r#"{"users":[{"uid":"2"}]}"#),
        ("/v1/admin/users", r#"{"users":[{"uid":-2}]}"#),
        ("/v1/admin/users", r#"{"users":[{"uid":2.5}]}"#),
        ("/v1/admin/users", r#"{"users":[{"uid":2,"nickname":5}]}"#),
        ("/v1/admin/groups", r#"{"name":5,"owner":1,"members":[1]}"#),
        ("/v1/admin/groups", r#"{"name":"g","owner":"1"}"#),
        ("/v1/admin/groups", r#"{"name":"g","owner":1,"members":1}"#),
        ("/v1/admin/groups", r#"{"name":"g","owner":1,"gid":"7"}"#),
        ("/v1/admin/tokens", r#"{"uid":"1"}"#),
        ("/v1/admin/tokens", r#"{"uid":1,"ttl_s":-5}"#),
        ("/v1/admin/tokens", r#"{"uid":1,"ttl_s":0}"#),
        ("/v1/admin/groups/1/members", r#"{"uids":"1"}"#),
    ];
    for (path, body) in cases {
        let reply = admin_raw(&server, post.clone(), path, body).await;
        assert_http_error(&format!("POST {path} {body}"), &reply, 400, "bad_request");
    }
    // Nothing was created by the refused requests.
    let reply = server
        .admin_post("/v1/admin/tokens", json!({"uid": 2}))
        .await;
    assert_http_error("token for uid 2", &reply, 404, "not_found");
}

#[tokio::test]
async fn non_numeric_path_ids_get_400() {
    let server = Server::start().await;
    let gid = server.group(&[1]).await;
    let token = server.token(1).await;
    let admin = [
        (
            reqwest::Method::POST,
            "/v1/admin/groups/abc/members",
            Some(r#"{"uids":[1]}"#),
        ),
        (
            reqwest::Method::POST,
            "/v1/admin/groups/-1/members",
            Some(r#"{"uids":[1]}"#),
        ),
        (
            reqwest::Method::DELETE,
            "/v1/admin/groups/1/members/x",
            None,
        ),
        (
            reqwest::Method::DELETE,
            "/v1/admin/groups/1.5/members/1",
            None,
        ),
        (
            reqwest::Method::POST,
            "/v1/admin/users/abc/deactivate",
            None,
        ),
        (
            reqwest::Method::POST,
            "/v1/admin/users/99999999999999999999999/deactivate",
            None,
        ),
    ];
    for (method, path, body) in admin {
        let reply = http(&server, method.clone(), path, Some(ADMIN_KEY), body).await;
        assert_http_error(&format!("{method} {path}"), &reply, 400, "bad_request");
    }
    let user = [
        (
            reqwest::Method::GET,
            "/v1/groups/abc/messages".to_owned(),
            None,
        ),
        (
            reqwest::Method::GET,
            "/v1/groups/-3/messages".to_owned(),
            None,
        ),
        (
            reqwest::Method::POST,
            "/v1/groups/x/ack".to_owned(),
            Some(r#"{"msgid":0}"#),
        ),
        (
            reqwest::Method::GET,
            format!("/v1/groups/{gid}/messages?after=x"),
            None,
        ),
        (
            reqwest::Method::GET,
            format!("/v1/groups/{gid}/messages?limit=0"),
            None,
        ),
        (
            reqwest::Method::GET,
            format!("/v1/groups/{gid}/messages?limit=1001"),
            None,
        ),
        (
            reqwest::Method::POST,
            format!("/v1/groups/{gid}/ack"),
            Some(r#"{"msgid":"1"}"#),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/groups/{gid}/ack"),
            Some("{"),
        ),
    ];
    for (method, path, body) in user {
        let reply = http(&server, method.clone(), &path, Some(&token), body).await;
        assert_http_error(&format!("{method} {path}"), &reply, 400, "bad_request");
    }
    // The same requests well formed succeed.
    let (status, page) = http(
        &server,
        reqwest::Method::GET,
        &format!("/v1/groups/{gid}/messages?after=0&limit=1000"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page, json!({"gid": gid, "msgs": [], "more": false}));
}

#[tokio::test]
async fn unknown_endpoints_get_404_with_the_json_error_shape() {
    let server = Server::start().await;
    for path in [
        "/",
        "/v1",
        "/v1/nope",
        "/v1/admin/nope",
        "/v2/ws",
        "/v1/groups/1",
    ] {
        let reply = http(&server, reqwest::Method::GET, path, Some(ADMIN_KEY), None).await;
        assert_http_error(&format!("GET {path}"), &reply, 404, "not_found");
        let reply = http(&server, reqwest::Method::POST, path, None, Some("{}")).await;
        assert_http_error(&format!("POST {path}"), &reply, 404, "not_found");
    }
}

#[tokio::test]
async fn creating_a_group_with_a_missing_member_is_404_and_with_a_taken_gid_409() {
    let server = Server::start().await;
    server.users(&[1, 2]).await;

    let reply = server
        .admin_post(
            "/v1/admin/groups",
            json!({"name": "g", "owner": 1, "members": [1, 2, 77]}),
        )
        .await;
    assert_http_error("a member never created", &reply, 404, "not_found");
    let reply = server
        .admin_post(
            "/v1/admin/groups",
            json!({"name": "g", "owner": 78, "members": [1]}),
        )
        .await;
    assert_http_error("an owner never created", &reply, 404, "not_found");

    let (status, body) = server
        .admin_post(
            "/v1/admin/groups",
            json!({"name": "g", "owner": 1, "members": [1, 2], "gid": 500}),
        )
        .await;
    assert_eq!((status, &body), (200, &json!({"gid": 500})));
    let (status, body) = server
        .admin_post(
            "/v1/admin/groups",
            json!({"name": "other", "owner": 2, "members": [2], "gid": 500}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");

    // The refused requests changed nothing: only group 500 exists, with both members.
    for uid in [1, 2] {
        let (status, groups) = server
            .user(uid, reqwest::Method::GET, "/v1/me/groups", None)
            .await;
        assert_eq!(status, 200, "{groups}");
        assert_eq!(
            groups,
            json!({"groups": [{"gid": 500, "last_ack": 0, "last_read": 0, "latest": 0}]}),
            "uid {uid}"
        );
    }
}

#[tokio::test]
async fn ids_of_zero_or_from_2_pow_53_get_400() {
    let server = Server::start().await;
    server.users(&[1]).await;
    for uid in [0, TWO_POW_53, TWO_POW_53 + 1, u64::MAX] {
        let reply = server
            .admin_post("/v1/admin/users", json!({"users": [{"uid": uid}]}))
            .await;
        assert_http_error(&format!("user {uid}"), &reply, 400, "bad_request");
        let reply = server
            .admin_post("/v1/admin/tokens", json!({"uid": uid}))
            .await;
        assert_http_error(&format!("token {uid}"), &reply, 400, "bad_request");
        let reply = server
            .admin_post("/v1/admin/groups", json!({"name": "g", "owner": uid}))
            .await;
        assert_http_error(&format!("owner {uid}"), &reply, 400, "bad_request");
        let reply = server
            .admin_post(
                "/v1/admin/groups",
                json!({"name": "g", "owner": 1, "gid": uid}),
            )
            .await;
        assert_http_error(&format!("gid {uid}"), &reply, 400, "bad_request");
        let reply = server
            .admin_post(&format!("/v1/admin/users/{uid}/deactivate"), json!({}))
            .await;
        assert_http_error(&format!("deactivate {uid}"), &reply, 400, "bad_request");
        let reply = server
            .admin(
                reqwest::Method::DELETE,
                &format!("/v1/admin/groups/1/members/{uid}"),
                None,
            )
            .await;
        assert_http_error(&format!("remove {uid}"), &reply, 400, "bad_request");
    }
    // The largest valid id works.
    let largest = TWO_POW_53 - 1;
    let (status, body) = server
        .admin_post("/v1/admin/users", json!({"users": [{"uid": largest}]}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .admin_post(
            "/v1/admin/groups",
            json!({"name": "g", "owner": largest, "gid": largest}),
        )
        .await;
    assert_eq!((status, &body), (200, &json!({"gid": largest})));
    let client = server.connect(largest).await;
    assert_eq!(client.hello["uid"], largest);
    assert_eq!(client.hello["groups"][0]["gid"], largest);
}

#[tokio::test]
async fn member_lists_with_ids_of_zero_or_from_2_pow_53_get_400() {
    let server = Server::start().await;
    let gid = server.group(&[1]).await;
    let mut wrong = Vec::new();
    for uid in [0, TWO_POW_53, u64::MAX] {
        let requests = [
            (
                "/v1/admin/groups".to_owned(),
                json!({"name": "g", "owner": 1, "members": [1, uid]}),
            ),
            (
                format!("/v1/admin/groups/{gid}/members"),
                json!({"uids": [uid]}),
            ),
        ];
        for (path, body) in requests {
            let (status, reply) = server.admin_post(&path, body.clone()).await;
            if status != 400 || reply["error"]["code"] != "bad_request" {
                wrong.push(format!("POST {path} {body} -> {status} {reply}"));
            }
        }
    }
    assert!(wrong.is_empty(), "not 400:\n{}", wrong.join("\n"));
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let server = Server::start().await;
    for path in ["/healthz", "/readyz"] {
        let response = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
    let response = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.unwrap();
    assert!(text.contains("herald_sessions"), "{text}");
    assert!(text.contains("herald_messages_stored_total"), "{text}");
}

// ---- idempotent resends ----

#[tokio::test]
async fn the_same_cmid_sent_concurrently_from_five_sessions_is_stored_once() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2]).await;
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(server.connect(1).await);
    }
    let mut bob = server.connect(2).await;

    let start = Arc::new(tokio::sync::Barrier::new(sessions.len()));
    let tasks: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                let sent = client
                    .request(json!({
                        "type": "send", "id": format!("r{i}"), "gid": gid,
                        "cmid": "same", "body": {"text": "once"},
                    }))
                    .await;
                (client, sent)
            })
        })
        .collect();
    let mut sessions = Vec::new();
    let mut replies = Vec::new();
    for task in tasks {
        let (client, sent) = task.await.unwrap();
        sessions.push(client);
        replies.push(sent);
    }

    for (i, sent) in replies.iter().enumerate() {
        assert_eq!(sent["type"], "sent", "{sent}");
        assert_eq!(sent["id"], format!("r{i}"), "{sent}");
        assert_eq!(sent["gid"], gid, "{sent}");
        assert_eq!(sent["msgid"], 1, "{sent}");
        assert_eq!(sent["ts"], replies[0]["ts"], "{sent}");
    }
    let fresh = replies.iter().filter(|s| s["dup"] == false).count();
    let dups = replies.iter().filter(|s| s["dup"] == true).count();
    assert_eq!((fresh, dups), (1, 4), "{replies:?}");

    let stored = stored(&server, 2, gid).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["cmid"], "same");
    assert_eq!(stored[0]["from"], 1);
    assert_eq!(stored[0]["body"], json!({"text": "once"}));

    // A second message marks the end: pushes come in msgid order, so any second copy of
    // msgid 1 would arrive before msgid 2.
    let sent = sessions[0]
        .send_msg(gid, "after", json!({"text": "then"}))
        .await;
    assert_eq!(sent["msgid"], 2, "{sent}");
    for client in sessions.iter_mut().chain([&mut bob]) {
        assert_eq!(msgids_until(client, gid, 2).await, vec![1, 2]);
    }
}

#[tokio::test]
async fn a_sequential_resend_answers_dup_with_the_original_msgid_and_ts() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2]).await;
    let mut phone = server.connect(1).await;
    let mut laptop = server.connect(1).await;
    let mut bob = server.connect(2).await;

    let first = phone.send_msg(gid, "c-1", json!({"text": "hi"})).await;
    assert_eq!(
        (&first["type"], &first["msgid"], &first["dup"]),
        (&json!("sent"), &json!(1), &json!(false)),
        "{first}"
    );
    let again = phone
        .request(json!({
            "type": "send", "id": "again", "gid": gid, "cmid": "c-1", "body": {"text": "hi"},
        }))
        .await;
    assert_eq!(
        again,
        json!({"type": "sent", "id": "again", "gid": gid, "msgid": 1, "ts": first["ts"], "dup": true})
    );
    // From the user's other session, and with another body: still the first message.
    let other = laptop
        .request(json!({
            "type": "send", "id": "o", "gid": gid, "cmid": "c-1", "body": "changed",
        }))
        .await;
    assert_eq!(
        (&other["msgid"], &other["ts"], &other["dup"]),
        (&json!(1), &first["ts"], &json!(true)),
        "{other}"
    );
    // The pair is (sender, cmid): another sender's c-1 is a new message.
    let bobs = bob.send_msg(gid, "c-1", json!("bob")).await;
    assert_eq!(
        (&bobs["msgid"], &bobs["dup"]),
        (&json!(2), &json!(false)),
        "{bobs}"
    );

    for client in [&mut phone, &mut laptop, &mut bob] {
        assert_eq!(msgids_until(client, gid, 2).await, vec![1, 2]);
    }
    let stored = stored(&server, 1, gid).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0]["body"], json!({"text": "hi"}));
    assert_eq!(stored[1]["body"], json!("bob"));
}
