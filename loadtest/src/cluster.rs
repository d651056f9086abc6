//! Several Herald nodes this harness starts on one database, joined through a nats-server of
//! their own: the cluster a fan-out spreads its sessions over.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::kit::nats::NatsServer;
use crate::target::{ProcessStats, RunDatabase, Target, TargetArgs};

/// Longest wait for every node to be on NATS and to hear every other node.
const JOIN_WITHIN: Duration = Duration::from_secs(30);

/// Fields drop in order: the nodes stop (telling the others they leave) while NATS and the
/// database are still there.
pub struct Cluster {
    nodes: Vec<Target>,
    _nats: NatsServer,
    _database: RunDatabase,
}

impl Cluster {
    /// Starts `nodes` Heralds (`node0`, `node1`, …) on a fresh database and a fresh
    /// nats-server; returns once each is on NATS and hears all the others.
    pub async fn start(args: &TargetArgs, nodes: usize) -> Result<Cluster> {
        if args.url.is_some() {
            bail!("--nodes starts a cluster of its own: --url does not apply");
        }
        let database = RunDatabase::create(args)?;
        let nats = NatsServer::start().await?;
        let mut started = Vec::with_capacity(nodes);
        // One after the other: the first migrates the fresh database, the rest find it done.
        for n in 0..nodes {
            let env = vec![
                ("HERALD_NATS_URL".to_owned(), nats.url()),
                ("HERALD_NODE_ID".to_owned(), format!("node{n}")),
            ];
            started.push(Target::serve(args, &database.url, env).await?);
        }
        let cluster = Cluster {
            nodes: started,
            _nats: nats,
            _database: database,
        };
        cluster.wait_joined().await?;
        Ok(cluster)
    }

    /// Waits until every node is connected to NATS and counts the others as live (they beat
    /// every second): before, a node would serve its sessions alone.
    async fn wait_joined(&self) -> Result<()> {
        let others = (self.nodes.len() - 1) as f64;
        let deadline = Instant::now() + JOIN_WITHIN;
        loop {
            let mut joined = true;
            for node in &self.nodes {
                let metrics = node.scrape().await?;
                joined &= metrics.value("herald_nats_connected") == 1.0
                    && metrics.value("herald_cluster_nodes") >= others;
            }
            if joined {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the nodes did not all hear each other over NATS within {JOIN_WITHIN:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The nodes, in start order; the first is where provisioning and senders go.
    pub fn nodes(&self) -> &[Target] {
        &self.nodes
    }

    /// All nodes' memory and CPU together.
    pub async fn stats(&self) -> Option<ProcessStats> {
        let mut samples = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            samples.push(node.process_stats().await.ok()?);
        }
        ProcessStats::total(&samples)
    }
}
