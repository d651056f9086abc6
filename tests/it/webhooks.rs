//! Webhooks to the app's backend, against a real HTTP receiver that checks every signature:
//! what is told (messages with the members offline, group changes, users coming and going),
//! at least once across a backend outage and a kill -9, and nothing recorded when off.

use std::time::Duration;

use herald_loadtest::kit::webhooks::{Answer, WebhookReceiver};
use serde_json::{json, Value};

use herald_loadtest::kit::nats::NatsServer;
use reqwest::Method;

use crate::helpers::{eventually, metric, sql, Cluster, Server, WAIT};

const SECRET: &str = "the webhook secret, shared";

/// A receiver, and a server posting to it; `env` adds settings.
async fn server_posting_to(env: &[(&str, &str)]) -> (Server, WebhookReceiver) {
    let receiver = WebhookReceiver::start(SECRET).await.expect("a receiver");
    let url = receiver.url();
    let mut settings = vec![
        ("HERALD_WEBHOOK_URL", url.as_str()),
        ("HERALD_WEBHOOK_SECRET", SECRET),
    ];
    settings.extend_from_slice(env);
    (Server::start_with(&settings).await, receiver)
}

/// The events of `kind` the receiver accepted, once `done` holds for them.
async fn accepted(
    receiver: &WebhookReceiver,
    kind: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    eventually(
        &format!("{kind} events"),
        Duration::from_secs(20),
        async || {
            let events: Vec<Value> = receiver.received(|r| {
                r.accepted
                    .iter()
                    .filter(|e| e["type"] == kind)
                    .cloned()
                    .collect()
            });
            if done(&events) {
                Ok(events)
            } else {
                Err(format!("{events:?}"))
            }
        },
    )
    .await
}

/// The msgids told stored in `events`, in the order told.
fn stored_msgids(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .flat_map(|e| {
            e["data"]["messages"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|m| m["msgid"].as_u64().expect("a msgid"))
        .collect()
}

/// The msgids told stored in `events`, each once, ascending (retries repeat events).
fn distinct_msgids(events: &[Value]) -> Vec<u64> {
    let mut msgids = stored_msgids(events);
    msgids.sort_unstable();
    msgids.dedup();
    msgids
}

async fn outbox_rows(server: &Server) -> i64 {
    sql(&server.database_url, "SELECT count(*) FROM webhook_outbox").await[0].get(0)
}

#[tokio::test]
async fn a_stored_message_is_told_with_the_members_offline_signed_and_exact() {
    let (server, receiver) = server_posting_to(&[]).await;
    let gid = server.group(&[1, 2, 3]).await;
    let mut ann = server.connect(1).await;
    let _bob = server.connect(2).await;

    // Sent as raw text: the body must reach the backend byte for byte.
    let body = r#"{"z": 1.50, "a":"Zürich ✓"}"#;
    let frame = format!(r#"{{"type":"send","id":"s1","gid":{gid},"cmid":"c1","body":{body}}}"#);
    ann.send_text(frame).await;
    let sent: Value = serde_json::from_str(&ann.reply_text(&json!("s1")).await).unwrap();
    assert_eq!(sent["type"], "sent", "{sent}");

    let told = accepted(&receiver, "messages.stored", |e| !e.is_empty()).await;
    let event = &told[0];
    assert!(event["id"].as_i64().is_some_and(|id| id > 0), "{event}");
    assert_eq!(event["attempt"], 1, "{event}");
    let data = &event["data"];
    assert_eq!(data["gid"], gid);
    assert_eq!(
        data["offline"],
        json!([3]),
        "only cat had no session: {event}"
    );
    let message = &data["messages"][0];
    assert_eq!(
        (
            &message["msgid"],
            &message["from"],
            &message["cmid"],
            &message["ts"]
        ),
        (&sent["msgid"], &json!(1), &json!("c1"), &sent["ts"]),
        "{event}"
    );
    let raw = receiver.received(|r| r.bodies.concat());
    assert!(raw.contains(body), "the body as sent, exactly: {raw}");
    assert_eq!(receiver.received(|r| r.forged), 0, "every request signed");

    // A resend stores nothing, and tells nothing new.
    let again = ann.send_msg(gid, "c1", json!({"z": 1.5})).await;
    assert_eq!(again["dup"], true, "{again}");
    ann.send_msg(gid, "c2", json!("next")).await;
    let told = accepted(&receiver, "messages.stored", |e| {
        stored_msgids(e).contains(&2)
    })
    .await;
    assert_eq!(
        stored_msgids(&told),
        [1, 2],
        "each stored message told once"
    );
    eventually(
        "the outbox emptied",
        Duration::from_secs(10),
        async || match outbox_rows(&server).await {
            0 => Ok(()),
            left => Err(format!("{left} rows left")),
        },
    )
    .await;
}

#[tokio::test]
async fn group_changes_and_users_coming_and_going_are_told() {
    let (server, receiver) = server_posting_to(&[("HERALD_PRESENCE_DEBOUNCE_MS", "100")]).await;
    let gid = server.group(&[1, 2]).await;
    server.add_members(gid, &[3]).await;
    let changes = accepted(&receiver, "group.event", |e| {
        e.iter()
            .any(|e| e["data"]["event"] == "member_added" && e["data"]["uid"] == 3)
    })
    .await;
    assert!(
        changes.iter().all(|e| e["data"]["gid"] == gid),
        "{changes:?}"
    );
    let versions: Vec<u64> = changes
        .iter()
        .map(|e| e["data"]["version"].as_u64().expect("a version"))
        .collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");

    let ann = server.connect(1).await;
    let online = accepted(&receiver, "user.online", |e| !e.is_empty()).await;
    assert_eq!(online[0]["data"]["uid"], 1, "{online:?}");
    ann.close().await;
    let offline = accepted(&receiver, "user.offline", |e| !e.is_empty()).await;
    assert_eq!(offline[0]["data"]["uid"], 1, "{offline:?}");
    assert_eq!(offline[0]["data"]["node"], online[0]["data"]["node"]);
}

#[tokio::test]
async fn a_backend_outage_is_retried_until_the_backlog_is_drained() {
    let (server, receiver) = server_posting_to(&[("HERALD_WEBHOOK_RETRY_MAX_S", "1")]).await;
    receiver.answer(Answer::Fail(503));
    let gid = server.group(&[1, 2]).await;
    let mut ann = server.connect(1).await;
    for n in 0..20 {
        let sent = ann.send_msg(gid, &format!("c{n}"), json!(n)).await;
        assert_eq!(
            sent["type"], "sent",
            "sends never wait for the backend: {sent}"
        );
    }
    eventually("refused deliveries", Duration::from_secs(20), async || {
        let failed = metric(
            &server.metrics().await,
            "herald_webhook_deliveries_total{outcome=\"failed\"}",
        );
        let pending = metric(&server.metrics().await, "herald_webhook_pending");
        if failed >= 2.0 && pending > 0.0 {
            Ok(())
        } else {
            Err(format!("failed {failed}, pending {pending}"))
        }
    })
    .await;
    assert!(receiver.received(|r| r.accepted.is_empty()));

    receiver.answer(Answer::Accept(Duration::ZERO));
    let told = accepted(&receiver, "messages.stored", |e| {
        stored_msgids(e).len() >= 20
    })
    .await;
    let mut msgids = stored_msgids(&told);
    msgids.sort_unstable();
    assert_eq!(msgids, (1..=20).collect::<Vec<u64>>());
    assert!(
        told.iter().all(|e| e["attempt"].as_i64() > Some(1)),
        "retries say so: {told:?}"
    );
    assert_eq!(outbox_rows(&server).await, 0, "the backlog drained");
}

#[tokio::test]
async fn what_was_committed_is_told_after_a_kill_9_under_the_same_delivery_ids() {
    let (mut server, receiver) = server_posting_to(&[("HERALD_WEBHOOK_TIMEOUT_MS", "3000")]).await;
    receiver.answer(Answer::Hang);
    let gid = server.group(&[1, 2]).await;
    let mut ann = server.connect(1).await;
    for n in 1..=5 {
        ann.send_msg(gid, &format!("c{n}"), json!(n)).await;
    }
    // The backend got them but never answered when the node died.
    let seen = eventually(
        "a delivery under way",
        Duration::from_secs(10),
        async || {
            let seen: Vec<Value> = receiver.received(|r| r.seen.clone());
            if distinct_msgids(&seen).len() == 5 {
                Ok(seen)
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await;
    server.kill();

    receiver.answer(Answer::Accept(Duration::ZERO));
    server.restart().await;
    let told = accepted(&receiver, "messages.stored", |e| {
        stored_msgids(e).len() >= 5
    })
    .await;
    let ids = |events: &[Value]| -> Vec<i64> {
        let mut ids: Vec<i64> = events
            .iter()
            .filter(|e| e["type"] == "messages.stored")
            .map(|e| e["id"].as_i64().unwrap())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    assert_eq!(
        ids(&told),
        ids(&seen),
        "the same events, under the same ids"
    );
    let mut msgids = stored_msgids(&told);
    msgids.sort_unstable();
    assert_eq!(msgids, [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn without_a_webhook_url_nothing_is_recorded() {
    let server = Server::start().await;
    let gid = server.group(&[1, 2]).await;
    let mut ann = server.connect(1).await;
    ann.send_msg(gid, "c1", json!("hello")).await;
    server.add_members(gid, &[3]).await;
    assert_eq!(outbox_rows(&server).await, 0);
}

#[tokio::test]
async fn in_a_cluster_the_members_offline_are_those_online_on_no_node_and_each_event_is_told_once()
{
    let receiver = WebhookReceiver::start(SECRET).await.expect("a receiver");
    let nats = NatsServer::start().await.expect("start nats-server");
    let (url, nats_url) = (receiver.url(), nats.url());
    let env = [
        ("HERALD_NATS_URL", nats_url.as_str()),
        ("HERALD_WEBHOOK_URL", url.as_str()),
        ("HERALD_WEBHOOK_SECRET", SECRET),
    ];
    let cluster = Cluster::start_on(nats, 2, &env).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let gid = a.group(&[1, 2, 3]).await;
    let mut ann = a.connect(1).await;
    let _bob = b.connect(2).await;
    let path = format!("/v1/groups/{gid}/online");
    eventually("node A sees bob online on node B", WAIT, async || {
        let (status, body) = a.user(3, Method::GET, &path, None).await;
        (status == 200 && body["uids"] == json!([1, 2]))
            .then_some(())
            .ok_or(format!("{status} {body}"))
    })
    .await;

    for n in 1..=10 {
        ann.send_msg(gid, &format!("c{n}"), json!(n)).await;
    }
    let told = accepted(&receiver, "messages.stored", |e| {
        distinct_msgids(e).len() == 10
    })
    .await;
    assert_eq!(distinct_msgids(&told), (1..=10).collect::<Vec<u64>>());
    assert!(
        told.iter().all(|e| e["data"]["offline"] == json!([3])),
        "bob is online on the other node: {told:?}"
    );
    // Both nodes deliver from the one outbox: no event twice while the backend answers.
    let mut ids: Vec<i64> = receiver.received(|r| {
        r.accepted
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect()
    });
    let all = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all, "each event accepted once");
}

#[tokio::test]
async fn a_message_recalled_before_it_was_posted_is_told_as_its_tombstone() {
    let (server, receiver) = server_posting_to(&[("HERALD_WEBHOOK_RETRY_MAX_S", "1")]).await;
    receiver.answer(Answer::Fail(503));
    let gid = server.group(&[1, 2]).await;
    let mut ann = server.connect(1).await;
    ann.send_msg(gid, "kept", json!({"text": "kept"})).await;
    ann.send_msg(gid, "oops", json!({"text": "oops"})).await;
    let recalled = ann
        .request(json!({"type": "recall", "id": "r", "gid": gid, "msgid": 2}))
        .await;
    assert_eq!(recalled["type"], "recalled", "{recalled}");

    receiver.answer(Answer::Accept(Duration::ZERO));
    let told = accepted(&receiver, "messages.stored", |e| {
        distinct_msgids(e) == [1, 2]
    })
    .await;
    let messages: Vec<Value> = told
        .iter()
        .flat_map(|e| {
            e["data"]["messages"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    let last_of = |msgid: u64| messages.iter().rfind(|m| m["msgid"] == msgid).unwrap();
    assert_eq!(last_of(1)["body"], json!({"text": "kept"}));
    assert_eq!(last_of(2)["tombstone"], "recalled", "{messages:?}");
    assert!(last_of(2).get("body").is_none(), "{messages:?}");
    let events = accepted(&receiver, "group.event", |e| {
        e.iter().any(|e| e["data"]["event"] == "message_recalled")
    })
    .await;
    let event = events
        .iter()
        .find(|e| e["data"]["event"] == "message_recalled")
        .unwrap();
    assert_eq!(
        (&event["data"]["msgid"], &event["data"]["by"]),
        (&json!(2), &json!(1))
    );
}

#[tokio::test]
async fn an_erased_user_is_told_once() {
    let (server, receiver) = server_posting_to(&[]).await;
    let gid = server.group(&[1, 2]).await;
    let mut bob = server.connect(2).await;
    bob.send_msg(gid, "mine", json!({"text": "mine"})).await;
    let path = "/v1/admin/users/2/erase";
    for _ in 0..2 {
        let (status, summary) = server.admin(Method::POST, path, None).await;
        assert_eq!(status, 200, "{summary}");
    }
    let told = accepted(&receiver, "user.erased", |e| !e.is_empty()).await;
    assert_eq!(told[0]["data"]["uid"], 2, "{told:?}");
    eventually("the outbox drained", Duration::from_secs(20), async || {
        let rows = outbox_rows(&server).await;
        (rows == 0).then_some(()).ok_or(format!("{rows} rows"))
    })
    .await;
    let ids: std::collections::BTreeSet<String> = receiver.received(|r| {
        r.accepted
            .iter()
            .filter(|e| e["type"] == "user.erased")
            .map(|e| e["id"].to_string())
            .collect()
    });
    assert_eq!(
        ids.len(),
        1,
        "the second erasure tells nothing new: {ids:?}"
    );
}
