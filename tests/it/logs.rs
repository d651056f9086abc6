//! Log lines say whose work they come from: a line logged while serving an HTTP request, a
//! WebSocket session or a group carries that span, with the uid, the session or the gid, so
//! an operator can follow one user or one group through the log.

use serde_json::{json, Value};

use crate::helpers::{eventually, Server, WAIT};

async fn wait_logged(server: &Server, message: &str) -> Value {
    eventually(&format!("a log line `{message}`"), WAIT, async || {
        server
            .logged(message)
            .into_iter()
            .next()
            .ok_or_else(|| "not yet".to_owned())
    })
    .await
}

#[tokio::test]
async fn refusals_are_logged_in_the_span_of_the_request_the_session_and_the_group() {
    // A small budget: 100 units a second, 200 at once; a queue of one send per group.
    let server = Server::start_with(&[
        ("HERALD_REQUEST_BUDGET", "100"),
        ("HERALD_MAX_GROUP_QUEUE", "1"),
    ])
    .await;
    // One user over HTTP, another over WebSocket: each runs out of a budget of its own.
    let gid = server.group(&[1, 2]).await;

    // HTTP: reads cost 10, so user 1 runs out within 21 of them.
    let token = server.token(1).await;
    let http = reqwest::Client::new();
    for _ in 0..30 {
        let _ = http
            .get(server.url("/v1/me/groups"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("HTTP request");
    }
    let line = wait_logged(
        &server,
        "user over the HTTP request budget: refusing with 429",
    )
    .await;
    assert_eq!(line["span"]["name"], "http", "{line}");
    assert_eq!(line["span"]["uid"], 1, "{line}");
    assert_eq!(line["span"]["path"], "/v1/me/groups", "{line}");

    // A session: sends cost 10; 30 of them at once are past the burst of 200.
    let mut flooder = server.connect(2).await;
    for n in 0..30 {
        let cmid = format!("over-{n}");
        flooder
            .send(json!({"type": "send", "gid": gid, "cmid": cmid, "body": n}))
            .await;
    }
    let line = wait_logged(
        &server,
        "session over its limits: refusing with rate_limited",
    )
    .await;
    assert_eq!(line["span"]["name"], "session", "{line}");
    assert_eq!(line["span"]["uid"], 2, "{line}");
    let session = line["span"]["session"].as_str().expect("a session name");
    assert!(session.starts_with("s-"), "{line}");

    // A group: those sends came faster than commits finish, and found its queue of one full.
    let line = wait_logged(
        &server,
        "group queue full: refusing sends with rate_limited",
    )
    .await;
    assert_eq!(line["span"]["name"], "group", "{line}");
    assert_eq!(line["span"]["gid"], gid, "{line}");
    assert_eq!(line["uid"], 2, "{line}");
}
