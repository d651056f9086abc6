//! Server-side publish: the app's backend posts into groups through the admin API, and the
//! message takes the same commit, order and fan-out as a client's send.

use serde_json::{json, Value};

use crate::helpers::{Cluster, Server};

const PUBLISH: &str = "/v1/admin/messages";

fn results(body: &Value) -> &Vec<Value> {
    body["results"].as_array().expect("results")
}

#[tokio::test]
async fn a_system_message_is_stored_once_pushed_to_members_and_pulled_exactly() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2]).await;
    let mut ann = server.connect(1).await;
    let body = json!({"kind": "order", "total": 12.50, "text": "Zürich ✓"});

    let request = json!({"gids": [gid], "id": "order-7", "body": body});
    let (status, first) = server.admin_post(PUBLISH, request.clone()).await;
    assert_eq!(status, 200, "{first}");
    let posted = &results(&first)[0];
    assert_eq!(
        (&posted["gid"], &posted["msgid"], &posted["dup"]),
        (&json!(gid), &json!(1), &json!(false)),
        "{first}"
    );

    let pushed = &ann.msgs(gid, 1).await[0];
    assert_eq!(pushed["msgid"], 1);
    assert_eq!(pushed["from"], 0, "a system message is from 0: {pushed}");
    assert_eq!(pushed["cmid"], "order-7");
    assert_eq!(pushed["body"], body);
    assert_eq!(pushed["ts"], posted["ts"]);

    // A retry stores nothing twice and answers with the original.
    let (status, again) = server.admin_post(PUBLISH, request).await;
    assert_eq!(status, 200, "{again}");
    let repeated = &results(&again)[0];
    assert_eq!(
        (&repeated["msgid"], &repeated["dup"], &repeated["ts"]),
        (&json!(1), &json!(true), &posted["ts"]),
        "{again}"
    );
    let stored = server.stored_messages(2, gid).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["body"], body);
}

#[tokio::test]
async fn one_request_posts_into_many_groups_and_says_where_it_could_not() {
    let server = Server::start().await;
    let first = server.group(&[1, 2]).await;
    let second = server.group(&[1, 3]).await;
    let without_1 = server.group(&[4]).await;
    let mut bob = server.connect(2).await;
    let mut cat = server.connect(3).await;
    // Something in the first group already, so msgids differ per group.
    bob.send_msg(first, "before", json!("hi")).await;

    let request = json!({"gids": [first, second, without_1, 999_999], "from": 1, "id": "bot-1", "body": "deployed"});
    let (status, body) = server.admin_post(PUBLISH, request).await;
    assert_eq!(status, 200, "{body}");
    let posted = results(&body);
    assert_eq!(posted.len(), 4, "{body}");
    assert_eq!(
        (&posted[0]["gid"], &posted[0]["msgid"]),
        (&json!(first), &json!(2)),
        "{body}"
    );
    assert_eq!(
        (&posted[1]["gid"], &posted[1]["msgid"]),
        (&json!(second), &json!(1)),
        "{body}"
    );
    assert_eq!(
        posted[2]["error"]["code"], "forbidden",
        "user 1 is not in the third group: {body}"
    );
    assert_eq!(posted[3]["error"]["code"], "not_found", "{body}");

    let to_bob = bob.msgs(first, 2).await;
    assert_eq!(
        (&to_bob[1]["msgid"], &to_bob[1]["from"], &to_bob[1]["body"]),
        (&json!(2), &json!(1), &json!("deployed"))
    );
    let to_cat = cat.msgs(second, 1).await;
    assert_eq!(
        (&to_cat[0]["msgid"], &to_cat[0]["from"]),
        (&json!(1), &json!(1))
    );
    assert!(server.stored_messages(4, without_1).await.is_empty());
}

#[tokio::test]
async fn concurrent_identical_publishes_store_one_message() {
    let server = Server::start().await;
    let gid = server.group(&[1]).await;
    let request = json!({"gids": [gid], "id": "once", "body": {"n": 1}});
    let attempts = (0..20).map(|_| server.admin_post(PUBLISH, request.clone()));
    let answers = futures_util::future::join_all(attempts).await;
    let mut fresh = 0;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        let posted = &results(body)[0];
        assert_eq!(posted["msgid"], 1, "{body}");
        fresh += usize::from(posted["dup"] == false);
    }
    assert_eq!(fresh, 1, "exactly one attempt stored it: {answers:?}");
    assert_eq!(server.stored_messages(1, gid).await.len(), 1);
}

#[tokio::test]
async fn bad_publish_requests_are_refused_and_store_nothing() {
    let server = Server::start_with(&[
        ("HERALD_PUBLISH_MAX_GROUPS", "2"),
        ("HERALD_MAX_BODY_BYTES", "64"),
    ])
    .await;
    let gid = server.group(&[1]).await;
    let other = server.group(&[1]).await;
    let cases = [
        (json!({"gids": [], "id": "a", "body": 1}), 400, "no groups"),
        (
            json!({"gids": [gid, other, 77], "id": "a", "body": 1}),
            400,
            "more groups than allowed",
        ),
        (
            json!({"gids": [gid, gid], "id": "a", "body": 1}),
            400,
            "a group named twice",
        ),
        (
            json!({"gids": [gid], "id": "", "body": 1}),
            400,
            "an empty id",
        ),
        (
            json!({"gids": [gid], "id": "x".repeat(65), "body": 1}),
            400,
            "an id too long",
        ),
        (
            json!({"gids": [gid], "id": "a", "body": "y".repeat(100)}),
            413,
            "a body too large",
        ),
        (
            json!({"gids": [gid], "id": "a", "from": 0, "body": 1}),
            400,
            "from 0",
        ),
        (json!({"gids": [gid], "id": "a"}), 400, "no body"),
    ];
    for (request, expected, what) in cases {
        let (status, body) = server.admin_post(PUBLISH, request).await;
        assert_eq!(status, expected, "{what}: {body}");
        assert!(body["error"]["message"].is_string(), "{what}: {body}");
    }
    let user_token = server.token(1).await;
    for (key, what) in [
        (None, "no key"),
        (Some(user_token), "a user token is no admin key"),
    ] {
        let mut request = reqwest::Client::new()
            .post(format!("http://{}{PUBLISH}", server.addr))
            .json(&json!({"gids": [gid], "id": "a", "body": 1}));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("a response");
        assert_eq!(response.status(), 401, "{what}");
    }
    assert!(server.stored_messages(1, gid).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_on_one_node_reaches_members_on_another_in_order() {
    let cluster = Cluster::start(2).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let gid = a.group(&[1, 2]).await;
    let mut ann = a.connect(1).await;
    let mut bob = b.connect(2).await;
    // Bob's node follows the group once his session joined; a message shows it does.
    ann.send_msg(gid, "first", json!("hi")).await;
    bob.msgs(gid, 1).await;

    for n in 0..5 {
        let request = json!({"gids": [gid], "id": format!("p-{n}"), "body": n});
        let (status, body) = a.admin_post(PUBLISH, request).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(results(&body)[0]["msgid"], n + 2, "{body}");
    }
    let got: Vec<(u64, u64)> = bob
        .msgs(gid, 5)
        .await
        .iter()
        .map(|m| (m["msgid"].as_u64().unwrap(), m["from"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, (2..=6).map(|msgid| (msgid, 0)).collect::<Vec<_>>());
}
