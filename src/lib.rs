//! Herald: a realtime push gateway for instant messaging.
//!
//! Clients hold a WebSocket; every group message is stored once in PostgreSQL, pushed to
//! every online member and acked; members who were away pull what they missed.
//!
//! # Layout
//! Layers go one way: WebSocket glue → protocol → session → group / registry → store.
//!
//! - [`config`]: settings from flags and environment, checked at start.
//! - [`telemetry`]: structured logs.
//! - [`startup`]: builds the gateway, runs it, stops it in order.
//! - [`api`]: HTTP routes by area (WebSocket upgrade, user, admin, operations).
//! - [`auth`]: user tokens (HS256 JWT) and the admin key.
//! - [`budget`]: what each client request costs, and the budgets of sessions and users.
//! - [`protocol`]: the wire frames and their decoding.
//! - [`session`]: one per WebSocket: the actix-web-actors glue, the per-client state
//!   machine, the bounded outbox.
//! - [`close`]: the close codes, and the reason sent with each.
//! - [`group`]: one actor per active group: group commit, fan-out, ack coalescing.
//! - [`registry`]: gid → group actor, uid → sessions; carries membership changes.
//! - [`acks`]: ack writers, batching watermarks into one statement per flush.
//! - [`messages`]: the messages actors exchange.
//! - [`sync`]: the versioned sync model: profiles, group and friend lists, notices.
//! - [`store`]: every SQL statement; migrations from `sql/`.
//! - [`metrics`]: Prometheus metrics.
//! - [`error`]: error codes and how each reaches a client.

pub mod acks;
pub mod api;
pub mod auth;
pub mod budget;
pub mod close;
pub mod config;
pub mod error;
pub mod group;
pub mod messages;
pub mod metrics;
pub mod model;
pub mod protocol;
pub mod registry;
pub mod session;
pub mod startup;
pub mod store;

pub mod telemetry;
