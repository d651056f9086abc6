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
        let database_url = migrated_database().await;
        let mut nodes = Vec::with_capacity(count);
        let mut relays = HashMap::new();
        for n in 0..count {
            let url = if relayed.contains(&n) {
                let relay = Relay::start(nats.addr()).await.expect("start a relay");
                let url = relay.url();
                relays.insert(n, relay);
                url
            } else {
                nats.url()
            };
            let node_env: Vec<(String, String)> = [
                ("HERALD_NATS_URL", url),
                ("HERALD_NODE_ID", format!("node-{n}")),
                ("HERALD_POSITION_CHECK_MS", "200".into()),
                ("HERALD_PRESENCE_DEBOUNCE_MS", "300".into()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            nodes.push(Server::spawn(database_url.clone(), node_env).await);
        }
        Cluster {
            nats,
            nodes,
            relays,
        }
    }

    /// `count` nodes on the nats-server itself.
    pub async fn start(count: usize) -> Cluster {
        Cluster::start_with(count, &[]).await
    }
}
