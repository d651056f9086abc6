//! PostgreSQL through the project's `scripts/pg.sh`: its shared local cluster, or a private
//! one that a scenario or a test may stop and start under load.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::launcher::free_port;

/// The repository root, for `scripts/pg.sh`.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("loadtest/ sits in the repository")
        .to_path_buf()
}

/// A folder for files of the harness or the tests under the project's `.herald/` (ignored
/// by git).
pub fn work_dir(name: &str) -> PathBuf {
    repo_root().join(".herald").join(name)
}

/// `scripts/pg.sh ARGS…`; returns what it printed (a URL for `start`).
fn pg_sh(args: &[&str]) -> Result<String> {
    let output = Command::new(repo_root().join("scripts/pg.sh"))
        .args(args)
        .output()
        .context("running scripts/pg.sh")?;
    if !output.status.success() {
        bail!(
            "scripts/pg.sh {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// Starts the project's local PostgreSQL if it is not running; returns the URL of its
/// `herald` database.
pub fn project_postgres() -> Result<String> {
    pg_sh(&["start"]).context("starting the local PostgreSQL")
}

/// A PostgreSQL cluster of its own, made by `scripts/pg.sh` in a folder on a free loopback
/// port, so it can be stopped and started under load without touching the project's shared
/// one. Stopped and removed on drop.
pub struct PrivatePostgres {
    dir: PathBuf,
    port: u16,
    /// The URL of its `herald` database.
    pub url: String,
}

impl PrivatePostgres {
    /// Creates and starts a cluster in `dir`.
    pub async fn start(dir: PathBuf) -> Result<PrivatePostgres> {
        let mut cluster = PrivatePostgres {
            dir,
            port: free_port()?,
            url: String::new(),
        };
        // The guard exists before the cluster does: a failed start is cleaned up too.
        cluster.url = cluster.pg_sh("start").await?;
        Ok(cluster)
    }

    /// Stops it (fast shutdown: open connections are cut).
    pub async fn stop(&self) -> Result<()> {
        self.pg_sh("stop").await.map(drop)
    }

    /// Starts it again; returns once it accepts connections.
    pub async fn start_again(&self) -> Result<()> {
        self.pg_sh("start").await.map(drop)
    }

    /// Runs one query with psql; returns the rows, each as its `|`-separated fields.
    pub async fn query(&self, sql: &str) -> Result<Vec<Vec<String>>> {
        let (url, sql) = (self.url.clone(), sql.to_owned());
        let output = tokio::task::spawn_blocking(move || {
            Command::new("psql")
                .args([&url, "-v", "ON_ERROR_STOP=1", "-tAc", &sql])
                .output()
        })
        .await?
        .context("running psql")?;
        if !output.status.success() {
            bail!(
                "psql failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8(output.stdout)?
            .lines()
            .filter(|line| !line.is_empty())
            .map(|line| line.split('|').map(str::to_owned).collect())
            .collect())
    }

    /// `scripts/pg.sh <command> DIR PORT`, off the async threads.
    async fn pg_sh(&self, command: &'static str) -> Result<String> {
        let dir = self.dir.to_str().context("a UTF-8 folder name")?.to_owned();
        let port = self.port.to_string();
        tokio::task::spawn_blocking(move || pg_sh(&[command, &dir, &port])).await?
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.to_str() {
            let _ = pg_sh(&["stop", dir]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
