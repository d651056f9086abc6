//! Floods: one member writes one frame kind as fast as its socket takes it for a few
//! seconds — reconnecting whenever it is closed, as a client stuck in a loop would — while
//! another member of the group sends a message every 50 ms. Afterwards the node must be
//! ready, the flooder must have been limited or closed, every honest send must have been
//! answered `sent` within a second, and the server's memory must have stayed bounded.
//!
//! Every frame kind of docs/protocol.md is flooded twice: valid, and invalid. These are
//! liveness assertions (a second is 20 times the usual answer), not speed targets.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use herald_loadtest::kit::client::{next_text, End};
use herald_loadtest::kit::frames::Frame;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Client, Server};

/// How long the flood lasts.
const FLOOD_FOR: Duration = Duration::from_secs(3);
/// How often the honest member sends.
const HONEST_EVERY: Duration = Duration::from_millis(50);
/// The longest an honest send may wait for its `sent`, flood or not.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);
/// How much the server's resident memory may grow while it is flooded. Unbounded work per
/// frame grew it by more than a gigabyte in five seconds.
const RSS_GROWTH_AT_MOST: u64 = 64 << 20;
/// Frames written between flushes: the socket, not a reply, paces the flooder.
const FLOOD_BATCH: usize = 64;

/// The flooder (uid 1) and the honest member (uid 2) share a group; uid 3 has a group of
/// its own that the flooder is not in.
struct Scene {
    server: Server,
    gid: u64,
    other_gid: u64,
}

impl Scene {
    async fn new() -> Scene {
        // The defaults of a production node, which the suite otherwise relaxes.
        let server = Server::start_with(&[
            ("HERALD_SEND_RATE", "100"),
            ("HERALD_REQUEST_BUDGET", "1000"),
        ])
        .await;
        let gid = server.group(&[1, 2]).await;
        let other_gid = server.group(&[3]).await;
        // One message stored, so an ack of msgid 1 is valid.
        let mut flooder = server.connect(1).await;
        let sent = flooder.send_msg(gid, "first", json!("first")).await;
        assert_eq!(sent["msgid"], 1, "{sent}");
        flooder.close().await;
        Scene {
            server,
            gid,
            other_gid,
        }
    }
}

/// What the flooder saw.
#[derive(Debug, Default)]
struct Flooded {
    frames: u64,
    sessions: u64,
    /// Error frames by code.
    errors: BTreeMap<String, u64>,
    /// Closes by code (0: the connection ended without a close frame).
    closes: BTreeMap<u16, u64>,
    /// Upgrades refused, by HTTP status.
    refused: BTreeMap<u16, u64>,
}

/// Writes `frame(n)` for n = 0, 1, … as fast as the socket takes it until `FLOOD_FOR` is
/// over, reading every reply in a task of its own, and reconnects whenever it is closed.
async fn flood(server: &Server, frame: impl Fn(u64) -> String) -> Flooded {
    let token = server.token(1).await;
    let deadline = Instant::now() + FLOOD_FOR;
    let mut flooded = Flooded::default();
    let mut n = 0;
    while Instant::now() < deadline {
        let client = match Client::connect(server.addr, &token).await {
            Ok(client) => client,
            Err(status) => {
                *flooded.refused.entry(status).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        flooded.sessions += 1;
        let (mut sink, mut stream) = client.into_socket().split();
        let reader = tokio::spawn(async move {
            let mut errors = BTreeMap::<String, u64>::new();
            let close = loop {
                match next_text(&mut stream).await {
                    Ok(Some(text)) => {
                        let reply: Frame = serde_json::from_str(&text).expect("server frames");
                        if reply.kind == "error" {
                            let code = reply.code.unwrap_or_default().to_owned();
                            *errors.entry(code).or_default() += 1;
                        }
                    }
                    Ok(None) => {}
                    Err(End::Closed(code)) => break code.unwrap_or(0),
                    Err(End::Broken) => break 0,
                }
            };
            (errors, close)
        });
        'writing: while Instant::now() < deadline {
            for _ in 0..FLOOD_BATCH {
                n += 1;
                if sink.feed(Message::text(frame(n))).await.is_err() {
                    break 'writing;
                }
            }
            if sink.flush().await.is_err() {
                break;
            }
            flooded.frames += FLOOD_BATCH as u64;
        }
        let _ = sink.close().await;
        let (errors, close) = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("the flooder's session ends once it closed its side")
            .expect("the reader does not panic");
        for (code, count) in errors {
            *flooded.errors.entry(code).or_default() += count;
        }
        *flooded.closes.entry(close).or_default() += 1;
    }
    flooded
}

/// The honest member's sends until `stop`: the time each took to be answered `sent`.
async fn send_steadily(
    server: &Server,
    gid: u64,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<Duration> {
    let mut honest = server.connect(2).await;
    let mut took = Vec::new();
    let mut ticks = tokio::time::interval(HONEST_EVERY);
    for n in 0.. {
        ticks.tick().await;
        if *stop.borrow() {
            break;
        }
        let started = Instant::now();
        let sent = honest.send_msg(gid, &format!("honest-{n}"), json!(n)).await;
        assert_eq!(sent["type"], "sent", "honest send {n}: {sent}");
        took.push(started.elapsed());
    }
    took
}

/// Floods `frame` and checks that the node came out of it unharmed; returns what the
/// flooder saw for the caller's own checks.
async fn survives(scene: &Scene, frame: impl Fn(u64) -> String) -> Flooded {
    let server = &scene.server;
    let rss_before = server.rss_bytes();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let honest = send_steadily(server, scene.gid, stopped);
    let flooding = async {
        let flooded = flood(server, frame).await;
        stop.send(true).expect("the honest sender listens");
        flooded
    };
    let sampling = async {
        let mut peak = 0;
        while !*stop.borrow() {
            peak = peak.max(server.rss_bytes());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        peak
    };
    let (took, flooded, rss_peak) = tokio::join!(honest, flooding, sampling);

    let (status, _) = crate::helpers::respond(server.http.get(server.url("/readyz"))).await;
    assert_eq!(
        status, 200,
        "the node is ready after the flood: {flooded:?}"
    );
    let slowest = took.iter().max().copied().unwrap_or_default();
    assert!(
        took.len() >= 20,
        "the honest member kept sending: {} sends",
        took.len()
    );
    assert!(
        slowest <= ANSWER_WITHIN,
        "every honest send answered within {ANSWER_WITHIN:?}: the slowest took {slowest:?} \
         ({} sends); flooder: {flooded:?}",
        took.len()
    );
    let limited = flooded.errors.get("rate_limited").copied().unwrap_or(0);
    let closed = flooded.closes.get(&1008).copied().unwrap_or(0);
    assert!(
        limited + closed > 0,
        "the flooder was limited or closed: {flooded:?}"
    );
    assert!(
        rss_peak <= rss_before + RSS_GROWTH_AT_MOST,
        "memory stayed bounded: {rss_before} bytes before, {rss_peak} at the peak"
    );
    flooded
}

#[tokio::test]
async fn a_ping_flood_is_limited_and_harms_nobody() {
    let scene = Scene::new().await;
    let flooded = survives(&scene, |n| format!(r#"{{"type":"ping","id":{n}}}"#)).await;
    assert!(flooded.errors.contains_key("rate_limited"), "{flooded:?}");
}

#[tokio::test]
async fn a_flood_of_pings_with_a_bad_id_is_closed_as_bad_frames() {
    let scene = Scene::new().await;
    let flooded = survives(&scene, |_| r#"{"type":"ping","id":{}}"#.to_owned()).await;
    assert!(flooded.closes.contains_key(&1008), "{flooded:?}");
}

#[tokio::test]
async fn a_send_flood_is_limited_and_harms_nobody() {
    let scene = Scene::new().await;
    let gid = scene.gid;
    let flooded = survives(&scene, |n| {
        format!(r#"{{"type":"send","id":{n},"gid":{gid},"cmid":"flood-{n}","body":{n}}}"#)
    })
    .await;
    assert!(flooded.errors.contains_key("rate_limited"), "{flooded:?}");
}

#[tokio::test]
async fn a_typing_flood_is_limited_and_harms_nobody() {
    let scene = Scene::new().await;
    let gid = scene.gid;
    let flooded = survives(&scene, |_| {
        format!(r#"{{"type":"signal","gid":{gid},"kind":"typing"}}"#)
    })
    .await;
    assert!(flooded.errors.contains_key("rate_limited"), "{flooded:?}");
}

#[tokio::test]
async fn a_flood_of_sends_to_a_group_not_joined_is_closed_as_bad_frames() {
    let scene = Scene::new().await;
    let gid = scene.other_gid;
    let flooded = survives(&scene, |n| {
        format!(r#"{{"type":"send","id":{n},"gid":{gid},"cmid":"flood-{n}","body":{n}}}"#)
    })
    .await;
    assert!(flooded.errors.contains_key("forbidden"), "{flooded:?}");
    assert!(flooded.closes.contains_key(&1008), "{flooded:?}");
}

#[tokio::test]
async fn a_flood_of_valid_acks_is_coalesced_and_limited() {
    let scene = Scene::new().await;
    let gid = scene.gid;
    let flooded = survives(&scene, |_| {
        format!(r#"{{"type":"ack","gid":{gid},"msgid":1}}"#)
    })
    .await;
    assert!(flooded.errors.contains_key("rate_limited"), "{flooded:?}");
    // However many came, the ack counted once, and is written.
    let query = format!("SELECT last_ack_msgid FROM group_members WHERE gid = {gid} AND uid = 1");
    let url = scene.server.database_url.clone();
    crate::helpers::eventually("the ack written", Duration::from_secs(5), async || {
        let acked = crate::helpers::sql(&url, &query).await[0].get::<_, i64>(0);
        if acked == 1 {
            Ok(())
        } else {
            Err(format!("last_ack_msgid {acked}"))
        }
    })
    .await;
}

#[tokio::test]
async fn a_flood_of_acks_above_the_newest_message_is_closed_as_bad_frames() {
    let scene = Scene::new().await;
    let gid = scene.gid;
    let flooded = survives(&scene, |_| {
        format!(r#"{{"type":"ack","gid":{gid},"msgid":9007199254740991}}"#)
    })
    .await;
    assert!(flooded.errors.contains_key("bad_request"), "{flooded:?}");
    assert!(flooded.closes.contains_key(&1008), "{flooded:?}");
}

#[tokio::test]
async fn a_flood_of_pulls_of_1000_is_limited_and_harms_nobody() {
    let scene = Scene::new().await;
    let gid = scene.gid;
    let flooded = survives(&scene, |n| {
        format!(r#"{{"type":"pull","id":{n},"gid":{gid},"after":0,"limit":1000}}"#)
    })
    .await;
    assert!(flooded.errors.contains_key("rate_limited"), "{flooded:?}");
}

#[tokio::test]
async fn a_flood_of_pulls_of_a_group_not_joined_is_closed() {
    let scene = Scene::new().await;
    let gid = scene.other_gid;
    let flooded = survives(&scene, |n| {
        format!(r#"{{"type":"pull","id":{n},"gid":{gid},"limit":1000}}"#)
    })
    .await;
    // The budget refuses most of them before storage has said `forbidden` to the first.
    assert!(flooded.closes.contains_key(&1008), "{flooded:?}");
}

#[tokio::test]
async fn a_flood_of_full_syncs_is_limited_and_harms_nobody() {
    let scene = Scene::new().await;
    let flooded = survives(&scene, |n| format!(r#"{{"type":"sync","id":{n}}}"#)).await;
    assert!(flooded.errors.contains_key("rate_limited"), "{flooded:?}");
}

#[tokio::test]
async fn a_flood_of_malformed_syncs_is_closed_as_bad_frames() {
    let scene = Scene::new().await;
    let flooded = survives(&scene, |n| {
        format!(r#"{{"type":"sync","id":{n},"group_list":{{"nope":1}}}}"#)
    })
    .await;
    assert!(flooded.errors.contains_key("bad_request"), "{flooded:?}");
    assert!(flooded.closes.contains_key(&1008), "{flooded:?}");
}

/// The user API has the same budget, per user: a flood of requests is answered 429 and
/// harms no other user.
#[tokio::test]
async fn an_http_flood_by_one_user_is_answered_429_and_other_users_are_served() {
    let scene = Scene::new().await;
    let server = &scene.server;
    let token = server.token(1).await;
    let url = server.url(&format!("/v1/groups/{}/messages?limit=1000", scene.gid));
    let deadline = Instant::now() + FLOOD_FOR;
    let mut statuses = BTreeMap::<u16, u64>::new();
    while Instant::now() < deadline {
        let requests = (0..16).map(|_| server.http.get(&url).bearer_auth(&token).send());
        for response in futures_util::future::join_all(requests).await {
            let status = response.expect("the server answers").status().as_u16();
            *statuses.entry(status).or_default() += 1;
        }
    }
    assert!(statuses.get(&429).copied().unwrap_or(0) > 0, "{statuses:?}");
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        vec![200, 429],
        "{statuses:?}"
    );
    // Another user's budget is untouched.
    let (status, _) = server
        .user(2, reqwest::Method::GET, "/v1/me/groups", None)
        .await;
    assert_eq!(status, 200);
    let limited = crate::helpers::metric(
        &server.metrics().await,
        r#"herald_requests_limited_total{kind="pull",limit="budget"}"#,
    );
    assert!(limited > 0.0, "counted by kind: {limited}");
}
