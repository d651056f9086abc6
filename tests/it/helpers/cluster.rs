//! A cluster under test: a real nats-server and several `herald` nodes on one database.

use std::collections::HashMap;

use herald_loadtest::kit::nats::{NatsServer, Relay};

use super::database::migrated_database;
use super::server::Server;

/// Nodes on one database, joined over one nats-server; killed when dropped.
pub struct Cluster {
    pub nats: NatsServer,
    pub nodes: Vec<Server>,
    /// The relays some nodes reach NATS through, by node, to cut them off.
    pub relays: HashMap<usize, Relay>,
}

impl Cluster {
    /// `count` nodes named `node-0`…; those listed in `relayed` reach NATS through a relay
    /// of their own. Position checks and presence run fast, so that repairs and departures
    /// show within a test's patience.
    pub async fn start_with(count: usize, relayed: &[usize]) -> Cluster {
        let nats = NatsServer::start().await.expect("start nats-server");
        let mut urls = Vec::with_capacity(count);
        let mut relays = HashMap::new();
        for n in 0..count {
            if relayed.contains(&n) {
                let relay = Relay::start(nats.addr()).await.expect("start a relay");
                urls.push(relay.url());
                relays.insert(n, relay);
            } else {
                urls.push(nats.url());
            }
        }
        let envs = urls
            .into_iter()
            .map(|url| vec![("HERALD_NATS_URL".to_owned(), url)])
            .collect();
        let mut cluster = Cluster::join(nats, envs).await;
        cluster.relays = relays;
        cluster
    }

    /// `count` nodes on `nats` with `env` (which says how to reach it: `HERALD_NATS_URL`,
    /// TLS or credentials settings).
    pub async fn start_on(nats: NatsServer, count: usize, env: &[(&str, &str)]) -> Cluster {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Cluster::join(nats, vec![env; count]).await
    }

    /// A node per entry of `envs`, named `node-0`…, on a new database, each with its
    /// entry's settings besides the cluster's.
    async fn join(nats: NatsServer, envs: Vec<Vec<(String, String)>>) -> Cluster {
        let database_url = migrated_database().await;
        let mut nodes = Vec::with_capacity(envs.len());
        for (n, env) in envs.into_iter().enumerate() {
            let node_env: Vec<(String, String)> = [
                ("HERALD_NODE_ID", format!("node-{n}")),
                ("HERALD_POSITION_CHECK_MS", "200".into()),
                ("HERALD_PRESENCE_DEBOUNCE_MS", "300".into()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .chain(env)
            .collect();
            nodes.push(Server::spawn(database_url.clone(), node_env).await);
        }
        Cluster {
            nats,
            nodes,
            relays: HashMap::new(),
        }
    }

    /// `count` nodes on the nats-server itself.
    pub async fn start(count: usize) -> Cluster {
        Cluster::start_with(count, &[]).await
    }
}
