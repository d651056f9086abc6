//! Retention: messages pruned by count and by age, per deployment and per group, always a
//! prefix of the group's msgids; pulls below the window answer from the first retained
//! message with `first`, over WebSocket and HTTP; partitions dropped whole; sends during
//! pruning all stored and acked; a database at 0005 with messages migrated in place.

use std::collections::BTreeMap;
use std::time::Duration;

use herald::store::MIGRATIONS;
use herald_loadtest::kit::webhooks::{Answer, WebhookReceiver};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{eventually, fresh_database, metric, sql, Client, Server, WAIT};

/// The pruner every second; partitions of a second, so a short age drops them soon.
const QUICK: [(&str, &str); 2] = [
    ("HERALD_RETENTION_INTERVAL_S", "1"),
    ("HERALD_RETENTION_PARTITION", "1s"),
];

/// Long enough for a few runs of a pruner every second, on a busy machine.
const PRUNED_WITHIN: Duration = Duration::from_secs(30);

async fn server_with(settings: &[(&str, &str)]) -> Server {
    let env: Vec<(&str, &str)> = QUICK.iter().chain(settings).copied().collect();
    Server::start_with(&env).await
}

/// Sends `count` messages (`m-1`, `m-2`, …) one after another; returns their msgids.
async fn send_count(client: &mut Client, gid: u64, prefix: &str, count: u64) -> Vec<u64> {
    let mut msgids = Vec::new();
    for n in 1..=count {
        let sent = client
            .send_msg(gid, &format!("{prefix}-{n}"), json!({"n": n}))
            .await;
        assert_eq!(sent["type"], "sent", "{sent}");
        msgids.push(sent["msgid"].as_u64().expect("a msgid"));
    }
    msgids
}

/// A page over HTTP as `uid` sees it.
async fn http_page(server: &Server, uid: u64, gid: u64, after: u64) -> Value {
    let path = format!("/v1/groups/{gid}/messages?after={after}&limit=1000");
    let (status, page) = server.user(uid, Method::GET, &path, None).await;
    assert_eq!(status, 200, "{page}");
    page
}

/// A page over the WebSocket.
async fn ws_page(client: &mut Client, gid: u64, after: u64) -> Value {
    let id = format!("pull-{after}");
    let page = client
        .request(json!({"type": "pull", "id": id, "gid": gid, "after": after, "limit": 1000}))
        .await;
    assert_eq!(page["type"], "msgs", "{page}");
    page
}

fn msgids(page: &Value) -> Vec<u64> {
    page["msgs"]
        .as_array()
        .unwrap_or_else(|| panic!("msgs: {page}"))
        .iter()
        .map(|m| m["msgid"].as_u64().expect("a msgid"))
        .collect()
}

/// Waits until the group's first retained msgid, as a pull from 0 shows it, is `first`.
async fn until_first_is(server: &Server, uid: u64, gid: u64, first: u64) {
    eventually("the group pruned", PRUNED_WITHIN, async || {
        let page = http_page(server, uid, gid, 0).await;
        (page["first"] == first)
            .then_some(())
            .ok_or(page.to_string())
    })
    .await;
}

async fn set_retention(server: &Server, gid: u64, limits: Value) -> (u16, Value) {
    let path = format!("/v1/admin/groups/{gid}/retention");
    server.admin(Method::PUT, &path, Some(limits)).await
}

#[tokio::test]
async fn a_count_limit_keeps_the_newest_and_pulls_below_the_window_start_at_the_first_kept() {
    let server = server_with(&[("HERALD_RETENTION_MAX_MESSAGES", "5")]).await;
    let gid = server.group(&[1, 2]).await;
    let mut sender = server.connect(1).await;
    assert_eq!(
        send_count(&mut sender, gid, "m", 12).await,
        (1..=12).collect::<Vec<_>>()
    );

    until_first_is(&server, 2, gid, 8).await;

    let mut reader = server.connect(2).await;
    for (after, want, first) in [
        (6, 8..13, Some(8)), // first - 2: history ended at 8
        (7, 8..13, None),    // first - 1: nothing missing
        (9, 10..13, None),   // inside the window
        (12, 13..13, None),  // the latest: an empty page
    ] {
        let http = http_page(&server, 2, gid, after).await;
        let ws = ws_page(&mut reader, gid, after).await;
        for page in [&http, &ws] {
            assert_eq!(
                msgids(page),
                want.clone().collect::<Vec<_>>(),
                "after {after}: {page}"
            );
            assert_eq!(page["first"].as_u64(), first, "after {after}: {page}");
            assert_eq!(page["more"], false, "{page}");
        }
    }
    // The bodies kept are the ones sent.
    let page = http_page(&server, 2, gid, 0).await;
    assert_eq!(page["msgs"][0]["body"], json!({"n": 8}), "{page}");
    assert_eq!(page["msgs"][0]["cmid"], "m-8", "{page}");

    // Cursors are untouched: latest is the newest msgid, acks still move forward.
    let (status, groups) = server.user(2, Method::GET, "/v1/me/groups", None).await;
    assert_eq!(status, 200, "{groups}");
    assert_eq!(groups["groups"][0]["latest"], 12, "{groups}");
    let next = sender.send_msg(gid, "m-13", json!({"n": 13})).await;
    assert_eq!(
        next["msgid"], 13,
        "msgids go on after the pruned ones: {next}"
    );
    let metrics = server.metrics().await;
    assert!(
        metric(&metrics, "herald_retention_pruned_messages_total") >= 7.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_groups_own_limit_applies_when_stricter_than_the_deployments() {
    let server = server_with(&[("HERALD_RETENTION_MAX_MESSAGES", "10")]).await;
    let strict = server.group(&[1, 2]).await;
    let loose = server.group(&[1, 2]).await;
    let plain = server.group(&[1, 2]).await;

    let (status, view) = set_retention(&server, strict, json!({"max_messages": 3})).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        view,
        json!({"gid": strict, "max_age_s": null, "max_messages": 3, "first": null, "latest": 0})
    );
    let (status, _) = set_retention(&server, loose, json!({"max_messages": 100})).await;
    assert_eq!(status, 200);
    for wrong in [
        json!({"max_messages": 0}),
        json!({"max_age_s": 0}),
        json!({"keep": 1}),
    ] {
        let (status, body) = set_retention(&server, strict, wrong.clone()).await;
        assert_eq!(status, 400, "{wrong}: {body}");
    }
    let (status, body) = set_retention(&server, 999_999, json!({"max_messages": 3})).await;
    assert_eq!(status, 404, "{body}");

    let mut sender = server.connect(1).await;
    send_count(&mut sender, strict, "s", 8).await;
    send_count(&mut sender, loose, "l", 12).await;
    send_count(&mut sender, plain, "p", 8).await;

    until_first_is(&server, 2, strict, 6).await;
    until_first_is(&server, 2, loose, 3).await;
    // One run of the pruner plans every group: the plain group, under every limit, kept all.
    let page = http_page(&server, 2, plain, 0).await;
    assert_eq!(msgids(&page), (1..=8).collect::<Vec<_>>(), "{page}");
    assert!(page.get("first").is_none(), "{page}");

    let (status, view) = server
        .admin(
            Method::GET,
            &format!("/v1/admin/groups/{strict}/retention"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["first"], 6, "{view}");
    assert_eq!(view["latest"], 8, "{view}");

    // Back to the deployment's limit.
    let (status, view) = set_retention(&server, strict, json!({"max_messages": null})).await;
    assert_eq!(
        (status, &view["max_messages"]),
        (200, &Value::Null),
        "{view}"
    );
}

#[tokio::test]
async fn the_deployments_age_limit_drops_whole_partitions() {
    let server = server_with(&[("HERALD_RETENTION_MAX_AGE", "2s")]).await;
    let gid = server.group(&[1, 2]).await;
    let mut sender = server.connect(1).await;
    send_count(&mut sender, gid, "old", 3).await;
    let partition = sql(
        &server.database_url,
        &format!("SELECT DISTINCT tableoid::regclass::text FROM group_msgs WHERE gid = {gid}"),
    )
    .await;
    let partitions: Vec<String> = partition.iter().map(|r| r.get(0)).collect();
    assert!(!partitions.is_empty());

    eventually("the partitions dropped", PRUNED_WITHIN, async || {
        let rows = sql(
            &server.database_url,
            &format!(
                "SELECT count(*) FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid
                 WHERE c.relname = ANY ('{{{}}}')",
                partitions.join(",")
            ),
        )
        .await;
        let left: i64 = rows[0].get(0);
        (left == 0)
            .then_some(())
            .ok_or(format!("{left} of {partitions:?} left"))
    })
    .await;
    let gone = sql(
        &server.database_url,
        &format!(
            "SELECT count(*) FROM pg_class WHERE relname = ANY ('{{{}}}')",
            partitions.join(",")
        ),
    )
    .await;
    assert_eq!(gone[0].get::<_, i64>(0), 0, "dropped, not only detached");

    // Everything pruned: the empty page says where history starts again.
    let page = http_page(&server, 2, gid, 0).await;
    assert_eq!(msgids(&page), Vec::<u64>::new(), "{page}");
    assert_eq!(page["first"], 4, "{page}");
    let metrics = server.metrics().await;
    assert!(
        metric(&metrics, "herald_retention_partitions_dropped_total") >= 1.0,
        "{metrics}"
    );
    let next = sender.send_msg(gid, "new-1", json!({"n": 4})).await;
    assert_eq!(next["msgid"], 4, "{next}");
}

#[tokio::test]
async fn a_groups_own_age_limit_prunes_it_row_by_row() {
    let server = server_with(&[]).await;
    let aging = server.group(&[1, 2]).await;
    let kept = server.group(&[1, 2]).await;
    let (status, view) = set_retention(&server, aging, json!({"max_age_s": 1})).await;
    assert_eq!(status, 200, "{view}");
    let mut sender = server.connect(1).await;
    send_count(&mut sender, aging, "a", 3).await;
    send_count(&mut sender, kept, "k", 3).await;

    until_first_is(&server, 2, aging, 4).await;
    let page = http_page(&server, 2, kept, 0).await;
    assert_eq!(msgids(&page), [1, 2, 3], "no limit on this one: {page}");
    let (_, view) = server
        .admin(
            Method::GET,
            &format!("/v1/admin/groups/{aging}/retention"),
            None,
        )
        .await;
    assert_eq!(view["first"], Value::Null, "{view}");
    assert_eq!(view["latest"], 3, "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_while_the_pruner_deletes_are_all_stored_dense_and_acked() {
    let server = server_with(&[
        ("HERALD_RETENTION_MAX_MESSAGES", "50"),
        ("HERALD_RETENTION_BATCH", "7"),
    ])
    .await;
    let gid = server.group(&[1, 2, 3]).await;
    let (mut first, mut second) = (server.connect(1).await, server.connect(2).await);
    let (a, b) = tokio::join!(
        send_count(&mut first, gid, "a", 300),
        send_count(&mut second, gid, "b", 300),
    );
    let mut all: Vec<u64> = a.into_iter().chain(b).collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=600).collect::<Vec<_>>(),
        "every send stored once, dense"
    );

    let ack = json!({"msgid": 600});
    let (status, body) = server
        .user(3, Method::POST, &format!("/v1/groups/{gid}/ack"), Some(ack))
        .await;
    assert_eq!(status, 204, "{body}");
    until_first_is(&server, 3, gid, 551).await;
    let page = http_page(&server, 3, gid, 0).await;
    assert_eq!(msgids(&page), (551..=600).collect::<Vec<_>>(), "{page}");
    eventually("the ack stored", WAIT, async || {
        let (_, groups) = server.user(3, Method::GET, "/v1/me/groups", None).await;
        let group = &groups["groups"][0];
        (group["last_ack"] == 600 && group["latest"] == 600)
            .then_some(())
            .ok_or(groups.to_string())
    })
    .await;
}

#[tokio::test]
async fn webhooks_delivered_after_their_messages_were_pruned_say_so_and_carry_what_is_left() {
    const SECRET: &str = "the webhook secret, shared";
    let receiver = WebhookReceiver::start(SECRET).await.expect("a receiver");
    receiver.answer(Answer::Fail(503));
    let url = receiver.url();
    let server = server_with(&[
        ("HERALD_RETENTION_MAX_MESSAGES", "2"),
        ("HERALD_WEBHOOK_URL", url.as_str()),
        ("HERALD_WEBHOOK_SECRET", SECRET),
        ("HERALD_WEBHOOK_RETRY_MAX_S", "1"),
    ])
    .await;
    let gid = server.group(&[1, 2]).await;
    let mut sender = server.connect(1).await;
    // One commit each: each its own messages.stored event.
    send_count(&mut sender, gid, "w", 5).await;
    until_first_is(&server, 2, gid, 4).await;
    // A delivery claimed before the pruning and still on its way carries what was stored
    // then. An attempt two past an event's latest one received by now was claimed after the
    // attempt before it failed, and that one was received after now: after the pruning.
    let pruned_by = receiver.received(|r| stored_attempts(&r.seen));
    eventually(
        "every event claimed again after the pruning",
        PRUNED_WITHIN,
        async || {
            let attempts = receiver.received(|r| stored_attempts(&r.seen));
            let again = |(id, attempt): (&i64, &i64)| {
                *attempt >= pruned_by.get(id).copied().unwrap_or(0) + 2
            };
            (attempts.len() == 5 && attempts.iter().all(again))
                .then_some(())
                .ok_or(format!("{attempts:?} after {pruned_by:?}"))
        },
    )
    .await;

    receiver.answer(Answer::Accept(Duration::ZERO));
    let events = eventually(
        "every messages.stored delivered",
        PRUNED_WITHIN,
        async || {
            let mut events: Vec<Value> = receiver.received(|r| {
                r.accepted
                    .iter()
                    .filter(|e| e["type"] == "messages.stored")
                    .cloned()
                    .collect()
            });
            events.sort_by_key(|e| e["id"].as_i64());
            events.dedup_by_key(|e| e["id"].as_i64());
            (events.len() == 5)
                .then_some(events.clone())
                .ok_or(format!("{events:?}"))
        },
    )
    .await;
    let told: Vec<(Vec<u64>, u64)> = events
        .iter()
        .map(|e| {
            let data = &e["data"];
            let msgids = data["messages"].as_array().expect("messages").iter();
            let msgids = msgids.map(|m| m["msgid"].as_u64().unwrap()).collect();
            (msgids, data["pruned"].as_u64().expect("pruned"))
        })
        .collect();
    assert_eq!(
        told,
        [
            (vec![], 1),
            (vec![], 1),
            (vec![], 1),
            (vec![4], 0),
            (vec![5], 0)
        ],
        "{events:?}"
    );
}

/// The latest attempt come in of each `messages.stored` event, by event id.
fn stored_attempts(seen: &[Value]) -> BTreeMap<i64, i64> {
    let mut attempts = BTreeMap::new();
    for event in seen.iter().filter(|e| e["type"] == "messages.stored") {
        let (Some(id), Some(attempt)) = (event["id"].as_i64(), event["attempt"].as_i64()) else {
            panic!("an event without its id or attempt: {event}");
        };
        let latest = attempts.entry(id).or_insert(attempt);
        *latest = attempt.max(*latest);
    }
    attempts
}

/// What a deployment at 0005 holds: users, a group and its messages, whose ts went back
/// once (two gateways' clocks).
const AT_0005: &str = "
    INSERT INTO users (uid) VALUES (1), (2);
    INSERT INTO groups (gid, name, owner_uid, last_msgid) VALUES (7, 'before', 1, 3);
    INSERT INTO group_members (gid, uid, last_ack_msgid) VALUES (7, 1, 3), (7, 2, 1);
    INSERT INTO group_msgs (gid, msgid, sender_uid, cmid, ts, body) VALUES
        (7, 1, 1, 'c-1', 1700000000000, '{\"text\": \"one\",  \"n\":1}'),
        (7, 2, 2, 'c-2', 1700000005000, '[1, 2.50, \"é\"]'),
        (7, 3, 1, 'c-3', 1700000004000, '\"three\"');";

#[tokio::test]
async fn a_database_at_0005_with_messages_is_partitioned_in_place() {
    let database_url = fresh_database().await;
    let (client, connection) = tokio_postgres::connect(&database_url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    for migration in &MIGRATIONS[..5] {
        client
            .batch_execute(migration.sql)
            .await
            .expect(migration.name);
    }
    // As a binary before checksums recorded them: the next start fills the checksums in.
    client
        .batch_execute(
            "CREATE TABLE herald_migrations (version text PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now(), checksum text);
             INSERT INTO herald_migrations (version) VALUES ('0001_core'),
                 ('0002_append_function'), ('0003_sync'), ('0004_reads'), ('0005_webhooks');",
        )
        .await
        .expect("records");
    client.batch_execute(AT_0005).await.expect("data at 0005");
    drop(client);

    let server = Server::spawn(
        database_url.clone(),
        QUICK
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
    .await;

    let attached = sql(
        &database_url,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'group_msgs'::regclass AND c.relname = 'group_msgs_first'",
    )
    .await;
    assert_eq!(attached.len(), 1, "the old table is the first partition");
    let page = http_page(&server, 2, 7, 0).await;
    assert_eq!(msgids(&page), [1, 2, 3], "{page}");
    assert!(page.get("first").is_none(), "{page}");
    let (status, raw) = {
        let token = server.token(2).await;
        let response = server
            .http
            .get(server.url("/v1/groups/7/messages?after=0"))
            .bearer_auth(token)
            .send()
            .await
            .expect("pull");
        (
            response.status().as_u16(),
            response.text().await.expect("body"),
        )
    };
    assert_eq!(status, 200, "{raw}");
    for body in [
        r#"{"text": "one",  "n":1}"#,
        r#"[1, 2.50, "é"]"#,
        r#""three""#,
    ] {
        assert!(raw.contains(body), "{body} byte for byte in {raw}");
    }

    let mut sender = server.connect(1).await;
    let resend = sender.send_msg(7, "c-1", json!({"text": "again"})).await;
    assert_eq!(
        (&resend["msgid"], &resend["dup"]),
        (&json!(1), &json!(true)),
        "{resend}"
    );
    let fresh = sender.send_msg(7, "c-4", json!({"text": "four"})).await;
    assert_eq!(fresh["msgid"], 4, "{fresh}");
    assert!(
        fresh["ts"].as_i64().unwrap() >= 1_700_000_005_000,
        "ts never below the group's newest: {fresh}"
    );
    let (_, groups) = server.user(2, Method::GET, "/v1/me/groups", None).await;
    assert_eq!(groups["groups"][0]["last_ack"], 1, "{groups}");
}

#[tokio::test]
async fn a_partition_a_cut_off_pruner_left_detached_is_dropped_even_without_an_age_limit() {
    let server = server_with(&[]).await;
    let url = &server.database_url;
    let gid = server.group(&[1, 2]).await;
    let mut sender = server.connect(1).await;
    send_count(&mut sender, gid, "old", 2).await;
    let holding = sql(
        url,
        &format!("SELECT DISTINCT tableoid::regclass::text FROM group_msgs WHERE gid = {gid}"),
    )
    .await;
    let names: Vec<String> = holding.iter().map(|r| r.get(0)).collect();
    // What a pruner killed between its detach and its drop leaves: detached, still listed.
    for name in &names {
        sql(
            url,
            &format!("ALTER TABLE group_msgs DETACH PARTITION {name}"),
        )
        .await;
    }
    let listed = format!("'{{{}}}'", names.join(","));
    let ends: i64 = sql(
        url,
        &format!("SELECT max(to_ts) FROM group_msgs_partitions WHERE name = ANY ({listed})"),
    )
    .await[0]
        .get(0);
    eventually(
        "the leftovers dropped and forgotten",
        PRUNED_WITHIN,
        async || {
            let rows = sql(
                url,
                &format!(
                    "SELECT (SELECT count(*) FROM pg_class WHERE relname = ANY ({listed}))
                      + (SELECT count(*) FROM group_msgs_partitions WHERE name = ANY ({listed}))"
                ),
            )
            .await;
            let left: i64 = rows[0].get(0);
            (left == 0).then_some(()).ok_or(format!("{left} left"))
        },
    )
    .await;

    // Sends from now on are stamped past the range the detached partitions held (else none
    // would hold them: the table is gone).
    eventually("past the detached range", PRUNED_WITHIN, async || {
        let now: i64 = sql(url, "SELECT herald_now_ms()").await[0].get(0);
        (now >= ends).then_some(()).ok_or(format!("{now} < {ends}"))
    })
    .await;

    // The pruner is not stuck on them: a group's count limit still applies.
    let (status, view) = set_retention(&server, gid, json!({"max_messages": 1})).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(send_count(&mut sender, gid, "new", 3).await, [3, 4, 5]);
    until_first_is(&server, 2, gid, 5).await;
}

#[tokio::test]
async fn a_messages_ts_never_goes_below_the_one_before_even_when_the_clock_went_back() {
    let server = server_with(&[]).await;
    let gid = server.group(&[1, 2]).await;
    // As if PostgreSQL's clock had been 2 s ahead when the group's last message was stored
    // (within the partitions made ahead, as a stored ts always is).
    let ahead = sql(
        &server.database_url,
        &format!(
            "UPDATE groups SET last_ts = (extract(epoch FROM now()) * 1000)::bigint + 2000
             WHERE gid = {gid} RETURNING last_ts"
        ),
    )
    .await[0]
        .get::<_, i64>(0);
    let mut sender = server.connect(1).await;
    let sent = sender.send_msg(gid, "after", json!({})).await;
    assert_eq!(sent["ts"], ahead, "{sent}");
}
