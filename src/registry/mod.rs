//! The registry: what the gateway knows of who is online where, in three parts with one job
//! each.
//!
//! - [`directory`]: gid → group actor (started when needed), uid → open sessions, and the
//!   node's session caps. It carries out deliveries.
//! - [`ticker`]: the clock of every session at once: heartbeats and token expiry.
//! - [`publisher`]: the one place where the effects of committed changes become deliveries
//!   to groups and sessions.

pub mod directory;
pub mod publisher;
pub mod ticker;

pub use directory::{ask_group, Directory, GroupFactory, SessionCaps};
pub use publisher::{Publish, Publisher};
