//! Herald: a realtime push gateway for instant messaging.
//!
//! Clients hold a WebSocket; every group message is stored once in PostgreSQL, pushed to
//! every online member and acked; members who were away pull what they missed.
//!
//! # Layout
//! Layers, top first; a module imports only its own layer and those below, never in a loop
//! (`tests/layers.rs` checks it; `docs/architecture.md` walks a send and a change through):
//!
//! - [`startup`]: builds the gateway (pool, actors, server), runs it, stops it in order.
//! - [`api`]: the HTTP routes by area — WebSocket upgrade, user, groups, friends,
//!   conversations, admin, a user's data (export, erasure), operations — and how an error
//!   becomes an HTTP response.
//! - [`session`]: one per WebSocket, in three parts: the actix-web-actors glue
//!   (`session::websocket`), the per-client state machine (`session::state`), the bounded
//!   outbox and its 4008 policy ([`session::outbox`]); and a message's recall
//!   (`session::recall`), which the HTTP routes share.
//! - [`registry`]: the [`registry::directory`] (gid → group, uid → sessions, caps), the
//!   [`registry::ticker`] (heartbeats, token expiry), the [`registry::publisher`] (effects
//!   become deliveries).
//! - [`group`]: one actor per active group — group commit, fan-out, ack coalescing — whose
//!   decisions are plain functions in `group::policy`.
//! - [`acks`]: ack writers, batching watermarks into one statement per flush.
//!   [`webhooks`]: the deliverers posting the outbox's events to the app's backend, and the
//!   users coming and going that the directory tells them of. [`retention`]: the pruner,
//!   making message partitions ahead and pruning each group's oldest messages.
//! - [`messages`]: the messages actors exchange, and the handles (of `Recipient`s) they
//!   reach each other by.
//! - [`store`]: every SQL statement, and the migrations and functions of `sql/`; returns
//!   model types, never wire frames. [`protocol`]: the wire frames, decoded and encoded.
//!   [`auth`]: user tokens and the admin key. [`budget`]: what each request costs.
//!   [`cluster`]: the bus to the other nodes (NATS), what travels on it and its checks.
//! - [`metrics`]: Prometheus metrics. [`telemetry`]: structured logs. [`outbound`]: the HTTP
//!   client of requests to others (webhooks, JWKS).
//! - Leaves: [`model`] (ids and checks, messages and cursors, roles, the sync model, events,
//!   effects, refusals), [`error`] (every error a client sees), [`close`] (every close code),
//!   [`config`] (the command line and every setting, defined once).

pub mod acks;
pub mod api;
pub mod auth;
pub mod budget;
pub mod close;
pub mod cluster;
pub mod config;
pub mod error;
pub mod group;
pub mod messages;
pub mod metrics;
pub mod model;
pub mod outbound;
pub mod protocol;
pub mod registry;
pub mod retention;
pub mod session;
pub mod startup;
pub mod store;

pub mod telemetry;
pub mod webhooks;
