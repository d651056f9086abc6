//! A user's data through the admin API: the export holds everything stored about them, bodies
//! byte for byte; the erasure tombstones every message they sent, tells the groups they
//! leave, closes their sessions, blanks them, and is idempotent (twice, at once).

use futures_util::stream::{self, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::helpers::{respond, sql, Client, Cluster, Server, ADMIN_KEY};

/// Publishes made as the user, each into their three groups.
const PUBLISHES: usize = 1000;
/// Every this many publishes, another member posts too, so the user's messages have
/// neighbours that must stay as they are.
const NEIGHBOUR_EVERY: usize = 50;

const ANN: u64 = 1;
const BOB: u64 = 2;
const CAT: u64 = 3;
const DAN: u64 = 4;

/// A body written with its own spacing, escapes and number forms.
fn body_text(n: usize) -> String {
    format!(r##"{{"n": {n}, "text":"é\u00e9 \"#{n}\"" , "f":1.50, "e":1E2}}"##)
}

/// A message as the export lists it, its body kept as the exact text.
#[derive(Deserialize)]
struct Exported {
    gid: u64,
    msgid: u64,
    from: u64,
    cmid: String,
    #[serde(default)]
    body: Option<Box<RawValue>>,
    tombstone: Option<String>,
}

#[derive(Deserialize)]
struct ExportedMessages {
    messages: Vec<Exported>,
}

/// Ann's world: three groups (she owns the second), a friend, a request each way, two
/// conversations, and `PUBLISHES` × 3 messages among others' messages.
struct World {
    server: Server,
    groups: [u64; 3],
}

async fn world() -> World {
    let server = Server::start().await;
    server.users(&[ANN, BOB, CAT, DAN, 5]).await;
    let (status, body) = server
        .admin_post(
            "/v1/admin/users",
            json!({"users": [{"uid": ANN, "nickname": "ann", "avatar": "a.png",
                              "signature": "hello"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let groups = [
        server.group(&[BOB, ANN]).await,
        server.group(&[ANN, CAT]).await,
        server.group(&[CAT, ANN, BOB]).await,
    ];
    let (status, body) = server
        .admin_post("/v1/admin/friends", json!({"uids": [ANN, BOB]}))
        .await;
    assert_eq!(status, 204, "{body}");
    for (from, to) in [(ANN, CAT), (DAN, ANN)] {
        let (status, body) = server
            .user(
                from,
                reqwest::Method::POST,
                "/v1/friends",
                Some(json!({"uid": to})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    for (channel_id, channel_type) in [(format!("g{}", groups[0]), 2), ("u2".to_owned(), 1)] {
        let (status, body) = server
            .user(
                ANN,
                reqwest::Method::POST,
                "/v1/conversations",
                Some(json!({"channel_id": channel_id, "channel_type": channel_type})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }

    let [g1, g2, g3] = groups;
    let posts = (0..PUBLISHES).flat_map(|n| {
        let ann = format!(
            r#"{{"gids":[{g1},{g2},{g3}],"from":{ANN},"id":"m-{n}","body":{}}}"#,
            body_text(n)
        );
        let bob = (n % NEIGHBOUR_EVERY == 0).then(|| {
            format!(r#"{{"gids":[{g1},{g3}],"from":{BOB},"id":"b-{n}","body":"kept {n}"}}"#)
        });
        std::iter::once(ann).chain(bob)
    });
    let server_ref = &server;
    stream::iter(posts)
        .for_each_concurrent(8, |text| async move {
            let request = server_ref
                .http
                .post(server_ref.url("/v1/admin/messages"))
                .bearer_auth(ADMIN_KEY)
                .header("content-type", "application/json")
                .body(text);
            let (status, body) = respond(request).await;
            assert_eq!(status, 200, "{body}");
            assert!(
                body["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|r| r["dup"] == false),
                "{body}"
            );
        })
        .await;
    World { server, groups }
}

/// The export's text and its parse.
async fn export(server: &Server, uid: u64) -> (u16, String) {
    let response = server
        .http
        .get(server.url(&format!("/v1/admin/users/{uid}/export")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("HTTP request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("the whole export"))
}

async fn erase(server: &Server, uid: u64) -> (u16, Value) {
    server
        .admin(
            reqwest::Method::POST,
            &format!("/v1/admin/users/{uid}/erase"),
            None,
        )
        .await
}

#[tokio::test]
async fn an_export_holds_everything_stored_about_the_user_exactly() {
    let World { server, groups } = world().await;
    let [g1, g2, g3] = groups;
    let (status, text) = export(&server, ANN).await;
    assert_eq!(status, 200, "{text}");
    let exported: Value = serde_json::from_str(&text).expect("one JSON object");

    let profile = &exported["profile"];
    assert_eq!(
        (&profile["uid"], &profile["nickname"], &profile["avatar"]),
        (&json!(ANN), &json!("ann"), &json!("a.png"))
    );
    assert_eq!(
        (&profile["signature"], &profile["active"]),
        (&json!("hello"), &json!(true))
    );
    assert!(profile["created_at"].is_i64(), "{profile}");
    assert!(profile.get("erased_at").is_none(), "{profile}");

    let memberships: Vec<(u64, &str)> = exported["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["gid"].as_u64().unwrap(), g["role"].as_str().unwrap()))
        .collect();
    assert_eq!(memberships, [(g1, "member"), (g2, "owner"), (g3, "member")]);
    assert!(exported["groups"][0]["joined_at"].is_i64());
    assert_eq!(exported["groups"][0]["name"], "test group");
    assert_eq!(exported["friends"], json!([{"uid": BOB, "active": true}]));
    let requests: Vec<(u64, u64)> = exported["friend_requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["from"].as_u64().unwrap(), r["to"].as_u64().unwrap()))
        .collect();
    assert_eq!(requests, [(ANN, CAT), (DAN, ANN)]);
    let conversations: Vec<(&str, u64)> = exported["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["channel_id"].as_str().unwrap(),
                c["channel_type"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(conversations, [(format!("g{g1}").as_str(), 2), ("u2", 1)]);

    // Every message she sent, once, in (gid, msgid) order, each body as sent byte for byte;
    // none of anyone else's.
    let ExportedMessages { messages } = serde_json::from_str(&text).unwrap();
    assert_eq!(messages.len(), PUBLISHES * 3);
    assert!(messages
        .windows(2)
        .all(|w| (w[0].gid, w[0].msgid) < (w[1].gid, w[1].msgid)));
    for gid in groups {
        assert_eq!(
            messages.iter().filter(|m| m.gid == gid).count(),
            PUBLISHES,
            "in group {gid}"
        );
    }
    for message in &messages {
        let n: usize = message.cmid["m-".len()..]
            .parse()
            .expect("one of ann's cmids");
        assert_eq!(message.from, ANN);
        assert!(message.tombstone.is_none());
        let body = message.body.as_ref().expect("a body");
        assert_eq!(body.get(), body_text(n), "message {}", message.cmid);
    }

    let (status, text) = export(&server, 999).await;
    assert_eq!(status, 404, "{text}");
}

/// Reads frames until `client` has seen an event of `gid` that `wanted` picks.
async fn event_in(client: &mut Client, gid: u64, wanted: impl Fn(&Value) -> bool) -> Value {
    loop {
        let event = client.recv_type("event").await;
        if event["gid"] == gid && wanted(&event) {
            return event;
        }
    }
}

#[tokio::test]
async fn an_erasure_tombstones_every_message_tells_the_groups_and_is_idempotent() {
    let World { server, groups } = world().await;
    let [g1, g2, g3] = groups;
    let mut ann = server.connect(ANN).await;
    let mut bob = server.connect(BOB).await;
    let mut cat = server.connect(CAT).await;
    let before = server.stored_messages(BOB, g1).await;

    // Two at once: together they do everything once.
    let ((first_status, first), (second_status, second)) =
        tokio::join!(erase(&server, ANN), erase(&server, ANN));
    assert_eq!(
        (first_status, second_status),
        (200, 200),
        "{first} {second}"
    );
    for field in [
        "groups_left",
        "messages_erased",
        "friends_removed",
        "requests_removed",
        "conversations_removed",
    ] {
        let total = first[field].as_u64().unwrap() + second[field].as_u64().unwrap();
        let expected = match field {
            "groups_left" => 3,
            "messages_erased" => PUBLISHES as u64 * 3,
            "friends_removed" => 1,
            _ => 2,
        };
        assert_eq!(total, expected, "{field}: {first} {second}");
    }

    // Her sessions close with 4003; the groups she was in are told she left, and the group
    // she owned passes to its other member.
    assert_eq!(ann.closed().await, Some(4003));
    let mut told = Vec::new();
    while told.len() < 2 {
        let left = bob.recv_type("event").await;
        if left["event"] == "member_removed" {
            assert_eq!(
                (&left["uid"], &left["reason"]),
                (&json!(ANN), &json!("deactivated"))
            );
            told.push(left["gid"].as_u64().unwrap());
        }
    }
    told.sort_unstable();
    assert_eq!(told, [g1, g3]);
    let left = event_in(&mut cat, g2, |e| e["event"] == "member_removed").await;
    assert_eq!(
        (&left["uid"], &left["reason"]),
        (&json!(ANN), &json!("deactivated"))
    );
    let heir = event_in(&mut cat, g2, |e| e["event"] == "role_changed").await;
    assert_eq!(
        (&heir["uid"], &heir["role"]),
        (&json!(CAT), &json!("owner"))
    );

    // Other members' pulls: the same msgids, dense, hers tombstoned in place, theirs intact.
    let after = server.stored_messages(BOB, g1).await;
    assert_eq!(after.len(), before.len());
    for (n, (was, now)) in before.iter().zip(&after).enumerate() {
        assert_eq!(now["msgid"], n as u64 + 1, "dense msgids");
        assert_eq!((&now["cmid"], &now["ts"]), (&was["cmid"], &was["ts"]));
        if was["from"] == ANN {
            assert_eq!(now["tombstone"], "erased", "{now}");
            assert!(now.get("body").is_none(), "{now}");
        } else {
            assert_eq!(now, was, "a neighbour's message is as it was");
        }
    }
    let kept = after.iter().filter(|m| m["from"] == BOB).count();
    assert_eq!(kept, PUBLISHES / NEIGHBOUR_EVERY);

    // The export shows what is left: a blank, deactivated, erased user and tombstones.
    let (status, text) = export(&server, ANN).await;
    assert_eq!(status, 200, "{text}");
    let exported: Value = serde_json::from_str(&text).unwrap();
    let profile = &exported["profile"];
    assert_eq!(
        (
            &profile["nickname"],
            &profile["avatar"],
            &profile["signature"]
        ),
        (&json!(""), &json!(""), &json!(""))
    );
    assert_eq!(profile["active"], false);
    assert!(profile["erased_at"].is_i64(), "{profile}");
    for part in ["groups", "friends", "friend_requests", "conversations"] {
        assert_eq!(exported[part], json!([]), "{part}");
    }
    let ExportedMessages { messages } = serde_json::from_str(&text).unwrap();
    assert_eq!(messages.len(), PUBLISHES * 3);
    assert!(messages
        .iter()
        .all(|m| m.tombstone.as_deref() == Some("erased") && m.body.is_none()));

    // Her friend and the users she had requests with no longer list her.
    let (_, friends) = server
        .user(BOB, reqwest::Method::GET, "/v1/friends", None)
        .await;
    assert_eq!(friends["friends"], json!([]), "{friends}");
    let (_, requests) = server
        .user(CAT, reqwest::Method::GET, "/v1/friends", None)
        .await;
    assert_eq!(requests["requests_in"], json!([]), "{requests}");

    // Once more: nothing left to do.
    let (status, again) = erase(&server, ANN).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again,
        json!({"uid": ANN, "groups_left": 0, "messages_erased": 0, "friends_removed": 0,
               "requests_removed": 0, "conversations_removed": 0})
    );
    let (status, body) = erase(&server, 999).await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));
}

#[tokio::test]
async fn an_erasure_on_one_node_closes_sessions_and_tells_members_on_another() {
    let cluster = Cluster::start(2).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let gid = a.group(&[BOB, ANN]).await;
    let mut ann = b.connect(ANN).await;
    let mut bob = b.connect(BOB).await;
    let sent = ann.send_msg(gid, "c-1", json!({"text": "mine"})).await;
    assert_eq!(sent["type"], "sent", "{sent}");

    let (status, summary) = erase(a, ANN).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(
        (&summary["groups_left"], &summary["messages_erased"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(ann.closed().await, Some(4003));
    let left = event_in(&mut bob, gid, |e| e["event"] == "member_removed").await;
    assert_eq!(left["uid"], ANN);
    let stored = b.stored_messages(BOB, gid).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["tombstone"], "erased", "{}", stored[0]);
}

#[tokio::test]
async fn an_erasure_cut_off_half_way_is_finished_by_the_next() {
    let server = Server::start().await;
    let gid = server.group(&[BOB, ANN]).await;
    let mut ann = server.connect(ANN).await;
    for n in 0..30 {
        ann.send_msg(gid, &format!("c-{n}"), json!(n)).await;
    }
    // What a crash leaves after the first step and one batch of ten: the steps as the
    // erase route runs them, stopped there.
    sql(
        &server.database_url,
        &format!("SELECT * FROM herald_erase_begin({ANN})"),
    )
    .await;
    let rows = sql(
        &server.database_url,
        &format!("SELECT erased FROM herald_erase_messages({ANN}, 0, 0, 10)"),
    )
    .await;
    assert_eq!(rows[0].get::<_, i64>(0), 10);

    let (status, summary) = erase(&server, ANN).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(
        (&summary["groups_left"], &summary["messages_erased"]),
        (&json!(0), &json!(20)),
        "the rest, once: {summary}"
    );
    let stored = server.stored_messages(BOB, gid).await;
    assert_eq!(stored.len(), 30);
    assert!(
        stored.iter().all(|m| m["tombstone"] == "erased"),
        "{stored:?}"
    );
    let (_, text) = export(&server, ANN).await;
    let exported: Value = serde_json::from_str(&text).unwrap();
    assert!(exported["profile"]["erased_at"].is_i64(), "{text}");
}
