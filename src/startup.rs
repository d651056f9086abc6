//! Start-up and shutdown: builds the store, the actors and the HTTP server, waits for
//! PostgreSQL (retrying with backoff) and applies the migrations, runs until a signal, then
//! stops in order (stop accepting, close sessions with 1012, flush acks).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;

use crate::acks::AckWriter;
use crate::api::{self, AppState};
use crate::auth::{AdminKey, TokenIssuer, TokenVerifier};
use crate::budget::{Rate, UserBudgets};
use crate::close::Close;
use crate::cluster::wire::NodeId;
use crate::cluster::Bus;
use crate::config::{Config, Secret};
use crate::group::GroupSettings;
use crate::registry::directory::{CloseAll, FlushAll};
use crate::registry::{Directory, GroupFactory, Publisher, SessionCaps};
use crate::retention::Pruner;
use crate::session::{SessionContext, SessionLimits};
use crate::store::{Store, StoreError};
use crate::webhooks::{UserPresence, Webhooks};

/// A built gateway, listening but not yet serving.
pub struct Application {
    server: Server,
    handle: ServerHandle,
    store: Store,
    /// Set once the migrations are applied: until then requests get 503.
    ready: Arc<AtomicBool>,
    directory: Addr<Directory>,
    bus: Option<Bus>,
    /// The webhook deliverers, started once storage is ready.
    webhooks: Option<Webhooks>,
    arbiters: Vec<Arbiter>,
    addr: SocketAddr,
    config: Config,
}

impl Application {
    /// Builds the connection pool (connections open lazily), starts the actors and binds.
    /// Storage is prepared by `run_until_stopped`, which waits for PostgreSQL.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let webhooks_on = config.webhooks.url.is_some();
        let store = Store::new(
            config.database.url.expose(),
            config.database.pool,
            webhooks_on,
        )
        .context("DATABASE_URL: cannot build the connection pool")?;
        let ready = Arc::new(AtomicBool::new(false));
        let node = NodeId::new(&config.cluster.node_id);
        crate::metrics::global()
            .cluster
            .name_node(&node.to_string());
        let bus = match &config.cluster.nats_url {
            Some(urls) => Some(Bus::connect(&config.cluster, urls.expose(), node.clone()).await?),
            None => None,
        };
        let arbiters: Vec<Arbiter> = (0..config.groups.threads).map(|_| Arbiter::new()).collect();
        let ack_writers = (0..config.acks.writers)
            .map(|_| AckWriter::new(store.clone()).start())
            .collect();
        let directory = Directory::new(
            GroupFactory {
                store: store.clone(),
                settings: GroupSettings {
                    max_batch: config.groups.max_batch,
                    max_queue: config.groups.max_queue,
                    ack_flush: config.acks.flush,
                    idle: config.groups.idle,
                    presence_max_group: config.presence.max_group,
                    presence_debounce: config.presence.debounce,
                    bus: bus.clone(),
                    webhooks: webhooks_on,
                },
                ack_writers,
                arbiters: arbiters.iter().map(Arbiter::handle).collect(),
                position_check: config.cluster.position_check,
            },
            config.sessions.heartbeat,
            SessionCaps {
                total: config.sessions.max_sessions,
                per_user: config.sessions.max_sessions_per_user,
            },
            webhooks_on.then(|| {
                UserPresence::new(store.clone(), node.to_string(), config.presence.debounce)
            }),
        )
        .start();
        let publisher = Publisher::new(directory.clone().recipient(), bus.clone()).start();
        let secret = config.auth.user_tokens.jwt_secret.as_ref();
        let state = web::Data::new(AppState {
            ready: ready.clone(),
            store: store.clone(),
            directory: directory.clone(),
            publisher: publisher.clone(),
            tokens: TokenVerifier::new(&config.auth.user_tokens, &config.auth.token_checks)?,
            issuer: TokenIssuer::new(secret.map(Secret::expose)),
            admin_key: AdminKey::new(config.auth.admin_key.expose().to_owned()),
            allowed_origins: config.server.allowed_origins.to_vec(),
            sessions: Arc::new(SessionContext {
                store: store.clone(),
                directory: directory.clone(),
                publisher,
                limits: SessionLimits {
                    max_frame_bytes: config.limits.max_frame_bytes,
                    max_body_bytes: config.limits.max_body_bytes,
                    heartbeat: config.sessions.heartbeat,
                    outbound_queue: config.sessions.outbound_queue,
                    max_in_flight: config.limits.max_in_flight,
                    max_json_depth: config.limits.max_json_depth,
                    budget: Rate::per_second(config.limits.request_budget),
                    send_rate: Rate::per_second(config.limits.send_rate),
                    recall_window: config.limits.recall_window,
                },
            }),
            budgets: UserBudgets::new(Rate::per_second(config.limits.request_budget)),
            publish_max_groups: config.limits.publish_max_groups,
        });
        state.tokens.start();
        forget_idle_budgets(state.clone());
        let webhooks = Webhooks::new(store.clone(), &config.webhooks)?;
        let max_http_body = config.limits.max_http_body_bytes;
        let demo = config.server.demo;
        if demo {
            tracing::warn!(
                "HERALD_DEMO is on: /demo/ hands out tokens to anyone (development only)"
            );
        }
        let send_buffer = config.sessions.socket_send_buffer;
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(api::in_request_span))
                .app_data(state.clone())
                .configure(api::routes(max_http_body, demo))
        })
        .on_connect(move |connection, _| {
            if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
                tune_client_socket(tcp, send_buffer);
            }
        })
        // Signals are ours: sessions must be closed and acks flushed in order.
        .disable_signals()
        .shutdown_timeout(config.server.shutdown_timeout.as_secs());
        if config.server.workers > 0 {
            server = server.workers(config.server.workers);
        }
        let server = server
            .bind(config.server.listen)
            .with_context(|| format!("HERALD_LISTEN: cannot listen on {}", config.server.listen))?;
        let addr = server.addrs()[0];
        let server = server.run();
        Ok(Application {
            handle: server.handle(),
            server,
            store,
            ready,
            directory,
            bus,
            webhooks,
            arbiters,
            addr,
            config,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until SIGTERM or SIGINT, then stops gracefully. Until PostgreSQL can be reached
    /// and the migrations are applied, it answers only `/healthz` (and 503 elsewhere), and
    /// retries with backoff.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Application {
            server,
            handle,
            store,
            ready,
            directory,
            bus,
            webhooks,
            arbiters,
            addr,
            config,
        } = self;
        tracing::info!(%addr, "listening; preparing storage");
        let serving = actix::spawn(server);
        let signal = shutdown_signal();
        tokio::pin!(signal);
        let pruner = Pruner::new(store.clone(), config.retention.clone());
        tokio::select! {
            prepared = prepare_storage(&store, &pruner) => {
                if let Err(error) = prepared {
                    handle.stop(false).await;
                    return Err(error).context("cannot prepare storage");
                }
            }
            () = &mut signal => {
                tracing::info!("stopped before storage was ready");
                handle.stop(true).await;
                return Ok(());
            }
        }
        ready.store(true, Ordering::Release);
        trim_event_logs(store, config.groups.events_kept, config.groups.events_trim);
        pruner.start();
        if let Some(webhooks) = webhooks {
            webhooks.start(config.webhooks.concurrency);
        }
        tracing::info!(%addr, "herald ready");
        signal.await;
        tracing::info!("stopping: no new connections, closing sessions, flushing acks");
        let stopping = handle.stop(true);
        directory.send(CloseAll(Close::RESTART)).await?;
        stopping.await;
        let flushed =
            tokio::time::timeout(config.server.shutdown_timeout, directory.send(FlushAll)).await;
        match flushed {
            Ok(Ok(())) => tracing::info!("acks flushed"),
            _ => tracing::error!("acks could not be flushed in time; members may see redelivery"),
        }
        if let Some(bus) = bus {
            bus.leave().await;
        }
        for arbiter in arbiters {
            arbiter.stop();
        }
        serving.await?.context("HTTP server failed")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Frames leave as soon as they are written (the dispatcher already batches what a session
/// has queued into one write; Nagle's algorithm would hold a small frame back until the peer's
/// delayed ACK), and the kernel holds a bounded backlog for a client that stops reading
/// (auto-tuned buffers grow to megabytes per socket), so such a client meets
/// `HERALD_OUTBOUND_QUEUE` soon and is cut off.
fn tune_client_socket(tcp: &actix_web::rt::net::TcpStream, send_buffer: usize) {
    let socket = socket2::SockRef::from(tcp);
    if let Err(error) = socket
        .set_tcp_nodelay(true)
        .and_then(|()| socket.set_send_buffer_size(send_buffer))
    {
        tracing::debug!(%error, "could not tune a client socket");
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// First delay between attempts to reach PostgreSQL at start, and the longest.
const STORAGE_RETRY_FIRST: Duration = Duration::from_millis(250);
const STORAGE_RETRY_MAX: Duration = Duration::from_secs(10);

/// Applies the migrations and functions and makes the message partitions ahead, retrying
/// with exponential backoff until PostgreSQL answers. A changed migration is not retried: no
/// retry can fix it.
async fn prepare_storage(store: &Store, pruner: &Pruner) -> Result<(), StoreError> {
    let mut delay = STORAGE_RETRY_FIRST;
    loop {
        let prepared = match store.migrate().await {
            Ok(()) => pruner.prepare().await.map(drop),
            Err(error) => Err(error),
        };
        match prepared {
            Ok(()) => return Ok(()),
            Err(error @ StoreError::MigrationChanged { .. }) => return Err(error),
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64,
                    "cannot apply the migrations; is PostgreSQL running at DATABASE_URL?");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(STORAGE_RETRY_MAX);
            }
        }
    }
}

/// How often users' HTTP budgets that are full again are forgotten.
const FORGET_BUDGETS_EVERY: Duration = Duration::from_secs(60);

/// Keeps the per-user budgets to the users seen lately, for the life of the process.
fn forget_idle_budgets(state: web::Data<AppState>) {
    actix_web::rt::spawn(async move {
        let mut ticks = actix_web::rt::time::interval(FORGET_BUDGETS_EVERY);
        loop {
            ticks.tick().await;
            state.budgets.forget_idle();
        }
    });
}

/// Trims the group event logs to their newest `keep` events, every `every`, for the life of
/// the process. A failed trim is retried at the next tick: nothing depends on its timing.
fn trim_event_logs(store: Store, keep: u64, every: Duration) {
    actix_web::rt::spawn(async move {
        let mut ticks = actix_web::rt::time::interval(every);
        loop {
            ticks.tick().await;
            match store.trim_events(keep).await {
                Ok(0) => {}
                Ok(trimmed) => tracing::debug!(trimmed, "group event logs trimmed"),
                Err(error) => tracing::warn!(%error, "cannot trim the group event logs"),
            }
        }
    });
}
