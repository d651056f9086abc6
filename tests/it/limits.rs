//! Limits against abuse: session caps, allowed origins, JSON depth, persistent rate-limit
//! abuse, HTTP body size, and the admin API without its key.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald_loadtest::kit::client::{ConnectError, Upgrade};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{metric, respond, sql, Client, Server, WAIT};

/// Opens a WebSocket and returns the first thing the server does: its hello, or a close
/// code.
async fn first_word(server: &Server, uid: u64) -> Result<Value, u16> {
    let opened = tokio::time::timeout(WAIT, server.upgrade(uid).await.open::<Value>())
        .await
        .expect("the server speaks first");
    match opened {
        Ok((_, hello)) => Ok(hello),
        Err(ConnectError::Closed(Some(code))) => Err(code),
        Err(other) => panic!("no hello and no close code: {other}"),
    }
}

#[tokio::test]
async fn a_user_over_the_per_user_cap_has_the_newest_session_closed_with_4029() {
    let server = Server::start_with(&[("HERALD_MAX_SESSIONS_PER_USER", "2")]).await;
    server.users(&[1, 2]).await;
    let first = server.connect(1).await;
    let mut second = server.connect(1).await;
    assert_eq!(first_word(&server, 1).await, Err(4029));
    // Another user is not affected, and the sessions in use carry on.
    server.connect(2).await;
    let pong = second.request(json!({"type": "ping", "id": "p"})).await;
    assert_eq!(pong["type"], "pong", "{pong}");

    // A closed session frees its place.
    first.close().await;
    let mut admitted = None;
    for _ in 0..50 {
        match first_word(&server, 1).await {
            Ok(hello) => {
                admitted = Some(hello);
                break;
            }
            Err(code) => assert_eq!(code, 4029),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hello = admitted.expect("a session admitted once one closed");
    assert_eq!(hello["type"], "hello", "{hello}");
    assert_eq!(
        metric(&server.metrics().await, "herald_sessions_refused_total"),
        1.0
    );
}

#[tokio::test]
async fn a_full_node_closes_new_sessions_with_1013() {
    let server = Server::start_with(&[("HERALD_MAX_SESSIONS", "2")]).await;
    server.users(&[1, 2, 3]).await;
    let _one = server.connect(1).await;
    let _two = server.connect(2).await;
    assert_eq!(first_word(&server, 3).await, Err(1013));
}

#[tokio::test]
async fn only_allowed_origins_may_open_websockets_and_apps_without_one_still_can() {
    let server = Server::start_with(&[(
        "HERALD_ALLOWED_ORIGINS",
        "https://chat.example.com, https://x.io",
    )])
    .await;
    server.users(&[1]).await;
    let token = server.token(1).await;
    let with_origin = |origin: &str| Upgrade::bearer(server.addr, &token).header("origin", origin);
    assert_eq!(
        Client::open(with_origin("https://evil.example.com"))
            .await
            .err(),
        Some(403)
    );
    assert!(Client::open(with_origin("https://chat.example.com"))
        .await
        .is_ok());
    assert!(Client::open(with_origin("https://x.io")).await.is_ok());
    assert!(Client::connect(server.addr, &token).await.is_ok());
}

#[tokio::test]
async fn a_frame_nested_too_deep_is_refused_and_the_session_lives_on() {
    let server = Server::start().await;
    let gid = server.group(&[1]).await;
    let mut client = server.connect(1).await;
    let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
    client
        .send_text(format!(
            r#"{{"type":"send","id":"d","gid":{gid},"cmid":"c","body":{deep}}}"#
        ))
        .await;
    let error = client.recv_type("error").await;
    assert_eq!(error["code"], "bad_request", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("nested"),
        "{error}"
    );
    // Nesting within the limit (32 by default, the frame counting as one) is a body.
    let fine = format!("{}1{}", "[".repeat(30), "]".repeat(30));
    let body: Value = serde_json::from_str(&fine).unwrap();
    let sent = client.send_msg(gid, "c-ok", body).await;
    assert_eq!(sent["type"], "sent", "{sent}");
}

#[tokio::test]
async fn a_client_that_keeps_sending_past_rate_limited_is_closed_with_1008() {
    let server = Server::start_with(&[("HERALD_SEND_RATE", "1")]).await;
    let gid = server.group(&[1]).await;
    let mut ws = server.connect(1).await.into_socket();
    for n in 0..100 {
        let frame =
            json!({"type": "send", "id": n, "gid": gid, "cmid": format!("c-{n}"), "body": n});
        if ws.send(Message::text(frame.to_string())).await.is_err() {
            break;
        }
    }
    let mut limited = 0;
    let code = loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("the server answers")
            .expect("a close, not an end")
            .expect("no protocol error");
        match message {
            Message::Text(text) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                if frame["code"] == "rate_limited" {
                    limited += 1;
                }
            }
            Message::Close(frame) => break frame.map(|f| f.code),
            _ => {}
        }
    };
    assert_eq!(code, Some(CloseCode::Policy));
    assert_eq!(limited, 50, "closed after 50 refusals in a row");
    // A close, not a ban: the user reconnects and sends at the allowed rate.
    let mut again = server.connect(1).await;
    let sent = again.send_msg(gid, "after", json!({})).await;
    assert_eq!(sent["type"], "sent", "{sent}");
}

#[tokio::test]
async fn an_http_body_over_the_limit_is_413_and_the_admin_api_needs_its_key() {
    let server = Server::start_with(&[("HERALD_MAX_HTTP_BODY_BYTES", "1024")]).await;
    let users: Vec<Value> = (1..200).map(|uid| json!({"uid": uid})).collect();
    let (status, body) = server
        .admin_post("/v1/admin/users", json!({ "users": users }))
        .await;
    assert_eq!((status, &body["error"]["code"]), (413, &json!("too_large")));

    for key in [None, Some("wrong-key-of-enough-length")] {
        let mut request = server
            .http
            .post(server.url("/v1/admin/users"))
            .json(&json!({"users": [{"uid": 1}]}));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let (status, body) = respond(request).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (401, &json!("unauthorized"))
        );
    }
    let users = sql(&server.database_url, "SELECT count(*) FROM users").await;
    assert_eq!(
        users[0].get::<_, i64>(0),
        0,
        "a refused request created users"
    );
}

/// U+0000 cannot be stored in PostgreSQL text: refused at the edge, it harms nobody else's
/// sends (it once failed the whole group commit it was batched in).
#[tokio::test]
async fn text_with_a_nul_character_is_refused_and_harms_no_other_send() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2]).await;
    let mut ann = server.connect(1).await;
    let mut bob = server.connect(2).await;
    ann.send(json!({"type": "send", "id": "nul", "gid": gid, "cmid": "a\u{0}b", "body": 1}))
        .await;
    let sent = bob.send_msg(gid, "fine", json!({"text": "hi"})).await;
    assert_eq!(sent["type"], "sent", "{sent}");
    let pong = ann.request(json!({"type": "ping", "id": "after"})).await;
    assert_eq!(pong["type"], "pong");
    let error = ann.recv_type("error").await;
    assert_eq!(
        (&error["id"], &error["code"]),
        (&json!("nul"), &json!("bad_request"))
    );

    for (path, body) in [
        ("/v1/me".to_owned(), json!({"nickname": "a\u{0}b"})),
        (format!("/v1/groups/{gid}"), json!({"name": "a\u{0}b"})),
    ] {
        let (status, reply) = server
            .user(1, reqwest::Method::PATCH, &path, Some(body))
            .await;
        assert_eq!(
            (status, &reply["error"]["code"]),
            (400, &json!("bad_request")),
            "{path}"
        );
    }
}
