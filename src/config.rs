//! Settings: one struct, read from flags or environment variables, checked at start.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// A setting that must never reach a log: its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Secret(text.to_owned()))
    }
}

/// The `herald` command line.
#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about = "Realtime push gateway for instant messaging"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings for the default command, `serve`.
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the migrations and serve (the default).
    Serve(Box<Settings>),
    /// Apply the migrations and exit.
    Migrate(Box<Settings>),
}

impl Cli {
    /// The command to run and its settings; `serve` when none is named.
    pub fn into_command(self) -> (&'static str, Settings) {
        match self.command {
            Some(Command::Serve(settings)) => ("serve", *settings),
            Some(Command::Migrate(settings)) => ("migrate", *settings),
            None => ("serve", self.settings),
        }
    }
}

/// Every setting of the gateway. Each can be given as a flag or as the environment
/// variable named beside it.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// PostgreSQL connection URL. Required.
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<Secret>,

    /// Address to listen on.
    #[arg(
        long,
        env = "HERALD_LISTEN",
        value_name = "HERALD_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,

    /// HS256 secret for user tokens. Required; at least 16 bytes.
    #[arg(
        long,
        env = "HERALD_JWT_SECRET",
        value_name = "HERALD_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<Secret>,

    /// Bearer key of the admin API. Required; at least 16 bytes.
    #[arg(
        long,
        env = "HERALD_ADMIN_KEY",
        value_name = "HERALD_ADMIN_KEY",
        hide_env_values = true
    )]
    pub admin_key: Option<Secret>,

    /// Sends per second per session (the burst is twice this); 0 turns the limit off.
    #[arg(
        long,
        env = "HERALD_SEND_RATE",
        value_name = "HERALD_SEND_RATE",
        default_value_t = 100
    )]
    pub send_rate: u32,

    /// Request budget, in cost units per second, of each WebSocket session and of each user
    /// over HTTP (the burst is twice this); 0 turns it off. Every request kind is charged:
    /// ping and ack 1, send 10, pull 10 + limit/10, sync 20 (100 from version 0), HTTP reads
    /// 10 and changes 20, a WebSocket upgrade 50.
    #[arg(
        long,
        env = "HERALD_REQUEST_BUDGET",
        value_name = "HERALD_REQUEST_BUDGET",
        default_value_t = 1000
    )]
    pub request_budget: u32,

    /// Largest WebSocket frame accepted, in bytes; a larger one closes the session with 1009.
    #[arg(long, env = "HERALD_MAX_FRAME_BYTES", value_name = "HERALD_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,

    /// Largest message body, in bytes of JSON; a larger one is answered `too_large`.
    #[arg(long, env = "HERALD_MAX_BODY_BYTES", value_name = "HERALD_MAX_BODY_BYTES", default_value_t = 16 * 1024)]
    pub max_body_bytes: usize,

    /// Largest HTTP request body, in bytes (the admin API's batches are the big ones).
    #[arg(long, env = "HERALD_MAX_HTTP_BODY_BYTES", value_name = "HERALD_MAX_HTTP_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_http_body_bytes: usize,

    /// Seconds between WebSocket pings; a peer silent for two intervals is dropped.
    #[arg(
        long,
        env = "HERALD_HEARTBEAT_S",
        value_name = "HERALD_HEARTBEAT_S",
        default_value_t = 25
    )]
    pub heartbeat_s: u64,

    /// Frames that may wait for one session's socket; past it the session is closed with 4008.
    #[arg(
        long,
        env = "HERALD_OUTBOUND_QUEUE",
        value_name = "HERALD_OUTBOUND_QUEUE",
        default_value_t = 4096
    )]
    pub outbound_queue: usize,

    /// Kernel send buffer of each client socket, in bytes: what a client that stops
    /// reading can hold in the kernel before its backlog counts against HERALD_OUTBOUND_QUEUE.
    #[arg(long, env = "HERALD_SOCKET_SEND_BUFFER", value_name = "HERALD_SOCKET_SEND_BUFFER", default_value_t = 256 * 1024)]
    pub socket_send_buffer: usize,

    /// Requests of one session (sends, pulls, syncs, acks) that may wait for their replies at
    /// once; past it, `rate_limited`.
    #[arg(
        long,
        env = "HERALD_MAX_IN_FLIGHT",
        value_name = "HERALD_MAX_IN_FLIGHT",
        default_value_t = 256
    )]
    pub max_in_flight: usize,

    /// Sends that may wait in one group for their commit; past it, `rate_limited`.
    #[arg(
        long,
        env = "HERALD_MAX_GROUP_QUEUE",
        value_name = "HERALD_MAX_GROUP_QUEUE",
        default_value_t = 10_000
    )]
    pub max_group_queue: usize,

    /// Open sessions the node accepts; past it, new sessions are closed at once with 1013.
    #[arg(
        long,
        env = "HERALD_MAX_SESSIONS",
        value_name = "HERALD_MAX_SESSIONS",
        default_value_t = 200_000
    )]
    pub max_sessions: usize,

    /// Open sessions one user may hold on the node; past it, their new sessions are closed at
    /// once with 4029.
    #[arg(
        long,
        env = "HERALD_MAX_SESSIONS_PER_USER",
        value_name = "HERALD_MAX_SESSIONS_PER_USER",
        default_value_t = 16
    )]
    pub max_sessions_per_user: usize,

    /// Deepest nesting of arrays and objects accepted in a WebSocket frame.
    #[arg(
        long,
        env = "HERALD_MAX_JSON_DEPTH",
        value_name = "HERALD_MAX_JSON_DEPTH",
        default_value_t = 32
    )]
    pub max_json_depth: usize,

    /// Origins browsers may open WebSockets from, comma-separated (e.g.
    /// `https://chat.example.com`); empty allows any. Clients that send no Origin (apps,
    /// servers) are not affected.
    #[arg(
        long,
        env = "HERALD_ALLOWED_ORIGINS",
        value_name = "HERALD_ALLOWED_ORIGINS",
        default_value = "",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Milliseconds acks are coalesced in memory before they are written.
    #[arg(
        long,
        env = "HERALD_ACK_FLUSH_MS",
        value_name = "HERALD_ACK_FLUSH_MS",
        default_value_t = 500
    )]
    pub ack_flush_ms: u64,

    /// Number of ack writers; each owns a disjoint share of the groups.
    #[arg(
        long,
        env = "HERALD_ACK_WRITERS",
        value_name = "HERALD_ACK_WRITERS",
        default_value_t = 2
    )]
    pub ack_writers: usize,

    /// Largest number of messages committed in one group-commit transaction.
    #[arg(
        long,
        env = "HERALD_MAX_BATCH",
        value_name = "HERALD_MAX_BATCH",
        default_value_t = 1000
    )]
    pub max_batch: usize,

    /// Threads group actors run on (apart from the HTTP workers). Group actors do little
    /// work per message; on small machines more threads mostly add cross-core wake-ups.
    #[arg(
        long,
        env = "HERALD_GROUP_THREADS",
        value_name = "HERALD_GROUP_THREADS",
        default_value_t = 1
    )]
    pub group_threads: usize,

    /// Seconds a group actor with nobody online lingers before it stops.
    #[arg(
        long,
        env = "HERALD_GROUP_IDLE_S",
        value_name = "HERALD_GROUP_IDLE_S",
        default_value_t = 30
    )]
    pub group_idle_s: u64,

    /// Events each group's log keeps for incremental sync; a client further behind gets a
    /// snapshot.
    #[arg(
        long,
        env = "HERALD_EVENTS_KEPT",
        value_name = "HERALD_EVENTS_KEPT",
        default_value_t = 1000
    )]
    pub events_kept: u64,

    /// Seconds between trims of the group event logs.
    #[arg(
        long,
        env = "HERALD_EVENTS_TRIM_S",
        value_name = "HERALD_EVENTS_TRIM_S",
        default_value_t = 60
    )]
    pub events_trim_s: u64,

    /// PostgreSQL connections in the pool.
    #[arg(
        long,
        env = "HERALD_DB_POOL",
        value_name = "HERALD_DB_POOL",
        default_value_t = 16
    )]
    pub db_pool: usize,

    /// HTTP worker threads; 0 means one per core.
    #[arg(
        long,
        env = "HERALD_WORKERS",
        value_name = "HERALD_WORKERS",
        default_value_t = 0
    )]
    pub workers: usize,

    /// Seconds a graceful stop waits for connections to close.
    #[arg(
        long,
        env = "HERALD_SHUTDOWN_TIMEOUT_S",
        value_name = "HERALD_SHUTDOWN_TIMEOUT_S",
        default_value_t = 10
    )]
    pub shutdown_timeout_s: u64,

    /// Log format: `pretty` for people, `json` for machines.
    #[arg(long, env = "HERALD_LOG_FORMAT", value_name = "HERALD_LOG_FORMAT", default_value = "pretty", value_parser = ["pretty", "json"])]
    pub log_format: String,
}

/// A setting that is missing or out of range, named by its variable.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

/// The settings after checking: required values present, ranges sane.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: Secret,
    pub listen: SocketAddr,
    pub jwt_secret: Secret,
    pub admin_key: Secret,
    pub send_rate: u32,
    pub request_budget: u32,
    pub max_frame_bytes: usize,
    pub max_body_bytes: usize,
    pub max_http_body_bytes: usize,
    pub heartbeat: Duration,
    pub outbound_queue: usize,
    pub socket_send_buffer: usize,
    pub max_in_flight: usize,
    pub max_group_queue: usize,
    pub max_sessions: usize,
    pub max_sessions_per_user: usize,
    pub max_json_depth: usize,
    /// Empty: any origin.
    pub allowed_origins: Vec<String>,
    pub ack_flush: Duration,
    pub ack_writers: usize,
    pub max_batch: usize,
    pub group_threads: usize,
    pub group_idle: Duration,
    pub events_kept: u64,
    pub events_trim: Duration,
    pub db_pool: usize,
    pub workers: usize,
    pub shutdown_timeout: Duration,
}

impl Settings {
    /// Checks the settings, naming the variable of the first one that is wrong.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let required = |value: Option<Secret>, variable: &'static str| {
            value.filter(|v| !v.expose().is_empty()).ok_or(ConfigError {
                variable,
                problem: "is required (see the README's local set-up for a dev value)".into(),
            })
        };
        let database_url = required(self.database_url, "DATABASE_URL")?;
        let jwt_secret = required(self.jwt_secret, "HERALD_JWT_SECRET")?;
        let admin_key = required(self.admin_key, "HERALD_ADMIN_KEY")?;
        for (value, variable) in [
            (&jwt_secret, "HERALD_JWT_SECRET"),
            (&admin_key, "HERALD_ADMIN_KEY"),
        ] {
            if value.expose().len() < 16 {
                return Err(ConfigError {
                    variable,
                    problem: "must be at least 16 bytes long".into(),
                });
            }
        }
        database_url
            .expose()
            .parse::<tokio_postgres::Config>()
            .map_err(|e| ConfigError {
                variable: "DATABASE_URL",
                problem: format!("is not a PostgreSQL URL: {e}"),
            })?;
        let positive = |value: u64, variable: &'static str| {
            if value == 0 {
                Err(ConfigError {
                    variable,
                    problem: "must be greater than 0".into(),
                })
            } else {
                Ok(value)
            }
        };
        positive(self.max_frame_bytes as u64, "HERALD_MAX_FRAME_BYTES")?;
        positive(self.max_body_bytes as u64, "HERALD_MAX_BODY_BYTES")?;
        positive(
            self.max_http_body_bytes as u64,
            "HERALD_MAX_HTTP_BODY_BYTES",
        )?;
        positive(self.heartbeat_s, "HERALD_HEARTBEAT_S")?;
        positive(self.outbound_queue as u64, "HERALD_OUTBOUND_QUEUE")?;
        positive(self.socket_send_buffer as u64, "HERALD_SOCKET_SEND_BUFFER")?;
        positive(self.max_in_flight as u64, "HERALD_MAX_IN_FLIGHT")?;
        positive(self.max_group_queue as u64, "HERALD_MAX_GROUP_QUEUE")?;
        positive(self.max_sessions as u64, "HERALD_MAX_SESSIONS")?;
        positive(
            self.max_sessions_per_user as u64,
            "HERALD_MAX_SESSIONS_PER_USER",
        )?;
        positive(self.max_json_depth as u64, "HERALD_MAX_JSON_DEPTH")?;
        positive(self.ack_flush_ms, "HERALD_ACK_FLUSH_MS")?;
        positive(self.ack_writers as u64, "HERALD_ACK_WRITERS")?;
        positive(self.max_batch as u64, "HERALD_MAX_BATCH")?;
        positive(self.group_idle_s, "HERALD_GROUP_IDLE_S")?;
        positive(self.events_kept, "HERALD_EVENTS_KEPT")?;
        positive(self.events_trim_s, "HERALD_EVENTS_TRIM_S")?;
        positive(self.group_threads as u64, "HERALD_GROUP_THREADS")?;
        positive(self.db_pool as u64, "HERALD_DB_POOL")?;
        Ok(Config {
            database_url,
            listen: self.listen,
            jwt_secret,
            admin_key,
            send_rate: self.send_rate,
            request_budget: self.request_budget,
            max_frame_bytes: self.max_frame_bytes,
            max_body_bytes: self.max_body_bytes,
            max_http_body_bytes: self.max_http_body_bytes,
            heartbeat: Duration::from_secs(self.heartbeat_s),
            outbound_queue: self.outbound_queue,
            socket_send_buffer: self.socket_send_buffer,
            max_in_flight: self.max_in_flight,
            max_group_queue: self.max_group_queue,
            max_sessions: self.max_sessions,
            max_sessions_per_user: self.max_sessions_per_user,
            max_json_depth: self.max_json_depth,
            allowed_origins: self
                .allowed_origins
                .into_iter()
                .map(|origin| origin.trim().trim_end_matches('/').to_owned())
                .filter(|origin| !origin.is_empty())
                .collect(),
            ack_flush: Duration::from_millis(self.ack_flush_ms),
            ack_writers: self.ack_writers,
            max_batch: self.max_batch,
            group_threads: self.group_threads,
            group_idle: Duration::from_secs(self.group_idle_s),
            events_kept: self.events_kept,
            events_trim: Duration::from_secs(self.events_trim_s),
            db_pool: self.db_pool,
            workers: self.workers,
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_s),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Settings {
        let mut argv = vec!["herald"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .expect("flags parse")
            .into_command()
            .1
    }

    const GOOD: [&str; 6] = [
        "--database-url",
        "postgres://u@127.0.0.1/db",
        "--jwt-secret",
        "0123456789abcdef",
        "--admin-key",
        "fedcba9876543210",
    ];

    #[test]
    fn a_missing_secret_is_named() {
        let err = settings(&["--database-url", "postgres://u@127.0.0.1/db"])
            .validate()
            .unwrap_err();
        assert_eq!(err.variable, "HERALD_JWT_SECRET");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let parsed = settings(&GOOD);
        let config = parsed.clone().validate().unwrap();
        for shown in [format!("{parsed:?}"), format!("{config:?}")] {
            for secret in ["postgres://u@", "0123456789abcdef", "fedcba9876543210"] {
                assert!(!shown.contains(secret), "{shown}");
            }
        }
        assert_eq!(config.jwt_secret.expose(), "0123456789abcdef");
    }

    #[test]
    fn a_short_admin_key_is_refused() {
        let mut args = GOOD.to_vec();
        args[5] = "short";
        assert_eq!(
            settings(&args).validate().unwrap_err().variable,
            "HERALD_ADMIN_KEY"
        );
    }

    #[test]
    fn defaults_follow_the_contract() {
        let config = settings(&GOOD).validate().expect("valid");
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.send_rate, 100);
        assert_eq!(config.request_budget, 1000);
        assert_eq!(config.max_frame_bytes, 65536);
        assert_eq!(config.max_body_bytes, 16384);
    }
}
