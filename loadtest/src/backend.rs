//! The server a scenario drives: a Herald, or the storage-free baseline.

use std::net::SocketAddr;

use anyhow::Result;

use crate::baseline::Broadcast;
use crate::target::{ProcessStats, Target};

pub enum Backend {
    Herald(Target),
    Baseline(Broadcast),
}

/// Any secret will do for the baseline: it reads tokens without checking them.
const BASELINE_SECRET: &[u8] = b"baseline";

impl Backend {
    pub fn addr(&self) -> SocketAddr {
        match self {
            Backend::Herald(target) => target.addr,
            Backend::Baseline(broadcast) => broadcast.addr,
        }
    }

    pub fn name(&self) -> String {
        match self {
            Backend::Herald(target) => format!("Herald at {}", target.base_url),
            Backend::Baseline(_) => "baseline broadcast server (no storage)".into(),
        }
    }

    pub async fn create_users(&self, uids: &[u64]) -> Result<()> {
        match self {
            Backend::Herald(target) => target.create_users(uids).await,
            Backend::Baseline(_) => Ok(()),
        }
    }

    pub async fn create_group(&self, gid: u64, members: &[u64]) -> Result<()> {
        match self {
            Backend::Herald(target) => target.create_group(gid, members).await,
            Backend::Baseline(broadcast) => {
                broadcast.create_group(gid, members);
                Ok(())
            }
        }
    }

    pub async fn tokens(&self, uids: &[u64]) -> Result<Vec<String>> {
        match self {
            Backend::Herald(target) => target.tokens(uids).await,
            Backend::Baseline(_) => uids
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

    /// The server process's memory and CPU, when it is a separate process.
    pub async fn stats(&self) -> Option<ProcessStats> {
        match self {
            Backend::Herald(target) => target.process_stats().await.ok(),
            Backend::Baseline(_) => None,
        }
    }
}
