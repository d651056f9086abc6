//! Faults: the gateway killed mid-load, PostgreSQL restarted under a live session, a
//! consumer that stops reading, many senders racing on one group.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use herald_loadtest::kit::client::{next_text, Socket};
use herald_loadtest::kit::launcher::LISTENING;
use herald_loadtest::kit::postgres::{work_dir, PrivatePostgres};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{self, Client, Server, WAIT};

/// A sender's message: (sender uid, cmid).
type Key = (u64, String);

// ---------------------------------------------------------------------------------------
// Private helpers
// ---------------------------------------------------------------------------------------

/// Opens a WebSocket session for `uid` as a bare socket, so it can be split into a
/// writing half and a reading half.
async fn open_split(server: &Server, uid: u64) -> Socket {
    server.connect(uid).await.into_socket()
}

/// What one pipelined sender should do.
struct SendPlan {
    gid: u64,
    /// cmids are `{prefix}-{i}`.
    prefix: String,
    /// How many messages; None: until `stop` is set or the connection dies.
    limit: Option<usize>,
    /// Sends awaiting their reply at most.
    window: usize,
    stop: Arc<AtomicBool>,
    /// Counts `sent` replies across senders.
    confirmations: Arc<AtomicUsize>,
    body: fn(&str, usize) -> Value,
}

/// What a pipelined sender did and saw.
#[derive(Default, Debug)]
struct SendLog {
    /// Every send written (or attempted) to the socket, in order: (cmid, body).
    attempted: Vec<(String, Value)>,
    /// cmid → its `sent` reply.
    confirmed: HashMap<String, Value>,
    /// Error replies.
    errors: Vec<Value>,
}

/// Sends messages with up to `window` in flight on one session while reading every frame
/// (replies and pushes) so the session never backs up. Ends when `limit` messages were
/// answered, or, without a limit, when the connection ends.
async fn run_sender(ws: Socket, plan: SendPlan) -> SendLog {
    let (mut sink, mut stream) = ws.split();
    let window = Semaphore::new(plan.window);
    let log = Mutex::new(SendLog::default());
    let written = AtomicUsize::new(0);
    let writer_done = AtomicBool::new(false);
    let writer = async {
        let mut i = 0;
        while plan.limit.is_none_or(|limit| i < limit) && !plan.stop.load(Ordering::SeqCst) {
            let Ok(permit) = window.acquire().await else {
                break;
            };
            permit.forget();
            let cmid = format!("{}-{i}", plan.prefix);
            let body = (plan.body)(&cmid, i);
            let frame =
                json!({"type": "send", "id": cmid, "gid": plan.gid, "cmid": cmid, "body": body});
            log.lock().unwrap().attempted.push((cmid, body));
            if sink.send(Message::text(frame.to_string())).await.is_err() {
                break;
            }
            i += 1;
            written.store(i, Ordering::SeqCst);
        }
        writer_done.store(true, Ordering::SeqCst);
    };
    let reader = async {
        let mut replies = 0;
        let mut last_heard = Instant::now();
        loop {
            if writer_done.load(Ordering::SeqCst) && replies >= written.load(Ordering::SeqCst) {
                break;
            }
            if last_heard.elapsed() > WAIT {
                // Replies that never came: left unconfirmed.
                break;
            }
            let next = tokio::time::timeout(Duration::from_millis(100), next_text(&mut stream));
            let Ok(next) = next.await else { continue };
            last_heard = Instant::now();
            let frame: Value = match next {
                Ok(Some(text)) => serde_json::from_str(&text).expect("server frames are JSON"),
                Ok(None) => continue,
                Err(_ended) => break,
            };
            match frame["type"].as_str() {
                Some("sent") => {
                    let cmid = frame["id"].as_str().expect("the id is the cmid").to_owned();
                    log.lock().unwrap().confirmed.insert(cmid, frame);
                    plan.confirmations.fetch_add(1, Ordering::SeqCst);
                }
                Some("error") => log.lock().unwrap().errors.push(frame),
                _ => continue,
            }
            replies += 1;
            window.add_permits(1);
        }
        // Unblocks a writer waiting for room.
        window.close();
    };
    tokio::join!(writer, reader);
    log.into_inner().unwrap()
}

/// Checks what a group stores against what senders attempted and what was confirmed:
/// msgids dense from 1, each (sender, cmid) once, each body as sent, each confirmed message
/// there with its msgid. Returns (sender, cmid) → msgid.
fn check_stored(
    stored: &[Value],
    attempted: &HashMap<Key, Value>,
    confirmed: &HashMap<Key, u64>,
) -> HashMap<Key, u64> {
    let msgids: Vec<u64> = stored
        .iter()
        .map(|m| m["msgid"].as_u64().unwrap())
        .collect();
    let dense: Vec<u64> = (1..=stored.len() as u64).collect();
    assert!(
        msgids == dense,
        "msgids are not exactly 1..={}: first differences {:?}",
        stored.len(),
        msgids
            .iter()
            .zip(&dense)
            .filter(|(a, b)| a != b)
            .take(5)
            .collect::<Vec<_>>()
    );
    let mut by_key: HashMap<Key, u64> = HashMap::new();
    for message in stored {
        let key = (
            message["from"].as_u64().unwrap(),
            message["cmid"].as_str().unwrap().to_owned(),
        );
        let msgid = message["msgid"].as_u64().unwrap();
        let body = attempted
            .get(&key)
            .unwrap_or_else(|| panic!("stored message {key:?} was never sent: {message}"));
        assert_eq!(&message["body"], body, "body of {key:?} changed");
        if let Some(first) = by_key.insert(key.clone(), msgid) {
            panic!("{key:?} stored twice: msgids {first} and {msgid}");
        }
    }
    for (key, msgid) in confirmed {
        assert_eq!(
            by_key.get(key),
            Some(msgid),
            "confirmed message {key:?} (msgid {msgid}) is not stored as confirmed"
        );
    }
    by_key
}

/// A private PostgreSQL cluster under `.herald/`, stopped and removed when dropped.
async fn private_postgres() -> PrivatePostgres {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = work_dir(&format!(
        "faults-pg-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    PrivatePostgres::start(dir)
        .await
        .unwrap_or_else(|error| panic!("{error:#}"))
}

/// `GET /readyz`'s status (panics if it takes longer than `WAIT`).
async fn readyz(server: &Server) -> u16 {
    let response = tokio::time::timeout(WAIT, server.http.get(server.url("/readyz")).send())
        .await
        .expect("/readyz answers in time")
        .expect("/readyz");
    response.status().as_u16()
}

/// A send and its reply, which must come within `WAIT` (the helper panics otherwise).
async fn timed_send(client: &mut Client, gid: u64, cmid: &str, body: Value) -> (Value, Duration) {
    let start = Instant::now();
    let reply = client.send_msg(gid, cmid, body).await;
    (reply, start.elapsed())
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_load_loses_nothing_it_confirmed_and_stores_resends_once() {
    const SENDERS: usize = 4;
    const CYCLES: usize = 3;
    let mut server = Server::start().await;
    let gid = server.group(&[1, 2]).await;
    let mut attempted: HashMap<Key, Value> = HashMap::new();
    let mut confirmed: HashMap<Key, u64> = HashMap::new();

    for cycle in 0..CYCLES {
        let stop = Arc::new(AtomicBool::new(false));
        let confirmations = Arc::new(AtomicUsize::new(0));
        let mut senders = Vec::new();
        for s in 0..SENDERS {
            let uid = 1 + (s % 2) as u64;
            let ws = open_split(&server, uid).await;
            let plan = SendPlan {
                gid,
                prefix: format!("c{cycle}-s{s}"),
                limit: None,
                window: 32,
                stop: stop.clone(),
                confirmations: confirmations.clone(),
                body: |cmid, i| json!({"cmid": cmid, "i": i, "pad": "p".repeat(i % 97)}),
            };
            senders.push((uid, tokio::spawn(run_sender(ws, plan))));
        }

        // About a second of load (or plenty of confirmations), then SIGKILL mid-flight.
        let started = Instant::now();
        loop {
            let done = confirmations.load(Ordering::SeqCst);
            if done >= 2000 || (started.elapsed() >= Duration::from_secs(1) && done >= 50) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "only {done} sends confirmed in 20 s; logs:\n{}",
                server.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.kill();
        stop.store(true, Ordering::SeqCst);

        let mut unconfirmed: Vec<Key> = Vec::new();
        for (uid, sender) in senders {
            let log = tokio::time::timeout(Duration::from_secs(30), sender)
                .await
                .expect("senders notice the dead server")
                .unwrap();
            assert!(
                log.errors.is_empty(),
                "error replies before the kill: {:?}",
                log.errors
            );
            for (cmid, body) in log.attempted {
                let key = (uid, cmid);
                match log.confirmed.get(&key.1) {
                    Some(sent) => {
                        assert_eq!(sent["gid"], gid);
                        assert_eq!(sent["dup"], false, "{sent}");
                        confirmed.insert(key.clone(), sent["msgid"].as_u64().unwrap());
                    }
                    None => unconfirmed.push(key.clone()),
                }
                attempted.insert(key, body);
            }
        }
        // Every confirmed msgid is unique.
        let distinct: HashSet<u64> = confirmed.values().copied().collect();
        assert_eq!(
            distinct.len(),
            confirmed.len(),
            "two sends confirmed one msgid"
        );

        server.restart().await;
        let stored = server.stored_messages(1, gid).await;
        let before = check_stored(&stored, &attempted, &confirmed);
        eprintln!(
            "cycle {cycle}: {} confirmed in all, {} stored, {} unconfirmed at the kill \
             ({} of them stored)",
            confirmed.len(),
            stored.len(),
            unconfirmed.len(),
            unconfirmed
                .iter()
                .filter(|k| before.contains_key(*k))
                .count()
        );

        // Resending what was not confirmed: stored once, or dup with the stored msgid.
        let mut clients: HashMap<u64, Client> = HashMap::new();
        for uid in [1, 2] {
            clients.insert(uid, server.connect(uid).await);
        }
        for key in &unconfirmed {
            let client = clients.get_mut(&key.0).unwrap();
            let sent = client.send_msg(gid, &key.1, attempted[key].clone()).await;
            assert_eq!(sent["type"], "sent", "resend of {key:?}: {sent}");
            let msgid = sent["msgid"].as_u64().unwrap();
            match before.get(key) {
                Some(&stored_as) => {
                    assert_eq!(sent["dup"], true, "resend of stored {key:?}: {sent}");
                    assert_eq!(msgid, stored_as, "resend of {key:?}: {sent}");
                }
                None => assert_eq!(sent["dup"], false, "resend of unstored {key:?}: {sent}"),
            }
            confirmed.insert(key.clone(), msgid);
        }
        for (_, client) in clients {
            client.close().await;
        }
        let stored = server.stored_messages(1, gid).await;
        let after = check_stored(&stored, &attempted, &confirmed);
        // Every attempted send is now stored exactly once.
        assert_eq!(after.len(), attempted.len());
    }
}

/// PostgreSQL down when herald starts: it listens and says so (liveness yes, readiness and
/// requests 503), retries with backoff without logging the password, and serves once
/// PostgreSQL is up, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_before_postgres_waits_for_it_and_then_serves() {
    let postgres = private_postgres().await;
    postgres.stop().await.expect("stop PostgreSQL");
    let url = postgres.url.replacen(
        "postgres://postgres@",
        "postgres://postgres:db-password-not-logged@",
        1,
    );
    let server = Server::spawn_until(url, Vec::new(), LISTENING).await;
    let health = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(readyz(&server).await, 503);
    let (status, body) = server
        .admin_post("/v1/admin/users", json!({"users": [{"uid": 1}]}))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (503, &json!("unavailable")),
        "{body}"
    );
    assert!(
        Client::connect(server.addr, "any-token").await.is_err(),
        "a WebSocket opened before storage was ready"
    );

    helpers::eventually("a retry is logged", WAIT, async || {
        let logs = server.logs();
        match logs.contains("cannot apply the migrations") {
            true => Ok(()),
            false => Err(logs),
        }
    })
    .await;
    postgres
        .start_again()
        .await
        .expect("start PostgreSQL again");
    helpers::eventually(
        "ready once PostgreSQL is up",
        WAIT * 2,
        async || match readyz(&server).await {
            200 => Ok(()),
            other => Err(format!("/readyz {other}")),
        },
    )
    .await;
    let gid = server.group(&[1, 2]).await;
    let mut ann = server.connect(1).await;
    let sent = ann.send_msg(gid, "c-1", json!({"text": "hi"})).await;
    assert_eq!(sent["type"], "sent", "{sent}");
    assert!(
        !server.logs().contains("db-password-not-logged"),
        "the database password was logged:\n{}",
        server.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_is_survived_by_the_same_session_without_losing_confirmed_sends() {
    let postgres = private_postgres().await;
    let server = Server::spawn(
        postgres.url.clone(),
        vec![("HERALD_DB_POOL".into(), "2".into())],
    )
    .await;
    let gid = server.group(&[1, 2]).await;
    let mut ann = server.connect(1).await;
    assert_eq!(readyz(&server).await, 200);
    let mut confirmed: HashMap<String, (u64, Value)> = HashMap::new();
    for i in 0..3 {
        let cmid = format!("before-{i}");
        let body = json!({"text": cmid});
        let sent = ann.send_msg(gid, &cmid, body.clone()).await;
        assert_eq!(sent["type"], "sent", "{sent}");
        confirmed.insert(cmid, (sent["msgid"].as_u64().unwrap(), body));
    }

    postgres.stop().await.expect("stop PostgreSQL");
    for i in 0..3 {
        let cmid = format!("down-{i}");
        let (reply, took) = timed_send(&mut ann, gid, &cmid, json!({"text": cmid})).await;
        assert_eq!(reply["type"], "error", "send with PostgreSQL down: {reply}");
        assert_eq!(reply["code"], "unavailable", "{reply}");
        assert!(took <= WAIT, "the error took {took:?}");
    }
    let pong = ann.request(json!({"type": "ping", "id": "p-down"})).await;
    assert_eq!(pong["type"], "pong", "{pong}");
    assert_eq!(readyz(&server).await, 503);
    let healthz = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status().as_u16(), 200);

    postgres
        .start_again()
        .await
        .expect("start PostgreSQL again");
    // The same session retries the same cmid until storage is back.
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = json!({"text": "after-0"});
    let sent = loop {
        let (reply, _) = timed_send(&mut ann, gid, "after-0", body.clone()).await;
        if reply["type"] == "sent" {
            break reply;
        }
        assert_eq!(reply["code"], "unavailable", "{reply}");
        assert!(
            Instant::now() < deadline,
            "sends still fail 30 s after PostgreSQL came back: {reply}; logs:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(sent["dup"], false, "{sent}");
    confirmed.insert("after-0".into(), (sent["msgid"].as_u64().unwrap(), body));
    for i in 1..3 {
        let cmid = format!("after-{i}");
        let body = json!({"text": cmid});
        let sent = ann.send_msg(gid, &cmid, body.clone()).await;
        assert_eq!(sent["type"], "sent", "{sent}");
        confirmed.insert(cmid, (sent["msgid"].as_u64().unwrap(), body));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while readyz(&server).await != 200 {
        assert!(Instant::now() < deadline, "/readyz not 200 after recovery");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pong = ann.request(json!({"type": "ping", "id": "p-up"})).await;
    assert_eq!(pong["type"], "pong", "{pong}");

    // Exactly what was confirmed is stored: the refused sends are not.
    let stored = server.stored_messages(2, gid).await;
    let msgids: Vec<u64> = stored
        .iter()
        .map(|m| m["msgid"].as_u64().unwrap())
        .collect();
    assert_eq!(msgids, (1..=confirmed.len() as u64).collect::<Vec<_>>());
    for message in &stored {
        let cmid = message["cmid"].as_str().unwrap();
        let (msgid, body) = confirmed
            .get(cmid)
            .unwrap_or_else(|| panic!("stored but never confirmed: {message}"));
        assert_eq!(message["msgid"], *msgid, "{message}");
        assert_eq!(&message["body"], body, "{message}");
        assert_eq!(message["from"], 1);
    }
    drop(ann);
    drop(server);
    drop(postgres);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_reading_is_cut_off_with_4008_while_the_group_keeps_going() {
    const COUNT: usize = 2000;
    let server = Server::start_with(&[("HERALD_OUTBOUND_QUEUE", "64")]).await;
    let gid = server.group(&[1, 2, 3]).await;
    // Ann's session never reads until the end.
    let mut ann = server.connect(1).await;
    let mut bob = server.connect(2).await;
    let bob_reads = tokio::spawn(async move {
        let msgs = bob.msgs(gid, COUNT).await;
        (bob, msgs)
    });

    let sender = open_split(&server, 3).await;
    let plan = SendPlan {
        gid,
        prefix: "big".into(),
        limit: Some(COUNT),
        window: 8,
        stop: Arc::new(AtomicBool::new(false)),
        confirmations: Arc::new(AtomicUsize::new(0)),
        body: |_, i| json!({"i": i, "pad": "x".repeat(8 * 1024)}),
    };
    let log = tokio::time::timeout(Duration::from_secs(50), run_sender(sender, plan))
        .await
        .expect("the sender is not held up by a consumer that does not read");
    assert!(log.errors.is_empty(), "error replies: {:?}", log.errors);
    assert_eq!(log.confirmed.len(), COUNT, "every send is confirmed");

    let (_bob, msgs) = bob_reads.await.unwrap();
    let msgids: Vec<u64> = msgs.iter().map(|m| m["msgid"].as_u64().unwrap()).collect();
    assert_eq!(msgids, (1..=COUNT as u64).collect::<Vec<_>>());
    // Each push is the message its `sent` reply named (pipelined sends of one session
    // have no promised order among themselves, so no order by cmid is asserted).
    let mut reordered = 0;
    for (n, msg) in msgs.iter().enumerate() {
        assert_eq!(msg["from"], 3);
        let cmid = msg["cmid"].as_str().expect("a cmid");
        assert_eq!(msg["msgid"], log.confirmed[cmid]["msgid"], "{cmid}");
        let i: usize = cmid.strip_prefix("big-").unwrap().parse().unwrap();
        assert_eq!(msg["body"]["i"], i);
        reordered += usize::from(i != n);
    }
    eprintln!("{reordered} of {COUNT} pipelined sends were stored out of their send order");

    let deadline = Instant::now() + WAIT;
    loop {
        let closed = helpers::metric(
            &server.metrics().await,
            "herald_slow_consumers_closed_total",
        );
        if closed >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no slow consumer was closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Ann's session: a prefix of the group's messages in order, then 4008 (or a drop).
    let mut seen = 0u64;
    let end = loop {
        match ann.next_frame(WAIT).await {
            Some(Ok(frame)) => {
                assert_eq!(frame["type"], "msg", "{frame}");
                seen += 1;
                assert_eq!(frame["msgid"], seen, "ann's frames out of order");
            }
            Some(Err(code)) => break code,
            None => panic!("ann's session neither closed nor delivered within {WAIT:?}"),
        }
    };
    assert!(
        matches!(end, Some(4008) | None),
        "ann's session ended with {end:?}"
    );
    assert!(
        (seen as usize) < COUNT,
        "the slow session got everything: it was never cut off"
    );
    eprintln!("slow session got {seen} frames, then {end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_get_dense_unique_msgids_delivered_in_order_to_every_session() {
    const SENDERS: u64 = 5;
    const EACH: usize = 100;
    const TOTAL: usize = SENDERS as usize * EACH;
    let server = Server::start().await;
    let gid = server.group(&[1, 2, 3, 4, 5, 6, 7, 8]).await;

    let mut observers = Vec::new();
    for uid in 6..=8 {
        let mut observer = server.connect(uid).await;
        observers.push(tokio::spawn(async move { observer.msgs(gid, TOTAL).await }));
    }
    let mut sessions = Vec::new();
    for uid in 1..=SENDERS {
        sessions.push((uid, server.connect(uid).await));
    }
    let mut senders = Vec::new();
    for (uid, mut client) in sessions {
        senders.push(tokio::spawn(async move {
            // One at a time: each send goes out once the previous one is confirmed.
            let mut sent = Vec::new();
            for i in 0..EACH {
                let cmid = format!("u{uid}-{i}");
                let body = json!({"uid": uid, "i": i});
                let reply = client.send_msg(gid, &cmid, body.clone()).await;
                assert_eq!(reply["type"], "sent", "{reply}");
                assert_eq!(reply["dup"], false, "{reply}");
                sent.push((cmid, reply["msgid"].as_u64().unwrap(), body));
            }
            // The sending session gets the whole group too.
            let pushed = client.msgs(gid, TOTAL).await;
            (uid, sent, pushed)
        }));
    }

    let mut by_msgid: HashMap<u64, (u64, String, Value)> = HashMap::new();
    let mut pushed_to_senders = Vec::new();
    for sender in senders {
        let (uid, sent, pushed) = sender.await.unwrap();
        let msgids: Vec<u64> = sent.iter().map(|(_, msgid, _)| *msgid).collect();
        assert!(
            msgids.windows(2).all(|w| w[0] < w[1]),
            "sender {uid}'s sequential sends got msgids out of order: {msgids:?}"
        );
        for (cmid, msgid, body) in sent {
            if let Some(other) = by_msgid.insert(msgid, (uid, cmid, body)) {
                panic!("msgid {msgid} confirmed twice (also to {other:?})");
            }
        }
        pushed_to_senders.push(pushed);
    }
    let mut all: Vec<u64> = by_msgid.keys().copied().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=TOTAL as u64).collect::<Vec<_>>());

    let mut received = Vec::new();
    for observer in observers {
        received.push(observer.await.unwrap());
    }
    received.extend(pushed_to_senders);
    for (n, msgs) in received.iter().enumerate() {
        let msgids: Vec<u64> = msgs.iter().map(|m| m["msgid"].as_u64().unwrap()).collect();
        assert_eq!(
            msgids,
            (1..=TOTAL as u64).collect::<Vec<_>>(),
            "session {n} did not get 1..={TOTAL} once each in order"
        );
        for msg in msgs {
            let (uid, cmid, body) = &by_msgid[&msg["msgid"].as_u64().unwrap()];
            assert_eq!(msg["from"], *uid, "{msg}");
            assert_eq!(msg["cmid"], cmid.as_str(), "{msg}");
            assert_eq!(&msg["body"], body, "{msg}");
        }
    }
}
