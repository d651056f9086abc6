//! Operations: several nodes on one database, migrations applied once by nodes starting
//! together, configuration errors at start, heartbeats dropping silent peers, and the
//! cursors of `GET /v1/me/groups` against those of `hello`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::helpers::{
    self, eventually, metric, respond, sql, Client, Server, ADMIN_KEY, JWT_SECRET, WAIT,
};

/// A sender's message: (sender uid, cmid).
type Key = (u64, String);

// ---------------------------------------------------------------------------------------
// Private helpers
// ---------------------------------------------------------------------------------------

/// What one pipelined sender confirmed: cmid → (body, `sent` reply), in send order.
type SentLog = Vec<(String, Value, Value)>;

/// Sends `count` messages on `client` with up to `window` awaiting their reply, reading
/// every frame (replies and pushes) meanwhile. Panics on an error reply or a close.
async fn send_pipelined(
    mut client: Client,
    uid: u64,
    gid: u64,
    prefix: &str,
    count: usize,
    window: usize,
) -> SentLog {
    let mut bodies: HashMap<String, Value> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut replies: HashMap<String, Value> = HashMap::new();
    let mut written = 0;
    while replies.len() < count {
        while written < count && written - replies.len() < window {
            let cmid = format!("{prefix}-{written}");
            let body = json!({"uid": uid, "i": written, "text": format!("{cmid} é✓"), "pad": "p".repeat(written % 37)});
            client
                .send(json!({"type": "send", "id": cmid, "gid": gid, "cmid": cmid, "body": body}))
                .await;
            bodies.insert(cmid.clone(), body);
            order.push(cmid);
            written += 1;
        }
        let frame = client.recv().await;
        match frame["type"].as_str() {
            Some("sent") => {
                let cmid = frame["id"].as_str().expect("the id is the cmid").to_owned();
                assert!(
                    bodies.contains_key(&cmid),
                    "a reply to an unknown id: {frame}"
                );
                assert!(
                    replies.insert(cmid, frame.clone()).is_none(),
                    "two replies for one send: {frame}"
                );
            }
            Some("error") => panic!("error reply to a send of uid {uid}: {frame}"),
            _ => {}
        }
    }
    client.close().await;
    order
        .into_iter()
        .map(|cmid| {
            let body = bodies.remove(&cmid).unwrap();
            let reply = replies.remove(&cmid).unwrap();
            (cmid, body, reply)
        })
        .collect()
}

/// Checks a group's stored messages against what was confirmed: msgids exactly 1..=n
/// ascending, each (sender, cmid) once, with the body sent, the msgid and ts confirmed.
fn check_stored(stored: &[Value], confirmed: &HashMap<Key, (Value, Value)>, node: &str) {
    let msgids: Vec<u64> = stored
        .iter()
        .map(|m| m["msgid"].as_u64().expect("a msgid"))
        .collect();
    let dense: Vec<u64> = (1..=confirmed.len() as u64).collect();
    assert!(
        msgids == dense,
        "pulled through {node}: {} messages, msgids not exactly 1..={}: first differences {:?}",
        msgids.len(),
        confirmed.len(),
        msgids
            .iter()
            .zip(&dense)
            .filter(|(a, b)| a != b)
            .take(5)
            .collect::<Vec<_>>()
    );
    let mut seen: HashSet<Key> = HashSet::new();
    for message in stored {
        let key: Key = (
            message["from"].as_u64().expect("from"),
            message["cmid"].as_str().expect("cmid").to_owned(),
        );
        let (body, sent) = confirmed
            .get(&key)
            .unwrap_or_else(|| panic!("stored message {key:?} was never sent: {message}"));
        assert!(seen.insert(key.clone()), "{key:?} stored twice");
        assert_eq!(&message["body"], body, "body of {key:?} through {node}");
        assert_eq!(
            message["msgid"], sent["msgid"],
            "{key:?} stored under another msgid than confirmed"
        );
        assert_eq!(message["ts"], sent["ts"], "ts of {key:?} through {node}");
    }
}

/// The user's groups from `GET /v1/me/groups`.
async fn my_groups(server: &Server, uid: u64) -> Value {
    let (status, body) = server.user(uid, Method::GET, "/v1/me/groups", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["groups"].is_array(), "{body}");
    body["groups"].clone()
}

/// Cursors sorted by gid (the contract does not fix the order).
fn by_gid(groups: &Value) -> Vec<Value> {
    let mut groups = groups
        .as_array()
        .unwrap_or_else(|| panic!("groups: {groups}"))
        .clone();
    groups.sort_by_key(|g| g["gid"].as_u64());
    groups
}

/// How a `herald serve` with a bad configuration ended.
struct Refusal {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `herald serve` with only `env` in its environment; it must exit within 15 s.
async fn serve_with_only(env: &[(&str, &str)]) -> Refusal {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .arg("serve")
        .env_clear()
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let started = Instant::now();
    let output = tokio::time::timeout(Duration::from_secs(15), command.output())
        .await
        .unwrap_or_else(|_| panic!("herald with {env:?} still running after 15 s (killed)"))
        .expect("run the herald binary");
    let refusal = Refusal {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert!(
        !output.status.success(),
        "herald with {env:?} exited 0 after {:?}; stderr:\n{}",
        started.elapsed(),
        refusal.stderr
    );
    assert!(
        refusal.code.is_some(),
        "herald with {env:?} died by a signal: {:?}",
        output.status
    );
    refusal
}

/// A herald process's Prometheus gauge of open sessions.
async fn sessions(server: &Server) -> f64 {
    metric(&server.metrics().await, "herald_sessions")
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_one_database_keep_msgids_dense_and_resends_idempotent() {
    const PER_SENDER: usize = 100;
    let a = Server::start().await;
    let b = Server::spawn(a.database_url.clone(), vec![]).await;
    let gid = a.group(&[1, 2, 3, 4]).await;

    // uids 1 and 2 on node A, 3 and 4 on node B, all sending at once.
    let mut clients = Vec::new();
    for uid in 1..=4u64 {
        let node = if uid <= 2 { &a } else { &b };
        let client = node.connect(uid).await;
        assert_eq!(
            client.hello["groups"],
            json!([{"gid": gid, "last_ack": 0, "last_read": 0, "latest": 0}]),
            "hello of {uid}"
        );
        clients.push((uid, client));
    }
    let senders: Vec<_> = clients
        .into_iter()
        .map(|(uid, client)| {
            tokio::spawn(async move {
                let log =
                    send_pipelined(client, uid, gid, &format!("u{uid}"), PER_SENDER, 20).await;
                (uid, log)
            })
        })
        .collect();

    let mut confirmed: HashMap<Key, (Value, Value)> = HashMap::new();
    let mut msgids: Vec<u64> = Vec::new();
    for sender in senders {
        let (uid, log) = tokio::time::timeout(Duration::from_secs(60), sender)
            .await
            .expect("senders finish")
            .expect("a sender panicked");
        assert_eq!(log.len(), PER_SENDER);
        for (cmid, body, sent) in log {
            assert_eq!(sent["gid"], gid, "{sent}");
            assert_eq!(sent["dup"], false, "a first send answered dup: {sent}");
            msgids.push(sent["msgid"].as_u64().expect("a msgid"));
            confirmed.insert((uid, cmid), (body, sent));
        }
    }
    let distinct: HashSet<u64> = msgids.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        msgids.len(),
        "two sends were confirmed with one msgid"
    );
    msgids.sort_unstable();
    assert_eq!(
        msgids,
        (1..=400).collect::<Vec<u64>>(),
        "the confirmed msgids are not exactly 1..=400"
    );

    // Either node serves the same, complete log.
    check_stored(&a.stored_messages(1, gid).await, &confirmed, "node A");
    check_stored(&b.stored_messages(3, gid).await, &confirmed, "node B");

    // A resend of a confirmed cmid through the other node is recognised.
    for (uid, cmid, node, name) in [(1, "u1-7", &b, "B"), (4, "u4-93", &a, "A")] {
        let (body, original) = &confirmed[&(uid, cmid.to_owned())];
        let mut client = node.connect(uid).await;
        let again = client.send_msg(gid, cmid, body.clone()).await;
        assert_eq!(again["type"], "sent", "resend through node {name}: {again}");
        assert_eq!(again["dup"], true, "resend through node {name}: {again}");
        assert_eq!(
            again["msgid"], original["msgid"],
            "resend of {cmid} through node {name}: {again}, first {original}"
        );
        client.close().await;
    }
    assert_eq!(
        b.stored_messages(2, gid).await.len(),
        400,
        "resends stored again"
    );

    // Both nodes know the group's newest msgid. hello tells what the node's group pushed
    // (without a bus, a node learns of the other's commits from the store), and the rest
    // is pushed right after it: a client pulling up to hello's latest misses nothing.
    for (node, name) in [(&a, "A"), (&b, "B")] {
        let mut client = node.connect(2).await;
        let joined = &client.hello["groups"][0];
        assert_eq!(
            (&joined["gid"], &joined["last_ack"], &joined["last_read"]),
            (&json!(gid), &json!(0), &json!(0)),
            "hello on node {name}: {joined}"
        );
        let latest = joined["latest"].as_u64().expect("hello's latest");
        assert!(latest <= 400, "hello on node {name}: {joined}");
        let pushed: Vec<u64> = client
            .msgs(gid, (400 - latest) as usize)
            .await
            .iter()
            .map(|msg| msg["msgid"].as_u64().expect("a msgid"))
            .collect();
        assert_eq!(
            pushed,
            (latest + 1..=400).collect::<Vec<u64>>(),
            "pushed after hello's latest {latest} on node {name}"
        );
        assert_eq!(
            my_groups(node, 2).await,
            json!([{"gid": gid, "last_ack": 0, "last_read": 0, "latest": 400}]),
            "/v1/me/groups on node {name}"
        );
        client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_apply_the_migrations_once() {
    let database_url = helpers::fresh_database().await;
    let (first, second, third) = tokio::join!(
        Server::spawn(database_url.clone(), vec![]),
        Server::spawn(database_url.clone(), vec![]),
        Server::spawn(database_url.clone(), vec![]),
    );
    let nodes = [&first, &second, &third];
    for (n, node) in nodes.iter().enumerate() {
        let response = node
            .http
            .get(node.url("/readyz"))
            .send()
            .await
            .expect("/readyz");
        assert_eq!(
            response.status().as_u16(),
            200,
            "node {n} not ready; logs:\n{}",
            node.logs()
        );
    }

    let rows = sql(
        &database_url,
        "SELECT version, count(*) FROM herald_migrations GROUP BY version ORDER BY version",
    )
    .await;
    let applied: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(!applied.is_empty(), "no migration recorded");
    for (version, count) in &applied {
        assert_eq!(*count, 1, "migration {version} recorded {count} times");
    }
    let versions: Vec<&str> = applied.iter().map(|(v, _)| v.as_str()).collect();
    assert!(
        versions.contains(&"0001_core"),
        "the core migration is not recorded: {versions:?}"
    );
    let failures: Vec<String> = nodes
        .iter()
        .flat_map(|node| node.logs().lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| line.contains("\"ERROR\""))
        .collect();
    assert!(failures.is_empty(), "errors logged: {failures:?}");

    // A group created through one node is usable through the others.
    let gid = first.group(&[1, 2]).await;
    let mut ann = second.connect(1).await;
    assert_eq!(
        ann.hello["groups"],
        json!([{"gid": gid, "last_ack": 0, "last_read": 0, "latest": 0}])
    );
    let sent = ann.send_msg(gid, "c-1", json!({"text": "hi"})).await;
    assert_eq!(sent["type"], "sent", "{sent}");
    assert_eq!(sent["msgid"], 1, "{sent}");
    let stored = third.stored_messages(2, gid).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["from"], 1);
    assert_eq!(stored[0]["cmid"], "c-1");
    assert_eq!(stored[0]["body"], json!({"text": "hi"}));
}

#[tokio::test]
async fn configuration_errors_stop_the_server_with_a_message_naming_the_variable() {
    let database_url = "postgres://herald:not-a-real-password@127.0.0.1:54329/herald";
    let good: [(&str, &str); 4] = [
        ("DATABASE_URL", database_url),
        ("HERALD_LISTEN", "127.0.0.1:0"),
        ("HERALD_JWT_SECRET", JWT_SECRET),
        ("HERALD_ADMIN_KEY", ADMIN_KEY),
    ];
    let without = |name: &str| -> Vec<(&str, &str)> {
        good.iter().copied().filter(|(k, _)| *k != name).collect()
    };
    let replacing = |name: &'static str, value: &'static str| -> Vec<(&str, &str)> {
        let mut env = without(name);
        env.push((name, value));
        env
    };

    let missing_secret = serve_with_only(&without("HERALD_JWT_SECRET")).await;
    assert!(
        missing_secret.stderr.contains("HERALD_JWT_SECRET"),
        "exit {:?}, stderr:\n{}",
        missing_secret.code,
        missing_secret.stderr
    );

    let short_key = serve_with_only(&replacing("HERALD_ADMIN_KEY", "short")).await;
    assert!(
        short_key.stderr.contains("HERALD_ADMIN_KEY"),
        "exit {:?}, stderr:\n{}",
        short_key.code,
        short_key.stderr
    );

    let bad_listen = serve_with_only(&replacing("HERALD_LISTEN", "not-an-address")).await;
    assert!(
        bad_listen.stderr.contains("HERALD_LISTEN") && bad_listen.stderr.contains("not-an-address"),
        "exit {:?}, stderr:\n{}",
        bad_listen.code,
        bad_listen.stderr
    );

    let bad_url = serve_with_only(&replacing(
        "DATABASE_URL",
        "postgres://herald:db-password-not-logged@127.0.0.1:not-a-port/herald",
    ))
    .await;
    assert!(
        bad_url.stderr.contains("DATABASE_URL"),
        "exit {:?}, stderr:\n{}",
        bad_url.code,
        bad_url.stderr
    );
    // Secrets stay out of the output, even when starting fails.
    for secret in [JWT_SECRET, ADMIN_KEY, "db-password-not-logged"] {
        for (stream, text) in [("stdout", &bad_url.stdout), ("stderr", &bad_url.stderr)] {
            assert!(!text.contains(secret), "{stream} shows a secret:\n{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_dropped_after_two_heartbeats_while_a_live_one_stays() {
    let server = Server::start_with(&[("HERALD_HEARTBEAT_S", "1")]).await;
    server.users(&[1, 2]).await;
    let mut silent = server.connect(1).await;
    let mut live = server.connect(2).await;
    assert_eq!(silent.hello["heartbeat_s"], 1, "{}", silent.hello);
    assert_eq!(sessions(&server).await, 2.0);

    // The live client reads (and so answers pings) for 5 s; the silent one reads nothing.
    let reader = tokio::spawn(async move {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Some(Err(close)) = live.next_frame(Duration::from_millis(200)).await {
                panic!("the live client was disconnected: {close:?}");
            }
        }
        live
    });

    eventually(
        "the silent session is dropped",
        Duration::from_secs(10),
        async || {
            let open = sessions(&server).await;
            if open == 1.0 {
                Ok(())
            } else {
                Err(format!("herald_sessions {open}"))
            }
        },
    )
    .await;
    let mut live = reader.await.expect("the live client stayed connected");
    assert_eq!(
        sessions(&server).await,
        1.0,
        "the live session was dropped too"
    );
    let pong = live.request(json!({"type": "ping", "id": "p-1"})).await;
    assert_eq!(pong, json!({"type": "pong", "id": "p-1"}));

    // The silent client, reading at last, finds its connection ended.
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match silent.next_frame(WAIT).await {
                Some(Ok(frame)) => assert_ne!(frame["type"], "pong", "{frame}"),
                Some(Err(close)) => return close,
                None => panic!("the silent session is still open"),
            }
        }
    })
    .await
    .expect("the silent connection ends");
    assert_ne!(ended, Some(1000), "a silent peer is not a normal close");
    live.close().await;
    eventually("the live session closes", WAIT, async || {
        let open = sessions(&server).await;
        if open == 0.0 {
            Ok(())
        } else {
            Err(format!("herald_sessions {open}"))
        }
    })
    .await;
}

#[tokio::test]
async fn my_groups_lists_every_group_of_the_user_with_last_ack_and_latest_as_hello_does() {
    let server = Server::start().await;
    server.users(&[1, 2, 3, 9]).await;
    // g1: ann acked 3 of 5 over HTTP. g2: 2 messages, acked over WebSocket up to 1.
    // g3: 3 messages before ann joined. g4: not ann's. g5: ann's, empty.
    let g1 = server.group(&[1, 2]).await;
    let g2 = server.group(&[2, 1]).await;
    let g3 = server.group(&[2, 3]).await;
    let g4 = server.group(&[3, 2]).await;
    let g5 = server.group(&[1]).await;
    let mut bob = server.connect(2).await;
    for (gid, count) in [(g1, 5), (g2, 2), (g3, 3), (g4, 4)] {
        for n in 1..=count {
            let sent = bob.send_msg(gid, &format!("c-{n}"), json!({"n": n})).await;
            assert_eq!(sent["msgid"], n, "{sent}");
        }
    }
    let (status, body) = server
        .user(
            1,
            Method::POST,
            &format!("/v1/groups/{g1}/ack"),
            Some(json!({"msgid": 3})),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = server
        .admin_post(
            &format!("/v1/admin/groups/{g3}/members"),
            json!({"uids": [1]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let mut ann = server.connect(1).await;
    ann.send(json!({"type": "ack", "gid": g2, "msgid": 1}))
        .await;
    let expected = vec![
        json!({"gid": g1, "last_ack": 3, "last_read": 0, "latest": 5}),
        json!({"gid": g2, "last_ack": 1, "last_read": 0, "latest": 2}),
        json!({"gid": g3, "last_ack": 3, "last_read": 3, "latest": 3}),
        json!({"gid": g5, "last_ack": 0, "last_read": 0, "latest": 0}),
    ];
    let listed = eventually("/v1/me/groups of ann", WAIT, async || {
        let groups = my_groups(&server, 1).await;
        match by_gid(&groups) == expected {
            true => Ok(groups),
            false => Err(groups.to_string()),
        }
    })
    .await;
    assert_eq!(
        listed.as_array().unwrap().len(),
        4,
        "each group once: {listed}"
    );

    // A new session's hello says the same.
    let fresh = server.connect(1).await;
    assert_eq!(
        by_gid(&fresh.hello["groups"]),
        by_gid(&listed),
        "hello {} against /v1/me/groups {listed}",
        fresh.hello
    );
    fresh.close().await;

    // Once every session is gone (acks written), both still agree.
    ann.close().await;
    bob.close().await;
    eventually("ann's stored ack of g2", WAIT, async || {
        let rows = sql(
            &server.database_url,
            &format!("SELECT last_ack_msgid FROM group_members WHERE gid = {g2} AND uid = 1"),
        )
        .await;
        match rows[0].get::<_, i64>(0) {
            1 => Ok(()),
            other => Err(format!("last_ack_msgid {other}")),
        }
    })
    .await;
    assert_eq!(by_gid(&my_groups(&server, 1).await), expected);
    let later = server.connect(1).await;
    assert_eq!(by_gid(&later.hello["groups"]), expected, "{}", later.hello);
    later.close().await;

    // A user without groups gets an empty list, in both.
    assert_eq!(my_groups(&server, 9).await, json!([]));
    let lonely = server.connect(9).await;
    assert_eq!(lonely.hello["groups"], json!([]), "{}", lonely.hello);
    lonely.close().await;
}

#[tokio::test]
async fn the_demo_and_its_token_route_exist_only_when_enabled_and_its_tokens_work() {
    let off = Server::start().await;
    for (method, path) in [
        ("GET", "/demo/"),
        ("GET", "/demo/demo.js"),
        ("POST", "/demo/token"),
    ] {
        let request = off
            .http
            .request(method.parse().unwrap(), off.url(path))
            .json(&serde_json::json!({"uid": 1}));
        assert_eq!(
            respond(request).await.0,
            404,
            "{method} {path} with the demo off"
        );
    }

    let on = Server::start_with(&[("HERALD_DEMO", "1")]).await;
    let page = on.http.get(on.url("/demo/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<html"));
    let token = |uid: u64| {
        on.http
            .post(on.url("/demo/token"))
            .json(&serde_json::json!({"uid": uid}))
    };
    assert_eq!(respond(token(9)).await.0, 400, "only the demo users");
    // Asked twice at once, the users and their group are made once.
    let ((status, ann), (_, bob)) = tokio::join!(respond(token(1)), respond(token(2)));
    assert_eq!(status, 200, "{ann}");
    assert_eq!(ann["gid"], bob["gid"]);
    let gid = ann["gid"].as_u64().unwrap();
    let mut ann_session = Client::connect(on.addr, ann["token"].as_str().unwrap())
        .await
        .expect("the demo token opens a session");
    let sent = ann_session
        .send_msg(gid, "hi", serde_json::json!("hi bob"))
        .await;
    assert_eq!(sent["type"], "sent", "{sent}");
}
