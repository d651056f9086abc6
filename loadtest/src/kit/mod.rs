//! What the harness and the integration tests (`tests/it`) share to drive a real Herald:
//!
//! - [`launcher`]: `herald serve` and `herald migrate` started as processes; start-up
//!   milestones, logs, signals, resources; free loopback ports.
//! - [`client`]: a WebSocket session opened (upgrade, hello) and read (text, how it ended).
//! - [`frames`]: the one decoder of server frames, and the request frames clients write.
//! - [`postgres`]: the project's local PostgreSQL, or a private cluster to stop and start.
//! - [`nats`]: a real nats-server to kill and start again, and a relay that cuts one node off.
//! - [`webhooks`]: the app's backend as webhooks see it: an HTTP receiver that checks each
//!   request's signature, and can be slow, fail or hang on demand.

pub mod client;
pub mod frames;
pub mod launcher;
pub mod nats;
pub mod postgres;
pub mod webhooks;
