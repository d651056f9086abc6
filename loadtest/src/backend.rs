//! The server a scenario drives: a Herald, a cluster of Heralds, or the storage-free baseline.

use std::net::SocketAddr;

use anyhow::Result;

use crate::baseline::Broadcast;
use crate::cluster::Cluster;
use crate::target::{ProcessStats, Target};

pub enum Backend {
    Herald(Target),
    /// Provisioned through its first node: they share the database.
    Cluster(Cluster),
    Baseline(Broadcast),
}

enum Provisioner<'a> {
    Herald(&'a Target),
    Baseline(&'a Broadcast),
}

/// Any secret will do for the baseline: it reads tokens without checking them.
const BASELINE_SECRET: &[u8] = b"baseline";

impl Backend {
    /// Where sessions connect: a cluster's first node.
    pub fn addr(&self) -> SocketAddr {
        self.node_addrs()[0]
    }

    /// Every node's address, in order; one for a single server.
    pub fn node_addrs(&self) -> Vec<SocketAddr> {
        match self {
            Backend::Herald(target) => vec![target.addr],
            Backend::Cluster(cluster) => cluster.nodes().iter().map(|node| node.addr).collect(),
            Backend::Baseline(broadcast) => vec![broadcast.addr],
        }
    }

    pub fn name(&self) -> String {
        match self {
            Backend::Herald(target) => format!("Herald at {}", target.base_url),
            Backend::Cluster(cluster) => {
                let urls: Vec<&str> = cluster
                    .nodes()
                    .iter()
                    .map(|node| node.base_url.as_str())
                    .collect();
                format!("Herald cluster at {}", urls.join(", "))
            }
            Backend::Baseline(_) => "baseline broadcast server (no storage)".into(),
        }
    }

    /// Who takes users, groups and tokens: a cluster's first node, as its nodes share the
    /// database.
    fn provisioner(&self) -> Provisioner<'_> {
        match self {
            Backend::Herald(target) => Provisioner::Herald(target),
            Backend::Cluster(cluster) => Provisioner::Herald(&cluster.nodes()[0]),
            Backend::Baseline(broadcast) => Provisioner::Baseline(broadcast),
        }
    }

    pub async fn create_users(&self, uids: &[u64]) -> Result<()> {
        match self.provisioner() {
            Provisioner::Herald(target) => target.create_users(uids).await,
            Provisioner::Baseline(_) => Ok(()),
        }
    }

    pub async fn create_group(&self, gid: u64, members: &[u64]) -> Result<()> {
        match self.provisioner() {
            Provisioner::Herald(target) => target.create_group(gid, members).await,
            Provisioner::Baseline(broadcast) => {
                broadcast.create_group(gid, members);
                Ok(())
            }
        }
    }

    pub async fn tokens(&self, uids: &[u64]) -> Result<Vec<String>> {
        match self.provisioner() {
            Provisioner::Herald(target) => target.tokens(uids).await,
            Provisioner::Baseline(_) => uids
                .iter()
                .map(|uid| {
                    let claims = serde_json::json!({"sub": uid.to_string(), "exp": u32::MAX});
                    let key = jsonwebtoken::EncodingKey::from_secret(BASELINE_SECRET);
                    Ok(jsonwebtoken::encode(
                        &jsonwebtoken::Header::default(),
                        &claims,
                        &key,
                    )?)
                })
                .collect(),
        }
    }

    /// The server processes' memory and CPU (a cluster's added up), when they are separate
    /// processes.
    pub async fn stats(&self) -> Option<ProcessStats> {
        match self {
            Backend::Herald(target) => target.process_stats().await.ok(),
            Backend::Cluster(cluster) => cluster.stats().await,
            Backend::Baseline(_) => None,
        }
    }
}
