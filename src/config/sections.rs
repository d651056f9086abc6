//! Every setting, once: its flag, its environment variable, its default, its help (the doc
//! line), and the parser that checks it. Grouped by what they configure; the help heading of
//! each group titles it in `--help` and in the README.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::values::{
    at_least_16_bytes, http_uri, http_url, nats_url, node_id, positive, positive_milliseconds,
    positive_seconds, positive_span, postgres_url, seconds, span, AllowedOrigins, CommaList,
    LogFormat, PublicKeyFiles, Secret, SecretParser,
};

/// Where and how the gateway serves HTTP and WebSockets.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Server")]
pub struct ServerConfig {
    /// Address to listen on.
    #[arg(long, env = "HERALD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// HTTP worker threads; 0 means one per core.
    #[arg(long, env = "HERALD_WORKERS", default_value_t = 0)]
    pub workers: usize,

    /// Origins browsers may open WebSockets from, comma-separated (e.g.
    /// `https://chat.example.com`); empty allows any. Clients that send no Origin (apps,
    /// servers) are not affected.
    #[arg(long, env = "HERALD_ALLOWED_ORIGINS", default_value = "")]
    pub allowed_origins: AllowedOrigins,

    /// Seconds a graceful stop waits for connections to close.
    #[arg(
        long = "shutdown-timeout-s",
        env = "HERALD_SHUTDOWN_TIMEOUT_S",
        default_value = "10",
        value_parser = seconds
    )]
    pub shutdown_timeout: Duration,

    /// Development only, never on in production: serves the browser chat demo at `/demo/`
    /// and `POST /demo/token`, which hands anyone a token for the demo users 1–4.
    #[arg(
        long,
        env = "HERALD_DEMO",
        default_value = "false",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub demo: bool,
}

/// The PostgreSQL the gateway stores everything in.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Database")]
pub struct DatabaseConfig {
    /// PostgreSQL connection URL.
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        hide_env_values = true,
        value_parser = SecretParser::new(postgres_url)
    )]
    pub url: Secret,

    /// PostgreSQL connections in the pool.
    #[arg(
        long = "db-pool",
        env = "HERALD_DB_POOL",
        default_value_t = 16,
        value_parser = positive::<usize>
    )]
    pub pool: usize,
}

/// The keys of user tokens and of the admin API.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Authentication")]
pub struct AuthConfig {
    #[command(flatten)]
    pub user_tokens: UserTokensConfig,

    #[command(flatten)]
    pub token_checks: TokenChecksConfig,

    /// Bearer key of the admin API; at least 16 bytes.
    #[arg(
        long,
        env = "HERALD_ADMIN_KEY",
        hide_env_values = true,
        value_parser = SecretParser::new(at_least_16_bytes)
    )]
    pub admin_key: Secret,
}

/// The key Herald signs the user tokens it issues with: apart from the rest, as `herald
/// token` needs only this one.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Authentication")]
pub struct UserTokensConfig {
    /// Secret of HS256/384/512 user tokens, and the key of the tokens Herald issues (admin
    /// API, `herald token`, demo); at least 16 bytes. Optional when public keys verify tokens.
    #[arg(
        long,
        env = "HERALD_JWT_SECRET",
        hide_env_values = true,
        value_parser = SecretParser::new(at_least_16_bytes)
    )]
    pub jwt_secret: Option<Secret>,
}

/// The public keys user tokens may be signed with besides HERALD_JWT_SECRET, and the claims
/// checked.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Authentication")]
pub struct TokenChecksConfig {
    /// PEM public keys (RSA, EC P-256 or P-384, Ed25519) of user tokens, comma-separated,
    /// each `kid=path` or a path; the key's type decides the algorithms it verifies.
    #[arg(long, env = "HERALD_JWT_PUBLIC_KEYS", default_value = "")]
    pub jwt_public_keys: PublicKeyFiles,

    /// A JWKS file of the public keys of user tokens, re-read every HERALD_JWKS_REFRESH_S.
    #[arg(long, env = "HERALD_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,

    /// The URL of the identity provider's JWKS (`https://…/jwks.json`), fetched every
    /// HERALD_JWKS_REFRESH_S and early for an unknown `kid`; /readyz is 503 until it loads.
    #[arg(long, env = "HERALD_JWKS_URL", value_parser = http_uri)]
    pub jwks_url: Option<hyper::Uri>,

    /// Seconds between reloads of HERALD_JWKS_FILE and HERALD_JWKS_URL; a failed one keeps
    /// the keys last loaded.
    #[arg(
        long = "jwks-refresh-s",
        env = "HERALD_JWKS_REFRESH_S",
        default_value = "300",
        value_parser = positive_seconds
    )]
    pub jwks_refresh: Duration,

    /// Seconds of clock skew allowed on a token's `exp` and `nbf`; a session is closed this
    /// long after its token's `exp`.
    #[arg(
        long = "jwt-leeway-s",
        env = "HERALD_JWT_LEEWAY_S",
        default_value = "30",
        value_parser = seconds
    )]
    pub jwt_leeway: Duration,

    /// Audiences accepted, comma-separated: when set, a token's `aud` must name one; when
    /// empty, a token with an `aud` is refused.
    #[arg(long, env = "HERALD_JWT_AUDIENCE", default_value = "")]
    pub jwt_audience: CommaList,

    /// The issuer accepted: when set, a token's `iss` must be it.
    #[arg(long, env = "HERALD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
}

/// What one client may ask of the gateway, and how fast.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitsConfig {
    /// Request budget, in cost units per second, of each WebSocket session and of each user
    /// over HTTP (the burst is twice this); 0 turns it off. Every request kind is charged:
    /// ping, ack and read 1, signal 5, send 10, pull 10 + limit/10, sync 20 (100 from version 0),
    /// HTTP reads 10 and changes 20, recall 20, a WebSocket upgrade 50.
    #[arg(long, env = "HERALD_REQUEST_BUDGET", default_value_t = 1000)]
    pub request_budget: u32,

    /// Sends per second per session (the burst is twice this); 0 turns the limit off.
    #[arg(long, env = "HERALD_SEND_RATE", default_value_t = 100)]
    pub send_rate: u32,

    /// Requests of one session (sends, pulls, syncs, acks) that may wait for their replies at
    /// once; past it, `rate_limited`.
    #[arg(
        long,
        env = "HERALD_MAX_IN_FLIGHT",
        default_value_t = 256,
        value_parser = positive::<usize>
    )]
    pub max_in_flight: usize,

    /// Largest WebSocket frame accepted, in bytes; a larger one closes the session with 1009.
    #[arg(
        long,
        env = "HERALD_MAX_FRAME_BYTES",
        default_value_t = 64 * 1024,
        value_parser = positive::<usize>
    )]
    pub max_frame_bytes: usize,

    /// Largest message body, in bytes of JSON; a larger one is answered `too_large`.
    #[arg(
        long,
        env = "HERALD_MAX_BODY_BYTES",
        default_value_t = 16 * 1024,
        value_parser = positive::<usize>
    )]
    pub max_body_bytes: usize,

    /// Deepest nesting of arrays and objects accepted in a WebSocket frame.
    #[arg(
        long,
        env = "HERALD_MAX_JSON_DEPTH",
        default_value_t = 32,
        value_parser = positive::<usize>
    )]
    pub max_json_depth: usize,

    /// Largest HTTP request body, in bytes (the admin API's batches are the big ones).
    #[arg(
        long,
        env = "HERALD_MAX_HTTP_BODY_BYTES",
        default_value_t = 4 * 1024 * 1024,
        value_parser = positive::<usize>
    )]
    pub max_http_body_bytes: usize,

    /// Groups one admin publish request may post into at once.
    #[arg(
        long,
        env = "HERALD_PUBLISH_MAX_GROUPS",
        default_value_t = 1000,
        value_parser = positive::<usize>
    )]
    pub publish_max_groups: usize,

    /// Seconds after its send within which a member may recall their own message; 0 leaves
    /// recall to owners and admins, who may recall any message of their group at any time.
    #[arg(
        long = "recall-window-s",
        env = "HERALD_RECALL_WINDOW_S",
        default_value = "120",
        value_parser = seconds
    )]
    pub recall_window: Duration,
}

/// The WebSocket sessions a node holds, and what waits for each one's socket.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Sessions")]
pub struct SessionsConfig {
    /// Open sessions the node accepts; past it, new sessions are closed at once with 1013.
    #[arg(
        long,
        env = "HERALD_MAX_SESSIONS",
        default_value_t = 200_000,
        value_parser = positive::<usize>
    )]
    pub max_sessions: usize,

    /// Open sessions one user may hold on the node; past it, their new sessions are closed at
    /// once with 4029.
    #[arg(
        long,
        env = "HERALD_MAX_SESSIONS_PER_USER",
        default_value_t = 16,
        value_parser = positive::<usize>
    )]
    pub max_sessions_per_user: usize,

    /// Seconds between WebSocket pings; a peer silent for two intervals is dropped.
    #[arg(
        long = "heartbeat-s",
        env = "HERALD_HEARTBEAT_S",
        default_value = "25",
        value_parser = positive_seconds
    )]
    pub heartbeat: Duration,

    /// Frames that may wait for one session's socket; past it the session is closed with 4008.
    #[arg(
        long,
        env = "HERALD_OUTBOUND_QUEUE",
        default_value_t = 4096,
        value_parser = positive::<usize>
    )]
    pub outbound_queue: usize,

    /// Kernel send buffer of each client socket, in bytes: what a client that stops reading
    /// can hold in the kernel before its backlog counts against HERALD_OUTBOUND_QUEUE.
    #[arg(
        long,
        env = "HERALD_SOCKET_SEND_BUFFER",
        default_value_t = 256 * 1024,
        value_parser = positive::<usize>
    )]
    pub socket_send_buffer: usize,
}

/// The group actors: group commit, the threads they run on, their event logs.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Groups")]
pub struct GroupsConfig {
    /// Largest number of messages committed in one group-commit transaction.
    #[arg(
        long,
        env = "HERALD_MAX_BATCH",
        default_value_t = 1000,
        value_parser = positive::<usize>
    )]
    pub max_batch: usize,

    /// Sends that may wait in one group for their commit; past it, `rate_limited`.
    #[arg(
        long = "max-group-queue",
        env = "HERALD_MAX_GROUP_QUEUE",
        default_value_t = 10_000,
        value_parser = positive::<usize>
    )]
    pub max_queue: usize,

    /// Threads group actors run on (apart from the HTTP workers). Group actors do little work
    /// per message; on small machines more threads mostly add cross-core wake-ups.
    #[arg(
        long = "group-threads",
        env = "HERALD_GROUP_THREADS",
        default_value_t = 1,
        value_parser = positive::<usize>
    )]
    pub threads: usize,

    /// Seconds a group actor with nobody online lingers before it stops.
    #[arg(
        long = "group-idle-s",
        env = "HERALD_GROUP_IDLE_S",
        default_value = "30",
        value_parser = positive_seconds
    )]
    pub idle: Duration,

    /// Events each group's log keeps for incremental sync; a client further behind gets a
    /// snapshot.
    #[arg(
        long,
        env = "HERALD_EVENTS_KEPT",
        default_value_t = 1000,
        value_parser = positive::<u64>
    )]
    pub events_kept: u64,

    /// Seconds between trims of the group event logs.
    #[arg(
        long = "events-trim-s",
        env = "HERALD_EVENTS_TRIM_S",
        default_value = "60",
        value_parser = positive_seconds
    )]
    pub events_trim: Duration,
}

/// How long group messages are kept: by age and by count, for every group, and stricter per
/// group through the admin API.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Retention")]
pub struct RetentionConfig {
    /// Age past which messages are pruned: seconds, or with a unit (`90s`, `15m`, `12h`,
    /// `30d`); 0 keeps them forever. Kept at least this long, and pruned within one
    /// HERALD_RETENTION_PARTITION after (a whole partition at a time).
    #[arg(
        long = "retention-max-age",
        env = "HERALD_RETENTION_MAX_AGE",
        default_value = "0",
        value_parser = span
    )]
    pub max_age: Duration,

    /// Newest messages each group keeps; older ones are pruned. 0 keeps them all.
    #[arg(
        long = "retention-max-messages",
        env = "HERALD_RETENTION_MAX_MESSAGES",
        default_value_t = 0
    )]
    pub max_messages: u64,

    /// Width of the partitions of the message table, by message ts: seconds, or with a unit
    /// (`6h`, `1d`). Partitions are made ahead of time and dropped whole once past
    /// HERALD_RETENTION_MAX_AGE.
    #[arg(
        long = "retention-partition",
        env = "HERALD_RETENTION_PARTITION",
        default_value = "1d",
        value_parser = positive_span
    )]
    pub partition: Duration,

    /// Seconds between runs of the pruner (one node of a cluster at a time), which also makes
    /// the partitions ahead.
    #[arg(
        long = "retention-interval-s",
        env = "HERALD_RETENTION_INTERVAL_S",
        default_value = "60",
        value_parser = positive_seconds
    )]
    pub interval: Duration,

    /// Most messages the pruner deletes in one statement (each its own short transaction).
    #[arg(
        long = "retention-batch",
        env = "HERALD_RETENTION_BATCH",
        default_value_t = 1000,
        value_parser = positive::<u64>
    )]
    pub batch: u64,
}

/// How acks are coalesced and written.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Acks")]
pub struct AcksConfig {
    /// Milliseconds acks are coalesced in memory before they are written.
    #[arg(
        long = "ack-flush-ms",
        env = "HERALD_ACK_FLUSH_MS",
        default_value = "500",
        value_parser = positive_milliseconds
    )]
    pub flush: Duration,

    /// Number of ack writers; each owns a disjoint share of the groups.
    #[arg(
        long = "ack-writers",
        env = "HERALD_ACK_WRITERS",
        default_value_t = 2,
        value_parser = positive::<usize>
    )]
    pub writers: usize,
}

/// The cluster: nodes on one PostgreSQL, hearing of each other's commits over NATS.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Cluster")]
pub struct ClusterConfig {
    /// NATS server(s) to join a cluster through, comma-separated (`nats://host:4222`, or
    /// `tls://…`; with `user:password@` or `token@` before the host if the server asks);
    /// empty runs the node alone, needing nothing but PostgreSQL.
    #[arg(
        long,
        env = "HERALD_NATS_URL",
        hide_env_values = true,
        value_parser = SecretParser::new(nats_url)
    )]
    pub nats_url: Option<Secret>,

    /// This node's name in the cluster, in logs and metrics; empty picks a random one.
    #[arg(long, env = "HERALD_NODE_ID", default_value = "", value_parser = node_id)]
    pub node_id: String,

    /// A NATS credentials file (`.creds`: user JWT and NKey seed), as NATS accounts issue.
    #[arg(long, env = "HERALD_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,

    /// PEM file of the CA that signs the NATS server's certificate; setting it requires TLS.
    #[arg(long, env = "HERALD_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,

    /// PEM certificate this node presents to NATS servers that verify clients (with
    /// HERALD_NATS_TLS_KEY).
    #[arg(long, env = "HERALD_NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,

    /// PEM private key of HERALD_NATS_TLS_CERT.
    #[arg(long, env = "HERALD_NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,

    /// Copies for NATS that may wait to be published; past it they are dropped (and repaired
    /// from PostgreSQL by the other nodes), so a send never waits for NATS.
    #[arg(
        long = "nats-publish-queue",
        env = "HERALD_NATS_PUBLISH_QUEUE",
        default_value_t = 8192,
        value_parser = positive::<usize>
    )]
    pub publish_queue: usize,

    /// Milliseconds between checks of the live groups' newest msgids in PostgreSQL, one query
    /// for all of them: how soon a message whose copy NATS lost is found.
    #[arg(
        long = "position-check-ms",
        env = "HERALD_POSITION_CHECK_MS",
        default_value = "1000",
        value_parser = positive_milliseconds
    )]
    pub position_check: Duration,
}

/// Who is online, and how their coming and going is told.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Presence")]
pub struct PresenceConfig {
    /// Largest group with presence: above it, members get no `presence` events and the
    /// group's online list is refused (big-group presence costs every member's traffic).
    #[arg(long, env = "HERALD_PRESENCE_MAX_GROUP", default_value_t = 1000)]
    pub max_group: usize,

    /// Milliseconds a member stays shown online after their last session went: a reconnect
    /// within it announces nothing.
    #[arg(
        long = "presence-debounce-ms",
        env = "HERALD_PRESENCE_DEBOUNCE_MS",
        default_value = "2000",
        value_parser = positive_milliseconds
    )]
    pub debounce: Duration,
}

/// Events posted to the app's backend: messages stored (with the members who were offline,
/// for mobile push), users coming and going, group changes.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Webhooks")]
pub struct WebhooksConfig {
    /// URL the events are posted to (`https://…`); empty sends none and records none.
    #[arg(
        id = "webhook_url",
        long = "webhook-url",
        env = "HERALD_WEBHOOK_URL",
        hide_env_values = true,
        value_parser = SecretParser::new(http_url)
    )]
    pub url: Option<Secret>,

    /// Key of the `Herald-Signature` HMAC-SHA256 over each request; at least 16 bytes.
    /// Required with HERALD_WEBHOOK_URL.
    #[arg(
        id = "webhook_secret",
        long = "webhook-secret",
        env = "HERALD_WEBHOOK_SECRET",
        hide_env_values = true,
        value_parser = SecretParser::new(at_least_16_bytes)
    )]
    pub secret: Option<Secret>,

    /// Milliseconds the backend has to answer a request; past it, the events are retried.
    #[arg(
        id = "webhook_timeout_ms",
        long = "webhook-timeout-ms",
        env = "HERALD_WEBHOOK_TIMEOUT_MS",
        default_value = "5000",
        value_parser = positive_milliseconds
    )]
    pub timeout: Duration,

    /// Longest wait, in seconds, between retries of a failed delivery (the wait doubles
    /// from half a second up to it). Events are retried until delivered.
    #[arg(
        id = "webhook_retry_max_s",
        long = "webhook-retry-max-s",
        env = "HERALD_WEBHOOK_RETRY_MAX_S",
        default_value = "300",
        value_parser = positive_seconds
    )]
    pub retry_max: Duration,

    /// Most events posted in one request.
    #[arg(
        id = "webhook_batch",
        long = "webhook-batch",
        env = "HERALD_WEBHOOK_BATCH",
        default_value_t = 100,
        value_parser = positive::<usize>
    )]
    pub batch: usize,

    /// Requests one node has in flight to the backend at once.
    #[arg(
        id = "webhook_concurrency",
        long = "webhook-concurrency",
        env = "HERALD_WEBHOOK_CONCURRENCY",
        default_value_t = 2,
        value_parser = positive::<usize>
    )]
    pub concurrency: usize,
}

/// How the gateway logs (`RUST_LOG` filters what it logs).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Logs")]
pub struct LogConfig {
    /// Log format: `pretty` for people, `json` for machines.
    #[arg(
        long = "log-format",
        env = "HERALD_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Pretty
    )]
    pub format: LogFormat,
}
