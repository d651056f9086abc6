//! Joining a cluster through a secured nats-server: over TLS (`tls://` and
//! HERALD_NATS_TLS_CA), with a client certificate, and with a user and password or a token
//! in the URL. A node that trusts the wrong CA, lacks the certificate or gives the wrong
//! password or token never joins, and goes on serving alone from PostgreSQL.

use std::time::Duration;

use herald_loadtest::kit::nats::{NatsServer, TlsFiles};
use serde_json::json;

use crate::helpers::{eventually, metric, Cluster, Server, WAIT};

/// How long a node that must not join is watched: several of the client's reconnect
/// attempts.
const KEPT_OUT_FOR: Duration = Duration::from_secs(3);

/// Waits until the node says it is connected to NATS.
async fn joins(node: &Server, who: &str) {
    eventually(
        &format!("{who} connected to NATS"),
        WAIT,
        async || match metric(&node.metrics().await, "herald_nats_connected") {
            1.0 => Ok(()),
            other => Err(format!(
                "herald_nats_connected {other}; the node said: {}",
                nats_lines(node)
            )),
        },
    )
    .await;
}

/// Checks the node stays off NATS the whole of `KEPT_OUT_FOR`.
async fn kept_out(node: &Server, who: &str) {
    let until = tokio::time::Instant::now() + KEPT_OUT_FOR;
    while tokio::time::Instant::now() < until {
        let connected = metric(&node.metrics().await, "herald_nats_connected");
        assert_eq!(
            connected,
            0.0,
            "{who} must not connect to NATS; it said: {}",
            nats_lines(node)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks a node serves alone: a send is stored (`sent`) and reaches another member on it.
async fn serves_alone(node: &Server) {
    let gid = node.group(&[1, 2]).await;
    let mut ann = node.connect(1).await;
    let mut bob = node.connect(2).await;
    let reply = ann.send_msg(gid, "alone", json!("still here")).await;
    assert_eq!(reply["type"], "sent", "{reply}");
    assert_eq!(bob.msgs(gid, 1).await[0]["body"], "still here");
    assert_eq!(node.stored_messages(2, gid).await.len(), 1);
}

/// What the node logged about NATS, for a failure's message.
fn nats_lines(node: &Server) -> String {
    let logs = node.logs();
    let lines: Vec<&str> = logs.lines().filter(|line| line.contains("NATS")).collect();
    lines.join("\n")
}

fn path(file: &std::path::Path) -> String {
    file.display().to_string()
}

#[tokio::test]
async fn nodes_over_tls_deliver_to_each_other_over_the_bus() {
    let (nats, tls) = NatsServer::start_tls().await.expect("start nats-server");
    let url = nats.url();
    assert!(url.starts_with("tls://"), "{url}");
    let cluster = Cluster::start_on(
        nats,
        2,
        &[
            ("HERALD_NATS_URL", &url),
            ("HERALD_NATS_TLS_CA", &path(&tls.ca)),
        ],
    )
    .await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    joins(a, "node 0").await;
    joins(b, "node 1").await;

    let gid = a.group(&[1, 2]).await;
    let mut ann = a.connect(1).await;
    let mut bob = b.connect(2).await;
    let reply = ann
        .send_msg(gid, "over-tls", json!("hello, securely"))
        .await;
    assert_eq!(reply["type"], "sent", "{reply}");
    assert_eq!(bob.msgs(gid, 1).await[0]["body"], "hello, securely");

    // It came over the bus, not only by repair from PostgreSQL.
    let published = metric(
        &a.metrics().await,
        "herald_bus_published_total{kind=\"messages\"}",
    );
    assert!(published >= 1.0, "node 0 published its commit over TLS");
    let received = metric(
        &b.metrics().await,
        "herald_bus_received_total{kind=\"messages\"}",
    );
    assert!(received >= 1.0, "node 1 heard it over TLS");
}

#[tokio::test]
async fn a_node_trusting_another_ca_never_joins_and_serves_alone() {
    let (nats, _tls) = NatsServer::start_tls().await.expect("start nats-server");
    let stranger = TlsFiles::generate().expect("another CA");
    let node = Server::start_with(&[
        ("HERALD_NATS_URL", &nats.url()),
        ("HERALD_NATS_TLS_CA", &path(&stranger.ca)),
    ])
    .await;
    kept_out(&node, "a node trusting another CA").await;
    serves_alone(&node).await;
}

#[tokio::test]
async fn with_client_certificates_only_a_node_presenting_one_joins() {
    let (nats, tls) = NatsServer::start_mutual_tls()
        .await
        .expect("start nats-server");
    let (url, ca) = (nats.url(), path(&tls.ca));
    let without =
        Server::start_with(&[("HERALD_NATS_URL", &url), ("HERALD_NATS_TLS_CA", &ca)]).await;
    let cluster = Cluster::start_on(
        nats,
        1,
        &[
            ("HERALD_NATS_URL", &url),
            ("HERALD_NATS_TLS_CA", &ca),
            ("HERALD_NATS_TLS_CERT", &path(&tls.client_cert)),
            ("HERALD_NATS_TLS_KEY", &path(&tls.client_key)),
        ],
    )
    .await;
    joins(&cluster.nodes[0], "a node with a client certificate").await;
    kept_out(&without, "a node without a client certificate").await;
    serves_alone(&without).await;
}

#[tokio::test]
async fn with_a_password_only_a_node_giving_the_right_one_joins() {
    // Percent-encoded in the URL, as a password with such characters must be.
    let nats = NatsServer::start_with_user("herald", "s3cr@t/")
        .await
        .expect("start nats-server");
    let at = nats.addr();
    let wrong =
        Server::start_with(&[("HERALD_NATS_URL", &format!("nats://herald:guess@{at}"))]).await;
    let cluster = Cluster::start_on(
        nats,
        1,
        &[(
            "HERALD_NATS_URL",
            &format!("nats://herald:s3cr%40t%2F@{at}"),
        )],
    )
    .await;
    joins(&cluster.nodes[0], "a node with the password").await;
    kept_out(&wrong, "a node with a wrong password").await;
    serves_alone(&wrong).await;
}

#[tokio::test]
async fn with_a_token_only_a_node_giving_the_right_one_joins() {
    let nats = NatsServer::start_with_token("t0ken")
        .await
        .expect("start nats-server");
    let at = nats.addr();
    let wrong = Server::start_with(&[("HERALD_NATS_URL", &format!("nats://guess@{at}"))]).await;
    let cluster = Cluster::start_on(
        nats,
        1,
        &[("HERALD_NATS_URL", &format!("nats://t0ken@{at}"))],
    )
    .await;
    joins(&cluster.nodes[0], "a node with the token").await;
    kept_out(&wrong, "a node with a wrong token").await;
}
