//! The Herald under test: one this harness starts on the project's local PostgreSQL, or one
//! already running. Either way it is reached by URL and provisioned through the admin API.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// How to reach a Herald.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// Base URL of a running Herald; without it the harness starts one itself.
    #[arg(long)]
    pub url: Option<String>,
    /// Admin key of the running Herald (with --url).
    #[arg(long, env = "HERALD_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// JWT secret of the running Herald: tokens are then signed here instead of asked for
    /// one by one through the admin API.
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// The herald binary to start (default: beside this one).
    #[arg(long)]
    pub herald_bin: Option<PathBuf>,
    /// Extra settings for a started Herald, as NAME=VALUE.
    #[arg(long = "server-env", value_parser = parse_env)]
    pub server_env: Vec<(String, String)>,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))
}

/// A Herald this harness started; stopped (SIGTERM) and its database dropped on drop.
struct Spawned {
    child: Child,
    admin_url: String,
    database: String,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database),
        );
    }
}

/// A reachable Herald with its admin credentials.
pub struct Target {
    pub addr: SocketAddr,
    pub base_url: String,
    admin_key: String,
    jwt_secret: Option<String>,
    http: reqwest::Client,
    spawned: Option<Spawned>,
}

const SPAWNED_ADMIN_KEY: &str = "loadtest-admin-key-0123456789";
const SPAWNED_JWT_SECRET: &str = "loadtest-jwt-secret-0123456789";

/// The repository root, for `scripts/pg.sh`.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("loadtest/ sits in the repository")
        .to_path_buf()
}

fn psql(url: &str, statement: &str) -> Result<()> {
    let status = Command::new("psql")
        .args([url, "-qc", statement])
        .stdout(Stdio::null())
        .status()
        .context("running psql")?;
    if !status.success() {
        bail!("psql failed: {statement}");
    }
    Ok(())
}

impl Target {
    /// Connects to `--url`, or starts a Herald on the local PostgreSQL.
    pub async fn open(args: &TargetArgs) -> Result<Target> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()?;
        match &args.url {
            Some(url) => {
                let admin_key = args
                    .admin_key
                    .clone()
                    .context("--admin-key (or HERALD_ADMIN_KEY) is required with --url")?;
                let authority = url
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_owned();
                let addr = tokio::net::lookup_host(&authority)
                    .await?
                    .next()
                    .with_context(|| format!("cannot resolve {authority}"))?;
                if !addr.ip().is_loopback() {
                    bail!("load tests only target loopback addresses, not {addr}");
                }
                Ok(Target {
                    addr,
                    base_url: format!("http://{addr}"),
                    admin_key,
                    jwt_secret: args.jwt_secret.clone(),
                    http,
                    spawned: None,
                })
            }
            None => Target::spawn(args, http).await,
        }
    }

    async fn spawn(args: &TargetArgs, http: reqwest::Client) -> Result<Target> {
        let root = repo_root();
        let output = Command::new(root.join("scripts/pg.sh"))
            .arg("start")
            .output()
            .context("starting the local PostgreSQL (scripts/pg.sh)")?;
        if !output.status.success() {
            bail!(
                "scripts/pg.sh start failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let admin_url = String::from_utf8(output.stdout)?.trim().to_owned();
        let database = format!("herald_load_{}", std::process::id());
        psql(
            &admin_url,
            &format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
        )?;
        psql(&admin_url, &format!("CREATE DATABASE {database}"))?;
        let database_url = format!("{}/{database}", admin_url.rsplit_once('/').unwrap().0);
        let bin = match &args.herald_bin {
            Some(bin) => bin.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("the harness binary has a folder")?
                .join("herald"),
        };
        let mut child = Command::new(&bin)
            .arg("serve")
            .env("DATABASE_URL", &database_url)
            .env("HERALD_LISTEN", "127.0.0.1:0")
            .env("HERALD_JWT_SECRET", SPAWNED_JWT_SECRET)
            .env("HERALD_ADMIN_KEY", SPAWNED_ADMIN_KEY)
            .env("HERALD_SEND_RATE", "0")
            .env("HERALD_LOG_FORMAT", "json")
            .envs(args.server_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it with cargo build --release)",
                    bin.display()
                )
            })?;
        let stdout = child.stdout.take().expect("piped");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if event["message"] == "herald ready" {
                    let _ = ready_tx.send(event["addr"].as_str().unwrap_or_default().to_owned());
                } else if event["level"] == "WARN" || event["level"] == "ERROR" {
                    eprintln!("herald: {line}");
                }
            }
        });
        let spawned = Spawned {
            child,
            admin_url,
            database,
        };
        let addr: SocketAddr =
            tokio::task::spawn_blocking(move || ready_rx.recv_timeout(Duration::from_secs(60)))
                .await?
                .context("herald did not become ready")?
                .parse()?;
        Ok(Target {
            addr,
            base_url: format!("http://{addr}"),
            admin_key: SPAWNED_ADMIN_KEY.into(),
            jwt_secret: Some(SPAWNED_JWT_SECRET.into()),
            http,
            spawned: Some(spawned),
        })
    }

    /// The pid of the server when this harness started it (for /proc).
    pub fn pid(&self) -> Option<u32> {
        self.spawned.as_ref().map(|s| s.child.id())
    }

    async fn admin(&self, path: &str, body: Value) -> Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(&self.admin_key)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("POST {path}: {status} {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates users `uids` (in batches).
    pub async fn create_users(&self, uids: &[u64]) -> Result<()> {
        for chunk in uids.chunks(10_000) {
            let users: Vec<Value> = chunk.iter().map(|uid| json!({"uid": uid})).collect();
            self.admin("/v1/admin/users", json!({"users": users}))
                .await?;
        }
        Ok(())
    }

    /// Creates group `gid` with `members` (the first one owns it).
    pub async fn create_group(&self, gid: u64, members: &[u64]) -> Result<()> {
        self.admin(
            "/v1/admin/groups",
            json!({"gid": gid, "name": format!("load {gid}"), "owner": members[0], "members": members}),
        )
        .await?;
        Ok(())
    }

    /// A token for `uid`: signed here when the secret is known, else issued by the admin API.
    pub async fn token(&self, uid: u64) -> Result<String> {
        match &self.jwt_secret {
            Some(secret) => {
                let claims = json!({"sub": uid.to_string(), "exp": jsonwebtoken::get_current_timestamp() + 24 * 3600});
                Ok(jsonwebtoken::encode(
                    &jsonwebtoken::Header::default(),
                    &claims,
                    &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
                )?)
            }
            None => {
                let reply = self
                    .admin("/v1/admin/tokens", json!({"uid": uid, "ttl_s": 86400}))
                    .await?;
                reply["token"]
                    .as_str()
                    .map(str::to_owned)
                    .context("no token in reply")
            }
        }
    }

    /// Tokens for many users, in order.
    pub async fn tokens(&self, uids: &[u64]) -> Result<Vec<String>> {
        let mut tokens = Vec::with_capacity(uids.len());
        for &uid in uids {
            tokens.push(self.token(uid).await?);
        }
        Ok(tokens)
    }

    /// The server's resident memory and CPU seconds so far: from /proc when this harness
    /// started it, else from its /metrics (whose CPU counter has whole seconds only).
    pub async fn process_stats(&self) -> Result<ProcessStats> {
        let from_metrics = self.metrics_stats().await?;
        match self.pid().and_then(proc_stats) {
            Some((rss_bytes, cpu_seconds)) => Ok(ProcessStats {
                rss_bytes,
                cpu_seconds,
                ..from_metrics
            }),
            None => Ok(from_metrics),
        }
    }

    async fn metrics_stats(&self) -> Result<ProcessStats> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base_url))
            .send()
            .await?
            .text()
            .await?;
        let value = |name: &str| {
            text.lines()
                .find_map(|line| {
                    line.strip_prefix(name)?
                        .strip_prefix(' ')?
                        .parse::<f64>()
                        .ok()
                })
                .unwrap_or(0.0)
        };
        Ok(ProcessStats {
            rss_bytes: value("herald_process_resident_memory_bytes") as u64,
            cpu_seconds: value("herald_process_cpu_seconds_total"),
            sessions: value("herald_sessions") as u64,
            slow_consumers_closed: value("herald_slow_consumers_closed_total") as u64,
            at: Instant::now(),
        })
    }
}

/// Resident bytes and CPU seconds of a local process, from /proc.
fn proc_stats(pid: u32) -> Option<(u64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let pages: u64 = fields.get(21)?.parse().ok()?;
    // Linux reports CPU time in clock ticks (USER_HZ, 100) and RSS in 4 KiB pages here.
    Some((pages * 4096, ticks as f64 / 100.0))
}

/// A sample of the server process.
#[derive(Debug, Clone, Copy)]
pub struct ProcessStats {
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
    pub sessions: u64,
    /// Sessions the server closed with 4008 so far.
    pub slow_consumers_closed: u64,
    pub at: Instant,
}

impl ProcessStats {
    /// CPU use between two samples, in percent of one core.
    pub fn cpu_percent_since(&self, earlier: &ProcessStats) -> f64 {
        let wall = self.at.duration_since(earlier.at).as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        100.0 * (self.cpu_seconds - earlier.cpu_seconds) / wall
    }
}

/// Ids for this run: far from those of earlier runs on the same database.
pub fn id_base() -> u64 {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (seconds % 1_000_000) * 1_000_000 + 1
}
