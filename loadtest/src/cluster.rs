//! Several Herald nodes this harness starts on one database, joined through a nats-server of
//! their own: the cluster a fan-out spreads its sessions over, or one built to be broken
//! (the cluster faults): nodes that restart where their clients left them, and a first node
//! that reaches NATS through a relay that can cut it off.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::kit::nats::{NatsServer, Relay};
use crate::target::{ProcessStats, RunDatabase, Target, TargetArgs};

/// Longest wait for every node to be on NATS and to hear every other node.
const JOIN_WITHIN: Duration = Duration::from_secs(30);
/// Longest wait for a node built to be broken to serve after it listens.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Fields drop in order: the nodes stop (telling the others they leave) while NATS and the
/// database are still there.
pub struct Cluster {
    nodes: Vec<Target>,
    /// Between the first node and NATS, in a cluster built to be broken.
    relay: Option<Relay>,
    nats: NatsServer,
    _database: RunDatabase,
}

/// How the nodes of a cluster built to be broken are started besides their NATS settings.
pub struct Breakable<'a> {
    pub env: &'a [(&'a str, &'a str)],
    /// Where each node logs, as `node<n>.log`.
    pub logs: &'a Path,
}

impl Cluster {
    /// Starts `nodes` Heralds (`node0`, `node1`, …) on a fresh database and a fresh
    /// nats-server; returns once each is on NATS and hears all the others.
    pub async fn start(args: &TargetArgs, nodes: usize) -> Result<Cluster> {
        Cluster::assemble(args, nodes, None).await
    }

    /// Like [`Cluster::start`], but each node at a loopback port of its own that restarts
    /// keep, with `breakable.env` and a log file; and the first node on NATS through a
    /// [`Relay`] ([`Cluster::relay`]).
    pub async fn start_breakable(
        args: &TargetArgs,
        nodes: usize,
        breakable: &Breakable<'_>,
    ) -> Result<Cluster> {
        Cluster::assemble(args, nodes, Some(breakable)).await
    }

    async fn assemble(
        args: &TargetArgs,
        nodes: usize,
        breakable: Option<&Breakable<'_>>,
    ) -> Result<Cluster> {
        if args.url.is_some() {
            bail!("--nodes starts a cluster of its own: --url does not apply");
        }
        let database = RunDatabase::create(args)?;
        let nats = NatsServer::start().await?;
        let relay = match breakable {
            Some(_) => Some(Relay::start(nats.addr()).await?),
            None => None,
        };
        let mut started = Vec::with_capacity(nodes);
        // One after the other: the first migrates the fresh database, the rest find it done.
        for n in 0..nodes {
            let nats_url = match (&relay, n) {
                (Some(relay), 0) => relay.url(),
                _ => nats.url(),
            };
            let node_id = format!("node{n}");
            let node = match breakable {
                None => {
                    let env = vec![
                        ("HERALD_NATS_URL".to_owned(), nats_url),
                        ("HERALD_NODE_ID".to_owned(), node_id),
                    ];
                    Target::serve(args, &database.url, env).await?
                }
                Some(breakable) => {
                    let mut env = vec![
                        ("HERALD_NATS_URL", nats_url.as_str()),
                        ("HERALD_NODE_ID", node_id.as_str()),
                    ];
                    env.extend_from_slice(breakable.env);
                    let log = breakable.logs.join(format!("{node_id}.log"));
                    let mut node = Target::launch(args, &database.url, &env, &log).await?;
                    node.wait_ready(READY_WITHIN).await?;
                    node
                }
            };
            started.push(node);
        }
        let cluster = Cluster {
            nodes: started,
            relay,
            nats,
            _database: database,
        };
        cluster.wait_joined().await?;
        Ok(cluster)
    }

    /// Waits until every node is connected to NATS and counts the others as live (they beat
    /// every second): before, a node would serve its sessions alone.
    pub async fn wait_joined(&self) -> Result<()> {
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

    pub fn nodes_mut(&mut self) -> &mut [Target] {
        &mut self.nodes
    }

    pub fn nats_mut(&mut self) -> &mut NatsServer {
        &mut self.nats
    }

    /// The relay between the first node and NATS, in a cluster built to be broken.
    pub fn relay(&self) -> Option<&Relay> {
        self.relay.as_ref()
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
