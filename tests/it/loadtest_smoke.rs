//! A small run of the load-test harness against a real server: a few hundred sessions for a
//! few seconds, completeness checked. The harness's figures are not asserted here (see
//! docs/benchmarks.md); that it runs, measures and finds nothing lost is.

use herald_loadtest::backend::Backend;
use herald_loadtest::baseline::Broadcast;
use herald_loadtest::cluster::Cluster;
use herald_loadtest::scenarios::fanout::{self, FanoutArgs};
use herald_loadtest::scenarios::faults::{self, FaultArgs, FaultReport};
use herald_loadtest::scenarios::reconnect::{self, ReconnectArgs};
use herald_loadtest::target::{Target, TargetArgs};

use crate::helpers::{postgres_url, Server, ADMIN_KEY, JWT_SECRET};

fn small_fanout() -> FanoutArgs {
    FanoutArgs {
        groups: 4,
        members: 50,
        senders: 2,
        rate: 100.0,
        window: None,
        duration_s: 2,
        warmup_s: 1,
        body_bytes: 32,
        ack_ms: 200,
        stalled_share: 0.0,
        nodes: 1,
    }
}

/// Every member got every message of its group once, with no error and no session dropped.
fn assert_nothing_lost(report: &herald_loadtest::report::Report) {
    assert_eq!(
        (
            report.lost,
            report.duplicates,
            report.errors,
            report.dropped
        ),
        (0, 0, 0, 0),
        "{report:?}"
    );
}

/// Each message stored in the measured window reaches its group's 50 members. Counts are of
/// the window, whose edges cut a few fan-outs in two (the whole run's completeness is `lost`).
fn assert_fans_out_to_50(report: &herald_loadtest::report::Report) {
    let expected = report.stored * 50;
    assert!(
        report.deliveries.abs_diff(expected) <= expected / 20,
        "{} deliveries for {} stored: {report:?}",
        report.deliveries,
        report.stored
    );
}

/// Settings for the harness to start the test build's Herald, on the suite's PostgreSQL or
/// (None) on one it starts.
fn started_herald(postgres_url: Option<String>) -> TargetArgs {
    TargetArgs {
        url: None,
        admin_key: None,
        jwt_secret: None,
        postgres_url,
        herald_bin: Some(env!("CARGO_BIN_EXE_herald").into()),
        server_env: vec![],
        webhook_delay_ms: None,
    }
}

fn assert_passed(report: &FaultReport) {
    assert!(
        report.passed(),
        "lost {}, failed checks {:#?}",
        report.lost,
        report.failed()
    );
}

async fn herald(server: &Server) -> Backend {
    let args = TargetArgs {
        url: Some(format!("http://{}", server.addr)),
        admin_key: Some(ADMIN_KEY.into()),
        jwt_secret: Some(JWT_SECRET.into()),
        postgres_url: None,
        herald_bin: None,
        server_env: vec![],
        webhook_delay_ms: None,
    };
    Backend::Herald(Target::open(&args).await.expect("reach the test server"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_fanout_run_delivers_every_message_to_every_member_once() {
    let server = Server::start().await;
    let outcome = fanout::run(&herald(&server).await, &small_fanout(), "smoke")
        .await
        .expect("the run completes");
    let report = outcome.report;
    assert_eq!(report.sessions, 200);
    assert_nothing_lost(&report);
    assert!(report.stored > 0, "{report:?}");
    assert_fans_out_to_50(&report);
    assert!(
        report.latency_ms.count > 0 && report.latency_ms.p50 > 0.0,
        "{report:?}"
    );
    assert!(
        report.server_rss_bytes > 0,
        "server stats come from /metrics: {report:?}"
    );
}

/// The same over two nodes and a nats-server the harness starts: the members off the
/// senders' node get every message across the bus, and latency is reported by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_fanout_over_two_nodes_reports_each_side_and_loses_nothing() {
    let target = started_herald(Some(postgres_url()));
    let cluster = Cluster::start(&target, 2).await.expect("start two nodes");
    let args = FanoutArgs {
        nodes: 2,
        ..small_fanout()
    };
    let report = fanout::run(&Backend::Cluster(cluster), &args, "smoke across nodes")
        .await
        .expect("the run completes")
        .report;
    assert_nothing_lost(&report);
    assert_fans_out_to_50(&report);
    let split = report.across_nodes.as_ref().expect("split by node");
    // Per group: 2 senders on the first node, 48 receivers dealt over both.
    assert_eq!(
        (
            split.nodes,
            split.same_node.sessions,
            split.cross_node.sessions
        ),
        (2, 4 * 26, 4 * 24)
    );
    for side in [&split.same_node, &split.cross_node] {
        assert!(
            side.expected > 0 && side.received == side.expected && side.lost == 0,
            "{split:?}"
        );
        assert!(side.latency_ms.count > 0, "{split:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_baseline_server_carries_the_same_workload() {
    let baseline = Backend::Baseline(Broadcast::start(1).expect("start the baseline"));
    let outcome = fanout::run(&baseline, &small_fanout(), "baseline")
        .await
        .expect("the run completes");
    let report = outcome.report;
    assert_eq!(
        (report.lost, report.duplicates, report.errors),
        (0, 0, 0),
        "{report:?}"
    );
    assert_fans_out_to_50(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_reconnect_storm_catches_every_session_up_by_pull() {
    let server = Server::start().await;
    let args = ReconnectArgs {
        sessions: 200,
        groups: 4,
        missed: 30,
    };
    let report = reconnect::run(&herald(&server).await, &args)
        .await
        .expect("the run completes");
    assert_eq!(
        (report.lost, report.duplicates, report.errors),
        (0, 0, 0),
        "{report:?}"
    );
    assert_eq!(report.stored, 4 * 30);
    // Each of the 200 sessions pulled the 30 messages its group got while it was away.
    assert_eq!(report.deliveries, 200 * 30, "{report:?}");
    assert!(report.catch_up_s.is_some_and(|s| s > 0.0), "{report:?}");
}

/// The fault scenario in small: Herald started before its (private) PostgreSQL, two kill -9
/// cycles, a 3 s PostgreSQL outage, a flood by 2 sessions and a SIGTERM, all under load;
/// `scripts/faults` runs the full one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_fault_run_loses_nothing_and_passes_every_check() {
    let target = started_herald(None);
    let args = FaultArgs {
        groups: 2,
        members: 5,
        senders: 1,
        rate: 60.0,
        body_bytes: 16,
        ack_ms: 100,
        pg_late_s: 1.0,
        kill_cycles: 2,
        load_s: 1.0,
        outage_s: 3.0,
        // Long enough for an ack flood to pass its budget's burst (2 s of refill) even on a
        // loaded machine, where a flooder writes only a few thousand frames a second.
        flood_s: 2.0,
        flooders: 2,
        nodes: 1,
        nats_down_s: 0.0,
        cut_s: 0.0,
    };
    let report = faults::run(&target, &args)
        .await
        .expect("the fault run completes");
    assert_passed(&report);
    let cycles: Vec<(&str, u64)> = report
        .faults
        .iter()
        .map(|row| (row.fault.as_str(), row.cycles))
        .collect();
    assert_eq!(
        cycles,
        [
            ("start before PostgreSQL", 1),
            ("kill -9 under load", 2),
            ("PostgreSQL stopped 3 s", 1),
            ("flood by 2 sessions", 1),
            ("SIGTERM under load", 1),
        ]
    );
    assert!(report.confirmed > 0 && report.unavailable > 0, "{report:?}");
    let flood = report.flood.as_ref().expect("the flood ran");
    assert!(
        flood.kinds.iter().all(|kind| kind.written > 0) && flood.flood_sent_latency_ms.count > 0,
        "{flood:?}"
    );
}

/// The cluster faults in small, over two nodes: the nats-server down 2 s, the first node cut
/// from NATS 2 s, the second killed -9, all under load; `faults --nodes N` runs larger ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_cluster_fault_run_loses_nothing_and_passes_every_check() {
    let target = started_herald(Some(postgres_url()));
    let args = FaultArgs {
        groups: 2,
        members: 5,
        senders: 1,
        rate: 40.0,
        body_bytes: 16,
        ack_ms: 100,
        load_s: 1.0,
        nodes: 2,
        nats_down_s: 2.0,
        cut_s: 2.0,
        // The single-node faults' settings, which a cluster run does not use.
        pg_late_s: 1.0,
        kill_cycles: 0,
        outage_s: 1.0,
        flood_s: 0.0,
        flooders: 0,
    };
    let report = faults::run(&target, &args)
        .await
        .expect("the cluster fault run completes");
    assert_passed(&report);
    let faults: Vec<&str> = report.faults.iter().map(|row| row.fault.as_str()).collect();
    assert_eq!(
        faults,
        [
            "nats-server down 2 s",
            "node0 cut from NATS 2 s",
            "node1 killed -9",
            "rolling restart"
        ]
    );
    let repaired = |row: &faults::FaultRow| row.cross_node_delay_ms.is_some_and(|d| d.count > 0);
    assert!(
        report.faults[..2].iter().all(repaired) && report.confirmed > 0,
        "{report:?}"
    );
}
