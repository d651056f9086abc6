//! The Herald under test: one this harness starts on the project's local PostgreSQL, or one
//! already running. Either way it is reached by URL and provisioned through the admin API.
//!
//! The fault scenario needs more control: it starts Herald on a private PostgreSQL cluster
//! at a fixed loopback port, kills it (`kill -9`), stops it (SIGTERM) and starts it again
//! where its clients left it ([`Target::launch`] and what follows it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::kit::launcher::{self, Launch, Log, Process, ADMIN_KEY, JWT_SECRET, LISTENING, READY};
use crate::kit::postgres::project_postgres;
use crate::kit::webhooks::{Answer, WebhookReceiver};

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
    /// The PostgreSQL on which a started Herald gets a database of its own for the run, by
    /// the URL of a database there to connect to first (default: the project's local one,
    /// started with scripts/pg.sh if need be).
    #[arg(long)]
    pub postgres_url: Option<String>,
    /// The herald binary to start (default: beside this one).
    #[arg(long)]
    pub herald_bin: Option<PathBuf>,
    /// Extra settings for a started Herald, as NAME=VALUE.
    #[arg(long = "server-env", value_parser = parse_env)]
    pub server_env: Vec<(String, String)>,
    /// Start a webhook receiver on loopback that answers each request after this many
    /// milliseconds (a slow backend), and have the started Herald post its webhooks to it.
    #[arg(long)]
    pub webhook_delay_ms: Option<u64>,
}

/// The secret a started Herald signs webhooks with, and the receiver checks.
const WEBHOOK_SECRET: &str = "load-test webhook secret";

fn parse_env(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))
}

/// A database made for one run (on `--postgres-url` or the project's local PostgreSQL):
/// dropped on drop.
pub struct RunDatabase {
    admin_url: String,
    name: String,
    /// Its URL, for the Heralds of the run.
    pub url: String,
}

impl RunDatabase {
    /// Makes the run's database afresh, named after the process and the run's number in it:
    /// runs in one process (the suite's smoke tests) must not drop each other's.
    pub fn create(args: &TargetArgs) -> Result<RunDatabase> {
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let admin_url = match &args.postgres_url {
            Some(url) => url.clone(),
            None => project_postgres()?,
        };
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let name = format!("herald_load_{}_{run}", std::process::id());
        psql(
            &admin_url,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )?;
        psql(&admin_url, &format!("CREATE DATABASE {name}"))?;
        let url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
        Ok(RunDatabase {
            admin_url,
            name,
            url,
        })
    }
}

impl Drop for RunDatabase {
    fn drop(&mut self) {
        let _ = psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// A Herald this harness started: stopped on drop (gracefully: it flushes its acks), and
/// the database it made for the run dropped after it.
struct Spawned {
    /// None between a kill or stop and the restart.
    process: Option<Process>,
    launch: Launch,
    database: Option<RunDatabase>,
    /// The slow backend of `--webhook-delay-ms`, stopped after the Herald posting to it.
    webhooks: Option<WebhookReceiver>,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            process.stop_blocking(STOP_WITHIN);
        }
    }
}

/// A reachable Herald with its admin credentials.
pub struct Target {
    pub addr: SocketAddr,
    pub base_url: String,
    admin_key: String,
    jwt_secret: Option<String>,
    http: reqwest::Client,
    /// Boxed: it would make every `Target` (and `Backend`) as large as its launch settings.
    spawned: Option<Box<Spawned>>,
}

/// Longest wait for a started Herald to listen.
const START_WITHIN: Duration = Duration::from_secs(30);
/// Longest wait for one probe or page over HTTP in the fault scenario.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a started Herald to stop gracefully when the harness is done with it.
const STOP_WITHIN: Duration = Duration::from_secs(15);

/// The herald binary to start: `--herald-bin`, else the one beside this harness.
fn herald_bin(args: &TargetArgs) -> Result<PathBuf> {
    match &args.herald_bin {
        Some(bin) => Ok(bin.clone()),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("the harness binary has a folder")?
            .join("herald")),
    }
}

fn http_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?)
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
                    http: http_client()?,
                    spawned: None,
                })
            }
            None => Target::spawn(args).await,
        }
    }

    async fn spawn(args: &TargetArgs) -> Result<Target> {
        // A failed start drops the database too: the guard exists before the process does.
        let database = RunDatabase::create(args)?;
        let mut env = Vec::new();
        let webhooks = match args.webhook_delay_ms {
            Some(delay) => {
                let receiver = WebhookReceiver::counting(WEBHOOK_SECRET).await?;
                receiver.answer(Answer::Accept(Duration::from_millis(delay)));
                env.push(("HERALD_WEBHOOK_URL".to_owned(), receiver.url()));
                env.push((
                    "HERALD_WEBHOOK_SECRET".to_owned(),
                    WEBHOOK_SECRET.to_owned(),
                ));
                Some(receiver)
            }
            None => None,
        };
        let mut target = Target::serve(args, &database.url, env).await?;
        if let Some(spawned) = &mut target.spawned {
            spawned.database = Some(database);
            spawned.webhooks = webhooks;
        }
        Ok(target)
    }

    /// Starts a Herald on `database_url` (not `--url`) with `env` and then `--server-env`,
    /// and returns once it serves.
    pub async fn serve(
        args: &TargetArgs,
        database_url: &str,
        env: Vec<(String, String)>,
    ) -> Result<Target> {
        let launch = Launch {
            bin: herald_bin(args)?,
            database_url: database_url.to_owned(),
            listen: "127.0.0.1:0".into(),
            env: env
                .into_iter()
                .chain(args.server_env.iter().cloned())
                .collect(),
            log: Log::Warnings,
        };
        let mut spawned = Spawned {
            process: None,
            launch,
            database: None,
            webhooks: None,
        };
        let addr = spawned
            .process
            .insert(spawned.launch.start()?)
            .wait_for(READY, Duration::from_secs(60))
            .await
            .context("herald did not become ready")?;
        Ok(Target::spawned(addr, http_client()?, spawned))
    }

    /// What the receiver of `--webhook-delay-ms` took, for the report's last lines.
    pub fn webhooks_received(&self) -> Option<String> {
        let receiver = self.spawned.as_ref()?.webhooks.as_ref()?;
        Some(receiver.received(|r| {
            format!(
                "webhooks: the slow receiver took {} requests, {:.1} MB ({} refused as forged)",
                r.requests,
                r.bytes as f64 / 1e6,
                r.forged
            )
        }))
    }

    fn spawned(addr: SocketAddr, http: reqwest::Client, spawned: Spawned) -> Target {
        Target {
            addr,
            base_url: format!("http://{addr}"),
            admin_key: ADMIN_KEY.into(),
            jwt_secret: Some(JWT_SECRET.into()),
            http,
            spawned: Some(Box::new(spawned)),
        }
    }

    /// Starts a Herald on `database_url` at a loopback port of its own, which restarts keep so
    /// clients find it again, logging to `log`; returns as soon as it listens, which may be
    /// before its storage is ready. `args.server_env` comes after `env`, so it can override it.
    pub async fn launch(
        args: &TargetArgs,
        database_url: &str,
        env: &[(&str, &str)],
        log: &Path,
    ) -> Result<Target> {
        if args.url.is_some() {
            bail!("this scenario starts its own Herald: --url does not apply");
        }
        let launch = Launch {
            bin: herald_bin(args)?,
            database_url: database_url.to_owned(),
            listen: format!("127.0.0.1:{}", launcher::free_port()?),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain(args.server_env.iter().cloned())
                .collect(),
            log: Log::File(log.to_owned()),
        };
        let mut spawned = Spawned {
            process: None,
            launch,
            database: None,
            webhooks: None,
        };
        let addr = spawned
            .process
            .insert(spawned.launch.start()?)
            .wait_for(LISTENING, START_WITHIN)
            .await?;
        Ok(Target::spawned(addr, http_client()?, spawned))
    }

    fn process(&mut self) -> Result<&mut Process> {
        self.spawned
            .as_mut()
            .and_then(|s| s.process.as_mut())
            .context("no herald process of this harness is running")
    }

    /// Waits until the started Herald has prepared its storage and serves.
    pub async fn wait_ready(&mut self, within: Duration) -> Result<()> {
        self.process()?.wait_for(READY, within).await?;
        Ok(())
    }

    /// Kills the started Herald with SIGKILL: no chance to flush or close anything.
    pub fn kill(&mut self) -> Result<()> {
        self.process()?.kill()?;
        if let Some(spawned) = &mut self.spawned {
            spawned.process = None;
        }
        Ok(())
    }

    /// Stops the started Herald with SIGTERM and waits for it to exit.
    pub async fn terminate(&mut self, within: Duration) -> Result<ExitStatus> {
        let status = self.process()?.terminate(within).await?;
        if let Some(spawned) = &mut self.spawned {
            spawned.process = None;
        }
        Ok(status)
    }

    /// Starts the Herald again, as before and at the same address, after a kill or stop;
    /// returns once it listens.
    pub async fn restart(&mut self) -> Result<()> {
        let spawned = self
            .spawned
            .as_mut()
            .context("only a Herald this harness started can be restarted")?;
        if spawned.process.is_some() {
            bail!("herald is still running");
        }
        let process = spawned.process.insert(spawned.launch.start()?);
        let addr = process.wait_for(LISTENING, START_WITHIN).await?;
        if addr != self.addr {
            bail!("herald came back at {addr}, not {}", self.addr);
        }
        Ok(())
    }

    /// Whether the started Herald's process is still the one running (it has not exited).
    pub fn running(&mut self) -> bool {
        self.process().is_ok_and(Process::running)
    }

    /// The status of `GET path` (as `/healthz` or `/readyz`), within a short timeout.
    pub async fn probe(&self, path: &str) -> Result<u16> {
        let response = self
            .http
            .get(format!("{}{path}", self.base_url))
            .timeout(PROBE_TIMEOUT)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        Ok(response.status().as_u16())
    }

    /// `GET path` as the user of `token`: the status and the JSON body.
    pub async fn user_get(&self, token: &str, path: &str) -> Result<(u16, Value)> {
        let response = self
            .http
            .get(format!("{}{path}", self.base_url))
            .bearer_auth(token)
            .timeout(PROBE_TIMEOUT)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// The server's process, when this harness started it and it runs.
    fn started(&self) -> Option<&Process> {
        self.spawned.as_ref().and_then(|s| s.process.as_ref())
    }

    /// The pid of the server when this harness started it.
    pub fn pid(&self) -> Option<u32> {
        self.started().map(Process::pid)
    }

    /// The resident memory of the server this harness started, from /proc.
    pub fn rss_bytes(&self) -> Option<u64> {
        self.started()?.resources().map(|used| used.rss_bytes)
    }

    /// An admin `POST`: the status and the JSON body (Null when empty).
    pub async fn admin_post(&self, path: &str, body: Value) -> Result<(u16, Value)> {
        let response = self
            .http
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(&self.admin_key)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    async fn admin(&self, path: &str, body: Value) -> Result<Value> {
        let (status, reply) = self.admin_post(path, body).await?;
        if !(200..300).contains(&status) {
            bail!("POST {path}: {status} {reply}");
        }
        Ok(reply)
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
        match self.started().and_then(Process::resources) {
            Some(used) => Ok(ProcessStats {
                rss_bytes: used.rss_bytes,
                cpu_seconds: used.cpu_seconds,
                ..from_metrics
            }),
            None => Ok(from_metrics),
        }
    }

    /// The server's /metrics as it stands.
    pub async fn scrape(&self) -> Result<Scrape> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base_url))
            .send()
            .await?
            .text()
            .await?;
        Ok(Scrape(text))
    }

    async fn metrics_stats(&self) -> Result<ProcessStats> {
        let metrics = self.scrape().await?;
        Ok(ProcessStats {
            rss_bytes: metrics.value("herald_process_resident_memory_bytes") as u64,
            cpu_seconds: metrics.value("herald_process_cpu_seconds_total"),
            sessions: metrics.value("herald_sessions") as u64,
            slow_consumers_closed: metrics.value("herald_slow_consumers_closed_total") as u64,
            at: Instant::now(),
        })
    }
}

/// A server's /metrics text (Prometheus format).
pub struct Scrape(String);

impl Scrape {
    /// The value of the unlabelled metric `name`; 0 when absent.
    pub fn value(&self, name: &str) -> f64 {
        self.0
            .lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    }
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

    /// Samples of several processes (a cluster's nodes) as one: amounts added, at the time
    /// of the first (they are taken one after the other, milliseconds apart).
    pub fn total(samples: &[ProcessStats]) -> Option<ProcessStats> {
        let (first, rest) = samples.split_first()?;
        Some(rest.iter().fold(*first, |sum, s| ProcessStats {
            rss_bytes: sum.rss_bytes + s.rss_bytes,
            cpu_seconds: sum.cpu_seconds + s.cpu_seconds,
            sessions: sum.sessions + s.sessions,
            slow_consumers_closed: sum.slow_consumers_closed + s.slow_consumers_closed,
            at: sum.at,
        }))
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
